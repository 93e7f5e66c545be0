package import CofferCore

/// Someone who took part in a break-glass request: whoever asked, approved or denied. Known by the
/// identity entity of their token when it has one, else by the token itself (its accessor).
package struct BreakGlassPerson: Sendable, Equatable {
    package var entityID: String
    package var accessor: String
    package var displayName: String
    /// The token's salted hash: to tell whether another token descends from this one. Never shown.
    package var tokenHash: String
    package var time: Timestamp

    init(_ entry: TokenEntry, time: Timestamp) {
        self.entityID = entry.entityID
        self.accessor = entry.accessor
        self.displayName = entry.displayName
        self.tokenHash = entry.idHash
        self.time = time
    }

    /// The same person: the same entity, or (neither having one) the same token.
    func isSame(as other: BreakGlassPerson) -> Bool {
        if !entityID.isEmpty || !other.entityID.isEmpty { return entityID == other.entityID }
        return accessor == other.accessor
    }

    var json: JSONValue {
        [
            "entity_id": .string(entityID), "accessor": .string(accessor), "display_name": .string(displayName),
            "token_hash": .string(tokenHash), "time": .int(time.nanoseconds),
        ]
    }

    init(json: JSONValue) {
        entityID = json["entity_id"]?.stringValue ?? ""
        accessor = json["accessor"]?.stringValue ?? ""
        displayName = json["display_name"]?.stringValue ?? ""
        tokenHash = json["token_hash"]?.stringValue ?? ""
        time = Timestamp(nanoseconds: Int64(json["time"]?.intValue ?? 0))
    }

    /// What a report shows: no accessor, no hash.
    var reportData: JSONValue {
        ["entity_id": .string(entityID), "display_name": .string(displayName), "time": .string(time.rfc3339)]
    }
}

/// One request made with a break-glass token, as the report lists it.
package struct BreakGlassUse: Sendable, Equatable {
    package var time: Timestamp
    package var operation: String
    package var path: String
    package var status: Int

    var json: JSONValue {
        [
            "time": .int(time.nanoseconds), "operation": .string(operation), "path": .string(path),
            "status": .int(status),
        ]
    }

    init(time: Timestamp, operation: String, path: String, status: Int) {
        self.time = time
        self.operation = operation
        self.path = path
        self.status = status
    }

    init(json: JSONValue) {
        time = Timestamp(nanoseconds: Int64(json["time"]?.intValue ?? 0))
        operation = json["operation"]?.stringValue ?? ""
        path = json["path"]?.stringValue ?? ""
        status = json["status"]?.intValue ?? 0
    }

    var reportData: JSONValue {
        ["time": .string(time.rfc3339), "operation": .string(operation), "path": .string(path), "status": .int(status)]
    }
}

