import Foundation
import Synchronization
import Testing

@testable import CofferCore
@testable import CofferVault

/// The meters (Metrics/) and what `sys/metrics` and `Vault.metrics` show of them.
@Suite struct MetricsTests {
    // MARK: The meters themselves

    @Test func anExactSummaryKeepsCountSumMinMaxAndSpread() {
        let summary = Summary()
        let now = MonotonicClock.now()
        for ms in [1, 2, 3, 4, 10] as [UInt64] { summary.record(nanoseconds: ms * 1_000_000, now: now) }
        let s = summary.snapshot(now: now)
        #expect(s.count == 5)
        #expect(s.timed == 5)
        #expect(s.sumNanoseconds == 20_000_000)
        #expect(s.minNanoseconds == 1_000_000)
        #expect(s.maxNanoseconds == 10_000_000)
        #expect(s.meanNanoseconds == 4_000_000)
        // Sample standard deviation of 1, 2, 3, 4, 10 (ms): sqrt(12.5) = 3.5355...
        #expect(abs(s.stddevNanoseconds / 1e6 - 12.5.squareRoot()) < 1e-9)
        // Quantiles come from 4-per-octave buckets: within 12.5% of the true value.
        let q = try! #require(s.quantiles)
        #expect(abs(q[0] / 3e6 - 1) <= 0.125, "p50 \(q[0])")
        #expect(abs(q[2] / 10e6 - 1) <= 0.125, "p99 \(q[2])")
    }

    @Test func quantilesForgetWhatIsOlderThanTwoWindows() {
        let summary = Summary()
        let start: UInt64 = 100 << SummaryShard.windowShift
        summary.record(nanoseconds: 5_000, now: start)
        #expect(summary.snapshot(now: start).quantiles != nil)
        #expect(summary.snapshot(now: start + (1 << SummaryShard.windowShift)).quantiles != nil)
        let later = summary.snapshot(now: start + (2 << SummaryShard.windowShift))
        #expect(later.quantiles == nil)  // Prometheus shows NaN, as OpenBao does with nothing recent
        #expect(later.count == 1)  // the totals are kept
    }

    @Test func bucketsCoverTheRangeWithoutTrapping() {
        for value: UInt64 in [0, 1, 255, 256, 257, 1_000, 1 << 20, 123_456_789, 1 << 38, 1 << 39, .max] {
            let index = SummaryShard.bucket(value)
            #expect((0..<SummaryShard.bucketCount).contains(index), "\(value)")
            if value >= 1 << SummaryShard.lowestExponent, value < 1 << SummaryShard.highestExponent {
                #expect(abs(SummaryShard.middle(index) / Double(value) - 1) <= 0.125, "\(value)")
            }
        }
    }

    @Test func aSampledSummaryCountsEveryCallAndTimesOneInSixteen() {
        let summary = Summary(sampleEvery: 16)
        for _ in 0..<100 { summary.end(summary.begin()) }
        let s = summary.snapshot()
        #expect(s.count == 100)
        // One thread: calls 0, 16, 32, 48, 64, 80 and 96 are timed.
        #expect(s.timed == 7)
        #expect(s.estimatedSumNanoseconds == s.meanNanoseconds * 100)
    }

