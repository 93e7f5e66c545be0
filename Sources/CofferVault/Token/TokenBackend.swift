package import CofferAudit
package import CofferCore
package import CofferFramework

/// The `auth/token/` backend, mounted in every vault: create, look up, renew and revoke tokens,
/// with Vault's paths and shapes. Tokens live in the ``TokenStore``, not in a mount's storage.
package final class TokenBackend: TableBackend {
    unowned let core: Core

    init(core: Core) {
        self.core = core
    }

    package var specialPaths: SpecialPaths { SpecialPaths(root: ["revoke-orphan", "accessors", "accessors/"]) }

    static let createFields: [Field] = [
        .strings("policies"), .stringMap("meta"), .bool("no_parent"), .bool("no_default_policy"), .bool("renewable"),
        .duration("ttl"), .duration("explicit_max_ttl"), .duration("period"), .string("display_name"),
        .int("num_uses", 0...Int(Int32.max)), .string("id"), .string("type"), .string("entity_alias"),
        .duration("lease"),
    ]

    package static let paths = PathTable<TokenBackend>([
        Path("create", fields: createFields, write: TokenBackend.create),
        Path("create-orphan", fields: createFields, write: TokenBackend.create),
        Path("lookup-self", read: TokenBackend.lookupSelf, write: TokenBackend.lookupSelf),
        Path("lookup", fields: [.string("token")], read: TokenBackend.lookup, write: TokenBackend.lookup),
        Path("lookup-accessor", fields: [.string("accessor")], write: TokenBackend.lookupAccessor),
        Path("renew-self", fields: [.duration("increment")], write: TokenBackend.renewSelf),
        Path("renew", fields: [.string("token"), .duration("increment")], write: TokenBackend.renew),
        Path("revoke-self", write: TokenBackend.revokeSelf),
        Path("revoke", fields: [.string("token")], write: TokenBackend.revoke),
        Path("revoke-orphan", fields: [.string("token")], write: TokenBackend.revoke),
        Path("revoke-accessor", fields: [.string("accessor")], write: TokenBackend.revokeAccessor),
        Path("accessors/", list: TokenBackend.accessors),
    ])

    /// The caller's token entry, as the pipeline checked it (its use already counted).
    static func callerEntry(_ request: BackendRequest) throws(CofferError) -> TokenEntry {
        guard let entry = request.caller?.details as? TokenEntry else { throw CofferError.permissionDeniedError }
        return entry
    }

    func create(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.createToken(
            request.fields,
            caller: try Self.callerEntry(request),
            orphanEndpoint: request.path == "create-orphan",
            namespaceID: request.namespaceID,
            now: request.now
        )
    }

    func lookupSelf(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: lookupData(try Self.callerEntry(request), id: request.token ?? "", now: request.now))
    }

    /// Lookup data, with `namespace_path` for a token made in a namespace (as OpenBao adds it).
    func lookupData(_ entry: TokenEntry, id: String, now: Timestamp) -> [String: JSONValue] {
        var data = entry.lookupData(id: id, now: now)
        if let home = core.namespace(id: entry.namespaceID), !home.isRoot {
            data["namespace_path"] = .string(home.path)
        }
        return data
    }

    /// Whether a token made in the namespace `id` may be seen and changed from the request's: only
    /// from its own namespace or one that contains it.
    func visible(_ entry: TokenEntry, _ request: BackendRequest) -> Bool {
        guard let home = core.namespace(id: entry.namespaceID), let here = core.namespace(id: request.namespaceID)
        else { return false }
        return home.isWithin(here)
    }

    func lookup(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let token = request.fields.string("token"), !token.isEmpty else {
            throw CofferError.invalid("missing token to look up")
        }
        guard let entry = try core.tokens.live(token: token, now: request.now), visible(entry, request) else {
            throw CofferError(.permissionDenied, "bad token")
        }
        return Response(data: lookupData(entry, id: token, now: request.now))
    }

    func lookupAccessor(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let accessor = request.fields.string("accessor") else { throw CofferError.invalid("missing accessor") }
        guard let found = try core.tokens.entry(accessor: accessor),
            let entry = try core.tokens.live(found, now: request.now), visible(entry, request)
        else {
            throw CofferError.invalid("invalid accessor")
        }
        return Response(data: lookupData(entry, id: "", now: request.now))
    }

    func renewSelf(_ request: BackendRequest) throws(CofferError) -> Response {
        var response = try core.renew(
            try Self.callerEntry(request),
            increment: request.fields.seconds("increment"),
            now: request.now
        )
        response.auth?.clientToken = request.token ?? ""
        return response
    }

    func renew(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let token = request.fields.string("token") else { throw CofferError.invalid("missing token") }
        guard let entry = try core.tokens.live(token: token, now: request.now), visible(entry, request) else {
            throw CofferError.invalid("invalid token")
        }
        var response = try core.renew(entry, increment: request.fields.seconds("increment"), now: request.now)
        response.auth?.clientToken = token
        return response
    }

    func revokeSelf(_ request: BackendRequest) throws(CofferError) -> Response {
        let caller = try Self.callerEntry(request)
        guard !caller.batch else { throw CofferError.invalid("batch tokens cannot be revoked") }
        try core.tokens.revoke(hash: caller.idHash)
        return .noContent
    }

    func revoke(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let token = request.fields.string("token") else { throw CofferError.invalid("missing token") }
        if let entry = try core.tokens.lookup(token: token), visible(entry, request) {
            try core.tokens.revoke(hash: entry.idHash, orphanChildren: request.path == "revoke-orphan")
        }
        return .noContent
    }

    func revokeAccessor(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let accessor = request.fields.string("accessor") else { throw CofferError.invalid("missing accessor") }
        guard let entry = try core.tokens.entry(accessor: accessor), visible(entry, request) else {
            throw CofferError.invalid("invalid accessor")
        }
        try core.tokens.revoke(hash: entry.idHash)
        return .noContent
    }

    func accessors(_ request: BackendRequest) throws(CofferError) -> Response {
        let core = self.core
        let here = core.namespace(id: request.namespaceID)
        let accessors = try core.tokens.accessors { id in
            guard let here, let home = core.namespace(id: id) else { return false }
            return home.isWithin(here)
        }
        return Response(data: ["keys": .array(accessors.map { .string($0) })])
    }
}

