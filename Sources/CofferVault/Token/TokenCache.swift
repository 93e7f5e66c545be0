package import CofferCore

/// The token store's cache of entries, keyed by the raw 32-byte HMAC of the token (what the hot path
/// computes) rather than its 64-digit hex form, and kept once per CPU (``PerCPUCache``), so threads
/// checking the same token on two cores share no lock and no reference count.
package final class TokenCache: Sendable {
    /// An entry's id hash as four words. The words are HMAC output, uniformly distributed: the first
    /// alone feeds the dictionary's hash.
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
            var hex = hex
            guard let key = hex.withUTF8({ Key(hexDigits: $0) }) else { return nil }
            self = key
        }

        /// The same, from the digits' bytes.
        package init?(hexDigits: UnsafeBufferPointer<UInt8>) {
            guard let words = Key.words(hex: hexDigits) else { return nil }
            self.words = words
        }

        /// 64 lower-case hex digits as the four little-endian words of the 32 bytes they spell.
        private static func words(hex: UnsafeBufferPointer<UInt8>) -> (UInt64, UInt64, UInt64, UInt64)? {
            guard hex.count == 64 else { return nil }
            var invalid: UInt8 = 0
            func word(_ w: Int) -> UInt64 {
                var word: UInt64 = 0
                for b in 0..<8 {
                    let i = w &* 16 &+ b &* 2
                    let high = nibble(hex[i])
                    let low = nibble(hex[i &+ 1])
                    invalid |= (high | low) & 0xF0
                    word |= UInt64((high << 4) | (low & 0x0F)) << (UInt64(b) &* 8)
                }
                return word
            }
            let words = (word(0), word(1), word(2), word(3))
            return invalid == 0 ? words : nil
        }

        /// A hex digit's value, or 0xFF for anything but 0-9 and a-f.
        @inline(__always)
        private static func nibble(_ c: UInt8) -> UInt8 {
            let digit = c &- UInt8(ascii: "0")
            if digit < 10 { return digit }
            let letter = c &- UInt8(ascii: "a")
            return letter < 6 ? letter &+ 10 : 0xFF
        }

        package static func == (a: Key, b: Key) -> Bool { a.words == b.words }
        package func hash(into hasher: inout Hasher) { hasher.combine(words.0) }
    }

    package typealias Ticket = PerCPUCache<Key, TokenEntry>.Ticket
    private let copies = PerCPUCache<Key, TokenEntry>()

    package init() {}

    /// A change the store's own write made: `entry` (nil: the token is gone) replaces what every
    /// CPU's copy holds.
    package func set(_ entry: TokenEntry?, for key: Key) { copies.update(key, to: entry) }

    /// The same, by an entry's hex id hash (a malformed one is never cached).
    package func set(_ entry: TokenEntry?, hex hash: String) {
        if let key = Key(hex: hash) { set(entry, for: key) }
    }

    /// The cached entry, or nil and the ticket a ``fill(_:_:_:)`` of what storage holds must bring:
    /// read before storage is, so that a change made in between (a revocation, an update) is not
    /// overwritten by the older copy.
    package func lookup(_ key: Key) -> (value: TokenEntry?, ticket: Ticket) { copies.lookup(key) }

    /// Caches `entry`, read from storage after ``lookup(_:)`` returned `ticket`, unless the cache
    /// changed since: then it is left out, and the next lookup reads storage again.
    package func fill(_ key: Key, _ entry: TokenEntry, _ ticket: Ticket) { copies.fill(key, entry, ticket) }

    package func removeAll() { copies.removeAll() }
}
