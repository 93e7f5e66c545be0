package import CofferCore
import Synchronization

/// Storage in memory: for tests and `-dev`. Nothing survives the process.
///
/// Beside the entries it keeps a directory index (each folder's immediate children, with how many
/// keys lie beneath each), so listing a folder costs its size, not the size of the store: the
/// expiration manager lists its index folders ten times a second, and a scan of every key under
/// the lock would stall every request of a store with many tokens.
package final class InMemoryBackend: PhysicalBackend {
    private struct State {
        var entries: [String: [UInt8]] = [:]
        /// Folder ("" or ending in "/") → child ("name" or "name/") → keys beneath it.
        var folders: [String: [String: Int]] = [:]

        mutating func put(_ key: String, _ value: [UInt8]) {
            if entries.updateValue(value, forKey: key) == nil {
                for (folder, child) in InMemoryBackend.edges(key) {
                    folders[folder, default: [:]][child, default: 0] += 1
                }
            }
        }

        mutating func delete(_ key: String) {
            guard entries.removeValue(forKey: key) != nil else { return }
            for (folder, child) in InMemoryBackend.edges(key) {
                let left = (folders[folder]?[child] ?? 1) - 1
                if left > 0 {
                    folders[folder]![child] = left
                } else {
                    folders[folder]?.removeValue(forKey: child)
                    if folders[folder]?.isEmpty == true { folders.removeValue(forKey: folder) }
                }
            }
        }
    }

    private let state = Mutex(State())
    package let changes = ChangeFeed()

    package init() {}

    package var typeName: String { "inmem" }

    /// Each folder of `key` with its child on the way down: "a/b/c" → ("", "a/"), ("a/", "b/"), ("a/b/", "c").
    static func edges(_ key: String) -> [(String, String)] {
        let bytes = Array(key.utf8)
        var out: [(String, String)] = []
        var folderEnd = 0
        for (i, byte) in bytes.enumerated() where byte == UInt8(ascii: "/") {
            out.append(
                (
                    String(decoding: bytes[0..<folderEnd], as: UTF8.self),
                    String(decoding: bytes[folderEnd...i], as: UTF8.self)
                )
            )
            folderEnd = i + 1
        }
        if folderEnd < bytes.count {
            out.append(
                (
                    String(decoding: bytes[0..<folderEnd], as: UTF8.self),
                    String(decoding: bytes[folderEnd...], as: UTF8.self)
                )
            )
        }
        return out
    }

    package func get(_ key: String) throws(CofferError) -> [UInt8]? { state.withLock { $0.entries[key] } }

    package func put(_ key: String, _ value: [UInt8]) throws(CofferError) {
        state.withLock { $0.put(key, value) }
        changes.publish([key])
    }

    package func delete(_ key: String) throws(CofferError) {
        state.withLock { $0.delete(key) }
        changes.publish([key])
    }

    package func list(prefix: String) throws(CofferError) -> [String] {
        state.withLock { state in
            // A folder is indexed; a prefix that ends inside a name ("sys/tok") is rare: scan.
            guard prefix.isEmpty || prefix.hasSuffix("/") else {
                return immediateChildren(of: prefix, keys: state.entries.keys)
            }
            return (state.folders[prefix].map { Array($0.keys) } ?? []).sorted()
        }
    }

    package func batch(_ operations: [StorageOperation]) throws(CofferError) {
        state.withLock { state in
            for op in operations {
                switch op {
                case .put(let key, let value): state.put(key, value)
                case .delete(let key): state.delete(key)
                }
            }
        }
        changes.publish(operations.map(\.key))
    }

    package func close() {}

    /// Every entry, to put back later with ``restore(_:)`` (the fuzz harness starts each input from one state).
    package func snapshot() -> [String: [UInt8]] { state.withLock { $0.entries } }

    /// Replaces every entry with `saved`, and tells the change feed each key that differs, so that the
    /// caches above forget what was there.
    package func restore(_ saved: [String: [UInt8]]) {
        let changed = state.withLock { state in
            let keys = Set(state.entries.keys).union(saved.keys).filter { state.entries[$0] != saved[$0] }
            var fresh = State()
            for (key, value) in saved { fresh.put(key, value) }
            state = fresh
            return Array(keys)
        }
        changes.publish(changed)
    }
}
