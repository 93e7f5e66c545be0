import COpenSSL
package import CofferCore
package import CofferFramework

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Names a certificate carries: its common name and subject alternative names.
struct CertificateNames {
    var commonName: String?
    var dns: [String] = []
    var emails: [String] = []
    var ips: [[UInt8]] = []
    var uris: [String] = []

    init(commonName: String? = nil) { self.commonName = commonName }

    /// The SANs a certificate or request carries (not its common name).
    init(sansOf parsed: ParsedX509) {
        takeSANs(of: parsed)
    }

    var hasSANs: Bool { !(dns.isEmpty && emails.isEmpty && ips.isEmpty && uris.isEmpty) }

    mutating func takeSANs(of parsed: ParsedX509) {
        dns = parsed.dnsNames
        emails = parsed.emails
        ips = parsed.ipAddresses
        uris = parsed.uris
    }

    /// Adds the common name to the SANs (first), as OpenBao does unless `exclude_cn_from_sans`: an
    /// email address as one, a host name in its ASCII form (IDNA); a name that is neither (`a*.b`,
    /// `my host`) stays in the subject only.
    mutating func addCommonName(first: Bool) throws(CofferError) {
        guard let cn = commonName, !cn.isEmpty else { return }
        if cn.contains("@") {
            if !emails.contains(cn) { first ? emails.insert(cn, at: 0) : emails.append(cn) }
            return
        }
        let ascii = try IDNA.toASCII(cn)
        if Hostname.matches(ascii), !dns.contains(ascii) { first ? dns.insert(ascii, at: 0) : dns.append(ascii) }
    }
}

/// Where a certificate says its issuer and its CRL can be found (AIA, CRL distribution points).
struct CertificateURLs {
    var issuing: [String] = []
    var crl: [String] = []
    var ocsp: [String] = []

    var isEmpty: Bool { issuing.isEmpty && crl.isEmpty && ocsp.isEmpty }
}

/// Issuing and signing: `issue`, `sign`, `sign-verbatim`, `root/generate`, `root/sign-intermediate`,
/// `intermediate/generate`, `intermediate/set-signed`.
extension PKIBackend {
    // MARK: Names

    /// `*` matches any run of characters (go-glob, as Vault's `allow_glob_domains` and URI SANs).
    static func glob(_ pattern: String, _ text: String) -> Bool {
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map { Array($0.utf8) }
        let t = Array(text.utf8)
        guard parts.count > 1 else { return parts[0] == t }
        guard t.starts(with: parts[0]) else { return false }
        var index = parts[0].count
        for part in parts.dropFirst().dropLast() {
            guard let found = find(part, in: t, from: index) else { return false }
            index = found + part.count
        }
        let last = parts[parts.count - 1]
        return t.count - index >= last.count && t.suffix(last.count).elementsEqual(last)
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty else { return start }
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        for i in start...(haystack.count - needle.count) where haystack[i..<i + needle.count].elementsEqual(needle) {
            return i
        }
        return nil
    }

