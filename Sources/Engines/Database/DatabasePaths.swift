package import CofferCore
package import CofferFramework

/// The handlers of the database engine's paths, with Vault's fields, statuses and texts
/// (docs/database.md says where Coffer differs).
extension DatabaseBackend {
    static let configFields: [Field] = [
        .string("plugin_name"), .string("plugin_version"), .string("connection_url"), .string("username"),
        .string("password"), .strings("allowed_roles"), .bool("verify_connection"), .string("password_policy"),
        .string("username_template"), .strings("root_rotation_statements"),
        .int("max_open_connections", 1...1000), .int("max_idle_connections", 0...1000),
        .duration("max_connection_lifetime"), .string("password_authentication"),
    ]
    static let roleFields: [Field] = [
        .string("db_name"), .strings("creation_statements"), .strings("revocation_statements"),
        .strings("rollback_statements"), .strings("renew_statements"), .duration("default_ttl"), .duration("max_ttl"),
        .string("credential_type"), .object("credential_config"), .bool("terminate_sessions"),
    ]
    static let staticRoleFields: [Field] = [
        .string("db_name"), .string("username"), .duration("rotation_period"), .strings("rotation_statements"),
        .string("credential_type"), .bool("disable_automatic_rotation"),
    ]

    static func list(_ storage: StorageView, _ folder: String) throws(CofferError) -> Response {
        let keys = try storage.list(folder)
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    // MARK: config/

    func listConfigs(_ request: BackendRequest) throws(CofferError) -> Response {
        try Self.list(request.storage, "config/")
    }

    func configExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("config/" + request.capture("name")) != nil
    }

