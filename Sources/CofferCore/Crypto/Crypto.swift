import COpenSSL

/// AES-256-GCM over OpenSSL's EVP interface, with a 96-bit nonce and a 128-bit tag.
public enum AESGCM {
    public static let keySize = 32
    public static let nonceSize = 12
    public static let tagSize = 16

    // Fetched once: an explicit fetch avoids OpenSSL 3's per-call implicit provider lookup.
    // The EVP_CIPHER is immutable and documented as safe to share between threads.
    nonisolated(unsafe) static let cipher: OpaquePointer = {
        guard let c = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil) else {
            fatalError("OpenSSL has no AES-256-GCM implementation; install OpenSSL 3 (libssl3)")
        }
        return c
    }()

    /// Encrypts `plaintext` into `output`, which must hold `plaintext.count + tagSize` bytes
    /// (ciphertext followed by the tag). Returns false only if OpenSSL fails.
    public static func seal(
        key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        precondition(key.count == keySize && nonce.count == nonceSize)
        precondition(output.count == plaintext.count + tagSize)
        guard let ctx = EVP_CIPHER_CTX_new() else { return false }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var len: Int32 = 0
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        return EVP_EncryptInit_ex2(ctx, cipher, u8(key), u8(nonce), nil) == 1
            && (aad.count == 0 || EVP_EncryptUpdate(ctx, nil, &len, u8(aad), Int32(aad.count)) == 1)
            && (plaintext.count == 0 || EVP_EncryptUpdate(ctx, out, &len, u8(plaintext), Int32(plaintext.count)) == 1)
            && EVP_EncryptFinal_ex(ctx, out + Int(len), &len) == 1
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, Int32(tagSize), out + plaintext.count) == 1
    }

    /// Decrypts `sealed` (ciphertext followed by the tag) into `output` (`sealed.count - tagSize` bytes).
    /// Returns false, writing nothing usable, when authentication fails.
    public static func open(
        key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, sealed: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        precondition(key.count == keySize && nonce.count == nonceSize)
        guard sealed.count >= tagSize, output.count == sealed.count - tagSize else { return false }
        guard let ctx = EVP_CIPHER_CTX_new() else { return false }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var len: Int32 = 0
        let ctLen = sealed.count - tagSize
        let out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let tag = UnsafeMutableRawPointer(mutating: sealed.baseAddress! + ctLen)
        var ok =
            EVP_DecryptInit_ex2(ctx, cipher, u8(key), u8(nonce), nil) == 1
            && (aad.count == 0 || EVP_DecryptUpdate(ctx, nil, &len, u8(aad), Int32(aad.count)) == 1)
            && (ctLen == 0 || EVP_DecryptUpdate(ctx, out, &len, u8(sealed), Int32(ctLen)) == 1)
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, Int32(tagSize), tag) == 1
        if ok {
            var finalLen: Int32 = 0
            var scratch: UInt8 = 0
            if let out {
                ok = EVP_DecryptFinal_ex(ctx, out + Int(len), &finalLen) == 1
            } else {
                ok = EVP_DecryptFinal_ex(ctx, &scratch, &finalLen) == 1
            }
        }
        if !ok, output.count > 0 { coffer_openssl_cleanse(output.baseAddress, output.count) }
        return ok
    }

    /// Convenience form: returns ciphertext ‖ tag.
    public static func seal(key: SecureBytes, nonce: [UInt8], plaintext: [UInt8], aad: [UInt8]) throws(CofferError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: plaintext.count + tagSize)
        let ok = key.withUnsafeBytes { k in
            nonce.withUnsafeBytes { n in
                plaintext.withUnsafeBytes { p in
                    aad.withUnsafeBytes { a in
                        out.withUnsafeMutableBytes { o in seal(key: k, nonce: n, plaintext: p, aad: a, output: o) }
                    }
                }
            }
        }
        guard ok else { throw CofferError(.internal, "AES-256-GCM encryption failed in OpenSSL") }
        return out
    }

    /// Convenience form: returns the plaintext, or nil when authentication fails.
    public static func open(key: SecureBytes, nonce: [UInt8], sealed: [UInt8], aad: [UInt8]) -> [UInt8]? {
        guard sealed.count >= tagSize else { return nil }
        var out = [UInt8](repeating: 0, count: sealed.count - tagSize)
        let ok = key.withUnsafeBytes { k in
            nonce.withUnsafeBytes { n in
                sealed.withUnsafeBytes { s in
                    aad.withUnsafeBytes { a in
                        out.withUnsafeMutableBytes { o in open(key: k, nonce: n, sealed: s, aad: a, output: o) }
                    }
                }
            }
        }
        return ok ? out : nil
    }
}

