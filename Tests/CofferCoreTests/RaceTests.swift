import Foundation
import Synchronization
import Testing

@testable import CofferCore

/// Read-modify-write races in core state, each driven by real threads at once, and the token and
/// barrier limits that depend on them.
@Suite struct RaceTests {
    /// Runs `body(i)` on `count` threads released together.
    func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let start = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for i in 0..<count {
            group.enter()
            Thread {
                start.wait()
                body(i)
                group.leave()
            }.start()
        }
        for _ in 0..<count { start.signal() }
        group.wait()
    }

    @Test(arguments: [1, 3])
    func aTokenWithLimitedUsesIsUsedExactlyThatOften(uses: Int) throws {
        let (core, result) = try makeCore()
        for _ in 0..<20 {
            let created = try core.call(
                .update,
                "auth/token/create",
                ["num_uses": .int(uses), "policies": ["default"]],
                token: result.rootToken
            )
            let token = try #require(created.auth?.clientToken)
            let successes = Atomic(0)
            concurrently(32) { _ in
                if (try? core.call(.read, "auth/token/lookup-self", token: token)) != nil {
                    successes.wrappingAdd(1, ordering: .relaxed)
                }
            }
            #expect(successes.load(ordering: .relaxed) == uses)
            expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: token) }
        }
    }

    @Test func concurrentRotationsEachAddOneTermAndLoseNothing() throws {
        let dir = TemporaryDirectory()
        let storage = try SQLiteBackend(path: dir.file("coffer.db"))
        let (core, result) = try makeCore(storage: storage)
        let root = result.rootToken
        let rotations = 6 * 10
        let failures = Mutex<[String]>([])
        concurrently(12) { i in
            for n in 0..<150 {
                do {
                    if i < 6 {
                        if n < 10 { try core.call(.update, "sys/rotate", token: root) }
                    } else {
                        try core.call(.update, "echo/w\(i)/\(n)", ["v": .string("value \(i) \(n)")], token: root)
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let status = try core.call(.read, "sys/key-status", token: root)
        #expect(status.data?["term"] == .int(1 + rotations))
        // Every secret reads back, also after a restart (the keyring on disk has every term).
        core.sealVault()
        try core.unseal(key: result.keys[0].unsafeCopy)
        for i in 6..<12 {
            for n in 0..<150 {
                let read = try core.call(.read, "echo/w\(i)/\(n)", token: root)
                #expect(read.data?["v"] == .string("value \(i) \(n)"))
            }
        }
    }

    @Test func aChildTokenDiesWithItsParent() throws {
        let clock = ManualClock()
        let (core, result) = try makeCore(clock: clock)
        try core.call(
            .update,
            "sys/policies/acl/maker",
            ["policy": #"path "auth/token/create" { capabilities = ["update"] }"#],
            token: result.rootToken
        )
        let parent = try #require(
            try core.call(.update, "auth/token/create", ["ttl": "4s", "policies": ["maker"]], token: result.rootToken)
                .auth
        )
        let child = try #require(
            try core.call(
                .update,
                "auth/token/create",
                ["ttl": "1h", "policies": ["maker"]],
                token: parent.clientToken
            ).auth
        )
        // The child's TTL says when it really ends: with its parent.
        #expect(child.leaseDuration == 4)
        let grandchild = try #require(
            try core.call(.update, "auth/token/create", ["ttl": "1h"], token: child.clientToken).auth
        )
        let orphan = try #require(
            try core.call(.update, "auth/token/create-orphan", ["ttl": "1h"], token: result.rootToken).auth
        )
        // Renewal cannot outlive the parent either.
        let renewed = try core.call(.update, "auth/token/renew-self", ["increment": "2h"], token: child.clientToken)
        #expect(renewed.auth?.leaseDuration == 4)
        clock.advance(seconds: 6)
        for token in [parent.clientToken, child.clientToken, grandchild.clientToken] {
            expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: token) }
            expectError(.permissionDenied) { try core.call(.update, "auth/token/renew-self", token: token) }
        }
        #expect(try core.call(.read, "auth/token/lookup-self", token: orphan.clientToken).data?["ttl"] != nil)
        // The tree is gone from storage, not only refused: its accessors no longer resolve.
        for accessor in [child.accessor, grandchild.accessor] {
            expectError(.invalidArgument) {
                try core.call(
                    .update,
                    "auth/token/lookup-accessor",
                    ["accessor": .string(accessor)],
                    token: result.rootToken
                )
            }
        }
    }

    @Test func aTokenWhoseParentWasRevokedBehindItsBackIsDenied() throws {
        let storage = InMemoryBackend()
        let (core, result) = try makeCore(storage: storage)
        let parent = try #require(
            try core.call(.update, "auth/token/create", ["policies": ["root"]], token: result.rootToken).auth
        )
        let child = try #require(try core.call(.update, "auth/token/create", [:], token: parent.clientToken).auth)
        // A revocation cut short: the parent's entry is gone, the child's is still stored.
        try core.barrier.delete(TokenStore.idPrefix + (try core.tokens.hash(parent.clientToken)))
        core.sealVault()
        let reopened = try Core(storage: storage, engines: testRegistry(), clock: ManualClock())
        try reopened.unseal(key: result.keys[0].unsafeCopy)
        expectError(.permissionDenied) { try reopened.call(.read, "auth/token/lookup-self", token: child.clientToken) }
    }

    @Test func revokingADeepChainDoesNotOverflowTheStack() throws {
        let (core, result) = try makeCore()
        var token = result.rootToken
        var first: String?
        for _ in 0..<3000 {
            token = try #require(
                try core.call(.update, "auth/token/create", ["policies": ["root"]], token: token).auth?.clientToken
            )
            if first == nil { first = token }
        }
        try core.call(.update, "auth/token/revoke", ["token": .string(try #require(first))], token: result.rootToken)
        expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: token) }
    }

    @Test func encryptionsAreCountedPersistedAndBoundTheTerm() throws {
        let dir = TemporaryDirectory()
        let (core, result) = try makeCore(storage: try SQLiteBackend(path: dir.file("coffer.db")))
        let root = result.rootToken
        let before = try #require(try core.call(.read, "sys/key-status", token: root).data?["encryptions"]?.intValue)
        for n in 0..<50 { try core.call(.update, "echo/n\(n)", ["v": "x"], token: root) }
        let after = try #require(try core.call(.read, "sys/key-status", token: root).data?["encryptions"]?.intValue)
        #expect(after >= before + 50)
        // After a restart the count never goes down: what a crash could have lost is added.
        core.sealVault()
        try core.unseal(key: result.keys[0].unsafeCopy)
        let reopened = try #require(try core.call(.read, "sys/key-status", token: root).data?["encryptions"]?.intValue)
        #expect(reopened >= after)

        // sys/rotate/config: OpenBao's shape and ranges.
        let config = try core.call(.read, "sys/rotate/config", token: root)
        #expect(config.data == ["max_operations": 3_865_470_566, "interval": 0, "enabled": true])
        expectError(.invalidArgument, containing: "max_operations must be in the range [1000000,3865470566]") {
            try core.call(.update, "sys/rotate/config", ["max_operations": 10], token: root)
        }
        expectError(.invalidArgument, containing: "interval must be greater or equal to 24h0m0s") {
            try core.call(.update, "sys/rotate/config", ["interval": "1h"], token: root)
        }
        try core.call(.update, "sys/rotate/config", ["max_operations": 2_000_000, "interval": "25h"], token: root)
        #expect(
            try core.call(.read, "sys/rotate/config", token: root).data == [
                "max_operations": 2_000_000, "interval": "25h0m0s", "enabled": true,
            ]
        )

        // At the limit the barrier adds a term by itself (the limit is lowered here below the API's
        // floor of a million, so the test does not have to make a million writes).
        let term = try #require(try core.call(.read, "sys/key-status", token: root).data?["term"]?.intValue)
        core.barrier.rotateAfterEncryptions.store(Int64(reopened + 100), ordering: .relaxed)
        for n in 0..<150 { try core.call(.update, "echo/m\(n)", ["v": "x"], token: root) }
        let rotated = try core.call(.read, "sys/key-status", token: root).data
        #expect(rotated?["term"] == .int(term + 1))
        #expect((rotated?["encryptions"]?.intValue ?? .max) < 100)
        for n in 0..<150 { #expect(try core.call(.read, "echo/m\(n)", token: root).data?["v"] == "x") }
    }

    @Test func timeBasedRotation() throws {
        let clock = ManualClock()
        let (core, result) = try makeCore(clock: clock)
        let root = result.rootToken
        try core.call(.update, "sys/rotate/config", ["interval": "24h"], token: root)
        try core.call(.update, "echo/a", ["v": "x"], token: root)
        #expect(try core.call(.read, "sys/key-status", token: root).data?["term"] == 1)
        clock.advance(seconds: 24 * 3600)
        try core.call(.update, "echo/b", ["v": "y"], token: root)
        #expect(try core.call(.read, "sys/key-status", token: root).data?["term"] == 2)
        try core.call(.update, "sys/rotate/config", ["enabled": false], token: root)
        clock.advance(seconds: 48 * 3600)
        try core.call(.update, "echo/c", ["v": "z"], token: root)
        #expect(try core.call(.read, "sys/key-status", token: root).data?["term"] == 2)
    }
}
