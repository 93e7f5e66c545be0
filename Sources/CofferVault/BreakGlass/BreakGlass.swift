package import CofferAudit
package import CofferCore
import Synchronization

/// Break-glass access (issue 19, docs/break-glass.md): a configured emergency policy set that an
/// allowed requester activates with a reason, optionally approved by N approvers, granting an
/// orphan token that ends with its time box and cannot be renewed. Every request made with it is
/// audited with a marker and listed (up to ``BreakGlassActivation/maximumUses``) in the report;
/// activation, approval, use and the token's end are published on the event bus, and the end is
/// written to the audit log though no request causes it.
///
/// Storage, all in the barrier: `sys/break-glass/config/<name>` (``BreakGlassConfig``) and
/// `sys/break-glass/request/<id>` (``BreakGlassActivation``). Nothing is cached: every step reads
/// storage, and only break-glass tokens ever reach this code from the request path.
///
/// Locking: ``writes`` serialises read-change-write of activations. It is taken inside the token
/// store's lock (the token-ended hook) and never held while calling the token store.
package final class BreakGlassLedger: Sendable {
    static let configPrefix = "sys/break-glass/config/"
    static let requestPrefix = "sys/break-glass/request/"
    /// The token metadata that marks a break-glass token (and its children); also in its audit records.
    package static let idKey = "break_glass_id"
    package static let nameKey = "break_glass_name"
    package static let reasonKey = "break_glass_reason_sha256"
    static let metaKeys = [idKey, nameKey, reasonKey]

    let writes = Mutex(())

    init() {}
}

extension Core {
    // MARK: Storage

    func breakGlassConfig(_ name: String) throws(CofferError) -> BreakGlassConfig? {
        guard let bytes = try barrier.get(BreakGlassLedger.configPrefix + name) else { return nil }
        guard let json = try? JSONValue.parse(bytes) else {
            throw CofferError(.integrity, "the stored break-glass configuration \(name) is not valid JSON")
        }
        return try BreakGlassConfig(json: json)
    }

    func breakGlassActivation(_ id: String) throws(CofferError) -> BreakGlassActivation? {
        guard Self.plausibleID(id), let bytes = try barrier.get(BreakGlassLedger.requestPrefix + id) else {
            return nil
        }
        guard let json = try? JSONValue.parse(bytes) else {
            throw CofferError(.integrity, "the stored break-glass request \(id) is not valid JSON")
        }
        return try BreakGlassActivation(json: json)
    }

