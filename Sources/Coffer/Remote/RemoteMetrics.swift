import CofferCore
import Synchronization

/// Where a ``SecretRead`` came from, in the fallback chain's order.
public enum SecretSource: String, Sendable, CaseIterable {
    /// The store answered this read.
    case store
    /// The cache answered: fresh (within its TTL), or stale while the store could not be reached
    /// (then ``SecretRead/degraded`` is true).
    case cache
    /// The fallback env file.
    case envFile = "env_file"
    /// The process environment.
    case environment
}

/// What a ``RemoteClient`` has done since it opened: read latency, cache hits and misses, fallbacks
/// by source, store failures, logins and renewals, event invalidations, the degraded flag.
public struct RemoteMetrics: Sendable, Equatable {
    /// Upper bounds (seconds) of the latency histogram's buckets; the last bucket is unbounded.
    public static let latencyBounds: [Double] = [
        1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1, 2,
        5, 10,
    ]

    /// Reads (``RemoteClient/read(_:)``) answered, by any source, and failed.
    public var reads: UInt64 = 0
    public var readErrors: UInt64 = 0
    /// Per bucket of ``latencyBounds`` (one more for slower reads): how many reads took that long.
    public var latencyBuckets: [UInt64] = Array(repeating: 0, count: RemoteMetrics.latencyBounds.count + 1)
    public var latencySumSeconds: Double = 0
    public var cacheHits: UInt64 = 0
    public var cacheMisses: UInt64 = 0
    /// Reads answered by each fallback source (the cache only when stale, store unreachable).
    public var fallbacks: [SecretSource: UInt64] = [:]
    /// Store calls that failed to connect or got a 5xx, after retries; and the retries made.
    public var storeFailures: UInt64 = 0
    public var retries: UInt64 = 0
    public var logins: UInt64 = 0
    public var renewals: UInt64 = 0
    /// Cache entries dropped because an event said they changed.
    public var invalidations: UInt64 = 0
    /// "connected", "refused" (the server does not offer events or the token may not subscribe:
    /// TTL only), "disconnected", "off".
    public var subscription = "off"
    public var degraded = false
    public var cacheEntries = 0
    public var cacheBytes = 0

    /// The smallest bucket bound below which at least `quantile` of the reads fall (an estimate).
    public func latencyQuantile(_ quantile: Double) -> Double {
        let total = latencyBuckets.reduce(0, +)
        guard total > 0 else { return 0 }
        let wanted = UInt64((Double(total) * min(max(quantile, 0), 1)).rounded(.up))
        var seen: UInt64 = 0
        for (index, count) in latencyBuckets.enumerated() {
            seen += count
            if seen >= max(wanted, 1) {
                return index < RemoteMetrics.latencyBounds.count ? RemoteMetrics.latencyBounds[index] : .infinity
            }
        }
        return .infinity
    }

    /// OpenBao's sys/metrics JSON shape (`Gauges`, `Counters`, `Samples`), names `coffer.client.*`.
    public func json() -> String {
        var counters: [(String, UInt64, [(String, String)])] = [
            ("coffer.client.reads", reads, []), ("coffer.client.read_errors", readErrors, []),
            ("coffer.client.cache.hits", cacheHits, []), ("coffer.client.cache.misses", cacheMisses, []),
            ("coffer.client.store.failures", storeFailures, []), ("coffer.client.store.retries", retries, []),
            ("coffer.client.auth.logins", logins, []), ("coffer.client.auth.renewals", renewals, []),
            ("coffer.client.cache.invalidations", invalidations, []),
        ]
        for source in [SecretSource.cache, .envFile, .environment] {
            counters.append(("coffer.client.fallbacks", fallbacks[source] ?? 0, [("source", source.rawValue)]))
        }
        func labels(_ pairs: [(String, String)]) -> String {
            "{" + pairs.map { "\(quoted($0.0)):\(quoted($0.1))" }.joined(separator: ",") + "}"
        }
        let gauges: [(String, Double, [(String, String)])] = [
            ("coffer.client.degraded", degraded ? 1 : 0, []),
            ("coffer.client.cache.entries", Double(cacheEntries), []),
            ("coffer.client.cache.bytes", Double(cacheBytes), []),
            ("coffer.client.events.subscribed", subscription == "connected" ? 1 : 0, [("state", subscription)]),
        ]
        var out = "{\"Gauges\":["
        out += gauges.map { "{\"Name\":\(quoted($0.0)),\"Value\":\(number($0.1)),\"Labels\":\(labels($0.2))}" }
            .joined(separator: ",")
        out += "],\"Counters\":["
        out += counters.map {
            "{\"Name\":\(quoted($0.0)),\"Count\":\($0.1),\"Sum\":\($0.1),\"Labels\":\(labels($0.2))}"
        }.joined(separator: ",")
        let count = latencyBuckets.reduce(0, +)
        out +=
            "],\"Samples\":[{\"Name\":\"coffer.client.read\",\"Count\":\(count),\"Sum\":\(number(latencySumSeconds * 1000))"
        out += ",\"Mean\":\(number(count == 0 ? 0 : latencySumSeconds * 1000 / Double(count)))"
        out += ",\"P50\":\(number(latencyQuantile(0.5) * 1000)),\"P99\":\(number(latencyQuantile(0.99) * 1000))"
        out += ",\"Buckets\":{"
        out += latencyBuckets.enumerated().map { index, value in
            let bound =
                index < RemoteMetrics.latencyBounds.count ? number(RemoteMetrics.latencyBounds[index] * 1000) : "+Inf"
            return "\(quoted(bound)):\(value)"
        }.joined(separator: ",")
        out += "},\"Labels\":{}}],"
        out += "\"Client\":{\"degraded\":\(degraded),\"subscription\":\(quoted(subscription))}}"
        return out
    }