    @Test func concurrentUpdatesAreAllCounted() async {
        let counter = Counter()
        let summary = Summary()
        let sampled = Summary(sampleEvery: 16)
        let threads = 8
        let perThread = 20_000
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<threads {
                group.addTask {
                    let now = MonotonicClock.now()
                    for i in 0..<perThread {
                        counter.increment()
                        summary.record(nanoseconds: UInt64(1_000 + t * perThread + i), now: now)
                        sampled.end(sampled.begin())
                    }
                }
            }
        }
        #expect(counter.value == UInt64(threads * perThread))
        let s = summary.snapshot()
        #expect(s.count == UInt64(threads * perThread))
        #expect(s.minNanoseconds == 1_000)
        #expect(s.maxNanoseconds == UInt64(1_000 + threads * perThread - 1))
        let n = UInt64(threads * perThread)
        #expect(s.sumNanoseconds == 1_000 * n + (n - 1) * n / 2)
        #expect(sampled.snapshot().count == n)
    }

    // MARK: Through a vault

    /// The count of a summary or counter in the JSON form of `vault.metrics()`.
    func count(_ vault: Vault, _ name: String) throws -> Int {
        let json = try JSONValue.parse(vault.metrics(.json))
        for section in ["Counters", "Samples"] {
            for item in json[section]?.arrayValue ?? [] where item["Name"]?.stringValue == name {
                return Int(item["Count"]?.numberText ?? "") ?? -1
            }
        }
        return 0  // a route shows once it has served a call
    }

    @Test func fiveKVReadsMoveTheReadRouteByFive() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        let kv = vault.kv(token: "root")
        try kv.put("app/db", ["password": "s3cret"])
        let reads = try count(vault, "vault.route.read.secret-")
        let requests = try count(vault, "vault.core.handle_request")
        let lookups = try count(vault, "vault.token.lookup")
        for _ in 0..<5 { _ = try kv.get("app/db") }
        #expect(try count(vault, "vault.route.read.secret-") == reads + 5)
        #expect(try count(vault, "vault.core.handle_request") == requests + 5)
        #expect(try count(vault, "vault.token.lookup") == lookups + 5)
        #expect(try count(vault, "vault.route.create.secret-") == 1)
        // The secret's value is in no metric.
        #expect(!vault.metrics(.json).contains("s3cret"))
        #expect(!vault.metrics(.prometheus).contains("s3cret"))
        #expect(!vault.metrics(.prometheus).contains("root"))
        let text = vault.metrics(.prometheus)
        #expect(text.contains("# TYPE vault_route_read_secret_ summary\n"))
        #expect(text.contains("\nvault_route_read_secret__count \(reads + 5)\n"))
    }

    @Test func aLoginIsTimedAsALoginRequest() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        _ = try vault.handle(Request(.update, "sys/auth/userpass", data: ["type": "userpass"], token: "root"))
        _ = try vault.handle(
            Request(.update, "auth/userpass/users/ana", data: ["password": "pw", "policies": "default"], token: "root")
        )
        let logins = try count(vault, "vault.core.handle_login_request")
        let requests = try count(vault, "vault.core.handle_request")
        let login = try vault.handle(Request(.update, "auth/userpass/login/ana", data: ["password": "pw"], token: nil))
        #expect(login.auth != nil)
        #expect(throws: CofferError.self) {
            _ = try vault.handle(Request(.update, "auth/userpass/login/ana", data: ["password": "no"], token: nil))
        }
        #expect(try count(vault, "vault.core.handle_login_request") == logins + 2)
        #expect(try count(vault, "vault.core.handle_request") == requests)
        #expect(try count(vault, "vault.route.update.auth-userpass-") >= 2)
    }

    @Test func sysMetricsNeedsReadOnItAndAKnownFormat() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        let prometheus = try vault.handle(Request(.read, "sys/metrics", data: ["format": "prometheus"], token: "root"))
        #expect(prometheus.body?.contentType == "text/plain; version=0.0.4; charset=utf-8")
        let json = try vault.handle(Request(.read, "sys/metrics", token: "root"))
        #expect(json.body?.contentType == "application/json")
        let parsed = try JSONValue.parse(json.body?.bytes ?? [])
        #expect(parsed.objectValue.map { Set($0.keys) } == ["Timestamp", "Gauges", "Points", "Counters", "Samples"])
        expectError(.invalidArgument, containing: "metric response format \"xml\" unknown") {
            _ = try vault.handle(Request(.read, "sys/metrics", data: ["format": "xml"], token: "root"))
        }
        // A token without a policy on sys/metrics is refused; with `read` on it, it is served.
        _ = try vault.handle(
            Request(
                .update,
                "sys/policies/acl/scrape",
                data: ["policy": #"path "sys/metrics" { capabilities = ["read"] }"#],
                token: "root"
            )
        )
        let plain = try vault.handle(
            Request(.update, "auth/token/create", data: ["policies": "default"], token: "root")
        )
        let scraper = try vault.handle(
            Request(.update, "auth/token/create", data: ["policies": "scrape"], token: "root")
        )
        expectError(.permissionDenied) {
            _ = try vault.handle(Request(.read, "sys/metrics", token: plain.auth!.clientToken))
        }
        let scraped = try vault.handle(Request(.read, "sys/metrics", token: scraper.auth!.clientToken))
        #expect(scraped.body != nil)
    }

    @Test func theReadCacheCountsHitsAndMisses() throws {
        let dir = TemporaryDirectory()
        let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: dir.file("m.db"))))
        defer { vault.close() }
        let result = try vault.initialize(shares: 1, threshold: 1)
        _ = try vault.handle(Request(.update, "sys/mounts/kv", data: ["type": "kv-v2"], token: result.rootToken))
        let kv = vault.kv(mount: "kv", token: result.rootToken)
        try kv.put("a", ["v": "1"])
        let hits = try count(vault, "vault.cache.hit")
        for _ in 0..<3 { _ = try kv.get("a") }
        #expect(try count(vault, "vault.cache.hit") > hits)
        let json = try JSONValue.parse(vault.metrics(.json))
        let bytes = json["Gauges"]?.arrayValue?.first { $0["Name"]?.stringValue == "coffer.cache.bytes" }
        #expect((Int(bytes?["Value"]?.numberText ?? "") ?? 0) > 0)
    }
}

extension JSONValue {
    fileprivate var numberText: String? { if case .number(let n) = self { n } else { nil } }
}
