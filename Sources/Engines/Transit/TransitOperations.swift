import COpenSSL
import CofferCore
package import CofferFramework

/// The `vault:v<N>:` framing Vault puts on ciphertexts, signatures and HMACs.
enum VersionedValue {
    static let prefix: [UInt8] = Array("vault:v".utf8)

    /// "vault:v<N>:" as bytes.
    static func header(_ version: Int) -> [UInt8] { prefix + Array(String(version).utf8) + [UInt8(ascii: ":")] }

    /// Splits "vault:v<N>:<body>" into the version and the body's byte range. `what` names the value
    /// in errors ("ciphertext", "signature", "HMAC").
    static func parse(
        _ text: UnsafeRawBufferPointer,
        what: String
    ) throws(CofferError) -> (version: Int, body: Range<Int>) {
        guard text.count > prefix.count, prefix.indices.allSatisfy({ text[$0] == prefix[$0] }) else {
            throw CofferError.invalid("invalid \(what): no prefix (expected \"vault:v<version>:\")")
        }
        var i = prefix.count
        var version = 0
        while i < text.count, text[i] != UInt8(ascii: ":") {
            let digit = Int(text[i]) - 0x30
            guard digit >= 0, digit <= 9, version < 100_000_000 else {
                throw CofferError.invalid("invalid \(what): version number could not be decoded")
            }
            version = version * 10 + digit
            i += 1
        }
        guard i < text.count, i > prefix.count else {
            throw CofferError.invalid("invalid \(what): wrong number of fields")
        }
        return (version, (i + 1)..<text.count)
    }

    /// "vault:v<N>:" + base64(`body`) as a String.
    static func format(_ version: Int, _ body: [UInt8]) -> String {
        "vault:v\(version):" + Base64.encode(body)
    }
}

/// Runs `body` on the bytes of three arrays (Array's own `withUnsafeBytes` does not carry a typed throw).
func withRawBytes<R>(
    _ a: [UInt8],
    _ b: [UInt8],
    _ c: [UInt8],
    _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws(CofferError) -> R
) throws(CofferError) -> R {
    let result: Result<R, CofferError> = a.withUnsafeBytes { pa in
        b.withUnsafeBytes { pb in
            c.withUnsafeBytes { pc in
                do throws(CofferError) { return .success(try body(pa, pb, pc)) } catch { return .failure(error) }
            }
        }
    }
    return try result.get()
}

/// A field that must be base64, decoded, with an error naming the field.
func base64Field(_ text: String?, _ field: String) throws(CofferError) -> [UInt8]? {
    guard let text else { return nil }
    guard let bytes = Base64.decode(text) else {
        throw CofferError.invalid("illegal base64 data in \(field): it must be standard base64 (RFC 4648)")
    }
    return bytes
}

extension TransitKey {
    static func missingContext() -> CofferError {
        CofferError.invalid(
            "missing 'context' for key derivation; the key was created using a derived key, which means additional, "
                + "per-request information must be included in order to perform operations with the key"
        )
    }

    static let tooOld = CofferError.invalid("ciphertext or signature version is disallowed by policy (too old)")

    /// The version to encrypt, sign or HMAC with: `requested`, or the latest for 0.
    func writeVersion(_ requested: Int, _ operation: String) throws(CofferError) -> KeyVersion {
        let number = requested == 0 ? latestVersion : requested
        if requested < 0 { throw CofferError.invalid("requested version for \(operation) is negative") }
        if number > latestVersion {
            throw CofferError.invalid("requested version for \(operation) is higher than the latest key version")
        }
        if number < minEncryptionVersion {
            throw CofferError.invalid(
                "requested version for \(operation) is less than the minimum encryption key version"
            )
        }
        guard let version = versions[number] else {
            throw CofferError.invalid("requested version \(number) for \(operation) has been trimmed from the key")
        }
        return version
    }

    /// The version a ciphertext, signature or HMAC names, if it may still be used.
    func readVersion(_ number: Int, _ what: String) throws(CofferError) -> KeyVersion {
        let number = number == 0 ? 1 : number
        if number > latestVersion { throw CofferError.invalid("invalid \(what): version is too new") }
        guard number >= minDecryptionVersion, let version = versions[number] else { throw TransitKey.tooOld }
        return version
    }