    /// Parses an IPv4 or IPv6 address to its 4 or 16 bytes.
    static func ipAddress(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// Whether `ip` falls inside `cidr` ("10.0.0.0/8", "fd00::/8").
    static func contains(cidr: String, _ ip: [UInt8]) -> Bool {
        let parts = cidr.split(separator: "/", maxSplits: 1)
        guard let network = ipAddress(String(parts[0])), network.count == ip.count else { return false }
        let bits = parts.count == 2 ? Int(parts[1]) ?? -1 : network.count * 8
        guard bits >= 0, bits <= network.count * 8 else { return false }
        for i in 0..<network.count {
            let take = max(0, min(8, bits - i * 8))
            let mask: UInt8 = take == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if network[i] & mask != ip[i] & mask { return false }
        }
        return true
    }

    /// The SANs a request names (`alt_names`, `ip_sans`, `uri_sans`).
    static func requestedNames(_ fields: FieldData) throws(CofferError) -> CertificateNames {
        var names = CertificateNames(commonName: fields.string("common_name").map { $0.trimmingSpaces() })
        if names.commonName?.isEmpty == true { names.commonName = nil }
        // Each once, in order; a host name in its ASCII form, and one that is not a host name left out,
        // as OpenBao does.
        for name in fields.strings("alt_names") ?? [] where !name.isEmpty {
            if name.contains("@") {
                if !names.emails.contains(name) { names.emails.append(name) }
            } else {
                let ascii = try IDNA.toASCII(name)
                if Hostname.matches(ascii), !names.dns.contains(ascii) { names.dns.append(ascii) }
            }
        }
        for text in fields.strings("ip_sans") ?? [] where !text.isEmpty {
            guard let ip = ipAddress(text) else {
                throw CofferError.invalid("the value \"\(text)\" is not a valid IP address")
            }
            names.ips.append(ip)
        }
        names.uris = (fields.strings("uri_sans") ?? []).filter { !$0.isEmpty }
        if let other = fields.strings("other_sans"), !other.isEmpty {
            throw CofferError.invalid("other_sans is not supported by Coffer yet")
        }
        return names
    }

    /// Checks `names` against the role: the common name, each DNS name and email (the common name's
    /// SAN among them), each IP and URI.
    static func check(_ names: CertificateNames, role: PKIRole) throws(CofferError) {
        let rules = NameRules(role)
        // A common name that passed as itself needs no second look as a SAN.
        var passed: String?
        if let cn = names.commonName, !rules.skipsCommonName {
            guard rules.allowsCommonName(cn) else {
                throw CofferError.invalid("common name \(cn) not allowed by this role")
            }
            passed = cn
        }
        if let name = names.dns.first(where: { $0 != passed && !rules.allows($0) }) {
            throw CofferError.invalid("subject alternate name \(name) not allowed by this role")
        }
        if let name = names.emails.first(where: { !rules.allows($0) }) {
            throw CofferError.invalid("email address \(name) not allowed by this role")
        }
        if !names.ips.isEmpty {
            guard role.bool("allow_ip_sans") else {
                throw CofferError.invalid(
                    "IP Subject Alternative Names are not allowed in this role, but was provided \(names.ips.map(formatIP).joined(separator: ","))"
                )
            }
            let cidrs = role.strings("allowed_ip_sans_cidr")
            for ip in names.ips where !cidrs.isEmpty && !cidrs.contains(where: { contains(cidr: $0, ip) }) {
                throw CofferError.invalid("IP address \(formatIP(ip)) is not inside the role's allowed_ip_sans_cidr")
            }
        }
        let allowedURIs = role.strings("allowed_uri_sans")
        for uri in names.uris where !allowedURIs.contains(where: { glob($0, uri) }) {
            throw CofferError.invalid(
                "URI Subject Alternative Names are not allowed in this role, but was provided \(uri)"
            )
        }
    }

    static func formatIP(_ ip: [UInt8]) -> String {
        var text = [CChar](repeating: 0, count: 64)
        let ok = ip.withUnsafeBytes { inet_ntop(ip.count == 4 ? AF_INET : AF_INET6, $0.baseAddress, &text, 64) != nil }
        return ok ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    // MARK: Keys

    /// A fresh key of a role's or request's `key_type` and `key_bits` (0: the type's default).
    static func generateKey(type: String, bits: Int) throws(CofferError) -> PKey {
        switch type {
        case "ec":
            switch bits {
            case 0, 256: return try PKey.generate(curve: "P-256")
            case 224: return try PKey.generate(curve: "P-224")
            case 384: return try PKey.generate(curve: "P-384")
            case 521: return try PKey.generate(curve: "P-521")
            default: throw CofferError.invalid("unsupported bit length for EC key: \(bits)")
            }
        case "rsa":
            try checkRSABits(bits == 0 ? 2048 : bits)
            return try PKey.generate(rsaBits: bits == 0 ? 2048 : bits)
        case "ed25519":
            return try PKey.generateEd25519()
        default:
            throw CofferError.invalid("unknown key type: \(type)")
        }
    }

    static func checkRSABits(_ bits: Int) throws(CofferError) {
        guard bits >= 2048 else {
            throw CofferError.invalid("RSA keys < 2048 bits are unsafe and not supported: got \(bits)")
        }
        guard [2048, 3072, 4096, 8192].contains(bits) else {
            throw CofferError.invalid("unsupported bit length for RSA key: \(bits)")
        }
    }

    /// Checks `key_type`/`key_bits` as role writes and CA generation take them.
    static func checkKeyParameters(type: String, bits: Int, allowAny: Bool) throws(CofferError) {
        switch type {
        case "rsa": try checkRSABits(bits == 0 ? 2048 : bits)
        case "ec":
            guard [0, 224, 256, 384, 521].contains(bits) else {
                throw CofferError.invalid("unsupported bit length for EC key: \(bits)")
            }
        case "ed25519": break
        case "any" where allowAny: break
        default: throw CofferError.invalid("unknown key type: \(type)")
        }
    }

    // MARK: Validity

    /// NotBefore and NotAfter: the asked TTL (or the default), capped at `maxTTL` with OpenBao's
    /// warning, then checked against the issuer's own NotAfter as the issuer's
    /// `leaf_not_after_behavior` says (err: refuse, truncate: clip, permit: allow).
    func validity(
        _ request: BackendRequest,
        asked: Int64?,
        defaultTTL: Int64,
        maxTTL: Int64,
        backdate: Int64,
        issuer: LoadedIssuer?,
        warnings: inout [String]
    ) throws(CofferError) -> (notBefore: Int64, notAfter: Int64) {
        // The mount's tuned maximum may exceed the system's (a CA lives for years), as in OpenBao.
        let mountMax = request.mount.maxLeaseTTL > 0 ? request.mount.maxLeaseTTL : MountEntry.systemLeaseTTL
        let mountDefault = request.mount.defaultLeaseTTL > 0 ? request.mount.defaultLeaseTTL : MountEntry.systemLeaseTTL
        var ttl = asked ?? 0
        if ttl <= 0 { ttl = defaultTTL > 0 ? defaultTTL : min(mountDefault, mountMax) }
        let cap = maxTTL > 0 ? min(maxTTL, mountMax) : mountMax
        if ttl > cap {
            warnings.append(
                "TTL \"\(VaultDuration.format(ttl))\" is longer than permitted maxTTL \"\(VaultDuration.format(cap))\", so maxTTL is being used"
            )
            ttl = cap
        }
        let now = request.now
        var notAfter = now.seconds + ttl
        if let issuer, notAfter > issuer.parsed.notAfter {
            switch issuer.entry.leafNotAfterBehavior {
            case "truncate": notAfter = issuer.parsed.notAfter
            case "permit": break
            default:
                throw CofferError.invalid(
                    "cannot satisfy request, as TTL would result in notAfter of \(now.adding(seconds: ttl).rfc3339) that is beyond the expiration of the CA certificate at \(Timestamp(seconds: issuer.parsed.notAfter).rfc3339)"
                )
            }
        }
        return (now.seconds - backdate, notAfter)
    }

    // MARK: Responses

    /// Certificate text in the asked `format`: "pem" (default), "der" (base64) or "pem_bundle".
    static func encode(_ der: [UInt8], format: String, label: String = "CERTIFICATE") -> String {
        format == "der" ? Base64.encode(der) : PEM.encode(der, label: label)
    }

    static func checkFormat(_ fields: FieldData) throws(CofferError) -> (format: String, pkcs8: Bool) {
        let format = fields.string("format") ?? "pem"
        guard ["pem", "der", "pem_bundle"].contains(format) else {
            throw CofferError.invalid("unknown format \"\(format)\"; use pem, der or pem_bundle")
        }
        let keyFormat = fields.string("private_key_format") ?? "der"
        guard ["", "der", "pem", "pkcs8"].contains(keyFormat) else {
            throw CofferError.invalid("unknown private_key_format \"\(keyFormat)\"; use der, pem or pkcs8")
        }
        return (format, keyFormat == "pkcs8")
    }

    /// The fields of a certificate answer: certificate, issuing_ca, ca_chain, serial_number,
    /// expiration, and the private key when one was made here.
    func certificateData(
        _ der: [UInt8],
        serial: [UInt8],
        notAfter: Int64,
        chain: [LoadedIssuer],
        key: PKey?,
        curve: Curve? = nil,
        format: String,
        pkcs8: Bool
    ) throws(CofferError) -> [String: JSONValue] {
        // The issuers' PEM is made once, when they are loaded.
        func encoded(_ issuer: LoadedIssuer) -> String {
            format == "der" ? Base64.encode(issuer.entry.certificate) : issuer.pem
        }
        var data: [String: JSONValue] = [
            "certificate": .string(Self.encode(der, format: format)),
            "issuing_ca": .string(chain.first.map(encoded) ?? ""),
            "ca_chain": .array(chain.map { .string(encoded($0)) }),
            "serial_number": .string(SerialText.colons(serial)), "expiration": .int(notAfter),
        ]
        if let key {
            var (bytes, label) = try key.exportPrivate(pkcs8: pkcs8, der: format == "der", curve: curve)
            defer { bytes.withUnsafeMutableBytes { coffer_openssl_cleanse_bytes($0) } }
            let text = format == "der" ? Base64.encode(bytes) : PEM.encode(bytes, label: label)
            data["private_key"] = .string(text)
            data["private_key_type"] = .string(key.vaultType)
            if format == "pem_bundle" {
                data["certificate"] = .string(
                    ([text, PEM.encode(der, label: "CERTIFICATE")] + chain.map(\.pem)).joined(separator: "\n")
                )
            }
        } else if format == "pem_bundle" {
            data["certificate"] = .string(
                ([PEM.encode(der, label: "CERTIFICATE")] + chain.map(\.pem)).joined(separator: "\n")
            )
        }
        return data
    }

    /// AIA/CDP URLs for what `issuer` signs: its own, else the mount's `config/urls`.
    func urls(for issuer: LoadedIssuer?, _ storage: StorageReader) throws(CofferError) -> CertificateURLs {
        if let issuer {
            let own = CertificateURLs(
                issuing: issuer.entry.issuingCertificates,
                crl: issuer.entry.crlDistributionPoints,
                ocsp: issuer.entry.ocspServers
            )
            if !own.isEmpty { return own }
        }
        let o = try setting(PKIStorage.urlsConfig, storage)?.objectValue ?? [:]
        func list(_ k: String) -> [String] { o[k]?.arrayValue?.compactMap(\.stringValue) ?? [] }
        return CertificateURLs(
            issuing: list("issuing_certificates"),
            crl: list("crl_distribution_points"),
            ocsp: list("ocsp_servers")
        )
    }

    /// Stores an issued certificate as `certs/<serial>` (what `cert/<serial>`, LIST `certs` and tidy read).
    func storeCertificate(
        _ der: [UInt8],
        serial: [UInt8],
        issuerID: String,
        notAfter: Int64,
        _ storage: StorageView
    ) throws(CofferError) {
        try storage.putJSON(
            PKIStorage.certPrefix + PKIStorage.name(serial),
            CertRecord(certificate: der, issuerID: issuerID, notAfter: notAfter).json
        )
    }

    static let aiaWarning =
        "This mount hasn't configured any authority information access (AIA) fields; this may make it harder for systems to find missing certificates in the chain or to validate revocation status of certificates. Consider updating /config/urls or the newly generated issuer with this information."

    // MARK: issue, sign, sign-verbatim

    func loadRole(_ name: String, _ storage: StorageReader) throws(CofferError) -> PKIRole? {
        guard let json = try setting(PKIStorage.rolePrefix + name, storage), case .object(let o) = json else {
            return nil
        }
        return PKIRole(fields: o)
    }

    func issue(_ request: BackendRequest) throws(CofferError) -> Response {
        try issueOrSign(request, csr: false)
    }

    func sign(_ request: BackendRequest) throws(CofferError) -> Response {
        try issueOrSign(request, csr: true)
    }

    func issueOrSign(_ request: BackendRequest, csr signing: Bool) throws(CofferError) -> Response {
        let roleName = request.capture("role")
        guard let role = try loadRole(roleName, request.storage.reader) else {
            throw CofferError.invalid("unknown role: \(roleName)")
        }
        let fields = request.fields
        let (format, pkcs8) = try Self.checkFormat(fields)
        var warnings: [String] = []
        let issuerRef = request.captures["issuer"] ?? fields.string("issuer_ref") ?? role.string("issuer_ref")
        let issuer = try resolveIssuer(issuerRef, request.storage.reader, context: Self.fetchContext)
        guard let signer = issuer.signer else {
            throw CofferError.invalid(
                "issuer \(issuer.entry.id) has no key on this mount and cannot issue certificates"
            )
        }
        guard issuer.canIssue else {
            throw CofferError.invalid("issuer \(issuer.entry.id) is not allowed to issue certificates (its usage)")
        }

        var names = try Self.requestedNames(fields)
        var publicKey: [UInt8]
        var key: PKey?
        if signing {
            let parsed = try Self.csr(fields)
            let keyType = parsed.keyType == "ED25519" ? "ed25519" : parsed.keyType.lowercased()
            if role.keyType != "any" {
                guard keyType == role.keyType else {
                    throw CofferError.invalid("role requires keys of type \(role.keyType)")
                }
                if keyType == "rsa", parsed.keyBits < role.keyBits {
                    throw CofferError.invalid(
                        "role requires a minimum of a \(role.keyBits)-bit key, but CSR's key is \(parsed.keyBits) bits"
                    )
                }
                if keyType == "ec", parsed.keyBits != role.keyBits {
                    throw CofferError.invalid(
                        "role requires a \(role.keyBits)-bit EC key, but CSR's key is \(parsed.keyBits) bits"
                    )
                }
            }
            if role.bool("use_csr_common_name") {
                if names.commonName != nil {
                    warnings.append(
                        "the common_name field was provided but the role is set with \"use_csr_common_name\" set to true"
                    )
                }
                names.commonName = parsed.commonName
            }
            if role.bool("use_csr_sans") {
                names.takeSANs(of: parsed)
            }
            publicKey = parsed.publicKey
        } else {
            guard role.keyType != "any" else {
                throw CofferError.invalid("role key type \"any\" not allowed for issuing certificates, only signing")
            }
            let generated = try Self.generateKey(type: role.keyType, bits: role.keyBits)
            key = generated
            publicKey = try generated.subjectPublicKeyInfo(
                curve: role.keyType == "ec" ? Curve(bits: role.keyBits) : nil
            )
        }
        if names.commonName == nil && role.bool("require_cn") {
            throw CofferError.invalid(
                "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false"
            )
        }
        if !(fields.bool("exclude_cn_from_sans") ?? false) { try names.addCommonName(first: !signing) }
        try Self.check(names, role: role)

        let (notBefore, notAfter) = try validity(
            request,
            asked: fields.seconds("ttl"),
            defaultTTL: Int64(role.int("ttl")),
            maxTTL: Int64(role.int("max_ttl")),
            backdate: Int64(role.int("not_before_duration")),
            issuer: issuer,
            warnings: &warnings
        )
        var extKeyUsage: [[UInt8]] = []
        for (flag, name) in [
            ("server_flag", "ServerAuth"), ("client_flag", "ClientAuth"), ("code_signing_flag", "CodeSigning"),
            ("email_protection_flag", "EmailProtection"),
        ] where role.bool(flag) {
            extKeyUsage.append(try ExtKeyUsage.oid(named: name))
        }
        for name in role.strings("ext_key_usage") where !name.isEmpty {
            let oid = try ExtKeyUsage.oid(named: name)
            if !extKeyUsage.contains(oid) { extKeyUsage.append(oid) }
        }
        for text in role.strings("ext_key_usage_oids") where !text.isEmpty {
            guard let oid = DER.oid(text) else {
                throw CofferError.invalid("ext_key_usage_oids: \"\(text)\" is not an OID")
            }
            extKeyUsage.append(oid)
        }
        let urls = try urls(for: issuer, request.storage.reader)
        let serial = try newSerial(issuerID: issuer.entry.id, notAfter: notAfter, request.storage)
        var template = CertificateTemplate(
            serial: serial,
            subject: X509.name(
                commonName: names.commonName,
                organization: role.strings("organization"),
                organizationalUnit: role.strings("ou"),
                country: role.strings("country"),
                province: role.strings("province"),
                locality: role.strings("locality"),
                streetAddress: role.strings("street_address"),
                postalCode: role.strings("postal_code"),
                serialNumber: fields.string("serial_number")
            ),
            notBefore: notBefore,
            notAfter: notAfter,
            publicKey: publicKey
        )
        template.keyUsage = try KeyUsage.bits(role.strings("key_usage"))
        template.extKeyUsage = extKeyUsage
        template.leafBasicConstraints = role.bool("basic_constraints_valid_for_non_ca")
        template.names = names
        template.urls = urls
        let leafSigner = Signer(
            key: signer.key,
            name: signer.name,
            keyID: signer.keyID,
            algorithm: SignatureAlgorithm.of(signer.key, pss: role.bool("use_pss"), bits: role.int("signature_bits"))
        )
        let der = try X509.certificate(template, signer: leafSigner)
        if !role.bool("no_store") {
            try storeCertificate(der, serial: serial, issuerID: issuer.entry.id, notAfter: notAfter, request.storage)
        }
        var data = try certificateData(
            der,
            serial: serial,
            notAfter: notAfter,
            chain: try chain(issuer, request.storage.reader),
            key: key,
            curve: key != nil && role.keyType == "ec" ? Curve(bits: role.keyBits) : nil,
            format: format,
            pkcs8: pkcs8
        )
        data["not_before"] = .int(notBefore)
        var response = Response(data: data, warnings: warnings)
        if role.bool("generate_lease") {
            let lifetime = max(1, notAfter - request.now.seconds)
            response.secret = SecretLease(
                type: "pki",
                internalData: ["serial_number": .string(SerialText.colons(serial))],
                ttl: lifetime,
                maxTTL: lifetime,
                renewable: false
            )
        }
        return response
    }

    /// The request's `csr`, parsed and its signature checked.
    static func csr(_ fields: FieldData) throws(CofferError) -> ParsedX509 {
        guard let text = fields.string("csr"), !text.isEmpty else { throw CofferError.invalid("csr contains no data") }
        guard let blocks = PEM.decodeAll(text),
            let block = blocks.first(where: { $0.label.hasSuffix("CERTIFICATE REQUEST") })
        else { throw CofferError.invalid("csr contains no data") }
        switch ParsedX509.request(block.der) {
        case .success(let parsed): return parsed
        case .failure(.badSignature): throw CofferError.invalid("request signature invalid")
        case .failure(.malformed): throw CofferError.invalid("certificate request could not be parsed")
        }
    }

    /// `sign-verbatim[/<role>]`: the CSR's subject and SANs as they are, the usages the request names.
    func signVerbatim(_ request: BackendRequest) throws(CofferError) -> Response {
        let fields = request.fields
        let (format, _) = try Self.checkFormat(fields)
        var role: PKIRole?
        let roleName = request.capture("role")
        if !roleName.isEmpty {
            guard let found = try loadRole(roleName, request.storage.reader) else {
                throw CofferError.invalid("unknown role: \(roleName)")
            }
            role = found
        }
        let issuer = try resolveIssuer(
            request.captures["issuer"] ?? fields.string("issuer_ref") ?? "default",
            request.storage.reader,
            context: Self.fetchContext
        )
        guard let signer = issuer.signer else {
            throw CofferError.invalid(
                "issuer \(issuer.entry.id) has no key on this mount and cannot issue certificates"
            )
        }
        let parsed = try Self.csr(fields)
        var warnings: [String] = []
        let (notBefore, notAfter) = try validity(
            request,
            asked: fields.seconds("ttl"),
            defaultTTL: Int64(role?.int("ttl") ?? 0),
            maxTTL: Int64(role?.int("max_ttl") ?? 0),
            backdate: Int64(role?.int("not_before_duration") ?? 30),
            issuer: issuer,
            warnings: &warnings
        )
        let serial = try newSerial(issuerID: issuer.entry.id, notAfter: notAfter, request.storage)
        var template = CertificateTemplate(
            serial: serial,
            subject: parsed.subject,
            notBefore: notBefore,
            notAfter: notAfter,
            publicKey: parsed.publicKey
        )
        template.keyUsage = try KeyUsage.bits(
            fields.strings("key_usage") ?? ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]
        )
        for name in fields.strings("ext_key_usage") ?? [] where !name.isEmpty {
            template.extKeyUsage.append(try ExtKeyUsage.oid(named: name))
        }
        for text in fields.strings("ext_key_usage_oids") ?? [] where !text.isEmpty {
            guard let oid = DER.oid(text) else {
                throw CofferError.invalid("ext_key_usage_oids: \"\(text)\" is not an OID")
            }
            template.extKeyUsage.append(oid)
        }
        template.names = CertificateNames(sansOf: parsed)
        template.sanLast = true  // copied from the request, after the extensions the CA writes (as Go does)
        let urls = try urls(for: issuer, request.storage.reader)
        template.urls = urls
        let der = try X509.certificate(template, signer: signer)
        if !(role?.bool("no_store") ?? false) {
            try storeCertificate(der, serial: serial, issuerID: issuer.entry.id, notAfter: notAfter, request.storage)
        }
        var data = try certificateData(
            der,
            serial: serial,
            notAfter: notAfter,
            chain: try chain(issuer, request.storage.reader),
            key: nil,
            format: format,
            pkcs8: false
        )
        data["not_before"] = .int(notBefore)
        return Response(data: data, warnings: warnings)
    }
}

func coffer_openssl_cleanse_bytes(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress else { return }
    coffer_openssl_cleanse(base, buffer.count)
}
