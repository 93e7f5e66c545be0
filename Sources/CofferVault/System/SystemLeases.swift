package import CofferCore
package import CofferFramework

/// `sys/leases/*`: look up, list, renew and revoke leases (LeaseManager.swift), with OpenBao's
/// paths, bodies, statuses and error texts (docs/leases.md). Listing, `revoke-prefix` and
/// `revoke-force` need `sudo` (SystemBackend.specialPaths).
extension SystemBackend {
    static let leasePaths: [Path<SystemBackend>] = [
        Path("leases/lookup", fields: [.string("lease_id")], write: SystemBackend.lookupLease),
        Path("leases/lookup/{prefix*}", list: SystemBackend.listLeases),
        Path(
            "leases/renew/{lease_id*}",
            fields: [.string("lease_id"), .duration("increment")],
            write: SystemBackend.renewLease
        ),
        Path(
            "leases/revoke/{lease_id*}",
            fields: [.string("lease_id"), .bool("sync")],
            write: SystemBackend.revokeLease
        ),
        Path(
            "leases/revoke-prefix/{prefix+}",
            fields: [.bool("sync"), .string("prefix")],
            write: SystemBackend.revokeLeasePrefix
        ),
        Path("leases/revoke-force/{prefix+}", write: SystemBackend.forceRevokeLeases),
        Path("leases/tidy", write: SystemBackend.tidyLeases),
        Path("leases/count", fields: [.string("type")], read: SystemBackend.countLeases),
        Path("leases", fields: [.string("type")], read: SystemBackend.listFailingLeases),
    ]

    /// OpenBao answers these only for `type=irrevocable`: here the leases whose revocation keeps
    /// failing (still retried, never given up).
    private static func irrevocable(_ request: BackendRequest) throws(CofferError) {
        guard request.fields.string("type") == "irrevocable" else {
            throw CofferError(.notFound, "type must be \"irrevocable\"")
        }
    }

    func countLeases(_ request: BackendRequest) throws(CofferError) -> Response {
        try Self.irrevocable(request)
        let failing = try core.leases.failing()
        var counts: [String: JSONValue] = [:]
        for lease in failing { counts[lease.mountAccessor] = .int((counts[lease.mountAccessor]?.intValue ?? 0) + 1) }
        return Response(data: ["counts": .object(counts), "lease_count": .int(failing.count)])
    }

    func listFailingLeases(_ request: BackendRequest) throws(CofferError) -> Response {
        try Self.irrevocable(request)
        let failing = try core.leases.failing()
        return Response(data: [
            "lease_count": .int(failing.count),
            "leases": .array(
                failing.map {
                    ["lease_id": .string($0.id), "mount_id": .string($0.mountAccessor), "error": .string($0.error)]
                }
            ),
        ])
    }

    /// The lease id from the path (`leases/renew/<id>`) or else the body.
    private static func leaseID(_ request: BackendRequest) throws(CofferError) -> String {
        let id =
            request.capture("lease_id").isEmpty
            ? (request.fields.string("lease_id") ?? "") : request.capture("lease_id")
        guard !id.isEmpty else { throw CofferError.invalid("lease_id must be specified") }
        return id
    }

    func lookupLease(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: try core.leases.lookup(try Self.leaseID(request), now: request.now))
    }

    func listLeases(_ request: BackendRequest) throws(CofferError) -> Response {
        var prefix = request.capture("prefix")
        if !prefix.isEmpty, !prefix.hasSuffix("/") { prefix += "/" }
        let keys = try core.leases.list(prefix: prefix)
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func renewLease(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = try Self.leaseID(request)
        let (ttl, warnings) = try core.leases.renew(
            id,
            increment: request.fields.seconds("increment") ?? 0,
            now: request.now
        )
        var response = Response(warnings: warnings)
        response.outcome = .ok
        response.leaseID = id
        response.leaseDuration = ttl
        response.renewable = true
        return response
    }

    /// Sync (the API's default) answers 204 once the secret is gone, or 400 with the backend's error
    /// (the lease stays and is retried); `sync: false` (what the CLI sends) queues it: 202.
    func revokeLease(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = try Self.leaseID(request)
        guard request.fields.bool("sync") ?? true else {
            try core.leases.scheduleRevocation(prefix: id, exact: true, now: request.now)
            return .accepted
        }
        if let error = try core.leases.revoke(id, now: request.now) {
            throw CofferError.invalid("failed to revoke entry: \(error.message)")
        }
        return .noContent
    }

    func revokeLeasePrefix(_ request: BackendRequest) throws(CofferError) -> Response {
        let prefix = request.capture("prefix")
        guard request.fields.bool("sync") ?? true else {
            try core.leases.scheduleRevocation(prefix: prefix, exact: false, now: request.now)
            return .accepted
        }
        let failed = try core.leases.revokePrefix(prefix, now: request.now)
        if let first = failed.first {
            throw CofferError.invalid(
                "failed to revoke \(failed.count) lease(s) under \(prefix), kept and retried; the first, \(first.id): \(first.error.message)"
            )
        }
        return .noContent
    }

    /// Deletes the leases whatever their backend says. Beyond OpenBao, which answers 204 and only
    /// logs it: the leases whose secret could not be revoked are listed, since what they stood for
    /// (a database user) still exists and someone has to remove it.
    func forceRevokeLeases(_ request: BackendRequest) throws(CofferError) -> Response {
        let failed = try core.leases.revokePrefix(request.capture("prefix"), now: request.now, force: true)
        guard !failed.isEmpty else { return .noContent }
        return Response(
            data: [
                "left_behind": .array(
                    failed.map { ["lease_id": .string($0.id), "error": .string($0.error.message)] }
                )
            ],
            warnings: [
                "\(failed.count) lease(s) were deleted although their backend could not revoke them: what they stood for (a database user, a certificate) still exists; see left_behind"
            ]
        )
    }

    func tidyLeases(_ request: BackendRequest) throws(CofferError) -> Response {
        let (scanned, revoked) = try core.leases.tidy(now: request.now)
        var response = Response(
            data: ["leases_scanned": .int(scanned), "leases_revoked": .int(revoked)],
            warnings: [
                "Tidy operation successfully started. Any information from the operation will be printed to OpenBao's server logs."
            ]
        )
        response.outcome = .status(202)
        return response
    }
}
