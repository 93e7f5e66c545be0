package import CofferCore
import Glibc
import Synchronization

/// One thing that happened in the vault, as subscribers and `sys/events/recent` see it. It never
/// carries a token, an accessor or a secret value: only names, ids, paths, versions and what was done.
package struct VaultEvent: Sendable, Equatable {
    /// Increases by one with every event this process publishes (it starts again at 1 when the
    /// process starts: events are not stored). `sys/events/recent`'s `after` counts in these.
    package let id: UInt64
    /// The CloudEvents id (a random UUID), the same in `id` and `data.event.id`.
    package let uuid: String
    /// What happened, as `<area>/<what>`: "kv-v2/data-write", "break-glass/activated".
    package let type: String
    /// The path of the namespace it happened in: "" for the root, "ns1/" for a namespace.
    package let namespacePath: String
    package let time: Timestamp
    /// What a backend published: `["metadata": {...}, "plugin_info": {...}]`, or for the vault's
    /// own events (break-glass, seal) the metadata itself.
    package let data: [String: JSONValue]

    /// The namespace as `sys/events/recent` shows it: "root" or "ns1/".
    package var namespace: String { namespacePath.isEmpty ? "root" : namespacePath }

    /// The event's metadata: `data.metadata` when a backend published it, else `data`.
    package var metadata: [String: JSONValue] {
        if case .object(let m)? = data["metadata"] { return m }
        return data
    }

    /// The path whose `read` capability a subscriber needs (docs/events.md): `data_path`, else
    /// `path`; nil for events about no path (seal, break-glass), which need only `subscribe`.
    package var aclPath: String? {
        let m = metadata
        if case .string(let p)? = m["data_path"], !p.isEmpty { return p }
        if case .string(let p)? = m["path"], !p.isEmpty { return p }
        return nil
    }

    /// `sys/events/recent`'s entry (Coffer's own shape, kept from before issue 20).
    package var json: JSONValue {
        [
            "id": .int(id), "event_type": .string(type), "namespace": .string(namespace),
            "timestamp": .string(time.rfc3339), "data": .object(data),
        ]
    }

    /// Vault's CloudEvents 1.0 JSON, as `sys/events/subscribe` sends it (docs/events.md).
    package func cloudEvent(hostname: String = EventBus.hostname) -> JSONValue {
        var inner: [String: JSONValue] = [
            "event": ["id": .string(uuid), "metadata": .object(metadata)],
            "event_type": .string(type),
        ]
        if case .object(var plugin)? = data["plugin_info"] {
            // Vault's mount_class: "auth" for an auth method's mount, "secret" for a secrets engine's.
            if plugin["mount_class"] == nil {
                let auth = plugin["mount_path"]?.stringValue?.hasPrefix("auth/") ?? false
                plugin["mount_class"] = .string(auth ? "auth" : "secret")
            }
            inner["plugin_info"] = .object(plugin)
        }
        if !namespacePath.isEmpty { inner["namespace"] = .string(namespacePath) }
        return [
            "id": .string(uuid), "source": .string("vault://" + hostname), "specversion": "1.0", "type": "*",
            "datacontentype": "application/cloudevents", "time": .string(time.rfc3339), "data": .object(inner),
        ]
    }
}

