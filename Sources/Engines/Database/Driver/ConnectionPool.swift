package import CofferCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The open connections of one configured database connection, shared by the threads that use it.
///
/// At most ``Limits/maxOpen`` connections are open at once (counting those being opened); a caller
/// that finds them all busy waits up to ``Limits/acquireTimeoutSeconds`` and then gets an
/// `unavailable` error. A connection returned idle is kept (up to ``Limits/maxIdle``) and reused while
/// it is younger than ``Limits/maxLifetimeSeconds``; one that broke, or that the server closed while
/// it sat idle (a restart), is discarded and the next caller opens a new one.
package final class ConnectionPool: Sendable {
    package struct Limits: Sendable, Equatable {
        /// Vault's `max_open_connections` (default 4).
        package var maxOpen: Int
        /// Vault's `max_idle_connections`; 0 (Vault's default) means `maxOpen`, and more than `maxOpen`
        /// is `maxOpen`.
        package var maxIdle: Int
        /// Vault's `max_connection_lifetime` in seconds; 0 for no limit.
        package var maxLifetimeSeconds: Int
        /// How long a caller waits for a busy pool before it gives up.
        package var acquireTimeoutSeconds: Double

        package init(
            maxOpen: Int = 4,
            maxIdle: Int = 0,
            maxLifetimeSeconds: Int = 0,
            acquireTimeoutSeconds: Double = 10
        ) {
            self.maxOpen = max(1, maxOpen)
            self.maxIdle = maxIdle <= 0 || maxIdle > self.maxOpen ? self.maxOpen : maxIdle
            self.maxLifetimeSeconds = max(0, maxLifetimeSeconds)
            self.acquireTimeoutSeconds = max(0, acquireTimeoutSeconds)
        }
    }

    /// One connection and when it was opened (monotonic nanoseconds); only the caller holding it, or
    /// the pool's lock, touches it.
    private final class Slot: @unchecked Sendable {
        let connection: any DatabaseConnection
        let opened: UInt64
        let generation: UInt64
        init(_ connection: any DatabaseConnection, generation: UInt64) {
            self.connection = connection
            self.opened = monotonicNanoseconds()
            self.generation = generation
        }
    }

    private struct State {
        var idle: [Slot] = []
        /// Idle, in use and being opened.
        var open = 0
        var inUse = 0
        var closed = false
        /// Bumped by reset(): connections of an earlier generation are closed when returned.
        var generation: UInt64 = 0
    }

    package let limits: Limits
    private let name: String
    private let opener: @Sendable () throws(CofferError) -> any DatabaseConnection
    private let state = Mutex(State())

    /// A pool that opens connections with `open` (tests give their own); `name` says which connection
    /// in messages.
    package init(
        name: String,
        limits: Limits = Limits(),
        open: @escaping @Sendable () throws(CofferError) -> any DatabaseConnection
    ) {
        self.name = name
        self.limits = limits
        self.opener = open
    }

    /// A pool of connections opened with `settings`.
    package convenience init(name: String, settings: DatabaseConnectionSettings, limits: Limits = Limits()) {
        self.init(name: name, limits: limits) { () throws(CofferError) in try settings.connect() }
    }

    deinit { close() }

    /// Connections open now (idle, in use and being opened), and of those in use.
    package var counts: (open: Int, inUse: Int, idle: Int) {
        state.withLock { ($0.open, $0.inUse, $0.idle.count) }
    }

    /// Runs `body` with a connection of the pool, then returns it to the pool (or closes it if it
    /// broke, or if `body` left a transaction open and rolling it back failed).
    package func withConnection<T>(_ body: (any DatabaseConnection) throws(CofferError) -> T) throws(CofferError) -> T {
        let slot = try acquire()
        let result: Result<T, CofferError>
        do {
            result = .success(try body(slot.connection))
        } catch {
            result = .failure(error)
        }
        if slot.connection.inTransaction && !slot.connection.isBroken { try? slot.connection.rollback() }
        release(slot)
        return try result.get()
    }

    /// Closes every idle connection and makes those in use close when returned; later calls fail.
    package func close() {
        let idle = state.withLock { state -> [Slot] in
            state.closed = true
            state.generation &+= 1
            defer { state.idle = [] }
            state.open -= state.idle.count
            return state.idle
        }
        for slot in idle { slot.connection.close() }
    }

    /// Closes every idle connection and makes those in use close when returned (after a change of the
    /// connection's settings or credentials); the pool stays usable.
    package func reset() {
        let idle = state.withLock { state -> [Slot] in
            state.generation &+= 1
            defer { state.idle = [] }
            state.open -= state.idle.count
            return state.idle
        }
        for slot in idle { slot.connection.close() }
    }

    private enum Step {
        case use(Slot)
        case open(UInt64)
        case wait
    }

    private func acquire() throws(CofferError) -> Slot {
        let deadline = monotonicNanoseconds() + UInt64(limits.acquireTimeoutSeconds * 1e9)
        var pause: UInt32 = 1_000
        while true {
            var discarded: [Slot] = []
            let step = try state.withLock { state throws(CofferError) -> Step in
                guard !state.closed else {
                    throw CofferError(.unavailable, "the database connection \"\(name)\" is closed")
                }
                while let slot = state.idle.popLast() {
                    if isExpired(slot) || !slot.connection.isUsableWhenIdle() {
                        discarded.append(slot)
                        state.open -= 1
                        continue
                    }
                    state.inUse += 1
                    return .use(slot)
                }
                if state.open < limits.maxOpen {
                    state.open += 1
                    state.inUse += 1
                    return .open(state.generation)
                }
                return .wait
            }
            for slot in discarded { slot.connection.close() }
            switch step {
            case .use(let slot):
                return slot
            case .open(let generation):
                do {
                    return Slot(try opener(), generation: generation)
                } catch {
                    state.withLock {
                        $0.open -= 1
                        $0.inUse -= 1
                    }
                    throw error
                }
            case .wait:
                if monotonicNanoseconds() >= deadline {
                    throw CofferError(
                        .unavailable,
                        "all \(limits.maxOpen) connections of the database connection \"\(name)\" are in use "
                            + "(max_open_connections); none came free within \(formatSeconds(limits.acquireTimeoutSeconds)) s"
                    )
                }
                usleep(pause)
                pause = min(pause * 2, 20_000)
            }
        }
    }

    private func release(_ slot: Slot) {
        let keep = state.withLock { state -> Bool in
            state.inUse -= 1
            let keep =
                !state.closed && slot.generation == state.generation && !slot.connection.isBroken
                && !slot.connection.inTransaction && !isExpired(slot) && state.idle.count < limits.maxIdle
            if keep {
                state.idle.append(slot)
            } else {
                state.open -= 1
            }
            return keep
        }
        if !keep { slot.connection.close() }
    }

    private func isExpired(_ slot: Slot) -> Bool {
        limits.maxLifetimeSeconds > 0
            && monotonicNanoseconds() - slot.opened >= UInt64(limits.maxLifetimeSeconds) * 1_000_000_000
    }
}

private func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
}

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
