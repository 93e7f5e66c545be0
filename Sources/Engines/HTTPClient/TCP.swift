#if canImport(Glibc)
import Glibc
#endif

/// The socket work the HTTP and LDAP clients share: a TCP connection with a connect timeout, socket
/// timeouts, a monotonic clock. Each client words the failures its own way.
package enum TCP {
    /// Why no connection was made: the host did not resolve, or no address accepted (the last
    /// address's error, lower-cased as Go prints it; `timedOut` is used when the timeout ran out).
    package enum ConnectFailure: Error {
        case lookup(String)
        case connect(String)
    }

    /// Resolves `host` and connects to the first address that accepts within `timeout` seconds;
    /// the socket is returned blocking.
    package static func connect(
        host: String,
        port: Int,
        timeout: Double,
        timedOut: String
    ) throws(ConnectFailure) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else { throw .lookup(String(cString: gai_strerror(rc))) }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            entry = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else {
                lastError = String(cString: strerror(errno)).lowercased()
                continue
            }
            let flags = fcntl(fd, F_GETFL, 0)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var result = Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen)
            if result != 0 && errno == EINPROGRESS {
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&poller, 1, Int32(clamping: Int(max(timeout, 0) * 1000)))
                if ready == 1 {
                    var error: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
                    if error == 0 {
                        result = 0
                    } else {
                        lastError = String(cString: strerror(error)).lowercased()
                    }
                } else {
                    lastError = ready == 0 ? timedOut : String(cString: strerror(errno)).lowercased()
                }
            } else if result != 0 {
                lastError = String(cString: strerror(errno)).lowercased()
            }
            if result == 0 {
                _ = fcntl(fd, F_SETFL, flags)
                return fd
            }
            close(fd)
        }
        throw .connect(lastError)
    }

    /// `SO_RCVTIMEO` or `SO_SNDTIMEO` of `seconds` (at least a millisecond: zero would mean none).
    package static func setTimeout(_ fd: Int32, _ option: Int32, _ seconds: Double) {
        let s = max(seconds, 0.001)
        var tv = timeval(tv_sec: Int(s), tv_usec: Int((s - s.rounded(.down)) * 1e6))
        _ = setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    package static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
