import Foundation
import Testing

/// Rate-limit and lease-count quotas (Sources/CofferVault/Quota/), driven through `Core.handle` with
/// the injected clock: OpenBao's windows, block interval, headers and errors, and Coffer's several
/// windows on one path, per-client buckets and lease-count quotas.
@Suite struct QuotaTests {
    let clock = ManualClock()
    let ledger = LedgerBackend()
    let core: Core
    let root: String
    let unsealKey: [UInt8]

    init() throws {
        var registry = testRegistry()
        let ledger = self.ledger
        registry.register("ledger") { _ in ledger }
        var methods = EngineRegistry()
        methods.register("grant") { _ in AuthCoreTests.GrantLogin() }
        core = try Core(storage: InMemoryBackend(), engines: registry, authMethods: methods, clock: clock)
        let result = try core.initialize(shares: 1, threshold: 1)
        root = result.rootToken
        unsealKey = result.keys[0].withUnsafeBytes { Array($0) }
        try core.mount(MountEntry(path: "echo/", type: "echo"))
        try core.mount(MountEntry(path: "ledger/", type: "ledger"))
        try core.call(.update, "sys/auth/people", ["type": "grant"], token: root)
        try core.call(.update, "echo/x", ["v": "1"], token: root)
    }

    /// One request as a client at `address`: the answer or the error, and the quota outcome.
    func send(
        _ op: Request.Operation = .read,
        _ path: String = "echo/x",
        _ data: [String: JSONValue] = [:],
        token: String? = nil,
        from address: String = "10.0.0.1"
    ) -> (result: Result<Response, CofferError>, quota: QuotaOutcome?) {
        var request = Request(op, path, data: data, token: token ?? root)
        request.clientAddress = address
        var quota: QuotaOutcome?
        let result = Result { () throws(CofferError) in try core.handle(request, quota: &quota) }
        return (result, quota)
    }

    func quota(_ name: String, _ fields: [String: JSONValue]) throws {
        try core.call(.update, "sys/quotas/rate-limit/" + name, fields, token: root)
    }

    func refused(_ outcome: (result: Result<Response, CofferError>, quota: QuotaOutcome?)) -> CofferError? {
        if case .failure(let error) = outcome.result, error.code == .rateLimited { return error }
        return nil
    }

    @Test func noQuotaMeansNothingIsChecked() throws {
        #expect(!core.quotas.isActive)
        let answer = send()
        #expect(answer.quota == nil)
        #expect(throws: Never.self) { try answer.result.get() }
    }

    @Test func configHasOpenBaosFieldsWithHeadersOnByDefault() throws {
        var data = try #require(try core.call(.read, "sys/quotas/config", token: root).data)
        #expect(data["enable_rate_limit_audit_logging"] == false)
        #expect(data["enable_rate_limit_response_headers"] == true)
        #expect(data["rate_limit_exempt_paths"]?.arrayValue?.count == 7)
        try core.call(.update, "sys/quotas/config", ["rate_limit_exempt_paths": ["sys/health"]], token: root)
        data = try #require(try core.call(.read, "sys/quotas/config", token: root).data)
        // Replaced, not merged; the flags not given stay as they were.
        #expect(data["rate_limit_exempt_paths"] == ["sys/health"])
        #expect(data["enable_rate_limit_response_headers"] == true)
        try core.call(.update, "sys/quotas/config", ["enable_rate_limit_response_headers": false], token: root)
        data = try #require(try core.call(.read, "sys/quotas/config", token: root).data)
        #expect(data["enable_rate_limit_response_headers"] == false)
        #expect(data["rate_limit_exempt_paths"] == ["sys/health"])
    }

    @Test func aRuleReadsListsAndDeletesInOpenBaosShape() throws {
        try quota("kvq", ["rate": 3, "interval": "10s", "block_interval": 20, "path": "cubbyhole"])
        let data = try #require(try core.call(.read, "sys/quotas/rate-limit/kvq", token: root).data)
        #expect(data["name"] == "kvq")
        #expect(data["path"] == "cubbyhole/")
        #expect(data["rate"] == .number("3"))
        #expect(data["interval"] == .number("10"))
        #expect(data["block_interval"] == .number("20"))
        #expect(data["inheritable"] == false)
        #expect(data["role"] == "")
        #expect(data["type"] == "rate-limit")
        #expect(data["key_by"] == "client_address")
        try quota("g", ["rate": .number("1000.5")])
        let global = try #require(try core.call(.read, "sys/quotas/rate-limit/g", token: root).data)
        #expect(global["path"] == "" && global["inheritable"] == true && global["interval"] == .number("1"))
        #expect(global["rate"] == .number("1000.5"))
        let keys = try core.call(.list, "sys/quotas/rate-limit/", token: root).data?["keys"]
        #expect(keys == ["g", "kvq"])
        try core.call(.delete, "sys/quotas/rate-limit/kvq", token: root)
        #expect(try core.call(.read, "sys/quotas/rate-limit/kvq", token: root).outcome == .notFound)
        try core.call(.delete, "sys/quotas/rate-limit/g", token: root)
        #expect(try core.call(.list, "sys/quotas/rate-limit/", token: root).outcome == .notFound)
        #expect(!core.quotas.isActive)
    }

