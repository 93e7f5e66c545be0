import Coffer
import Foundation
import Testing

/// Audit devices, end to end through the request path, with real files and sockets.
@Suite struct AuditTests {
    static let rootID = "s.AuditRootToken0123456789"

    func harness(storage: VaultConfiguration.Storage = .memory) throws -> Harness {
        try Harness(storage: storage, rootTokenID: AuditTests.rootID)
    }

    func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-audit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    func lines(_ path: String) throws -> [JSONValue] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(String($0)) }
    }

    /// A harness with a file audit device, `file/`, logging to `audit.log` in `dir`.
    func harnessWithFileAudit(in dir: URL) throws -> (Harness, String) {
        let h = try harness()
        let log = dir.appendingPathComponent("audit.log").path
        let device: JSONValue = ["type": "file", "options": ["file_path": .string(log)]]
        h.wire("PUT", "sys/audit/file", device, token: AuditTests.rootID)
        return (h, log)
    }

    func chainKey(_ h: Harness, _ device: String) throws -> String {
        try #require(
            h.wire("GET", "sys/audit-chain-key/\(device)", token: AuditTests.rootID).json?["data"]?["key"]?.stringValue
        )
    }

    @Test func noSecretValueTokenOrKeyReachesTheLog() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try harness()
        let root = AuditTests.rootID
        let log = dir.appendingPathComponent("audit.log").path
        #expect(
            h.wire("PUT", "sys/audit/file", ["type": "file", "options": ["file_path": .string(log)]], token: root)
                .status == 204
        )
        let attributes = try FileManager.default.attributesOfItem(atPath: log)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        let secrets = ["hunter2-kv2-password", "kv1-api-key-value", "patched-secret-value", "nested-secret-value"]
        h.wire(
            "PUT",
            "secret/data/app",
            ["data": ["password": .string(secrets[0]), "deep": ["k": .string(secrets[3])]]],
            token: root
        )
        h.wire("PATCH", "secret/data/app", ["data": ["extra": .string(secrets[2])]], token: root)
        h.wire("GET", "secret/data/app", token: root)
        h.wire("POST", "sys/mounts/kv1", ["type": "kv"], token: root)
        h.wire("PUT", "kv1/creds", ["api_key": .string(secrets[1])], token: root)
        h.wire("GET", "kv1/creds", token: root)
        let created = try #require(h.wire("POST", "auth/token/create", ["ttl": "1h"], token: root).json?["auth"])
        let token = try #require(created["client_token"]?.stringValue)
        let accessor = try #require(created["accessor"]?.stringValue)
        h.wire("GET", "auth/token/lookup-self", token: token)
        h.wire("POST", "auth/token/lookup", ["token": .string(token)], token: root)
        h.wire("GET", "secret/data/app", token: "s.wrongtoken000000000000000")
        // Rekey carries unseal keys in both directions.
        let nonce = try #require(
            h.wire("PUT", "sys/rekey/init", ["secret_shares": 1, "secret_threshold": 1]).json?["nonce"]?.stringValue
        )
        let unsealKey = h.unsealKey.withUnsafeBytes { Hex.encode($0) }
        let rekeyed = h.wire("PUT", "sys/rekey/update", ["key": .string(unsealKey), "nonce": .string(nonce)])
        let newKey = try #require(rekeyed.json?["keys"]?.arrayValue?.first?.stringValue)
        try h.vault.core.flushAudit()  // the reads' records may still be queued

        let text = try String(contentsOfFile: log, encoding: .utf8)
        for needle in secrets + [
            root, token, accessor, unsealKey, newKey, String(root.dropFirst(2)), String(token.dropFirst(2)),
        ] {
            #expect(!text.contains(needle), "found a secret in the audit log: \(needle.prefix(6))…")
        }
        let records = try lines(log)
        #expect(records.count >= 24)
        let write = try #require(
            records.first { $0["type"] == "request" && $0["request"]?["path"] == "secret/data/app" }
        )
        #expect(write["request"]?["operation"] == "create")
        #expect(write["request"]?["data"]?["data"]?["password"]?.stringValue?.hasPrefix("hmac-sha256:") == true)
        #expect(write["auth"]?["client_token"]?.stringValue?.hasPrefix("hmac-sha256:") == true)
        #expect(write["auth"]?["policies"] == ["root"])
        #expect(write["time"]?.stringValue?.hasSuffix("Z") == true)
        let denied = try #require(records.first { $0["type"] == "response" && $0["error"] == "permission denied" })
        #expect(denied["request"]?["path"] == "secret/data/app")

        // sys/audit-hash gives the value an operator can search the log for.
        let hash = try #require(
            h.wire("POST", "sys/audit-hash/file", ["input": .string(secrets[0])], token: root).json?["data"]?["hash"]?
                .stringValue
        )
        #expect(text.contains(hash))
        // The chain of the whole file verifies.
        let verdict = AuditChain.verify(
            lines: text.split(separator: "\n").map { Array($0.utf8) },
            key: SecureBytes(Hex.decode(try chainKey(h, "file"))!)
        )
        #expect(verdict.problem == nil && verdict.records == records.count)
    }

    /// A caller's hashed token, accessor and auth block are kept per accessor after the first record:
    /// callers taking turns each get their own, hashed as sys/audit-hash hashes them.
    @Test func callersTakingTurnsEachGetTheirOwnAuthBlock() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (h, log) = try harnessWithFileAudit(in: dir)
        let root = AuditTests.rootID
        let policy = #"path "secret/*" { capabilities = ["read"] }"#
        h.wire("PUT", "sys/policies/acl/reader", ["policy": .string(policy)], token: root)
        var callers: [(token: String, accessor: String, policies: JSONValue)] = []
        for policies in [["reader"], ["default"]] {
            let auth = try #require(
                h.wire("POST", "auth/token/create", ["policies": .array(policies.map { .string($0) })], token: root)
                    .json?["auth"]
            )
            callers.append(
                (
                    try #require(auth["client_token"]?.stringValue), try #require(auth["accessor"]?.stringValue),
                    try #require(auth["policies"])
                )
            )
        }
        for _ in 0..<3 {
            for caller in callers { h.wire("GET", "auth/token/lookup-self", token: caller.token) }
        }
        try h.vault.core.flushAudit()
        func hash(_ value: String) throws -> String {
            try #require(
                h.wire("POST", "sys/audit-hash/file", ["input": .string(value)], token: root).json?["data"]?["hash"]?
                    .stringValue
            )
        }
        let records = try lines(log).filter { $0["request"]?["path"] == "auth/token/lookup-self" }
        #expect(records.count == 12)
        for caller in callers {
            let mine = records.filter { $0["auth"]?["client_token"]?.stringValue == (try? hash(caller.token)) }
            #expect(mine.count == 6)
            for record in mine {
                #expect(record["auth"]?["accessor"]?.stringValue == (try hash(caller.accessor)))
                #expect(record["request"]?["client_token"] == record["auth"]?["client_token"])
                #expect(record["request"]?["client_token_accessor"] == record["auth"]?["accessor"])
                #expect(record["auth"]?["policies"] == caller.policies)
            }
        }
    }

    @Test func theOnlyDeviceBrokenRefusesWritesAndAppliesNothing() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try harness()
        let root = AuditTests.rootID
        let logDir = dir.appendingPathComponent("logs")
        try FileManager.default.createDirectory(at: logDir, withIntermediateDirectories: true)
        let log = logDir.appendingPathComponent("audit.log").path
        h.wire("PUT", "sys/audit/file", ["type": "file", "options": ["file_path": .string(log)]], token: root)
        h.wire("PUT", "secret/data/x", ["data": ["v": "before"]], token: root)

        try FileManager.default.removeItem(at: logDir)
        let refused = h.wire("PUT", "secret/data/x", ["data": ["v": "after"]], token: root)
        #expect(refused.status == 500)
        #expect(
            errors(refused.json).first?.contains("no audit device could record the request, so it was not processed")
                == true
        )
        #expect(errors(refused.json).first?.contains(log) == true, "the error names the broken file")
        #expect(h.wire("GET", "secret/data/x", token: root).status == 500, "reads are refused too")

        // Fix the device: the next request reopens the file, and the refused write was never applied.
        try FileManager.default.createDirectory(at: logDir, withIntermediateDirectories: true)
        #expect(h.wire("GET", "secret/data/x", token: root).json?["data"]?["data"] == ["v": "before"])
        #expect(h.wire("GET", "secret/metadata/x", token: root).json?["data"]?["current_version"] == 1)
    }

    @Test func withTwoDevicesOneBrokenWritesSucceedAndTheFailureIsCounted() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try harness()
        let root = AuditTests.rootID
        let brokenDir = dir.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: brokenDir, withIntermediateDirectories: true)
        let good = dir.appendingPathComponent("good.log").path
        h.wire("PUT", "sys/audit/good", ["type": "file", "options": ["file_path": .string(good)]], token: root)
        h.wire(
            "PUT",
            "sys/audit/bad",
            ["type": "file", "options": ["file_path": .string(brokenDir.appendingPathComponent("a.log").path)]],
            token: root
        )
        try FileManager.default.removeItem(at: brokenDir)
        #expect(h.wire("PUT", "secret/data/y", ["data": ["v": "ok"]], token: root).status == 200)
        #expect(h.wire("GET", "secret/data/y", token: root).json?["data"]?["data"] == ["v": "ok"])
        let listing = h.wire("GET", "sys/audit", token: root).json?["data"]
        #expect((listing?["bad/"]?["failures"]?.intValue ?? 0) >= 4)
        #expect(listing?["good/"]?["failures"] == 0)
        #expect(listing?["bad/"]?["last_failure"]?.stringValue?.contains("cannot open audit file") == true)
        #expect(try String(contentsOfFile: good, encoding: .utf8).contains("\"secret/data/y\""))
    }

    @Test func theChainCatchesAnEditedADeletedAndASwappedLine() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (h, log) = try harnessWithFileAudit(in: dir)
        let root = AuditTests.rootID
        for i in 0..<5 { h.wire("PUT", "secret/data/k\(i)", ["data": ["i": .int(i)]], token: root) }
        let key = try chainKey(h, "file")
        try h.vault.core.flushAudit()
        let original = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(original.count == 12)

        func verify(_ lines: [String]) throws -> (Int32, String) {
            let tampered = dir.appendingPathComponent("check.log").path
            try (lines.joined(separator: "\n") + "\n").write(toFile: tampered, atomically: true, encoding: .utf8)
            return try runCoffer(["audit", "verify", "--key", key, tampered])
        }
        let intact = try verify(original)
        #expect(intact.0 == 0 && intact.1.contains("OK, 12 record(s), chain intact"), "\(intact.1)")

        var edited = original
        edited[4] = edited[4].replacingOccurrences(of: "\"create\"", with: "\"delete\"")
        let e = try verify(edited)
        #expect(e.0 == 1 && e.1.contains("TAMPERED at line 5") && e.1.contains("edited"))

        var deleted = original
        deleted.remove(at: 6)
        let d = try verify(deleted)
        #expect(d.0 == 1 && d.1.contains("TAMPERED at line 7") && d.1.contains("removed"))

        var swapped = original
        swapped.swapAt(2, 3)
        let s = try verify(swapped)
        #expect(s.0 == 1 && s.1.contains("TAMPERED at line 3") && s.1.contains("removed"))

        let wrongKey = try runCoffer(["audit", "verify", "--key", String(repeating: "00", count: 32), log])
        #expect(wrongKey.0 == 1 && wrongKey.1.contains("line 1"))
        let noKey = try runCoffer(["audit", "verify", log])
        #expect(noKey.0 == 2 && noKey.1.contains("chain key"))
    }

    @Test func theChainContinuesAcrossARestartAndLogrotate() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("coffer.db").path
        let log = dir.appendingPathComponent("audit.log").path
        let root = AuditTests.rootID
        let key: String
        let unsealKey: SecureBytes
        do {
            let h = try harness(storage: .sqlite(path: db))
            unsealKey = h.unsealKey
            h.wire("PUT", "sys/audit/file", ["type": "file", "options": ["file_path": .string(log)]], token: root)
            h.wire("PUT", "secret/data/a", ["data": ["v": 1]], token: root)
            key = try chainKey(h, "file")
            h.vault.close()
        }
        let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: db)))
        try vault.unseal(key: unsealKey)
        _ = vault.core.handleWire(method: "GET", path: "secret/data/a", token: root, body: [])
        try vault.core.flushAudit()
        let afterRestart = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(afterRestart.0 == 0 && afterRestart.1.contains("OK, 6 record(s)"), "\(afterRestart.1)")

        // logrotate: the file is moved away; the next record starts a new file at the same path.
        let rotated = dir.appendingPathComponent("audit.log.1").path
        try FileManager.default.moveItem(atPath: log, toPath: rotated)
        _ = vault.core.handleWire(method: "GET", path: "secret/data/a", token: root, body: [])
        try vault.core.flushAudit()
        #expect(try runCoffer(["audit", "verify", "--key", key, rotated]).0 == 0)
        let fresh = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(fresh.0 == 0 && fresh.1.contains("OK, 2 record(s)"))
        #expect(throws: Never.self) { try vault.core.reopenAuditDevices() }
        vault.close()
    }

    @Test func socketAndSyslogDevicesDeliverAndFailClosedWhenThePeerIsGone() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try harness()
        let root = AuditTests.rootID

        let streamPath = dir.appendingPathComponent("audit.sock").path
        let listener = try UnixListener(path: streamPath, datagram: false)
        #expect(
            h.wire(
                "PUT",
                "sys/audit/sock",
                ["type": "socket", "options": ["address": .string(streamPath), "socket_type": "unix"]],
                token: root
            ).status == 204
        )
        let peer = try listener.accept()
        h.wire("PUT", "secret/data/s", ["data": ["v": "socket-secret"]], token: root)
        let received = peer.read()
        #expect(received.contains("\"secret/data/s\"") && !received.contains("socket-secret"))

        let syslogPath = dir.appendingPathComponent("log.sock").path
        let syslog = try UnixListener(path: syslogPath, datagram: true)
        #expect(
            h.wire(
                "PUT",
                "sys/audit/syslog",
                ["type": "syslog", "options": ["socket_path": .string(syslogPath), "tag": "coffer-test"]],
                token: root
            ).status == 204
        )
        h.wire("GET", "secret/data/s", token: root)
        // The read's two records, queued and written together, still arrive as a datagram each.
        let datagrams = [syslog.receive(), syslog.receive()]
        for datagram in datagrams {
            #expect(datagram.hasPrefix("<38>coffer-test: {"), "AUTH facility, informational: \(datagram.prefix(24))")
            #expect(datagram.components(separatedBy: #""seq":"#).count == 2, "one record per datagram")
        }
        #expect(datagrams[0].contains(#""type":"request""#) && datagrams[1].contains(#""type":"response""#))

        // Only the socket device left, and its peer goes away: requests are refused.
        h.wire("DELETE", "sys/audit/syslog", token: root)
        peer.close()
        listener.close()
        let refused = h.wire("PUT", "secret/data/s", ["data": ["v": "lost"]], token: root)
        #expect(refused.status == 500 && errors(refused.json).first?.contains("audit") == true)
        syslog.close()
    }

    @Test func readsAreWrittenByTheWriterThreadAndSyncAllWritesThemAtOnce() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try harness()
        let root = AuditTests.rootID
        let queued = dir.appendingPathComponent("queued.log").path
        let immediate = dir.appendingPathComponent("immediate.log").path
        h.wire("PUT", "sys/audit/queued", ["type": "file", "options": ["file_path": .string(queued)]], token: root)
        h.wire(
            "PUT",
            "sys/audit/immediate",
            ["type": "file", "options": ["file_path": .string(immediate), "sync": "all"]],
            token: root
        )
        h.wire("PUT", "secret/data/q", ["data": ["v": "queued-secret"]], token: root)
        #expect(h.wire("GET", "secret/data/q", token: root).status == 200)

        // sync=all: the read's two records are in the file when the call returns.
        func readRecords(_ path: String) throws -> [JSONValue] {
            try lines(path).filter {
                $0["request"]?["path"] == "secret/data/q" && $0["request"]?["operation"] == "read"
            }
        }
        #expect(try readRecords(immediate).map { $0["type"] } == ["request", "response"])
        // The default: the writer thread writes them within about a millisecond, with no flush.
        let deadline = Date().addingTimeInterval(5)
        while try readRecords(queued).count < 2 && Date() < deadline { usleep(1000) }
        let records = try readRecords(queued)
        #expect(records.map { $0["type"] } == ["request", "response"])
        #expect(records.last?["response"]?["data"]?["data"]?["v"]?.stringValue?.hasPrefix("hmac-sha256:") == true)
        // Each file's chain is whole: seq runs 1, 2, 3, ... in file order.
        for (path, device) in [(queued, "queued"), (immediate, "immediate")] {
            let verdict = try runCoffer(["audit", "verify", "--key", try chainKey(h, device), path])
            #expect(verdict.0 == 0, "\(verdict.1)")
        }
        #expect(
            errors(
                h.wire(
                    "PUT",
                    "sys/audit/bad",
                    ["type": "file", "options": ["file_path": .string(queued + "2"), "sync": "never"]],
                    token: root
                ).json
            ).first?.contains("sync must be \"writes\" or \"all\"") == true
        )
    }

    @Test func concurrentReadsAndWritesKeepOneUnbrokenChainAndCloseWritesWhatIsQueued() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (h, log) = try harnessWithFileAudit(in: dir)
        let root = AuditTests.rootID
        let key = try chainKey(h, "file")
        h.wire("PUT", "secret/data/shared", ["data": ["v": 0]], token: root)
        let threads = 8
        let perThread = 150
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in 0..<perThread {
                if i % 5 == 0 {
                    h.wire("PUT", "secret/data/t\(t)", ["data": ["i": .int(i)]], token: root)
                } else {
                    h.wire("GET", "secret/data/shared", token: root)
                }
            }
        }
        // Closing the vault writes what the writer thread has not yet.
        h.vault.close()
        let text = try String(contentsOfFile: log, encoding: .utf8)
        let count = text.split(separator: "\n").count
        // Two records for each request after the device was enabled: the chain-key read, the first
        // write, and every request of the threads.
        #expect(count == 2 * (2 + threads * perThread))
        let verdict = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(verdict.0 == 0 && verdict.1.contains("OK, \(count) record(s), chain intact"), "\(verdict.1)")
    }

    @Test func enablingABadDeviceFailsClearly() throws {
        let h = try harness()
        let root = AuditTests.rootID
        #expect(
            errors(
                h.wire("PUT", "sys/audit/f", ["type": "file", "options": ["file_path": "relative.log"]], token: root)
                    .json
            ).first?.contains("absolute") == true
        )
        let missing = h.wire(
            "PUT",
            "sys/audit/f",
            ["type": "file", "options": ["file_path": "/nonexistent-dir/x/a.log"]],
            token: root
        )
        #expect(
            missing.status == 400
                && errors(missing.json).first?.contains("the directory of file_path does not exist") == true
        )
        #expect(
            errors(h.wire("PUT", "sys/audit/f", ["type": "tape"], token: root).json).first?.contains(
                "unknown audit device type"
            ) == true
        )
        #expect(
            errors(
                h.wire(
                    "PUT",
                    "sys/audit/f",
                    ["type": "file", "options": ["file_path": "/tmp/x", "colour": "red"]],
                    token: root
                ).json
            ).first?.contains("unknown option \"colour\"") == true
        )
        #expect(h.wire("GET", "sys/audit", token: root).json?["data"] == [:])
        // Without sudo, sys/audit is refused.
        let token = try #require(
            h.wire("POST", "auth/token/create", ["policies": ["default"]], token: root).json?["auth"]?["client_token"]?
                .stringValue
        )
        #expect(h.wire("GET", "sys/audit", token: token).status == 403)
    }

    @Test func logRawIsOffByDefaultAndDoesWhatItSays() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let h = try harness()
        let log = dir.appendingPathComponent("raw.log").path
        h.wire(
            "PUT",
            "sys/audit/raw",
            ["type": "file", "options": ["file_path": .string(log), "log_raw": true]],
            token: AuditTests.rootID
        )
        h.wire("PUT", "secret/data/r", ["data": ["v": "visible-because-log-raw"]], token: AuditTests.rootID)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("visible-because-log-raw"))
    }
}

