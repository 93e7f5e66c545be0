/// The `sys/` backend: lifecycle, mounts, policies and capabilities, with Vault's paths and shapes.
extension Core {
    // MARK: Without a token

    func handleUnauthenticated(_ request: Request) throws(CofferError) -> Response {
        let data = request.data
        switch (request.path, request.operation) {
        case ("sys/seal-status", .read):
            return .raw(try sealStatus().json)
        case ("sys/init", .read):
            return .raw(["initialized": .bool(isInitialized)])
        case ("sys/init", .update), ("sys/init", .create):
            let recovery = seal.isAutoUnseal
            let shares = try data.int(recovery ? "recovery_shares" : "secret_shares") ?? (recovery ? 5 : 0)
            let threshold = try data.int(recovery ? "recovery_threshold" : "secret_threshold") ?? (recovery ? 3 : 0)
            guard shares > 0, threshold > 0 else {
                throw CofferError.invalid("secret_shares and secret_threshold are required and must be positive")
            }
            // Over the wire, init leaves the vault sealed, as Vault and OpenBao do: the operators unseal it
            // with the shares just handed out. (The Swift API's `initialize` leaves it unsealed.)
            let result = try initialize(shares: shares, threshold: threshold)
            if !seal.isAutoUnseal { sealVault() }
            return .raw(result.json)
        case ("sys/unseal", .update), ("sys/unseal", .create):
            if try data.bool("reset") == true {
                resetUnsealProgress()
                return .raw(try sealStatus().json)
            }
            if seal.isAutoUnseal, (try data.string("key") ?? "").isEmpty {
                try autoUnseal()
                return .raw(try sealStatus().json)
            }
            guard let text = try data.string("key"), !text.isEmpty else {
                throw CofferError.invalid("'key' must be specified in request body as JSON, or 'reset' set to true")
            }
            guard let key = Hex.decode(text) ?? Base64.decode(text) else {
                throw CofferError.invalid("'key' must be a valid hex or base64 string")
            }
            return .raw(try unseal(key: key).json)
        case ("sys/health", .read), ("sys/health", .update):
            return try health(data)
        case ("sys/leader", .read):
            guard !barrier.isSealed else { throw CofferError.sealedError }
            return .raw(["ha_enabled": false])
        default:
            if request.path.hasPrefix("sys/rekey/") || request.path.hasPrefix("sys/rekey-recovery-key/") {
                return try handleRekey(request)
            }
            if request.path.hasPrefix("sys/generate-root/") || request.path.hasPrefix("sys/generate-root-token/") {
                return try handleGenerateRoot(request)
            }
            throw CofferError(.unsupportedOperation, "unsupported operation: \(request.operation.rawValue) on \(request.path)")
        }
    }

    /// `sys/health` with Vault's status codes and query overrides.
    func health(_ query: [String: JSONValue]) throws(CofferError) -> Response {
        let initialized = isInitialized
        let sealed = barrier.isSealed
        var status = 200
        if !initialized {
            status = try query.int("uninitcode") ?? 501
        } else if sealed {
            status = try query.int("sealedcode") ?? 503
        } else {
            status = try query.int("activecode") ?? 200
        }
        var body: [String: JSONValue] = [
            // Sealed, OpenBao reports itself as a standby whose replication state is unknown.
            "initialized": .bool(initialized), "sealed": .bool(sealed), "standby": .bool(sealed), "performance_standby": false,
            "replication_performance_mode": sealed ? "unknown" : "disabled", "replication_dr_mode": sealed ? "unknown" : "disabled",
            "server_time_utc": .int(clock.now().seconds), "version": .string(CofferVersion.versionString),
        ]
        if !sealed {  // as in OpenBao, the cluster is named only when unsealed
            body["cluster_name"] = .string(CofferVersion.clusterName)
            body["cluster_id"] = .string(CofferVersion.clusterID)
        }
        return .raw(.object(body), status: status)
    }

    // MARK: With a token

