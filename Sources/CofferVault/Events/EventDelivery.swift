package import CofferCore
import Glibc
import Synchronization

/// Runs in-process subscribers' callbacks (the C ABI's `coffer_subscribe`, ``Vault/subscribe``) on
/// threads of its own, never on the thread that published.
///
/// - Each subscription's callbacks run in publication order, one at a time (a subscription is on
///   at most one delivery thread at once); different subscriptions run in parallel on up to
///   ``threadCount`` threads, so a callback that blocks holds up only its own subscription and one
///   of those threads.
/// - Each subscription has a bounded queue (``EventSubscription``, ``EventSubscription/Overflow/dropEvent``):
///   when the callback falls behind, new events are dropped and counted, and the writer never waits.
/// - ``unsubscribe(_:)`` returns once no callback of that subscription is running, except when it is
///   called from inside one of them: then it only marks the subscription ended (the callback that
///   called it finishes; no later one starts) and returns at once.
/// - ``shutdown()`` ends every subscription the same way and stops the threads.
package final class EventDelivery: @unchecked Sendable {
    package typealias Callback = @Sendable (VaultEvent) -> Void

    package let threadCount: Int
    private unowned let bus: EventBus

    // Everything below is guarded by `mutex`.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var ready: [UInt64] = []
    /// The ids in ``ready`` (an O(1) membership test: a write wakes every matching subscription).
    private var queued: Set<UInt64> = []
    private var entries: [UInt64: Entry] = [:]
    /// Subscriptions whose callback is running, and on which thread.
    private var running: [UInt64: pthread_t] = [:]
    /// Running subscriptions that were woken meanwhile: queued again when their run ends.
    private var again: Set<UInt64> = []
    private var threads: [pthread_t] = []
    private var stopping = false

    private struct Entry {
        let subscription: EventSubscription
        let callback: Callback
    }

    package init(bus: EventBus, threadCount: Int = 2) {
        self.bus = bus
        self.threadCount = max(1, threadCount)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
    }

    deinit {
        shutdown()
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    private func locked<T>(_ body: () throws(CofferError) -> T) throws(CofferError) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Delivers `subscription`'s events to `callback` until unsubscribed. The subscription must have
    /// been made with ``wakeHandler`` as its wake. Throws when shutting down.
    package func start(_ subscription: EventSubscription, callback: @escaping Callback) throws(CofferError) {
        try locked { () throws(CofferError) in
            guard !stopping else { throw CofferError(.unavailable, "the vault is closed") }
            entries[subscription.id] = Entry(subscription: subscription, callback: callback)
            while threads.count < threadCount {
                let started = startThread(detached: false) { [self] in
                    // Below the writers' priority (nice 10; on Linux who=0 is this thread only): delivering to many
                    // subscribers must not take the CPU from the writes that publish.
                    _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
                    work()
                }
                guard let thread = started else {
                    if threads.isEmpty {
                        entries[subscription.id] = nil
                        throw CofferError(.internal, "the system refused a thread for event delivery")
                    }
                    break
                }
                threads.append(thread)
            }
        }
        bus.add(subscription)
    }

    /// The `wake` for the subscriptions this delivers: queues the subscription for a delivery thread.
    package var wakeHandler: @Sendable (UInt64) -> Void {
        { [weak self] id in self?.schedule(id) }
    }

    private func schedule(_ id: UInt64) {
        pthread_mutex_lock(mutex)
        if entries[id] != nil {
            if running[id] != nil {
                again.insert(id)
            } else if queued.insert(id).inserted {
                ready.append(id)
            }
        }
        pthread_cond_signal(changed)
        pthread_mutex_unlock(mutex)
    }

    /// Ends the subscription `id`; see the type's rules. Returns false for an unknown id.
    @discardableResult
    package func unsubscribe(_ id: UInt64) -> Bool {
        pthread_mutex_lock(mutex)
        guard let entry = entries.removeValue(forKey: id) else {
            pthread_mutex_unlock(mutex)
            return false
        }
        if queued.remove(id) != nil { ready.removeAll { $0 == id } }
        let fromItsCallback = running[id].map { pthread_equal($0, pthread_self()) != 0 } ?? false
        pthread_mutex_unlock(mutex)
        // Outside the lock: closing wakes the subscription, and a wake takes the lock (``schedule``).
        bus.remove(id)
        entry.subscription.close(reason: "unsubscribed")
        if fromItsCallback { return true }
        pthread_mutex_lock(mutex)
        while running[id] != nil { pthread_cond_wait(changed, mutex) }
        pthread_mutex_unlock(mutex)
        return true
    }

    /// Unsubscribes everything (waiting for callbacks in flight, unless called from one) and stops
    /// the delivery threads. Later ``start(_:callback:)`` calls fail.
    package func shutdown() {
        pthread_mutex_lock(mutex)
        let ids = Array(entries.keys)
        pthread_mutex_unlock(mutex)
        for id in ids { unsubscribe(id) }
        pthread_mutex_lock(mutex)
        stopping = true
        let toJoin = threads.filter { pthread_equal($0, pthread_self()) == 0 }
        let selfIsWorker = toJoin.count != threads.count
        threads.removeAll()
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
        for thread in toJoin { pthread_join(thread, nil) }
        _ = selfIsWorker  // a worker that shuts down from a callback ends its own loop on return
    }

    /// Subscriptions with a callback.
    package var count: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return entries.count
    }

    private func work() {
        pthread_mutex_lock(mutex)
        while true {
            while ready.isEmpty && !stopping { pthread_cond_wait(changed, mutex) }
            if stopping && ready.isEmpty { break }
            let id = ready.removeFirst()
            queued.remove(id)
            guard let entry = entries[id] else { continue }
            running[id] = pthread_self()
            pthread_mutex_unlock(mutex)
            let events = entry.subscription.take()
            for event in events {
                if entry.subscription.closedReason != nil { break }
                entry.callback(event)
            }
            let idle = entry.subscription.settle()
            pthread_mutex_lock(mutex)
            running[id] = nil
            let woken = again.remove(id) != nil
            if !idle || woken, entries[id] != nil, queued.insert(id).inserted { ready.append(id) }
            pthread_cond_broadcast(changed)
        }
        pthread_mutex_unlock(mutex)
    }
}
