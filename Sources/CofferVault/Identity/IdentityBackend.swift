package import CofferCore
package import CofferFramework

/// `identity/`, mounted in every vault: entities, entity aliases, groups and group aliases with
/// Vault's paths and shapes (the parts logins and policies need; no merging, no OIDC provider).
/// Logins create entities and aliases by themselves (``Core/issueLoginToken``).
package final class IdentityBackend: TableBackend {
    unowned let core: Core
    /// The namespace whose identity store this instance serves (one instance per namespace).
    unowned let namespace: Namespace
    var store: IdentityStore { namespace.identity }

    init(core: Core, namespace: Namespace) {
        self.core = core
        self.namespace = namespace
    }

    static let entityFields: [Field] = [
        .string("name"), .string("id"), .strings("policies"), .stringMap("metadata"), .bool("disabled"),
    ]
    static let groupFields: [Field] = [
        .string("name"), .string("id"), .string("type"), .strings("policies"), .stringMap("metadata"),
        .strings("member_entity_ids"), .strings("member_group_ids"),
    ]
    static let aliasFields: [Field] = [
        .string("name"), .string("id"), .string("canonical_id"), .string("mount_accessor"),
        .stringMap("custom_metadata"),
    ]

    package static let paths = PathTable<IdentityBackend>([
        Path("entity", fields: entityFields, write: IdentityBackend.writeEntity),
        Path(
            "entity/id/{id}",
            fields: entityFields,
            read: IdentityBackend.readEntity,
            write: IdentityBackend.writeEntity,
            delete: IdentityBackend.deleteEntity
        ),
        Path("entity/id/", list: IdentityBackend.listEntitiesByID),
        Path(
            "entity/name/{name}",
            fields: entityFields,
            read: IdentityBackend.readEntity,
            write: IdentityBackend.writeEntity,
            delete: IdentityBackend.deleteEntity
        ),
        Path("entity/name/", list: IdentityBackend.listEntitiesByName),
        Path("entity-alias", fields: aliasFields, write: IdentityBackend.writeAlias),
        Path(
            "entity-alias/id/{id}",
            fields: aliasFields,
            read: IdentityBackend.readAlias,
            write: IdentityBackend.writeAlias,
            delete: IdentityBackend.deleteAlias
        ),
        Path("entity-alias/id/", list: IdentityBackend.listAliases),
        Path(
            "lookup/entity",
            fields: [
                .string("name"), .string("id"), .string("alias_id"), .string("alias_name"),
                .string("alias_mount_accessor"),
            ],
            write: IdentityBackend.lookupEntity
        ),
        Path("group", fields: groupFields, write: IdentityBackend.writeGroup),
        Path(
            "group/id/{id}",
            fields: groupFields,
            read: IdentityBackend.readGroup,
            write: IdentityBackend.writeGroup,
            delete: IdentityBackend.deleteGroup
        ),
        Path("group/id/", list: IdentityBackend.listGroupsByID),
        Path(
            "group/name/{name}",
            fields: groupFields,
            read: IdentityBackend.readGroup,
            write: IdentityBackend.writeGroup,
            delete: IdentityBackend.deleteGroup
        ),
        Path("group/name/", list: IdentityBackend.listGroupsByName),
        Path("group-alias", fields: aliasFields, write: IdentityBackend.writeGroupAlias),
        Path(
            "group-alias/id/{id}",
            fields: aliasFields,
            read: IdentityBackend.readGroupAlias,
            write: IdentityBackend.writeGroupAlias,
            delete: IdentityBackend.deleteGroupAlias
        ),
        Path("group-alias/id/", list: IdentityBackend.listGroupAliases),
    ])

    // MARK: Shapes

    /// The auth mount with `accessor`, for the mount_path and mount_type aliases show.
    func authMount(_ accessor: String) -> MountEntry? {
        let table: RouteTable? = namespace.isRoot ? core.routeTable : namespace.routes
        return table?.mounts.first { $0.kind == .auth && $0.entry.accessor == accessor }?.entry
    }

    func aliasJSON(_ alias: IdentityAlias, full: Bool = true) -> JSONValue {
        let mount = authMount(alias.mountAccessor)
        var out: [String: JSONValue] = [
            "id": .string(alias.id), "mount_accessor": .string(alias.mountAccessor),
            "mount_path": .string(mount.map { "auth/" + $0.path } ?? ""), "mount_type": .string(mount?.type ?? ""),
            "name": .string(alias.name),
        ]
        if full {
            out["canonical_id"] = .string(alias.canonicalID)
            out["creation_time"] = .string(alias.creationTime.rfc3339)
            out["last_update_time"] = .string(alias.lastUpdateTime.rfc3339)
            out["custom_metadata"] =
                alias.customMetadata.isEmpty ? .null : .object(alias.customMetadata.mapValues { .string($0) })
            out["metadata"] = alias.metadata.isEmpty ? .null : .object(alias.metadata.mapValues { .string($0) })
            out["local"] = false
            out["merged_from_canonical_ids"] = .null
        }
        return .object(out)
    }

    func entityData(_ entity: Entity) throws(CofferError) -> [String: JSONValue] {
        let groupIDs = try store.groups(of: entity).map { JSONValue.string($0.id) }
        return [
            "id": .string(entity.id), "name": .string(entity.name),
            "aliases": .array(entity.aliases.map { aliasJSON($0) }),
            "policies": .array(entity.policies.map { .string($0) }),
            "metadata": entity.metadata.isEmpty ? .null : .object(entity.metadata.mapValues { .string($0) }),
            "disabled": .bool(entity.disabled), "creation_time": .string(entity.creationTime.rfc3339),
            "last_update_time": .string(entity.lastUpdateTime.rfc3339), "direct_group_ids": .array(groupIDs),
            "group_ids": .array(groupIDs), "inherited_group_ids": [], "merged_entity_ids": .null,
            "namespace_id": "root",
        ]
    }

    func groupData(_ group: IdentityGroup) -> [String: JSONValue] {
        [
            "id": .string(group.id), "name": .string(group.name), "type": .string(group.type),
            "policies": .array(group.policies.map { .string($0) }),
            "metadata": group.metadata.isEmpty ? .null : .object(group.metadata.mapValues { .string($0) }),
            "member_entity_ids": .array(group.memberEntityIDs.map { .string($0) }), "member_group_ids": [],
            "parent_group_ids": [], "alias": group.alias.map { aliasJSON($0) } ?? .object([:]),
            "creation_time": .string(group.creationTime.rfc3339),
            "last_update_time": .string(group.lastUpdateTime.rfc3339), "namespace_id": "root",
            "modify_index": 0,
        ]
    }

    // MARK: Entities

    /// The entity a path or body names: `entity/id/<id>`, `entity/name/<name>`, or `id`/`name` in
    /// the body of `entity`.
    func namedEntity(_ request: BackendRequest) throws(CofferError) -> (Entity?, name: String?) {
        if request.path.hasPrefix("entity/id/") { return (try store.entity(id: request.capture("id")), nil) }
        if request.path.hasPrefix("entity/name/") {
            let name = request.capture("name")
            return (try store.entity(name: name), name)
        }
        if let id = request.fields.string("id"), !id.isEmpty { return (try store.entity(id: id), nil) }
        if let name = request.fields.string("name"), !name.isEmpty { return (try store.entity(name: name), name) }
        return (nil, nil)
    }

    func writeEntity(_ request: BackendRequest) throws(CofferError) -> Response {
        try store.withWriteLock { () throws(CofferError) -> Response in
            let (found, pathName) = try namedEntity(request)
            if request.path.hasPrefix("entity/id/"), found == nil { throw CofferError.invalid("entity not found") }
            var entity = found ?? Entity(id: Random.uuid(), name: "", now: request.now)
            if let name = request.fields.string("name"), !name.isEmpty { entity.name = name }
            if entity.name.isEmpty { entity.name = pathName ?? "entity_\(Hex.encode(Random.bytes(4))).root" }
            if entity.name != found?.name, let clash = try store.entity(name: entity.name), clash.id != entity.id {
                throw CofferError.invalid("entity name is already in use")
            }
            if let p = request.fields.strings("policies") { entity.policies = TokenParameters.sanitize(p) }
            if let m = request.fields.stringMap("metadata") { entity.metadata = m }
            if let d = request.fields.bool("disabled") { entity.disabled = d }
            entity.lastUpdateTime = request.now
            try store.save(entity, previous: found)
            if found != nil { return .noContent }
            return Response(data: ["id": .string(entity.id), "name": .string(entity.name), "aliases": .null])
        }
    }

    func readEntity(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let entity = try namedEntity(request).0 else { return .notFound }
        return Response(data: try entityData(entity))
    }

    func deleteEntity(_ request: BackendRequest) throws(CofferError) -> Response {
        try store.withWriteLock { () throws(CofferError) in
            if let entity = try namedEntity(request).0 { try store.delete(entity) }
        }
        return .noContent
    }

    func listEntitiesByID(_ request: BackendRequest) throws(CofferError) -> Response {
        var keys: [JSONValue] = []
        var info: [String: JSONValue] = [:]
        for id in try store.entityIDs() {
            guard let entity = try store.entity(id: id) else { continue }
            keys.append(.string(id))
            info[id] = [
                "name": .string(entity.name), "aliases": .array(entity.aliases.map { aliasJSON($0, full: false) }),
            ]
        }
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys), "key_info": .object(info)])
    }

    func listEntitiesByName(_ request: BackendRequest) throws(CofferError) -> Response {
        var names: [String] = []
        for id in try store.entityIDs() {
            if let name = try store.entity(id: id)?.name { names.append(name) }
        }
        guard !names.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(names.sorted().map { .string($0) })])
    }

    func lookupEntity(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let entity: Entity?
        if let id = f.string("id") {
            entity = try store.entity(id: id)
        } else if let name = f.string("name") {
            entity = try store.entity(name: name)
        } else if let aliasID = f.string("alias_id") {
            entity = try store.entity(aliasID: aliasID)
        } else if let aliasName = f.string("alias_name"), let accessor = f.string("alias_mount_accessor") {
            entity = try store.entity(alias: aliasName, accessor: accessor)
        } else {
            throw CofferError.invalid("one of id, name, alias_id, or alias_name and alias_mount_accessor must be given")
        }
        guard let entity else { return .noContent }
        return Response(data: try entityData(entity))
    }

    // MARK: Entity aliases

    func writeAlias(_ request: BackendRequest) throws(CofferError) -> Response {
        try store.withWriteLock { () throws(CofferError) -> Response in
            let f = request.fields
            let aliasID = request.path.hasPrefix("entity-alias/id/") ? request.capture("id") : (f.string("id") ?? "")
            let owner = aliasID.isEmpty ? nil : try store.entity(aliasID: aliasID)
            if !aliasID.isEmpty, owner == nil, request.path.hasPrefix("entity-alias/id/") {
                throw CofferError.invalid("invalid alias ID provided")
            }
            var existing = owner?.aliases.first { $0.id == aliasID }
            let name = f.string("name") ?? existing?.name ?? ""
            let accessor = f.string("mount_accessor") ?? existing?.mountAccessor ?? ""
            let canonicalID = f.string("canonical_id") ?? existing?.canonicalID ?? ""
            guard !name.isEmpty else { throw CofferError.invalid("missing alias name") }
            guard authMount(accessor) != nil else {
                throw CofferError.invalid("invalid mount accessor \"\(accessor)\"")
            }
            guard var target = try store.entity(id: canonicalID) else {
                throw CofferError.invalid("entity not found with ID \"\(canonicalID)\"")
            }
            if let holder = try store.entity(alias: name, accessor: accessor) {
                if holder.id == target.id, existing == nil || existing?.name == name { return .noContent }
                if holder.id != target.id {
                    throw CofferError.invalid(
                        "alias with combination of mount accessor and name already exists for entity \"\(holder.id)\""
                    )
                }
            }
            // Moving an alias to another entity takes it off the old one.
            if var previousOwner = owner, previousOwner.id != target.id {
                let before = previousOwner
                previousOwner.aliases.removeAll { $0.id == aliasID }
                try store.save(previousOwner, previous: before)
            }
            let before = try store.entity(id: target.id)
            if existing == nil {
                existing = IdentityAlias(
                    id: aliasID.isEmpty ? Random.uuid() : aliasID,
                    canonicalID: target.id,
                    mountAccessor: accessor,
                    name: name,
                    now: request.now
                )
            }
            var alias = existing!
            alias.name = name
            alias.mountAccessor = accessor
            alias.canonicalID = target.id
            if let custom = f.stringMap("custom_metadata") { alias.customMetadata = custom }
            alias.lastUpdateTime = request.now
            target.aliases.removeAll { $0.id == alias.id }
            target.aliases.append(alias)
            try store.save(target, previous: before)
            return Response(data: ["id": .string(alias.id), "canonical_id": .string(target.id)])
        }
    }

    func readAlias(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = request.capture("id")
        guard let entity = try store.entity(aliasID: id), let alias = entity.aliases.first(where: { $0.id == id })
        else { return .notFound }
        guard case .object(var data) = aliasJSON(alias) else { return .notFound }
        data["namespace_id"] = "root"
        return Response(data: data)
    }

    func deleteAlias(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = request.capture("id")
        try store.withWriteLock { () throws(CofferError) in
            guard let entity = try store.entity(aliasID: id) else { return }
            var changed = entity
            changed.aliases.removeAll { $0.id == id }
            try store.save(changed, previous: entity)
        }
        return .noContent
    }

    func listAliases(_ request: BackendRequest) throws(CofferError) -> Response {
        var keys: [JSONValue] = []
        var info: [String: JSONValue] = [:]
        for id in try store.entityIDs() {
            for alias in try store.entity(id: id)?.aliases ?? [] {
                keys.append(.string(alias.id))
                guard case .object(var item) = aliasJSON(alias, full: false) else { continue }
                item["canonical_id"] = .string(id)
                info[alias.id] = .object(item)
            }
        }
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys), "key_info": .object(info)])
    }

    // MARK: Groups

    func namedGroup(_ request: BackendRequest) throws(CofferError) -> (IdentityGroup?, name: String?) {
        if request.path.hasPrefix("group/id/") { return (try store.group(id: request.capture("id")), nil) }
        if request.path.hasPrefix("group/name/") {
            let name = request.capture("name")
            return (try store.group(name: name), name)
        }
        if let id = request.fields.string("id"), !id.isEmpty { return (try store.group(id: id), nil) }
        if let name = request.fields.string("name"), !name.isEmpty { return (try store.group(name: name), name) }
        return (nil, nil)
    }

    func writeGroup(_ request: BackendRequest) throws(CofferError) -> Response {
        try store.withWriteLock { () throws(CofferError) -> Response in
            let f = request.fields
            let (found, pathName) = try namedGroup(request)
            if request.path.hasPrefix("group/id/"), found == nil { throw CofferError.invalid("group not found") }
            let type = f.string("type") ?? found?.type ?? "internal"
            guard type == "internal" || type == "external" else {
                throw CofferError.invalid("invalid group type \"\(type)\"")
            }
            if let found, found.type != type { throw CofferError.invalid("group type cannot be changed") }
            var group = found ?? IdentityGroup(id: Random.uuid(), name: "", type: type, now: request.now)
            if let name = f.string("name"), !name.isEmpty { group.name = name }
            if group.name.isEmpty { group.name = pathName ?? "group_" + String(group.id.prefix(8)) }
            if group.name != found?.name, let clash = try store.group(name: group.name), clash.id != group.id {
                throw CofferError.invalid("group name is already in use")
            }
            if let p = f.strings("policies") { group.policies = TokenParameters.sanitize(p) }
            if let m = f.stringMap("metadata") { group.metadata = m }
            if let members = f.strings("member_entity_ids") {
                guard type == "internal" || members.isEmpty else {
                    throw CofferError.invalid("member entities can't be set manually for external groups")
                }
                for id in members where try store.entity(id: id) == nil {
                    throw CofferError.invalid("invalid entity ID \"\(id)\"")
                }
                group.memberEntityIDs = Array(Set(members)).sorted()
            }
            if let nested = f.strings("member_group_ids"), !nested.isEmpty {
                throw CofferError.invalid("Coffer does not support nested groups (member_group_ids) yet")
            }
            group.lastUpdateTime = request.now
            try store.save(group, previous: found)
            if found != nil { return .noContent }
            return Response(data: ["id": .string(group.id), "name": .string(group.name)])
        }
    }

    func readGroup(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let group = try namedGroup(request).0 else { return .notFound }
        return Response(data: groupData(group))
    }

    func deleteGroup(_ request: BackendRequest) throws(CofferError) -> Response {
        try store.withWriteLock { () throws(CofferError) in
            if let group = try namedGroup(request).0 { try store.delete(group) }
        }
        return .noContent
    }

    func listGroupsByID(_ request: BackendRequest) throws(CofferError) -> Response {
        let groups = try store.allGroups().values.sorted { $0.id < $1.id }
        guard !groups.isEmpty else { return .notFound }
        var info: [String: JSONValue] = [:]
        for g in groups { info[g.id] = ["name": .string(g.name)] }
        return Response(data: ["keys": .array(groups.map { .string($0.id) }), "key_info": .object(info)])
    }

    func listGroupsByName(_ request: BackendRequest) throws(CofferError) -> Response {
        let names = try store.allGroups().values.map(\.name).sorted()
        guard !names.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(names.map { .string($0) })])
    }

    // MARK: Group aliases

    func writeGroupAlias(_ request: BackendRequest) throws(CofferError) -> Response {
        try store.withWriteLock { () throws(CofferError) -> Response in
            let f = request.fields
            let aliasID = request.path.hasPrefix("group-alias/id/") ? request.capture("id") : (f.string("id") ?? "")
            let holder = try store.allGroups().values.first { !aliasID.isEmpty && $0.alias?.id == aliasID }
            if request.path.hasPrefix("group-alias/id/"), holder == nil {
                throw CofferError.invalid("invalid group alias ID")
            }
            let name = f.string("name") ?? holder?.alias?.name ?? ""
            let accessor = f.string("mount_accessor") ?? holder?.alias?.mountAccessor ?? ""
            let canonicalID = f.string("canonical_id") ?? holder?.id ?? ""
            guard !name.isEmpty else { throw CofferError.invalid("missing alias name") }
            guard authMount(accessor) != nil else {
                throw CofferError.invalid("invalid mount accessor \"\(accessor)\"")
            }
            guard var group = try store.group(id: canonicalID) else {
                throw CofferError.invalid("invalid group ID given in 'canonical_id'")
            }
            guard group.type == "external" else {
                throw CofferError.invalid("alias can't be set on an internal group")
            }
            if let taken = try store.index("group-alias/\(accessor)/" + IdentityStore.nameKey(name)),
                taken != group.id
            {
                throw CofferError.invalid("combination of mount accessor and name is already in use")
            }
            if var old = holder, old.id != group.id {
                let before = old
                old.alias = nil
                try store.save(old, previous: before)
            }
            let before = group
            var alias =
                group.alias
                ?? IdentityAlias(
                    id: aliasID.isEmpty ? Random.uuid() : aliasID,
                    canonicalID: group.id,
                    mountAccessor: accessor,
                    name: name,
                    now: request.now
                )
            alias.name = name
            alias.mountAccessor = accessor
            alias.lastUpdateTime = request.now
            group.alias = alias
            try store.save(group, previous: before)
            return Response(data: ["id": .string(alias.id), "canonical_id": .string(group.id)])
        }
    }

    func readGroupAlias(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = request.capture("id")
        guard let group = try store.allGroups().values.first(where: { $0.alias?.id == id }), let alias = group.alias
        else { return .notFound }
        guard case .object(var data) = aliasJSON(alias) else { return .notFound }
        data["namespace_id"] = "root"
        return Response(data: data)
    }

    func deleteGroupAlias(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = request.capture("id")
        try store.withWriteLock { () throws(CofferError) in
            guard let group = try store.allGroups().values.first(where: { $0.alias?.id == id }) else { return }
            var changed = group
            changed.alias = nil
            try store.save(changed, previous: group)
        }
        return .noContent
    }

    func listGroupAliases(_ request: BackendRequest) throws(CofferError) -> Response {
        let aliases = try store.allGroups().values.compactMap(\.alias).sorted { $0.id < $1.id }
        guard !aliases.isEmpty else { return .notFound }
        var info: [String: JSONValue] = [:]
        for a in aliases {
            guard case .object(var item) = aliasJSON(a, full: false) else { continue }
            item["canonical_id"] = .string(a.canonicalID)
            info[a.id] = .object(item)
        }
        return Response(data: ["keys": .array(aliases.map { .string($0.id) }), "key_info": .object(info)])
    }
}
