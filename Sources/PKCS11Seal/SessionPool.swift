import CPKCS11
import CofferCore
import Glibc

/// At most `limit` PKCS#11 sessions for concurrent operations; a caller beyond that waits for one
/// to come back. A session carries one operation at a time, so each operation borrows its own.
final class SessionPool: @unchecked Sendable {
    // Why @unchecked is sound: `idle` and `opened` are read and written only between
    // pthread_mutex_lock and pthread_mutex_unlock on `mutex`; `mutex` and `condition` are allocated
    // once in init, never moved, and destroyed in deinit when no thread can hold a reference.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var idle: [CK_SESSION_HANDLE] = []
    private var opened = 0
    let limit: Int

    init(limit: Int) {
        self.limit = max(limit, 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// An idle session, a new one from `open` while under the limit, or the next one given back.
    func take(open: () throws(CofferError) -> CK_SESSION_HANDLE) throws(CofferError) -> CK_SESSION_HANDLE {
        pthread_mutex_lock(mutex)
        while idle.isEmpty && opened >= limit { pthread_cond_wait(condition, mutex) }
        if let session = idle.popLast() {
            pthread_mutex_unlock(mutex)
            return session
        }
        opened += 1
        pthread_mutex_unlock(mutex)
        do {
            return try open()
        } catch {
            forget()
            throw error
        }
    }

    /// Returns a session for the next operation.
    func give(_ session: CK_SESSION_HANDLE) {
        pthread_mutex_lock(mutex)
        idle.append(session)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Counts a session as gone (closed, or failed to open), making room for a new one.
    func forget() {
        pthread_mutex_lock(mutex)
        opened -= 1
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Takes every idle session out, for closing.
    func drain() -> [CK_SESSION_HANDLE] {
        pthread_mutex_lock(mutex)
        let sessions = idle
        idle = []
        opened -= sessions.count
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
        return sessions
    }
}
