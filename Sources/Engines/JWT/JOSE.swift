import COpenSSL
package import CofferCore

// JOSE for verifying JWTs: compact JWS parsing (RFC 7515), JWK public keys (RFC 7517/7518/8037),
// PEM public keys, and signature verification with OpenSSL's EVP interface. Verification only:
// Coffer never signs a JWT. Refused by design: `alg: none`, every HMAC algorithm (a public key
// is never used as an HMAC secret), a key whose type or curve does not fit the token's `alg`.

/// A failure to parse or verify a token or key. The message never contains the token.
package struct JOSEError: Error, Sendable, Equatable, CustomStringConvertible {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}

/// base64url without padding (RFC 7515 §2), decoded as Go's `base64.RawURLEncoding` does, so that
/// errors carry the same byte offsets as OpenBao's ("illegal base64 data at input byte 0").
package enum JOSEBase64 {
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8.enumerated() {
            table[Int(c)] = UInt8(i)
        }
        return table
    }()

    /// The bytes of `text`, or the offset of the first byte that makes it invalid.
    package static func decode(_ text: some Collection<UInt8>) -> Result<[UInt8], JOSEError> {
        var out: [UInt8] = []
        out.reserveCapacity(text.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        var index = 0
        for byte in text {
            let value = reverse[Int(byte)]
            if value == 0xFF { return .failure(JOSEError("illegal base64 data at input byte \(index)")) }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
            index += 1
        }
        // One character left over (6 bits) cannot hold a byte.
        if bits == 6 { return .failure(JOSEError("illegal base64 data at input byte \(index - 1)")) }
        return .success(out)
    }

    package static func decode(_ text: String) -> [UInt8]? {
        try? decode(Array(text.utf8)).get()
    }

    package static func encode(_ bytes: some Collection<UInt8>) -> String {
        var text = Base64.encode(bytes)
        while text.hasSuffix("=") { text.removeLast() }
        return String(text.map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
    }
}

/// The JWS algorithms Coffer verifies (RFC 7518 names; EdDSA is Ed25519, RFC 8037).
package enum JWSAlgorithm: String, Sendable, CaseIterable {
    case rs256 = "RS256"
    case rs384 = "RS384"
    case rs512 = "RS512"
    case ps256 = "PS256"
    case ps384 = "PS384"
    case ps512 = "PS512"
    case es256 = "ES256"
    case es384 = "ES384"
    case es512 = "ES512"
    case edDSA = "EdDSA"

    var digestName: String? {
        switch self {
        case .rs256, .ps256, .es256: "SHA256"
        case .rs384, .ps384, .es384: "SHA384"
        case .rs512, .ps512, .es512: "SHA512"
        case .edDSA: nil
        }
    }

    /// The key type this algorithm needs.
    var keyKind: JOSEKey.Kind {
        switch self {
        case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512: .rsa
        case .es256: .ec(.p256)
        case .es384: .ec(.p384)
        case .es512: .ec(.p521)
        case .edDSA: .ed25519
        }
    }
}

/// A public key a JWT may be signed with: from a JWK or PEM. The `EVP_PKEY` is only read after
/// construction (verification takes a fresh context each time), which OpenSSL documents as safe
/// from many threads at once: hence `@unchecked Sendable`.
package final class JOSEKey: @unchecked Sendable {
    package enum Curve: String, Sendable, Equatable {
        case p256 = "P-256"
        case p384 = "P-384"
        case p521 = "P-521"
        var coordinateSize: Int {
            switch self {
            case .p256: 32
            case .p384: 48
            case .p521: 66
            }
        }
        var oid: String {
            switch self {
            case .p256: "1.2.840.10045.3.1.7"
            case .p384: "1.3.132.0.34"
            case .p521: "1.3.132.0.35"
            }
        }
        var openSSLGroup: String {
            switch self {
            case .p256: "prime256v1"
            case .p384: "secp384r1"
            case .p521: "secp521r1"
            }
        }
    }

    package enum Kind: Sendable, Equatable {
        case rsa
        case ec(Curve)
        case ed25519
    }

    let pkey: OpaquePointer
    package let kind: Kind
    /// The JWK's `kid`, if it had one.
    package let keyID: String?
    /// The JWK's `alg`, if it named one: the key is then used for that algorithm only.
    package let algorithm: String?
    /// Verification contexts of an EC key, kept for the next token (PKeyContext).
    let ecdsaContexts = PKeyContextPool()

    private init(pkey: OpaquePointer, keyID: String?, algorithm: String?) throws(JOSEError) {
        self.pkey = pkey
        self.keyID = keyID
        self.algorithm = algorithm
        switch EVP_PKEY_get_base_id(pkey) {
        case EVP_PKEY_RSA, EVP_PKEY_RSA_PSS:
            guard EVP_PKEY_get_bits(pkey) >= 1024 else {
                EVP_PKEY_free(pkey)
                throw JOSEError("RSA keys shorter than 1024 bits are not accepted")
            }
            kind = .rsa
        case EVP_PKEY_ED25519:
            kind = .ed25519
        case EVP_PKEY_EC:
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            guard EVP_PKEY_get_group_name(pkey, &name, name.count, &length) == 1 else {
                EVP_PKEY_free(pkey)
                throw JOSEError("unsupported elliptic curve")
            }
            let group = String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard let curve = [Curve.p256, .p384, .p521].first(where: { $0.openSSLGroup == group }) else {
                EVP_PKEY_free(pkey)
                throw JOSEError("unsupported elliptic curve \(group)")
            }
            kind = .ec(curve)
        default:
            EVP_PKEY_free(pkey)
            throw JOSEError("unsupported public key type")
        }
    }

    deinit { EVP_PKEY_free(pkey) }

    /// A key from DER SubjectPublicKeyInfo.
    package static func fromSPKI(
        _ der: [UInt8],
        keyID: String? = nil,
        algorithm: String? = nil
    ) throws(JOSEError)
        -> JOSEKey
    {
        let pkey: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var pointer = buffer.baseAddress
            let key = d2i_PUBKEY(nil, &pointer, buffer.count)
            // Trailing bytes after the key are refused.
            if let key, pointer != buffer.baseAddress! + buffer.count {
                EVP_PKEY_free(key)
                return nil
            }
            return key
        }
        ERR_clear_error()
        guard let pkey else { throw JOSEError("not a valid public key") }
        return try JOSEKey(pkey: pkey, keyID: keyID, algorithm: algorithm)
    }

    /// Every public key in PEM text: `PUBLIC KEY`, `RSA PUBLIC KEY` (PKCS #1) and `CERTIFICATE`
    /// blocks (the certificate's key; the certificate itself is not checked, as OpenBao does not).
    /// Throws OpenBao's "data does not contain any valid public keys" when there is none.
    package static func fromPEM(_ text: String) throws(JOSEError) -> [JOSEKey] {
        var keys: [JOSEKey] = []
        for block in PEM.decodeAll(text) ?? [] {
            switch block.label {
            case "PUBLIC KEY":
                if let key = try? fromSPKI(block.der) { keys.append(key) }
            case "RSA PUBLIC KEY":
                let spki = DER.sequence([
                    DER.sequence([DER.oid("1.2.840.113549.1.1.1")!, DER.null]), DER.bitString(block.der),
                ])
                if let key = try? fromSPKI(spki) { keys.append(key) }
            case "CERTIFICATE":
                let pkey: OpaquePointer? = block.der.withUnsafeBufferPointer { buffer in
                    var pointer = buffer.baseAddress
                    guard let cert = d2i_X509(nil, &pointer, buffer.count) else { return nil }
                    defer { X509_free(cert) }
                    return X509_get_pubkey(cert)
                }
                ERR_clear_error()
                if let pkey, let key = try? JOSEKey(pkey: pkey, keyID: nil, algorithm: nil) { keys.append(key) }
            default:
                continue
            }
        }
        guard !keys.isEmpty else { throw JOSEError("data does not contain any valid public keys") }
        return keys
    }

    /// A key from a JWK object: `kty` RSA (`n`, `e`), EC (`crv` P-256/P-384/P-521, `x`, `y`) or OKP
    /// (`crv` Ed25519, `x`). Keys whose `use` is not `sig` are refused.
    package static func fromJWK(_ jwk: [String: JSONValue]) throws(JOSEError) -> JOSEKey {
        func member(_ name: String) throws(JOSEError) -> [UInt8] {
            guard let text = jwk[name]?.stringValue, let bytes = JOSEBase64.decode(text), !bytes.isEmpty else {
                throw JOSEError("JWK member \"\(name)\" is missing or not base64url")
            }
            return bytes
        }
        if let use = jwk["use"], use.stringValue != "sig" { throw JOSEError("JWK is not for signatures") }
        let keyID = jwk["kid"]?.stringValue
        let algorithm = jwk["alg"]?.stringValue
        switch jwk["kty"]?.stringValue {
        case "RSA":
            let n = try member("n")
            let e = try member("e")
            guard n.count <= 2048, e.count <= 8 else { throw JOSEError("RSA JWK is too large") }
            let spki = DER.sequence([
                DER.sequence([DER.oid("1.2.840.113549.1.1.1")!, DER.null]),
                DER.bitString(DER.sequence([DER.integer(magnitude: n), DER.integer(magnitude: e)])),
            ])
            return try fromSPKI(spki, keyID: keyID, algorithm: algorithm)
        case "EC":
            guard let curve = jwk["crv"]?.stringValue.flatMap(Curve.init(rawValue:)) else {
                throw JOSEError("unsupported EC curve in JWK")
            }
            let x = try member("x")
            let y = try member("y")
            guard x.count == curve.coordinateSize, y.count == curve.coordinateSize else {
                throw JOSEError("EC JWK coordinates have the wrong length")
            }
            let spki = DER.sequence([
                DER.sequence([DER.oid("1.2.840.10045.2.1")!, DER.oid(curve.oid)!]), DER.bitString([0x04] + x + y),
            ])
            return try fromSPKI(spki, keyID: keyID, algorithm: algorithm)
        case "OKP":
            guard jwk["crv"]?.stringValue == "Ed25519" else { throw JOSEError("unsupported OKP curve in JWK") }
            let x = try member("x")
            guard x.count == 32 else { throw JOSEError("Ed25519 JWK key has the wrong length") }
            let spki = DER.sequence([DER.sequence([DER.oid("1.3.101.112")!]), DER.bitString(x)])
            return try fromSPKI(spki, keyID: keyID, algorithm: algorithm)
        default:
            throw JOSEError("unsupported JWK key type")
        }
    }

    /// The keys of a JWK Set document; keys that cannot be used (encryption keys, unknown types) are
    /// skipped, as OpenBao's library does.
    package static func fromJWKS(_ document: [UInt8]) throws(JOSEError) -> [JOSEKey] {
        guard case .object(let set)? = try? JSONValue.parse(document, maximumDepth: 16),
            case .array(let items)? = set["keys"]
        else { throw JOSEError("not a JWK Set document") }
        var keys: [JOSEKey] = []
        for case .object(let item) in items.prefix(1000) {
            if let key = try? fromJWK(item) { keys.append(key) }
        }
        return keys
    }

    /// Whether this key can verify `algorithm`: its type and curve fit, and a JWK `alg` agrees.
    package func fits(_ algorithm: JWSAlgorithm) -> Bool {
        if let own = self.algorithm, !own.isEmpty, own != algorithm.rawValue { return false }
        return kind == algorithm.keyKind
    }

    /// Verifies `signature` over `message` with `algorithm` (false also when the key does not fit).
    package func verify(_ algorithm: JWSAlgorithm, message: [UInt8], signature: [UInt8]) -> Bool {
        guard fits(algorithm), !signature.isEmpty else { return false }
        var signature = signature
        if case .ec(let curve) = kind {
            // JWS carries r || s, each the curve's size; OpenSSL wants DER.
            guard signature.count == 2 * curve.coordinateSize else { return false }
            let half = curve.coordinateSize
            signature = DER.sequence([
                DER.integer(magnitude: Array(signature[0..<half])), DER.integer(magnitude: Array(signature[half...])),
            ])
        }
        if case .ec = kind, let digest = algorithm.digestName { return verifyECDSA(digest, message, signature) }
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer {
            EVP_MD_CTX_free(ctx)
            ERR_clear_error()
        }
        var pctx: OpaquePointer? = nil
        let initialized: Bool
        if let digest = algorithm.digestName {
            initialized = EVP_DigestVerifyInit_ex(ctx, &pctx, digest, nil, nil, pkey, nil) == 1
        } else {
            initialized = EVP_DigestVerifyInit_ex(ctx, &pctx, nil, nil, nil, pkey, nil) == 1
        }
        guard initialized else { return false }
        switch algorithm {
        case .ps256, .ps384, .ps512:
            guard EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1,
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, coffer_rsa_pss_saltlen_digest()) == 1
            else { return false }
        case .rs256, .rs384, .rs512:
            guard EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 else { return false }
        default:
            break
        }
        return EVP_DigestVerify(ctx, signature, signature.count, message, message.count) == 1
    }

    /// An ECDSA verification of `message`'s digest (`signature` in DER) with a kept context: setting one
    /// up per token fetches the algorithms from the provider, about 2 µs of an ES256 login.
    private func verifyECDSA(_ digest: String, _ message: [UInt8], _ signature: [UInt8]) -> Bool {
        defer { ERR_clear_error() }
        let hash = PKeyContext.digest(digest, message)
        guard
            let context = try? ecdsaContexts.take({ () throws(CofferError) in
                guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, pkey, nil) else { throw PKey.failure("verify") }
                let context = PKeyContext(ctx)
                guard EVP_PKEY_verify_init(ctx) == 1 else { throw PKey.failure("verify") }
                return context
            })
        else { return false }
        let result = EVP_PKEY_verify(context.pointer, signature, signature.count, hash, hash.count)
        if result >= 0 { ecdsaContexts.putBack(context) }  // 0: a bad signature; the context is sound
        return result == 1
    }
}

