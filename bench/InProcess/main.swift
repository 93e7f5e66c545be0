// coffer-bench: Coffer's in-process benchmarks. bench/bench.py runs every mode (and the C, HTTP and
// OpenBao comparisons) and merges the results; each mode also runs on its own:
//
//   swift run -c release coffer-bench [inprocess] [--iterations N] [--only PREFIX | --only NAME$] [--json PATH]
//   swift run -c release coffer-bench scale --secrets N [--data-dir DIR] [--iterations N] [--json PATH] [--build-only]
//   swift run -c release coffer-bench namespaces --secrets N [--data-dir DIR] [--json PATH] [--build-only]
//       (N namespaces, each with a KV v2 mount; issue 19, Namespaces.swift)
//   swift run -c release coffer-bench hsm [--runs N] [--json PATH]
//   swift run -c release coffer-bench database [--creds N] [--rounds R] [--leases N] [--chunks C] [--opens O]
//       [--postgres-port P --postgres-password X] [--json PATH]      (issue 15; see Database.swift)
//   swift run -c release coffer-bench postgres     (a PostgreSQL for bench.py, until stdin closes)
//   swift run -c release coffer-bench auth [--iterations N] [--rounds R] [--json PATH]   (issue 17; Auth.swift)
//   swift run -c release coffer-bench events [--iterations N] [--rounds R] [--json PATH]   (issue 20; Events.swift)
//
// Reports distributions (p50, p90, p99, max), operations per second on one thread, and allocations
// per operation when bench/malloccount's library is preloaded (bench.py does that). Machines are
// shared and noisy: compare ratios measured in the same run, not absolute numbers.
import Coffer
import Foundation

var mode = "inprocess"
var iterations: Int?
var jsonPath: String?
var only: String?
var secrets = 1000
var dataDirectory = ".build/bench-data"
var runs = 50
var buildOnly = false
var creds = 1000
var rounds = 10
var leases = 0
var chunks = 10
var opens = 7
var postgresPort: Int?
var postgresPassword: String?
var args = CommandLine.arguments.dropFirst()
if let first = args.first, !first.hasPrefix("-") { mode = args.removeFirst() }
while let arg = args.popFirst() {
    switch arg {
    case "--iterations": iterations = args.popFirst().flatMap { Int($0) }
    case "--json": jsonPath = args.popFirst()
    case "--only": only = args.popFirst()
    case "--secrets": secrets = args.popFirst().flatMap { Int($0) } ?? secrets
    case "--data-dir": dataDirectory = args.popFirst() ?? dataDirectory
    case "--runs": runs = args.popFirst().flatMap { Int($0) } ?? runs
    case "--build-only": buildOnly = true
    case "--creds": creds = args.popFirst().flatMap { Int($0) } ?? creds
    case "--rounds": rounds = args.popFirst().flatMap { Int($0) } ?? rounds
    case "--leases": leases = args.popFirst().flatMap { Int($0) } ?? leases
    case "--chunks": chunks = args.popFirst().flatMap { Int($0) } ?? chunks
    case "--opens": opens = args.popFirst().flatMap { Int($0) } ?? opens
    case "--postgres-port": postgresPort = args.popFirst().flatMap { Int($0) }
    case "--postgres-password": postgresPassword = args.popFirst()
    default:
        FileHandle.standardError.write(
            Data(
                "usage: coffer-bench [inprocess|scale|hsm|database|postgres] [options]; see bench/InProcess/main.swift\n"
                    .utf8
            )
        )
        exit(2)
    }
}

let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-bench-\(UUID().uuidString)")
try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: scratch) }
/// exit() skips the defer above: every exit after this point goes through here, so no run leaves its directory behind.
func finish(_ code: Int32) -> Never {
    try? FileManager.default.removeItem(at: scratch)
    exit(code)
}

