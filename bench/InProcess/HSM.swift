// Open + unseal through the PKCS#11 seal: a SoftHSM2 token made for this run, an AES-256 key on it,
// a vault (with seal wrap, the default) on a SQLite file; then each run opens the vault with a new
// seal (module load, login, unwrap of the root key and the seal-wrapped keyring) and closes it.
import Coffer
import CofferFramework
import Foundation

let softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

func runHSM(_ bench: Bench, directory: URL, runs: Int) throws -> [String: Any] {
    guard FileManager.default.fileExists(atPath: softHSMModule) else {
        throw BenchError("\(softHSMModule) is missing: make deps installs softhsm2")
    }
    let tokens = directory.appendingPathComponent("tokens").path
    try FileManager.default.createDirectory(atPath: tokens, withIntermediateDirectories: true)
    let conf = directory.appendingPathComponent("softhsm2.conf").path
    try "directories.tokendir = \(tokens)\nobjectstore.backend = file\nlog.level = ERROR\n".write(
        toFile: conf,
        atomically: false,
        encoding: .utf8
    )
    setenv("SOFTHSM2_CONF", conf, 1)
    let pin = "1234"
    try run(
        "/usr/bin/softhsm2-util",
        ["--init-token", "--free", "--label", "coffer-bench", "--pin", pin, "--so-pin", "5678"]
    )
    let configuration = PKCS11Configuration(
        lib: softHSMModule,
        tokenLabel: "coffer-bench",
        pin: pin,
        keyLabel: "coffer-bench-root",
        generateKey: true
    )
    let databasePath = directory.appendingPathComponent("hsm.db").path
    func open() throws -> Vault {
        try Vault.open(VaultConfiguration(storage: .sqlite(path: databasePath), seal: try PKCS11Seal(configuration)))
    }
    do {
        let vault = try open()
        let result = try vault.initialize(shares: 1, threshold: 1)
        try vault.core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
        try vault.kv(token: result.rootToken).put("app/db", ["password": "s3cret"])
        vault.close()
    }
    let figure = try bench.measure("open + unseal via SoftHSM (pkcs11 seal)", iterations: runs) {
        let vault = try open()
        guard !vault.core.isSealed else { throw BenchError("the vault did not unseal through SoftHSM") }
        vault.close()
    }
    return ["runs": runs, "p50_ms": (figure?.p50 ?? 0) / 1000, "p99_ms": (figure?.p99 ?? 0) / 1000]
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func run(_ executable: String, _ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw BenchError("\(executable) \(arguments.joined(separator: " ")) failed: \(output)")
    }
}
