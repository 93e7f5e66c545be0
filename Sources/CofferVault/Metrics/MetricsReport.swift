package import CofferCore

/// What `sys/metrics` shows: every meter of a vault read once, in the two forms OpenBao serves
/// (go-metrics' JSON summary and the Prometheus text exposition). docs/metrics.md describes each
/// metric and where Coffer's numbers differ from OpenBao's (cumulative, not per 10 s interval).
package struct MetricsReport: Sendable {
    package enum Value: Sendable {
        case gauge(Double)
        /// Increments of one: how many.
        case counter(UInt64)
        /// Durations, reported in milliseconds as OpenBao does.
        case summary(SummarySnapshot)
    }

    package struct Metric: Sendable {
        /// The go-metrics name, with dots: "vault.core.handle_request".
        package var name: String
        package var labels: [(String, String)]
        package var value: Value
    }

    /// Wall-clock time of the scrape.
    package var time: Timestamp
    /// Seconds the meters have been counting (the denominator of Rate).
    package var seconds: Double
    package var metrics: [Metric]

    /// The two forms `sys/metrics` answers in.
    package enum Format: Sendable {
        case json, prometheus

        /// `format=` of sys/metrics: "" is JSON, "prometheus" the text exposition (OpenBao's two).
        package init(query: String) throws(CofferError) {
            switch query {
            case "": self = .json
            case "prometheus": self = .prometheus
            default:
                let shown = query.utf8.count <= 64 ? query : String(query.prefix(64)) + "…"
                throw CofferError.invalid(
                    "metric response format \"\(shown)\" unknown; use format=prometheus, or no format for JSON"
                )
            }
        }
    }

    /// The Prometheus text exposition's content type (version 0.0.4), as OpenBao sends it.
    package static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    package func rendered(_ format: Format) -> (contentType: String, body: [UInt8]) {
        switch format {
        case .json: ("application/json", json())
        case .prometheus: (MetricsReport.prometheusContentType, prometheus())
        }
    }
}

extension Core {
    /// Reads every meter now. Gauges that need the vault unsealed (leases, mounts) are 0 while sealed.
    package func metricsReport() -> MetricsReport {
        let meters = barrier.meters
        let now = MonotonicClock.now()
        var metrics: [MetricsReport.Metric] = []
        func add(_ name: String, _ value: MetricsReport.Value, _ labels: [(String, String)] = []) {
            metrics.append(MetricsReport.Metric(name: name, labels: labels, value: value))
        }
        let cluster = [("cluster", clusterIdentity.name)]
        let unsealed = !barrier.isSealed
        add("vault.core.unsealed", .gauge(unsealed ? 1 : 0), cluster)
        // One node, never a standby: active whenever unsealed.
        add("vault.core.active", .gauge(unsealed ? 1 : 0), cluster)
        if unsealed, let table = root.routes {
            var entries: [String: Int] = [:]
            for mount in table.mounts {
                let type = mount.kind == .auth || mount.prefix.hasPrefix("auth/") ? "auth" : "logical"
                entries["\(type) \(mount.entry.local)", default: 0] += 1
            }
            for type in ["auth", "logical"] {
                for local in [false, true] {
                    add(
                        "vault.core.mount_table.num_entries",
                        .gauge(Double(entries["\(type) \(local)"] ?? 0)),
                        cluster + [("local", String(local)), ("type", type)]
                    )
                }
            }
        }
        let leaseCount = unsealed ? ((try? leases.ids(prefix: ""))?.count ?? 0) : 0
        add("vault.expire.num_leases", .gauge(Double(leaseCount)))
        if let cache = barrier.physical as? CachingBackend {
            add("vault.cache.hit", .counter(cache.hits))
            add("vault.cache.miss", .counter(cache.misses))
            add("coffer.cache.bytes", .gauge(Double(cache.cachedBytes)))
            add("coffer.cache.capacity_bytes", .gauge(Double(cache.capacity)))
        }
        add("vault.audit.log_request_failure", .counter(meters.auditRequestFailure.value))
        add("vault.audit.log_response_failure", .counter(meters.auditResponseFailure.value))
        add("coffer.token.cache.hit", .counter(meters.tokenCacheHit.value))
        add("coffer.token.cache.miss", .counter(meters.tokenCacheMiss.value))
        // Events (docs/events.md): subscribers dropped for a full queue, events a callback's full queue lost.
        let eventDrops = events.dropCounts
        add("coffer.events.subscribers_dropped", .counter(eventDrops.subscribers))
        add("coffer.events.dropped", .counter(eventDrops.events))
        add("coffer.events.subscribers", .gauge(Double(events.subscriptionCount)))
        for (name, count) in quotas.violationCounts() {
            add("vault.quota.rate_limit.violation", .counter(count), [("name", name)])
        }
        let summaries: [(String, Summary)] = [
            ("vault.core.handle_request", meters.handleRequest),
            ("vault.core.handle_login_request", meters.handleLoginRequest),
            ("vault.barrier.get", meters.barrierGet), ("vault.barrier.put", meters.barrierPut),
            ("vault.barrier.delete", meters.barrierDelete), ("vault.barrier.list", meters.barrierList),
            ("coffer.barrier.batch", meters.barrierBatch),
            ("vault.token.lookup", meters.tokenLookup), ("vault.token.create", meters.tokenCreate),
        ]
        for (name, summary) in summaries { add(name, .summary(summary.snapshot(now: now))) }
        // A route shows once it has served a call, as in OpenBao: "vault.route.read.secret-".
        for route in meters.allRoutes() {
            let mount = String(route.prefix.map { $0 == "/" ? "-" : $0 })
            for (operation, summary) in route.all {
                let snapshot = summary.snapshot(now: now)
                if snapshot.count > 0 { add("vault.route.\(operation.metricName).\(mount)", .summary(snapshot)) }
            }
        }
        metrics.sort {
            $0.name == $1.name ? $0.labels.lexicographicallyPrecedes($1.labels) { $0 < $1 } : $0.name < $1.name
        }
        return MetricsReport(
            time: clock.now(),
            seconds: Double(now &- meters.started) / 1e9,
            metrics: metrics
        )
    }

