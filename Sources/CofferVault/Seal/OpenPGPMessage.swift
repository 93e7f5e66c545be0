import COpenSSL
package import CofferAudit
package import CofferCore
package import CofferFramework

/// OpenPGP messages, written the way every OpenPGP implementation reads: a version 3 public-key
/// encrypted session key packet (RSA PKCS#1 v1.5, or ECDH on Curve25519 per RFC 6637) followed by a
/// version 1 symmetrically encrypted integrity-protected data packet (AES-256 in OpenPGP's CFB mode,
/// with the SHA-1 modification detection code) around a binary literal data packet. This is what
/// Vault's `pgp_keys` produce (Go's openpgp.Encrypt), and what `gpg --decrypt` reads.
extension OpenPGP {
    /// Encrypts `plaintext` to `recipient`; returns the binary message.
    static func encrypt(_ plaintext: [UInt8], to recipient: Recipient) throws(CofferError) -> [UInt8] {
        let sessionKey = SecureBytes(randomCount: 32)
        let keyPacket = try sessionKeyPacket(sessionKey, to: recipient.encryptionKey)
        let dataPacket = try encryptedDataPacket(plaintext, key: sessionKey)
        return packet(1, keyPacket) + packet(18, dataPacket)
    }

    /// Symmetric algorithm 9: AES-256.
    static let aes256: UInt8 = 9

    /// A packet with a new-format header.
    static func packet(_ tag: UInt8, _ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0xC0 | tag]
        switch body.count {
        case ..<192:
            out.append(UInt8(body.count))
        case ..<8384:
            let v = body.count - 192
            out += [UInt8((v >> 8) + 192), UInt8(v & 0xFF)]
        default:
            out.append(0xFF)
            out += bigEndian32(body.count)
        }
        return out + body
    }

    /// A multiprecision integer from big-endian bytes (leading zero bytes dropped).
    static func mpi(_ value: [UInt8]) -> [UInt8] {
        let trimmed = Array(value.drop { $0 == 0 })
        guard let first = trimmed.first else { return [0, 0] }
        let bits = (trimmed.count - 1) * 8 + (8 - first.leadingZeroBitCount)
        return [UInt8(truncatingIfNeeded: bits >> 8), UInt8(truncatingIfNeeded: bits)] + trimmed
    }

    /// Public-key encrypted session key packet, version 3.
    static func sessionKeyPacket(_ sessionKey: SecureBytes, to key: Key) throws(CofferError) -> [UInt8] {
        // The session key as the packet carries it: algorithm, key, two-byte sum of the key bytes.
        var material: [UInt8] = sessionKey.withUnsafeBytes { k in
            let sum = k.reduce(0) { ($0 + Int($1)) & 0xFFFF }
            return [aes256] + Array(k) + [UInt8(sum >> 8), UInt8(sum & 0xFF)]
        }
        defer { cleanse(&material) }
        var body: [UInt8] = [3] + key.keyID + [key.algorithm]
        switch key.material {
        case .rsa(let n, let e):
            body += mpi(try encryptRSA(n: n, e: e, material))
        case .cv25519(let point, let kdfHash, let kekCipher):
            // RFC 6637 §8: an ephemeral X25519 key, a KEK from the shared secret, AES key wrap.
            guard let hashName = kdfHashName(kdfHash), let (wrapName, kekLength) = keyWrapCipher(kekCipher) else {
                throw CofferError.invalid("has ECDH KDF parameters Coffer does not support")
            }
            let (ephemeral, shared) = try x25519(peer: point)
            let parameters =
                [UInt8(cv25519OID.count)] + cv25519OID + [18, 0x03, 0x01, kdfHash, kekCipher]
                + Array("Anonymous Sender    ".utf8) + key.fingerprint
            var kek = shared.withUnsafeBytes { z in digest(hashName, [0, 0, 0, 1] + Array(z) + parameters) }
            defer { cleanse(&kek) }
            guard kek.count >= kekLength else {
                throw CofferError(.internal, "the ECDH key derivation failed in OpenSSL")
            }
            // PKCS#5 padding to a multiple of 8 bytes, then RFC 3394 key wrap.
            let padding = 8 - material.count % 8
            var padded = material + [UInt8](repeating: UInt8(padding), count: padding)
            defer { cleanse(&padded) }
            let wrapped = try cipher(wrapName, key: Array(kek.prefix(kekLength)), iv: nil, padded, wrap: true)
            body += mpi([0x40] + ephemeral) + [UInt8(wrapped.count)] + wrapped
        case .ed25519, .unsupported:
            throw CofferError(.internal, "an OpenPGP key that cannot encrypt was chosen for encryption")
        }
        return body
    }

    /// Symmetrically encrypted integrity-protected data packet, version 1.
    static func encryptedDataPacket(_ plaintext: [UInt8], key: SecureBytes) throws(CofferError) -> [UInt8] {
        // A random block whose last two bytes repeat, the literal data packet ('b'inary, no file
        // name, no date), then the modification detection code over all of it.
        var prefix = Random.bytes(16)
        prefix += prefix.suffix(2)
        var literal = packet(11, [0x62, 0, 0, 0, 0, 0] + plaintext)
        defer { cleanse(&literal) }
        var inner = prefix + literal + [0xD3, 0x14]
        inner += digest("SHA1", inner)
        defer { cleanse(&inner) }
        let encrypted = try key.withUnsafeBytes { (k) throws(CofferError) in
            try cipher("AES-256-CFB", key: Array(k), iv: [UInt8](repeating: 0, count: 16), inner, wrap: false)
        }
        return [1] + encrypted
    }

    static func kdfHashName(_ id: UInt8) -> String? {
        switch id {
        case 8: "SHA256"
        case 9: "SHA384"
        case 10: "SHA512"
        default: nil
        }
    }

    /// OpenSSL's key-wrap cipher and the KEK length for an OpenPGP symmetric algorithm id.
    static func keyWrapCipher(_ id: UInt8) -> (String, Int)? {
        switch id {
        case 7: ("AES-128-WRAP", 16)
        case 8: ("AES-192-WRAP", 24)
        case 9: ("AES-256-WRAP", 32)
        default: nil
        }
    }

    static func cleanse(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            if let base = buffer.baseAddress { coffer_openssl_cleanse(base, buffer.count) }
        }
    }
}

