package import CofferCore
import Synchronization

/// The remote client's read cache: answers by path, each with a TTL, bounded in bytes. The values
/// are plaintext in this process's memory until the entry is dropped (TTL + max stale, eviction,
/// an event, ``removeAll()``); docs/threat-model.md says so. Thread-safe; a lookup is one lock, one
/// hash lookup and a copy of the entry (the dictionaries are shared, copy-on-write).
package final class SecretCache: Sendable {
    package struct Entry: Sendable {
        package var fields: [String: JSONValue]
        package var version: Int?
        /// Monotonic seconds after which the entry is stale, and after which it is gone.
        package var expires: Double
        package var staleUntil: Double
        package var bytes: Int
    }

    package enum Lookup: Sendable {
        case fresh(Entry)
        case stale(Entry)
        case missing
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var bytes = 0
    }

    package let maximumBytes: Int
    private let state = Mutex(State())

    package init(maximumBytes: Int) { self.maximumBytes = max(0, maximumBytes) }

    /// The entry for `key` at monotonic time `now`: fresh before its TTL, stale until `staleUntil`,
    /// missing after (and then dropped).
    package func lookup(_ key: String, now: Double) -> Lookup {
        state.withLock { state in
            guard let entry = state.entries[key] else { return .missing }
            if now < entry.expires { return .fresh(entry) }
            if now < entry.staleUntil { return .stale(entry) }
            state.entries[key] = nil
            state.bytes -= entry.bytes
            return .missing
        }
    }

    /// Stores an answer for `ttl` seconds (kept `maxStale` more for degraded reads); nothing when
    /// `ttl` is 0 or the entry alone is over the bound. Evicts the entries closest to expiry until
    /// the bytes fit.
    package func store(
        _ key: String,
        fields: [String: JSONValue],
        version: Int?,
        ttl: Double,
        maxStale: Double,
        now: Double
    ) {
        guard ttl > 0 else {
            remove(key)
            return
        }
        var size = key.utf8.count + 16
        for (name, value) in fields { size += name.utf8.count + value.serialized().count + 2 }
        let entry = Entry(
            fields: fields,
            version: version,
            expires: now + ttl,
            staleUntil: now + ttl + maxStale,
            bytes: size
        )
        let limit = maximumBytes
        state.withLock { state in
            if let old = state.entries.removeValue(forKey: key) { state.bytes -= old.bytes }
            guard size <= limit else { return }
            while state.bytes + size > limit,
                let victim = state.entries.min(by: { $0.value.staleUntil < $1.value.staleUntil })
            {
                state.entries[victim.key] = nil
                state.bytes -= victim.value.bytes
            }
            state.entries[key] = entry
            state.bytes += size
        }
    }

    /// Drops `key` and every versioned read of it (`key?version=N`); how many entries went.
    @discardableResult
    package func remove(_ key: String) -> Int {
        state.withLock { state in
            var removed = 0
            for candidate in state.entries.keys where candidate == key || candidate.hasPrefix(key + "?") {
                if let entry = state.entries.removeValue(forKey: candidate) {
                    state.bytes -= entry.bytes
                    removed += 1
                }
            }
            return removed
        }
    }

    @discardableResult
    package func removeAll() -> Int {
        state.withLock { state in
            let count = state.entries.count
            state.entries = [:]
            state.bytes = 0
            return count
        }
    }

    package var count: Int { state.withLock { $0.entries.count } }
    package var bytes: Int { state.withLock { $0.bytes } }
}
