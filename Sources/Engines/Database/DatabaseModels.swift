package import CofferCore

/// A configured connection, stored at `config/<name>`. The password lives only here, in the barrier:
/// no read returns it and no error quotes it.
struct DatabaseConfig: Sendable, Equatable {
    var plugin: DatabasePlugin
    var connectionURL: String
    var username: String
    var password: String
    /// A new root password being set by `rotate-root`: stored before the database is told, so a crash
    /// in between cannot lose it (the next connection tries it if the old one is refused).
    var pendingPassword: String
    var allowedRoles: [String]
    var passwordPolicy: String
    var usernameTemplate: String
    var rootRotationStatements: [String]
    var maxOpenConnections: Int
    var maxIdleConnections: Int
    var maxConnectionLifetime: Int64
    var verifyConnection: Bool

    var json: JSONValue {
        [
            "plugin_name": .string(plugin.name), "connection_url": .string(connectionURL),
            "username": .string(username),
            "password": .string(password), "pending_password": .string(pendingPassword),
            "allowed_roles": .array(allowedRoles.map { .string($0) }), "password_policy": .string(passwordPolicy),
            "username_template": .string(usernameTemplate),
            "root_rotation_statements": .array(rootRotationStatements.map { .string($0) }),
            "max_open_connections": .int(maxOpenConnections), "max_idle_connections": .int(maxIdleConnections),
            "max_connection_lifetime": .int(maxConnectionLifetime), "verify_connection": .bool(verifyConnection),
        ]
    }

    init(json: JSONValue) throws(CofferError) {
        plugin = try DatabasePlugin(name: json["plugin_name"]?.stringValue ?? "")
        connectionURL = json["connection_url"]?.stringValue ?? ""
        username = json["username"]?.stringValue ?? ""
        password = json["password"]?.stringValue ?? ""
        pendingPassword = json["pending_password"]?.stringValue ?? ""
        allowedRoles = (json["allowed_roles"]?.arrayValue ?? []).compactMap(\.stringValue)
        passwordPolicy = json["password_policy"]?.stringValue ?? ""
        usernameTemplate = json["username_template"]?.stringValue ?? ""
        rootRotationStatements = (json["root_rotation_statements"]?.arrayValue ?? []).compactMap(\.stringValue)
        maxOpenConnections = json["max_open_connections"]?.intValue ?? 4
        maxIdleConnections = json["max_idle_connections"]?.intValue ?? 0
        maxConnectionLifetime = Int64(json["max_connection_lifetime"]?.intValue ?? 0)
        verifyConnection = json["verify_connection"]?.boolValue ?? true
    }

    init(plugin: DatabasePlugin) {
        self.plugin = plugin
        connectionURL = ""
        username = ""
        password = ""
        pendingPassword = ""
        allowedRoles = []
        passwordPolicy = ""
        usernameTemplate = ""
        rootRotationStatements = []
        maxOpenConnections = 4
        maxIdleConnections = 0
        maxConnectionLifetime = 0
        verifyConnection = true
    }

    /// Whether `role` is in `allowed_roles` (globs with `*` anywhere; empty allows none, as in Vault).
    func allows(_ role: String) -> Bool {
        allowedRoles.contains { glob($0, matches: role) }
    }

    /// The connection URL as reads show it: a password written into it (not templated) is masked.
    var displayURL: String {
        guard let scheme = connectionURL.firstRange(of: "://") else { return connectionURL }
        let rest = connectionURL[scheme.upperBound...]
        guard let at = rest.firstIndex(of: "@"), let colon = rest[..<at].firstIndex(of: ":") else {
            return connectionURL
        }
        let secret = rest[rest.index(after: colon)..<at]
        guard secret != "{{password}}", !secret.isEmpty else { return connectionURL }
        return String(connectionURL[..<rest.index(after: colon)]) + "xxxxx" + String(rest[at...])
    }

    var passwordInURL: Bool { displayURL != connectionURL }
}

/// `*` matches any run of characters, anywhere in the pattern.
func glob(_ pattern: String, matches text: String) -> Bool {
    let parts = pattern.split(separator: "*", omittingEmptySubsequences: false)
    guard parts.count > 1 else { return pattern == text }
    var rest = Substring(text)
    guard rest.hasPrefix(parts[0]) else { return false }
    rest = rest.dropFirst(parts[0].count)
    for part in parts.dropFirst().dropLast() where !part.isEmpty {
        guard let range = rest.firstRange(of: part) else { return false }
        rest = rest[range.upperBound...]
    }
    return rest.hasSuffix(parts.last!)
}

/// A dynamic role, stored at `role/<name>`.
struct DatabaseRole: Sendable, Equatable {
    var dbName: String
    var creationStatements: [String]
    var revocationStatements: [String]
    var rollbackStatements: [String]
    var renewStatements: [String]
    var defaultTTL: Int64
    var maxTTL: Int64
    var credentialType: String
    /// Beyond Vault: revoking a credential also ends the sessions it has open (`pg_terminate_backend`,
    /// MySQL's `KILL`), so a revoked user cannot go on using a connection it opened before.
    var terminateSessions: Bool

