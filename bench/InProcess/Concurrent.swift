// KV reads next to a concurrent writer: the same reads alone and while a second thread writes KV v2
// secrets continuously (each write a SQLite transaction with synchronous=FULL, so an fsync), in
// alternating rounds. Storage that serialises reads behind writes shows up as a read p99 near the
// length of a write; a reader that never waits for a commit keeps its p99 near the one it has alone.
import Coffer
import Foundation

/// A second thread that calls `write` back to back while switched on, and waits while off. It
/// counts the writes that complete and times each, so a result can show that it really wrote.
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
    private var windowStart: (writes: Int, latencies: Int, nanos: UInt64)?
    private var windows: (writes: Int, nanos: UInt64, latencies: [UInt64]) = (0, 0, [])

    /// `write(n)` makes the n-th write (n counts from 0).
    init(_ write: @escaping @Sendable (Int) throws -> Void) {
        self.write = write
        let thread = Thread { [self] in run() }
        thread.name = "coffer-bench writer"
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func run() {
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

    /// Switches the writer on and returns once its first write is under way; a measuring window
    /// starts here.
    func start() throws {
        condition.lock()
        defer { condition.unlock() }
        wanted = true
        condition.broadcast()
        while !writing && failure == nil && !exited { condition.wait() }
        if let failure { throw failure }
        windowStart = (completed, latencies.count, nowNanos())
    }

    /// Ends the measuring window (the writes completed in it count), then switches the writer off
    /// and waits for the write in flight to finish.
    func stop() throws {
        condition.lock()
        defer { condition.unlock() }
        if let begun = windowStart {
            windows.writes += completed - begun.writes
            windows.nanos += nowNanos() - begun.nanos
            windows.latencies += latencies[begun.latencies...]
            windowStart = nil
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

    /// What the writer did inside the measuring windows: writes completed, their rate and latencies.
    var summary: [String: Any] {
        condition.lock()
        defer { condition.unlock() }
        let sorted = windows.latencies.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
        }
        let seconds = Double(windows.nanos) / 1e9
        return [
            "writer_writes": windows.writes, "writer_seconds": seconds,
            "writer_writes_per_s": seconds > 0 ? Double(windows.writes) / seconds : 0,
            "writer_write_p50_us": percentile(0.50), "writer_write_p99_us": percentile(0.99),
        ]
    }
}

/// "kv read (alone)" and "kv read (one concurrent writer)": the read of the "kv read (Swift API,
/// handle)" figure (same vault, token and secret), on one thread, in 20 alternating rounds without
/// and with a second thread writing other secrets of the same mount.
///
/// The reads are spaced by a 100 µs sleep, so that they sample time. Back to back, a reader that
/// waits for a commit waits once per write (its next read starts as the write ends), and with
/// writes 100-1000 times slower than reads (an fsync against 15 µs) under 1% of the reads would
/// wait: the p99 would not see it. Spaced, a read lands inside a commit about as often as a commit
/// holds storage. 10,000 reads per figure (20,000 in `make bench`): the p99 rests on 100 samples
/// or more.
func measureReadsWithWriter(_ bench: Bench, vault: Vault, token: String, payload: [String: JSONValue]) throws {
    let writer = ConcurrentWriter { n in
        _ = try vault.handle(Request(.update, "secret/data/app/writer/\(n % 100)", data: ["data": .object(payload)], token: token))
    }
    defer { writer.finish() }
    let read = { _ = try vault.handle(Request(.read, "secret/data/app/db", token: token)) }
    let pauseNanos = 100_000
    let reads = min(20_000, max(10_000, bench.iterations / 5))
    try bench.compare(
        [
            Compared(name: "kv read (alone)", body: read, pauseNanos: pauseNanos),
            Compared(
                name: "kv read (one concurrent writer)", body: read, begin: { try writer.start() }, settle: { try writer.stop() },
                pauseNanos: pauseNanos, extra: { writer.summary }),
        ], count: reads)
}