extension TokenEntry {
    var auditCaller: AuditCaller {
        var caller = AuditCaller(accessor: accessor, displayName: displayName, meta: meta, policies: policies)
        caller.entityID = entityID
        caller.tokenType = batch ? "batch" : "service"
        if breakGlass {
            caller.breakGlass = AuditBreakGlass(
                id: meta[BreakGlassLedger.idKey] ?? "",
                name: meta[BreakGlassLedger.nameKey] ?? ""
            )
        }
        return caller
    }

    /// The caller as backends see it; the entry itself rides along for the token backend.
    var caller: Caller {
        var caller = Caller(tokenHash: idHash, accessor: accessor, policies: policies, displayName: displayName)
        caller.details = self
        return caller
    }
}

extension Core {
    func createToken(
        _ fields: FieldData,
        caller: TokenEntry,
        orphanEndpoint: Bool,
        namespaceID: String = "",
        now: Timestamp
    ) throws(CofferError) -> Response {
        let data = fields.raw
        guard !caller.batch else { throw CofferError.invalid("batch tokens cannot create more tokens") }
        let callerIsRoot = caller.isRoot
        let policyStore = (callerNamespace(caller) ?? root).policies
        // `sudo` on the path, as OpenBao's isSudo: orphans, any policies but root, a custom id.
        var isSudo = callerIsRoot
        if !isSudo {
            isSudo = try policyStore.acl(for: caller.policies)
                .allowOperation(.update, path: "auth/token/create", data: nil).rootPrivileges
        }
        let noParent = try data.bool("no_parent") ?? false
        if noParent && !orphanEndpoint && !isSudo {
            throw CofferError.invalid("root or sudo privileges required to create orphan token")
        }
        let orphan = orphanEndpoint || noParent
        // A break-glass token's children end with it and carry its marker (BreakGlass/).
        if caller.breakGlass && orphan {
            throw CofferError.invalid("a break-glass token cannot create orphan tokens: its tokens must end with it")
        }

        // The type and what a batch token cannot have come first, as in OpenBao.
        let type = try data.string("type") ?? ""
        let period = try data.duration("period") ?? 0
        let explicitMax = try data.duration("explicit_max_ttl") ?? 0
        let numUses = try data.int("num_uses") ?? 0
        switch type {
        case "", "service": break
        case "batch":
            if let reason = explicitMax != 0
                ? "explicit_max_ttl" : numUses != 0 ? "num_uses" : period != 0 ? "period" : nil
            {
                throw CofferError.invalid("batch tokens cannot have \"\(reason)\" set")
            }
        default: throw CofferError.invalid("invalid 'token_type' value")
        }
        guard numUses >= 0 else { throw CofferError.invalid("number of uses cannot be negative") }
        if !(try data.string("entity_alias") ?? "").isEmpty {
            throw CofferError.invalid("'entity_alias' is only allowed in combination with token role")
        }

        // OpenBao's resolveTokenPolicies (token roles aside): none asked → the parent's; otherwise a
        // subset of the parent's unless the caller has sudo; "default" added unless asked not to.
        let asked = try data.stringList("policies") ?? []
        let noDefault = try data.bool("no_default_policy") ?? false
        var requested: [String]
        if asked.isEmpty {
            requested = Self.sanitizePolicies(caller.policies, addDefault: false)
        } else if isSudo {
            requested = Self.sanitizePolicies(asked, addDefault: !noDefault)
        } else {
            let parent = Set(Self.sanitizePolicies(caller.policies, addDefault: false))
            let extra = Self.sanitizePolicies(asked, addDefault: false).filter { !parent.contains($0) }
            guard extra.isEmpty else {
                throw CofferError.invalid(
                    "child policies must be subset of parent; not allowed: \(extra.joined(separator: ", "))"
                )
            }
            requested = Self.sanitizePolicies(asked, addDefault: !noDefault && parent.contains("default"))
        }
        if noDefault { requested.removeAll { $0 == "default" } }
        if requested.contains("root") && !callerIsRoot {
            throw CofferError.invalid("root tokens may not be created without parent token being root")
        }
        if type == "batch" && requested.contains("root") {
            throw CofferError.invalid("batch tokens cannot be root tokens")
        }
        var warnings: [String] = []
        for name in requested where name != "default" && name != "root" {
            if try policyStore.get(name) == nil { warnings.append("Policy \"\(name)\" does not exist") }
        }

        var ttl = try data.duration("ttl") ?? 0
        if data["ttl"] == nil, let lease = try data.duration("lease") { ttl = lease }  // Vault's old name for `ttl`
        if period > 0 {
            ttl = period
        } else if ttl == 0 {
            ttl = requested.contains("root") && callerIsRoot && data["ttl"] == nil ? 0 : TokenStore.maxTTL
        }
        if ttl > TokenStore.maxTTL && period == 0 { ttl = TokenStore.maxTTL }
        if explicitMax > 0 && (ttl == 0 || ttl > explicitMax) {
            if ttl > explicitMax {
                let what = period > 0 ? "period" : "TTL"
                warnings.append(
                    "\(what) of \"\(VaultDuration.formatShort(ttl))\" exceeded the effective max_ttl of \"\(VaultDuration.formatShort(explicitMax))\"; \(what) value is capped accordingly"
                )
            }
            ttl = explicitMax
        }
        var meta = try data.stringMap("meta") ?? [:]
        // The break-glass keys are the vault's to set: copied from a break-glass parent, never taken.
        if meta.keys.contains(where: { BreakGlassLedger.metaKeys.contains($0) }) && !caller.breakGlass {
            throw CofferError.invalid("token metadata keys break_glass_* are reserved for break-glass tokens")
        }
        if caller.breakGlass { for key in BreakGlassLedger.metaKeys { meta[key] = caller.meta[key] } }
        let renewable = try data.bool("renewable") ?? true
        let displayName = Self.displayName(try data.string("display_name") ?? "")
        let customID = try data.string("id").flatMap { $0.isEmpty ? nil : $0 }
        if let customID {
            guard isSudo else { throw CofferError.invalid("root or sudo privileges required to specify token id") }
            // "s." and "b." are the prefixes of generated service and batch tokens.
            if customID.hasPrefix("s.") { throw CofferError.invalid("custom token ID cannot have the 's.' prefix") }
            if customID.contains(".") { throw CofferError.invalid("custom token ID cannot have a '.' in the value") }
        }

        // A child never outlives its parent (Vault revokes the tree when the parent expires; Coffer
        // also says so in the child's TTL).
        if !orphan, let parentExpiry = caller.expireTime {
            let left = max(1, now.seconds(until: parentExpiry))
            if ttl == 0 || ttl > left { ttl = left }
        }
        let make = { (hash: String, accessor: String) in
            var entry = TokenEntry(
                idHash: hash,
                accessor: accessor,
                parentHash: orphan ? "" : caller.idHash,
                policies: requested,
                meta: meta,
                displayName: displayName,
                path: orphanEndpoint ? "auth/token/create-orphan" : "auth/token/create",
                now: now,
                ttl: ttl,
                explicitMaxTTL: explicitMax,
                numUses: numUses,
                period: period,
                renewable: renewable && ttl > 0
            )
            entry.breakGlass = caller.breakGlass
            return entry
        }
        let (token, entry): (String, TokenEntry)
        if type == "batch" {
            guard customID == nil else { throw CofferError.invalid("batch tokens cannot have a custom id") }
            var batch = make("", "")
            batch.namespaceID = namespaceID
            (token, entry) = try tokens.createBatch(batch)
        } else {
            (token, entry) = try tokens.create(id: customID, namespaceID: namespaceID, make)
        }
        return Response(auth: authInfo(token: token, entry, now: now), warnings: warnings)
    }

