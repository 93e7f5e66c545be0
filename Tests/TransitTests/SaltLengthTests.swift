import Coffer
import Foundation
import Testing

/// `salt_length` as Vault reads it (Go's crypto/rsa constants): "auto" and 0 sign with the longest
/// salt and verify any; "hash" and -1 use the digest's length; a positive number is that many bytes.
/// Checked with the real openssl, which is told exactly which salt length to expect.
@Suite struct SaltLengthTests {
    static let openssl = "/usr/bin/openssl"

    /// openssl's verdict on `signature` over `message` with a PSS salt of `saltLength` ("digest", "max", a number).
    func opensslVerifies(_ signature: String, _ message: [UInt8], publicKey: String, saltLength: String) throws -> Bool
    {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-salt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pub = dir.appendingPathComponent("pub.pem")
        let msg = dir.appendingPathComponent("msg")
        let sig = dir.appendingPathComponent("sig")
        try (publicKey + "\n").write(to: pub, atomically: true, encoding: .utf8)
        try Data(message).write(to: msg)
        try Data(base64Encoded: String(signature.dropFirst("vault:v1:".count)))!.write(to: sig)
        let result = try run(
            Self.openssl,
            [
                "dgst", "-sha256", "-verify", pub.path, "-signature", sig.path, "-sigopt", "rsa_padding_mode:pss",
                "-sigopt", "rsa_pss_saltlen:\(saltLength)", msg.path,
            ]
        )
        return result.status == 0
    }

    @Test func minusOneIsTheHashLengthAndZeroIsAuto() throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.openssl),
            "the openssl CLI is needed (apt package openssl)"
        )
        let t = try Transit()
        let key = try t.ok("POST", "transit/keys/r", ["type": "rsa-2048"])
        let publicKey = try #require(key["keys"]?["1"]?["public_key"]?.stringValue)
        let message = Array("signed with a chosen salt".utf8)
        // 2048-bit key, SHA-256: the digest is 32 bytes, the longest salt 256 - 32 - 2 = 222.
        let cases: [(JSONValue, String, String)] = [
            ("-1", "32", "222"), (-1, "32", "222"), ("HASH", "32", "222"), ("hash", "32", "222"),
            ("0", "222", "32"), (0, "222", "32"), ("Auto", "222", "32"), ("20", "20", "32"),
        ]
        for (salt, expected, other) in cases {
            let signature = try #require(
                try t.ok("POST", "transit/sign/r", ["input": b64(message), "salt_length": salt])["signature"]?
                    .stringValue
            )
            #expect(
                try opensslVerifies(signature, message, publicKey: publicKey, saltLength: expected),
                "salt_length \(salt): a salt of \(expected) bytes"
            )
            #expect(
                try !opensslVerifies(signature, message, publicKey: publicKey, saltLength: other),
                "salt_length \(salt): not \(other) bytes"
            )
            // Coffer verifies with the same setting, and with auto (0), which accepts any salt length.
            for verifySalt in [salt, "0"] {
                let verified = try t.ok(
                    "POST",
                    "transit/verify/r",
                    ["input": b64(message), "signature": .string(signature), "salt_length": verifySalt]
                )
                #expect(verified["valid"] == true, "sign with \(salt), verify with \(verifySalt)")
            }
        }
        // A signature with the longest salt does not verify as one with the digest's length.
        let long = try #require(
            try t.ok("POST", "transit/sign/r", ["input": b64(message), "salt_length": "0"])["signature"]?.stringValue
        )
        #expect(
            try t.ok(
                "POST",
                "transit/verify/r",
                ["input": b64(message), "signature": .string(long), "salt_length": "-1"]
            )["valid"] == false
        )
    }

    @Test func aSaltLongerThanTheKeyAllowsIsRefusedWithTheLimit() throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/r", ["type": "rsa-2048"])
        _ = try t.ok("POST", "transit/sign/r", ["input": b64("x"), "salt_length": "222"])
        #expect(
            t.fails("POST", "transit/sign/r", ["input": b64("x"), "salt_length": "223"])
                == "salt_length is longer than this key and hash algorithm allow: at most 222 bytes"
        )
        #expect(
            t.fails("POST", "transit/sign/r", ["input": b64("x"), "salt_length": "1000", "hash_algorithm": "sha2-512"])
                == "salt_length is longer than this key and hash algorithm allow: at most 190 bytes"
        )
    }

    @Test(arguments: ["-2", "-100", "abc", "1.5", "SALT-MARKER-7431"])
    func otherSaltLengthsAreRefusedWithoutQuotingThem(salt: String) throws {
        let t = try Transit()
        _ = try t.ok("POST", "transit/keys/r", ["type": "rsa-2048"])
        let error = t.fails("POST", "transit/sign/r", ["input": b64("x"), "salt_length": .string(salt)])
        #expect(
            error.contains("salt_length must be auto, hash, 0 (auto), -1 (hash) or a positive number of bytes"),
            "got: \(error)"
        )
        #expect(!error.contains(salt))
    }
}