/// One break-glass activation, from the request to the token's end: stored at
/// `sys/break-glass/request/<id>`, the source of `sys/break-glass/status/<id>` and the report.
package struct BreakGlassActivation: Sendable, Equatable {
    package enum Status: String, Sendable {
        /// Waiting for approvals.
        case pending
        /// Approved; waiting for the requester's claim.
        case approved
        /// Being claimed right now (the token is being made).
        case claiming
        /// The token is out.
        case active
        /// The token reached the end of its time box.
        case expired
        /// The token was revoked before its time box ended.
        case revoked
        /// An approver (or the requester) turned the request down.
        case denied
        /// Nobody claimed (or approved) it within the request window.
        case lapsed
    }

    /// The most uses the report keeps per activation; later ones are counted, not listed.
    package static let maximumUses = 100
    /// The longest reason accepted, in bytes: a reason is a sentence or a ticket, not a document.
    package static let maximumReasonLength = 1024

    package var id: String
    package var name: String
    package var status: Status
    package var reason: String
    /// The token's TTL, chosen at activation (the configuration's max_ttl unless `ttl` asked less).
    package var ttl: Int64
    /// The configuration's policies when the request was made (a later change does not widen it).
    package var policies: [String]
    package var approvalsRequired: Int
    package var requester: BreakGlassPerson
    package var requestTime: Timestamp
    /// When a pending or approved request lapses.
    package var requestExpireTime: Timestamp
    package var approvals: [BreakGlassPerson] = []
    package var deniedBy: BreakGlassPerson?
    package var issueTime: Timestamp?
    package var expireTime: Timestamp?
    /// When the token was revoked (by its expiry or by hand).
    package var endTime: Timestamp?
    /// The token's salted hash (its storage id), to revoke it; never shown.
    package var tokenHash = ""
    package var uses: [BreakGlassUse] = []
    /// Every request made with the token, listed or not.
    package var useCount = 0

    init(
        id: String,
        config: BreakGlassConfig,
        reason: String,
        ttl: Int64,
        requester: BreakGlassPerson,
        now: Timestamp
    ) {
        self.id = id
        self.name = config.name
        self.status = .pending
        self.reason = reason
        self.ttl = ttl
        self.policies = config.policies
        self.approvalsRequired = config.approvalsRequired
        self.requester = requester
        self.requestTime = now
        self.requestExpireTime = now.adding(seconds: config.requestTTL)
    }

    var json: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id), "name": .string(name), "status": .string(status.rawValue), "reason": .string(reason),
            "ttl": .int(ttl), "policies": .strings(policies), "approvals_required": .int(approvalsRequired),
            "requester": requester.json, "request_time": .int(requestTime.nanoseconds),
            "request_expire_time": .int(requestExpireTime.nanoseconds), "approvals": .array(approvals.map(\.json)),
            "token_hash": .string(tokenHash), "uses": .array(uses.map(\.json)), "use_count": .int(useCount),
        ]
        if let deniedBy { o["denied_by"] = deniedBy.json }
        if let issueTime { o["issue_time"] = .int(issueTime.nanoseconds) }
        if let expireTime { o["expire_time"] = .int(expireTime.nanoseconds) }
        if let endTime { o["end_time"] = .int(endTime.nanoseconds) }
        return .object(o)
    }

    init(json: JSONValue) throws(CofferError) {
        guard let id = json["id"]?.stringValue, let name = json["name"]?.stringValue,
            let status = json["status"]?.stringValue.flatMap(Status.init(rawValue:)), let requester = json["requester"]
        else {
            throw CofferError(.integrity, "a stored break-glass request is malformed")
        }
        func time(_ key: String) -> Timestamp? {
            json[key]?.intValue.map { Timestamp(nanoseconds: Int64($0)) }
        }
        self.id = id
        self.name = name
        self.status = status
        self.reason = json["reason"]?.stringValue ?? ""
        self.ttl = Int64(json["ttl"]?.intValue ?? 0)
        self.policies = (json["policies"]?.arrayValue ?? []).compactMap(\.stringValue)
        self.approvalsRequired = json["approvals_required"]?.intValue ?? 0
        self.requester = BreakGlassPerson(json: requester)
        self.requestTime = time("request_time") ?? .zero
        self.requestExpireTime = time("request_expire_time") ?? .zero
        self.approvals = (json["approvals"]?.arrayValue ?? []).map(BreakGlassPerson.init(json:))
        self.deniedBy = json["denied_by"].map(BreakGlassPerson.init(json:))
        self.issueTime = time("issue_time")
        self.expireTime = time("expire_time")
        self.endTime = time("end_time")
        self.tokenHash = json["token_hash"]?.stringValue ?? ""
        self.uses = (json["uses"]?.arrayValue ?? []).map(BreakGlassUse.init(json:))
        self.useCount = json["use_count"]?.intValue ?? uses.count
    }

    /// Whether the request can still be approved or claimed at `now`.
    func isOpen(now: Timestamp) -> Bool {
        (status == .pending || status == .approved) && now < requestExpireTime
    }

    /// The status as of `now`: an open request past its window shows as lapsed before anyone
    /// touches it again, and an active one past its box as expired (should the token-ended hook
    /// not have recorded it: the expiration manager has not run yet, or storage failed then).
    func status(now: Timestamp) -> Status {
        if (status == .pending || status == .approved) && now >= requestExpireTime { return .lapsed }
        if status == .active, let expireTime, now >= expireTime { return .expired }
        return status
    }

    /// What `sys/break-glass/status/<id>` shows the requester and the approvers.
    func statusData(now: Timestamp) -> [String: JSONValue] {
        var data: [String: JSONValue] = [
            "request_id": .string(id), "name": .string(name), "status": .string(status(now: now).rawValue),
            "reason": .string(reason), "ttl": .int(ttl), "policies": .strings(policies),
            "approvals_required": .int(approvalsRequired), "approvals": .int(approvals.count),
            "requester": requester.reportData, "request_time": .string(requestTime.rfc3339),
            "request_expire_time": .string(requestExpireTime.rfc3339),
            "approvers": .array(approvals.map(\.reportData)),
        ]
        if let deniedBy { data["denied_by"] = deniedBy.reportData }
        if let issueTime { data["issue_time"] = .string(issueTime.rfc3339) }
        if let expireTime { data["expire_time"] = .string(expireTime.rfc3339) }
        // When the token was revoked: at its expiry (status expired) or by hand (status revoked).
        if let endTime { data["revoke_time"] = .string(endTime.rfc3339) }
        return data
    }

    /// The report: the status and everything done with the token.
    func reportData(now: Timestamp) -> [String: JSONValue] {
        var data = statusData(now: now)
        data["requests"] = .array(uses.map(\.reportData))
        data["request_count"] = .int(useCount)
        data["requests_not_listed"] = .int(max(0, useCount - uses.count))
        data["requests_listed_limit"] = .int(BreakGlassActivation.maximumUses)
        return data
    }
}