    /// `sys/metrics` (and `coffer_metrics`): the report in `format` ("" for JSON, "prometheus").
    package func metricsResponse(format: String) throws(CofferError) -> Response {
        let (contentType, body) = metricsReport().rendered(try MetricsReport.Format(query: format))
        return .rawBody(body, contentType: contentType)
    }
}

// MARK: JSON (go-metrics' MetricsSummary, as OpenBao's sys/metrics answers it, without an envelope)

extension MetricsReport {
    /// `{"Timestamp":…,"Gauges":[…],"Points":[],"Counters":[…],"Samples":[…]}` in OpenBao's key order.
    package func json() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256 * metrics.count + 64)
        out.append(contentsOf: #"{"Timestamp":""#.utf8)
        out.append(contentsOf: MetricsReport.goTime(time).utf8)
        out.append(contentsOf: #"","Gauges":["#.utf8)
        var first = true
        for metric in metrics {
            guard case .gauge(let value) = metric.value else { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            open(metric, &out)
            out.append(contentsOf: #","Value":"#.utf8)
            MetricsReport.number(value, &out)
            labels(metric, &out)
        }
        out.append(contentsOf: #"],"Points":[],"Counters":["#.utf8)
        first = true
        for metric in metrics {
            guard case .counter(let count) = metric.value else { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            open(metric, &out)
            // Each increment is 1: min, max and mean are 1 (0 before the first), the spread 0.
            let one: Double = count > 0 ? 1 : 0
            aggregate(count: count, sum: Double(count), min: one, max: one, mean: one, stddev: 0, &out)
            labels(metric, &out)
        }
        out.append(contentsOf: #"],"Samples":["#.utf8)
        first = true
        for metric in metrics {
            guard case .summary(let s) = metric.value else { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            open(metric, &out)
            let timed = s.timed > 0
            aggregate(
                count: s.count,
                sum: s.estimatedSumNanoseconds / 1e6,
                min: timed ? Double(s.minNanoseconds) / 1e6 : 0,
                max: timed ? Double(s.maxNanoseconds) / 1e6 : 0,
                mean: s.meanNanoseconds / 1e6,
                stddev: s.stddevNanoseconds / 1e6,
                &out
            )
            labels(metric, &out)
        }
        out.append(contentsOf: "]}".utf8)
        return out
    }

    private func open(_ metric: Metric, _ out: inout [UInt8]) {
        out.append(contentsOf: #"{"Name":"#.utf8)
        JSONValue.writeString(metric.name, to: &out)
    }

    private func labels(_ metric: Metric, _ out: inout [UInt8]) {
        out.append(contentsOf: #","Labels":{"#.utf8)
        for (index, (key, value)) in metric.labels.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            JSONValue.writeString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            JSONValue.writeString(value, to: &out)
        }
        out.append(contentsOf: "}}".utf8)
    }

    private func aggregate(
        count: UInt64,
        sum: Double,
        min: Double,
        max: Double,
        mean: Double,
        stddev: Double,
        _ out: inout [UInt8]
    ) {
        let fields: [(String, Double)] = [
            ("Rate", seconds > 0 ? sum / seconds : 0), ("Sum", sum), ("Min", min), ("Max", max), ("Mean", mean),
            ("Stddev", stddev),
        ]
        out.append(contentsOf: #","Count":"#.utf8)
        out.append(contentsOf: String(count).utf8)
        for (key, value) in fields {
            out.append(contentsOf: ",\"\(key)\":".utf8)
            MetricsReport.number(value, &out)
        }
    }

    /// Go's `time.Time.String()` of the second: "2026-11-30 10:56:40 +0000 UTC".
    static func goTime(_ time: Timestamp) -> String {
        let text = Timestamp(seconds: time.seconds).rfc3339  // "2026-11-30T10:56:40Z"
        return String(text.prefix(10)) + " " + String(text.dropFirst(11).prefix(8)) + " +0000 UTC"
    }

    /// A JSON or Prometheus number: whole numbers without a fraction, others in Swift's shortest
    /// round-tripping form; JSON has no NaN or infinity, so those (never produced) become 0.
    static func number(_ value: Double, _ out: inout [UInt8], allowNaN: Bool = false) {
        if value.isNaN {
            out.append(contentsOf: (allowNaN ? "NaN" : "0").utf8)
        } else if value.isInfinite {
            out.append(contentsOf: (allowNaN ? (value > 0 ? "+Inf" : "-Inf") : "0").utf8)
        } else if value == value.rounded(), abs(value) < 1e15 {
            out.append(contentsOf: String(Int64(value)).utf8)
        } else {
            out.append(contentsOf: value.description.utf8)
        }
    }
}

// MARK: Prometheus text exposition 0.0.4 (as OpenBao's prometheus sink writes it)

extension MetricsReport {
    /// Families sorted by name, each with `# HELP` and `# TYPE`; summaries in milliseconds with the
    /// 0.5, 0.9 and 0.99 quantiles (NaN when nothing was timed recently), `_sum` and `_count`.
    package func prometheus() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(300 * metrics.count)
        var families: [(name: String, metrics: [Metric])] = []
        var index: [String: Int] = [:]
        for metric in metrics {
            let name = MetricsReport.prometheusName(metric.name)
            if let at = index[name] {
                // Two go-metrics names can map to one Prometheus name ("a.b" and "a-b" mounts); the
                // first keeps it, so the exposition never repeats a series.
                guard families[at].metrics[0].name == metric.name else { continue }
                families[at].metrics.append(metric)
            } else {
                index[name] = families.count
                families.append((name, [metric]))
            }
        }
        families.sort { $0.name < $1.name }
        for (name, group) in families {
            let type: String
            switch group[0].value {
            case .gauge: type = "gauge"
            case .counter: type = "counter"
            case .summary: type = "summary"
            }
            out.append(contentsOf: "# HELP \(name) \(name)\n# TYPE \(name) \(type)\n".utf8)
            for metric in group {
                switch metric.value {
                case .gauge(let value):
                    line(name, metric.labels, value, &out)
                case .counter(let count):
                    line(name, metric.labels, Double(count), &out)
                case .summary(let s):
                    for (rank, quantile) in [("0.5", 0), ("0.9", 1), ("0.99", 2)] {
                        let value = s.quantiles.map { $0[quantile] / 1e6 } ?? .nan
                        line(name, metric.labels + [("quantile", rank)], value, &out)
                    }
                    line(name + "_sum", metric.labels, s.estimatedSumNanoseconds / 1e6, &out)
                    line(name + "_count", metric.labels, Double(s.count), &out)
                }
            }
        }
        return out
    }

    private func line(_ name: String, _ labels: [(String, String)], _ value: Double, _ out: inout [UInt8]) {
        out.append(contentsOf: name.utf8)
        if !labels.isEmpty {
            out.append(UInt8(ascii: "{"))
            for (index, (key, text)) in labels.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: MetricsReport.prometheusName(key).utf8)
                out.append(contentsOf: "=\"".utf8)
                for byte in text.utf8 {
                    switch byte {
                    case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
                    case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
                    case UInt8(ascii: "\n"): out.append(contentsOf: #"\n"#.utf8)
                    default: out.append(byte)
                    }
                }
                out.append(UInt8(ascii: "\""))
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: " "))
        MetricsReport.number(value, &out, allowNaN: true)
        out.append(UInt8(ascii: "\n"))
    }

    /// A Prometheus metric or label name: every character outside `[a-zA-Z0-9_:]` becomes `_`
    /// ("vault.route.read.secret-" → "vault_route_read_secret_"), and a leading digit gets a `_`.
    package static func prometheusName(_ name: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(name.utf8.count + 1)
        for byte in name.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: ":"):
                bytes.append(byte)
            default:
                bytes.append(UInt8(ascii: "_"))
            }
        }
        if let first = bytes.first, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") {
            bytes.insert(UInt8(ascii: "_"), at: 0)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
