import COpenSSL
import CPKI
package import CofferCore

/// The NIST curves the engine makes keys on: OpenSSL's name, the OID, the scalar's size in bytes.
struct Curve: Sendable {
    let name: String
    let oid: [UInt8]
    let size: Int

    static let all = [
        Curve(name: "prime256v1", oid: DER.oid("1.2.840.10045.3.1.7")!, size: 32),
        Curve(name: "secp384r1", oid: DER.oid("1.3.132.0.34")!, size: 48),
        Curve(name: "secp521r1", oid: DER.oid("1.3.132.0.35")!, size: 66),
        Curve(name: "secp224r1", oid: DER.oid("1.3.132.0.33")!, size: 28),
    ]

    /// The curve `generateKey` uses for an `ec` key of `bits`.
    init?(bits: Int) {
        switch bits {
        case 0, 256: self = Curve.all[0]
        case 384: self = Curve.all[1]
        case 521: self = Curve.all[2]
        case 224: self = Curve.all[3]
        default: return nil
        }
    }

    private init(name: String, oid: [UInt8], size: Int) {
        self.name = name
        self.oid = oid
        self.size = size
    }
}

/// Object identifiers the engine writes.
enum OID {
    static let commonName = DER.oid("2.5.4.3")!
    static let serialNumber = DER.oid("2.5.4.5")!
    static let country = DER.oid("2.5.4.6")!
    static let locality = DER.oid("2.5.4.7")!
    static let province = DER.oid("2.5.4.8")!
    static let streetAddress = DER.oid("2.5.4.9")!
    static let organization = DER.oid("2.5.4.10")!
    static let organizationalUnit = DER.oid("2.5.4.11")!
    static let postalCode = DER.oid("2.5.4.17")!
    static let keyUsage = DER.oid("2.5.29.15")!
    static let extKeyUsage = DER.oid("2.5.29.37")!
    static let basicConstraints = DER.oid("2.5.29.19")!
    static let subjectKeyID = DER.oid("2.5.29.14")!
    static let authorityKeyID = DER.oid("2.5.29.35")!
    static let subjectAltName = DER.oid("2.5.29.17")!
    static let crlDistributionPoints = DER.oid("2.5.29.31")!
    static let crlNumber = DER.oid("2.5.29.20")!
    static let authorityInfoAccess = DER.oid("1.3.6.1.5.5.7.1.1")!
    static let ocsp = DER.oid("1.3.6.1.5.5.7.48.1")!
    static let caIssuers = DER.oid("1.3.6.1.5.5.7.48.2")!
    static let extensionRequest = DER.oid("1.2.840.113549.1.9.14")!
}

/// Vault's key usage names (`key_usage` on roles and sign-verbatim), as bits of the KeyUsage
/// extension (RFC 5280 §4.2.1.3: digitalSignature is bit 0).
enum KeyUsage {
    static let names: [(name: String, bit: UInt16)] = [
        ("DigitalSignature", 0), ("ContentCommitment", 1), ("KeyEncipherment", 2), ("DataEncipherment", 3),
        ("KeyAgreement", 4), ("CertSign", 5), ("CRLSign", 6), ("EncipherOnly", 7), ("DecipherOnly", 8),
    ]
    static let caBits: UInt16 = 1 << 5 | 1 << 6

    /// The bits of `list` (names in any case); a name Vault does not know is refused (Vault drops it).
    static func bits(_ list: [String]) throws(CofferError) -> UInt16 {
        var bits: UInt16 = 0
        for name in list where !name.isEmpty {
            let lowered = name.lowercased()
            guard let entry = names.first(where: { $0.name.lowercased() == lowered }) else {
                throw CofferError.invalid(
                    "unknown key_usage \"\(name)\"; use \(names.map(\.name).joined(separator: ", "))"
                )
            }
            bits |= 1 << entry.bit
        }
        return bits
    }
}

