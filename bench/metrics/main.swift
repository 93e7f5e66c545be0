// What recording a request's metrics costs (docs/metrics.md, "What recording costs"): the meters of
// Sources/CofferCore/Metrics/Meters.swift compiled on their own with -O, timed per operation, alone and
// with every CPU recording at once. bench/metrics/run.sh builds and runs it (and callgrind, if asked).
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What one KV read through the core records (Core.handle, dispatch, TokenStore.lookup, Barrier.get):
/// the request timer (two clock reads, one exact summary), the route summary, the token lookup summary
/// and its cache-hit counter, and two barrier gets (metadata and version), the last three sampled.
final class RequestMeters: Sendable {
    let handleRequest = Summary()
    let route = Summary(sampleEvery: Summary.defaultSampling)
    let tokenLookup = Summary(sampleEvery: Summary.defaultSampling)
    let tokenCacheHit = Counter()
    let barrierGet = Summary(sampleEvery: Summary.defaultSampling)

    @inline(never)
    func recordOneRead() {
        let started = MonotonicClock.now()
        let lookup = tokenLookup.begin()
        tokenCacheHit.increment()
        tokenLookup.end(lookup)
        let route = self.route.begin()
        for _ in 0..<2 {
            let get = barrierGet.begin()
            barrierGet.end(get)
        }
        self.route.end(route)
        let now = MonotonicClock.now()
        handleRequest.record(nanoseconds: now &- started, now: now)
    }
}

@inline(never)
func measure(_ name: String, iterations: Int, threads: Int = 1, _ body: @escaping @Sendable () -> Void) {
    var best = Double.infinity
    for _ in 0..<5 {
        let start = MonotonicClock.now()
        if threads == 1 {
            for _ in 0..<iterations { body() }
        } else {
            var ids: [pthread_t] = []
            for _ in 0..<threads {
                var id = pthread_t()
                let box = Unmanaged.passRetained(Work(iterations: iterations, body: body))
                pthread_create(
                    &id,
                    nil,
                    { raw in
                        let work = Unmanaged<Work>.fromOpaque(raw!).takeRetainedValue()
                        for _ in 0..<work.iterations { work.body() }
                        return nil
                    },
                    box.toOpaque()
                )
                ids.append(id)
            }
            for id in ids { pthread_join(id, nil) }
        }
        let elapsed = Double(MonotonicClock.now() - start) / Double(iterations)
        best = min(best, elapsed)
    }
    let shown = (best * 10).rounded() / 10
    print("\(name): \(shown) ns per operation\(threads > 1 ? " (each of \(threads) threads)" : "")")
}

final class Work: Sendable {
    let iterations: Int
    let body: @Sendable () -> Void
    init(iterations: Int, body: @escaping @Sendable () -> Void) {
        self.iterations = iterations
        self.body = body
    }
}

@main
struct MetricsBench {
    static func main() {
        let arguments = CommandLine.arguments
        let iterations = arguments.count > 1 ? Int(arguments[1]) ?? 2_000_000 : 2_000_000
        let meters = RequestMeters()
        if arguments.contains("--only-request") {  // for callgrind: just the per-request recording
            for _ in 0..<iterations { meters.recordOneRead() }
            return
        }
        let counter = Counter()
        let exact = Summary()
        let sampled = Summary(sampleEvery: Summary.defaultSampling)
        let cpus = MeterShards.count
        print("shards: \(cpus)")
        measure("clock_gettime(CLOCK_MONOTONIC)", iterations: iterations) { _ = MonotonicClock.now() }
        measure("Counter.increment", iterations: iterations) { counter.increment() }
        measure("Summary.record (exact, no clock)", iterations: iterations) {
            exact.record(nanoseconds: 1_500, now: 1 << 40)
        }
        measure("Summary begin/end, sampled 1 in 16", iterations: iterations) { sampled.end(sampled.begin()) }
        measure("one KV read's recording", iterations: iterations) { meters.recordOneRead() }
        if cpus > 1 {
            measure("one KV read's recording", iterations: iterations / 2, threads: cpus) { meters.recordOneRead() }
        }
        let s = meters.handleRequest.snapshot()
        print("requests recorded: \(s.count)")
    }
}
