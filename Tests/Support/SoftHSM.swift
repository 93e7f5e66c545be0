// SoftHSM2 tokens made by tests: the HSM that PKCS11SealTests and any other suite seal with.
package import Foundation
package import PKCS11Seal

/// A real SoftHSM2 with its own configuration and token directory in a temporary directory.
///
/// SoftHSM reads `SOFTHSM2_CONF` when the module is initialised, which the seal does once per
/// process while any seal holds the module. The HSM suite therefore runs serialised, and each test
/// releases its seals (and vaults) before the next one points `SOFTHSM2_CONF` elsewhere.
package final class SoftHSM {
    package static let module = "/usr/lib/softhsm/libsofthsm2.so"
    package let directory: String
    package let conf: String
    package let pin = "1234"

    package init() throws {
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

    package struct Failure: Error, CustomStringConvertible {
        package let description: String
        package init(_ description: String) { self.description = description }
    }

    /// Runs an HSM tool; fails with the tool's output when it fails.
    @discardableResult
    package func run(_ tool: String, _ arguments: [String]) throws -> String {
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

    package func initToken(_ label: String) throws {
        try run("softhsm2-util", ["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "5678"])
    }

    package func tool(_ token: String, _ arguments: [String]) throws -> String {
        try run(
            "pkcs11-tool",
            ["--module", SoftHSM.module, "--token-label", token, "--login", "--pin", pin] + arguments
        )
    }

    package func createAESKey(token: String, label: String, id: String) throws {
        try tool(token, ["--keygen", "--key-type", "AES:32", "--label", label, "--id", id])
    }

    package func createRSAKey(token: String, label: String, id: String, bits: Int = 2048) throws {
        try tool(token, ["--keypairgen", "--key-type", "rsa:\(bits)", "--label", label, "--id", id])
    }

    /// Imports a known AES key (extractable, for the known-answer test only).
    package func importAESKey(token: String, label: String, id: String, value: [UInt8]) throws {
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
    package func deleteKey(token: String, label: String, type: String = "secrkey") throws {
        try tool(token, ["--delete-object", "--type", type, "--label", label])
    }

    /// A SQLite path in this HSM's directory (removed with it).
    package func database() -> String { directory + "/coffer-\(UUID().uuidString).db" }

    package func listObjects(token: String) throws -> String { try tool(token, ["--list-objects"]) }

    /// A copy of the token directory, and putting it back (to bring a pulled key back).
    package func backup() throws -> String {
        let copy = directory + "/backup-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: directory + "/tokens", toPath: copy)
        return copy
    }

    package func restore(_ copy: String) throws {
        try FileManager.default.removeItem(atPath: directory + "/tokens")
        try FileManager.default.copyItem(atPath: copy, toPath: directory + "/tokens")
    }

    /// The serial numbers and slot ids (decimal and hex) of the initialised tokens, as softhsm2-util
    /// shows them, for checking that answers leave them out.
    package func serialsAndSlots() throws -> (serials: [String], slots: [String]) {
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
    package func configuration(
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

    package func seal(
        token: String,
        key: String,
        mechanism: PKCS11Configuration.Mechanism = .aesGCM
    ) throws -> PKCS11Seal {
        try PKCS11Seal(configuration(token: token, key: key, mechanism: mechanism))
    }
}
