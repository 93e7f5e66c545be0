import CofferCore
import CofferFramework

/// A login begun at `oidc/auth_url` and not yet finished at `oidc/callback`.
struct OIDCPending: Sendable {
    var roleName: String
    var redirectURI: String
    var nonce: String
    /// PKCE (RFC 7636): sent to the token endpoint; its S256 hash went to the IdP in the auth URL.
    var codeVerifier: String
    var clientNonce: String
    var created: Int64
}

/// The OpenID Connect authorization-code flow, as OpenBao serves it (shapes and messages checked
/// against `bao server -dev` 2.7.2):
///
/// 1. `oidc/auth_url` {role, redirect_uri, client_nonce?} answers `auth_url`: the provider's
///    authorization endpoint with `client_id`, `code_challenge` (S256), `nonce` (`n_` + 20),
///    `redirect_uri`, `response_type=code`, `scope` (`openid` + the role's `oidc_scopes`) and
///    `state` (`st_` + 20). A redirect URI the role does not allow gets an empty `auth_url` (and,
///    unlike OpenBao, a warning saying why).
/// 2. The browser signs in at the provider, which redirects to `redirect_uri?code=…&state=…`.
/// 3. `oidc/callback` {state, code, client_nonce?} (GET, or POST as a Coffer extra): the state is
///    single use and lasts ``stateLifetime``; the code is exchanged at the provider's token endpoint
///    (client credentials by HTTP Basic, the PKCE verifier); the ID token's signature, `iss` (the
///    discovery issuer), `aud` (the client id), `exp` and `nonce` are checked, then the role's
///    bindings as for `login`.
extension JWTBackend {
    /// How long a state waits for its callback (OpenBao: 10 minutes).
    static let stateLifetime: Int64 = 600
    /// Pending logins held at most; beyond that the oldest are dropped.
    static let maximumPendingStates = 10_000

    func authURL(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let (config, ring) = try configAndRing(request.storage) else {
            throw CofferError.invalid("could not load configuration")
        }
        let roleName = request.fields.string("role").flatMap { $0.isEmpty ? nil : $0 } ?? config.defaultRole
        guard !roleName.isEmpty else { throw CofferError.invalid("missing role") }
        guard let role = try cachedRole(request.storage, roleName) else {
            throw CofferError.invalid("role \"\(roleName)\" could not be found")
        }
        guard let redirectURI = request.fields.string("redirect_uri"), !redirectURI.isEmpty else {
            throw CofferError.invalid("missing redirect_uri")
        }
        guard role.roleType == "oidc" else {
            throw CofferError.invalid("role \"\(roleName)\" is a jwt role; OIDC login needs role_type oidc")
        }
        guard let discovery = ring.discovery, !config.oidcClientID.isEmpty else {
            throw CofferError.invalid("OIDC login is not configured: set oidc_discovery_url and oidc_client_id")
        }
        guard (role.allowedRedirectURIs ?? []).contains(redirectURI) else {
            var response = Response(data: ["auth_url": ""])
            response.warnings.append("redirect_uri is not one of the role's allowed_redirect_uris")
            return response
        }
        let now = request.now.seconds
        let pending = OIDCPending(
            roleName: roleName,
            redirectURI: redirectURI,
            nonce: "n_" + Random.base62(20),
            codeVerifier: Random.base62(43),
            clientNonce: request.fields.string("client_nonce") ?? "",
            created: now
        )
        let state = "st_" + Random.base62(20)
        oidcStates.withLock { states in
            states = states.filter { now - $0.value.created < Self.stateLifetime && now >= $0.value.created }
            if states.count >= Self.maximumPendingStates,
                let oldest = states.min(by: { $0.value.created < $1.value.created })?.key
            {
                states[oldest] = nil
            }
            states[state] = pending
        }
        let challenge = JOSEBase64.encode(Digest.sha256(Array(pending.codeVerifier.utf8)))
        var query: [(String, String)] = [
            ("client_id", config.oidcClientID), ("code_challenge", challenge), ("code_challenge_method", "S256"),
            ("nonce", pending.nonce), ("redirect_uri", redirectURI), ("response_type", "code"),
            ("scope", (["openid"] + (role.oidcScopes ?? []).filter { $0 != "openid" }).joined(separator: " ")),
            ("state", state),
        ]
        if role.maxAge > 0 { query.append(("max_age", String(role.maxAge))) }
        if !config.oidcResponseMode.isEmpty { query.append(("response_mode", config.oidcResponseMode)) }
        query.sort { $0.0 < $1.0 }
        let separator = discovery.authorizationEndpoint.contains("?") ? "&" : "?"
        let url = discovery.authorizationEndpoint + separator + HTTPClient.formEncode(query).replacing("+", with: "%20")
        return Response(data: ["auth_url": .string(url)])
    }