    func readConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let config = try config(request.storage, request.capture("name")) else { return .notFound }
        var details: [String: JSONValue] = [
            "connection_url": .string(config.displayURL), "username": .string(config.username),
        ]
        if config.maxOpenConnections != 4 { details["max_open_connections"] = .int(config.maxOpenConnections) }
        if config.maxIdleConnections != 0 { details["max_idle_connections"] = .int(config.maxIdleConnections) }
        if config.maxConnectionLifetime != 0 {
            details["max_connection_lifetime"] = .string(VaultDuration.format(config.maxConnectionLifetime))
        }
        if !config.usernameTemplate.isEmpty { details["username_template"] = .string(config.usernameTemplate) }
        return Response(data: [
            "allowed_roles": .array(config.allowedRoles.map { .string($0) }), "connection_details": .object(details),
            "password_policy": .string(config.passwordPolicy), "plugin_name": .string(config.plugin.name),
            "plugin_version": "",
            "root_credentials_rotate_statements": .array(config.rootRotationStatements.map { .string($0) }),
        ])
    }

    /// Writes a connection. With `verify_connection` (the default) it connects first and refuses a
    /// configuration that cannot; the error says why without the password.
    func writeConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let name = request.capture("name")
        let existing = try config(request.storage, name)
        guard let pluginName = f.string("plugin_name") ?? existing?.plugin.name, !pluginName.isEmpty else {
            throw CofferError.invalid("plugin_name must be specified")
        }
        let plugin: DatabasePlugin
        do {
            plugin = try DatabasePlugin(name: pluginName)
        } catch {
            throw CofferError.invalid("error creating database object: \(error.message)")
        }
        var config = existing ?? DatabaseConfig(plugin: plugin)
        config.plugin = plugin
        if let v = f.string("connection_url") { config.connectionURL = v }
        if let v = f.string("username") { config.username = v }
        if let v = f.string("password") {
            config.password = v
            config.pendingPassword = ""
        }
        if let v = f.strings("allowed_roles") {
            config.allowedRoles = v.flatMap { $0.split(separator: ",") }.map { String($0).trimmingSpaces }.filter {
                !$0.isEmpty
            }
        }
        if let v = f.string("password_policy") { config.passwordPolicy = v }
        if let v = f.string("username_template") { config.usernameTemplate = v }
        if let v = f.strings("root_rotation_statements") { config.rootRotationStatements = v }
        if let v = f.int("max_open_connections") { config.maxOpenConnections = v }
        if let v = f.int("max_idle_connections") { config.maxIdleConnections = v }
        if let v = f.seconds("max_connection_lifetime") { config.maxConnectionLifetime = v }
        config.verifyConnection = f.bool("verify_connection") ?? true
        guard !config.connectionURL.isEmpty else {
            throw CofferError.invalid("error creating database object: connection_url cannot be empty")
        }
        if !config.passwordPolicy.isEmpty, let system = request.system,
            try system.passwordPolicy(config.passwordPolicy) == nil
        {
            throw CofferError.invalid(
                "password policy \"\(config.passwordPolicy)\" does not exist (sys/policies/password)"
            )
        }
        if !config.usernameTemplate.isEmpty {
            do {
                _ = try UsernameTemplate(config.usernameTemplate)
            } catch {
                throw CofferError.invalid("error creating database object: \(error.message)")
            }
        }
        let settings: DatabaseConnectionSettings
        do {
            settings = try Self.settings(config)
        } catch {
            throw CofferError.invalid("error creating database object: \(error.message)")
        }
        if config.verifyConnection {
            do {
                let connection = try settings.connect()
                connection.close()
            } catch {
                throw CofferError.invalid(
                    "error creating database object: error verifying connection: \(settings.redact(error.message))"
                )
            }
        }
        try request.storage.putJSON("config/" + name, config.json)
        dropPool(name)
        var warnings: [String] = []
        if config.passwordInURL {
            warnings.append(
                "Password found in connection_url, use a templated url to enable root rotation and prevent read access to password information."
            )
        }
        return Response(warnings: warnings)
    }

    func deleteConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        try request.storage.delete("config/" + name)
        dropPool(name)
        return .noContent
    }

    func reset(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        guard try config(request.storage, name) != nil else { throw Self.noConnection(name) }
        dropPool(name)
        return .noContent
    }

    /// Gives the root user a password only Coffer knows. The new password is stored (as pending)
    /// before the database is told and made current after, so no crash can lose it.
    func rotateRoot(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        guard var config = try config(request.storage, name) else { throw Self.noConnection(name) }
        guard !config.username.isEmpty else {
            throw CofferError(.internal, "unable to rotate root credentials: no username in configuration")
        }
        guard !config.passwordInURL else {
            throw CofferError.invalid(
                "unable to rotate root credentials: the password is written into connection_url; use {{password}} there"
            )
        }
        let password = try Self.newPassword(config, request.system)
        config.pendingPassword = password
        try request.storage.putJSON("config/" + name, config.json)
        do throws(CofferError) {
            let settings = try Self.settings(config)
            let connection = try settings.connect()
            defer { connection.close() }
            do {
                try DatabaseStatements.setPassword(
                    connection,
                    config.username,
                    password,
                    statements: config.rootRotationStatements
                )
            } catch {
                throw CofferError(error.code, settings.redact(error.message).replacing(password, with: "[password]"))
            }
        } catch {
            config.pendingPassword = ""
            try? request.storage.putJSON("config/" + name, config.json)
            throw CofferError(.internal, "unable to rotate root credentials: \(error.message)")
        }
        config.password = password
        config.pendingPassword = ""
        try request.storage.putJSON("config/" + name, config.json)
        dropPool(name)
        return .noContent
    }

    /// A root rotation was cut short: find which password the database has now and keep that one.
    func settlePendingRootPassword(_ storage: StorageView, _ name: String, _ stored: DatabaseConfig) throws(CofferError)
    {
        var config = stored
        if let connection = try? Self.settings(config, password: config.pendingPassword).connect() {
            connection.close()
            config.password = config.pendingPassword
        }
        config.pendingPassword = ""
        try storage.putJSON("config/" + name, config.json)
        dropPool(name)
    }

    // MARK: roles/ and creds/

    /// A password from the connection's `password_policy`, else Vault's default generator.
    static func newPassword(_ config: DatabaseConfig, _ system: (any SystemView)?) throws(CofferError) -> String {
        guard !config.passwordPolicy.isEmpty, let system else { return PasswordGenerator.generate() }
        guard let policy = try system.passwordPolicy(config.passwordPolicy) else {
            throw CofferError(.internal, "password policy \"\(config.passwordPolicy)\" does not exist")
        }
        return try policy.generate()
    }

    func listRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        try Self.list(request.storage, "role/")
    }

    func roleExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("role/" + request.capture("name")) != nil
    }

    func readRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let json = try request.storage.getJSON("role/" + request.capture("name")) else { return .notFound }
        let role = DatabaseRole(json: json)
        func list(_ v: [String]) -> JSONValue { .array(v.map { .string($0) }) }
        return Response(data: [
            "db_name": .string(role.dbName), "creation_statements": list(role.creationStatements),
            "revocation_statements": list(role.revocationStatements),
            "rollback_statements": list(role.rollbackStatements),
            "renew_statements": list(role.renewStatements), "default_ttl": .int(role.defaultTTL),
            "max_ttl": .int(role.maxTTL),
            "credential_type": .string(role.credentialType), "terminate_sessions": .bool(role.terminateSessions),
        ])
    }

    /// As in Vault, only a missing `db_name` is refused here; the rest is checked when credentials are asked for.
    func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let key = "role/" + request.capture("name")
        var role = DatabaseRole(json: try request.storage.getJSON(key) ?? .object([:]))
        if let v = f.string("db_name") { role.dbName = v }
        guard !role.dbName.isEmpty else { throw CofferError.invalid("database name is required") }
        if let v = f.strings("creation_statements") { role.creationStatements = v }
        if let v = f.strings("revocation_statements") { role.revocationStatements = v }
        if let v = f.strings("rollback_statements") { role.rollbackStatements = v }
        if let v = f.strings("renew_statements") { role.renewStatements = v }
        if let v = f.seconds("default_ttl") { role.defaultTTL = v }
        if let v = f.seconds("max_ttl") { role.maxTTL = v }
        if let v = f.bool("terminate_sessions") { role.terminateSessions = v }
        if let v = f.string("credential_type") {
            guard v == "password" else {
                throw CofferError.invalid(
                    "credential_type \"\(v)\" is not supported; Coffer issues \"password\" credentials"
                )
            }
            role.credentialType = v
        }
        try request.storage.putJSON(key, role.json)
        forgetRole(request.capture("name"))
        return .noContent
    }

    func deleteRole(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("role/" + request.capture("name"))
        forgetRole(request.capture("name"))
        return .noContent
    }

    /// Creates a database user for the role and hands it out with a lease. The creation statements
    /// run in one transaction: if one fails nothing is left (and on MySQL, whose `CREATE USER` commits
    /// by itself, the user is dropped again).
    func creds(_ request: BackendRequest) throws(CofferError) -> Response {
        let roleName = request.capture("name")
        guard let role = try role(request.storage, roleName) else {
            throw CofferError.invalid("unknown role: \(roleName)")
        }
        guard let config = try config(request.storage, role.dbName) else { throw Self.noConnection(role.dbName) }
        guard config.allows(roleName) else { throw CofferError(.internal, "\"\(roleName)\" is not an allowed role") }
        guard !role.creationStatements.isEmpty else { throw CofferError(.internal, "empty creation statements") }
        let template = try UsernameTemplate.parsed(
            config.usernameTemplate.isEmpty
                ? (config.plugin == .mysql ? UsernameTemplate.mysqlDefault : UsernameTemplate.postgresDefault)
                : config.usernameTemplate
        )
        let username = try template.render(
            .init(roleName: roleName, displayName: request.caller?.displayName ?? "", now: request.now)
        )
        let password = try Self.newPassword(config, request.system)
        let ttl = request.mount.leaseTTL(asked: role.defaultTTL, max: role.maxTTL).ttl
        let values = [
            "name": username, "username": username, "password": password,
            "expiration": sqlExpiration(request.now.adding(seconds: ttl)),
        ]
        try withConnection(request.storage, role.dbName) { (connection) throws(CofferError) in
            do throws(CofferError) {
                try DatabaseStatements.run(
                    connection,
                    SQLStatements.split(role.creationStatements.map { expand($0, values) })
                )
            } catch {
                DatabaseStatements.rollback(connection, role, username)
                // A statement the database quotes back may hold the generated password.
                throw CofferError(error.code, error.message.replacing(password, with: "[password]"))
            }
        }
        var response = Response(data: ["username": .string(username), "password": .string(password)])
        response.secret = SecretLease(
            type: "creds",
            internalData: [
                "username": .string(username), "role": .string(roleName), "db_name": .string(role.dbName),
                "revocation_statements": .array(role.revocationStatements.map { .string($0) }),
                "terminate_sessions": .bool(role.terminateSessions),
            ],
            ttl: role.defaultTTL,
            maxTTL: role.maxTTL
        )
        return response
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