/// Vault's extended key usage names (`ext_key_usage`) and their OIDs.
enum ExtKeyUsage {
    static let names: [(name: String, oid: String)] = [
        ("Any", "2.5.29.37.0"), ("ServerAuth", "1.3.6.1.5.5.7.3.1"), ("ClientAuth", "1.3.6.1.5.5.7.3.2"),
        ("CodeSigning", "1.3.6.1.5.5.7.3.3"), ("EmailProtection", "1.3.6.1.5.5.7.3.4"),
        ("IPSECEndSystem", "1.3.6.1.5.5.7.3.5"), ("IPSECTunnel", "1.3.6.1.5.5.7.3.6"),
        ("IPSECUser", "1.3.6.1.5.5.7.3.7"), ("TimeStamping", "1.3.6.1.5.5.7.3.8"),
        ("OCSPSigning", "1.3.6.1.5.5.7.3.9"), ("MicrosoftServerGatedCrypto", "1.3.6.1.4.1.311.10.3.3"),
        ("NetscapeServerGatedCrypto", "2.16.840.1.113730.4.1"),
        ("MicrosoftCommercialCodeSigning", "1.3.6.1.4.1.311.2.1.22"),
        ("MicrosoftKernelCodeSigning", "1.3.6.1.4.1.311.61.1.1"),
    ]

    /// The encoded OID of each name, by its lowercased form (encoded once).
    static let byName: [String: [UInt8]] = Dictionary(
        uniqueKeysWithValues: names.map { ($0.name.lowercased(), DER.oid($0.oid)!) }
    )

    static func oid(named name: String) throws(CofferError) -> [UInt8] {
        guard let oid = byName[name.lowercased()] else {
            throw CofferError.invalid(
                "unknown ext_key_usage \"\(name)\"; use \(names.map(\.name).joined(separator: ", "))"
            )
        }
        return oid
    }
}

/// A certificate's contents before it is signed.
struct CertificateTemplate {
    var serial: [UInt8]
    /// The subject Name, DER.
    var subject: [UInt8]
    var notBefore: Int64
    var notAfter: Int64
    /// SubjectPublicKeyInfo, DER.
    var publicKey: [UInt8]
    var isCA = false
    /// A CA's path length limit; -1 for none.
    var maxPathLength = -1
    /// Basic constraints CA:FALSE on a leaf (`basic_constraints_valid_for_non_ca`).
    var leafBasicConstraints = false
    var keyUsage: UInt16 = 0
    /// Extended key usages, as OID DERs.
    var extKeyUsage: [[UInt8]] = []
    /// The subject alternative names (the common name is in `subject`).
    var names = CertificateNames()
    /// AIA and CRL distribution point URLs.
    var urls = CertificateURLs()
    /// SAN after the CRL distribution points (sign-verbatim copies it from the request, and Go
    /// writes such copied extensions last).
    var sanLast = false
}

/// Who signs: a CA's key and name, or a new root signing itself.
struct Signer {
    let key: PKey
    /// The issuer Name written into what it signs, DER.
    let name: [UInt8]
    /// Its subject key identifier (the authority key identifier of what it signs).
    let keyID: [UInt8]
    let algorithm: SignatureAlgorithm
}

/// How a CA signs, from its key (Go's defaults, as OpenBao: SHA-256 for RSA and P-256, SHA-384 for
/// P-384, SHA-512 for P-521, pure Ed25519).
enum SignatureAlgorithm: Sendable, Equatable {
    case ecdsa(digest: String)
    case rsa(digest: String)
    case rsaPSS(digest: String)
    case ed25519

    static func of(_ key: PKey, pss: Bool = false, bits: Int = 0) -> SignatureAlgorithm {
        let digest: String
        switch bits {
        case 384: digest = "SHA384"
        case 512: digest = "SHA512"
        case 256: digest = "SHA256"
        default:
            let size = EVP_PKEY_get_bits(key.pointer)
            digest = key.type == "EC" ? (size > 384 ? "SHA512" : size > 256 ? "SHA384" : "SHA256") : "SHA256"
        }
        switch key.type {
        case "EC": return .ecdsa(digest: digest)
        case "ED25519": return .ed25519
        default: return pss ? .rsaPSS(digest: digest) : .rsa(digest: digest)
        }
    }

    var digest: String? {
        switch self {
        case .ecdsa(let d), .rsa(let d), .rsaPSS(let d): d
        case .ed25519: nil
        }
    }

