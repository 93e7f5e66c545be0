import Foundation
import Synchronization
import Testing

@testable import CofferCore

@Suite struct TokenTests {
    func create(
        _ core: Core,
        _ token: String,
        _ data: [String: JSONValue] = [:],
        path: String = "auth/token/create"
    ) throws -> AuthInfo {
        try #require(try core.call(.update, path, data, token: token).auth)
    }

    @Test func createLookupRenewRevokeWithVaultShapes() throws {
        let clock = ManualClock()
        let (core, result) = try makeCore(clock: clock)
        let root = result.rootToken
        try core.call(
            .update,
            "sys/policies/acl/reader",
            ["policy": #"path "echo/*" { capabilities = ["read"] }"#],
            token: root
        )
        let auth = try create(
            core,
            root,
            ["policies": ["reader"], "ttl": "1h", "meta": ["team": "payments"], "display_name": "ci"]
        )
        #expect(auth.policies == ["default", "reader"])
        #expect(auth.leaseDuration == 3600 && auth.renewable && !auth.orphan)
        #expect(auth.clientToken.hasPrefix("s.") && auth.accessor.count == 24)

        let lookup = try #require(try core.call(.read, "auth/token/lookup-self", token: auth.clientToken).data)
        #expect(lookup["display_name"] == "token-ci")
        #expect(lookup["meta"] == ["team": "payments"])
        #expect(lookup["ttl"] == .int(3600) && lookup["creation_ttl"] == .int(3600))
        #expect(lookup["id"] == .string(auth.clientToken))
        #expect(lookup["path"] == "auth/token/create")
        let byAccessor = try #require(
            try core.call(.update, "auth/token/lookup-accessor", ["accessor": .string(auth.accessor)], token: root).data
        )
        #expect(byAccessor["id"] == "" && byAccessor["accessor"] == .string(auth.accessor))

        clock.advance(seconds: 1800)
        let renewed = try #require(
            try core.call(.update, "auth/token/renew-self", ["increment": "2h"], token: auth.clientToken).auth
        )
        #expect(renewed.leaseDuration == 7200)
        clock.advance(seconds: 7199)
        #expect(try core.call(.read, "auth/token/lookup-self", token: auth.clientToken).data?["ttl"] == .int(1))
        clock.advance(seconds: 2)
        expectError(.permissionDenied, containing: "permission denied") {
            try core.call(.read, "auth/token/lookup-self", token: auth.clientToken)
        }
    }

    @Test func bogusLookupIs403AndRootRenewalIsRefusedAsInOpenBao() throws {
        let (core, result) = try makeCore()
        expectError(.permissionDenied, containing: "bad token") {
            try core.call(
                .update,
                "auth/token/lookup",
                ["token": "s.nosuchtokennosuchtokenno"],
                token: result.rootToken
            )
        }
        #expect(
            core.handleWire(
                method: "POST",
                path: "/v1/auth/token/lookup",
                token: result.rootToken,
                body: Array(#"{"token":"s.nope"}"#.utf8)
            ).status == 403
        )
        expectError(.invalidArgument, containing: "lease is not renewable") {
            try core.call(.update, "auth/token/renew-self", token: result.rootToken)
        }
    }

    @Test func aNamespaceThatDoesNotExistIsNotFound() throws {
        let (core, result) = try makeCore()
        for namespace in ["", "root", "root/"] {
            #expect(
                core.handleWire(
                    method: "GET",
                    path: "/v1/sys/mounts",
                    token: result.rootToken,
                    body: [],
                    namespace: namespace
                ).status == 200
            )
        }
        let (status, body) = core.handleWire(
            method: "GET",
            path: "/v1/sys/mounts",
            token: result.rootToken,
            body: [],
            namespace: "ns1"
        )
        #expect(
            status == 404 && body.map { String(decoding: $0, as: UTF8.self) } == #"{"errors":["namespace not found"]}"#
        )
    }

    @Test func revokingAParentRevokesItsChildrenButNotOrphans() throws {
        let (core, result) = try makeCore()
        let root = result.rootToken
        try core.call(
            .update,
            "sys/policies/acl/creator",
            ["policy": #"path "auth/token/create*" { capabilities = ["update"] }"#],
            token: root
        )
        let parent = try create(core, root, ["policies": ["creator"]])
        let child = try create(core, parent.clientToken, [:])
        let grandchild = try create(core, child.clientToken, [:])
        let orphan = try create(core, parent.clientToken, [:], path: "auth/token/create-orphan")
        #expect(orphan.orphan)
        try core.call(.update, "auth/token/revoke", ["token": .string(parent.clientToken)], token: root)
        for gone in [parent, child, grandchild] {
            expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: gone.clientToken) }
        }
        #expect(try core.call(.read, "auth/token/lookup-self", token: orphan.clientToken).data?["orphan"] == true)
    }

    @Test func revokeOrphanKeepsChildrenAsOrphans() throws {
        let (core, result) = try makeCore()
        try core.call(
            .update,
            "sys/policies/acl/creator",
            ["policy": #"path "auth/token/create" { capabilities = ["update"] }"#],
            token: result.rootToken
        )
        let parent = try create(core, result.rootToken, ["policies": ["creator"]])
        let child = try create(core, parent.clientToken)
        try core.call(
            .update,
            "auth/token/revoke-orphan",
            ["token": .string(parent.clientToken)],
            token: result.rootToken
        )
        expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: parent.clientToken) }
        #expect(try core.call(.read, "auth/token/lookup-self", token: child.clientToken).data?["orphan"] == true)
    }

    @Test func revokeByAccessorAndSelf() throws {
        let (core, result) = try makeCore()
        let a = try create(core, result.rootToken)
        let b = try create(core, result.rootToken)
        try core.call(.update, "auth/token/revoke-accessor", ["accessor": .string(a.accessor)], token: result.rootToken)
        expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: a.clientToken) }
        try core.call(.update, "auth/token/revoke-self", token: b.clientToken)
        expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: b.clientToken) }
        let accessors =
            try core.call(.list, "auth/token/accessors", token: result.rootToken).data?["keys"]?.arrayValue ?? []
        #expect(accessors.count == 1, "only the root token is left")
    }

    @Test func numUsesExplicitMaxTTLAndPeriod() throws {
        let clock = ManualClock()
        let (core, result) = try makeCore(clock: clock)
        let limited = try create(core, result.rootToken, ["num_uses": 2])
        #expect(limited.numUses == 2)
        try core.call(.read, "auth/token/lookup-self", token: limited.clientToken)
        try core.call(.read, "auth/token/lookup-self", token: limited.clientToken)
        expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: limited.clientToken) }

        let capped = try create(core, result.rootToken, ["ttl": "1h", "explicit_max_ttl": "90m"])
        clock.advance(seconds: 3000)
        let renewed = try #require(
            try core.call(.update, "auth/token/renew-self", ["increment": "1h"], token: capped.clientToken).auth
        )
        #expect(renewed.leaseDuration == 2400, "capped at creation + 90m")

        let periodic = try create(core, result.rootToken, ["period": "10m"])
        #expect(periodic.leaseDuration == 600)
        clock.advance(seconds: 500)
        #expect(try core.call(.update, "auth/token/renew-self", token: periodic.clientToken).auth?.leaseDuration == 600)
        #expect(
            try core.call(.read, "auth/token/lookup-self", token: periodic.clientToken).data?["period"] == .int(600)
        )
    }

    @Test func childPoliciesMustBeASubsetAndOrphansNeedPrivilege() throws {
        let (core, result) = try makeCore()
        let root = result.rootToken
        try core.call(
            .update,
            "sys/policies/acl/creator",
            ["policy": #"path "auth/token/create" { capabilities = ["update"] }"#],
            token: root
        )
        let creator = try create(core, root, ["policies": ["creator"]])
        expectError(.invalidArgument, containing: "subset of parent") {
            _ = try create(core, creator.clientToken, ["policies": ["admin"]])
        }
        expectError(.invalidArgument, containing: "subset of parent") {
            _ = try create(core, creator.clientToken, ["policies": ["root"]])
        }
        // `sudo` on the path lifts the subset rule, as in OpenBao, but never to a root token.
        try core.call(
            .update,
            "sys/policies/acl/creator-sudo",
            ["policy": #"path "auth/token/create" { capabilities = ["update", "sudo"] }"#],
            token: root
        )
        let sudo = try create(core, root, ["policies": ["creator-sudo"]])
        #expect(try create(core, sudo.clientToken, ["policies": ["admin"]]).policies == ["admin", "default"])
        expectError(.invalidArgument, containing: "root tokens may not be created without parent token being root") {
            _ = try create(core, sudo.clientToken, ["policies": ["root"]])
        }
        expectError(.invalidArgument, containing: "orphan") {
            _ = try create(core, creator.clientToken, ["no_parent": true])
        }
        let child = try create(core, creator.clientToken)
        #expect(child.policies == ["creator", "default"])
    }

    @Test func tokensAreStoredOnlyAsSaltedHashes() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        let (core, result) = try makeCore(storage: try SQLiteBackend(path: path))
        let auth = try create(core, result.rootToken)
        core.barrier.physical.close()
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        if let wal = try? Data(contentsOf: URL(fileURLWithPath: path + "-wal")) { bytes.append(wal) }
        for secret in [result.rootToken, auth.clientToken, String(auth.clientToken.dropFirst(2))] {
            #expect(bytes.range(of: Data(secret.utf8)) == nil, "a token appears in the database file")
        }
    }

    @Test func missingOrBogusTokensAreDenied() throws {
        let (core, _) = try makeCore()
        expectError(.permissionDenied, containing: "permission denied") { try core.call(.read, "echo/x", token: nil) }
        expectError(.permissionDenied) { try core.call(.read, "echo/x", token: "") }
        expectError(.permissionDenied) { try core.call(.read, "echo/x", token: "s.notarealtokenatallxxxxxx") }
    }
}

