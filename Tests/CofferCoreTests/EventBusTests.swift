import Synchronization
import Testing

/// The in-process event bus (Sources/CofferVault/Events/EventBus.swift).
@Suite struct EventBusTests {
    @Test func idsIncreaseTheRingKeepsTheNewestAndSubscribersSeeEveryEventUntilTheyLeave() {
        let bus = EventBus(capacity: 3)
        let seen = Mutex<[UInt64]>([])
        let subscription = bus.subscribe { event in seen.withLock { $0.append(event.id) } }
        let time = Timestamp(seconds: 1_800_000_000)
        for i in 0..<5 {
            bus.publish(i % 2 == 0 ? "a/even" : "b/odd", data: ["i": .int(i)], time: time)
        }
        #expect(seen.withLock { $0 } == [1, 2, 3, 4, 5])
        #expect(bus.recent().map(\.id) == [3, 4, 5], "the ring keeps the newest three, oldest first")
        #expect(bus.recent(after: 3).map(\.id) == [4, 5])
        #expect(bus.recent(typePrefix: "a/").map(\.id) == [3, 5])
        #expect(bus.recent(limit: 1).map(\.id) == [5])
        #expect(bus.recent(limit: 0).isEmpty)
        bus.unsubscribe(subscription)
        let last = bus.publish("a/even", data: [:], time: time)
        #expect(last.id == 6 && seen.withLock { $0.count } == 5)
        #expect(last.json["event_type"] == "a/even" && last.json["namespace"] == "root")
        #expect(last.json["timestamp"]?.stringValue == time.rfc3339)
    }
}
