package import CofferCore
package import CofferFramework

/// Static roles: an existing database user whose password Coffer owns. It is set at creation, on
/// `rotate-role/<name>` and every `rotation_period` (unless `disable_automatic_rotation`, which
/// OpenBao's users asked for). A failed scheduled rotation keeps the old password (the database
/// refused the new one), records why, and is tried again a minute later.
extension DatabaseBackend {
    /// How long a failed scheduled rotation waits before the next try, in seconds.
    static let rotationRetry: Int64 = 60

    func listStaticRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        try Self.list(request.storage, "static-role/")
    }

    func staticRoleExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("static-role/" + request.capture("name")) != nil
    }

    func staticRole(_ storage: StorageView, _ name: String) throws(CofferError) -> StaticRole? {
        try storage.getJSON("static-role/" + name).map(StaticRole.init(json:))
    }

    func readStaticRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try staticRole(request.storage, request.capture("name")) else { return .notFound }
        var data: [String: JSONValue] = [
            "credential_type": "password", "db_name": .string(role.dbName), "username": .string(role.username),
            "last_vault_rotation": .string(role.lastRotation.rfc3339), "rotation_period": .int(role.rotationPeriod),
            "rotation_statements": .array(role.rotationStatements.map { .string($0) }),
            "disable_automatic_rotation": .bool(role.disableAutomaticRotation),
        ]
        if !role.rotationError.isEmpty { data["last_rotation_error"] = .string(role.rotationError) }
        return Response(data: data)
    }

    /// Creates or changes a static role; on creation the password is rotated at once (as in Vault),
    /// and the role is stored only if that worked.
    func writeStaticRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let name = request.capture("name")
        let existing = try staticRole(request.storage, name)
        var role = existing ?? StaticRole(json: .object([:]))
        if let v = f.string("db_name") { role.dbName = v }
        if let v = f.string("username") {
            if let existing, existing.username != v {
                throw CofferError.invalid("cannot update static account username")
            }
            role.username = v
        }
        if let v = f.seconds("rotation_period") { role.rotationPeriod = v }
        if let v = f.strings("rotation_statements") { role.rotationStatements = v }
        if let v = f.bool("disable_automatic_rotation") { role.disableAutomaticRotation = v }
        guard !role.dbName.isEmpty else { throw CofferError.invalid("database name is required") }
        guard !role.username.isEmpty else {
            throw CofferError.invalid("username is a required field to create a static account")
        }
        if !role.disableAutomaticRotation {
            guard role.rotationPeriod > 0 else {
                throw CofferError.invalid(
                    "rotation_period is required to create static accounts (or disable_automatic_rotation=true to rotate only on request)"
                )
            }
            guard role.rotationPeriod >= 5 else {
                throw CofferError.invalid("rotation_period must be 5 seconds or more")
            }
        }
        guard let config = try config(request.storage, role.dbName) else { throw Self.noConnection(role.dbName) }
        // One database user has one owner: two roles rotating it would lock each other's clients out.
        if existing == nil {
            for other in try request.storage.list("static-role/") where other != name {
                if let o = try staticRole(request.storage, other), o.dbName == role.dbName, o.username == role.username
                {
                    throw CofferError.invalid(
                        "the database user \"\(role.username)\" of connection \"\(role.dbName)\" is already managed by static role \"\(other)\""
                    )
                }
            }
            if role.username == config.username {
                throw CofferError.invalid(
                    "the database user \"\(role.username)\" is the root user of connection \"\(role.dbName)\"; rotate it with rotate-root"
                )
            }
            try rotate(&role, storage: request.storage, system: request.system, now: request.now)
        }
        try request.storage.putJSON("static-role/" + name, role.json)
        return .noContent
    }

    /// Deleting a static role leaves its database user as it is.
    func deleteStaticRole(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("static-role/" + request.capture("name"))
        return .noContent
    }

    func staticCreds(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try staticRole(request.storage, request.capture("name")) else {
            throw CofferError.invalid("unknown role: \(request.capture("name"))")
        }
        var data: [String: JSONValue] = [
            "username": .string(role.username), "password": .string(role.password),
            "last_vault_rotation": .string(role.lastRotation.rfc3339), "rotation_period": .int(role.rotationPeriod),
        ]
        if let next = role.nextRotation { data["ttl"] = .int(max(0, request.now.seconds(until: next))) }
        return Response(data: data)
    }

    func rotateRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        guard var role = try staticRole(request.storage, name) else {
            throw CofferError.invalid("no static role found for role name")
        }
        do {
            try rotate(&role, storage: request.storage, system: request.system, now: request.now)
        } catch {
            request.publishEvent(
                "database/static-role-rotation-failed",
                metadata: Self.rotationEvent(request.mount, name, role, error: error.message)
            )
            throw error
        }
        try request.storage.putJSON("static-role/" + name, role.json)
        request.publishEvent(
            "database/static-role-rotated",
            metadata: Self.rotationEvent(request.mount, name, role, error: nil)
        )
        return .noContent
    }

    /// The metadata of a static role's rotation events (docs/rotation.md): names, never the password.
    static func rotationEvent(
        _ mount: MountEntry,
        _ name: String,
        _ role: StaticRole,
        error: String?
    ) -> [String: JSONValue] {
        var out: [String: JSONValue] = [
            "path": .string(mount.path + "static-creds/" + name), "role": .string(name),
            "db_name": .string(role.dbName), "username": .string(role.username),
            "last_vault_rotation": .string(role.lastRotation.rfc3339),
        ]
        if let error { out["reason"] = .string(error) }
        return out
    }

    /// Sets a new password in the database; `role` has it (and the rotation time) only if that worked.
    func rotate(
        _ role: inout StaticRole,
        storage: StorageView,
        system: (any SystemView)?,
        now: Timestamp
    ) throws(CofferError) {
        guard let config = try config(storage, role.dbName) else { throw Self.noConnection(role.dbName) }
        let password = try Self.newPassword(config, system)
        let username = role.username
        let statements = role.rotationStatements
        do {
            try withConnection(storage, role.dbName) { (connection) throws(CofferError) in
                try DatabaseStatements.setPassword(connection, username, password, statements: statements)
            }
        } catch {
            throw CofferError(
                .internal,
                "error setting credentials: \(error.message.replacing(password, with: "[password]"))"
            )
        }
        role.password = password
        role.lastRotation = now
        role.rotationError = ""
        role.retryAt = nil
    }

    /// Rotates the static roles whose period has passed.
    package func periodic(storage: StorageView, mount: MountEntry, system: any SystemView, now: Timestamp) {
        guard let names = try? storage.list("static-role/") else { return }
        for name in names {
            guard var role = try? staticRole(storage, name), let due = role.nextRotation, due <= now else { continue }
            var failure: String? = nil
            do {
                try rotate(&role, storage: storage, system: system, now: now)
            } catch {
                role.rotationError = error.message
                role.retryAt = now.adding(seconds: Self.rotationRetry)
                failure = error.message
            }
            try? storage.putJSON("static-role/" + name, role.json)
            // The namespace is not known here: periodic events of static roles are published in the root namespace.
            system.publishEvent(
                failure == nil ? "database/static-role-rotated" : "database/static-role-rotation-failed",
                mount: mount,
                namespaceID: "",
                metadata: Self.rotationEvent(mount, name, role, error: failure),
                now: now
            )
        }
    }
}
