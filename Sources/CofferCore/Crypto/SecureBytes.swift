import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

/// Secret bytes (keys, unseal shares) in memory that is zeroed when the last reference is released.
///
/// Immutable once made, so it is safe to share between threads. The bytes are never printed:
/// `description` shows only the length.
public final class SecureBytes: Sendable, CustomStringConvertible {
    // Written only in `init`; read-only afterwards and zeroed in `deinit`, which runs when no other
    // reference exists. That is what makes the `nonisolated(unsafe)` storage safe to share.
    private nonisolated(unsafe) let storage: UnsafeMutableRawBufferPointer

    /// Copies `bytes` into fresh memory. The caller should clear its own copy.
    public init(_ bytes: some Collection<UInt8>) {
        storage = .allocate(byteCount: max(bytes.count, 1), alignment: 16)
        storage.copyBytes(from: bytes)
        count = bytes.count
    }

    /// `count` bytes from the CSPRNG.
    public init(randomCount: Int) {
        storage = .allocate(byteCount: max(randomCount, 1), alignment: 16)
        count = randomCount
        if randomCount > 0 {
            Random.fill(UnsafeMutableRawBufferPointer(rebasing: storage[0..<randomCount]))
        }
    }

    /// Fills `count` fresh bytes with `body`; used to receive secret output from C without a plain copy.
    public init<E: Error>(
        count: Int,
        initializingWith body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        storage = .allocate(byteCount: max(count, 1), alignment: 16)
        self.count = count
        // Every stored property is set, so if `body` throws, `deinit` runs and zeroes and frees the memory.
        try body(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
    }

    public let count: Int

    deinit {
        coffer_openssl_cleanse(storage.baseAddress, storage.count)
        storage.deallocate()
    }

    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// A plain copy of the bytes. Only for handing a secret to its owner (an unseal key at init);
    /// the caller is then responsible for it.
    public var unsafeCopy: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Constant-time comparison.
    public func constantTimeEquals(_ other: SecureBytes) -> Bool {
        other.withUnsafeBytes { o in withUnsafeBytes { s in ConstantTime.equals(s, o) } }
    }

    public var description: String { "SecureBytes(\(count) bytes)" }
}

extension SecureBytes: Equatable {
    /// Equal bytes, compared in constant time.
    public static func == (a: SecureBytes, b: SecureBytes) -> Bool { a.constantTimeEquals(b) }
}

/// Overwriting memory that held a secret, in a way the compiler cannot remove (`OPENSSL_cleanse`).
package enum Wipe {
    /// Zeroes `count` bytes at `pointer`.
    package static func bytes(_ pointer: UnsafeMutableRawPointer?, count: Int) {
        guard let pointer, count > 0 else { return }
        coffer_openssl_cleanse(pointer, count)
    }
}

extension Array where Element == UInt8 {
    /// Zeroes this array's bytes (for arrays that held secret material and are about to be dropped).
    /// Wipe the last holder of the bytes: when the buffer is shared with another array
    /// (copy-on-write), writing gives this array a fresh copy and the shared bytes stay as they were.
    package mutating func wipe() {
        withUnsafeMutableBytes { Wipe.bytes($0.baseAddress, count: $0.count) }
    }
}

extension ArraySlice where Element == UInt8 {
    /// ``Swift/Array/wipe()`` for the bytes of a slice.
    package mutating func wipe() {
        withUnsafeMutableBytes { Wipe.bytes($0.baseAddress, count: $0.count) }
    }
}

/// Comparison whose running time does not depend on where two buffers differ.
package enum ConstantTime {
    package static func equals(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        if a.count == 0 { return true }
        return CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0
    }

    package static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBytes { ab in b.withUnsafeBytes { bb in equals(ab, bb) } }
    }
}

/// Per-thread random state, for what needs uniqueness rather than secrecy from each draw: the
/// xoshiro256** generator behind ``Random/requestID()`` and a batch of CSPRNG output that
/// ``Random/nonce(_:)`` hands out. OpenSSL's DRBG costs about 8,000 instructions a call (a lock and
/// re-keying its AES-CTR state on every draw), an eighth of a transit encrypt; one call of 4 KB serves
/// 330 nonces.
///
/// The state sits on a page of its own that the kernel zeroes in a forked child (`MADV_WIPEONFORK`,
/// Linux 4.14), so a child, however it forked, never repeats its parent's request ids or nonces: it
/// finds an all-zero generator, which is reseeded, and an empty batch, which is refilled. A
/// `pthread_atfork` handler clears the forking thread's page in the child as well, which covers a
/// kernel that cannot wipe; there (`wipesOnFork` false) nonces still come straight from the DRBG, as a
/// fork that bypasses the handlers (a raw `clone`) would otherwise repeat them. Freed with the thread.
enum ThreadRandom {
    typealias State = (UInt64, UInt64, UInt64, UInt64)

