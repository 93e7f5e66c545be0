#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex with conditions: a Raft node's loop, its transport's writers and a database's
/// checkpointer sleep on it until there is work or a deadline passes. A monitor with more than one
/// condition lets threads that wait for different things sleep apart, so waking one kind (a Raft
/// node's loop, for a message) does not also wake the other (the writes waiting for their result).
/// `@unchecked Sendable`: every access to the guarded state goes through ``withLock(_:)``.
package final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let conditions: UnsafeMutablePointer<pthread_cond_t>
    private let count: Int

    /// A monitor with `conditions` conditions, numbered from 0.
    package init(conditions: Int = 1) {
        count = max(1, conditions)
        self.conditions = .allocate(capacity: count)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        for i in 0..<count { pthread_cond_init(self.conditions + i, &attributes) }
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        for i in 0..<count { pthread_cond_destroy(conditions + i) }
        pthread_mutex_destroy(mutex)
        conditions.deallocate()
        mutex.deallocate()
    }

    package func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Wakes every thread waiting in ``wait(until:on:_:)`` on `condition`. Call it after changing, inside
    /// ``withLock(_:)``, what the waiters check: a waiter checks under the lock, so it either saw the
    /// change or is already asleep when this wakes it. The lock is not held here, so a woken thread does
    /// not go straight back to sleep on the mutex (two more context switches, on every Raft write).
    package func broadcast(_ condition: Int = 0) {
        pthread_cond_broadcast(self.condition(condition))
    }

    /// Sleeps on `condition` until `ready()` holds (checked under the lock) or the monotonic clock
    /// reaches `deadline` nanoseconds; returns what `ready()` said last.
    package func wait(until deadline: UInt64, on condition: Int = 0, _ ready: () -> Bool) -> Bool {
        let condition = self.condition(condition)
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !ready() {
            if monotonicNanos() >= deadline { return false }
            var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
            pthread_cond_timedwait(condition, mutex, &ts)
        }
        return true
    }

    /// Condition `index`, clamped to the ones this monitor has.
    private func condition(_ index: Int) -> UnsafeMutablePointer<pthread_cond_t> {
        conditions + min(max(index, 0), count - 1)
    }
}

/// The monotonic clock in nanoseconds.
package func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
