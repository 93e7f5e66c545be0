// `coffer run [options] -- COMMAND [ARGS...]`: a child process with secrets in its environment and
// files, kept current. docs/run-and-agent.md.
import CofferCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

let runUsage = """
    usage: coffer run [options] -- COMMAND [ARGS...]

    Reads the template's secrets, renders its files (mode 0600), starts COMMAND with its variables in
    the environment, forwards SIGTERM, SIGINT and SIGHUP to it and exits with its exit status. The
    secrets are read again every poll interval; when one changes the child is restarted (or signalled,
    after its files are rendered again). When the store cannot be reached the child keeps running on
    the values it has, and `coffer run` says so on stderr.

      -t, --template FILE      the template (required): NAME = "{{ secret "PATH" "FIELD" }}" lines
      --address URL            the cofferd (default: BAO_ADDR, VAULT_ADDR)
      --token-file FILE        the token (default: BAO_TOKEN, VAULT_TOKEN)
      --role-id-file FILE      AppRole login: the role ID, with --secret-id-file FILE
      --approle-mount PATH     the AppRole mount (default auth/approle)
      --jwt-file FILE          JWT login: the token file, with --jwt-role ROLE [--jwt-mount auth/jwt]
      --ca-cert FILE           PEM CA certificates for https (default: BAO_CACERT)
      --namespace NS           the namespace (default: BAO_NAMESPACE)
      --config FILE            read a local vault file instead (coffer_open's JSON configuration),
                               with --token-file and, if it is sealed, --unseal-key-file FILE
      --env-file FILE          the fallback when the store cannot answer: KEY=value lines, KEY being
                               the template's variable names (docs/run-and-agent.md)
      --on-change MODE         restart (default) or signal:NAME (HUP, USR1, USR2, TERM, INT, QUIT)
      --poll-interval DUR      how often the secrets are read again (default 10s; 500ms, 2s, 1m)
      --kill-timeout DUR       how long a restart waits for the child to exit before SIGKILL (default 10s)
      --ack-as NAME            acknowledge each new KV v2 version the child switched to, as consumer NAME
                               (`<mount>/rotation-ack/<path>`, for rotations with required_acks)

    Exit status: the child's (128+N if signal N ended it); 2 for a usage, template or env file
    error; 1 when the secrets cannot be read at start and the env file does not cover them.
    """

enum OnChange: Sendable, Equatable {
    case restart
    case signal(Int32)
}

let signalNames: [String: Int32] = [
    "HUP": SIGHUP, "USR1": SIGUSR1, "USR2": SIGUSR2, "TERM": SIGTERM, "INT": SIGINT, "QUIT": SIGQUIT,
]

/// "500ms", "2s", "1m", "1h" or a number of seconds; nil for anything else or outside 10ms...1 day.
func parseDuration(_ text: String) -> Double? {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    var number = Substring(text)
    var scale = 1.0
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        number = text.dropLast(suffix.count)
        scale = factor
        break
    }
    guard let value = Double(number), value.isFinite else { return nil }
    let seconds = value * scale
    return (0.01...86400).contains(seconds) ? seconds : nil
}

func environment(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
}

/// A file's text with the whitespace around it trimmed (token, role ID, secret ID, JWT files).
func readSecretFile(_ path: String) -> String {
    let text = String(decoding: readFile(path), as: UTF8.self)
    let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
    guard !trimmed.isEmpty else { fail("\(path) is empty") }
    return trimmed
}

