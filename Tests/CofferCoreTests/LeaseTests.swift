import Foundation
import Synchronization
import Testing

/// An engine whose secrets are names in a set: what the lease manager does to them (revoke on
/// expiry, on token revocation, on unmount; retry while "the database is down") shows in the set.
/// The database engine's tests do the same against real PostgreSQL and MariaDB (DatabaseTests).
final class LedgerBackend: TableBackend {
    let users = Mutex<Set<String>>([])
    let validUntil = Mutex<[String: Timestamp]>([:])
    /// While true, revocations fail as a database that is down would.
    let down = Atomic<Bool>(false)
    let revokeCalls = Atomic<Int>(0)

    static let paths = PathTable<LedgerBackend>([
        Path(
            "creds/{role}",
            fields: [.duration("ttl"), .duration("max_ttl"), .bool("renewable")],
            read: LedgerBackend.creds
        )
    ])

    func creds(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = "u-" + request.capture("role") + "-" + Random.base62(6)
        users.withLock { _ = $0.insert(name) }
        var response = Response(data: ["username": .string(name)])
        response.secret = SecretLease(
            type: "user",
            internalData: ["username": .string(name)],
            ttl: request.fields.seconds("ttl") ?? 0,
            maxTTL: request.fields.seconds("max_ttl") ?? 0,
            renewable: request.fields.bool("renewable") ?? true
        )
        return response
    }

    var secretTypes: [SecretType] {
        [
            SecretType(
                name: "user",
                renew: { [self] (request) throws(CofferError) in
                    let name = request.internalData["username"]?.stringValue ?? ""
                    validUntil.withLock { $0[name] = request.expireTime }
                },
                revoke: { [self] (request) throws(CofferError) in
                    revokeCalls.add(1, ordering: .relaxed)
                    if down.load(ordering: .relaxed) {
                        throw CofferError(.unavailable, "failed to connect to 127.0.0.1:1: connection refused")
                    }
                    let name = request.internalData["username"]?.stringValue ?? ""
                    users.withLock { _ = $0.remove(name) }
                }
            )
        ]
    }

    func exists(_ name: String) -> Bool { users.withLock { $0.contains(name) } }
}

@Suite struct LeaseTests {
    let clock = ManualClock()
    let ledger = LedgerBackend()
    let core: Core
    let root: String

    init() throws {
        var registry = testRegistry()
        let ledger = self.ledger
        registry.register("ledger") { _ in ledger }
        core = try Core(storage: InMemoryBackend(), engines: registry, clock: clock)
        root = try core.initialize(shares: 1, threshold: 1).rootToken
        try core.mount(MountEntry(path: "ledger/", type: "ledger"))
    }

    func issue(_ query: [String: JSONValue] = [:], token: String? = nil) throws -> (id: String, user: String, Response)
    {
        let r = try core.call(.read, "ledger/creds/app", query, token: token ?? root)
        return (r.leaseID, r.data?["username"]?.stringValue ?? "", r)
    }

    func lookup(_ id: String) throws -> [String: JSONValue] {
        try core.call(.update, "sys/leases/lookup", ["lease_id": .string(id)], token: root).data ?? [:]
    }

    func tick() -> LeaseExpiryReport { core.leases.tick(now: clock.now()) }

