// KV reads next to a concurrent writer: the same reads alone and while a second thread writes KV v2
// secrets continuously (each write a SQLite transaction with synchronous=FULL, so an fsync), in
// alternating rounds. Storage that serialises reads behind writes shows up as a read p99 near the
// length of a write; a reader that never waits for a commit keeps its p99 near the one it has alone.
import Coffer
import Foundation
import Synchronization

/// A second thread that calls `write` back to back while switched on, and waits while off. It
/// counts the writes that complete and times each, per measuring window label, so a result can
/// show that it really wrote.
// @unchecked: every mutable field is read and written holding `condition`.
final class ConcurrentWriter: @unchecked Sendable {
    private let condition = NSCondition()
    private let write: @Sendable (Int) throws -> Void
    private var wanted = false
    /// True from just before a write starts until the thread comes back to wait: `stop` returns
    /// only once no write is in flight.
    private var writing = false
    private var exiting = false
    private var exited = false
    private var failure: (any Error)?
    private var completed = 0
    private var latencies: [UInt64] = []
    /// The CPU the thread should run on while writing (nil: wherever it may).
    private var cpu: Int?
    private var window: (label: String, writes: Int, latencies: Int, nanos: UInt64)?
    private var windows: [String: (writes: Int, nanos: UInt64, latencies: [UInt64])] = [:]

    /// `write(n)` makes the n-th write (n counts from 0).
    init(_ write: @escaping @Sendable (Int) throws -> Void) {
        self.write = write
        let thread = Thread { [self] in run() }
        thread.name = "coffer-bench writer"
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func run() {
        let anywhere = CPUAffinity.current()
        var applied: Int?
        condition.lock()
        while true {
            while !wanted && !exiting {
                if writing {
                    writing = false
                    condition.broadcast()
                }
                condition.wait()
            }
            if exiting { break }
            if cpu != applied {
                applied = cpu
                if let cpu { CPUAffinity.set(CPUAffinity.only(cpu)) } else if let anywhere { CPUAffinity.set(anywhere) }
            }
            writing = true
            condition.broadcast()
            let n = completed
            condition.unlock()
            let start = nowNanos()
            do {
                try write(n)
            } catch {
                condition.lock()
                failure = error
                break
            }
            let elapsed = nowNanos() - start
            condition.lock()
            completed += 1
            latencies.append(elapsed)
        }
        writing = false
        exited = true
        condition.broadcast()
        condition.unlock()
    }

    /// Switches the writer on (on `cpu`, if given) and returns once its first write is under way;
    /// a measuring window labelled `label` starts here.
    func start(_ label: String, cpu: Int? = nil) throws {
        condition.lock()
        defer { condition.unlock() }
        self.cpu = cpu
        wanted = true
        condition.broadcast()
        while !writing && failure == nil && !exited { condition.wait() }
        if let failure { throw failure }
        window = (label, completed, latencies.count, nowNanos())
    }

    /// Ends the measuring window (the writes completed in it count), then switches the writer off
    /// and waits for the write in flight to finish.
    func stop() throws {
        condition.lock()
        defer { condition.unlock() }
        if let begun = window {
            var total = windows[begun.label] ?? (0, 0, [])
            total.writes += completed - begun.writes
            total.nanos += nowNanos() - begun.nanos
            total.latencies += latencies[begun.latencies...]
            windows[begun.label] = total
            window = nil
        }
        wanted = false
        condition.broadcast()
        while writing && failure == nil { condition.wait() }
        if let failure { throw failure }
    }

    /// Stops the thread for good (after the write in flight).
    func finish() {
        condition.lock()
        exiting = true
        wanted = false
        condition.broadcast()
        while !exited { condition.wait() }
        condition.unlock()
    }

    /// What the writer did inside the windows labelled `label`: writes completed, their rate and
    /// latencies.
    func summary(_ label: String) -> [String: Any] {
        condition.lock()
        defer { condition.unlock() }
        let total = windows[label] ?? (0, 0, [])
        let sorted = total.latencies.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
        }
        let seconds = Double(total.nanos) / 1e9
        return [
            "writer_writes": total.writes, "writer_seconds": seconds,
            "writer_writes_per_s": seconds > 0 ? Double(total.writes) / seconds : 0,
            "writer_write_p50_us": percentile(0.50), "writer_write_p99_us": percentile(0.99),
        ]
    }
}