func runCommand(_ arguments: [String]) -> Never {
    var options: [String: String] = [:]
    var command: [String] = []
    let valueOptions: Set = [
        "template", "address", "token-file", "role-id-file", "secret-id-file", "approle-mount", "jwt-file",
        "jwt-role", "jwt-mount", "ca-cert", "namespace", "config", "unseal-key-file", "env-file", "on-change",
        "poll-interval", "kill-timeout", "ack-as",
    ]
    var index = 0
    while index < arguments.count {
        let argument = arguments[index]
        index += 1
        if argument == "--" {
            command = Array(arguments[index...])
            break
        }
        if argument == "-h" || argument == "--help" {
            print(runUsage)
            exit(0)
        }
        guard argument.hasPrefix("-") else {
            fail("unexpected argument \"\(argument)\": put the command after --\n\n\(runUsage)")
        }
        var name = String(argument.drop { $0 == "-" })
        var value: String?
        if let equals = name.firstIndex(of: "=") {
            value = String(name[name.index(after: equals)...])
            name = String(name[..<equals])
        }
        if name == "t" { name = "template" }
        guard valueOptions.contains(name) else { fail("unknown option --\(name)\n\n\(runUsage)") }
        if value == nil {
            guard index < arguments.count else { fail("--\(name) needs a value") }
            value = arguments[index]
            index += 1
        }
        options[name] = value
    }
    guard !command.isEmpty else { fail("give the command to run after --\n\n\(runUsage)") }
    guard let templatePath = options["template"] else { fail("--template FILE is required\n\n\(runUsage)") }

    // Everything the user wrote is checked before anything is read or started.
    let template: Template
    do {
        template = try Template.parse(String(decoding: readFile(templatePath), as: UTF8.self), file: templatePath)
    } catch {
        fail("\(error)")
    }
    var onChange = OnChange.restart
    if let mode = options["on-change"], mode != "restart" {
        guard mode.hasPrefix("signal:"), let number = signalNames[String(mode.dropFirst(7)).uppercased()] else {
            fail("--on-change must be restart or signal:NAME (HUP, USR1, USR2, TERM, INT, QUIT)")
        }
        onChange = .signal(number)
    }
    guard let pollInterval = parseDuration(options["poll-interval"] ?? "10s") else {
        fail("--poll-interval must be a duration from 10ms to 24h such as 500ms, 2s or 1m")
    }
    guard let killTimeout = parseDuration(options["kill-timeout"] ?? "10s") else {
        fail("--kill-timeout must be a duration from 10ms to 24h such as 500ms, 2s or 1m")
    }

    let store: any SecretStore
    do {
        // The env file is read (and its syntax checked) by the client as it opens.
        store = try makeStore(options, template: template, pollInterval: pollInterval)
    } catch {
        fail("\(error)")
    }

    let runner = Runner(
        template: template,
        templatePath: templatePath,
        store: store,
        onChange: onChange,
        pollInterval: pollInterval,
        killTimeout: killTimeout,
        ackAs: options["ack-as"]
    )
    runner.run(command)
}

func makeStore(_ options: [String: String], template: Template, pollInterval: Double) throws -> any SecretStore {
    let token = options["token-file"].map(readSecretFile) ?? environment("BAO_TOKEN") ?? environment("VAULT_TOKEN")
    if let config = options["config"] {
        guard options["env-file"] == nil else {
            throw CLIError("--env-file is a fallback for a remote store; a local vault (--config) needs none")
        }
        return try LocalStore(configPath: config, token: token, unsealKeyPath: options["unseal-key-file"])
    }
    guard let address = options["address"] ?? environment("BAO_ADDR") ?? environment("VAULT_ADDR") else {
        throw CLIError("give the store: --address URL (or BAO_ADDR), or --config FILE for a local vault")
    }
    let auth: RemoteOptions.Auth
    if let roleIDFile = options["role-id-file"] {
        guard let secretIDFile = options["secret-id-file"] else {
            throw CLIError("--role-id-file needs --secret-id-file")
        }
        auth = .appRole(
            roleID: readSecretFile(roleIDFile),
            secretID: readSecretFile(secretIDFile),
            mount: options["approle-mount"] ?? "auth/approle"
        )
    } else if let jwtFile = options["jwt-file"] {
        guard let role = options["jwt-role"] else { throw CLIError("--jwt-file needs --jwt-role") }
        auth = .jwt(jwt: readSecretFile(jwtFile), role: role, mount: options["jwt-mount"] ?? "auth/jwt")
    } else if let token {
        auth = .token(token)
    } else {
        throw CLIError("give a token (--token-file or BAO_TOKEN), --role-id-file/--secret-id-file, or --jwt-file")
    }
    let caPEM = (options["ca-cert"] ?? environment("BAO_CACERT") ?? environment("VAULT_CACERT"))
        .map { String(decoding: readFile($0), as: UTF8.self) }
    let remote = RemoteOptions(
        address: address,
        caPEM: caPEM,
        namespace: options["namespace"] ?? environment("BAO_NAMESPACE") ?? environment("VAULT_NAMESPACE"),
        auth: auth
    )
    return try openRemoteStore(remote, template: template, envFile: options["env-file"], pollInterval: pollInterval)
}

/// What the template renders to: each variable's and file's text.
typealias Rendered = [Template.Entry.Target: String]

final class Runner: Sendable {
    let template: Template
    let templatePath: String
    let store: any SecretStore
    let onChange: OnChange
    let pollInterval: Double
    let killTimeout: Double
    /// The consumer name for rotation acknowledgements; nil: none are sent.
    let ackAs: String?
    /// A change the poller found, for the main loop to apply.
    let pending = Mutex<Update?>(nil)
    /// Signalled when the store's events name a template path: the poller reads at once.
    let wake = DispatchSemaphore(value: 0)