    struct Page {
        var ids: State
        /// Bytes of `batch` not yet handed out, at its end.
        var unused: Int
        /// Set once the page is made, if the kernel wipes it in a forked child.
        var wipesOnFork: Bool
    }

    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    /// The batch: the rest of the page after the header.
    static let batchOffset = (MemoryLayout<Page>.size + 15) & ~15
    static var batchSize: Int { pageSize - batchOffset }

    static let key: pthread_key_t = {
        var key = pthread_key_t()
        guard pthread_key_create(&key, { munmap($0, ThreadRandom.pageSize) }) == 0 else {
            fatalError("pthread_key_create failed: no thread-specific storage left")
        }
        // In the child only the forking thread runs on; its page is the one to clear.
        pthread_atfork(nil, nil) {
            guard let page = pthread_getspecific(ThreadRandom.key)?.assumingMemoryBound(to: Page.self) else { return }
            page.pointee.ids = (0, 0, 0, 0)
            page.pointee.unused = 0
        }
        return key
    }()

    /// This thread's page, made on first use.
    static var page: UnsafeMutablePointer<Page> {
        if let existing = pthread_getspecific(key) { return existing.assumingMemoryBound(to: Page.self) }
        guard let memory = mmap(nil, pageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            memory != MAP_FAILED
        else { fatalError("mmap of one page failed: out of memory") }
        let page = memory.bindMemory(to: Page.self, capacity: 1)
        page.initialize(
            to: Page(ids: (0, 0, 0, 0), unused: 0, wipesOnFork: madvise(memory, pageSize, MADV_WIPEONFORK) == 0)
        )
        pthread_setspecific(key, memory)
        return page
    }

    static func next128() -> (UInt64, UInt64) {
        let page = self.page
        // xoshiro's one bad state is all zeros, which is also what a forked child finds: drawing 256
        // bits from the CSPRNG reseeds it (and they are never all zero in practice).
        while page.pointee.ids == (0, 0, 0, 0) {
            withUnsafeMutableBytes(of: &page.pointee.ids) { Random.fill($0) }
        }
        return withUnsafeMutablePointer(to: &page.pointee.ids) { (step($0), step($0)) }
    }

    /// Fills `buffer` (at most a batch) from this thread's batch of CSPRNG output, refilling it when short.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        let page = self.page
        guard page.pointee.wipesOnFork, buffer.count <= batchSize else { return Random.fill(buffer) }
        let batch = UnsafeMutableRawPointer(page) + batchOffset
        if page.pointee.unused < buffer.count {
            Random.fill(UnsafeMutableRawBufferPointer(start: batch, count: batchSize))
            page.pointee.unused = batchSize
        }
        let start = batch + (batchSize - page.pointee.unused)
        buffer.copyMemory(from: UnsafeRawBufferPointer(start: start, count: buffer.count))
        // Handed out once: the bytes are cleared so they cannot be handed out again.
        start.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
        page.pointee.unused -= buffer.count
    }

    private static func step(_ s: UnsafeMutablePointer<State>) -> UInt64 {
        let result = rotl(s.pointee.1 &* 5, 7) &* 9
        let t = s.pointee.1 << 17
        s.pointee.2 ^= s.pointee.0
        s.pointee.3 ^= s.pointee.1
        s.pointee.1 ^= s.pointee.2
        s.pointee.0 ^= s.pointee.3
        s.pointee.2 ^= t
        s.pointee.3 = rotl(s.pointee.3, 45)
        return result
    }

    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}

