import Glibc

/// Runs work on a thread with a stack of a chosen size, to check what deeply nested input costs on
/// the small stacks of secondary threads (Dispatch and NIO threads may have 512 KiB).
///
/// The stack is mapped here with a guard page below it and painted with a byte pattern, so after the
/// thread ends the deepest byte it touched gives the stack it used (its high-water mark). Overflowing
/// still hits the guard page and kills the process, as it would in production.
package enum StackProbe {
    package static let guardSize = 64 * 1024
    package static let paint: UInt8 = 0xA5

    private final class Work {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Runs `body` on a new thread with a `stackSize`-byte stack, waits for it and returns how many
    /// bytes of that stack were used (thread control block and TLS included, as on any thread).
    package static func run(stackSize: Int, _ body: @escaping () -> Void) -> Int {
        let total = stackSize + guardSize
        guard let mapping = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0),
            mapping != MAP_FAILED
        else { fatalError("mmap of a \(total)-byte stack failed") }
        defer { munmap(mapping, total) }
        precondition(mprotect(mapping, guardSize, PROT_NONE) == 0)
        let stack = mapping + guardSize
        memset(stack, Int32(paint), stackSize)

        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        precondition(pthread_attr_setstack(&attributes, stack, stackSize) == 0)
        let work = Unmanaged.passRetained(Work(body)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(
            &thread,
            &attributes,
            { raw in
                Unmanaged<Work>.fromOpaque(raw!).takeRetainedValue().body()
                return nil
            },
            work
        )
        precondition(created == 0, "pthread_create failed: \(created)")
        pthread_join(thread, nil)

        let bytes = stack.assumingMemoryBound(to: UInt8.self)
        var untouched = 0
        while untouched < stackSize && bytes[untouched] == paint { untouched += 1 }
        return stackSize - untouched
    }
}