    /// The AEAD key (and, for convergent keys, the key the nonce is derived with) for `version` and `context`.
    func aeadKeys(
        _ version: KeyVersion,
        context: UnsafeRawBufferPointer
    ) throws(CofferError) -> (key: SecureBytes, nonceKey: SecureBytes?) {
        guard derived else { return (version.material, nil) }
        guard context.count > 0 else { throw TransitKey.missingContext() }
        let size = type.aead!.keySize
        let derivedKey = try Digest.hkdfSHA256(
            key: version.material,
            salt: [],
            info: Array(context),
            length: size + (convergent ? 32 : 0)
        )
        guard convergent else { return (derivedKey, nil) }
        return derivedKey.withUnsafeBytes { d in
            (
                SecureBytes(UnsafeRawBufferPointer(rebasing: d[0..<size])),
                SecureBytes(UnsafeRawBufferPointer(rebasing: d[size...]))
            )
        }
    }

    /// The expanded key to seal or open `count` bytes with, when there is one: a version of an
    /// aes256-gcm96 key that is not derived (the default, and most keys), for values up to Nettle's limit.
    /// Otherwise the key is set up for each call (OpenSSL).
    func expandedKey(_ version: KeyVersion, _ count: Int) -> AESGCMKey? {
        guard type == .aes256GCM96, !derived, count <= AESGCMKey.nettleLimit else { return nil }
        return version.aes256GCM
    }

    // MARK: Encryption

    /// Encrypts into Vault's text form "vault:v<N>:<base64>", returned as ASCII bytes.
    func encrypt(
        _ plaintext: UnsafeRawBufferPointer,
        context: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        keyVersion: Int = 0
    ) throws(CofferError) -> [UInt8] {
        guard type.supportsEncryption else {
            throw CofferError.invalid("message encryption not supported for key type \(type.rawValue)")
        }
        let version = try writeVersion(keyVersion, "encryption")
        guard let aead = type.aead else {
            guard aad.count == 0 else {
                throw CofferError.invalid("associated_data is supported only by AEAD key types, not \(type.rawValue)")
            }
            let body = try version.pkey!.rsaOAEP(Array(plaintext), encrypt: true)
            return version.header + Array(Base64.encode(body).utf8)
        }
        let (key, nonceKey) = try aeadKeys(version, context: context)
        let rawCount = AEAD.nonceSize + plaintext.count + AEAD.tagSize
        let header = version.header
        let total = header.count + Base64.encodedLength(rawCount)
        var failed = false
        let out = [UInt8](unsafeUninitializedCapacity: total) { out, count in
            header.withUnsafeBufferPointer { h in
                _ = UnsafeMutableBufferPointer(rebasing: out[0..<h.count]).initialize(fromContentsOf: h)
            }
            withUnsafeTemporaryAllocation(byteCount: rawCount, alignment: 16) { raw in
                let nonce = UnsafeMutableRawBufferPointer(rebasing: raw[0..<AEAD.nonceSize])
                if let nonceKey {
                    // Convergent (version 3): the nonce is an HMAC of the plaintext, so equal inputs encrypt equally.
                    var mac = [UInt8](repeating: 0, count: 32)
                    nonceKey.withUnsafeBytes { k in mac = HashAlgorithm.sha2_256.hmac(key: k, data: Array(plaintext)) }
                    nonce.copyBytes(from: mac[0..<AEAD.nonceSize])
                } else {
                    Random.nonce(nonce)
                }
                let output = UnsafeMutableRawBufferPointer(rebasing: raw[AEAD.nonceSize...])
                if let expanded = expandedKey(version, plaintext.count) {
                    expanded.seal(nonce: UnsafeRawBufferPointer(nonce), plaintext: plaintext, aad: aad, output: output)
                } else {
                    failed = !key.withUnsafeBytes { k in
                        aead.seal(
                            key: k,
                            nonce: UnsafeRawBufferPointer(nonce),
                            plaintext: plaintext,
                            aad: aad,
                            output: output
                        )
                    }
                }
                Base64.encode(UnsafeRawBufferPointer(raw), into: out.baseAddress! + header.count)
                coffer_openssl_cleanse(raw.baseAddress, rawCount)
            }
            count = total
        }
        guard !failed else { throw CofferError(.internal, "\(type.rawValue) encryption failed in OpenSSL") }
        return out
    }

