import Coffer
import CofferCore
import CofferVault
import Foundation
import Synchronization
import Testing

@testable import Engines

/// The AppRole auth method through the wire form, with OpenBao 2.7.2's shapes and error texts
/// (docs: AUTH-HA-OPS.md §1).
extension Harness {
    /// A request from the client address `address` (the source AppRole's CIDR bindings check).
    func wire(
        _ method: String,
        _ path: String,
        _ body: JSONValue? = nil,
        token: String? = "root",
        from address: String
    ) -> (status: Int, json: JSONValue?) {
        let r = Wire.handle(
            vault.core,
            method: method,
            path: path,
            token: token,
            body: body?.serialized() ?? [],
            clientAddress: address
        )
        return (r.status, r.body.map { try! JSONValue.parse($0) })
    }

    /// `auth/approle/`, a policy `app1` that reads `secret/data/app/*`, and a secret there.
    func setUpAppRole() {
        #expect(wire("POST", "sys/auth/approle", ["type": "approle"]).status == 204)
        #expect(
            wire("PUT", "sys/policies/acl/app1", ["policy": #"path "secret/data/app/*" { capabilities = ["read"] }"#])
                .status == 204
        )
        #expect(wire("PUT", "secret/data/app/db", ["data": ["password": "db-pw"]]).status == 200)
        #expect(wire("PUT", "secret/data/other/db", ["data": ["password": "other"]]).status == 200)
    }

    func roleID(_ role: String) throws -> String {
        try #require(wire("GET", "auth/approle/role/\(role)/role-id").json?["data"]?["role_id"]?.stringValue)
    }

    func newSecretID(_ role: String, _ body: JSONValue = [:]) throws -> (id: String, accessor: String) {
        let r = wire("POST", "auth/approle/role/\(role)/secret-id", body)
        let data = try #require(r.json?["data"], "secret-id answered \(r.status): \(String(describing: r.json))")
        return (try #require(data["secret_id"]?.stringValue), try #require(data["secret_id_accessor"]?.stringValue))
    }

    func appRoleLogin(
        _ roleID: String?,
        _ secretID: String?,
        from address: String = "127.0.0.1"
    ) -> (status: Int, json: JSONValue?) {
        var body: [String: JSONValue] = [:]
        if let roleID { body["role_id"] = .string(roleID) }
        if let secretID { body["secret_id"] = .string(secretID) }
        return wire("POST", "auth/approle/login", .object(body), token: nil, from: address)
    }
}

@Suite struct AppRoleTests {
    static let factSheetRole: JSONValue = [
        "token_policies": ["app1", "default"], "token_ttl": "1h", "token_max_ttl": "4h", "secret_id_ttl": "10m",
        "secret_id_num_uses": 5, "bind_secret_id": true, "secret_id_bound_cidrs": ["127.0.0.0/8"],
    ]

    @Test func loginGivesATokenItsPolicyGoverns() throws {
        let h = try Harness()
        h.setUpAppRole()
        #expect(h.wire("POST", "auth/approle/role/web", Self.factSheetRole).status == 204)
        let read = h.wire("GET", "auth/approle/role/web")
        #expect(
            read.json?["data"] == [
                "bind_secret_id": true, "local_secret_ids": false, "secret_id_bound_cidrs": ["127.0.0.0/8"],
                "secret_id_num_uses": 5, "secret_id_ttl": 600, "token_bound_cidrs": [], "token_explicit_max_ttl": 0,
                "token_max_ttl": 14400, "token_no_default_policy": false, "token_num_uses": 0, "token_period": 0,
                "token_policies": ["app1", "default"], "token_strictly_bind_ip": false, "token_ttl": 3600,
                "token_type": "default",
            ]
        )
        let roleID = try h.roleID("web")
        let secret = try h.newSecretID("web", ["metadata": #"{"app":"web","env":"dev"}"#])

        h.clock.advance(seconds: 5)
        let login = h.appRoleLogin(roleID, secret.id)
        #expect(login.status == 200)
        let auth = try #require(login.json?["auth"])
        #expect(login.json?["data"] == .null && login.json?["lease_id"] == "")
        #expect(auth["policies"] == ["app1", "default"] && auth["token_policies"] == ["app1", "default"])
        #expect(auth["metadata"] == ["app": "web", "env": "dev", "role_name": "web"])
        #expect(auth["lease_duration"] == 3600 && auth["renewable"] == true && auth["orphan"] == true)
        let token = try #require(auth["client_token"]?.stringValue)
        #expect(token.hasPrefix("s."))

        // What the policy allows, and what it does not.
        let allowed = h.wire("GET", "secret/data/app/db", token: token)
        #expect(allowed.status == 200 && allowed.json?["data"]?["data"] == ["password": "db-pw"])
        let refused = h.wire("GET", "secret/data/other/db", token: token)
        #expect(refused.status == 403 && errors(refused.json) == ["permission denied"])
        #expect(h.wire("GET", "auth/token/lookup-self", token: token).json?["data"]?["meta"]?["role_name"] == "web")

        // The lookup shows the uses left and (a Coffer addition) when it was last used.
        let lookup = try #require(
            h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": .string(secret.id)]).json?["data"]
        )
        #expect(lookup["secret_id_num_uses"] == 4 && lookup["secret_id_ttl"] == 600)
        #expect(lookup["metadata"] == ["app": "web", "env": "dev"] && lookup["cidr_list"] == [])
        #expect(lookup["secret_id_accessor"]?.stringValue == secret.accessor)
        #expect(lookup["last_used_time"]?.stringValue == lookup["last_updated_time"]?.stringValue)
        #expect(lookup["last_used_time"] != .null && lookup["creation_time"] != lookup["last_used_time"])
        let byAccessor = h.wire(
            "POST",
            "auth/approle/role/web/secret-id-accessor/lookup",
            ["secret_id_accessor": .string(secret.accessor)]
        )
        #expect(byAccessor.json?["data"] == lookup)
    }

    @Test func rolesReadShapesDefaultsAndSubPaths() throws {
        let h = try Harness()
        h.setUpAppRole()
        #expect(
            h.wire("POST", "auth/approle/role/Min", ["token_policies": ["app1"], "secret_id_num_uses": 1]).status == 204
        )
        let data = try #require(h.wire("GET", "auth/approle/role/min").json?["data"])
        #expect(data["secret_id_bound_cidrs"] == .null && data["token_bound_cidrs"] == [])
        #expect(data["bind_secret_id"] == true && data["secret_id_ttl"] == 0 && data["token_type"] == "default")
        #expect(data["policies"] == nil && data["period"] == nil, "no deprecated duplicates")
        #expect(h.wire("LIST", "auth/approle/role").json?["data"]?["keys"] == ["min"])
        let missing = h.wire("GET", "auth/approle/role/nope")
        #expect(missing.status == 404 && missing.json == ["errors": []])
        #expect(h.wire("GET", "auth/approle/role/nope/role-id").status == 404)

        // No constraint at all is OpenBao's 500 multierror; a CIDR binding is enough.
        let open = h.wire("POST", "auth/approle/role/open", ["bind_secret_id": false])
        #expect(open.status == 500)
        #expect(
            errors(open.json) == ["1 error occurred:\n\t* at least one constraint should be enabled on the role\n\n"]
        )
        #expect(
            h.wire("POST", "auth/approle/role/open", ["bind_secret_id": false, "token_bound_cidrs": ["127.0.0.1/32"]])
                .status == 204
        )
        #expect(h.wire("DELETE", "auth/approle/role/open/token-bound-cidrs").status == 500)

