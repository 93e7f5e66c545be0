import CofferCore
package import CofferFramework
import Synchronization

/// Vault's LDAP auth method (`ldap`, as OpenBao 2.6.2 had it built in): users log in at
/// `login/<username>` with their directory password; `groups/<name>` and `users/<name>` map
/// directory groups and users to policies.
///
/// The directory is reached with Coffer's own LDAPv3 client (``LDAPConnection``): no libldap.
/// Storage under the mount: `config`, `user/<name>`, `group/<name>`.
///
/// Login, as Vault's: bind as `binddn` (or anonymously with `discoverdn`) and find the user's DN
/// with `userfilter` under `userdn` (or build it from `userattr`/`upndomain`), bind as the user with
/// the password, bind back as `binddn`, then find groups with `groupfilter` under `groupdn`
/// (the entries' `groupattr` values, or their CNs). Every value from the caller is escaped before
/// it reaches a filter (RFC 4515) or a DN (RFC 4514).
///
/// Failover (a Coffer difference): each URL of `url` is tried in turn, and a URL whose server does
/// not answer within `request_timeout` (or closes the connection) moves the login on to the next
/// one; OpenBao moves on only when the connection itself fails.
package final class LDAPBackend: TableBackend {
    let configLock = Mutex(())

    package init() {}

    package var specialPaths: SpecialPaths { SpecialPaths(unauthenticated: ["login/*"]) }

    package static let paths = PathTable<LDAPBackend>([
        Path("config", fields: LDAPConfig.fields, read: LDAPBackend.readConfig, write: LDAPBackend.writeConfig),
        Path("login/{username+}", fields: [.string("password")], write: LDAPBackend.login),
        Path("users/", list: LDAPBackend.listUsers, write: LDAPBackend.writeFolder),
        Path(
            "users/{name+}",
            fields: [.string("groups"), .strings("policies")],
            existence: LDAPBackend.userExists,
            read: LDAPBackend.readUser,
            write: LDAPBackend.writeUser,
            delete: LDAPBackend.deleteUser
        ),
        Path("groups/", list: LDAPBackend.listGroups, write: LDAPBackend.writeFolder),
        Path(
            "groups/{name+}",
            fields: [.strings("policies")],
            existence: LDAPBackend.groupExists,
            read: LDAPBackend.readGroup,
            write: LDAPBackend.writeGroup,
            delete: LDAPBackend.deleteGroup
        ),
    ])

    // MARK: Config

    func loadConfig(_ storage: StorageView) throws(CofferError) -> LDAPConfig? {
        guard let json = try storage.getJSON("config") else { return nil }
        guard let object = json.objectValue else {
            throw CofferError(.integrity, "the stored ldap config is malformed")
        }
        return LDAPConfig(stored: object)
    }

    func readConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: (try loadConfig(request.storage) ?? LDAPConfig()).readable)
    }

    func writeConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        try configLock.withLock { _ throws(CofferError) -> Response in
            var config = try loadConfig(request.storage) ?? LDAPConfig()
            let warnings = try config.update(from: request.fields)
            try request.storage.putJSON("config", .object(config.stored))
            return warnings.isEmpty ? .noContent : Response(warnings: warnings)
        }
    }

    // MARK: Users and groups

    /// The name from the path, lower-cased unless `case_sensitive_names`.
    func name(_ request: BackendRequest, _ capture: String = "name") throws(CofferError) -> String {
        let raw = request.capture(capture)
        let sensitive = try loadConfig(request.storage)?.caseSensitiveNames ?? false
        return sensitive ? raw : raw.lowercased()
    }

    static func caseSensitive(_ storage: StorageReader) throws(CofferError) -> Bool {
        try storage.getJSON("config")?["case_sensitive_names"]?.boolValue ?? false
    }

    func userExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        let sensitive = try Self.caseSensitive(request.storage)
        let raw = request.capture("name")
        return try request.storage.get("user/" + (sensitive ? raw : raw.lowercased())) != nil
    }

    func groupExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        let sensitive = try Self.caseSensitive(request.storage)
        let raw = request.capture("name")
        return try request.storage.get("group/" + (sensitive ? raw : raw.lowercased())) != nil
    }

    func list(_ prefix: String, _ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list(prefix)
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.sorted().map { .string($0) })])
    }

    /// OpenBao's answer to a write to `users/` or `groups/`.
    func writeFolder(_ request: BackendRequest) throws(CofferError) -> Response {
        throw CofferError.invalid("cannot write to a path ending in '/'")
    }

    func listUsers(_ request: BackendRequest) throws(CofferError) -> Response { try list("user/", request) }
    func listGroups(_ request: BackendRequest) throws(CofferError) -> Response { try list("group/", request) }

    struct Entry: Sendable {
        var groups: [String] = []
        var policies: [String] = []

        init(groups: [String] = [], policies: [String] = []) {
            self.groups = groups
            self.policies = policies
        }

        init(json: JSONValue) {
            groups = (json["groups"]?.arrayValue ?? []).compactMap(\.stringValue)
            policies = (json["policies"]?.arrayValue ?? []).compactMap(\.stringValue)
        }

        var json: JSONValue {
            .object(["groups": .array(groups.map { .string($0) }), "policies": .array(policies.map { .string($0) })])
        }
    }

    func load(_ key: String, _ storage: StorageView) throws(CofferError) -> Entry? {
        try storage.getJSON(key).map { Entry(json: $0) }
    }

    func readUser(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let user = try load("user/" + name(request), request.storage) else { return .notFound }
        return Response(data: [
            "groups": .string(user.groups.joined(separator: ",")),
            "policies": .array(user.policies.map { .string($0) }),
        ])
    }

    func writeUser(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = "user/" + (try name(request))
        let groups = (request.fields.string("groups") ?? "").split(separator: ",").map { String($0).trimmingSpaces() }
        let user = Entry(
            groups: Array(Set(groups.filter { !$0.isEmpty })).sorted(),
            policies: TokenParameters.sanitize(request.fields.strings("policies") ?? [])
        )
        try request.storage.putJSON(key, user.json)
        return .noContent
    }

    func deleteUser(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("user/" + name(request))
        return .noContent
    }

    func readGroup(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let group = try load("group/" + name(request), request.storage) else { return .notFound }
        return Response(data: ["policies": .array(group.policies.map { .string($0) })])
    }

    func writeGroup(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = "group/" + (try name(request))
        try request.storage.putJSON(
            key,
            Entry(policies: TokenParameters.sanitize(request.fields.strings("policies") ?? [])).json
        )
        return .noContent
    }

    func deleteGroup(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("group/" + name(request))
        return .noContent
    }

    // MARK: Login

    static let userBindFailed = "ldap operation failed: failed to bind as user"

    func login(_ request: BackendRequest) throws(CofferError) -> Response {
        let username = request.capture("username")
        let password = request.fields.string("password") ?? ""
        let config = try loadConfig(request.storage) ?? LDAPConfig()
        if config.denyNullBind && password.isEmpty {
            throw CofferError.invalid("password cannot be of zero length when passwordless binds are being denied")
        }
        let found = try LDAPLogin(config: config).authenticate(username: username, password: password)

        var allGroups: [String] = []
        let canonicalUsername = config.caseSensitiveNames ? username : username.lowercased()
        let user = try load("user/" + canonicalUsername, request.storage)
        if let user { allGroups += user.groups }
        allGroups += found.groups
        var policies: [String] = []
        var seen = Set<String>()
        for group in allGroups {
            let key = config.caseSensitiveNames ? group : group.lowercased()
            guard seen.insert(key).inserted else { continue }
            if let entry = try load("group/" + key, request.storage) { policies += entry.policies }
        }
        if let user { policies += user.policies }

        var warnings: [String] = []
        if found.groups.isEmpty {
            warnings.append(
                "no LDAP groups found in groupDN \"\(config.groupDN)\"; only policies from locally-defined groups available"
            )
        }
        let alias: String
        if config.usernameAsAlias {
            alias = username
        } else {
            guard let value = found.aliasValue else {
                throw CofferError.invalid("missing entity alias attribute value")
            }
            alias = value
        }
        var token = config.token
        token.policies = TokenParameters.sanitize(token.policies + policies)
        let address = AppRoleBackend.sourceAddress(request.clientAddress)
        if !token.boundCIDRs.isEmpty && !CIDR.allows(token.boundCIDRs, address) {
            throw CofferError.permissionDeniedError
        }
        var groupNames: [String] = []
        for group in allGroups where !group.isEmpty && !groupNames.contains(group) { groupNames.append(group) }
        var response = Response(
            data: [:],
            auth: token.authInfo(
                metadata: ["username": username],
                grant: LoginGrant(alias: alias, aliasMetadata: ["name": username], groups: groupNames)
            ),
            warnings: warnings
        )
        response.outcome = .ok
        return response
    }
}
