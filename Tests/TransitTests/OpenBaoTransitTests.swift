import Coffer
import Engines
import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The same transit requests against a live `bao server -dev` (COFFER_BAO) and against Coffer's wire form:
/// the status codes and the response shapes (keys and JSON types, recursively) must match. Then keys cross
/// over in both directions through backup/restore, which checks the key formats, HKDF derivation and
/// convergent nonces byte for byte.
@Suite("Transit against OpenBao", .serialized)
struct OpenBaoTransitTests {
    typealias Step = (
        method: String, path: String, body: @Sendable ([String: JSONValue]) -> JSONValue?, save: [String: [String]]
    )

    static func step(_ method: String, _ path: String, _ body: JSONValue? = nil, save: [String: [String]] = [:]) -> Step
    {
        (method, path, { _ in body }, save)
    }

    static func step(
        _ method: String,
        _ path: String,
        save: [String: [String]] = [:],
        _ body: @escaping @Sendable ([String: JSONValue]) -> JSONValue?
    ) -> Step {
        (method, path, body, save)
    }

    /// The request sequence: what a new user would try, and the mistakes they would make.
    static let sequence: [Step] = [
        step("POST", "transit/keys/app", [:]),
        step("GET", "transit/keys/app"),
        step("POST", "transit/keys/app", ["type": "aes256-gcm96"]),
        step("POST", "transit/encrypt/app", ["plaintext": "aGVsbG8="], save: ["c1": ["data", "ciphertext"]]),
        step("POST", "transit/decrypt/app") { v in ["ciphertext": v["c1"]!] },
        step("POST", "transit/keys/app/rotate", [:]),
        step("POST", "transit/decrypt/app") { v in ["ciphertext": v["c1"]!] },
        step("POST", "transit/rewrap/app") { v in ["ciphertext": v["c1"]!] },
        step("POST", "transit/keys/app/config", ["min_decryption_version": 2]),
        step("POST", "transit/decrypt/app") { v in ["ciphertext": v["c1"]!] },
        step("POST", "transit/keys/app/config", ["min_decryption_version": 9]),
        step("POST", "transit/keys/app/config", ["auto_rotate_period": "10m"]),
        step("POST", "transit/keys/app/config", ["auto_rotate_period": "24h", "deletion_allowed": true]),
        step("POST", "transit/keys/app/trim", ["min_available_version": 2]),
        step(
            "POST",
            "transit/encrypt/app",
            ["batch_input": [["plaintext": "YQ==", "reference": "r"], ["plaintext": "!!"]]]
        ),
        step(
            "POST",
            "transit/encrypt/app",
            ["batch_input": [["plaintext": "YQ=="], ["plaintext": "!!"]], "partial_failure_response_code": 207]
        ),
        step("POST", "transit/decrypt/app", ["batch_input": [["ciphertext": "vault:v2:AAAA"]]]),
        step("POST", "transit/decrypt/app", ["ciphertext": "not-a-ciphertext"]),
        step("POST", "transit/decrypt/app", ["ciphertext": "vault:v99:AAAA"]),
        step("POST", "transit/decrypt/missing", ["ciphertext": "vault:v1:AAAA"]),
        step("POST", "transit/encrypt/app", ["plaintext": "%%%"]),
        step("POST", "transit/encrypt/app", [:]),
        step("POST", "transit/datakey/plaintext/app", [:]),
        step("POST", "transit/datakey/wrapped/app", ["bits": 128]),
        step("POST", "transit/datakey/other/app", [:]),
        step("POST", "transit/hmac/app", ["input": "aGVsbG8="], save: ["h": ["data", "hmac"]]),
        step("POST", "transit/verify/app") { v in ["input": "aGVsbG8=", "hmac": v["h"]!] },
        step("POST", "transit/hmac/app/sha2-512", ["batch_input": [["input": "aGVsbG8="], ["input": "!"]]]),
        step("POST", "transit/sign/app", ["input": "aGVsbG8="]),
        step("LIST", "transit/keys"),
        step("DELETE", "transit/keys/app"),
        step("GET", "transit/keys/app"),
        step("POST", "transit/keys/ed", ["type": "ed25519", "exportable": true]),
        step("POST", "transit/sign/ed", ["input": "aGVsbG8="], save: ["s": ["data", "signature"]]),
        step("POST", "transit/verify/ed") { v in ["input": "aGVsbG8=", "signature": v["s"]!] },
        step("POST", "transit/verify/ed", ["input": "aGVsbG8="]),
        step("POST", "transit/sign/ed", ["batch_input": [["input": "YQ=="], ["input": "!"]]]),
        step("GET", "transit/export/public-key/ed"),
        step("GET", "transit/export/signing-key/ed"),
        step("GET", "transit/export/encryption-key/ed"),
        step("GET", "transit/export/nonsense/ed"),
        step("POST", "transit/encrypt/ed", ["plaintext": "YQ=="]),
        step("POST", "transit/keys/ec", ["type": "ecdsa-p256"]),
        step("GET", "transit/keys/ec"),
        step(
            "POST",
            "transit/sign/ec/sha2-384",
            ["input": "aGVsbG8=", "marshaling_algorithm": "jws"],
            save: ["e": ["data", "signature"]]
        ),
        step("POST", "transit/verify/ec/sha2-384") { v in
            ["input": "aGVsbG8=", "signature": v["e"]!, "marshaling_algorithm": "jws"]
        },
        step("POST", "transit/keys/rsa", ["type": "rsa-2048"]),
        step(
            "POST",
            "transit/sign/rsa",
            ["input": "aGVsbG8=", "signature_algorithm": "pkcs1v15"],
            save: ["r": ["data", "signature"]]
        ),
        step("POST", "transit/verify/rsa") { v in
            ["input": "aGVsbG8=", "signature": v["r"]!, "signature_algorithm": "pkcs1v15"]
        },
        step("POST", "transit/encrypt/rsa", ["plaintext": "aGVsbG8="], save: ["rc": ["data", "ciphertext"]]),
        step("POST", "transit/decrypt/rsa") { v in ["ciphertext": v["rc"]!] },
        step("POST", "transit/keys/mac", ["type": "hmac", "key_size": 32]),
        step("GET", "transit/keys/mac"),
        step("POST", "transit/keys/cc", ["type": "chacha20-poly1305", "derived": true, "convergent_encryption": true]),
        step("POST", "transit/encrypt/cc", ["plaintext": "aGVsbG8="]),
        step("POST", "transit/encrypt/cc", ["plaintext": "aGVsbG8=", "context": "dXNlcg=="]),
        step("POST", "transit/keys/bad", ["convergent_encryption": true]),
        step("POST", "transit/keys/bad", ["type": "nope"]),
        step("POST", "transit/random/16", ["format": "hex"]),
        step("POST", "transit/random/999999", [:]),
        step("POST", "transit/hash/sha2-512", ["input": "aGVsbG8="]),
        step("POST", "transit/hash", ["input": "aGVsbG8=", "format": "bin"]),
    ]

