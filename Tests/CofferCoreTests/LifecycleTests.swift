import Foundation
import Testing

@testable import CofferCore

@Suite struct LifecycleTests {
    @Test func threeOfFiveUnsealWithAnyThreeSharesAndTwoDoNot() throws {
        let (core, result) = try makeCore(shares: 5, threshold: 3)
        #expect(result.keys.count == 5)
        #expect(result.hexKeys.allSatisfy { $0.count == 66 })
        #expect(result.rootToken.hasPrefix("s."))
        try core.call(.update, "echo/x", ["v": "1"], token: result.rootToken)

        var combinations: [[Int]] = []
        for i in 0..<5 { for j in (i + 1)..<5 { for k in (j + 1)..<5 { combinations.append([i, j, k]) } } }
        #expect(combinations.count == 10)
        for combo in combinations {
            core.sealVault()
            #expect(core.isSealed)
            var status = try core.unseal(key: result.keys[combo[0]].unsafeCopy)
            #expect(status.sealed && status.progress == 1)
            status = try core.unseal(key: result.keys[combo[1]].unsafeCopy)
            #expect(status.sealed && status.progress == 2, "two shares do not unseal")
            status = try core.unseal(key: result.keys[combo[2]].unsafeCopy)
            #expect(!status.sealed && status.progress == 0)
            #expect(try core.call(.read, "echo/x", token: result.rootToken).data?["v"] == "1")
        }
    }

    @Test func wrongAndDuplicateSharesAreRejectedWithoutLosingProgress() throws {
        let (core, result) = try makeCore(shares: 5, threshold: 3)
        core.sealVault()
        try core.unseal(key: result.keys[0].unsafeCopy)
        expectError(.invalidArgument, containing: "already entered") { try core.unseal(key: result.keys[0].unsafeCopy) }
        var foreign = result.keys[1].unsafeCopy
        foreign[0] ^= 0xFF
        expectError(.invalidArgument, containing: "not one of the current unseal keys") {
            try core.unseal(key: foreign)
        }
        expectError(.invalidArgument, containing: "33 bytes") { try core.unseal(key: [1, 2, 3]) }
        #expect(try core.sealStatus().progress == 1, "the right share is still counted")
        try core.unseal(key: result.keys[3].unsafeCopy)
        let status = try core.unseal(key: result.keys[4].unsafeCopy)
        #expect(!status.sealed)
    }

    @Test func sealedVaultRefusesEverythingButStatusInitAndUnseal() throws {
        let (core, result) = try makeCore()
        core.sealVault()
        expectError(.sealed, containing: "Vault is sealed") { try core.call(.read, "echo/x", token: result.rootToken) }
        expectError(.sealed, containing: "Vault is sealed") {
            try core.call(.read, "sys/mounts", token: result.rootToken)
        }
        expectError(.sealed, containing: "Vault is sealed") {
            try core.call(.read, "auth/token/lookup-self", token: nil)
        }
        let status = try core.call(.read, "sys/seal-status", token: nil)
        #expect(status.raw?["sealed"] == true && status.raw?["initialized"] == true && status.raw?["type"] == "shamir")
        #expect(status.raw?["cluster_name"] == nil, "OpenBao hides the cluster while sealed")
        let health = try core.call(.read, "sys/health", token: nil)
        #expect(health.status == 503 && health.raw?["sealed"] == true && health.raw?["cluster_id"] == nil)
        #expect(health.raw?["standby"] == true && health.raw?["replication_dr_mode"] == "unknown")
        #expect(try core.call(.read, "sys/init", token: nil).raw?["initialized"] == true)
        let unsealed = try core.call(.update, "sys/unseal", ["key": .string(result.hexKeys[0])], token: nil)
        #expect(unsealed.raw?["sealed"] == false)
        // Unsealed, the vault names itself: an id made at init, the same after sealing again, another
        // vault's different.
        let id = try core.call(.read, "sys/health", token: nil).raw?["cluster_id"]?.stringValue ?? ""
        #expect(id.count == 36 && id != "00000000-0000-0000-0000-000000000000")
        let name = try core.call(.read, "sys/seal-status", token: nil).raw?["cluster_name"]?.stringValue ?? ""
        #expect(name == "coffer-cluster-" + id.prefix(8))
        core.sealVault()
        _ = try core.call(.update, "sys/unseal", ["key": .string(result.hexKeys[0])], token: nil)
        #expect(try core.call(.read, "sys/health", token: nil).raw?["cluster_id"]?.stringValue == id)
        let (other, _) = try makeCore()
        let otherID = try other.call(.read, "sys/health", token: nil).raw?["cluster_id"]?.stringValue
        #expect(otherID != nil && otherID != id)
    }

