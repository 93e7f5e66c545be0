import Foundation
import Testing

/// The jwt/oidc auth method through the wire form, with real keys (`openssl`), real signed JWTs and
/// a real HTTPS server for JWKS, discovery and the OIDC token endpoint (AuthFixtures.swift). Error
/// texts are OpenBao 2.7.2's (design AUTH-HA-OPS.md §3.3). The harness clock is the vault's: token
/// times are set relative to it, and the JWKS cache and cooldown follow it.
extension Harness {
    var now: Int64 { clock.now().seconds }

    func mountJWT(_ path: String = "jwt", config: [String: JSONValue]) throws {
        #expect(wire("POST", "sys/auth/\(path)", ["type": "jwt"]).status == 204)
        let written = wire("POST", "auth/\(path)/config", .object(config))
        guard written.status == 204 else {
            throw TestFailure("config answered \(written.status): \(String(describing: written.json))")
        }
    }

    func login(_ jwt: String, role: String? = "web", path: String = "jwt") -> (status: Int, json: JSONValue?) {
        var body: [String: JSONValue] = ["jwt": .string(jwt)]
        if let role { body["role"] = .string(role) }
        return wire("POST", "auth/\(path)/login", .object(body), token: nil)
    }
}

@Suite struct JWTTests {
    static let webRole: JSONValue = [
        "role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub",
        "bound_claims": ["team": "payments", "groups": ["eng"]], "claim_mappings": ["email": "email", "team": "team"],
        "groups_claim": "groups", "token_policies": ["app1"], "token_ttl": "15m",
    ]

    func claims(_ h: Harness, _ extra: [String: JSONValue] = [:]) -> [String: JSONValue] {
        var c: [String: JSONValue] = [
            "iss": "https://issuer.example", "aud": ["coffer"], "sub": "system:serviceaccount:prod:web",
            "iat": .int(h.now), "exp": .int(h.now + 300), "team": "payments", "groups": ["eng", "ops"],
            "email": "web@example.com",
        ]
        for (k, v) in extra { c[k] = v }
        return c
    }