/// The operating system's CSPRNG through OpenSSL's DRBG.
package enum Random {
    package static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count > 0 else { return }
        // RAND_bytes fails only if the DRBG cannot be seeded; continuing without randomness would
        // produce predictable keys, so stopping is the only safe answer.
        guard RAND_bytes(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(buffer.count)) == 1 else {
            fatalError("the OpenSSL random generator failed; refusing to continue without randomness")
        }
    }

    /// Fills `buffer` with bytes for a nonce or an IV: CSPRNG output as from ``fill(_:)``, taken from
    /// this thread's batch (``ThreadRandom``) rather than a DRBG call each.
    package static func nonce(_ buffer: UnsafeMutableRawBufferPointer) { ThreadRandom.fill(buffer) }

    package static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { fill($0) }
        return out
    }

    /// A random string over [0-9A-Za-z], for token and accessor ids. Rejection sampling keeps it unbiased.
    package static func base62(_ length: Int) -> String {
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(length)
        while out.count < length {
            for byte in bytes(length * 2) where byte < 248 && out.count < length {
                out.append(alphabet[Int(byte % 62)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A random UUID string (version 4) from the CSPRNG, for ids that must not be guessed (secret IDs,
    /// nonces) and for mount and entity ids.
    package static func uuid() -> String {
        var b: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &b) { fill($0) }
        return uuidString(&b)
    }

    /// A request id: it needs uniqueness, not secrecy (it is printed in every answer and audit
    /// record), so it comes from a per-thread xoshiro256** generator seeded from the CSPRNG instead of
    /// the DRBG, whose lock and reseeding cost a tenth of an in-process read. 122 random bits, as in a
    /// version-4 UUID; no lock and no shared state between threads.
    package static func requestID() -> String {
        var b = ThreadRandom.next128()
        return uuidString(&b)
    }

    /// Formats 16 bytes as a version-4 UUID (setting the version and variant bits in `b`), written
    /// straight into the string (one allocation): the 32 digits from offset 4, then the first four
    /// groups moved left over them, each to its place before a dash.
    static func uuidString(_ b: inout (UInt64, UInt64)) -> String {
        withUnsafeMutableBytes(of: &b) { bytes in
            bytes[6] = (bytes[6] & 0x0F) | 0x40
            bytes[8] = (bytes[8] & 0x3F) | 0x80
            return String(unsafeUninitializedCapacity: 36) { out in
                let text = UnsafeMutableRawPointer(out.baseAddress!)
                Hex.write(UnsafeRawBufferPointer(bytes), into: UnsafeMutableBufferPointer(rebasing: out[4...]))
                text.storeBytes(of: text.loadUnaligned(fromByteOffset: 4, as: UInt64.self), as: UInt64.self)
                func group(from: Int, to: Int) {
                    let digits = text.loadUnaligned(fromByteOffset: from, as: UInt32.self)
                    text.storeBytes(of: digits, toByteOffset: to, as: UInt32.self)
                    out[to &- 1] = UInt8(ascii: "-")
                }
                group(from: 12, to: 9)
                group(from: 16, to: 14)
                group(from: 20, to: 19)
                out[23] = UInt8(ascii: "-")
                return 36
            }
        }
    }
}

package enum Hex {
    package static func encode(_ bytes: some Sequence<UInt8>) -> String {
        if let array = bytes as? [UInt8] { return array.withUnsafeBytes(encode) }
        return Array(bytes).withUnsafeBytes(encode)
    }

    package static func encode(_ bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            write(bytes, into: out)
            return bytes.count * 2
        }
    }

    /// Appends the hex digits of `bytes` to `out` in one copy (no intermediate String).
    package static func append(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: bytes.count * 2) { text in
            write(bytes, into: text)
            out.append(contentsOf: text)
        }
    }

    /// Writes the `2 * bytes.count` hex digits of `bytes` to the start of `out`: four bytes at a
    /// time, their eight nibbles spread one to a byte of a word and turned into digits together
    /// (`n + '0'`, plus 39 more where `n >= 10`, for `'a'...'f'`), then the rest one at a time.
    static func write(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<UInt8>) {
        let count = bytes.count
        guard count > 0, let source = bytes.baseAddress, let target = out.baseAddress else { return }
        precondition(out.count >= 2 * count, "Hex.write: the output is too small")
        let nibbles: UInt64 = 0x000F_000F_000F_000F
        let ones: UInt64 = 0x0101_0101_0101_0101
        var i = 0
        while i + 4 <= count {
            let word = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            // Byte k of the input in bits 16k..16k+7: its high nibble lands in byte 2k, its low in 2k+1.
            var v = UInt64(word & 0xFF) | UInt64(word >> 8 & 0xFF) << 16 | UInt64(word >> 16 & 0xFF) << 32
            v |= UInt64(word >> 24) << 48
            v = (v >> 4 & nibbles) | (v & nibbles) << 8
            v = v &+ 0x3030_3030_3030_3030 &+ ((v &+ 0x0606_0606_0606_0606) >> 4 & ones) &* 39
            UnsafeMutableRawPointer(target).storeBytes(of: v.littleEndian, toByteOffset: 2 * i, as: UInt64.self)
            i += 4
        }
        let digits: StaticString = "0123456789abcdef"
        while i < count {
            let b = source.load(fromByteOffset: i, as: UInt8.self)
            target[2 * i] = digits.utf8Start[Int(b >> 4)]
            target[2 * i + 1] = digits.utf8Start[Int(b & 0x0F)]
            i += 1
        }
    }

    package static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
