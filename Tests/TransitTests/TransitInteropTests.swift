import Coffer
import Engines
import Foundation
import Testing

/// Known-answer vectors (keys brought in through restore of a Vault-format backup), the `openssl`
/// CLI on both sides of a signature, and the in-process fast path.
@Suite struct TransitInteropTests {
    @Test func aesGCMKnownAnswer() throws {
        // NIST GCM spec test case 14: K = 0^256, IV = 0^96, P = 0^128.
        let t = try Transit()
        let backup = knownBackup(
            name: "nist",
            type: 0,
            key: [UInt8](repeating: 0, count: 32),
            hmacKey: [UInt8](repeating: 1, count: 32)
        )
        #expect(t.wire("POST", "transit/restore", ["backup": .string(backup)]).status == 204)
        let body =
            [UInt8](repeating: 0, count: 12) + hex("cea7403d4d606b6e074ec5d3baf39d18")
            + hex("d0d1c8a799996bf0265b98b5d48ab919")
        let opened = try t.ok(
            "POST",
            "transit/decrypt/nist",
            ["ciphertext": .string("vault:v1:" + Data(body).base64EncodedString())]
        )
        #expect(unb64(opened["plaintext"]) == [UInt8](repeating: 0, count: 16))
        var wrongTag = body
        wrongTag[wrongTag.count - 1] ^= 1
        #expect(
            t.fails(
                "POST",
                "transit/decrypt/nist",
                ["ciphertext": .string("vault:v1:" + Data(wrongTag).base64EncodedString())]
            ).contains("authentication failed")
        )
    }

    @Test func ed25519RFC8032KnownAnswer() throws {
        // RFC 8032 §7.1 test 2 (one-byte message 0x72).
        let t = try Transit()
        let seed = hex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
        let pub = hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
        let backup = knownBackup(
            name: "rfc",
            type: 2,
            key: seed + pub,
            hmacKey: [UInt8](repeating: 1, count: 32),
            publicKey: Data(pub).base64EncodedString()
        )
        #expect(t.wire("POST", "transit/restore", ["backup": .string(backup)]).status == 204)
        #expect(try t.ok("GET", "transit/keys/rfc")["keys"]?["1"]?["public_key"] == b64(pub))
        let expected = hex(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        )
        #expect(
            try t.ok("POST", "transit/sign/rfc", ["input": b64([0x72])])["signature"]
                == .string("vault:v1:" + Data(expected).base64EncodedString())
        )
    }

    @Test func hmacRFC4231KnownAnswer() throws {
        // RFC 4231 test case 6: a 131-byte key, SHA-256.
        let t = try Transit()
        let key = [UInt8](repeating: 0xAA, count: 131)
        let backup = knownBackup(name: "rfc", type: 10, key: key, hmacKey: key, keySize: 131)
        #expect(t.wire("POST", "transit/restore", ["backup": .string(backup)]).status == 204)
        let mac = try t.ok(
            "POST",
            "transit/hmac/rfc",
            ["input": b64("Test Using Larger Than Block-Size Key - Hash Key First")]
        )["hmac"]
        #expect(
            mac
                == .string(
                    "vault:v1:"
                        + Data(hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"))
                        .base64EncodedString()
                )
        )
    }

    static let openssl = "/usr/bin/openssl"

    /// Writes `files` to a fresh directory and runs `body` with it.
    func inTemporaryDirectory(_ body: (URL) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-transit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try body(dir)
    }

    @Test(arguments: ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-4096", "ed25519"])
    func opensslVerifiesCofferSignaturesAndCofferVerifiesOpenSSLs(type: String) throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.openssl),
            "the openssl CLI is needed (apt package openssl, installed by make deps)"
        )
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/k", ["type": .string(type), "exportable": true])
        let message = Array("a message signed by Coffer".utf8)
        let isEd = type == "ed25519"
        try inTemporaryDirectory { dir in
            let pubPath = dir.appendingPathComponent("pub.pem").path
            let keyPath = dir.appendingPathComponent("key.pem").path
            let msgPath = dir.appendingPathComponent("msg").path
            let sigPath = dir.appendingPathComponent("sig").path
            try Data(message).write(to: URL(fileURLWithPath: msgPath))
            let exported = try #require(try t.ok("GET", "transit/export/public-key/k")["keys"]?["1"]?.stringValue)
            let exportedPrivate = try #require(
                try t.ok("GET", "transit/export/signing-key/k")["keys"]?["1"]?.stringValue
            )
            if isEd {
                // Vault exports raw keys for Ed25519: wrap them in SubjectPublicKeyInfo / PKCS#8 for openssl.
                let spki = hex("302a300506032b6570032100") + [UInt8](Data(base64Encoded: exported)!)
                let pkcs8 =
                    hex("302e020100300506032b657004220420") + [UInt8](Data(base64Encoded: exportedPrivate)!).prefix(32)
                try pem("PUBLIC KEY", spki).write(toFile: pubPath, atomically: true, encoding: .utf8)
                try pem("PRIVATE KEY", pkcs8).write(toFile: keyPath, atomically: true, encoding: .utf8)
            } else {
                try (exported + "\n").write(toFile: pubPath, atomically: true, encoding: .utf8)
                try (exportedPrivate + "\n").write(toFile: keyPath, atomically: true, encoding: .utf8)
            }
            var sign: JSONValue = ["input": b64(message), "hash_algorithm": "sha2-256"]
            var opensslOptions: [String] = []
            if type.hasPrefix("rsa") {
                sign = ["input": b64(message), "signature_algorithm": "pss"]
                opensslOptions = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:auto"]
            }
            // Coffer signs, openssl verifies with the exported public key.
            let signature = try #require(try t.ok("POST", "transit/sign/k", sign)["signature"]?.stringValue)
            try Data(base64Encoded: String(signature.dropFirst("vault:v1:".count)))!.write(
                to: URL(fileURLWithPath: sigPath)
            )
            let verifyArgs =
                isEd
                ? ["pkeyutl", "-verify", "-pubin", "-inkey", pubPath, "-rawin", "-in", msgPath, "-sigfile", sigPath]
                : ["dgst", "-sha256", "-verify", pubPath, "-signature", sigPath] + opensslOptions + [msgPath]
            let verified = try run(Self.openssl, verifyArgs)
            #expect(verified.status == 0, "openssl did not verify Coffer's \(type) signature: \(verified.stderr)")

            // openssl signs with the exported private key, Coffer verifies.
            let signArgs =
                isEd
                ? ["pkeyutl", "-sign", "-inkey", keyPath, "-rawin", "-in", msgPath, "-out", sigPath]
                : ["dgst", "-sha256", "-sign", keyPath, "-out", sigPath]
                    + (type.hasPrefix("rsa")
                        ? ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"] : []) + [msgPath]
            let signed = try run(Self.openssl, signArgs)
            #expect(signed.status == 0, "openssl sign failed: \(signed.stderr)")
            let theirs = try Data(contentsOf: URL(fileURLWithPath: sigPath))
            var verify = sign.objectValue!
            verify["signature"] = .string("vault:v1:" + theirs.base64EncodedString())
            #expect(
                try t.ok("POST", "transit/verify/k", .object(verify))["valid"] == true,
                "Coffer did not verify openssl's \(type) signature"
            )
            verify["input"] = b64("another message")
            #expect(try t.ok("POST", "transit/verify/k", .object(verify))["valid"] == false)
        }
    }

    func pem(_ label: String, _ der: [UInt8]) -> String {
        "-----BEGIN \(label)-----\n" + Data(der).base64EncodedString(options: [.lineLength64Characters])
            + "\n-----END \(label)-----\n"
    }

    @Test func fastPathMatchesTheWire() throws {
        let t = try Transit()
        let core = t.vault.core
        _ = try t.ok("POST", "transit/keys/k", [:])
        let message = Array("64 bytes of application data, more or less, going in and out...".utf8)
        let sealed = try TransitClient(core: core, mount: "transit", token: "root").encrypt(
            key: "k",
            plaintext: message
        )
        #expect(String(decoding: sealed, as: UTF8.self).hasPrefix("vault:v1:"))
        // What the fast path makes, the wire decrypts, and the reverse.
        #expect(
            unb64(
                try t.ok("POST", "transit/decrypt/k", ["ciphertext": .string(String(decoding: sealed, as: UTF8.self))])[
                    "plaintext"
                ]
            ) == message
        )
        let viaWire = try #require(
            try t.ok("POST", "transit/encrypt/k", ["plaintext": b64(message)])["ciphertext"]?.stringValue
        )
        #expect(
            try TransitClient(core: core, mount: "/transit/", token: "root").decrypt(
                key: "k",
                ciphertext: Array(viaWire.utf8)
            ) == message
        )
        #expect(throws: CofferError.invalid("the transit mount path is empty")) {
            try TransitClient(core: core, mount: "//", token: "root").encrypt(key: "k", plaintext: message)
        }

        // The same token and ACL checks: a token for another key is refused, a bad token too.
        #expect(
            t.wire(
                "POST",
                "sys/policies/acl/only-other",
                ["policy": #"path "transit/encrypt/other" { capabilities = ["update"] }"#]
            ).status == 204
        )
        let limited = try #require(
            t.wire("POST", "auth/token/create", ["policies": ["only-other"]]).json?["auth"]?["client_token"]?
                .stringValue
        )
        #expect(throws: CofferError.permissionDeniedError) {
            try TransitClient(core: core, mount: "transit", token: limited).encrypt(key: "k", plaintext: message)
        }
        #expect(throws: CofferError.permissionDeniedError) {
            try TransitClient(core: core, mount: "transit", token: "nope").encrypt(key: "k", plaintext: message)
        }
        // Errors are the wire's.
        #expect(throws: CofferError.invalid("encryption key not found")) {
            try TransitClient(core: core, mount: "transit", token: "root").decrypt(key: "missing", ciphertext: sealed)
        }
        #expect(throws: CofferError.self) {
            try TransitClient(core: core, mount: "transit", token: "root").decrypt(
                key: "k",
                ciphertext: Array("vault:v1:AAAA".utf8)
            )
        }
        #expect(throws: CofferError.self) {
            try TransitClient(core: core, mount: "../x", token: "root").encrypt(key: "k", plaintext: message)
        }
        // A missing key is created by encrypt (Vault's upsert), through the full path.
        let created = try TransitClient(core: core, mount: "transit", token: "root").encrypt(
            key: "new",
            plaintext: message
        )
        #expect(
            try TransitClient(core: core, mount: "transit", token: "root").decrypt(key: "new", ciphertext: created)
                == message
        )
        // Derived keys need their context.
        _ = try t.ok("POST", "transit/keys/d", ["derived": true])
        let derived = try TransitClient(core: core, mount: "transit", token: "root").encrypt(
            key: "d",
            plaintext: message,
            context: Array("ctx".utf8)
        )
        #expect(
            try TransitClient(core: core, mount: "transit", token: "root").decrypt(
                key: "d",
                ciphertext: derived,
                context: Array("ctx".utf8)
            ) == message
        )
        #expect(throws: CofferError.self) {
            try TransitClient(core: core, mount: "transit", token: "root").decrypt(key: "d", ciphertext: derived)
        }
    }

    @Test func fastPathIsAuditedWhenAnAuditDeviceIsOn() throws {
        let t = try Transit()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent(
            "coffer-transit-audit-\(UUID().uuidString).log"
        )
        defer { try? FileManager.default.removeItem(at: log) }
        _ = try t.ok("POST", "transit/keys/k", [:])
        #expect(
            t.wire("POST", "sys/audit/file", ["type": "file", "options": ["file_path": .string(log.path)]]).status
                == 204
        )
        let sealed = try TransitClient(core: t.vault.core, mount: "transit", token: "root").encrypt(
            key: "k",
            plaintext: Array("audited".utf8)
        )
        #expect(
            try TransitClient(core: t.vault.core, mount: "transit", token: "root").decrypt(key: "k", ciphertext: sealed)
                == Array("audited".utf8)
        )
        let records = try String(contentsOf: log, encoding: .utf8)
        #expect(records.contains("transit/encrypt/k") && records.contains("transit/decrypt/k"))
        #expect(
            !records.contains(Data("audited".utf8).base64EncodedString()),
            "the plaintext is HMAC'd in audit records"
        )
    }

    /// The issue's "done when", spoken as the `bao` CLI speaks it (the JSON bodies `bao write` sends), through
    /// `Core.handleWire`, which the HTTP server calls for every request.
    @Test func doneWhenSequence() throws {
        let t = try Transit()
        func write(_ path: String, _ json: String) -> (Int, JSONValue?) {
            let (status, body) = t.vault.core.handleWire(
                method: "PUT",
                path: "/v1/" + path,
                token: "root",
                body: Array(json.utf8)
            )
            return (status, body.map { try! JSONValue.parse($0) })
        }
        #expect(write("transit/keys/orders", #"{"type":"aes256-gcm96"}"#).0 == 200)
        let (_, enc) = write("transit/encrypt/orders", #"{"plaintext":"Y2FyZCBudW1iZXIgNDExMQ=="}"#)
        let old = try #require(enc?["data"]?["ciphertext"]?.stringValue)
        #expect(write("transit/keys/orders/rotate", "{}").0 == 200)
        let (_, dec) = write("transit/decrypt/orders", #"{"ciphertext":"\#(old)"}"#)
        #expect(dec?["data"]?["plaintext"] == "Y2FyZCBudW1iZXIgNDExMQ==")
        let (_, rewrapped) = write("transit/rewrap/orders", #"{"ciphertext":"\#(old)"}"#)
        #expect(rewrapped?["data"]?["ciphertext"]?.stringValue?.hasPrefix("vault:v2:") == true)
        #expect(write("transit/keys/signer", #"{"type":"ecdsa-p256"}"#).0 == 200)
        let (_, signed) = write("transit/sign/signer", #"{"input":"aGVsbG8="}"#)
        let signature = try #require(signed?["data"]?["signature"]?.stringValue)
        let (_, verified) = write("transit/verify/signer", #"{"input":"aGVsbG8=","signature":"\#(signature)"}"#)
        #expect(verified?["data"]?["valid"] == true)
    }
}