    func handleSys(_ request: Request, caller: TokenEntry, now: Timestamp) throws(CofferError) -> Response {
        let path = request.path
        let op = request.operation
        let data = request.data

        // Paths any valid token may use: they only tell the caller about itself.
        if path == "sys/capabilities-self" {
            guard op == .update || op == .create else { throw unsupported(request) }
            return try capabilities(caller: caller, paths: try requestedPaths(data), singular: data["path"] != nil)
        }
        if path.hasPrefix("sys/internal/ui/mounts/") || path == "sys/internal/ui/mounts" {
            return try uiMount(String(path.dropFirst("sys/internal/ui/mounts".count)).trimmingSlashes(), caller: caller)
        }

        let sudoPaths = ["sys/seal", "sys/rotate", "sys/step-down", "sys/audit", "sys/audit-reload", "sys/sealwrap/rewrap", "sys/remount"]
        let sudo = sudoPaths.contains(path) || path.hasPrefix("sys/audit/") || path.hasPrefix("sys/audit-chain-key/")
        try authorize(caller, request, requireSudo: sudo)
        if path == "sys/audit" || path == "sys/audit-reload" || path.hasPrefix("sys/audit/") || path.hasPrefix("sys/audit-hash/")
            || path.hasPrefix("sys/audit-chain-key/")
        {
            return try auditPath(request)
        }
        if path == "sys/remount" || path.hasPrefix("sys/remount/") {
            return try remountPath(request)
        }
        if Core.rekeyBackupPaths.contains(path) {
            return try rekeyBackup(request)
        }

        switch path {
        case "sys/seal":
            guard op == .update || op == .create else { throw unsupported(request) }
            sealVault()
            return .noContent
        case "sys/rotate":
            guard op == .update || op == .create else { throw unsupported(request) }
            try barrier.rotate(now: now)
            return .noContent
        case "sys/rotate/config":
            switch op {
            case .read: return Response(data: barrier.rotationPolicy().json.objectValue)
            case .update, .create:
                var policy = barrier.rotationPolicy()
                try policy.apply(data)
                try barrier.setRotationPolicy(policy)
                return .noContent
            default: throw unsupported(request)
            }
        case "sys/key-status":
            guard op == .read else { throw unsupported(request) }
            let status = try barrier.keyStatus()
            var r = Response(data: [
                "term": .int(status.term), "install_time": .string(status.installTime.rfc3339), "encryptions": .int(status.encryptions),
            ])
            r.repeatDataAtTopLevel = true
            return r
        case "sys/sealwrap/rewrap":
            // GET: which key wraps what; POST/PUT: move everything to the seal's current key.
            switch op {
            case .read: return .raw(try sealWrapStatus().json)
            case .update, .create: return .raw(try rewrapSealedEntries().json)
            default: throw unsupported(request)
            }
        case "sys/mounts":
            guard op == .read else { throw unsupported(request) }
            var listing: [String: JSONValue] = [:]
            for entry in try mounts() { listing[entry.path] = entry.listing }
            listing["sys/"] = MountEntry.system(path: "sys/", type: "system", description: "system endpoints used for control, policy and debugging").listing
            var r = Response(data: listing)
            r.repeatDataAtTopLevel = true
            return r
        case "sys/auth":
            guard op == .read else { throw unsupported(request) }
            var r = Response(data: ["token/": MountEntry.system(path: "token/", type: "token", description: "token based credentials").listing])
            r.repeatDataAtTopLevel = true
            return r
        case "sys/capabilities":
            guard op == .update || op == .create else { throw unsupported(request) }
            guard let token = try data.string("token") else { throw CofferError.invalid("missing token") }
            guard let target = try tokens.live(token: token, now: now) else {
                throw CofferError.invalid("invalid token")
            }
            return try capabilities(caller: target, paths: try requestedPaths(data), singular: data["path"] != nil)
        case "sys/capabilities-accessor":
            guard op == .update || op == .create else { throw unsupported(request) }
            guard let accessor = try data.string("accessor") else { throw CofferError.invalid("missing accessor") }
            guard let target = try tokens.entry(accessor: accessor) else { throw CofferError.invalid("invalid accessor") }
            return try capabilities(caller: target, paths: try requestedPaths(data), singular: data["path"] != nil)
        case "sys/policy", "sys/policies/acl":
            guard op == .read || op == .list else { throw unsupported(request) }
            let names = try policies.list()
            var r = Response(data: path == "sys/policy" ? ["keys": .array(names.map { .string($0) }), "policies": .array(names.map { .string($0) })] : ["keys": .array(names.map { .string($0) })])
            r.repeatDataAtTopLevel = path == "sys/policy"
            return r
        default:
            break
        }

        if let name = path.dropPrefix("sys/policies/acl/") ?? path.dropPrefix("sys/policy/") {
            return try policyPath(request, name: name, legacy: path.hasPrefix("sys/policy/"))
        }
        if let rest = path.dropPrefix("sys/mounts/") {
            return try mountPath(request, rest: rest)
        }
        throw CofferError(.notFound, "unsupported path")
    }

