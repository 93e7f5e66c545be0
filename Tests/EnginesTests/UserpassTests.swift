import Coffer
import CofferCore
import CofferVault
import Foundation
import Testing

@testable import Engines

/// The userpass auth method through the wire form, with OpenBao 2.7.2's shapes, error texts and
/// user lockout (docs: AUTH-HA-OPS.md §2).
extension Harness {
    func setUpUserpass() {
        #expect(wire("POST", "sys/auth/userpass", ["type": "userpass"]).status == 204)
        #expect(
            wire("PUT", "sys/policies/acl/app1", ["policy": #"path "secret/data/app/*" { capabilities = ["read"] }"#])
                .status == 204
        )
        #expect(wire("PUT", "secret/data/app/db", ["data": ["password": "db-pw"]]).status == 200)
        #expect(wire("PUT", "secret/data/other/db", ["data": ["password": "other"]]).status == 200)
    }

    func userLogin(_ user: String, _ password: String?) -> (status: Int, json: JSONValue?) {
        wire("POST", "auth/userpass/login/\(user)", password.map { ["password": .string($0)] } ?? [:], token: nil)
    }
}

@Suite struct UserpassTests {
    @Test func loginGivesATokenItsPolicyGoverns() throws {
        let h = try Harness()
        h.setUpUserpass()
        #expect(
            h.wire(
                "POST",
                "auth/userpass/users/alice",
                ["password": "s3cret-pw", "token_policies": ["app1"], "token_ttl": "30m"]
            )
            .status == 204
        )
        let read = h.wire("GET", "auth/userpass/users/alice")
        #expect(
            read.json?["data"] == [
                "token_bound_cidrs": [], "token_explicit_max_ttl": 0, "token_max_ttl": 0,
                "token_no_default_policy": false, "token_num_uses": 0, "token_period": 0, "token_policies": ["app1"],
                "token_strictly_bind_ip": false, "token_ttl": 1800, "token_type": "default",
            ],
            "no password or hash in the read"
        )
        #expect(h.wire("LIST", "auth/userpass/users").json?["data"]?["keys"] == ["alice"])

