import Foundation
import Testing

/// The kubernetes auth method through the wire form. No cluster runs here: the TokenReview is
/// answered by the fake HTTPS server of AuthFixtures.swift in the real `authentication.k8s.io/v1`
/// schema, and the test checks the request it received (path, bearer, body).
@Suite struct KubernetesTests {
    func saClaims(
        _ h: Harness,
        namespace: String = "prod",
        name: String = "web",
        _ extra: [String: JSONValue] = [:]
    )
        -> [String: JSONValue]
    {
        var c: [String: JSONValue] = [
            "iss": "https://kubernetes.default.svc", "aud": ["https://kubernetes.default.svc"],
            "sub": .string("system:serviceaccount:\(namespace):\(name)"), "iat": .int(h.now),
            "exp": .int(h.now + 600),
            "kubernetes.io": [
                "namespace": .string(namespace), "serviceaccount": ["name": .string(name), "uid": "1111-2222"],
            ],
        ]
        for (k, v) in extra { c[k] = v }
        return c
    }

    func setUp(_ h: Harness, _ idp: FakeIdentityProvider, config: [String: JSONValue] = [:]) throws {
        #expect(h.wire("POST", "sys/auth/kubernetes", ["type": "kubernetes"]).status == 204)
        var body: [String: JSONValue] = [
            "kubernetes_host": .string(idp.url), "kubernetes_ca_cert": .string(idp.caPEM), "disable_local_ca_jwt": true,
        ]
        for (k, v) in config { body[k] = v }
        let written = h.wire("POST", "auth/kubernetes/config", .object(body))
        guard written.status == 204 else { throw TestFailure("config: \(String(describing: written.json))") }
        #expect(
            h.wire(
                "POST",
                "auth/kubernetes/role/web",
                [
                    "bound_service_account_names": ["web"], "bound_service_account_namespaces": ["prod"],
                    "token_policies": ["app1"],
                ]
            ).status == 204
        )
    }

    func authenticated(_ idp: FakeIdentityProvider, namespace: String = "prod", name: String = "web") throws {
        try idp.control(
            "tokenreview.json",
            #"{"authenticated":true,"user":{"username":"system:serviceaccount:\#(namespace):\#(name)","uid":"1111-2222","groups":["system:serviceaccounts"]},"audiences":["https://kubernetes.default.svc"]}"#
        )
    }

    @Test func loginThroughTokenReview() throws {
        let h = try Harness()
        let idp = try FakeIdentityProvider()
        defer { idp.stop() }
        let key = try TestKey(.p256)
        try setUp(h, idp)
        try authenticated(idp)
        let jwt = try key.sign("ES256", saClaims(h))
        let result = h.login(jwt, path: "kubernetes")
        #expect(result.status == 200, "\(String(describing: result.json))")
        #expect(
            result.json?["auth"]?["metadata"] == [
                "role": "web", "service_account_name": "web", "service_account_namespace": "prod",
                "service_account_secret_name": "", "service_account_uid": "1111-2222",
            ]
        )
        #expect(result.json?["auth"]?["policies"] == ["app1", "default"])
        // The request the cluster received: OpenBao's, byte for byte; the client's JWT as bearer.
        let review = try #require(idp.requests(to: "/apis/authentication.k8s.io/v1/tokenreviews").last)
        #expect(review["method"] == "POST")
        #expect(review["headers"]?["authorization"]?.stringValue == "Bearer " + jwt)
        #expect(review["headers"]?["content-type"] == "application/json")
        #expect(review["headers"]?["accept"] == "application/json")
        #expect(
            review["body"]?.stringValue
                == #"{"metadata":{},"spec":{"token":""# + jwt
                + #"","audiences":["https://kubernetes.default.svc"]},"status":{"user":{}}}"#
        )

        // With a reviewer JWT, that is the bearer; it is never read back.
        let written = h.wire(
            "POST",
            "auth/kubernetes/config",
            [
                "kubernetes_host": .string(idp.url), "kubernetes_ca_cert": .string(idp.caPEM),
                "disable_local_ca_jwt": true, "token_reviewer_jwt": "reviewer-jwt",
            ]
        )
        #expect(written.status == 204)
        let config = try #require(h.wire("GET", "auth/kubernetes/config").json?["data"]?.objectValue)
        #expect(config["token_reviewer_jwt_set"] == true && config["token_reviewer_jwt"] == nil)
        #expect(config["disable_iss_validation"] == true && config["pem_keys"] == [])
        #expect(
            h.login(try key.sign("ES256", saClaims(h, ["aud": "https://kubernetes.default.svc"])), path: "kubernetes")
                .status == 200,
            "a string aud"
        )
        let second = try #require(idp.requests(to: "/apis/authentication.k8s.io/v1/tokenreviews").last)
        #expect(second["headers"]?["authorization"] == "Bearer reviewer-jwt")

        // The cluster says no: 403, saying which check failed.
        try idp.control("tokenreview.json", #"{"user":{},"error":"token has been invalidated"}"#)
        let refused = h.login(try key.sign("ES256", saClaims(h)), path: "kubernetes")
        #expect(refused.status == 403)
        #expect(
            errors(refused.json) == [
                "permission denied: TokenReview did not authenticate the token: token has been invalidated"
            ]
        )
        // The cluster vouches for another account than the token names.
        try authenticated(idp, name: "db")
        #expect(h.login(try key.sign("ES256", saClaims(h)), path: "kubernetes").status == 403)

        // Role bindings are checked before the cluster is asked.
        let before = idp.requests().count
        let ns = h.login(try key.sign("ES256", saClaims(h, namespace: "dev")), path: "kubernetes")
        #expect(ns.status == 403 && errors(ns.json) == ["namespace not authorized"])
        let name = h.login(try key.sign("ES256", saClaims(h, name: "db")), path: "kubernetes")
        #expect(name.status == 403 && errors(name.json) == ["service account name not authorized"])
        let expired = h.login(try key.sign("ES256", saClaims(h, ["exp": .int(h.now - 120)])), path: "kubernetes")
        #expect(errors(expired.json) == ["invalid expiration time (exp) claim: token is expired"])
        #expect(idp.requests().count == before)

        // Role audience.
        #expect(h.wire("POST", "auth/kubernetes/role/web", ["audience": "coffer"]).status == 204)
        let aud = h.login(try key.sign("ES256", saClaims(h)), path: "kubernetes")
        #expect(aud.status == 403)
        #expect(
            errors(aud.json) == ["invalid audience (aud) claim: audience claim does not match any expected audience"]
        )
        let role = try #require(h.wire("GET", "auth/kubernetes/role/web").json?["data"]?.objectValue)
        #expect(role["audience"] == "coffer" && role["alias_name_source"] == "serviceaccount_uid")
        #expect(role["bound_service_account_names"] == ["web"] && role["token_policies"] == ["app1"])

        // Errors before anything else.
        #expect(errors(h.wire("POST", "auth/kubernetes/login", ["jwt": "x"], token: nil).json) == ["missing role"])
        #expect(errors(h.wire("POST", "auth/kubernetes/login", ["role": "web"], token: nil).json) == ["missing jwt"])
        #expect(errors(h.login("a.b.c", role: "nope", path: "kubernetes").json) == ["invalid role name \"nope\""])
        let junk = h.login("a.b.c", path: "kubernetes")
        #expect(junk.status == 403 && errors(junk.json).first?.hasPrefix("permission denied: ") == true)
    }

    @Test func loginWithPEMKeysAskNoCluster() throws {
        let h = try Harness()
        let idp = try FakeIdentityProvider()
        defer { idp.stop() }
        let key = try TestKey(.rsa)
        let other = try TestKey(.rsa)
        try setUp(
            h,
            idp,
            config: [
                "pem_keys": [.string(key.publicPEM)], "issuer": "https://kubernetes.default.svc",
                "disable_iss_validation": false,
            ]
        )
        #expect(h.login(try key.sign("RS256", saClaims(h)), path: "kubernetes").status == 200)
        let forged = h.login(try other.sign("RS256", saClaims(h)), path: "kubernetes")
        #expect(forged.status == 403)
        #expect(
            errors(forged.json) == ["permission denied: the token's signature does not verify with any of pem_keys"]
        )
        let issuer = h.login(try key.sign("RS256", saClaims(h, ["iss": "https://other"])), path: "kubernetes")
        #expect(errors(issuer.json) == ["invalid issuer (iss) claim"])
        #expect(idp.requests(to: "/apis/authentication.k8s.io/v1/tokenreviews").isEmpty)
    }

    @Test func configAndRoleErrors() throws {
        #expect(KubernetesBackend.paths.validate() == [])
        let h = try Harness()
        #expect(h.wire("POST", "sys/auth/kubernetes", ["type": "kubernetes"]).status == 204)
        #expect(h.wire("GET", "auth/kubernetes/config").status == 404)
        func error(_ path: String, _ body: JSONValue) -> String { errors(h.wire("POST", path, body).json).first ?? "" }
        #expect(error("auth/kubernetes/config", [:]) == "no host provided")
        #expect(
            error("auth/kubernetes/config", ["kubernetes_host": "https://127.0.0.1:1", "disable_local_ca_jwt": true])
                == "kubernetes_ca_cert must be given when disable_local_ca_jwt is true"
        )
        #expect(
            error("auth/kubernetes/config", ["kubernetes_host": "https://127.0.0.1:1"])
                == "open /var/run/secrets/kubernetes.io/serviceaccount/ca.crt: no such file or directory"
        )
        #expect(error("auth/kubernetes/role/r", [:]) == "\"bound_service_account_names\" can not be empty")
        #expect(
            error("auth/kubernetes/role/r", ["bound_service_account_names": ["web"]])
                == "\"bound_service_account_namespaces\" can not be empty if \"bound_service_account_namespace_selector\" is not set"
        )
        #expect(
            h.wire(
                "POST",
                "auth/kubernetes/role/r",
                ["bound_service_account_names": ["web"], "bound_service_account_namespaces": ["*"]]
            ).status == 204
        )
        let login = h.login("a.b.c", role: "r", path: "kubernetes")
        #expect(login.status == 500 && errors(login.json) == ["could not load backend configuration"])
    }
}
