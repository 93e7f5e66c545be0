/// A window onto the barrier under one prefix: an engine cannot read or write outside its mount.
package struct StorageView: Sendable {
    package let barrier: Barrier
    package let prefix: String
    /// Keys (relative, as globs: "policy/*") written seal-wrapped (``Barrier/putSealWrapped(_:_:)``).
    let sealWrapped: [String]

    package init(barrier: Barrier, prefix: String, sealWrapped: [String] = []) {
        self.barrier = barrier
        self.prefix = prefix
        self.sealWrapped = sealWrapped
    }

    func isSealWrapped(_ key: String) -> Bool {
        for glob in sealWrapped {
            if glob.hasSuffix("*") ? key.utf8.starts(with: glob.utf8.dropLast()) : key == glob { return true }
        }
        return false
    }

    package func get(_ key: String) throws(CofferError) -> [UInt8]? { try barrier.get(prefix + key) }

    /// Reads and parses a JSON entry.
    package func getJSON(_ key: String) throws(CofferError) -> JSONValue? {
        guard let bytes = try get(key) else { return nil }
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw CofferError(.integrity, "stored entry at '\(prefix + key)' is not valid JSON")
        }
    }

    /// Member `name` of the JSON object stored at `key` (``JSONValue/parseMember(_:of:)``); nil when
    /// there is no entry or it has no such member.
    package func getJSON(_ key: String, member name: StaticString) throws(CofferError) -> JSONValue? {
        guard let bytes = try get(key) else { return nil }
        do {
            return try JSONValue.parseMember(name, of: bytes)
        } catch {
            throw CofferError(.integrity, "stored entry at '\(prefix + key)' is not valid JSON")
        }
    }

    package func put(_ key: String, _ value: [UInt8]) throws(CofferError) {
        if isSealWrapped(key) {
            try barrier.putSealWrapped(prefix + key, value)
        } else {
            try barrier.put(prefix + key, value)
        }
    }

    package func putJSON(_ key: String, _ value: JSONValue) throws(CofferError) { try put(key, value.serialized()) }

    package func delete(_ key: String) throws(CofferError) { try barrier.delete(prefix + key) }

    package func list(_ keyPrefix: String) throws(CofferError) -> [String] { try barrier.list(prefix + keyPrefix) }

    /// Applies puts and deletes (keys relative to this view) atomically.
    package func batch(_ operations: [StorageOperation]) throws(CofferError) {
        try barrier.batch(
            operations.map {
                switch $0 {
                case .put(let key, let value): .put(key: prefix + key, value: value)
                case .delete(let key): .delete(key: prefix + key)
                }
            },
            sealWrapped: sealWrapped.isEmpty
                ? nil : { isSealWrapped(String(decoding: $0.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)) }
        )
    }
}

extension StorageView {
    /// The same window, for reading only: what an existence check gets.
    package var reader: StorageReader { StorageReader(view: self) }

    /// The same window with a copy of its prefix's bytes, for a per-CPU copy of a route table: the
    /// requests of one CPU then retain a prefix no other CPU's requests retain.
    package func unshared() -> StorageView {
        StorageView(
            barrier: barrier,
            prefix: String(decoding: Array(prefix.utf8), as: UTF8.self),
            sealWrapped: sealWrapped
        )
    }
}

/// What reads a window onto the barrier: a ``StorageView`` and a ``StorageReader`` alike. Code that
/// only reads takes either, so that a read with a view in hand does not build a reader (a copy of the
/// view, whose retains of the barrier and the mount's prefix are atomic writes to lines every core's
/// reads share).
package protocol StorageReading: Sendable {
    func get(_ key: String) throws(CofferError) -> [UInt8]?
    func getJSON(_ key: String) throws(CofferError) -> JSONValue?
    func getJSON(_ key: String, member name: StaticString) throws(CofferError) -> JSONValue?
}

extension StorageView: StorageReading {}

/// A window onto the barrier under one prefix that can only read: an existence check decides
/// whether a write is a create or an update before the ACL has run, so it must not change anything.
package struct StorageReader: StorageReading {
    let view: StorageView

    package var prefix: String { view.prefix }
    package func get(_ key: String) throws(CofferError) -> [UInt8]? { try view.get(key) }
    package func getJSON(_ key: String) throws(CofferError) -> JSONValue? { try view.getJSON(key) }
    package func getJSON(_ key: String, member name: StaticString) throws(CofferError) -> JSONValue? {
        try view.getJSON(key, member: name)
    }
    package func list(_ keyPrefix: String) throws(CofferError) -> [String] { try view.list(keyPrefix) }
}
