import Foundation
import Testing

@testable import CofferCore

/// A throwaway GnuPG home whose keys the real `gpg` makes; its agent is stopped when released.
final class GnuPG {
    static let gpg = "/usr/bin/gpg"
    let home = TemporaryDirectory()

    init() throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: GnuPG.gpg),
            "gpg is needed (apt package gnupg, installed by make deps)"
        )
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: home.path)
    }

    deinit {
        _ = try? run(["--kill", "gpg-agent"], tool: "/usr/bin/gpgconf")
    }

    @discardableResult
    func run(
        _ arguments: [String],
        tool: String = GnuPG.gpg,
        stdin: Data = Data()
    ) throws -> (status: Int32, stdout: Data, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.environment = ["GNUPGHOME": home.path, "PATH": "/usr/bin:/bin"]
        let input = Pipe()
        let output = Pipe()
        let error = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = error
        try process.run()
        input.fileHandleForWriting.write(stdin)
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, out, String(decoding: err, as: UTF8.self))
    }

    /// Makes a key without a passphrase; returns the primary key's fingerprint (upper-case hex, as gpg prints it).
    func generate(_ userID: String, algorithm: String, usage: String) throws -> String {
        let made = try run(["--batch", "--passphrase", "", "--quick-gen-key", userID, algorithm, usage, "never"])
        try #require(made.status == 0, "gpg --quick-gen-key failed: \(made.stderr)")
        return try #require(try colons(userID).first { $0.first == "fpr" }?[9])
    }

    func addSubkey(_ fingerprint: String, algorithm: String, usage: String) throws {
        let added = try run(["--batch", "--passphrase", "", "--quick-add-key", fingerprint, algorithm, usage, "never"])
        try #require(added.status == 0, "gpg --quick-add-key failed: \(added.stderr)")
    }

    /// `gpg --with-colons --list-keys` rows for `who`.
    func colons(_ who: String) throws -> [[String]] {
        let listed = try run(["--batch", "--with-colons", "--list-keys", who])
        return String(decoding: listed.stdout, as: UTF8.self).split(separator: "\n").map {
            $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        }
    }

    /// The key id of the key gpg encrypts to for `who`: the encryption subkey, or the primary key.
    func encryptionKeyID(_ who: String) throws -> String {
        let rows = try colons(who)
        let row = rows.first { $0.first == "sub" && $0[11].contains("e") } ?? rows.first { $0.first == "pub" }
        return try #require(row?[4])
    }

    /// What Vault's API takes: base64 of the binary public key.
    func exportBase64(_ who: String) throws -> String {
        let exported = try run(["--batch", "--export", who])
        try #require(exported.status == 0 && !exported.stdout.isEmpty, "gpg --export failed: \(exported.stderr)")
        return exported.stdout.base64EncodedString()
    }

    /// Decrypts a binary OpenPGP message; returns the plaintext and the key id gpg says it was encrypted to.
    func decrypt(_ message: Data) throws -> (plaintext: String, encryptedTo: String) {
        let decrypted = try run(["--batch", "--status-fd", "2", "--decrypt"], stdin: message)
        try #require(decrypted.status == 0, "gpg could not decrypt the message: \(decrypted.stderr)")
        let to = decrypted.stderr.split(separator: "\n").first { $0.hasPrefix("[GNUPG:] ENC_TO ") }?.split(
            separator: " "
        )[2]
        return (String(decoding: decrypted.stdout, as: UTF8.self), String(to ?? ""))
    }
}

extension JSONValue {
    var strings: [String] { arrayValue?.compactMap(\.stringValue) ?? [] }
}

@Suite struct RekeyTests {
    func start(_ core: Core, _ body: [String: JSONValue]) throws -> String {
        try #require(try core.call(.update, "sys/rekey/init", body, token: nil).raw?["nonce"]?.stringValue)
    }

