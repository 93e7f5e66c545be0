package import CofferCore
package import CofferVault

/// The forms ``Vault/metrics(_:)`` renders the vault's meters in (docs/metrics.md).
public enum MetricsFormat: Sendable {
    /// OpenBao's `sys/metrics` JSON: `{"Timestamp", "Gauges", "Points", "Counters", "Samples"}`.
    case json
    /// The Prometheus text exposition (version 0.0.4), as `sys/metrics?format=prometheus`.
    case prometheus
}

extension Vault {
    /// The vault's counters, gauges and latency summaries, as `sys/metrics` answers them, without a
    /// token: the embedding program owns the vault. Never fails; thread-safe.
    public func metrics(_ format: MetricsFormat = .json) -> String {
        let report = core.metricsReport()
        return String(decoding: format == .json ? report.json() : report.prometheus(), as: UTF8.self)
    }

    /// `GET sys/metrics` answered without a token, for a cofferd listener with
    /// `unauthenticated_metrics_access` (as OpenBao's handler serves it there): `target` is the
    /// request target ("/v1/sys/metrics?format=prometheus"). An unknown format is a 400.
    package func unauthenticatedMetricsWire(target: String) -> WireResult {
        do {
            let request = try Wire.parse(method: "GET", path: target, token: nil, body: [], id: "")
            let response = try core.metricsResponse(format: request.data["format"]?.stringValue ?? "")
            let (contentType, body) = response.body ?? ("application/json", [])
            return WireResult(status: 200, body: body, outcome: .ok, contentType: contentType)
        } catch {
            let (status, body) = Wire.errorBody(error)
            return WireResult(status: status, body: body, error: error)
        }
    }
}