    struct Update {
        var rendered: Rendered
        /// The paths whose version changed, and the new version.
        var versions: [String: Int]
    }

    init(
        template: Template,
        templatePath: String,
        store: any SecretStore,
        onChange: OnChange,
        pollInterval: Double,
        killTimeout: Double,
        ackAs: String?
    ) {
        self.template = template
        self.templatePath = templatePath
        self.store = store
        self.onChange = onChange
        self.pollInterval = pollInterval
        self.killTimeout = killTimeout
        self.ackAs = ackAs
    }

    struct Resolution {
        var rendered: Rendered?
        var degraded = false
        var sources: Set<String> = []
        var versions: [String: Int] = [:]
        var problem: String?
    }

    /// Reads every path once and renders every entry.
    func resolve() -> Resolution {
        var result = Resolution()
        var secrets: [String: ResolvedSecret] = [:]
        for path in template.paths {
            do {
                let read = try store.read(path)
                secrets[path] = read.secret
                if let version = read.secret.version { result.versions[path] = version }
                result.sources.insert(read.source)
                if read.degraded { result.degraded = true }
            } catch {
                result.problem = "\(error)"
                return result
            }
        }
        var rendered: Rendered = [:]
        for entry in template.entries {
            do {
                rendered[entry.target] = try entry.render(secrets, file: templatePath)
            } catch {
                result.problem = "\(error)"
                return result
            }
        }
        result.rendered = rendered
        return result
    }

    /// The values to start with: the store's, or the client's fallback (the env file), degraded.
    func initialValues() -> (Rendered, versions: [String: Int], degraded: Bool) {
        let first = resolve()
        guard let rendered = first.rendered else {
            fail("cannot read the secrets: \(first.problem ?? "unknown error")", code: 1)
        }
        if first.degraded {
            let sources = first.sources.subtracting(["store"]).sorted().joined(separator: ", ")
            note("the store cannot be reached; starting on values from \(sources) (degraded)")
        }
        return (rendered, first.versions, first.degraded)
    }

    func note(_ message: String) { writeStderr("coffer run: \(message)\n") }