@Suite struct TokenRenewShapeTests {
    @Test func renewSelfEchoesTheCallersToken() throws {
        let (core, result) = try makeCore()
        let auth = try #require(
            try core.call(.update, "auth/token/create", ["ttl": "1h"], token: result.rootToken).auth
        )
        let renewed = try #require(try core.call(.update, "auth/token/renew-self", token: auth.clientToken).auth)
        #expect(renewed.clientToken == auth.clientToken && renewed.accessor == auth.accessor)
    }
}

@Suite struct TokenCacheKeyTests {
    @Test func hexKeysAreExactlyTheLowerCaseFormEntriesAreStoredUnder() {
        let mac = (0..<32).map { UInt8($0 * 7 & 0xFF) }
        let fromMAC = mac.withUnsafeBytes { TokenCache.Key(mac: $0) }
        #expect(TokenCache.Key(hex: Hex.encode(mac)) == fromMAC)
        #expect(TokenCache.Key(hex: Hex.encode(mac).uppercased()) == nil)
        #expect(TokenCache.Key(hex: String(Hex.encode(mac).dropLast())) == nil)
        #expect(TokenCache.Key(hex: Hex.encode(mac) + "0") == nil)
        #expect(TokenCache.Key(hex: "") == nil)
        // 64 bytes, two of them one non-ASCII character.
        #expect(TokenCache.Key(hex: String(Hex.encode(mac).dropLast(2)) + "é") == nil)
        // Every byte at every position: only 0-9 and a-f make a key, and each spells its own nibble.
        let alphabet = Array("0123456789abcdef".utf8)
        let digits = Array(Hex.encode(mac).utf8)
        for position in digits.indices {
            for byte in UInt8.min...UInt8.max {
                var changed = digits
                changed[position] = byte
                let key = changed.withUnsafeBufferPointer { TokenCache.Key(hexDigits: $0) }
                guard let nibble = alphabet.firstIndex(of: byte).map(UInt8.init) else {
                    #expect(key == nil, "byte \(byte) at \(position)")
                    continue
                }
                var expected = mac
                let i = position / 2
                expected[i] = position % 2 == 0 ? (expected[i] & 0x0F) | nibble << 4 : (expected[i] & 0xF0) | nibble
                #expect(key == expected.withUnsafeBytes { TokenCache.Key(mac: $0) }, "byte \(byte) at \(position)")
            }
        }
        for _ in 0..<200 {
            let random = (0..<32).map { _ in UInt8.random(in: 0...255) }
            #expect(TokenCache.Key(hex: Hex.encode(random)) == random.withUnsafeBytes { TokenCache.Key(mac: $0) })
        }
        let cache = TokenCache()
        #expect(cache.lookup(fromMAC).value == nil)
    }
}