    /// The Prometheus text exposition (0.0.4): `coffer_client_*`, the latency as a histogram.
    public func prometheus() -> String {
        var out = ""
        func line(_ name: String, _ type: String, _ samples: [(String, String)]) {
            out += "# TYPE \(name) \(type)\n"
            for (labels, value) in samples { out += "\(name)\(labels) \(value)\n" }
        }
        line("coffer_client_reads_total", "counter", [("", "\(reads)")])
        line("coffer_client_read_errors_total", "counter", [("", "\(readErrors)")])
        line("coffer_client_cache_hits_total", "counter", [("", "\(cacheHits)")])
        line("coffer_client_cache_misses_total", "counter", [("", "\(cacheMisses)")])
        line(
            "coffer_client_fallbacks_total",
            "counter",
            [SecretSource.cache, .envFile, .environment].map {
                ("{source=\"\($0.rawValue)\"}", "\(fallbacks[$0] ?? 0)")
            }
        )
        line("coffer_client_store_failures_total", "counter", [("", "\(storeFailures)")])
        line("coffer_client_store_retries_total", "counter", [("", "\(retries)")])
        line("coffer_client_auth_logins_total", "counter", [("", "\(logins)")])
        line("coffer_client_auth_renewals_total", "counter", [("", "\(renewals)")])
        line("coffer_client_cache_invalidations_total", "counter", [("", "\(invalidations)")])
        line("coffer_client_degraded", "gauge", [("", degraded ? "1" : "0")])
        line("coffer_client_cache_entries", "gauge", [("", "\(cacheEntries)")])
        line("coffer_client_cache_bytes", "gauge", [("", "\(cacheBytes)")])
        var cumulative: UInt64 = 0
        var buckets: [(String, String)] = []
        for (index, count) in latencyBuckets.enumerated() {
            cumulative += count
            let bound = index < RemoteMetrics.latencyBounds.count ? number(RemoteMetrics.latencyBounds[index]) : "+Inf"
            buckets.append(("_bucket{le=\"\(bound)\"}", "\(cumulative)"))
        }
        out += "# TYPE coffer_client_read_seconds histogram\n"
        for (suffix, value) in buckets { out += "coffer_client_read_seconds\(suffix) \(value)\n" }
        out += "coffer_client_read_seconds_sum \(number(latencySumSeconds))\n"
        out += "coffer_client_read_seconds_count \(cumulative)\n"
        return out
    }
}

private func quoted(_ text: String) -> String {
    String(decoding: JSONValue.string(text).serialized(), as: UTF8.self)
}

private func number(_ value: Double) -> String {
    guard value.isFinite else { return "0" }
    if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
    return "\(value)"
}

/// The live counters behind ``RemoteMetrics``.
final class RemoteMeters: Sendable {
    private let state = Mutex(RemoteMetrics())

    func update(_ body: (inout RemoteMetrics) -> Void) { state.withLock { body(&$0) } }

    func recordRead(seconds: Double, hit: Bool?, fallback: SecretSource?, failed: Bool) {
        var bucket = RemoteMetrics.latencyBounds.count
        for (index, bound) in RemoteMetrics.latencyBounds.enumerated() where seconds <= bound {
            bucket = index
            break
        }
        state.withLock { m in
            if failed { m.readErrors &+= 1 } else { m.reads &+= 1 }
            m.latencyBuckets[bucket] &+= 1
            m.latencySumSeconds += seconds
            if let hit {
                if hit { m.cacheHits &+= 1 } else { m.cacheMisses &+= 1 }
            }
            if let fallback { m.fallbacks[fallback, default: 0] &+= 1 }
        }
    }

    var snapshot: RemoteMetrics { state.withLock { $0 } }
}
