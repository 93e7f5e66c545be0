#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(0)`, ..., `body(count - 1)` at once, `body(0)` on the calling thread and each other on a
/// thread of its own, and returns when all have. A thread that cannot be started runs its part on
/// the calling thread instead, after `body(0)`.
func runConcurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Part: @unchecked Sendable {  // read by one thread, after pthread_create's barrier
        let index: Int
        let body: @Sendable (Int) -> Void
        init(_ index: Int, _ body: @escaping @Sendable (Int) -> Void) {
            self.index = index
            self.body = body
        }
    }
    var threads: [pthread_t] = []
    var leftOver: [Int] = []
    for index in 1..<max(1, count) {
        let part = Unmanaged.passRetained(Part(index, body)).toOpaque()
        var thread = pthread_t()
        let started = pthread_create(
            &thread,
            nil,
            { raw in
                let part = Unmanaged<Part>.fromOpaque(raw!).takeRetainedValue()
                part.body(part.index)
                return nil
            },
            part
        )
        if started == 0 {
            threads.append(thread)
        } else {
            Unmanaged<Part>.fromOpaque(part).release()
            leftOver.append(index)
        }
    }
    if count > 0 { body(0) }
    for index in leftOver { body(index) }
    for thread in threads { pthread_join(thread, nil) }
}