    func unsupported(_ request: Request) -> CofferError {
        CofferError(.unsupportedOperation, "unsupported operation: \(request.operation.rawValue) on \(request.path)")
    }

    func requestedPaths(_ data: [String: JSONValue]) throws(CofferError) -> [String] {
        var paths = try data.stringList("paths") ?? []
        if let single = try data.string("path") { paths.append(single) }
        guard !paths.isEmpty else { throw CofferError.invalid("paths must be supplied") }
        return paths
    }

    /// `{capabilities: [...], "<path>": [...]}` as Vault reports it.
    func capabilities(caller: TokenEntry, paths: [String], singular: Bool) throws(CofferError) -> Response {
        var data: [String: JSONValue] = [:]
        var union: Set<String> = []
        for raw in paths {
            let path = try PathRules.normalize(raw)
            let names: [String]
            if caller.isRoot {
                names = ["root"]
            } else {
                let caps = try policies.acl(for: caller.policies).capabilities(path: path)
                names = caps.isEmpty ? ["deny"] : caps.names
            }
            data[raw] = .array(names.map { .string($0) })
            union.formUnion(names)
        }
        if singular { data["capabilities"] = .array(union.sorted().map { .string($0) }) }
        var r = Response(data: data)
        r.repeatDataAtTopLevel = true
        return r
    }

    /// The CLI's probe before every `kv` command: which mount serves a path, and its KV version.
    func uiMount(_ path: String, caller: TokenEntry) throws(CofferError) -> Response {
        guard let (mount, _) = routes.withLock({ $0 })?.route(path.isEmpty ? path : path + (path.hasSuffix("/") ? "" : "/")) ?? routes.withLock({ $0 })?.route(path)
        else {
            throw CofferError.permissionDeniedError
        }
        if !caller.isRoot {
            // Any capability on anything under the mount reveals the mount, as in Vault.
            let acl = try policies.acl(for: caller.policies)
            guard acl.hasAnyCapability(under: mount.entry.path) else { throw CofferError.permissionDeniedError }
        }
        var data = mount.entry.listing.objectValue ?? [:]
        data["path"] = .string(mount.entry.path)
        return Response(data: data)
    }

    func policyPath(_ request: Request, name: String, legacy: Bool) throws(CofferError) -> Response {
        switch request.operation {
        case .read:
            if name == "root" {
                return Response(data: legacy ? ["name": "root", "rules": ""] : ["name": "root", "policy": ""])
            }
            guard let policy = try policies.get(name) else {
                throw CofferError(.notFound, "no policy named \(name)")
            }
            var r = Response(data: legacy ? ["name": .string(policy.name), "rules": .string(policy.raw)] : ["name": .string(policy.name), "policy": .string(policy.raw)])
            r.repeatDataAtTopLevel = legacy
            return r
        case .create, .update:
            let field = legacy && request.data["rules"] != nil ? "rules" : "policy"
            guard let text = try request.data.string(field), !text.isEmpty else {
                throw CofferError.invalid("'policy' parameter not supplied or empty")
            }
            try policies.put(name: name, text: text, maxSize: limits.maxEntrySize)
            return .noContent
        case .delete:
            try policies.delete(name)
            return .noContent
        default:
            throw unsupported(request)
        }
    }

