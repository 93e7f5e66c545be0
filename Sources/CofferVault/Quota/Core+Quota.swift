package import CofferCore

extension Core {
    /// Handles one request (``handle(_:quota:)`` without the quota outcome, for callers that send
    /// no rate-limit headers: the Swift API and the C ABI's fast paths).
    package func handle(_ request: consuming Request) throws(CofferError) -> Response {
        var quota: QuotaOutcome?
        return try handle(request, quota: &quota)
    }

    /// The quota step of ``handle(_:quota:)``: records the outcome (for the response headers) and
    /// throws the refusal, a 429.
    func checkQuotas(
        _ request: Request,
        _ mount: RoutedMount,
        login: Bool,
        now: Timestamp,
        _ quota: inout QuotaOutcome?
    ) throws(CofferError) {
        guard let outcome = quotas.check(request, mount: mount, login: login, now: now) else {
            return
        }
        quota = outcome
        if let refusal = outcome.refusal { throw refusal }
    }
}