    /// The AlgorithmIdentifier, DER.
    var identifier: [UInt8] {
        switch self {
        case .ecdsa(let digest):
            let last: UInt8 = digest == "SHA512" ? 4 : digest == "SHA384" ? 3 : 2
            return DER.sequence([DER.tlv(0x06, [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, last])])
        case .rsa(let digest):
            let last: UInt8 = digest == "SHA512" ? 0x0D : digest == "SHA384" ? 0x0C : 0x0B
            return DER.sequence([DER.tlv(0x06, [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, last]), DER.null])
        case .rsaPSS(let digest):
            let (hashOID, saltLength): (String, UInt64) =
                digest == "SHA512"
                ? ("2.16.840.1.101.3.4.2.3", 64)
                : digest == "SHA384"
                    ? ("2.16.840.1.101.3.4.2.2", 48)
                    : ("2.16.840.1.101.3.4.2.1", 32)
            let hash = DER.sequence([DER.oid(hashOID)!, DER.null])
            let mgf = DER.sequence([DER.oid("1.2.840.113549.1.1.8")!, hash])
            return DER.sequence([
                DER.oid("1.2.840.113549.1.1.10")!,
                DER.sequence([DER.explicit(0, hash), DER.explicit(1, mgf), DER.explicit(2, DER.integer(saltLength))]),
            ])
        case .ed25519:
            return DER.sequence([DER.tlv(0x06, [0x2B, 0x65, 0x70])])
        }
    }

    /// OpenBao's name for it (`revocation_signature_algorithm` on an issuer).
    var goName: String {
        switch self {
        case .ecdsa(let d): "ECDSAWith\(d)"
        case .rsa(let d): "\(d)WithRSA"
        case .rsaPSS(let d): "\(d)WithRSAPSS"
        case .ed25519: "PureEd25519"
        }
    }
}

extension PKey {
    /// "EC", "RSA", "ED25519".
    var type: String {
        switch EVP_PKEY_get_base_id(pointer) {
        case EVP_PKEY_EC: "EC"
        case EVP_PKEY_RSA: "RSA"
        case EVP_PKEY_ED25519: "ED25519"
        default: "?"
        }
    }

    /// Vault's `key_type` word for it.
    var vaultType: String { type == "ED25519" ? "ed25519" : type.lowercased() }

    /// Parses a DER private key (PKCS#8, SEC1 or PKCS#1).
    static func privateKey(bytes: [UInt8]) throws(CofferError) -> PKey {
        var cursor: UnsafePointer<UInt8>? = nil
        let key: OpaquePointer? = bytes.withUnsafeBufferPointer { buffer in
            cursor = buffer.baseAddress
            return d2i_AutoPrivateKey(nil, &cursor, buffer.count)
        }
        guard let key else { throw failure("parse a private key") }
        return PKey(key)
    }

    static func generateEd25519() throws(CofferError) -> PKey {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "ED25519", nil) else { throw failure("create a key context") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_generate(ctx, &key) == 1, let key else {
            throw failure("generate a key")
        }
        return PKey(key)
    }

    /// The named curve of an EC key, or nil (another curve, another type). Reading it costs a
    /// parameter lookup: callers that made the key pass the curve they asked for instead.
    var curve: Curve? {
        var name = [CChar](repeating: 0, count: 64)
        var length = 0
        guard type == "EC", EVP_PKEY_get_utf8_string_param(pointer, "group", &name, 64, &length) == 1 else {
            return nil
        }
        let text = String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return Curve.all.first { $0.name == text }
    }

    static let ecPublicKeyOID = DER.oid("1.2.840.10045.2.1")!
    static let ed25519OID: [UInt8] = [0x06, 0x03, 0x2B, 0x65, 0x70]

    /// The EC public point, uncompressed.
    func ecPoint() throws(CofferError) -> [UInt8] {
        if let generatedPoint { return generatedPoint }
        return try PKey.ecPoint(of: pointer)
    }

    static func ecPoint(of key: OpaquePointer) throws(CofferError) -> [UInt8] {
        var point = [UInt8](repeating: 0, count: 133)
        var length = 0
        guard EVP_PKEY_get_octet_string_param(key, "pub", &point, point.count, &length) == 1 else {
            throw PKey.failure("read an EC public key")
        }
        return Array(point.prefix(length))
    }

