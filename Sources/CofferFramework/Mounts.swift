package import CofferCore

/// One row of the mount table.
package struct MountEntry: Sendable, Equatable {
    /// The mount point with its trailing slash: "secret/".
    package var path: String
    package var type: String
    package var description: String
    package var uuid: String
    package var accessor: String
    package var options: [String: String]
    package var defaultLeaseTTL: Int64
    package var maxLeaseTTL: Int64
    package var local: Bool
    package var sealWrap: Bool
    /// Other tunables, kept and returned as given (listing_visibility, passthrough headers, ...).
    package var extraConfig: [String: JSONValue]

    package init(path: String, type: String, description: String = "", options: [String: String] = [:]) {
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

    package var json: JSONValue {
        [
            "path": .string(path), "type": .string(type), "description": .string(description), "uuid": .string(uuid),
            "accessor": .string(accessor), "options": .object(options.mapValues { .string($0) }),
            "default_lease_ttl": .int(defaultLeaseTTL), "max_lease_ttl": .int(maxLeaseTTL), "local": .bool(local),
            "seal_wrap": .bool(sealWrap), "extra_config": .object(extraConfig),
        ]
    }

    package init(json: JSONValue) throws(CofferError) {
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
    package var listing: JSONValue {
        var config: [String: JSONValue] = [
            "default_lease_ttl": .int(defaultLeaseTTL), "max_lease_ttl": .int(maxLeaseTTL), "force_no_cache": false,
        ]
        for (k, v) in extraConfig { config[k] = v }
        var listing: [String: JSONValue] = [
            "type": .string(type), "description": .string(description), "accessor": .string(accessor),
            "uuid": .string(uuid), "config": .object(config), "local": .bool(local), "seal_wrap": .bool(sealWrap),
            "external_entropy_access": false,
            "options": .object(options.mapValues { .string($0) }),
            "running_plugin_version": "", "running_sha256": "", "plugin_version": "",
        ]
        if type == "kv" { listing["deprecation_status"] = "supported" }  // OpenBao lists it for builtin secret engines
        return .object(listing)
    }
}

/// Makes backends for mount types. The core knows none of the engines; the `Coffer` facade registers them.
package struct EngineRegistry: Sendable {
    package typealias Factory = @Sendable (MountEntry) throws(CofferError) -> any Backend
    var factories: [String: Factory] = [:]

    package init() {}

    package mutating func register(_ type: String, _ factory: @escaping Factory) { factories[type] = factory }

    package var types: [String] { factories.keys.sorted() }

    package func make(_ entry: MountEntry) throws(CofferError) -> any Backend {
        guard let factory = factories[entry.type] else {
            throw CofferError.invalid(
                "unknown secrets engine type \"\(entry.type)\"; available: \(types.joined(separator: ", "))"
            )
        }
        return try factory(entry)
    }
}

extension MountEntry {
    /// Vault's system default and maximum lease TTL: 768 hours.
    package static let systemLeaseTTL: Int64 = 768 * 3600

    /// The TTL of a lease a backend asks for with `asked` and `max` (0: not set): `asked`, else the
    /// mount's default, else 768 h; capped by `max`, the mount's max and the system's. `requested`
    /// is the TTL before the cap (a renewal without an increment asks for it again).
    package func leaseTTL(asked: Int64, max: Int64) -> (ttl: Int64, max: Int64, requested: Int64) {
        let mountMax = maxLeaseTTL > 0 ? Swift.min(maxLeaseTTL, MountEntry.systemLeaseTTL) : MountEntry.systemLeaseTTL
        let cap = max > 0 ? Swift.min(max, mountMax) : mountMax
        let requested = asked > 0 ? asked : (defaultLeaseTTL > 0 ? defaultLeaseTTL : MountEntry.systemLeaseTTL)
        return (Swift.min(requested, cap), cap, requested)
    }
}