    func callback(_ request: BackendRequest) throws(CofferError) -> Response {
        let failed = "OpenBao login failed. "
        let stateID = request.fields.string("state") ?? ""
        let now = request.now.seconds
        let pending = oidcStates.withLock { states in states.removeValue(forKey: stateID) }
        guard let pending, now - pending.created < Self.stateLifetime, now >= pending.created else {
            throw CofferError.invalid(failed + "Expired or missing OAuth state.")
        }
        if !pending.clientNonce.isEmpty && request.fields.string("client_nonce") != pending.clientNonce {
            throw CofferError.invalid("invalid client_nonce")
        }
        if let error = request.fields.string("error"), !error.isEmpty {
            let description = request.fields.string("error_description") ?? ""
            throw CofferError.invalid(
                failed + "Provider error: \(error)" + (description.isEmpty ? "." : ": \(description).")
            )
        }
        guard let (config, ring) = try configAndRing(request.storage) else {
            throw CofferError.invalid(failed + "Could not load configuration")
        }
        guard let role = try cachedRole(request.storage, pending.roleName) else {
            throw CofferError.invalid("role \"\(pending.roleName)\" could not be found")
        }
        guard let discovery = ring.discovery else {
            throw CofferError.invalid(failed + "OIDC is not configured on this mount.")
        }
        let code = request.fields.string("code") ?? ""
        var idToken = request.fields.string("id_token") ?? ""
        guard !code.isEmpty || !idToken.isEmpty else {
            throw CofferError.invalid(failed + "No code or id_token received.")
        }
        func exchangeError(_ detail: String) -> CofferError {
            let quoted = detail.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
            return CofferError.invalid(failed + "Error exchanging oidc code: \"\(quoted)\".")
        }
        if !code.isEmpty {
            do {
                idToken = try Self.exchange(
                    code: code,
                    pending: pending,
                    config: config,
                    tokenEndpoint: discovery.tokenEndpoint
                )
            } catch {
                throw exchangeError("Provider.Exchange: \(error.message)")
            }
        }
        let claims: [String: JSONValue]
        do {
            claims = try Self.verifyIDToken(
                idToken,
                ring: ring,
                config: config,
                issuer: discovery.issuer,
                nonce: pending.nonce,
                role: role,
                now: now
            )
        } catch {
            throw exchangeError(
                "Provider.Exchange: id_token failed verification: Provider.VerifyIDToken: \(error.message)"
            )
        }
        // The role's own bindings, as for `login` (bound_audiences, bound_subject, time leeways).
        var expected = JWTClaims.Expected()
        expected.subject = role.boundSubject
        expected.audiences = role.boundAudiences ?? []
        expected.leeways = role.leeways
        do {
            try JWTClaims.validate(claims, expected: expected, now: now)
        } catch {
            throw CofferError.invalid("error validating token: \(error.message)")
        }
        return try Self.grant(role: role, roleName: pending.roleName, claims: claims, requireAudienceBinding: false)
    }

