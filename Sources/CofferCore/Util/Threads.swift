#if canImport(Glibc)
package import Glibc
#endif

/// Starts a thread running `body`: the one place Coffer creates threads (audit writers, event
/// delivery, the remote client's subscription, parallel lease work, Raft nodes). Returns the thread
/// to join, or nil when the system refused one; a `detached` thread cannot be joined and is returned
/// only to say it started.
@discardableResult
package func startThread(detached: Bool = true, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
        &thread,
        nil,
        { raw in
            guard let raw else { return nil }
            Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        },
        context
    )
    guard rc == 0 else {
        Unmanaged<ThreadBody>.fromOpaque(context).release()
        return nil
    }
    if detached { pthread_detach(thread) }
    return thread
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
