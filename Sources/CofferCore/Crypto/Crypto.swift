import CNettle
import COpenSSL
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// AES-256-GCM over OpenSSL's EVP interface, with a 96-bit nonce and a 128-bit tag.
package enum AESGCM {
    package static let keySize = 32
    package static let nonceSize = 12
    package static let tagSize = 16

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
    package static func seal(
        key: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        plaintext: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
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
    package static func open(
        key: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        sealed: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        precondition(key.count == keySize && nonce.count == nonceSize)
        guard sealed.count >= tagSize, output.count == sealed.count - tagSize else { return false }
        guard let ctx = EVP_CIPHER_CTX_new() else { return false }
        defer { EVP_CIPHER_CTX_free(ctx) }
        guard EVP_DecryptInit_ex2(ctx, cipher, u8(key), nil, nil) == 1 else { return false }
        return decrypt(ctx, iv: nonce, sealed: sealed, aad: aad, output: output)
    }

    /// Decrypts with `ctx`, already keyed for AES-256-GCM decryption: sets the IV, then as `open`.
    /// The context can be used again afterwards, whatever the outcome.
    static func decrypt(
        _ ctx: OpaquePointer,
        iv nonce: UnsafeRawBufferPointer,
        sealed: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        var len: Int32 = 0
        let ctLen = sealed.count - tagSize
        let out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let tag = UnsafeMutableRawPointer(mutating: sealed.baseAddress! + ctLen)
        var ok =
            EVP_DecryptInit_ex2(ctx, nil, nil, u8(nonce), nil) == 1
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
    package static func seal(
        key: SecureBytes,
        nonce: [UInt8],
        plaintext: [UInt8],
        aad: [UInt8]
    ) throws(CofferError) -> [UInt8] {
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
    package static func open(key: SecureBytes, nonce: [UInt8], sealed: [UInt8], aad: [UInt8]) -> [UInt8]? {
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

/// An AES-256 key expanded once with Nettle: its round keys and GHASH table, shared read-only by every
/// thread (no lock), so a seal or an open is four direct calls with no per-call setup. Used for values up
/// to ``nettleLimit`` bytes, which is nearly every secret and transit payload; OpenSSL's stitched AES-GCM
/// is faster per byte beyond that. The expanded key is zeroed with this object.
package final class AESGCMKey: Sendable {
    /// The largest plaintext worth Nettle; the two are even at about 2 KB on this machine.
    package static let nettleLimit = 2048
    /// Written once in `init`, then only read.
    nonisolated(unsafe) private let expanded: UnsafeMutablePointer<coffer_gcm_key>

    package init(key: UnsafeRawBufferPointer) {
        precondition(key.count == AESGCM.keySize)
        expanded = .allocate(capacity: 1)
        coffer_gcm_key_set(expanded, u8(key))
    }

    deinit {
        explicit_bzero(expanded, MemoryLayout<coffer_gcm_key>.size)
        expanded.deallocate()
    }

    /// As ``AESGCM/seal(key:nonce:plaintext:aad:output:)``, with this key.
    package func seal(
        nonce: UnsafeRawBufferPointer,
        plaintext: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) {
        precondition(nonce.count == AESGCM.nonceSize && output.count == plaintext.count + AESGCM.tagSize)
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        coffer_gcm_aes256_seal(
            expanded,
            u8(nonce),
            aad.count,
            u8(aad),
            plaintext.count,
            out,
            u8(plaintext),
            out + plaintext.count
        )
    }

    /// As ``AESGCM/open(key:nonce:sealed:aad:output:)``, with this key.
    package func open(
        nonce: UnsafeRawBufferPointer,
        sealed: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        precondition(nonce.count == AESGCM.nonceSize)
        guard sealed.count >= AESGCM.tagSize, output.count == sealed.count - AESGCM.tagSize else { return false }
        let bytes = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        return coffer_gcm_aes256_open(
            expanded,
            u8(nonce),
            aad.count,
            u8(aad),
            output.count,
            output.baseAddress?.assumingMemoryBound(to: UInt8.self),
            bytes,
            bytes + output.count
        ) == 1
    }
}

/// AES-256-GCM decryption under one key with the key schedule kept, so an open costs only the IV, the
/// data and the tag. Values up to ``AESGCMKey/nettleLimit`` bytes go to Nettle (``AESGCMKey``); larger
/// ones to OpenSSL, whose stitched AES-GCM is twice as fast per byte: keyed `EVP_CIPHER_CTX`s kept in
/// per-CPU shards (a lock each, so threads rarely meet). Both hold expanded key material, released
/// (zeroed, cleansed) with this object, that is with the keyring term that owns it.
package final class GCMOpener: Sendable {
    private struct Context: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    private final class Shard: Sendable {
        let idle = Mutex<[Context]>([])
    }

    private static let shardCount = 8
    /// Idle contexts kept per shard; more are freed when returned.
    private static let keptPerShard = 4
    private let key: SecureBytes
    private let small: AESGCMKey
    private let shards = (0..<GCMOpener.shardCount).map { _ in Shard() }

    package init(key: SecureBytes) {
        precondition(key.count == AESGCM.keySize)
        self.key = key
        small = key.withUnsafeBytes { AESGCMKey(key: $0) }
    }

    deinit {
        for shard in shards {
            for context in shard.idle.withLock({ $0 }) { EVP_CIPHER_CTX_free(context.pointer) }
        }
    }

    /// The shard of the CPU the thread runs on (two threads running at once never share one), not
    /// retained: the shards live as long as the opener.
    private var shard: Unmanaged<Shard> { .passUnretained(shards[currentCPU() % GCMOpener.shardCount]) }

    /// As ``AESGCM/open(key:nonce:sealed:aad:output:)``, with this opener's key.
    package func open(
        nonce: UnsafeRawBufferPointer,
        sealed: UnsafeRawBufferPointer,
        aad: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        if output.count <= AESGCMKey.nettleLimit {
            return small.open(nonce: nonce, sealed: sealed, aad: aad, output: output)  // which checks the lengths
        }
        precondition(nonce.count == AESGCM.nonceSize)
        guard output.count == sealed.count - AESGCM.tagSize else { return false }
        let shard = self.shard
        let ctx: OpaquePointer
        if let idle = shard._withUnsafeGuaranteedRef({ $0.idle.withLock { $0.popLast() } }) {
            ctx = idle.pointer
        } else {
            guard let fresh = EVP_CIPHER_CTX_new() else { return false }
            let keyed = key.withUnsafeBytes { EVP_DecryptInit_ex2(fresh, AESGCM.cipher, u8($0), nil, nil) == 1 }
            guard keyed else {
                EVP_CIPHER_CTX_free(fresh)
                return false
            }
            ctx = fresh
        }
        let ok = AESGCM.decrypt(ctx, iv: nonce, sealed: sealed, aad: aad, output: output)
        let kept = shard._withUnsafeGuaranteedRef { shard in
            shard.idle.withLock { (idle) -> Bool in
                guard idle.count < GCMOpener.keptPerShard else { return false }
                idle.append(Context(pointer: ctx))
                return true
            }
        }
        if !kept { EVP_CIPHER_CTX_free(ctx) }
        return ok
    }
}

@inline(__always)
package func u8(_ buffer: UnsafeRawBufferPointer) -> UnsafePointer<UInt8>? {
    buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
}

/// SHA-256, HMAC-SHA256 and HKDF-SHA256.
package enum Digest {
    package static let sha256Size = 32

    nonisolated(unsafe) static let sha256MD: OpaquePointer = {
        guard let md = EVP_MD_fetch(nil, "SHA256", nil) else { fatalError("OpenSSL has no SHA-256") }
        return md
    }()

    package static func sha256(_ data: some Collection<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: sha256Size)
        let input = data as? [UInt8] ?? Array(data)
        input.withUnsafeBytes { d in
            out.withUnsafeMutableBytes { o in
                _ = EVP_Digest(
                    d.baseAddress,
                    d.count,
                    o.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    nil,
                    sha256MD,
                    nil
                )
            }
        }
        return out
    }

    /// HMAC-SHA256 of `data` under `key` (RFC 2104). For a key used many times, keep an ``HMACKey``.
    package static func hmacSHA256(key: SecureBytes, data: some Collection<UInt8>) -> [UInt8] {
        HMACKey(key).mac(data as? [UInt8] ?? Array(data))
    }

    package static func hmacSHA256(key: [UInt8], data: some Collection<UInt8>) -> [UInt8] {
        hmacSHA256(key: SecureBytes(key), data: data)
    }

    /// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` to `length` bytes.
    package static func hkdfSHA256(
        key: SecureBytes,
        salt: [UInt8],
        info: [UInt8],
        length: Int
    ) throws(CofferError) -> SecureBytes {
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

/// An HMAC-SHA256 key with its inner and outer hash states computed once, so each MAC costs two
/// struct copies and the hashing itself: no allocation, no provider lookup. Used on the hot path
/// (token lookups, audit hashing).
package final class HMACKey: Sendable {
    // Written only in init; afterwards only copied from. The states are derived from the key, so
    // they are zeroed on release like the key itself.
    private nonisolated(unsafe) let inner: UnsafeMutablePointer<SHA256_CTX>
    private nonisolated(unsafe) let outer: UnsafeMutablePointer<SHA256_CTX>

    package init(_ key: SecureBytes) {
        inner = .allocate(capacity: 1)
        outer = .allocate(capacity: 1)
        var block = [UInt8](repeating: 0, count: 64)
        key.withUnsafeBytes { k in
            if k.count > 64 {
                var ctx = SHA256_CTX()
                SHA256_Init(&ctx)
                SHA256_Update(&ctx, k.baseAddress, k.count)
                block.withUnsafeMutableBufferPointer { _ = SHA256_Final($0.baseAddress, &ctx) }
                coffer_openssl_cleanse(&ctx, MemoryLayout<SHA256_CTX>.size)
            } else if k.count > 0 {
                for i in 0..<k.count { block[i] = k[i] }
            }
        }
        var pad = block.map { $0 ^ 0x36 }
        SHA256_Init(inner)
        SHA256_Update(inner, pad, 64)
        pad = block.map { $0 ^ 0x5C }
        SHA256_Init(outer)
        SHA256_Update(outer, pad, 64)
        block.withUnsafeMutableBytes { coffer_openssl_cleanse($0.baseAddress, 64) }
        pad.withUnsafeMutableBytes { coffer_openssl_cleanse($0.baseAddress, 64) }
    }

    deinit {
        coffer_openssl_cleanse(inner, MemoryLayout<SHA256_CTX>.size)
        coffer_openssl_cleanse(outer, MemoryLayout<SHA256_CTX>.size)
        inner.deallocate()
        outer.deallocate()
    }

    /// HMAC-SHA256 of `data` into `output` (32 bytes).
    package func mac(_ data: UnsafeRawBufferPointer, into output: UnsafeMutablePointer<UInt8>) {
        finish(from: inner, data, into: output)
    }

    /// The inner hash state after `prefix`, for MACs of messages that start with it (`mac(after:_:into:)`).
    package func prefix(_ prefix: UnsafeRawBufferPointer) -> HMACPrefix {
        let state = HMACPrefix(key: self, length: prefix.count)
        state.inner.initialize(to: inner.pointee)
        SHA256_Update(state.inner, prefix.baseAddress, prefix.count)
        return state
    }

    /// HMAC-SHA256 of `prefix`'s bytes followed by `rest`, into `output` (32 bytes), hashing only `rest`.
    package func mac(after prefix: HMACPrefix, _ rest: UnsafeRawBufferPointer, into output: UnsafeMutablePointer<UInt8>)
    {
        precondition(prefix.key == ObjectIdentifier(self), "an HMAC prefix state is used with another key")
        finish(from: prefix.inner, rest, into: output)
    }

    /// Hashes `data` from the inner state `state`, then the outer hash.
    private func finish(
        from state: UnsafeMutablePointer<SHA256_CTX>,
        _ data: UnsafeRawBufferPointer,
        into output: UnsafeMutablePointer<UInt8>
    ) {
        var ctx = state.pointee
        var innerHash = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        SHA256_Update(&ctx, data.baseAddress, data.count)
        withUnsafeMutableBytes(of: &innerHash) { h in
            _ = SHA256_Final(h.baseAddress!.assumingMemoryBound(to: UInt8.self), &ctx)
            ctx = outer.pointee
            SHA256_Update(&ctx, h.baseAddress, 32)
        }
        _ = SHA256_Final(output, &ctx)
        coffer_openssl_cleanse(&ctx, MemoryLayout<SHA256_CTX>.size)
    }

    package func mac(_ data: [UInt8]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 32) { out, count in
            data.withUnsafeBytes { mac($0, into: out.baseAddress!) }
            count = 32
        }
    }

    package func mac(_ text: String) -> [UInt8] {
        var text = text
        return [UInt8](unsafeUninitializedCapacity: 32) { out, count in
            text.withUTF8 { mac(UnsafeRawBufferPointer($0), into: out.baseAddress!) }
            count = 32
        }
    }
}

/// An ``HMACKey``'s inner hash state after a fixed prefix (`HMACKey.prefix(_:)`): the MAC of a message
/// that starts with those bytes hashes only the rest. Derived from the key, so zeroed on release.
package final class HMACPrefix: Sendable {
    /// The key it was made with (`mac(after:_:into:)` checks it).
    let key: ObjectIdentifier
    /// How many bytes of prefix it has absorbed.
    package let length: Int
    // Written only while `HMACKey.prefix` makes it; afterwards only copied from.
    nonisolated(unsafe) let inner = UnsafeMutablePointer<SHA256_CTX>.allocate(capacity: 1)

    init(key: HMACKey, length: Int) {
        self.key = ObjectIdentifier(key)
        self.length = length
    }

    deinit {
        coffer_openssl_cleanse(inner, MemoryLayout<SHA256_CTX>.size)
        inner.deallocate()
    }
}
