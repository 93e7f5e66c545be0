import Logging
import NIOCore
import Synchronization

/// Counts the open connections of each client IP address and refuses one past `limit`
/// (`max_connections_per_address`), so that one client cannot take every slot of `max_connections`.
///
/// A refused connection is closed at once, before anything is read from it. Refusals are logged as
/// a warning at most once a minute, with the address and how many were refused since the last one.
final class ConnectionLimiter: Sendable {
    let limit: Int
    let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var counts: [String: Int] = [:]
        var lastWarning: ContinuousClock.Instant?
        var refusedSinceWarning = 0
    }

    init(limit: Int, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    /// Counts `channel` for its address until it closes; false (not counted) when the address is at its limit.
    func admit(_ channel: any Channel) -> Bool {
        guard let address = channel.remoteAddress?.ipAddress else { return true }  // not TCP/IP: nothing to count
        let limit = self.limit
        let (admitted, warnRefused): (Bool, Int?) = state.withLock { state in
            let count = state.counts[address, default: 0]
            if count < limit {
                state.counts[address] = count + 1
                return (true, nil)
            }
            state.refusedSinceWarning += 1
            let now = ContinuousClock.now
            if let last = state.lastWarning, now - last < .seconds(60) { return (false, nil) }
            state.lastWarning = now
            defer { state.refusedSinceWarning = 0 }
            return (false, state.refusedSinceWarning)
        }
        if admitted {
            channel.closeFuture.whenComplete { _ in self.release(address) }
        } else if let warnRefused {
            logger.warning(
                "refused connections from a client at max_connections_per_address",
                metadata: ["client": "\(address)", "limit": "\(limit)", "refused": "\(warnRefused)"]
            )
        }
        return admitted
    }

    /// Open connections of `address` (for tests).
    func count(_ address: String) -> Int {
        state.withLock { $0.counts[address, default: 0] }
    }

    private func release(_ address: String) {
        state.withLock { state in
            let count = state.counts[address, default: 1] - 1
            state.counts[address] = count > 0 ? count : nil
        }
    }
}
