import Foundation
import Synchronization
import Testing

/// KV v2 rotation (docs/rotation.md): schedules, the whole sequence on an injected clock, failures
/// that write nothing, rollback, acknowledgements, concurrent writes and a restart mid-way.
@Suite struct KVRotationTests {
    /// A dev vault on a manual clock, reopenable from its SQLite file (a restart).
    final class Box: @unchecked Sendable {
        var vault: Vault
        let clock = ManualClock()
        let unsealKey: SecureBytes
        let dir = TemporaryDirectory()

        init(sqlite: Bool = false) throws {
            let storage: VaultConfiguration.Storage = sqlite ? .sqlite(path: dir.file("coffer.db")) : .memory
            (vault, unsealKey) = try Vault.openDev(storage: storage, rootTokenID: "root", clock: clock)
        }

        func restart() throws {
            vault.close()
            vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: dir.file("coffer.db")), clock: clock))
            _ = try vault.unseal(key: unsealKey)
        }

        @discardableResult
        func wire(_ method: String, _ path: String, _ body: JSONValue? = nil) -> (status: Int, json: JSONValue?) {
            let (status, bytes) = vault.core.handleWire(
                method: method,
                path: path,
                token: "root",
                body: body?.serialized() ?? []
            )
            return (status, bytes.map { try! JSONValue.parse($0) })
        }

        /// The scheduler's tick, as the lease runner drives it (at most once a clock second).
        func tick(after seconds: Int64 = 1) {
            clock.advance(seconds: seconds)
            vault.expireLeases()
        }

        func status(_ path: String) -> JSONValue? { wire("GET", "secret/rotation/" + path).json?["data"]?["status"] }
        func current(_ path: String) -> JSONValue? { wire("GET", "secret/data/" + path).json?["data"] }
        func version(_ path: String, _ n: Int) -> JSONValue? {
            wire("GET", "secret/data/\(path)?version=\(n)").json?["data"]
        }
        func events(_ after: UInt64 = 0) -> [VaultEvent] {
            vault.core.events.recent(after: after).filter { $0.type.contains("rotation") }
        }
    }

    static let lengthCheck: JSONValue = ["/bin/sh", "-c", "read -r v; [ ${#v} -ge 20 ]"]

    // MARK: schedules

    @Test func cronParsingExplainsErrors() {
        func message(_ text: String) -> String {
            do {
                _ = try CronSchedule(text)
                return ""
            } catch { return error.message }
        }
        #expect(message("* * *").contains("five fields"))
        #expect(message("60 * * * *") == "schedule's minute field \"60\": 60 is outside 0-59")
        #expect(message("* 5-2 * * *") == "schedule's hour field \"5-2\": the range 5-2 runs backwards")
        #expect(message("*/0 * * * *").contains("the step \"0\" must be a number from 1 to 60"))
        #expect(message("* * 0 * *") == "schedule's day-of-month field \"0\": 0 is outside 1-31")
        #expect(message("* * * JAN *") == "schedule's month field \"JAN\": \"JAN\" is not a number")
        #expect(message("1,,2 * * * *") == "schedule's minute field \"1,,2\": an empty list item")
        #expect(message("*/15 2,14 1-7 */2 1-5").isEmpty)
    }

    @Test func cronNextRun() throws {
        // 2026-12-01T19:40:00Z is a Tuesday.
        let t = try #require(Timestamp(rfc3339: "2026-12-01T19:40:00Z"))
        func next(_ text: String, _ from: Timestamp) throws -> String {
            try #require(try CronSchedule(text).next(after: from)).rfc3339
        }
        #expect(try next("* * * * *", t) == "2026-12-01T19:41:00Z")
        #expect(try next("*/15 * * * *", t) == "2026-12-01T19:45:00Z")
        #expect(try next("0 3 * * *", t) == "2026-12-02T03:00:00Z")
        #expect(try next("30 2 * * 0", t) == "2026-12-06T02:30:00Z")  // Sunday
        #expect(try next("30 2 * * 7", t) == "2026-12-06T02:30:00Z")  // 7 is Sunday too
        #expect(try next("0 0 1 1 *", t) == "2027-01-01T00:00:00Z")
        #expect(try next("0 0 29 2 *", t) == "2028-02-29T00:00:00Z")  // the next leap day
        #expect(try next("10-20/5 8 * * *", t) == "2026-12-02T08:10:00Z")
        // Both day fields restricted: either matches (Vixie cron). The 15th or a Monday.
        #expect(try next("0 0 15 * 1", t) == "2026-12-07T00:00:00Z")
        #expect(try CronSchedule("0 0 31 2 *").next(after: t) == nil)
        #expect(RotationSchedule.period(3600).next(after: t) == t.adding(seconds: 3600))
    }

    @Test func badPoliciesAreRefusedWithTheirReason() throws {
        let b = try Box()
        func refused(_ body: JSONValue) -> String {
            let r = b.wire("POST", "secret/rotation/app", body)
            return r.status == 400 ? (r.json?["errors"]?.arrayValue?.first?.stringValue ?? "") : "status \(r.status)"
        }
        #expect(refused(["period": "1h", "schedule": "* * * * *"]) == "give period or schedule, not both")
        #expect(refused(["schedule": "61 * * * *"]) == "schedule's minute field \"61\": 61 is outside 0-59")
        #expect(refused(["period": "2s"]) == "period must be 5 seconds or more")
        #expect(refused(["schedule": "0 0 31 2 *"]) == "schedule \"0 0 31 2 *\" matches no time in the next five years")
        #expect(refused(["generator": "magic"]).hasPrefix("generator must be \"password\", \"bytes\""))
        #expect(refused(["generator": "command", "command": "gen --len 5"]).contains("JSON array of strings"))
        #expect(refused(["generator": "command", "command": ["gen"]]).contains("absolute path"))
        #expect(refused(["generator": "webhook", "url": "ftp://x"]).contains("http:// or https:// URL"))
        #expect(refused(["generator": "bytes", "encoding": "rot13"]).contains("\"base64\" or \"hex\""))
        #expect(refused(["timeout": "1h"]).hasPrefix("timeout must be a duration"))
        #expect(b.wire("GET", "secret/rotation/app").status == 404)
        let rotate = b.wire("POST", "secret/rotate/app")
        #expect(rotate.status == 400)
        #expect(
            rotate.json?["errors"]?.arrayValue?.first
                == "no rotation policy for secret/app; write secret/rotation/app first"
        )
    }

    // MARK: the sequence

    @Test func scheduledRotationAcknowledgedAndArchived() throws {
        let b = try Box()
        #expect(
            b.wire("PUT", "secret/data/app", ["data": ["user": "app", "password": "initial-password-0"]]).status == 200
        )
        #expect(
            b.wire(
                "POST",
                "secret/rotation/app",
                [
                    "period": "1h", "generator": "bytes", "length": 32, "validate_command": Self.lengthCheck,
                    "grace_period": "10m", "required_acks": ["web", "worker"],
                ]
            ).status == 204
        )
        let policy = try #require(b.wire("GET", "secret/rotation/app").json?["data"])
        #expect(policy["period"] == "1h0m0s" && policy["field"] == "password" && policy["grace_period"] == "10m0s")
        #expect(policy["status"]?["phase"] == "idle")
        #expect(policy["status"]?["next_run"] == .string(b.clock.now().adding(seconds: 3600).rfc3339))

        b.tick(after: 3599)
        #expect(b.current("app")?["metadata"]?["version"] == 1, "not due yet")
        b.tick()
        // Written and notified: version 2 is current, the other key carried over, version 1 still readable.
        let now = try #require(b.current("app"))
        #expect(now["metadata"]?["version"] == 2)
        let newPassword = try #require(now["data"]?["password"]?.stringValue)
        #expect(newPassword.count == 44 && newPassword != "initial-password-0")
        #expect(now["data"]?["user"] == "app")
        #expect(b.version("app", 1)?["data"]?["password"] == "initial-password-0")
        #expect(b.status("app")?["phase"] == "waiting")
        #expect(b.status("app")?["run"]?["new_version"] == 2)

        // Acknowledgements: a wrong version and an unknown consumer are refused; both named ones end the grace.
        let wrong = b.wire("POST", "secret/rotation-ack/app", ["consumer": "web", "version": 1])
        #expect(
            wrong.status == 400
                && (wrong.json?["errors"]?.arrayValue?.first?.stringValue ?? "").contains("not awaiting")
        )
        let stranger = b.wire("POST", "secret/rotation-ack/app", ["consumer": "cron", "version": 2])
        #expect(
            stranger.json?["errors"]?.arrayValue?.first == "consumer \"cron\" is not in required_acks [web, worker]"
        )
        #expect(b.wire("POST", "secret/rotation-ack/app", ["consumer": "web", "version": 2]).status == 200)
        #expect(b.status("app")?["phase"] == "waiting")
        #expect(b.version("app", 1)?["metadata"]?["deletion_time"] == "")
        let last = b.wire("POST", "secret/rotation-ack/app", ["consumer": "worker", "version": 2])
        #expect(last.json?["data"]?["phase"] == "idle")
        // Archived: version 1 soft-deleted, version 2 current, recorded in the status.
        #expect(b.version("app", 1)?["metadata"]?["deletion_time"] != "")
        #expect(b.current("app")?["data"]?["password"]?.stringValue == newPassword)
        let run = try #require(b.status("app")?["last_run"])
        #expect(run["outcome"] == "succeeded" && run["old_version"] == 1 && run["new_version"] == 2)
        #expect(run["archived_version"] == 1 && run["reason"] == "schedule")
        #expect(b.status("app")?["next_run"] == .string(b.clock.now().adding(seconds: 3600).rfc3339))

        let events = b.events()
        #expect(
            events.map(\.type) == ["kv-v2/rotation-started", "kv-v2/rotation-succeeded", "kv-v2/rotation-archived"]
        )
        let succeeded = try #require(events.dropFirst().first?.data["metadata"])
        #expect(succeeded["path"] == "secret/data/app" && succeeded["old_version"] == "1")
        #expect(succeeded["new_version"] == "2")
        for event in events {
            let text = String(decoding: JSONValue.object(event.data).serialized(), as: UTF8.self)
            #expect(!text.contains(newPassword) && !text.contains("initial-password-0"))
        }
    }

    @Test func graceEndsWithoutAcknowledgements() throws {
        let b = try Box()
        b.wire("PUT", "secret/data/g", ["data": ["password": "p0"]])
        #expect(b.wire("POST", "secret/rotation/g", ["grace_period": "30s", "length": 16]).status == 204)
        let started = b.wire("POST", "secret/rotate/g")
        #expect(started.status == 200 && started.json?["data"]?["phase"] == "waiting")
        #expect(b.status("g")?["next_run"] == .null, "no schedule: rotated only on request")
        b.tick(after: 29)
        #expect(b.status("g")?["phase"] == "waiting")
        b.tick(after: 2)
        #expect(b.status("g")?["phase"] == "idle")
        #expect(b.status("g")?["last_run"]?["outcome"] == "succeeded")
        #expect(b.version("g", 1)?["metadata"]?["deletion_time"] != "")
        #expect(b.current("g")?["data"]?["password"]?.stringValue?.count == 16)
    }

    // MARK: failures write nothing

    @Test func failingGeneratorOrValidatorWritesNothing() throws {
        let b = try Box()
        b.wire("PUT", "secret/data/f", ["data": ["password": "keep-me"]])
        for (policy, error) in [
            (
                ["generator": "command", "command": ["/bin/false"]] as JSONValue,
                "generator: /bin/false exited with status 1"
            ),
            (["generator": "command", "command": ["/bin/true"]], "generator: /bin/true printed nothing"),
            (["validate_command": ["/bin/sh", "-c", "exit 3"]], "validation: /bin/sh exited with status 3"),
            (
                ["generator": "command", "command": ["/usr/bin/yes"]],
                "generator: /usr/bin/yes printed more than 65536 bytes"
            ),
            (
                ["validate_command": ["/nonexistent/check"]],
                "validation: cannot start /nonexistent/check: No such file or directory"
            ),
            (["password_policy": "nope"], "generator: password policy \"nope\" does not exist"),
        ] {
            #expect(b.wire("POST", "secret/rotation/f", policy).status == 204)
            let r = b.wire("POST", "secret/rotate/f")
            #expect(r.status == 200)
            #expect(r.json?["data"]?["last_run"]?["outcome"] == "failed")
            #expect(r.json?["data"]?["last_run"]?["error"] == .string(error))
            #expect(r.json?["warnings"]?.arrayValue?.first == .string("rotation failed: \(error)"))
            #expect(b.current("f")?["metadata"]?["version"] == 1)
            #expect(b.current("f")?["data"]?["password"] == "keep-me")
        }
        #expect(b.events().filter { $0.type == "kv-v2/rotation-failed" }.count == 6)
        let failed = try #require(b.events().last?.data["metadata"])
        #expect(failed["reason"] == "generator: password policy \"nope\" does not exist")
    }

    @Test func hangingGeneratorIsKilledAtItsTimeout() throws {
        let b = try Box()
        b.wire("PUT", "secret/data/h", ["data": ["password": "keep-me"]])
        b.wire(
            "POST",
            "secret/rotation/h",
            ["generator": "command", "command": ["/bin/sleep", "30"], "timeout": "1s"]
        )
        let start = Date()
        let r = b.wire("POST", "secret/rotate/h")
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(
            r.json?["data"]?["last_run"]?["error"] == "generator: /bin/sleep did not finish within 1s and was killed"
        )
        #expect(b.current("h")?["metadata"]?["version"] == 1)
        // A validator that never reads its input and hangs: the same.
        b.wire("POST", "secret/rotation/h", ["validate_command": ["/bin/sleep", "30"], "validate_timeout": "1s"])
        let v = b.wire("POST", "secret/rotate/h")
        #expect(
            v.json?["data"]?["last_run"]?["error"] == "validation: /bin/sleep did not finish within 1s and was killed"
        )
        #expect(b.current("h")?["metadata"]?["version"] == 1)
    }

    @Test func generatorCommandValueAndValidatorGetsItOnStdin() throws {
        let b = try Box()
        let seen = b.dir.file("seen")
        b.wire("PUT", "secret/data/c", ["data": ["password": "p0", "host": "db"]])
        b.wire(
            "POST",
            "secret/rotation/c",
            [
                "generator": "command", "command": ["/bin/echo", "from-the-command-0123456789"],
                "validate_command": ["/bin/sh", "-c", .string("cat > \(seen)")], "post_write_check": false,
            ]
        )
        #expect(b.wire("POST", "secret/rotate/c").json?["data"]?["phase"] == "idle")
        #expect(b.current("c")?["data"] == ["password": "from-the-command-0123456789", "host": "db"])
        #expect(try String(contentsOfFile: seen, encoding: .utf8) == "from-the-command-0123456789")
    }

    @Test func commandsInheritOnlyTheirStandardStreams() throws {
        let b = try Box(sqlite: true)  // the vault's own file is open in this process
        b.wire("PUT", "secret/data/fd", ["data": ["password": "p0"]])
        b.wire(
            "POST",
            "secret/rotation/fd",
            [
                "generator": "command",
                "command": ["/bin/sh", "-c", "exec /bin/ls /proc/self/fd | /usr/bin/tr '\\n' ' '"],
            ]
        )
        #expect(b.wire("POST", "secret/rotate/fd").json?["data"]?["last_run"]?["outcome"] == "succeeded")
        // ls sees its standard streams and the directory it reads, nothing of this process.
        #expect(b.current("fd")?["data"]?["password"] == "0 1 2 3 ")
    }

    // MARK: rollback

    @Test func failedPostWriteCheckRollsBack() throws {
        let b = try Box()
        let flag = b.dir.file("checked-once")
        b.wire("PUT", "secret/data/r", ["data": ["password": "the-old-password"]])
        // Valid the first time (before the write), invalid the second (the post-write check).
        b.wire(
            "POST",
            "secret/rotation/r",
            ["validate_command": ["/bin/sh", "-c", .string("cat >/dev/null; [ ! -e \(flag) ] && touch \(flag)")]]
        )
        let r = b.wire("POST", "secret/rotate/r")
        #expect(r.json?["data"]?["last_run"]?["outcome"] == "rolled-back")
        #expect(r.json?["data"]?["last_run"]?["error"] == "post-write check: /bin/sh exited with status 1")
        // The old value is current again (as version 3); the rejected version 2 is soft-deleted.
        #expect(b.current("r")?["metadata"]?["version"] == 3)
        #expect(b.current("r")?["data"]?["password"] == "the-old-password")
        #expect(b.version("r", 2)?["metadata"]?["deletion_time"] != "")
        #expect(r.json?["data"]?["last_run"]?["restored_version"] == 3)
        #expect(
            b.events().map(\.type) == [
                "kv-v2/rotation-started", "kv-v2/rotation-rolled-back",
            ]
        )
        let meta = try #require(b.events().last?.data["metadata"])
        #expect(meta["new_version"] == "2" && meta["current_version"] == "3" && meta["old_version"] == "1")
    }

    @Test func consumerFailureAndManualRollback() throws {
        let b = try Box()
        b.wire("PUT", "secret/data/m", ["data": ["password": "v1-password"]])
        b.wire("POST", "secret/rotation/m", ["grace_period": "1h", "required_acks": ["web"]])
        b.wire("POST", "secret/rotate/m")
        #expect(b.current("m")?["metadata"]?["version"] == 2)
        // The consumer cannot use version 2: rolled back at once.
        let nack = b.wire("POST", "secret/rotation-ack/m", ["consumer": "web", "version": 2, "ok": false])
        #expect(nack.json?["data"]?["last_run"]?["outcome"] == "rolled-back")
        #expect(nack.json?["data"]?["last_run"]?["error"] == "consumer \"web\" reported failure")
        #expect(b.current("m")?["data"]?["password"] == "v1-password")
        #expect(b.current("m")?["metadata"]?["version"] == 3)

        // A rotation that succeeded, then rolled back by hand.
        b.wire("POST", "secret/rotation/m", ["grace_period": "0s"])
        #expect(b.wire("POST", "secret/rotate/m").json?["data"]?["last_run"]?["outcome"] == "succeeded")
        #expect(b.current("m")?["metadata"]?["version"] == 4)
        #expect(b.current("m")?["data"]?["password"] != "v1-password")
        let back = b.wire("POST", "secret/rotation-rollback/m")
        #expect(back.json?["data"]?["last_run"]?["outcome"] == "rolled-back")
        #expect(b.current("m")?["data"]?["password"] == "v1-password")
        #expect(b.current("m")?["metadata"]?["version"] == 5)
        let again = b.wire("POST", "secret/rotation-rollback/m")
        #expect(again.status == 400)
        #expect(b.events().filter { $0.type == "kv-v2/rotation-rolled-back" }.count == 2)
    }

    // MARK: concurrency and restarts

    @Test func concurrentWriteDuringRotationIsKept() throws {
        let b = try Box()
        let gate = b.dir.file("gate")
        b.wire("PUT", "secret/data/w", ["data": ["password": "p0"]])
        // The generator waits (bounded) for the test to have written.
        b.wire(
            "POST",
            "secret/rotation/w",
            [
                "generator": "command", "timeout": "20s",
                "command": [
                    "/bin/sh", "-c",
                    .string(
                        "i=0; while [ ! -e \(gate) ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done; echo generated-value-123456"
                    ),
                ],
            ]
        )
        final class Result: Sendable { let value = Mutex<JSONValue?>(nil) }
        let result = Result()
        let box = b
        let thread = Thread { result.value.withLock { $0 = box.wire("POST", "secret/rotate/w").json } }
        thread.start()
        let deadline = Date().addingTimeInterval(20)
        while b.status("w")?["phase"] != "generating" && Date() < deadline { usleep(10_000) }
        #expect(b.status("w")?["phase"] == "generating")
        #expect(b.wire("PUT", "secret/data/w", ["data": ["password": "written-meanwhile"]]).status == 200)
        _ = FileManager.default.createFile(atPath: gate, contents: nil)
        while result.value.withLock({ $0 }) == nil && Date() < deadline { usleep(10_000) }
        let last = try #require(result.value.withLock { $0 }?["data"]?["last_run"])
        #expect(last["outcome"] == "failed")
        #expect((last["error"]?.stringValue ?? "").hasPrefix("the secret was written during the rotation"))
        #expect(b.current("w")?["metadata"]?["version"] == 2)
        #expect(b.current("w")?["data"]?["password"] == "written-meanwhile")
    }

    @Test func anotherRunnersClaimHoldsUntilItsDeadline() throws {
        let b = try Box()
        b.wire("PUT", "secret/data/cl", ["data": ["password": "p0"]])
        b.wire("POST", "secret/rotation/cl", ["period": "1h"])
        // Another process claimed the secret and is generating (its state, as it would have written it).
        let core = b.vault.core
        let uuid = try #require(try core.mounts(.secret).first { $0.path == "secret/" }?.uuid)
        let key = "logical/\(uuid)/rotation/state/cl"
        let bytes = try #require(try core.barrier.get(key))
        var state = try #require(try JSONValue.parse(bytes).objectValue)
        state["phase"] = "generating"
        state["run_id"] = "elsewhere-run"
        state["claim_by"] = "pid 1 elsewhere"
        state["claim_until"] = .number(String(b.clock.now().adding(seconds: 100).nanoseconds))
        try core.barrier.put(key, JSONValue.object(state).serialized())

        let busy = b.wire("POST", "secret/rotate/cl")
        #expect(busy.status != 200)
        #expect((busy.json?["errors"]?.arrayValue?.first?.stringValue ?? "").contains("claimed by pid 1 elsewhere"))
        b.tick(after: 99)
        #expect(b.status("cl")?["phase"] == "generating", "the claim holds until its deadline")
        #expect(b.status("cl")?["claim"]?["by"] == "pid 1 elsewhere")
        b.tick(after: 2)
        // The claim expired: that runner is taken as dead, and its run failed cleanly.
        let last = try #require(b.status("cl")?["last_run"])
        #expect(last["run_id"] == "elsewhere-run" && last["outcome"] == "failed")
        #expect(last["error"] == "the runner stopped before the write (a restart); nothing was written")
        #expect(b.current("cl")?["metadata"]?["version"] == 1)

        // LIST: the secrets with a policy.
        b.wire("PUT", "secret/data/team/a/db", ["data": ["password": "p0"]])
        b.wire("POST", "secret/rotation/team/a/db", [:])
        #expect(b.wire("LIST", "secret/rotation").json?["data"]?["keys"] == ["cl", "team/a/db"])
        #expect(b.wire("LIST", "secret/rotation/team").json?["data"]?["keys"] == ["a/db"])
        #expect(b.wire("LIST", "secret/rotation/nothing").status == 404)
    }

    @Test func restartWhileGeneratingFailsCleanly() throws {
        let b = try Box(sqlite: true)
        b.wire("PUT", "secret/data/rs1", ["data": ["password": "p0"]])
        b.wire("POST", "secret/rotation/rs1", ["period": "1h"])
        KVv2Backend.stopForTests.withLock { $0["rs1"] = "generating" }
        defer { _ = KVv2Backend.stopForTests.withLock { $0.removeValue(forKey: "rs1") } }
        #expect(b.wire("POST", "secret/rotate/rs1").status == 500)
        #expect(b.status("rs1")?["phase"] == "generating")
        try b.restart()
        _ = KVv2Backend.stopForTests.withLock { $0.removeValue(forKey: "rs1") }
        b.tick(after: 61)  // past the dead runner's claim
        let last = try #require(b.status("rs1")?["last_run"])
        #expect(last["outcome"] == "failed")
        #expect(last["error"] == "the runner stopped before the write (a restart); nothing was written")
        #expect(b.status("rs1")?["phase"] == "idle")
        #expect(b.current("rs1")?["metadata"]?["version"] == 1)
    }

    @Test func restartAfterTheWriteResumes() throws {
        let b = try Box(sqlite: true)
        b.wire("PUT", "secret/data/rs2", ["data": ["password": "p0"]])
        b.wire("POST", "secret/rotation/rs2", ["grace_period": "1m"])
        KVv2Backend.stopForTests.withLock { $0["rs2"] = "after-write" }
        defer { _ = KVv2Backend.stopForTests.withLock { $0.removeValue(forKey: "rs2") } }
        #expect(b.wire("POST", "secret/rotate/rs2").status == 500)
        #expect(b.status("rs2")?["phase"] == "writing")
        #expect(b.current("rs2")?["metadata"]?["version"] == 2)
        try b.restart()
        _ = KVv2Backend.stopForTests.withLock { $0.removeValue(forKey: "rs2") }
        b.tick(after: 61)  // past the dead runner's claim
        // Recognised as the rotation's own write (its digest), so the run goes on: notified, waiting.
        #expect(b.status("rs2")?["phase"] == "waiting")
        b.tick(after: 61)
        #expect(b.status("rs2")?["last_run"]?["outcome"] == "succeeded")
        #expect(b.version("rs2", 1)?["metadata"]?["deletion_time"] != "")
        #expect(b.current("rs2")?["metadata"]?["version"] == 2)
    }
}
