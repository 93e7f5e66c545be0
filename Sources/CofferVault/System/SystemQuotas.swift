package import CofferCore
package import CofferFramework

/// `sys/quotas/*`: OpenBao's rate-limit quotas and their config, and Coffer's lease-count quotas.
/// The rules and their enforcement are in Quota/.
extension SystemBackend {
    static let quotaPaths: [Path<SystemBackend>] = [
        Path(
            "quotas/config",
            fields: [
                .bool("enable_rate_limit_audit_logging"), .bool("enable_rate_limit_response_headers"),
                .strings("rate_limit_exempt_paths"),
            ],
            read: SystemBackend.readQuotaConfig,
            write: SystemBackend.writeQuotaConfig
        ),
        Path("quotas/rate-limit/", list: SystemBackend.listRateLimitQuotas),
        Path(
            "quotas/rate-limit/{name}",
            fields: [
                .string("rate"), .duration("interval", maximum: RateLimitQuota.maximumInterval),
                .duration("block_interval", maximum: RateLimitQuota.maximumInterval), .string("path"),
                .string("role"), .string("key_by"), .string("type"), .bool("inheritable"),
            ],
            read: SystemBackend.readRateLimitQuota,
            write: SystemBackend.writeRateLimitQuota,
            delete: SystemBackend.deleteRateLimitQuota
        ),
        Path("quotas/lease-count/", list: SystemBackend.listLeaseCountQuotas),
        Path(
            "quotas/lease-count/{name}",
            fields: [
                .int("max_leases", 0...Int(Int32.max)), .string("path"), .string("role"), .string("type"),
                .bool("inheritable"),
            ],
            read: SystemBackend.readLeaseCountQuota,
            write: SystemBackend.writeLeaseCountQuota,
            delete: SystemBackend.deleteLeaseCountQuota
        ),
    ]

    func readQuotaConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: try core.quotas.storedConfig().json.objectValue ?? [:])
    }

    /// The fields given replace what is stored (the exempt list as a whole); the others stay.
    func writeQuotaConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        var config = try core.quotas.storedConfig()
        if let flag = f.bool("enable_rate_limit_audit_logging") { config.auditLogging = flag }
        if let flag = f.bool("enable_rate_limit_response_headers") { config.responseHeaders = flag }
        if let paths = f.strings("rate_limit_exempt_paths") {
            config.exemptPaths = paths.map { $0.hasPrefix("/") ? String($0.drop { $0 == "/" }) : $0 }
        }
        try core.quotas.writeConfig(config)
        return .noContent
    }

    func listRateLimitQuotas(_ request: BackendRequest) throws(CofferError) -> Response {
        try listQuotas(RateLimitQuota.prefix)
    }

    func listLeaseCountQuotas(_ request: BackendRequest) throws(CofferError) -> Response {
        try listQuotas(LeaseCountQuota.prefix)
    }

    private func listQuotas(_ prefix: String) throws(CofferError) -> Response {
        let keys = try core.barrier.list(prefix).sorted()
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func readRateLimitQuota(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let rule = try core.quotas.storedRate(try QuotaRules.name(request.capture("name"))) else {
            return .notFound
        }
        return Response(data: rule.json.objectValue ?? [:])
    }

    /// Every write is a whole definition, as in OpenBao: a field left out takes its default.
    func writeRateLimitQuota(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let name = try QuotaRules.name(request.capture("name"))
        if let type = f.string("type"), !type.isEmpty, type != "rate-limit" {
            throw CofferError.invalid("type must be \"rate-limit\" on sys/quotas/rate-limit")
        }
        let rate = try QuotaRules.rate(f.string("rate"))
        let keyText = f.string("key_by") ?? ""
        guard let keyBy = keyText.isEmpty ? .clientAddress : QuotaKey(rawValue: keyText) else {
            throw CofferError.invalid("key_by must be one of client_address (the default), entity or shared")
        }
        let role = f.string("role") ?? ""
        let path = try quotaPath(f.string("path") ?? "", role: role)
        let interval = Int64(f.int("interval") ?? 0)
        let rule = RateLimitQuota(
            name: name,
            path: path,
            role: role,
            rate: rate,
            interval: interval == 0 ? 1 : interval,
            blockInterval: Int64(f.int("block_interval") ?? 0),
            keyBy: keyBy
        )
        try core.quotas.writeRate(rule)
        return .noContent
    }

    func deleteRateLimitQuota(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.quotas.delete(RateLimitQuota.prefix, try QuotaRules.name(request.capture("name")))
        return .noContent
    }

    func readLeaseCountQuota(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try QuotaRules.name(request.capture("name"))
        guard let rule = try core.quotas.storedLeaseCount(name) else { return .notFound }
        var data = rule.json.objectValue ?? [:]
        data["counter"] = .int(core.quotas.leaseCount(name) ?? 0)
        return Response(data: data)
    }

    func writeLeaseCountQuota(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let name = try QuotaRules.name(request.capture("name"))
        if let type = f.string("type"), !type.isEmpty, type != "lease-count" {
            throw CofferError.invalid("type must be \"lease-count\" on sys/quotas/lease-count")
        }
        guard let max = f.int("max_leases"), max > 0 else {
            throw CofferError.invalid("'max_leases' is invalid: a whole number above 0 is required")
        }
        if let role = f.string("role"), !role.isEmpty {
            throw CofferError.invalid(
                "role-based lease-count quotas are not supported: Coffer counts secret leases, and a login issues a "
                    + "token, not a lease"
            )
        }
        let path = try quotaPath(f.string("path") ?? "", role: "")
        try core.quotas.writeLeaseCount(LeaseCountQuota(name: name, path: path, maxLeases: max))
        return .noContent
    }

    func deleteLeaseCountQuota(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.quotas.delete(LeaseCountQuota.prefix, try QuotaRules.name(request.capture("name")))
        return .noContent
    }

    /// A rule's `path` checked and stored in full: a namespace (`team-a/`), or a mount or a path inside
    /// one, of the root namespace or of the namespace its leading segments name (`team-a/kv/`).
    func quotaPath(_ raw: String, role: String) throws(CofferError) -> String {
        var rest = Substring(raw)
        while rest.hasPrefix("/") { rest = rest.dropFirst() }
        var ns = core.root
        let index = core.namespaceIndex.withLock { $0 }
        while !rest.isEmpty {
            let segment = rest.prefix { $0 != "/" }
            guard let child = index.byPath[ns.path + segment + "/"] else { break }
            ns = child
            rest = rest.dropFirst(segment.count)
            while rest.hasPrefix("/") { rest = rest.dropFirst() }
        }
        if ns.isRoot { return try QuotaRules.path(raw, role: role, table: core.routeTable) }
        guard !rest.isEmpty else {
            guard role.isEmpty else { throw QuotaRules.notAuthMount(ns.path) }
            return ns.path
        }
        guard let table = ns.routes else { throw CofferError.sealedError }
        return ns.path + (try QuotaRules.path(String(rest), role: role, table: table))
    }
}
