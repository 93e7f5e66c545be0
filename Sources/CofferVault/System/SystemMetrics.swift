package import CofferCore
package import CofferFramework

/// `sys/metrics`: the vault's meters in OpenBao's JSON form, or `?format=prometheus` as the
/// Prometheus text exposition (Metrics/MetricsReport.swift, docs/metrics.md). Like any other path
/// it needs a token whose policy allows `read` on `sys/metrics`; cofferd can serve it without one
/// on a listener with `telemetry { unauthenticated_metrics_access = true }`, as OpenBao does.
extension SystemBackend {
    static let metricsPaths: [Path<SystemBackend>] = [
        Path("metrics", fields: [.string("format")], read: SystemBackend.metrics)
    ]

    func metrics(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.metricsResponse(format: request.fields.string("format") ?? "")
    }
}