    func mountPath(_ request: Request, rest: String) throws(CofferError) -> Response {
        let data = request.data
        if let point = rest.dropSuffix("/tune") {
            switch request.operation {
            case .read:
                guard let entry = try mounts().first(where: { $0.path == (try? Core.mountPoint(point)) }) else {
                    throw CofferError.invalid("cannot fetch sysview for path \"\(point)/\"")
                }
                var config: [String: JSONValue] = [
                    // Unset TTLs read as the system default they resolve to, as in OpenBao.
                    "default_lease_ttl": .int(entry.defaultLeaseTTL > 0 ? entry.defaultLeaseTTL : TokenStore.maxTTL),
                    "max_lease_ttl": .int(entry.maxLeaseTTL > 0 ? entry.maxLeaseTTL : TokenStore.maxTTL),
                    "force_no_cache": false, "description": .string(entry.description),
                ]
                if !entry.options.isEmpty { config["options"] = .object(entry.options.mapValues { .string($0) }) }
                for (k, v) in entry.extraConfig { config[k] = v }
                var r = Response(data: config)
                r.repeatDataAtTopLevel = true
                return r
            case .update, .create:
                try tune(point) { (entry) throws(CofferError) in try Core.applyTune(&entry, data) }
                return .noContent
            default:
                throw unsupported(request)
            }
        }
        switch request.operation {
        case .create, .update:
            guard let type = try data.string("type"), !type.isEmpty else {
                throw CofferError.invalid("missing 'type' for the mount")
            }
            var entry = MountEntry(path: rest, type: type, description: try data.string("description") ?? "")
            if let options = try data.object("options") {
                for (k, v) in options {
                    guard let s = v.stringValue ?? (v.intValue.map { String($0) }) else {
                        throw CofferError.invalid("options.\(k) must be a string")
                    }
                    entry.options[k] = s
                }
            }
            if let config = try data.object("config") { try Core.applyTune(&entry, config) }
            entry.local = try data.bool("local") ?? false
            entry.sealWrap = try data.bool("seal_wrap") ?? false
            try mount(entry)
            return .noContent
        case .delete:
            try unmount(rest)
            return .noContent
        case .read:
            let point = try Core.mountPoint(rest)
            guard let entry = try mounts().first(where: { $0.path == point }) else {
                throw CofferError.invalid("no mount at \(point)")
            }
            var data = entry.listing.objectValue ?? [:]
            data["path"] = .string(entry.path)
            var r = Response(data: data)
            r.repeatDataAtTopLevel = true
            return r
        default:
            throw unsupported(request)
        }
    }

    static func applyTune(_ entry: inout MountEntry, _ data: [String: JSONValue]) throws(CofferError) {
        if let ttl = try data.duration("default_lease_ttl") { entry.defaultLeaseTTL = ttl }
        if let ttl = try data.duration("max_lease_ttl") { entry.maxLeaseTTL = ttl }
        if let description = try data.string("description") { entry.description = description }
        if let options = try data.object("options") {
            for (k, v) in options { entry.options[k] = v.stringValue ?? v.jsonString }
        }
        for key in ["listing_visibility", "audit_non_hmac_request_keys", "audit_non_hmac_response_keys",
            "passthrough_request_headers", "allowed_response_headers"]
        {
            if let value = data[key] { entry.extraConfig[key] = value }
        }
    }
}

extension MountEntry {
    /// Built-in mounts shown in listings (sys/, token/): fixed ids, nothing stored.
    static func system(path: String, type: String, description: String) -> MountEntry {
        var entry = MountEntry(path: path, type: type, description: description)
        entry.accessor = "\(type)_00000000"
        entry.uuid = "00000000-0000-0000-0000-\(type == "system" ? "000000000001" : "000000000002")"
        return entry
    }
}

extension String {
    func dropPrefix(_ prefix: String) -> String? {
        utf8.starts(with: prefix.utf8) ? String(decoding: utf8.dropFirst(prefix.utf8.count), as: UTF8.self) : nil
    }

    func dropSuffix(_ suffix: String) -> String? {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : nil
    }

    func trimmingSlashes() -> String {
        var s = Substring(self)
        while s.first == "/" { s = s.dropFirst() }
        return String(s)
    }
}