@inline(__always)
func u8(_ buffer: UnsafeRawBufferPointer) -> UnsafePointer<UInt8>? {
    buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
}

/// SHA-256, HMAC-SHA256 and HKDF-SHA256.
public enum Digest {
    public static let sha256Size = 32

    nonisolated(unsafe) static let sha256MD: OpaquePointer = {
        guard let md = EVP_MD_fetch(nil, "SHA256", nil) else { fatalError("OpenSSL has no SHA-256") }
        return md
    }()

    public static func sha256(_ data: some Collection<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: sha256Size)
        let input = data as? [UInt8] ?? Array(data)
        input.withUnsafeBytes { d in
            out.withUnsafeMutableBytes { o in
                _ = EVP_Digest(d.baseAddress, d.count, o.baseAddress!.assumingMemoryBound(to: UInt8.self), nil, sha256MD, nil)
            }
        }
        return out
    }

    /// HMAC-SHA256 of `data` under `key`, written into `output` (32 bytes).
    public static func hmacSHA256(key: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer) {
        precondition(output.count == sha256Size)
        var len: UInt32 = 0
        var emptyKey: UInt8 = 0
        let keyPtr = key.count > 0 ? UnsafeRawPointer(key.baseAddress!) : UnsafeRawPointer(&emptyKey)
        let result = HMAC(sha256MD, keyPtr, Int32(key.count), u8(data), data.count,
            output.baseAddress!.assumingMemoryBound(to: UInt8.self), &len)
        precondition(result != nil && len == 32, "HMAC-SHA256 failed in OpenSSL")
    }

    public static func hmacSHA256(key: SecureBytes, data: some Collection<UInt8>) -> [UInt8] {
        let input = data as? [UInt8] ?? Array(data)
        var out = [UInt8](repeating: 0, count: sha256Size)
        key.withUnsafeBytes { k in
            input.withUnsafeBytes { d in out.withUnsafeMutableBytes { o in hmacSHA256(key: k, data: d, output: o) } }
        }
        return out
    }

    public static func hmacSHA256(key: [UInt8], data: some Collection<UInt8>) -> [UInt8] {
        hmacSHA256(key: SecureBytes(key), data: data)
    }

    /// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` to `length` bytes.
    public static func hkdfSHA256(key: SecureBytes, salt: [UInt8], info: [UInt8], length: Int) throws(CofferError) -> SecureBytes {
        guard length > 0, length <= 255 * sha256Size else {
            throw CofferError(.invalidArgument, "HKDF output length must be 1...\(255 * sha256Size) bytes")
        }
        return try SecureBytes(count: length) { (out: UnsafeMutableRawBufferPointer) throws(CofferError) in
            guard let pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nil) else {
                throw CofferError(.outOfMemory, "cannot allocate an HKDF context")
            }
            defer { EVP_PKEY_CTX_free(pctx) }
            var outLen = length
            let ok = key.withUnsafeBytes { k in
                salt.withUnsafeBytes { s in
                    info.withUnsafeBytes { i in
                        EVP_PKEY_derive_init(pctx) == 1
                            && EVP_PKEY_CTX_set_hkdf_md(pctx, EVP_sha256()) == 1
                            && EVP_PKEY_CTX_set1_hkdf_salt(pctx, u8(s), Int32(s.count)) == 1
                            && EVP_PKEY_CTX_set1_hkdf_key(pctx, u8(k), Int32(k.count)) == 1
                            && (i.count == 0 || EVP_PKEY_CTX_add1_hkdf_info(pctx, u8(i), Int32(i.count)) == 1)
                            && EVP_PKEY_derive(pctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &outLen) == 1
                    }
                }
            }
            guard ok, outLen == length else { throw CofferError(.internal, "HKDF-SHA256 failed in OpenSSL") }
        }
    }
}