    /// Decrypts Vault's text form (as ASCII bytes). Errors say what was wrong with the ciphertext.
    func decrypt(
        _ ciphertext: UnsafeRawBufferPointer,
        context: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer
    ) throws(CofferError) -> [UInt8] {
        guard type.supportsEncryption else {
            throw CofferError.invalid("message decryption not supported for key type \(type.rawValue)")
        }
        let (number, bodyRange) = try VersionedValue.parse(ciphertext, what: "ciphertext")
        let version = try readVersion(number, "ciphertext")
        let body = UnsafeRawBufferPointer(rebasing: ciphertext[bodyRange])
        return try withUnsafeTemporaryAllocation(byteCount: body.count * 3 / 4 + 3, alignment: 16) {
            (raw) throws(CofferError) -> [UInt8] in
            defer { coffer_openssl_cleanse(raw.baseAddress, raw.count) }
            guard let rawCount = Base64.decode(body, into: raw) else {
                throw CofferError.invalid("invalid ciphertext: could not decode base64")
            }
            let sealed = UnsafeRawBufferPointer(rebasing: raw[0..<rawCount])
            guard let aead = type.aead else {
                return try version.pkey!.rsaOAEP(Array(sealed), encrypt: false)
            }
            guard rawCount >= AEAD.nonceSize + AEAD.tagSize else {
                throw CofferError.invalid("invalid ciphertext length")
            }
            let (key, _) = try aeadKeys(version, context: context)
            let plainCount = rawCount - AEAD.nonceSize - AEAD.tagSize
            var ok = false
            let plaintext = [UInt8](unsafeUninitializedCapacity: plainCount) { out, count in
                let nonce = UnsafeRawBufferPointer(rebasing: sealed[0..<AEAD.nonceSize])
                let body = UnsafeRawBufferPointer(rebasing: sealed[AEAD.nonceSize...])
                let output = UnsafeMutableRawBufferPointer(out)
                if let expanded = expandedKey(version, plainCount) {
                    ok = expanded.open(nonce: nonce, sealed: body, aad: aad, output: output)
                } else {
                    ok = key.withUnsafeBytes { k in
                        aead.open(key: k, nonce: nonce, sealed: body, aad: aad, output: output)
                    }
                }
                count = plainCount
            }
            guard ok else {
                throw CofferError.invalid(
                    "cipher: message authentication failed (the ciphertext was modified, or made with another key, context or associated_data)"
                )
            }
            return plaintext
        }
    }

    // MARK: HMAC

    func hmac(_ input: [UInt8], algorithm: HashAlgorithm, keyVersion: Int) throws(CofferError) -> String {
        let version = try writeVersion(keyVersion, "HMAC")
        let mac = version.hmacKey.withUnsafeBytes { algorithm.hmac(key: $0, data: input) }
        return VersionedValue.format(version.number, mac)
    }

    func verifyHMAC(_ input: [UInt8], hmac: String, algorithm: HashAlgorithm) throws(CofferError) -> Bool {
        let text = Array(hmac.utf8)
        let (number, range) = try withRawBytes(text, [], []) { (t, _, _) throws(CofferError) in
            try VersionedValue.parse(t, what: "HMAC")
        }
        let version = try readVersion(number, "HMAC")
        guard let given = Base64.decode(String(decoding: text[range], as: UTF8.self)) else {
            throw CofferError.invalid("unable to decode verification HMAC as base64")
        }
        let mac = version.hmacKey.withUnsafeBytes { algorithm.hmac(key: $0, data: input) }
        return ConstantTime.equals(mac, given)
    }

    // MARK: Signatures

    struct SigningOptions {
        var hash: HashAlgorithm = .sha2_256
        var prehashed = false
        var rsa: PKey.RSASignature = .pss(.auto)
        var jws = false
        var context: [UInt8] = []
    }

    /// The key that signs for `version`: the stored one, or for derived Ed25519 keys the one derived from the context.
    private func signingKey(_ version: KeyVersion, context: [UInt8]) throws(CofferError) -> PKey {
        guard derived else { return version.pkey! }
        guard !context.isEmpty else { throw TransitKey.missingContext() }
        let seed = try Digest.hkdfSHA256(key: version.material, salt: [], info: context, length: 32)
        return try seed.withUnsafeBytes { (s) throws(CofferError) in try PKey.ed25519(seed: s) }
    }

