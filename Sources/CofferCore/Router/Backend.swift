/// A mounted secrets engine: it serves the paths under its mount point.
///
/// The router has already checked the token and the ACL when `handle` runs; the engine sees the path
/// relative to its mount and a storage view confined to its own prefix, encrypted by the barrier.
/// Handlers are synchronous and may run on many threads at once.
public protocol Backend: Sendable {
    func handle(_ request: EngineRequest) throws(CofferError) -> Response
    /// Vault's existence check for writes: true if the target exists (the write is an `update`), false
    /// if not (a `create`), nil if the path does not distinguish (always `update`).
    func exists(_ request: EngineRequest) throws(CofferError) -> Bool?
}

extension Backend {
    public func exists(_ request: EngineRequest) throws(CofferError) -> Bool? { nil }
}

/// What an engine receives: the request relative to its mount, and its storage.
public struct EngineRequest: Sendable {
    public var operation: Request.Operation
    /// The path under the mount, without the mount prefix ("data/app" for "secret/data/app").
    public var path: String
    public var data: [String: JSONValue]
    public var storage: StorageView
    public var mount: MountEntry
    public var now: Timestamp

    public init(
        operation: Request.Operation, path: String, data: [String: JSONValue], storage: StorageView,
        mount: MountEntry, now: Timestamp
    ) {
        self.operation = operation
        self.path = path
        self.data = data
        self.storage = storage
        self.mount = mount
        self.now = now
    }

    /// "the path 'secret/x' does not support ..." texts name the full path as the client sent it.
    public var fullPath: String { mount.path + path }

    public func unsupported() -> CofferError {
        CofferError(.unsupportedOperation, "unsupported operation: \(operation.rawValue) on \(fullPath)")
    }
}

/// A window onto the barrier under one prefix: an engine cannot read or write outside its mount.
public struct StorageView: Sendable {
    let barrier: Barrier
    public let prefix: String

    init(barrier: Barrier, prefix: String) {
        self.barrier = barrier
        self.prefix = prefix
    }

    public func get(_ key: String) throws(CofferError) -> [UInt8]? { try barrier.get(prefix + key) }

    /// Reads and parses a JSON entry.
    public func getJSON(_ key: String) throws(CofferError) -> JSONValue? {
        guard let bytes = try get(key) else { return nil }
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw CofferError(.integrity, "stored entry at '\(prefix + key)' is not valid JSON")
        }
    }

    public func put(_ key: String, _ value: [UInt8]) throws(CofferError) { try barrier.put(prefix + key, value) }

    public func putJSON(_ key: String, _ value: JSONValue) throws(CofferError) { try put(key, value.serialized()) }

    /// Stores key material encrypted by the barrier and, when the seal does seal wrap, by the seal
    /// too (see ``Barrier/putSealWrapped(_:_:)``). `get` reads it back.
    public func putSealWrapped(_ key: String, _ value: [UInt8]) throws(CofferError) { try barrier.putSealWrapped(prefix + key, value) }

    public func delete(_ key: String) throws(CofferError) { try barrier.delete(prefix + key) }

    public func list(_ keyPrefix: String) throws(CofferError) -> [String] { try barrier.list(prefix + keyPrefix) }

    /// Applies puts and deletes (keys relative to this view) atomically.
    public func batch(_ operations: [StorageOperation]) throws(CofferError) {
        try barrier.batch(
            operations.map {
                switch $0 {
                case .put(let key, let value): .put(key: prefix + key, value: value)
                case .delete(let key): .delete(key: prefix + key)
                }
            })
    }
}

/// One row of the mount table.
public struct MountEntry: Sendable, Equatable {
    /// The mount point with its trailing slash: "secret/".
    public var path: String
    public var type: String
    public var description: String
    public var uuid: String
    public var accessor: String
    public var options: [String: String]
    public var defaultLeaseTTL: Int64
    public var maxLeaseTTL: Int64
    public var local: Bool
    public var sealWrap: Bool
    /// Other tunables, kept and returned as given (listing_visibility, passthrough headers, ...).
    public var extraConfig: [String: JSONValue]

    public init(path: String, type: String, description: String = "", options: [String: String] = [:]) {
        self.path = path
        self.type = type
        self.description = description
        self.uuid = Random.uuid()
        self.accessor = "\(type)_\(Hex.encode(Random.bytes(4)))"
        self.options = options
        self.defaultLeaseTTL = 0
        self.maxLeaseTTL = 0
        self.local = false
        self.sealWrap = false
        self.extraConfig = [:]
    }

    var json: JSONValue {
        [
            "path": .string(path), "type": .string(type), "description": .string(description), "uuid": .string(uuid),
            "accessor": .string(accessor), "options": .object(options.mapValues { .string($0) }),
            "default_lease_ttl": .int(defaultLeaseTTL), "max_lease_ttl": .int(maxLeaseTTL), "local": .bool(local),
            "seal_wrap": .bool(sealWrap), "extra_config": .object(extraConfig),
        ]
    }

    init(json: JSONValue) throws(CofferError) {
        guard let path = json["path"]?.stringValue, let type = json["type"]?.stringValue,
            let uuid = json["uuid"]?.stringValue
        else { throw CofferError(.integrity, "the stored mount table (core/mounts) is malformed") }
        self.path = path
        self.type = type
        self.uuid = uuid
        self.description = json["description"]?.stringValue ?? ""
        self.accessor = json["accessor"]?.stringValue ?? ""
        self.options = (json["options"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        self.defaultLeaseTTL = Int64(json["default_lease_ttl"]?.intValue ?? 0)
        self.maxLeaseTTL = Int64(json["max_lease_ttl"]?.intValue ?? 0)
        self.local = json["local"]?.boolValue ?? false
        self.sealWrap = json["seal_wrap"]?.boolValue ?? false
        self.extraConfig = json["extra_config"]?.objectValue ?? [:]
    }

    /// The shape sys/mounts lists (without the path, which is the key).
    public var listing: JSONValue {
        var config: [String: JSONValue] = [
            "default_lease_ttl": .int(defaultLeaseTTL), "max_lease_ttl": .int(maxLeaseTTL), "force_no_cache": false,
        ]
        for (k, v) in extraConfig { config[k] = v }
        var listing: [String: JSONValue] = [
            "type": .string(type), "description": .string(description), "accessor": .string(accessor),
            "uuid": .string(uuid), "config": .object(config), "local": .bool(local), "seal_wrap": .bool(sealWrap),
            "external_entropy_access": false, "options": options.isEmpty ? .null : .object(options.mapValues { .string($0) }),
            "running_plugin_version": "", "running_sha256": "", "plugin_version": "",
        ]
        if type == "kv" { listing["deprecation_status"] = "supported" }  // OpenBao lists it for builtin secret engines
        return .object(listing)
    }
}

/// Makes backends for mount types. The core knows none of the engines; the `Coffer` facade registers them.
public struct EngineRegistry: Sendable {
    public typealias Factory = @Sendable (MountEntry) throws(CofferError) -> any Backend
    var factories: [String: Factory] = [:]

    public init() {}

    public mutating func register(_ type: String, _ factory: @escaping Factory) { factories[type] = factory }

    public var types: [String] { factories.keys.sorted() }

    func make(_ entry: MountEntry) throws(CofferError) -> any Backend {
        guard let factory = factories[entry.type] else {
            throw CofferError.invalid("unknown secrets engine type \"\(entry.type)\"; available: \(types.joined(separator: ", "))")
        }
        return try factory(entry)
    }
}
