import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(0)`, ..., `body(count - 1)` at once, `body(0)` on the calling thread and each other on a
/// thread of its own, and returns when all have. A thread that cannot be started runs its part on
/// the calling thread instead, after `body(0)`.
func runConcurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    var threads: [pthread_t] = []
    var leftOver: [Int] = []
    for index in 1..<max(1, count) {
        if let thread = startThread(detached: false, { body(index) }) {
            threads.append(thread)
        } else {
            leftOver.append(index)
        }
    }
    if count > 0 { body(0) }
    for index in leftOver { body(index) }
    for thread in threads { pthread_join(thread, nil) }
}
