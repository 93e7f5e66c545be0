import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension HTTPClient {
    /// Connections kept open between requests, for a caller that sends many to the same server (a
    /// standby forwarding writes to the active node): a request on a kept connection skips the TCP
    /// connect and, for `https://`, the TLS handshake. Thread-safe; a connection serves one request at a
    /// time, taken out of the pool while it does.
    ///
    /// A connection is kept only after a complete answer with a length (or chunked), with nothing read
    /// past it and no `Connection: close`; for `idleSeconds` at most, and `maximumIdle` of them in all
    /// (the oldest go first). One the server closed meanwhile is noticed before it is used (it has
    /// become readable), or when the request meets the closed connection: ``HTTPClient/send`` then
    /// sends it again on a new one.
    ///
    /// Safe across `fork`: a connection is kept with the id of the process that made it, and a child
    /// never uses its parent's (two processes on one socket would read each other's answers); it drops
    /// its copies, which closes only its own descriptors (no TLS close_notify is sent, so the parent's
    /// session goes on).
    package final class ConnectionPool: Sendable {
        /// What a kept connection can serve: the same server, reached with the same trust and client
        /// certificate (a rotated certificate is not presented on a connection made with the old one).
        struct Key: Equatable, Sendable {
            let secure: Bool
            let host: String
            let port: Int
            let caPEM: String
            let certificatePEM: String

            init(_ url: URL, _ options: Options) {
                secure = url.secure
                host = url.host
                port = url.port
                caPEM = options.caPEM ?? ""
                certificatePEM = options.clientIdentity?.certificatePEM ?? ""
            }
        }

        private struct Idle: Sendable {
            let connection: Connection
            let key: Key
            let since: Double
            let process: pid_t
        }

        package let maximumIdle: Int
        package let idleSeconds: Double
        private let idle = Mutex<[Idle]>([])

        /// Well under a server's idle timeout (cofferd's and OpenBao's: 5 minutes).
        package init(maximumIdle: Int = 8, idleSeconds: Double = 30) {
            self.maximumIdle = max(0, maximumIdle)
            self.idleSeconds = idleSeconds
        }

        /// Connections kept now.
        package var idleCount: Int { idle.withLock { $0.count } }

        /// Closes every kept connection (released once out of the lock, which closes them).
        package func removeAll() {
            _ = idle.withLock { idle in
                defer { idle.removeAll() }
                return idle
            }
        }

        /// The most recently kept connection for `key` that the server has not closed; nil if none.
        func take(_ key: Key) -> Connection? {
            let now = TCP.monotonicSeconds()
            let process = getpid()
            let idleSeconds = idleSeconds
            while true {
                // The expired ones, and any a parent process kept, come out too, to be closed (this
                // process's copies) once out of the lock.
                let (found, _): (Connection?, [Idle]) = idle.withLock { idle in
                    let unusable = { (entry: Idle) in now - entry.since > idleSeconds || entry.process != process }
                    let expired = idle.filter(unusable)
                    if !expired.isEmpty { idle.removeAll(where: unusable) }
                    guard let index = idle.lastIndex(where: { $0.key == key }) else { return (nil, expired) }
                    return (idle.remove(at: index).connection, expired)
                }
                guard let found else { return nil }
                if found.isQuiet { return found }
            }
        }

        func put(_ connection: Connection, _ key: Key) {
            let entry = Idle(connection: connection, key: key, since: TCP.monotonicSeconds(), process: getpid())
            // The oldest past `maximumIdle` come out, to be closed once out of the lock.
            _ = idle.withLock { idle -> [Idle] in
                idle.append(entry)
                guard idle.count > maximumIdle else { return [] }
                let extra = idle.count - maximumIdle
                defer { idle.removeFirst(extra) }
                return Array(idle.prefix(extra))
            }
        }
    }
}
