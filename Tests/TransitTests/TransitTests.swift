import Coffer
import CofferCore
import Foundation
import Synchronization
import Testing

@testable import Engines

@Suite struct TransitTests {
    static let encryptionTypes = [
        "aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "rsa-2048", "rsa-3072", "rsa-4096",
    ]
    static let signingTypes = ["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096"]

    @Test(arguments: encryptionTypes)
    func encryptDecryptRoundTrip(type: String) throws {
        let t = try Transit()
        let created = try t.ok("POST", "transit/keys/k", ["type": .string(type)])
        #expect(
            created["type"] == .string(type) && created["supports_encryption"] == true && created["latest_version"] == 1
        )
        for message in ["", "hello", String(repeating: "x", count: 150)] {
            let sealed = try t.ok("POST", "transit/encrypt/k", ["plaintext": b64(message)])
            let ciphertext = try #require(sealed["ciphertext"]?.stringValue)
            #expect(ciphertext.hasPrefix("vault:v1:") && sealed["key_version"] == 1)
            let opened = try t.ok("POST", "transit/decrypt/k", ["ciphertext": .string(ciphertext)])
            #expect(unb64(opened["plaintext"]) == Array(message.utf8))
        }
    }

    @Test(arguments: signingTypes)
    func signVerifyRoundTrip(type: String) throws {
        let t = try Transit()
        let created = try t.ok("POST", "transit/keys/s", ["type": .string(type)])
        #expect(created["supports_signing"] == true)
        #expect(created["keys"]?["1"]?["public_key"]?.stringValue?.isEmpty == false)
        let input = b64("the message")
        var variants: [JSONValue] = [["input": input]]
        if type.hasPrefix("ecdsa") {
            variants.append(["input": input, "marshaling_algorithm": "jws", "hash_algorithm": "sha2-512"])
        }
        if type.hasPrefix("rsa") {
            variants.append(["input": input, "signature_algorithm": "pkcs1v15", "hash_algorithm": "sha2-384"])
            variants.append(["input": input, "signature_algorithm": "pss", "salt_length": "hash"])
        }
        for body in variants {
            let signed = try t.ok("POST", "transit/sign/s", body)
            let signature = try #require(signed["signature"]?.stringValue)
            #expect(signature.hasPrefix("vault:v1:") && signed["key_version"] == 1)
            var check = body.objectValue!
            check["signature"] = .string(signature)
            #expect(try t.ok("POST", "transit/verify/s", .object(check))["valid"] == true)
            check["input"] = b64("another message")
            #expect(try t.ok("POST", "transit/verify/s", .object(check))["valid"] == false)
        }
    }

    @Test func hmacKeysAndVerify() throws {
        let t = try Transit()
        let created = try t.ok("POST", "transit/keys/h", ["type": "hmac", "key_size": 64])
        #expect(created["key_size"] == 64 && created["keys"] == nil && created["supports_signing"] == false)
        for algorithm in ["sha2-256", "sha2-512", "sha3-256"] {
            let mac = try #require(
                try t.ok("POST", "transit/hmac/h/\(algorithm)", ["input": b64("data")])["hmac"]?.stringValue
            )
            #expect(mac.hasPrefix("vault:v1:"))
            #expect(
                try t.ok("POST", "transit/verify/h/\(algorithm)", ["input": b64("data"), "hmac": .string(mac)])["valid"]
                    == true
            )
            #expect(
                try t.ok("POST", "transit/verify/h/\(algorithm)", ["input": b64("datA"), "hmac": .string(mac)])["valid"]
                    == false
            )
        }
        // Every key type can HMAC with its own per-version HMAC key.
        _ = try t.ok("POST", "transit/keys/a", [:])
        #expect(
            try t.ok("POST", "transit/hmac/a", ["input": b64("x")])["hmac"]?.stringValue?.hasPrefix("vault:v1:") == true
        )
    }

    @Test func rotationMinDecryptionVersionRewrapAndTrim() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/k", [:])
        let v1 = try #require(
            try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("old")])["ciphertext"]?.stringValue
        )
        let rotated = try t.ok("POST", "transit/keys/k/rotate", [:])
        #expect(rotated["latest_version"] == 2 && rotated["keys"]?.objectValue?.count == 2)
        let v2 = try #require(
            try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("new")])["ciphertext"]?.stringValue
        )
        #expect(v2.hasPrefix("vault:v2:"))
        // Old ciphertext still decrypts, and rewraps to the latest version without exposing the plaintext.
        #expect(
            unb64(try t.ok("POST", "transit/decrypt/k", ["ciphertext": .string(v1)])["plaintext"]) == Array("old".utf8)
        )
        let rewrapped = try t.ok("POST", "transit/rewrap/k", ["ciphertext": .string(v1)])
        #expect(rewrapped["key_version"] == 2)
        let v1Rewrapped = try #require(rewrapped["ciphertext"]?.stringValue)
        #expect(
            unb64(try t.ok("POST", "transit/decrypt/k", ["ciphertext": .string(v1Rewrapped)])["plaintext"])
                == Array("old".utf8)
        )
        // Encrypting with an explicit older version is allowed until min_encryption_version.
        #expect(try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("x"), "key_version": 1])["key_version"] == 1)

        let config = try t.ok("POST", "transit/keys/k/config", ["min_decryption_version": 2])
        #expect(config["min_decryption_version"] == 2 && config["keys"]?.objectValue?.keys.sorted() == ["2"])
        #expect(t.fails("POST", "transit/decrypt/k", ["ciphertext": .string(v1)]).contains("too old"))
        #expect(
            unb64(try t.ok("POST", "transit/decrypt/k", ["ciphertext": .string(v2)])["plaintext"]) == Array("new".utf8)
        )
        #expect(
            t.fails("POST", "transit/keys/k/config", ["min_decryption_version": 5]).contains("latest key version is 2")
        )
        #expect(
            t.fails("POST", "transit/keys/k/config", ["min_encryption_version": 1]).contains(
                "greater than or equal to min decryption"
            )
        )

        #expect(
            t.fails("POST", "transit/keys/k/trim", ["min_available_version": 2]).contains(
                "minimum encryption version is not set"
            )
        )
        _ = try t.ok("POST", "transit/keys/k/config", ["min_encryption_version": 2])
        let trimmed = try t.ok("POST", "transit/keys/k/trim", ["min_available_version": 2])
        #expect(trimmed["min_available_version"] == 2)
        // Version 1 is gone for good: lowering min_decryption_version cannot bring it back.
        #expect(t.fails("POST", "transit/keys/k/config", ["min_decryption_version": 1]).contains("trimmed"))
        #expect(t.fails("POST", "transit/decrypt/k", ["ciphertext": .string(v1)]).contains("too old"))
    }

    @Test func autoRotatePeriodRotatesOnUse() throws {
        let t = try Transit()
        #expect(t.fails("POST", "transit/keys/k", ["auto_rotate_period": "10m"]).contains("at least an hour"))
        let created = try t.ok("POST", "transit/keys/k", ["auto_rotate_period": "1h"])
        #expect(created["auto_rotate_period"] == 3600)
        let before = try #require(
            try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("a")])["ciphertext"]?.stringValue
        )
        #expect(before.hasPrefix("vault:v1:"))
        t.clock.advance(seconds: 3599)
        #expect(try t.ok("GET", "transit/keys/k")["latest_version"] == 1)
        t.clock.advance(seconds: 1)
        #expect(try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("a")])["key_version"] == 2)
        #expect(try t.ok("GET", "transit/keys/k")["latest_version"] == 2)
        #expect(
            unb64(try t.ok("POST", "transit/decrypt/k", ["ciphertext": .string(before)])["plaintext"])
                == Array("a".utf8)
        )
        // Turning it off stops rotation.
        _ = try t.ok("POST", "transit/keys/k/config", ["auto_rotate_period": 0])
        t.clock.advance(seconds: 10 * 3600)
        #expect(try t.ok("GET", "transit/keys/k")["latest_version"] == 2)
    }

    @Test func derivedAndConvergentKeys() throws {
        let t = try Transit()
        #expect(t.fails("POST", "transit/keys/c", ["convergent_encryption": true]).contains("requires derivation"))
        let created = try t.ok("POST", "transit/keys/c", ["derived": true, "convergent_encryption": true])
        #expect(created["kdf"] == "hkdf_sha256" && created["convergent_encryption"] == true)
        #expect(t.fails("POST", "transit/encrypt/c", ["plaintext": b64("p")]).contains("missing 'context'"))
        let a = try t.ok("POST", "transit/encrypt/c", ["plaintext": b64("p"), "context": b64("user-1")])["ciphertext"]
        let b = try t.ok("POST", "transit/encrypt/c", ["plaintext": b64("p"), "context": b64("user-1")])["ciphertext"]
        let c = try t.ok("POST", "transit/encrypt/c", ["plaintext": b64("p"), "context": b64("user-2")])["ciphertext"]
        #expect(a == b && a != c, "convergent encryption: same plaintext and context give the same ciphertext")
        #expect(
            unb64(try t.ok("POST", "transit/decrypt/c", ["ciphertext": a!, "context": b64("user-1")])["plaintext"])
                == Array("p".utf8)
        )
        #expect(
            t.fails("POST", "transit/decrypt/c", ["ciphertext": a!, "context": b64("user-2")]).contains(
                "authentication failed"
            )
        )

        _ = try t.ok("POST", "transit/keys/d", ["derived": true])
        let d1 = try t.ok("POST", "transit/encrypt/d", ["plaintext": b64("p"), "context": b64("ctx")])["ciphertext"]
        let d2 = try t.ok("POST", "transit/encrypt/d", ["plaintext": b64("p"), "context": b64("ctx")])["ciphertext"]
        #expect(d1 != d2, "derived but not convergent: random nonces")

        _ = try t.ok("POST", "transit/keys/e", ["type": "ed25519", "derived": true])
        let sig = try t.ok("POST", "transit/sign/e", ["input": b64("m"), "context": b64("tenant-a")])["signature"]
        #expect(
            try t.ok("POST", "transit/verify/e", ["input": b64("m"), "context": b64("tenant-a"), "signature": sig!])[
                "valid"
            ] == true
        )
        #expect(
            try t.ok("POST", "transit/verify/e", ["input": b64("m"), "context": b64("tenant-b"), "signature": sig!])[
                "valid"
            ] == false
        )
        #expect(t.fails("POST", "transit/keys/r", ["type": "rsa-2048", "derived": true]).contains("not supported"))
    }

    @Test func badInputIsA400WithAClearMessage() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/k", [:])
        _ = try t.ok("POST", "transit/keys/other", [:])
        _ = try t.ok("POST", "transit/keys/ec", ["type": "ecdsa-p256"])
        let good = try #require(
            try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("secret")])["ciphertext"]?.stringValue
        )
        var tampered = Array(good.utf8)
        // A character in the middle: every bit of it is data (the last ones may be padding bits).
        let middle = tampered.count / 2 + 4
        tampered[middle] = tampered[middle] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let cases: [(String, JSONValue, String)] = [
            ("decrypt/nokey", ["ciphertext": .string(good)], "encryption key not found"),
            ("sign/nokey", ["input": b64("x")], "signing key not found"),
            ("encrypt/ec", ["plaintext": b64("x")], "not supported for key type ecdsa-p256"),
            ("sign/k", ["input": b64("x")], "does not support signing"),
            ("encrypt/k", ["plaintext": "not base64!"], "base64"),
            ("encrypt/k", [:], "missing plaintext"),
            ("decrypt/k", ["ciphertext": "vault:v1:@@@"], "could not decode base64"),
            ("decrypt/k", ["ciphertext": "plain text"], "no prefix"),
            ("decrypt/k", ["ciphertext": "vault:vX:AAAA"], "version number"),
            ("decrypt/k", ["ciphertext": "vault:v7:AAAA"], "version is too new"),
            ("decrypt/k", ["ciphertext": "vault:v1:AAAA"], "invalid ciphertext length"),
            ("decrypt/other", ["ciphertext": .string(good)], "authentication failed"),
            ("decrypt/k", ["ciphertext": .string(String(decoding: tampered, as: UTF8.self))], "authentication failed"),
            ("keys/bad", ["type": "aes512"], "not a known key type"),
            ("hash/md5", ["input": b64("x")], "not a supported hash algorithm"),
            ("random/999999", [:], "131072"),
            ("datakey/raw/k", [:], "'plaintext' or 'wrapped'"),
            ("encrypt/k", ["plaintext": b64("x"), "key_version": 9], "higher than the latest"),
        ]
        for (path, body, message) in cases {
            let text = t.fails("POST", "transit/\(path)", body)
            #expect(text.contains(message), "\(path): \(text)")
            #expect(!text.contains("secret"), "an error must not echo plaintext")
        }
        #expect(t.fails("DELETE", "transit/keys/k").contains("deletion is not allowed"))
        #expect(t.fails("GET", "transit/export/encryption-key/k").contains("not exportable"))
        #expect(t.fails("GET", "transit/backup/k").contains("exportable"))
        #expect(t.fails("POST", "transit/keys/bad%20name", [:]).contains("invalid key name"))
        #expect(t.wire("GET", "transit/keys/nokey").status == 404)
        // Nothing stored was lost along the way.
        #expect(
            unb64(try t.ok("POST", "transit/decrypt/k", ["ciphertext": .string(good)])["plaintext"])
                == Array("secret".utf8)
        )
    }

    @Test func batchItemsFailAlone() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/k", [:])
        let r = t.wire(
            "POST",
            "transit/encrypt/k",
            [
                "batch_input": [
                    ["plaintext": b64("a"), "reference": "one"], ["plaintext": "!!"], ["plaintext": b64("c")],
                ]
            ]
        )
        #expect(r.status == 400, "Vault answers 400 when any item failed")
        let results = try #require(r.json?["data"]?["batch_results"]?.arrayValue)
        #expect(
            results.count == 3 && results[0]["reference"] == "one"
                && results[1]["error"]?.stringValue?.contains("base64") == true
        )
        #expect(results[0]["ciphertext"] != nil && results[2]["ciphertext"] != nil && results[1]["ciphertext"] == nil)
        let partial = t.wire(
            "POST",
            "transit/encrypt/k",
            ["batch_input": [["plaintext": b64("a")], ["plaintext": "!!"]], "partial_failure_response_code": 207]
        )
        #expect(partial.status == 207)

        let decrypted = t.wire(
            "POST",
            "transit/decrypt/k",
            [
                "batch_input": [
                    ["ciphertext": results[0]["ciphertext"]!], ["ciphertext": "vault:v1:AAAA"],
                    ["ciphertext": results[2]["ciphertext"]!],
                ]
            ]
        )
        let opened = try #require(decrypted.json?["data"]?["batch_results"]?.arrayValue)
        #expect(unb64(opened[0]["plaintext"]) == Array("a".utf8) && unb64(opened[2]["plaintext"]) == Array("c".utf8))
        #expect(opened[1]["error"]?.stringValue == "invalid ciphertext length" && opened[1]["plaintext"] == "")

        _ = try t.ok("POST", "transit/keys/s", ["type": "ed25519"])
        let signed = try t.ok("POST", "transit/sign/s", ["batch_input": [["input": b64("a")], ["input": "!"]]])[
            "batch_results"
        ]
        #expect(signed?[0]?["signature"] != nil && signed?[1]?["error"] != nil && signed?[1]?["key_version"] == 0)
        let verified = try t.ok(
            "POST",
            "transit/verify/s",
            [
                "batch_input": [
                    ["input": b64("a"), "signature": signed![0]!["signature"]!],
                    ["input": b64("b"), "signature": signed![0]!["signature"]!],
                ]
            ]
        )["batch_results"]
        #expect(verified?[0]?["valid"] == true && verified?[1]?["valid"] == false)
    }

    @Test func dataKeysRandomAndHash() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/k", [:])
        let plain = try t.ok("POST", "transit/datakey/plaintext/k", ["bits": 512])
        #expect(unb64(plain["plaintext"])?.count == 64)
        #expect(
            try t.ok("POST", "transit/decrypt/k", ["ciphertext": plain["ciphertext"]!])["plaintext"]
                == plain["plaintext"]
        )
        let wrapped = try t.ok("POST", "transit/datakey/wrapped/k", [:])
        #expect(wrapped["plaintext"] == nil && wrapped["ciphertext"]?.stringValue?.hasPrefix("vault:v1:") == true)
        #expect(try t.ok("POST", "transit/random/16", ["format": "hex"])["random_bytes"]?.stringValue?.count == 32)
        #expect(unb64(try t.ok("POST", "transit/random", [:])["random_bytes"])?.count == 32)
        // FIPS 180-2 "abc" vectors.
        #expect(
            try t.ok("POST", "transit/hash", ["input": b64("abc")])["sum"]
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        #expect(
            try t.ok("POST", "transit/hash/sha2-512", ["input": b64("abc"), "format": "base64"])["sum"]
                == b64(
                    hex(
                        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
                    )
                )
        )
    }

    @Test func exportBackupAndRestore() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/k", ["exportable": true, "allow_plaintext_backup": true])
        _ = try t.ok("POST", "transit/keys/k/rotate", [:])
        let exported = try t.ok("GET", "transit/export/encryption-key/k")
        #expect(
            exported["keys"]?.objectValue?.keys.sorted() == ["1", "2"] && unb64(exported["keys"]?["2"])?.count == 32
        )
        #expect(try t.ok("GET", "transit/export/hmac-key/k/latest")["keys"]?.objectValue?.keys.sorted() == ["2"])
        let c1 = try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("one"), "key_version": 1])["ciphertext"]!
        let c2 = try t.ok("POST", "transit/encrypt/k", ["plaintext": b64("two")])["ciphertext"]!
        let backup = try #require(try t.ok("GET", "transit/backup/k")["backup"])

        // Restore into another vault under a new name: both versions and the settings come back.
        let other = try Transit()
        #expect(other.wire("POST", "transit/restore/copy", ["backup": backup]).status == 204)
        let restored = try other.ok("GET", "transit/keys/copy")
        #expect(restored["latest_version"] == 2 && restored["exportable"] == true && restored["name"] == "copy")
        #expect(
            unb64(try other.ok("POST", "transit/decrypt/copy", ["ciphertext": c1])["plaintext"]) == Array("one".utf8)
        )
        #expect(
            unb64(try other.ok("POST", "transit/decrypt/copy", ["ciphertext": c2])["plaintext"]) == Array("two".utf8)
        )
        #expect(other.fails("POST", "transit/restore/copy", ["backup": backup]).contains("already exists"))
        #expect(other.wire("POST", "transit/restore/copy", ["backup": backup, "force": true]).status == 204)
        #expect(other.fails("POST", "transit/restore", ["backup": "bm9wZQ=="]).contains("not a transit key backup"))

        // Asymmetric keys too.
        for type in ["ed25519", "ecdsa-p384", "rsa-2048"] {
            _ = try t.ok(
                "POST",
                "transit/keys/\(type)",
                ["type": .string(type), "exportable": true, "allow_plaintext_backup": true]
            )
            let sig = try t.ok("POST", "transit/sign/\(type)", ["input": b64("m")])["signature"]!
            let data = try t.ok("GET", "transit/backup/\(type)")["backup"]!
            let restored = other.wire("POST", "transit/restore", ["backup": data])
            #expect(restored.status == 204, "\(restored.json?.jsonString ?? "")")
            #expect(
                try other.ok("POST", "transit/verify/\(type)", ["input": b64("m"), "signature": sig])["valid"] == true,
                "\(type)"
            )
            #expect(
                try other.ok("GET", "transit/export/public-key/\(type)")["keys"]
                    == (try t.ok("GET", "transit/export/public-key/\(type)")["keys"])
            )
        }
    }

    @Test func deletionNeedsDeletionAllowed() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/k", [:])
        _ = try t.ok("POST", "transit/keys/k2", [:])
        #expect(try t.ok("LIST", "transit/keys")["keys"] == ["k", "k2"])
        _ = try t.ok("POST", "transit/keys/k/config", ["deletion_allowed": true])
        #expect(t.wire("DELETE", "transit/keys/k").status == 204)
        #expect(t.wire("GET", "transit/keys/k").status == 404)
        #expect(try t.ok("LIST", "transit/keys")["keys"] == ["k2"])
    }

    @Test func encryptCreatesMissingKeyOnlyWithCreateCapability() throws {
        let t = try Transit()
        #expect(
            t.wire(
                "POST",
                "sys/policies/acl/update-only",
                ["policy": #"path "transit/encrypt/*" { capabilities = ["update"] }"#]
            ).status == 204
        )
        #expect(
            t.wire(
                "POST",
                "sys/policies/acl/create",
                ["policy": #"path "transit/encrypt/*" { capabilities = ["create", "update"] }"#]
            ).status == 204
        )
        let updater = try #require(
            t.wire("POST", "auth/token/create", ["policies": ["update-only"]]).json?["auth"]?["client_token"]?
                .stringValue
        )
        let creator = try #require(
            t.wire("POST", "auth/token/create", ["policies": ["create"]]).json?["auth"]?["client_token"]?.stringValue
        )
        #expect(t.wire("POST", "transit/encrypt/fresh", ["plaintext": b64("x")], token: updater).status == 403)
        #expect(t.wire("POST", "transit/encrypt/fresh", ["plaintext": b64("x")], token: creator).status == 200)
        #expect(try t.ok("GET", "transit/keys/fresh")["type"] == "aes256-gcm96")
        #expect(t.wire("POST", "transit/encrypt/fresh", ["plaintext": b64("x")], token: updater).status == 200)
    }

    @Test func keysSurviveSealAndUnseal() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-transit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (vault, unsealKey) = try Vault.openDev(storage: .sqlite(path: dir.appendingPathComponent("db").path))
        _ = vault.core.handleWire(
            method: "POST",
            path: "sys/mounts/transit",
            token: "root",
            body: Array(#"{"type":"transit"}"#.utf8)
        )
        _ = vault.core.handleWire(method: "POST", path: "transit/keys/k", token: "root", body: [])
        let sealed = try TransitClient(core: vault.core, mount: "transit", token: "root").encrypt(
            key: "k",
            plaintext: Array("kept".utf8)
        )
        vault.seal()
        #expect(throws: CofferError.sealedError) {
            try TransitClient(core: vault.core, mount: "transit", token: "root").decrypt(key: "k", ciphertext: sealed)
        }
        _ = try vault.unseal(key: unsealKey)
        #expect(
            try TransitClient(core: vault.core, mount: "transit", token: "root").decrypt(key: "k", ciphertext: sealed)
                == Array("kept".utf8)
        )
        // The key material is not in the database file in the clear.
        vault.close()
        let file = try Data(contentsOf: dir.appendingPathComponent("db"))
        #expect(file.range(of: Data("aes256-gcm96".utf8)) == nil)
    }

    /// A version's expanded key is made on first use by whichever thread gets there first: threads
    /// racing to use a fresh key, and a rotation mid-way, all seal what every other opens.
    @Test func threadsRacingOnAFreshKeyAllSealAndOpen() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/raced", [:])
        let client = TransitClient(core: t.vault.core, mount: "transit", token: "root")
        let sealed = Mutex<[(Int, [UInt8])]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for i in 0..<40 {
                if thread == 0, i == 20 { _ = try? t.ok("POST", "transit/keys/raced/rotate", [:]) }
                if let out = try? client.encrypt(key: "raced", plaintext: Array("\(thread)-\(i)".utf8)) {
                    sealed.withLock { $0.append((thread * 100 + i, out)) }
                }
            }
        }
        let all = sealed.withLock { $0 }
        #expect(all.count == 320)
        #expect(all.contains { String(decoding: $0.1, as: UTF8.self).hasPrefix("vault:v2:") })
        for (tag, ciphertext) in all {
            #expect(try client.decrypt(key: "raced", ciphertext: ciphertext) == Array("\(tag / 100)-\(tag % 100)".utf8))
        }
    }

    /// A stored AEAD key of the wrong length (a bug or a tampered backup that got past the restore's
    /// check) is an integrity error when the key is loaded, never a trap when it is used.
    @Test func aStoredKeyOfTheWrongLengthIsAnIntegrityError() throws {
        func stored(_ type: String, keyBytes: Int) -> JSONValue {
            let version: JSONValue = [
                "key": .string(Base64.encode([UInt8](repeating: 7, count: keyBytes))),
                "hmac_key": .string(Base64.encode([UInt8](repeating: 1, count: 32))), "creation_time": 0,
            ]
            return ["name": "k", "type": .string(type), "latest_version": 1, "versions": ["1": version]]
        }
        #expect(try TransitKey(stored: stored("aes256-gcm96", keyBytes: 32)).latestVersion == 1)
        #expect(throws: CofferError(.integrity, "a stored aes256-gcm96 key has the wrong length")) {
            try TransitKey(stored: stored("aes256-gcm96", keyBytes: 16))
        }
        #expect(throws: CofferError(.integrity, "a stored chacha20-poly1305 key has the wrong length")) {
            try TransitKey(stored: stored("chacha20-poly1305", keyBytes: 31))
        }
    }
}