/// Storage that runs `interleave` (once) after it has read a token entry and before it returns it:
/// what another thread might do between the two on a busy machine.
private final class InterleavingBackend: PhysicalBackend {
    let inner = InMemoryBackend()
    let interleave = Mutex<(@Sendable () -> Void)?>(nil)
    var typeName: String { inner.typeName }
    var changes: ChangeFeed { inner.changes }
    func get(_ key: String) throws(CofferError) -> [UInt8]? {
        let value = try inner.get(key)
        if key.contains("sys/token/id/"), let run = interleave.withLock({ $0.take() }) { run() }
        return value
    }
    func put(_ key: String, _ value: [UInt8]) throws(CofferError) { try inner.put(key, value) }
    func delete(_ key: String) throws(CofferError) { try inner.delete(key) }
    func list(prefix: String) throws(CofferError) -> [String] { try inner.list(prefix: prefix) }
    func batch(_ operations: [StorageOperation]) throws(CofferError) { try inner.batch(operations) }
    func close() { inner.close() }
}

@Suite struct TokenCacheRaceTests {
    /// A request reads a token's entry from storage (not cached yet); before it caches it, the token
    /// is revoked. The request itself may pass (it read the token before the revocation), but the
    /// older copy must not be cached over the revocation: the next request with the token is refused.
    @Test func aRevocationBetweenAReadAndItsCachingIsNotUndone() throws {
        let storage = InterleavingBackend()
        let (core, result) = try makeCore(storage: storage)
        let root = result.rootToken
        let child = try #require(
            try core.call(.update, "auth/token/create", ["ttl": "1h"], token: root).auth?.clientToken
        )
        core.sealVault()  // empties the token cache, so the next use reads storage
        try core.unseal(key: result.keys[0].unsafeCopy)
        storage.interleave.withLock {
            $0 = { _ = try? core.call(.update, "auth/token/revoke", ["token": .string(child)], token: root) }
        }
        _ = try core.call(.read, "auth/token/lookup-self", token: child)
        #expect(storage.interleave.withLock { $0 == nil }, "the revocation did not run between the read and the cache")
        expectError(.permissionDenied) { try core.call(.read, "auth/token/lookup-self", token: child) }
        expectError(.permissionDenied) { try core.call(.read, "echo/x", token: child) }
    }
}