    var json: JSONValue {
        [
            "db_name": .string(dbName), "creation_statements": .array(creationStatements.map { .string($0) }),
            "revocation_statements": .array(revocationStatements.map { .string($0) }),
            "rollback_statements": .array(rollbackStatements.map { .string($0) }),
            "renew_statements": .array(renewStatements.map { .string($0) }), "default_ttl": .int(defaultTTL),
            "max_ttl": .int(maxTTL), "credential_type": .string(credentialType),
            "terminate_sessions": .bool(terminateSessions),
        ]
    }

    init(json: JSONValue) {
        func strings(_ key: String) -> [String] { (json[key]?.arrayValue ?? []).compactMap(\.stringValue) }
        dbName = json["db_name"]?.stringValue ?? ""
        creationStatements = strings("creation_statements")
        revocationStatements = strings("revocation_statements")
        rollbackStatements = strings("rollback_statements")
        renewStatements = strings("renew_statements")
        defaultTTL = Int64(json["default_ttl"]?.intValue ?? 0)
        maxTTL = Int64(json["max_ttl"]?.intValue ?? 0)
        credentialType = json["credential_type"]?.stringValue ?? "password"
        terminateSessions = json["terminate_sessions"]?.boolValue ?? false
    }
}

/// A static role, stored at `static-role/<name>`: a database user Coffer does not create but whose
/// password it owns and rotates.
struct StaticRole: Sendable, Equatable {
    var dbName: String
    var username: String
    var rotationPeriod: Int64
    var rotationStatements: [String]
    /// Beyond OpenBao (its users asked for it): rotate only when asked (`rotate-role`), never on a period.
    var disableAutomaticRotation: Bool
    var password: String
    var lastRotation: Timestamp
    /// The last failed rotation's error and when it is tried again ("" and nil when the last one worked).
    var rotationError: String
    var retryAt: Timestamp?

    var json: JSONValue {
        [
            "db_name": .string(dbName), "username": .string(username), "rotation_period": .int(rotationPeriod),
            "rotation_statements": .array(rotationStatements.map { .string($0) }),
            "disable_automatic_rotation": .bool(disableAutomaticRotation), "password": .string(password),
            "last_rotation": .int(lastRotation.nanoseconds), "rotation_error": .string(rotationError),
            "retry_at": retryAt.map { .int($0.nanoseconds) } ?? .null,
        ]
    }

    init(json: JSONValue) {
        dbName = json["db_name"]?.stringValue ?? ""
        username = json["username"]?.stringValue ?? ""
        rotationPeriod = Int64(json["rotation_period"]?.intValue ?? 0)
        rotationStatements = (json["rotation_statements"]?.arrayValue ?? []).compactMap(\.stringValue)
        disableAutomaticRotation = json["disable_automatic_rotation"]?.boolValue ?? false
        password = json["password"]?.stringValue ?? ""
        lastRotation = Timestamp(nanoseconds: Int64(json["last_rotation"]?.intValue ?? 0))
        rotationError = json["rotation_error"]?.stringValue ?? ""
        retryAt = json["retry_at"]?.intValue.map { Timestamp(nanoseconds: Int64($0)) }
    }

    /// When the next rotation falls due; nil when rotation is by request only.
    var nextRotation: Timestamp? {
        guard !disableAutomaticRotation, rotationPeriod > 0 else { return nil }
        return retryAt ?? lastRotation.adding(seconds: rotationPeriod)
    }
}

/// Passwords as Vault's default generator makes them: 20 characters of `[a-zA-Z0-9-]` with at least
/// one lowercase letter, one uppercase letter, one digit and one `-`.
enum PasswordGenerator {
    static let charset = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

    static func generate(length: Int = 20) -> String {
        while true {
            var out: [Character] = []
            while out.count < length {
                for byte in Random.bytes(length * 2) where Int(byte) < 256 - 256 % charset.count {
                    out.append(charset[Int(byte) % charset.count])
                    if out.count == length { break }
                }
            }
            if out.contains(where: \.isLowercase), out.contains(where: \.isUppercase), out.contains(where: \.isNumber),
                out.contains("-")
            {
                return String(out)
            }
        }
    }
}

/// Vault's `{{expiration}}`: Go's `2006-01-02 15:04:05-0700`, in UTC.
func sqlExpiration(_ time: Timestamp) -> String {
    let text = time.rfc3339  // 2026-11-30T11:54:28.123Z
    return String(text.prefix(10)) + " " + String(text.dropFirst(11).prefix(8)) + "+0000"
}

/// Substitutes Vault's statement templates.
func expand(_ statement: String, _ values: [String: String]) -> String {
    var out = statement
    for (name, value) in values { out = out.replacing("{{\(name)}}", with: value) }
    return out
}
