import COpenSSL  // sched_getcpu
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// The recording side of Coffer's metrics (docs/metrics.md): counters and latency summaries that the
// request path updates. They cost little because
//   - each is split into shards, one per CPU (rounded up to a power of two), 128 bytes apart, and a
//     thread updates the shard of the CPU it runs on: threads on different CPUs never share a
//     cache line, so an update is an uncontended atomic add or an uncontended lock;
//   - nothing allocates once a meter exists (a summary allocates its shards on first use, once);
//   - a summary that is not `exact` reads the clock for 1 call in `sampleEvery` only: every call is
//     counted, the timed ones give the distribution (docs/metrics.md says which summaries sample).
// Reading (a scrape) adds the shards up; it is the only side that loops.

/// Nanoseconds on the monotonic clock (CLOCK_MONOTONIC): for durations, never for dates.
package enum MonotonicClock {
    @inline(__always)
    package static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(truncatingIfNeeded: ts.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: ts.tv_nsec)
    }
}

/// Which shard the calling thread updates.
package enum MeterShards {
    /// A power of two: the online CPUs rounded up, at least 1 and at most 64.
    package static let count: Int = {
        let cpus = max(1, min(64, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        var n = 1
        while n < cpus { n <<= 1 }
        return n
    }()
    /// Bytes between two shards: two cache lines (adjacent-line prefetch pairs them on x86).
    static var stride: Int { 128 }

    /// The calling thread's shard: the CPU it runs on (glibc reads it from the kernel's rseq area, no
    /// system call). Two threads running at once are on different CPUs, so they never update the same
    /// shard; a hash of the thread's id put two threads on one shard in one case of `count`. A thread
    /// moved between two calls only changes which uncontended shard it updates.
    /// `mask` is `count - 1`, kept by each meter (reading `count`, a lazy global, costs a `swift_once`).
    @inline(__always)
    static func current(_ mask: Int) -> Int { currentCPU() & mask }
}

/// The CPU the calling thread runs on (0 where that cannot be read), to pick a per-CPU shard.
@inline(__always)
package func currentCPU() -> Int {
    #if canImport(Glibc)
    return Int(max(0, sched_getcpu()))
    #else
    return 0
    #endif
}

/// A monotonic count: `increment()` is one relaxed atomic add on the calling thread's shard.
package final class Counter: Sendable {
    /// The shards' memory, as an address (so that the class is Sendable without an unchecked claim):
    /// `MeterShards.count` atomics, `MeterShards.stride` bytes apart, allocated in `init`, freed in `deinit`.
    private let cells: UInt
    private let mask = MeterShards.count - 1

    package init() {
        let memory = UnsafeMutableRawPointer.allocate(
            byteCount: MeterShards.count * MeterShards.stride,
            alignment: MeterShards.stride
        )
        for shard in 0..<MeterShards.count {
            (memory + shard * MeterShards.stride).bindMemory(to: Atomic<UInt64>.self, capacity: 1)
                .initialize(to: Atomic(0))
        }
        cells = UInt(bitPattern: memory)
    }

    deinit {
        let memory = UnsafeMutableRawPointer(bitPattern: cells)!
        for shard in 0..<MeterShards.count { cell(shard).deinitialize(count: 1) }
        memory.deallocate()
    }

    @inline(__always)
    private func cell(_ shard: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        UnsafeMutableRawPointer(bitPattern: cells &+ UInt(shard &* MeterShards.stride))!
            .assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    @inline(__always)
    package func increment(by amount: UInt64 = 1) {
        cell(MeterShards.current(mask)).pointee.wrappingAdd(amount, ordering: .relaxed)
    }

    /// The total so far (a sum of relaxed loads: increments racing with it may or may not be in it).
    package var value: UInt64 {
        var total: UInt64 = 0
        for shard in 0..<MeterShards.count { total &+= cell(shard).pointee.load(ordering: .relaxed) }
        return total
    }
}

/// A latency distribution: how many calls, and count, sum, min, max and sum of squares of the timed
/// ones (nanoseconds), plus a log-linear histogram of the recent ones for quantiles.
///
/// Record with `begin()` before the work and `end(_:)` after it, or `record(nanoseconds:)` when the
/// caller has timed the work itself.
package final class Summary: Sendable {
    /// 1: every call is timed. n > 1: every call is counted, 1 in n is timed.
    package let sampleEvery: UInt64
    /// The shards, allocated on first use (many route summaries are never used): an address, 0 until then.
    private let storage = Atomic<UInt>(0)
    private let mask = MeterShards.count - 1

    package init(sampleEvery: UInt64 = 1) {
        precondition(sampleEvery >= 1 && sampleEvery & (sampleEvery - 1) == 0, "sampleEvery is a power of two")
        self.sampleEvery = sampleEvery
    }

    /// The default period of the sampled summaries (barrier, token store, routes).
    package static var defaultSampling: UInt64 { 16 }

    deinit {
        let address = storage.load(ordering: .acquiring)
        guard address != 0 else { return }
        let memory = UnsafeMutableRawPointer(bitPattern: address)!
        for shard in 0..<MeterShards.count {
            Summary.shard(memory, shard).deinitialize(count: 1)
            Summary.calls(memory, shard).deinitialize(count: 1)
        }
        memory.deallocate()
    }

    // MARK: Layout: per shard, the locked statistics, then the call count on a line of its own.

    // Computed, not stored: constants the compiler folds (a stored static would cost a `swift_once` a call).
    private static var lockedSize: Int {
        (MemoryLayout<Mutex<SummaryShard>>.size + MeterShards.stride - 1) / MeterShards.stride * MeterShards.stride
    }
    private static var shardSize: Int { lockedSize + MeterShards.stride }

    @inline(__always)
    private static func shard(
        _ memory: UnsafeMutableRawPointer,
        _ index: Int
    ) -> UnsafeMutablePointer<
        Mutex<SummaryShard>
    > {
        (memory + index &* shardSize).assumingMemoryBound(to: Mutex<SummaryShard>.self)
    }

    @inline(__always)
    private static func calls(_ memory: UnsafeMutableRawPointer, _ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (memory + (index &* shardSize &+ lockedSize)).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    @inline(__always)
    private func memory() -> UnsafeMutableRawPointer {
        let address = storage.load(ordering: .acquiring)
        if address != 0 { return UnsafeMutableRawPointer(bitPattern: address)! }
        return allocate()
    }

    @inline(never)
    private func allocate() -> UnsafeMutableRawPointer {
        let memory = UnsafeMutableRawPointer.allocate(
            byteCount: MeterShards.count * Summary.shardSize,
            alignment: MeterShards.stride
        )
        for index in 0..<MeterShards.count {
            (memory + index * Summary.shardSize).bindMemory(to: Mutex<SummaryShard>.self, capacity: 1)
                .initialize(to: Mutex(SummaryShard()))
            (memory + index * Summary.shardSize + Summary.lockedSize).bindMemory(to: Atomic<UInt64>.self, capacity: 1)
                .initialize(to: Atomic(0))
        }
        let (won, current) = storage.compareExchange(
            expected: 0,
            desired: UInt(bitPattern: memory),
            successOrdering: .acquiringAndReleasing,
            failureOrdering: .acquiring
        )
        if won { return memory }
        for index in 0..<MeterShards.count {
            Summary.shard(memory, index).deinitialize(count: 1)
            Summary.calls(memory, index).deinitialize(count: 1)
        }
        memory.deallocate()
        return UnsafeMutableRawPointer(bitPattern: current)!
    }

    // MARK: Recording

    /// Counts a call and, if this one is timed, returns the clock (never 0); 0 when it is not timed.
    @inline(__always)
    package func begin() -> UInt64 {
        if sampleEvery == 1 { return MonotonicClock.now() | 1 }
        let shard = MeterShards.current(mask)
        let before = Summary.calls(memory(), shard).pointee.wrappingAdd(1, ordering: .relaxed).oldValue
        return before & (sampleEvery &- 1) == 0 ? MonotonicClock.now() | 1 : 0
    }

    /// Records the call `begin()` started (nothing if it was not timed).
    @inline(__always)
    package func end(_ started: UInt64) {
        guard started != 0 else { return }
        let now = MonotonicClock.now()
        add(now &- started, now: now)
    }

    /// Records a call the caller timed (`now` is the monotonic clock at its end). Counts the call
    /// too when the summary samples.
    @inline(__always)
    package func record(nanoseconds: UInt64, now: UInt64) {
        let shard = MeterShards.current(mask)
        let memory = memory()
        if sampleEvery != 1 { Summary.calls(memory, shard).pointee.wrappingAdd(1, ordering: .relaxed) }
        Summary.shard(memory, shard).pointee.withLock { $0.add(nanoseconds, epoch: now >> SummaryShard.windowShift) }
    }

    @inline(__always)
    private func add(_ nanoseconds: UInt64, now: UInt64) {
        let shard = MeterShards.current(mask)
        Summary.shard(memory(), shard).pointee.withLock {
            $0.add(nanoseconds, epoch: now >> SummaryShard.windowShift)
        }
    }

    // MARK: Reading

    /// The totals so far, and the quantiles of the timed calls of the last 8.6 to 17.2 seconds
    /// (nil when there were none).
    package func snapshot(now: UInt64 = MonotonicClock.now()) -> SummarySnapshot {
        var result = SummarySnapshot()
        let address = storage.load(ordering: .acquiring)
        guard address != 0 else { return result }
        let memory = UnsafeMutableRawPointer(bitPattern: address)!
        let epoch = now >> SummaryShard.windowShift
        var recent = [UInt64](repeating: 0, count: SummaryShard.bucketCount)
        var calls: UInt64 = 0
        for index in 0..<MeterShards.count {
            calls &+= Summary.calls(memory, index).pointee.load(ordering: .relaxed)
            Summary.shard(memory, index).pointee.withLock { s in
                result.timed &+= s.timed
                result.sumNanoseconds &+= s.sum
                result.sumSquares += s.sumSquares
                if s.timed > 0 {
                    result.minNanoseconds = min(result.minNanoseconds, s.min)
                    result.maxNanoseconds = max(result.maxNanoseconds, s.max)
                }
                for window in 0..<2 {
                    let stamp = s.epochs[window]
                    guard stamp == epoch || stamp &+ 1 == epoch else { continue }
                    for bucket in 0..<SummaryShard.bucketCount {
                        recent[bucket] &+= UInt64(s.buckets[window * SummaryShard.bucketCount + bucket])
                    }
                }
            }
        }
        result.count = sampleEvery == 1 ? result.timed : max(calls, result.timed)
        result.quantiles = SummaryShard.quantiles([0.5, 0.9, 0.99], of: recent)
        return result
    }
}

/// What a scrape reads from a ``Summary``.
package struct SummarySnapshot: Sendable, Equatable {
    /// Calls counted (every call, timed or not).
    package var count: UInt64 = 0
    /// Calls timed: `count` for an exact summary, about 1 in `sampleEvery` for a sampled one.
    package var timed: UInt64 = 0
    package var sumNanoseconds: UInt64 = 0
    package var sumSquares: Double = 0
    /// Meaningful only when `timed > 0`.
    package var minNanoseconds: UInt64 = .max
    package var maxNanoseconds: UInt64 = 0
    /// The 0.5, 0.9 and 0.99 quantiles (nanoseconds, estimated from the histogram) of the recent
    /// timed calls; nil when there were none recently (Prometheus shows NaN, as OpenBao does).
    package var quantiles: [Double]?

    package init() {}

    /// The mean of the timed calls, in nanoseconds (0 without any).
    package var meanNanoseconds: Double { timed == 0 ? 0 : Double(sumNanoseconds) / Double(timed) }

    /// The sum over every call: exact when every call is timed, else count × the timed calls' mean.
    package var estimatedSumNanoseconds: Double {
        timed == count ? Double(sumNanoseconds) : meanNanoseconds * Double(count)
    }

    /// The population standard deviation of the timed calls, in nanoseconds (go-metrics' formula).
    package var stddevNanoseconds: Double {
        guard timed > 1 else { return 0 }
        let n = Double(timed)
        let mean = Double(sumNanoseconds) / n
        let variance = (sumSquares - n * mean * mean) / (n - 1)
        return variance > 0 ? variance.squareRoot() : 0
    }
}

/// One shard of a summary, under its lock.
struct SummaryShard {
    /// Histogram windows are 2^33 ns (8.6 s) of the monotonic clock; a scrape reads the current and
    /// the previous one, so quantiles cover the last 8.6 to 17.2 seconds (OpenBao's cover 10).
    static var windowShift: UInt64 { 33 }
    /// Four buckets per power of two from 2^8 ns (256 ns) to 2^39 ns (9 minutes); below and above
    /// go to the first and last. A bucket's middle is within 12.5% of any value in it.
    static var lowestExponent: Int { 8 }
    static var highestExponent: Int { 39 }
    static var bucketCount: Int { (highestExponent - lowestExponent) * 4 }

    var timed: UInt64 = 0
    var sum: UInt64 = 0
    var sumSquares: Double = 0
    var min: UInt64 = .max
    var max: UInt64 = 0
    /// The window each half of `buckets` counts for (`UInt64.max`: none yet).
    var epochs = InlineArray<2, UInt64>(repeating: .max)
    var buckets = InlineArray<248, UInt32>(repeating: 0)

    @inline(__always)
    mutating func add(_ value: UInt64, epoch: UInt64) {
        timed &+= 1
        sum &+= value
        let v = Double(value)
        sumSquares += v * v
        if value < min { min = value }
        if value > max { max = value }
        let window = Int(truncatingIfNeeded: epoch & 1)
        if epochs[window] != epoch {
            epochs[window] = epoch
            for i in 0..<SummaryShard.bucketCount { buckets[window * SummaryShard.bucketCount + i] = 0 }
        }
        let index = window * SummaryShard.bucketCount + SummaryShard.bucket(value)
        buckets[index] &+= 1
    }

    @inline(__always)
    static func bucket(_ value: UInt64) -> Int {
        guard value >= 1 << lowestExponent else { return 0 }
        let exponent = 63 - value.leadingZeroBitCount
        guard exponent < highestExponent else { return bucketCount - 1 }
        let sub = Int(truncatingIfNeeded: value >> UInt64(exponent - 2)) & 3
        return (exponent - lowestExponent) * 4 + sub
    }

    /// The middle of bucket `index`, in nanoseconds.
    static func middle(_ index: Int) -> Double {
        let exponent = index / 4 + lowestExponent
        let sub = Double(index % 4)
        let quarter = Double(UInt64(1) << UInt64(exponent - 2))
        return (4 + sub + 0.5) * quarter
    }

    /// The `ranks` quantiles of a histogram, or nil when it is empty.
    static func quantiles(_ ranks: [Double], of buckets: [UInt64]) -> [Double]? {
        let total = buckets.reduce(0, &+)
        guard total > 0 else { return nil }
        return ranks.map { rank in
            let target = UInt64((rank * Double(total)).rounded(.up))
            var seen: UInt64 = 0
            for (index, count) in buckets.enumerated() {
                seen &+= count
                if seen >= Swift.max(target, 1) { return middle(index) }
            }
            return middle(buckets.count - 1)
        }
    }
}
