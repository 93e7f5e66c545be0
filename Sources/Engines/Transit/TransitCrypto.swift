import COpenSSL
import CofferCore
package import CofferFramework
import Synchronization

// The OpenSSL 3 EVP operations transit needs: AEADs, digests and HMACs by name, and asymmetric keys
// (generate, sign, verify, RSA-OAEP, PEM/DER encodings). Algorithms are fetched once; EVP_CIPHER and
// EVP_MD objects are immutable and documented as safe to share between threads.

/// An authenticated cipher with a 96-bit nonce and a 128-bit tag.
enum AEAD: Sendable {
    case aes128GCM, aes256GCM, chacha20Poly1305

    static let nonceSize = 12
    static let tagSize = 16

    var keySize: Int { self == .aes128GCM ? 16 : 32 }

    nonisolated(unsafe) private static let ciphers: [OpaquePointer] = [
        "AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305",
    ].map {
        guard let c = EVP_CIPHER_fetch(nil, $0, nil) else {
            fatalError("OpenSSL has no \($0) implementation; install OpenSSL 3")
        }
        return c
    }

    private var cipher: OpaquePointer {
        switch self {
        case .aes128GCM: AEAD.ciphers[0]
        case .aes256GCM: AEAD.ciphers[1]
        case .chacha20Poly1305: AEAD.ciphers[2]
        }
    }

    /// Encrypts `plaintext` into `output` (`plaintext.count + tagSize` bytes: ciphertext then tag).
    func seal(
        key: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        plaintext: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        guard key.count == keySize, nonce.count == AEAD.nonceSize, output.count == plaintext.count + AEAD.tagSize,
            let ctx = EVP_CIPHER_CTX_new()
        else { return false }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var len: Int32 = 0
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        return EVP_EncryptInit_ex2(ctx, cipher, bytes(key), bytes(nonce), nil) == 1
            && (aad.count == 0 || EVP_EncryptUpdate(ctx, nil, &len, bytes(aad), Int32(aad.count)) == 1)
            && (plaintext.count == 0
                || EVP_EncryptUpdate(ctx, out, &len, bytes(plaintext), Int32(plaintext.count)) == 1)
            && EVP_EncryptFinal_ex(ctx, out + plaintext.count, &len) == 1
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(AEAD.tagSize), out + plaintext.count) == 1
    }

    /// Decrypts `sealed` (ciphertext then tag) into `output` (`sealed.count - tagSize` bytes); false
    /// when authentication fails, with `output` zeroed.
    func open(
        key: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        sealed: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        guard key.count == keySize, nonce.count == AEAD.nonceSize, sealed.count >= AEAD.tagSize,
            output.count == sealed.count - AEAD.tagSize, let ctx = EVP_CIPHER_CTX_new()
        else { return false }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var len: Int32 = 0
        let ctLen = sealed.count - AEAD.tagSize
        var scratch: UInt8 = 0
        let out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let ok = withUnsafeMutablePointer(to: &scratch) { scratchPointer in
            EVP_DecryptInit_ex2(ctx, cipher, bytes(key), bytes(nonce), nil) == 1
                && (aad.count == 0 || EVP_DecryptUpdate(ctx, nil, &len, bytes(aad), Int32(aad.count)) == 1)
                && (ctLen == 0 || EVP_DecryptUpdate(ctx, out, &len, bytes(sealed), Int32(ctLen)) == 1)
                && EVP_CIPHER_CTX_ctrl(
                    ctx,
                    EVP_CTRL_AEAD_SET_TAG,
                    Int32(AEAD.tagSize),
                    UnsafeMutableRawPointer(mutating: sealed.baseAddress! + ctLen)
                ) == 1
                && EVP_DecryptFinal_ex(ctx, ctLen == 0 ? scratchPointer : out! + ctLen, &len) == 1
        }
        if !ok, output.count > 0 { coffer_openssl_cleanse(output.baseAddress, output.count) }
        return ok
    }
}