    /// Writes the rendered files (mode 0600, replaced atomically); false with a note on failure.
    @discardableResult
    func writeFiles(_ rendered: Rendered) -> Bool {
        var ok = true
        for (target, text) in rendered {
            guard case .file(let path) = target else { continue }
            let temporary = path + ".coffer-tmp"
            unlink(temporary)
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                note("cannot write \(path): \(String(cString: strerror(errno)))")
                ok = false
                continue
            }
            var bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                offset += n
            }
            for i in bytes.indices { bytes[i] = 0 }
            let complete = offset == bytes.count && fsync(fd) == 0
            Glibc.close(fd)
            guard complete, rename(temporary, path) == 0 else {
                note("cannot write \(path): \(String(cString: strerror(errno)))")
                unlink(temporary)
                ok = false
                continue
            }
        }
        return ok
    }

    /// The child's environment: ours, with the template's variables over it.
    func childEnvironment(_ rendered: Rendered) -> [String] {
        var variables = ProcessInfo.processInfo.environment
        var order = variables.keys.sorted()
        for entry in template.entries {
            guard case .environment(let name) = entry.target, let value = rendered[entry.target] else { continue }
            if variables[name] == nil { order.append(name) }
            variables[name] = value
        }
        return order.map { "\($0)=\(variables[$0] ?? "")" }
    }

    func spawn(_ command: [String], _ rendered: Rendered) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2, SIGQUIT, SIGPIPE] {
            sigaddset(&defaults, signal)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = command.map { strdup($0) } + [nil]
        let envp = childEnvironment(rendered).map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp {
                if let pointer { memset(pointer, 0, strlen(pointer)) }
                free(pointer)
            }
        }
        var pid: pid_t = 0
        let status = posix_spawnp(&pid, command[0], nil, &attributes, argv, envp)
        guard status == 0 else { fail("cannot start \(command[0]): \(String(cString: strerror(status)))", code: 127) }
        return pid
    }

    /// The poller: reads the secrets every interval and hands a change to the main loop.
    func poll(from start: Rendered, versions startVersions: [String: Int], degraded startDegraded: Bool) {
        var current = start
        var versions = startVersions
        var degraded = startDegraded
        while true {
            _ = wake.wait(timeout: .now() + .milliseconds(Int(pollInterval * 1000)))
            let result = resolve()
            guard let rendered = result.rendered, !result.degraded else {
                if !degraded {
                    let why =
                        result.problem ?? "the client answered from \(result.sources.sorted().joined(separator: ", "))"
                    note(
                        "the store cannot be reached (\(why)); the child keeps running on the values it has (degraded)"
                    )
                    degraded = true
                }
                continue
            }
            if degraded {
                note("the store answers again")
                degraded = false
            }
            if rendered != current {
                let changed = template.entries.map(\.target).filter { rendered[$0] != current[$0] }
                note("secrets changed for \(changed.map(Template.describe).joined(separator: ", "))")
                current = rendered
                let changedVersions = result.versions.filter { versions[$0.key] != $0.value }
                versions = result.versions
                pending.withLock { pending in
                    // An update not yet applied is replaced; the versions it would acknowledge are kept.
                    let earlier = pending?.versions ?? [:]
                    pending = Update(rendered: rendered, versions: earlier.merging(changedVersions) { $1 })
                }
            }
        }
    }

    func run(_ command: [String]) -> Never {
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&signals, signal) }
        // Blocked before the poller starts, so only this thread takes them (with sigtimedwait).
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let (start, startVersions, degraded) = initialValues()
        guard writeFiles(start) else { fail("cannot render the template's files", code: 1) }
        var child = spawn(command, start)
        let paths = Set(template.paths.map { $0.split(separator: "?", maxSplits: 1).first.map(String.init) ?? $0 })
        store.onChange { [self] path in
            if paths.contains(path) { wake.signal() }
        }
        Thread.detachNewThread { [self] in poll(from: start, versions: startVersions, degraded: degraded) }

        var nextEnvironment = start
        var acknowledgeAfterRestart: [String: Int] = [:]
        var restarting = false
        var stopping = false
        var killDeadline = Double.infinity
        while true {
            var wait = timespec(tv_sec: 0, tv_nsec: 100_000_000)
            let signal = sigtimedwait(&signals, nil, &wait)
            if signal == SIGTERM || signal == SIGINT || signal == SIGHUP {
                kill(child, signal)
                if signal != SIGHUP, !stopping {
                    stopping = true
                    killDeadline = min(killDeadline, now() + killTimeout)
                }
            }
            var status: Int32 = 0
            if waitpid(child, &status, WNOHANG) == child {
                if restarting && !stopping {
                    restarting = false
                    killDeadline = .infinity
                    child = spawn(command, nextEnvironment)
                    note("restarted the child (pid \(child))")
                    acknowledge(acknowledgeAfterRestart)
                    acknowledgeAfterRestart = [:]
                    continue
                }
                store.close()
                let signalNumber = status & 0x7f
                exit(signalNumber == 0 ? (status >> 8) & 0xff : 128 + signalNumber)
            }
            if restarting || stopping, now() > killDeadline {
                note("the child did not exit within the kill timeout; sending SIGKILL")
                kill(child, SIGKILL)
                killDeadline = .infinity
            }
            if !restarting, !stopping,
                let update = pending.withLock({ value in
                    defer { value = nil }
                    return value
                })
            {
                writeFiles(update.rendered)
                switch onChange {
                case .restart:
                    nextEnvironment = update.rendered
                    acknowledgeAfterRestart = update.versions
                    restarting = true
                    killDeadline = now() + killTimeout
                    kill(child, SIGTERM)
                case .signal(let number):
                    kill(child, number)
                    acknowledge(update.versions)
                }
            }
        }
    }

    /// Tells a rotation waiting for acknowledgements (docs/rotation.md) that the child now runs on
    /// these versions: `<mount>/rotation-ack/<key>` for a KV v2 path `<mount>/data/<key>`.
    func acknowledge(_ versions: [String: Int]) {
        guard let consumer = ackAs else { return }
        for (path, version) in versions.sorted(by: { $0.key < $1.key }) {
            guard let data = path.firstRange(of: "/data/") else { continue }
            let key = path[data.upperBound...].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
            let ackPath = "\(path[..<data.lowerBound])/rotation-ack/\(key)"
            let body: [String: JSONValue] = [
                "consumer": .string(consumer), "version": .int(version), "ok": .bool(true),
            ]
            if let problem = store.write(ackPath, body) {
                note("version \(version) of \(path) not acknowledged: \(problem)")
            } else {
                note("acknowledged version \(version) of \(path) as \(consumer)")
            }
        }
    }

    func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
