package import CofferCore
package import CofferFramework

/// A jwt/oidc mount's `config`: where keys come from (exactly one of static PEM keys, JWKS URLs, or
/// OIDC discovery), the issuer to require, the OIDC client. Stored as its JSON at `config`, the
/// client secret included (the barrier encrypts it); reads leave the secret out.
package struct JWTConfig: Sendable, Equatable {
    package var oidcDiscoveryURL = ""
    package var oidcDiscoveryCAPEM = ""
    package var oidcClientID = ""
    package var oidcClientSecret = ""
    package var oidcResponseMode = ""
    package var oidcResponseTypes: [String] = []
    package var jwksURL = ""
    package var jwksCAPEM = ""
    /// `jwks_pairs`: several JWKS URLs, each with its CA.
    package var jwksPairs: [(url: String, caPEM: String)] = []
    package var jwtValidationPubkeys: [String] = []
    package var jwtSupportedAlgs: [String] = []
    package var boundIssuer = ""
    package var defaultRole = ""
    package var namespaceInState = true
    package var overrideAllowedServerNames: [String] = []

    package init() {}

    package static func == (a: JWTConfig, b: JWTConfig) -> Bool {
        JSONValue.object(a.stored) == JSONValue.object(b.stored)
    }

    static let fields: [Field] = [
        .string("oidc_discovery_url"), .string("oidc_discovery_ca_pem"), .string("oidc_client_id"),
        .string("oidc_client_secret"), .string("oidc_response_mode"), .strings("oidc_response_types"),
        .string("jwks_url"), .string("jwks_ca_pem"), .any("jwks_pairs"), .strings("jwt_validation_pubkeys"),
        .strings("jwt_supported_algs"), .string("bound_issuer"), .string("default_role"),
        .object("provider_config"), .bool("namespace_in_state"), .strings("override_allowed_server_names"),
    ]

    /// The config a write describes (every field from the request: a write replaces the config, as
    /// OpenBao's does), checked with OpenBao's messages. Nothing is fetched here.
    package init(fields f: FieldData) throws(CofferError) {
        oidcDiscoveryURL = f.string("oidc_discovery_url") ?? ""
        oidcDiscoveryCAPEM = f.string("oidc_discovery_ca_pem") ?? ""
        oidcClientID = f.string("oidc_client_id") ?? ""
        oidcClientSecret = f.string("oidc_client_secret") ?? ""
        oidcResponseMode = f.string("oidc_response_mode") ?? ""
        oidcResponseTypes = f.strings("oidc_response_types") ?? []
        jwksURL = f.string("jwks_url") ?? ""
        jwksCAPEM = f.string("jwks_ca_pem") ?? ""
        jwtValidationPubkeys = (f.strings("jwt_validation_pubkeys") ?? []).filter { !$0.isEmpty }
        jwtSupportedAlgs = f.strings("jwt_supported_algs") ?? []
        boundIssuer = f.string("bound_issuer") ?? ""
        defaultRole = f.string("default_role") ?? ""
        namespaceInState = f.bool("namespace_in_state") ?? true
        overrideAllowedServerNames = f.strings("override_allowed_server_names") ?? []
        if let pairs = f.json("jwks_pairs") {
            guard case .array(let items) = pairs else { throw CofferError.invalid("jwks_pairs must be a list") }
            for item in items {
                guard case .object(let pair) = item, let url = pair["jwks_url"]?.stringValue, !url.isEmpty else {
                    throw CofferError.invalid("each of jwks_pairs must be an object with a jwks_url")
                }
                jwksPairs.append((url, pair["jwks_ca_pem"]?.stringValue ?? ""))
            }
        }
        let providerConfig = f.object("provider_config") ?? [:]
        let sources = [
            !oidcDiscoveryURL.isEmpty, !jwtValidationPubkeys.isEmpty, !jwksURL.isEmpty, !jwksPairs.isEmpty,
            !providerConfig.isEmpty,
        ]
        guard sources.filter({ $0 }).count == 1 else {
            throw CofferError.invalid(
                "exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs', 'oidc_discovery_url', or 'provider_config' must be set"
            )
        }
        guard providerConfig.isEmpty else {
            throw CofferError.invalid("'provider_config' is not supported; use 'oidc_discovery_url'")
        }
        if oidcClientID.isEmpty != oidcClientSecret.isEmpty {
            throw CofferError.invalid("both 'oidc_client_id' and 'oidc_client_secret' must be set for OIDC")
        }
        if !oidcClientID.isEmpty && oidcDiscoveryURL.isEmpty {
            throw CofferError.invalid("'oidc_discovery_url' must be set for OIDC")
        }
        for alg in jwtSupportedAlgs where JWSAlgorithm(rawValue: alg) == nil {
            throw CofferError.invalid("invalid jwt_supported_algs: unsupported signing algorithm \"\(alg)\"")
        }
        guard ["", "query", "form_post"].contains(oidcResponseMode) else {
            throw CofferError.invalid("invalid response_mode: \"\(oidcResponseMode)\"")
        }
        for type in oidcResponseTypes where type != "code" && type != "id_token" {
            throw CofferError.invalid("invalid response_types \"\(type)\". 'code' and 'id_token' are allowed")
        }
    }

    /// The stored form (with the client secret).
    var stored: [String: JSONValue] {
        var out = readable
        out["oidc_client_secret"] = .string(oidcClientSecret)
        return out
    }

    /// What `GET config` shows (§3.1 of the design: PEMs without their trailing newline, no secret).
    package var readable: [String: JSONValue] {
        func strings(_ list: [String]) -> JSONValue { .array(list.map { .string($0) }) }
        func trimmed(_ pem: String) -> String {
            var s = Substring(pem)
            while s.last == "\n" || s.last == "\r" { s = s.dropLast() }
            return String(s)
        }
        var out: [String: JSONValue] = [
            "bound_issuer": .string(boundIssuer), "default_role": .string(defaultRole),
            "jwks_ca_pem": .string(jwksCAPEM), "jwks_url": .string(jwksURL),
            "jwt_supported_algs": strings(jwtSupportedAlgs),
            "jwt_validation_pubkeys": strings(jwtValidationPubkeys.map(trimmed)),
            "namespace_in_state": .bool(namespaceInState), "oidc_client_id": .string(oidcClientID),
            "oidc_discovery_ca_pem": .string(oidcDiscoveryCAPEM), "oidc_discovery_url": .string(oidcDiscoveryURL),
            "oidc_response_mode": .string(oidcResponseMode), "oidc_response_types": strings(oidcResponseTypes),
            "override_allowed_server_names": strings(overrideAllowedServerNames), "provider_config": .object([:]),
            "status": .string("valid"),
        ]
        if !jwksPairs.isEmpty {
            out["jwks_pairs"] = .array(
                jwksPairs.map { .object(["jwks_url": .string($0.url), "jwks_ca_pem": .string($0.caPEM)]) }
            )
        }
        return out
    }

    /// Reads the stored form back.
    package init(stored json: [String: JSONValue]) {
        func strings(_ key: String) -> [String] { (json[key]?.arrayValue ?? []).compactMap(\.stringValue) }
        oidcDiscoveryURL = json["oidc_discovery_url"]?.stringValue ?? ""
        oidcDiscoveryCAPEM = json["oidc_discovery_ca_pem"]?.stringValue ?? ""
        oidcClientID = json["oidc_client_id"]?.stringValue ?? ""
        oidcClientSecret = json["oidc_client_secret"]?.stringValue ?? ""
        oidcResponseMode = json["oidc_response_mode"]?.stringValue ?? ""
        oidcResponseTypes = strings("oidc_response_types")
        jwksURL = json["jwks_url"]?.stringValue ?? ""
        jwksCAPEM = json["jwks_ca_pem"]?.stringValue ?? ""
        jwtValidationPubkeys = strings("jwt_validation_pubkeys")
        jwtSupportedAlgs = strings("jwt_supported_algs")
        boundIssuer = json["bound_issuer"]?.stringValue ?? ""
        defaultRole = json["default_role"]?.stringValue ?? ""
        namespaceInState = json["namespace_in_state"]?.boolValue ?? true
        overrideAllowedServerNames = strings("override_allowed_server_names")
        for case .object(let pair) in json["jwks_pairs"]?.arrayValue ?? [] {
            jwksPairs.append((pair["jwks_url"]?.stringValue ?? "", pair["jwks_ca_pem"]?.stringValue ?? ""))
        }
    }

    /// The key ring this config describes. Static keys are parsed; discovery is fetched when
    /// `fetchDiscovery` (config writes and the first login after a restart); JWK Sets are fetched
    /// later, by the ring. Errors in OpenBao's words.
    func keyRing() throws(CofferError) -> JWTKeyRing {
        if !jwtValidationPubkeys.isEmpty {
            var keys: [JOSEKey] = []
            for pem in jwtValidationPubkeys {
                do {
                    keys += try JOSEKey.fromPEM(pem)
                } catch {
                    throw CofferError.invalid("error parsing public key: \(error.message)")
                }
            }
            return JWTKeyRing(staticKeys: keys, sources: [], discovery: nil)
        }
        if !oidcDiscoveryURL.isEmpty {
            let discovery: OIDCDiscovery
            do {
                discovery = try OIDCDiscovery.fetch(oidcDiscoveryURL, caPEM: oidcDiscoveryCAPEM)
            } catch {
                throw CofferError.invalid("error checking oidc discovery URL: \(error.message)")
            }
            return JWTKeyRing(
                staticKeys: [],
                sources: [(discovery.jwksURI, oidcDiscoveryCAPEM)],
                discovery: discovery
            )
        }
        let sources = jwksURL.isEmpty ? jwksPairs : [(jwksURL, jwksCAPEM)]
        return JWTKeyRing(staticKeys: [], sources: sources, discovery: nil)
    }

    /// The algorithms a login accepts: the configured ones, or all Coffer verifies.
    var loginAlgorithms: [String] {
        jwtSupportedAlgs.isEmpty ? JWSAlgorithm.allCases.map(\.rawValue) : jwtSupportedAlgs
    }
    /// The algorithms an OIDC ID token may use: the configured ones, or RS256 (OpenID Connect's
    /// default, and OpenBao's).
    var idTokenAlgorithms: [String] { jwtSupportedAlgs.isEmpty ? ["RS256"] : jwtSupportedAlgs }
}
