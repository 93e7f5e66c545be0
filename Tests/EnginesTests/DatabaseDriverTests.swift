import Dispatch
import Foundation
import Synchronization
import Testing

/// The database secrets engine's client layer (issue 15) against a real PostgreSQL and a real MariaDB
/// started for the suite: connections, parameterized queries, transactions that roll back, the errors
/// a user sees (without the password), the pool's bound and its recovery from a server restart; and
/// the parsing of Vault's connection URLs and statement lists.
@Suite(.serialized) struct DatabaseDriverTests {
    static let postgresPassword = "pg-Secret-9f3a7c"
    static let mariadbPassword = "my-Secret-7c2e51"
    static let postgres = Result { try PostgresServer.start(password: postgresPassword) }
    static let mariadb = Result { try MariaDBServer.start(password: mariadbPassword) }

    func pg() throws -> PostgresServer { try DatabaseDriverTests.postgres.get() }
    func my() throws -> MariaDBServer { try DatabaseDriverTests.mariadb.get() }

    func pgSettings(
        _ server: PostgresServer,
        username: String = "postgres",
        password: String? = nil,
        url: String? = nil
    ) throws -> DatabaseConnectionSettings {
        try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: url ?? server.connectionURLTemplate,
            username: username,
            password: password ?? server.password
        )
    }

    func mySettings(
        _ server: MariaDBServer,
        username: String = "root",
        password: String? = nil,
        url: String? = nil
    ) throws -> DatabaseConnectionSettings {
        try DatabaseConnectionSettings(
            plugin: .mysql,
            connectionURL: url ?? server.connectionURLTemplate,
            username: username,
            password: password ?? server.password
        )
    }

    func error(_ body: () throws(CofferError) -> Void) -> CofferError? {
        do {
            try body()
            return nil
        } catch {
            return error
        }
    }

    // MARK: Statement lists and names

    @Test func statementsAreSplitOnSemicolonsAndEmptyPiecesDropped() {
        #expect(
            SQLStatements.split("CREATE ROLE \"a\";  GRANT x TO \"a\";\n;") == [
                "CREATE ROLE \"a\"", "GRANT x TO \"a\"",
            ]
        )
        #expect(SQLStatements.split("  ;  ; ") == [])
        #expect(SQLStatements.split("") == [])
        #expect(SQLStatements.split(["SELECT 1; SELECT 2", "SELECT 3"]) == ["SELECT 1", "SELECT 2", "SELECT 3"])
    }

    @Test func anElementWithEndOutsideQuotesIsRunWhole() {
        let block = """
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'x') THEN CREATE ROLE x; END IF;
            END $$;
            """
        #expect(SQLStatements.split(block) == [block])
        #expect(SQLStatements.split("do $$begin perform 1; end$$") == ["do $$begin perform 1; end$$"])
        // END inside quotes, or as part of a word, does not count.
        #expect(SQLStatements.split("SELECT 'END'; SELECT 2") == ["SELECT 'END'", "SELECT 2"])
        #expect(SQLStatements.split("SELECT \"end\"; SELECT 2") == ["SELECT \"end\"", "SELECT 2"])
        #expect(SQLStatements.split("SELECT append; SELECT ending") == ["SELECT append", "SELECT ending"])
    }

    @Test func quoting() {
        #expect(SQLQuote.postgresIdentifier("a\"b") == "\"a\"\"b\"")
        #expect(SQLQuote.postgresLiteral("it's") == "'it''s'")
        #expect(SQLQuote.postgresLiteral("a\\b'") == " E'a\\\\b'''")
        #expect(SQLQuote.mysqlIdentifier("a`b") == "`a``b`")
        #expect(SQLQuote.mysqlLiteral("it's \\ \"x\"\n") == "'it\\'s \\\\ \\\"x\\\"\\n'")
    }

    @Test func pluginNames() throws {
        #expect(try DatabasePlugin(name: "postgresql-database-plugin") == .postgresql)
        #expect(try DatabasePlugin(name: "mysql-database-plugin") == .mysql)
        for alias in ["mysql-aurora-database-plugin", "mysql-rds-database-plugin", "mysql-legacy-database-plugin"] {
            #expect(try DatabasePlugin(name: alias) == .mysql)
        }
        let failure = error { () throws(CofferError) in _ = try DatabasePlugin(name: "oracle-database-plugin") }
        #expect(failure?.code == .invalidArgument)
        #expect(failure?.message.hasPrefix("unknown database plugin \"oracle-database-plugin\"") == true)
    }

    // MARK: Connection URLs

    @Test func mysqlDSNForms() throws {
        let templated = try MySQLDSN.parse("{{username}}:{{password}}@tcp(127.0.0.1:3306)/")
        #expect(templated.user == "{{username}}")
        #expect(templated.password == "{{password}}")
        #expect(templated.address == .tcp(host: "127.0.0.1", port: 3306))
        #expect(templated.database == "")

        let full = try MySQLDSN.parse(
            "app:p@ss:w/rd@tcp(db.example.com:3307)/my%20db?timeout=3s&readTimeout=1m&tls=false"
        )
        #expect(full.user == "app")
        #expect(full.password == "p@ss:w/rd")
        #expect(full.address == .tcp(host: "db.example.com", port: 3307))
        #expect(full.database == "my db")
        #expect(full.connectTimeoutSeconds == 3)
        #expect(full.readTimeoutSeconds == 60)
        #expect(!full.description.contains("p@ss"))

        #expect(
            try MySQLDSN.parse("u@unix(/run/mysqld/mysqld.sock)/app").address == .unix(path: "/run/mysqld/mysqld.sock")
        )
        #expect(try MySQLDSN.parse("/").address == .tcp(host: "127.0.0.1", port: 3306))
        #expect(try MySQLDSN.parse("u:p@tcp(db)/").address == .tcp(host: "db", port: 3306))
        #expect(try MySQLDSN.parse("u:p@tcp([::1]:3308)/").address == .tcp(host: "::1", port: 3308))
        #expect(try MySQLDSN.parse("u:p@/x").address == .tcp(host: "127.0.0.1", port: 3306))
        #expect(
            try MySQLDSN.parse("u:p@tcp(h:1)/?sql_mode=ANSI&parseTime=true").sessionVariables == [
                .init(name: "sql_mode", value: "ANSI")
            ]
        )

        let cases: [(String, String)] = [
            ("user:secretpw@tcp(127.0.0.1:3306)", "missing the slash separating the database name"),
            ("user:secretpw@tcp(127.0.0.1:3306/", "missing closing parenthesis"),
            ("user:secretpw@tcp(h:99999)/", "the port must be a number"),
            ("user:secretpw@udp(h:1)/", "unknown network \"udp\""),
            ("user:secretpw@tcp(h:1)/?timeout", "a parameter has no '='"),
            ("user:secretpw@tcp(h:1)/?timeout=soon", "timeout must be a duration"),
            ("user:secretpw@tcp(h:1)/?tls=true", "tls=true is not supported"),
            ("user:secretpw@tcp(::1)/", "IPv6 address must be in brackets"),
        ]
        for (dsn, expected) in cases {
            let failure = error { () throws(CofferError) in _ = try MySQLDSN.parse(dsn) }
            #expect(failure?.code == .invalidArgument, "\(dsn)")
            #expect(failure?.message.contains(expected) == true, "\(dsn): \(failure?.message ?? "no error")")
            #expect(failure?.message.contains("secretpw") == false)
        }
    }

    @Test func thePostgresPasswordIsNeverPutInTheConnectionString() throws {
        let settings = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
            username: "us er@x",
            password: "pw-0123456789"
        )
        guard case .postgres(let keywords, let values) = settings.target else {
            Issue.record("not a PostgreSQL target")
            return
        }
        #expect(keywords == ["connect_timeout", "dbname", "password"])
        #expect(values[1] == "postgresql://us%20er%40x:password-given-separately@127.0.0.1:5432/postgres")
        #expect(values[2] == "pw-0123456789")
        #expect(!settings.description.contains("pw-0123456789"))

        let keywordForm = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: "host=127.0.0.1 user={{username}} password={{password}} connect_timeout=2",
            username: "o'neil",
            password: "x"
        )
        guard case .postgres(let keywords2, let values2) = keywordForm.target else { return }
        #expect(keywords2 == ["dbname", "password"])
        #expect(values2[0] == "host=127.0.0.1 user='o\\'neil' password=password-given-separately connect_timeout=2")
    }

    @Test func redactionReplacesLongPasswordsOnly() throws {
        let long = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: "x",
            username: "u",
            password: "hunter2hunter2"
        )
        #expect(long.redact("bad token \"hunter2hunter2\"") == "bad token \"[redacted]\"")
        let short = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: "x",
            username: "u",
            password: "p"
        )
        #expect(short.redact("database=postgres dial tcp") == "database=postgres dial tcp")
        let sameAsUser = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: "x",
            username: "postgresql",
            password: "postgres"
        )
        #expect(sameAsUser.redact("user \"postgresql\"") == "user \"postgresql\"")
    }

    // MARK: PostgreSQL

    @Test func postgresStatementsAndParameterizedQueries() throws {
        let server = try pg()
        let connection = try pgSettings(server).connect()
        defer { connection.close() }
        try connection.execute("CREATE TABLE IF NOT EXISTS driver_t (name text, note text)")
        try connection.execute("TRUNCATE driver_t")
        _ = try connection.query(
            "INSERT INTO driver_t VALUES ($1, $2)",
            ["o'brien \\ \"x\"; DROP TABLE driver_t", "n"]
        )
        let rows = try connection.query(
            "SELECT name, note, NULL::text FROM driver_t WHERE name = $1",
            ["o'brien \\ \"x\"; DROP TABLE driver_t"]
        )
        #expect(rows == [["o'brien \\ \"x\"; DROP TABLE driver_t", "n", nil]])
        #expect(try server.psql("SELECT count(*) FROM driver_t") == "1")
        let literal = connection.quoteLiteral("a'b\\c")
        #expect(try connection.query("SELECT \(literal)") == [["a'b\\c"]])

        let failure = error { () throws(CofferError) in try connection.execute("SELEC 1") }
        #expect(failure?.code == .internal)
        #expect(failure?.message == "ERROR: syntax error at or near \"SELEC\" (SQLSTATE 42601)")
        #expect(!connection.isBroken)
    }

    @Test func postgresRoleCreatedInATransactionCanLogIn() throws {
        let server = try pg()
        let connection = try pgSettings(server).connect()
        defer { connection.close() }
        let name = "v-token-app-\(UInt32.random(in: 0...UInt32.max))"
        let password = "A1a-\(UInt64.random(in: 0...UInt64.max))"
        let statements = SQLStatements.split(
            "CREATE ROLE \(SQLQuote.postgresIdentifier(name)) WITH LOGIN PASSWORD \(SQLQuote.postgresLiteral(password)) "
                + "VALID UNTIL '2099-01-01';"
                + "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \(SQLQuote.postgresIdentifier(name));"
        )
        #expect(statements.count == 2)
        try connection.transaction(statements)
        #expect(server.canLogIn(user: name, password: password))
        #expect(!server.canLogIn(user: name, password: password + "x"))
        #expect(try server.psql("SELECT current_user", user: name, password: password) == name)
    }

    @Test func postgresAFailingStatementRollsBackTheTransaction() throws {
        let server = try pg()
        let connection = try pgSettings(server).connect()
        defer { connection.close() }
        let name = "rollback-\(UInt32.random(in: 0...UInt32.max))"
        let failure = error { () throws(CofferError) in
            try connection.transaction([
                "CREATE ROLE \(SQLQuote.postgresIdentifier(name)) WITH LOGIN PASSWORD 'x'",
                "ALTER ROLE \(SQLQuote.postgresIdentifier(name)) WITH bogus",
            ])
        }
        #expect(
            failure?.message == "failed to execute query: ERROR: unrecognized role option \"bogus\" (SQLSTATE 42601)"
        )
        #expect(!connection.inTransaction)
        #expect(try !server.roleExists(name))
        // The connection is still good.
        #expect(try connection.query("SELECT 1") == [["1"]])
    }

    @Test func postgresWrongPasswordSaysSoWithoutThePassword() throws {
        let server = try pg()
        for wrong in ["wrong-password-123456", "p"] {
            let settings = try pgSettings(server, password: wrong)
            let failure = error { () throws(CofferError) in _ = try settings.connect() }
            #expect(failure?.code == .unavailable)
            #expect(
                failure?.message
                    == "failed to connect to 127.0.0.1:\(server.port) as \"postgres\": FATAL: password authentication failed for user \"postgres\""
            )
            if wrong.count > 1 { #expect(failure?.message.contains(wrong) == false) }
        }
        // The right one, through the keyword form, with the password given separately.
        let keyword = try pgSettings(
            server,
            url:
                "host=127.0.0.1 port=\(server.port) user={{username}} password={{password}} dbname=postgres sslmode=disable"
        )
        let connection = try keyword.connect()
        #expect(try connection.query("SELECT current_user") == [["postgres"]])
        connection.close()
    }

    @Test func postgresUnreachableFailsFast() throws {
        let port = try freeLoopbackPort()
        let settings = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: "postgresql://{{username}}:{{password}}@127.0.0.1:\(port)/postgres?sslmode=disable",
            username: "postgres",
            password: "whatever-password"
        )
        let start = Date()
        let failure = error { () throws(CofferError) in _ = try settings.connect() }
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(failure?.code == .unavailable)
        #expect(
            failure?.message.hasPrefix("failed to connect to 127.0.0.1:\(port) as \"postgres\": Connection refused")
                == true
        )
    }

    @Test func aMalformedPostgresURLSaysWhatIsWrong() throws {
        let settings = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?bogus_option=1",
            username: "postgres",
            password: "secret-password-1"
        )
        let failure = error { () throws(CofferError) in _ = try settings.connect() }
        #expect(failure?.code == .invalidArgument)
        #expect(
            failure?.message == "connection_url is not valid for libpq: invalid URI query parameter: \"bogus_option\""
        )
    }

    @Test func postgresPoolNeverOpensMoreThanMaxOpen() throws {
        let server = try pg()
        let settings = try pgSettings(
            server,
            url:
                "postgresql://{{username}}:{{password}}@127.0.0.1:\(server.port)/postgres?sslmode=disable&application_name=coffer-pool-test"
        )
        let pool = ConnectionPool(name: "pg", settings: settings, limits: .init(maxOpen: 3))
        let highest = Mutex(0)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 10) { _ in
            do throws(CofferError) {
                try pool.withConnection { connection throws(CofferError) in
                    let count = try connection.query(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND pg_sleep(0.1) IS NOT NULL",
                        ["coffer-pool-test"]
                    )
                    let n = Int(count[0][0] ?? "") ?? -1
                    highest.withLock { $0 = max($0, n) }
                }
            } catch {
                failures.withLock { $0.append(error.message) }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(highest.withLock { $0 } <= 3)
        #expect(highest.withLock { $0 } >= 2)
        #expect(pool.counts.open <= 3)
        #expect(pool.counts.inUse == 0)
        pool.close()
        let closed = error { () throws(CofferError) in try pool.withConnection { _ in } }
        #expect(closed?.message == "the database connection \"pg\" is closed")
        #expect(pool.counts.open == 0)
    }

    @Test func aBusyPoolMakesTheCallerWaitThenFailsClearly() throws {
        let server = try pg()
        let pool = ConnectionPool(
            name: "busy",
            settings: try pgSettings(server),
            limits: .init(maxOpen: 1, acquireTimeoutSeconds: 0.3)
        )
        let holding = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? pool.withConnection { connection throws(CofferError) in
                holding.signal()
                _ = try connection.query("SELECT pg_sleep(1)")
            }
            done.signal()
        }
        holding.wait()
        let start = Date()
        let failure = error { () throws(CofferError) in try pool.withConnection { _ in } }
        #expect(Date().timeIntervalSince(start) >= 0.25)
        #expect(failure?.code == .unavailable)
        #expect(
            failure?.message
                == "all 1 connections of the database connection \"busy\" are in use (max_open_connections); none came free within 0.3 s"
        )
        done.wait()
        #expect(
            try pool.withConnection { connection throws(CofferError) in try connection.query("SELECT 2") } == [["2"]]
        )
    }

    @Test func postgresPoolRecoversFromARestart() throws {
        let server = try pg()
        let pool = ConnectionPool(name: "pg", settings: try pgSettings(server), limits: .init(maxOpen: 2))
        let pid = { () throws(CofferError) -> String? in
            try pool.withConnection { connection throws(CofferError) in
                try connection.query("SELECT pg_backend_pid()")[0][0]
            }
        }
        let before = try pid()
        #expect(try pid() == before)  // reused
        try server.restart()
        // The idle connection the server closed is discarded; a new one is opened.
        let after = try pid()
        #expect(after != nil && after != before)

        // A connection in use when the server goes away fails clearly, is discarded, and the next call reconnects.
        let failure = error { () throws(CofferError) in
            try pool.withConnection { connection throws(CofferError) in
                server.stop()
                defer { try? server.restart() }
                do throws(CofferError) {
                    try connection.execute("SELECT 1")
                } catch {
                    #expect(connection.isBroken)
                    throw error
                }
            }
        }
        #expect(failure?.code == .unavailable)
        #expect(try pid() != nil)
        #expect(pool.counts.open == 1)
    }

    // MARK: MariaDB

    @Test func mariadbStatementsAndParameterizedQueries() throws {
        let server = try my()
        let connection = try mySettings(server).connect()
        defer { connection.close() }
        try connection.execute("CREATE DATABASE IF NOT EXISTS driver")
        try connection.execute(
            "CREATE TABLE IF NOT EXISTS driver.t (name varchar(200), note varchar(20)) ENGINE=InnoDB"
        )
        try connection.execute("DELETE FROM driver.t")
        let tricky = "o'brien \\ \"x\"; DROP TABLE t -- ? `"
        _ = try connection.query("INSERT INTO driver.t VALUES (?, ?)", [tricky, "n?"])
        #expect(
            try connection.query("SELECT name, note, NULL FROM driver.t WHERE name = ?", [tricky]) == [
                [tricky, "n?", nil]
            ]
        )
        #expect(try connection.query("SELECT '?', ?", ["x"]) == [["?", "x"]])
        #expect(try server.sql("SELECT count(*) FROM driver.t") == "1")
        let mismatch = error { () throws(CofferError) in _ = try connection.query("SELECT ?", []) }
        #expect(mismatch?.code == .invalidArgument)

        let failure = error { () throws(CofferError) in try connection.execute("SELEC 1") }
        #expect(failure?.code == .internal)
        #expect(failure?.message.hasPrefix("Error 1064 (42000): You have an error in your SQL syntax") == true)
    }

    @Test func mariadbUserCreatedInATransactionCanLogIn() throws {
        let server = try my()
        let connection = try mySettings(server).connect()
        defer { connection.close() }
        let name = "v-app-\(UInt32.random(in: 0...UInt32.max))"
        let password = "A1a-\(UInt64.random(in: 0...UInt64.max))"
        try connection.transaction(
            SQLStatements.split(
                "CREATE USER \(SQLQuote.mysqlLiteral(name))@'%' IDENTIFIED BY \(connection.quoteLiteral(password));"
                    + "GRANT SELECT ON *.* TO \(SQLQuote.mysqlLiteral(name))@'%';"
            )
        )
        #expect(try server.userExists(name))
        #expect(server.canLogIn(user: name, password: password))
        #expect(!server.canLogIn(user: name, password: "nope"))
        #expect(try server.sql("SELECT CURRENT_USER()", user: name, password: password) == "\(name)@%")
    }

    @Test func mariadbAFailingStatementRollsBackTheTransaction() throws {
        let server = try my()
        let connection = try mySettings(server).connect()
        defer { connection.close() }
        try connection.execute("CREATE DATABASE IF NOT EXISTS driver")
        try connection.execute("CREATE TABLE IF NOT EXISTS driver.r (id int) ENGINE=InnoDB")
        try connection.execute("DELETE FROM driver.r")
        let failure = error { () throws(CofferError) in
            try connection.transaction(["INSERT INTO driver.r VALUES (1)", "INSERT INTO driver.missing VALUES (2)"])
        }
        #expect(failure?.message == "failed to execute query: Error 1146 (42S02): Table 'driver.missing' doesn't exist")
        #expect(try server.sql("SELECT count(*) FROM driver.r") == "0")
    }

    @Test func mariadbWrongPasswordSaysSoWithoutThePassword() throws {
        let server = try my()
        for wrong in ["wrong-password-123456", "p"] {
            let settings = try mySettings(server, password: wrong)
            let failure = error { () throws(CofferError) in _ = try settings.connect() }
            #expect(failure?.code == .unavailable)
            #expect(
                failure?.message
                    == "failed to connect to 127.0.0.1:\(server.port) as \"root\": Error 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: YES)"
            )
            if wrong.count > 1 { #expect(failure?.message.contains(wrong) == false) }
        }
    }

    @Test func mariadbUnreachableFailsFastAndSocketWorks() throws {
        let server = try my()
        let port = try freeLoopbackPort()
        let settings = try DatabaseConnectionSettings(
            plugin: .mysql,
            connectionURL: "{{username}}:{{password}}@tcp(127.0.0.1:\(port))/",
            username: "root",
            password: "whatever-password"
        )
        let start = Date()
        let failure = error { () throws(CofferError) in _ = try settings.connect() }
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(failure?.code == .unavailable)
        #expect(failure?.message.hasPrefix("failed to connect to 127.0.0.1:\(port) as \"root\": Error 2002") == true)
        #expect(failure?.message.contains("Can't connect") == true)

        let viaSocket = try mySettings(
            server,
            url: "{{username}}:{{password}}@unix(\(server.socket))/mysql?sql_mode=ANSI_QUOTES"
        )
        let connection = try viaSocket.connect()
        defer { connection.close() }
        #expect(try connection.query("SELECT DATABASE(), @@SESSION.sql_mode") == [["mysql", "ANSI_QUOTES"]])
    }

    @Test func mariadbPoolNeverOpensMoreThanMaxOpenAndRecoversFromARestart() throws {
        let server = try my()
        let pool = ConnectionPool(
            name: "my",
            settings: try mySettings(server, username: "root"),
            limits: .init(maxOpen: 3)
        )
        let highest = Mutex(0)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 10) { _ in
            do throws(CofferError) {
                try pool.withConnection { connection throws(CofferError) in
                    let rows = try connection.query(
                        "SELECT COUNT(*), SLEEP(0.1) FROM information_schema.processlist WHERE USER = ? AND HOST LIKE '127.0.0.1:%' AND ID <> CONNECTION_ID() OR ID = CONNECTION_ID()",
                        ["root"]
                    )
                    let n = Int(rows[0][0] ?? "") ?? -1
                    highest.withLock { $0 = max($0, n) }
                }
            } catch {
                failures.withLock { $0.append(error.message) }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(highest.withLock { $0 } <= 3)
        #expect(highest.withLock { $0 } >= 2)

        let id = { () throws(CofferError) -> String? in
            try pool.withConnection { connection throws(CofferError) in
                try connection.query("SELECT CONNECTION_ID()")[0][0]
            }
        }
        _ = try id()
        try server.restart()
        #expect(try id() != nil)
        pool.close()
    }
}
