// Issue 15: dynamic PostgreSQL credentials and lease expiry at scale, against a real PostgreSQL
// (Tests/Support/DatabaseServers.swift) and a floor measured on the same server in the same run.
//
//   coffer-bench database [--creds N] [--rounds R] [--leases N] [--chunks C] [--opens O]
//                         [--postgres-port P --postgres-password X] [--json PATH]
//   coffer-bench postgres     starts a PostgreSQL, prints {"port": ..., "password": ...} and stops
//                             it when its standard input closes (bench.py shares one server between
//                             this mode and the HTTP comparison with OpenBao)
//
// 1. creds: `database/creds/<role>` (CREATE ROLE ... VALID UNTIL + GRANT SELECT, one transaction)
//    through the Vault API and the wire form, in alternating rounds with the floor: the same two
//    statements in one transaction over one kept libpq connection (the driver layer's
//    DatabaseConnection, so both use libpq). The users each round made are dropped in bulk after it,
//    outside the timings.
// 2. expiry: N leases of real users on a SQLite vault. (a) open + unseal of that vault against one
//    with no leases, alternating, medians. (b) revoking them all on expiry (an injected clock moved
//    past their TTL, `expireLeases()` timed until none is left) against the database's own DROP ROLE
//    rate over one kept connection, in alternating chunks (the leases were issued a minute apart per
//    chunk, so each chunk falls due on its own).
import Coffer
import CofferFramework
import CofferStorage
import CofferTesting
import Engines
import Foundation
import Synchronization

/// A clock the benchmark sets: leases fall due when it says so.
final class BenchClock: WallClock {
    let start = Timestamp(seconds: 1_800_000_000)
    private let current = Mutex(Timestamp(seconds: 1_800_000_000))
    func now() -> Timestamp { current.withLock { $0 } }
    func set(_ time: Timestamp) { current.withLock { $0 = time } }
    func advance(seconds: Int64) { current.withLock { $0 = $0.adding(seconds: seconds) } }
}

/// The PostgreSQL every part uses: given (bench.py's shared server) or started here.
struct PostgresTarget {
    let port: Int
    let password: String
    let owned: PostgresServer?
    var connectionURLTemplate: String {
        "postgresql://{{username}}:{{password}}@127.0.0.1:\(port)/postgres?sslmode=disable"
    }

    static func make(port: Int?, password: String?) throws -> PostgresTarget {
        if let port, let password { return PostgresTarget(port: port, password: password, owned: nil) }
        let server = try PostgresServer.start(durable: true)
        return PostgresTarget(port: server.port, password: server.password, owned: server)
    }

    /// One kept libpq connection as the superuser (the floor's, and for the bulk drops).
    func connect() throws -> any DatabaseConnection {
        try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: connectionURLTemplate,
            username: "postgres",
            password: password
        ).connect()
    }
}

