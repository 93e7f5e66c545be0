import Synchronization

/// The token store's cache of entries, keyed by the raw 32-byte HMAC of the token (what the hot path
/// computes) rather than its 64-digit hex form, and split into shards with a lock each, so threads
/// checking different tokens do not wait on one lock.
package final class TokenCache: Sendable {
    /// An entry's id hash as four words. The words are HMAC output, uniformly distributed: the first
    /// alone picks the shard and feeds the dictionary's hash.
    package struct Key: Hashable, Sendable {
        let words: (UInt64, UInt64, UInt64, UInt64)

        package init(mac: UnsafeRawBufferPointer) {
            precondition(mac.count == 32)
            words = (
                mac.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                mac.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                mac.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                mac.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            )
        }

        /// From the hex form entries are stored under; nil unless it is 64 lower-case hex digits (so
        /// one key never stands for two storage paths).
        package init?(hex: String) {
            var bytes = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
            let ok = withUnsafeMutableBytes(of: &bytes) { out in
                var i = 0
                for c in hex.utf8 {
                    guard i < 64 else { return false }
                    let nibble: UInt8
                    switch c {
                    case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = c - UInt8(ascii: "0")
                    case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = c - UInt8(ascii: "a") + 10
                    default: return false
                    }
                    out[i / 2] |= i % 2 == 0 ? nibble << 4 : nibble
                    i += 1
                }
                return i == 64
            }
            guard ok else { return nil }
            self = withUnsafeBytes(of: &bytes) { Key(mac: $0) }
        }

        package static func == (a: Key, b: Key) -> Bool { a.words == b.words }
        package func hash(into hasher: inout Hasher) { hasher.combine(words.0) }
    }

    private final class Shard: Sendable {
        let entries = Mutex<[Key: TokenEntry]>([:])
    }

    private static let shardCount = 16
    private let shards = (0..<TokenCache.shardCount).map { _ in Shard() }

    package init() {}

    private func shard(_ key: Key) -> Shard { shards[Int(truncatingIfNeeded: key.words.0 >> 60)] }

    package subscript(key: Key) -> TokenEntry? {
        get { shard(key).entries.withLock { $0[key] } }
        set { shard(key).entries.withLock { $0[key] = newValue } }
    }

    /// The same, by an entry's hex id hash (a malformed one is never cached).
    package subscript(hex hash: String) -> TokenEntry? {
        get { Key(hex: hash).flatMap { self[$0] } }
        set { if let key = Key(hex: hash) { self[key] = newValue } }
    }

    package func removeAll() {
        for shard in shards { shard.entries.withLock { $0 = [:] } }
    }
}