    @Test func badInputIsAClear400AndStoresNothing() throws {
        let cases: [([String: JSONValue], String)] = [
            (["rate": 0], "'rate' is invalid"),
            (["rate": -1], "'rate' is invalid"),
            (["rate": "NaN"], "'rate' is invalid"),
            (["rate": "inf"], "'rate' is invalid"),
            (["rate": .number("1e400")], "'rate' is invalid"),
            (["rate": .number("1e13")], "'rate' is invalid"),
            (["rate": "ten"], "'rate' is invalid"),
            ([:], "'rate' is invalid"),
            (["rate": 1, "path": "nonexist/"], "invalid mount path \"nonexist/\""),
            (["rate": 1, "path": "../sys"], "invalid mount path"),
            (
                ["rate": 1, "path": "cubbyhole/", "role": "web"],
                "Mount path \"cubbyhole/\" is not a valid auth method and therefore unsuitable for use with role-based quotas"
            ),
            (["rate": 1, "role": "web"], "Mount path \"\" is not a valid auth method"),
            (
                ["rate": 1, "path": "auth/people/login", "role": "web"],
                "Quotas cannot contain both a path suffix and a role"
            ),
            (["rate": 1, "interval": "20x"], "interval must be a duration"),
            (["rate": 1, "interval": "-5s"], "interval must be a duration"),
            (["rate": 1, "block_interval": "soon"], "block_interval must be a duration"),
            (["rate": 1, "interval": .number("1e30")], "interval must be a duration"),
            (["rate": 1, "interval": "100000000h"], "interval must be a duration from 0 to 315360000 seconds"),
            (["rate": 1, "block_interval": .number("9223372036854775807")], "block_interval must be a duration"),
            (["rate": 1, "key_by": "ip"], "key_by must be one of"),
            (["rate": 1, "type": "lease-count"], "type must be"),
        ]
        for (fields, text) in cases {
            expectError(.invalidArgument, containing: text) { try quota("bad", fields) }
        }
        expectError(.invalidArgument, containing: "'max_leases' is invalid") {
            try core.call(.update, "sys/quotas/lease-count/bad", ["max_leases": 0], token: root)
        }
        expectError(.invalidArgument, containing: "role-based lease-count") {
            try core.call(.update, "sys/quotas/lease-count/bad", ["max_leases": 1, "role": "r"], token: root)
        }
        #expect(try core.call(.list, "sys/quotas/rate-limit/", token: root).outcome == .notFound)
        #expect(try core.call(.list, "sys/quotas/lease-count/", token: root).outcome == .notFound)
        #expect(!core.quotas.isActive)
    }