/// The C string of a static string (stable for the life of the program).
func cString(_ text: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

@inline(__always)
func bytes(_ buffer: UnsafeRawBufferPointer) -> UnsafePointer<UInt8>? {
    buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
}

/// The hash algorithms transit accepts, by Vault's names.
enum HashAlgorithm: String, Sendable, CaseIterable {
    case sha1 = "sha1"
    case sha2_224 = "sha2-224"
    case sha2_256 = "sha2-256"
    case sha2_384 = "sha2-384"
    case sha2_512 = "sha2-512"
    case sha3_224 = "sha3-224"
    case sha3_256 = "sha3-256"
    case sha3_384 = "sha3-384"
    case sha3_512 = "sha3-512"

    private var openSSLName: String {
        switch self {
        case .sha1: "SHA1"
        case .sha2_224: "SHA2-224"
        case .sha2_256: "SHA2-256"
        case .sha2_384: "SHA2-384"
        case .sha2_512: "SHA2-512"
        case .sha3_224: "SHA3-224"
        case .sha3_256: "SHA3-256"
        case .sha3_384: "SHA3-384"
        case .sha3_512: "SHA3-512"
        }
    }

    nonisolated(unsafe) private static let digests: [OpaquePointer] = allCases.map {
        guard let md = EVP_MD_fetch(nil, $0.openSSLName, nil) else { fatalError("OpenSSL has no \($0.openSSLName)") }
        return md
    }

    var md: OpaquePointer { HashAlgorithm.digests[HashAlgorithm.allCases.firstIndex(of: self)!] }
    var size: Int { Int(EVP_MD_get_size(md)) }

    /// Parses a request's algorithm name (Vault also accepts "sha256"-style aliases for SHA-2).
    init(name: String, field: String) throws(CofferError) {
        let aliases = ["sha224": "sha2-224", "sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"]
        guard let algorithm = HashAlgorithm(rawValue: aliases[name] ?? name) else {
            throw CofferError.invalid(
                "\(field) is not a supported hash algorithm; use one of \(HashAlgorithm.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        self = algorithm
    }

    func digest(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var outLen: UInt32 = 0
        data.withUnsafeBytes { d in
            out.withUnsafeMutableBufferPointer { o in
                _ = EVP_Digest(d.baseAddress, d.count, o.baseAddress, &outLen, md, nil)
            }
        }
        return out
    }

    func hmac(key: UnsafeRawBufferPointer, data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var outLen: UInt32 = 0
        data.withUnsafeBytes { d in
            out.withUnsafeMutableBufferPointer { o in
                _ = HMAC(md, key.baseAddress, Int32(key.count), bytes(d), d.count, o.baseAddress, &outLen)
            }
        }
        return out
    }
}

/// An OpenSSL asymmetric key (EC, RSA or Ed25519), freed (and its private parts cleared) on release.
final class PKey: Sendable {
    // Owned exclusively; OpenSSL documents an EVP_PKEY as safe to use from several threads at once for
    // signing and verifying once it is fully set up, which it is here before `init` returns.
    nonisolated(unsafe) let pointer: OpaquePointer
    /// A generated EC key's public point (uncompressed), read once: each read converts the point to
    /// affine coordinates, and a PKI leaf needs it twice (its SubjectPublicKeyInfo and its SEC1 key).
    let generatedPoint: [UInt8]?
    /// ECDSA signing contexts for this key (PKey.sign).
    let ecdsaContexts = PKeyContextPool()

    init(_ pointer: OpaquePointer, point: [UInt8]? = nil) {
        self.pointer = pointer
        generatedPoint = point
    }
    deinit { EVP_PKEY_free(pointer) }

    /// An internal error naming the step and OpenSSL's own reason (never key material).
    static func failure(_ what: String) -> CofferError {
        var reason = [CChar](repeating: 0, count: 256)
        let code = ERR_peek_last_error()
        if code != 0 { ERR_error_string_n(code, &reason, reason.count) }
        ERR_clear_error()
        return CofferError(
            .internal,
            "OpenSSL failed to \(what)"
                + (code != 0
                    ? " (\(String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))"
                    : "")
        )
    }

    /// A fresh EC key on `curve` ("P-256", "P-384", "P-521") or RSA key of `rsaBits`.
    static func generate(curve: String? = nil, rsaBits: Int? = nil) throws(CofferError) -> PKey {
        guard let curve else {
            guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "RSA", nil) else { throw failure("create a key context") }
            defer { EVP_PKEY_CTX_free(ctx) }
            var key: OpaquePointer?
            guard EVP_PKEY_keygen_init(ctx) == 1,
                rsaBits.map({ EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, Int32($0)) == 1 }) ?? true,
                EVP_PKEY_generate(ctx, &key) == 1, let key
            else { throw failure("generate a key") }
            return PKey(key)
        }
        let pool = PKeyContextPool.keygen(curve: curve)
        let context = try pool.take { () throws(CofferError) in
            guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else { throw failure("create a key context") }
            let context = PKeyContext(ctx)
            guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_CTX_set_group_name(ctx, curve) == 1 else {
                throw failure("generate a key")
            }
            return context
        }
        var key: OpaquePointer?
        guard EVP_PKEY_generate(context.pointer, &key) == 1, let key else { throw failure("generate a key") }
        pool.putBack(context)
        do {
            return PKey(key, point: try ecPoint(of: key))
        } catch {
            EVP_PKEY_free(key)
            throw error
        }
    }

    /// The Ed25519 key of a 32-byte seed.
    static func ed25519(seed: UnsafeRawBufferPointer) throws(CofferError) -> PKey {
        guard seed.count == 32, let key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, bytes(seed), 32) else {
            throw failure("load an Ed25519 key")
        }
        return PKey(key)
    }

    /// Parses a DER private key (PKCS#8, SEC1 or PKCS#1), as `der` writes it.
    static func privateKey(der: UnsafeRawBufferPointer) throws(CofferError) -> PKey {
        var cursor = bytes(der)
        guard let key = d2i_AutoPrivateKey(nil, &cursor, der.count) else { throw failure("parse a stored private key") }
        return PKey(key)
    }

    /// The private key in DER (SEC1 for EC, PKCS#1 for RSA), for storage.
    func privateDER() throws(CofferError) -> SecureBytes {
        let length = i2d_PrivateKey(pointer, nil)
        guard length > 0 else { throw PKey.failure("encode a private key") }
        return try SecureBytes(count: Int(length)) { (out: UnsafeMutableRawBufferPointer) throws(CofferError) in
            var cursor: UnsafeMutablePointer<UInt8>? = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard i2d_PrivateKey(pointer, &cursor) == length else { throw PKey.failure("encode a private key") }
        }
    }

    /// The raw 32-byte Ed25519 public key.
    func rawPublicKey() throws(CofferError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length = 32
        guard EVP_PKEY_get_raw_public_key(pointer, &out, &length) == 1, length == 32 else {
            throw PKey.failure("read an Ed25519 public key")
        }
        return out
    }

    /// PEM text: the public key as SubjectPublicKeyInfo, or the private key in its type-specific form
    /// ("EC PRIVATE KEY", "RSA PRIVATE KEY"), as Vault exports them.
    func pem(privateKey: Bool) throws(CofferError) -> String {
        let selection = privateKey ? coffer_select_keypair() : coffer_select_public()
        // The encoder keeps these pointers until it is freed: they must be static strings.
        let structure: StaticString = privateKey ? "type-specific" : "SubjectPublicKeyInfo"
        let format: StaticString = "PEM"
        guard let encoder = OSSL_ENCODER_CTX_new_for_pkey(pointer, selection, cString(format), cString(structure), nil)
        else {
            throw PKey.failure("create a PEM encoder")
        }
        defer { OSSL_ENCODER_CTX_free(encoder) }
        guard let bio = BIO_new(BIO_s_mem()) else { throw PKey.failure("allocate a buffer") }
        defer { BIO_free(bio) }
        guard OSSL_ENCODER_to_bio(encoder, bio) == 1 else { throw PKey.failure("encode a key as PEM") }
        var data: UnsafeMutablePointer<CChar>?
        let length = coffer_bio_mem_data(bio, &data)
        guard length > 0, let data else { throw PKey.failure("encode a key as PEM") }
        let text = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
        coffer_openssl_cleanse(data, length)
        return text
    }

    private func withContext<R>(_ body: (OpaquePointer) throws(CofferError) -> R) throws(CofferError) -> R {
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, pointer, nil) else {
            throw PKey.failure("create a key context")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        return try body(ctx)
    }

    /// RSA padding for signatures.
    enum RSASignature: Sendable {
        case pss(SaltLength)
        case pkcs1v15
    }

    /// PSS salt length, as Vault's `salt_length`: "auto" signs with the longest salt and verifies
    /// any; "hash" uses the digest's length.
    enum SaltLength: Sendable {
        case auto, hash
        case bytes(Int32)
    }

    private func configure(_ ctx: OpaquePointer, rsa: RSASignature?, hash: HashAlgorithm?, signing: Bool) -> Bool {
        guard let rsa else { return true }
        let md = hash.map { EVP_PKEY_CTX_set_signature_md(ctx, $0.md) == 1 } ?? true
        switch rsa {
        case .pkcs1v15:
            return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 && md
        case .pss(let salt):
            let length: Int32
            switch salt {
            case .auto: length = signing ? coffer_rsa_pss_saltlen_max() : coffer_rsa_pss_saltlen_auto()
            case .hash: length = coffer_rsa_pss_saltlen_digest()
            case .bytes(let n): length = n
            }
            return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 && md
                && EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, length) == 1
        }
    }

    /// Signs a digest (ECDSA: DER signature; RSA: with `rsa` padding and `hash` as the digest's algorithm).
    func signDigest(_ digest: [UInt8], hash: HashAlgorithm?, rsa: RSASignature?) throws(CofferError) -> [UInt8] {
        if case .pss(.bytes(let salt))? = rsa {
            // RFC 8017 §9.1.1: the encoded message holds the digest, the salt and two more bytes.
            let longest =
                (Int(EVP_PKEY_get_bits(pointer)) - 1 + 7) / 8
                - (hash.map { Int(EVP_MD_get_size($0.md)) } ?? digest.count) - 2
            guard Int(salt) <= longest else {
                throw CofferError.invalid(
                    "salt_length is longer than this key and hash algorithm allow: at most \(longest) bytes"
                )
            }
        }
        return try withContext { (ctx) throws(CofferError) -> [UInt8] in
            var length = 0
            guard EVP_PKEY_sign_init(ctx) == 1, configure(ctx, rsa: rsa, hash: hash, signing: true),
                EVP_PKEY_sign(ctx, nil, &length, digest, digest.count) == 1
            else { throw PKey.failure("sign") }
            var signature = [UInt8](repeating: 0, count: length)
            guard EVP_PKEY_sign(ctx, &signature, &length, digest, digest.count) == 1 else {
                throw CofferError.invalid(
                    "the input cannot be signed with this key and hash algorithm (is the prehashed input the length of the hash?)"
                )
            }
            return Array(signature.prefix(length))
        }
    }

    func verifyDigest(
        _ digest: [UInt8],
        signature: [UInt8],
        hash: HashAlgorithm?,
        rsa: RSASignature?
    ) throws(CofferError) -> Bool {
        try withContext { (ctx) throws(CofferError) -> Bool in
            guard EVP_PKEY_verify_init(ctx) == 1, configure(ctx, rsa: rsa, hash: hash, signing: false) else {
                throw PKey.failure("verify")
            }
            let ok = EVP_PKEY_verify(ctx, signature, signature.count, digest, digest.count) == 1
            ERR_clear_error()
            return ok
        }
    }

    /// Ed25519 (pure): signs the message itself.
    func signMessage(_ message: [UInt8]) throws(CofferError) -> [UInt8] {
        guard let md = EVP_MD_CTX_new() else { throw PKey.failure("sign") }
        defer { EVP_MD_CTX_free(md) }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = 64
        guard EVP_DigestSignInit_ex(md, nil, nil, nil, nil, pointer, nil) == 1,
            EVP_DigestSign(md, &signature, &length, message, message.count) == 1
        else { throw PKey.failure("sign with Ed25519") }
        return signature
    }

    func verifyMessage(_ message: [UInt8], signature: [UInt8]) throws(CofferError) -> Bool {
        guard let md = EVP_MD_CTX_new() else { throw PKey.failure("verify") }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestVerifyInit_ex(md, nil, nil, nil, nil, pointer, nil) == 1 else { throw PKey.failure("verify") }
        let ok = EVP_DigestVerify(md, signature, signature.count, message, message.count) == 1
        ERR_clear_error()
        return ok
    }

    /// RSA-OAEP with SHA-256 for both the hash and MGF1, as Vault encrypts with RSA keys.
    func rsaOAEP(_ input: [UInt8], encrypt: Bool) throws(CofferError) -> [UInt8] {
        try withContext { (ctx) throws(CofferError) -> [UInt8] in
            let md = HashAlgorithm.sha2_256.md
            var length = 0
            let initialised = encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)
            guard initialised == 1, EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1,
                EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) == 1, EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) == 1
            else { throw PKey.failure("set up RSA-OAEP") }
            let run = { (out: UnsafeMutablePointer<UInt8>?, length: inout Int) -> Int32 in
                encrypt
                    ? EVP_PKEY_encrypt(ctx, out, &length, input, input.count)
                    : EVP_PKEY_decrypt(ctx, out, &length, input, input.count)
            }
            guard run(nil, &length) == 1 else { throw PKey.failure("size an RSA-OAEP output") }
            var out = [UInt8](repeating: 0, count: length)
            guard out.withUnsafeMutableBufferPointer({ run($0.baseAddress, &length) }) == 1 else {
                ERR_clear_error()
                throw CofferError.invalid(
                    encrypt
                        ? "plaintext is too long for RSA-OAEP with this key"
                        : "crypto/rsa: decryption error (the ciphertext was modified or made with another key)"
                )
            }
            return Array(out.prefix(length))
        }
    }

    // MARK: Parameters, for Vault-format backups

    /// A big-number parameter ("n", "e", "d", "priv", "qx", ...) in decimal.
    func decimalParameter(_ name: String) throws(CofferError) -> String {
        var bn: OpaquePointer?
        guard EVP_PKEY_get_bn_param(pointer, name, &bn) == 1, let bn else {
            throw PKey.failure("read key parameter \(name)")
        }
        defer { BN_clear_free(bn) }
        guard let text = BN_bn2dec(bn) else { throw PKey.failure("format key parameter \(name)") }
        defer {
            coffer_openssl_cleanse(text, strlen(text))
            CRYPTO_free(text, nil, 0)
        }
        return String(decoding: UnsafeRawBufferPointer(start: text, count: strlen(text)), as: UTF8.self)
    }

    /// Builds a key of `type` ("EC", "RSA") from big-number parameters given in decimal, plus an
    /// optional group name and encoded public point for EC.
    static func fromDecimal(
        type: String,
        group: String?,
        publicPoint: [UInt8]?,
        numbers: [(String, String)]
    ) throws(CofferError) -> PKey {
        guard let builder = OSSL_PARAM_BLD_new() else { throw failure("allocate key parameters") }
        defer { OSSL_PARAM_BLD_free(builder) }
        // The builder keeps pointers to names and values until `to_param`: give it copies that live that long.
        var strings: [UnsafeMutablePointer<CChar>] = []
        defer { for s in strings { CRYPTO_free(s, nil, 0) } }
        func keep(_ text: String) -> UnsafeMutablePointer<CChar> {
            let copy = CRYPTO_strdup(text, nil, 0)!
            strings.append(copy)
            return copy
        }
        var bignums: [OpaquePointer] = []
        defer { for bn in bignums { BN_clear_free(bn) } }
        if let group, OSSL_PARAM_BLD_push_utf8_string(builder, keep("group"), keep(group), 0) != 1 {
            throw failure("set the EC group")
        }
        let point = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, publicPoint?.count ?? 0), alignment: 1)
        defer { point.deallocate() }
        if let publicPoint {
            point.copyBytes(from: publicPoint)
            guard OSSL_PARAM_BLD_push_octet_string(builder, keep("pub"), point.baseAddress, publicPoint.count) == 1
            else {
                throw failure("set the EC public key")
            }
        }
        for (name, decimal) in numbers {
            var bn: OpaquePointer?
            guard !decimal.isEmpty, decimal.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), BN_dec2bn(&bn, decimal) > 0,
                let bn
            else {
                throw CofferError.invalid("the backup's key parameter \(name) is not a decimal number")
            }
            bignums.append(bn)
            guard OSSL_PARAM_BLD_push_BN(builder, keep(name), bn) == 1 else {
                throw failure("set key parameter \(name)")
            }
        }
        guard let params = OSSL_PARAM_BLD_to_param(builder) else { throw failure("build key parameters") }
        defer { OSSL_PARAM_free(params) }
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, type, nil) else { throw failure("create a key context") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var key: OpaquePointer?
        guard EVP_PKEY_fromdata_init(ctx) == 1, EVP_PKEY_fromdata(ctx, &key, coffer_select_keypair(), params) == 1,
            let key
        else {
            ERR_clear_error()
            throw CofferError.invalid("the backup holds \(type) key parameters OpenSSL does not accept")
        }
        let pkey = PKey(key)
        // A key built from parameters is checked before use: a wrong prime or point must not sign.
        guard let check = EVP_PKEY_CTX_new_from_pkey(nil, key, nil) else { throw failure("create a key context") }
        defer { EVP_PKEY_CTX_free(check) }
        guard EVP_PKEY_pairwise_check(check) == 1 else {
            ERR_clear_error()
            throw CofferError.invalid("the backup's \(type) key parameters do not form a valid key pair")
        }
        return pkey
    }

    /// ECDSA signature conversions between DER (ASN.1) and JWS (r ‖ s, each the size of the curve order).
    static func ecdsaDERToJWS(_ der: [UInt8], componentSize: Int) -> [UInt8]? {
        var cursor: UnsafePointer<UInt8>? = nil
        return der.withUnsafeBufferPointer { buffer -> [UInt8]? in
            cursor = buffer.baseAddress
            guard let sig = d2i_ECDSA_SIG(nil, &cursor, der.count) else { return nil }
            defer { ECDSA_SIG_free(sig) }
            var out = [UInt8](repeating: 0, count: componentSize * 2)
            let ok = out.withUnsafeMutableBufferPointer { o in
                BN_bn2binpad(ECDSA_SIG_get0_r(sig), o.baseAddress, Int32(componentSize)) == componentSize
                    && BN_bn2binpad(ECDSA_SIG_get0_s(sig), o.baseAddress! + componentSize, Int32(componentSize))
                        == componentSize
            }
            return ok ? out : nil
        }
    }

    static func ecdsaJWSToDER(_ jws: [UInt8]) -> [UInt8]? {
        guard !jws.isEmpty, jws.count % 2 == 0, let sig = ECDSA_SIG_new() else { return nil }
        defer { ECDSA_SIG_free(sig) }
        let half = jws.count / 2
        let (r, s) = jws.withUnsafeBufferPointer { b in
            (BN_bin2bn(b.baseAddress, Int32(half), nil), BN_bin2bn(b.baseAddress! + half, Int32(half), nil))
        }
        guard let r, let s else { return nil }
        guard ECDSA_SIG_set0(sig, r, s) == 1 else {
            BN_free(r)
            BN_free(s)
            return nil
        }
        let length = i2d_ECDSA_SIG(sig, nil)
        guard length > 0 else { return nil }
        var out = [UInt8](repeating: 0, count: Int(length))
        out.withUnsafeMutableBufferPointer { b in
            var cursor = b.baseAddress
            _ = i2d_ECDSA_SIG(sig, &cursor)
        }
        return out
    }
}