/// Runs the `coffer` CLI built next to the tests; returns its exit status and output.
func runCoffer(_ arguments: [String]) throws -> (Int32, String) {
    let binDir = Bundle.main.bundleURL.deletingLastPathComponent()
    var binary = binDir.appendingPathComponent("coffer-cli")
    if !FileManager.default.fileExists(atPath: binary.path) {
        binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
            "coffer-cli"
        )
    }
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

/// A Unix socket peer for the socket and syslog devices.
final class UnixListener: @unchecked Sendable {  // used from one test at a time
    let fd: Int32
    let path: String

    init(path: String, datagram: Bool) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(datagram ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0, datagram || listen(fd, 4) == 0 else { throw CofferError(.io, "cannot listen on \(path)") }
        // A record that never comes fails the test instead of hanging it.
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func accept() throws -> UnixListener.Peer {
        let peer = Glibc.accept(fd, nil, nil)
        guard peer >= 0 else { throw CofferError(.io, "accept failed") }
        return Peer(fd: peer)
    }

    func receive() -> String {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        return String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self)
    }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }

    struct Peer {
        let fd: Int32
        func read() -> String {
            var out = ""
            var buffer = [UInt8](repeating: 0, count: 65536)
            // Two records (request and response) are written per request.
            while out.components(separatedBy: "\n").count < 3 {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { break }
                out += String(decoding: buffer.prefix(n), as: UTF8.self)
            }
            return out
        }
        func close() { Glibc.close(fd) }
    }
}
