package import CofferCore
package import CofferFramework
import Synchronization

/// Vault's database secrets engine with the `postgresql-database-plugin` and `mysql-database-plugin`
/// built in (docs/database.md): connections (`config/`), dynamic roles whose credentials are
/// created on request and revoked when their lease ends (`roles/`, `creds/`), static roles whose
/// existing user's password Coffer rotates (`static-roles/`, `static-creds/`, `rotate-role/`), and
/// `rotate-root/` and `reset/`.
///
/// Storage under the mount: `config/<name>`, `role/<name>`, `static-role/<name>`. Connections are
/// pooled per configuration (libpq and the MariaDB client, loaded on first use) and dropped when the
/// configuration changes.
package final class DatabaseBackend: TableBackend {
    package init() {}

    private let pools = Mutex<[String: ConnectionPool]>([:])
    /// Parsed roles by name, and a count of invalidations: a read that raced a change does not
    /// cache what it read (revocation reads the role of every lease it revokes).
    private let roles = Mutex<(cache: [String: DatabaseRole], generation: UInt64)>(([:], 0))

    package static let paths = PathTable<DatabaseBackend>([
        Path("config/", list: DatabaseBackend.listConfigs),
        Path(
            "config/{name}",
            fields: configFields,
            existence: DatabaseBackend.configExists,
            read: DatabaseBackend.readConfig,
            write: DatabaseBackend.writeConfig,
            delete: DatabaseBackend.deleteConfig
        ),
        Path("roles/", list: DatabaseBackend.listRoles),
        Path(
            "roles/{name}",
            fields: roleFields,
            existence: DatabaseBackend.roleExists,
            read: DatabaseBackend.readRole,
            write: DatabaseBackend.writeRole,
            delete: DatabaseBackend.deleteRole
        ),
        Path("creds/{name}", read: DatabaseBackend.creds),
        Path("static-roles/", list: DatabaseBackend.listStaticRoles),
        Path(
            "static-roles/{name}",
            fields: staticRoleFields,
            existence: DatabaseBackend.staticRoleExists,
            read: DatabaseBackend.readStaticRole,
            write: DatabaseBackend.writeStaticRole,
            delete: DatabaseBackend.deleteStaticRole
        ),
        Path("static-creds/{name}", read: DatabaseBackend.staticCreds),
        Path("rotate-role/{name}", write: DatabaseBackend.rotateRole),
        Path("rotate-root/{name}", write: DatabaseBackend.rotateRoot),
        Path("reset/{name}", write: DatabaseBackend.reset),
    ])

    package var specialPaths: SpecialPaths {
        // The stored configurations hold the root passwords, the static roles theirs.
        SpecialPaths(sealWrapStorage: ["config/*", "static-role/*"])
    }

    package var secretTypes: [SecretType] {
        [
            SecretType(
                name: "creds",
                renew: { [self] (request) throws(CofferError) in try renewCredential(request) },
                revoke: { [self] (request) throws(CofferError) in try revokeCredential(request) }
            )
        ]
    }

    package func invalidate(_ key: String) {
        if key.hasPrefix("config/") { dropPool(String(key.dropFirst("config/".count))) }
        if key.hasPrefix("role/") { forgetRole(String(key.dropFirst("role/".count))) }
    }

    func role(_ storage: StorageView, _ name: String) throws(CofferError) -> DatabaseRole? {
        let (cached, generation) = roles.withLock { ($0.cache[name], $0.generation) }
        if let cached { return cached }
        guard let json = try storage.getJSON("role/" + name) else { return nil }
        let role = DatabaseRole(json: json)
        roles.withLock { if $0.generation == generation { $0.cache[name] = role } }
        return role
    }

    func forgetRole(_ name: String) {
        roles.withLock {
            $0.cache.removeValue(forKey: name)
            $0.generation &+= 1
        }
    }

    // MARK: Connections

    func config(_ storage: StorageReader, _ name: String) throws(CofferError) -> DatabaseConfig? {
        guard let json = try storage.getJSON("config/" + name) else { return nil }
        return try DatabaseConfig(json: json)
    }

    func config(_ storage: StorageView, _ name: String) throws(CofferError) -> DatabaseConfig? {
        try config(storage.reader, name)
    }

    /// Vault's words for a role or static role whose connection does not exist.
    static func noConnection(_ name: String) -> CofferError {
        CofferError(.internal, "failed to find entry for connection with name: \"\(name)\"")
    }

    static func settings(
        _ config: DatabaseConfig,
        password: String? = nil
    ) throws(CofferError) -> DatabaseConnectionSettings {
        try DatabaseConnectionSettings(
            plugin: config.plugin,
            connectionURL: config.connectionURL,
            username: config.username,
            password: password ?? config.password
        )
    }

    /// Runs `body` on a pooled connection of the configuration `name`.
    func withConnection<T>(
        _ storage: StorageView,
        _ name: String,
        _ body: (any DatabaseConnection) throws(CofferError) -> T
    ) throws(CofferError) -> T {
        // A pool exists only for a stored configuration, and is dropped when it changes.
        if let pool = pools.withLock({ $0[name] }) { return try pool.withConnection(body) }
        guard let config = try config(storage, name) else { throw DatabaseBackend.noConnection(name) }
        if !config.pendingPassword.isEmpty { try settlePendingRootPassword(storage, name, config) }
        let pool = try pools.withLock { (pools) throws(CofferError) -> ConnectionPool in
            if let pool = pools[name] { return pool }
            let pool = ConnectionPool(
                name: name,
                settings: try DatabaseBackend.settings(config),
                limits: ConnectionPool.Limits(
                    maxOpen: config.maxOpenConnections,
                    maxIdle: config.maxIdleConnections,
                    maxLifetimeSeconds: Int(config.maxConnectionLifetime)
                )
            )
            pools[name] = pool
            return pool
        }
        return try pool.withConnection(body)
    }

    func dropPool(_ name: String) {
        pools.withLock { $0.removeValue(forKey: name) }?.close()
    }

    // MARK: Credentials' lifecycle (the lease manager calls these)

    /// Drops a dynamic user: the role's revocation statements while the role exists, else the copy
    /// kept with the lease, else the plugin's default. A user already gone counts as revoked.
    func revokeCredential(_ request: SecretRequest) throws(CofferError) {
        let username = request.internalData["username"]?.stringValue ?? ""
        let roleName = request.internalData["role"]?.stringValue ?? ""
        let role = try role(request.storage, roleName)
        let dbName = role?.dbName ?? request.internalData["db_name"]?.stringValue ?? ""
        let statements =
            role?.revocationStatements
            ?? (request.internalData["revocation_statements"]?.arrayValue ?? []).compactMap(\.stringValue)
        let terminate = role?.terminateSessions ?? request.internalData["terminate_sessions"]?.boolValue ?? false
        try withConnection(request.storage, dbName) { (connection) throws(CofferError) in
            if terminate { try DatabaseStatements.terminateSessions(connection, username) }
            if statements.isEmpty {
                try DatabaseStatements.defaultRevoke(connection, username)
            } else {
                try DatabaseStatements.run(
                    connection,
                    SQLStatements.split(statements.map { expand($0, ["name": username, "username": username]) })
                )
            }
        }
    }

    /// Moves a dynamic user's expiry (PostgreSQL's `VALID UNTIL`) to the renewed lease's.
    func renewCredential(_ request: SecretRequest) throws(CofferError) {
        let username = request.internalData["username"]?.stringValue ?? ""
        let roleName = request.internalData["role"]?.stringValue ?? ""
        guard let role = try role(request.storage, roleName) else { return }
        try withConnection(request.storage, role.dbName) { (connection) throws(CofferError) in
            var statements = role.renewStatements
            if statements.isEmpty {
                guard connection.plugin == .postgresql else { return }
                statements = [#"ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';"#]
            }
            let values = ["name": username, "username": username, "expiration": sqlExpiration(request.expireTime)]
            try DatabaseStatements.run(connection, SQLStatements.split(statements.map { expand($0, values) }))
        }
    }
}
