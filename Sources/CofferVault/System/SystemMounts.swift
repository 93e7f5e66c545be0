package import CofferAudit
package import CofferCore
package import CofferFramework

/// `sys/mounts`, `sys/auth`, their tuning, and `sys/remount`.
extension SystemBackend {
    static let mountFields: [Field] = [
        .string("type"), .string("description"), .object("config"), .object("options"), .bool("local"),
        .bool("seal_wrap"),
        .bool("external_entropy_access"), .string("plugin_name"), .string("plugin_version"),
    ]
    static let tuneFields: [Field] = [
        .duration("default_lease_ttl"), .duration("max_lease_ttl"), .string("description"), .object("options"),
        .string("listing_visibility"), .strings("audit_non_hmac_request_keys"),
        .strings("audit_non_hmac_response_keys"),
        .strings("passthrough_request_headers"), .strings("allowed_response_headers"), .string("token_type"),
        .string("plugin_version"), .any("user_lockout_config"),
    ]

    static let mountPaths: [Path<SystemBackend>] = [
        Path("mounts", read: SystemBackend.listMounts),
        Path(
            "mounts/{path+}/tune",
            fields: tuneFields,
            read: SystemBackend.readMountTune,
            write: SystemBackend.tuneMount
        ),
        Path(
            "mounts/{path+}",
            fields: mountFields,
            read: SystemBackend.readMount,
            write: SystemBackend.enableMount,
            delete: SystemBackend.disableMount
        ),
        Path("auth", read: SystemBackend.listAuth),
        Path(
            "auth/{path+}/tune",
            fields: tuneFields,
            read: SystemBackend.readMountTune,
            write: SystemBackend.tuneMount
        ),
        Path(
            "auth/{path+}",
            fields: mountFields,
            read: SystemBackend.readMount,
            write: SystemBackend.enableMount,
            delete: SystemBackend.disableMount
        ),
        Path("remount", fields: [.string("from"), .string("to")], write: SystemBackend.remount),
        Path("remount/status/{id}", read: SystemBackend.remountStatus),
    ]

    /// `mounts/...` serves secrets engines, `auth/...` auth methods.
    static func kind(_ request: BackendRequest) -> MountKind { request.path.hasPrefix("auth") ? .auth : .secret }

    static func listing(_ entries: [MountEntry]) -> Response {
        var listing: [String: JSONValue] = [:]
        for entry in entries { listing[entry.path] = entry.listing }
        var r = Response(data: listing)
        r.repeatDataAtTopLevel = true
        return r
    }

    func listMounts(_ request: BackendRequest) throws(CofferError) -> Response {
        Self.listing(try core.mounts(.secret, in: try ns(request)) + [Core.systemEntry, Core.cubbyholeEntry])
    }

    func listAuth(_ request: BackendRequest) throws(CofferError) -> Response {
        Self.listing((try core.mounts(.auth, in: try ns(request)) + [Core.tokenEntry]).map(Self.withTokenType))
    }

    /// An auth mount's entry with its `token_type` as OpenBao reports it (default-service unless tuned).
    static func withTokenType(_ entry: MountEntry) -> MountEntry {
        var entry = entry
        if entry.extraConfig["token_type"] == nil { entry.extraConfig["token_type"] = "default-service" }
        return entry
    }

    func entry(_ request: BackendRequest) throws(CofferError) -> MountEntry? {
        let kind = Self.kind(request)
        let point = try Core.mountPoint(request.capture("path"))
        let builtins = kind == .auth ? [Core.tokenEntry] : [Core.systemEntry, Core.cubbyholeEntry]
        return try (core.mounts(kind, in: try ns(request)) + builtins).first { $0.path == point }
    }

    func readMount(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let entry = try entry(request) else {
            throw CofferError.invalid(
                "no mount at \(Self.kind(request).routePrefix)\(try Core.mountPoint(request.capture("path")))"
            )
        }
        let kind = Self.kind(request)
        var data = (kind == .auth ? Self.withTokenType(entry) : entry).listing.objectValue ?? [:]
        if kind == .auth { data["deprecation_status"] = "supported" }
        var r = Response(data: data)
        r.repeatDataAtTopLevel = true
        return r
    }

