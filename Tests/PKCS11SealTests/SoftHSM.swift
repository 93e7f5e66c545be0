import Coffer
import Foundation
import Testing

/// A real SoftHSM2 with its own configuration and token directory in a temporary directory.
///
/// SoftHSM reads `SOFTHSM2_CONF` when the module is initialised, which the seal does once per
/// process while any seal holds the module. The HSM suite therefore runs serialised, and each test
/// releases its seals (and vaults) before the next one points `SOFTHSM2_CONF` elsewhere.
final class SoftHSM {
    static let module = "/usr/lib/softhsm/libsofthsm2.so"
    let directory: String
    let conf: String
    let pin = "1234"

    init() throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("coffer-hsm-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory + "/tokens", withIntermediateDirectories: true)
        conf = directory + "/softhsm2.conf"
        try "directories.tokendir = \(directory)/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
            .write(toFile: conf, atomically: false, encoding: .utf8)
        setenv("SOFTHSM2_CONF", conf, 1)
        guard FileManager.default.fileExists(atPath: SoftHSM.module) else {
            throw Failure("\(SoftHSM.module) is missing: install softhsm2 and libsofthsm2-dev (make deps does)")
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Runs an HSM tool; fails with the tool's output when it fails.
    @discardableResult
    func run(_ tool: String, _ arguments: [String]) throws -> String {
        guard
            let path = ["/usr/bin/", "/usr/local/bin/", "/bin/"].map({ $0 + tool }).first(
                where: FileManager.default.isExecutableFile
            )
        else {
            throw Failure(
                "\(tool) is not installed: make deps installs softhsm2 (softhsm2-util) and opensc (pkcs11-tool)"
            )
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["SOFTHSM2_CONF": conf]) { $1 }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure("\(tool) \(arguments.joined(separator: " ")) failed: \(output)")
        }
        return output
    }

    func initToken(_ label: String) throws {
        try run("softhsm2-util", ["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "5678"])
    }

    func tool(_ token: String, _ arguments: [String]) throws -> String {
        try run(
            "pkcs11-tool",
            ["--module", SoftHSM.module, "--token-label", token, "--login", "--pin", pin] + arguments
        )
    }

    func createAESKey(token: String, label: String, id: String) throws {
        try tool(token, ["--keygen", "--key-type", "AES:32", "--label", label, "--id", id])
    }

    func createRSAKey(token: String, label: String, id: String, bits: Int = 2048) throws {
        try tool(token, ["--keypairgen", "--key-type", "rsa:\(bits)", "--label", label, "--id", id])
    }

    /// Imports a known AES key (extractable, for the known-answer test only).
    func importAESKey(token: String, label: String, id: String, value: [UInt8]) throws {
        let file = directory + "/\(label).key"
        try Data(value).write(to: URL(fileURLWithPath: file))
        try tool(
            token,
            [
                "--write-object", file, "--type", "secrkey", "--key-type", "AES:32", "--label", label, "--id", id,
                "--usage-decrypt",
            ]
        )
    }

    /// Pulls a key from the token, as an operator (or an attacker) deleting it would.
    func deleteKey(token: String, label: String, type: String = "secrkey") throws {
        try tool(token, ["--delete-object", "--type", type, "--label", label])
    }

    /// A SQLite path in this HSM's directory (removed with it).
    func database() -> String { directory + "/coffer-\(UUID().uuidString).db" }

    func listObjects(token: String) throws -> String { try tool(token, ["--list-objects"]) }

    /// A copy of the token directory, and putting it back (to bring a pulled key back).
    func backup() throws -> String {
        let copy = directory + "/backup-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: directory + "/tokens", toPath: copy)
        return copy
    }

    func restore(_ copy: String) throws {
        try FileManager.default.removeItem(atPath: directory + "/tokens")
        try FileManager.default.copyItem(atPath: copy, toPath: directory + "/tokens")
    }

    /// The serial numbers and slot ids (decimal and hex) of the initialised tokens, as softhsm2-util
    /// shows them, for checking that answers leave them out.
    func serialsAndSlots() throws -> (serials: [String], slots: [String]) {
        var serials: [String] = []
        var slots: [String] = []
        for block in try run("softhsm2-util", ["--show-slots"]).components(separatedBy: "\nSlot ").dropFirst() {
            let lines = block.split(separator: "\n")
            guard let id = lines.first.flatMap({ UInt($0.trimmingCharacters(in: .whitespaces)) }),
                lines.contains(where: { $0.contains("Initialized:") && $0.hasSuffix("yes") })
            else { continue }
            slots += ["\(id)", "0x" + String(id, radix: 16)]
            for line in lines where line.contains("Serial number:") {
                if let serial = line.split(separator: " ").last, serial != "number:" { serials.append(String(serial)) }
            }
        }
        return (serials, slots)
    }

    /// RSA-OAEP uses SHA-1 here: SoftHSM 2.6 (Debian 12) refuses SHA-256 OAEP ("hashAlg must be CKM_SHA_1").
    func configuration(
        token: String,
        key: String,
        mechanism: PKCS11Configuration.Mechanism = .aesGCM
    ) -> PKCS11Configuration {
        PKCS11Configuration(
            lib: SoftHSM.module,
            tokenLabel: token,
            pin: pin,
            keyLabel: key,
            mechanism: mechanism,
            rsaOAEPHash: .sha1
        )
    }

    func seal(token: String, key: String, mechanism: PKCS11Configuration.Mechanism = .aesGCM) throws -> PKCS11Seal {
        try PKCS11Seal(configuration(token: token, key: key, mechanism: mechanism))
    }
}

/// Tests/compat/pkcs11_test_module.c built into this HSM's directory: a PKCS#11 module in front of
/// SoftHSM that logs every C_Login with its result, and fails C_EncryptInit/C_DecryptInit with
/// CKR_DEVICE_REMOVED while `unplugged` is set.
final class LoggingModule {
    let path: String
    private let log: String
    private let unplugFile: String

    init(_ hsm: SoftHSM) throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("compat/pkcs11_test_module.c").path
        path = hsm.directory + "/libcoffer-test-p11.so"
        log = hsm.directory + "/logins.txt"
        unplugFile = hsm.directory + "/unplugged"
        try hsm.run("cc", ["-shared", "-fPIC", source, "-o", path, "-ldl"])
        setenv("COFFER_TEST_P11_LOG", log, 1)
        setenv("COFFER_TEST_P11_UNPLUG", unplugFile, 1)
    }

    /// Every C_Login so far, as "C_Login 0x<result>".
    var logins: [String] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    var unplugged: Bool {
        get { FileManager.default.fileExists(atPath: unplugFile) }
        set {
            if newValue {
                _ = FileManager.default.createFile(atPath: unplugFile, contents: Data())
            } else {
                try? FileManager.default.removeItem(atPath: unplugFile)
            }
        }
    }
}

func expectCofferError(
    _ code: CofferError.Code,
    containing texts: [String],
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected a \(code) error, got success", sourceLocation: sourceLocation)
    } catch let error as CofferError {
        #expect(error.code == code, "got \(error.code): \(error.message)", sourceLocation: sourceLocation)
        for text in texts {
            #expect(error.message.contains(text), "message was: \(error.message)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}
