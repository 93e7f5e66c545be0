import CLinux
import Coffer
import CofferAudit
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
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").filter {
            !$0.allSatisfy(\.isWhitespace)
        }
        .map { try JSONValue.parse(String($0)) }
    }

    func chainKey(_ h: Harness, _ device: String) throws -> String {
        try #require(
            h.wire("GET", "sys/audit-chain-key/\(device)", token: AuditFileTests.root).json?["data"]?["key"]?
                .stringValue
        )
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
        let first = dir + "/first.log"
        let second = dir + "/second.log"
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
                    let status =
                        i % 4 == 0
                        ? h.wire("PUT", "secret/data/w\(worker)", ["data": ["i": .int(i)]], token: root).status
                        : h.wire("GET", "secret/data/r", token: root).status
                    if status != 200 && status != 204 { refused.withLock { $0 += 1 } }
                }
            }
        }
        #expect(disabled.withLock { $0 } == Array(repeating: 204, count: 20))
        #expect(refused.withLock { $0 } == 0, "requests in flight when the device was disabled were answered 500")
    }

    // MARK: What file_path may name (issue 13 item 9)

    @Test func devNullIsRefusedAndItsModeIsLeftAlone() throws {
        let h = try harness()
        let before = mode("/dev/null")
        let r = enable(h, "null", ["file_path": "/dev/null"])
        #expect(r.status == 400)
        let message = errors(r.json).first ?? ""
        #expect(
            message.contains("file_path") && message.contains("device file") && message.contains("discard"),
            "\(message)"
        )
        #expect(mode("/dev/null") == before)
        #expect(listing(h) == [:])
    }

    @Test func directoriesFIFOsSocketsAndMissingDirectoriesAre400s() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()

        let directory = enable(h, "d", ["file_path": .string(dir)])
        #expect(
            directory.status == 400 && errors(directory.json).first?.contains("directory") == true,
            "\(errors(directory.json))"
        )
        let missing = enable(h, "m", ["file_path": .string(dir + "/no/such/dir/audit.log")])
        #expect(
            missing.status == 400 && errors(missing.json).first?.contains("does not exist") == true,
            "\(errors(missing.json))"
        )

        // A FIFO with a reader (so that opening it for writing does not block) keeps its mode.
        let fifo = dir + "/fifo"
        #expect(mkfifo(fifo, 0o644) == 0)
        chmod(fifo, 0o644)
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        defer { close(reader) }
        let f = enable(h, "f", ["file_path": .string(fifo)])
        #expect(f.status == 400 && errors(f.json).first?.contains("FIFO") == true, "\(errors(f.json))")
        #expect(mode(fifo) == 0o644)

        let socketPath = dir + "/s.sock"
        let listener = try UnixListener(path: socketPath, datagram: false)
        defer { listener.close() }
        let s = enable(h, "s", ["file_path": .string(socketPath)])
        #expect(s.status == 400 && errors(s.json).first?.contains("socket") == true, "\(errors(s.json))")
        #expect(listing(h) == [:])
    }

    @Test func symlinksMayNotLeaveTheirDirectory() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let logs = dir + "/logs"
        let outside = dir + "/outside"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let victim = outside + "/victim"
        try "keep me\n".write(toFile: victim, atomically: false, encoding: .utf8)
        chmod(victim, 0o644)

        #expect(symlink(victim, logs + "/abs.log") == 0)
        #expect(symlink("../outside/victim", logs + "/rel.log") == 0)
        #expect(symlink("../outside/created-by-coffer.log", logs + "/dangling.log") == 0)
        for name in ["abs.log", "rel.log", "dangling.log"] {
            let r = enable(h, "link", ["file_path": .string(logs + "/" + name)])
            #expect(r.status == 400, "\(name)")
            #expect(
                errors(r.json).first?.contains("symbolic link") == true
                    && errors(r.json).first?.contains("outside") == true,
                "\(errors(r.json))"
            )
        }
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep me\n")
        #expect(mode(victim) == 0o644)
        #expect(!FileManager.default.fileExists(atPath: outside + "/created-by-coffer.log"))

        // A link to a file in the same directory is fine: records go to the file it names.
        #expect(FileManager.default.createFile(atPath: logs + "/audit-2026.log", contents: nil))
        #expect(symlink("audit-2026.log", logs + "/current.log") == 0)
        #expect(enable(h, "link", ["file_path": .string(logs + "/current.log")]).status == 204)
        h.wire("PUT", "secret/data/l", ["data": ["v": 1]], token: AuditFileTests.root)
        #expect(try records(logs + "/audit-2026.log").contains { $0["request"]?["path"] == "secret/data/l" })
    }

    @Test func theModeOption() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let root = AuditFileTests.root

        for bad in ["0755", "0700", "0610", "0001"] {
            let r = enable(h, "x", ["file_path": .string(dir + "/x.log"), "mode": .string(bad)])
            #expect(
                r.status == 400 && errors(r.json).first?.contains("executable") == true,
                "\(bad): \(errors(r.json))"
            )
            #expect(errors(r.json).first?.contains(bad) == false, "the error does not quote the value")
        }
        for bad in ["abc", "0o600", "8", "", "-600", "00600", "4600", "0666", "0602"] {
            let r = enable(h, "x", ["file_path": .string(dir + "/x.log"), "mode": .string(bad)])
            #expect(r.status == 400 && errors(r.json).first?.contains("mode") == true, "\(bad): \(errors(r.json))")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/x.log"), "a refused device creates nothing")

        // Honoured on a new file, whatever the umask (the usual 022 would take the group's write bit of 0660).
        #expect(enable(h, "a", ["file_path": .string(dir + "/a.log"), "mode": "0640"]).status == 204)
        #expect(mode(dir + "/a.log") == 0o640)
        #expect(enable(h, "g", ["file_path": .string(dir + "/g.log"), "mode": "0660"]).status == 204)
        #expect(mode(dir + "/g.log") == 0o660)
        #expect(enable(h, "b", ["file_path": .string(dir + "/b.log"), "mode": "440"]).status == 204)
        #expect(mode(dir + "/b.log") == 0o440)

        // "0000" leaves an existing file's mode alone; the default makes a file the process owns 0600.
        for name in ["keep.log", "own.log"] {
            #expect(FileManager.default.createFile(atPath: dir + "/" + name, contents: nil))
            chmod(dir + "/" + name, 0o644)
        }
        #expect(enable(h, "keep", ["file_path": .string(dir + "/keep.log"), "mode": "0000"]).status == 204)
        #expect(enable(h, "own", ["file_path": .string(dir + "/own.log")]).status == 204)
        h.wire("PUT", "secret/data/m", ["data": ["v": 1]], token: root)
        #expect(mode(dir + "/keep.log") == 0o644)
        #expect(mode(dir + "/own.log") == 0o600)
        #expect(try records(dir + "/keep.log").contains { $0["request"]?["path"] == "secret/data/m" })
        // A new file under "0000" gets the safe default.
        #expect(enable(h, "new", ["file_path": .string(dir + "/new.log"), "mode": "0000"]).status == 204)
        #expect(mode(dir + "/new.log") == 0o600)

        // A file another user owns keeps its mode (only root can make one here).
        if geteuid() == 0 {
            let theirs = dir + "/theirs.log"
            #expect(FileManager.default.createFile(atPath: theirs, contents: nil))
            chmod(theirs, 0o644)
            #expect(chown(theirs, 65534, 65534) == 0)
            #expect(enable(h, "theirs", ["file_path": .string(theirs)]).status == 204)
            #expect(mode(theirs) == 0o644)
        }
    }

    @Test func anExistingFileThatIsNotAnAuditLogIsNotAppendedTo() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let passwd = dir + "/passwd"
        let content = "root:x:0:0:root:/root:/bin/bash\n"
        try content.write(toFile: passwd, atomically: false, encoding: .utf8)
        chmod(passwd, 0o644)
        let r = enable(h, "p", ["file_path": .string(passwd)])
        #expect(r.status == 400 && errors(r.json).first?.contains("not an audit log") == true, "\(errors(r.json))")
        #expect(try String(contentsOfFile: passwd, encoding: .utf8) == content)
        #expect(mode(passwd) == 0o644)

        // A file of JSON lines (another device's log, Vault's included) is appended to.
        let vaultLog = dir + "/vault-audit.log"
        try #"{"type":"request","time":"2025-01-01T00:00:00Z"}"#.appending("\n").write(
            toFile: vaultLog,
            atomically: false,
            encoding: .utf8
        )
        #expect(enable(h, "v", ["file_path": .string(vaultLog)]).status == 204)
    }

    @Test func stdoutAndDiscard() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let root = AuditFileTests.root
        let cwd = FileManager.default.currentDirectoryPath
        #expect(enable(h, "drop", ["file_path": "discard"]).status == 204)
        #expect(enable(h, "out", ["file_path": "STDOUT", "mode": "0000"]).status == 204)
        #expect(h.wire("PUT", "secret/data/d", ["data": ["v": 1]], token: root).status == 200)
        #expect(h.wire("GET", "secret/data/d", token: root).status == 200)
        #expect(throws: Never.self) { try h.vault.core.flushAudit() }
        let devices = listing(h)
        #expect(devices?["drop/"]?["failures"] == 0 && devices?["out/"]?["failures"] == 0)
        #expect(
            !FileManager.default.fileExists(atPath: cwd + "/discard")
                && !FileManager.default.fileExists(atPath: cwd + "/STDOUT")
        )
        // Both hash as any device does.
        #expect(
            h.wire("POST", "sys/audit-hash/drop", ["input": "x"], token: root).json?["data"]?["hash"]?.stringValue?
                .hasPrefix("hmac-sha256:") == true
        )
        #expect(h.wire("DELETE", "sys/audit/out", token: root).status == 204)
        #expect(h.wire("DELETE", "sys/audit/drop", token: root).status == 204)
    }

    @Test func prefixIsRefused() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let r = enable(h, "p", ["file_path": .string(dir + "/p.log"), "prefix": "#!/bin/sh\n"])
        #expect(
            r.status == 400 && errors(r.json).first?.contains("prefix is not supported") == true,
            "\(errors(r.json))"
        )
        #expect(!FileManager.default.fileExists(atPath: dir + "/p.log"))
    }

    // MARK: A torn last line (issue 13 item 10)

    /// A vault over `db` with a file device at `log`, `writes` records written, closed; returns the chain key.
    func writeRecords(db: String, log: String, unsealKey: inout SecureBytes?, writes: Int) throws -> String {
        let root = AuditFileTests.root
        let vault: Vault
        if let key = unsealKey {
            vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: db)))
            _ = try vault.unseal(key: key)
        } else {
            let h = try harness(storage: .sqlite(path: db))
            unsealKey = h.unsealKey
            vault = h.vault
            _ = vault.core.handleWire(
                method: "PUT",
                path: "sys/audit/file",
                token: root,
                body: JSONValue.object(["type": "file", "options": ["file_path": .string(log)]]).serialized()
            )
        }
        for i in 0..<writes {
            _ = vault.core.handleWire(
                method: "PUT",
                path: "secret/data/t\(i)",
                token: root,
                body: Array(#"{"data":{"v":"x"}}"#.utf8)
            )
        }
        let key = vault.core.handleWire(method: "GET", path: "sys/audit-chain-key/file", token: root, body: [])
        vault.close()
        let body = try #require(key.1)
        return try #require(try JSONValue.parse(body)["data"]?["key"]?.stringValue)
    }

    func truncate(_ path: String, by bytes: Int) throws {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let size = try #require(attributes[.size] as? Int)
        #expect(Glibc.truncate(path, off_t(size - bytes)) == 0)
    }

    @Test func aTornLastLineIsReportedAsACrashAndTheChainGoesOn() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = dir + "/coffer.db"
        let log = dir + "/audit.log"
        var unsealKey: SecureBytes?
        let key = try writeRecords(db: db, log: log, unsealKey: &unsealKey, writes: 3)
        let complete = try records(log).count  // 3 writes and the chain-key read, two records each
        // Power loss in the middle of the last record.
        try truncate(log, by: 40)
        let torn = complete  // its line number: the last line

        // Before the device reopens the file, verify sees an incomplete last line, not tampering.
        let unmarked = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(unmarked.0 == 0 && unmarked.1.contains("line \(torn) is incomplete"), "\(unmarked.1)")

        _ = try writeRecords(db: db, log: log, unsealKey: &unsealKey, writes: 2)
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(
            separator: "\n",
            omittingEmptySubsequences: false
        ).map(String.init)
        #expect(lines.last == "", "the file ends in a newline")
        let mark = try JSONValue.parse(lines[torn])  // the line after the torn one
        let before = try JSONValue.parse(lines[torn - 2])
        #expect(mark["type"] == "torn")
        #expect(mark["seq"]?.intValue == (before["seq"]?.intValue ?? -1) + 1)
        #expect(mark["prev_mac"] == before["mac"])
        #expect(mark["torn"]?["bytes"]?.intValue == lines[torn - 1].utf8.count)

        let verdict = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(verdict.0 == 0, "\(verdict.1)")
        #expect(verdict.1.contains("chain intact") && verdict.1.contains("torn record at line \(torn)"), "\(verdict.1)")
        #expect(!verdict.1.contains("TAMPERED"))

        // An edit elsewhere is still tampering; so is an edit of the torn fragment itself.
        func verifyEdited(line: Int, _ edit: (String) -> String) throws -> (Int32, String) {
            var edited = lines
            edited[line - 1] = edit(edited[line - 1])
            let copy = dir + "/edited.log"
            try edited.joined(separator: "\n").write(toFile: copy, atomically: true, encoding: .utf8)
            return try runCoffer(["audit", "verify", "--key", key, copy])
        }
        let second = try verifyEdited(line: 2) { $0.replacingOccurrences(of: "secret/data/t0", with: "secret/data/tX") }
        #expect(second.0 == 1 && second.1.contains("TAMPERED at line 2"), "\(second.1)")
        let fragment = try verifyEdited(line: torn) {
            $0.replacingOccurrences(of: "sys/audit-chain-key", with: "sys/audit-chain-KEY")
        }
        #expect(fragment.0 == 1 && fragment.1.contains("TAMPERED at line \(torn)"), "\(fragment.1)")
        // Removing the torn line leaves a mark that vouches for nothing.
        var removed = lines
        removed.remove(at: torn - 1)
        try removed.joined(separator: "\n").write(toFile: dir + "/removed.log", atomically: true, encoding: .utf8)
        let gone = try runCoffer(["audit", "verify", "--key", key, dir + "/removed.log"])
        #expect(gone.0 == 1 && gone.1.contains("TAMPERED at line \(torn)"), "\(gone.1)")
    }

    @Test func aLineCutJustBeforeItsNewlineIsEndedAndNotReportedAsTorn() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = dir + "/coffer.db"
        let log = dir + "/audit.log"
        var unsealKey: SecureBytes?
        let key = try writeRecords(db: db, log: log, unsealKey: &unsealKey, writes: 2)
        try truncate(log, by: 1)
        _ = try writeRecords(db: db, log: log, unsealKey: &unsealKey, writes: 1)
        let all = try records(log)
        #expect(all.allSatisfy { $0["type"] == "request" || $0["type"] == "response" })
        let verdict = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(
            verdict.0 == 0 && verdict.1.contains("OK, \(all.count) record(s), chain intact")
                && !verdict.1.contains("torn"),
            "\(verdict.1)"
        )

        // A stray space after the last newline is ended too, and needs no mark.
        let handle = try #require(FileHandle(forWritingAtPath: log))
        try handle.seekToEnd()
        try handle.write(contentsOf: Array(" ".utf8))
        try handle.close()
        _ = try writeRecords(db: db, log: log, unsealKey: &unsealKey, writes: 1)
        let after = try records(log)
        #expect(after.allSatisfy { $0["type"] == "request" || $0["type"] == "response" })
        let again = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(
            again.0 == 0 && again.1.contains("OK, \(after.count) record(s), chain intact") && !again.1.contains("torn"),
            "\(again.1)"
        )
    }

    // MARK: sys/audit-hash (issue 13 item 13)

    /// OpenBao's texts, which clients match (issue 13 item 13; checked against `bao server -dev` in
    /// Tests/compat/test_differential.py).
    // MARK: Big batches, written directly where the file system can

    /// Whether `directory`'s file system has direct I/O and says with what alignment, asked of a scratch file.
    func takesDirectWrites(_ directory: String) -> Bool {
        let probe = directory + "/probe"
        close(open(probe, O_WRONLY | O_CREAT, 0o600))
        defer { unlink(probe) }
        let fd = coffer_open_append_direct(probe)
        defer { if fd >= 0 { close(fd) } }
        return fd >= 0 && coffer_direct_alignment(fd) > 0
    }

    /// A record past `FileAuditSink.directBatch` (a LIST of 2,000 keys, each hashed) is written whole
    /// both where the file system has direct I/O (ext4 under the package's .build here), which then
    /// carries most of the batch, and where it has none (tmpfs in /dev/shm): every record is in the log,
    /// in order, with its chain intact, after records written the usual way before and after it.
    @Test(arguments: [false, true]) func aBatchPastTheDirectSizeIsWrittenWhole(onTmpfs: Bool) throws {
        // The disk variant under the package's own .build, which is on a disk even where /tmp is tmpfs.
        let scratch = onTmpfs ? "/dev/shm" : FileManager.default.currentDirectoryPath + "/.build"
        let dir = scratch + "/coffer-auditfile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let log = dir + "/audit.log"
        #expect(enable(h, "file", ["file_path": .string(log)]).status == 204)
        let key = try chainKey(h, "file")
        let count = 2_000
        for i in 0..<count {
            try #require(
                h.wire("PUT", "secret/data/k\(i)", ["data": ["v": 1]], token: AuditFileTests.root).status == 200
            )
        }
        let listed = h.wire("LIST", "secret/metadata/", token: AuditFileTests.root)
        #expect(listed.json?["data"]?["keys"]?.arrayValue?.count == count)
        try h.vault.core.flushAudit()
        #expect(h.wire("PUT", "secret/data/after", ["data": ["v": 2]], token: AuditFileTests.root).status == 200)

        let sink = try #require(try h.vault.core.audit.device("file/").sink as? FileAuditSink)
        let direct = takesDirectWrites(dir)
        #expect(direct != onTmpfs, "the disk's file system (ext4 here) has direct I/O; tmpfs has none")
        if direct {
            #expect(sink.bytesWrittenDirectly >= FileAuditSink.directBatch - 2 * 4096)
        } else {
            #expect(sink.bytesWrittenDirectly == 0)
        }
        let all = try records(log)
        let list = try #require(all.last { $0["type"] == "response" && $0["request"]?["operation"] == "list" })
        #expect(list["response"]?["data"]?["keys"]?.arrayValue?.count == count)
        #expect(all.last?["request"]?["path"] == "secret/data/after")
        let line = try #require(
            String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").last {
                $0.contains(#""operation":"list""#) && $0.contains(#""type":"response""#)
            }
        )
        #expect(line.utf8.count >= FileAuditSink.directBatch)
        let verdict = try runCoffer(["audit", "verify", "--key", key, log])
        #expect(verdict.0 == 0 && verdict.1.contains("\(all.count) record(s), chain intact"), "\(verdict.1)")
    }

    // MARK: Hashed bodies kept for reads

    /// A read's response record copies the hashed body of an earlier read that printed the same
    /// (AuditDevice.hashedBodies), and only then: the same secret read twice prints the same HMACs,
    /// those `sys/audit-hash` gives; a changed secret prints new ones; and two secrets equal as Swift
    /// strings but not in their bytes ("é" precomposed and decomposed, which `Hashable` would not tell
    /// apart) print each its own.
    @Test func aReadPrintsTheHMACsOfItsOwnBytesEvenWhenAnEarlierReadsAreKept() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try harness()
        let log = dir + "/audit.log"
        #expect(enable(h, "file", ["file_path": .string(log)]).status == 204)
        let root = AuditFileTests.root
        #expect(
            h.wire("POST", "sys/mounts/kv1", ["type": "kv", "options": ["version": "1"]], token: root).status == 204
        )
        func hash(_ value: String) -> String? {
            h.wire("POST", "sys/audit-hash/file", ["input": .string(value)], token: root).json?["data"]?["hash"]?
                .stringValue
        }
        let precomposed = "\u{E9}"
        let decomposed = "e\u{301}"
        #expect(precomposed == decomposed && Array(precomposed.utf8) != Array(decomposed.utf8))
        let writes: [(String, String)] = [("a", precomposed), ("b", decomposed), ("c", "one")]
        for (path, value) in writes {
            #expect(h.wire("PUT", "kv1/\(path)", ["v": .string(value)], token: root).status == 204)
        }
        for path in ["a", "b", "a", "b", "c"] { #expect(h.wire("GET", "kv1/\(path)", token: root).status == 200) }
        #expect(h.wire("PUT", "kv1/c", ["v": "two"], token: root).status == 204)
        #expect(h.wire("GET", "kv1/c", token: root).status == 200)
        try h.vault.core.flushAudit()

        let printed = try records(log).filter {
            $0["type"] == "response" && $0["request"]?["operation"] == "read"
                && $0["request"]?["path"]?.stringValue?.hasPrefix("kv1/") == true
        }
        .map { ($0["request"]?["path"]?.stringValue ?? "", $0["response"]?["data"]?["v"]?.stringValue) }
        let expected = [
            ("kv1/a", precomposed), ("kv1/b", decomposed), ("kv1/a", precomposed), ("kv1/b", decomposed),
            ("kv1/c", "one"), ("kv1/c", "two"),
        ]
        #expect(printed.map(\.0) == expected.map(\.0))
        for ((path, hashed), (_, value)) in zip(printed, expected) {
            #expect(hashed != nil && hashed == hash(value), "\(path)")
        }
        #expect(hash(precomposed) != hash(decomposed))
    }

    @Test func auditHashErrorsAreOpenBaos() throws {
        let h = try harness()
        let unknown = h.wire("POST", "sys/audit-hash/nope", ["input": "x"], token: AuditFileTests.root)
        #expect(unknown.status == 400 && errors(unknown.json) == [#"unknown audit backend "nope/""#])
        let empty = h.wire("POST", "sys/audit-hash/nope", [:], token: AuditFileTests.root)
        #expect(empty.status == 400 && errors(empty.json) == [#"the "input" parameter is empty"#])
        let chainKey = h.wire("GET", "sys/audit-chain-key/nope", token: AuditFileTests.root)
        #expect(chainKey.status == 400 && errors(chainKey.json) == [#"unknown audit backend "nope/""#])
    }
}