    @Test func initOverTheWireLeavesTheVaultSealedAsOpenBaoDoes() throws {
        let core = try Core(storage: InMemoryBackend(), engines: testRegistry())
        let (status, body) = core.handleWire(
            method: "PUT",
            path: "/v1/sys/init",
            token: nil,
            body: Array(#"{"secret_shares":3,"secret_threshold":2}"#.utf8)
        )
        #expect(status == 200)
        let json = try JSONValue.parse(try #require(body))
        let keys = (json["keys"]?.arrayValue ?? []).compactMap { $0.stringValue.flatMap(Hex.decode) }
        #expect(keys.count == 3)
        #expect(core.isSealed, "sys/init hands out the shares; the operators unseal with them")
        try core.unseal(key: keys[0])
        let unsealed = try core.unseal(key: keys[2])
        #expect(!unsealed.sealed)
    }

    @Test func initializingTwiceOrUnsealingUninitializedFails() throws {
        let core = try Core(storage: InMemoryBackend(), engines: testRegistry())
        #expect(
            try core.sealStatus()
                == SealStatus(
                    type: "shamir",
                    initialized: false,
                    sealed: true,
                    threshold: 0,
                    shares: 0,
                    progress: 0,
                    nonce: "",
                    storageType: "inmem",
                    recoverySeal: false
                )
        )
        expectError(.notInitialized, containing: "not initialized") {
            try core.unseal(key: [UInt8](repeating: 1, count: 33))
        }
        let health = try core.call(.read, "sys/health", token: nil)
        #expect(health.status == 501)
        expectError(.invalidArgument, containing: "secret_threshold") {
            _ = try core.initialize(shares: 3, threshold: 5)
        }
        _ = try core.initialize(shares: 3, threshold: 2)
        expectError(.alreadyInitialized, containing: "already initialized") {
            _ = try core.initialize(shares: 1, threshold: 1)
        }
        #expect(try core.call(.read, "sys/health", token: nil).status == 200)
        core.sealVault()
        #expect(try core.call(.read, "sys/health", token: nil).status == 503)
        #expect(try core.call(.read, "sys/health", ["sealedcode": "299"], token: nil).status == 299)
    }

    @Test func restartFromSQLiteAndUnsealWithDataIntact() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        let result: InitResult
        do {
            let (core, r) = try makeCore(storage: try SQLiteBackend(path: path), shares: 3, threshold: 2)
            result = r
            for i in 0..<20 { try core.call(.update, "echo/item\(i)", ["n": .int(i)], token: r.rootToken) }
            try core.barrier.rotate(now: Timestamp(seconds: 5))
            try core.call(.update, "echo/after-rotate", ["ok": true], token: r.rootToken)
            core.barrier.physical.close()
        }
        let core = try Core(storage: try SQLiteBackend(path: path), engines: testRegistry())
        #expect(core.isInitialized && core.isSealed)
        try core.unseal(key: result.keys[2].unsafeCopy)
        try core.unseal(key: result.keys[0].unsafeCopy)
        #expect(!core.isSealed)
        for i in 0..<20 {
            #expect(try core.call(.read, "echo/item\(i)", token: result.rootToken).data?["n"] == .int(i))
        }
        #expect(try core.call(.read, "echo/after-rotate", token: result.rootToken).data?["ok"] == true)
        #expect(try core.mounts().map(\.path) == ["echo/"])
    }

    @Test func rekeyIssuesNewSharesForTheSameRootKey() throws {
        let (core, result) = try makeCore(shares: 3, threshold: 2)
        try core.call(.update, "echo/keep", ["v": "kept"], token: result.rootToken)
        let started = try core.call(.update, "sys/rekey/init", ["secret_shares": 5, "secret_threshold": 3], token: nil)
        let nonce = try #require(started.raw?["nonce"]?.stringValue)
        expectError(.invalidArgument, containing: "nonce") {
            try core.call(
                .update,
                "sys/rekey/update",
                ["key": .string(result.hexKeys[0]), "nonce": "wrong"],
                token: nil
            )
        }
        try core.call(
            .update,
            "sys/rekey/update",
            ["key": .string(result.hexKeys[0]), "nonce": .string(nonce)],
            token: nil
        )
        let done = try core.call(
            .update,
            "sys/rekey/update",
            ["key": .string(result.hexKeys[1]), "nonce": .string(nonce)],
            token: nil
        )
        #expect(done.raw?["complete"] == true)
        let newKeys = try #require(done.raw?["keys"]?.arrayValue).compactMap(\.stringValue)
        #expect(newKeys.count == 5)
        core.sealVault()
        expectError(.invalidArgument, containing: "not one of the current") {
            try core.unseal(key: hex(result.hexKeys[0]))
        }
        for key in newKeys.prefix(3) { try core.unseal(key: hex(key)) }
        #expect(!core.isSealed)
        #expect(try core.call(.read, "echo/keep", token: result.rootToken).data?["v"] == "kept")
        #expect(try core.sealStatus().shares == 5)
    }