    /// The SubjectPublicKeyInfo, DER. EC and Ed25519 keys are written here from their parameters:
    /// OpenSSL 3's `i2d_PUBKEY` sets up an encoder for each call, which costs more than the keygen
    /// and the signature of a leaf together.
    func subjectPublicKeyInfo(curve known: Curve? = nil) throws(CofferError) -> [UInt8] {
        if let curve = known ?? curve {
            return DER.sequence([DER.sequence([PKey.ecPublicKeyOID, curve.oid]), DER.bitString(try ecPoint())])
        }
        if type == "ED25519" {
            return DER.sequence([DER.sequence([PKey.ed25519OID]), DER.bitString(try rawPublicKey())])
        }
        let length = i2d_PUBKEY(pointer, nil)
        guard length > 0 else { throw PKey.failure("encode a public key") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            return i2d_PUBKEY(pointer, &cursor)
        }
        guard written == length else { throw PKey.failure("encode a public key") }
        return out
    }

    /// The private key as Vault hands it out: `pkcs8` or Vault's per-type default (SEC1 for EC,
    /// PKCS#1 for RSA, PKCS#8 for Ed25519), as PEM text or DER bytes. The caller clears the result.
    func exportPrivate(
        pkcs8: Bool,
        der: Bool,
        curve: Curve? = nil
    ) throws(CofferError) -> (bytes: [UInt8], label: String) {
        let pkcs8 = pkcs8 || type == "ED25519"
        if let fast = try encodePrivate(pkcs8: pkcs8, curve: curve) {
            return (fast, pkcs8 ? "PRIVATE KEY" : "EC PRIVATE KEY")
        }
        let structure: StaticString = pkcs8 ? "PrivateKeyInfo" : "type-specific"
        let format: StaticString = "DER"
        guard
            let encoder = OSSL_ENCODER_CTX_new_for_pkey(
                pointer,
                coffer_select_keypair(),
                cString(format),
                cString(structure),
                nil
            )
        else { throw PKey.failure("create a key encoder") }
        defer { OSSL_ENCODER_CTX_free(encoder) }
        var data: UnsafeMutablePointer<UInt8>?
        var length = 0
        guard OSSL_ENCODER_to_data(encoder, &data, &length) == 1, let data else {
            throw PKey.failure("encode a private key")
        }
        let bytes = Array(UnsafeBufferPointer(start: data, count: length))
        coffer_openssl_cleanse(data, length)
        CRYPTO_free(data, nil, 0)
        let label = pkcs8 ? "PRIVATE KEY" : type == "EC" ? "EC PRIVATE KEY" : "RSA PRIVATE KEY"
        return (bytes, label)
    }

    /// EC (SEC1 or PKCS#8) and Ed25519 (PKCS#8) private keys written from their parameters, for the
    /// same reason as ``subjectPublicKeyInfo()``; nil for RSA (whose keygen dwarfs the encoder).
    private func encodePrivate(pkcs8: Bool, curve known: Curve?) throws(CofferError) -> [UInt8]? {
        if type == "ED25519" {
            var seed = [UInt8](repeating: 0, count: 32)
            var length = 32
            defer { coffer_openssl_cleanse(&seed, 32) }
            guard EVP_PKEY_get_raw_private_key(pointer, &seed, &length) == 1, length == 32 else {
                throw PKey.failure("read an Ed25519 private key")
            }
            var inner = DER.octetString(seed)
            defer { coffer_openssl_cleanse(&inner, inner.count) }
            return DER.sequence([DER.integer(0), DER.sequence([PKey.ed25519OID]), DER.octetString(inner)])
        }
        guard let curve = known ?? curve else { return nil }
        var scalar: OpaquePointer?
        guard EVP_PKEY_get_bn_param(pointer, "priv", &scalar) == 1, let scalar else {
            throw PKey.failure("read an EC private key")
        }
        defer { BN_clear_free(scalar) }
        var secret = [UInt8](repeating: 0, count: curve.size)
        defer { coffer_openssl_cleanse(&secret, secret.count) }
        guard BN_bn2binpad(scalar, &secret, Int32(curve.size)) == Int32(curve.size) else {
            throw PKey.failure("read an EC private key")
        }
        let point = DER.explicit(1, DER.bitString(try ecPoint()))
        var secretField = DER.octetString(secret)
        defer { coffer_openssl_cleanse(&secretField, secretField.count) }
        if pkcs8 {
            var sec1 = DER.sequence([DER.integer(1), secretField, point])
            defer { coffer_openssl_cleanse(&sec1, sec1.count) }
            return DER.sequence([
                DER.integer(0), DER.sequence([PKey.ecPublicKeyOID, curve.oid]), DER.octetString(sec1),
            ])
        }
        return DER.sequence([DER.integer(1), secretField, DER.explicit(0, curve.oid), point])
    }

