import Foundation
import Synchronization
import Testing

/// Break-glass access (issue 19 item 3, docs/break-glass.md), on the injected clock: the
/// expiration manager's tick is run by hand after the clock is moved.
@Suite struct BreakGlassTests {
    let clock = ManualClock()
    let core: Core
    let root: String
    let unsealKey: [UInt8]
    let dir = TemporaryDirectory()

    static let requesterPolicy = """
        path "sys/break-glass/activate/*" { capabilities = ["update"] }
        path "sys/break-glass/claim/*" { capabilities = ["update"] }
        path "sys/break-glass/status/*" { capabilities = ["read"] }
        path "sys/break-glass/deny/*" { capabilities = ["update"] }
        """
    static let approverPolicy = """
        path "sys/break-glass/approve/*" { capabilities = ["update"] }
        path "sys/break-glass/deny/*" { capabilities = ["update"] }
        path "sys/break-glass/status/*" { capabilities = ["read"] }
        path "sys/break-glass/pending/" { capabilities = ["list"] }
        """
    static let emergencyPolicy = """
        path "echo/*" { capabilities = ["create", "read", "update"] }
        path "auth/token/create" { capabilities = ["update"] }
        path "auth/token/create-orphan" { capabilities = ["update"] }
        path "sys/break-glass/*" { capabilities = ["update", "read"] }
        """

