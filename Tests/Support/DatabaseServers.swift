// Real database servers for the database secrets engine's tests (issue 15): a PostgreSQL and a
// MariaDB of their own, in temporary directories, on free loopback ports, started and stopped by the
// test process (no system service, no /etc configuration).
package import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Servers still running when the test process exits are stopped then, and their directories removed
/// (a suite's shared server is a static that is never released).
private let runningServers = Mutex<[ObjectIdentifier: @Sendable () -> Void]>([:])
private let exitHookInstalled = Mutex(false)

private func registerForExit(_ id: ObjectIdentifier, _ stop: @escaping @Sendable () -> Void) {
    runningServers.withLock { $0[id] = stop }
    exitHookInstalled.withLock { installed in
        guard !installed else { return }
        installed = true
        atexit {
            let stops = runningServers.withLock { servers in
                defer { servers = [:] }
                return Array(servers.values)
            }
            for stop in stops { stop() }
        }
    }
}

private func unregisterForExit(_ id: ObjectIdentifier) { _ = runningServers.withLock { $0.removeValue(forKey: id) } }

package struct DatabaseServerError: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// The result of a client program run.
package struct ProgramResult: Sendable {
    package var status: Int32
    package var output: String
    package var errors: String
}

/// Runs `executable` with `arguments` and `environment` added to this process's; waits for it.
package func runProgram(
    _ executable: String,
    _ arguments: [String],
    environment: [String: String] = [:],
    stdin: String? = nil
) throws -> ProgramResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let output = Pipe()
    let errors = Pipe()
    let input = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    // Read both pipes concurrently so neither fills up.
    let errorData = Mutex(Data())
    let group = DispatchGroup()
    DispatchQueue.global().async(group: group) {
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        errorData.withLock { $0 = data }
    }
    let out = output.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProgramResult(
        status: process.terminationStatus,
        output: String(decoding: out, as: UTF8.self),
        errors: String(decoding: errorData.withLock { $0 }, as: UTF8.self)
    )
}

/// A directory owned by `user` (the servers refuse to run as root, or should not).
private func makeDirectory(_ path: String, owner user: String?) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    if let user { try changeOwner(path, to: user) }
}

private func changeOwner(_ path: String, to user: String) throws {
    guard let entry = getpwnam(user) else {
        throw DatabaseServerError("the system user \(user) does not exist (the postgresql package creates it)")
    }
    guard chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
        throw DatabaseServerError("chown \(path) to \(user) failed: errno \(errno)")
    }
}

/// Waits until `ready()` holds, the process exits (then throws with its log) or `seconds` pass.
private func waitUntil(
    _ what: String,
    seconds: Double,
    process: Process,
    log: String,
    _ ready: () -> Bool
) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if ready() { return }
        guard process.isRunning else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw DatabaseServerError("\(what) exited while starting (status \(process.terminationStatus)):\n\(text)")
        }
        usleep(20_000)
    }
    let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    throw DatabaseServerError("\(what) did not become ready within \(Int(seconds)) s:\n\(text)")
}

