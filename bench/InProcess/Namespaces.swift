// Namespaces at scale (issue 19): the time to open and unseal a vault of N namespaces, each with
// a KV v2 mount and a secret, and the memory it holds after; one size per process (the driver runs
// 0, 1,000 and 10,000), so the resident set belongs to that size. The databases are built once
// through the real namespace API and kept under the data directory.
import Coffer
import CofferFramework
import CofferStorage
import Engines
import Foundation

/// The cached database of `count` namespaces, built first if it is missing.
func namespaceData(count: Int, directory: String) throws -> ScaleData {
    try cachedDatabase("namespaces-\(scaleLayout)-\(count)", directory: directory) { core, root in
        let start = nowNanos()
        for i in 0..<count {
            let name = NamespaceBench.name(i)
            _ = try core.handle(Request(.update, "sys/namespaces/\(name)", token: root))
            _ = try core.handle(
                Request(
                    .update,
                    "\(name)/sys/mounts/kv",
                    data: ["type": "kv", "options": ["version": "2"]],
                    token: root
                )
            )
            _ = try core.handle(
                Request(.update, "\(name)/kv/data/app/db", data: ["data": ["password": .string("p-\(i)")]], token: root)
            )
            if i % 2_000 == 1_999 {
                say(
                    String(
                        format: "  building %d namespaces: %d made (%.0f s)",
                        count,
                        i + 1,
                        Double(nowNanos() - start) / 1e9
                    )
                )
            }
        }
        return root
    }
}

enum NamespaceBench {
    static func name(_ i: Int) -> String { "tenant-" + String(format: "%05d", i) }
}

/// Opens and unseals the vault of `count` namespaces `opens` times; reads a secret in one of them.
func runNamespaceScale(_ bench: Bench, count: Int, directory: String, opens: Int = 5) throws -> [String: Any] {
    let data = try namespaceData(count: count, directory: directory)
    let before = residentMiB()
    let (opened, samples) = try openAndUnseal(data, times: opens)
    defer { opened.close() }
    let afterOpen = residentMiB()
    var read: Figure?
    if count > 0 {
        let request = Request(.read, "\(NamespaceBench.name(count / 2))/kv/data/app/db", token: data.token)
        read = try bench.measure("kv read in one of \(count) namespaces") { _ = try opened.handle(request) }
    }
    let sorted = samples.sorted()
    let median = Double(sorted[sorted.count / 2]) / 1e6
    say(
        String(
            format: "  open + unseal with %d namespaces: median %.1f ms; RSS %.0f MiB after open (%.0f before)",
            count,
            median,
            afterOpen.rss,
            before.rss
        )
    )
    return [
        "namespaces": count, "build_seconds": data.buildSeconds, "build_reused": data.reused,
        "open_unseal_median_ms": median, "open_unseal_first_ms": Double(samples[0]) / 1e6,
        "rss_before_open_mib": before.rss, "rss_after_open_mib": afterOpen.rss,
        "read_p50_us": read?.p50 ?? 0, "read_p99_us": read?.p99 ?? 0,
    ]
}
