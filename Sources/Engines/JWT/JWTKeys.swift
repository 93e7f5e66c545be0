import CofferCore
import Synchronization

/// An OIDC provider's discovery document (`/.well-known/openid-configuration`): the parts used.
package struct OIDCDiscovery: Sendable, Equatable {
    package var issuer: String
    package var authorizationEndpoint: String
    package var tokenEndpoint: String
    package var jwksURI: String

    /// Fetches and checks the document: its `issuer` must be the discovery URL itself (OpenID
    /// Connect Discovery §4.3, as go-oidc checks). Errors are OpenBao's shapes, without the
    /// "error checking oidc discovery URL: " prefix.
    package static func fetch(_ url: String, caPEM: String) throws(JOSEError) -> OIDCDiscovery {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        let document = try JWTKeyRing.get(base + "/.well-known/openid-configuration", caPEM: caPEM)
        guard case .object(let object)? = try? JSONValue.parse(document, maximumDepth: 16) else {
            throw JOSEError("oidc: failed to decode provider discovery object")
        }
        let discovery = OIDCDiscovery(
            issuer: object["issuer"]?.stringValue ?? "",
            authorizationEndpoint: object["authorization_endpoint"]?.stringValue ?? "",
            tokenEndpoint: object["token_endpoint"]?.stringValue ?? "",
            jwksURI: object["jwks_uri"]?.stringValue ?? ""
        )
        guard discovery.issuer == base else {
            throw JOSEError(
                "oidc: issuer did not match the issuer returned by provider, expected \"\(base)\" got \"\(discovery.issuer)\""
            )
        }
        guard !discovery.jwksURI.isEmpty else { throw JOSEError("oidc: the discovery document has no jwks_uri") }
        return discovery
    }
}

/// The keys one mount verifies tokens with, built from its config: static PEM keys, or JWK Sets
/// fetched from URLs (`jwks_url`, `jwks_pairs`, or the discovery document's `jwks_uri`).
///
/// Fetched keys are cached for ``cacheTTL`` (1 hour) of the vault's clock. A token that no cached
/// key verifies (a `kid` the set does not have: the IdP rotated its keys) triggers one refetch, at
/// most once per ``refetchCooldown`` (10 seconds) however many such tokens arrive: a flood of
/// made-up `kid`s costs the IdP one request per 10 seconds, not one per login (OpenBao refetches
/// on every one). A failed refetch keeps the keys already held. No lock is held while fetching:
/// concurrent logins use the keys at hand.
package final class JWTKeyRing: Sendable {
    package static let cacheTTL: Int64 = 3600
    package static let refetchCooldown: Int64 = 10
    /// The largest JWKS or discovery document accepted.
    package static let maximumDocumentBytes = 1 << 20

    package let staticKeys: [JOSEKey]
    package let sources: [(url: String, caPEM: String)]
    package let discovery: OIDCDiscovery?
    private let state = Mutex(State())

    private struct State {
        var keys: [JOSEKey] = []
        var fetchedAt: Int64? = nil
        var lastAttempt: Int64? = nil
        var fetches = 0
    }

    package init(staticKeys: [JOSEKey], sources: [(url: String, caPEM: String)], discovery: OIDCDiscovery?) {
        self.staticKeys = staticKeys
        self.sources = sources
        self.discovery = discovery
    }

    /// How many times the JWK Sets were fetched (for tests and metrics).
    package var fetchCount: Int { state.withLock { $0.fetches } }

    /// Seeds the cache with keys fetched at config time.
    package func seed(_ keys: [JOSEKey], at now: Int64) {
        state.withLock {
            $0.keys = keys
            $0.fetchedAt = now
            $0.lastAttempt = now
        }
    }

    /// GET `url` expecting 200; the body. Errors name the URL, never a token.
    static func get(_ url: String, caPEM: String) throws(JOSEError) -> [UInt8] {
        var options = HTTPClient.Options(caPEM: caPEM.isEmpty ? nil : caPEM)
        options.maximumBodyBytes = maximumDocumentBytes
        options.deadline = 15
        let response: HTTPClient.Response
        do {
            response = try HTTPClient.send("GET", url, headers: [("Accept", "application/json")], options: options)
        } catch {
            throw JOSEError(error.message)
        }
        guard response.status == 200 else {
            let snippet = String(decoding: response.body.prefix(200), as: UTF8.self)
            throw JOSEError("\(response.status) \(HTTPClient.reason(response.status)): \(snippet)")
        }
        return response.body
    }

    /// Fetches every source's keys (all must answer).
    package func fetchAll() throws(JOSEError) -> [JOSEKey] {
        var keys: [JOSEKey] = []
        for source in sources {
            keys += try JOSEKey.fromJWKS(try JWTKeyRing.get(source.url, caPEM: source.caPEM))
        }
        return keys
    }

    /// Whether one of the mount's keys verifies `jws`, fetching as described above. Throws
    /// OpenBao's message when none does.
    package func verify(_ jws: CompactJWS, now: Int64) throws(JOSEError) {
        if sources.isEmpty {
            guard jws.verified(by: staticKeys) else {
                throw JOSEError("no known key successfully validated the token signature")
            }
            return
        }
        enum Plan {
            case use([JOSEKey])
            case fetch([JOSEKey])
        }
        let plan: Plan = state.withLock { s in
            let stale = s.fetchedAt.map { now - $0 >= JWTKeyRing.cacheTTL || now < $0 } ?? true
            let mayFetch = s.lastAttempt.map { now - $0 >= JWTKeyRing.refetchCooldown || now < $0 } ?? true
            if stale && mayFetch {
                s.lastAttempt = now
                return .fetch(s.keys)
            }
            return .use(s.keys)
        }
        var keys: [JOSEKey]
        switch plan {
        case .use(let held): keys = held
        case .fetch(let held): keys = refresh(now: now) ?? held
        }
        if jws.verified(by: keys) { return }
        // Not verified: perhaps the IdP rotated its keys. Refetch, once per cooldown.
        let mayRefetch: Bool = state.withLock { s in
            guard s.lastAttempt.map({ now - $0 >= JWTKeyRing.refetchCooldown || now < $0 }) ?? true else {
                return false
            }
            s.lastAttempt = now
            return true
        }
        if mayRefetch, let fresh = refresh(now: now), jws.verified(by: fresh) { return }
        throw JOSEError("failed to verify id token signature")
    }

    private func refresh(now: Int64) -> [JOSEKey]? {
        state.withLock { $0.fetches += 1 }
        guard let keys = try? fetchAll() else { return nil }
        state.withLock {
            $0.keys = keys
            $0.fetchedAt = now
        }
        return keys
    }
}

extension HTTPClient {
    /// The reason phrase Go prints after a status ("404 Not Found").
    package static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 201: "Created"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: "Status"
        }
    }
}