        // A custom role_id, unique across roles.
        #expect(h.wire("POST", "auth/approle/role/min/role-id", ["role_id": "fixed-role-id"]).status == 204)
        #expect(try h.roleID("min") == "fixed-role-id")
        let taken = h.wire("POST", "auth/approle/role/open/role-id", ["role_id": "fixed-role-id"])
        #expect(taken.status == 500 && errors(taken.json) == ["1 error occurred:\n\t* role_id already in use\n\n"])
        #expect(errors(h.wire("POST", "auth/approle/role/min/role-id", [:]).json) == ["missing role_id"])

        // Per-field sub-paths.
        #expect(h.wire("POST", "auth/approle/role/min/secret-id-num-uses", ["secret_id_num_uses": 3]).status == 204)
        #expect(h.wire("GET", "auth/approle/role/min/secret-id-num-uses").json?["data"] == ["secret_id_num_uses": 3])
        #expect(
            errors(h.wire("POST", "auth/approle/role/min/secret-id-num-uses", ["secret_id_num_uses": -1]).json) == [
                "secret_id_num_uses cannot be negative"
            ]
        )
        #expect(h.wire("DELETE", "auth/approle/role/min/secret-id-num-uses").status == 204)
        #expect(h.wire("GET", "auth/approle/role/min/secret-id-num-uses").json?["data"] == ["secret_id_num_uses": 0])
        #expect(h.wire("POST", "auth/approle/role/min/secret-id-ttl", ["secret_id_ttl": "5m"]).status == 204)
        #expect(h.wire("GET", "auth/approle/role/min/secret-id-ttl").json?["data"] == ["secret_id_ttl": 300])
        #expect(h.wire("POST", "auth/approle/role/min/policies", ["policies": "x,y"]).status == 204)
        #expect(
            h.wire("GET", "auth/approle/role/min/policies").json?["data"] == [
                "policies": ["x", "y"], "token_policies": ["x", "y"],
            ]
        )
        #expect(h.wire("POST", "auth/approle/role/min/policies", ["token_policies": "z"]).status == 204)
        #expect(h.wire("GET", "auth/approle/role/min/policies").json?["data"] == ["token_policies": ["z"]])
        #expect(errors(h.wire("POST", "auth/approle/role/min/policies", [:]).json) == ["missing token_policies"])
        #expect(h.wire("POST", "auth/approle/role/min/period", ["period": 60]).status == 204)
        #expect(h.wire("GET", "auth/approle/role/min/period").json?["data"] == ["period": 60, "token_period": 60])
        #expect(h.wire("POST", "auth/approle/role/min/token-max-ttl", ["token_max_ttl": "10m"]).status == 204)
        #expect(
            errors(h.wire("POST", "auth/approle/role/min/token-ttl", ["token_ttl": "1h"]).json) == [
                "token_ttl should not be greater than token_max_ttl"
            ]
        )
        #expect(h.wire("POST", "auth/approle/role/min/token-ttl", ["token_ttl": "5m"]).status == 204)
        #expect(h.wire("GET", "auth/approle/role/min/token-ttl").json?["data"] == ["token_ttl": 300])
        #expect(h.wire("POST", "auth/approle/role/min/token-num-uses", ["token_num_uses": 2]).status == 204)
        #expect(h.wire("GET", "auth/approle/role/min/token-num-uses").json?["data"] == ["token_num_uses": 2])
        #expect(h.wire("GET", "auth/approle/role/min/token-bound-cidrs").json?["data"] == ["token_bound_cidrs": .null])
        #expect(
            h.wire("GET", "auth/approle/role/min/secret-id-bound-cidrs").json?["data"] == [
                "secret_id_bound_cidrs": .null
            ]
        )
        #expect(
            h.wire("POST", "auth/approle/role/min/secret-id-bound-cidrs", ["secret_id_bound_cidrs": ["10.0.0.0/8"]])
                .status == 204
        )
        #expect(
            h.wire("GET", "auth/approle/role/min/secret-id-bound-cidrs").json?["data"] == [
                "secret_id_bound_cidrs": ["10.0.0.0/8"]
            ]
        )
        #expect(h.wire("GET", "auth/approle/role/min/local-secret-ids").json?["data"] == ["local_secret_ids": false])
        // OpenBao 2.7.2 serves no bind-secret-id sub-path; writes to a missing role are its 404.
        #expect(h.wire("GET", "auth/approle/role/min/bind-secret-id").status == 404)
        let nope = h.wire("POST", "auth/approle/role/nope/secret-id-num-uses", ["secret_id_num_uses": 3])
        #expect(nope.status == 404 && errors(nope.json) == ["1 error occurred:\n\t* unsupported path\n\n"])
        #expect(h.wire("DELETE", "auth/approle/role/nope/secret-id-num-uses").status == 204)
        #expect(
            errors(h.wire("POST", "auth/approle/role/min", ["local_secret_ids": true]).json) == [
                "local_secret_ids can only be modified during role creation"
            ]
        )
        let bogus = h.wire("POST", "auth/approle/role/min", ["secret_id_bound_cidrs": "bogus"])
        #expect(
            bogus.status == 500
                && errors(bogus.json) == [
                    "1 error occurred:\n\t* failed to validate CIDR blocks: invalid CIDR address: bogus\n\n"
                ]
        )

        // Deleting a role takes its secret IDs and role ID with it.
        let roleID = try h.roleID("min")
        h.wire("DELETE", "auth/approle/role/min/secret-id-bound-cidrs")
        let secret = try h.newSecretID("min")
        #expect(h.wire("DELETE", "auth/approle/role/min").status == 204)
        #expect(h.appRoleLogin(roleID, secret.id).status == 400)
        #expect(h.wire("POST", "auth/approle/role/min", ["token_policies": ["app1"]]).status == 204)
        #expect(h.wire("LIST", "auth/approle/role/min/secret-id").status == 404)
    }

    @Test func secretIDErrorsAreOpenBaos() throws {
        let h = try Harness()
        h.setUpAppRole()
        #expect(h.wire("POST", "auth/approle/role/web", Self.factSheetRole).status == 204)
        func error(_ body: JSONValue, path: String = "secret-id") -> (Int, [String]) {
            let r = h.wire("POST", "auth/approle/role/web/\(path)", body)
            return (r.status, errors(r.json))
        }
        #expect(error(["ttl": "1h"]) == (400, ["ttl cannot be longer than the role's secret_id_ttl"]))
        #expect(error(["num_uses": 10]) == (400, ["num_uses cannot be higher than the role's secret_id_num_uses"]))
        #expect(error(["num_uses": 0]) == (400, ["num_uses cannot be higher than the role's secret_id_num_uses"]))
        #expect(error(["num_uses": -1]) == (400, ["num_uses cannot be negative"]))
        #expect(
            error(["cidr_list": ["10.0.0.0/8"]]) == (
                500,
                [
                    "1 error occurred:\n\t* failed to verify subset relationship between CIDR blocks on the role [\"127.0.0.0/8\"] and CIDR blocks on the secret ID [\"10.0.0.0/8\"]: %!w(<nil>)\n\n"
                ]
            )
        )
        #expect(
            error(["cidr_list": "bogus"]) == (
                500, ["1 error occurred:\n\t* failed to validate CIDR blocks: invalid CIDR address: bogus\n\n"]
            )
        )
        #expect(
            error(["token_bound_cidrs": ["127.0.0.1"]]) == (
                500,
                ["1 error occurred:\n\t* failed to validate token CIDR blocks: invalid CIDR address: 127.0.0.1\n\n"]
            )
        )
        for bad in ["notjson", #"{"n":1}"#, "[1,2]"] {
            #expect(
                error(["metadata": .string(bad)]) == (
                    400, ["failed to parse metadata: failed to parse the input: invalid <key,value> format"]
                )
            )
        }
        let unknown = h.wire("POST", "auth/approle/role/nope/secret-id", [:])
        #expect(unknown.status == 404 && errors(unknown.json) == ["role \"nope\" does not exist"])
        let list = h.wire("LIST", "auth/approle/role/nope/secret-id")
        #expect(list.status == 400 && errors(list.json) == ["role \"nope\" does not exist"])

        // Custom secret IDs: once only.
        let custom = h.wire("POST", "auth/approle/role/web/custom-secret-id", ["secret_id": "my-custom-secret"])
        #expect(custom.status == 200 && custom.json?["data"]?["secret_id"] == "my-custom-secret")
        #expect(custom.json?["data"]?["secret_id_num_uses"] == 5 && custom.json?["data"]?["secret_id_ttl"] == 600)
        #expect(
            error(["secret_id": "my-custom-secret"], path: "custom-secret-id") == (
                500, ["1 error occurred:\n\t* failed to store secret_id: SecretID is already registered\n\n"]
            )
        )
        #expect(error([:], path: "custom-secret-id") == (400, ["missing secret_id"]))
        let accessor = try #require(custom.json?["data"]?["secret_id_accessor"]?.stringValue)
        #expect(h.wire("LIST", "auth/approle/role/web/secret-id").json?["data"]?["keys"] == [.string(accessor)])

        // Lookup and destroy.
        #expect(error([:], path: "secret-id/lookup") == (400, ["missing secret_id"]))
        #expect(h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": "nope"]).status == 204)
        let lookupUnknownRole = h.wire("POST", "auth/approle/role/nope/secret-id/lookup", ["secret_id": "x"])
        #expect(lookupUnknownRole.status == 500)
        #expect(errors(lookupUnknownRole.json) == ["1 error occurred:\n\t* role \"nope\" does not exist\n\n"])
        #expect(
            h.wire("POST", "auth/approle/role/web/secret-id/destroy", ["secret_id": "my-custom-secret"]).status == 204
        )
        #expect(
            h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": "my-custom-secret"]).status == 204,
            "a destroyed secret ID looks up as 204, not 404"
        )
        #expect(h.appRoleLogin(try h.roleID("web"), "my-custom-secret").status == 400)
        let noAccessor = h.wire(
            "POST",
            "auth/approle/role/web/secret-id-accessor/destroy",
            ["secret_id_accessor": "nonexistent"]
        )
        #expect(noAccessor.status == 500)
        #expect(
            errors(noAccessor.json) == [
                "1 error occurred:\n\t* failed to find accessor entry for secret_id_accessor: \"nonexistent\"\n\n"
            ]
        )
        let lookupNoAccessor = h.wire(
            "POST",
            "auth/approle/role/web/secret-id-accessor/lookup",
            ["secret_id_accessor": "nonexistent"]
        )
        #expect(lookupNoAccessor.status == 404)
        #expect(
            lookupNoAccessor.json?["data"] == [
                "error": "failed to find accessor entry for secret_id_accessor: \"nonexistent\""
            ]
        )
        #expect(error([:], path: "secret-id-accessor/lookup") == (400, ["missing secret_id_accessor"]))

        // A secret ID destroyed by its accessor no longer logs in.
        let second = try h.newSecretID("web")
        #expect(
            h.wire(
                "POST",
                "auth/approle/role/web/secret-id-accessor/destroy",
                ["secret_id_accessor": .string(second.accessor)]
            )
            .status == 204
        )
        #expect(errors(h.appRoleLogin(try h.roleID("web"), second.id).json) == ["invalid role or secret ID"])

        // A role without bind_secret_id hands out none.
        h.wire("POST", "auth/approle/role/cidr", ["bind_secret_id": false, "secret_id_bound_cidrs": ["127.0.0.1/32"]])
        #expect(
            errors(h.wire("POST", "auth/approle/role/cidr/secret-id", [:]).json) == [
                "bind_secret_id is not set on the role"
            ]
        )
    }

    @Test func loginErrorsAndCIDRs() throws {
        let h = try Harness()
        h.setUpAppRole()
        #expect(h.wire("POST", "auth/approle/role/web", Self.factSheetRole).status == 204)
        let roleID = try h.roleID("web")
        let secret = try h.newSecretID("web")

        let noRoleID = h.appRoleLogin(nil, secret.id)
        #expect(noRoleID.status == 500 && errors(noRoleID.json) == ["missing role_id"])
        let noSecret = h.appRoleLogin(roleID, nil)
        #expect(noSecret.status == 400 && errors(noSecret.json) == ["missing secret_id"])
        for (r, s) in [(roleID, "wrong"), ("wrong", secret.id), ("wrong", nil)] as [(String, String?)] {
            let bad = h.appRoleLogin(r, s)
            #expect(bad.status == 400 && errors(bad.json) == ["invalid role or secret ID"])
        }
        let outside = h.appRoleLogin(roleID, secret.id, from: "10.1.2.3")
        #expect(outside.status == 400)
        #expect(
            errors(outside.json) == [
                "source address \"10.1.2.3\" unauthorized by CIDR restrictions on the role: %!w(<nil>)"
            ]
        )
        // A refused address spends no use.
        let lookup = h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": .string(secret.id)])
        #expect(lookup.json?["data"]?["secret_id_num_uses"] == 5)

        let narrow = try h.newSecretID("web", ["cidr_list": "127.0.0.2/32", "token_bound_cidrs": ["127.0.0.0/24"]])
        let refused = h.appRoleLogin(roleID, narrow.id, from: "127.0.0.1")
        #expect(
            errors(refused.json) == [
                "source address \"127.0.0.1\" unauthorized by CIDR restrictions on the secret ID: %!w(<nil>)"
            ]
        )
        let fromInside = h.appRoleLogin(roleID, narrow.id, from: "127.0.0.2:51234")
        #expect(fromInside.status == 200)
        // The secret ID's token_bound_cidrs bind the token: usable from 127.0.0.x only.
        let token = try #require(fromInside.json?["auth"]?["client_token"]?.stringValue)
        #expect(h.wire("GET", "secret/data/app/db", token: token, from: "127.0.0.9").status == 200)
        #expect(h.wire("GET", "secret/data/app/db", token: token, from: "10.0.0.1").status == 403)

        // bind_secret_id=false with a CIDR binding: the role ID alone logs in, from inside only.
        h.wire(
            "POST",
            "auth/approle/role/cidr",
            ["bind_secret_id": false, "secret_id_bound_cidrs": ["127.0.0.1/32"], "token_policies": "app1"]
        )
        let cidrRole = try h.roleID("cidr")
        let ok = h.appRoleLogin(cidrRole, nil)
        #expect(ok.status == 200 && ok.json?["auth"]?["metadata"] == ["role_name": "cidr"])
        #expect(h.appRoleLogin(cidrRole, nil, from: "127.0.0.3").status == 400)
    }

    /// 8 threads make 50 logins at once with one secret ID of N uses: exactly N succeed, the rest
    /// get the one failure string, and the secret ID is gone.
    @Test func useCountsAreExactUnderConcurrentLogins() throws {
        let h = try Harness()
        h.setUpAppRole()
        let uses = 7
        #expect(
            h.wire("POST", "auth/approle/role/web", ["token_policies": "app1", "secret_id_num_uses": .int(uses)]).status
                == 204
        )
        let roleID = try h.roleID("web")
        let secret = try h.newSecretID("web")

        let statuses = Mutex<[Int]>([])
        let failures = Mutex<Set<String>>([])
        let start = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        for thread in 0..<8 {
            done.enter()
            let t = Thread {
                start.wait()
                for _ in 0..<(thread < 2 ? 7 : 6) {
                    let r = h.appRoleLogin(roleID, secret.id)
                    statuses.withLock { $0.append(r.status) }
                    if r.status != 200 { _ = failures.withLock { $0.formUnion(errors(r.json)) } }
                }
                done.leave()
            }
            t.start()
        }
        for _ in 0..<8 { start.signal() }
        done.wait()
        let all = statuses.withLock { $0 }
        #expect(all.count == 50)
        #expect(all.filter { $0 == 200 }.count == uses)
        #expect(all.filter { $0 == 400 }.count == 50 - uses)
        #expect(failures.withLock { $0 } == ["invalid role or secret ID"])
        #expect(
            h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": .string(secret.id)]).status == 204
        )
        #expect(h.wire("LIST", "auth/approle/role/web/secret-id").status == 404)
    }

    @Test func expiredSecretIDsAreRefusedAndTidied() throws {
        let h = try Harness()
        h.setUpAppRole()
        #expect(
            h.wire("POST", "auth/approle/role/web", ["token_policies": "app1", "secret_id_ttl": "10m"]).status == 204
        )
        let roleID = try h.roleID("web")
        let short = try h.newSecretID("web", ["ttl": "1s"])
        let long = try h.newSecretID("web")
        let forTidy = try h.newSecretID("web", ["ttl": 30])
        #expect(
            h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": .string(short.id)]).json?["data"]?[
                "secret_id_ttl"
            ] == 1
        )
        h.clock.advance(seconds: 2)
        let expired = h.appRoleLogin(roleID, short.id)
        #expect(expired.status == 400 && errors(expired.json) == ["invalid role or secret ID"])
        #expect(
            h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": .string(short.id)]).status == 204
        )
        #expect(h.appRoleLogin(roleID, long.id).status == 200)

        h.clock.advance(seconds: 60)
        let keys = h.wire("LIST", "auth/approle/role/web/secret-id").json?["data"]?["keys"]?.arrayValue ?? []
        #expect(Set(keys) == [.string(long.accessor), .string(forTidy.accessor)])
        let tidy = h.wire("POST", "auth/approle/tidy/secret-id")
        #expect(tidy.status == 202)
        #expect(
            tidy.json?["warnings"] == [
                "Tidy operation successfully started. Any information from the operation will be printed to OpenBao's server logs."
            ]
        )
        #expect(tidy.json?["request_id"]?.stringValue?.isEmpty == false && tidy.json?["data"] == .null)
        #expect(h.wire("LIST", "auth/approle/role/web/secret-id").json?["data"]?["keys"] == [.string(long.accessor)])
        #expect(
            h.wire(
                "POST",
                "auth/approle/role/web/secret-id-accessor/lookup",
                ["secret_id_accessor": .string(forTidy.accessor)]
            )
            .status == 404,
            "tidy removed the accessor with the secret ID"
        )
        h.clock.advance(seconds: 600)
        #expect(h.appRoleLogin(roleID, long.id).status == 400)
    }

    @Test func storageHoldsNoSecretID() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        let h = try Harness(storage: .sqlite(path: path))
        h.setUpAppRole()
        #expect(h.wire("POST", "auth/approle/role/web", ["token_policies": "app1"]).status == 204)
        let customSecret = "coffer-plain-custom-secret-7d1f0c"
        #expect(
            h.wire("POST", "auth/approle/role/web/custom-secret-id", ["secret_id": .string(customSecret)]).status == 200
        )
        let generated = try h.newSecretID("web")
        #expect(h.appRoleLogin(try h.roleID("web"), generated.id).status == 200)

        // Decrypted, every entry of the mount: no secret ID in keys or values.
        let core = h.vault.core
        let uuid = try #require(try core.mounts(.auth).first { $0.path == "approle/" }?.uuid)
        var entries = 0
        func walk(_ prefix: String) throws {
            for key in try core.barrier.list(prefix) {
                if key.hasSuffix("/") {
                    try walk(prefix + key)
                    continue
                }
                entries += 1
                let text = String(decoding: try core.barrier.get(prefix + key) ?? [], as: UTF8.self)
                for secret in [customSecret, generated.id] {
                    #expect(
                        !(prefix + key).contains(secret) && !text.contains(secret),
                        "\(prefix + key) holds a secret ID"
                    )
                }
            }
        }
        try walk("auth/\(uuid)/")
        #expect(entries >= 6)
        // And the database file itself.
        h.vault.close()
        let raw = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(raw.range(of: Data(customSecret.utf8)) == nil)
    }

    @Test func hugeAndMalformedInputsAreRefusedCleanly() throws {
        let h = try Harness()
        h.setUpAppRole()
        #expect(h.wire("POST", "auth/approle/role/web", ["token_policies": "app1"]).status == 204)
        let huge = String(repeating: "s", count: 1 << 20)
        let login = h.appRoleLogin(try h.roleID("web"), huge)
        #expect(login.status == 400 && errors(login.json) == ["invalid role or secret ID"])
        let hugeRoleID = h.appRoleLogin(huge, "x")
        #expect(hugeRoleID.status == 400 && errors(hugeRoleID.json) == ["invalid role or secret ID"])
        let custom = h.wire("POST", "auth/approle/role/web/custom-secret-id", ["secret_id": .string(huge)])
        #expect(custom.status == 400 && !(custom.json?.jsonString.contains("sssss") ?? true))
        #expect(h.wire("POST", "auth/approle/role/web/secret-id/lookup", ["secret_id": .string(huge)]).status == 204)
        for bad: JSONValue in [
            ["num_uses": "1e999"], ["ttl": "99999999999999h"], ["metadata": [1]], ["cidr_list": [["a": 1]]],
        ] {
            let r = h.wire("POST", "auth/approle/role/web/secret-id", bad)
            #expect(r.status == 400, "\(bad.jsonString) answered \(r.status)")
        }
        let deep = String(repeating: "[", count: 10000)
        #expect(h.wire("POST", "auth/approle/role/web/secret-id", ["metadata": .string(deep)]).status == 400)
        #expect(h.wire("POST", "auth/approle/role/web", ["secret_id_num_uses": "9999999999999999999999"]).status == 400)
        #expect(h.wire("GET", "auth/approle/role/bad%20name").status == 404)
    }

    @Test func pathTableIsWellFormed() {
        #expect(AppRoleBackend.paths.validate() == [])
        #expect(UserpassBackend.paths.validate() == [])
    }
}