        let login = h.userLogin("alice", "s3cret-pw")
        #expect(login.status == 200)
        let auth = try #require(login.json?["auth"])
        #expect(auth["metadata"] == ["username": "alice"] && auth["lease_duration"] == 1800)
        #expect(auth["policies"] == ["app1", "default"])
        let token = try #require(auth["client_token"]?.stringValue)
        #expect(h.wire("GET", "secret/data/app/db", token: token).json?["data"]?["data"] == ["password": "db-pw"])
        let refused = h.wire("GET", "secret/data/other/db", token: token)
        #expect(refused.status == 403 && errors(refused.json) == ["permission denied"])
        #expect(
            h.wire("GET", "auth/token/lookup-self", token: token).json?["data"]?["display_name"] == "userpass-alice"
        )

        // Password change: the old one stops working at once.
        #expect(h.wire("POST", "auth/userpass/users/alice/password", ["password": "new-pw"]).status == 204)
        #expect(h.userLogin("alice", "s3cret-pw").status == 400)
        #expect(h.userLogin("alice", "new-pw").status == 200)
        #expect(
            h.wire("POST", "auth/userpass/users/alice/policies", ["token_policies": ["default", "app1"]]).status == 204
        )
        #expect(h.wire("GET", "auth/userpass/users/alice").json?["data"]?["token_policies"] == ["app1", "default"])
        // Updating other fields keeps the password.
        #expect(h.wire("POST", "auth/userpass/users/alice", ["token_ttl": "20m"]).status == 204)
        #expect(h.userLogin("alice", "new-pw").json?["auth"]?["lease_duration"] == 1200)

        // Usernames are lower-cased.
        #expect(h.wire("POST", "auth/userpass/users/Dave", ["password": "d-pw"]).status == 204)
        let dave = h.userLogin("dave", "d-pw")
        #expect(dave.status == 200 && dave.json?["auth"]?["metadata"] == ["username": "dave"])
        #expect(h.userLogin("DAVE", "d-pw").status == 200)
        #expect(h.wire("DELETE", "auth/userpass/users/dave").status == 204)
        #expect(h.userLogin("dave", "d-pw").status == 400)
        #expect(h.wire("DELETE", "auth/userpass/users/carol").status == 204)
    }

    @Test func errorsAreOpenBaos() throws {
        let h = try Harness()
        h.setUpUserpass()
        func error(_ path: String, _ body: JSONValue) -> (Int, [String]) {
            let r = h.wire("POST", "auth/userpass/\(path)", body)
            return (r.status, errors(r.json))
        }
        #expect(error("users/bob", [:]) == (400, ["must provide either password or password_hash"]))
        #expect(error("users/bob", ["password": ""]) == (400, ["must provide either password or password_hash"]))
        #expect(
            error("users/bob", ["password": "x", "password_hash": "$scrypt$"]) == (
                400, ["only one of password or password_hash may be provided"]
            )
        )
        // bcrypt is refused with a 400 that says what is accepted.
        let bcrypt = error(
            "users/bob",
            ["password_hash": "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"]
        )
        #expect(
            bcrypt.0 == 400 && bcrypt.1.first?.contains("bcrypt") == true
                && bcrypt.1.first?.contains("$scrypt$") == true
        )
        let garbage = error("users/bob", ["password_hash": "notahash"])
        #expect(garbage.0 == 400 && garbage.1.first?.hasPrefix("password_hash is not a valid scrypt hash") == true)
        let tooCostly = error(
            "users/bob",
            [
                "password_hash":
                    "$scrypt$ln=30,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            ]
        )
        #expect(tooCostly.0 == 400)
        #expect(
            error("users/ghost/password", ["password": "x"]) == (
                500, ["1 error occurred:\n\t* username does not exist\n\n"]
            )
        )
        #expect(
            error("users/ghost/policies", ["token_policies": "x"]) == (
                500, ["1 error occurred:\n\t* username does not exist\n\n"]
            )
        )
        let missing = h.wire("GET", "auth/userpass/users/ghost")
        #expect(missing.status == 404 && missing.json == ["errors": []])

        // A pre-computed scrypt hash is taken as it is.
        let hash = try PasswordHash.make(password: "hashed-pw").encoded
        #expect(h.wire("POST", "auth/userpass/users/pwhash", ["password_hash": .string(hash)]).status == 204)
        #expect(h.userLogin("pwhash", "hashed-pw").status == 200)
        #expect(h.userLogin("pwhash", hash).status == 400, "the hash is not the password")

        // Wrong password and unknown user: one status, one string. No password: OpenBao's 500.
        #expect(h.wire("POST", "auth/userpass/users/alice", ["password": "s3cret-pw"]).status == 204)
        let wrong = h.userLogin("alice", "nope")
        let unknown = h.userLogin("ghost", "nope")
        #expect(wrong.status == 400 && errors(wrong.json) == ["invalid username or password"])
        #expect(unknown.status == wrong.status && unknown.json == wrong.json)
        let noPassword = h.userLogin("alice", nil)
        #expect(noPassword.status == 500 && errors(noPassword.json) == ["missing password"])
        #expect(h.userLogin("ghost", nil).status == 500)
        #expect(h.wire("POST", "auth/userpass/users/a%20b", ["password": "x"]).status == 404)
        // Nothing is echoed, however large.
        let huge = String(repeating: "p", count: 1 << 20)
        let big = h.userLogin("alice", huge)
        #expect(big.status == 400 && errors(big.json) == ["invalid username or password"])
        let bigSet = h.wire("POST", "auth/userpass/users/alice/password", ["password": .string(huge)])
        #expect(bigSet.status == 400 && !(bigSet.json?.jsonString.contains("ppppp") ?? true))
    }

    /// The unknown-user path runs the KDF too: its cost is the wrong-password cost.
    @Test func unknownUserCostsWhatAWrongPasswordCosts() throws {
        let h = try Harness()
        h.setUpUserpass()
        #expect(h.wire("POST", "auth/userpass/users/alice", ["password": "s3cret-pw"]).status == 204)
        #expect(h.wire("POST", "sys/auth/userpass/tune", [:]).status == 204)
        func median(_ user: String, _ password: String) -> Double {
            var times: [Double] = []
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = h.userLogin(user, password)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            return times.sorted()[1]
        }
        // Three wrong passwords a round stay under the lockout threshold; a success resets the count.
        var ratios: [Double] = []
        for _ in 0..<3 {
            let wrong = median("alice", "wrong-pw")
            #expect(h.userLogin("alice", "s3cret-pw").status == 200)
            let unknown = median("nobody", "wrong-pw")
            let right = median("alice", "s3cret-pw")
            print(
                "userpass login cost (median of 3): correct \(right) ms, wrong password \(wrong) ms, unknown user \(unknown) ms"
            )
            ratios.append(unknown / wrong)
            #expect(unknown > 5 && wrong > 5, "both paths run scrypt")
        }
        #expect(ratios.contains { $0 > 0.5 && $0 < 2 }, "unknown/wrong ratios: \(ratios)")
    }

    @Test func lockoutAfterFiveFailuresUntilFifteenMinutesPass() throws {
        let h = try Harness()
        h.setUpUserpass()
        #expect(h.wire("POST", "auth/userpass/users/alice", ["password": "s3cret-pw"]).status == 204)
        // Failures below the threshold are forgotten at a success.
        for _ in 0..<4 { #expect(h.userLogin("alice", "bad").status == 400) }
        #expect(h.userLogin("alice", "s3cret-pw").status == 200)
        for _ in 0..<5 {
            let r = h.userLogin("alice", "bad")
            #expect(r.status == 400 && errors(r.json) == ["invalid username or password"])
        }
        // Locked: even the right password is refused, with OpenBao's 403, before the password is read.
        for password in ["s3cret-pw", "bad", nil] as [String?] {
            let locked = h.userLogin("ALICE", password)
            #expect(locked.status == 403 && errors(locked.json) == ["permission denied"])
        }
        // No KDF for a locked user: its refusal costs a fraction of an unknown user's (which runs
        // scrypt), compared by medians in the same run (the machine is shared and noisy).
        func median(_ user: String) -> Double {
            var times: [Double] = []
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = h.userLogin(user, "s3cret-pw")
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            return times.sorted()[1]
        }
        let locked = median("alice")
        let kdf = median("ghost")
        #expect(locked < kdf / 2, "locked \(locked) ms, unknown user \(kdf) ms")
        // Unknown users are not counted (as in OpenBao).
        for _ in 0..<4 { #expect(h.userLogin("ghost", "bad").status == 400) }

        h.clock.advance(seconds: 14 * 60)
        #expect(h.userLogin("alice", "s3cret-pw").status == 403)
        h.clock.advance(seconds: 61)
        #expect(h.userLogin("alice", "s3cret-pw").status == 200)
        // The count restarted: four more failures do not lock.
        for _ in 0..<4 { #expect(h.userLogin("alice", "bad").status == 400) }
        #expect(h.userLogin("alice", "s3cret-pw").status == 200)
        // Failures further apart than lockout_counter_reset (15 m) do not add up.
        for _ in 0..<4 { #expect(h.userLogin("alice", "bad").status == 400) }
        h.clock.advance(seconds: 16 * 60)
        for _ in 0..<4 { #expect(h.userLogin("alice", "bad").status == 400) }
        #expect(h.userLogin("alice", "s3cret-pw").status == 200)
    }

    @Test func aLockSurvivesARestart() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        var h: Harness? = try Harness(storage: .sqlite(path: path))
        h!.setUpUserpass()
        #expect(h!.wire("POST", "auth/userpass/users/alice", ["password": "s3cret-pw"]).status == 204)
        for _ in 0..<5 { _ = h!.userLogin("alice", "bad") }
        #expect(h!.userLogin("alice", "s3cret-pw").status == 403)
        let key = h!.unsealKey
        h!.vault.close()
        h = nil
        let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
        defer { vault.close() }
        try vault.unseal(key: key)
        let r = vault.core.handleWire(
            method: "POST",
            path: "auth/userpass/login/alice",
            token: nil,
            body: JSONValue.object(["password": "s3cret-pw"]).serialized()
        )
        #expect(r.status == 403)
    }

    @Test func lockoutConfigReadsTheTuneShapes() {
        #expect(LockoutConfig(nil) == LockoutConfig(.null))
        let defaults = LockoutConfig(nil)
        #expect(
            defaults.threshold == 5 && defaults.duration == 900 && defaults.counterReset == 900 && !defaults.disabled
        )
        let given = LockoutConfig([
            "lockout_threshold": "3", "lockout_duration": "5s", "lockout_counter_reset": "4s", "disable_lockout": false,
        ])
        #expect(given.threshold == 3 && given.duration == 5 && given.counterReset == 4)
        let listed = LockoutConfig([
            "user_lockout_threshold": 7, "user_lockout_duration": 60, "user_lockout_disable": true,
        ])
        #expect(listed.threshold == 7 && listed.duration == 60 && listed.disabled)
        #expect(LockoutConfig(["lockout_threshold": "many"]).threshold == 5)
    }

    @Test func storageHoldsNoPassword() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        let h = try Harness(storage: .sqlite(path: path))
        h.setUpUserpass()
        let password = "coffer-plain-password-4c2e91"
        #expect(h.wire("POST", "auth/userpass/users/alice", ["password": .string(password)]).status == 204)
        #expect(h.userLogin("alice", password).status == 200)
        let core = h.vault.core
        let uuid = try #require(try core.mounts(.auth).first { $0.path == "userpass/" }?.uuid)
        let stored = String(decoding: try core.barrier.get("auth/\(uuid)/user/alice") ?? [], as: UTF8.self)
        #expect(stored.contains("$scrypt$ln=14,r=8,p=1$"))
        #expect(!stored.contains(password))
        h.vault.close()
        let raw = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(raw.range(of: Data(password.utf8)) == nil)
    }

    @Test func scryptHashesRoundTripAndCarryTheirParameters() throws {
        let hash = try PasswordHash.make(password: "pw")
        #expect(hash.verify("pw") && !hash.verify("pw2") && !hash.verify(""))
        #expect(PasswordHash(encoded: hash.encoded) == hash)
        // Other parameters verify too: RFC 7914's test vector 2 (N=1024, r=8, p=16, salt "NaCl").
        let vector = PasswordHash.derive(
            Array("password".utf8),
            salt: Array("NaCl".utf8),
            logN: 10,
            r: 8,
            p: 16,
            length: 64
        )
        #expect(
            vector.map { Hex.encode($0) }
                == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
        )
        for bad in [
            "", "$scrypt$", "$scrypt$ln=15,r=8$AAAA$AAAA", "$scrypt$ln=15,r=8,p=1,ln=3$AAAAAAAAAAA=$AAAA", "$2b$10$abc",
        ] {
            #expect(PasswordHash(encoded: bad) == nil, "\(bad)")
        }
    }
}

extension UserpassTests {
    @Test func lockoutFollowsTheMountTune() throws {
        let h = try Harness()
        h.setUpUserpass()
        #expect(h.wire("POST", "auth/userpass/users/alice", ["password": "s3cret-pw"]).status == 204)
        let tune = h.wire(
            "POST",
            "sys/auth/userpass/tune",
            ["user_lockout_config": ["lockout_threshold": "2", "lockout_duration": "10m"]]
        )
        #expect(tune.status == 204)
        let read = h.wire("GET", "sys/auth/userpass/tune").json?["data"]
        #expect(read?["user_lockout_threshold"] == 2)
        #expect(read?["user_lockout_duration"] == 600)
        for _ in 0..<2 { #expect(h.userLogin("alice", "bad").status == 400) }
        #expect(h.userLogin("alice", "s3cret-pw").status == 403)
        h.clock.advance(seconds: 601)
        #expect(h.userLogin("alice", "s3cret-pw").status == 200)
        let bad = h.wire("POST", "sys/auth/userpass/tune", ["user_lockout_config": ["lockout_threshold": "abc"]])
        #expect(bad.status == 400)
        #expect(errors(bad.json).first?.hasPrefix("unable to parse user lockout threshold") == true)
    }
}
