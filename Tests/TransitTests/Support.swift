import Coffer
@_exported import CofferTesting
import Foundation
import Synchronization
import Testing

/// A dev vault with transit mounted at `transit/`, spoken to in the wire form (what HTTP and C callers see).
struct Transit: @unchecked Sendable {  // Vault and ManualClock are thread-safe; the struct is immutable
    let vault: Vault
    let clock = ManualClock()

    init() throws {
        (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root", clock: clock)
        let mounted = vault.core.handleWire(
            method: "POST",
            path: "sys/mounts/transit",
            token: "root",
            body: Array(#"{"type":"transit"}"#.utf8)
        )
        precondition(mounted.status == 204, "mounting transit failed: \(mounted)")
    }

    @discardableResult
    func wire(
        _ method: String,
        _ path: String,
        _ body: JSONValue? = nil,
        token: String = "root"
    ) -> (status: Int, json: JSONValue?) {
        let (status, bytes) = vault.core.handleWire(
            method: method,
            path: path,
            token: token,
            body: body?.serialized() ?? []
        )
        return (status, bytes.map { try! JSONValue.parse($0) })
    }

    /// `data` of a request that must succeed with 200.
    func ok(
        _ method: String,
        _ path: String,
        _ body: JSONValue? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> JSONValue {
        let r = wire(method, path, body)
        #expect(
            r.status == 200,
            "\(method) \(path): \(r.json?.jsonString ?? "no body")",
            sourceLocation: sourceLocation
        )
        return try #require(r.json?["data"], sourceLocation: sourceLocation)
    }

    /// The error text of a request that must fail with `status`.
    func fails(
        _ method: String,
        _ path: String,
        _ body: JSONValue? = nil,
        status: Int = 400,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> String {
        let r = wire(method, path, body)
        #expect(
            r.status == status,
            "\(method) \(path) gave \(r.status): \(r.json?.jsonString ?? "")",
            sourceLocation: sourceLocation
        )
        return r.json?["errors"]?[0]?.stringValue ?? ""
    }
}

extension JSONValue {
    subscript(index: Int) -> JSONValue? { arrayValue.flatMap { index < $0.count ? $0[index] : nil } }
}

func b64(_ text: String) -> JSONValue { .string(Data(text.utf8).base64EncodedString()) }
func b64(_ bytes: [UInt8]) -> JSONValue { .string(Data(bytes).base64EncodedString()) }
func unb64(_ value: JSONValue?) -> [UInt8]? {
    value?.stringValue.flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) }
}
func hex(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    var chars = Array(text.utf8)[...]
    while chars.count >= 2 {
        out.append(UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16)!)
        chars = chars.dropFirst(2)
    }
    return out
}

/// Runs a command and returns its exit status and output.
@discardableResult
func run(
    _ executable: String,
    _ arguments: [String],
    stdin: Data? = nil
) throws -> (status: Int32, stdout: Data, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, o, String(decoding: e, as: UTF8.self))
}

/// A Vault-format backup (what `backup/<name>` returns) of one version of a known key, for known-answer tests.
func knownBackup(
    name: String,
    type: Int,
    key: [UInt8],
    hmacKey: [UInt8],
    publicKey: String = "",
    keySize: Int? = nil
) -> String {
    var policy: [String: JSONValue] = [
        "name": .string(name), "type": .int(type), "latest_version": 1, "min_decryption_version": 1, "exportable": true,
        "allow_plaintext_backup": true,
        "keys": [
            "1": [
                "key": b64(key), "hmac_key": b64(hmacKey), "time": "2026-01-01T00:00:00Z",
                "public_key": .string(publicKey),
            ]
        ],
    ]
    if let keySize { policy["key_size"] = .int(keySize) }
    let document: JSONValue = ["policy": .object(policy)]
    return Data(document.serialized()).base64EncodedString()
}
