/// The `auth/token/` backend: create, look up, renew and revoke tokens, with Vault's paths and shapes.
extension Core {
    func handleTokenPath(_ request: Request, caller: TokenEntry, now: Timestamp) throws(CofferError) -> Response {
        let sub = request.path.dropPrefix("auth/token/") ?? ""
        let data = request.data
        let write = request.operation == .update || request.operation == .create
        let sudo = sub == "revoke-orphan" || sub == "accessors" || sub == "accessors/"
        try authorize(caller, request, requireSudo: sudo)

        switch sub {
        case "create", "create-orphan":
            guard write else { throw unsupported(request) }
            return try createToken(data, caller: caller, orphanEndpoint: sub == "create-orphan", now: now)
        case "lookup-self":
            guard request.operation == .read || write else { throw unsupported(request) }
            return Response(data: caller.lookupData(id: request.token ?? "", now: now))
        case "lookup":
            guard request.operation == .read || write else { throw unsupported(request) }
            guard let token = try data.string("token"), !token.isEmpty else { throw CofferError.invalid("missing token to look up") }
            guard let entry = try liveEntry(token: token, now: now) else { throw CofferError(.permissionDenied, "bad token") }
            return Response(data: entry.lookupData(id: token, now: now))
        case "lookup-accessor":
            guard write else { throw unsupported(request) }
            guard let accessor = try data.string("accessor") else { throw CofferError.invalid("missing accessor") }
            guard let found = try tokens.entry(accessor: accessor), let entry = try tokens.live(found, now: now) else {
                throw CofferError.invalid("invalid accessor")
            }
            return Response(data: entry.lookupData(id: "", now: now))
        case "renew-self":
            guard write else { throw unsupported(request) }
            var response = try renew(caller, increment: try data.duration("increment"), now: now)
            response.auth?.clientToken = request.token ?? ""
            return response
        case "renew":
            guard write else { throw unsupported(request) }
            guard let token = try data.string("token") else { throw CofferError.invalid("missing token") }
            guard let entry = try liveEntry(token: token, now: now) else { throw CofferError.invalid("invalid token") }
            var response = try renew(entry, increment: try data.duration("increment"), now: now)
            response.auth?.clientToken = token
            return response
        case "revoke-self":
            guard write else { throw unsupported(request) }
            try tokens.revoke(hash: caller.idHash)
            return .noContent
        case "revoke", "revoke-orphan":
            guard write else { throw unsupported(request) }
            guard let token = try data.string("token") else { throw CofferError.invalid("missing token") }
            if let entry = try tokens.lookup(token: token) {
                try tokens.revoke(hash: entry.idHash, orphanChildren: sub == "revoke-orphan")
            }
            return .noContent
        case "revoke-accessor":
            guard write else { throw unsupported(request) }
            guard let accessor = try data.string("accessor") else { throw CofferError.invalid("missing accessor") }
            guard let entry = try tokens.entry(accessor: accessor) else { throw CofferError.invalid("invalid accessor") }
            try tokens.revoke(hash: entry.idHash)
            return .noContent
        case "accessors", "accessors/":
            guard request.operation == .list else { throw unsupported(request) }
            return Response(data: ["keys": .array(try tokens.accessors().map { .string($0) })])
        default:
            throw CofferError(.notFound, "no handler for route \"\(request.path)\". route entry not found.")
        }
    }

    /// The entry for a token that exists and has not expired, nor has any token above it.
    func liveEntry(token: String, now: Timestamp) throws(CofferError) -> TokenEntry? {
        try tokens.live(token: token, now: now)
    }

