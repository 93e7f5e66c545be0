import CLinux
package import CofferCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where audit records go: JSON lines, one or a batch per write, failure reported by throwing; the
/// device and broker decide what a failure means (fail closed when no device recorded).
package protocol AuditSink: Sendable {
    /// Writes one or more complete lines (each with its trailing newline), all or nothing as far as
    /// the sink can tell, or throws. Datagram sinks send each line as its own datagram.
    func write(_ lines: [UInt8]) throws(CofferError)
    /// Reopens files and sockets (logrotate, SIGHUP).
    func reopen() throws(CofferError)
    /// Closes the file or socket. Safe to call more than once.
    func close()
    /// The end of the file as the sink found it when it was created, if it can read its records back
    /// (files): the device continues the hash chain from it, and ends a line a crash cut short.
    func openingTail() -> AuditFileTail?
}

/// The end of an audit file: its last whole line and anything after the last newline.
package struct AuditFileTail: Sendable {
    /// The last non-blank line that ends in a newline, without the newline; nil if there is none or
    /// it is longer than `AuditFileTail.limit`.
    var lastLine: [UInt8]?
    /// The bytes after the last newline: empty unless the file ends in the middle of a line (a write
    /// cut short by a crash or a power loss).
    var fragment: [UInt8] = []
    /// Whether the file, if not empty, looks like a log of JSON lines: its last line (or, when no line
    /// is whole yet, its fragment) starts with `{`, and a whole last line ends with `}`.
    var looksLikeJSONLines = true

    /// How far back from the end a device reads to find its last record.
    static let limit = 64 << 20

    /// Reads the end of the file open at `fd`, which is `size` bytes long. Nil if the last line is
    /// longer than `limit` and does not end in a newline (the fragment cannot be read whole).
    static func read(fd: Int32, size: Int) -> AuditFileTail? {
        guard size > 0 else { return AuditFileTail() }
        var window = Swift.min(size, 64 << 10)
        while true {
            var buffer = [UInt8](repeating: 0, count: window)
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, window, off_t(size - window)) }
            guard n == window else { return nil }
            if let tail = parse(buffer, wholeFile: window == size) { return tail }
            guard window < size, window < limit else {
                // No whole line within the limit: what is here is the end of one very long line.
                guard let newline = buffer.lastIndex(of: 0x0A) else { return nil }
                var tail = AuditFileTail(lastLine: nil, fragment: Array(buffer[(newline + 1)...]))
                tail.looksLikeJSONLines = buffer[..<newline].last(where: { $0 != 0x0D }) == UInt8(ascii: "}")
                return tail
            }
            window = Swift.min(Swift.min(size, limit), window * 4)
        }
    }

    /// The tail found in the last `buffer.count` bytes of a file, or nil if they do not reach back far
    /// enough (to the start of the last non-blank whole line, or to the start of the file).
    private static func parse(_ buffer: [UInt8], wholeFile: Bool) -> AuditFileTail? {
        guard let lastNewline = buffer.lastIndex(of: 0x0A) else {
            guard wholeFile else { return nil }
            return AuditFileTail(lastLine: nil, fragment: buffer, looksLikeJSONLines: buffer.first == UInt8(ascii: "{"))
        }
        let fragment = Array(buffer[(lastNewline + 1)...])
        var end = lastNewline
        while true {
            let previous = buffer[..<end].lastIndex(of: 0x0A)
            guard previous != nil || wholeFile else { return nil }
            let start = previous.map { $0 + 1 } ?? 0
            var line = buffer[start..<end]
            while let last = line.last, last == 0x0D || last == 0x20 { line = line.dropLast() }
            if !AuditChain.isBlank(line) {
                let json = line.first == UInt8(ascii: "{") && line.last == UInt8(ascii: "}")
                return AuditFileTail(lastLine: Array(line), fragment: fragment, looksLikeJSONLines: json)
            }
            guard let previous else {
                // Only blank lines before the fragment.
                return AuditFileTail(
                    lastLine: nil,
                    fragment: fragment,
                    looksLikeJSONLines: fragment.isEmpty || fragment.first == UInt8(ascii: "{")
                )
            }
            end = previous
        }
    }
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

