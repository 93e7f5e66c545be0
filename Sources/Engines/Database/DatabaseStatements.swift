package import CofferCore

/// What each plugin runs when a role gives no statements of its own, and the parts that differ
/// between PostgreSQL and MySQL.
enum DatabaseStatements {
    /// Runs statements all or nothing. PostgreSQL gets them as one simple query, which it runs as one
    /// implicit transaction in one round trip (BEGIN and COMMIT would be two more); MySQL in a
    /// transaction, statement by statement (it cannot undo DDL either way: see ``rollback(_:_:_:)``).
    static func run(_ connection: any DatabaseConnection, _ statements: [String]) throws(CofferError) {
        guard !statements.isEmpty else { return }
        switch connection.plugin {
        case .postgresql:
            do {
                try connection.execute(statements.joined(separator: ";\n"))
            } catch {
                throw CofferError(error.code, "failed to execute query: " + error.message)
            }
        case .mysql:
            try connection.transaction(statements)
        }
    }

    /// PostgreSQL's default revocation, as Vault's plugin does it: revoke what the user was granted in
    /// each schema, then drop it. Statements that fail before the drop (a schema gone meanwhile) do
    /// not stop it; a user that does not exist is already revoked.
    /// MySQL's: drop the user at every host it exists for.
    static func defaultRevoke(_ connection: any DatabaseConnection, _ username: String) throws(CofferError) {
        switch connection.plugin {
        case .postgresql:
            guard try !connection.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [username]).isEmpty else { return }
            let user = connection.quoteIdentifier(username)
            let schemas = try connection.query(
                """
                SELECT DISTINCT table_schema FROM information_schema.role_table_grants WHERE grantee = $1
                UNION SELECT DISTINCT table_schema FROM information_schema.role_column_grants WHERE grantee = $1
                UNION SELECT 'public'
                """,
                [username]
            ).compactMap { $0.first ?? nil }
            for schema in schemas {
                let s = connection.quoteIdentifier(schema)
                try? connection.execute("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA \(s) FROM \(user)")
                try? connection.execute("REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA \(s) FROM \(user)")
                try? connection.execute("REVOKE USAGE ON SCHEMA \(s) FROM \(user)")
            }
            if let database = try connection.query("SELECT current_database()").first?.first ?? nil {
                try? connection.execute(
                    "REVOKE CONNECT ON DATABASE \(connection.quoteIdentifier(database)) FROM \(user)"
                )
            }
            try connection.execute("DROP ROLE IF EXISTS \(user)")
        case .mysql:
            for host in try hosts(connection, username) {
                try connection.execute(
                    "DROP USER IF EXISTS \(connection.quoteLiteral(username))@\(connection.quoteLiteral(host))"
                )
            }
        }
    }

    /// The hosts a MySQL user exists for (`'name'@'%'`, `'name'@'localhost'`).
    static func hosts(_ connection: any DatabaseConnection, _ username: String) throws(CofferError) -> [String] {
        try connection.query("SELECT Host FROM mysql.user WHERE User = ?", [username]).compactMap { $0.first ?? nil }
    }

    /// Ends the sessions `username` has open.
    static func terminateSessions(_ connection: any DatabaseConnection, _ username: String) throws(CofferError) {
        switch connection.plugin {
        case .postgresql:
            _ = try connection.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
                [username]
            )
        case .mysql:
            for row in try connection.query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", [username])
            {
                if let id = row.first ?? nil, let number = Int(id) { try? connection.execute("KILL \(number)") }
            }
        }
    }

    /// After a failed creation: the role's rollback statements, or (MySQL, whose `CREATE USER` commits
    /// by itself so the transaction cannot undo it) the user dropped wherever it was made.
    static func rollback(_ connection: any DatabaseConnection, _ role: DatabaseRole, _ username: String) {
        if !role.rollbackStatements.isEmpty {
            let values = ["name": username, "username": username]
            try? run(connection, SQLStatements.split(role.rollbackStatements.map { expand($0, values) }))
        } else if connection.plugin == .mysql {
            try? defaultRevoke(connection, username)
        }
    }

    /// Sets a user's password (static roles, root rotation) with the given statements or the
    /// plugin's default.
    static func setPassword(
        _ connection: any DatabaseConnection,
        _ username: String,
        _ password: String,
        statements: [String]
    ) throws(CofferError) {
        let values = ["name": username, "username": username, "password": password]
        if !statements.isEmpty {
            try run(connection, SQLStatements.split(statements.map { expand($0, values) }))
            return
        }
        switch connection.plugin {
        case .postgresql:
            try run(
                connection,
                [
                    "ALTER ROLE \(connection.quoteIdentifier(username)) WITH PASSWORD \(connection.quoteLiteral(password))"
                ]
            )
        case .mysql:
            let hosts = try hosts(connection, username)
            guard !hosts.isEmpty else {
                throw CofferError(.internal, "failed to execute query: user \"\(username)\" does not exist")
            }
            for host in hosts {
                try connection.execute(
                    "ALTER USER \(connection.quoteLiteral(username))@\(connection.quoteLiteral(host)) IDENTIFIED BY \(connection.quoteLiteral(password))"
                )
            }
        }
    }
}