    /// Enters `keys` at sys/rekey/update; returns the last answer.
    func authorise(_ core: Core, _ keys: [String], nonce: String) throws -> JSONValue {
        var last: JSONValue = nil
        for key in keys {
            last = try #require(
                try core.call(.update, "sys/rekey/update", ["key": .string(key), "nonce": .string(nonce)], token: nil)
                    .raw
            )
        }
        return last
    }

    @Test func requireVerificationKeepsTheCurrentSharesUntilANewThresholdIsEnteredBack() throws {
        let (core, initial) = try makeCore(shares: 3, threshold: 2)
        try core.call(.update, "echo/keep", ["v": "kept"], token: initial.rootToken)
        let nonce = try start(core, ["secret_shares": 4, "secret_threshold": 3, "require_verification": true])
        #expect(try core.call(.read, "sys/rekey/init", token: nil).raw?["verification_required"] == true)
        let done = try authorise(core, [initial.hexKeys[0], initial.hexKeys[2]], nonce: nonce)
        #expect(done["complete"] == true && done["verification_required"] == true)
        let newKeys = done["keys"]?.strings ?? []
        #expect(newKeys.count == 4 && done["keys_base64"]?.strings.count == 4)
        let verificationNonce = try #require(done["verification_nonce"]?.stringValue)
        #expect(!verificationNonce.isEmpty && verificationNonce != nonce)

        // Not in force yet: the current shares still authorise, the new ones do not.
        let status = try #require(try core.call(.read, "sys/rekey/init", token: nil).raw)
        #expect(
            status["started"] == true && status["progress"] == 0
                && status["verification_nonce"] == .string(verificationNonce)
        )
        expectError(.invalidArgument, containing: "await verification") {
            try core.call(
                .update,
                "sys/rekey/update",
                ["key": .string(initial.hexKeys[1]), "nonce": .string(nonce)],
                token: nil
            )
        }
        let attempt = try #require(
            try core.call(.update, "sys/generate-root/attempt", token: nil).raw?["nonce"]?.stringValue
        )
        try core.call(
            .update,
            "sys/generate-root/update",
            ["key": .string(initial.hexKeys[1]), "nonce": .string(attempt)],
            token: nil
        )
        expectError(.invalidArgument, containing: "not one of the current unseal keys") {
            try core.call(
                .update,
                "sys/generate-root/update",
                ["key": .string(newKeys[0]), "nonce": .string(attempt)],
                token: nil
            )
        }
        try core.call(.delete, "sys/generate-root/attempt", token: nil)

        // Verification: the new keys, with its own nonce.
        let verify = try #require(try core.call(.read, "sys/rekey/verify", token: nil).raw)
        #expect(verify == ["nonce": .string(verificationNonce), "started": true, "t": 3, "n": 4, "progress": 0])
        expectError(.invalidArgument, containing: "nonce does not match") {
            try core.call(
                .update,
                "sys/rekey/verify",
                ["key": .string(newKeys[0]), "nonce": .string(nonce)],
                token: nil
            )
        }
        expectError(.invalidArgument, containing: "not one of the new keys") {
            try core.call(
                .update,
                "sys/rekey/verify",
                ["key": .string(initial.hexKeys[0]), "nonce": .string(verificationNonce)],
                token: nil
            )
        }
        let one = try core.call(
            .update,
            "sys/rekey/verify",
            ["key": .string(newKeys[1]), "nonce": .string(verificationNonce)],
            token: nil
        )
        #expect(one.raw?["progress"] == 1 && one.raw?["started"] == true)
        expectError(.invalidArgument, containing: "already entered") {
            try core.call(
                .update,
                "sys/rekey/verify",
                ["key": .string(newKeys[1]), "nonce": .string(verificationNonce)],
                token: nil
            )
        }
        // DELETE forgets the keys entered and issues a new verification nonce; the rekey stays pending.
        let restarted = try #require(try core.call(.delete, "sys/rekey/verify", token: nil).raw)
        let secondNonce = try #require(restarted["nonce"]?.stringValue)
        #expect(secondNonce != verificationNonce && restarted["progress"] == 0 && restarted["started"] == true)
        expectError(.invalidArgument, containing: "nonce does not match") {
            try core.call(
                .update,
                "sys/rekey/verify",
                ["key": .string(newKeys[1]), "nonce": .string(verificationNonce)],
                token: nil
            )
        }
        var last: Response?
        for key in [newKeys[3], newKeys[0], newKeys[2]] {
            last = try core.call(
                .update,
                "sys/rekey/verify",
                ["key": .string(key), "nonce": .string(secondNonce)],
                token: nil
            )
        }
        #expect(last?.raw == ["nonce": .string(secondNonce), "complete": true])
        #expect(try core.call(.read, "sys/rekey/init", token: nil).raw?["started"] == false)

        // Now in force: the old shares are refused, three new ones unseal and the data is there.
        core.sealVault()
        expectError(.invalidArgument, containing: "not one of the current") {
            try core.unseal(key: hex(initial.hexKeys[0]))
        }
        for key in newKeys.prefix(3) { try core.unseal(key: hex(key)) }
        #expect(!core.isSealed)
        #expect(try core.sealStatus().shares == 4)
        #expect(try core.call(.read, "echo/keep", token: initial.rootToken).data?["v"] == "kept")
    }

    @Test func anUnverifiedRekeyNeverTakesEffect() throws {
        let storage = InMemoryBackend()
        let (core, initial) = try makeCore(storage: storage, shares: 2, threshold: 2)
        let nonce = try start(core, ["secret_shares": 2, "secret_threshold": 2, "require_verification": "true"])
        let newKeys = try authorise(core, initial.hexKeys, nonce: nonce)["keys"]?.strings ?? []
        #expect(newKeys.count == 2)
        // Sealed (or restarted) before verification: the pending shares are gone, the current ones unseal.
        core.sealVault()
        expectError(.invalidArgument, containing: "not one of the current") { try core.unseal(key: hex(newKeys[0])) }
        for key in initial.hexKeys { try core.unseal(key: hex(key)) }
        #expect(!core.isSealed)
        expectError(.invalidArgument, containing: "no rekey configuration found") {
            try core.call(.read, "sys/rekey/verify", token: nil)
        }
        // Cancelling during verification also leaves the current shares in force.
        let again = try start(core, ["secret_shares": 1, "secret_threshold": 1, "require_verification": true])
        let pending = try authorise(core, initial.hexKeys, nonce: again)
        try core.call(.delete, "sys/rekey/init", token: nil)
        expectError(.invalidArgument, containing: "no rekey in progress") {
            try core.call(
                .update,
                "sys/rekey/verify",
                [
                    "key": .string(pending["keys"]?.strings.first ?? ""),
                    "nonce": .string(pending["verification_nonce"]?.stringValue ?? ""),
                ],
                token: nil
            )
        }
        let reopened = try Core(storage: storage, engines: testRegistry())
        for key in initial.hexKeys { try reopened.unseal(key: hex(key)) }
        #expect(!reopened.isSealed)
    }

    @Test func verifyEndpointsWithoutAVerification() throws {
        let (core, initial) = try makeCore(shares: 1, threshold: 1)
        expectError(.invalidArgument, containing: "no rekey configuration found") {
            try core.call(.read, "sys/rekey/verify", token: nil)
        }
        expectError(.invalidArgument, containing: "no rekey configuration found") {
            try core.call(.delete, "sys/rekey/verify", token: nil)
        }
        let nonce = try start(core, ["secret_shares": 1, "secret_threshold": 1])
        #expect(
            try core.call(.read, "sys/rekey/verify", token: nil).raw == [
                "nonce": "", "started": false, "t": 1, "n": 1, "progress": 0,
            ]
        )
        expectError(.invalidArgument, containing: "no rekey verification in progress") {
            try core.call(
                .update,
                "sys/rekey/verify",
                ["key": .string(initial.hexKeys[0]), "nonce": .string(nonce)],
                token: nil
            )
        }
        // The same paths under sys/rekey-recovery-key/.
        #expect(try core.call(.read, "sys/rekey-recovery-key/verify", token: nil).raw?["started"] == false)
        let done = try authorise(core, initial.hexKeys, nonce: nonce)
        #expect(
            done["verification_required"] == false && done["verification_nonce"] == nil
                && done["pgp_fingerprints"] == .null
        )
    }

    @Test func backupIsRefusedAndTheBackupPathsNeedATokenAndHoldNothing() throws {
        let (core, initial) = try makeCore(shares: 1, threshold: 1)
        expectError(.invalidArgument, containing: "backup is not supported") {
            try core.call(
                .update,
                "sys/rekey/init",
                ["secret_shares": 1, "secret_threshold": 1, "backup": true],
                token: nil
            )
        }
        expectError(.invalidArgument, containing: "stored_shares is not supported") {
            try core.call(
                .update,
                "sys/rekey/init",
                ["secret_shares": 1, "secret_threshold": 1, "stored_shares": 1],
                token: nil
            )
        }
        #expect(try core.call(.read, "sys/rekey/init", token: nil).raw?["started"] == false, "nothing was started")
        for path in ["sys/rekey/backup", "sys/rekey/recovery-key-backup"] {
            expectError(.permissionDenied) { try core.call(.read, path, token: nil) }
            expectError(.invalidArgument, containing: "no backed-up keys found") {
                try core.call(.read, path, token: initial.rootToken)
            }
            #expect(try core.call(.delete, path, token: initial.rootToken).status == 204)
        }
    }

    /// Three operators, three kinds of key gpg makes: RSA with an RSA encryption subkey, Ed25519 with
    /// a Curve25519 subkey, and one RSA key that signs and encrypts.
    func operators(_ gpg: GnuPG) throws -> [String] {
        let a = try gpg.generate("Op A <a@example.com>", algorithm: "rsa2048", usage: "sign,cert")
        try gpg.addSubkey(a, algorithm: "rsa2048", usage: "encr")
        let b = try gpg.generate("Op B <b@example.com>", algorithm: "ed25519", usage: "sign,cert")
        try gpg.addSubkey(b, algorithm: "cv25519", usage: "encr")
        let c = try gpg.generate("Op C <c@example.com>", algorithm: "rsa2048", usage: "sign,cert,encr")
        return [a, b, c]
    }

    @Test func pgpKeysReturnEachNewShareEncryptedToItsOperatorsKey() throws {
        let gpg = try GnuPG()
        let fingerprints = try operators(gpg)
        let (core, initial) = try makeCore(shares: 2, threshold: 2)
        try core.call(.update, "echo/keep", ["v": "kept"], token: initial.rootToken)
        let keys = try fingerprints.map { try gpg.exportBase64($0) }
        let nonce = try start(
            core,
            ["secret_shares": 3, "secret_threshold": 2, "pgp_keys": .array(keys.map { .string($0) })]
        )
        let lowercase = JSONValue.array(fingerprints.map { .string($0.lowercased()) })
        #expect(try core.call(.read, "sys/rekey/init", token: nil).raw?["pgp_fingerprints"] == lowercase)
        let done = try authorise(core, initial.hexKeys, nonce: nonce)
        #expect(done["complete"] == true && done["pgp_fingerprints"] == lowercase)
        let messages = done["keys_base64"]?.strings ?? []
        let hexMessages = done["keys"]?.strings ?? []
        try #require(messages.count == 3 && hexMessages.count == 3)

        var shares: [String] = []
        for (i, message) in messages.enumerated() {
            let bytes = try #require(Data(base64Encoded: message))
            #expect(Hex.encode(Array(bytes)) == hexMessages[i], "keys and keys_base64 are the same message")
            let (plaintext, encryptedTo) = try gpg.decrypt(bytes)
            #expect(
                encryptedTo == (try gpg.encryptionKeyID(fingerprints[i])),
                "share \(i) is encrypted to operator \(i)'s encryption key"
            )
            #expect(plaintext.count == 66 && Hex.decode(plaintext) != nil, "the share's hex form, as Vault encrypts it")
            shares.append(plaintext)
        }
        core.sealVault()
        expectError(.invalidArgument, containing: "not one of the current") {
            try core.unseal(key: hex(initial.hexKeys[0]))
        }
        try core.unseal(key: hex(shares[2]))
        try core.unseal(key: hex(shares[1]))
        #expect(!core.isSealed)
        #expect(try core.call(.read, "echo/keep", token: initial.rootToken).data?["v"] == "kept")
    }

    @Test func pgpKeysWithVerificationAndArmor() throws {
        let gpg = try GnuPG()
        let fingerprint = try gpg.generate("Solo <solo@example.com>", algorithm: "rsa3072", usage: "sign,cert,encr")
        let armored = String(
            decoding: try gpg.run(["--batch", "--armor", "--export", fingerprint]).stdout,
            as: UTF8.self
        )
        #expect(armored.hasPrefix("-----BEGIN PGP PUBLIC KEY BLOCK-----"))
        let (core, initial) = try makeCore(shares: 1, threshold: 1)
        let nonce = try start(
            core,
            ["secret_shares": 1, "secret_threshold": 1, "pgp_keys": [.string(armored)], "require_verification": true]
        )
        let done = try authorise(core, initial.hexKeys, nonce: nonce)
        let message = try #require(done["keys_base64"]?.strings.first.flatMap { Data(base64Encoded: $0) })
        let share = try gpg.decrypt(message).plaintext
        let verified = try core.call(
            .update,
            "sys/rekey/verify",
            ["key": .string(share), "nonce": .string(done["verification_nonce"]?.stringValue ?? "")],
            token: nil
        )
        #expect(verified.raw?["complete"] == true)
        core.sealVault()
        try core.unseal(key: hex(share))
        #expect(!core.isSealed)
    }

    @Test func keysThatCannotReceiveAShareAreRefusedNamingTheEntry() throws {
        let gpg = try GnuPG()
        let good = try gpg.generate("Good <good@example.com>", algorithm: "rsa2048", usage: "sign,cert,encr")
        let signOnly = try gpg.generate("Signer <signer@example.com>", algorithm: "rsa2048", usage: "sign,cert")
        let withSubkey = try gpg.generate("Sub <sub@example.com>", algorithm: "rsa2048", usage: "sign,cert")
        try gpg.addSubkey(withSubkey, algorithm: "rsa2048", usage: "encr")
        let weak = try gpg.generate("Weak <weak@example.com>", algorithm: "rsa1024", usage: "sign,cert,encr")
        let dsa = try gpg.generate("Dsa <dsa@example.com>", algorithm: "dsa2048", usage: "sign,cert")
        try gpg.addSubkey(dsa, algorithm: "elg2048", usage: "encr")
        let nist = try gpg.generate("Nist <nist@example.com>", algorithm: "ed25519", usage: "sign,cert")
        try gpg.addSubkey(nist, algorithm: "nistp256", usage: "encr")
        let goodKey = try gpg.exportBase64(good)
        // A subkey whose binding signature no longer matches: its modulus changed after signing.
        var forged = [UInt8](try #require(Data(base64Encoded: try gpg.exportBase64(withSubkey))))
        let subkeyPacket = try #require(
            forged.indices.first { i in
                i + 30 < forged.count && forged[i] == 0xB9 && forged[i + 3] == 4 && forged[i + 8] == 1
            }
        )
        forged[subkeyPacket + 30] ^= 0x55
        let secret = try gpg.run([
            "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--export-secret-keys", good,
        ]).stdout
        let (core, _) = try makeCore(shares: 1, threshold: 1)

        let cases: [(JSONValue, String)] = [
            ([.string(goodKey), .string(goodKey)], "pgp_keys has 2 keys but secret_shares is 3"),
            ([.string(goodKey), "not base64 at all!", .string(goodKey)], "pgp_keys[1] is not base64"),
            (
                [.string(goodKey), .string(goodKey), .string(try gpg.exportBase64(signOnly))],
                "pgp_keys[2] has no valid key that may encrypt"
            ),
            (
                [.string(Data(forged).base64EncodedString()), .string(goodKey), .string(goodKey)],
                "pgp_keys[0] has no valid key that may encrypt"
            ),
            (
                [.string(goodKey), .string(secret.base64EncodedString()), .string(goodKey)],
                "pgp_keys[1] is a secret key"
            ),
            (
                [.string(goodKey), .string(goodKey), .string(Data(repeating: 0x41, count: 48).base64EncodedString())],
                "pgp_keys[2] is not OpenPGP data"
            ),
            ([.string(goodKey), "", .string(goodKey)], "pgp_keys[1] is empty"),
            (
                [.string(try gpg.exportBase64(weak)), .string(goodKey), .string(goodKey)],
                "pgp_keys[0] has a 1024-bit RSA key; RSA keys of 2048 to 8192 bits are accepted"
            ),
            (
                [.string(goodKey), .string(try gpg.exportBase64(dsa)), .string(goodKey)],
                "pgp_keys[1] has a primary key of type DSA; Coffer verifies RSA and Ed25519 primary keys only"
            ),
            (
                [.string(goodKey), .string(goodKey), .string(try gpg.exportBase64(nist))],
                "pgp_keys[2] has only an encryption key of type ECDH (a curve other than Curve25519), which Coffer cannot encrypt to"
            ),
        ]
        for (keys, message) in cases {
            do {
                try core.call(
                    .update,
                    "sys/rekey/init",
                    ["secret_shares": 3, "secret_threshold": 2, "pgp_keys": keys],
                    token: nil
                )
                Issue.record("pgp_keys \(message): accepted")
            } catch let error as CofferError {
                #expect(error.code == .invalidArgument && error.message.hasPrefix(message), "got: \(error.message)")
                for key in keys.strings where key.count > 16 {
                    #expect(!error.message.contains(key.prefix(16)), "the error quotes the key")
                }
            }
            #expect(
                try core.call(.read, "sys/rekey/init", token: nil).raw?["started"] == false,
                "\(message): nothing was started"
            )
        }
    }

    /// Every truncation and a few thousand seeded byte flips of real keys: each is refused with a 400 or
    /// (where the change does not matter, as in an unhashed subpacket) accepted; nothing traps or errs otherwise.
    @Test func damagedKeysAreRefusedAndNeverCrash() throws {
        let gpg = try GnuPG()
        let ed = try gpg.generate("Ed <ed@example.com>", algorithm: "ed25519", usage: "sign,cert")
        try gpg.addSubkey(ed, algorithm: "cv25519", usage: "encr")
        let rsa = try gpg.generate("Rsa <rsa@example.com>", algorithm: "rsa2048", usage: "sign,cert,encr")
        let (core, _) = try makeCore()
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(truncatingIfNeeded: seed >> 33)
        }
        func attempt(_ bytes: [UInt8]) -> Bool {
            do {
                try core.call(
                    .update,
                    "sys/rekey/init",
                    [
                        "secret_shares": 1, "secret_threshold": 1,
                        "pgp_keys": [.string(Data(bytes).base64EncodedString())],
                    ],
                    token: nil
                )
                try core.call(.delete, "sys/rekey/init", token: nil)
                return true
            } catch let error as CofferError {
                #expect(
                    error.code == .invalidArgument && error.message.hasPrefix("pgp_keys[0] "),
                    "got \(error.code): \(error.message)"
                )
                return false
            } catch {
                Issue.record("unexpected error \(error)")
                return false
            }
        }
        for fingerprint in [ed, rsa] {
            let key = [UInt8](try #require(Data(base64Encoded: try gpg.exportBase64(fingerprint))))
            #expect(attempt(key), "the intact key is accepted")
            for length in 0..<key.count {
                #expect(!attempt(Array(key.prefix(length))), "a key cut to \(length) of \(key.count) bytes is refused")
            }
            for _ in 0..<1500 {
                var damaged = key
                for _ in 0...(next() % 3) {
                    damaged[next() % damaged.count] ^= UInt8(truncatingIfNeeded: next() % 255 + 1)
                }
                _ = attempt(damaged)
            }
        }
    }

    @Test func generateRootWithPGPKeyEncryptsTheTokenToThatKey() throws {
        let gpg = try GnuPG()
        let fingerprint = try gpg.generate("Root <root@example.com>", algorithm: "ed25519", usage: "sign,cert")
        try gpg.addSubkey(fingerprint, algorithm: "cv25519", usage: "encr")
        let key = try gpg.exportBase64(fingerprint)
        let (core, initial) = try makeCore(shares: 2, threshold: 2)
        expectError(.invalidArgument, containing: "only one of otp and pgp_key") {
            try core.call(
                .update,
                "sys/generate-root/attempt",
                ["pgp_key": .string(key), "otp": .string(String(repeating: "a", count: 26))],
                token: nil
            )
        }
        expectError(.invalidArgument, containing: "pgp_key is not base64") {
            try core.call(.update, "sys/generate-root/attempt", ["pgp_key": "%%%"], token: nil)
        }
        let started = try #require(
            try core.call(.update, "sys/generate-root/attempt", ["pgp_key": .string(key)], token: nil).raw
        )
        #expect(started["otp"] == "" && started["pgp_fingerprint"] == .string(fingerprint.lowercased()))
        let nonce = try #require(started["nonce"]?.stringValue)
        var done: JSONValue = nil
        for share in initial.hexKeys {
            done = try #require(
                try core.call(
                    .update,
                    "sys/generate-root/update",
                    ["key": .string(share), "nonce": .string(nonce)],
                    token: nil
                ).raw
            )
        }
        #expect(done["complete"] == true && done["pgp_fingerprint"] == .string(fingerprint.lowercased()))
        let message = try #require(done["encoded_token"]?.stringValue.flatMap { Data(base64Encoded: $0) })
        let token = try gpg.decrypt(message).plaintext
        #expect(token.hasPrefix("s.") && token != initial.rootToken)
        #expect(try core.call(.read, "auth/token/lookup-self", token: token).data?["policies"] == ["root"])
    }
}