    @Test func everyAlgorithmLogsInWithStaticKeys() throws {
        let h = try Harness()
        let rsa = try TestKey(.rsa)
        let keys: [(TestKey, [String])] = [
            (rsa, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]), (try TestKey(.p256), ["ES256"]),
            (try TestKey(.p384), ["ES384"]), (try TestKey(.p521), ["ES512"]), (try TestKey(.ed25519), ["EdDSA"]),
        ]
        try h.mountJWT(config: [
            "jwt_validation_pubkeys": .array(keys.map { .string($0.0.publicPEM) }),
            "bound_issuer": "https://issuer.example",
        ])
        #expect(h.wire("POST", "auth/jwt/role/web", Self.webRole).status == 204)
        for (key, algs) in keys {
            for alg in algs {
                let result = h.login(try key.sign(alg, claims(h), withKID: false))
                #expect(result.status == 200, "\(alg): \(String(describing: result.json))")
                let auth = result.json?["auth"]
                #expect(auth?["policies"] == ["app1", "default"])
                #expect(auth?["lease_duration"] == 900)
                #expect(auth?["metadata"] == ["email": "web@example.com", "role": "web", "team": "payments"])
            }
        }
        // The config reads back in OpenBao's shape, PEMs without their trailing newline.
        let config = try #require(h.wire("GET", "auth/jwt/config").json?["data"]?.objectValue)
        #expect(
            Set(config.keys) == [
                "bound_issuer", "default_role", "jwks_ca_pem", "jwks_url", "jwt_supported_algs",
                "jwt_validation_pubkeys", "namespace_in_state", "oidc_client_id", "oidc_discovery_ca_pem",
                "oidc_discovery_url", "oidc_response_mode", "oidc_response_types", "override_allowed_server_names",
                "provider_config", "status",
            ]
        )
        #expect(config["jwt_validation_pubkeys"]?.arrayValue?.first?.stringValue?.hasSuffix("-----") == true)
        let role = try #require(h.wire("GET", "auth/jwt/role/web").json?["data"]?.objectValue)
        #expect(role["token_ttl"] == 900 && role["bound_claims_type"] == "string" && role["callback_mode"] == "client")
        #expect(role["allowed_redirect_uris"] == .null && role["clock_skew_leeway"] == 0)
        #expect(h.wire("LIST", "auth/jwt/role").json?["data"]?["keys"] == ["web"])
    }

    @Test func loginErrorsAreOpenBaos() throws {
        let h = try Harness()
        let key = try TestKey(.p256)
        let other = try TestKey(.p256)
        let rsa = try TestKey(.rsa)
        try h.mountJWT(config: [
            "jwt_validation_pubkeys": [.string(key.publicPEM), .string(rsa.publicPEM)],
            "bound_issuer": "https://issuer.example",
        ])
        #expect(h.wire("POST", "auth/jwt/role/web", Self.webRole).status == 204)
        func error(_ jwt: String, role: String? = "web") -> String {
            let r = h.login(jwt, role: role)
            #expect(r.status == 400, "\(String(describing: r.json))")
            return errors(r.json).first ?? ""
        }
        let v = "error validating token: "
        func signed(_ extra: [String: JSONValue], removing: [String] = []) throws -> String {
            var c = claims(h, extra)
            for k in removing { c[k] = nil }
            return try key.sign("ES256", c)
        }
        // Time claims, with the measured 60 s default tolerance.
        #expect(h.login(try signed(["exp": .int(h.now - 58)])).status == 200)
        #expect(
            error(try signed(["exp": .int(h.now - 63)])) == v + "invalid expiration time (exp) claim: token is expired"
        )
        #expect(h.login(try signed(["nbf": .int(h.now + 55)])).status == 200)
        #expect(
            error(try signed(["nbf": .int(h.now + 65)])) == v + "invalid not before (nbf) claim: token not yet valid"
        )
        #expect(h.login(try signed(["iat": .int(h.now + 50)])).status == 200)
        #expect(
            error(try signed(["iat": .int(h.now + 100)])) == v
                + "invalid issued at (iat) claim: token issued in the future"
        )
        #expect(
            error(try signed([:], removing: ["iat", "exp"]))
                == v + "no issued at (iat), not before (nbf), or expiration time (exp) claims in token"
        )
        #expect(h.login(try signed([:], removing: ["exp"])).status == 200, "no exp is accepted with iat")
        let audience = v + "invalid audience (aud) claim: audience claim does not match any expected audience"
        #expect(error(try signed(["aud": ["other"]])) == audience)
        #expect(error(try signed([:], removing: ["aud"])) == audience)
        #expect(h.login(try signed(["aud": "coffer"])).status == 200, "a string aud")
        let noKey = v + "error verifying token signature: no known key successfully validated the token signature"
        #expect(error(try other.sign("ES256", claims(h))) == noKey)
        #expect(error(try key.sign("HS256", claims(h))) == noKey, "HMAC with the public key as secret")
        #expect(error(try rsa.sign("HS256", claims(h))) == noKey)
        let unsigned = try key.sign("ES256", claims(h)).split(separator: ".").prefix(2).joined(separator: ".") + "."
        let none =
            JOSEBase64.encode(Array(#"{"alg":"none"}"#.utf8)) + "." + unsigned.split(separator: ".")[1] + "."
        #expect(error(none) == noKey, "alg none")
        // An RSA signature presented as ES256: the key type must fit the algorithm.
        let rsaSigned = try rsa.sign("RS256", claims(h)).split(separator: ".")
        let esHeader = JOSEBase64.encode(Array(#"{"alg":"ES256","typ":"JWT"}"#.utf8))
        #expect(error("\(esHeader).\(rsaSigned[1]).\(rsaSigned[2])") == noKey)
        #expect(h.login(try rsa.sign("RS256", claims(h))).status == 200)
        #expect(error("not.a.jwt") == v + "error verifying token signature: illegal base64 data at input byte 0")
        #expect(error(try signed(["iss": "https://evil.example"])) == v + "invalid issuer (iss) claim")
        #expect(error(try signed(["exp": "soon"])).hasPrefix(v))
        #expect(h.login(try signed(["exp": .number("1e300")])).status == 200, "saturated, not overflowed")
        #expect(error(try signed(["iat": .number("-1e300"), "exp": .null, "nbf": .number("1e308")])).hasPrefix(v))
        #expect(error(try signed(["sub": 5])).hasPrefix(v + "json: cannot unmarshal number"))
        #expect(error(try signed([:], removing: ["sub"])) == "claim \"sub\" not found in token")
        #expect(error(try signed([:], removing: ["team"])) == "error validating claims: claim \"team\" is missing")
        let mismatch = "error validating claims: claim \"team\" does not match any associated bound claim values"
        #expect(error(try signed(["team": "other"])) == mismatch)
        #expect(error(try signed(["team": ["a", "b"]])) == mismatch)
        // An array claim matches when any element does (then the claim mapping refuses an array).
        #expect(error(try signed(["team": ["a", "payments"]])) == "error converting claim 'team' to string")
        #expect(
            error(try signed(["groups": ["ops"]]))
                == "error validating claims: claim \"groups\" does not match any associated bound claim values"
        )
        #expect(error(try signed(["email": 5])) == "error converting claim 'email' to string")
        #expect(error(try signed([:]), role: "nope") == "role \"nope\" could not be found")
        #expect(error(try signed([:]), role: nil) == "missing role")
        #expect(error("", role: "web") == "missing token")
        // 1 MB is refused cleanly, before any decoding.
        let huge = String(repeating: "A", count: 1 << 20)
        #expect(error("\(huge).\(huge).\(huge)") == v + "token is larger than 65536 bytes")
        #expect(error("eyJ" + String(repeating: "%", count: 5000)).hasPrefix(v))

        // Subject, JSON pointers, globs, leeways -1.
        #expect(
            h.wire(
                "POST",
                "auth/jwt/role/k8s",
                [
                    "role_type": "jwt", "user_claim": "sub", "bound_subject": "system:serviceaccount:prod:web",
                    "bound_claims": ["/kubernetes.io/namespace": "prod", "sub": "system:serviceaccount:prod:*"],
                    "bound_claims_type": "glob", "claim_mappings": ["/kubernetes.io/namespace": "k8s_ns"],
                    "clock_skew_leeway": -1, "expiration_leeway": -1, "not_before_leeway": -1,
                ]
            ).status == 204
        )
        let pod = try signed(["kubernetes.io": ["namespace": "prod"]], removing: ["aud"])
        let ok = h.login(pod, role: "k8s")
        #expect(ok.status == 200, "\(String(describing: ok.json))")
        #expect(ok.json?["auth"]?["metadata"] == ["k8s_ns": "prod", "role": "k8s"])
        #expect(
            error(try signed(["kubernetes.io": ["namespace": "dev"]], removing: ["aud"]), role: "k8s")
                == "error validating claims: claim \"/kubernetes.io/namespace\" does not match any associated bound claim values"
        )
        #expect(
            error(try signed(["sub": "system:serviceaccount:prod:db"], removing: ["aud"]), role: "k8s")
                == v + "invalid subject (sub) claim"
        )
        #expect(
            error(try signed(["exp": .int(h.now - 5)], removing: ["aud"]), role: "k8s")
                == v + "invalid expiration time (exp) claim: token is expired"
        )
        #expect(
            error(try signed(["iat": .int(h.now - 2)], removing: ["aud", "exp"]), role: "k8s")
                == v + "invalid expiration time (exp) claim: token is expired",
            "with leeways -1 a token without exp is expired"
        )
        #expect(
            error(try signed(["kubernetes.io": ["namespace": "prod"], "aud": "x"]), role: "k8s")
                == "audience claim found in JWT but no audiences bound to the role"
        )
    }

    /// Logins use the config and role as parsed once (JWTBackend's caches); every change to them through
    /// the API applies to the very next login.
    @Test func roleAndConfigChangesApplyToTheNextLogin() throws {
        let h = try Harness()
        let first = try TestKey(.p256)
        let second = try TestKey(.p256)
        try h.mountJWT(config: ["jwt_validation_pubkeys": [.string(first.publicPEM)]])
        #expect(h.wire("POST", "auth/jwt/role/web", Self.webRole).status == 204)
        #expect(h.login(try first.sign("ES256", claims(h))).status == 200)

        var role = try #require(Self.webRole.objectValue)
        role["token_policies"] = ["app2"]
        #expect(h.wire("POST", "auth/jwt/role/web", .object(role)).status == 204)
        #expect(h.login(try first.sign("ES256", claims(h))).json?["auth"]?["policies"] == ["app2", "default"])

        role["bound_claims"] = ["team": "billing"]
        #expect(h.wire("POST", "auth/jwt/role/web", .object(role)).status == 204)
        let unbound = h.login(try first.sign("ES256", claims(h)))
        #expect(
            unbound.status == 400
                && errors(unbound.json) == [
                    "error validating claims: claim \"team\" does not match any associated bound claim values"
                ]
        )

        #expect(h.wire("DELETE", "auth/jwt/role/web").status == 204)
        let gone = h.login(try first.sign("ES256", claims(h)))
        #expect(gone.status == 400 && errors(gone.json) == [#"role "web" could not be found"#])

        #expect(h.wire("POST", "auth/jwt/role/web", Self.webRole).status == 204)
        #expect(h.login(try first.sign("ES256", claims(h))).status == 200)
        #expect(
            h.wire("POST", "auth/jwt/config", ["jwt_validation_pubkeys": [.string(second.publicPEM)]]).status == 204
        )
        #expect(h.login(try first.sign("ES256", claims(h))).status == 400, "the replaced key no longer verifies")
        #expect(h.login(try second.sign("ES256", claims(h))).status == 200)
    }

    @Test func roleAndConfigErrors() throws {
        #expect(JWTBackend.paths.validate() == [])
        let h = try Harness()
        let key = try TestKey(.p256)
        #expect(h.wire("POST", "sys/auth/jwt", ["type": "jwt"]).status == 204)
        func error(_ path: String, _ body: JSONValue) -> String {
            let r = h.wire("POST", path, body)
            #expect(r.status == 400)
            return errors(r.json).first ?? ""
        }
        #expect(
            error("auth/jwt/config", [:])
                == "exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs', 'oidc_discovery_url', or 'provider_config' must be set"
        )
        #expect(
            error("auth/jwt/config", ["jwt_validation_pubkeys": ["junk"]])
                == "error parsing public key: data does not contain any valid public keys"
        )
        let port = try freeLoopbackPort()
        #expect(
            error("auth/jwt/config", ["jwks_url": .string("http://127.0.0.1:\(port)/jwks")])
                == "error checking jwks URL"
        )
        #expect(
            error("auth/jwt/config", ["oidc_discovery_url": .string("http://127.0.0.1:\(port)")])
                == "error checking oidc discovery URL: Get \"http://127.0.0.1:\(port)/.well-known/openid-configuration\": dial tcp 127.0.0.1:\(port): connect: connection refused"
        )
        let pem: JSONValue = [.string(key.publicPEM)]
        #expect(
            error("auth/jwt/config", ["jwt_validation_pubkeys": pem, "jwt_supported_algs": ["HS256"]])
                == "invalid jwt_supported_algs: unsupported signing algorithm \"HS256\""
        )
        #expect(
            error("auth/jwt/config", ["jwt_validation_pubkeys": pem, "oidc_client_id": "x"])
                == "both 'oidc_client_id' and 'oidc_client_secret' must be set for OIDC"
        )
        #expect(h.login("x.y.z").status == 400 && errors(h.login("x.y.z").json) == ["could not load configuration"])
        #expect(error("auth/jwt/role/r", [:]) == "a user claim must be defined on the role")
        #expect(error("auth/jwt/role/r", ["role_type": "foo"]) == "invalid 'role_type': foo")
        #expect(
            error("auth/jwt/role/r", ["role_type": "jwt", "user_claim": "sub"])
                == "must have at least one bound constraint when creating/updating a role"
        )
        #expect(
            error("auth/jwt/role/r", ["user_claim": "sub"])
                == "'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified."
        )
        let base: [String: JSONValue] = ["role_type": "jwt", "user_claim": "sub", "bound_subject": "x"]
        func with(_ extra: [String: JSONValue]) -> JSONValue { .object(base.merging(extra) { $1 }) }
        #expect(error("auth/jwt/role/r", with(["bound_claims_type": "regex"])) == "invalid 'bound_claims_type': regex")
        #expect(
            error("auth/jwt/role/r", with(["bound_claims_type": "glob", "bound_claims": ["a": 1]]))
                == "claim is not a string: 1"
        )
        #expect(
            error("auth/jwt/role/r", with(["claim_mappings": ["a": "x", "b": "x"]]))
                == "multiple keys are mapped to metadata key \"x\""
        )
        #expect(
            error("auth/jwt/role/r", with(["claim_mappings": ["a": "role"]]))
                == "metadata key \"role\" is reserved and may not be a mapping destination"
        )
        // A write to an existing role keeps what it does not name.
        #expect(h.wire("POST", "auth/jwt/role/r", with(["clock_skew_leeway": "90s"])).status == 204)
        #expect(h.wire("POST", "auth/jwt/role/r", ["token_ttl": "1h"]).status == 204)
        let role = h.wire("GET", "auth/jwt/role/r").json?["data"]
        #expect(role?["bound_subject"] == "x" && role?["clock_skew_leeway"] == 90 && role?["token_ttl"] == 3600)
        #expect(h.wire("DELETE", "auth/jwt/role/r").status == 204)
        #expect(h.wire("GET", "auth/jwt/role/r").status == 404)
    }

    @Test func jwksRotationAndRefetchCooldown() throws {
        let h = try Harness()
        let idp = try FakeIdentityProvider()
        defer { idp.stop() }
        let k1 = try TestKey(.rsa, kid: "k1")
        let k2 = try TestKey(.p256, kid: "k2")
        try idp.serveJWKS([k1])
        try h.mountJWT(config: ["jwks_url": .string(idp.url + "/jwks"), "jwks_ca_pem": .string(idp.caPEM)])
        #expect(h.wire("POST", "auth/jwt/role/web", Self.webRole).status == 204)
        #expect(idp.requests(to: "/jwks").count == 1, "fetched at config write")
        #expect(h.login(try k1.sign("RS256", claims(h))).status == 200)
        #expect(h.login(try k1.sign("RS256", claims(h))).status == 200)
        #expect(idp.requests(to: "/jwks").count == 1, "served from the cache")

        // The IdP rotates: a token with the new kid makes one refetch and logs in.
        try idp.serveJWKS([k2])
        h.clock.advance(seconds: 11)
        #expect(h.login(try k2.sign("ES256", claims(h))).status == 200)
        #expect(idp.requests(to: "/jwks").count == 2)

        // A flood of unknown kids: at most one refetch per 10 s cooldown.
        h.clock.advance(seconds: 11)
        let fail = "error validating token: error verifying token signature: failed to verify id token signature"
        for i in 0..<20 {
            let r = h.login(try k1.sign("RS256", claims(h), kid: "made-up-\(i)"))
            #expect(errors(r.json) == [fail])
        }
        #expect(idp.requests(to: "/jwks").count == 3, "one refetch for twenty unknown kids")
        h.clock.advance(seconds: 5)
        _ = h.login(try k1.sign("RS256", claims(h), kid: "again"))
        #expect(idp.requests(to: "/jwks").count == 3, "still in the cooldown")
        h.clock.advance(seconds: 6)
        _ = h.login(try k1.sign("RS256", claims(h), kid: "again"))
        #expect(idp.requests(to: "/jwks").count == 4, "the cooldown is over")

        // The cache expires after an hour.
        h.clock.advance(seconds: 3601)
        #expect(h.login(try k2.sign("ES256", claims(h))).status == 200)
        #expect(idp.requests(to: "/jwks").count == 5)
    }

    @Test func discoveryIssuerIsEnforcedWithoutBoundIssuer() throws {
        let h = try Harness()
        let idp = try FakeIdentityProvider()
        defer { idp.stop() }
        let key = try TestKey(.p256)
        try idp.serveDiscovery()
        try idp.serveJWKS([key])
        try h.mountJWT(config: [
            "oidc_discovery_url": .string(idp.url), "oidc_discovery_ca_pem": .string(idp.caPEM),
        ])
        #expect(h.wire("POST", "auth/jwt/role/web", Self.webRole).status == 204)
        #expect(
            errors(h.login(try key.sign("ES256", claims(h))).json) == [
                "error validating token: invalid issuer (iss) claim"
            ],
            "OpenBao accepts any iss here"
        )
        #expect(h.login(try key.sign("ES256", claims(h, ["iss": .string(idp.url)]))).status == 200)
        // A discovery document whose issuer is not its URL is refused at config time.
        try idp.serve(".well-known/openid-configuration", #"{"issuer":"https://other","jwks_uri":"x"}"#)
        let bad = h.wire(
            "POST",
            "auth/jwt/config",
            ["oidc_discovery_url": .string(idp.url), "oidc_discovery_ca_pem": .string(idp.caPEM)]
        )
        #expect(errors(bad.json).first?.contains("issuer did not match") == true)
        // Without the CA, TLS verification fails (the certificate is self-signed), naming the URL.
        let untrusted = h.wire("POST", "auth/jwt/config", ["oidc_discovery_url": .string(idp.url)])
        #expect(errors(untrusted.json).first?.contains("certificate verify failed") == true)
    }

    @Test func oidcAuthorizationCodeFlow() throws {
        let h = try Harness()
        let idp = try FakeIdentityProvider()
        defer { idp.stop() }
        let key = try TestKey(.rsa)
        try idp.serveDiscovery()
        try idp.serveJWKS([key])
        try idp.control("client.json", #"{"id":"coffer-client","secret":"s3cr&t"}"#)
        try h.mountJWT(config: [
            "oidc_discovery_url": .string(idp.url), "oidc_discovery_ca_pem": .string(idp.caPEM),
            "oidc_client_id": "coffer-client", "oidc_client_secret": "s3cr&t", "default_role": "people",
        ])
        #expect(errors(h.wire("GET", "auth/jwt/config").json).isEmpty)
        #expect(h.wire("GET", "auth/jwt/config").json?["data"]?["oidc_client_secret"] == nil, "never echoed")
        let redirect = "http://localhost:8250/oidc/callback"
        #expect(
            h.wire(
                "POST",
                "auth/jwt/role/people",
                [
                    "user_claim": "email", "allowed_redirect_uris": [.string(redirect)],
                    "bound_claims": ["team": "eng"],
                    "token_policies": ["people"], "oidc_scopes": ["email", "profile"],
                ]
            ).status == 204
        )
        #expect(errors(h.login("a.b.c", role: "people").json) == ["role with oidc role_type is not allowed"])

        /// auth_url, the IdP's authorize (which redirects with a code), and the callback's query.
        func begin(clientNonce: String? = nil) throws -> (nonce: String, query: [String: JSONValue]) {
            var body: [String: JSONValue] = ["role": "people", "redirect_uri": .string(redirect)]
            if let clientNonce { body["client_nonce"] = .string(clientNonce) }
            let answer = h.wire("POST", "auth/jwt/oidc/auth_url", .object(body), token: nil)
            let url = try #require(answer.json?["data"]?["auth_url"]?.stringValue)
            let components = try #require(URLComponents(string: url))
            let items = Dictionary(
                uniqueKeysWithValues: (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }
            )
            #expect(url.hasPrefix(idp.url + "/authorize?client_id=coffer-client&code_challenge="))
            #expect(items["code_challenge_method"] == "S256" && items["response_type"] == "code")
            #expect(items["scope"] == "openid email profile" && items["redirect_uri"] == redirect)
            #expect(items["state"]?.hasPrefix("st_") == true && items["nonce"]?.hasPrefix("n_") == true)
            var options = HTTPClient.Options(caPEM: idp.caPEM)
            options.deadline = 10
            let authorize = try HTTPClient.send("GET", url, options: options)
            #expect(authorize.status == 302)
            let location = try #require(authorize.header("location").flatMap { URLComponents(string: $0) })
            var query: [String: JSONValue] = [:]
            for item in location.queryItems ?? [] { query[item.name] = .string(item.value ?? "") }
            if let clientNonce { query["client_nonce"] = .string(clientNonce) }
            return (items["nonce"]!, query)
        }
        func idToken(nonce: String, _ extra: [String: JSONValue] = [:]) throws -> String {
            var c: [String: JSONValue] = [
                "iss": .string(idp.url), "aud": "coffer-client", "sub": "alice-id", "email": "alice@example.com",
                "team": "eng", "nonce": .string(nonce), "iat": .int(h.now), "exp": .int(h.now + 300),
            ]
            for (k, v) in extra { c[k] = v }
            return try key.sign("RS256", c)
        }
        func callback(_ query: [String: JSONValue]) -> (status: Int, json: JSONValue?) {
            let text = query.map { "\($0.key)=\(HTTPClient.percentEncode($0.value.stringValue ?? ""))" }
            return h.wire("GET", "auth/jwt/oidc/callback?" + text.joined(separator: "&"), token: nil)
        }

        let (nonce, query) = try begin()
        try idp.control("id_token", try idToken(nonce: nonce))
        let done = callback(query)
        #expect(done.status == 200, "\(String(describing: done.json))")
        #expect(done.json?["auth"]?["policies"] == ["default", "people"])
        #expect(done.json?["auth"]?["metadata"] == ["role": "people"])
        #expect(done.json?["auth"]?["client_token"]?.stringValue?.isEmpty == false)
        let exchange = try #require(idp.requests(to: "/token").last)
        #expect(exchange["headers"]?["authorization"]?.stringValue?.hasPrefix("Basic ") == true)
        #expect(exchange["body"]?.stringValue?.contains("code_verifier=") == true)
        #expect(exchange["body"]?.stringValue?.contains("s3cr") == false, "the secret goes in the header")
        // The state is single use.
        #expect(errors(callback(query).json) == ["OpenBao login failed. Expired or missing OAuth state."])

        // A wrong nonce, a wrong audience, another issuer, a role binding not met.
        let (n2, q2) = try begin()
        try idp.control("id_token", try idToken(nonce: n2 + "x"))
        #expect(errors(callback(q2).json).first?.hasSuffix("invalid id_token nonce: invalid nonce\".") == true)
        let (n3, q3) = try begin()
        try idp.control("id_token", try idToken(nonce: n3, ["aud": "someone-else"]))
        #expect(errors(callback(q3).json).first?.contains("invalid audience") == true)
        let (n4, q4) = try begin()
        try idp.control("id_token", try idToken(nonce: n4, ["team": "sales"]))
        #expect(
            errors(callback(q4).json)
                == ["error validating claims: claim \"team\" does not match any associated bound claim values"]
        )
        // The client nonce must come back; the state is spent even so.
        let (n5, q5) = try begin(clientNonce: "cn-1")
        try idp.control("id_token", try idToken(nonce: n5))
        var wrong = q5
        wrong["client_nonce"] = "cn-2"
        #expect(errors(callback(wrong).json) == ["invalid client_nonce"])
        #expect(errors(callback(q5).json) == ["OpenBao login failed. Expired or missing OAuth state."])
        // A code the IdP does not know.
        var (_, q6) = try begin()
        q6["code"] = "bogus"
        #expect(errors(callback(q6).json).first?.contains("oauth2: \\\"invalid_grant\\\"") == true)
        // States expire after ten minutes.
        let (n7, q7) = try begin()
        try idp.control("id_token", try idToken(nonce: n7))
        h.clock.advance(seconds: 601)
        #expect(errors(callback(q7).json) == ["OpenBao login failed. Expired or missing OAuth state."])
        // A redirect URI the role does not allow gets no URL.
        let refused = h.wire(
            "POST",
            "auth/jwt/oidc/auth_url",
            ["role": "people", "redirect_uri": "http://evil.example/cb"],
            token: nil
        )
        #expect(refused.json?["data"]?["auth_url"] == "")
    }

    @Test func httpClientBoundsAndBodies() throws {
        let idp = try FakeIdentityProvider()
        defer { idp.stop() }
        try idp.serve("doc", String(repeating: "abcdefghij", count: 1000))
        var options = HTTPClient.Options(caPEM: idp.caPEM)
        let chunked = try HTTPClient.send("GET", idp.url + "/chunked/doc", options: options)
        #expect(
            chunked.status == 200 && chunked.body.count == 10000 && chunked.header("transfer-encoding") == "chunked"
        )
        options.maximumBodyBytes = 1 << 20
        #expect(throws: HTTPClient.Failure.self) { try HTTPClient.send("GET", idp.url + "/huge", options: options) }
        do {
            _ = try HTTPClient.send("GET", idp.url + "/huge", options: options)
        } catch {
            #expect(error.message == "Get \"\(idp.url)/huge\": the answer is larger than 1048576 bytes")
        }
        options.ioTimeout = 1
        let start = Date()
        do {
            _ = try HTTPClient.send("GET", idp.url + "/hang", options: options)
            Issue.record("a hanging server must time out")
        } catch {
            #expect(error.message.hasSuffix("read timed out"))
        }
        #expect(Date().timeIntervalSince(start) < 5)
        do {
            _ = try HTTPClient.send("GET", "https://localhost:\(idp.port)/doc", options: HTTPClient.Options())
            Issue.record("a self-signed certificate must not verify against the system store")
        } catch {
            #expect(error.message.contains("certificate verify failed"))
        }
        #expect(HTTPClient.URL("ftp://x") == nil && HTTPClient.URL("https://u@h/") == nil)
        #expect(HTTPClient.URL("http://[::1]:8200/v1?x")?.port == 8200)
    }
}
