import Foundation
import Synchronization
import Testing

@testable import Coffer
@testable import CofferCore
@testable import PKCS11Seal

/// The PKCS#11 seal against a real SoftHSM2 (see SoftHSM.swift for why the suite is serialised).
@Suite(.serialized) struct PKCS11SealTests {
    // MARK: Mechanisms

    @Test func aesGCMOnTheTokenMatchesOpenSSLForAKnownKey() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("kat")
        let keyBytes = [UInt8](repeating: 0x01, count: 32)
        try hsm.importAESKey(token: "kat", label: "known", id: "09", value: keyBytes)
        let seal = try hsm.seal(token: "kat", key: "known")
        let secret = SecureBytes(Array(0..<32))
        let blob = try seal.wrap(secret, unsealKey: nil)
        // Decrypt the token's output with OpenSSL: proves the IV, tag and AAD handling (the
        // CK_GCM_PARAMS ulIvBits pitfall) against the module in use.
        let (header, start) = try BlobHeader.parse(blob)
        #expect(header.mechanism == .aesGCM && header.label == "known" && header.id == [0x09])
        let ivCount = Int(blob[start])
        #expect(ivCount == 12)
        let iv = Array(blob[(start + 1)..<(start + 1 + ivCount)])
        let opened = AESGCM.open(
            key: SecureBytes(keyBytes),
            nonce: iv,
            sealed: Array(blob[(start + 1 + ivCount)...]),
            aad: Array(blob[0..<start])
        )
        #expect(opened == Array(0..<32))
        #expect(try seal.unwrap(blob, unsealKey: nil).unsafeCopy == Array(0..<32))
        #expect(seal.keyName(of: blob) == "pkcs11 key_label=known key_id=09 mechanism=CKM_AES_GCM")
        // The header is authenticated: naming another key in it makes the blob fail.
        var tampered = blob
        tampered[start - 1] ^= 0x01
        #expect(throws: CofferError.self) { try seal.unwrap(tampered, unsealKey: nil) }
    }

    @Test(arguments: [PKCS11Configuration.Mechanism.aesGCM, .rsaOAEP])
    func initWriteRestartAndReadWithNoUnsealStep(mechanism: PKCS11Configuration.Mechanism) throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        if mechanism == .aesGCM {
            try hsm.createAESKey(token: "coffer", label: "root-key", id: "01")
        } else {
            try hsm.createRSAKey(token: "coffer", label: "root-key", id: "01")
        }
        let path = hsm.database()
        let configuration = VaultConfiguration(
            storage: .sqlite(path: path),
            seal: try hsm.seal(token: "coffer", key: "root-key", mechanism: mechanism)
        )
        let token: String
        do {
            let vault = try Vault.open(configuration)
            let result = try vault.initialize(shares: 5, threshold: 3)
            #expect(result.recovery && result.keys.count == 5)
            #expect(result.json["recovery_keys"]?.arrayValue?.count == 5 && result.json["keys"] == [])
            token = result.rootToken
            try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
            try vault.kv(token: token).put("app/db", ["password": "s3cret"])
            vault.close()
        }
        let vault = try Vault.open(configuration)
        let status = try vault.status()
        #expect(
            !status.sealed && status.type == "pkcs11" && status.recoverySeal && status.threshold == 3
                && status.shares == 5
        )
        #expect(try vault.kv(token: token).get("app/db")?.data["password"] == "s3cret")
        // Sealing by hand, then sys/unseal with no key unseals through the HSM again.
        vault.seal()
        expectCofferError(.invalidArgument, containing: ["recovery keys do not unseal it"]) {
            try vault.core.unseal(key: [UInt8](repeating: 1, count: 33))
        }
        let unsealed = try vault.handle(Request(.update, "sys/unseal", data: [:]))
        #expect(unsealed.raw?["sealed"] == false)
        vault.close()
    }

    @Test func rsaOAEPWithAHashTheModuleLacksSaysWhichToSet() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createRSAKey(token: "coffer", label: "rsa", id: "02")
        var configuration = hsm.configuration(token: "coffer", key: "rsa", mechanism: .rsaOAEP)
        configuration.rsaOAEPHash = .sha256
        expectCofferError(
            .invalidArgument,
            containing: ["does not support CKM_RSA_PKCS_OAEP with SHA256", "set rsa_oaep_hash"]
        ) {
            _ = try PKCS11Seal(configuration).wrap(SecureBytes(randomCount: 32), unsealKey: nil)
        }
    }

    @Test func rsaKeysSmallerThan2048BitsAreRefused() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createRSAKey(token: "coffer", label: "small", id: "02", bits: 1024)
        let seal = try hsm.seal(token: "coffer", key: "small", mechanism: .rsaOAEP)
        expectCofferError(.invalidArgument, containing: ["1024 bits", "at least 2048"]) { try seal.check() }
    }

    @Test func generateKeyCreatesANonExtractableAES256KeyOnce() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        var configuration = hsm.configuration(token: "coffer", key: "made-here")
        configuration.keyID = "0a0b"
        configuration.generateKey = true
        let path = hsm.database()
        do {
            let vault = try Vault.open(
                VaultConfiguration(storage: .sqlite(path: path), seal: try PKCS11Seal(configuration))
            )
            _ = try vault.initialize(shares: 1, threshold: 1)
            vault.close()
        }
        let listing = try hsm.listObjects(token: "coffer")
        #expect(listing.components(separatedBy: "Secret Key Object").count == 2, "exactly one key: \(listing)")
        #expect(
            listing.contains("AES length 32") && listing.contains("label:      made-here")
                && listing.contains("ID:         0a0b")
        )
        #expect(listing.contains("never extractable") && listing.contains("sensitive"))
        // Reopening finds the key it made instead of making another.
        let vault = try Vault.open(
            VaultConfiguration(storage: .sqlite(path: path), seal: try PKCS11Seal(configuration))
        )
        #expect(try !vault.status().sealed)
        vault.close()
        #expect(try hsm.listObjects(token: "coffer").components(separatedBy: "Secret Key Object").count == 2)
    }

    // MARK: Bad input and faults

    @Test func moduleProblemsNameTheModule() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        func check(_ lib: String, _ texts: [String]) throws {
            var configuration = hsm.configuration(token: "coffer", key: "k")
            configuration.lib = lib
            let seal = try PKCS11Seal(configuration)
            expectCofferError(.invalidArgument, containing: texts) { try seal.check() }
        }
        try check("/nonexistent/libpkcs11.so", ["'/nonexistent/libpkcs11.so' does not exist"])
        try check("libsofthsm2.so", ["must be absolute"])
        try check("/etc/hostname", ["cannot load the PKCS#11 module"])
        let notAModule = ["/usr/lib/x86_64-linux-gnu/libsqlite3.so.0", "/lib/x86_64-linux-gnu/libsqlite3.so.0"].first {
            FileManager.default.fileExists(atPath: $0)
        }
        try check(try #require(notAModule), ["is not a PKCS#11 module", "C_GetFunctionList"])
    }

    @Test func tokenNotFoundListsTheTokensThatExist() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("alpha")
        try hsm.initToken("beta")
        let seal = try hsm.seal(token: "gamma", key: "k")
        expectCofferError(
            .invalidArgument,
            containing: ["token_label 'gamma'", "'alpha' (slot", "'beta' (slot", "Fix token_label"]
        ) {
            try seal.check()
        }
    }

    @Test func wrongPINIsAClearErrorAndTheRightOneWorks() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        var configuration = hsm.configuration(token: "coffer", key: "k")
        configuration.pin = SecureBytes("9999".utf8)
        expectCofferError(
            .invalidArgument,
            containing: ["PIN for HSM token 'coffer'", "is wrong (CKR_PIN_INCORRECT)", "COFFER_HSM_PIN"]
        ) {
            try PKCS11Seal(configuration).check()
        }
        // The PIN never appears in errors.
        do { try PKCS11Seal(configuration).check() } catch { #expect(!error.message.contains("9999")) }
        configuration.pin = nil
        PKCS11Configuration.forgetEnvironmentPIN()
        expectCofferError(.invalidArgument, containing: ["no PIN", "pin_file or COFFER_HSM_PIN"]) {
            try PKCS11Seal(configuration).check()
        }
        let pinFile = hsm.directory + "/pin"
        try "\(hsm.pin)\n".write(toFile: pinFile, atomically: false, encoding: .utf8)
        chmod(pinFile, 0o600)
        configuration.pinFile = pinFile
        try PKCS11Seal(configuration).check()
        configuration.pinFile = nil
        setenv("COFFER_HSM_PIN", hsm.pin, 1)
        defer {
            unsetenv("COFFER_HSM_PIN")
            PKCS11Configuration.forgetEnvironmentPIN()
        }
        try PKCS11Seal(configuration).check()
    }

    // MARK: A wrong PIN, and what callers without a token learn

    @Test func aWrongPINIsTriedOnceAndNeverAgainByTheSameSeal() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        let module = try LoggingModule(hsm)
        var right = hsm.configuration(token: "coffer", key: "k")
        right.lib = module.path
        let path = hsm.database()
        do {
            let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path), seal: try PKCS11Seal(right)))
            _ = try vault.initialize(shares: 1, threshold: 1)
            vault.close()
        }
        #expect(module.logins == ["C_Login 0x0"])
        // The configured PIN is wrong: the vault opens sealed, and anyone may call sys/unseal.
        var wrong = right
        wrong.pin = SecureBytes("9999".utf8)
        var configuration = VaultConfiguration(storage: .sqlite(path: path), seal: try PKCS11Seal(wrong))
        configuration.autoUnseal = false
        let vault = try Vault.open(configuration)
        for _ in 0..<5 {
            expectCofferError(
                .invalidArgument,
                containing: ["is wrong (CKR_PIN_INCORRECT)", "tries no further login with this PIN"]
            ) {
                _ = try vault.handle(Request(.update, "sys/unseal", data: [:]))
            }
            expectCofferError(.invalidArgument, containing: ["CKR_PIN_INCORRECT"]) { try vault.autoUnseal() }
            #expect(vault.core.handleWire(method: "PUT", path: "sys/unseal", token: nil, body: []).status == 400)
        }
        // Fifteen unseal calls, one login with the wrong PIN (0xa0 is CKR_PIN_INCORRECT).
        #expect(module.logins == ["C_Login 0x0", "C_Login 0xa0"])
        #expect(try vault.status().sealed)
        vault.close()
        // A new seal (the configuration reloaded) with the right PIN logs in and unseals.
        let fixed = try Vault.open(VaultConfiguration(storage: .sqlite(path: path), seal: try PKCS11Seal(right)))
        #expect(try !fixed.status().sealed)
        #expect(module.logins == ["C_Login 0x0", "C_Login 0xa0", "C_Login 0x0"])
        fixed.close()
    }

    @Test func aPINChangedWhileRunningIsTriedOnceWhenTheSealReconnects() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        let module = try LoggingModule(hsm)
        var configuration = hsm.configuration(token: "coffer", key: "k")
        configuration.lib = module.path
        let vault = try Vault.open(
            VaultConfiguration(storage: .sqlite(path: hsm.database()), seal: try PKCS11Seal(configuration))
        )
        let token = try vault.initialize(shares: 1, threshold: 1).rootToken
        vault.seal()
        // The security officer changes the PIN, and the HSM drops out for a moment: the seal's
        // connection is gone and the next unseal logs in again, with the PIN it was given.
        _ = try hsm.tool("coffer", ["--change-pin", "--new-pin", "4321"])
        module.unplugged = true
        expectCofferError(.unavailable, containing: ["CKR_DEVICE_REMOVED"]) { try vault.autoUnseal() }
        module.unplugged = false
        for _ in 0..<5 {
            expectCofferError(.invalidArgument, containing: ["CKR_PIN_INCORRECT"]) {
                _ = try vault.handle(Request(.update, "sys/unseal", data: [:]))
            }
        }
        #expect(module.logins == ["C_Login 0x0", "C_Login 0xa0"])
        #expect(try vault.status().sealed)
        expectCofferError(.sealed, containing: ["Vault is sealed"]) {
            _ = try vault.handle(Request(.read, "auth/token/lookup-self", token: token))
        }
        vault.close()
    }

    @Test func withAReportHookCallersLearnNothingOfTheConfiguration() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("label-q7x")
        try hsm.createAESKey(token: "label-q7x", label: "key-q7x", id: "01")
        let (serials, slots) = try hsm.serialsAndSlots()
        #expect(!serials.isEmpty && !slots.isEmpty)
        let path = hsm.database()
        do {
            let vault = try Vault.open(
                VaultConfiguration(storage: .sqlite(path: path), seal: try hsm.seal(token: "label-q7x", key: "key-q7x"))
            )
            _ = try vault.initialize(shares: 1, threshold: 1)
            vault.close()
        }
        func expectNoDetail(
            _ answer: (status: Int, body: [UInt8]?),
            status: Int,
            sourceLocation: SourceLocation = #_sourceLocation
        ) {
            let text = String(decoding: answer.body ?? [], as: UTF8.self)
            #expect(answer.status == status, sourceLocation: sourceLocation)
            #expect(text.contains("the reason is in the server's log"), "\(text)", sourceLocation: sourceLocation)
            for detail in [SoftHSM.module, "softhsm", "label-q7x", "key-q7x", "slot", "serial", "CKR_"] + serials
                + slots
            {
                #expect(!text.contains(detail), "\(text) names \(detail)", sourceLocation: sourceLocation)
            }
        }
        let reports = LockedCounter()
        var wrong = hsm.configuration(token: "label-q7x", key: "key-q7x")
        wrong.pin = SecureBytes("9999".utf8)
        var configuration = VaultConfiguration(
            storage: .sqlite(path: path),
            seal: try PKCS11Seal(wrong) { reports.add($0.message) }
        )
        configuration.autoUnseal = false
        let vault = try Vault.open(configuration)
        for _ in 0..<3 {
            expectNoDetail(vault.core.handleWire(method: "PUT", path: "sys/unseal", token: nil, body: []), status: 400)
        }
        // The operator gets the detail once, not once per caller.
        #expect(reports.value == 1)
        #expect(
            reports.first?.contains("HSM token 'label-q7x'") == true
                && reports.first?.contains("CKR_PIN_INCORRECT") == true
        )
        vault.close()
        // A token label that matches nothing: the full error lists every token with its slot and serial.
        let absent = try PKCS11Seal(hsm.configuration(token: "absent", key: "key-q7x")) { reports.add($0.message) }
        let fresh = try Vault.open(VaultConfiguration(storage: .memory, seal: absent))
        let body = Array(#"{"recovery_shares": 1, "recovery_threshold": 1}"#.utf8)
        expectNoDetail(fresh.core.handleWire(method: "PUT", path: "sys/init", token: nil, body: body), status: 400)
        #expect(reports.value == 2 && reports.last?.contains("tokens found: 'label-q7x' (slot") == true)
        fresh.close()
    }

    // MARK: The PIN in memory, in files and in the environment

    @Test func aPINFileOthersCanReadOrWriteIsRefused() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        var configuration = hsm.configuration(token: "coffer", key: "k")
        configuration.pin = nil
        let pinFile = hsm.directory + "/pin"
        try "\(hsm.pin)\n".write(toFile: pinFile, atomically: false, encoding: .utf8)
        configuration.pinFile = pinFile
        for (mode, who) in [
            (0o644, "its group and others"), (0o640, "its group"), (0o604, "others"), (0o620, "its group"),
            (0o602, "others"),
        ] {
            chmod(pinFile, mode_t(mode))
            expectCofferError(
                .invalidArgument,
                containing: [
                    "pin_file '\(pinFile)' can be read or written by \(who) (mode \(String(mode, radix: 8)))",
                    "chmod 600 '\(pinFile)'",
                ]
            ) { _ = try PKCS11Seal(configuration) }
        }
        for mode in [0o600, 0o400, 0o700] {
            chmod(pinFile, mode_t(mode))
            try PKCS11Seal(configuration).check()
        }
        configuration.pinFile = hsm.directory
        expectCofferError(.invalidArgument, containing: ["pin_file '\(hsm.directory)' is not a regular file"]) {
            _ = try PKCS11Seal(configuration)
        }
    }

    @Test func thePINFromTheEnvironmentIsTakenOutOfIt() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        var configuration = hsm.configuration(token: "coffer", key: "k")
        configuration.pin = nil
        PKCS11Configuration.forgetEnvironmentPIN()
        setenv("COFFER_HSM_PIN", hsm.pin, 1)
        defer {
            unsetenv("COFFER_HSM_PIN")
            PKCS11Configuration.forgetEnvironmentPIN()
        }
        let seal = try PKCS11Seal(configuration)
        #expect(getenv("COFFER_HSM_PIN") == nil)
        try seal.check()
        // Later seals of the process still have it.
        try PKCS11Seal(configuration).check()
        // A seal keeps no String of a PIN given in the configuration either.
        #expect(try hsm.seal(token: "coffer", key: "k").configuration.pin == nil)
    }

    // MARK: Where the module is loaded from

    @Test func aModuleOthersCouldReplaceIsRefusedBeforeItIsLoaded() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        func copyModule(into directory: String, directoryMode: Int, fileMode: Int) throws -> String {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
            let path = directory + "/libsofthsm2.so"
            // (Debian's module path is a symlink: copy what it points to.)
            try FileManager.default.copyItem(
                atPath: URL(fileURLWithPath: SoftHSM.module).resolvingSymlinksInPath().path,
                toPath: path
            )
            chmod(path, mode_t(fileMode))
            chmod(directory, mode_t(directoryMode))
            return path
        }
        func seal(_ lib: String) throws -> PKCS11Seal {
            var configuration = hsm.configuration(token: "coffer", key: "k")
            configuration.lib = lib
            return try PKCS11Seal(configuration)
        }
        let open = hsm.directory + "/world-writable"
        let exposed = try copyModule(into: open, directoryMode: 0o777, fileMode: 0o755)
        expectCofferError(
            .invalidArgument,
            containing: [
                "refusing to load the PKCS#11 module (lib) '\(exposed)'",
                "the directory '\(open)' is writable by its group and others (mode 777)",
                "chmod go-w '\(open)'", "root-owned directory such as /usr/lib",
            ]
        ) { try seal(exposed).check() }
        let writableFile = try copyModule(into: hsm.directory + "/group-file", directoryMode: 0o755, fileMode: 0o775)
        expectCofferError(
            .invalidArgument,
            containing: ["the module file '\(writableFile)' is writable by its group (mode 775)"]
        ) {
            try seal(writableFile).check()
        }
        // A symlink is judged by where it leads.
        let link = hsm.directory + "/link.so"
        symlink(exposed, link)
        expectCofferError(
            .invalidArgument,
            containing: ["(lib) '\(link)' (resolved to '\(exposed)')", "the directory '\(open)'"]
        ) {
            try seal(link).check()
        }
        if geteuid() == 0 {
            // Owned by another user, who could write it whatever its mode.
            let foreign = try copyModule(into: hsm.directory + "/foreign", directoryMode: 0o755, fileMode: 0o755)
            chown(foreign, 4242, 4242)
            expectCofferError(
                .invalidArgument,
                containing: ["the module file '\(foreign)' is owned by uid 4242, neither root"]
            ) {
                try seal(foreign).check()
            }
        }
        // Writable by its owner only, in directories likewise (the temporary directory above them
        // has the sticky bit): loaded and used.
        let safe = try copyModule(into: hsm.directory + "/safe", directoryMode: 0o755, fileMode: 0o755)
        try seal(safe).check()
    }

    @Test func keyNotFoundOrOfTheWrongType() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createRSAKey(token: "coffer", label: "rsa", id: "02")
        expectCofferError(
            .invalidArgument,
            containing: ["key_label 'missing' not found on HSM token 'coffer'", "generate_key"]
        ) {
            try hsm.seal(token: "coffer", key: "missing").check()
        }
        expectCofferError(
            .invalidArgument,
            containing: ["the object with key_label 'rsa'", "but CKM_AES_GCM needs an AES secret key"]
        ) {
            try hsm.seal(token: "coffer", key: "rsa").check()
        }
        expectCofferError(.invalidArgument, containing: ["generate_key creates AES keys only"]) {
            var configuration = hsm.configuration(token: "coffer", key: "x", mechanism: .rsaOAEP)
            configuration.generateKey = true
            _ = try PKCS11Seal(configuration)
        }
    }

    @Test func aMissingSoftHSMConfigIsNamedAndARetryLaterWorks() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        let path = hsm.database()
        // A new seal for each start, as a new process would have: the module is initialised anew.
        func configuration() throws -> VaultConfiguration {
            VaultConfiguration(storage: .sqlite(path: path), seal: try hsm.seal(token: "coffer", key: "k"))
        }
        let token: String
        do {
            let vault = try Vault.open(try configuration())
            token = try vault.initialize(shares: 1, threshold: 1).rootToken
            try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
            try vault.kv(token: token).put("x", ["v": "kept"])
            vault.close()
        }
        // The HSM is away when the vault starts.
        setenv("SOFTHSM2_CONF", hsm.directory + "/missing.conf", 1)
        expectCofferError(.unavailable, containing: ["CKR_GENERAL_ERROR", "SOFTHSM2_CONF"]) {
            _ = try Vault.open(try configuration())
        }
        var lenient = try configuration()
        lenient.autoUnseal = false
        let vault = try Vault.open(lenient)
        expectCofferError(.unavailable, containing: ["CKR_GENERAL_ERROR"]) { try vault.autoUnseal() }
        #expect(try vault.status().sealed)
        expectCofferError(.sealed, containing: ["Vault is sealed"]) { _ = try vault.kv(token: token).get("x") }
        // It is back: the same vault retries and unseals, nothing lost.
        setenv("SOFTHSM2_CONF", hsm.conf, 1)
        try vault.autoUnseal()
        #expect(try vault.kv(token: token).get("x")?.data["v"] == "kept")
        vault.close()
    }

    @Test func pullingTheKeyFromTheTokenLeavesASealedVaultAndLosesNothing() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "root-key", id: "01")
        let path = hsm.database()
        let configuration = VaultConfiguration(
            storage: .sqlite(path: path),
            seal: try hsm.seal(token: "coffer", key: "root-key")
        )
        let token: String
        do {
            let vault = try Vault.open(configuration)
            token = try vault.initialize(shares: 1, threshold: 1).rootToken
            try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
            try vault.kv(token: token).put("app", ["password": "s3cret"])
            vault.close()
        }
        let backup = try hsm.backup()
        try hsm.deleteKey(token: "coffer", label: "root-key")
        expectCofferError(
            .invalidArgument,
            containing: ["key_label 'root-key' and key_id 01 not found on HSM token 'coffer'"]
        ) {
            _ = try Vault.open(configuration)
        }
        var lenient = configuration
        lenient.autoUnseal = false
        do {
            let vault = try Vault.open(lenient)
            expectCofferError(.invalidArgument, containing: ["not found on HSM token 'coffer'"]) {
                try vault.autoUnseal()
            }
            #expect(try vault.status().sealed && vault.status().initialized)
            vault.close()
        }
        // The key comes back (from the HSM's backup): everything is there.
        try hsm.restore(backup)
        let vault = try Vault.open(configuration)
        #expect(try vault.kv(token: token).get("app")?.data["password"] == "s3cret")
        vault.close()
    }

    @Test func theHSMFailingMidOperationChangesNothing() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "root-key", id: "01")
        let vault = try Vault.open(
            VaultConfiguration(
                storage: .sqlite(path: hsm.database()),
                seal: try hsm.seal(token: "coffer", key: "root-key")
            )
        )
        let token = try vault.initialize(shares: 1, threshold: 1).rootToken
        try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
        try vault.kv(token: token).put("app", ["v": "1"])
        let keyringBefore = try vault.core.barrier.physical.get("core/keyring")
        let backup = try hsm.backup()
        try hsm.deleteKey(token: "coffer", label: "root-key")
        // Rotating the barrier key re-wraps the keyring with the HSM key: it fails, nothing changes.
        expectCofferError(.invalidArgument, containing: ["not found on HSM token 'coffer'"]) {
            _ = try vault.handle(Request(.update, "sys/rotate", token: token))
        }
        #expect(try vault.core.barrier.physical.get("core/keyring") == keyringBefore)
        #expect(try vault.handle(Request(.read, "sys/key-status", token: token)).data?["term"] == .int(1))
        #expect(try vault.kv(token: token).get("app")?.data["v"] == "1")
        try hsm.restore(backup)
        _ = try vault.handle(Request(.update, "sys/rotate", token: token))
        #expect(try vault.handle(Request(.read, "sys/key-status", token: token)).data?["term"] == .int(2))
        vault.close()
    }

    // MARK: Seal wrap

    @Test(arguments: [true, false])
    func sealWrapKeepsTheKeyringClosedToTheRootKeyAlone(sealWrap: Bool) throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        var configuration = hsm.configuration(token: "coffer", key: "k")
        configuration.sealWrap = sealWrap
        let vault = try Vault.open(VaultConfiguration(storage: .memory, seal: try PKCS11Seal(configuration)))
        _ = try vault.initialize(shares: 1, threshold: 1)
        // What a thief holding the database and the root key (but not the HSM) can do with the keyring:
        let stored = try #require(try vault.core.barrier.physical.get("core/keyring"))
        let rootKey = try vault.core.barrier.rootKey()
        let opened = try? Envelope.openSecure(key: rootKey, blob: stored, path: "core/keyring")
        #expect((opened == nil) == sealWrap)
        #expect(SealWrap.isWrapped(stored) == sealWrap)
        #expect(try SealWrap.isWrapped(#require(try vault.core.barrier.physical.get("core/recovery-key"))) == sealWrap)
        let status = try vault.core.sealWrapStatus()
        #expect(status.sealWrap == sealWrap)
        #expect(status.entries["core/root-key"] == "pkcs11 key_label=k key_id=01 mechanism=CKM_AES_GCM")
        #expect(
            status.entries["core/keyring"] == (sealWrap ? "pkcs11 key_label=k key_id=01 mechanism=CKM_AES_GCM" : nil)
        )
        vault.close()
    }

    @Test func transitKeyMaterialIsSealWrapped() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        let vault = try Vault.open(
            VaultConfiguration(storage: .memory, seal: try PKCS11Seal(hsm.configuration(token: "coffer", key: "k")))
        )
        let token = try vault.initialize(shares: 1, threshold: 1).rootToken
        #expect(
            vault.core.handleWire(
                method: "POST",
                path: "sys/mounts/transit",
                token: token,
                body: Array(#"{"type":"transit"}"#.utf8)
            ).status == 204
        )
        #expect(
            vault.core.handleWire(method: "POST", path: "transit/keys/orders", token: token, body: []).status == 200
        )
        let sealed = vault.core.handleWire(
            method: "POST",
            path: "transit/encrypt/orders",
            token: token,
            body: Array(#"{"plaintext":"aGk="}"#.utf8)
        )
        let sealedBody = try #require(sealed.body)
        let ciphertext = try #require(try JSONValue.parse(sealedBody)["data"]?["ciphertext"]?.stringValue)
        let wrapped = try vault.core.sealWrapStatus().entries.filter { $0.key.hasSuffix("/policy/orders") }
        #expect(wrapped.count == 1 && wrapped.first?.value == "pkcs11 key_label=k key_id=01 mechanism=CKM_AES_GCM")
        // After a restart the key is read back through the HSM.
        vault.seal()
        try vault.autoUnseal()
        let opened = vault.core.handleWire(
            method: "POST",
            path: "transit/decrypt/orders",
            token: token,
            body: Array(#"{"ciphertext":"\#(ciphertext)"}"#.utf8)
        )
        let openedBody = try #require(opened.body)
        #expect(try JSONValue.parse(openedBody)["data"]?["plaintext"] == "aGk=")
        vault.close()
    }

    @Test func pkiCAKeysAreSealWrapped() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "k", id: "01")
        let vault = try Vault.open(
            VaultConfiguration(storage: .memory, seal: try PKCS11Seal(hsm.configuration(token: "coffer", key: "k")))
        )
        let token = try vault.initialize(shares: 1, threshold: 1).rootToken
        func post(_ path: String, _ body: String) -> Int {
            vault.core.handleWire(method: "POST", path: path, token: token, body: Array(body.utf8)).status
        }
        #expect(post("sys/mounts/pki", #"{"type":"pki"}"#) == 204)
        #expect(post("pki/root/generate/internal", #"{"common_name":"HSM Root","key_type":"ec"}"#) == 200)
        #expect(post("pki/roles/web", #"{"allow_any_name":true,"key_type":"ec"}"#) == 200)
        let entries = try vault.core.sealWrapStatus().entries
        let keys = entries.filter { $0.key.contains("/key/") }
        #expect(keys.count == 1 && keys.first?.value == "pkcs11 key_label=k key_id=01 mechanism=CKM_AES_GCM")
        #expect(entries.contains { $0.key.hasSuffix("/config/serial-key") })
        // Issued certificates and roles are not key material: barrier only.
        #expect(!entries.contains { $0.key.contains("/role/") || $0.key.contains("/certs/") })
        // After a restart the CA key is read back through the HSM and signs again.
        vault.seal()
        try vault.autoUnseal()
        #expect(post("pki/issue/web", #"{"common_name":"a.example.internal"}"#) == 200)
        vault.close()
    }

    // MARK: Rotation

    @Test func rotatingTheHSMKeyThenRewrapMovesEverythingToTheNewKey() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "key-2024", id: "01")
        let path = hsm.database()
        let token: String
        do {
            let vault = try Vault.open(
                VaultConfiguration(storage: .sqlite(path: path), seal: try hsm.seal(token: "coffer", key: "key-2024"))
            )
            token = try vault.initialize(shares: 1, threshold: 1).rootToken
            try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
            try vault.kv(token: token).put("app", ["v": "before rotation"])
            vault.close()
        }
        try hsm.createAESKey(token: "coffer", label: "key-2025", id: "02")
        let rotated = VaultConfiguration(
            storage: .sqlite(path: path),
            seal: try hsm.seal(token: "coffer", key: "key-2025")
        )
        do {
            // The new key is configured; old blobs still open with the old key.
            let vault = try Vault.open(rotated)
            #expect(try vault.kv(token: token).get("app")?.data["v"] == "before rotation")
            let before = try vault.handle(Request(.read, "sys/sealwrap/rewrap", token: token)).raw
            #expect(before?["current_key"] == "pkcs11 key_label=key-2025 key_id=02 mechanism=CKM_AES_GCM")
            #expect(before?["stale"] == ["core/keyring", "core/recovery-key", "core/root-key"])
            let after = try vault.handle(Request(.update, "sys/sealwrap/rewrap", token: token)).raw
            #expect(after?["stale"] == [])
            #expect(after?["keys"] == ["pkcs11 key_label=key-2025 key_id=02 mechanism=CKM_AES_GCM": 3])
            vault.close()
        }
        // The old key can go: nothing needs it any more.
        try hsm.deleteKey(token: "coffer", label: "key-2024")
        let vault = try Vault.open(rotated)
        #expect(try vault.kv(token: token).get("app")?.data["v"] == "before rotation")
        vault.close()
    }

    /// A rewrap reads every seal-wrapped entry, wraps it again and writes it back: a transit key
    /// rotation that lands in between must not be undone by the write-back (the new key version,
    /// and everything encrypted under it, would be lost).
    @Test func rewrapRacingTransitKeyRotationsLosesNoKeyVersion() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "wrap", id: "01")
        let vault = try Vault.open(
            VaultConfiguration(storage: .sqlite(path: hsm.database()), seal: try hsm.seal(token: "coffer", key: "wrap"))
        )
        defer { vault.close() }
        let token = try vault.initialize(shares: 1, threshold: 1).rootToken
        try vault.core.mount(MountEntry(path: "transit/", type: "transit"))
        for name in ["k", "other1", "other2", "other3"] {
            _ = try vault.handle(Request(.update, "transit/keys/\(name)", token: token))
        }
        let rotations = 40
        let ciphertexts = Mutex<[(version: Int, text: String)]>([])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            do {
                if worker == 0 {
                    for _ in 0..<rotations {
                        _ = try vault.handle(Request(.update, "transit/keys/k/rotate", token: token))
                        let sealed = try vault.handle(
                            Request(.update, "transit/encrypt/k", data: ["plaintext": "aGk="], token: token)
                        )
                        let text = try #require(sealed.data?["ciphertext"]?.stringValue)
                        let version = try #require(sealed.data?["key_version"]?.intValue)
                        ciphertexts.withLock { $0.append((version, text)) }
                    }
                } else {
                    for _ in 0..<rotations {
                        _ = try vault.handle(Request(.update, "sys/sealwrap/rewrap", token: token))
                    }
                }
            } catch {
                failures.withLock { $0.append("worker \(worker): \(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let key = try vault.handle(Request(.read, "transit/keys/k", token: token))
        #expect(key.data?["latest_version"] == .int(rotations + 1))
        for (version, text) in ciphertexts.withLock({ $0 }) {
            let opened = try? vault.handle(
                Request(.update, "transit/decrypt/k", data: ["ciphertext": .string(text)], token: token)
            )
            #expect(opened?.data?["plaintext"] == "aGk=", "a ciphertext of key version \(version) no longer decrypts")
        }
    }

    /// Rewrap seals the recovery key again while holding the keyring lock; when that encryption is
    /// the one that makes the barrier's automatic rotation due, the rotation is put off to the next
    /// encryption instead of waiting for the lock the rewrap itself holds.
    @Test func rewrapWhenAnAutomaticBarrierRotationIsDueFinishesAndRotatesLater() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "wrap", id: "01")
        let clock = ManualClock()
        let vault = try Vault.open(
            VaultConfiguration(
                storage: .sqlite(path: hsm.database()),
                seal: try hsm.seal(token: "coffer", key: "wrap"),
                clock: clock
            )
        )
        defer { vault.close() }
        let token = try vault.initialize(shares: 1, threshold: 1).rootToken
        _ = try vault.handle(Request(.update, "sys/rotate/config", data: ["interval": "25h"], token: token))
        let term = try #require(
            try vault.handle(Request(.read, "sys/key-status", token: token)).data?["term"]?.intValue
        )
        clock.advance(seconds: 26 * 3600)
        let after = try vault.handle(Request(.update, "sys/sealwrap/rewrap", token: token)).raw
        #expect(after?["stale"] == [])
        try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
        try vault.kv(token: token).put("app", ["v": "after"])
        #expect(try vault.handle(Request(.read, "sys/key-status", token: token)).data?["term"] == .int(term + 1))
        #expect(try vault.kv(token: token).get("app")?.data["v"] == "after")
    }

    // MARK: Migration

    @Test func migrateShamirToPKCS11AndBackWithEverySecretIntact() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "root-key", id: "01")
        let path = hsm.database()
        let shamir = VaultConfiguration(storage: .sqlite(path: path))
        let pkcs11 = VaultConfiguration(
            storage: .sqlite(path: path),
            seal: try hsm.seal(token: "coffer", key: "root-key")
        )
        let token: String
        let recovery: InitResult
        do {
            let vault = try Vault.open(shamir)
            let result = try vault.initialize(shares: 3, threshold: 2)
            token = result.rootToken
            try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
            for i in 0..<10 { try vault.kv(token: token).put("s\(i)", ["n": .int(i)]) }
            _ = try vault.handle(Request(.update, "sys/rotate", token: token))
            recovery = try vault.migrateSeal(to: pkcs11.seal, shares: 5, threshold: 3)
            #expect(recovery.recovery && recovery.keys.count == 5)
            #expect(try vault.status().type == "pkcs11" && !vault.status().sealed)
            vault.close()
        }
        expectCofferError(.invalidArgument, containing: ["sealed by a pkcs11 seal", "migrate the seal first"]) {
            _ = try Vault.open(shamir)
        }
        let unsealKeys: InitResult
        do {
            let vault = try Vault.open(pkcs11)
            for i in 0..<10 { #expect(try vault.kv(token: token).get("s\(i)")?.data["n"] == .int(i)) }
            #expect(SealWrap.isWrapped(try #require(try vault.core.barrier.physical.get("core/keyring"))))
            unsealKeys = try vault.migrateSeal(to: ShamirSeal(), shares: 3, threshold: 2)
            #expect(!unsealKeys.recovery && unsealKeys.keys.count == 3)
            vault.close()
        }
        let vault = try Vault.open(shamir)
        #expect(try vault.status().sealed)
        try vault.unseal(key: unsealKeys.keys[0])
        try vault.unseal(key: unsealKeys.keys[2])
        for i in 0..<10 { #expect(try vault.kv(token: token).get("s\(i)")?.data["n"] == .int(i)) }
        #expect(try vault.core.barrier.physical.get("core/recovery-key") == nil)
        #expect(try !SealWrap.isWrapped(#require(try vault.core.barrier.physical.get("core/keyring"))))
        vault.close()
    }

    // MARK: Recovery shares

    @Test func recoverySharesRekeyAndGenerateANewRootToken() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "root-key", id: "01")
        let vault = try Vault.open(
            VaultConfiguration(storage: .memory, seal: try hsm.seal(token: "coffer", key: "root-key"))
        )
        let initial = try vault.initialize(shares: 3, threshold: 2)
        // Rekey the recovery shares (Vault's sys/rekey-recovery-key path; sys/rekey works alike).
        let started = try vault.handle(
            Request(.update, "sys/rekey-recovery-key/init", data: ["secret_shares": 4, "secret_threshold": 2])
        )
        let nonce = try #require(started.raw?["nonce"]?.stringValue)
        _ = try vault.handle(
            Request(
                .update,
                "sys/rekey-recovery-key/update",
                data: ["key": .string(initial.hexKeys[0]), "nonce": .string(nonce)]
            )
        )
        let done = try vault.handle(
            Request(
                .update,
                "sys/rekey-recovery-key/update",
                data: ["key": .string(initial.hexKeys[1]), "nonce": .string(nonce)]
            )
        )
        let recovery = try #require(done.raw?["keys"]?.arrayValue).compactMap(\.stringValue)
        #expect(recovery.count == 4)

        // The root token is lost: generate a new one with the new recovery shares.
        _ = try vault.handle(Request(.update, "auth/token/revoke-self", token: initial.rootToken))
        let attempt = try vault.handle(Request(.update, "sys/generate-root/attempt", data: [:]))
        let otp = try #require(attempt.raw?["otp"]?.stringValue)
        let rootNonce = try #require(attempt.raw?["nonce"]?.stringValue)
        #expect(otp.count == 26 && attempt.raw?["required"] == 2)
        expectCofferError(.invalidArgument, containing: ["not one of the current recovery keys"]) {
            _ = try vault.handle(
                Request(
                    .update,
                    "sys/generate-root/update",
                    data: ["key": .string(initial.hexKeys[0]), "nonce": .string(rootNonce)]
                )
            )
        }
        _ = try vault.handle(
            Request(
                .update,
                "sys/generate-root/update",
                data: ["key": .string(recovery[3]), "nonce": .string(rootNonce)]
            )
        )
        let complete = try vault.handle(
            Request(
                .update,
                "sys/generate-root/update",
                data: ["key": .string(recovery[1]), "nonce": .string(rootNonce)]
            )
        )
        #expect(complete.raw?["complete"] == true)
        let encoded = try #require(complete.raw?["encoded_token"]?.stringValue)
        let newRoot = try decodeRootToken(encoded: encoded, otp: otp)
        #expect(newRoot.hasPrefix("s.") && newRoot != initial.rootToken)
        let lookup = try vault.handle(Request(.read, "auth/token/lookup-self", token: newRoot))
        #expect(lookup.data?["policies"] == ["root"])
        vault.close()
    }

    // MARK: Concurrency

    @Test func sixteenThreadsUseTheSealAtOnce() throws {
        let hsm = try SoftHSM()
        try hsm.initToken("coffer")
        try hsm.createAESKey(token: "coffer", label: "aes", id: "01")
        try hsm.createRSAKey(token: "coffer", label: "rsa", id: "02")
        var aesConfiguration = hsm.configuration(token: "coffer", key: "aes")
        aesConfiguration.maxSessions = 4  // fewer sessions than threads: callers wait for one
        let seals = [try PKCS11Seal(aesConfiguration), try hsm.seal(token: "coffer", key: "rsa", mechanism: .rsaOAEP)]
        let vault = try Vault.open(VaultConfiguration(storage: .memory, seal: seals[0]))
        let token = try vault.initialize(shares: 1, threshold: 1).rootToken
        try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
        let failures = LockedCounter()
        let group = DispatchGroup()
        for thread in 0..<16 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    for round in 0..<10 {
                        let seal = seals[(thread + round) % 2]
                        let secret = SecureBytes(randomCount: 32)
                        let blob = try seal.wrap(secret, unsealKey: nil)
                        if try !seal.unwrap(blob, unsealKey: nil).constantTimeEquals(secret) { failures.add() }
                        try vault.core.barrier.putSealWrapped("core/test/\(thread)-\(round)", Array("v\(round)".utf8))
                        if try vault.core.barrier.get("core/test/\(thread)-\(round)") != Array("v\(round)".utf8) {
                            failures.add()
                        }
                        try vault.kv(token: token).put("t\(thread)", ["round": .int(round)])
                    }
                } catch {
                    failures.add("\(error)")
                }
            }
        }
        group.wait()
        #expect(failures.value == 0, "first failure: \(failures.first ?? "")")
        vault.close()
    }

    // MARK: Configuration

    @Test func configurationReadsVaultsFieldNames() throws {
        let json = try JSONValue.parse(
            Array(
                """
                {"lib": "/usr/lib/softhsm/libsofthsm2.so", "slot": "0x10", "token_label": "coffer", "pin": "1234",
                 "key_label": "root", "key_id": "0x01", "mechanism": "0x0009", "generate_key": "false", "seal_wrap": false}
                """.utf8
            )
        )
        let configuration = try PKCS11Configuration(json: json)
        #expect(configuration.slot == 16 && configuration.tokenLabel == "coffer" && configuration.keyLabel == "root")
        #expect(configuration.keyIDBytes == [1] && configuration.mechanism == .rsaOAEP && !configuration.sealWrap)
        #expect(try PKCS11Configuration(json: ["lib": "/x", "mechanism": "CKM_AES_GCM"]).mechanism == .aesGCM)
        #expect(try PKCS11Configuration(json: ["lib": "/x"]).sealWrap)
        expectCofferError(.invalidArgument, containing: ["unknown pkcs11 seal field 'key_lable'"]) {
            _ = try PKCS11Configuration(json: ["lib": "/x", "key_lable": "typo"])
        }
        expectCofferError(.invalidArgument, containing: ["mechanism 'CKM_AES_CBC' is not supported"]) {
            _ = try PKCS11Configuration(json: ["lib": "/x", "mechanism": "CKM_AES_CBC"])
        }
        expectCofferError(.invalidArgument, containing: ["needs key_label or key_id"]) {
            _ = try PKCS11Seal(PKCS11Configuration(lib: "/x", tokenLabel: "t"))
        }
        expectCofferError(.invalidArgument, containing: ["key_id must be hex"]) {
            _ = try PKCS11Seal(PKCS11Configuration(lib: "/x", tokenLabel: "t", keyID: "zz"))
        }
    }
}