    @Test func aWindowRefillsAtItsEndAndTheRefusalIsOpenBaos() throws {
        try quota("kvq", ["rate": 3, "interval": "10s", "path": "echo/"])
        for remaining in [2, 1, 0] {
            let answer = send()
            #expect(throws: Never.self) { try answer.result.get() }
            #expect(answer.quota?.remaining == remaining)
            #expect(
                answer.quota?.headers.map(\.0) == ["X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"]
            )
            #expect(answer.quota?.limit == 3 && answer.quota?.reset == 9)
        }
        clock.advance(seconds: 4)
        let answer = send()
        let error = try #require(refused(answer))
        #expect(error.message == "request path \"echo/x\": rate limit quota exceeded")
        #expect(error.retryAfter == 5)
        let headers = Dictionary(uniqueKeysWithValues: answer.quota?.headers ?? [])
        #expect(headers["Retry-After"] == "5" && headers["X-Ratelimit-Remaining"] == "0")
        #expect(headers["X-Ratelimit-Limit"] == "3" && headers["X-Ratelimit-Reset"] == "5")
        // Other mounts are not under the quota; the next window is full again.
        #expect(send(.read, "sys/mounts").quota == nil)
        clock.advance(seconds: 6)
        #expect(send().quota?.remaining == 2)
        #expect(core.quotas.violationCounts().first { $0.0 == "kvq" }?.1 == 1)
    }

    @Test func blockIntervalRefusesWithOnlyRetryAfter() throws {
        try quota("b", ["rate": 1, "block_interval": "20s", "path": "echo"])
        #expect(refused(send()) == nil)
        let first = send()
        #expect(refused(first)?.retryAfter == 19)
        #expect(
            first.quota?.headers.map(\.0) == [
                "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "Retry-After",
            ]
        )
        clock.advance(seconds: 5)
        let blocked = send()
        #expect(refused(blocked)?.retryAfter == 14)
        #expect(blocked.quota?.headers.map(\.0) == ["Retry-After"])
        #expect(blocked.quota?.headers.first?.1 == "14")
        clock.advance(seconds: 15)
        #expect(refused(send()) == nil)
        // Headers off: nothing is sent, the C ABI still learns the retry time from the error.
        // A config change keeps the buckets: the window's one request is spent.
        try core.call(.update, "sys/quotas/config", ["enable_rate_limit_response_headers": false], token: root)
        let quiet = send()
        #expect(refused(quiet)?.retryAfter == 19)
        #expect(quiet.quota?.headers.isEmpty == true)
    }

    @Test func severalWindowsOnOnePathMustAllAdmit() throws {
        try quota("burst", ["rate": 2, "interval": "1s", "path": "echo/"])
        try quota("sustained", ["rate": 5, "interval": "1m", "path": "echo/"])
        // An exact twin is refused, as OpenBao refuses any second rule on a path.
        expectError(.invalidArgument, containing: "quota rule with similar properties exists under the name \"burst\"")
        {
            try quota("twin", ["rate": 2, "interval": 1, "path": "echo/"])
        }
        #expect(refused(send()) == nil)
        #expect(refused(send())?.retryAfter == nil)
        let burst = try #require(refused(send()))
        #expect(burst.retryAfter == 0)
        clock.advance(seconds: 1)
        #expect(refused(send()) == nil)
        let remaining = send()
        #expect(refused(remaining) == nil)
        // The headers show the window closest to refusing: the minute has 1 left, the second 0.
        #expect(remaining.quota?.remaining == 0 && remaining.quota?.limit == 2)
        clock.advance(seconds: 1)
        let last = send()
        #expect(last.quota?.remaining == 0 && last.quota?.limit == 5 && last.quota?.reset == 57)
        let sustained = try #require(refused(send()))
        #expect(sustained.retryAfter == 57)
        // A refused request is counted in no window: the burst window still has one left at 2 s.
        clock.advance(seconds: 58)
        #expect(send().quota?.remaining == 1)
    }

    @Test func bucketsArePerClientAddressByDefaultAndCanBeSharedOrPerEntity() throws {
        try quota("per-client", ["rate": 1, "interval": "1m", "path": "echo/"])
        #expect(refused(send(from: "10.0.0.1")) == nil)
        #expect(refused(send(from: "10.0.0.1")) != nil)
        #expect(refused(send(from: "10.0.0.2")) == nil)

        try quota("per-client", ["rate": 1, "interval": "1m", "path": "echo/", "key_by": "shared"])
        #expect(refused(send(from: "10.0.0.1")) == nil)
        #expect(refused(send(from: "10.0.0.2")) != nil)

        try quota("per-client", ["rate": 1, "interval": "1m", "path": "echo/", "key_by": "entity"])
        let a = try #require(try core.call(.update, "auth/token/create", token: root).auth?.clientToken)
        let b = try #require(try core.call(.update, "auth/token/create", token: root).auth?.clientToken)
        #expect(refused(send(token: a, from: "10.0.0.1")) == nil)
        // Same token from another address: same bucket; another token from the same address: its own.
        #expect(refused(send(token: a, from: "10.0.0.9")) != nil)
        #expect(refused(send(token: b, from: "10.0.0.1")) == nil)
    }

    @Test func theMostSpecificPathWinsAndAGlobalQuotaLimitsRootAndSysQuotas() throws {
        try quota("global", ["rate": 2, "interval": "1m"])
        try quota("echo", ["rate": 100, "interval": "1m", "path": "echo/"])
        try quota("inside", ["rate": 1, "interval": "1m", "path": "echo/deep"])
        for _ in 0..<5 { #expect(refused(send(.read, "echo/x")) == nil) }
        #expect(refused(send(.read, "echo/deep/a")) == nil)
        #expect(refused(send(.read, "echo/deep/a")) != nil)
        // echo/deeper is not under echo/deep (a segment boundary), so echo/ applies.
        #expect(refused(send(.read, "echo/deeper")) == nil)
        // The global quota: root and sys/quotas itself are limited; exempt paths pass.
        #expect(refused(send(.read, "sys/mounts")) == nil)
        #expect(refused(send(.read, "sys/mounts")) == nil)
        let error = try #require(refused(send(.update, "sys/quotas/rate-limit/global", ["rate": 1000])))
        #expect(error.message == "request path \"sys/quotas/rate-limit/global\": rate limit quota exceeded")
        #expect(refused(send(.read, "sys/seal-status")) == nil)
        #expect(send(.read, "sys/seal-status").quota == nil)
    }

    @Test func roleQuotasLimitOnlyThatRolesLogins() throws {
        expectError(.invalidArgument, containing: "is not a valid auth method") {
            try quota("web", ["rate": 2, "path": "echo/", "role": "web"])
        }
        try quota("web", ["rate": 2, "interval": "1m", "path": "auth/people", "role": "web"])
        let read = try #require(try core.call(.read, "sys/quotas/rate-limit/web", token: root).data)
        #expect(read["path"] == "auth/people/" && read["role"] == "web")
        func login(_ role: String) -> (result: Result<Response, CofferError>, quota: QuotaOutcome?) {
            send(.update, "auth/people/login", ["user": "alice", "role": .string(role)], token: "")
        }
        #expect(refused(login("web")) == nil)
        #expect(refused(login("web")) == nil)
        #expect(refused(login("web"))?.message == "request path \"auth/people/login\": rate limit quota exceeded")
        #expect(refused(login("other")) == nil)
        #expect(login("other").quota == nil)
        #expect(refused(send(.update, "auth/people/login", ["user": "bob", "role_name": "web"], token: "")) != nil)
    }

    @Test func leaseCountQuotasRefuseANewLeaseBeyondTheMaximum() throws {
        _ = try core.call(.read, "ledger/creds/app", token: root)
        try core.call(.update, "sys/quotas/lease-count/two", ["max_leases": 2, "path": "ledger/"], token: root)
        var read = try #require(try core.call(.read, "sys/quotas/lease-count/two", token: root).data)
        #expect(read["counter"] == .number("1") && read["max_leases"] == .number("2") && read["type"] == "lease-count")
        let second = try core.call(.read, "ledger/creds/app", token: root)
        let error = try #require(refused(send(.read, "ledger/creds/app")))
        #expect(error.message.hasPrefix("request path \"ledger/creds/app\": lease count quota exceeded"))
        #expect(error.retryAfter == nil)
        // Revoking one makes room.
        try core.call(.update, "sys/leases/revoke", ["lease_id": .string(second.leaseID)], token: root)
        read = try #require(try core.call(.read, "sys/quotas/lease-count/two", token: root).data)
        #expect(read["counter"] == .number("1"))
        #expect(refused(send(.read, "ledger/creds/app")) == nil)
        #expect(refused(send(.read, "ledger/creds/app")) != nil)
        // Other mounts are not counted.
        #expect(refused(send(.read, "echo/x")) == nil)
        // A lease that expires leaves room too.
        try core.call(.update, "sys/quotas/lease-count/two", ["max_leases": 3, "path": "ledger/"], token: root)
        let short = try core.call(.read, "ledger/creds/app", ["ttl": "30s"], token: root)
        #expect(!short.leaseID.isEmpty && refused(send(.read, "ledger/creds/app")) != nil)
        clock.advance(seconds: 31)
        _ = core.leases.tick(now: clock.now())
        read = try #require(try core.call(.read, "sys/quotas/lease-count/two", token: root).data)
        #expect(read["counter"] == .number("2"))
    }

    @Test func quotasSurviveAResealAndCountLeasesAgain() throws {
        try quota("kvq", ["rate": 1, "interval": "1m", "path": "echo/"])
        try core.call(.update, "sys/quotas/config", ["enable_rate_limit_audit_logging": true], token: root)
        _ = try core.call(.read, "ledger/creds/app", token: root)
        try core.call(.update, "sys/quotas/lease-count/one", ["max_leases": 1, "path": "ledger"], token: root)
        core.sealVault()
        #expect(!core.quotas.isActive)
        try core.unseal(key: unsealKey)
        #expect(try core.call(.read, "sys/quotas/rate-limit/kvq", token: root).data?["rate"] == .number("1"))
        #expect(try core.call(.read, "sys/quotas/config", token: root).data?["enable_rate_limit_audit_logging"] == true)
        #expect(refused(send()) == nil)
        #expect(refused(send()) != nil)
        #expect(refused(send(.read, "ledger/creds/app")) != nil)
    }

    @Test func refusalsAreAuditedOnlyWhenTheConfigSaysSo() throws {
        let dir = TemporaryDirectory()
        let log = dir.file("audit.log")
        try core.call(.update, "sys/audit/file", ["type": "file", "options": ["file_path": .string(log)]], token: root)
        try quota("one", ["rate": 1, "interval": "1m", "path": "echo/"])
        #expect(refused(send()) == nil)
        #expect(refused(send()) != nil)
        try core.call(.update, "sys/quotas/config", ["enable_rate_limit_audit_logging": true], token: root)
        #expect(refused(send()) != nil)
        try core.flushAudit()
        let records = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        // The one audited refusal: its request and response records (as for a refused token).
        let refusals = try records.filter { $0.contains("rate limit quota exceeded") }.map {
            try JSONValue.parse(String($0))
        }
        #expect(refusals.compactMap { $0["type"]?.stringValue } == ["request", "response"])
        #expect(Set(refusals.compactMap { $0["request"]?["id"]?.stringValue }).count == 1)
        #expect(refusals.first?["request"]?["path"] == "echo/x")
    }

    @Test func aSecondCoreOverTheSameStorageLoadsTheRules() throws {
        let storage = InMemoryBackend()
        let first = try Core(storage: storage, engines: testRegistry(), clock: clock)
        let result = try first.initialize(shares: 1, threshold: 1)
        try first.mount(MountEntry(path: "echo/", type: "echo"))
        let second = try Core(storage: storage, engines: testRegistry(), clock: clock)
        try second.unseal(key: result.keys[0].unsafeCopy)
        try first.call(
            .update,
            "sys/quotas/rate-limit/one",
            ["rate": 1, "interval": "1m", "path": "echo/"],
            token: result.rootToken
        )
        #expect(second.quotas.isActive)
        var request = Request(.read, "echo/x", token: result.rootToken)
        request.clientAddress = "10.0.0.1"
        _ = try? second.handle(request)
        expectError(.rateLimited, containing: "rate limit quota exceeded") { try second.handle(request) }
        try first.call(.delete, "sys/quotas/rate-limit/one", token: result.rootToken)
        #expect(!second.quotas.isActive)
    }

    @Test func exemptPathsBypassAndTheListCanBeReplaced() throws {
        try quota("global", ["rate": 1, "interval": "1m"])
        #expect(refused(send(.read, "echo/x")) == nil)
        #expect(refused(send(.read, "sys/seal-status")) == nil)
        #expect(refused(send(.read, "echo/x")) != nil)
        // sys/quotas/config is itself under the global quota: exempt it first from another address.
        try quota("global", ["rate": 1, "interval": "1m", "key_by": "shared"])
        #expect(refused(send(.update, "sys/quotas/config", ["rate_limit_exempt_paths": ["echo/*"]])) == nil)
        for _ in 0..<3 { #expect(refused(send(.read, "echo/x")) == nil) }
        #expect(refused(send(.read, "sys/seal-status")) != nil)
    }

    /// Issue 19: a rule may name a namespace, or a mount in one, by its full path.
    @Test func aQuotaOnANamespaceLimitsOnlyThatNamespace() throws {
        try core.call(.update, "sys/namespaces/team-a", token: root)
        try core.call(.update, "team-a/sys/mounts/echo", ["type": "echo"], token: root)
        try core.call(.update, "team-a/echo/x", ["v": "a"], token: root)
        try quota("tenant", ["rate": 2, "path": "team-a"])
        #expect(try core.call(.read, "sys/quotas/rate-limit/tenant", token: root).data?["path"] == "team-a/")
        #expect(refused(send(.read, "team-a/echo/x")) == nil)
        #expect(refused(send(.read, "team-a/echo/x")) == nil)
        #expect(refused(send(.read, "team-a/echo/x")) != nil)
        // Root's mount of the same name, and root itself, are not under it.
        #expect(refused(send(.read, "echo/x")) == nil)
        clock.advance(seconds: 1)
        // A mount inside the namespace, named in full.
        try quota("tenant-echo", ["rate": 1, "path": "team-a/echo"])
        #expect(try core.call(.read, "sys/quotas/rate-limit/tenant-echo", token: root).data?["path"] == "team-a/echo/")
        #expect(refused(send(.read, "team-a/echo/x")) == nil)
        #expect(refused(send(.read, "team-a/echo/x")) != nil)
        expectError(.invalidArgument, containing: "invalid mount path") {
            try quota("nope", ["rate": 1, "path": "team-a/nothing/"])
        }
    }
}