/// Writes `bytes` to `fd`, retrying short writes and EINTR; returns how many were written before an
/// error (errno says which), or all of them.
private func writePrefix(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int {
    var written = 0
    while written < bytes.count {
        let n = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
        if n < 0 {
            if errno == EINTR { continue }
            break
        }
        written += n
    }
    return written
}

/// Writes all of `bytes` to `fd` (retrying short writes and EINTR); false on an error.
private func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    writePrefix(fd, bytes) == bytes.count
}

private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { writeAll(fd, $0) }
}

/// Appends the middle of big batches to a file with direct I/O: from one reused buffer to the disk,
/// with no page-cache page to find for each 4 KiB. A plain write must get one; on a VM whose balloon
/// takes free memory back from the guest (free page reporting), touching such a page first faults in
/// the host, and copying a batch into the page cache cost 1-8 µs per KiB, against 0.1 µs this way
/// (docs/audit.md).
///
/// The file's own descriptor (O_APPEND) writes the bytes up to the next aligned offset and those after
/// the last whole block; this one, opened on the same file with O_APPEND | O_DIRECT, writes the blocks
/// between them. The file's bytes are the batch's, in order, with nothing added. Data leaves the page
/// cache no later than a plain write's would.
final class DirectAppender {
    let fd: Int32
    /// Of offsets, lengths and memory: the file system's, but at least a page, so that no page-cache
    /// page holds both bytes written the usual way and bytes written directly.
    let alignment: Int
    /// Set when the file system refused a direct write it had said it takes: use plain writes.
    private(set) var refused = false
    private(set) var written = 0
    private var buffer: UnsafeMutableRawPointer?
    /// The most one direct write carries: the buffer's size.
    static let chunk = 1 << 20

    /// Opens `path` for direct appends if it names the file `device`/`inode` and its file system
    /// reports an alignment for direct I/O (Linux 6.1 and later); nil otherwise.
    init?(path: String, device: UInt64, inode: UInt64) {
        let fd = coffer_open_append_direct(path)
        guard fd >= 0 else { return nil }
        var st = stat()
        let reported = Int(coffer_direct_alignment(fd))
        guard fstat(fd, &st) == 0, UInt64(st.st_dev) == device, UInt64(st.st_ino) == inode, reported > 0,
            reported <= 1 << 16
        else {
            Glibc.close(fd)
            return nil
        }
        self.fd = fd
        alignment = Swift.max(reported, sysconf(Int32(_SC_PAGESIZE)))
    }

    deinit {
        Glibc.close(fd)
        free(buffer)
    }

    /// Appends a prefix of `bytes` to the file `appending` (the sink's O_APPEND descriptor of the same
    /// file) writes: the head through it, then whole blocks directly. Returns how many bytes it wrote;
    /// the caller writes the rest the usual way (the tail, or everything after an error).
    func append(_ bytes: UnsafeRawBufferPointer, after appending: Int32) -> Int {
        var st = stat()
        guard fstat(appending, &st) == 0 else { return 0 }
        let head = Swift.min(bytes.count, (alignment - Int(st.st_size) % alignment) % alignment)
        var done = writePrefix(appending, UnsafeRawBufferPointer(rebasing: bytes[..<head]))
        guard done == head else { return done }
        while bytes.count - done >= alignment {
            if buffer == nil, posix_memalign(&buffer, alignment, Self.chunk) != 0 { buffer = nil }
            guard let buffer else { break }
            let length = Swift.min(DirectAppender.chunk, (bytes.count - done) / alignment * alignment)
            buffer.copyMemory(from: bytes.baseAddress! + done, byteCount: length)
            let n = Glibc.write(fd, buffer, length)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EINVAL { refused = true }
            guard n > 0 else { break }
            done += n
            written += n
            // A short write that ends inside a block: the rest goes the usual way.
            guard n % alignment == 0 else { break }
        }
        return done
    }
}