    func enableMount(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        guard let type = f.string("type"), !type.isEmpty else {
            throw CofferError.invalid("missing 'type' for the mount")
        }
        var entry = MountEntry(path: request.capture("path"), type: type, description: f.string("description") ?? "")
        if let options = f.object("options") {
            for (k, v) in options {
                guard let s = v.stringValue ?? (v.intValue.map { String($0) }) else {
                    throw CofferError.invalid("options.\(k) must be a string")
                }
                entry.options[k] = s
            }
        }
        if let config = f.object("config") {
            let defaultTTL = try config.duration("default_lease_ttl") ?? 0
            let maxTTL = try config.duration("max_lease_ttl") ?? 0
            if maxTTL != 0 && defaultTTL > maxTTL {
                throw CofferError.invalid("given default lease TTL greater than given max lease TTL")
            }
            if maxTTL == 0 && defaultTTL > TokenStore.maxTTL {
                throw CofferError.invalid(
                    "given default lease TTL greater than system max lease TTL of \(TokenStore.maxTTL)"
                )
            }
            try SystemBackend.applyTune(&entry, config)
        }
        entry.local = f.bool("local") ?? false
        entry.sealWrap = f.bool("seal_wrap") ?? false
        try core.mount(entry, kind: Self.kind(request), in: try ns(request))
        return .noContent
    }

    func disableMount(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.unmount(request.capture("path"), kind: Self.kind(request), in: try ns(request))
        return .noContent
    }

    func readMountTune(_ request: BackendRequest) throws(CofferError) -> Response {
        guard var entry = try entry(request) else {
            throw CofferError.invalid("cannot fetch sysview for path \"\(request.capture("path"))/\"")
        }
        if Self.kind(request) == .auth { entry = Self.withTokenType(entry) }
        var config: [String: JSONValue] = [
            // Unset TTLs read as the system default they resolve to, as in OpenBao.
            "default_lease_ttl": .int(entry.defaultLeaseTTL > 0 ? entry.defaultLeaseTTL : TokenStore.maxTTL),
            "max_lease_ttl": .int(entry.maxLeaseTTL > 0 ? entry.maxLeaseTTL : TokenStore.maxTTL),
            "force_no_cache": false, "description": .string(entry.description),
        ]
        if !entry.options.isEmpty { config["options"] = .object(entry.options.mapValues { .string($0) }) }
        for (k, v) in entry.extraConfig {
            // Tune reads show the lockout settings flat, as OpenBao does; mount listings nest them.
            if k == "user_lockout_config", case .object(let lockout) = v {
                for (name, value) in lockout { config[name] = value }
            } else {
                config[k] = v
            }
        }
        var r = Response(data: config)
        r.repeatDataAtTopLevel = true
        return r
    }

    func tuneMount(_ request: BackendRequest) throws(CofferError) -> Response {
        let data = request.fields.raw
        try core.tune(request.capture("path"), kind: Self.kind(request), in: try ns(request)) {
            (entry) throws(CofferError) in
            try SystemBackend.applyTune(&entry, data)
        }
        return .noContent
    }

    /// Applies `data` (a tune request, or a new mount's `config`) to `entry`, with OpenBao's checks:
    /// a default TTL above the max, an unknown listing visibility, a KV version other than 1 or 2.
    static func applyTune(_ entry: inout MountEntry, _ data: [String: JSONValue]) throws(CofferError) {
        let defaultTTL = try data.duration("default_lease_ttl") ?? entry.defaultLeaseTTL
        let maxTTL = try data.duration("max_lease_ttl") ?? entry.maxLeaseTTL
        if (defaultTTL, maxTTL) != (entry.defaultLeaseTTL, entry.maxLeaseTTL), defaultTTL != 0, maxTTL != 0,
            maxTTL < defaultTTL
        {
            throw CofferError.invalid(
                "backend max lease TTL of \(maxTTL) would be less than backend default lease TTL of \(defaultTTL)"
            )
        }
        entry.defaultLeaseTTL = defaultTTL
        entry.maxLeaseTTL = maxTTL
        if let description = try data.string("description") { entry.description = description }
        if let visibility = data["listing_visibility"], visibility != .null {
            let text = visibility.stringValue ?? visibility.jsonString
            guard ["", "hidden", "unauth"].contains(text) else {
                throw CofferError.invalid("invalid listing_visibility \(text)")
            }
        }
        if let options = try data.object("options") {
            for (k, v) in options {
                let value = v.stringValue ?? v.jsonString
                if k == "version" && entry.type == "kv" {
                    let current = Int(entry.options["version"] ?? "1") ?? 1
                    guard let asked = Int(value), asked == 1 || asked == 2 else {
                        throw CofferError.invalid("invalid version provided: \(value)")
                    }
                    if asked < current { throw CofferError.invalid("cannot downgrade mount from version \(current)") }
                    // OpenBao upgrades the data in the background; Coffer has no such migration yet.
                    if asked > current {
                        throw CofferError.invalid(
                            "upgrading a KV mount from version 1 to 2 is not supported by Coffer yet: mount a new kv-v2 engine and copy the secrets"
                        )
                    }
                }
                entry.options[k] = value
            }
        }
        if let type = data["token_type"], type != .null {
            let text = type.stringValue ?? ""
            guard TokenParameters.types.contains(text), text != "default" else {
                throw CofferError.invalid(
                    "invalid value for \"token_type\": use default-service, default-batch, service or batch"
                )
            }
            entry.extraConfig["token_type"] = .string(text)
        }
        if let lockout = data["user_lockout_config"], lockout != .null {
            entry.extraConfig["user_lockout_config"] = .object(try lockoutConfig(lockout))
        }
        for key in [
            "listing_visibility", "audit_non_hmac_request_keys", "audit_non_hmac_response_keys",
            "passthrough_request_headers",
            "allowed_response_headers",
        ] {
            if let value = data[key] { entry.extraConfig[key] = value }
        }
    }