    /// Leaves replaced by their JSON type: what must match between the two servers.
    static func shape(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let o): .object(o.mapValues(shape))
        case .array(let a): .array(a.map(shape))
        default: .string(value.typeName)
        }
    }

    static func dig(_ value: JSONValue?, _ path: [String]) -> JSONValue? {
        path.reduce(value) { $0?[$1] }
    }

    @Test func sameShapesAsOpenBao() async throws {
        let bao = try await LiveOpenBao.start()
        defer { bao.stop() }
        let t = try Transit()
        #expect(try await bao.request("POST", "sys/mounts/transit", ["type": "transit"]).status == 204)
        var baoVars: [String: JSONValue] = [:]
        var cofferVars: [String: JSONValue] = [:]
        for step in Self.sequence {
            let baoBody = step.body(baoVars)
            let cofferBody = step.body(cofferVars)
            let live = try await bao.request(step.method, step.path, baoBody)
            let ours = t.wire(step.method, step.path, cofferBody)
            let what = "\(step.method) \(step.path)"
            #expect(
                ours.status == live.status,
                "\(what): Coffer \(ours.status) \(ours.json?.jsonString ?? ""), OpenBao \(live.status) \(live.json?.jsonString ?? "")"
            )
            // Error messages may be worded differently; the shape {"errors": [string]} may not.
            #expect(
                ours.json.map(Self.shape) == live.json.map(Self.shape),
                "\(what): Coffer \(ours.json?.jsonString ?? "nil") vs OpenBao \(live.json?.jsonString ?? "nil")"
            )
            for (name, path) in step.save {
                baoVars[name] = Self.dig(live.json, path)
                cofferVars[name] = Self.dig(ours.json, path)
            }
        }
    }

    @Test func keysCrossOverThroughBackupAndRestore() async throws {
        let bao = try await LiveOpenBao.start()
        defer { bao.stop() }
        let t = try Transit()
        #expect(try await bao.request("POST", "sys/mounts/transit", ["type": "transit"]).status == 204)
        let settings: JSONValue = ["exportable": true, "allow_plaintext_backup": true]

        // OpenBao → Coffer: OpenBao's ciphertexts decrypt and its signatures verify here.
        for type in [
            "aes256-gcm96", "aes128-gcm96", "chacha20-poly1305", "rsa-2048", "ed25519", "ecdsa-p256", "ecdsa-p521",
            "hmac",
        ] {
            var body = settings.objectValue!
            body["type"] = .string(type)
            if type == "hmac" { body["key_size"] = 48 }
            #expect(try await bao.request("POST", "transit/keys/from-bao-\(type)", .object(body)).status == 200)
            _ = try await bao.request("POST", "transit/keys/from-bao-\(type)/rotate", [:])
            let backup = try #require(
                try await bao.request("GET", "transit/backup/from-bao-\(type)").json?["data"]?["backup"]
            )
            let restored = t.wire("POST", "transit/restore", ["backup": backup])
            #expect(restored.status == 204, "restoring OpenBao's \(type) backup: \(restored.json?.jsonString ?? "")")
            if ["aes256-gcm96", "aes128-gcm96", "chacha20-poly1305", "rsa-2048"].contains(type) {
                let sealed = try #require(
                    try await bao.request(
                        "POST",
                        "transit/encrypt/from-bao-\(type)",
                        ["plaintext": "aGVsbG8=", "key_version": 1]
                    ).json?["data"]?["ciphertext"]
                )
                #expect(
                    try t.ok("POST", "transit/decrypt/from-bao-\(type)", ["ciphertext": sealed])["plaintext"]
                        == "aGVsbG8=",
                    "\(type)"
                )
                let ours = try t.ok("POST", "transit/encrypt/from-bao-\(type)", ["plaintext": "aGVsbG8="])[
                    "ciphertext"
                ]!
                #expect(
                    try await bao.request("POST", "transit/decrypt/from-bao-\(type)", ["ciphertext": ours]).json?[
                        "data"
                    ]?["plaintext"] == "aGVsbG8="
                )
            }
            if ["rsa-2048", "ed25519", "ecdsa-p256", "ecdsa-p521"].contains(type) {
                let signature = try #require(
                    try await bao.request("POST", "transit/sign/from-bao-\(type)", ["input": "aGVsbG8="]).json?[
                        "data"
                    ]?["signature"]
                )
                #expect(
                    try t.ok("POST", "transit/verify/from-bao-\(type)", ["input": "aGVsbG8=", "signature": signature])[
                        "valid"
                    ] == true,
                    "\(type)"
                )
            }
            if type == "ed25519" {
                // Ed25519 signatures are deterministic: the same key signs the same message identically.
                let theirs = try await bao.request("POST", "transit/sign/from-bao-ed25519", ["input": "aGk="]).json?[
                    "data"
                ]?["signature"]
                #expect(try t.ok("POST", "transit/sign/from-bao-ed25519", ["input": "aGk="])["signature"] == theirs)
            }
            let mac = try await bao.request("POST", "transit/hmac/from-bao-\(type)", ["input": "aGVsbG8="]).json?[
                "data"
            ]?["hmac"]
            #expect(
                try t.ok("POST", "transit/hmac/from-bao-\(type)", ["input": "aGVsbG8="])["hmac"] == mac,
                "\(type) HMAC"
            )
        }

        // Derived, convergent keys: HKDF and the convergent nonce match byte for byte.
        #expect(
            try await bao.request(
                "POST",
                "transit/keys/conv",
                ["derived": true, "convergent_encryption": true, "exportable": true, "allow_plaintext_backup": true]
            ).status == 200
        )
        let convBackup = try #require(try await bao.request("GET", "transit/backup/conv").json?["data"]?["backup"])
        #expect(t.wire("POST", "transit/restore", ["backup": convBackup]).status == 204)
        let theirs = try await bao.request(
            "POST",
            "transit/encrypt/conv",
            ["plaintext": "aGVsbG8=", "context": "dXNlci0x"]
        ).json?["data"]?["ciphertext"]
        #expect(
            try t.ok("POST", "transit/encrypt/conv", ["plaintext": "aGVsbG8=", "context": "dXNlci0x"])["ciphertext"]
                == theirs
        )
        _ = try await bao.request(
            "POST",
            "transit/keys/ed-derived",
            ["type": "ed25519", "derived": true, "exportable": true, "allow_plaintext_backup": true]
        )
        let edBackup = try #require(try await bao.request("GET", "transit/backup/ed-derived").json?["data"]?["backup"])
        #expect(t.wire("POST", "transit/restore", ["backup": edBackup]).status == 204)
        let edTheirs = try await bao.request(
            "POST",
            "transit/sign/ed-derived",
            ["input": "aGk=", "context": "dGVuYW50"]
        ).json?["data"]?["signature"]
        #expect(
            try t.ok("POST", "transit/sign/ed-derived", ["input": "aGk=", "context": "dGVuYW50"])["signature"]
                == edTheirs
        )

        // Coffer → OpenBao.
        for type in ["aes256-gcm96", "rsa-3072", "ecdsa-p384", "ed25519"] {
            var body = settings.objectValue!
            body["type"] = .string(type)
            _ = try t.ok("POST", "transit/keys/to-bao-\(type)", .object(body))
            _ = try t.ok("POST", "transit/keys/to-bao-\(type)/rotate", [:])
            let backup = try t.ok("GET", "transit/backup/to-bao-\(type)")["backup"]!
            let restored = try await bao.request("POST", "transit/restore", ["backup": backup])
            #expect(
                restored.status == 204,
                "OpenBao restoring Coffer's \(type) backup: \(restored.json?.jsonString ?? "")"
            )
            if type == "aes256-gcm96" || type == "rsa-3072" {
                let sealed = try t.ok(
                    "POST",
                    "transit/encrypt/to-bao-\(type)",
                    ["plaintext": "aGVsbG8=", "key_version": 1]
                )["ciphertext"]!
                #expect(
                    try await bao.request("POST", "transit/decrypt/to-bao-\(type)", ["ciphertext": sealed]).json?[
                        "data"
                    ]?["plaintext"] == "aGVsbG8=",
                    "\(type)"
                )
            } else {
                let signature = try t.ok("POST", "transit/sign/to-bao-\(type)", ["input": "aGVsbG8="])["signature"]!
                #expect(
                    try await bao.request(
                        "POST",
                        "transit/verify/to-bao-\(type)",
                        ["input": "aGVsbG8=", "signature": signature]
                    ).json?["data"]?["valid"] == true,
                    "\(type)"
                )
            }
        }
    }
}
