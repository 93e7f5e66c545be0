package import CofferCore
import Synchronization

/// One thing that happened in the vault, as subscribers and `sys/events/recent` see it. It never
/// carries a token, an accessor or a secret value: only names, ids and what was done.
package struct VaultEvent: Sendable, Equatable {
    /// Increases by one with every event this process publishes (it starts again at 1 when the
    /// process starts: events are not stored).
    package let id: UInt64
    /// What happened, as `<area>/<what>`: "break-glass/activated".
    package let type: String
    /// The namespace it happened in ("root" until namespaces exist).
    package let namespace: String
    package let time: Timestamp
    package let data: [String: JSONValue]

    package var json: JSONValue {
        [
            "id": .int(id), "event_type": .string(type), "namespace": .string(namespace),
            "timestamp": .string(time.rfc3339), "data": .object(data),
        ]
    }
}

/// The vault's in-process event bus: `publish` hands an event to every subscriber and keeps it in a
/// bounded ring of recent events (``capacity``; the oldest is dropped first). Subscribers are called
/// on the publishing thread, outside the bus's lock, in subscription order. A publisher may hold
/// other locks (break-glass publishes its expiry from inside the token store's lock), so a
/// subscriber must return quickly and must not call back into the vault: it should hand the event
/// off to a queue of its own (issue 20's websocket fan-out will).
///
/// Thread-safe. Nothing is persisted: a restart starts with an empty ring and id 1.
package final class EventBus: Sendable {
    package typealias Handler = @Sendable (VaultEvent) -> Void

    /// How many recent events are kept.
    package let capacity: Int

    private struct State {
        var nextID: UInt64 = 1
        /// The ring: `ring[(start + i) % capacity]` is the i-th oldest kept event.
        var ring: [VaultEvent] = []
        var start = 0
        var subscribers: [(id: Int, handler: Handler)] = []
        var nextSubscriber = 1
    }

    private let state = Mutex(State())

    package init(capacity: Int = 512) {
        self.capacity = max(1, capacity)
    }

    /// Publishes an event of `type` with `data` at `time`; returns it (with its id).
    @discardableResult
    package func publish(
        _ type: String,
        namespace: String = "root",
        data: [String: JSONValue],
        time: Timestamp
    ) -> VaultEvent {
        let capacity = self.capacity
        let (event, handlers) = state.withLock { state in
            let event = VaultEvent(id: state.nextID, type: type, namespace: namespace, time: time, data: data)
            state.nextID += 1
            if state.ring.count < capacity {
                state.ring.append(event)
            } else {
                state.ring[state.start] = event
                state.start = (state.start + 1) % capacity
            }
            return (event, state.subscribers.map(\.handler))
        }
        for handler in handlers { handler(event) }
        return event
    }

    /// Calls `handler` with every event published from now on; returns the id to unsubscribe with.
    package func subscribe(_ handler: @escaping Handler) -> Int {
        state.withLock { state in
            let id = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers.append((id, handler))
            return id
        }
    }

    package func unsubscribe(_ id: Int) {
        state.withLock { state in state.subscribers.removeAll { $0.id == id } }
    }

    /// The kept events with an id above `after` whose type starts with `typePrefix`, oldest first,
    /// at most `limit` (the newest of them).
    package func recent(after: UInt64 = 0, typePrefix: String = "", limit: Int = .max) -> [VaultEvent] {
        let all: [VaultEvent] = state.withLock { state in
            Array(state.ring[state.start...] + state.ring[..<state.start])
        }
        let matching = all.filter { $0.id > after && $0.type.hasPrefix(typePrefix) }
        return Array(matching.suffix(max(0, limit)))
    }
}