/// A compact JWS (`header.payload.signature`), parsed but not verified.
package struct CompactJWS: Sendable {
    /// The largest token accepted: ID tokens with many groups run to a few kilobytes; a megabyte
    /// is an attack, refused before any decoding.
    package static let maximumBytes = 64 << 10

    package let header: [String: JSONValue]
    package let claims: [String: JSONValue]
    /// `header.payload` as sent: what the signature covers.
    package let signingInput: [UInt8]
    package let signature: [UInt8]
    /// The header's `alg`, as given.
    package let algorithmName: String
    package var keyID: String? { header["kid"]?.stringValue }

    /// Parses `token`. Errors, in OpenBao's words where it has them: base64 failures give the offset
    /// ("illegal base64 data at input byte 0").
    package init(_ token: String) throws(JOSEError) {
        let bytes = Array(token.utf8)
        guard bytes.count <= CompactJWS.maximumBytes else {
            throw JOSEError("token is larger than \(CompactJWS.maximumBytes) bytes")
        }
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw JOSEError("compact JWS format must have three parts")
        }
        let payload = try JOSEBase64.decode(parts[1]).get()
        let headerBytes = try JOSEBase64.decode(parts[0]).get()
        signature = try JOSEBase64.decode(parts[2]).get()
        guard case .object(let header)? = try? JSONValue.parse(headerBytes, maximumDepth: 8) else {
            throw JOSEError("the token's header is not a JSON object")
        }
        guard case .object(let claims)? = try? JSONValue.parse(payload, maximumDepth: 32) else {
            throw JOSEError("the token's payload is not a JSON object")
        }
        guard let alg = header["alg"]?.stringValue else { throw JOSEError("the token's header has no alg") }
        if header["crit"] != nil { throw JOSEError("unsupported critical header parameters") }
        self.header = header
        self.claims = claims
        self.algorithmName = alg
        signingInput = Array(bytes[0..<(parts[0].count + 1 + parts[1].count)])
    }

    /// The algorithm, if it is one Coffer verifies (never `none` nor an HMAC).
    package var algorithm: JWSAlgorithm? { JWSAlgorithm(rawValue: algorithmName) }

    /// Whether one of `keys` verifies the signature. A key with a `kid` is tried only when the
    /// token names the same `kid` or none.
    package func verified(by keys: [JOSEKey]) -> Bool {
        guard let algorithm else { return false }
        let kid = keyID
        for key in keys {
            if let kid, let own = key.keyID, own != kid { continue }
            if key.verify(algorithm, message: signingInput, signature: signature) { return true }
        }
        return false
    }
}
