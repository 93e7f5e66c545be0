// Events (issue 20 item 1, docs/events.md): how long an event takes from a KV write to a subscriber's
// callback in process, and what subscribers cost the writer.
//
//   swift run -c release coffer-bench events [--iterations N] [--rounds R] [--json PATH]
//
// "write → callback": the time from the start of a KV v2 write (KVClient.put, memory storage) to the
// moment the subscriber's callback runs on a delivery thread; one write at a time, each waited for.
// "kv write, N subscribers": the write's own latency with 0 and with 1,000 subscriptions matching it
// (callbacks that return at once, root token), in alternating rounds so that both see the same machine.
import Coffer
import Foundation
import Synchronization

func runEvents(_ bench: Bench, iterations: Int, rounds: Int) throws -> [String: Any] {
    let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
    defer { vault.close() }
    let kv = vault.kv(token: "root")

    // Write → callback.
    let delivered = Atomic<UInt64>(0)
    let id = try vault.subscribeEvents(token: "root", pattern: "kv-v2/data-write") { _ in
        delivered.store(nowNanos(), ordering: .releasing)
    }
    var samples: [UInt64] = []
    samples.reserveCapacity(iterations)
    for i in 0..<(iterations + 200) {
        delivered.store(0, ordering: .releasing)
        let start = nowNanos()
        _ = try kv.put("bench/event", ["i": .string(String(i))])
        var at: UInt64 = 0
        while at == 0 { at = delivered.load(ordering: .acquiring) }
        if i >= 200 { samples.append(at - start) }  // the first 200 warm up
    }
    vault.unsubscribeEvents(id)
    samples.sort()
    let callback = Figure(name: "event: kv write → callback (in process)", samples: samples, allocationsPerOp: nil)
    bench.record(callback)
    say(String(format: "  %-44@ p50 %9.2f µs  p99 %9.2f µs", callback.name as NSString, callback.p50, callback.p99))

    // Write latency with 0 and with 1,000 subscribers, alternating rounds.
    let per = max(100, iterations / rounds)
    var none: [UInt64] = []
    var many: [UInt64] = []
    var n = 0
    for round in 0..<(2 * rounds) {
        let withSubscribers = round % 2 == 1
        var ids: [UInt64] = []
        if withSubscribers {
            for _ in 0..<1000 { ids.append(try vault.subscribeEvents(token: "root", pattern: "kv*") { _ in }) }
        }
        for _ in 0..<per {
            n += 1
            let start = nowNanos()
            _ = try kv.put("bench/fanout", ["i": .string(String(n))])
            let elapsed = nowNanos() - start
            if withSubscribers { many.append(elapsed) } else { none.append(elapsed) }
        }
        for id in ids { vault.unsubscribeEvents(id) }
    }
    none.sort()
    many.sort()
    let alone = Figure(name: "kv write, no subscribers", samples: none, allocationsPerOp: nil)
    let fanout = Figure(name: "kv write, 1000 subscribers", samples: many, allocationsPerOp: nil)
    for f in [alone, fanout] {
        bench.record(f)
        say(String(format: "  %-44@ p50 %9.2f µs  p99 %9.2f µs", f.name as NSString, f.p50, f.p99))
    }
    let ratio = fanout.p50 / alone.p50
    say(String(format: "  write p50 with 1000 subscribers / none: %.2fx (p99 %.2fx)", ratio, fanout.p99 / alone.p99))
    return [
        "event_callback_p99_us": callback.p99, "event_callback_p50_us": callback.p50,
        "write_1000_subscribers_p50_ratio": ratio, "write_1000_subscribers_p99_ratio": fanout.p99 / alone.p99,
        "dropped_events": Int(vault.core.events.dropCounts.events),
    ]
}