// MARK: OpenSSL

extension OpenPGP {
    /// A digest by OpenSSL name ("SHA1", "SHA256", ...); empty if OpenSSL has no such digest.
    static func digest(_ name: String, _ data: [UInt8]) -> [UInt8] {
        guard let md = EVP_MD_fetch(nil, name, nil) else { return [] }
        defer { EVP_MD_free(md) }
        var out = [UInt8](repeating: 0, count: 64)
        var length: UInt32 = 0
        guard EVP_Digest(data, data.count, &out, &length, md, nil) == 1 else { return [] }
        return Array(out.prefix(Int(length)))
    }

    /// An RSA public key from its modulus and exponent; the caller frees it with EVP_PKEY_free.
    static func rsaPublicKey(n: [UInt8], e: [UInt8]) throws(CofferError) -> OpaquePointer {
        guard let builder = OSSL_PARAM_BLD_new() else {
            throw CofferError(.outOfMemory, "cannot allocate RSA key parameters")
        }
        defer { OSSL_PARAM_BLD_free(builder) }
        // The builder keeps pointers to the names until the parameters are freed: give it copies that live that long.
        guard let nName = CRYPTO_strdup("n", nil, 0), let eName = CRYPTO_strdup("e", nil, 0) else {
            throw CofferError(.outOfMemory, "cannot allocate RSA key parameters")
        }
        defer {
            CRYPTO_free(nName, nil, 0)
            CRYPTO_free(eName, nil, 0)
        }
        guard let nBN = BN_bin2bn(n, Int32(n.count), nil) else {
            throw CofferError(.outOfMemory, "cannot allocate an RSA modulus")
        }
        defer { BN_free(nBN) }
        guard let eBN = BN_bin2bn(e, Int32(e.count), nil) else {
            throw CofferError(.outOfMemory, "cannot allocate an RSA exponent")
        }
        defer { BN_free(eBN) }
        guard OSSL_PARAM_BLD_push_BN(builder, nName, nBN) == 1, OSSL_PARAM_BLD_push_BN(builder, eName, eBN) == 1,
            let params = OSSL_PARAM_BLD_to_param(builder)
        else { throw CofferError(.outOfMemory, "cannot build RSA key parameters") }
        defer { OSSL_PARAM_free(params) }
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "RSA", nil) else {
            throw CofferError(.internal, "OpenSSL has no RSA")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        var key: OpaquePointer?
        guard EVP_PKEY_fromdata_init(ctx) == 1, EVP_PKEY_fromdata(ctx, &key, coffer_select_public(), params) == 1,
            let key
        else {
            ERR_clear_error()
            throw CofferError.invalid("has an RSA key OpenSSL does not accept")
        }
        return key
    }

    /// RSASSA-PKCS1-v1_5 over a digest made with `hashName`.
    static func verifyRSA(
        n: [UInt8],
        e: [UInt8],
        digest: [UInt8],
        hashName: String,
        signature: [UInt8]
    ) throws(CofferError) -> Bool {
        let key = try rsaPublicKey(n: n, e: e)
        defer { EVP_PKEY_free(key) }
        guard let md = EVP_MD_fetch(nil, hashName, nil) else { return false }
        defer { EVP_MD_free(md) }
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, key, nil) else {
            throw CofferError(.outOfMemory, "cannot allocate an RSA context")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        let ok =
            EVP_PKEY_verify_init(ctx) == 1 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1
            && EVP_PKEY_CTX_set_signature_md(ctx, md) == 1
            && EVP_PKEY_verify(ctx, signature, signature.count, digest, digest.count) == 1
        ERR_clear_error()
        return ok
    }