    func createToken(_ data: [String: JSONValue], caller: TokenEntry, orphanEndpoint: Bool, now: Timestamp) throws(CofferError) -> Response {
        let callerIsRoot = caller.isRoot
        let noParent = try data.bool("no_parent") ?? false
        if noParent && !orphanEndpoint && !callerIsRoot {
            let acl = try policies.acl(for: caller.policies)
            guard acl.allowOperation(.update, path: "auth/token/create", data: nil).rootPrivileges else {
                throw CofferError.invalid("root or sudo privileges required to create orphan token")
            }
        }
        let orphan = orphanEndpoint || noParent

        var requested = try data.stringList("policies") ?? caller.policies.filter { $0 != "default" }
        requested = Array(Set(requested.map { $0.lowercased() })).sorted()
        if !callerIsRoot {
            let allowed = Set(caller.policies)
            if requested.contains("root") { throw CofferError.invalid("root tokens may not be created by a non-root token") }
            let extra = requested.filter { !allowed.contains($0) && $0 != "default" }
            guard extra.isEmpty else {
                throw CofferError.invalid("child policies must be subset of parent; not allowed: \(extra.joined(separator: ", "))")
            }
        }
        let noDefault = try data.bool("no_default_policy") ?? false
        if !noDefault && !requested.contains("default") && !requested.contains("root") { requested.append("default") }
        requested.sort()

        let period = try data.duration("period") ?? 0
        let explicitMax = try data.duration("explicit_max_ttl") ?? 0
        var ttl = try data.duration("ttl") ?? 0
        if period > 0 {
            ttl = period
        } else if ttl == 0 {
            ttl = requested.contains("root") && callerIsRoot && data["ttl"] == nil ? 0 : TokenStore.maxTTL
        }
        if ttl > TokenStore.maxTTL && period == 0 { ttl = TokenStore.maxTTL }
        if explicitMax > 0 && (ttl == 0 || ttl > explicitMax) { ttl = explicitMax }

        let numUses = try data.int("num_uses") ?? 0
        guard numUses >= 0 else { throw CofferError.invalid("number of uses cannot be negative") }
        let meta = try data.stringMap("meta") ?? [:]
        let renewable = try data.bool("renewable") ?? true
        let name = try data.string("display_name") ?? ""
        // Vault names created tokens "token-<name>"; a root token made by root keeps the plain name.
        let displayName = name.isEmpty ? "token" : (requested == ["root"] && callerIsRoot ? name : "token-" + name)
        let customID = try data.string("id")
        if customID != nil && !callerIsRoot { throw CofferError.invalid("root or sudo privileges required to specify token id") }

        // A child never outlives its parent (Vault revokes the tree when the parent expires; Coffer
        // also says so in the child's TTL).
        if !orphan, let parentExpiry = caller.expireTime {
            let left = max(1, now.seconds(until: parentExpiry))
            if ttl == 0 || ttl > left { ttl = left }
        }
        let (token, entry) = try tokens.create(
            { hash, accessor in
                TokenEntry(
                    idHash: hash, accessor: accessor, parentHash: orphan ? "" : caller.idHash, policies: requested, meta: meta,
                    displayName: displayName, path: orphanEndpoint ? "auth/token/create-orphan" : "auth/token/create", now: now,
                    ttl: ttl, explicitMaxTTL: explicitMax, numUses: numUses, period: period, renewable: renewable && ttl > 0)
            }, id: customID)
        return Response(auth: authInfo(token: token, entry, now: now))
    }

    func authInfo(token: String, _ entry: TokenEntry, now: Timestamp) -> AuthInfo {
        AuthInfo(
            clientToken: token, accessor: entry.accessor, policies: entry.policies, tokenPolicies: entry.policies,
            metadata: entry.meta, leaseDuration: entry.ttl(now: now), renewable: entry.renewable, orphan: entry.orphan,
            numUses: entry.numUses)
    }

    /// Extends a token's life: by `increment` (or its original TTL), never past its explicit max TTL,
    /// the system maximum or its parent's expiry; periodic tokens reset to their period.
    func renew(_ entry: TokenEntry, increment: Int64?, now: Timestamp) throws(CofferError) -> Response {
        guard entry.expireTime != nil, entry.renewable else { throw CofferError.invalid("lease is not renewable") }
        let parentExpiry = entry.parentHash.isEmpty ? nil : try tokens.entry(hash: entry.parentHash)?.expireTime
        var warnings: [String] = []
        let renewed = try tokens.update(hash: entry.idHash) { (entry) throws(CofferError) in
            var ttl = entry.period > 0 ? entry.period : ((increment ?? 0) > 0 ? increment! : entry.creationTTL)
            if entry.period == 0 { ttl = min(ttl, TokenStore.maxTTL) }
            if entry.explicitMaxTTL > 0 {
                let left = max(0, now.seconds(until: entry.creationTime.adding(seconds: entry.explicitMaxTTL)))
                if ttl > left {
                    ttl = left
                    warnings.append("TTL of \"\(ttl)s\" exceeded the effective max_ttl; TTL value is capped accordingly")
                }
            }
            if let parentExpiry {
                let left = max(0, now.seconds(until: parentExpiry))
                if ttl > left {
                    ttl = left
                    warnings.append("TTL of \"\(ttl)s\" exceeded the parent token's remaining TTL; TTL value is capped accordingly")
                }
            }
            entry.expireTime = now.adding(seconds: ttl)
        }
        guard let renewed else { throw CofferError.invalid("invalid token") }
        var response = Response(auth: authInfo(token: "", renewed, now: now))
        response.warnings = warnings
        return response
    }
}
