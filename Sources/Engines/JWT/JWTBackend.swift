package import CofferCore
package import CofferFramework
import Synchronization

/// The JWT/OIDC auth method (`jwt` and `oidc` types), as OpenBao 2.7.2 serves it.
///
/// - `config`: where verification keys come from (static PEM keys, JWKS URLs, or OIDC discovery),
///   fetched once at write so a wrong URL is refused at once.
/// - `role/<name>`: bound audiences, subject and claims; claim mappings; user and groups claims;
///   time leeways; the token's `token_*` settings.
/// - `login` {role, jwt}: a signed JWT for a token (machines: CI jobs, Kubernetes workloads).
/// - `oidc/auth_url` and `oidc/callback`: the OpenID Connect authorization-code flow with PKCE
///   (people, through a browser).
///
/// Differences from OpenBao, all on the safe side: the JWKS cache has a TTL and refetches on an
/// unknown key at most once per cooldown (``JWTKeyRing``); with `oidc_discovery_url` the discovery
/// document's `issuer` is required of every token even without `bound_issuer` (OpenBao accepts
/// any `iss` then); `alg: none` and HMAC algorithms are never accepted; tokens over 64 KiB are
/// refused before decoding.
///
/// Storage under the mount: `config`, `role/<name>`. OIDC states live in memory only (they last
/// ten minutes), as in OpenBao.
package final class JWTBackend: TableBackend {
    package init() {}

    /// The stored config, parsed, and its key ring: nil until a login loads them, dropped when `config`
    /// changes (the epoch refuses a fill that read the config before the change).
    private let loaded = Mutex<(epoch: UInt64, value: (config: JWTConfig, ring: JWTKeyRing)?)>((0, nil))
    /// Held by a config write from its storage write to its filling of `loaded`.
    private let configWrites = Mutex(())
    /// Parsed roles by name, a copy per CPU, dropped when `role/<name>` changes. Roles hold no secrets.
    private let roles = PerCPUCache<String, JWTRole>(limit: 1_000)
    /// Pending OIDC logins by state.
    let oidcStates = Mutex<[String: OIDCPending]>([:])

    package var specialPaths: SpecialPaths {
        SpecialPaths(unauthenticated: ["login", "oidc/auth_url", "oidc/callback", "oidc/poll"])
    }

    package static let paths = PathTable<JWTBackend>([
        Path("config", fields: JWTConfig.fields, read: JWTBackend.readConfig, write: JWTBackend.writeConfig),
        Path("role/", list: JWTBackend.listRoles),
        Path(
            "role/{name}",
            fields: JWTRole.fields,
            existence: JWTBackend.roleExists,
            read: JWTBackend.readRole,
            write: JWTBackend.writeRole,
            delete: JWTBackend.deleteRole
        ),
        Path("login", fields: [.string("role"), .string("jwt")], write: JWTBackend.login),
        Path(
            "oidc/auth_url",
            fields: [.string("role"), .string("redirect_uri"), .string("client_nonce")],
            write: JWTBackend.authURL
        ),
        Path(
            "oidc/callback",
            fields: [
                .string("state"), .string("code"), .string("id_token"), .string("client_nonce"), .string("error"),
                .string("error_description"),
            ],
            read: JWTBackend.callback,
            write: JWTBackend.callback
        ),
    ])

    package func invalidate(_ key: String) {
        if key == "config" {
            loaded.withLock { l in
                l.epoch &+= 1
                l.value = nil
            }
        } else if key.hasPrefix("role/") {
            roles.update(String(key.dropFirst("role/".count)), to: nil)
        }
    }

    // MARK: - config

    func readConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let config = try Self.loadConfig(request.storage) else { return .notFound }
        return Response(data: config.readable)
    }

    func writeConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let config = try JWTConfig(fields: request.fields)
        let ring = try config.keyRing()
        if !config.jwksURL.isEmpty || !config.jwksPairs.isEmpty {
            // Fetched now, as OpenBao does, so a wrong URL is refused at once; the keys seed the cache.
            guard let keys = try? ring.fetchAll() else { throw CofferError.invalid("error checking jwks URL") }
            ring.seed(keys, at: request.now.seconds)
        }
        // The write drops the parsed config (the change feed); the keys fetched here go in after it, under
        // a lock so that two writers leave the cache as they leave storage.
        try configWrites.withLock { _ throws(CofferError) in
            try request.storage.putJSON("config", .object(config.stored))
            loaded.withLock { $0.value = (config, ring) }
        }
        return .noContent
    }

    static func loadConfig(_ storage: StorageView) throws(CofferError) -> JWTConfig? {
        guard case .object(let json)? = try storage.getJSON("config") else { return nil }
        return JWTConfig(stored: json)
    }

    /// The stored config and its key ring, parsed and built once per change of the stored config
    /// (fetching the discovery document if it has one). nil when there is no config.
    func configAndRing(_ storage: StorageView) throws(CofferError) -> (JWTConfig, JWTKeyRing)? {
        let (epoch, cached) = loaded.withLock { ($0.epoch, $0.value) }
        if let cached { return cached }
        guard let config = try Self.loadConfig(storage) else { return nil }
        let built = (config: config, ring: try config.keyRing())
        loaded.withLock { l in if l.epoch == epoch { l.value = built } }
        return built
    }

    // MARK: - roles

    static func loadRole(_ storage: StorageView, _ name: String) throws(CofferError) -> JWTRole? {
        guard !name.isEmpty, case .object(let json)? = try storage.getJSON("role/" + name) else { return nil }
        return JWTRole(json: json)
    }

    /// The role `name` for a login: parsed once per change of the stored role.
    func cachedRole(_ storage: StorageView, _ name: String) throws(CofferError) -> JWTRole? {
        let (cached, ticket) = roles.lookup(name)
        if let cached { return cached }
        guard let role = try Self.loadRole(storage, name) else { return nil }
        roles.fill(name, role, ticket)
        return role
    }

    func roleExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("role/" + request.capture("name")) != nil
    }

    func listRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list("role/")
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func readRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try Self.loadRole(request.storage, request.capture("name")) else { return .notFound }
        return Response(data: role.json)
    }

    func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("name")
        var role = try Self.loadRole(request.storage, name) ?? JWTRole()
        try role.update(from: request.fields)
        try request.storage.putJSON("role/" + name, .object(role.json))
        return .noContent
    }

    func deleteRole(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("role/" + request.capture("name"))
        return .noContent
    }

    // MARK: - login

    /// `login` {role, jwt}. Checks in OpenBao's order, with its messages (§3.3 of the design).
    func login(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let (config, ring) = try configAndRing(request.storage) else {
            throw CofferError.invalid("could not load configuration")
        }
        let roleName = request.fields.string("role").flatMap { $0.isEmpty ? nil : $0 } ?? config.defaultRole
        guard !roleName.isEmpty else { throw CofferError.invalid("missing role") }
        guard let role = try cachedRole(request.storage, roleName) else {
            throw CofferError.invalid("role \"\(roleName)\" could not be found")
        }
        guard role.roleType != "oidc" else { throw CofferError.invalid("role with oidc role_type is not allowed") }
        guard let token = request.fields.string("jwt"), !token.isEmpty else {
            throw CofferError.invalid("missing token")
        }
        guard CIDR.allows(role.token.boundCIDRs, request.clientAddress) else {
            throw CofferError.permissionDeniedError
        }
        let claims: [String: JSONValue]
        do {
            claims = try Self.verify(
                token,
                ring: ring,
                algorithms: config.loginAlgorithms,
                issuer: config.boundIssuer.isEmpty ? (ring.discovery?.issuer ?? "") : config.boundIssuer,
                role: role,
                now: request.now.seconds
            )
        } catch {
            throw CofferError.invalid("error validating token: \(error.message)")
        }
        return try Self.grant(role: role, roleName: roleName, claims: claims)
    }

    /// Parses and verifies a token's signature and standard claims (cap's `Validate`); the claims.
    /// Messages without the "error validating token: " prefix.
    static func verify(
        _ token: String,
        ring: JWTKeyRing,
        algorithms: [String],
        issuer: String,
        role: JWTRole,
        now: Int64
    ) throws(JOSEError) -> [String: JSONValue] {
        let unexpectedAlgorithm = JOSEError(
            "invalid algorithm (alg) header parameter: token signed with unexpected algorithm"
        )
        let jws: CompactJWS
        do {
            jws = try CompactJWS(token)
        } catch {
            if error.message.hasPrefix("token is larger") { throw error }
            throw JOSEError("error verifying token signature: \(error.message)")
        }
        // As OpenBao: an OIDC provider's verifier checks the algorithm before the signature; a key
        // set (static keys, a JWKS URL) checks the signature first.
        if ring.discovery != nil, !algorithms.contains(jws.algorithmName) { throw unexpectedAlgorithm }
        do {
            try ring.verify(jws, now: now)
        } catch {
            throw JOSEError("error verifying token signature: \(error.message)")
        }
        guard algorithms.contains(jws.algorithmName) else { throw unexpectedAlgorithm }
        var expected = JWTClaims.Expected()
        expected.issuer = issuer
        expected.subject = role.boundSubject
        expected.audiences = role.boundAudiences ?? []
        expected.leeways = role.leeways
        try JWTClaims.validate(jws.claims, expected: expected, now: now)
        return jws.claims
    }

    /// The part of a login after the token is verified, shared by `login` and the OIDC callback:
    /// bound claims, the user claim, claim mappings, groups; then the answer.
    static func grant(
        role: JWTRole,
        roleName: String,
        claims: [String: JSONValue],
        requireAudienceBinding: Bool = true
    ) throws(CofferError) -> Response {
        if requireAudienceBinding && role.roleType == "jwt" && (role.boundAudiences ?? []).isEmpty
            && !((try? JWTClaims.audiences(claims)) ?? []).isEmpty
        {
            throw CofferError.invalid("audience claim found in JWT but no audiences bound to the role")
        }
        do {
            try JWTClaims.validateBound(role.boundClaims ?? [:], glob: role.boundClaimsType == "glob", claims: claims)
        } catch {
            throw CofferError.invalid("error validating claims: \(error.message)")
        }
        let userValue =
            role.userClaimJSONPointer
            ? JWTClaims.value(claims, role.userClaim) : claims[role.userClaim].flatMap { $0 == .null ? nil : $0 }
        guard let userValue else { throw CofferError.invalid("claim \"\(role.userClaim)\" not found in token") }
        guard let user = JWTClaims.text(userValue), !user.isEmpty else {
            throw CofferError.invalid("claim \"\(role.userClaim)\" could not be converted to string")
        }
        let metadata: [String: String]
        var groups: [String] = []
        do {
            metadata = try JWTClaims.mapped(role.claimMappings ?? [:], claims: claims)
            if !role.groupsClaim.isEmpty { groups = try JWTClaims.groups(role.groupsClaim, claims: claims) }
        } catch {
            throw CofferError.invalid(error.message)
        }
        var tokenMetadata = metadata
        tokenMetadata["role"] = roleName
        let info = role.token.authInfo(
            metadata: tokenMetadata,
            grant: LoginGrant(alias: user, aliasMetadata: tokenMetadata, groups: groups)
        )
        return Response(auth: info)
    }
}