    /// Signs `message` (a TBSCertificate, TBSCertList or CertificationRequestInfo) with `algorithm`.
    func sign(_ message: [UInt8], _ algorithm: SignatureAlgorithm) throws(CofferError) -> [UInt8] {
        if case .ecdsa(let digest) = algorithm { return try signECDSA(message, digest: digest) }
        guard let md = EVP_MD_CTX_new() else { throw PKey.failure("sign") }
        defer { EVP_MD_CTX_free(md) }
        var pctx: OpaquePointer?
        guard EVP_DigestSignInit_ex(md, &pctx, algorithm.digest, nil, nil, pointer, nil) == 1 else {
            throw PKey.failure("sign")
        }
        if case .rsaPSS = algorithm {
            guard EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1,
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, coffer_rsa_pss_saltlen_digest()) == 1
            else { throw PKey.failure("set up RSA-PSS") }
        }
        var length = 0
        guard EVP_DigestSign(md, nil, &length, message, message.count) == 1 else { throw PKey.failure("sign") }
        var signature = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(md, &signature, &length, message, message.count) == 1 else { throw PKey.failure("sign") }
        return Array(signature.prefix(length))
    }

    /// An ECDSA signature of `message`'s digest, with one of this key's kept signing contexts.
    private func signECDSA(_ message: [UInt8], digest: String) throws(CofferError) -> [UInt8] {
        let hash = PKeyContext.digest(digest, message)
        let context = try ecdsaContexts.take { () throws(CofferError) in
            guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, pointer, nil) else { throw PKey.failure("sign") }
            let context = PKeyContext(ctx)
            guard EVP_PKEY_sign_init(ctx) == 1 else { throw PKey.failure("sign") }
            return context
        }
        var signature = [UInt8](repeating: 0, count: 160)  // P-521's DER signature is at most 139 bytes
        var length = signature.count
        guard EVP_PKEY_sign(context.pointer, &signature, &length, hash, hash.count) == 1 else {
            throw PKey.failure("sign")
        }
        ecdsaContexts.putBack(context)
        return Array(signature.prefix(length))
    }
}

/// Writing certificates, requests and CRLs.
enum X509 {
    /// A Name of single-valued attributes per type, in the order Go's `pkix.Name` writes them.
    static func name(
        commonName: String?,
        organization: [String] = [],
        organizationalUnit: [String] = [],
        country: [String] = [],
        province: [String] = [],
        locality: [String] = [],
        streetAddress: [String] = [],
        postalCode: [String] = [],
        serialNumber: String? = nil
    ) -> [UInt8] {
        var rdns: [[UInt8]] = []
        func add(_ oid: [UInt8], _ values: [String]) {
            let values = values.filter { !$0.isEmpty }
            guard !values.isEmpty else { return }
            rdns.append(DER.set(values.map { DER.sequence([oid, DER.directoryString($0)]) }))
        }
        add(OID.country, country)
        add(OID.province, province)
        add(OID.locality, locality)
        add(OID.streetAddress, streetAddress)
        add(OID.postalCode, postalCode)
        add(OID.organization, organization)
        add(OID.organizationalUnit, organizationalUnit)
        add(OID.commonName, commonName.map { [$0] } ?? [])
        add(OID.serialNumber, serialNumber.map { [$0] } ?? [])
        return DER.sequence(rdns)
    }

