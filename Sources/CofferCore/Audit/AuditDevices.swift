import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where audit records go: JSON lines, one or a batch per write, failure reported by throwing; the
/// device and broker decide what a failure means (fail closed when no device recorded).
protocol AuditSink: Sendable {
    /// Writes one or more complete lines (each with its trailing newline), all or nothing as far as
    /// the sink can tell, or throws. Datagram sinks send each line as its own datagram.
    func write(_ lines: [UInt8]) throws(CofferError)
    /// Reopens files and sockets (logrotate, SIGHUP).
    func reopen() throws(CofferError)
    func close()
    /// The last line already recorded, if the device can read it back (files), to continue the hash chain.
    func lastLine() -> [UInt8]?
}

private func posixError(_ what: String) -> CofferError {
    CofferError(.auditFailed, "\(what): \(String(cString: strerror(errno)))")
}

/// The lines of a batch, each with its newline.
private func splitLines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
    var lines: [ArraySlice<UInt8>] = []
    var start = 0
    for (i, byte) in bytes.enumerated() where byte == 0x0A {
        lines.append(bytes[start...i])
        start = i + 1
    }
    if start < bytes.count { lines.append(bytes[start...]) }
    return lines
}

/// A connected Unix-domain socket of `type` (stream or datagram) to `path`.
private func connectUnix(_ path: String, type: __socket_type, what: String) throws(CofferError) -> Int32 {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
        throw CofferError.invalid("\(what) path is too long: \(path)")
    }
    let sock = socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard sock >= 0 else { throw posixError("cannot create a unix socket") }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else {
        Glibc.close(sock)
        throw posixError("cannot connect to \(what) \(path)")
    }
    return sock
}

/// A file device: JSON lines appended to `path`, mode 0600.
///
/// Before each write the device checks that `path` still names the file it has open. If the file was
/// renamed or removed (logrotate) it opens a new one there; if that fails (the directory is gone or not
/// writable) the write fails, so a broken device is noticed at once rather than writing into an
/// unlinked file.
final class FileAuditSink: AuditSink {
    let path: String
    private struct State: ~Copyable {
        var fd: Int32 = -1
        var device: UInt64 = 0
        var inode: UInt64 = 0
    }
    private let state = Mutex(State())

    init(path: String) throws(CofferError) {
        guard path.hasPrefix("/") else {
            throw CofferError.invalid("file_path must be an absolute path, got \"\(path)\"")
        }
        self.path = path
        try reopen()
    }

    func reopen() throws(CofferError) {
        try state.withLock { (s) throws(CofferError) in try open(&s) }
    }

    private func open(_ s: inout State) throws(CofferError) {
        if s.fd >= 0 { Glibc.close(s.fd) }
        s.fd = -1
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw posixError("cannot open audit file \(path)") }
        _ = fchmod(fd, 0o600)
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            Glibc.close(fd)
            throw posixError("cannot stat audit file \(path)")
        }
        s.fd = fd
        s.device = UInt64(st.st_dev)
        s.inode = UInt64(st.st_ino)
    }

    func write(_ lines: [UInt8]) throws(CofferError) {
        try state.withLock { (s) throws(CofferError) in
            var st = stat()
            if s.fd < 0 || stat(path, &st) != 0 || UInt64(st.st_ino) != s.inode || UInt64(st.st_dev) != s.device {
                try open(&s)
            }
            let fd = s.fd
            let complete = lines.withUnsafeBytes { bytes in
                var written = 0
                while written < bytes.count {
                    let n = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
                    if n < 0 {
                        if errno == EINTR { continue }
                        return false
                    }
                    written += n
                }
                return true
            }
            guard complete else { throw posixError("cannot write to audit file \(path)") }
        }
    }

    func close() {
        state.withLock { s in
            if s.fd >= 0 { Glibc.close(s.fd) }
            s.fd = -1
        }
    }

    func lastLine() -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0 else { return nil }
        let window = min(Int(size), 1 << 20)
        var buffer = [UInt8](repeating: 0, count: window)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, window, off_t(Int(size) - window)) }
        guard n == window else { return nil }
        var end = buffer.count
        while end > 0 && buffer[end - 1] == 0x0A { end -= 1 }
        guard end > 0 else { return nil }
        var start = end
        while start > 0 && buffer[start - 1] != 0x0A { start -= 1 }
        return Array(buffer[start..<end])
    }
}

/// A socket device: JSON lines over TCP, UDP or a Unix stream socket. A lost peer is reconnected once
/// per write; if that fails the write fails.
final class SocketAuditSink: AuditSink {
    let address: String
    let kind: String  // "tcp", "udp", "unix"
    private let fd = Mutex<Int32>(-1)

