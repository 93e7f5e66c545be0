import Synchronization

/// One change in an atomic batch.
public enum StorageOperation: Sendable {
    case put(key: String, value: [UInt8])
    case delete(key: String)
}

/// Where bytes are kept: the layer under the barrier. Everything a backend holds is either already
/// encrypted by the barrier or (the seal configuration) meant to be readable.
///
/// Implementations are safe to call from any number of threads.
public protocol PhysicalBackend: Sendable {
    /// The name shown as `storage_type` in seal-status ("sqlite", "inmem").
    var typeName: String { get }
    func get(_ key: String) throws(CofferError) -> [UInt8]?
    func put(_ key: String, _ value: [UInt8]) throws(CofferError)
    func delete(_ key: String) throws(CofferError)
    /// The immediate children of `prefix`, sorted: a key `prefix + "a"` lists as `"a"`, and keys under
    /// `prefix + "b/"` list once as `"b/"` (Vault's list semantics).
    func list(prefix: String) throws(CofferError) -> [String]
    /// Applies every operation or none.
    func batch(_ operations: [StorageOperation]) throws(CofferError)
    /// Releases files and statements. Later calls fail with an I/O error.
    func close()
}

extension PhysicalBackend {
    /// Every key under `prefix` (recursively), for maintenance paths such as rewrapping and migration.
    public func listRecursive(prefix: String) throws(CofferError) -> [String] {
        var out: [String] = []
        var pending = [prefix]
        while let next = pending.popLast() {
            for child in try list(prefix: next) {
                if child.hasSuffix("/") { pending.append(next + child) } else { out.append(next + child) }
            }
        }
        return out.sorted()
    }
}

/// Collapses full keys under `prefix` into Vault-style immediate children.
func immediateChildren(of prefix: String, keys: some Sequence<String>) -> [String] {
    var seen = Set<String>()
    var out: [String] = []
    for key in keys where key.hasPrefix(prefix) {
        let rest = key.utf8.dropFirst(prefix.utf8.count)
        let child: String
        if let slash = rest.firstIndex(of: UInt8(ascii: "/")) {
            child = String(Substring(rest[...slash]))
        } else {
            child = String(Substring(rest))
        }
        if !child.isEmpty, seen.insert(child).inserted { out.append(child) }
    }
    return out.sorted()
}

/// Storage in memory: for tests and `-dev`. Nothing survives the process.
public final class InMemoryBackend: PhysicalBackend {
    private let entries = Mutex<[String: [UInt8]]>([:])

    public init() {}

    public var typeName: String { "inmem" }

    public func get(_ key: String) throws(CofferError) -> [UInt8]? { entries.withLock { $0[key] } }

    public func put(_ key: String, _ value: [UInt8]) throws(CofferError) { entries.withLock { $0[key] = value } }

    public func delete(_ key: String) throws(CofferError) { _ = entries.withLock { $0.removeValue(forKey: key) } }

    public func list(prefix: String) throws(CofferError) -> [String] {
        entries.withLock { immediateChildren(of: prefix, keys: $0.keys) }
    }

    public func batch(_ operations: [StorageOperation]) throws(CofferError) {
        entries.withLock { entries in
            for op in operations {
                switch op {
                case .put(let key, let value): entries[key] = value
                case .delete(let key): entries.removeValue(forKey: key)
                }
            }
        }
    }

    public func close() {}
}
