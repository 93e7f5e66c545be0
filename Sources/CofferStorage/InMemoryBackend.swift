package import CofferCore
import Synchronization

/// Storage in memory: for tests and `-dev`. Nothing survives the process.
package final class InMemoryBackend: PhysicalBackend {
    private let entries = Mutex<[String: [UInt8]]>([:])
    package let changes = ChangeFeed()

    package init() {}

    package var typeName: String { "inmem" }

    package func get(_ key: String) throws(CofferError) -> [UInt8]? { entries.withLock { $0[key] } }

    package func put(_ key: String, _ value: [UInt8]) throws(CofferError) {
        entries.withLock { $0[key] = value }
        changes.publish([key])
    }

    package func delete(_ key: String) throws(CofferError) {
        _ = entries.withLock { $0.removeValue(forKey: key) }
        changes.publish([key])
    }

    package func list(prefix: String) throws(CofferError) -> [String] {
        entries.withLock { immediateChildren(of: prefix, keys: $0.keys) }
    }

    package func batch(_ operations: [StorageOperation]) throws(CofferError) {
        entries.withLock { entries in
            for op in operations {
                switch op {
                case .put(let key, let value): entries[key] = value
                case .delete(let key): entries.removeValue(forKey: key)
                }
            }
        }
        changes.publish(operations.map(\.key))
    }

    package func close() {}

    /// Every entry, to put back later with ``restore(_:)`` (the fuzz harness starts each input from one state).
    package func snapshot() -> [String: [UInt8]] { entries.withLock { $0 } }

    /// Replaces every entry with `saved`, and tells the change feed each key that differs, so that the
    /// caches above forget what was there.
    package func restore(_ saved: [String: [UInt8]]) {
        let changed = entries.withLock { entries in
            let keys = Set(entries.keys).union(saved.keys).filter { entries[$0] != saved[$0] }
            entries = saved
            return Array(keys)
        }
        changes.publish(changed)
    }
}
