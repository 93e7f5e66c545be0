package import CofferCore
import Synchronization

/// An alias: how one auth mount knows an entity (a username, a role id, a JWT subject), or, for an
/// external group, the group name an auth mount vouches for.
struct IdentityAlias: Sendable, Equatable {
    var id: String
    var canonicalID: String
    var mountAccessor: String
    var name: String
    var metadata: [String: String] = [:]
    var customMetadata: [String: String] = [:]
    var creationTime: Timestamp
    var lastUpdateTime: Timestamp

    var json: JSONValue {
        [
            "id": .string(id), "canonical_id": .string(canonicalID), "mount_accessor": .string(mountAccessor),
            "name": .string(name), "metadata": .object(metadata.mapValues { .string($0) }),
            "custom_metadata": .object(customMetadata.mapValues { .string($0) }),
            "creation_time": .string(creationTime.rfc3339), "last_update_time": .string(lastUpdateTime.rfc3339),
        ]
    }

    init(id: String, canonicalID: String, mountAccessor: String, name: String, now: Timestamp) {
        self.id = id
        self.canonicalID = canonicalID
        self.mountAccessor = mountAccessor
        self.name = name
        self.creationTime = now
        self.lastUpdateTime = now
    }

    init(json: JSONValue) {
        id = json["id"]?.stringValue ?? ""
        canonicalID = json["canonical_id"]?.stringValue ?? ""
        mountAccessor = json["mount_accessor"]?.stringValue ?? ""
        name = json["name"]?.stringValue ?? ""
        metadata = (json["metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        customMetadata = (json["custom_metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        creationTime = json["creation_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) ?? .zero
        lastUpdateTime = json["last_update_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) ?? creationTime
    }
}

/// An identity entity: one caller, whatever methods it logs in with.
struct Entity: Sendable, Equatable {
    var id: String
    var name: String
    var policies: [String] = []
    var metadata: [String: String] = [:]
    var disabled = false
    var aliases: [IdentityAlias] = []
    /// External groups this entity belongs to, as its last logins said (a JWT's groups claim).
    var externalGroupIDs: [String] = []
    var creationTime: Timestamp
    var lastUpdateTime: Timestamp

    init(id: String, name: String, now: Timestamp) {
        self.id = id
        self.name = name
        self.creationTime = now
        self.lastUpdateTime = now
    }

    var json: JSONValue {
        [
            "id": .string(id), "name": .string(name), "policies": .array(policies.map { .string($0) }),
            "metadata": .object(metadata.mapValues { .string($0) }), "disabled": .bool(disabled),
            "aliases": .array(aliases.map(\.json)), "external_group_ids": .array(externalGroupIDs.map { .string($0) }),
            "creation_time": .string(creationTime.rfc3339), "last_update_time": .string(lastUpdateTime.rfc3339),
        ]
    }

    init(json: JSONValue) throws(CofferError) {
        guard let id = json["id"]?.stringValue, let name = json["name"]?.stringValue else {
            throw CofferError(.integrity, "a stored identity entity is malformed")
        }
        self.id = id
        self.name = name
        policies = (json["policies"]?.arrayValue ?? []).compactMap(\.stringValue)
        metadata = (json["metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        disabled = json["disabled"]?.boolValue ?? false
        aliases = (json["aliases"]?.arrayValue ?? []).map(IdentityAlias.init(json:))
        externalGroupIDs = (json["external_group_ids"]?.arrayValue ?? []).compactMap(\.stringValue)
        creationTime = json["creation_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) ?? .zero
        lastUpdateTime = json["last_update_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) ?? creationTime
    }
}

/// A group of entities with policies: internal (members listed by id) or external (members are
/// the entities whose logins on the alias's mount name the group, as a JWT groups claim does).
struct IdentityGroup: Sendable, Equatable {
    var id: String
    var name: String
    var type: String
    var policies: [String] = []
    var metadata: [String: String] = [:]
    var memberEntityIDs: [String] = []
    var alias: IdentityAlias?
    var creationTime: Timestamp
    var lastUpdateTime: Timestamp

    init(id: String, name: String, type: String, now: Timestamp) {
        self.id = id
        self.name = name
        self.type = type
        self.creationTime = now
        self.lastUpdateTime = now
    }

    var json: JSONValue {
        [
            "id": .string(id), "name": .string(name), "type": .string(type),
            "policies": .array(policies.map { .string($0) }), "metadata": .object(metadata.mapValues { .string($0) }),
            "member_entity_ids": .array(memberEntityIDs.map { .string($0) }), "alias": alias?.json ?? .null,
            "creation_time": .string(creationTime.rfc3339), "last_update_time": .string(lastUpdateTime.rfc3339),
        ]
    }

    init(json: JSONValue) throws(CofferError) {
        guard let id = json["id"]?.stringValue, let name = json["name"]?.stringValue else {
            throw CofferError(.integrity, "a stored identity group is malformed")
        }
        self.id = id
        self.name = name
        type = json["type"]?.stringValue ?? "internal"
        policies = (json["policies"]?.arrayValue ?? []).compactMap(\.stringValue)
        metadata = (json["metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        memberEntityIDs = (json["member_entity_ids"]?.arrayValue ?? []).compactMap(\.stringValue)
        if let alias = json["alias"], alias != .null { self.alias = IdentityAlias(json: alias) }
        creationTime = json["creation_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) ?? .zero
        lastUpdateTime = json["last_update_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) ?? creationTime
    }
}

/// Entities, aliases and groups, kept in the barrier under `sys/identity/`:
///
/// - `entity/<id>` the entity with its aliases; `group/<id>` the group with its alias
/// - `entity-name/<sha256 name>`, `group-name/<sha256 name>`: name → id
/// - `alias/<mount accessor>/<sha256 alias name>`, `alias-id/<alias id>`: → entity id
/// - `group-alias/<mount accessor>/<sha256 alias name>`, `group-alias-id/<alias id>`: → group id
///
/// Entities are cached by id, groups all at once, and each entity's identity policies (its own
/// and its groups'), which every request of a token with an entity needs; any change under
/// `sys/identity/` drops what it touches (``invalidate(_:)``). Writes take one lock.
final class IdentityStore: Sendable {
    static let prefix = "sys/identity/"

    let storage: StorageView
    private let writes = Mutex(())
    private let entities = Mutex<[String: Entity]>([:])
    private let groups = Mutex<[String: IdentityGroup]?>(nil)
    private let policyCache = Mutex<[String: [String]]>([:])

    /// `namespacePrefix`: "" for the root namespace, `namespaces/<uuid>/` for the others.
    init(barrier: Barrier, namespacePrefix: String = "") {
        storage = StorageView(barrier: barrier, prefix: namespacePrefix + IdentityStore.prefix)
    }

    static func nameKey(_ name: String) -> String { Hex.encode(Digest.sha256(Array(name.utf8))) }

    func unload() {
        entities.withLock { $0 = [:] }
        groups.withLock { $0 = nil }
        policyCache.withLock { $0 = [:] }
    }

    /// A key under `sys/identity/` changed in storage.
    func invalidate(_ key: String) {
        if key.hasPrefix("entity/") {
            entities.withLock { _ = $0.removeValue(forKey: String(key.dropFirst("entity/".count))) }
        } else if key.hasPrefix("group/") {
            groups.withLock { $0 = nil }
        }
        policyCache.withLock { $0 = [:] }
    }

    func withWriteLock<R>(_ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        let result: Result<R, CofferError> = writes.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    // MARK: Reads

    func entity(id: String) throws(CofferError) -> Entity? {
        if let cached = entities.withLock({ $0[id] }) { return cached }
        guard !id.isEmpty, !id.contains("/"), let json = try storage.getJSON("entity/" + id) else { return nil }
        let entity = try Entity(json: json)
        entities.withLock { $0[id] = entity }
        return entity
    }

    func entity(name: String) throws(CofferError) -> Entity? {
        guard let id = try index("entity-name/" + IdentityStore.nameKey(name)) else { return nil }
        return try entity(id: id)
    }

    /// The entity that `name` on the mount with `accessor` is an alias of.
    func entity(alias name: String, accessor: String) throws(CofferError) -> Entity? {
        guard let id = try index("alias/\(accessor)/" + IdentityStore.nameKey(name)) else { return nil }
        return try entity(id: id)
    }

    func entity(aliasID: String) throws(CofferError) -> Entity? {
        guard !aliasID.contains("/"), let id = try index("alias-id/" + aliasID) else { return nil }
        return try entity(id: id)
    }

    func index(_ key: String) throws(CofferError) -> String? {
        guard let bytes = try storage.get(key) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    func entityIDs() throws(CofferError) -> [String] { try storage.list("entity/") }

    func allGroups() throws(CofferError) -> [String: IdentityGroup] {
        if let cached = groups.withLock({ $0 }) { return cached }
        var loaded: [String: IdentityGroup] = [:]
        for id in try storage.list("group/") {
            if let json = try storage.getJSON("group/" + id) { loaded[id] = try IdentityGroup(json: json) }
        }
        groups.withLock { $0 = loaded }
        return loaded
    }

    func group(id: String) throws(CofferError) -> IdentityGroup? { try allGroups()[id] }

    func group(name: String) throws(CofferError) -> IdentityGroup? {
        try allGroups().values.first { $0.name == name }
    }

    /// The groups `entity` belongs to directly: internal groups that list it, external groups its
    /// logins named.
    func groups(of entity: Entity) throws(CofferError) -> [IdentityGroup] {
        let all = try allGroups()
        var out = all.values.filter { $0.type == "internal" && $0.memberEntityIDs.contains(entity.id) }
        out += entity.externalGroupIDs.compactMap { all[$0] }
        return out.sorted { $0.name < $1.name }
    }

    /// The policies a token of `entityID` gets beyond its own: the entity's and its groups'
    /// (none for a disabled entity). Cached until identity changes.
    func policies(entityID: String) throws(CofferError) -> [String] {
        if let cached = policyCache.withLock({ $0[entityID] }) { return cached }
        guard let entity = try entity(id: entityID), !entity.disabled else { return [] }
        var set = Set(entity.policies)
        for group in try groups(of: entity) { set.formUnion(group.policies) }
        let policies = set.sorted()
        policyCache.withLock { $0[entityID] = policies }
        return policies
    }

    // MARK: Writes (callers hold the write lock)

    /// Stores `entity` with its name and alias indexes; `previous` is what was stored, whose
    /// index rows that no longer apply are deleted in the same batch.
    func save(_ entity: Entity, previous: Entity?) throws(CofferError) {
        var ops: [StorageOperation] = [.put(key: "entity/" + entity.id, value: entity.json.serialized())]
        func nameRow(_ e: Entity) -> String { "entity-name/" + IdentityStore.nameKey(e.name) }
        func aliasRows(_ e: Entity) -> [String] {
            e.aliases.flatMap { ["alias/\($0.mountAccessor)/" + IdentityStore.nameKey($0.name), "alias-id/" + $0.id] }
        }
        if let previous {
            if previous.name != entity.name { ops.append(.delete(key: nameRow(previous))) }
            for row in Set(aliasRows(previous)).subtracting(aliasRows(entity)) { ops.append(.delete(key: row)) }
        }
        ops.append(.put(key: nameRow(entity), value: Array(entity.id.utf8)))
        for row in aliasRows(entity) { ops.append(.put(key: row, value: Array(entity.id.utf8))) }
        try storage.batch(ops)
        entities.withLock { $0[entity.id] = entity }
    }

    func delete(_ entity: Entity) throws(CofferError) {
        var ops: [StorageOperation] = [
            .delete(key: "entity/" + entity.id), .delete(key: "entity-name/" + IdentityStore.nameKey(entity.name)),
        ]
        for alias in entity.aliases {
            ops.append(.delete(key: "alias/\(alias.mountAccessor)/" + IdentityStore.nameKey(alias.name)))
            ops.append(.delete(key: "alias-id/" + alias.id))
        }
        try storage.batch(ops)
        entities.withLock { _ = $0.removeValue(forKey: entity.id) }
    }

    func save(_ group: IdentityGroup, previous: IdentityGroup?) throws(CofferError) {
        var ops: [StorageOperation] = [.put(key: "group/" + group.id, value: group.json.serialized())]
        func rows(_ g: IdentityGroup) -> [String] {
            var rows = ["group-name/" + IdentityStore.nameKey(g.name)]
            if let a = g.alias {
                rows += ["group-alias/\(a.mountAccessor)/" + IdentityStore.nameKey(a.name), "group-alias-id/" + a.id]
            }
            return rows
        }
        if let previous {
            for row in Set(rows(previous)).subtracting(rows(group)) { ops.append(.delete(key: row)) }
        }
        for row in rows(group) { ops.append(.put(key: row, value: Array(group.id.utf8))) }
        try storage.batch(ops)
        groups.withLock { $0 = nil }
    }

    func delete(_ group: IdentityGroup) throws(CofferError) {
        var ops: [StorageOperation] = [
            .delete(key: "group/" + group.id), .delete(key: "group-name/" + IdentityStore.nameKey(group.name)),
        ]
        if let a = group.alias {
            ops.append(.delete(key: "group-alias/\(a.mountAccessor)/" + IdentityStore.nameKey(a.name)))
            ops.append(.delete(key: "group-alias-id/" + a.id))
        }
        try storage.batch(ops)
        groups.withLock { $0 = nil }
    }

    // MARK: Logins

    /// The entity of whoever logged in as `alias` on the auth mount with `accessor`: found by its
    /// alias, or created (named `entity_<8 hex>.root`, as OpenBao names them) with the alias. The alias's
    /// metadata and the entity's external groups are brought up to date with this login. Throws
    /// permission denied for a disabled entity.
    func loginEntity(
        alias: String,
        metadata: [String: String],
        groups groupNames: [String],
        accessor: String,
        now: Timestamp
    ) throws(CofferError) -> Entity {
        var groupIDs: [String] = []
        for name in groupNames {
            if let id = try index("group-alias/\(accessor)/" + IdentityStore.nameKey(name)) { groupIDs.append(id) }
        }
        groupIDs.sort()
        if let existing = try entity(alias: alias, accessor: accessor),
            existing.externalGroupIDs == groupIDs,
            existing.aliases.first(where: { $0.mountAccessor == accessor && $0.name == alias })?.metadata == metadata
        {
            guard !existing.disabled else { throw CofferError.permissionDeniedError }
            return existing
        }
        return try withWriteLock { () throws(CofferError) -> Entity in
            let previous = try entity(alias: alias, accessor: accessor)
            var entity =
                previous
                ?? {
                    let id = Random.uuid()
                    return Entity(id: id, name: "entity_\(Hex.encode(Random.bytes(4))).root", now: now)
                }()
            guard !entity.disabled else { throw CofferError.permissionDeniedError }
            if let index = entity.aliases.firstIndex(where: { $0.mountAccessor == accessor && $0.name == alias }) {
                entity.aliases[index].metadata = metadata
                entity.aliases[index].lastUpdateTime = now
            } else {
                var a = IdentityAlias(
                    id: Random.uuid(),
                    canonicalID: entity.id,
                    mountAccessor: accessor,
                    name: alias,
                    now: now
                )
                a.metadata = metadata
                entity.aliases.append(a)
            }
            // Memberships through other mounts' aliases stay; this mount's are what this login says.
            var otherMounts: [String] = []
            for id in entity.externalGroupIDs where try group(id: id)?.alias?.mountAccessor != accessor {
                otherMounts.append(id)
            }
            entity.externalGroupIDs = Array(Set(otherMounts + groupIDs)).sorted()
            entity.lastUpdateTime = now
            try save(entity, previous: previous)
            return entity
        }
    }
}