/// A connected Unix-domain socket of `type` (stream or datagram) to `path`.
private func connectUnix(_ path: String, type: __socket_type, what: String) throws(CofferError) -> Int32 {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
        throw CofferError.invalid("\(what) path is longer than \(MemoryLayout.size(ofValue: addr.sun_path) - 1) bytes")
    }
    let sock = socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard sock >= 0 else { throw posixError("cannot create a unix socket") }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.connect(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard rc == 0 else {
        Glibc.close(sock)
        throw posixError("cannot connect to \(what) \(path)")
    }
    return sock
}

/// The permission bits a file device gives its file: the `mode` option, an octal string as Vault has
/// it (default "0600"; "0000" leaves an existing file's mode alone).
package struct AuditFileMode: Sendable, Equatable {
    /// Nil for "0000": an existing file keeps its mode, a new one gets 0600.
    let bits: mode_t?

    static let `default` = AuditFileMode(bits: 0o600)
    /// What a file the device creates gets when `mode` is "0000".
    static let forNewFiles: mode_t = 0o600

    private init(bits: mode_t?) { self.bits = bits }

    /// Parses the `mode` option: one to four octal digits. Refused (HCSEC-2025-14; docs/threat-model.md):
    /// any execute bit, the setuid, setgid and sticky bits, and write permission for every user.
    init(option: String?) throws(CofferError) {
        guard let option else {
            self = .default
            return
        }
        let digits = Array(option.utf8)
        guard (1...4).contains(digits.count), digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") })
        else {
            throw CofferError.invalid("audit option mode must be one to four octal digits, like \"0600\" or \"0640\"")
        }
        let value = digits.reduce(mode_t(0)) { $0 * 8 + mode_t($1 - UInt8(ascii: "0")) }  // at most 0o7777
        guard value != 0 else {
            self.init(bits: nil)
            return
        }
        guard value & 0o7000 == 0 else {
            throw CofferError.invalid(
                "audit option mode may hold permission bits only: no setuid, setgid or sticky bit"
            )
        }
        guard value & 0o111 == 0 else {
            throw CofferError.invalid(
                "audit option mode must not make the audit file executable (no x bit); use 0600 or 0640"
            )
        }
        guard value & 0o002 == 0 else {
            throw CofferError.invalid("audit option mode must not let every user write the audit file (the 002 bit)")
        }
        self.init(bits: value)
    }
}