    init(address: String, kind: String) throws(CofferError) {
        guard ["tcp", "udp", "unix"].contains(kind) else {
            throw CofferError.invalid("socket_type must be tcp, udp or unix, got \"\(kind)\"")
        }
        guard !address.isEmpty else { throw CofferError.invalid("the socket audit device needs an address") }
        self.address = address
        self.kind = kind
        try reopen()
    }

    func reopen() throws(CofferError) {
        try fd.withLock { (fd) throws(CofferError) in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
            fd = try connect()
        }
    }

    private func connect() throws(CofferError) -> Int32 {
        if kind == "unix" { return try connectUnix(address, type: SOCK_STREAM, what: "audit socket") }
        guard let colon = address.lastIndex(of: ":") else {
            throw CofferError.invalid("socket address must be host:port, got \"\(address)\"")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let port = String(address[address.index(after: colon)...])
        var hints = addrinfo()
        hints.ai_socktype = kind == "tcp" ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, port, &hints, &result) == 0, let first = result else {
            throw CofferError(.auditFailed, "cannot resolve audit socket address \(address)")
        }
        defer { freeaddrinfo(result) }
        let sock = socket(first.pointee.ai_family, first.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), first.pointee.ai_protocol)
        guard sock >= 0 else { throw posixError("cannot create a socket") }
        guard Glibc.connect(sock, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            Glibc.close(sock)
            throw posixError("cannot connect to audit socket \(address)")
        }
        return sock
    }

    func write(_ lines: [UInt8]) throws(CofferError) {
        // A stream takes the batch at once; UDP gets a datagram per record.
        let messages = kind == "udp" ? splitLines(lines) : [lines[...]]
        try fd.withLock { (fd) throws(CofferError) in
            var next = 0
            if fd >= 0 {
                while next < messages.count, send(fd, messages[next]) { next += 1 }
                if next == messages.count { return }
                Glibc.close(fd)
                fd = -1
            }
            fd = try connect()
            while next < messages.count {
                guard send(fd, messages[next]) else { throw posixError("cannot write to audit socket \(address)") }
                next += 1
            }
        }
    }

    /// Sends everything; false on any error. MSG_NOSIGNAL: a closed peer must not raise SIGPIPE.
    private func send(_ fd: Int32, _ line: ArraySlice<UInt8>) -> Bool {
        line.withUnsafeBytes { bytes in
            var sent = 0
            while sent < bytes.count {
                let n = Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                sent += n
            }
            return true
        }
    }

    func close() {
        fd.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    func lastLine() -> [UInt8]? { nil }
}

/// A syslog device: each record as one datagram in the BSD syslog format (`<PRI>TAG: message`) to
/// the local syslog socket (`/dev/log` unless `socket_path` says otherwise), as glibc's syslog(3) does,
/// but with errors reported instead of dropped.
final class SyslogAuditSink: AuditSink {
    let socketPath: String
    let priority: Int
    let tag: String
    private let fd = Mutex<Int32>(-1)

    static let facilities: [String: Int] = [
        "AUTH": 4, "AUTHPRIV": 10, "DAEMON": 3, "USER": 1, "LOCAL0": 16, "LOCAL1": 17, "LOCAL2": 18, "LOCAL3": 19,
        "LOCAL4": 20, "LOCAL5": 21, "LOCAL6": 22, "LOCAL7": 23,
    ]

    init(socketPath: String, facility: String, tag: String) throws(CofferError) {
        guard let code = SyslogAuditSink.facilities[facility.uppercased()] else {
            throw CofferError.invalid("unknown syslog facility \"\(facility)\"; use one of \(SyslogAuditSink.facilities.keys.sorted().joined(separator: ", "))")
        }
        self.socketPath = socketPath
        self.priority = code * 8 + 6  // severity: informational
        self.tag = tag
        try reopen()
    }

    func reopen() throws(CofferError) {
        try fd.withLock { (fd) throws(CofferError) in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
            fd = try connectUnix(socketPath, type: SOCK_DGRAM, what: "syslog socket")
        }
    }

    func write(_ lines: [UInt8]) throws(CofferError) {
        let header = Array("<\(priority)>\(tag): ".utf8)
        try fd.withLock { (fd) throws(CofferError) in
            for line in splitLines(lines) {
                var message = header
                message.append(contentsOf: line.dropLast())  // the newline
                let sent = message.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard sent == message.count else { throw posixError("cannot send to the syslog socket \(socketPath)") }
            }
        }
    }

    func close() {
        fd.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    func lastLine() -> [UInt8]? { nil }
}
