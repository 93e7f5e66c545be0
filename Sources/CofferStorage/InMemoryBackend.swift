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
}
