package import CofferCore
import Synchronization

/// An event type pattern as `sys/events/subscribe/<pattern>` takes it: `*` matches any run of
/// characters (slashes included), everything else matches itself. `kv*`, `kv-v2/data-*`, `*`.
package struct EventGlob: Sendable, Hashable {
    package let text: String
    private let parts: [[UInt8]]

    /// Patterns are at most 512 bytes (an event type is a few dozen); an empty pattern is refused.
    package init(_ text: String) throws(CofferError) {
        guard !text.isEmpty else { throw CofferError.invalid("an event type pattern is required, such as kv* or *") }
        guard text.utf8.count <= 512 else {
            throw CofferError.invalid("the event type pattern is longer than 512 bytes")
        }
        self.text = text
        parts = text.utf8.split(separator: UInt8(ascii: "*"), omittingEmptySubsequences: false).map(Array.init)
    }

    package func matches(_ type: String) -> Bool {
        let s = Array(type.utf8)
        if parts.count == 1 { return s == parts[0] }
        // First part anchors the start, last the end, the middle ones are found left to right.
        guard let first = parts.first, let last = parts.last, s.count >= first.count + last.count,
            s.starts(with: first), s.suffix(last.count).elementsEqual(last)
        else { return false }
        var i = first.count
        let end = s.count - last.count
        for part in parts.dropFirst().dropLast() where !part.isEmpty {
            guard let found = Self.find(part, in: s, from: i, end: end) else { return false }
            i = found + part.count
        }
        return true
    }

    private static func find(_ needle: [UInt8], in s: [UInt8], from: Int, end: Int) -> Int? {
        guard end - from >= needle.count else { return nil }
        for start in from...(end - needle.count) where s[start..<start + needle.count].elementsEqual(needle) {
            return start
        }
        return nil
    }
}

/// One subscriber's view of the bus: the events of its type glob in its namespace, in a bounded
/// queue that the bus appends to and the subscriber's consumer drains.
///
/// The publisher only appends (under this subscription's lock, in O(1)) and calls ``wake`` when
/// the queue was idle; the consumer calls ``take()``, which runs the subscriber's ``filter`` (its
/// ACL check) on the consumer's thread. When the queue is full, ``overflow`` decides: a network
/// subscriber that does not read is closed (``Overflow/closeSubscription``); an in-process callback
/// loses the event and the loss is counted (``Overflow/dropEvent``).
package final class EventSubscription: Sendable {
    package enum Overflow: Sendable { case closeSubscription, dropEvent }
    package enum Offer: Sendable { case queued, droppedEvent, closed }

    private static let nextID = Atomic<UInt64>(1)

    package let id: UInt64
    package let pattern: EventGlob
    /// The namespace whose events it receives ("" for the root).
    package let namespacePath: String
    package let capacity: Int
    package let overflow: Overflow
    /// Whether the subscriber may see the event (its ACL); run by ``take()``, not by the publisher.
    let filter: @Sendable (VaultEvent) -> Bool
    /// Called with ``id`` (outside any lock) when an event arrives at an idle queue, or the subscription closes.
    let wake: @Sendable (UInt64) -> Void

    private struct State {
        var queue: [VaultEvent] = []
        /// An event arrived since the consumer last found the queue empty: a wake is pending.
        var scheduled = false
        var closedReason: String?
        var droppedEvents: UInt64 = 0
    }
    private let state = Mutex(State())

    package init(
        pattern: EventGlob,
        namespacePath: String,
        capacity: Int = 1024,
        overflow: Overflow,
        filter: @escaping @Sendable (VaultEvent) -> Bool,
        wake: @escaping @Sendable (UInt64) -> Void
    ) {
        id = Self.nextID.add(1, ordering: .relaxed).oldValue
        self.pattern = pattern
        self.namespacePath = namespacePath == "root" ? "" : namespacePath
        self.capacity = max(1, capacity)
        self.overflow = overflow
        self.filter = filter
        self.wake = wake
    }

    /// Appends `event`; never waits.
    func offer(_ event: VaultEvent) -> Offer {
        let (result, wakeNow): (Offer, Bool) = state.withLock { s in
            if s.closedReason != nil { return (.queued, false) }
            if s.queue.count >= capacity {
                switch overflow {
                case .dropEvent:
                    s.droppedEvents += 1
                    return (.droppedEvent, false)
                case .closeSubscription:
                    s.closedReason =
                        "subscriber too slow: \(capacity) events were waiting to be sent; the subscription was dropped"
                    s.queue.removeAll()
                    return (.closed, true)
                }
            }
            s.queue.append(event)
            if s.scheduled { return (.queued, false) }
            s.scheduled = true
            return (.queued, true)
        }
        if wakeNow { wake(id) }
        return result
    }

    /// The queued events the subscriber may see, oldest first, and empties the queue. When it was
    /// already empty, the next event wakes the consumer again.
    package func take() -> [VaultEvent] {
        let events: [VaultEvent] = state.withLock { s in
            let out = s.queue
            s.queue.removeAll(keepingCapacity: true)
            if out.isEmpty { s.scheduled = false }
            return out
        }
        return events.filter(filter)
    }

    /// Marks the wake handled if the queue is empty (returns true), else leaves it scheduled (false:
    /// the consumer should ``take()`` again).
    package func settle() -> Bool {
        state.withLock { s in
            if s.queue.isEmpty || s.closedReason != nil {
                s.scheduled = false
                return true
            }
            return false
        }
    }

    /// Why the subscription ended (full queue, unsubscribed), or nil while it runs.
    package var closedReason: String? { state.withLock { $0.closedReason } }

    /// Events lost to a full queue (``Overflow/dropEvent``).
    package var droppedEvents: UInt64 { state.withLock { $0.droppedEvents } }

    /// Ends the subscription: nothing more is queued; the consumer is woken to see it.
    package func close(reason: String) {
        let first = state.withLock { s in
            guard s.closedReason == nil else { return false }
            s.closedReason = reason
            s.queue.removeAll()
            return true
        }
        if first { wake(id) }
    }
}
