import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// The external steps of a rotation: a command (argv, no shell) or a webhook, each bounded by a
/// timeout. A secret goes to a command on its standard input and to a webhook in the request body,
/// never on a command line; errors say what failed (an exit status, a timeout, an HTTP status),
/// never what the step printed or answered, which may hold the secret.
enum RotationExternal {
    /// The most a generator may print (or a webhook answer).
    static let maximumOutput = 64 << 10

    struct Failure: Error {
        let message: String
    }

    /// Runs `argv` (argv[0] an absolute path) with `input` on its standard input and an environment
    /// of `PATH=/usr/bin:/bin` only; returns its exit status and standard output. Standard error is
    /// discarded. After `timeout` seconds the process and its process group are killed.
    static func run(
        _ argv: [String],
        input: [UInt8],
        timeout: Double
    ) throws(Failure) -> (
        status: Int32, output: [UInt8]
    ) {
        guard let program = argv.first, program.hasPrefix("/") else {
            throw Failure(message: "the command's first element must be an absolute path")
        }
        // stdin: a socket pair, so that writing to a child that exited raises no SIGPIPE (MSG_NOSIGNAL).
        var inPair: [Int32] = [-1, -1]
        guard
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &inPair) == 0
        else { throw Failure(message: "cannot create a socket pair: \(String(cString: strerror(errno)))") }
        var outPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else {
            close(inPair[0])
            close(inPair[1])
            throw Failure(message: "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        for fd in outPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPair[1], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nothing else of this process reaches the child: every other open descriptor is closed in it.
        for fd in openDescriptors() where fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(
            &attributes,
            Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        )
        posix_spawnattr_setpgroup(&attributes, 0)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)

        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        let cEnv: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, program, &actions, &attributes, cArgs, cEnv)
        close(inPair[1])
        close(outPipe[1])
        guard spawned == 0 else {
            close(inPair[0])
            close(outPipe[0])
            throw Failure(message: "cannot start \(program): \(String(cString: strerror(spawned)))")
        }
        let deadline = TCP.monotonicSeconds() + timeout
        var stdinFD: Int32 = inPair[0]
        let stdoutFD = outPipe[0]
        _ = fcntl(stdinFD, F_SETFL, fcntl(stdinFD, F_GETFL, 0) | O_NONBLOCK)
        var written = 0
        if input.isEmpty {
            close(stdinFD)
            stdinFD = -1
        }
        var output: [UInt8] = []
        var outputOpen = true
        var tooLong = false
        var buffer = [UInt8](repeating: 0, count: 4096)
        func kill() {
            _ = Glibc.kill(-pid, SIGKILL)
            _ = Glibc.kill(pid, SIGKILL)
        }
        defer {
            if stdinFD >= 0 { close(stdinFD) }
            close(stdoutFD)
        }
        while outputOpen {
            let remaining = deadline - TCP.monotonicSeconds()
            if remaining <= 0 {
                kill()
                var status: Int32 = 0
                _ = waitpid(pid, &status, 0)
                throw Failure(message: "\(program) did not finish within \(format(timeout)) and was killed")
            }
            var fds = [pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)]
            if stdinFD >= 0 { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(clamping: Int(remaining * 1000) + 1))
            if ready < 0 && errno != EINTR { break }
            if ready <= 0 { continue }
            if fds[0].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(stdoutFD, $0.baseAddress, $0.count) }
                if n > 0 {
                    if output.count + n > maximumOutput {
                        tooLong = true
                        kill()
                        outputOpen = false
                    } else {
                        output += buffer[0..<n]
                    }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    outputOpen = false
                }
            }
            if stdinFD >= 0, fds.count > 1, fds[1].revents != 0 {
                let n = input[written...].withUnsafeBytes {
                    send(stdinFD, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                }
                if n > 0 { written += n }
                if n < 0 && errno != EAGAIN && errno != EINTR || written >= input.count {
                    close(stdinFD)
                    stdinFD = -1
                }
            }
        }
        buffer.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
        // Standard output is closed: wait for the exit, still within the deadline.
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { throw Failure(message: "lost track of \(program)") }
            if TCP.monotonicSeconds() >= deadline {
                kill()
                _ = waitpid(pid, &status, 0)
                throw Failure(message: "\(program) did not finish within \(format(timeout)) and was killed")
            }
            usleep(2000)
        }
        if tooLong { throw Failure(message: "\(program) printed more than \(maximumOutput) bytes") }
        // WIFEXITED / WEXITSTATUS / WTERMSIG by hand (macros are not imported).
        if status & 0x7f == 0 { return ((status >> 8) & 0xff, output) }
        throw Failure(message: "\(program) was killed by signal \(status & 0x7f)")
    }

    /// The descriptors open in this process (from /proc/self/fd).
    static func openDescriptors() -> [Int32] {
        (directoryEntries("/proc/self/fd") ?? []).compactMap { Int32($0) }
    }

    /// POSTs `body` (JSON) to `url` within `timeout` seconds; returns the status and the body.
    static func post(
        _ url: String,
        body: JSONValue,
        timeout: Double
    ) throws(Failure) -> (
        status: Int, body: [UInt8]
    ) {
        var options = HTTPClient.Options()
        options.connectTimeout = min(5, timeout)
        options.ioTimeout = timeout
        options.deadline = timeout
        options.maximumBodyBytes = maximumOutput
        do {
            let response = try HTTPClient.send(
                "POST",
                url,
                headers: [("Content-Type", "application/json")],
                body: body.serialized(),
                options: options
            )
            return (response.status, response.body)
        } catch {
            throw Failure(message: error.message)
        }
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? "\(Int(seconds))s" : "\(seconds)s"
    }
}