    /// RSAES-PKCS1-v1_5 encryption.
    static func encryptRSA(n: [UInt8], e: [UInt8], _ message: [UInt8]) throws(CofferError) -> [UInt8] {
        let key = try rsaPublicKey(n: n, e: e)
        defer { EVP_PKEY_free(key) }
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, key, nil) else {
            throw CofferError(.outOfMemory, "cannot allocate an RSA context")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        var length = 0
        guard EVP_PKEY_encrypt_init(ctx) == 1, EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1,
            EVP_PKEY_encrypt(ctx, nil, &length, message, message.count) == 1
        else {
            ERR_clear_error()
            throw CofferError(.internal, "RSA encryption failed in OpenSSL")
        }
        var out = [UInt8](repeating: 0, count: length)
        guard EVP_PKEY_encrypt(ctx, &out, &length, message, message.count) == 1 else {
            ERR_clear_error()
            throw CofferError(.internal, "RSA encryption failed in OpenSSL")
        }
        return Array(out.prefix(length))
    }

    /// Pure Ed25519 over `message` (OpenPGP's legacy EdDSA signs the digest as the message).
    static func verifyEd25519(publicKey: [UInt8], message: [UInt8], signature: [UInt8]) -> Bool {
        guard publicKey.count == 32, signature.count == 64,
            let key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, publicKey, 32)
        else {
            ERR_clear_error()
            return false
        }
        defer { EVP_PKEY_free(key) }
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        let ok =
            EVP_DigestVerifyInit_ex(ctx, nil, nil, nil, nil, key, nil) == 1
            && EVP_DigestVerify(ctx, signature, signature.count, message, message.count) == 1
        ERR_clear_error()
        return ok
    }

    /// A fresh X25519 key pair and its shared secret with `peer`: (our public key, the secret).
    static func x25519(peer: [UInt8]) throws(CofferError) -> ([UInt8], SecureBytes) {
        let secret = SecureBytes(randomCount: 32)
        guard let ours = secret.withUnsafeBytes({ EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nil, u8($0), 32) })
        else {
            throw CofferError(.internal, "X25519 is not available in OpenSSL")
        }
        defer { EVP_PKEY_free(ours) }
        var publicKey = [UInt8](repeating: 0, count: 32)
        var publicLength = 32
        guard EVP_PKEY_get_raw_public_key(ours, &publicKey, &publicLength) == 1, publicLength == 32 else {
            throw CofferError(.internal, "X25519 key generation failed in OpenSSL")
        }
        guard peer.count == 32, let theirs = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nil, peer, 32) else {
            ERR_clear_error()
            throw CofferError.invalid("has a Curve25519 key OpenSSL does not accept")
        }
        defer { EVP_PKEY_free(theirs) }
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, ours, nil) else {
            throw CofferError(.outOfMemory, "cannot allocate an X25519 context")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        let shared = try SecureBytes(count: 32) { (out: UnsafeMutableRawBufferPointer) throws(CofferError) in
            var length = 32
            guard EVP_PKEY_derive_init(ctx) == 1, EVP_PKEY_derive_set_peer(ctx, theirs) == 1,
                EVP_PKEY_derive(ctx, out.baseAddress?.assumingMemoryBound(to: UInt8.self), &length) == 1, length == 32
            else {
                ERR_clear_error()
                throw CofferError.invalid("has a Curve25519 key that gives no shared secret (a low-order point)")
            }
        }
        return (publicKey, shared)
    }

    /// One-shot encryption with an OpenSSL cipher by name (CFB, or a key-wrap mode).
    static func cipher(
        _ name: String,
        key: [UInt8],
        iv: [UInt8]?,
        _ input: [UInt8],
        wrap: Bool
    ) throws(CofferError) -> [UInt8] {
        guard let cipher = EVP_CIPHER_fetch(nil, name, nil) else {
            throw CofferError(.internal, "OpenSSL has no \(name)")
        }
        defer { EVP_CIPHER_free(cipher) }
        guard let ctx = EVP_CIPHER_CTX_new() else {
            throw CofferError(.outOfMemory, "cannot allocate a cipher context")
        }
        defer { EVP_CIPHER_CTX_free(ctx) }
        if wrap { EVP_CIPHER_CTX_set_flags(ctx, Int32(EVP_CIPHER_CTX_FLAG_WRAP_ALLOW)) }
        var out = [UInt8](repeating: 0, count: input.count + 32)
        var written: Int32 = 0
        var finalWritten: Int32 = 0
        let initialised =
            iv.map { EVP_EncryptInit_ex2(ctx, cipher, key, $0, nil) == 1 }
            ?? (EVP_EncryptInit_ex2(ctx, cipher, key, nil, nil) == 1)
        let ok = out.withUnsafeMutableBufferPointer { o in
            initialised
                && EVP_EncryptUpdate(ctx, o.baseAddress, &written, input, Int32(input.count)) == 1
                && EVP_EncryptFinal_ex(ctx, o.baseAddress.map { $0 + Int(written) }, &finalWritten) == 1
        }
        guard ok else {
            ERR_clear_error()
            throw CofferError(.internal, "\(name) encryption failed in OpenSSL")
        }
        return Array(out.prefix(Int(written + finalWritten)))
    }
}
