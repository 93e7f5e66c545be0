import Synchronization

/// One change in an atomic batch.
package enum StorageOperation: Sendable {
    case put(key: String, value: [UInt8])
    case delete(key: String)
}

/// Where bytes are kept: the layer under the barrier. Everything a backend holds is either already
/// encrypted by the barrier or (the seal configuration) meant to be readable.
///
/// Implementations are safe to call from any number of threads.
package protocol PhysicalBackend: Sendable {
    /// The name shown as `storage_type` in seal-status ("sqlite", "inmem").
    var typeName: String { get }
    func get(_ key: String) throws(CofferError) -> [UInt8]?
    func put(_ key: String, _ value: [UInt8]) throws(CofferError)
    func delete(_ key: String) throws(CofferError)
    /// The immediate children of `prefix`, sorted: a key `prefix + "a"` lists as `"a"`, and keys under
    /// `prefix + "b/"` list once as `"b/"` (Vault's list semantics).
    func list(prefix: String) throws(CofferError) -> [String]
    /// The first `limit` of ``list(prefix:)``'s children, without reading the rest (the expiration
    /// manager takes the oldest rows of an index folder that may hold a million).
    func list(prefix: String, limit: Int) throws(CofferError) -> [String]
    /// Applies every operation or none.
    func batch(_ operations: [StorageOperation]) throws(CofferError)
    /// Releases files and statements. Later calls fail with an I/O error.
    func close()
    /// Makes every write stored so far durable. A backend whose commits are durable, or that keeps nothing
    /// on disk, has nothing to do (the default); a file that commits without an fsync
    /// (``SQLiteBackend/durableElsewhere()``) syncs its journal.
    func sync() throws(CofferError)
    /// Every entry as it is now, to read on another thread while writes go on (a Raft leader streams its
    /// state to a follower from one). The default copies every entry; ``SQLiteBackend`` keeps a read
    /// transaction open instead, so freezing costs neither memory nor a read of the entries.
    func freeze() throws(CofferError) -> any FrozenEntries
    /// Told the keys of every change once it is stored, whoever made it: this process's own
    /// writes, another `Core` over the same backend, a replica applying its log, a restore. Every
    /// cache above storage is invalidated from it.
    var changes: ChangeFeed { get }
}

/// The keys that changed in storage, delivered to every subscriber after each successful write,
/// on the writing thread, in the order the writes were stored. A subscriber must not write to the
/// same storage from its callback.
package final class ChangeFeed: Sendable {
    package typealias Subscriber = @Sendable ([String]) -> Void
    private let subscribers = Mutex<[(id: Int, notify: Subscriber)]>([])
    private let nextID = Mutex(0)

    package init() {}

    /// Adds `subscriber`; the id unsubscribes it.
    package func subscribe(_ subscriber: @escaping Subscriber) -> Int {
        let id = nextID.withLock { n in
            n += 1
            return n
        }
        subscribers.withLock { $0.append((id, subscriber)) }
        return id
    }

    package func unsubscribe(_ id: Int) {
        subscribers.withLock { $0.removeAll { $0.id == id } }
    }

    /// Tells every subscriber that `keys` changed.
    package func publish(_ keys: [String]) {
        guard !keys.isEmpty else { return }
        let current = subscribers.withLock { $0 }
        for subscriber in current { subscriber.notify(keys) }
    }
}

extension StorageOperation {
    package var key: String {
        switch self {
        case .put(let key, _), .delete(let key): key
        }
    }
}

/// A backend's entries at one moment (``PhysicalBackend/freeze()``), however the backend changes after.
/// Read by one thread at a time; released when the last reference goes.
package protocol FrozenEntries: AnyObject, Sendable {
    /// Each entry's key and value sizes in bytes, in the order ``scan(_:)`` gives the entries.
    func scanSizes(_ body: (_ keyBytes: Int, _ valueBytes: Int) -> Void) throws(CofferError)
    /// Each entry's key (UTF-8) and value, in the order of the keys' bytes, until `body` returns false.
    /// The buffers are valid only during the call.
    func scan(_ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool) throws(CofferError)
}

/// Frozen entries that are a copy of every entry.
private final class CopiedEntries: FrozenEntries {
    let entries: [(key: [UInt8], value: [UInt8])]

    init(_ entries: [(key: [UInt8], value: [UInt8])]) { self.entries = entries }

    func scanSizes(_ body: (Int, Int) -> Void) {
        for entry in entries { body(entry.key.count, entry.value.count) }
    }

    func scan(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Bool) {
        for entry in entries {
            let more = entry.key.withUnsafeBytes { key in entry.value.withUnsafeBytes { body(key, $0) } }
            if !more { return }
        }
    }
}

extension PhysicalBackend {
    package func sync() throws(CofferError) {}

    package func freeze() throws(CofferError) -> any FrozenEntries {
        var entries: [(key: [UInt8], value: [UInt8])] = []
        for key in try listRecursive(prefix: "") {
            if let value = try get(key) { entries.append((Array(key.utf8), value)) }
        }
        entries.sort { $0.key.lexicographicallyPrecedes($1.key) }
        return CopiedEntries(entries)
    }

    package func list(prefix: String, limit: Int) throws(CofferError) -> [String] {
        Array(try list(prefix: prefix).prefix(max(0, limit)))
    }

    /// Every key under `prefix` (recursively), for maintenance paths such as rewrapping and migration.
    package func listRecursive(prefix: String) throws(CofferError) -> [String] {
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
package func immediateChildren(of prefix: String, keys: some Sequence<String>) -> [String] {
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