    @Test func rotateAndKeyStatusThroughSys() throws {
        let (core, result) = try makeCore()
        try core.call(.update, "echo/a", ["v": 1], token: result.rootToken)
        try core.call(.update, "sys/rotate", token: result.rootToken)
        let status = try core.call(.read, "sys/key-status", token: result.rootToken)
        #expect(status.data?["term"] == .int(2))
        #expect(try core.call(.read, "echo/a", token: result.rootToken).data?["v"] == .int(1))
    }

    @Test(arguments: [
        ("echo/../sys/mounts", "'..' segment"), ("echo//x", "empty segment"), ("echo/./x", "'.' segment"),
        ("echo/a\u{01}b", "control character (U+1)"), ("", "empty path"), ("echo/..", "'..' segment"),
        ("echo/x/.", "'.' segment"), ("//", "empty path"), ("echo/a\u{7F}", "control character (U+7F)"),
        ("echo/a//", "empty segment"), ("echo//a/../b\u{02}", "control character (U+2)"),
        ("echo/./x//y", "'.' segment"),
    ])
    func badPathsGetClearErrors(path: String, message: String) throws {
        let (core, result) = try makeCore()
        expectError(.invalidArgument, containing: message) { try core.call(.read, path, token: result.rootToken) }
    }

    @Test func overlongPathsAndUnknownRoutes() throws {
        let (core, result) = try makeCore()
        expectError(.invalidArgument, containing: "limit is 4096") {
            try core.call(.read, "echo/" + String(repeating: "a", count: 5000), token: result.rootToken)
        }
        expectError(.notFound, containing: "no handler for route") {
            try core.call(.read, "nowhere/x", token: result.rootToken)
        }
    }

    @Test func mountsEnableListTuneAndDisable() throws {
        let (core, result) = try makeCore()
        let root = result.rootToken
        try core.call(.update, "sys/mounts/other", ["type": "echo", "description": "second"], token: root)
        expectError(.invalidArgument, containing: "already in use at other/") {
            try core.call(.update, "sys/mounts/other/sub", ["type": "echo"], token: root)
        }
        expectError(.invalidArgument, containing: "reserved") {
            try core.call(.update, "sys/mounts/sys", ["type": "echo"], token: root)
        }
        expectError(.invalidArgument, containing: "unknown secrets engine type") {
            try core.call(.update, "sys/mounts/bad", ["type": "nope"], token: root)
        }
        let listing = try core.call(.read, "sys/mounts", token: root)
        #expect(listing.data?["other/"]?["description"] == "second")
        #expect(listing.data?["sys/"]?["type"] == "system")
        try core.call(.update, "other/x", ["a": "b"], token: root)
        try core.call(.update, "sys/mounts/other/tune", ["default_lease_ttl": "1h"], token: root)
        #expect(try core.call(.read, "sys/mounts/other/tune", token: root).data?["default_lease_ttl"] == .int(3600))
        try core.call(.delete, "sys/mounts/other", token: root)
        expectError(.notFound) { try core.call(.read, "other/x", token: root) }
        // Mounting again starts empty: the old data was removed with the mount.
        try core.call(.update, "sys/mounts/other", ["type": "echo"], token: root)
        #expect(try core.call(.read, "other/x", token: root).status == 404)
    }

    @Test func aTamperedRowIsAnIntegrityErrorAndNothingElseIsLost() throws {
        let storage = InMemoryBackend()
        let (core, result) = try makeCore(storage: storage)
        try core.call(.update, "echo/a", ["v": "A"], token: result.rootToken)
        try core.call(.update, "echo/b", ["v": "B"], token: result.rootToken)
        let keys = try storage.listRecursive(prefix: "logical/")
        let aKey = try #require(keys.first { $0.hasSuffix("/a") })
        let bKey = try #require(keys.first { $0.hasSuffix("/b") })
        try storage.put(aKey, try #require(try storage.get(bKey)))
        expectError(.integrity, containing: aKey) { try core.call(.read, "echo/a", token: result.rootToken) }
        #expect(try core.call(.read, "echo/b", token: result.rootToken).data?["v"] == "B")
    }
}

@Suite struct SealWhenSealedTests {
    @Test func sealingASealedVaultSucceedsAndChangesNothing() throws {
        let (core, result) = try makeCore()
        core.sealVault()
        #expect(try core.call(.update, "sys/seal", token: nil).status == 204)
        #expect(core.isSealed)
        try core.unseal(key: result.keys[0].unsafeCopy)
        #expect(!core.isSealed)
    }
}