    /// RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits.
    static func keyIdentifier(_ spki: [UInt8]) throws(CofferError) -> [UInt8] {
        guard let (outer, _) = DER.read(spki[...]), outer.tag == 0x30, let parts = DER.children(outer.content),
            parts.count == 2, parts[1].tag == 0x03, !parts[1].content.isEmpty
        else { throw CofferError(.internal, "a public key could not be read back") }
        let bits = Array(parts[1].content.dropFirst())
        // SHA1(), not EVP_Digest: that fetches the digest from the provider on every call.
        var digest = [UInt8](repeating: 0, count: 20)
        SHA1(bits, bits.count, &digest)
        return digest
    }

    static func extensionDER(_ oid: [UInt8], critical: Bool = false, _ value: [UInt8]) -> [UInt8] {
        var w = DER.Writer(capacity: oid.count + value.count + 12)
        writeExtension(oid, critical: critical, into: &w) { $0.append(value) }
        return w.bytes
    }

    /// An Extension: its OID, `critical` when set, and the value `body` writes, in an OCTET STRING.
    static func writeExtension(
        _ oid: [UInt8],
        critical: Bool = false,
        into w: inout DER.Writer,
        _ body: (inout DER.Writer) -> Void
    ) {
        w.sequence { w in
            w.append(oid)
            if critical { w.append(DER.true) }
            w.element(0x04, body)
        }
    }

    static func generalNames(_ n: CertificateNames) -> [UInt8] {
        var w = DER.Writer(capacity: 64)
        writeGeneralNames(n, into: &w)
        return w.bytes
    }

    static func writeGeneralNames(_ n: CertificateNames, into w: inout DER.Writer) {
        w.sequence { w in
            for name in n.dns { w.tlv(0x82, name.utf8) }
            for name in n.emails { w.tlv(0x81, name.utf8) }
            for ip in n.ips { w.tlv(0x87, ip) }
            for uri in n.uris { w.tlv(0x86, uri.utf8) }
        }
    }

    /// The extensions of `template` signed by `signer`, in the order OpenBao's certificates carry them.
    static func writeExtensions(
        _ t: CertificateTemplate,
        subjectKeyID: [UInt8],
        authorityKeyID: [UInt8],
        into w: inout DER.Writer
    ) {
        if t.keyUsage != 0 {
            writeExtension(OID.keyUsage, critical: true, into: &w) { $0.append(DER.namedBits(t.keyUsage)) }
        }
        if !t.extKeyUsage.isEmpty {
            writeExtension(OID.extKeyUsage, into: &w) { w in w.sequence { for oid in t.extKeyUsage { $0.append(oid) } }
            }
        }
        if t.isCA {
            writeExtension(OID.basicConstraints, critical: true, into: &w) { w in
                w.sequence { w in
                    w.append(DER.true)
                    if t.maxPathLength >= 0 { w.append(DER.integer(UInt64(t.maxPathLength))) }
                }
            }
        } else if t.leafBasicConstraints {
            writeExtension(OID.basicConstraints, critical: true, into: &w) { $0.sequence { _ in } }
        }
        writeExtension(OID.subjectKeyID, into: &w) { $0.tlv(0x04, subjectKeyID) }
        writeExtension(OID.authorityKeyID, into: &w) { w in w.sequence { $0.tlv(0x80, authorityKeyID) } }
        if !t.urls.issuing.isEmpty || !t.urls.ocsp.isEmpty {
            writeExtension(OID.authorityInfoAccess, into: &w) { w in
                w.sequence { w in
                    for (method, urls) in [(OID.ocsp, t.urls.ocsp), (OID.caIssuers, t.urls.issuing)] {
                        for url in urls {
                            w.sequence { w in
                                w.append(method)
                                w.tlv(0x86, url.utf8)
                            }
                        }
                    }
                }
            }
        }
        func san(_ w: inout DER.Writer) {
            guard t.names.hasSANs else { return }
            writeExtension(OID.subjectAltName, into: &w) { writeGeneralNames(t.names, into: &$0) }
        }
        if !t.sanLast { san(&w) }
        if !t.urls.crl.isEmpty {
            writeExtension(OID.crlDistributionPoints, into: &w) { w in
                w.sequence { w in
                    for url in t.urls.crl {
                        w.sequence { w in
                            w.element(0xA0) { w in w.element(0xA0) { $0.tlv(0x86, url.utf8) } }
                        }
                    }
                }
            }
        }
        if t.sanLast { san(&w) }
    }

