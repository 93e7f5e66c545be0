// Issue 19: the cost of a rate-limit quota on the read path. The same KV v2 read in two vaults set
// up alike, one with a generous quota on the mount (never refusing), in alternating rounds.
import Coffer
import Foundation

/// Returns `quota_read_p50_ratio` (quota-checked read p50 over the unquoted read's, same run) and
/// `quota_read_round_cost` (the median fraction of reads per second lost, round by round).
func measureQuotaCheck(_ bench: Bench, payload: [String: JSONValue]) throws -> [String: Any] {
    func reader(quota: Bool) throws -> (Vault, String) {
        let (vault, _) = try Vault.openDev(rootTokenID: "bench-root")
        if quota {
            _ = try vault.handle(
                Request(
                    .update,
                    "sys/quotas/rate-limit/generous",
                    data: ["rate": 1_000_000_000, "interval": "1s", "path": "secret/"],
                    token: "bench-root"
                )
            )
        }
        return (vault, try readerToken(vault, payload: payload))
    }
    let (plain, plainToken) = try reader(quota: false)
    defer { plain.close() }
    let (quoted, quotedToken) = try reader(quota: true)
    defer { quoted.close() }
    let reference = "quota: kv read, no quota (reference)"
    let checked = "quota: kv read, a rate-limit quota on the mount"
    try bench.compare([
        (reference, { _ = try plain.handle(Request(.read, "secret/data/app/db", token: plainToken)) }, nil),
        (checked, { _ = try quoted.handle(Request(.read, "secret/data/app/db", token: quotedToken)) }, nil),
    ])
    guard let a = bench.figure(checked), let b = bench.figure(reference) else { return [:] }
    var summary: [String: Any] = ["quota_read_p50_ratio": a.p50 / b.p50]
    // The median over the rounds of the throughput lost within a round: steadier on a noisy machine.
    if let cost = bench.medianRoundCost(checked, reference: reference) { summary["quota_read_round_cost"] = cost }
    return summary
}
