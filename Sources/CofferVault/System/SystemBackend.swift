package import CofferAudit
package import CofferCore
package import CofferFramework

/// The `sys/` backend, mounted at `sys/` in every vault: lifecycle, keys, mounts, policies,
/// capabilities and audit devices, with Vault's paths and shapes. Its handlers act on the ``Core``
/// that mounts it; its paths are declared below and in the other files of this folder.
package final class SystemBackend: TableBackend {
    unowned let core: Core

    init(core: Core) {
        self.core = core
    }

    package var specialPaths: SpecialPaths {
        SpecialPaths(
            unauthenticated: [
                "init", "seal-status", "unseal", "health", "leader", "rekey/init", "rekey/update", "rekey/verify",
                "rekey-recovery-key/init", "rekey-recovery-key/update", "rekey-recovery-key/verify", "generate-root/*",
                "generate-root-token/*", "wrapping/lookup",
            ] + SystemBackend.clusterUnauthenticatedPaths,
            root: [
                "seal", "rotate", "step-down", "audit", "audit/*", "audit-reload", "audit-chain-key/*",
                "sealwrap/rewrap",
                "remount", "raw/*", "leases/lookup/*", "leases/revoke-prefix/*", "leases/revoke-force/*",
                "leases", "leases/count", "namespaces/api-lock/unlock/*",
            ] + SystemBackend.breakGlassRootPaths + SystemBackend.clusterRootPaths,
            unaudited: ["seal-status", "health", "leader"],
            selfService: ["capabilities-self", "internal/ui/mounts", "internal/ui/mounts/*"]
        )
    }

    /// The namespace whose `sys/` the request is for.
    func ns(_ request: BackendRequest) throws(CofferError) -> Namespace {
        guard let ns = core.namespace(id: request.namespaceID) else {
            throw CofferError(.notFound, "namespace not found")
        }
        return ns
    }

    package static let paths = PathTable<SystemBackend>(
        [
            Path("seal-status", read: SystemBackend.sealStatus),
            Path("init", fields: initFields, read: SystemBackend.initStatus, write: SystemBackend.initialize),
            Path(
                "unseal",
                fields: [.string("key"), .bool("reset"), .bool("migrate")],
                write: SystemBackend.unseal
            ),
            Path(
                "health",
                fields: [
                    .int("activecode", 100...599), .int("standbycode", 100...599), .int("sealedcode", 100...599),
                    .int("uninitcode", 100...599), .int("drsecondarycode", 100...599),
                    .int("perfstandbyokcode", 100...599),
                    .int("performancestandbycode", 100...599), .bool("standbyok"), .bool("perfstandbyok"),
                ],
                read: SystemBackend.health,
                write: SystemBackend.health
            ),
            Path("leader", read: SystemBackend.leader),
            Path("seal", write: SystemBackend.seal),
            Path("rotate", write: SystemBackend.rotate),
            Path(
                "rotate/config",
                fields: [.int("max_operations", 0...Int(Int64.max)), .duration("interval"), .bool("enabled")],
                read: SystemBackend.readRotationConfig,
                write: SystemBackend.writeRotationConfig
            ),
            Path("key-status", read: SystemBackend.keyStatus),
            Path("sealwrap/rewrap", read: SystemBackend.sealWrapStatus, write: SystemBackend.rewrap),
            Path(
                "capabilities",
                fields: [.string("token"), .strings("paths"), .string("path")],
                write: SystemBackend.capabilitiesOfToken
            ),
            Path(
                "capabilities-accessor",
                fields: [.string("accessor"), .strings("paths"), .string("path")],
                write: SystemBackend.capabilitiesOfAccessor
            ),
            Path(
                "capabilities-self",
                fields: [.strings("paths"), .string("path")],
                write: SystemBackend.capabilitiesOfSelf
            ),
            Path("internal/ui/mounts/{path*}", read: SystemBackend.uiMount),
            Path("policy", read: SystemBackend.listPolicies, list: SystemBackend.listPolicies),
            Path(
                "policy/{name}",
                fields: [.string("policy"), .string("rules")],
                read: SystemBackend.readPolicy,
                write: SystemBackend.writePolicy,
                delete: SystemBackend.deletePolicy
            ),
            Path("policies/acl/", read: SystemBackend.listPolicies, list: SystemBackend.listPolicies),
            Path(
                "policies/acl/{name}",
                fields: [.string("policy")],
                read: SystemBackend.readPolicy,
                write: SystemBackend.writePolicy,
                delete: SystemBackend.deletePolicy
            ),
        ] + mountPaths + namespacePaths + auditPaths + rekeyPaths + leasePaths + passwordPolicyPaths + wrappingPaths
            + metricsPaths + breakGlassPaths + eventPaths + quotaPaths + clusterPaths
    )

    static let initFields: [Field] = [
        .int("secret_shares", 0...255), .int("secret_threshold", 0...255), .int("recovery_shares", 0...255),
        .int("recovery_threshold", 0...255), .strings("pgp_keys"), .strings("recovery_pgp_keys"),
        .string("root_token_pgp_key"),
        .int("stored_shares", 0...255),
    ]

    // MARK: Seal status, init, unseal, health

    func sealStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        .raw(try core.sealStatus().json)
    }

    func initStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        .raw(["initialized": .bool(core.isInitialized)])
    }

    func initialize(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let recovery = core.seal.isAutoUnseal
        let shares = (recovery ? f.int("recovery_shares") : f.int("secret_shares")) ?? (recovery ? 5 : 0)
        let threshold = (recovery ? f.int("recovery_threshold") : f.int("secret_threshold")) ?? (recovery ? 3 : 0)
        guard shares > 0, threshold > 0 else {
            throw CofferError.invalid("secret_shares and secret_threshold are required and must be positive")
        }
        // Vault's `pgp_keys` (`recovery_pgp_keys` with an auto-unseal seal) and `root_token_pgp_key`:
        // each share, and the root token, handed out encrypted to its holder's OpenPGP key. Every key
        // is checked, and encrypted to once, before anything is created.
        let keyField = recovery ? "recovery_pgp_keys" : "pgp_keys"
        let otherField = recovery ? "pgp_keys" : "recovery_pgp_keys"
        guard f.strings(otherField)?.isEmpty ?? true else {
            throw CofferError.invalid(
                "\(otherField) is for \(recovery ? "a Shamir" : "an auto-unseal") seal; this vault's seal takes \(keyField)"
            )
        }
        let recipients = try Core.recipients(
            f.strings(keyField) ?? [],
            field: keyField,
            shares: shares,
            now: request.now
        )
        var rootRecipient: OpenPGP.Recipient?
        if let text = f.string("root_token_pgp_key"), !text.isEmpty {
            do {
                rootRecipient = try OpenPGP.recipient(fromText: text, now: request.now.seconds)
            } catch  where error.code == .invalidArgument {
                throw CofferError.invalid("root_token_pgp_key \(error.message)")
            }
        }
        for recipient in recipients + (rootRecipient.map { [$0] } ?? []) { _ = try OpenPGP.encrypt([0], to: recipient) }
        // Over the wire, init leaves the vault sealed, as Vault and OpenBao do: the operators unseal it
        // with the shares just handed out. (The Swift API's `initialize` leaves it unsealed.)
        let result = try core.initialize(shares: shares, threshold: threshold)
        if !recovery { core.sealVault() }
        var body = result.json.objectValue ?? [:]
        if !recipients.isEmpty {
            var hexForms: [JSONValue] = []
            var base64Forms: [JSONValue] = []
            for (share, recipient) in zip(result.keys, recipients) {
                var hex: [UInt8] = []
                share.withUnsafeBytes { Hex.append($0, to: &hex) }
                defer { OpenPGP.cleanse(&hex) }
                let message = try OpenPGP.encrypt(hex, to: recipient)
                hexForms.append(.string(Hex.encode(message)))
                base64Forms.append(.string(Base64.encode(message)))
            }
            body[recovery ? "recovery_keys" : "keys"] = .array(hexForms)
            body[recovery ? "recovery_keys_base64" : "keys_base64"] = .array(base64Forms)
        }
        if let rootRecipient {
            body["root_token"] = .string(
                Base64.encode(try OpenPGP.encrypt(Array(result.rootToken.utf8), to: rootRecipient))
            )
        }
        return .raw(.object(body))
    }

    func unseal(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        if f.bool("reset") == true {
            core.resetUnsealProgress()
            return .raw(try core.sealStatus().json)
        }
        if core.seal.isAutoUnseal, (f.string("key") ?? "").isEmpty {
            try core.autoUnseal()
            return .raw(try core.sealStatus().json)
        }
        guard let text = f.string("key"), !text.isEmpty else {
            throw CofferError.invalid("'key' must be specified in request body as JSON, or 'reset' set to true")
        }
        guard let key = Hex.decode(text) ?? Base64.decode(text) else {
            throw CofferError.invalid("'key' must be a valid hex or base64 string")
        }
        return .raw(try core.unseal(key: key).json)
    }

    /// `sys/health` with Vault's status codes and query overrides.
    func health(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let initialized = core.isInitialized
        let sealed = core.isSealed
        let status: Int
        if !initialized {
            status = f.int("uninitcode") ?? 501
        } else if sealed {
            status = f.int("sealedcode") ?? 503
        } else if core.isStandby {
            status = f.bool("standbyok") == true ? 200 : f.int("standbycode") ?? 429
        } else {
            status = f.int("activecode") ?? 200
        }
        var body: [String: JSONValue] = [
            // Sealed, OpenBao reports itself as a standby whose replication state is unknown.
            "initialized": .bool(initialized), "sealed": .bool(sealed), "standby": .bool(sealed || core.isStandby),
            "performance_standby": false,
            "replication_performance_mode": sealed ? "unknown" : core.cluster == nil ? "disabled" : "primary",
            "replication_dr_mode": sealed ? "unknown" : "disabled",
            "server_time_utc": .int(core.clock.now().seconds), "version": .string(CofferVersion.versionString),
        ]
        if !sealed {  // as in OpenBao, the cluster is named only when unsealed
            let identity = core.clusterIdentity
            body["cluster_name"] = .string(identity.name)
            body["cluster_id"] = .string(identity.id)
        }
        return .raw(.object(body), status: status)
    }

    // MARK: Seal and keys

    func seal(_ request: BackendRequest) throws(CofferError) -> Response {
        core.sealVault()
        return .noContent
    }

    /// Rotates the vault's keyring, or in a namespace the namespace's own.
    func rotate(_ request: BackendRequest) throws(CofferError) -> Response {
        let here = try ns(request)
        if here.isRoot {
            try core.barrier.rotate(now: request.now)
        } else {
            try core.barrier.rotateNamespaceKeyring(here.uuid, now: request.now)
        }
        return .noContent
    }

    func readRotationConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: core.barrier.rotationPolicy().json.objectValue)
    }

    func writeRotationConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        var policy = core.barrier.rotationPolicy()
        try policy.apply(request.fields.raw)
        try core.barrier.setRotationPolicy(policy)
        return .noContent
    }

    func keyStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        let here = try ns(request)
        let status = here.isRoot ? try core.barrier.keyStatus() : try core.barrier.namespaceKeyStatus(here.uuid)
        var r = Response(data: [
            "term": .int(status.term), "install_time": .string(status.installTime.rfc3339),
            "encryptions": .int(status.encryptions),
        ])
        r.repeatDataAtTopLevel = true
        return r
    }

    /// GET: which key wraps what; POST/PUT: move everything to the seal's current key.
    func sealWrapStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        .raw(try core.sealWrapStatus().json)
    }
    func rewrap(_ request: BackendRequest) throws(CofferError) -> Response { .raw(try core.rewrapSealedEntries().json) }

    // MARK: Capabilities

    func capabilitiesOfToken(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let token = request.fields.string("token") else { throw CofferError.invalid("missing token") }
        guard let target = try core.tokens.live(token: token, now: request.now) else {
            throw CofferError.invalid("invalid token")
        }
        return try capabilities(of: target, request)
    }

    func capabilitiesOfAccessor(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let accessor = request.fields.string("accessor") else { throw CofferError.invalid("missing accessor") }
        guard let target = try core.tokens.entry(accessor: accessor) else {
            throw CofferError.invalid("invalid accessor")
        }
        return try capabilities(of: target, request)
    }

    func capabilitiesOfSelf(_ request: BackendRequest) throws(CofferError) -> Response {
        try capabilities(of: try TokenBackend.callerEntry(request), request)
    }

    /// `{capabilities: [...], "<path>": [...]}` as Vault reports it, for paths in the request's
    /// namespace, under the token's policies (of its own namespace, over paths relative to it).
    func capabilities(of token: TokenEntry, _ request: BackendRequest) throws(CofferError) -> Response {
        let here = try ns(request)
        let home = core.callerNamespace(token)
        let policies = token.policies
        var paths = request.fields.strings("paths") ?? []
        if let single = request.fields.string("path") { paths.append(single) }
        guard !paths.isEmpty else { throw CofferError.invalid("paths must be supplied") }
        var data: [String: JSONValue] = [:]
        var union: Set<String> = []
        for raw in paths {
            let path = try PathRules.normalize(raw)
            let names: [String]
            if let home, here.isWithin(home) {
                if policies.contains("root") {
                    names = ["root"]
                } else {
                    let relative = String(here.path.dropFirst(home.path.count)) + path
                    let caps = try home.policies.acl(for: policies).capabilities(path: relative)
                    names = caps.isEmpty ? ["deny"] : caps.names
                }
            } else {
                names = ["deny"]
            }
            data[raw] = .array(names.map { .string($0) })
            union.formUnion(names)
        }
        if request.fields.has("path") { data["capabilities"] = .array(union.sorted().map { .string($0) }) }
        var r = Response(data: data)
        r.repeatDataAtTopLevel = true
        return r
    }

    /// The CLI's probe before every `kv` command: which mount serves a path, and its KV version.
    func uiMount(_ request: BackendRequest) throws(CofferError) -> Response {
        let path = request.capture("path")
        let here = try ns(request)
        guard let table = here.isRoot ? core.routeTable : here.routes,
            let (mount, _) = table.route(path.isEmpty || path.hasSuffix("/") ? path : path + "/") ?? table.route(path)
        else {
            throw CofferError.permissionDeniedError
        }
        if let token = request.caller?.details as? TokenEntry, !token.isRoot {
            // Any capability on anything under the mount reveals the mount, as in Vault.
            guard let home = core.callerNamespace(token), here.isWithin(home) else {
                throw CofferError.permissionDeniedError
            }
            let acl = try home.policies.acl(for: token.policies)
            guard acl.hasAnyCapability(under: String(here.path.dropFirst(home.path.count)) + mount.prefix) else {
                throw CofferError.permissionDeniedError
            }
        }
        var data = mount.entry.listing.objectValue ?? [:]
        data["path"] = .string(mount.entry.path)
        return Response(data: data)
    }

    // MARK: Policies

    func listPolicies(_ request: BackendRequest) throws(CofferError) -> Response {
        let names = try ns(request).policies.list()
        let legacy = request.path == "policy"
        var r = Response(
            data: legacy
                ? ["keys": .array(names.map { .string($0) }), "policies": .array(names.map { .string($0) })]
                : ["keys": .array(names.map { .string($0) })]
        )
        r.repeatDataAtTopLevel = legacy
        return r
    }

    func readPolicy(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        let legacy = request.path.hasPrefix("policy/")
        let field = legacy ? "rules" : "policy"
        if name == "root" { return Response(data: ["name": "root", field: ""]) }
        guard let policy = try ns(request).policies.get(name) else {
            throw CofferError(.notFound, "no policy named \(name)")
        }
        var r = Response(data: ["name": .string(policy.name), field: .string(policy.raw)])
        r.repeatDataAtTopLevel = legacy
        return r
    }

    func writePolicy(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        guard let text = f.string("policy") ?? f.string("rules"), !text.isEmpty else {
            throw CofferError.invalid("'policy' parameter not supplied or empty")
        }
        try ns(request).policies.put(name: request.capture("name"), text: text, maxSize: core.limits.maxEntrySize)
        return .noContent
    }

    func deletePolicy(_ request: BackendRequest) throws(CofferError) -> Response {
        try ns(request).policies.delete(request.capture("name"))
        return .noContent
    }
}