    /// The token endpoint's answer to the authorization code: the ID token.
    static func exchange(
        code: String,
        pending: OIDCPending,
        config: JWTConfig,
        tokenEndpoint: String
    ) throws(JOSEError) -> String {
        let body = HTTPClient.formEncode([
            ("code", code), ("code_verifier", pending.codeVerifier), ("grant_type", "authorization_code"),
            ("redirect_uri", pending.redirectURI),
        ])
        // client_secret_basic (RFC 6749 §2.3.1: both parts form-encoded before base64).
        let credentials =
            HTTPClient.percentEncode(config.oidcClientID) + ":" + HTTPClient.percentEncode(config.oidcClientSecret)
        var options = HTTPClient.Options(caPEM: config.oidcDiscoveryCAPEM.isEmpty ? nil : config.oidcDiscoveryCAPEM)
        options.maximumBodyBytes = JWTKeyRing.maximumDocumentBytes
        options.deadline = 15
        let response: HTTPClient.Response
        do {
            response = try HTTPClient.send(
                "POST",
                tokenEndpoint,
                headers: [
                    ("Authorization", "Basic " + Base64.encode(Array(credentials.utf8))),
                    ("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json"),
                ],
                body: Array(body.utf8),
                options: options
            )
        } catch {
            throw JOSEError("unable to exchange auth code with provider: \(error.message)")
        }
        let json = (try? JSONValue.parse(response.body, maximumDepth: 16))?.objectValue ?? [:]
        guard response.status == 200 else {
            let reason = json["error"]?.stringValue.map { "\"\($0)\"" } ?? "status \(response.status)"
            throw JOSEError("unable to exchange auth code with provider: oauth2: \(reason)")
        }
        guard let idToken = json["id_token"]?.stringValue, !idToken.isEmpty else {
            throw JOSEError("id_token is missing from auth code exchange")
        }
        return idToken
    }

    /// OpenID Connect Core §3.1.3.7: signature, alg, iss, aud = the client id, exp, sub, nonce.
    /// Messages in go-oidc's words, as OpenBao wraps them.
    static func verifyIDToken(
        _ token: String,
        ring: JWTKeyRing,
        config: JWTConfig,
        issuer: String,
        nonce: String,
        role: JWTRole,
        now: Int64
    ) throws(JOSEError) -> [String: JSONValue] {
        let jws: CompactJWS
        do {
            jws = try CompactJWS(token)
        } catch {
            throw JOSEError("invalid id_token: oidc: malformed jwt: \(error.message)")
        }
        let algorithms = config.idTokenAlgorithms
        guard algorithms.contains(jws.algorithmName) else {
            throw JOSEError(
                "invalid id_token: oidc: malformed jwt: unexpected signature algorithm \"\(jws.algorithmName)\"; expected \(algorithms.map { "\"\($0)\"" }): unsupported signing algorithm"
            )
        }
        do {
            try ring.verify(jws, now: now)
        } catch {
            throw JOSEError("invalid id_token: failed to verify signature: \(error.message)")
        }
        let claims = jws.claims
        let tokenIssuer = claims["iss"]?.stringValue ?? ""
        guard tokenIssuer == issuer else {
            throw JOSEError(
                "invalid id_token: oidc: id token issued by a different provider, expected \"\(issuer)\" got \"\(tokenIssuer)\": invalid issuer"
            )
        }
        let audiences = (try? JWTClaims.audiences(claims)) ?? []
        guard audiences.contains(config.oidcClientID) else {
            throw JOSEError("invalid id_token audiences: verifyAudiences: invalid id_token audiences: invalid audience")
        }
        guard let expiry = try? JWTClaims.seconds(claims, "exp"), expiry != 0 else {
            throw JOSEError("invalid id_token: exp: missing required claim")
        }
        let skew = JWTClaims.Leeways.effective(role.leeways.clockSkew, default: JWTClaims.Leeways.defaultClockSkew)
        guard now &- skew <= expiry else {
            throw JOSEError("invalid id_token: oidc: token is expired: token is expired")
        }
        guard let subject = claims["sub"]?.stringValue, !subject.isEmpty else {
            throw JOSEError("invalid id_token: sub: missing required claim")
        }
        guard let tokenNonce = claims["nonce"]?.stringValue,
            ConstantTime.equals(Array(tokenNonce.utf8), Array(nonce.utf8))
        else {
            throw JOSEError("invalid id_token nonce: invalid nonce")
        }
        return claims
    }
}
