package import CofferCore
package import CofferFramework
import Synchronization

/// OpenBao's AppRole auth method: machines log in with a role ID and a secret ID.
///
/// Storage under the mount (`auth/<uuid>/`): `hmac-key` (32 random bytes, made on first use),
/// `role/<name>`, `role-id/<hmac(role_id)>` → the role's name, `secret-id/<role uid>/<hmac(secret_id)>`
/// (the secret ID's entry: never the secret ID), `accessor/<accessor>` → role uid and hmac, and
/// `expiry/<hour>/<seconds>.<role uid>.<hmac>` (the index tidy reads, so tidying costs what has
/// expired, not what exists). A secret ID, its accessor and its index key are written and deleted
/// in one batch, so no accessor is ever left dangling.
///
/// Use counts are exact: a login spends a use holding the lock of the secret ID's stripe, re-reading
/// the entry under it. Coffer additions: lookups show `last_used_time`; an expired secret ID is
/// deleted when a login or lookup meets it.
package final class AppRoleBackend: TableBackend {
    /// Guards one stripe of secret IDs (by the first byte of their HMAC) while a use is spent.
    final class Stripe: Sendable {
        let lock = Mutex(())
    }

    private let key = Mutex<HMACKey?>(nil)
    /// Held while the HMAC key is read or made, so two first logins do not make two keys.
    private let creation = Mutex(())
    private let stripes: [Stripe] = (0..<64).map { _ in Stripe() }
    /// Held by every write to a role, so concurrent per-field writes do not lose each other's updates.
    let roleLock = Mutex(())

    package init() {}

    package var specialPaths: SpecialPaths { SpecialPaths(unauthenticated: ["login", "login/*"]) }

    package func invalidate(_ key: String) {
        if key == AppRoleKeys.hmacKey { self.key.withLock { $0 = nil } }
    }

    static let roleFields: [Field] =
        TokenParameters.fields + [
            .bool("bind_secret_id"), .strings("secret_id_bound_cidrs"), .strings("bound_cidr_list"),
            .int("secret_id_num_uses", Int(Int32.min)...Int(Int32.max)), .duration("secret_id_ttl"),
            .bool("local_secret_ids"), .string("role_id"), .strings("policies"), .duration("period"),
        ]

    static let secretIDFields: [Field] = [
        .string("metadata"), .strings("cidr_list"), .strings("token_bound_cidrs"), .duration("ttl"),
        .int("num_uses", Int(Int32.min)...Int(Int32.max)),
    ]

    package static let paths = PathTable<AppRoleBackend>(
        [
            Path("login", fields: [.string("role_id"), .string("secret_id")], write: AppRoleBackend.login),
            Path("tidy/secret-id", write: AppRoleBackend.tidy),
            Path("role/", list: AppRoleBackend.listRoles),
            Path(
                "role/{name}/role-id",
                fields: [.string("role_id")],
                read: AppRoleBackend.readRoleID,
                write: AppRoleBackend.writeRoleID
            ),
            // One declaration for both: the list form also matches the path without its slash.
            Path(
                "role/{name}/secret-id/",
                fields: secretIDFields,
                list: AppRoleBackend.listSecretIDs,
                write: AppRoleBackend.generateSecretID
            ),
            Path(
                "role/{name}/secret-id/lookup",
                fields: [.string("secret_id")],
                write: AppRoleBackend.lookupSecretID
            ),
            Path(
                "role/{name}/secret-id/destroy",
                fields: [.string("secret_id")],
                write: AppRoleBackend.destroySecretID,
                delete: AppRoleBackend.destroySecretID
            ),
            Path(
                "role/{name}/secret-id-accessor/lookup",
                fields: [.string("secret_id_accessor")],
                write: AppRoleBackend.lookupAccessor
            ),
            Path(
                "role/{name}/secret-id-accessor/destroy",
                fields: [.string("secret_id_accessor")],
                write: AppRoleBackend.destroyAccessor,
                delete: AppRoleBackend.destroyAccessor
            ),
            Path(
                "role/{name}/custom-secret-id",
                fields: secretIDFields + [.string("secret_id")],
                write: AppRoleBackend.customSecretID
            ),
        ] + AppRoleField.all.map(AppRoleBackend.fieldPath) + [
            Path(
                "role/{name}",
                fields: roleFields,
                existence: AppRoleBackend.roleExists,
                read: AppRoleBackend.readRole,
                write: AppRoleBackend.writeRole,
                delete: AppRoleBackend.deleteRole
            )
        ]
    )

    /// The declared path of one per-field sub-path.
    static func fieldPath(_ field: AppRoleField) -> Path<AppRoleBackend> {
        let read: Handler<AppRoleBackend> = { backend in
            { (request: BackendRequest) throws(CofferError) -> Response in try backend.readField(request, field) }
        }
        let write: Handler<AppRoleBackend> = { backend in
            { (request: BackendRequest) throws(CofferError) -> Response in try backend.writeField(request, field) }
        }
        let delete: Handler<AppRoleBackend> = { backend in
            { (request: BackendRequest) throws(CofferError) -> Response in try backend.deleteField(request, field) }
        }
        return Path(
            "role/{name}/\(field.segment)",
            fields: field.fields,
            read: read,
            write: field.writable ? write : nil,
            delete: field.writable ? delete : nil
        )
    }

    // MARK: Keys and locks

    /// The mount's HMAC key, made and stored on first use.
    func hmacKey(_ storage: StorageView) throws(CofferError) -> HMACKey {
        if let cached = key.withLock({ $0 }) { return cached }
        // Not under `key`'s lock: the write below calls `invalidate`, which takes it.
        return try creation.withLock { _ throws(CofferError) -> HMACKey in
            if let cached = key.withLock({ $0 }) { return cached }
            var bytes = try storage.get(AppRoleKeys.hmacKey) ?? []
            if bytes.count != 32 {
                bytes = Random.bytes(32)
                try storage.put(AppRoleKeys.hmacKey, bytes)
            }
            let made = HMACKey(SecureBytes(bytes))
            bytes.wipe()
            key.withLock { $0 = made }
            return made
        }
    }

    func hmac(_ text: String, _ storage: StorageView) throws(CofferError) -> String {
        Hex.encode(try hmacKey(storage).mac(text))
    }

    func stripe(_ hmac: String) -> Stripe {
        var value = 0
        for byte in hmac.utf8.prefix(2) { value = value &* 16 &+ Int(byte) }
        return stripes[value % stripes.count]
    }

    // MARK: Roles

    static func roleName(_ request: BackendRequest) throws(CofferError) -> String {
        let name = request.capture("name").lowercased()
        guard isValidName(name) else { throw unsupportedPathError }
        return name
    }

    /// Renewal follows the role as it is now (its token TTL, max TTL and period), as in OpenBao; a
    /// deleted role stops its tokens' renewal.
    package func renewLogin(_ renewal: LoginRenewal) throws(CofferError) -> TokenParameters? {
        guard let name = renewal.metadata["role_name"] else { return nil }
        guard let role = try loadRole(name, renewal.storage) else {
            throw CofferError.invalid("role \"\(name)\" does not exist during renewal")
        }
        return role.token
    }

    func loadRole(_ name: String, _ storage: StorageView) throws(CofferError) -> AppRole? {
        guard let json = try storage.getJSON(AppRoleKeys.role(name)) else { return nil }
        guard let role = AppRole(json: json) else {
            throw CofferError(.integrity, "the stored AppRole role \"\(name)\" is malformed")
        }
        return role
    }

    func roleExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        let name = request.capture("name").lowercased()
        return try request.storage.get(AppRoleKeys.role(name)) != nil
    }

    func listRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list("role/")
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.sorted().map { .string($0) })])
    }

    func readRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try loadRole(try Self.roleName(request), request.storage) else { return .notFound }
        return Response(data: role.read)
    }

    func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.roleName(request)
        let f = request.fields
        return try roleLock.withLock { _ throws(CofferError) -> Response in
            let existing = try loadRole(name, request.storage)
            var role = existing ?? AppRole(name: name, roleID: Random.uuid(), uid: Random.uuid())
            var operations: [StorageOperation] = []
            if let roleID = f.string("role_id") {
                guard !roleID.isEmpty else { throw CofferError.invalid("missing role_id") }
                operations += try changeRoleID(&role, to: roleID, request.storage)
            } else if existing == nil {
                operations += try changeRoleID(&role, to: role.roleID, request.storage)
            }
            if let v = f.bool("bind_secret_id") { role.bindSecretID = v }
            if let v = f.strings("secret_id_bound_cidrs") ?? f.strings("bound_cidr_list") {
                role.secretIDBoundCIDRs = try Self.parseCIDRs(v, bareAddresses: true)
            }
            if let v = f.int("secret_id_num_uses") {
                guard v >= 0 else { throw CofferError.invalid("secret_id_num_uses cannot be negative") }
                role.secretIDNumUses = v
            }
            if let v = f.seconds("secret_id_ttl") { role.secretIDTTL = v }
            if let v = f.bool("local_secret_ids") {
                guard existing == nil else {
                    throw CofferError.invalid("local_secret_ids can only be modified during role creation")
                }
                role.localSecretIDs = v
            }
            try Self.applyTokenFields(&role, f)
            try role.checkConstraints()
            operations.append(.put(key: AppRoleKeys.role(name), value: role.json.serialized()))
            try request.storage.batch(operations)
            return .noContent
        }
    }

    /// The `token_*` fields, with the deprecated `policies` and `period` taken when the new names
    /// are absent (Vault's tokenutil upgrade rule).
    static func applyTokenFields(_ role: inout AppRole, _ f: FieldData) throws(CofferError) {
        try role.token.update(from: f)
        if f.has("token_policies") {
            role.policiesByOldName = false
        } else if let old = f.strings("policies") {
            role.token.policies = TokenParameters.sanitize(old)
            role.policiesByOldName = true
        }
        if f.has("token_period") {
            role.periodByOldName = false
        } else if let old = f.seconds("period") {
            role.token.period = old
            role.periodByOldName = true
        }
    }

    /// Points `role_id` at the role (refusing one another role holds) and drops its old index entry.
    func changeRoleID(
        _ role: inout AppRole,
        to roleID: String,
        _ storage: StorageView
    ) throws(CofferError) -> [StorageOperation] {
        guard roleID.utf8.count <= 4096 else { throw CofferError.invalid("role_id must be at most 4096 bytes") }
        let newKey = AppRoleKeys.roleID(try hmac(roleID, storage))
        if let holder = try storage.getJSON(newKey)?["name"]?.stringValue, holder != role.name {
            throw CofferError(.internal, multierror("role_id already in use"))
        }
        var operations: [StorageOperation] = []
        let oldKey = AppRoleKeys.roleID(try hmac(role.roleID, storage))
        if oldKey != newKey { operations.append(.delete(key: oldKey)) }
        operations.append(.put(key: newKey, value: JSONValue.object(["name": .string(role.name)]).serialized()))
        role.roleID = roleID
        return operations
    }

    func deleteRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.roleName(request)
        try roleLock.withLock { _ throws(CofferError) in
            guard let role = try loadRole(name, request.storage) else { return }
            var operations: [StorageOperation] = [
                .delete(key: AppRoleKeys.role(name)),
                .delete(key: AppRoleKeys.roleID(try hmac(role.roleID, request.storage))),
            ]
            for hmac in try request.storage.list(AppRoleKeys.secretIDFolder(role.uid)) {
                let key = AppRoleKeys.secretID(role.uid, hmac)
                if let entry = try request.storage.getJSON(key).flatMap(SecretIDEntry.init(json:)) {
                    operations += Self.removal(role.uid, hmac, entry)
                } else {
                    operations.append(.delete(key: key))
                }
            }
            try request.storage.batch(operations)
        }
        return .noContent
    }

    func readRoleID(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try loadRole(try Self.roleName(request), request.storage) else { return .notFound }
        return Response(data: ["role_id": .string(role.roleID)])
    }

    func writeRoleID(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.roleName(request)
        return try roleLock.withLock { _ throws(CofferError) -> Response in
            guard var role = try loadRole(name, request.storage) else { throw unsupportedPathError }
            guard let roleID = request.fields.string("role_id"), !roleID.isEmpty else {
                throw CofferError.invalid("missing role_id")
            }
            var operations = try changeRoleID(&role, to: roleID, request.storage)
            operations.append(.put(key: AppRoleKeys.role(name), value: role.json.serialized()))
            try request.storage.batch(operations)
            return .noContent
        }
    }

    /// CIDR blocks of a role or secret ID, as OpenBao checks them: refused with its 500. Secret-ID
    /// lists need a prefix length; a role's may name bare addresses.
    static func parseCIDRs(
        _ texts: [String],
        bareAddresses: Bool,
        what: String = "CIDR blocks"
    ) throws(CofferError) -> [String] {
        var out: [String] = []
        for text in texts {
            let trimmed = text.trimmingCharacters()
            if trimmed.isEmpty { continue }
            guard CIDR(trimmed) != nil, bareAddresses || trimmed.contains("/") else {
                let shown = trimmed.utf8.count > 64 ? String(trimmed.utf8.prefix(64))! + "…" : trimmed
                throw CofferError(.internal, multierror("failed to validate \(what): invalid CIDR address: \(shown)"))
            }
            out.append(trimmed)
        }
        return out
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