/// An OpenSSL `EVP_PKEY_CTX` set up for one job (generating keys on one curve, signing with one key) and
/// kept for the next: setting one up fetches the algorithm from the provider and costs more than an EC
/// key (P-256 on the VM of docs/benchmarks.md: 18.7 µs a key with a new context, 8.4 µs with a kept one;
/// an ECDSA signature 16.9 against 14.9 µs). A context is used by one thread at a time: taken from its
/// pool, used, put back. One whose operation failed is dropped, not put back.
final class PKeyContext: Sendable {
    nonisolated(unsafe) let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_CTX_free(pointer) }

    /// The SHA-2 digest named "SHA256", "SHA384" or "SHA512" of `message`, for signing or verifying it
    /// with a kept context (one call, no digest fetched from the provider).
    static func digest(_ name: String, _ message: [UInt8]) -> [UInt8] {
        switch name {
        case "SHA512":
            [UInt8](unsafeUninitializedCapacity: 64) {
                SHA512(message, message.count, $0.baseAddress)
                $1 = 64
            }
        case "SHA384":
            [UInt8](unsafeUninitializedCapacity: 48) {
                SHA384(message, message.count, $0.baseAddress)
                $1 = 48
            }
        default:
            [UInt8](unsafeUninitializedCapacity: 32) {
                SHA256(message, message.count, $0.baseAddress)
                $1 = 32
            }
        }
    }
}

/// Contexts kept for reuse: at most `kept`; more are freed when put back.
final class PKeyContextPool: Sendable {
    static let kept = 8
    private let contexts = Mutex<[PKeyContext]>([])

    /// The EC keygen pool of each curve.
    private static let keygen = Mutex<[String: PKeyContextPool]>([:])
    static func keygen(curve: String) -> PKeyContextPool {
        keygen.withLock { pools in
            if let pool = pools[curve] { return pool }
            let pool = PKeyContextPool()
            pools[curve] = pool
            return pool
        }
    }

    /// A kept context, or a new one from `make`.
    func take(_ make: () throws(CofferError) -> PKeyContext) throws(CofferError) -> PKeyContext {
        if let kept = contexts.withLock({ $0.popLast() }) { return kept }
        return try make()
    }

    func putBack(_ context: PKeyContext) {
        contexts.withLock { if $0.count < Self.kept { $0.append(context) } }
    }
}