    private func digestToSign(_ input: [UInt8], _ options: SigningOptions) throws(CofferError) -> [UInt8] {
        guard options.prehashed else { return options.hash.digest(input) }
        guard input.count == options.hash.size else {
            throw CofferError.invalid(
                "prehashed input is \(input.count) bytes; \(options.hash.rawValue) digests are \(options.hash.size) bytes"
            )
        }
        return input
    }

    func sign(
        _ input: [UInt8],
        keyVersion: Int,
        options: SigningOptions
    ) throws(CofferError) -> (signature: String, version: Int) {
        guard type.supportsSigning else {
            throw CofferError.invalid("key type \(type.rawValue) does not support signing")
        }
        let version = try writeVersion(keyVersion, "signing")
        let key = try signingKey(version, context: options.context)
        let signature: [UInt8]
        if type == .ed25519 {
            guard !options.prehashed else {
                throw CofferError.invalid("prehashed input is not supported for ed25519 keys; send the message itself")
            }
            signature = try key.signMessage(input)
        } else if type.curve != nil {
            let der = try key.signDigest(try digestToSign(input, options), hash: nil, rsa: nil)
            if options.jws {
                guard let jws = PKey.ecdsaDERToJWS(der, componentSize: type.ecdsaComponentSize) else {
                    throw CofferError(.internal, "could not convert an ECDSA signature to JWS form")
                }
                return ("vault:v\(version.number):" + Base64URL.encode(jws), version.number)
            }
            signature = der
        } else {
            signature = try key.signDigest(try digestToSign(input, options), hash: options.hash, rsa: options.rsa)
        }
        return (VersionedValue.format(version.number, signature), version.number)
    }

    func verify(_ input: [UInt8], signature: String, options: SigningOptions) throws(CofferError) -> Bool {
        guard type.supportsSigning else {
            throw CofferError.invalid("key type \(type.rawValue) does not support verification")
        }
        let bytes = Array(signature.utf8)
        let (number, range) = try withRawBytes(bytes, [], []) { (b, _, _) throws(CofferError) in
            try VersionedValue.parse(b, what: "signature")
        }
        let version = try readVersion(number, "signature")
        let bodyText = String(decoding: bytes[range], as: UTF8.self)
        guard let body = options.jws && type.curve != nil ? Base64URL.decode(bodyText) : Base64.decode(bodyText) else {
            throw CofferError.invalid("invalid base64 signature value")
        }
        let key: PKey
        if derived {
            key = try signingKey(version, context: options.context)
        } else {
            key = version.pkey!
        }
        if type == .ed25519 {
            guard !options.prehashed else {
                throw CofferError.invalid("prehashed input is not supported for ed25519 keys; send the message itself")
            }
            return try key.verifyMessage(input, signature: body)
        }
        let digest = try digestToSign(input, options)
        if type.curve != nil {
            let der = options.jws ? PKey.ecdsaJWSToDER(body) : body
            guard let der else { return false }
            return try key.verifyDigest(digest, signature: der, hash: nil, rsa: nil)
        }
        return try key.verifyDigest(digest, signature: body, hash: options.hash, rsa: options.rsa)
    }
}

/// Base64url without padding (RFC 7515), for JWS-marshaled ECDSA signatures.
enum Base64URL {
    static func encode(_ bytes: [UInt8]) -> String {
        var text = Array(Base64.encode(bytes).utf8)
        while text.last == UInt8(ascii: "=") { text.removeLast() }
        for i in text.indices {
            if text[i] == UInt8(ascii: "+") {
                text[i] = UInt8(ascii: "-")
            } else if text[i] == UInt8(ascii: "/") {
                text[i] = UInt8(ascii: "_")
            }
        }
        return String(decoding: text, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var bytes = Array(text.utf8)
        for i in bytes.indices {
            if bytes[i] == UInt8(ascii: "-") {
                bytes[i] = UInt8(ascii: "+")
            } else if bytes[i] == UInt8(ascii: "_") {
                bytes[i] = UInt8(ascii: "/")
            }
        }
        guard !text.contains("+"), !text.contains("/") else { return nil }
        return Base64.decode(String(decoding: bytes, as: UTF8.self))
    }
}