/// Sends `signal` to the process and waits (up to `seconds`, then SIGKILL) for it to exit.
private func stopProcess(_ process: Process, signal: Int32, seconds: Double = 20) {
    guard process.isRunning else { return }
    kill(process.processIdentifier, signal)
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A real PostgreSQL (the newest under /usr/lib/postgresql) with a cluster of its own: `initdb` in a
/// temporary directory, listening on 127.0.0.1 on a free port and on a unix socket in that directory,
/// `scram-sha-256` password authentication over TCP for the superuser `postgres`. PostgreSQL refuses
/// to run as root, so the cluster belongs to, and the server runs as, the `postgres` system user.
package final class PostgresServer: @unchecked Sendable {  // the process is replaced under `lock` only
    package let port: Int
    package let password: String
    package let superuser = "postgres"
    package let directory: String
    package let binDirectory: String
    /// Whether it runs with PostgreSQL's durable defaults (fsync, synchronous commit).
    package let durable: Bool
    private let lock = NSLock()
    private var process: Process?

    package var dataDirectory: String { directory + "/data" }
    package var logFile: String { directory + "/postgres.log" }
    /// A libpq URI with Vault's templates, for `connection_url`.
    package var connectionURLTemplate: String {
        "postgresql://{{username}}:{{password}}@127.0.0.1:\(port)/postgres?sslmode=disable"
    }

    /// The newest PostgreSQL's bin directory, e.g. /usr/lib/postgresql/15/bin.
    package static func binDirectory() throws -> String {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .compactMap { Int($0) }.sorted()
        guard
            let newest = versions.last(where: {
                FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\($0)/bin/postgres")
            })
        else {
            throw DatabaseServerError(
                "no PostgreSQL server under /usr/lib/postgresql: install postgresql (make deps does)"
            )
        }
        return "/usr/lib/postgresql/\(newest)/bin"
    }

    /// Initialises a cluster whose superuser `postgres` has `password`, starts it and waits until it
    /// accepts connections. Tests run it without fsync (quick, and nothing they check needs a crash to
    /// be survived); `durable` keeps PostgreSQL's defaults, as a production server runs, for the
    /// benchmarks that compare against its commits.
    package static func start(
        password: String = "coffer-postgres-password",
        durable: Bool = false
    ) throws
        -> PostgresServer
    {
        let server = try PostgresServer(password: password, durable: durable)
        do {
            try server.initialize()
            try server.startProcess()
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    private init(password: String, durable: Bool) throws {
        self.durable = durable
        binDirectory = try PostgresServer.binDirectory()
        self.password = password
        port = try freeLoopbackPort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-pg-\(UUID().uuidString)").path
        try makeDirectory(directory, owner: "postgres")
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `tool` of the server's bin directory as the postgres user.
    private func asPostgres(_ tool: String, _ arguments: [String]) -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments =
            ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", binDirectory + "/" + tool] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = directory
        environment["LC_ALL"] = "C"
        environment["LANG"] = "C"
        process.environment = environment
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        return process
    }

    private func initialize() throws {
        let passwordFile = directory + "/pwfile"
        try (password + "\n").write(toFile: passwordFile, atomically: false, encoding: .utf8)
        try changeOwner(passwordFile, to: "postgres")
        defer { try? FileManager.default.removeItem(atPath: passwordFile) }
        let initdb = asPostgres(
            "initdb",
            [
                "-D", dataDirectory, "-U", superuser, "--pwfile=\(passwordFile)", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ]
        )
        let log = directory + "/initdb.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? handle.close() }
        initdb.standardOutput = handle
        initdb.standardError = handle
        try initdb.run()
        initdb.waitUntilExit()
        guard initdb.terminationStatus == 0 else {
            throw DatabaseServerError(
                "initdb failed (status \(initdb.terminationStatus)):\n"
                    + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
            )
        }
    }

    private func startProcess() throws {
        try lock.withLock {
            guard process == nil else { return }
            try? FileManager.default.removeItem(atPath: dataDirectory + "/postmaster.pid")
            FileManager.default.createFile(atPath: logFile, contents: nil)
            try changeOwner(logFile, to: "postgres")
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
            handle.seekToEndOfFile()
            defer { try? handle.close() }
            let postgres = asPostgres(
                "postgres",
                [
                    "-D", dataDirectory, "-p", String(port), "-k", directory, "-c", "listen_addresses=127.0.0.1",
                    "-c", "max_connections=60", "-c", "shared_buffers=16MB", "-c", "password_encryption=scram-sha-256",
                ]
                    + (durable
                        ? [] : ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            )
            postgres.standardOutput = handle
            postgres.standardError = handle
            try postgres.run()
            process = postgres
            let pidFile = dataDirectory + "/postmaster.pid"
            try waitUntil("postgres", seconds: 20, process: postgres, log: logFile) {
                // The eighth line of postmaster.pid says "ready" once connections are accepted.
                guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8) else { return false }
                return text.split(separator: "\n").count >= 8 && text.contains("ready")
            }
            let directory = directory
            let stop: @Sendable () -> Void = { [weak self] in
                self?.stop()
                try? FileManager.default.removeItem(atPath: directory)
            }
            registerForExit(ObjectIdentifier(self), stop)
        }
    }

    /// Stops the server (fast shutdown: open connections are closed) and waits for it to exit.
    package func stop() {
        lock.withLock {
            if let process { stopProcess(process, signal: SIGINT) }
            process = nil
        }
        unregisterForExit(ObjectIdentifier(self))
    }

    /// Starts the stopped server again on the same port with the same data.
    package func restart() throws {
        stop()
        try startProcess()
    }

    package var isRunning: Bool { lock.withLock { process?.isRunning ?? false } }

    /// Runs `sql` with the real `psql` client over TCP as `user` (the superuser by default) and returns
    /// its output (unaligned, tuples only, trimmed); throws with psql's error text when it fails.
    @discardableResult
    package func psql(
        _ sql: String,
        user: String? = nil,
        password: String? = nil,
        database: String = "postgres"
    )
        throws -> String
    {
        let result = try psqlResult(
            sql,
            user: user ?? superuser,
            password: password ?? self.password,
            database: database
        )
        guard result.status == 0 else {
            throw DatabaseServerError("psql failed (status \(result.status)): \(result.errors)")
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `psql` as `user`, whatever the outcome.
    package func psqlResult(
        _ sql: String,
        user: String,
        password: String,
        database: String = "postgres"
    ) throws
        -> ProgramResult
    {
        let client =
            FileManager.default.isExecutableFile(atPath: "/usr/bin/psql") ? "/usr/bin/psql" : binDirectory + "/psql"
        return try runProgram(
            client,
            [
                "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port), "-U", user,
                "-d", database, "-c", sql,
            ],
            environment: [
                "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "disable", "PSQLRC": "/dev/null",
            ]
        )
    }

    /// Whether `user` can log in with `password` (over TCP, with scram-sha-256).
    package func canLogIn(user: String, password: String) -> Bool {
        (try? psqlResult("SELECT 1", user: user, password: password).status) == 0
    }

    /// Whether a role named `name` exists.
    package func roleExists(_ name: String) throws -> Bool {
        try psql("SELECT count(*) FROM pg_roles WHERE rolname = '\(name.replacingOccurrences(of: "'", with: "''"))'")
            == "1"
    }
}

/// A real MariaDB (`mariadb-install-db` and `mariadbd`) with its data directory, socket and pid file in
/// a temporary directory, listening on 127.0.0.1 on a free port. `root` (from anywhere, and on the
/// socket) has the given password; no anonymous users, no test database, no name resolution.
package final class MariaDBServer: @unchecked Sendable {  // the process is replaced under `lock` only
    package let port: Int
    package let password: String
    package let superuser = "root"
    package let directory: String
    private let lock = NSLock()
    private var process: Process?

    package var dataDirectory: String { directory + "/data" }
    package var socket: String { directory + "/mariadb.sock" }
    package var logFile: String { directory + "/mariadb.log" }
    /// A Go MySQL DSN with Vault's templates, for `connection_url`.
    package var connectionURLTemplate: String { "{{username}}:{{password}}@tcp(127.0.0.1:\(port))/" }

    package static func start(password: String = "coffer-mariadb-password") throws -> MariaDBServer {
        let server = try MariaDBServer(password: password)
        do {
            try server.initialize()
            try server.startProcess()
            try server.secure()
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    private init(password: String) throws {
        for tool in ["/usr/bin/mariadb-install-db", "/usr/sbin/mariadbd", "/usr/bin/mariadb"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            throw DatabaseServerError("\(tool) is missing: install mariadb-server (make deps does)")
        }
        self.password = password
        port = try freeLoopbackPort()
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("coffer-mariadb-\(UUID().uuidString)").path
        try makeDirectory(directory, owner: nil)
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func initialize() throws {
        let result = try runProgram(
            "/usr/bin/mariadb-install-db",
            [
                "--no-defaults", "--datadir=\(dataDirectory)", "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db", "--skip-name-resolve", "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M",
            ]
        )
        guard result.status == 0 else {
            throw DatabaseServerError(
                "mariadb-install-db failed (status \(result.status)):\n\(result.output)\(result.errors)"
            )
        }
    }

    private func startProcess() throws {
        try lock.withLock {
            guard process == nil else { return }
            let mariadbd = Process()
            mariadbd.executableURL = URL(fileURLWithPath: "/usr/sbin/mariadbd")
            mariadbd.arguments = [
                "--no-defaults", "--datadir=\(dataDirectory)", "--socket=\(socket)",
                "--pid-file=\(directory)/mariadb.pid",
                "--port=\(port)", "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
                "--log-error=\(logFile)", "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M",
                "--skip-log-bin", "--max-connections=60", "--innodb-flush-log-at-trx-commit=0",
            ]
            mariadbd.environment = ProcessInfo.processInfo.environment
            mariadbd.standardOutput = FileHandle.nullDevice
            mariadbd.standardError = FileHandle.nullDevice
            try mariadbd.run()
            process = mariadbd
            let address = port
            try waitUntil("mariadbd", seconds: 20, process: mariadbd, log: logFile) {
                FileManager.default.fileExists(atPath: socket) && isListening(port: address)
            }
            let directory = directory
            let stop: @Sendable () -> Void = { [weak self] in
                self?.stop()
                try? FileManager.default.removeItem(atPath: directory)
            }
            registerForExit(ObjectIdentifier(self), stop)
        }
    }

    /// Sets root's password and lets root in over TCP as root@'%' (with name resolution off a TCP client
    /// is 127.0.0.1, not localhost); drops anonymous users and install-db's password-less root@127.0.0.1,
    /// root@::1 and root@<hostname>, which would match before root@'%'.
    private func secure() throws {
        let literal =
            "'" + password.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        let result = try runProgram(
            "/usr/bin/mariadb",
            ["--no-defaults", "--protocol=SOCKET", "--socket=\(socket)", "-u", "root", "--batch"],
            stdin: """
                DELETE FROM mysql.global_priv WHERE User = '' OR (User = 'root' AND Host <> 'localhost');
                FLUSH PRIVILEGES;
                CREATE USER 'root'@'%' IDENTIFIED BY \(literal);
                GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
                ALTER USER 'root'@'localhost' IDENTIFIED BY \(literal);
                FLUSH PRIVILEGES;
                """
        )
        guard result.status == 0 else {
            throw DatabaseServerError("setting up root in MariaDB failed: \(result.errors)")
        }
    }

    /// Stops the server (SIGTERM: a clean shutdown) and waits for it to exit.
    package func stop() {
        lock.withLock {
            if let process { stopProcess(process, signal: SIGTERM) }
            process = nil
        }
        unregisterForExit(ObjectIdentifier(self))
    }

    /// Starts the stopped server again on the same port with the same data.
    package func restart() throws {
        stop()
        try startProcess()
    }

    package var isRunning: Bool { lock.withLock { process?.isRunning ?? false } }

    /// Runs `sql` with the real `mariadb` client over TCP as `user` (root by default) and returns its
    /// output (tab-separated, no column names, trimmed); throws with the client's error text.
    @discardableResult
    package func sql(
        _ sql: String,
        user: String? = nil,
        password: String? = nil,
        database: String? = nil
    ) throws
        -> String
    {
        let result = try sqlResult(
            sql,
            user: user ?? superuser,
            password: password ?? self.password,
            database: database
        )
        guard result.status == 0 else {
            throw DatabaseServerError("mariadb failed (status \(result.status)): \(result.errors)")
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The `mariadb` client as `user`, whatever the outcome.
    package func sqlResult(
        _ sql: String,
        user: String,
        password: String,
        database: String? = nil
    ) throws
        -> ProgramResult
    {
        var arguments = [
            "--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", String(port), "-u", user, "--batch",
            "--skip-column-names", "--connect-timeout=5", "-e", sql,
        ]
        if let database { arguments.append(database) }
        return try runProgram("/usr/bin/mariadb", arguments, environment: ["MYSQL_PWD": password])
    }

    package func canLogIn(user: String, password: String) -> Bool {
        (try? sqlResult("SELECT 1", user: user, password: password).status) == 0
    }

    /// Whether an account named `name` (any host) exists.
    package func userExists(_ name: String) throws -> Bool {
        let literal =
            "'" + name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        return try sql("SELECT count(*) FROM mysql.user WHERE User = \(literal)") != "0"
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
private func isListening(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}