    /// OpenBao's policyutil.SanitizePolicies: names trimmed and in lower case, empty ones dropped, each
    /// once, sorted; "root" alone when it is there; "default" added when `addDefault`.
    static func sanitizePolicies(_ policies: [String], addDefault: Bool) -> [String] {
        var names: Set<String> = addDefault ? ["default"] : []
        for policy in policies {
            let name = policy.trimmingSpaces().lowercased()
            if name == "root" { return ["root"] }
            if !name.isEmpty { names.insert(name) }
        }
        return names.sorted()
    }

    /// "token-<name>", every character but ASCII letters, digits and "-" made a "-", and one
    /// trailing "-" dropped (OpenBao's displayNameSanitize); "token" for none.
    static func displayName(_ name: String) -> String {
        guard !name.isEmpty else { return "token" }
        var sanitized = String(
            ("token-" + name).unicodeScalars.map { scalar -> Character in
                scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "-")
                    ? Character(scalar) : "-"
            }
        )
        if sanitized.hasSuffix("-") { sanitized.removeLast() }
        return sanitized
    }

    func authInfo(token: String, _ entry: TokenEntry, now: Timestamp) -> AuthInfo {
        var info = AuthInfo(
            clientToken: token,
            accessor: entry.accessor,
            policies: entry.policies,
            tokenPolicies: entry.policies,
            metadata: entry.meta,
            leaseDuration: entry.ttl(now: now),
            renewable: entry.renewable,
            orphan: entry.orphan,
            numUses: entry.numUses
        )
        info.entityID = entry.entityID
        if entry.batch { info.tokenType = "batch" }
        return info
    }

    /// Extends a token's life: by `increment` (or its original TTL), never past its explicit max TTL,
    /// the system maximum or its parent's expiry; periodic tokens reset to their period.
    func renew(_ entry: TokenEntry, increment: Int64?, now: Timestamp) throws(CofferError) -> Response {
        guard !entry.batch else { throw CofferError.invalid("batch tokens cannot be renewed") }
        if entry.breakGlass, entry.parentHash.isEmpty {
            throw CofferError.invalid(
                "a break-glass token cannot be renewed: it ends with its time box at \(entry.expireTime?.rfc3339 ?? "?")"
            )
        }
        guard entry.expireTime != nil, entry.renewable else { throw CofferError.invalid("lease is not renewable") }
        let parentExpiry = entry.parentHash.isEmpty ? nil : try tokens.entry(hash: entry.parentHash)?.expireTime
        let terms = try loginTerms(entry, now: now)
        var warnings: [String] = []
        let renewed = try tokens.update(hash: entry.idHash) { (entry) throws(CofferError) in
            if let terms {
                entry.period = terms.period
                entry.maxTTL = terms.maxTTL
            }
            let base = terms.map { $0.ttl > 0 ? $0.ttl : entry.creationTTL } ?? entry.creationTTL
            var ttl = entry.period > 0 ? entry.period : ((increment ?? 0) > 0 ? increment! : base)
            if entry.period == 0 { ttl = min(ttl, TokenStore.maxTTL) }
            if entry.maxTTL > 0 {
                let left = max(0, now.seconds(until: entry.creationTime.adding(seconds: entry.maxTTL)))
                if ttl > left {
                    ttl = left
                    warnings.append(
                        "TTL of \"\(ttl)s\" exceeded the effective max_ttl; TTL value is capped accordingly"
                    )
                }
            }
            if entry.explicitMaxTTL > 0 {
                let left = max(0, now.seconds(until: entry.creationTime.adding(seconds: entry.explicitMaxTTL)))
                if ttl > left {
                    ttl = left
                    warnings.append(
                        "TTL of \"\(ttl)s\" exceeded the effective max_ttl; TTL value is capped accordingly"
                    )
                }
            }
            if let parentExpiry {
                let left = max(0, now.seconds(until: parentExpiry))
                if ttl > left {
                    ttl = left
                    warnings.append(
                        "TTL of \"\(ttl)s\" exceeded the parent token's remaining TTL; TTL value is capped accordingly"
                    )
                }
            }
            entry.expireTime = now.adding(seconds: ttl)
        }
        guard let renewed else { throw CofferError.invalid("invalid token") }
        var response = Response(auth: authInfo(token: "", renewed, now: now))
        response.warnings = warnings
        return response
    }

    /// What the auth method that made the token says of renewing it now (nil: renew as issued, or not
    /// a login token, or its mount is gone).
    private func loginTerms(_ entry: TokenEntry, now: Timestamp) throws(CofferError) -> TokenParameters? {
        guard entry.path.hasPrefix("auth/"), !entry.path.hasPrefix("auth/token/"),
            let (mount, relative) = routeTable.route(entry.path), mount.kind == .auth
        else { return nil }
        var renewal = LoginRenewal(
            path: relative,
            metadata: entry.meta,
            policies: entry.policies,
            storage: mount.storage,
            mount: mount.entry,
            now: now
        )
        renewal.system = self
        do throws(CofferError) {
            return try mount.backend.renewLogin(renewal)
        } catch {
            // OpenBao words it the same way (and answers 500 where the method refuses; Coffer, 400).
            throw CofferError(error.code, "failed to renew entry: " + error.message)
        }
    }
}