    init() throws {
        let (core, result) = try makeCore(clock: clock)
        self.core = core
        self.root = result.rootToken
        self.unsealKey = result.keys[0].unsafeCopy
        for (name, text) in [
            ("oncall", Self.requesterPolicy), ("approver", Self.approverPolicy), ("emergency", Self.emergencyPolicy),
            ("tokens", #"path "auth/token/create" { capabilities = ["update"] }"#),
            // Every break-glass path, but no rule of any configuration names it.
            ("anypath", #"path "sys/break-glass/*" { capabilities = ["read", "update", "list"] }"#),
        ] {
            try core.call(.update, "sys/policies/acl/" + name, ["policy": .string(text)], token: root)
        }
        try core.call(
            .update,
            "sys/audit/file",
            ["type": "file", "options": ["file_path": .string(auditPath)]],
            token: root
        )
    }

    var auditPath: String { dir.file("audit.log") }

    func token(_ policies: [String], parent: String? = nil) throws -> String {
        let r = try core.call(
            .update,
            "auth/token/create",
            ["policies": .array(policies.map { .string($0) })],
            token: parent ?? root
        )
        return r.auth!.clientToken
    }

    func configure(_ name: String = "db", _ fields: [String: JSONValue] = [:]) throws {
        var data: [String: JSONValue] = ["policies": "emergency", "max_ttl": "2m", "requester_policies": "oncall"]
        data.merge(fields) { _, new in new }
        try core.call(.update, "sys/break-glass/config/" + name, data, token: root)
    }

    func activate(
        _ token: String,
        _ name: String = "db",
        reason: JSONValue? = "INC-1234: primary database is down",
        ttl: JSONValue? = nil
    ) throws -> Response {
        var data: [String: JSONValue] = [:]
        if let reason { data["reason"] = reason }
        if let ttl { data["ttl"] = ttl }
        return try core.call(.update, "sys/break-glass/activate/" + name, data, token: token)
    }

    /// Whether `record` is the response line of a request to `path` that succeeded.
    static func answered(_ record: JSONValue, _ path: String) -> Bool {
        record["request"]?["path"]?.stringValue == path && record["type"] == "response" && record["error"] == ""
    }

    func tick() -> LeaseExpiryReport { core.leases.tick(now: clock.now()) }

    /// The audit log's records once `ready` holds for them (reads reach the file from the device's
    /// writer thread), or after two seconds.
    func auditRecords(until ready: ([JSONValue]) -> Bool = { _ in true }) throws -> [JSONValue] {
        var records: [JSONValue] = []
        for _ in 0..<200 {
            let text = (try? String(contentsOfFile: auditPath, encoding: .utf8)) ?? ""
            records = try text.split(separator: "\n").map { try JSONValue.parse(String($0)) }
            if ready(records) { break }
            usleep(10_000)
        }
        return records
    }

    func report(_ id: String) throws -> [String: JSONValue] {
        try core.call(.read, "sys/break-glass/report/" + id, token: root).data ?? [:]
    }

    // MARK: Activation without approvals

    @Test func activationWithoutApprovalsGivesABoxedOrphanTokenThatCannotBeRenewed() throws {
        try configure()
        let oncall = try token(["oncall"])
        let r = try activate(oncall, ttl: "90s")
        let auth = try #require(r.auth)
        let id = try #require(r.data?["request_id"]?.stringValue)
        #expect(auth.policies == ["default", "emergency"])
        #expect(auth.leaseDuration == 90 && !auth.renewable && auth.orphan)
        #expect(auth.metadata["break_glass_id"] == id && auth.metadata["break_glass_name"] == "db")
        #expect(r.data?["status"] == "active")
        let glass = auth.clientToken

        // It works, within its policies only.
        try core.call(.update, "echo/app", ["k": "v"], token: glass)
        expectError(.permissionDenied) { try core.call(.read, "sys/policies/acl/oncall", token: glass) }
        let me = try #require(try core.call(.read, "auth/token/lookup-self", token: glass).data)
        #expect(me["explicit_max_ttl"] == .int(90) && me["orphan"] == true && me["renewable"] == false)

        // Not renewable: neither by itself nor by root; explicit max TTL is the box anyway.
        expectError(.invalidArgument, containing: "cannot be renewed") {
            try core.call(.update, "auth/token/renew-self", ["increment": "1h"], token: glass)
        }
        expectError(.invalidArgument, containing: "cannot be renewed") {
            try core.call(.update, "auth/token/renew", ["token": .string(glass), "increment": "1h"], token: root)
        }
        // No orphans; children end with it and carry the marker.
        expectError(.invalidArgument, containing: "orphan") {
            try core.call(.update, "auth/token/create-orphan", ["policies": "emergency"], token: glass)
        }
        let child = try core.call(.update, "auth/token/create", ["policies": "emergency", "ttl": "10h"], token: glass)
        #expect(try #require(child.auth).leaseDuration <= 90)
        #expect(child.auth?.metadata["break_glass_id"] == id)
        // Nobody else can put the marker's keys on a token.
        expectError(.invalidArgument, containing: "reserved") {
            try core.call(.update, "auth/token/create", ["meta": ["break_glass_id": .string(id)]], token: root)
        }
        // A break-glass token cannot chain into another emergency.
        expectError(.permissionDenied, containing: "break-glass token cannot") { try activate(glass) }

        // Revoking the requester changes nothing: the token is an orphan.
        try core.call(.update, "auth/token/revoke", ["token": .string(oncall)], token: root)
        try core.call(.read, "echo/app", token: glass)
    }

    @Test func theTokenExpiresByItselfWithAnAuditRecordAndAnEvent() throws {
        try configure()
        let r = try activate(try token(["oncall"]))
        let glass = try #require(r.auth?.clientToken)
        let id = try #require(r.data?["request_id"]?.stringValue)
        let child = try #require(
            try core.call(.update, "auth/token/create", ["policies": "emergency"], token: glass).auth?.clientToken
        )
        try core.call(.update, "echo/x", ["a": "1"], token: glass)

        clock.advance(seconds: 119)
        #expect(tick().tokensExpired == 0)
        try core.call(.read, "echo/x", token: glass)
        clock.advance(seconds: 1)
        #expect(tick().tokensExpired >= 1)
        expectError(.permissionDenied) { try core.call(.read, "echo/x", token: glass) }
        expectError(.permissionDenied) { try core.call(.read, "echo/x", token: child) }

        let records = try auditRecords { records in
            records.filter { Self.answered($0, "echo/x") }.count == 2
        }
        let expiry = records.filter { $0["request"]?["path"]?.stringValue == "sys/break-glass/expire/" + id }
        #expect(expiry.count == 2, "a request and a response line")
        #expect(expiry.first?["break_glass"]?["event"] == "expired")
        #expect(expiry.first?["break_glass"]?["id"] == .string(id))
        #expect(expiry.first?["time"]?.stringValue == clock.now().rfc3339)
        // The requests made with it carry the marker, in the record and in auth.metadata.
        // (The two reads refused after expiry are recorded too, without a caller: not these.)
        let uses = records.filter { Self.answered($0, "echo/x") }
        #expect(uses.count == 2)
        for use in uses {
            #expect(use["break_glass"]?["id"] == .string(id) && use["break_glass"]?["name"] == "db")
            #expect(use["auth"]?["metadata"]?["break_glass_id"] == .string(id))
        }
        // Nothing else is marked.
        #expect(records.filter { $0["break_glass"] != nil }.count == 2 * 3 + 2)

        let types = core.events.recent(typePrefix: "break-glass/").map(\.type)
        #expect(
            types == [
                "break-glass/activated", "break-glass/used", "break-glass/used", "break-glass/used",
                "break-glass/expired",
            ]
        )
        let status = try report(id)
        #expect(status["status"] == "expired")
        #expect(status["revoke_time"]?.stringValue == clock.now().rfc3339)
        #expect(status["expire_time"]?.stringValue == clock.now().rfc3339)
    }

