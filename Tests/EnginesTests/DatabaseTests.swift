import Foundation
import Testing

/// The database engine against a real PostgreSQL and a real MariaDB, started by the tests
/// (DatabaseServers.swift). Every check is made in the database itself: the user exists, logs in
/// with the password handed out, has its grants, and is gone after revoke, expiry, the token's
/// revoke and unmount. Time is a manual clock: `expire()` does what the vault's runner would.
private let postgres = Result { try PostgresServer.start() }
private let mariadb = Result { try MariaDBServer.start() }

private func pgSetup() throws -> PostgresServer {
    let server = try postgres.get()
    try server.psql("CREATE TABLE IF NOT EXISTS items (id int); CREATE TABLE IF NOT EXISTS revlog (name text)")
    return server
}

extension Harness {
    func expire() -> LeaseExpiryReport { vault.expireLeases() }

    /// `database/` mounted with a connection `pg` allowing every role, and a role `ro` that may
    /// read `items`.
    func mountPostgres(_ server: PostgresServer, ttl: String = "1h", extra: [String: JSONValue] = [:]) throws {
        #expect(wire("POST", "sys/mounts/database", ["type": "database"]).status == 204)
        let config = wire(
            "POST",
            "database/config/pg",
            [
                "plugin_name": "postgresql-database-plugin", "connection_url": .string(server.connectionURLTemplate),
                "username": "postgres", "password": .string(server.password), "allowed_roles": "*",
            ]
        )
        #expect(config.status == 204, "\(String(describing: config.json))")
        var role: [String: JSONValue] = [
            "db_name": "pg",
            "creation_statements": [
                #"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#,
                #"GRANT SELECT ON items TO "{{name}}";"#,
            ],
            "default_ttl": .string(ttl), "max_ttl": "24h",
        ]
        for (k, v) in extra { role[k] = v }
        #expect(wire("POST", "database/roles/ro", .object(role)).status == 204)
    }

    func creds(_ role: String = "ro", token: String = "root") throws -> (user: String, password: String, lease: String)
    {
        let r = wire("GET", "database/creds/\(role)", token: token)
        guard r.status == 200, let data = r.json?["data"], let user = data["username"]?.stringValue,
            let password = data["password"]?.stringValue, let lease = r.json?["lease_id"]?.stringValue
        else { throw TestFailure("creds/\(role) answered \(r.status): \(String(describing: r.json))") }
        return (user, password, lease)
    }
}