/// The CPUs the calling thread may run on. glibc declares `sched_getaffinity`/`sched_setaffinity`
/// only under _GNU_SOURCE, so Swift does not import them; they are looked up with `dlsym`.
enum CPUAffinity {
    private typealias Call = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32

    private static func call(_ name: String, _ set: inout cpu_set_t) -> Bool {
        guard let symbol = dlsym(nil, name) else { return false }
        let function = unsafeBitCast(symbol, to: Call.self)
        return withUnsafeMutableBytes(of: &set) { function(0, $0.count, $0.baseAddress!) } == 0
    }

    static func current() -> cpu_set_t? {
        var set = cpu_set_t()
        return call("sched_getaffinity", &set) ? set : nil
    }

    @discardableResult
    static func set(_ set: cpu_set_t) -> Bool {
        var copy = set
        return call("sched_setaffinity", &copy)
    }

    static func only(_ cpu: Int) -> cpu_set_t {
        var set = cpu_set_t()
        withUnsafeMutableBytes(of: &set) { $0[cpu / 8] |= UInt8(1 << (cpu % 8)) }
        return set
    }

    static func cpus(in set: cpu_set_t) -> [Int] {
        withUnsafeBytes(of: set) { bytes in (0..<(bytes.count * 8)).filter { bytes[$0 / 8] & UInt8(1 << ($0 % 8)) != 0 }
        }
    }
}

/// "kv read (alone)", "kv read (one concurrent writer)" and "kv read (one concurrent writer, other
/// core)": the read of the "kv read (Swift API, handle)" figure (same vault, token and secret), on
/// one thread, in 20 alternating rounds without and with a second thread writing other secrets of
/// the same mount. In the third the reader and the writer are each pinned to a CPU of their own
/// (when the process may use two), so the writer cannot take the reader's CPU: what remains is
/// what storage does to a read. The second is how people run it; on a small busy machine the
/// scheduler often wakes the writer on the reader's CPU.
///
/// The reads are spaced by a 100 µs sleep, so that they sample time. Back to back, a reader that
/// waits for a commit waits once per write (its next read starts as the write ends), and with
/// writes 100-1000 times slower than reads (an fsync against 15 µs) under 1% of the reads would
/// wait: the p99 would not see it. Spaced, a read lands inside a commit about as often as a commit
/// holds storage. 10,000 reads per figure (20,000 in `make bench`): the p99 rests on 100 samples
/// or more.
func measureReadsWithWriter(_ bench: Bench, vault: Vault, token: String, payload: [String: JSONValue]) throws {
    let writer = ConcurrentWriter { n in
        _ = try vault.handle(
            Request(.update, "secret/data/app/writer/\(n % 100)", data: ["data": .object(payload)], token: token)
        )
    }
    defer { writer.finish() }
    let read = { _ = try vault.handle(Request(.read, "secret/data/app/db", token: token)) }
    let pauseNanos = 100_000
    let reads = min(20_000, max(10_000, bench.iterations / 5))
    let shared = "kv read (one concurrent writer)"
    let pinned = "kv read (one concurrent writer, other core)"
    var operations = [
        Compared(name: "kv read (alone)", body: read, pauseNanos: pauseNanos),
        Compared(
            name: shared,
            body: read,
            begin: { try writer.start(shared) },
            settle: { try writer.stop() },
            pauseNanos: pauseNanos,
            extra: { writer.summary(shared) }
        ),
    ]
    if let anywhere = CPUAffinity.current() {
        let cpus = CPUAffinity.cpus(in: anywhere)
        if cpus.count >= 2 {
            operations.append(
                Compared(
                    name: pinned,
                    body: read,
                    begin: {
                        CPUAffinity.set(CPUAffinity.only(cpus[0]))
                        try writer.start(pinned, cpu: cpus[1])
                    },
                    settle: {
                        try writer.stop()
                        CPUAffinity.set(anywhere)
                    },
                    pauseNanos: pauseNanos,
                    extra: { writer.summary(pinned).merging(["reader_cpu": cpus[0], "writer_cpu": cpus[1]]) { $1 } }
                )
            )
        }
    }
    try bench.compare(operations, count: reads)
}