    // MARK: Approvals

    @Test func approvalsAreNeededFromOthersOnceEachAndOnlyTheRequesterClaimsOnce() throws {
        try configure(
            "db",
            ["approvals_required": 2, "approver_policies": "approver"]
        )
        let requester = try token(["oncall", "approver", "tokens"])
        let (a, b, c) = (try token(["approver"]), try token(["approver", "anypath"]), try token(["approver"]))
        let r = try activate(requester)
        #expect(r.auth == nil)
        #expect(r.data?["status"] == "pending" && r.data?["approvals_required"] == .int(2))
        let id = try #require(r.data?["request_id"]?.stringValue)
        let approve = { (token: String) throws -> Response in
            try core.call(.update, "sys/break-glass/approve/" + id, token: token)
        }
        let claim = { (token: String) throws -> Response in
            try core.call(.update, "sys/break-glass/claim/" + id, token: token)
        }

        // Approvers find what waits for them.
        let pending = try core.call(.list, "sys/break-glass/pending", token: a).data ?? [:]
        #expect(pending["keys"] == .array([.string(id)]))
        #expect(pending["key_info"]?[id]?["reason"] == "INC-1234: primary database is down")
        #expect(try core.call(.list, "sys/break-glass/pending", token: try token(["anypath"])).outcome == .notFound)

        expectError(.permissionDenied, containing: "own") { _ = try approve(requester) }
        // A token the requester made is the requester's too.
        let requesterChild = try token(["approver"], parent: requester)
        expectError(.permissionDenied, containing: "own") { _ = try approve(requesterChild) }
        expectError(.permissionDenied, containing: "not an approver") { _ = try approve(try token(["anypath"])) }
        #expect(try approve(a).data?["approvals"] == .int(1))
        expectError(.invalidArgument, containing: "already approved") { _ = try approve(a) }
        expectError(.invalidArgument, containing: "1 of 2") { _ = try claim(requester) }
        #expect(try approve(b).data?["status"] == "approved")
        expectError(.invalidArgument, containing: "already has") { _ = try approve(c) }

        expectError(.permissionDenied, containing: "only the requester") { _ = try claim(b) }
        let claimed = try claim(requester)
        let auth = try #require(claimed.auth)
        #expect(auth.leaseDuration == 120 && auth.metadata["break_glass_id"] == id)
        expectError(.invalidArgument, containing: "already claimed") { _ = try claim(requester) }

        let types = core.events.recent(typePrefix: "break-glass/").map(\.type)
        #expect(
            types == ["break-glass/requested", "break-glass/approved", "break-glass/approved", "break-glass/activated"]
        )
        for event in core.events.recent() {
            #expect(!"\(event.json)".contains(auth.clientToken) && !"\(event.json)".contains(auth.accessor))
        }
        let status = try core.call(.read, "sys/break-glass/status/" + id, token: a).data ?? [:]
        #expect(status["status"] == "active" && status["approvers"]?.arrayValue?.count == 2)
        expectError(.permissionDenied) {
            try core.call(.read, "sys/break-glass/status/" + id, token: try token(["oncall"]))
        }
    }

    @Test func aDeniedRequestCannotBeClaimedAndAnUnclaimedOneLapses() throws {
        try configure("db", ["approvals_required": 1, "approver_policies": "approver", "request_ttl": "10m"])
        let requester = try token(["oncall"])
        let approver = try token(["approver"])
        let first = try #require(try activate(requester).data?["request_id"]?.stringValue)
        try core.call(.update, "sys/break-glass/deny/" + first, token: approver)
        expectError(.invalidArgument, containing: "denied") {
            try core.call(.update, "sys/break-glass/claim/" + first, token: requester)
        }
        expectError(.invalidArgument, containing: "denied") {
            try core.call(.update, "sys/break-glass/approve/" + first, token: approver)
        }

        let second = try #require(try activate(requester).data?["request_id"]?.stringValue)
        try core.call(.update, "sys/break-glass/approve/" + second, token: approver)
        clock.advance(seconds: 600)
        expectError(.invalidArgument, containing: "lapsed") {
            try core.call(.update, "sys/break-glass/claim/" + second, token: requester)
        }
        #expect(try report(second)["status"] == "lapsed")
        #expect(try report(first)["status"] == "denied")

        // A request whose configuration is deleted can no longer be approved or claimed.
        let third = try #require(try activate(requester).data?["request_id"]?.stringValue)
        try core.call(.delete, "sys/break-glass/config/db", token: root)
        expectError(.invalidArgument, containing: "was deleted") {
            try core.call(.update, "sys/break-glass/approve/" + third, token: approver)
        }
        expectError(.notFound, containing: "no break-glass configuration") { try activate(requester) }
    }

    @Test func entitiesAreRequestersAndOnePersonCountsOnceWhateverTheirTokens() throws {
        // Logins through AuthCoreTests' test method: each user gets an entity, each login a token.
        let f = try AuthCoreTests.Fixture()
        for (name, text) in [
            ("anypath", #"path "sys/break-glass/*" { capabilities = ["read", "update"] }"#),
            ("emergency", Self.emergencyPolicy),
        ] {
            try f.core.call(.update, "sys/policies/acl/" + name, ["policy": .string(text)], token: f.root)
        }
        try f.role(["token_policies": ["anypath", "approver-group"]])
        let alice = try f.login("alice")
        let aliceAgain = try f.login("alice")
        let bob = try f.login("bob")
        let carol = try f.login("carol")
        #expect(!alice.entityID.isEmpty && alice.entityID == aliceAgain.entityID && alice.entityID != bob.entityID)
        try f.core.call(
            .update,
            "sys/break-glass/config/db",
            [
                "policies": "emergency", "max_ttl": "5m", "requester_entity_ids": .string(alice.entityID),
                "approvals_required": 1, "approver_policies": "approver-group",
            ],
            token: f.root
        )
        let call = { (path: String, token: String) throws -> Response in
            try f.core.call(.update, path, ["reason": "INC-7"], token: token)
        }
        expectError(.permissionDenied, containing: "may not activate") {
            _ = try call("sys/break-glass/activate/db", bob.clientToken)
        }
        let id = try #require(
            try call("sys/break-glass/activate/db", alice.clientToken).data?["request_id"]?.stringValue
        )
        // Alice's other login is still Alice.
        expectError(.permissionDenied, containing: "own") {
            _ = try call("sys/break-glass/approve/" + id, aliceAgain.clientToken)
        }
        #expect(try call("sys/break-glass/approve/" + id, bob.clientToken).data?["status"] == "approved")
        expectError(.permissionDenied, containing: "only the requester") {
            _ = try call("sys/break-glass/claim/" + id, carol.clientToken)
        }
        let claimed = try call("sys/break-glass/claim/" + id, aliceAgain.clientToken)
        #expect(claimed.auth?.leaseDuration == 300)
        let report = try f.core.call(.read, "sys/break-glass/report/" + id, token: f.root).data ?? [:]
        #expect(report["requester"]?["entity_id"] == .string(alice.entityID))
        #expect(report["approvers"]?.arrayValue?.first?["entity_id"] == .string(bob.entityID))
    }

    @Test func concurrentClaimsAndApprovalsGiveOneTokenAndCountEachApproverOnce() throws {
        try configure("db", ["approvals_required": 2, "approver_policies": "approver"])
        let requester = try token(["oncall"])
        let approvers = try (0..<2).map { _ in try token(["approver"]) }
        let id = try #require(try activate(requester).data?["request_id"]?.stringValue)
        // Each approver approves from 4 threads at once: 2 approvals in all, the rest refused.
        let approvals = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            if (try? core.call(.update, "sys/break-glass/approve/" + id, token: approvers[i % 2])) != nil {
                approvals.add(1, ordering: .relaxed)
            }
        }
        #expect(approvals.load(ordering: .relaxed) == 2)
        let tokens = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            if let auth = try? core.call(.update, "sys/break-glass/claim/" + id, token: requester).auth {
                tokens.withLock { $0.append(auth.clientToken) }
            }
        }
        #expect(tokens.withLock { $0.count } == 1)
        #expect(core.events.recent(typePrefix: "break-glass/activated").count == 1)
    }

    // MARK: Report, revocation, persistence

    @Test func theReportListsWhatWasDoneUpToItsCap() throws {
        try configure("db", ["approvals_required": 1, "approver_policies": "approver"])
        let requester = try token(["oncall"])
        let approver = try token(["approver"])
        let id = try #require(
            try activate(requester, reason: "  INC-9: restore backups  ").data?["request_id"]?.stringValue
        )
        try core.call(.update, "sys/break-glass/approve/" + id, token: approver)
        let glass = try #require(
            try core.call(.update, "sys/break-glass/claim/" + id, token: requester).auth?.clientToken
        )
        try core.call(.update, "echo/one", ["a": "1"], token: glass)
        expectError(.permissionDenied) { try core.call(.read, "sys/audit", token: glass) }
        for i in 0..<(BreakGlassActivation.maximumUses + 3) {
            try core.call(.read, "echo/one", ["i": .int(i)], token: glass)
        }

        let data = try report(id)
        #expect(data["reason"] == "INC-9: restore backups")
        #expect(data["name"] == "db" && data["status"] == "active")
        #expect(data["requester"]?["display_name"] == "token")
        #expect(data["approvers"]?.arrayValue?.count == 1)
        #expect(data["issue_time"]?.stringValue == clock.now().rfc3339)
        #expect(data["expire_time"]?.stringValue == clock.now().adding(seconds: 120).rfc3339)
        let requests = try #require(data["requests"]?.arrayValue)
        #expect(requests.count == BreakGlassActivation.maximumUses)
        #expect(data["request_count"] == .int(BreakGlassActivation.maximumUses + 5))
        #expect(data["requests_not_listed"] == .int(5))
        #expect(
            requests[0]["path"] == "echo/one" && requests[0]["operation"] == "update"
                && requests[0]["status"] == .int(204)
        )
        #expect(requests[1]["path"] == "sys/audit" && requests[1]["status"] == .int(403))
        #expect(!"\(data)".contains(glass))

        let list = try core.call(.list, "sys/break-glass/report", token: root).data ?? [:]
        #expect(list["keys"] == .array([.string(id)]))
        #expect(list["key_info"]?[id]?["status"] == "active")
        // The report and configuration are for sudo only.
        expectError(.permissionDenied) { try core.call(.read, "sys/break-glass/report/" + id, token: glass) }
    }

    @Test func revokingEarlyIsRecordedAsRevoked() throws {
        try configure()
        let r = try activate(try token(["oncall"]))
        let glass = try #require(r.auth?.clientToken)
        let id = try #require(r.data?["request_id"]?.stringValue)
        clock.advance(seconds: 30)
        let after = try core.call(.update, "sys/break-glass/revoke/" + id, token: root).data ?? [:]
        #expect(after["status"] == "revoked" && after["revoke_time"]?.stringValue == clock.now().rfc3339)
        expectError(.permissionDenied) { try core.call(.read, "echo/x", token: glass) }
        let records = try auditRecords().filter {
            $0["request"]?["path"]?.stringValue == "sys/break-glass/revoke/" + id
        }
        #expect(records.contains { $0["break_glass"]?["event"] == "revoked" })
        #expect(core.events.recent(typePrefix: "break-glass/revoked").count == 1)
        expectError(.invalidArgument, containing: "revoked") {
            try core.call(.update, "sys/break-glass/revoke/" + id, token: root)
        }
    }

    @Test func configurationRequestsAndTokensSurviveAReseal() throws {
        try configure("db", ["approvals_required": 1, "approver_policies": "approver"])
        let requester = try token(["oncall"])
        let approver = try token(["approver"])
        let id = try #require(try activate(requester).data?["request_id"]?.stringValue)
        core.sealVault()
        try core.unseal(key: unsealKey)
        let config = try core.call(.read, "sys/break-glass/config/db", token: root).data ?? [:]
        #expect(config["max_ttl"] == .int(120) && config["approvals_required"] == .int(1))
        try core.call(.update, "sys/break-glass/approve/" + id, token: approver)
        let glass = try #require(
            try core.call(.update, "sys/break-glass/claim/" + id, token: requester).auth?.clientToken
        )
        core.sealVault()
        try core.unseal(key: unsealKey)
        try core.call(.update, "echo/x", ["a": "1"], token: glass)
        #expect(try report(id)["request_count"] == .int(1))
        clock.advance(seconds: 120)
        tick()
        #expect(try report(id)["status"] == "expired")
    }

    // MARK: Bad input

    @Test func badConfigurationsAreRefusedClearlyAndNothingIsStored() throws {
        let cases: [([String: JSONValue], String)] = [
            (["requester_policies": "oncall", "max_ttl": "2m"], "policies is required"),
            (["policies": "emergency", "requester_policies": "oncall"], "max_ttl is required"),
            (["policies": "emergency", "requester_policies": "oncall", "max_ttl": "0"], "max_ttl is required"),
            (["policies": "emergency", "requester_policies": "oncall", "max_ttl": "48h"], "from 1s to 24h"),
            (
                ["policies": "emergency", "requester_policies": "oncall", "max_ttl": "soon"],
                "max_ttl must be a duration"
            ),
            (
                ["policies": "emergency", "requester_policies": "oncall", "max_ttl": .number("1e300")],
                "max_ttl must be a duration"
            ),
            (["policies": "emergency", "max_ttl": "2m"], "requester_policies or requester_entity_ids"),
            (["policies": "root", "requester_policies": "oncall", "max_ttl": "2m"], "may not include root"),
            (
                ["policies": "emergency", "requester_policies": "oncall", "max_ttl": "2m", "approvals_required": 1000],
                "approvals_required must be an integer from 0 to 32"
            ),
            (
                ["policies": "emergency", "requester_policies": "oncall", "max_ttl": "2m", "approvals_required": 1],
                "set approver_policies or approver_entity_ids"
            ),
            (
                [
                    "policies": "emergency", "requester_policies": "oncall", "max_ttl": "2m", "approvals_required": 3,
                    "approver_entity_ids": ["e1", "e2"],
                ],
                "only 2 approver entity ids"
            ),
            (["policies": ["a/b"], "requester_policies": "oncall", "max_ttl": "2m"], "policies: policy name"),
            (
                ["policies": "emergency", "requester_policies": "oncall", "max_ttl": "2m", "request_ttl": "30d"],
                "request_ttl"
            ),
        ]
        for (data, message) in cases {
            expectError(.invalidArgument, containing: message) {
                try core.call(.update, "sys/break-glass/config/db", data, token: root)
            }
        }
        expectError(.invalidArgument, containing: "configuration name") {
            try core.call(.update, "sys/break-glass/config/b@d", ["policies": "x"], token: root)
        }
        #expect(try core.call(.list, "sys/break-glass/config", token: root).outcome == .notFound)
        // Sudo: the ACL alone is not enough.
        try core.call(
            .update,
            "sys/policies/acl/almost",
            ["policy": #"path "sys/break-glass/*" { capabilities = ["create", "read", "update", "list"] }"#],
            token: root
        )
        expectError(.permissionDenied) {
            try core.call(.update, "sys/break-glass/config/db", ["policies": "emergency"], token: try token(["almost"]))
        }
        // A good one, with warnings for what does not exist yet.
        let good = try core.call(
            .update,
            "sys/break-glass/config/db",
            ["policies": "emergency,later", "requester_policies": "oncall", "max_ttl": "2m"],
            token: root
        )
        #expect(good.warnings.contains { $0.contains("\"later\" does not exist yet") })
        // A later write changes only the fields it gives.
        try core.call(.update, "sys/break-glass/config/db", ["max_ttl": "1m"], token: root)
        let read = try core.call(.read, "sys/break-glass/config/db", token: root).data ?? [:]
        #expect(read["max_ttl"] == .int(60) && read["policies"] == .array(["emergency", "later"]))
        #expect(read["requester_policies"] == .array(["oncall"]) && read["request_ttl"] == .int(3600))
    }

    @Test func badActivationsAreRefusedClearlyAndNothingIsHalfMade() throws {
        try configure()
        let oncall = try token(["oncall"])
        expectError(.invalidArgument, containing: "reason is required") { try activate(oncall, reason: nil) }
        expectError(.invalidArgument, containing: "reason is required") { try activate(oncall, reason: "   ") }
        expectError(.invalidArgument, containing: "reason must be a string") { try activate(oncall, reason: ["x": 1]) }
        expectError(.invalidArgument, containing: "longer than 1024 bytes") {
            try activate(oncall, reason: .string(String(repeating: "x", count: 1025)))
        }
        expectError(.invalidArgument, containing: "longer than the time box") { try activate(oncall, ttl: "3m") }
        expectError(.invalidArgument, containing: "ttl must be a duration") { try activate(oncall, ttl: "later") }
        expectError(.invalidArgument, containing: "ttl must be a duration") {
            try activate(oncall, ttl: .number("1e30"))
        }
        expectError(.invalidArgument, containing: "ttl must be a duration") { try activate(oncall, ttl: .number("-5")) }
        expectError(.notFound, containing: "no break-glass configuration named \"nope\"") {
            try activate(oncall, "nope")
        }
        // Allowed on the path by ACL but not a requester of this configuration.
        try core.call(
            .update,
            "sys/policies/acl/pathonly",
            ["policy": #"path "sys/break-glass/activate/*" { capabilities = ["update"] }"#],
            token: root
        )
        expectError(.permissionDenied, containing: "may not activate") { try activate(try token(["pathonly"])) }
        // Not even allowed on the path.
        expectError(.permissionDenied) { try activate(try token(["approver"])) }
        for path in ["approve", "claim", "deny"] {
            expectError(.notFound, containing: "no break-glass request") {
                try core.call(.update, "sys/break-glass/\(path)/00000000-0000-0000-0000-000000000000", token: root)
            }
            expectError(.notFound) { try core.call(.update, "sys/break-glass/\(path)/not-a-uuid", token: root) }
        }
        // Nothing was stored, and no token was made.
        #expect(try core.call(.list, "sys/break-glass/report", token: root).outcome == .notFound)
        #expect(core.events.recent().isEmpty)
        #expect(try auditRecords().allSatisfy { $0["break_glass"] == nil })
    }
}