    /// Request ids are UUIDs; anything else is not looked up (and is not a storage path).
    static func plausibleID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64
            && id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || $0 == 0x2D }
    }

    func storeBreakGlass(_ activation: BreakGlassActivation) throws(CofferError) {
        try barrier.put(BreakGlassLedger.requestPrefix + activation.id, activation.json.serialized())
    }

    /// Applies `change` to the stored activation `id` under the ledger's lock and stores it; returns
    /// the result. Throws not-found when there is no such request.
    @discardableResult
    func updateBreakGlass(
        _ id: String,
        _ change: (inout BreakGlassActivation) throws(CofferError) -> Void
    ) throws(CofferError) -> BreakGlassActivation {
        let result: Result<BreakGlassActivation, CofferError> = breakGlass.writes.withLock { _ in
            do throws(CofferError) {
                guard var activation = try breakGlassActivation(id) else { throw Self.noSuchRequest(id) }
                let before = activation
                try change(&activation)
                if activation != before { try storeBreakGlass(activation) }
                return .success(activation)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    static func noSuchRequest(_ id: String) -> CofferError {
        CofferError(.notFound, "no break-glass request with id \"\(id)\"")
    }

    static func noSuchConfig(_ name: String) -> CofferError {
        CofferError(.notFound, "no break-glass configuration named \"\(name)\"")
    }

    // MARK: Who may do what

    /// Refuses tokens that cannot take part: batch tokens (no accessor to know them by later) and
    /// break-glass tokens themselves (no chaining one emergency into another).
    func checkBreakGlassParticipant(_ caller: TokenEntry) throws(CofferError) {
        if caller.breakGlass {
            throw CofferError(.permissionDenied, "a break-glass token cannot request, approve or claim break-glass")
        }
        if caller.batch {
            throw CofferError.invalid(
                "break-glass needs a service token; batch tokens cannot request, approve or claim"
            )
        }
    }

    /// Whether `caller` has one of `policies` (on its token or through its identity) or is one of
    /// `entityIDs`.
    func breakGlassMatches(_ caller: TokenEntry, policies: [String], entityIDs: [String]) throws(CofferError) -> Bool {
        if !caller.entityID.isEmpty, entityIDs.contains(caller.entityID) { return true }
        guard !policies.isEmpty else { return false }
        var held = Set(caller.policies)
        if !caller.entityID.isEmpty { held.formUnion(try identity.policies(entityID: caller.entityID)) }
        return policies.contains { held.contains($0) }
    }

    /// The hashes of `hash` and every token above it (at most 1000 levels: enough to tell whether
    /// one token descends from another).
    func tokenLineage(_ hash: String) throws(CofferError) -> Set<String> {
        var out: Set<String> = []
        var current = hash
        while !current.isEmpty, out.count < 1000, out.insert(current).inserted {
            guard let entry = try tokens.entry(hash: current) else { break }
            current = entry.parentHash
        }
        return out
    }

    // MARK: Activation

    /// `sys/break-glass/activate/<name>`: with no approvals required, the token at once; otherwise
    /// a pending request whose id approvers approve and the requester claims.
    func activateBreakGlass(
        name: String,
        reason rawReason: String?,
        ttl askedTTL: Int64?,
        caller: TokenEntry,
        now: Timestamp
    ) throws(CofferError) -> Response {
        try BreakGlassConfig.checkName(name)
        try checkBreakGlassParticipant(caller)
        guard let config = try breakGlassConfig(name) else { throw Self.noSuchConfig(name) }
        let reason = (rawReason ?? "").trimmingSpaces()
        guard !reason.isEmpty else {
            throw CofferError.invalid(
                "reason is required: say why emergency access is needed (a sentence or a ticket reference)"
            )
        }
        guard reason.utf8.count <= BreakGlassActivation.maximumReasonLength else {
            throw CofferError.invalid(
                "reason is longer than \(BreakGlassActivation.maximumReasonLength) bytes; keep it to a sentence or a ticket reference"
            )
        }
        var ttl = config.maxTTL
        if let askedTTL, askedTTL > 0 {
            guard askedTTL <= config.maxTTL else {
                throw CofferError.invalid(
                    "ttl \(VaultDuration.formatShort(askedTTL)) is longer than the time box of break-glass configuration \"\(name)\" (max_ttl \(VaultDuration.formatShort(config.maxTTL)))"
                )
            }
            ttl = askedTTL
        }
        guard try breakGlassMatches(caller, policies: config.requesterPolicies, entityIDs: config.requesterEntityIDs)
        else {
            throw CofferError(
                .permissionDenied,
                "this token may not activate break-glass configuration \"\(name)\": it has none of its requester_policies and its entity is not one of its requester_entity_ids"
            )
        }
        var activation = BreakGlassActivation(
            id: Random.uuid(),
            config: config,
            reason: reason,
            ttl: ttl,
            requester: BreakGlassPerson(caller, time: now),
            now: now
        )
        guard config.approvalsRequired > 0 else {
            activation.status = .claiming
            try storeBreakGlass(activation)
            do {
                return try issueBreakGlass(activation.id, now: now)
            } catch {
                try? barrier.delete(BreakGlassLedger.requestPrefix + activation.id)
                throw error
            }
        }
        try storeBreakGlass(activation)
        publishBreakGlass("break-glass/requested", activation, now: now)
        var response = Response(data: activation.statusData(now: now))
        response.warnings = [
            "break-glass request \(activation.id) needs \(config.approvalsRequired) approval(s) at sys/break-glass/approve/\(activation.id); then claim the token at sys/break-glass/claim/\(activation.id)"
        ]
        return response
    }

    /// Makes the token for an activation in `claiming` and marks it active; answers it as a login
    /// would. On failure the activation goes back to approved (or, when it was never pending, the
    /// caller deletes it).
    private func issueBreakGlass(_ id: String, now: Timestamp) throws(CofferError) -> Response {
        guard let activation = try breakGlassActivation(id), activation.status == .claiming else {
            throw CofferError(.conflict, "break-glass request \(id) is not being claimed")
        }
        var policies = Set(activation.policies)
        policies.insert("default")
        let reasonHash = String(Hex.encode(Digest.sha256(Array(activation.reason.utf8))).prefix(16))
        let (token, entry) = try tokens.create { hash, accessor in
            var entry = TokenEntry(
                idHash: hash,
                accessor: accessor,
                parentHash: "",
                policies: policies.sorted(),
                meta: [
                    BreakGlassLedger.idKey: activation.id, BreakGlassLedger.nameKey: activation.name,
                    BreakGlassLedger.reasonKey: reasonHash,
                ],
                displayName: "break-glass-" + activation.name,
                path: "sys/break-glass/activate/" + activation.name,
                now: now,
                ttl: activation.ttl,
                explicitMaxTTL: activation.ttl,
                numUses: 0,
                period: 0,
                renewable: false
            )
            entry.breakGlass = true
            return entry
        }
        let active: BreakGlassActivation
        do {
            active = try updateBreakGlass(id) { (a) throws(CofferError) in
                a.status = .active
                a.tokenHash = entry.idHash
                a.issueTime = now
                a.expireTime = entry.expireTime
            }
        } catch {
            try? tokens.revoke(hash: entry.idHash)
            throw error
        }
        publishBreakGlass("break-glass/activated", active, now: now)
        var response = Response(data: active.statusData(now: now), auth: authInfo(token: token, entry, now: now))
        response.warnings = [
            "this break-glass token ends at \(entry.expireTime?.rfc3339 ?? "?") and cannot be renewed; every request made with it is audited and reported"
        ]
        return response
    }

    // MARK: Approval, denial, claim, revocation

    /// `sys/break-glass/approve/<id>`: one approval by an approver who is not the requester and has
    /// not approved it yet. At the configuration's count the request becomes claimable.
    func approveBreakGlass(_ id: String, caller: TokenEntry, now: Timestamp) throws(CofferError) -> Response {
        try checkBreakGlassParticipant(caller)
        guard let found = try breakGlassActivation(id) else { throw Self.noSuchRequest(id) }
        guard let config = try breakGlassConfig(found.name) else {
            throw CofferError.invalid(
                "break-glass configuration \"\(found.name)\" was deleted; its requests can no longer be approved"
            )
        }
        guard try breakGlassMatches(caller, policies: config.approverPolicies, entityIDs: config.approverEntityIDs)
        else {
            throw CofferError(
                .permissionDenied,
                "this token is not an approver of break-glass configuration \"\(found.name)\""
            )
        }
        let approver = BreakGlassPerson(caller, time: now)
        // A token made by (or above) the requester's token is the requester's own.
        let below = try tokenLineage(approver.tokenHash).contains(found.requester.tokenHash)
        let above = try tokenLineage(found.requester.tokenHash).contains(approver.tokenHash)
        if approver.isSame(as: found.requester) || below || above {
            throw CofferError(.permissionDenied, "a requester cannot approve their own break-glass request")
        }
        let approved = try updateBreakGlass(id) { (a) throws(CofferError) in
            try Self.checkOpen(a, for: "approved", now: now)
            guard a.status == .pending else {
                throw CofferError.invalid(
                    "break-glass request \(id) already has its \(a.approvalsRequired) approval(s); the requester can claim it"
                )
            }
            guard !a.approvals.contains(where: { $0.isSame(as: approver) }) else {
                throw CofferError.invalid("you have already approved break-glass request \(id); another approver must")
            }
            a.approvals.append(approver)
            if a.approvals.count >= a.approvalsRequired { a.status = .approved }
        }
        publishBreakGlass("break-glass/approved", approved, now: now, extra: ["approver": approver.reportData])
        return Response(data: approved.statusData(now: now))
    }

    /// Throws unless `a` is pending or approved and inside its window.
    static func checkOpen(_ a: BreakGlassActivation, for action: String, now: Timestamp) throws(CofferError) {
        switch a.status(now: now) {
        case .pending, .approved: return
        case .lapsed:
            throw CofferError.invalid(
                "break-glass request \(a.id) lapsed at \(a.requestExpireTime.rfc3339); activate again"
            )
        case let status:
            throw CofferError.invalid("break-glass request \(a.id) is \(status.rawValue); it cannot be \(action)")
        }
    }

    /// `sys/break-glass/deny/<id>`: an approver turns a request down, or the requester withdraws it.
    func denyBreakGlass(_ id: String, caller: TokenEntry, now: Timestamp) throws(CofferError) -> Response {
        try checkBreakGlassParticipant(caller)
        guard let found = try breakGlassActivation(id) else { throw Self.noSuchRequest(id) }
        let person = BreakGlassPerson(caller, time: now)
        var allowed = person.isSame(as: found.requester)
        if !allowed, let config = try breakGlassConfig(found.name) {
            allowed = try breakGlassMatches(
                caller,
                policies: config.approverPolicies,
                entityIDs: config.approverEntityIDs
            )
        }
        guard allowed else {
            throw CofferError(
                .permissionDenied,
                "only the requester or an approver of break-glass configuration \"\(found.name)\" can deny this request"
            )
        }
        let denied = try updateBreakGlass(id) { (a) throws(CofferError) in
            try Self.checkOpen(a, for: "denied", now: now)
            a.status = .denied
            a.deniedBy = person
        }
        publishBreakGlass("break-glass/denied", denied, now: now, extra: ["denied_by": person.reportData])
        return Response(data: denied.statusData(now: now))
    }

    /// `sys/break-glass/claim/<id>`: the requester takes the token of an approved request, once.
    func claimBreakGlass(_ id: String, caller: TokenEntry, now: Timestamp) throws(CofferError) -> Response {
        try checkBreakGlassParticipant(caller)
        let person = BreakGlassPerson(caller, time: now)
        try updateBreakGlass(id) { (a) throws(CofferError) in
            guard person.isSame(as: a.requester) else {
                throw CofferError(.permissionDenied, "only the requester of break-glass request \(id) can claim it")
            }
            if a.status == .active || a.status == .expired || a.status == .revoked || a.status == .claiming {
                throw CofferError.invalid("break-glass request \(id) was already claimed; a token is issued once")
            }
            try Self.checkOpen(a, for: "claimed", now: now)
            guard a.status == .approved else {
                throw CofferError.invalid(
                    "break-glass request \(id) has \(a.approvals.count) of \(a.approvalsRequired) approval(s); it cannot be claimed yet"
                )
            }
            guard try breakGlassConfig(a.name) != nil else {
                throw CofferError.invalid(
                    "break-glass configuration \"\(a.name)\" was deleted; its requests can no longer be claimed"
                )
            }
            a.status = .claiming
        }
        do {
            return try issueBreakGlass(id, now: now)
        } catch {
            try? updateBreakGlass(id) { (a) throws(CofferError) in if a.status == .claiming { a.status = .approved } }
            throw error
        }
    }

    /// `sys/break-glass/revoke/<id>` (sudo): ends an active token before its time box.
    func revokeBreakGlass(_ id: String, now: Timestamp) throws(CofferError) -> Response {
        guard let found = try breakGlassActivation(id) else { throw Self.noSuchRequest(id) }
        guard found.status == .active else {
            throw CofferError.invalid(
                "break-glass request \(id) is \(found.status(now: now).rawValue); no token to revoke"
            )
        }
        // The token-ended hook marks it revoked; a token already gone is marked here.
        if try tokens.revoke(hash: found.tokenHash) == 0 {
            try updateBreakGlass(id) { (a) throws(CofferError) in
                guard a.status == .active else { return }
                a.status = .revoked
                a.endTime = now
            }
        }
        leases.drainRevokedTokens(now: now)
        guard let after = try breakGlassActivation(id) else { throw Self.noSuchRequest(id) }
        return Response(data: after.statusData(now: now))
    }

    // MARK: Use and end of the token

    /// Told of every request a break-glass token (or a child of one) made, after its audit records:
    /// listed in the report (up to the cap) and published. Best effort: the audit log is the record.
    func breakGlassUsed(_ caller: TokenEntry, _ record: AuditRecord) {
        guard let id = caller.meta[BreakGlassLedger.idKey] else { return }
        let status = record.response?.status ?? record.error?.code.httpStatus ?? 0
        let use = BreakGlassUse(
            time: record.time,
            operation: record.request.operation.rawValue,
            path: record.request.path,
            status: status
        )
        guard
            let updated = try? updateBreakGlass(
                id,
                { (a) throws(CofferError) in
                    a.useCount += 1
                    if a.uses.count < BreakGlassActivation.maximumUses { a.uses.append(use) }
                }
            )
        else { return }
        publishBreakGlass(
            "break-glass/used",
            updated,
            now: record.time,
            extra: [
                "operation": .string(use.operation), "path": .string(use.path), "status": .int(status),
                "display_name": .string(caller.displayName),
            ]
        )
    }

    /// Told of every break-glass token revoked (inside the token store's lock): when it is the
    /// activation's own token, the activation ends (expired when its time box is over, else
    /// revoked), an audit record `sys/break-glass/expire/<id>` (or `revoke/<id>`) is written with
    /// the marker, and an event is published. Children of the token end silently with it.
    func breakGlassTokenEnded(_ entry: TokenEntry) {
        guard let id = entry.meta[BreakGlassLedger.idKey] else { return }
        let now = clock.now()
        let expired = entry.isExpired(now: now)
        var ended = false
        guard
            let activation = try? updateBreakGlass(
                id,
                { (a) throws(CofferError) in
                    guard a.tokenHash == entry.idHash, a.status == .active else { return }
                    a.status = expired ? .expired : .revoked
                    a.endTime = now
                    ended = true
                }
            ), ended
        else { return }
        var caller = entry.auditCaller
        caller.breakGlass?.event = expired ? "expired" : "revoked"
        let path = "sys/break-glass/" + (expired ? "expire/" : "revoke/") + id
        var record = AuditRecord(request: Request(.update, path), caller: caller, time: now)
        var response = Response(data: ["request_id": .string(id), "name": .string(activation.name)])
        response.mountType = "system"
        record.response = response
        record.mountType = "system"
        audit.logInternal(record)
        publishBreakGlass(expired ? "break-glass/expired" : "break-glass/revoked", activation, now: now)
    }

    /// Publishes a break-glass event: ids, names and times only (never a token, accessor or reason).
    func publishBreakGlass(
        _ type: String,
        _ a: BreakGlassActivation,
        now: Timestamp,
        extra: [String: JSONValue] = [:]
    ) {
        var data: [String: JSONValue] = [
            "request_id": .string(a.id), "name": .string(a.name), "status": .string(a.status.rawValue),
            "requester": .string(a.requester.displayName), "requester_entity_id": .string(a.requester.entityID),
            "approvals": .int(a.approvals.count), "approvals_required": .int(a.approvalsRequired),
        ]
        if let expireTime = a.expireTime { data["expire_time"] = .string(expireTime.rfc3339) }
        data.merge(extra) { _, new in new }
        events.publish(type, data: data, time: now)
    }
}