/// A file device: JSON lines appended to a regular file (docs/audit.md, "What file_path may name").
///
/// The file is opened only if it is a regular file, or a symbolic link to one in the same directory;
/// a new file is created only in an existing directory, and an existing one must be empty or end in
/// JSON lines. Its mode is set (the `mode` option) only on a file the device creates or that the
/// process already owns. These checks run at every open, not only when the device is enabled.
///
/// Before each write the device checks that `path` still names the file it has open. If the file was
/// renamed or removed (logrotate) it opens a new one there; if that fails (the directory is gone or not
/// writable) the write fails, so a broken device is noticed at once rather than writing into an
/// unlinked file.
///
/// A batch of at least `directBatch` bytes (a busy device's) goes to the disk past the page cache where
/// the file system has direct I/O (`DirectAppender`). Nothing reads an audit log back through the server,
/// and left cached it would push out the pages that are read (the database's).
package final class FileAuditSink: AuditSink {
    let path: String
    let mode: AuditFileMode
    private struct State: ~Copyable {
        var fd: Int32
        var device: UInt64
        var inode: UInt64
        /// Where big batches go, for a file system with direct I/O.
        var direct: DirectAppender?
    }
    /// The least a batch written directly holds. A direct write waits for the disk, and below this size
    /// costs more CPU per byte than a plain one at its best (docs/audit.md).
    package static let directBatch = 128 << 10
    private let state: Mutex<State>
    private let tail: AuditFileTail

    /// Opens (or creates) the file. A path that cannot be opened, or must not be, is the caller's
    /// mistake: an `invalidArgument` error (400) that says what is wrong with it.
    init(path: String, mode: AuditFileMode) throws(CofferError) {
        guard path.hasPrefix("/") else {
            throw CofferError.invalid("file_path must be an absolute path, or stdout, or discard")
        }
        guard !path.utf8.contains(0) else { throw CofferError.invalid("file_path must not contain a NUL byte") }
        guard path.utf8.count < Int(PATH_MAX) else {
            throw CofferError.invalid("file_path is longer than \(Int(PATH_MAX) - 1) bytes")
        }
        let opened: Opened
        do {
            opened = try FileAuditSink.open(path, mode: mode)
        } catch {
            throw CofferError.invalid(error.problem)
        }
        self.path = path
        self.mode = mode
        self.state = Mutex(State(fd: opened.fd, device: opened.device, inode: opened.inode, direct: opened.direct))
        self.tail = opened.tail
    }

    package func openingTail() -> AuditFileTail? { tail }

    package func reopen() throws(CofferError) {
        try state.withLock { (s) throws(CofferError) in try reopen(&s) }
    }

    private func reopen(_ s: inout State) throws(CofferError) {
        if s.fd >= 0 { Glibc.close(s.fd) }
        s.fd = -1
        s.direct = nil
        do {
            let opened = try FileAuditSink.open(path, mode: mode)
            s.fd = opened.fd
            s.device = opened.device
            s.inode = opened.inode
            s.direct = opened.direct
        } catch {
            throw CofferError(.auditFailed, "cannot open audit file \(path): \(error.problem)")
        }
    }

    package func write(_ lines: [UInt8]) throws(CofferError) {
        try state.withLock { (s) throws(CofferError) in
            var st = stat()
            if s.fd < 0 || stat(path, &st) != 0 || UInt64(st.st_ino) != s.inode || UInt64(st.st_dev) != s.device {
                try reopen(&s)
            }
            let direct = lines.count >= Self.directBatch ? s.direct : nil
            let fd = s.fd
            let wrote = lines.withUnsafeBytes { bytes in
                let written = direct?.append(bytes, after: fd) ?? 0
                return writeAll(fd, UnsafeRawBufferPointer(rebasing: bytes[written...]))
            }
            let failure = wrote ? nil : posixError("cannot write to audit file \(path)")
            if direct?.refused == true { s.direct = nil }  // this file system's answer: write as usual
            if let failure { throw failure }
        }
    }

    /// How many bytes went to the file by direct I/O since it was opened.
    package var bytesWrittenDirectly: Int { state.withLock { $0.direct?.written ?? 0 } }

    package func close() {
        state.withLock { s in
            if s.fd >= 0 { Glibc.close(s.fd) }
            s.fd = -1
        }
    }

    // MARK: Opening

    /// Why a path cannot be opened, said without repeating the path (the caller adds it where it helps).
    struct Problem: Error {
        let problem: String
        init(_ problem: String) { self.problem = problem }
        static func errno(_ what: String) -> Problem { Problem("\(what): \(String(cString: strerror(Glibc.errno)))") }
    }

    private struct Opened {
        let fd: Int32
        let device: UInt64
        let inode: UInt64
        let tail: AuditFileTail
        let direct: DirectAppender?
    }

    /// What a non-regular file is, for the error that refuses it.
    private static func refusal(_ mode: mode_t) -> Problem {
        switch mode & S_IFMT {
        case S_IFDIR: Problem("file_path names a directory, not a file")
        case S_IFCHR, S_IFBLK:
            Problem("file_path names a device file, not a regular file; to drop every record, use file_path=discard")
        case S_IFIFO: Problem("file_path names a FIFO, not a regular file")
        case S_IFSOCK:
            Problem(
                "file_path names a socket, not a regular file; use a socket audit device to send records to a socket"
            )
        default: Problem("file_path does not name a regular file")
        }
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = Glibc.realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// `path` split at its last slash: the directory ("/" for a file at the root) and the name.
    private static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory == "/" ? "/" + name : directory + "/" + name
    }

    /// Opens `path` for appending after checking what it names (see the type's comment), sets the
    /// mode where that is allowed, and reads the end of the file.
    private static func open(_ path: String, mode: AuditFileMode) throws(Problem) -> Opened {
        let (directory, name) = split(path)
        guard !name.isEmpty else { throw Problem("file_path names a directory, not a file") }
        guard let realDirectory = realPath(directory) else {
            switch Glibc.errno {
            case ENOENT: throw Problem("the directory of file_path does not exist; create it first")
            case ENOTDIR: throw Problem("the directory of file_path is not a directory")
            default: throw Problem.errno("the directory of file_path cannot be used")
            }
        }
        // What the path names, following at most one symbolic link, which must stay in the directory.
        var target = join(realDirectory, name)
        var st = stat()
        var exists = lstat(target, &st) == 0
        if !exists && Glibc.errno != ENOENT { throw Problem.errno("file_path cannot be examined") }
        if exists && st.st_mode & S_IFMT == S_IFLNK {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let length = readlink(target, &buffer, Int(PATH_MAX))
            guard length > 0 else { throw Problem.errno("the symbolic link file_path cannot be read") }
            let link = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let (linkDirectory, linkName) = split(link.hasPrefix("/") ? link : join(realDirectory, link))
            guard !linkName.isEmpty, linkName != ".", linkName != "..", realPath(linkDirectory) == realDirectory else {
                throw Problem(
                    "file_path is a symbolic link that points outside its own directory; link to a file in the same directory, or give the file's own path"
                )
            }
            target = join(realDirectory, linkName)
            exists = lstat(target, &st) == 0
            if !exists && Glibc.errno != ENOENT {
                throw Problem.errno("the file file_path links to cannot be examined")
            }
            if exists && st.st_mode & S_IFMT == S_IFLNK {
                throw Problem("file_path is a symbolic link to another symbolic link; link to the file itself")
            }
        }
        if exists && st.st_mode & S_IFMT != S_IFREG { throw refusal(st.st_mode) }

        // Open without following a link and without blocking (a FIFO swapped in meanwhile), then check
        // again on the descriptor what was opened.
        let flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY
        var created = false
        var fd: Int32 = -1
        if !exists {
            fd = Glibc.open(target, flags | O_CREAT | O_EXCL, AuditFileMode.forNewFiles)
            created = fd >= 0
        }
        if fd < 0 && (exists || Glibc.errno == EEXIST) { fd = Glibc.open(target, flags) }
        guard fd >= 0 else {
            if Glibc.errno == ELOOP { throw Problem("file_path became a symbolic link while it was being opened") }
            throw Problem.errno("file_path cannot be opened for appending")
        }
        var opened = stat()
        guard fstat(fd, &opened) == 0 else {
            let problem = Problem.errno("file_path cannot be examined")
            Glibc.close(fd)
            throw problem
        }
        guard opened.st_mode & S_IFMT == S_IFREG else {
            Glibc.close(fd)
            throw refusal(opened.st_mode)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)

        // An existing file must be empty or hold JSON lines: the device appends to audit logs, not to
        // whatever file an API caller names.
        let size = Int(opened.st_size)
        var tail = AuditFileTail()
        if size > 0 {
            let reader = Glibc.open(target, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
            var readerStat = stat()
            guard reader >= 0, fstat(reader, &readerStat) == 0, readerStat.st_ino == opened.st_ino,
                readerStat.st_dev == opened.st_dev
            else {
                let problem = Problem.errno("file_path cannot be read back to continue its records")
                if reader >= 0 { Glibc.close(reader) }
                Glibc.close(fd)
                throw problem
            }
            let found = AuditFileTail.read(fd: reader, size: size)
            Glibc.close(reader)
            guard let found, found.looksLikeJSONLines else {
                Glibc.close(fd)
                throw Problem(
                    "file_path names an existing file that is not an audit log (its last line is not a JSON object); give a new file, or a log of JSON lines"
                )
            }
            tail = found
        }

        // The mode: set on a file the device created, or that this process owns; never on anyone else's.
        if created {
            _ = fchmod(fd, mode.bits ?? AuditFileMode.forNewFiles)
        } else if let bits = mode.bits, opened.st_uid == geteuid(), opened.st_mode & 0o7777 != bits {
            _ = fchmod(fd, bits)
        }
        let device = UInt64(opened.st_dev)
        let inode = UInt64(opened.st_ino)
        let direct = DirectAppender(path: target, device: device, inode: inode)
        return Opened(fd: fd, device: device, inode: inode, tail: tail, direct: direct)
    }
}

/// `file_path` = `stdout`: records go to the process's standard output, as in Vault.
package final class StdoutAuditSink: AuditSink {
    /// Two devices writing to standard output do not interleave inside a batch.
    private static let lock = Mutex(())

    package func write(_ lines: [UInt8]) throws(CofferError) {
        try StdoutAuditSink.lock.withLock { (_) throws(CofferError) in
            guard writeAll(STDOUT_FILENO, lines) else {
                throw posixError("cannot write audit records to standard output")
            }
        }
    }

    package func reopen() {}
    package func close() {}
    package func openingTail() -> AuditFileTail? { nil }
}

/// `file_path` = `discard`: records are built (and hashed) and dropped, as in Vault; for a device that
/// must exist but whose output nobody keeps.
package final class DiscardAuditSink: AuditSink {
    package func write(_ lines: [UInt8]) {}
    package func reopen() {}
    package func close() {}
    package func openingTail() -> AuditFileTail? { nil }
}

/// A socket device: JSON lines over TCP, UDP or a Unix stream socket. A lost peer is reconnected once
/// per write; if that fails the write fails.
package final class SocketAuditSink: AuditSink {
    let address: String
    let kind: String  // "tcp", "udp", "unix"
    private let fd = Mutex<Int32>(-1)

    init(address: String, kind: String) throws(CofferError) {
        guard ["tcp", "udp", "unix"].contains(kind) else {
            throw CofferError.invalid("audit option socket_type must be tcp, udp or unix")
        }
        guard !address.isEmpty else { throw CofferError.invalid("the socket audit device needs an address") }
        self.address = address
        self.kind = kind
        try reopen()
    }

    package func reopen() throws(CofferError) {
        try fd.withLock { (fd) throws(CofferError) in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
            fd = try connect()
        }
    }

    private func connect() throws(CofferError) -> Int32 {
        if kind == "unix" { return try connectUnix(address, type: SOCK_STREAM, what: "audit socket") }
        guard let colon = address.lastIndex(of: ":") else {
            throw CofferError.invalid("audit option address must be host:port (or a path, with socket_type unix)")
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
        let sock = socket(
            first.pointee.ai_family,
            first.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue),
            first.pointee.ai_protocol
        )
        guard sock >= 0 else { throw posixError("cannot create a socket") }
        guard Glibc.connect(sock, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            Glibc.close(sock)
            throw posixError("cannot connect to audit socket \(address)")
        }
        return sock
    }

    package func write(_ lines: [UInt8]) throws(CofferError) {
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

    package func close() {
        fd.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    package func openingTail() -> AuditFileTail? { nil }
}

/// A syslog device: each record as one datagram in the BSD syslog format (`<PRI>TAG: message`) to
/// the local syslog socket (`/dev/log` unless `socket_path` says otherwise), as glibc's syslog(3) does,
/// but with errors reported instead of dropped.
package final class SyslogAuditSink: AuditSink {
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
            throw CofferError.invalid(
                "audit option facility must be one of \(SyslogAuditSink.facilities.keys.sorted().joined(separator: ", "))"
            )
        }
        self.socketPath = socketPath
        self.priority = code * 8 + 6  // severity: informational
        self.tag = tag
        try reopen()
    }

    package func reopen() throws(CofferError) {
        try fd.withLock { (fd) throws(CofferError) in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
            fd = try connectUnix(socketPath, type: SOCK_DGRAM, what: "syslog socket")
        }
    }

    package func write(_ lines: [UInt8]) throws(CofferError) {
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

    package func close() {
        fd.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    package func openingTail() -> AuditFileTail? { nil }
}