@Suite(.serialized) struct InitPGPTests {
    @Test func initHandsOutSharesAndTheRootTokenEncryptedToEachHolder() throws {
        let gpg = try GnuPG()
        _ = try gpg.generate("one@coffer.test", algorithm: "rsa2048", usage: "sign,cert,encr")
        _ = try gpg.generate("two@coffer.test", algorithm: "rsa2048", usage: "sign,cert,encr")
        let keys = [try gpg.exportBase64("one@coffer.test"), try gpg.exportBase64("two@coffer.test")]
        let core = try Core(storage: InMemoryBackend(), engines: testRegistry(), clock: ManualClock())
        let response = try core.call(
            .update,
            "sys/init",
            [
                "secret_shares": 2, "secret_threshold": 2, "pgp_keys": .array(keys.map { .string($0) }),
                "root_token_pgp_key": .string(keys[0]),
            ],
            token: nil
        )
        let body = try #require(response.raw)
        // Each share decrypts with its holder's key only; the decrypted shares unseal.
        for (index, encrypted) in (body["keys_base64"]?.strings ?? []).enumerated() {
            let message = try #require(Data(base64Encoded: encrypted))
            let (share, _) = try gpg.decrypt(message)
            #expect(share.count == 66, "share \(index) is the hex of a 33-byte share")
            try core.unseal(key: hex(share))
        }
        #expect(core.isSealed == false)
        let encryptedToken = try #require(body["root_token"]?.stringValue)
        let (token, _) = try gpg.decrypt(try #require(Data(base64Encoded: encryptedToken)))
        #expect(try core.call(.read, "auth/token/lookup-self", token: token).data?["policies"] == ["root"])
        // A key that is not one refuses the init and names the entry; nothing is created.
        let fresh = try Core(storage: InMemoryBackend(), engines: testRegistry(), clock: ManualClock())
        expectError(.invalidArgument, containing: "pgp_keys[1]") {
            try fresh.call(
                .update,
                "sys/init",
                ["secret_shares": 2, "secret_threshold": 1, "pgp_keys": [.string(keys[0]), "bm90IGEga2V5"]],
                token: nil
            )
        }
        #expect(fresh.isInitialized == false)
    }
}