extension Core {
    /// The token for an auth method's login answer: `auth` carries the policies, metadata and TTL the
    /// method granted, without a token; the token is made here, as Vault's router does. It has no
    /// parent; its TTL is capped by the grant's max TTL, the mount's `max_lease_ttl` and the system
    /// maximum; its display name says which mount issued it.
    func issueLoginToken(
        _ auth: AuthInfo,
        mount: RoutedMount,
        path: String,
        now: Timestamp
    ) throws(CofferError)
        -> AuthInfo
    {
        let grant = auth.grant ?? LoginGrant(alias: "")
        var policies = Set(auth.policies.map { $0.lowercased() })
        guard !policies.contains("root") else {
            throw CofferError(.internal, "the auth method at \(mount.prefix) tried to issue a root token")
        }
        if !grant.noDefaultPolicy { policies.insert("default") }
        var maxTTL = mount.entry.maxLeaseTTL > 0 ? mount.entry.maxLeaseTTL : TokenStore.maxTTL
        if grant.maxTTL > 0 { maxTTL = min(maxTTL, grant.maxTTL) }
        var ttl =
            auth.leaseDuration > 0
            ? auth.leaseDuration : (mount.entry.defaultLeaseTTL > 0 ? mount.entry.defaultLeaseTTL : maxTTL)
        if grant.period > 0 { ttl = grant.period } else { ttl = min(ttl, maxTTL) }
        if grant.explicitMaxTTL > 0 { ttl = min(ttl, grant.explicitMaxTTL) }
        let name = mount.entry.path.dropLast() + (auth.metadata["username"].map { "-" + $0 } ?? "")
        // Whoever logged in has an entity: found by this mount's alias, or created with it.
        var entityID = ""
        var identityPolicies: [String] = []
        if !grant.alias.isEmpty {
            guard let identity = namespace(id: mount.namespaceID)?.identity else {
                throw CofferError(.notFound, "namespace not found")
            }
            let entity = try identity.loginEntity(
                alias: grant.alias,
                metadata: grant.aliasMetadata,
                groups: grant.groups,
                accessor: mount.entry.accessor,
                now: now
            )
            entityID = entity.id
            identityPolicies = try identity.policies(entityID: entity.id)
        }
        let make = { (hash: String, accessor: String) -> TokenEntry in
            var entry = TokenEntry(
                idHash: hash,
                accessor: accessor,
                parentHash: "",
                policies: policies.sorted(),
                meta: auth.metadata,
                displayName: String(name),
                path: path,
                now: now,
                ttl: ttl,
                explicitMaxTTL: grant.explicitMaxTTL,
                numUses: max(0, auth.numUses),
                period: grant.period,
                renewable: auth.renewable
            )
            entry.boundCIDRs = grant.boundCIDRs
            entry.entityID = entityID
            entry.maxTTL = grant.period > 0 ? 0 : maxTTL
            return entry
        }
        // A role's "default" type is the mount's (`sys/auth/<path>/tune` token_type: default-service
        // unless tuned).
        var type = grant.tokenType
        if type == "default" { type = mount.entry.extraConfig["token_type"]?.stringValue ?? "default-service" }
        let (token, entry): (String, TokenEntry)
        if type.hasSuffix("batch") {
            var batch = make("", "")
            batch.namespaceID = mount.namespaceID
            (token, entry) = try tokens.createBatch(batch)
        } else {
            (token, entry) = try tokens.create(namespaceID: mount.namespaceID, make)
        }
        var issued = authInfo(token: token, entry, now: now)
        issued.tokenPolicies = entry.policies
        issued.identityPolicies = identityPolicies
        issued.policies = Array(Set(entry.policies).union(identityPolicies)).sorted()
        return issued
    }
}