    /// `user_lockout_config` as OpenBao keeps it: threshold, duration, counter reset and disable
    /// under their `user_lockout_*` names (the userpass method reads them).
    static func lockoutConfig(_ value: JSONValue) throws(CofferError) -> [String: JSONValue] {
        guard case .object(let given) = value else {
            throw CofferError.invalid("user_lockout_config must be an object")
        }
        var threshold: Int64 = 0
        if let raw = given["lockout_threshold"], raw != .null {
            let text = raw.stringValue ?? raw.intValue.map { String($0) } ?? ""
            guard let n = UInt32(text) else {
                throw CofferError.invalid(
                    "unable to parse user lockout threshold: \"\(text.prefix(32))\" is not a whole number"
                )
            }
            threshold = Int64(n)
        }
        func seconds(_ key: String, _ name: String) throws(CofferError) -> Int64 {
            guard let raw = given[key], raw != .null else { return 0 }
            do throws(CofferError) {
                return try VaultDuration.seconds(raw, field: key)
            } catch {
                throw CofferError.invalid("unable to parse user lockout \(name): \(error.message)")
            }
        }
        let disable: Bool
        switch given["lockout_disable"] ?? given["disable_lockout"] {
        case nil, .null?: disable = false
        case .bool(let b)?: disable = b
        case .string(let t)?:
            guard let b = Field.parseBool(t) else { throw CofferError.invalid("unable to parse user lockout disable") }
            disable = b
        default: throw CofferError.invalid("unable to parse user lockout disable")
        }
        return [
            "user_lockout_threshold": .int(Int(threshold)),
            "user_lockout_duration": .int(try seconds("lockout_duration", "duration")),
            "user_lockout_counter_reset_duration": .int(try seconds("lockout_counter_reset", "counter reset duration")),
            "user_lockout_disable": .bool(disable),
        ]
    }

    /// `sys/remount` (POST `{from, to}`, sudo), with OpenBao's shapes. OpenBao queues the move and
    /// answers at once; Coffer's move is one write of the mount table, so it has finished when the
    /// answer comes and its status is always "success".
    func remount(_ request: BackendRequest) throws(CofferError) -> Response {
        let from = request.fields.string("from") ?? ""
        let to = request.fields.string("to") ?? ""
        guard !from.isEmpty, !to.isEmpty else {
            throw CofferError.invalid("both 'from' and 'to' path must be specified as a string")
        }
        let migration = try core.remount(from: from, to: to, in: try ns(request))
        var response = Response(data: ["migration_id": .string(migration.id)])
        response.repeatDataAtTopLevel = true
        response.warnings = [
            "Mount move has finished: \(migration.source) is now \(migration.target); sys/remount/status/\(migration.id) reports it"
        ]
        return response
    }

    func remountStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = request.capture("id")
        guard let migration = core.remountMigrations.withLock({ $0.last { $0.id == id } }) else {
            throw CofferError(.notFound, "no mount move has this migration_id")
        }
        return Response(data: [
            "migration_id": .string(migration.id),
            "migration_info": [
                "source_mount": .string(migration.source), "target_mount": .string(migration.target),
                "status": "success",
            ],
        ])
    }
}