/// `coffer-bench postgres`: a server for bench.py, until standard input closes.
func runPostgresHelper() throws {
    let server = try PostgresServer.start(durable: true)
    try server.psql("CREATE TABLE IF NOT EXISTS items (id int)")
    say(#"{"port": \#(server.port), "password": "\#(server.password)"}"#)
    _ = FileHandle.standardInput.readDataToEndOfFile()
    server.stop()
}

let credsCreation: [JSONValue] = [
    #"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#,
    #"GRANT SELECT ON items TO "{{name}}";"#,
]

private let alphanumerics = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
private func randomText(_ count: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    return String((0..<count).map { _ in alphanumerics.randomElement(using: &generator)! })
}

/// `2027-01-15 08:00:00+0000`, the form Coffer writes into VALID UNTIL.
private func sqlTime(_ time: Timestamp) -> String {
    let text = time.rfc3339
    return String(text.prefix(10)) + " " + String(text.dropFirst(11).prefix(8)) + "+0000"
}

/// Drops `users` (which may hold the SELECT grant on items) in statements of a few hundred each.
private func dropUsers(_ connection: any DatabaseConnection, _ users: [String]) throws {
    var index = 0
    while index < users.count {
        let slice = users[index..<min(users.count, index + 250)]
        try connection.execute(
            slice.map { #"REVOKE ALL ON items FROM "\#($0)"; DROP ROLE IF EXISTS "\#($0)";"# }.joined(separator: " ")
        )
        index += slice.count
    }
}

/// Mounts `database/` with the connection `pg` and the role `ro` on `handle`'s vault or core.
private func mountDatabase(
    _ pg: PostgresTarget,
    token: String,
    role: String = "ro",
    creation: [JSONValue],
    revocation: [JSONValue],
    handle: (Request) throws -> Response,
    mount: () throws -> Void
) throws {
    try mount()
    _ = try handle(
        Request(
            .update,
            "database/config/pg",
            data: [
                "plugin_name": "postgresql-database-plugin", "connection_url": .string(pg.connectionURLTemplate),
                "username": "postgres", "password": .string(pg.password), "allowed_roles": "*",
            ],
            token: token
        )
    )
    _ = try handle(
        Request(
            .update,
            "database/roles/\(role)",
            data: [
                "db_name": "pg", "creation_statements": .array(creation), "revocation_statements": .array(revocation),
                "default_ttl": "1h", "max_ttl": "24h",
            ],
            token: token
        )
    )
}

/// Part 1: creds against the floor, alternating rounds.
func runCreds(_ bench: Bench, pg: PostgresTarget, directory: URL, count: Int, rounds: Int) throws -> [String: Any] {
    let connection = try pg.connect()
    defer { connection.close() }
    try connection.execute("CREATE TABLE IF NOT EXISTS items (id int)")
    let revocation: [JSONValue] = [#"REVOKE ALL ON items FROM "{{name}}"; DROP ROLE IF EXISTS "{{name}}";"#]

    func devVault(_ storage: VaultConfiguration.Storage) throws -> Vault {
        let (vault, _) = try Vault.openDev(storage: storage, rootTokenID: "bench-root")
        try mountDatabase(
            pg,
            token: "bench-root",
            creation: credsCreation,
            revocation: revocation,
            handle: { try vault.handle($0) },
            mount: { try vault.core.mount(MountEntry(path: "database/", type: "database")) }
        )
        return vault
    }
    let sqliteVault = try devVault(.sqlite(path: directory.appendingPathComponent("creds.db").path))
    defer { sqliteVault.close() }
    let memoryVault = try devVault(.memory)
    defer { memoryVault.close() }

    say("creds: \(count) per operation in \(rounds) alternating rounds against PostgreSQL on port \(pg.port)")
    // The users each operation made since its last settle; dropped in bulk after each round.
    let made = Mutex<[String]>([])
    func note(_ user: String?) throws {
        guard let user else { throw BenchError("creds answered without a username") }
        made.withLock { $0.append(user) }
    }
    let settle: () throws -> Void = {
        let users = made.withLock { users in
            defer { users = [] }
            return users
        }
        try dropUsers(connection, users)
    }
    let floorTTL: Int64 = 3600
    try bench.compare(
        [
            Compared(
                name: "floor: CREATE ROLE + GRANT (one query, kept libpq connection)",
                body: {
                    // A name and password like the engine's (v-<display>-<role>-<20 random>-<unix time>, 20
                    // characters), the expiry in the same form.
                    let now = SystemClock().now()
                    let user = "v-root-ro-\(randomText(20))-\(now.nanoseconds / 1_000_000_000)"
                    let password = randomText(20)
                    // One simple query: PostgreSQL runs it as one transaction in one round trip.
                    try connection.execute(
                        #"CREATE ROLE "\#(user)" WITH LOGIN PASSWORD '\#(password)' VALID UNTIL '\#(sqlTime(now.adding(seconds: floorTTL)))';"#
                            + #"GRANT SELECT ON items TO "\#(user)";"#
                    )
                    try note(user)
                },
                settle: settle
            ),
            Compared(
                name: "creds (Swift API, handle; SQLite)",
                body: {
                    let response = try sqliteVault.handle(Request(.read, "database/creds/ro", token: "bench-root"))
                    try note(response.data?["username"]?.stringValue)
                },
                settle: settle
            ),
            Compared(
                name: "creds (wire JSON, handleWire; SQLite)",
                body: {
                    let result = sqliteVault.handleWire(
                        method: "GET",
                        path: "database/creds/ro",
                        token: "bench-root",
                        body: []
                    )
                    guard result.status == 200, let body = result.body else {
                        throw BenchError("creds over the wire form answered \(result.status)")
                    }
                    try note((try? JSONValue.parse(body))?["data"]?["username"]?.stringValue)
                },
                settle: settle
            ),
            Compared(
                name: "creds (Swift API, handle; memory storage)",
                body: {
                    let response = try memoryVault.handle(Request(.read, "database/creds/ro", token: "bench-root"))
                    try note(response.data?["username"]?.stringValue)
                },
                settle: settle
            ),
        ],
        rounds: rounds,
        count: count
    )
    var summary: [String: Any] = [:]
    if let floor = bench.figure("floor: CREATE ROLE + GRANT (one query, kept libpq connection)") {
        for (key, name) in [
            ("creds_handle_sqlite", "creds (Swift API, handle; SQLite)"),
            ("creds_wire_sqlite", "creds (wire JSON, handleWire; SQLite)"),
            ("creds_handle_memory", "creds (Swift API, handle; memory storage)"),
        ] {
            guard let figure = bench.figure(name) else { continue }
            summary[key + "_p50_over_floor"] = figure.p50 / floor.p50
            // The median over the rounds of the ratio of the two rounds' medians: robust to a
            // neighbour slowing one phase.
            summary[key + "_p50_over_floor_median_round"] = medianRoundRatio(figure, floor)
        }
        summary["floor_p50_us"] = floor.p50
    }
    return summary
}

/// The median over the rounds of (ops/s of `floor`) / (ops/s of `figure`) in the same round.
func medianRoundRatio(_ figure: Figure, _ floor: Figure) -> Double? {
    guard let a = figure.extra["round_ops_per_s"] as? [Double], let b = floor.extra["round_ops_per_s"] as? [Double],
        a.count == b.count, !a.isEmpty
    else { return nil }
    let ratios = zip(a, b).map { $1 / $0 }.sorted()
    return ratios[ratios.count / 2]
}

/// Part 2: N leases of real users; open + unseal with them and without; revocation on expiry.
func runExpiry(pg: PostgresTarget, directory: URL, leases: Int, chunks: Int, opens: Int) throws -> [String: Any] {
    let connection = try pg.connect()
    defer { connection.close() }
    let clock = BenchClock()
    let perChunk = max(1, leases / chunks)
    let total = perChunk * chunks
    // Real login users, without a password: PostgreSQL's SCRAM hashing of one (4096 rounds, ~8 ms a
    // user here) would make issuing 100,000 of them take a quarter of an hour, and DROP ROLE does not
    // read it. Revocation is the role's statement, as the floor's: DROP ROLE.
    let creation: [JSONValue] = [#"CREATE ROLE "{{name}}" WITH LOGIN VALID UNTIL '{{expiration}}';"#]
    let revocation: [JSONValue] = [#"DROP ROLE IF EXISTS "{{name}}";"#]

    /// A SQLite vault with the database mount; `issue` leases issued through creds, `perChunk` a
    /// minute apart. Written through BulkLoadBackend (one transaction per 50,000 rows): only the
    /// building skips the per-write fsync; the vault is then opened as any other.
    func build(_ name: String, issue: Int) throws -> (path: String, key: String) {
        let path = directory.appendingPathComponent(name).path
        let storage = try BulkLoadBackend(path: path)
        let core = try Core(storage: storage, engines: BuiltinEngines.registry, clock: clock)
        let initResult = try core.initialize(shares: 1, threshold: 1)
        let root = initResult.rootToken
        try mountDatabase(
            pg,
            token: root,
            role: "expiry",
            creation: creation,
            revocation: revocation,
            handle: { try core.handle($0) },
            mount: { try core.mount(MountEntry(path: "database/", type: "database")) }
        )
        clock.set(clock.start)
        let started = nowNanos()
        for i in 0..<issue {
            let response = try core.handle(Request(.read, "database/creds/expiry", token: root))
            guard response.leaseID.hasPrefix("database/creds/expiry/") else { throw BenchError("creds gave no lease") }
            if (i + 1) % perChunk == 0 { clock.advance(seconds: 60) }
            if (i + 1) % max(1, issue / 10) == 0 {
                say(
                    String(
                        format: "  issuing %d leases (real users): %d (%.0f s)",
                        issue,
                        i + 1,
                        Double(nowNanos() - started) / 1e9
                    )
                )
            }
        }
        core.sealVault()
        storage.close()
        return (path, initResult.hexKeys[0])
    }

    say("expiry: \(total) leases of real PostgreSQL users in \(chunks) chunks")
    let issueStart = nowNanos()
    let full = try build("leases.db", issue: total)
    let issueSeconds = Double(nowNanos() - issueStart) / 1e9
    let empty = try build("no-leases.db", issue: 0)

    // (a) open + unseal, alternating.
    func openVault(_ target: (path: String, key: String)) throws -> Vault {
        let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: target.path), clock: clock))
        _ = try vault.unseal(key: target.key)
        guard !vault.core.isSealed else { throw BenchError("the vault did not unseal") }
        return vault
    }
    var openFull: [UInt64] = []
    var openEmpty: [UInt64] = []
    for round in 0..<opens {
        for target in round % 2 == 0 ? [empty, full] : [full, empty] {
            let start = nowNanos()
            let vault = try openVault(target)
            let elapsed = nowNanos() - start
            vault.close()
            if target.path == full.path { openFull.append(elapsed) } else { openEmpty.append(elapsed) }
        }
    }
    func median(_ values: [UInt64]) -> Double { Double(values.sorted()[values.count / 2]) / 1e6 }
    let openFullMs = median(openFull)
    let openEmptyMs = median(openEmpty)
    say(
        String(
            format: "  open + unseal (median of %d): %d leases %.2f ms, none %.2f ms: %.2fx",
            opens,
            total,
            openFullMs,
            openEmptyMs,
            openFullMs / openEmptyMs
        )
    )

    // (b) the floor's roles: as many, made in bulk (no password: DROP ROLE does not read it). And as
    // many again for a second reference, not the floor: DROP ROLE sent as the engine sends a
    // revocation (BEGIN, the statement, COMMIT: three round trips), which tells how much of Coffer's
    // time is the statement's transaction and how much the lease's own bookkeeping.
    var floorRoles: [String] = []
    var transactionRoles: [String] = []
    for i in 0..<total {
        floorRoles.append("f-\(i)-\(randomText(12))")
        transactionRoles.append("t-\(i)-\(randomText(12))")
    }
    for roles in [floorRoles, transactionRoles] {
        var index = 0
        while index < roles.count {
            let slice = roles[index..<min(roles.count, index + 500)]
            try connection.execute(slice.map { #"CREATE ROLE "\#($0)" WITH LOGIN;"# }.joined(separator: " "))
            index += slice.count
        }
    }
    let users = {
        (try connection.query("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'").first?.first ?? nil) ?? "?"
    }
    let before = try users()

    let vault = try openVault(full)
    defer { vault.close() }
    var floorNanos: UInt64 = 0
    var transactionNanos: UInt64 = 0
    var cofferNanos: UInt64 = 0
    var revoked = 0
    var failed = 0
    var ticks = 0
    var roundRatios: [Double] = []
    for round in 0..<chunks {
        var floorRound: UInt64 = 0
        var cofferRound: UInt64 = 0
        let floorChunk = floorRoles[(round * perChunk)..<((round + 1) * perChunk)]
        let transactionChunk = transactionRoles[(round * perChunk)..<((round + 1) * perChunk)]
        func floorPart() throws {
            var start = nowNanos()
            for role in floorChunk { try connection.execute(#"DROP ROLE "\#(role)""#) }
            floorRound = nowNanos() - start
            start = nowNanos()
            for role in transactionChunk { try connection.transaction([#"DROP ROLE IF EXISTS "\#(role)";"#]) }
            transactionNanos += nowNanos() - start
        }
        func cofferPart() throws {
            // Past the expiry of the leases of chunk `round` (issued 60 s apart per chunk, TTL 1 h).
            clock.set(clock.start.adding(seconds: 3600 + 60 * Int64(round) + 30))
            var roundRevoked = 0
            let start = nowNanos()
            while true {
                let report = vault.expireLeases()
                ticks += 1
                roundRevoked += report.revoked
                failed += report.failed
                if report.revoked == 0 && report.failed == 0 { break }
            }
            cofferRound = nowNanos() - start
            revoked += roundRevoked
            guard roundRevoked == perChunk else {
                throw BenchError("expiry round \(round) revoked \(roundRevoked) leases, not \(perChunk)")
            }
        }
        if round % 2 == 0 {
            try floorPart()
            try cofferPart()
        } else {
            try cofferPart()
            try floorPart()
        }
        floorNanos += floorRound
        cofferNanos += cofferRound
        roundRatios.append(Double(floorRound) / Double(cofferRound))  // Coffer's rate over the floor's
    }
    let after = try users()
    let leasesLeft = try vault.core.leases.ids(prefix: "").count
    let floorRate = Double(total) / (Double(floorNanos) / 1e9)
    let cofferRate = Double(revoked) / (Double(cofferNanos) / 1e9)
    let transactionRate = Double(total) / (Double(transactionNanos) / 1e9)
    let sortedRatios = roundRatios.sorted()
    say(
        String(
            format:
                "  revocation on expiry: Coffer %.0f leases/s (%d revoked, %d failed, %d ticks), floor DROP ROLE %.0f roles/s: floor/Coffer %.2fx",
            cofferRate,
            revoked,
            failed,
            ticks,
            floorRate,
            floorRate / cofferRate
        )
    )
    say(
        String(
            format:
                "  reference: DROP ROLE in a transaction (BEGIN, DROP, COMMIT) %.0f roles/s; per lease: Coffer %.0f µs, "
                + "floor %.0f µs, in a transaction %.0f µs",
            transactionRate,
            1e6 / cofferRate,
            1e6 / floorRate,
            1e6 / transactionRate
        )
    )
    say("  PostgreSQL users v-*: \(before) before expiry, \(after) after; leases left: \(leasesLeft)")
    guard leasesLeft == 0, after == "0", failed == 0 else {
        throw BenchError("expiry left \(leasesLeft) leases and \(after) users (\(failed) failed revocations)")
    }
    return [
        "leases": total, "chunks": chunks, "issue_seconds": issueSeconds,
        "issue_rate_per_s": Double(total) / issueSeconds,
        "open_unseal_with_leases_ms": openFullMs, "open_unseal_without_ms": openEmptyMs,
        "open_unseal_ratio": openFullMs / openEmptyMs,
        "open_unseal_with_leases_samples_ms": openFull.map { Double($0) / 1e6 },
        "open_unseal_without_samples_ms": openEmpty.map { Double($0) / 1e6 },
        "revoke_rate_per_s": cofferRate, "floor_drop_rate_per_s": floorRate,
        "floor_over_coffer_rate": floorRate / cofferRate,
        "floor_over_coffer_rate_median_round": 1 / sortedRatios[sortedRatios.count / 2],
        "transaction_drop_rate_per_s": transactionRate,
        "revoke_seconds": Double(cofferNanos) / 1e9, "floor_seconds": Double(floorNanos) / 1e9,
        "expire_ticks": ticks,
    ]
}

func runDatabase(
    _ bench: Bench,
    directory: URL,
    creds: Int,
    rounds: Int,
    leases: Int,
    chunks: Int,
    opens: Int,
    postgresPort: Int?,
    postgresPassword: String?
) throws -> [String: Any] {
    let pg = try PostgresTarget.make(port: postgresPort, password: postgresPassword)
    defer { pg.owned?.stop() }
    if let owned = pg.owned { try owned.psql("CREATE TABLE IF NOT EXISTS items (id int)") }
    var summary = try runCreds(bench, pg: pg, directory: directory, count: creds, rounds: rounds)
    if leases > 0 {
        summary["expiry"] = try runExpiry(pg: pg, directory: directory, leases: leases, chunks: chunks, opens: opens)
    }
    return summary
}