@Suite(.serialized) struct PostgresDatabaseTests {
    @Test func credentialsLiveAndDieWithTheirLease() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server, ttl: "2s")
        let r = h.wire("GET", "database/creds/ro")
        #expect(r.status == 200)
        #expect(r.json?["lease_duration"] == 2 && r.json?["renewable"] == true)
        let user = try #require(r.json?["data"]?["username"]?.stringValue)
        let password = try #require(r.json?["data"]?["password"]?.stringValue)
        #expect(user.hasPrefix("v-root-ro-") && user.count <= 63)
        #expect(password.count == 20)
        #expect(try server.roleExists(user))
        #expect(try server.psql("SELECT count(*) FROM items", user: user, password: password) == "0")
        // The grant is exactly what the role says: no writes.
        #expect(throws: (any Error).self) {
            try server.psql("INSERT INTO items VALUES (1)", user: user, password: password)
        }
        let validUntil = try server.psql("SELECT rolvaliduntil IS NOT NULL FROM pg_roles WHERE rolname = '\(user)'")
        #expect(validUntil == "t")
        h.clock.advance(seconds: 3)
        #expect(h.expire().revoked == 1)
        #expect(try !server.roleExists(user))
        #expect(!server.canLogIn(user: user, password: password))
    }

    @Test func revokedWithTheTokenThatAskedAndWithTheMount() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server)
        let token = try #require(
            h.wire("POST", "auth/token/create", ["policies": ["root"]]).json?["auth"]?["client_token"]?.stringValue
        )
        let (user, _, _) = try h.creds(token: token)
        let (other, _, _) = try h.creds()
        #expect(h.wire("POST", "auth/token/revoke", ["token": .string(token)]).status == 204)
        #expect(try !server.roleExists(user))
        #expect(try server.roleExists(other))
        #expect(h.wire("DELETE", "sys/mounts/database").status == 204)
        #expect(try !server.roleExists(other))
    }

    @Test func renewMovesValidUntilAndRevokeDropsTheUser() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server)
        let (user, _, lease) = try h.creds()
        let before = try server.psql("SELECT rolvaliduntil FROM pg_roles WHERE rolname = '\(user)'")
        h.clock.advance(seconds: 600)
        let renewed = h.wire("PUT", "sys/leases/renew", ["lease_id": .string(lease), "increment": 7200])
        #expect(renewed.status == 200 && renewed.json?["lease_duration"] == 7200)
        let after = try server.psql("SELECT rolvaliduntil FROM pg_roles WHERE rolname = '\(user)'")
        #expect(after > before)
        #expect(h.wire("PUT", "sys/leases/revoke", ["lease_id": .string(lease)]).status == 204)
        #expect(try !server.roleExists(user))
    }

    @Test func aRevocationWhileTheDatabaseIsDownIsRetriedUntilItComesBack() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server, ttl: "5s")
        let (user, _, lease) = try h.creds()
        server.stop()
        defer { if !server.isRunning { try? server.restart() } }
        h.clock.advance(seconds: 6)
        #expect(h.expire().failed == 1)
        let revoke = h.wire("PUT", "sys/leases/revoke", ["lease_id": .string(lease)])
        #expect(revoke.status == 400)
        let message = errors(revoke.json).first ?? ""
        #expect(message.hasPrefix("failed to revoke entry: "), "\(message)")
        #expect(!message.contains(server.password))
        let lookup = h.wire("PUT", "sys/leases/lookup", ["lease_id": .string(lease)]).json?["data"]
        #expect(lookup?["revoke_attempts"] == 2)
        #expect(lookup?["revoke_error"]?.stringValue?.isEmpty == false)
        try server.restart()
        #expect(try server.roleExists(user))
        h.clock.advance(seconds: LeaseManager.maximumBackoff)
        #expect(h.expire().revoked == 1)
        #expect(try !server.roleExists(user))
    }

    @Test func manyRevocationsAtOnceOfUsersGrantedOneTable() throws {
        // Revocations run 4 at a time; PostgreSQL refuses concurrent REVOKEs on one table ("tuple
        // concurrently updated"), which must not surface as a failure.
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(
            server,
            extra: ["revocation_statements": [#"REVOKE ALL ON items FROM "{{name}}"; DROP ROLE IF EXISTS "{{name}}";"#]]
        )
        var users: [String] = []
        for _ in 0..<40 { users.append(try h.creds().user) }
        let revoke = h.wire("PUT", "sys/leases/revoke-prefix/database/creds/ro", [:])
        #expect(revoke.status == 204, "\(errors(revoke.json))")
        for user in users { #expect(try !server.roleExists(user)) }
        #expect(h.wire("LIST", "sys/leases/lookup/database/creds/ro/").status == 404)
    }

    @Test func theLeaseKeepsTheRevocationStatementsOfADeletedRole() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(
            server,
            extra: [
                "revocation_statements": [
                    #"INSERT INTO revlog VALUES ('{{name}}'); REVOKE ALL ON items FROM "{{name}}"; DROP ROLE IF EXISTS "{{name}}";"#
                ]
            ]
        )
        let (user, _, lease) = try h.creds()
        #expect(h.wire("DELETE", "database/roles/ro").status == 204)
        let revoke = h.wire("PUT", "sys/leases/revoke", ["lease_id": .string(lease)])
        #expect(revoke.status == 204, "\(errors(revoke.json))")
        #expect(try server.psql("SELECT count(*) FROM revlog WHERE name = '\(user)'") == "1")
        #expect(try !server.roleExists(user))
    }

    @Test func revokingCanEndTheUsersOpenSessions() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server, extra: ["terminate_sessions": true])
        let (user, password, lease) = try h.creds()
        let session = try DatabaseConnectionSettings(
            plugin: .postgresql,
            connectionURL: server.connectionURLTemplate,
            username: user,
            password: password
        ).connect()
        defer { session.close() }
        #expect(try session.query("SELECT 1").first?.first == "1")
        #expect(h.wire("PUT", "sys/leases/revoke", ["lease_id": .string(lease)]).status == 204)
        #expect(throws: CofferError.self) { _ = try session.query("SELECT 1") }
        #expect(try !server.roleExists(user))
    }

    @Test func badInputIsRefusedClearlyAndLeavesNothingBehind() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server)
        let users = { try server.psql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'") }
        let before = try users()
        // A creation statement with a syntax error: nothing made, 500, the generated password not quoted.
        #expect(
            h.wire(
                "POST",
                "database/roles/bad",
                [
                    "db_name": "pg",
                    "creation_statements": [
                        #"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';"#,
                        #"GRANT BOGUS ON items TO "{{name}}";"#,
                    ],
                ]
            ).status == 204
        )
        let bad = h.wire("GET", "database/creds/bad")
        #expect(bad.status == 500)
        #expect(errors(bad.json).first?.hasPrefix("failed to execute query: ERROR:") == true, "\(errors(bad.json))")
        #expect(try users() == before)
        // Unknown role, a role outside allowed_roles, a role whose connection does not exist.
        #expect(errors(h.wire("GET", "database/creds/missing").json) == ["unknown role: missing"])
        #expect(
            h.wire(
                "POST",
                "database/config/narrow",
                [
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": .string(server.connectionURLTemplate),
                    "username": "postgres", "password": .string(server.password), "allowed_roles": "ro",
                ]
            ).status == 204
        )
        #expect(
            h.wire("POST", "database/roles/zz", ["db_name": "narrow", "creation_statements": ["SELECT 1"]]).status
                == 204
        )
        let outside = h.wire("GET", "database/creds/zz")
        #expect(outside.status == 500 && errors(outside.json) == [#""zz" is not an allowed role"#])
        #expect(
            h.wire("POST", "database/roles/lost", ["db_name": "nope", "creation_statements": ["SELECT 1"]]).status
                == 204
        )
        #expect(
            errors(h.wire("GET", "database/creds/lost").json) == [
                #"failed to find entry for connection with name: "nope""#
            ]
        )
        #expect(
            errors(h.wire("POST", "database/roles/x", ["creation_statements": ["SELECT 1"]]).json) == [
                "database name is required"
            ]
        )
        // creds is GET only.
        #expect(h.wire("POST", "database/creds/ro").status == 405)
        // Wrong credentials, an unreachable database, an unknown plugin, no URL: 400, no password in the text.
        let wrong = h.wire(
            "POST",
            "database/config/wrong",
            [
                "plugin_name": "postgresql-database-plugin", "connection_url": .string(server.connectionURLTemplate),
                "username": "postgres", "password": "not-the-password-123",
            ]
        )
        #expect(wrong.status == 400)
        let wrongText = errors(wrong.json).first ?? ""
        #expect(
            wrongText.contains("error verifying connection") && wrongText.contains("password authentication failed"),
            "\(wrongText)"
        )
        #expect(!wrongText.contains("not-the-password-123"))
        let port = try freeLoopbackPort()
        let down = h.wire(
            "POST",
            "database/config/down",
            [
                "plugin_name": "postgresql-database-plugin",
                "connection_url": .string("postgresql://{{username}}:{{password}}@127.0.0.1:\(port)/postgres"),
                "username": "postgres", "password": "p",
            ]
        )
        #expect(down.status == 400 && errors(down.json).first?.contains("error verifying connection") == true)
        #expect(
            errors(down.json).first?.contains("postgres") == true,
            "the message is not mangled: \(errors(down.json))"
        )
        #expect(h.wire("GET", "database/config/down").status == 404)
        let plugin = h.wire("POST", "database/config/x", ["plugin_name": "nope-plugin", "connection_url": "x"])
        #expect(plugin.status == 400 && errors(plugin.json).first?.contains("nope-plugin") == true)
        #expect(
            errors(h.wire("POST", "database/config/x", ["plugin_name": "postgresql-database-plugin"]).json)
                == ["error creating database object: connection_url cannot be empty"]
        )
        // A TTL over the role's max is capped, with OpenBao's warning.
        #expect(
            h.wire(
                "POST",
                "database/roles/long",
                ["db_name": "pg", "creation_statements": ["SELECT 1"], "default_ttl": "2h", "max_ttl": "1h"]
            )
            .status == 204
        )
        _ = h.wire("POST", "database/config/pg", ["allowed_roles": "*"])
        let long = h.wire("GET", "database/creds/long")
        #expect(long.json?["lease_duration"] == 3600)
        #expect(
            long.json?["warnings"]?.arrayValue?.first?.stringValue
                == #"TTL of "2h" exceeded the effective max_ttl of "1h"; TTL value is capped accordingly"#
        )
    }

    @Test func aPasswordPolicyShapesTheGeneratedPasswords() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server)
        let policy = "length = 24\nrule \"charset\" {\n  charset = \"abcdefghijklmnopqrstuvwxyz0123456789\"\n}\n"
        #expect(h.wire("PUT", "sys/policies/password/pgpol", ["policy": .string(policy)]).status == 204)
        let missing = h.wire("POST", "database/config/pg", ["password_policy": "nope"])
        #expect(
            missing.status == 400
                && errors(missing.json) == [#"password policy "nope" does not exist (sys/policies/password)"#]
        )
        #expect(h.wire("POST", "database/config/pg", ["password_policy": "pgpol"]).status == 204)
        let (user, password, _) = try h.creds()
        #expect(password.count == 24 && password.allSatisfy { $0.isLowercase || $0.isNumber })
        #expect(server.canLogIn(user: user, password: password))
    }

    @Test func theConfigurationNeverShowsThePassword() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server)
        let read = h.wire("GET", "database/config/pg")
        #expect(read.json?["data"]?["connection_details"]?["username"] == "postgres")
        #expect(read.json?["data"]?["allowed_roles"] == ["*"])
        let text = String(decoding: read.json?.serialized() ?? [], as: UTF8.self)
        #expect(text.contains("connection_url") && !text.contains(server.password))
        #expect(h.wire("LIST", "database/config").json?["data"]?["keys"] == ["pg"])
    }

    @Test func rotateRootLeavesAPasswordOnlyCofferKnows() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server)
        try server.psql(
            "DROP ROLE IF EXISTS vaultadmin; CREATE ROLE vaultadmin WITH LOGIN SUPERUSER PASSWORD 'adminpw-initial'"
        )
        #expect(
            h.wire(
                "POST",
                "database/config/admin",
                [
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": .string(server.connectionURLTemplate),
                    "username": "vaultadmin", "password": "adminpw-initial", "allowed_roles": "*",
                ]
            ).status == 204
        )
        #expect(h.wire("POST", "database/rotate-root/admin").status == 204)
        #expect(!server.canLogIn(user: "vaultadmin", password: "adminpw-initial"))
        #expect(
            h.wire(
                "POST",
                "database/roles/viaadmin",
                [
                    "db_name": "admin",
                    "creation_statements": [#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';"#],
                ]
            ).status == 204
        )
        let (user, password, _) = try h.creds("viaadmin")
        #expect(server.canLogIn(user: user, password: password))
        #expect(
            errors(h.wire("POST", "database/rotate-root/nope").json) == [
                #"failed to find entry for connection with name: "nope""#
            ]
        )
        #expect(h.wire("POST", "database/reset/admin").status == 204)
        _ = try h.creds("viaadmin")
    }

    @Test func staticRolesRotateOnCreationOnRequestAndOnTheirPeriod() throws {
        let server = try pgSetup()
        let h = try Harness()
        try h.mountPostgres(server)
        try server.psql("DROP ROLE IF EXISTS app_static; CREATE ROLE app_static WITH LOGIN PASSWORD 'initial'")
        #expect(
            h.wire(
                "POST",
                "database/static-roles/st1",
                ["db_name": "pg", "username": "app_static", "rotation_period": "1h"]
            ).status == 204
        )
        #expect(!server.canLogIn(user: "app_static", password: "initial"))
        var creds = try #require(h.wire("GET", "database/static-creds/st1").json)
        #expect(creds["lease_id"] == "")
        #expect(creds["data"]?["ttl"] == 3600)
        let first = try #require(creds["data"]?["password"]?.stringValue)
        #expect(server.canLogIn(user: "app_static", password: first))
        // One database user, one owner.
        let twin = h.wire(
            "POST",
            "database/static-roles/st2",
            ["db_name": "pg", "username": "app_static", "rotation_period": "1h"]
        )
        #expect(
            twin.status == 400 && errors(twin.json).first?.contains("already managed by static role \"st1\"") == true
        )
        #expect(h.wire("POST", "database/rotate-role/st1").status == 204)
        creds = try #require(h.wire("GET", "database/static-creds/st1").json)
        let second = try #require(creds["data"]?["password"]?.stringValue)
        #expect(second != first && server.canLogIn(user: "app_static", password: second))
        #expect(!server.canLogIn(user: "app_static", password: first))
        // The period passes: the runner rotates it.
        h.clock.advance(seconds: 3601)
        h.expire()
        let third = try #require(h.wire("GET", "database/static-creds/st1").json?["data"]?["password"]?.stringValue)
        #expect(third != second && server.canLogIn(user: "app_static", password: third))
        // Rotation only on request.
        try server.psql("DROP ROLE IF EXISTS app_manual; CREATE ROLE app_manual WITH LOGIN PASSWORD 'initial'")
        #expect(
            h.wire(
                "POST",
                "database/static-roles/manual",
                ["db_name": "pg", "username": "app_manual", "disable_automatic_rotation": true]
            ).status == 204
        )
        let manual = try #require(h.wire("GET", "database/static-creds/manual").json?["data"]?["password"]?.stringValue)
        h.clock.advance(seconds: 100 * 86400)
        h.expire()
        #expect(h.wire("GET", "database/static-creds/manual").json?["data"]?["password"]?.stringValue == manual)
        // Errors as OpenBao words them.
        #expect(
            errors(h.wire("POST", "database/static-roles/x", ["db_name": "pg", "rotation_period": "1h"]).json) == [
                "username is a required field to create a static account"
            ]
        )
        #expect(
            errors(
                h.wire("POST", "database/static-roles/x", ["db_name": "pg", "username": "u", "rotation_period": "2s"])
                    .json
            ) == ["rotation_period must be 5 seconds or more"]
        )
        #expect(
            errors(h.wire("POST", "database/static-roles/st1", ["username": "other"]).json) == [
                "cannot update static account username"
            ]
        )
        let ghost = h.wire(
            "POST",
            "database/static-roles/ghost",
            ["db_name": "pg", "username": "ghost", "rotation_period": "1h"]
        )
        #expect(
            ghost.status == 500 && errors(ghost.json).first?.contains(#"role "ghost" does not exist"#) == true,
            "\(errors(ghost.json))"
        )
        #expect(h.wire("GET", "database/static-roles/ghost").status == 404)
        #expect(errors(h.wire("POST", "database/rotate-role/none").json) == ["no static role found for role name"])

        // Rotations are events (docs/rotation.md): on request, on the period (twice: the 100 days above),
        // then a failure when the database user is gone. Names only, never a password.
        try server.psql("DROP ROLE app_static")
        h.clock.advance(seconds: 3601)
        h.expire()
        let events = h.vault.core.events.recent(typePrefix: "database/static-role-rotat")
            .filter { $0.data["metadata"]?["role"] == "st1" }
        #expect(
            events.map(\.type) == [
                "database/static-role-rotated", "database/static-role-rotated", "database/static-role-rotated",
                "database/static-role-rotation-failed",
            ]
        )
        #expect(events.first?.data["metadata"]?["path"] == "database/static-creds/st1")
        #expect(events.first?.data["metadata"]?["username"] == "app_static")
        #expect((events.last?.data["metadata"]?["reason"]?.stringValue ?? "").contains("app_static"))
        for event in events {
            let text = String(decoding: JSONValue.object(event.data).serialized(), as: UTF8.self)
            #expect(!text.contains(first) && !text.contains(second) && !text.contains(third))
        }
    }
}