/// Reads on every core: the same KV read from one thread and from `threads` threads at once, in
/// alternating rounds of `roundSeconds`, each thread with its own requests against one vault. Returns
/// the medians over the rounds of the reads per second of each, and of the per-round ratio (a
/// neighbour slowing one round moves both of its phases alike). Nil when `only` leaves it out.
///
/// Each round also runs the reference: as many threads, each reading from a vault of its own (its own
/// file in `directory`, token and secret), which share nothing but the process. What the machine
/// gives independent threads is that ratio; what the one vault loses to state its threads share (a
/// lock, a reference count, a cache line two cores both write) is the gap between the two.
///
/// 24 rounds, not 8: on this VM one round's ratio ranged from 0.8 to 2.8 (the guest's speed changes
/// by up to 1.7x from one moment to the next, docs/benchmarks.md), and the median of 8 moved by 0.25
/// between runs of the same build.
func measureReadScaling(
    _ bench: Bench,
    vault: Vault,
    token: String,
    payload: [String: JSONValue],
    directory: URL,
    threads: Int = 2,
    rounds: Int = 24,
    roundSeconds: Double = 0.2
) throws -> [String: Any]? {
    let name = "kv read scaling (\(threads) threads / 1)"
    if !bench.selects(name) { return nil }
    var separate: [(vault: Vault, token: String)] = [(vault, token)]
    defer { for other in separate.dropFirst() { other.vault.close() } }
    for n in 1..<threads {
        let path = directory.appendingPathComponent("scaling-\(n).db").path
        let (other, _) = try Vault.openDev(storage: .sqlite(path: path), rootTokenID: "bench-root")
        separate.append((other, try readerToken(other, payload: payload)))
    }
    /// Reads per second of `count` threads, thread i reading through `targets[i]`.
    func rate(_ count: Int, _ targets: [(vault: Vault, token: String)]) throws -> Double {
        let reads = Mutex(0)
        let failed = Mutex<(any Error)?>(nil)
        let done = DispatchGroup()
        let deadline = nowNanos() + UInt64(roundSeconds * 1e9)
        let start = nowNanos()
        for i in 0..<count {
            let (vault, shared) = targets[i % targets.count]
            done.enter()
            let thread = Thread {
                defer { done.leave() }
                // The thread's own copy of the token, as a request from C (`coffer_kv_get`) or over HTTP
                // brings its own bytes: every request holds its token, and threads holding one String
                // would write its reference count from both cores (docs/benchmarks.md, "No shared object
                // on the request path"): the caller's sharing, not the vault's.
                let token = String(decoding: Array(shared.utf8), as: UTF8.self)
                var n = 0
                do {
                    while nowNanos() < deadline {
                        for _ in 0..<64 { _ = try vault.handle(Request(.read, "secret/data/app/db", token: token)) }
                        n += 64
                    }
                } catch {
                    failed.withLock { $0 = error }
                }
                reads.withLock { $0 += n }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        done.wait()
        if let error = failed.withLock({ $0 }) { throw error }
        let total = reads.withLock { $0 }
        return Double(total) / (Double(nowNanos() - start) / 1e9)
    }
    func rate(_ count: Int) throws -> Double { try rate(count, [(vault, token)]) }
    _ = try rate(1)  // warm-up
    _ = try rate(threads, separate)
    var one: [Double] = []
    var many: [Double] = []
    var apart: [Double] = []
    for _ in 0..<rounds {
        one.append(try rate(1))
        many.append(try rate(threads))
        apart.append(try rate(threads, separate))
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    let ratio = median(zip(many, one).map { $0 / $1 })
    let apartRatio = median(zip(apart, one).map { $0 / $1 })
    // Per round, the shared vault's threads against the vaults of their own: what sharing costs, with
    // the machine's state of that round (its two vCPUs at full speed or not) taken out.
    let overApart = median(zip(many, apart).map { $0 / $1 })
    say(
        String(
            format:
                "  %-44@ 1 thread %10.0f reads/s  %d threads %10.0f reads/s  ratio %.2fx; %d vaults of their own %.2fx; one vault against those %.2f (medians of %d rounds)",
            name as NSString,
            median(one),
            threads,
            median(many),
            ratio,
            threads,
            apartRatio,
            overApart,
            rounds
        )
    )
    return [
        "read_scaling_threads": threads, "read_scaling_ratio": ratio, "read_scaling_one_thread_per_s": median(one),
        "read_scaling_all_threads_per_s": median(many), "read_scaling_round_ratios": zip(many, one).map { $0 / $1 },
        "read_scaling_separate_vaults_ratio": apartRatio,
        "read_scaling_separate_round_ratios": zip(apart, one).map { $0 / $1 },
        "read_scaling_over_separate": overApart,
    ]
}
