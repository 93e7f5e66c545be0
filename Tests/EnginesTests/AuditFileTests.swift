import Coffer
import Foundation
import Synchronization
import Testing

/// The file audit device's handling of what `file_path` names, of sealing and disabling while it is
/// enabled, and of a log whose last line a crash cut short. Real files, FIFOs, sockets and symlinks
/// in a temporary directory; the log checked with the real `coffer` CLI.
@Suite struct AuditFileTests {
    static let root = "s.AuditFileRoot01234567890"

    func harness(storage: VaultConfiguration.Storage = .memory) throws -> Harness {
        try Harness(storage: storage, rootTokenID: AuditFileTests.root)
    }

    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-auditfile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    @discardableResult
    func enable(_ h: Harness, _ name: String, _ options: [String: JSONValue]) -> (status: Int, json: JSONValue?) {
        h.wire("PUT", "sys/audit/\(name)", ["type": "file", "options": .object(options)], token: AuditFileTests.root)
    }

    /// The permission bits of `path` itself (a symlink is not followed).
    func mode(_ path: String) -> Int {
        var st = stat()
        guard lstat(path, &st) == 0 else { return -1 }
        return Int(st.st_mode & 0o7777)
    }

    func records(_ path: String) throws -> [JSONValue] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }
            .map { try JSONValue.parse(String($0)) }
    }

    func chainKey(_ h: Harness, _ device: String) throws -> String {
        try #require(h.wire("GET", "sys/audit-chain-key/\(device)", token: AuditFileTests.root).json?["data"]?["key"]?.stringValue)
    }

    func listing(_ h: Harness) -> JSONValue? { h.wire("GET", "sys/audit", token: AuditFileTests.root).json?["data"] }

    // MARK: Sealing and disabling (issue 13 item 8)

    @Test func sealingWithAFileDeviceAnswers204AndTheLogHasTheSealsRecords() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let log = dir + "/audit.log"
        #expect(enable(h, "file", ["file_path": .string(log)]).status == 204)
        let key = try chainKey(h, "file")

        let sealed = h.wire("PUT", "sys/seal", token: AuditFileTests.root)
        #expect(sealed.status == 204, "\(errors(sealed.json))")
        #expect(h.wire("GET", "sys/seal-status", token: nil).json?["sealed"] == true)
        let seal = try records(log).filter { $0["request"]?["path"] == "sys/seal" }
        #expect(seal.map { $0["type"] } == ["request", "response"])
        #expect(seal.last?["response"]?["status"] == 204 && seal.last?["error"] == "")

        // Unsealed again, the device goes on in the same file and the chain runs through the seal.
        _ = try h.vault.unseal(key: h.unsealKey)
        #expect(h.wire("PUT", "secret/data/after", ["data": ["v": 1]], token: AuditFileTests.root).status == 200)
        try h.vault.core.flushAudit()
        let all = try records(log)
        #expect(all.last?["request"]?["path"] == "secret/data/after")
        let verdict = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(verdict.0 == 0 && verdict.1.contains("OK, \(all.count) record(s), chain intact"), "\(verdict.1)")
    }

    @Test func disablingTheLastDeviceAnswers204AndTheDeviceRecordsItsOwnRemoval() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let root = AuditFileTests.root
        let first = dir + "/first.log", second = dir + "/second.log"
        enable(h, "first", ["file_path": .string(first)])
        enable(h, "second", ["file_path": .string(second)])
        let keys = (try chainKey(h, "first"), try chainKey(h, "second"))

        // One of two: both logs have the disable's two records, the remaining one goes on.
        #expect(h.wire("DELETE", "sys/audit/first", token: root).status == 204)
        for log in [first, second] {
            let disable = try records(log).filter { $0["request"]?["path"] == "sys/audit/first" }
            #expect(disable.map { $0["type"] } == ["request", "response"], "\(log)")
            #expect(disable.last?["response"]?["status"] == 204)
        }
        // The last one: 204, it is gone, and it recorded its own removal.
        let off = h.wire("DELETE", "sys/audit/second", token: root)
        #expect(off.status == 204, "\(errors(off.json))")
        #expect(listing(h) == [:])
        let last = try records(second).suffix(2)
        #expect(last.map { $0["type"] } == ["request", "response"])
        #expect(last.map { $0["request"]?["path"] } == ["sys/audit/second", "sys/audit/second"])
        #expect(last.last?["response"]?["status"] == 204)

        // Nothing is recorded any more, and nothing fails.
        let lines = try records(second).count
        #expect(h.wire("PUT", "secret/data/unaudited", ["data": ["v": 1]], token: root).status == 200)
        #expect(h.wire("GET", "secret/data/unaudited", token: root).status == 200)
        #expect(try records(second).count == lines)
        for (log, key) in [(first, keys.0), (second, keys.1)] {
            let verdict = try runCoffer(["audit", "verify", "--key", key, log])
            #expect(verdict.0 == 0 && verdict.1.contains("chain intact"), "\(verdict.1)")
        }
    }

    @Test func requestsInFlightWhileTheOnlyDeviceIsDisabledAreNotRefused() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let root = AuditFileTests.root
        h.wire("PUT", "secret/data/r", ["data": ["v": 1]], token: root)
        let refused = Mutex(0)
        let disabled = Mutex<[Int]>([])
        for round in 0..<20 {
            enable(h, "file", ["file_path": .string(dir + "/audit-\(round).log")])
            DispatchQueue.concurrentPerform(iterations: 5) { worker in
                if worker == 0 {
                    usleep(200)
                    let status = h.wire("DELETE", "sys/audit/file", token: root).status
                    disabled.withLock { $0.append(status) }
                    return
                }
                for i in 0..<200 {
                    let status = i % 4 == 0
                        ? h.wire("PUT", "secret/data/w\(worker)", ["data": ["i": .int(i)]], token: root).status
                        : h.wire("GET", "secret/data/r", token: root).status
                    if status != 200 && status != 204 { refused.withLock { $0 += 1 } }
                }
            }
        }
        #expect(disabled.withLock { $0 } == Array(repeating: 204, count: 20))
        #expect(refused.withLock { $0 } == 0, "requests in flight when the device was disabled were answered 500")
    }
}
