package import CofferCore
package import CofferFramework

/// `sys/break-glass/*` (docs/break-glass.md). The configuration, the report and early revocation
/// need sudo (SystemBackend's root paths); activate, approve, deny, claim and status need only the
/// ACL on their path, and then check the caller against the configuration's requesters or approvers.
extension SystemBackend {
    static let breakGlassPaths: [Path<SystemBackend>] = [
        Path("break-glass/config/", list: SystemBackend.listBreakGlassConfigs),
        Path(
            "break-glass/config/{name}",
            fields: BreakGlassConfig.fields,
            read: SystemBackend.readBreakGlassConfig,
            write: SystemBackend.writeBreakGlassConfig,
            delete: SystemBackend.deleteBreakGlassConfig
        ),
        Path(
            "break-glass/activate/{name}",
            fields: [.string("reason"), .duration("ttl")],
            write: SystemBackend.activateBreakGlass
        ),
        Path("break-glass/approve/{id}", write: SystemBackend.approveBreakGlass),
        Path("break-glass/deny/{id}", write: SystemBackend.denyBreakGlass),
        Path("break-glass/claim/{id}", write: SystemBackend.claimBreakGlass),
        Path("break-glass/status/{id}", read: SystemBackend.breakGlassStatus),
        Path("break-glass/pending/", list: SystemBackend.listPendingBreakGlass),
        Path("break-glass/revoke/{id}", write: SystemBackend.revokeBreakGlass),
        Path("break-glass/report/", list: SystemBackend.listBreakGlassReports),
        Path("break-glass/report/{id}", read: SystemBackend.breakGlassReport),
    ]

    /// The sudo paths of break-glass and the event bus, for ``specialPaths``.
    static let breakGlassRootPaths = [
        "break-glass/config", "break-glass/config/*", "break-glass/report", "break-glass/report/*",
        "break-glass/revoke/*", "events/recent",
    ]

    func listBreakGlassConfigs(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try core.barrier.list(BreakGlassLedger.configPrefix)
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .strings(keys)])
    }

    func readBreakGlassConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        try BreakGlassConfig.checkName(name)
        guard let config = try core.breakGlassConfig(name) else { throw Core.noSuchConfig(name) }
        return Response(data: config.readData)
    }

    func writeBreakGlassConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        try BreakGlassConfig.checkName(name)
        var config = try core.breakGlassConfig(name) ?? BreakGlassConfig(name: name)
        try config.apply(request.fields)
        var warnings: [String] = []
        for policy in config.policies + config.requesterPolicies + config.approverPolicies
        where policy != "default" && policy != "root" {
            if try core.policies.get(policy) == nil {
                warnings.append("policy \"\(policy)\" does not exist yet; it grants nothing until it is written")
            }
        }
        for id in config.requesterEntityIDs + config.approverEntityIDs {
            if try core.identity.entity(id: id) == nil { warnings.append("entity \"\(id)\" does not exist yet") }
        }
        try core.barrier.put(BreakGlassLedger.configPrefix + name, config.json.serialized())
        return warnings.isEmpty ? .noContent : Response(warnings: Array(Set(warnings)).sorted())
    }

    func deleteBreakGlassConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        try BreakGlassConfig.checkName(name)
        try core.barrier.delete(BreakGlassLedger.configPrefix + name)
        return .noContent
    }

    func activateBreakGlass(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.activateBreakGlass(
            name: request.capture("name"),
            reason: request.fields.string("reason"),
            ttl: request.fields.seconds("ttl"),
            caller: try TokenBackend.callerEntry(request),
            now: request.now
        )
    }

    func approveBreakGlass(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.approveBreakGlass(
            request.capture("id"),
            caller: try TokenBackend.callerEntry(request),
            now: request.now
        )
    }

    func denyBreakGlass(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.denyBreakGlass(request.capture("id"), caller: try TokenBackend.callerEntry(request), now: request.now)
    }

    func claimBreakGlass(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.claimBreakGlass(request.capture("id"), caller: try TokenBackend.callerEntry(request), now: request.now)
    }

    /// The request's status, for its requester and the configuration's approvers (and root).
    func breakGlassStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = request.capture("id")
        let caller = try TokenBackend.callerEntry(request)
        guard let found = try core.breakGlassActivation(id) else { throw Core.noSuchRequest(id) }
        var allowed = caller.isRoot || BreakGlassPerson(caller, time: request.now).isSame(as: found.requester)
        if !allowed, let config = try core.breakGlassConfig(found.name) {
            allowed = try core.breakGlassMatches(
                caller,
                policies: config.approverPolicies,
                entityIDs: config.approverEntityIDs
            )
        }
        guard allowed else {
            throw CofferError(
                .permissionDenied,
                "only the requester or an approver of break-glass configuration \"\(found.name)\" can read this request"
            )
        }
        return Response(data: found.statusData(now: request.now))
    }

    /// The open requests the caller may approve (pending, inside their window), with name, requester,
    /// reason and approvals in `key_info`: how an approver finds what waits for them. Reads every
    /// stored request (there is no index by status yet).
    func listPendingBreakGlass(_ request: BackendRequest) throws(CofferError) -> Response {
        let caller = try TokenBackend.callerEntry(request)
        var approverOf: [String: Bool] = [:]
        var keys: [String] = []
        var info: [String: JSONValue] = [:]
        for id in try core.barrier.list(BreakGlassLedger.requestPrefix) {
            guard let a = try core.breakGlassActivation(id), a.status(now: request.now) == .pending else { continue }
            if approverOf[a.name] == nil {
                let config = try core.breakGlassConfig(a.name)
                approverOf[a.name] =
                    try config.map { (c) throws(CofferError) in
                        try core.breakGlassMatches(caller, policies: c.approverPolicies, entityIDs: c.approverEntityIDs)
                    } ?? false
            }
            guard caller.isRoot || approverOf[a.name] == true else { continue }
            keys.append(id)
            info[id] = [
                "name": .string(a.name), "requester": .string(a.requester.displayName), "reason": .string(a.reason),
                "approvals": .int(a.approvals.count), "approvals_required": .int(a.approvalsRequired),
                "request_expire_time": .string(a.requestExpireTime.rfc3339),
            ]
        }
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .strings(keys), "key_info": .object(info)])
    }

    func revokeBreakGlass(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.revokeBreakGlass(request.capture("id"), now: request.now)
    }

    /// The request ids, with each one's name, status, requester and request time in `key_info`.
    func listBreakGlassReports(_ request: BackendRequest) throws(CofferError) -> Response {
        let ids = try core.barrier.list(BreakGlassLedger.requestPrefix)
        guard !ids.isEmpty else { return .notFound }
        var info: [String: JSONValue] = [:]
        for id in ids {
            guard let a = try core.breakGlassActivation(id) else { continue }
            info[id] = [
                "name": .string(a.name), "status": .string(a.status(now: request.now).rawValue),
                "requester": .string(a.requester.displayName), "request_time": .string(a.requestTime.rfc3339),
            ]
        }
        return Response(data: ["keys": .strings(ids), "key_info": .object(info)])
    }

    func breakGlassReport(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = request.capture("id")
        guard let found = try core.breakGlassActivation(id) else { throw Core.noSuchRequest(id) }
        return Response(data: found.reportData(now: request.now))
    }
}