    /// Signs `template` as `signer` (nil: the template's own key, a self-signed root). Returns the
    /// certificate's DER.
    static func certificate(_ t: CertificateTemplate, signer: Signer) throws(CofferError) -> [UInt8] {
        let subjectKeyID = try keyIdentifier(t.publicKey)
        var w = DER.Writer(capacity: 1024)
        w.sequence { w in
            w.element(0xA0) { $0.append(DER.integer(2)) }
            w.append(DER.integer(magnitude: t.serial))
            w.append(signer.algorithm.identifier)
            w.append(signer.name)
            w.sequence { w in
                w.append(DER.time(t.notBefore))
                w.append(DER.time(t.notAfter))
            }
            w.append(t.subject)
            w.append(t.publicKey)
            w.element(0xA3) { w in
                w.sequence { w in
                    writeExtensions(
                        t,
                        subjectKeyID: subjectKeyID,
                        authorityKeyID: signer.keyID.isEmpty ? subjectKeyID : signer.keyID,
                        into: &w
                    )
                }
            }
        }
        let tbs = w.bytes
        let signature = try signer.key.sign(tbs, signer.algorithm)
        return DER.sequence([tbs, signer.algorithm.identifier, DER.bitString(signature)])
    }

    /// A PKCS#10 request for `subject` with `key`, asking for the SANs given.
    static func request(
        subject: [UInt8],
        key: PKey,
        names: CertificateNames
    ) throws(CofferError) -> [UInt8] {
        var attributes: [[UInt8]] = []
        if names.hasSANs {
            let san = extensionDER(OID.subjectAltName, generalNames(names))
            attributes.append(DER.sequence([OID.extensionRequest, DER.set([DER.sequence([san])])]))
        }
        let info = DER.sequence([
            DER.integer(0), subject, try key.subjectPublicKeyInfo(), DER.tlv(0xA0, Array(attributes.joined())),
        ])
        let algorithm = SignatureAlgorithm.of(key)
        let signature = try key.sign(info, algorithm)
        return DER.sequence([info, algorithm.identifier, DER.bitString(signature)])
    }

    /// One CRL entry: the serial and when it was revoked.
    static func crlEntry(serial: [UInt8], revokedAt: Int64) -> [UInt8] {
        DER.sequence([DER.integer(magnitude: serial), DER.time(revokedAt)])
    }

    /// A v2 CRL over the concatenated `entries` (each from ``crlEntry(serial:revokedAt:)``), with the
    /// authority key identifier and CRL number extensions, as OpenBao writes it.
    static func crl(
        signer: Signer,
        thisUpdate: Int64,
        nextUpdate: Int64,
        number: UInt64,
        entries: [UInt8]
    ) throws(CofferError) -> [UInt8] {
        var tbs: [UInt8] = []
        tbs.reserveCapacity(entries.count + 512)
        tbs += DER.integer(1)
        tbs += signer.algorithm.identifier
        tbs += signer.name
        tbs += DER.time(thisUpdate)
        tbs += DER.time(nextUpdate)
        if !entries.isEmpty {
            tbs.append(0x30)
            DER.appendLength(entries.count, to: &tbs)
            tbs += entries
        }
        tbs += DER.explicit(
            0,
            DER.sequence([
                extensionDER(OID.authorityKeyID, DER.sequence([DER.implicit(0, signer.keyID)])),
                extensionDER(OID.crlNumber, DER.integer(number)),
            ])
        )
        let body = DER.tlv(0x30, tbs)
        let signature = try signer.key.sign(body, signer.algorithm)
        return DER.sequence([body, signer.algorithm.identifier, DER.bitString(signature)])
    }
}

/// A certificate or request read by OpenSSL (cpki.h).
struct ParsedX509: Sendable {
    var serial: [UInt8]
    var notBefore: Int64
    var notAfter: Int64
    var isCA: Bool
    var pathLength: Int
    var subject: [UInt8]
    var issuer: [UInt8]
    var publicKey: [UInt8]
    var subjectKeyID: [UInt8]
    var authorityKeyID: [UInt8]
    var commonName: String?
    var dnsNames: [String] = []
    var emails: [String] = []
    var ipAddresses: [[UInt8]] = []
    var uris: [String] = []
    /// "EC", "RSA", "ED25519" or "".
    var keyType: String
    var keyBits: Int