/// Decodes an OTP-encoded root token as `bao operator generate-root -decode` does: base64 without
/// padding, XORed with the OTP. The decoder is checked on a pair a real OpenBao 2.7.2 produced.
func decodeRootToken(encoded: String, otp: String) throws -> String {
    func decode(_ encoded: String, _ otp: String) throws -> String {
        let padded = encoded + String(repeating: "=", count: (4 - encoded.count % 4) % 4)
        let bytes = try #require(Base64.decode(padded))
        return String(decoding: zip(bytes, Array(otp.utf8)).map { $0 ^ $1 }, as: UTF8.self)
    }
    #expect(
        try decode("GR0gBgU6BgokBVk1Ohd4MVU4eT8rWA5JPy0", "j3cQuTCcGb4aQDNIgVANNhaptO") == "s.CWpnEicgmTkS6x2n8qe0o9Kb"
    )
    return try decode(encoded, otp)
}

final class LockedCounter: @unchecked Sendable {
    // Sound: `count` is only touched while `lock` is held.
    private let lock = NSLock()
    private var count = 0
    private var messages: [String] = []
    func add(_ message: String = "a wrong value") {
        lock.withLock {
            count += 1
            messages.append(message)
        }
    }
    var value: Int { lock.withLock { count } }
    var first: String? { lock.withLock { messages.first } }
    var last: String? { lock.withLock { messages.last } }
}
