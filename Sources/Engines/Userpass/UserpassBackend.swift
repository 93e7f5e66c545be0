package import CofferCore
package import CofferFramework
import Synchronization

/// OpenBao's userpass auth method: users with a password, logging in at `login/<username>`.
///
/// Storage under the mount: `user/<name>` (the `token_*` settings and the scrypt hash, never the
/// password) and `lockout/<name>` (a user locked out by failed logins, so a restart does not
/// unlock them). Usernames are lower-cased.
///
/// Logins of unknown users and wrong passwords cost the same: the unknown user's password is
/// checked against a dummy hash made with the same parameters, and both answer
/// "invalid username or password". User lockout follows OpenBao (`sys/auth/<path>/tune`
/// `user_lockout_config`; see ``LockoutConfig``): a locked user gets 403 "permission denied" without
/// the KDF running. Unknown users are not counted, as in OpenBao.
package final class UserpassBackend: TableBackend {
    /// Failed logins of existing users since their last success, kept in memory; a lock is also
    /// written to storage.
    struct Failures: Sendable {
        var count: Int
        var last: Timestamp
    }

    let failures = Mutex<[String: Failures]>([:])
    /// Checked against when the user does not exist, so that costs what a wrong password costs.
    let dummyHash: PasswordHash
    let userLock = Mutex(())

    package init() {
        dummyHash =
            (try? PasswordHash.make(password: Hex.encode(Random.bytes(16))))
            ?? PasswordHash(
                logN: PasswordHash.defaultLogN,
                r: PasswordHash.defaultR,
                p: PasswordHash.defaultP,
                salt: Random.bytes(16),
                hash: Random.bytes(32)
            )
    }

    package var specialPaths: SpecialPaths { SpecialPaths(unauthenticated: ["login/*"]) }

    static let passwordFields: [Field] = [.string("password"), .string("password_hash")]

    package static let paths = PathTable<UserpassBackend>([
        Path("login/{username}", fields: [.string("password")], write: UserpassBackend.login),
        Path("users/", list: UserpassBackend.listUsers),
        Path("users/{username}/password", fields: passwordFields, write: UserpassBackend.setPassword),
        Path(
            "users/{username}/policies",
            fields: [.strings("token_policies"), .strings("policies")],
            write: UserpassBackend.setPolicies
        ),
        Path(
            "users/{username}",
            fields: TokenParameters.fields + passwordFields + [.strings("policies")],
            existence: UserpassBackend.userExists,
            read: UserpassBackend.readUser,
            write: UserpassBackend.writeUser,
            delete: UserpassBackend.deleteUser
        ),
    ])

    // MARK: Users

    struct User: Sendable {
        var passwordHash: String
        var token = TokenParameters()
        var policiesByOldName = false

        var json: JSONValue {
            var object = token.json
            object["password_hash"] = .string(passwordHash)
            object["policies_by_old_name"] = .bool(policiesByOldName)
            return .object(object)
        }

        init(passwordHash: String) { self.passwordHash = passwordHash }

        init?(json: JSONValue) {
            guard let object = json.objectValue, let hash = object["password_hash"]?.stringValue else { return nil }
            passwordHash = hash
            token = TokenParameters(json: object)
            policiesByOldName = object["policies_by_old_name"]?.boolValue ?? false
        }

        var read: [String: JSONValue] {
            var data = token.json
            if policiesByOldName { data["policies"] = data["token_policies"] }
            return data
        }
    }

    static func username(_ request: BackendRequest) throws(CofferError) -> String {
        let name = request.capture("username").lowercased()
        guard isValidName(name, allowAt: true) else { throw unsupportedPathError }
        return name
    }

    /// Renewal needs the user still there with the same policies (`default` aside), as in OpenBao,
    /// and follows the user's current token TTLs. (OpenBao answers a deleted user's renewal with an
    /// empty 204 and does not renew; Coffer says why.)
    package func renewLogin(_ renewal: LoginRenewal) throws(CofferError) -> TokenParameters? {
        guard let name = renewal.metadata["username"] else { return nil }
        guard let user = try loadUser(name, renewal.storage) else {
            throw CofferError.invalid("user \"\(name)\" no longer exists")
        }
        let withoutDefault = { (policies: [String]) in Set(policies).subtracting(["default"]) }
        guard withoutDefault(user.token.policies) == withoutDefault(renewal.policies) else {
            throw CofferError.invalid("policies have changed, not renewing")
        }
        return user.token
    }

    func loadUser(_ name: String, _ storage: StorageView) throws(CofferError) -> User? {
        guard let json = try storage.getJSON("user/" + name) else { return nil }
        guard let user = User(json: json) else {
            throw CofferError(.integrity, "the stored userpass user \"\(name)\" is malformed")
        }
        return user
    }

    func userExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("user/" + request.capture("username").lowercased()) != nil
    }

    func listUsers(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list("user/")
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.sorted().map { .string($0) })])
    }

    func readUser(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let user = try loadUser(try Self.username(request), request.storage) else { return .notFound }
        return Response(data: user.read)
    }

    /// The hash to store for `password` or `password_hash`; nil when neither is given and
    /// `required` is false.
    static func newHash(_ f: FieldData, required: Bool) throws(CofferError) -> String? {
        let password = f.string("password") ?? ""
        let given = f.string("password_hash") ?? ""
        if !password.isEmpty && !given.isEmpty {
            throw CofferError.invalid("only one of password or password_hash may be provided")
        }
        if password.isEmpty && given.isEmpty {
            guard required else { return nil }
            throw CofferError.invalid("must provide either password or password_hash")
        }
        if !password.isEmpty {
            guard password.utf8.count <= 4096 else { throw CofferError.invalid("password must be at most 4096 bytes") }
            return try PasswordHash.make(password: password).encoded
        }
        if given.hasPrefix("$2a$") || given.hasPrefix("$2b$") || given.hasPrefix("$2y$") {
            throw CofferError.invalid(
                "password_hash is a bcrypt hash, which Coffer does not accept: give the password, or a scrypt hash in the form $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt base64>$<hash base64>"
            )
        }
        guard let hash = PasswordHash(encoded: given) else {
            throw CofferError.invalid(
                "password_hash is not a valid scrypt hash: use the form $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt base64>$<hash base64> (log2 N 1 to 24, r 1 to 32, p 1 to 16, at most 256 MiB)"
            )
        }
        return hash.encoded
    }

    func writeUser(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.username(request)
        let f = request.fields
        return try userLock.withLock { _ throws(CofferError) -> Response in
            let existing = try loadUser(name, request.storage)
            let hash = try Self.newHash(f, required: existing == nil)
            var user = existing ?? User(passwordHash: hash ?? "")
            if let hash { user.passwordHash = hash }
            try user.token.update(from: f)
            if f.has("token_policies") {
                user.policiesByOldName = false
            } else if let old = f.strings("policies") {
                user.token.policies = TokenParameters.sanitize(old)
                user.policiesByOldName = true
            }
            try request.storage.putJSON("user/" + name, user.json)
            return .noContent
        }
    }

    func deleteUser(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.username(request)
        try userLock.withLock { _ throws(CofferError) in
            try request.storage.batch([.delete(key: "user/" + name), .delete(key: "lockout/" + name)])
        }
        _ = failures.withLock { $0.removeValue(forKey: name) }
        return .noContent
    }

    /// Changes one user, holding the user lock; OpenBao's 500 for a user that does not exist.
    func updateUser(
        _ request: BackendRequest,
        _ change: (inout User) throws(CofferError) -> Void
    ) throws(CofferError)
        -> Response
    {
        let name = try Self.username(request)
        return try userLock.withLock { _ throws(CofferError) -> Response in
            guard var user = try loadUser(name, request.storage) else {
                throw CofferError(.internal, multierror("username does not exist"))
            }
            try change(&user)
            try request.storage.putJSON("user/" + name, user.json)
            return .noContent
        }
    }

    func setPassword(_ request: BackendRequest) throws(CofferError) -> Response {
        try updateUser(request) { (user) throws(CofferError) in
            user.passwordHash = try Self.newHash(request.fields, required: true) ?? user.passwordHash
        }
    }

    func setPolicies(_ request: BackendRequest) throws(CofferError) -> Response {
        try updateUser(request) { user in
            if let v = request.fields.strings("token_policies") {
                user.token.policies = TokenParameters.sanitize(v)
                user.policiesByOldName = false
            } else if let v = request.fields.strings("policies") {
                user.token.policies = TokenParameters.sanitize(v)
                user.policiesByOldName = true
            }
        }
    }

    // MARK: Login

    static let invalidCredentials = CofferError.invalid("invalid username or password")

    func login(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.username(request)
        let config = LockoutConfig(request.mount.extraConfig["user_lockout_config"])
        let now = request.now
        // Refused before the KDF runs. The stored lock is read for every login, existing user or
        // not, so this step costs the same for both.
        if try isLocked(name, config, now, request.storage) { throw CofferError.permissionDeniedError }
        guard let password = request.fields.string("password"), !password.isEmpty else {
            throw CofferError(.internal, "missing password")
        }
        let user = try loadUser(name, request.storage)
        let hash = user.flatMap { PasswordHash(encoded: $0.passwordHash) } ?? dummyHash
        let matches = hash.verify(password)
        guard let user, matches else {
            if user != nil { try recordFailure(name, config, now, request.storage) }
            throw Self.invalidCredentials
        }
        try clearFailures(name, request.storage)
        let address = AppRoleBackend.sourceAddress(request.clientAddress)
        if !user.token.boundCIDRs.isEmpty && !CIDR.allows(user.token.boundCIDRs, address) {
            throw CofferError.permissionDeniedError
        }
        return Response(
            auth: user.token.authInfo(
                metadata: ["username": name],
                grant: LoginGrant(alias: name)
            )
        )
    }
}