@Suite(.serialized) struct MariaDBDatabaseTests {
    func mount(_ h: Harness, _ server: MariaDBServer) {
        #expect(h.wire("POST", "sys/mounts/database", ["type": "database"]).status == 204)
        let config = h.wire(
            "POST",
            "database/config/my",
            [
                "plugin_name": "mysql-database-plugin", "connection_url": .string(server.connectionURLTemplate),
                "username": "root", "password": .string(server.password), "allowed_roles": "*",
            ]
        )
        #expect(config.status == 204, "\(String(describing: config.json))")
        try? server.sql("CREATE DATABASE IF NOT EXISTS app")
        #expect(
            h.wire(
                "POST",
                "database/roles/app",
                [
                    "db_name": "my",
                    "creation_statements": [
                        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
                        "GRANT SELECT ON app.* TO '{{name}}'@'%';",
                    ],
                    "default_ttl": "10s",
                ]
            ).status == 204
        )
    }

    @Test func credentialsLiveAndDieWithTheirLease() throws {
        let server = try mariadb.get()
        let h = try Harness()
        mount(h, server)
        let (user, password, lease) = try h.creds("app")
        #expect(user.hasPrefix("v-root-app-") && user.count <= 32)
        #expect(try server.userExists(user))
        #expect(try server.sql("SHOW GRANTS", user: user, password: password).contains("SELECT ON `app`.*"))
        h.clock.advance(seconds: 11)
        #expect(h.expire().revoked == 1)
        #expect(try !server.userExists(user))
        #expect(!server.canLogIn(user: user, password: password))
        _ = lease
    }

    @Test func aFailedCreationLeavesNoUserEvenThoughMySQLCommitsCreateUser() throws {
        let server = try mariadb.get()
        let h = try Harness()
        mount(h, server)
        let before = try server.sql("SELECT count(*) FROM mysql.user WHERE User LIKE 'v-%'")
        #expect(
            h.wire(
                "POST",
                "database/roles/bad",
                [
                    "db_name": "my",
                    "creation_statements": [
                        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
                        "GRANT BOGUS ON app.* TO '{{name}}'@'%';",
                    ],
                ]
            ).status == 204
        )
        let bad = h.wire("GET", "database/creds/bad")
        #expect(bad.status == 500)
        #expect(try server.sql("SELECT count(*) FROM mysql.user WHERE User LIKE 'v-%'") == before)
    }

    @Test func staticRoleAndRevokeByToken() throws {
        let server = try mariadb.get()
        let h = try Harness()
        mount(h, server)
        try server.sql("DROP USER IF EXISTS 'mystatic'@'%'; CREATE USER 'mystatic'@'%' IDENTIFIED BY 'initial'")
        #expect(
            h.wire(
                "POST",
                "database/static-roles/s",
                ["db_name": "my", "username": "mystatic", "rotation_period": "1h"]
            ).status == 204
        )
        let password = try #require(h.wire("GET", "database/static-creds/s").json?["data"]?["password"]?.stringValue)
        #expect(
            server.canLogIn(user: "mystatic", password: password)
                && !server.canLogIn(user: "mystatic", password: "initial")
        )
        let token = try #require(
            h.wire("POST", "auth/token/create", ["policies": ["root"]]).json?["auth"]?["client_token"]?.stringValue
        )
        let (user, _, _) = try h.creds("app", token: token)
        #expect(h.wire("POST", "auth/token/revoke", ["token": .string(token)]).status == 204)
        #expect(try !server.userExists(user))
    }
}
