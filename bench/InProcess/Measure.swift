// Timing, allocation counting and the JSON every mode writes.
import Coffer
import Foundation

/// Prints a line at once (stdout is a pipe when bench.py runs us, and fully buffered then).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Sleeps for about `nanoseconds` (the kernel's timer slack comes on top).
func pause(nanoseconds: Int) {
    var request = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// CPU time used so far by every thread of this process.
func cpuNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Context switches of the calling thread so far: voluntary (it blocked: a lock, a sleep, I/O) and
/// involuntary (the scheduler preempted it).
func threadContextSwitches() -> (voluntary: Int, involuntary: Int) {
    var usage = rusage()
    // RUSAGE_THREAD (1, Linux) is behind _GNU_SOURCE, so Swift does not import it.
    guard getrusage(__rusage_who_t(1), &usage) == 0 else { return (0, 0) }
    return (usage.ru_nvcsw, usage.ru_nivcsw)
}

/// Allocations made so far by this thread, when bench/malloccount's library is preloaded
/// (LD_PRELOAD); nil otherwise.
func threadAllocations() -> UInt64? {
    typealias Counter = @convention(c) () -> UInt64
    guard let symbol = dlsym(nil, "malloccount_thread") else { return nil }
    return unsafeBitCast(symbol, to: Counter.self)()
}

/// The resident set size of this process (VmRSS) and its peak (VmHWM), in MiB.
func residentMiB() -> (rss: Double, peak: Double) {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Double {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
        return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
    return (field("VmRSS"), field("VmHWM"))
}

/// With COFFER_BENCH_SAMPLES=<directory>, a figure's samples in the order they were taken (nanoseconds, one
/// per line) go to <directory>/<figure name>.txt, to see when the slow ones came (a tail that recurs every
/// N operations is the code's; one that follows the clock is the machine's).
func writeSamplesInOrder(_ name: String, _ samples: [UInt64]) {
    guard let directory = ProcessInfo.processInfo.environment["COFFER_BENCH_SAMPLES"] else { return }
    let file = String(name.map { $0.isLetter || $0.isNumber ? $0 : "-" })
    let text = samples.map(String.init).joined(separator: "\n") + "\n"
    FileManager.default.createFile(atPath: directory + "/" + file + ".txt", contents: Data(text.utf8))
}

/// One measured operation: its latency distribution, throughput on one thread, allocations.
struct Figure {
    let name: String
    let samples: [UInt64]  // sorted, nanoseconds
    let allocationsPerOp: Double?
    var extra: [String: Any] = [:]

    func percentile(_ p: Double) -> Double {
        Double(samples[min(samples.count - 1, Int(Double(samples.count) * p))]) / 1000
    }
    var p50: Double { percentile(0.50) }
    var p90: Double { percentile(0.90) }
    var p99: Double { percentile(0.99) }
    var max: Double { Double(samples.last!) / 1000 }
    /// Operations per second on one thread: the count over the summed latencies (the clock reads
    /// between operations are left out).
    var opsPerSecond: Double { Double(samples.count) / (Double(samples.reduce(0, +)) / 1e9) }

    var json: [String: Any] {
        var out: [String: Any] = [
            "name": name, "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max, "ops_per_s": opsPerSecond,
            "n": samples.count,
        ]
        if let allocationsPerOp { out["allocs_per_op"] = allocationsPerOp }
        return out.merging(extra) { $1 }
    }
}

/// One operation of `Bench.compare`.
struct Compared {
    let name: String
    let body: () throws -> Void
    /// Runs before each round of this operation (and before its warm-up and allocation count),
    /// outside the timings and the CPU count.
    var begin: (() throws -> Void)? = nil
    /// Runs after each round (and after the warm-up and allocation count), inside the CPU count but
    /// outside the timings.
    var settle: (() throws -> Void)? = nil
    /// A pause (a sleep, untimed) after each timed operation, so that the operations sample time
    /// instead of running back to back.
    var pauseNanos: Int = 0
    /// Figures of its own added to the operation's figure, taken once the warm-up and every timed
    /// round are done (before the allocation count).
    var extra: (() -> [String: Any])? = nil
}

/// Runs and records measurements; one instance per mode.
final class Bench {
    let iterations: Int
    let only: String?
    private(set) var figures: [Figure] = []

    init(iterations: Int, only: String?) {
        self.iterations = iterations
        self.only = only
    }

    /// Whether `--only` selects `name`: names starting with it, or, when it ends in `$`, that name alone.
    func selects(_ name: String) -> Bool {
        guard let only else { return true }
        if only.hasSuffix("$") { return name == only.dropLast() }
        return name.hasPrefix(only)
    }

    /// Times `body` `iterations` times (after a warm-up), then counts its allocations over a
    /// separate pass so that counting never perturbs the timings.
    @discardableResult
    func measure(_ name: String, iterations: Int? = nil, _ body: () throws -> Void) rethrows -> Figure? {
        if !selects(name) { return nil }
        let n = iterations ?? self.iterations
        for _ in 0..<Swift.max(10, Swift.min(2000, n / 10)) { try body() }
        var samples = [UInt64](repeating: 0, count: n)
        for i in 0..<n {
            let start = nowNanos()
            try body()
            samples[i] = nowNanos() - start
        }
        writeSamplesInOrder(name, samples)
        samples.sort()
        var allocations: Double?
        if let before = threadAllocations() {
            let passes = Swift.min(n, 1000)
            for _ in 0..<passes { try body() }
            allocations = Double(threadAllocations()! - before) / Double(passes)
        }
        let figure = Figure(name: name, samples: samples, allocationsPerOp: allocations)
        figures.append(figure)
        let allocText = allocations.map { String(format: "%7.1f allocs", $0) } ?? ""
        say(
            String(
                format: "  %-44@ p50 %9.2f µs  p99 %9.2f µs  %10.0f ops/s %@",
                name as NSString,
                figure.p50,
                figure.p99,
                figure.opsPerSecond,
                allocText as NSString
            )
        )
        return figure
    }

    /// Times `operations` in alternating rounds (a noisy machine then slows each alike), so their
    /// ratios are fair. Each figure also carries `cpu_us_per_op`: the process's CPU time (every
    /// thread: work handed to a background thread counts) per operation; `round_p99_us`, each
    /// round's p99; and the measuring thread's context switches during the timed operations:
    /// `voluntary_switches` (it blocked: a lock, a sleep) and `involuntary_switches` (preempted);
    /// with a pause, also what happened to the slowest 1% of the operations (`slowest_1pct_*`).
    /// `settle`, if given, runs after each round of its operation inside the CPU count but outside
    /// the timings.
    func compare(
        _ operations: [(name: String, body: () throws -> Void, settle: (() throws -> Void)?)],
        rounds: Int = 20
    ) throws {
        try compare(operations.map { Compared(name: $0.name, body: $0.body, settle: $0.settle) }, rounds: rounds)
    }

    /// The same, for operations with a `begin` (run before each round, outside the timings and the
    /// CPU count), a pause and `extra` figures. Each operation runs `count` times in all (default:
    /// the suite's iterations).
    func compare(_ operations: [Compared], rounds: Int = 20, count: Int? = nil) throws {
        let selected = operations.filter { selects($0.name) }
        guard !selected.isEmpty else { return }
        let perRound = Swift.max(100, (count ?? iterations) / rounds)
        var samples = [[UInt64]](repeating: [], count: selected.count)
        var cpu = [UInt64](repeating: 0, count: selected.count)
        var roundRates = [[Double]](repeating: [], count: selected.count)
        var roundP99 = [[Double]](repeating: [], count: selected.count)
        var switches = [(voluntary: Int, involuntary: Int)](repeating: (0, 0), count: selected.count)
        // With a pause, each operation's own switches: (nanoseconds, voluntary, involuntary).
        var each = [[(nanos: UInt64, voluntary: Int, involuntary: Int)]](repeating: [], count: selected.count)
        for operation in selected {
            try operation.begin?()
            for _ in 0..<Swift.max(10, Swift.min(2000, perRound)) { try operation.body() }
            try operation.settle?()
        }
        for _ in 0..<rounds {
            for (index, operation) in selected.enumerated() {
                try operation.begin?()
                let cpuStart = cpuNanos()
                var spent: UInt64 = 0
                var round = [UInt64](repeating: 0, count: perRound)
                // The measuring thread's context switches during the operations (a pause's own
                // sleep is not one of them).
                var switchesSince = threadContextSwitches()
                func countSwitches() -> (voluntary: Int, involuntary: Int) {
                    let now = threadContextSwitches()
                    let delta = (
                        voluntary: now.voluntary - switchesSince.voluntary,
                        involuntary: now.involuntary - switchesSince.involuntary
                    )
                    switches[index].voluntary += delta.voluntary
                    switches[index].involuntary += delta.involuntary
                    return delta
                }
                for i in 0..<perRound {
                    let start = nowNanos()
                    try operation.body()
                    let elapsed = nowNanos() - start
                    round[i] = elapsed
                    spent += elapsed
                    if operation.pauseNanos > 0 {
                        let delta = countSwitches()
                        each[index].append((elapsed, delta.voluntary, delta.involuntary))
                        pause(nanoseconds: operation.pauseNanos)
                        switchesSince = threadContextSwitches()
                    }
                }
                if operation.pauseNanos == 0 { _ = countSwitches() }
                roundRates[index].append(Double(perRound) / (Double(spent) / 1e9))
                try operation.settle?()
                cpu[index] += cpuNanos() - cpuStart
                samples[index] += round
                round.sort()
                roundP99[index].append(Double(round[Swift.min(perRound - 1, perRound * 99 / 100)]) / 1000)
            }
        }
        // Taken before the allocation counts, so they cover the warm-up and the timed rounds only.
        let extras = selected.map { $0.extra?() ?? [:] }
        for (index, operation) in selected.enumerated() {
            var allocations: Double?
            if let before = threadAllocations() {
                // Under the same conditions as the timed rounds (the counter is this thread's alone).
                try operation.begin?()
                for _ in 0..<1000 { try operation.body() }
                allocations = Double(threadAllocations()! - before) / 1000
                try operation.settle?()
            }
            var figure = Figure(name: operation.name, samples: samples[index].sorted(), allocationsPerOp: allocations)
            figure.extra["cpu_us_per_op"] = Double(cpu[index]) / Double(rounds * perRound) / 1000
            figure.extra["round_ops_per_s"] = roundRates[index]
            figure.extra["round_p99_us"] = roundP99[index]
            figure.extra["voluntary_switches"] = switches[index].voluntary
            figure.extra["involuntary_switches"] = switches[index].involuntary
            if operation.pauseNanos > 0 {
                figure.extra["pause_us"] = Double(operation.pauseNanos) / 1000
                // What happened to the slowest 1%: blocked (at least one voluntary switch), else
                // preempted (an involuntary one), else slow without leaving the CPU.
                let slowest = each[index].sorted { $0.nanos > $1.nanos }.prefix(Swift.max(1, each[index].count / 100))
                figure.extra["slowest_1pct_from_us"] = Double(slowest.last?.nanos ?? 0) / 1000
                figure.extra["slowest_1pct_blocked"] = slowest.filter { $0.voluntary > 0 }.count
                figure.extra["slowest_1pct_preempted"] =
                    slowest.filter { $0.voluntary == 0 && $0.involuntary > 0 }.count
                figure.extra["slowest_1pct_on_cpu"] = slowest.filter { $0.voluntary == 0 && $0.involuntary == 0 }.count
            }
            figure.extra.merge(extras[index]) { $1 }
            figures.append(figure)
            say(
                String(
                    format: "  %-44@ p50 %9.2f µs  p99 %9.2f µs  %10.0f ops/s  CPU %6.2f µs/op",
                    operation.name as NSString,
                    figure.p50,
                    figure.p99,
                    figure.opsPerSecond,
                    figure.extra["cpu_us_per_op"] as! Double
                )
            )
        }
    }

    func record(_ figure: Figure) { figures.append(figure) }

    /// The median over the rounds of `compare` of 1 - (ops/s of `name`) / (ops/s of `reference`) in
    /// the same round: the cost of what `name` adds, robust to a neighbour slowing a whole phase.
    func medianRoundCost(_ name: String, reference: String) -> Double? {
        guard let a = figure(name)?.extra["round_ops_per_s"] as? [Double],
            let b = figure(reference)?.extra["round_ops_per_s"] as? [Double], a.count == b.count, !a.isEmpty
        else { return nil }
        let costs = zip(a, b).map { 1 - $0 / $1 }.sorted()
        return costs[costs.count / 2]
    }

    func figure(_ name: String) -> Figure? { figures.first { $0.name == name } }
}

/// Facts about the machine and build that every results file carries.
func environment() -> [String: Any] {
    var uts = utsname()
    uname(&uts)
    func text<T>(_ value: T) -> String {
        withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
    return [
        "machine": text(uts.machine), "kernel": text(uts.release),
        "cores": ProcessInfo.processInfo.activeProcessorCount,
        "memory_gib": Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824,
        "coffer_version": CofferVersion.versionString, "date": ISO8601DateFormatter().string(from: Date()),
        "command": CommandLine.arguments.joined(separator: " "),
    ]
}

func writeJSON(_ document: [String: Any], to path: String) throws {
    try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
        .write(to: URL(fileURLWithPath: path))
}
