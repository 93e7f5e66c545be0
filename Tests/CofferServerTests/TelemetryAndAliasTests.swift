import CofferCore
import Testing

@testable import CofferServer
@testable import CofferServerCore

/// cofferd's `telemetry` settings (issue 20, item 5) and the seeds' REST alias (item 6, RestAlias.swift).
@Suite struct TelemetryAndAliasTests {
    @Test func telemetryStanzasAreRead() throws {
        let config = try ServerConfig.parse(
            """
            listener "tcp" {
              address     = "127.0.0.1:8200"
              tls_disable = true
              telemetry {
                unauthenticated_metrics_access = true
              }
            }
            telemetry {
              prometheus_retention_time = "24h"
              disable_hostname          = true
            }
            """
        )
        #expect(config.listener.unauthenticatedMetricsAccess)
        #expect(config.telemetry.prometheusRetentionTime == 86400)
        #expect(config.telemetry.disableHostname)
        // Off unless asked for.
        let plain = try ServerConfig.parse("listener \"tcp\" {\n address = \"127.0.0.1:1\"\n}\n")
        #expect(!plain.listener.unauthenticatedMetricsAccess)
    }

    @Test(arguments: [
        (
            "telemetry {\n  unauthenticated_metrics_access = true\n}\n",
            "line 2: unknown key \"unauthenticated_metrics_access\" in telemetry (known: prometheus_retention_time, disable_hostname)"
        ),
        (
            "listener \"tcp\" {\n  telemetry {\n    prometheus_retention_time = \"1h\"\n  }\n}\n",
            "line 3: unknown key \"prometheus_retention_time\" in listener \"tcp\" telemetry (known: unauthenticated_metrics_access)"
        ),
        ("telemetry = \"on\"\n", "line 1: \"telemetry\" is a block without labels: write telemetry { ... }"),
        (
            "telemetry {\n  prometheus_retention_time = \"-5s\"\n}\n",
            "line 2: \"prometheus_retention_time\" must be a duration"
        ),
        (
            "listener \"tcp\" {\n  telemetry {\n    unauthenticated_metrics_access = \"maybe\"\n  }\n}\n",
            "line 3: \"unauthenticated_metrics_access\" must be true or false"
        ),
    ])
    func telemetryMistakesNameTheLine(text: String, message: String) {
        do {
            _ = try ServerConfig.parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.description.hasPrefix(message), "\(error.description)")
        }
    }

    // MARK: The REST alias

    func forwarded(_ mapped: RestAlias.Mapped) -> (String, String, JSONValue?)? {
        guard case .forward(let method, let target, let body) = mapped else { return nil }
        return (method, target, body.isEmpty ? nil : try? JSONValue.parse(body))
    }

    @Test func secretsMapOntoKVv2() throws {
        let put = try #require(
            forwarded(RestAlias.map(method: "PUT", target: "/api/v1/secrets/db/pg", body: Array(#"{"u":"a"}"#.utf8)))
        )
        #expect(put.0 == "PUT" && put.1 == "/v1/secret/data/db/pg")
        #expect(put.2 == ["data": ["u": "a"]])
        let get = try #require(
            forwarded(RestAlias.map(method: "GET", target: "/api/v1/secrets/db/pg?version=2", body: []))
        )
        #expect(get.0 == "GET" && get.1 == "/v1/secret/data/db/pg?version=2" && get.2 == nil)
        // A body that tries to smuggle KV options stays the secret's data.
        let smuggled = try #require(
            forwarded(
                RestAlias.map(method: "PUT", target: "/api/v1/secrets/x", body: Array(#"{"options":{"cas":0}}"#.utf8))
            )
        )
        #expect(smuggled.2 == ["data": ["options": ["cas": 0]]])
        #expect(
            RestAlias.map(method: "GET", target: "/health?standbyok=true", body: [])
                == .forward(
                    method: "GET",
                    target: "/v1/sys/health?standbyok=true",
                    body: []
                )
        )
    }

    @Test func rotationAndOtherMethodsAreRefused() {
        // Rotate now is KV's rotation extension (docs/rotation.md).
        #expect(
            RestAlias.map(method: "POST", target: "/api/v1/secrets/a/b/rotate", body: [])
                == .forward(method: "POST", target: "/v1/secret/rotate/a/b", body: [])
        )
        // GET of a secret whose last segment is "rotate" is a read, not a rotation.
        #expect(
            forwarded(RestAlias.map(method: "GET", target: "/api/v1/secrets/a/rotate", body: []))?.1
                == "/v1/secret/data/a/rotate"
        )
        for (method, target, status) in [
            ("DELETE", "/api/v1/secrets/a", 405), ("POST", "/api/v1/secrets/a", 405), ("GET", "/api/v1/secrets/", 404),
            ("GET", "/api/v1/secrets/a/", 404), ("POST", "/health", 405), ("GET", "/api/v1/auth/login", 405),
            ("GET", "/api/v2/x", 404),
        ] {
            guard case .refuse(let got, _) = RestAlias.map(method: method, target: target, body: []) else {
                Issue.record("\(method) \(target) was forwarded")
                continue
            }
            #expect(got == status, "\(method) \(target)")
        }
        guard case .refuse(400, _) = RestAlias.map(method: "PUT", target: "/api/v1/secrets/a", body: Array("[1]".utf8))
        else {
            Issue.record("an array body was accepted")
            return
        }
    }

    @Test func loginMapsOntoTheAuthMethod() throws {
        func login(_ body: String) -> RestAlias.Mapped {
            RestAlias.map(method: "POST", target: "/api/v1/auth/login", body: Array(body.utf8))
        }
        let approle = try #require(forwarded(login(#"{"method":"approle","role_id":"r","secret_id":"s"}"#)))
        #expect(approle.1 == "/v1/auth/approle/login" && approle.2 == ["role_id": "r", "secret_id": "s"])
        let userpass = try #require(forwarded(login(#"{"method":"userpass","username":"ana","password":"pw"}"#)))
        #expect(userpass.1 == "/v1/auth/userpass/login/ana" && userpass.2 == ["password": "pw"])
        let kubernetes = try #require(
            forwarded(login(#"{"method":"kubernetes","mount":"auth/k8s-prod/","role":"web","jwt":"j"}"#))
        )
        #expect(kubernetes.1 == "/v1/auth/k8s-prod/login" && kubernetes.2 == ["role": "web", "jwt": "j"])
        for bad in [
            #"{"role":"web"}"#, #"{"method":""}"#, #"{"method":"jwt","mount":"../sys"}"#,
            #"{"method":"jwt","mount":"a?b"}"#,
            #"{"method":"userpass","password":"p"}"#, #"{"method":"userpass","username":"a/../b"}"#, "[]", "{",
        ] {
            guard case .refuse(400, _) = login(bad) else {
                Issue.record("accepted \(bad)")
                continue
            }
        }
    }
}