/// The vault's in-process event bus.
///
/// `publish` keeps the event in a bounded ring of recent events (``capacity``; the oldest is
/// dropped first, read by `sys/events/recent`), calls the plain ``subscribe(_:)`` handlers, and
/// offers it to every ``EventSubscription`` whose type glob and namespace match. Offering only
/// appends to the subscription's bounded queue (and wakes its consumer when the queue was empty):
/// the publisher never waits for a subscriber, never runs a subscriber's ACL check, and never
/// blocks on a full queue (the subscription's ``EventSubscription/Overflow`` decides what is dropped).
///
/// Plain handlers are called on the publishing thread, outside the bus's lock. A publisher may
/// hold other locks (break-glass publishes its expiry from inside the token store's lock), so a
/// handler must return quickly and must not call back into the vault.
///
/// Thread-safe. Nothing is persisted: a restart starts with an empty ring and id 1.
package final class EventBus: Sendable {
    package typealias Handler = @Sendable (VaultEvent) -> Void

    /// How many recent events are kept.
    package let capacity: Int

    /// This machine's name, for CloudEvents' `source` ("vault://<hostname>").
    package static let hostname: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }()

    private struct State {
        var nextID: UInt64 = 1
        /// The ring: `ring[(start + i) % capacity]` is the i-th oldest kept event.
        var ring: [VaultEvent] = []
        var start = 0
        var subscribers: [(id: Int, handler: Handler)] = []
        var nextSubscriber = 1
        var subscriptions: [EventSubscription] = []
    }

    private let state = Mutex(State())
    /// Subscriptions closed because their queue was full (a subscriber that does not read).
    private let droppedSubscribers = Atomic<UInt64>(0)
    /// Events not queued for a subscription whose queue was full.
    private let droppedEvents = Atomic<UInt64>(0)

    private let deliveryBox = Mutex<EventDelivery?>(nil)

    /// The threads that run in-process subscribers' callbacks (started with the first one).
    package var delivery: EventDelivery {
        deliveryBox.withLock { box in
            if let existing = box { return existing }
            let made = EventDelivery(bus: self)
            box = made
            return made
        }
    }

    /// Ends every in-process subscription and stops the delivery threads (the vault is closing).
    package func stopDelivery() {
        deliveryBox.withLock { $0 }?.shutdown()
    }

    package init(capacity: Int = 512) {
        self.capacity = max(1, capacity)
    }

    /// Publishes an event of `type` with `data` at `time` in the namespace at `namespacePath` ("" or
    /// "root" for the root); returns it (with its id).
    @discardableResult
    package func publish(
        _ type: String,
        namespace namespacePath: String = "",
        data: [String: JSONValue],
        time: Timestamp
    ) -> VaultEvent {
        let capacity = self.capacity
        let uuid = Random.requestID()  // an event id, like a request id, needs uniqueness, not secrecy
        let ns = namespacePath == "root" ? "" : namespacePath
        let (event, handlers, subscriptions) = state.withLock { state in
            let event = VaultEvent(
                id: state.nextID,
                uuid: uuid,
                type: type,
                namespacePath: ns,
                time: time,
                data: data
            )
            state.nextID += 1
            if state.ring.count < capacity {
                state.ring.append(event)
            } else {
                state.ring[state.start] = event
                state.start = (state.start + 1) % capacity
            }
            return (event, state.subscribers.map(\.handler), state.subscriptions)
        }
        for handler in handlers { handler(event) }
        guard !subscriptions.isEmpty else { return event }
        // With many subscriptions, offering the event to each is work the writer should not wait
        // for: one thread does it. With few, the writer does it (no thread hop), unless events are
        // already waiting for that thread (they go first, in order).
        if subscriptions.count > Self.inlineFanOutLimit || fanOut.isBusy {
            fanOut.enqueue(event) { [weak self] queued in self?.offer(queued, to: self?.currentSubscriptions ?? []) }
            return event
        }
        offer(event, to: subscriptions)
        return event
    }

    /// Up to this many subscriptions, the publishing thread offers an event to each itself.
    package static let inlineFanOutLimit = 32

    private let fanOut = FanOut()

    private var currentSubscriptions: [EventSubscription] { state.withLock { $0.subscriptions } }

    /// Offers `event` to every subscription of its namespace whose pattern matches; a subscription
    /// whose queue is full is closed and announced.
    private func offer(_ event: VaultEvent, to subscriptions: [EventSubscription]) {
        let ns = event.namespacePath
        let type = event.type
        let time = event.time
        var overflowed: [EventSubscription] = []
        // Many subscribers share a few patterns ("kv*"): each distinct pattern is matched once.
        var matched: [String: Bool] = [:]
        for subscription in subscriptions where subscription.namespacePath == ns {
            let text = subscription.pattern.text
            let wanted: Bool
            if let known = matched[text] {
                wanted = known
            } else {
                wanted = subscription.pattern.matches(type)
                matched[text] = wanted
            }
            guard wanted else { continue }
            switch subscription.offer(event) {
            case .queued: break
            case .droppedEvent: droppedEvents.add(1, ordering: .relaxed)
            case .closed:
                droppedSubscribers.add(1, ordering: .relaxed)
                overflowed.append(subscription)
            }
        }
        for subscription in overflowed {
            remove(subscription.id)
            // Said after the writer's own event, to the others: never about a secret, only the count.
            publish(
                "events/subscriber-dropped",
                namespace: subscription.namespacePath,
                data: [
                    "subscription_id": .int(subscription.id), "pattern": .string(subscription.pattern.text),
                    "queue_capacity": .int(subscription.capacity),
                ],
                time: time
            )
        }
    }

    /// Calls `handler` on the publishing thread with every event published from now on; returns the
    /// id to unsubscribe with. For in-process observers that return at once (tests, the audit of a
    /// single event); consumers that may be slow use ``add(_:)`` with a queue.
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

    /// Starts offering events to `subscription`.
    package func add(_ subscription: EventSubscription) {
        state.withLock { $0.subscriptions.append(subscription) }
    }

    /// Stops offering events to the subscription `id` (its queue is left to its consumer).
    package func remove(_ id: UInt64) {
        state.withLock { $0.subscriptions.removeAll { $0.id == id } }
    }

    /// How many queued subscriptions there are.
    package var subscriptionCount: Int { state.withLock { $0.subscriptions.count } }

    /// Counters for `sys/metrics`: subscribers dropped for a full queue, events dropped for one.
    package var dropCounts: (subscribers: UInt64, events: UInt64) {
        (droppedSubscribers.load(ordering: .relaxed), droppedEvents.load(ordering: .relaxed))
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

/// The thread that offers events to many subscriptions, so that a write with 1,000 subscribers costs
/// the writer one append and one wake-up. Bounded: past ``limit`` waiting events, new ones are
/// offered by the writer itself (slower, never lost, never unbounded).
private final class FanOut: @unchecked Sendable {
    static let limit = 65_536
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var pending: [(event: VaultEvent, offer: (VaultEvent) -> Void)] = []
    private var started = false
    private var working = false

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {  // the thread holds a reference while it runs: this is after it ended
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Events are waiting or being offered.
    var isBusy: Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return working || !pending.isEmpty
    }

    func enqueue(_ event: VaultEvent, offer: @escaping (VaultEvent) -> Void) {
        pthread_mutex_lock(mutex)
        guard pending.count < Self.limit else {
            pthread_mutex_unlock(mutex)
            offer(event)
            return
        }
        pending.append((event, offer))
        let start = !started
        started = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
        // The thread ends after a second with nothing to do, and starts again with the next event.
        if start, startThread({ [self] in run() }) == nil {
            pthread_mutex_lock(mutex)
            started = false
            let stranded = pending
            pending = []
            pthread_mutex_unlock(mutex)
            for item in stranded { item.offer(item.event) }
        }
    }

    private func run() {
        while true {
            pthread_mutex_lock(mutex)
            working = false
            if pending.isEmpty {
                var now = timespec()
                clock_gettime(CLOCK_REALTIME, &now)
                var deadline = timespec(tv_sec: now.tv_sec + 1, tv_nsec: now.tv_nsec)
                pthread_cond_timedwait(condition, mutex, &deadline)
                if pending.isEmpty {
                    started = false
                    pthread_mutex_unlock(mutex)
                    return
                }
            }
            let batch = pending
            pending = []
            working = true
            pthread_mutex_unlock(mutex)
            for item in batch { item.offer(item.event) }
        }
    }
}