    init(_ p: cpki_parsed) {
        var p = p
        serial = withUnsafeBytes(of: &p.serial) { Array($0.prefix(p.serial_len)) }
        notBefore = p.not_before
        notAfter = p.not_after
        isCA = p.is_ca != 0
        pathLength = Int(p.path_len)
        subject = p.subject_der.map { Array(UnsafeBufferPointer(start: $0, count: p.subject_len)) } ?? []
        issuer = p.issuer_der.map { Array(UnsafeBufferPointer(start: $0, count: p.issuer_len)) } ?? []
        publicKey = p.spki_der.map { Array(UnsafeBufferPointer(start: $0, count: p.spki_len)) } ?? []
        subjectKeyID = withUnsafeBytes(of: &p.ski) { Array($0.prefix(p.ski_len)) }
        authorityKeyID = withUnsafeBytes(of: &p.aki) { Array($0.prefix(p.aki_len)) }
        commonName = p.common_name.map { String(cString: $0) }
        keyType = withUnsafeBytes(of: &p.key_type) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        keyBits = Int(p.key_bits)
        if let sans = p.sans {
            for line in String(cString: sans).split(separator: "\n") {
                if line.hasPrefix("DNS:") { dnsNames.append(String(line.dropFirst(4))) }
                if line.hasPrefix("EMAIL:") { emails.append(String(line.dropFirst(6))) }
                if line.hasPrefix("URI:") { uris.append(String(line.dropFirst(4))) }
                if line.hasPrefix("IP:"), let bytes = Hex.decode(String(line.dropFirst(3))) {
                    ipAddresses.append(bytes)
                }
            }
        }
    }

    /// A certificate's fields; nil when `der` is not one.
    static func certificate(_ der: [UInt8]) -> ParsedX509? {
        var parsed = cpki_parsed()
        guard cpki_parse_certificate(der, der.count, &parsed) == 0 else { return nil }
        defer { cpki_parsed_free(&parsed) }
        return ParsedX509(parsed)
    }

    /// Whether the certificate `der` is signed by the key of the certificate `issuer`.
    static func isSigned(_ der: [UInt8], by issuer: [UInt8]) -> Bool {
        cpki_signed_by(der, der.count, issuer, issuer.count) == 1
    }

    enum RequestProblem: Error { case malformed, badSignature }

    /// A certificate request's fields, its self-signature checked.
    static func request(_ der: [UInt8]) -> Result<ParsedX509, RequestProblem> {
        var parsed = cpki_parsed()
        switch cpki_parse_request(der, der.count, &parsed) {
        case 0:
            defer { cpki_parsed_free(&parsed) }
            return .success(ParsedX509(parsed))
        case -2: return .failure(.badSignature)
        default: return .failure(.malformed)
        }
    }
}

/// Serials as OpenBao writes them ("1c:2a:…") and as tools give them ("1c2a…", "1C-2A-…").
enum SerialText {
    static func colons(_ bytes: [UInt8], separator: UInt8 = UInt8(ascii: ":")) -> String {
        guard !bytes.isEmpty else { return "" }
        let digits = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: bytes.count * 3 - 1) { out in
            var at = 0
            for (index, byte) in bytes.enumerated() {
                if index > 0 {
                    out[at] = separator
                    at += 1
                }
                out[at] = digits[Int(byte >> 4)]
                out[at + 1] = digits[Int(byte & 15)]
                at += 2
            }
            return at
        }
    }

    /// A serial in any of the accepted forms; nil for anything else.
    static func serial(_ text: String) -> [UInt8]? {
        let compact = String(text.unicodeScalars.filter { $0 != ":" && $0 != "-" }).lowercased()
        guard !compact.isEmpty, compact.utf8.count <= 128,
            var bytes = Hex.decode(compact.utf8.count % 2 == 1 ? "0" + compact : compact)
        else { return nil }
        while bytes.count > 1 && bytes[0] == 0 { bytes.removeFirst() }
        return bytes
    }
}