let bench = Bench(iterations: iterations ?? (mode == "scale" ? 20_000 : 50_000), only: only)
let summary: [String: Any]
do {
    switch mode {
    case "inprocess": summary = try runInProcess(bench, directory: scratch)
    case "scale" where buildOnly:
        // Builds the cached database if it is missing; measuring is left to a fresh process, so
        // that its memory figures do not include the build's.
        let data = try scaleData(count: secrets, directory: dataDirectory)
        say(
            "  \(secrets) secrets: \(data.reused ? "cached" : String(format: "built in %.0f s", data.buildSeconds)) at \(data.databasePath)"
        )
        finish(0)
    case "scale": summary = try runScale(bench, count: secrets, directory: dataDirectory)
    case "namespaces" where buildOnly:
        let data = try namespaceData(count: secrets, directory: dataDirectory)
        say("  \(secrets) namespaces: \(data.reused ? "cached" : String(format: "built in %.0f s", data.buildSeconds))")
        finish(0)
    case "namespaces": summary = try runNamespaceScale(bench, count: secrets, directory: dataDirectory)
    case "hsm": summary = try runHSM(bench, directory: scratch, runs: runs)
    case "database":
        summary = try runDatabase(
            bench,
            directory: scratch,
            creds: creds,
            rounds: rounds,
            leases: leases,
            chunks: chunks,
            opens: opens,
            postgresPort: postgresPort,
            postgresPassword: postgresPassword
        )
    case "auth": summary = try runAuth(bench, iterations: iterations ?? 3000, rounds: rounds)
    case "events": summary = try runEvents(bench, iterations: iterations ?? 5000, rounds: rounds)
    case "pki": summary = try runPKI(bench, scratch, iterations ?? 2000, rounds: rounds, rsa: runs, revokes: secrets)
    case "postgres":
        try runPostgresHelper()
        finish(0)
    default:
        FileHandle.standardError.write(
            Data("unknown mode \(mode); use inprocess, scale, namespaces, hsm, database, pki, auth or postgres\n".utf8)
        )
        finish(2)
    }
} catch {
    FileHandle.standardError.write(Data("coffer-bench \(mode) failed: \(error)\n".utf8))
    finish(1)
}

if mode == "inprocess", only == nil {
    say("")
    say("| operation | p50 µs | p90 µs | p99 µs | max µs | ops/s | allocs/op |")
    say("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for f in bench.figures {
        let allocs = f.allocationsPerOp.map { String(format: "%.1f", $0) } ?? "n/a"
        say(
            String(
                format: "| %@ | %.2f | %.2f | %.2f | %.1f | %.0f | %@ |",
                f.name as NSString,
                f.p50,
                f.p90,
                f.p99,
                f.max,
                f.opsPerSecond,
                allocs as NSString
            )
        )
    }
    if let ratio = summary["kv_read_over_floor_p50"] as? Double {
        say(String(format: "\nKV read p50 / floor p50 (raw SQLite point read + raw AES-256-GCM open): %.1fx", ratio))
    }
    if let ratio = summary["concurrent_write_read_p99_ratio"] as? Double,
        let writes = bench.figure("kv read (one concurrent writer)")?.extra["writer_writes_per_s"] as? Double
    {
        say(
            String(
                format:
                    "KV read p99 with one concurrent writer / p99 alone (same run): %.2fx; the writer made %.0f writes/s",
                ratio,
                writes
            )
        )
        if let pinned = summary["concurrent_write_other_core_read_p99_ratio"] as? Double {
            say(String(format: "  the same with the reader and the writer each on a CPU of its own: %.2fx", pinned))
        }
    }
    if let cost = summary["audit_cost_fraction"] as? Double, let cpu = summary["audit_cpu_cost_fraction"] as? Double,
        let syncAll = summary["audit_sync_all_cost_fraction"] as? Double
    {
        say(
            String(
                format:
                    "file audit cost on KV read throughput (one thread): %.0f%%; in CPU time, all threads: %.0f%%; with sync=all: %.0f%%",
                cost * 100,
                cpu * 100,
                syncAll * 100
            )
        )
    }
}

if let jsonPath {
    var document = environment()
    document["mode"] = mode
    document["iterations"] = bench.iterations
    document["results"] = bench.figures.map(\.json)
    document["summary"] = summary
    try writeJSON(document, to: jsonPath)
}