    @Test func issueShapesTheLeaseAsOpenBaoDoes() throws {
        let (id, user, r) = try issue(["ttl": "1h"])
        #expect(id.hasPrefix("ledger/creds/app/"))
        let random = id.dropFirst("ledger/creds/app/".count)
        #expect(random.count == 24 && random.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
        #expect(r.leaseDuration == 3600 && r.renewable)
        #expect(r.body(requestID: "x")?["lease_id"]?.stringValue == id)
        #expect(ledger.exists(user))
        clock.advance(seconds: 10)
        let data = try lookup(id)
        #expect(data["id"]?.stringValue == id)
        #expect(data["path"]?.stringValue == "ledger/creds/app")
        #expect(data["ttl"]?.intValue == 3590)
        #expect(data["renewable"] == true)
        #expect(data["last_renewal"] == .null)
        #expect(
            data["issue_time"]?.stringValue == Timestamp(nanoseconds: clock.now().nanoseconds - 10_000_000_000).rfc3339
        )
        // The mount's default, then the system's 768 h, when the role gives none.
        #expect(try issue().2.leaseDuration == 768 * 3600)
        expectError(.invalidArgument, containing: "invalid lease") { _ = try lookup(id + "x") }
        expectError(.invalidArgument, containing: "lease_id must be specified") { _ = try lookup("") }
    }

    @Test func aTTLOverTheMaxIsCappedWithOpenBaosWarning() throws {
        let r = try issue(["ttl": "2h", "max_ttl": "1h"]).2
        #expect(r.leaseDuration == 3600)
        #expect(
            r.warnings == ["TTL of \"2h\" exceeded the effective max_ttl of \"1h\"; TTL value is capped accordingly"]
        )
    }

    @Test func expiryRevokesOnTheInjectedClock() throws {
        let (id, user, _) = try issue(["ttl": "10s"])
        clock.advance(seconds: 9)
        #expect(tick() == LeaseExpiryReport())
        #expect(ledger.exists(user))
        clock.advance(seconds: 1)
        #expect(tick().revoked == 1)
        #expect(!ledger.exists(user))
        expectError(.invalidArgument, containing: "invalid lease") { _ = try lookup(id) }
    }

    @Test func manyLeasesDueAtOnceAreRevokedTogetherAndLeaveNothingBehind() throws {
        var users: [String] = []
        for _ in 0..<300 { users.append(try issue(["ttl": "10s"]).user) }
        let token = try core.call(.update, "auth/token/create", ["policies": ["root"]], token: root).auth!.clientToken
        for _ in 0..<50 { users.append(try issue(["ttl": "10s"], token: token).user) }
        clock.advance(seconds: 10)
        #expect(tick().revoked == 350)
        #expect(ledger.users.withLock { $0.isEmpty })
        #expect(ledger.revokeCalls.load(ordering: .relaxed) == 350)
        // Every index row went with its lease.
        for prefix in ["sys/expire/id/", "sys/expire/at/", "sys/expire/mount/", "sys/expire/token/"] {
            #expect(try core.barrier.physical.listRecursive(prefix: prefix).isEmpty, "\(prefix)")
        }
    }

    @Test func renewCountsFromNowAndStopsAtTheMaxFromIssue() throws {
        let (id, user, _) = try issue(["ttl": "1h", "max_ttl": "24h"])
        clock.advance(seconds: 8)
        var r = try core.call(.update, "sys/leases/renew", ["lease_id": .string(id), "increment": "100h"], token: root)
        #expect(r.leaseID == id && r.renewable && r.data == nil)
        #expect(r.leaseDuration == 86392)
        #expect(
            r.warnings == [
                "TTL of \"100h\" exceeded the effective max_ttl of \"23h59m52s\"; TTL value is capped accordingly"
            ]
        )
        #expect(ledger.validUntil.withLock { $0[user] } == clock.now().adding(seconds: 86392))
        // hvac sends increment null, the CLI 0: both mean the TTL it was issued with, from now (a renewal can shorten).
        r = try core.call(.update, "sys/leases/renew", ["lease_id": .string(id), "increment": .null], token: root)
        #expect(r.leaseDuration == 3600 && r.warnings.isEmpty)
        #expect(r.body(requestID: "x")?["data"] == .null)
        r = try core.call(.update, "sys/leases/renew/" + id, ["increment": 600], token: root)
        #expect(r.leaseDuration == 600)
        #expect(try lookup(id)["last_renewal"]?.stringValue == clock.now().rfc3339)
        // The renewal moved the expiry: the old time passes without a revocation.
        clock.advance(seconds: 601)
        tick()
        #expect(!ledger.exists(user))
        expectError(.invalidArgument, containing: "lease not found") {
            try core.call(.update, "sys/leases/renew", ["lease_id": .string(id)], token: root)
        }
        let fixed = try issue(["renewable": false]).id
        expectError(.invalidArgument, containing: "lease is not renewable") {
            try core.call(.update, "sys/leases/renew", ["lease_id": .string(fixed)], token: root)
        }
        expectError(.invalidArgument, containing: "tokens cannot be renewed through this endpoint") {
            try core.call(.update, "sys/leases/renew", ["lease_id": "auth/token/create/habc"], token: root)
        }
    }

    @Test func revokeSyncAnswers204AndAsyncQueues202() throws {
        let (id, user, _) = try issue()
        let r = try core.call(.update, "sys/leases/revoke", ["lease_id": .string(id)], token: root)
        #expect(r.status == 204 && !ledger.exists(user))
        // What `bao lease revoke ID` sends.
        let (id2, user2, _) = try issue()
        let queued = try core.call(.update, "sys/leases/revoke/" + id2, ["sync": false], token: root)
        #expect(queued.status == 202 && queued.body(requestID: "x") == nil)
        #expect(ledger.exists(user2))
        #expect(tick().revoked == 1)
        #expect(!ledger.exists(user2))
        // An unknown lease is not an error, as in OpenBao.
        #expect(
            try core.call(.update, "sys/leases/revoke", ["lease_id": "ledger/creds/app/nope"], token: root).status
                == 204
        )
    }

    @Test func aFailingRevocationIsRetriedWithBackoffAndNeverGivenUp() throws {
        let (id, user, _) = try issue(["ttl": "5s"])
        ledger.down.store(true, ordering: .relaxed)
        expectError(.invalidArgument, containing: "failed to revoke entry: failed to connect to 127.0.0.1:1") {
            try core.call(.update, "sys/leases/revoke", ["lease_id": .string(id)], token: root)
        }
        var data = try lookup(id)
        #expect(data["revoke_attempts"]?.intValue == 1)
        #expect(data["revoke_error"]?.stringValue == "failed to connect to 127.0.0.1:1: connection refused")
        #expect(data["renewable"] == false)
        // Retries come after 1 s, 2 s, 4 s, ... (less up to a quarter of jitter), capped at 5 minutes.
        var attempts = 1
        for _ in 0..<40 {
            clock.advance(seconds: LeaseManager.maximumBackoff)
            let report = tick()
            #expect(report.failed == 1)
            attempts += 1
        }
        data = try lookup(id)
        #expect(data["revoke_attempts"]?.intValue == attempts)
        #expect(data["ttl"]!.intValue! < 0)
        let next = try #require(Timestamp(rfc3339: data["next_revoke_attempt"]?.stringValue ?? ""))
        #expect(next > clock.now() && next <= clock.now().adding(seconds: LeaseManager.maximumBackoff))
        #expect(ledger.exists(user))
        // The database comes back: the next attempt succeeds.
        ledger.down.store(false, ordering: .relaxed)
        clock.advance(seconds: LeaseManager.maximumBackoff)
        #expect(tick().revoked == 1)
        #expect(!ledger.exists(user))
    }

    @Test func backoffDoublesFromOneSecond() throws {
        _ = try issue(["ttl": "1s"])
        ledger.down.store(true, ordering: .relaxed)
        clock.advance(seconds: 1)
        #expect(tick().failed == 1)
        var waits: [Int64] = []
        for _ in 0..<5 {
            // Step a second at a time until the next attempt runs.
            var waited: Int64 = 0
            repeat {
                clock.advance(seconds: 1)
                waited += 1
            } while tick().failed == 0 && waited < 1000
            waits.append(waited)
        }
        // After the first failure 1 s, then 2, 4, 8, 16 s, each less at most a quarter (jitter).
        for (wait, full) in zip(waits, [Int64(1), 2, 4, 8, 16]) { #expect(wait <= full && wait >= full - full / 4) }
    }

    @Test func prefixRevocationAndListingNeedSudo() throws {
        let a = try issue().id
        _ = try issue()
        #expect(
            try core.call(.list, "sys/leases/lookup/ledger/creds/app/", token: root).data?["keys"]?.arrayValue?.count
                == 2
        )
        #expect(try core.call(.list, "sys/leases/lookup/ledger/", token: root).data?["keys"] == ["creds/"])
        try core.call(
            .update,
            "sys/policy/leases",
            ["policy": #"path "sys/leases/*" { capabilities = ["update", "list"] }"#],
            token: root
        )
        let user = try core.call(.update, "auth/token/create", ["policies": ["leases"]], token: root).auth!.clientToken
        for (op, path) in [
            (Request.Operation.list, "sys/leases/lookup/ledger/"), (.update, "sys/leases/revoke-prefix/ledger"),
            (.update, "sys/leases/revoke-force/ledger"),
        ] {
            expectError(.permissionDenied) { try core.call(op, path, token: user) }
        }
        #expect(
            try core.call(.update, "sys/leases/lookup", ["lease_id": .string(a)], token: user).data?["id"]?.stringValue
                == a
        )
        #expect(try core.call(.update, "sys/leases/revoke-prefix/ledger/creds", token: root).status == 204)
        #expect(ledger.users.withLock { $0.isEmpty })
        #expect(try core.call(.list, "sys/leases/lookup/ledger/", token: root).status == 404)
    }

    @Test func forceRevocationSaysWhatItLeftBehind() throws {
        let (id, user, _) = try issue()
        ledger.down.store(true, ordering: .relaxed)
        let r = try core.call(.update, "sys/leases/revoke-force/ledger", token: root)
        #expect(r.status == 200)
        #expect(r.data?["left_behind"]?.arrayValue?.first?["lease_id"]?.stringValue == id)
        #expect(r.warnings.first?.contains("still exists") == true)
        #expect(ledger.exists(user))
        expectError(.invalidArgument, containing: "invalid lease") { _ = try lookup(id) }
    }

    @Test func revokingATokenRevokesItsLeasesAndItsChildrensLeases() throws {
        let parent = try core.call(.update, "auth/token/create", ["policies": ["root"]], token: root).auth!.clientToken
        let child = try core.call(.update, "auth/token/create", [:], token: parent).auth!.clientToken
        let mine = try issue(token: parent).user
        let childs = try issue(token: child).user
        let others = try issue().user
        #expect(try core.call(.update, "auth/token/revoke", ["token": .string(parent)], token: root).status == 204)
        // Gone when the revocation answers.
        #expect(!ledger.exists(mine) && !ledger.exists(childs))
        #expect(ledger.exists(others))
    }

    @Test func anExpiredTokenNobodyPresentsIsRevokedWithItsLeasesOnTime() throws {
        let token = try core.call(.update, "auth/token/create", ["policies": ["root"], "ttl": "30s"], token: root).auth!
            .clientToken
        let (_, user, _) = try issue(["ttl": "1h"], token: token)
        clock.advance(seconds: 29)
        tick()
        #expect(ledger.exists(user))
        clock.advance(seconds: 1)
        let report = tick()
        #expect(report.tokensExpired == 1)
        #expect(!ledger.exists(user))
    }

    @Test func aRenewedTokenLivesPastItsFirstExpiry() throws {
        let token = try core.call(.update, "auth/token/create", ["policies": ["root"], "ttl": "30s"], token: root).auth!
            .clientToken
        let (_, user, _) = try issue(["ttl": "1h"], token: token)
        clock.advance(seconds: 20)
        try core.call(.update, "auth/token/renew-self", ["increment": "60s"], token: token)
        clock.advance(seconds: 20)
        #expect(tick().tokensExpired == 0)
        #expect(ledger.exists(user))
        clock.advance(seconds: 40)
        #expect(tick().tokensExpired == 1)
        #expect(!ledger.exists(user))
    }

    @Test func unmountRevokesTheMountsLeasesOrRefusesWhileItCannot() throws {
        let user = try issue().user
        ledger.down.store(true, ordering: .relaxed)
        expectError(.invalidArgument, containing: "so it stays mounted") {
            try core.call(.delete, "sys/mounts/ledger", token: root)
        }
        #expect(try core.mounts().contains { $0.path == "ledger/" })
        ledger.down.store(false, ordering: .relaxed)
        try core.call(.delete, "sys/mounts/ledger", token: root)
        #expect(!ledger.exists(user))
        #expect(try core.leases.ids(prefix: "").isEmpty)
    }

    @Test func aMovedMountsLeasesAreStillRevokedWhenItIsUnmounted() throws {
        let user = try issue().user
        try core.call(.update, "sys/remount", ["from": "ledger", "to": "moved"], token: root)
        try core.call(.delete, "sys/mounts/moved", token: root)
        #expect(!ledger.exists(user))
        #expect(try core.leases.ids(prefix: "").isEmpty)
    }

    @Test func failingRevocationsAreListedAndCounted() throws {
        let (id, _, _) = try issue(["ttl": "1s"])
        _ = try issue()
        for path in ["sys/leases/count", "sys/leases"] {
            expectError(.notFound) { try core.call(.read, path, token: root) }
        }
        #expect(
            try core.call(.read, "sys/leases/count", ["type": "irrevocable"], token: root).data?["lease_count"] == 0
        )
        ledger.down.store(true, ordering: .relaxed)
        clock.advance(seconds: 1)
        #expect(tick().failed == 1)
        let count = try core.call(.read, "sys/leases/count", ["type": "irrevocable"], token: root).data
        #expect(count?["lease_count"] == 1)
        let accessor = try #require(core.mounts().first { $0.path == "ledger/" }?.accessor)
        #expect(count?["counts"] == .object([accessor: 1]))
        let list = try core.call(.read, "sys/leases", ["type": "irrevocable"], token: root).data?["leases"]?.arrayValue
        #expect(list?.count == 1 && list?.first?["lease_id"]?.stringValue == id)
        #expect(list?.first?["error"]?.stringValue?.contains("connection refused") == true)
        ledger.down.store(false, ordering: .relaxed)
        clock.advance(seconds: 2)
        #expect(tick().revoked == 1)
        #expect(
            try core.call(.read, "sys/leases/count", ["type": "irrevocable"], token: root).data?["lease_count"] == 0
        )
    }

    @Test func tidyRevokesLeasesWhoseTokenVanished() throws {
        let token = try core.call(.update, "auth/token/create", ["policies": ["root"]], token: root).auth!.clientToken
        let user = try issue(token: token).user
        // A crash between deleting a token and revoking its leases: the token's entry is just gone.
        let hash = try core.tokens.hash(token)
        try core.barrier.delete(TokenStore.idPrefix + hash)
        core.tokens.invalidate(hash: hash)
        let r = try core.call(.update, "sys/leases/tidy", token: root)
        #expect(r.status == 202)
        #expect(r.data?["leases_revoked"]?.intValue == 1)
        #expect(!ledger.exists(user))
    }

    @Test func leasesSurviveASealAndReopen() throws {
        let storage = InMemoryBackend()
        var registry = testRegistry()
        let ledger = self.ledger
        registry.register("ledger") { _ in ledger }
        let first = try Core(storage: storage, engines: registry, clock: clock)
        let result = try first.initialize(shares: 1, threshold: 1)
        try first.mount(MountEntry(path: "ledger/", type: "ledger"))
        let r = try first.call(.read, "ledger/creds/app", ["ttl": "60s"], token: result.rootToken)
        let user = r.data!["username"]!.stringValue!
        first.sealVault()
        let second = try Core(storage: storage, engines: registry, clock: clock)
        try second.unseal(key: result.keys[0].unsafeCopy)
        clock.advance(seconds: 61)
        // A lease issued after the unseal, due later, does not hide the one already overdue.
        let later = try second.call(.read, "ledger/creds/app", ["ttl": "1h"], token: result.rootToken)
        #expect(second.leases.tick(now: clock.now()).revoked == 1)
        #expect(!ledger.exists(user))
        #expect(ledger.exists(later.data!["username"]!.stringValue!))
    }
}
