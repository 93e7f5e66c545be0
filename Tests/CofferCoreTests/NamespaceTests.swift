import Foundation
import Testing

/// Namespaces (issue 19, docs/namespaces.md): the API, addressing, isolation, the API lock, and each
/// namespace's own keyring.
@Suite struct NamespaceTests {
    let core: Core
    let root: String

    init() throws {
        let result: InitResult
        (core, result) = try makeCore()
        root = result.rootToken
    }

    /// Sends `path` in namespace `ns` (the X-Vault-Namespace header).
    @discardableResult
    func call(
        _ op: Request.Operation,
        _ path: String,
        _ data: [String: JSONValue] = [:],
        ns: String = "",
        token: String? = nil
    ) throws -> Response {
        try core.handle(Request(op, path, data: data, token: token ?? root, namespace: ns))
    }

    @Test func createListReadPatchDelete() throws {
        let created = try call(.update, "sys/namespaces/team-a", ["custom_metadata": ["owner": "alice"]])
        #expect(created.data?["path"] == "team-a/")
        #expect(created.data?["id"]?.stringValue?.count == 6)
        #expect(created.data?["custom_metadata"] == ["owner": "alice"])
        try call(.update, "sys/namespaces/team-b")
        try call(.update, "sys/namespaces/child", ns: "team-a")
        let listed = try call(.list, "sys/namespaces")
        #expect(listed.data?["keys"] == ["team-a/", "team-b/"])  // direct children only
        #expect(try call(.list, "sys/namespaces", ns: "team-a").data?["keys"] == ["child/"])
        #expect(try call(.read, "sys/namespaces/child", ns: "team-a").data?["path"] == "team-a/child/")
        #expect(try call(.read, "team-a/sys/namespaces/child").data?["path"] == "team-a/child/")

        let patched = try call(.patch, "sys/namespaces/team-a", ["custom_metadata": ["owner": .null, "tier": "gold"]])
        #expect(patched.data?["custom_metadata"] == ["tier": "gold"])

        expectError(.invalidArgument, containing: "child namespaces") { try call(.delete, "sys/namespaces/team-a") }
        let deleted = try call(.delete, "sys/namespaces/child", ns: "team-a")
        #expect(deleted.data?["status"] == "in-progress")
        #expect(try call(.read, "sys/namespaces/child", ns: "team-a").outcome == .notFound)
        try call(.delete, "sys/namespaces/team-a")
        #expect(try call(.list, "sys/namespaces").data?["keys"] == ["team-b/"])
    }

    @Test func badNamesAreRefusedWithNothingMade() throws {
        for name in ["sys", "root", "auth", "cubbyhole", "identity", "audit", "ROOT"] {
            expectError(.invalidArgument, containing: "reserved path") { try call(.update, "sys/namespaces/\(name)") }
        }
        expectError(.invalidArgument, containing: "cannot contain /") { try call(.update, "sys/namespaces/a/b") }
        expectError(.invalidArgument, containing: "may contain only") { try call(.update, "sys/namespaces/a b") }
        expectError(.invalidArgument, containing: "limit is 64") {
            try call(.update, "sys/namespaces/" + String(repeating: "n", count: 65))
        }
        expectError(.invalidArgument, containing: "must be a string") {
            try call(.update, "sys/namespaces/ok", ["custom_metadata": ["n": 1]])
        }
        #expect(try call(.list, "sys/namespaces").outcome == .notFound)
        // A mount and a namespace cannot share a path.
        expectError(.invalidArgument, containing: "a mount is at echo/") { try call(.update, "sys/namespaces/echo") }
        try call(.update, "sys/namespaces/ns1")
        expectError(.invalidArgument, containing: "namespace") { try call(.update, "sys/mounts/ns1", ["type": "echo"]) }
    }

    @Test func headerPathPrefixAndBothAddressTheSameNamespace() throws {
        try call(.update, "sys/namespaces/team-b")
        try call(.update, "sys/namespaces/child", ns: "team-b")
        try call(.update, "sys/mounts/kv", ["type": "echo"], ns: "team-b/child")
        try call(.update, "kv/x", ["v": "1"], ns: "team-b/child")
        #expect(try call(.read, "team-b/child/kv/x").data?["v"] == "1")
        #expect(try call(.read, "child/kv/x", ns: "team-b").data?["v"] == "1")
        #expect(try call(.read, "kv/x", ns: "/team-b/child/").data?["v"] == "1")
        #expect(try call(.read, "kv/x", ns: "root/team-b/child").data?["v"] == "1")
        // Not at root, nor in the parent.
        expectError(.notFound) { try call(.read, "kv/x") }
        expectError(.notFound) { try call(.read, "kv/x", ns: "team-b") }
        expectError(.notFound, containing: "namespace not found") { try call(.read, "kv/x", ns: "team-x") }
        expectError(.notFound, containing: "namespace not found") { try call(.read, "kv/x", ns: "team-b/chil") }
        // A namespace deleted is no longer found by its header.
        try call(.delete, "sys/mounts/kv", ns: "team-b/child")
        try call(.delete, "sys/namespaces/child", ns: "team-b")
        expectError(.notFound, containing: "namespace not found") { try call(.read, "kv/x", ns: "team-b/child") }
    }

    @Test func tenantsAreIsolated() throws {
        for name in ["team-a", "team-b"] {
            try call(.update, "sys/namespaces/\(name)")
            try call(.update, "sys/mounts/kv", ["type": "echo"], ns: name)
            try call(.update, "kv/db", ["password": .string("\(name)-secret")], ns: name)
            try call(
                .update,
                "sys/policies/acl/reader",
                ["policy": #"path "kv/*" { capabilities = ["read", "list"] }"#],
                ns: name
            )
        }
        // The policy lives in the namespace: invisible at root.
        #expect(try call(.read, "sys/policies/acl/reader", ns: "team-a").data?["name"] == "reader")
        expectError(.notFound) { try call(.read, "sys/policies/acl/reader") }

        let created = try call(.update, "auth/token/create", ["policies": ["reader"]], ns: "team-a")
        let token = created.auth!.clientToken
        let id = try call(.read, "sys/namespaces/team-a").data?["id"]?.stringValue ?? ""
        #expect(token.hasSuffix("." + id) && created.auth!.accessor.hasSuffix("." + id))

        #expect(try call(.read, "kv/db", ns: "team-a", token: token).data?["password"] == "team-a-secret")
        #expect(try call(.read, "team-a/kv/db", token: token).data?["password"] == "team-a-secret")
        expectError(.permissionDenied) { try call(.update, "kv/db", ["x": "y"], ns: "team-a", token: token) }
        // Tenant B's secret, mounts and policies: denied, through the header and the prefix alike.
        expectError(.permissionDenied) { try call(.read, "kv/db", ns: "team-b", token: token) }
        expectError(.permissionDenied) { try call(.read, "team-b/kv/db", token: token) }
        expectError(.permissionDenied) { try call(.read, "sys/mounts", ns: "team-b", token: token) }
        expectError(.permissionDenied) { try call(.list, "sys/policies/acl", ns: "team-b", token: token) }
        expectError(.permissionDenied) { try call(.read, "echo/anything", token: token) }
        // Even asking what it could do in B is denied.
        expectError(.permissionDenied) {
            try call(.update, "sys/capabilities-self", ["paths": ["kv/db"]], ns: "team-b", token: token)
        }
        #expect(
            try call(.update, "sys/capabilities-self", ["paths": ["kv/db"]], ns: "team-a", token: token)
                .data?["kv/db"] == ["list", "read"]
        )

        // Its own lookup finds the namespace by the token's suffix, without a header.
        let lookup = try call(.read, "auth/token/lookup-self", token: token)
        #expect(lookup.data?["namespace_path"] == "team-a/")
        // From A, tokens of the root namespace are not there to see or revoke.
        expectError(.permissionDenied) {
            try call(.update, "auth/token/lookup", ["token": .string(root)], ns: "team-a")
        }
        try call(.update, "auth/token/revoke", ["token": .string(root)], ns: "team-a")
        #expect(try call(.read, "auth/token/lookup-self").data?["policies"] == ["root"])
        let accessors = try call(.list, "auth/token/accessors/", ns: "team-a").data?["keys"]?.arrayValue ?? []
        #expect(accessors == [.string(created.auth!.accessor)])
    }

    @Test func aParentTokenActsInChildrenWithPathsRelativeToItsNamespace() throws {
        try call(.update, "sys/namespaces/org")
        try call(.update, "sys/namespaces/dev", ns: "org")
        try call(.update, "sys/mounts/kv", ["type": "echo"], ns: "org/dev")
        try call(.update, "kv/x", ["v": "1"], ns: "org/dev")
        try call(
            .update,
            "sys/policies/acl/devs",
            ["policy": #"path "dev/kv/*" { capabilities = ["read"] }"#],
            ns: "org"
        )
        let token = try call(.update, "auth/token/create", ["policies": ["devs"]], ns: "org").auth!.clientToken
        #expect(try call(.read, "kv/x", ns: "org/dev", token: token).data?["v"] == "1")
        #expect(try call(.read, "dev/kv/x", ns: "org", token: token).data?["v"] == "1")
        // A token made in the child cannot act in the parent.
        try call(.update, "sys/policies/acl/all", ["policy": #"path "*" { capabilities = ["read"] }"#], ns: "org/dev")
        let child = try call(.update, "auth/token/create", ["policies": ["all"]], ns: "org/dev").auth!.clientToken
        expectError(.permissionDenied) { try call(.read, "sys/namespaces/dev", ns: "org", token: child) }
    }

    @Test func vaultWidePathsAreNotServedInANamespace() throws {
        try call(.update, "sys/namespaces/t")
        for path in ["sys/seal", "sys/audit", "sys/raw/core/keyring", "sys/rekey/init", "sys/metrics"] {
            expectError(.notFound, containing: "unsupported path") { try call(.read, path, ns: "t") }
        }
    }

    @Test func eachNamespaceHasItsOwnIdentityStore() throws {
        try call(.update, "sys/namespaces/t")
        let made = try call(.update, "identity/entity", ["name": "alice", "policies": ["p"]], ns: "t")
        let id = made.data?["id"]?.stringValue ?? ""
        #expect(try call(.read, "identity/entity/id/\(id)", ns: "t").data?["name"] == "alice")
        #expect(try call(.read, "identity/entity/name/alice", ns: "t").data?["id"]?.stringValue == id)
        // Not at root, and root's name is free.
        #expect(try call(.read, "identity/entity/id/\(id)").outcome == .notFound)
        let rootAlice = try call(.update, "identity/entity", ["name": "alice"]).data?["id"]?.stringValue
        #expect(rootAlice != nil && rootAlice != id)
        #expect(try call(.list, "identity/entity/id", ns: "t").data?["keys"] == [.string(id)])
    }

    @Test func apiLockRefusesRequestsUntilUnlocked() throws {
        try call(.update, "sys/namespaces/t")
        try call(.update, "sys/namespaces/inner", ns: "t")
        let key = try call(.update, "sys/namespaces/api-lock/lock", ns: "t").data?["unlock_key"]?.stringValue ?? ""
        #expect(key.count == 24)
        #expect(try call(.read, "sys/namespaces/t").data?["locked"] == true)
        expectError(.unavailable, containing: "\"t/\" must be unlocked") { try call(.read, "sys/mounts", ns: "t") }
        expectError(.unavailable) { try call(.read, "sys/mounts", ns: "t/inner") }
        expectError(.invalidArgument, containing: "is already locked") {
            try call(.update, "sys/namespaces/api-lock/lock/t")
        }
        expectError(.invalidArgument, containing: "incorrect unlock key") {
            try call(.update, "sys/namespaces/api-lock/unlock", ["unlock_key": "nope"], ns: "t")
        }
        try call(.update, "sys/namespaces/api-lock/unlock", ["unlock_key": .string(key)], ns: "t")
        try call(.read, "sys/mounts", ns: "t")
        // From the parent, with sudo, no key needed.
        try call(.update, "sys/namespaces/api-lock/lock", ns: "t")
        let unlocked = try call(.update, "sys/namespaces/api-lock/unlock/t")
        #expect(unlocked.warnings == ["Namespace unlocked using sudo capabilities"])
        try call(.read, "sys/mounts", ns: "t")
    }

    @Test func namespacesSurviveResealAndReopen() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        var unsealKey: [UInt8] = []
        var token = ""
        do {
            let (core, result) = try makeCore(storage: try SQLiteBackend(path: path))
            unsealKey = result.keys[0].unsafeCopy
            token = result.rootToken
            try core.handle(Request(.update, "sys/namespaces/keep", token: token))
            try core.handle(Request(.update, "sys/mounts/kv", data: ["type": "echo"], token: token, namespace: "keep"))
            try core.handle(Request(.update, "keep/kv/x", data: ["v": "1"], token: token))
            core.sealVault()
            expectError(.sealed) { try core.handle(Request(.read, "kv/x", token: token, namespace: "keep")) }
            try core.unseal(key: unsealKey)
            #expect(try core.handle(Request(.read, "keep/kv/x", token: token)).data?["v"] == "1")
        }
        let reopened = try Core(storage: try SQLiteBackend(path: path), engines: testRegistry())
        try reopened.unseal(key: unsealKey)
        #expect(try reopened.handle(Request(.read, "keep/kv/x", token: token)).data?["v"] == "1")
        #expect(try reopened.handle(Request(.read, "sys/namespaces/keep", token: token)).data?["path"] == "keep/")
    }

    /// The issue's test: a namespace deleted and its rows then read raw from SQLite with the vault's
    /// keyring: not decryptable.
    @Test func deletingANamespaceCryptoShredsItsRows() throws {
        let dir = TemporaryDirectory()
        let storage = try SQLiteBackend(path: dir.file("coffer.db"))
        let (core, result) = try makeCore(storage: storage)
        let token = result.rootToken
        try core.handle(Request(.update, "sys/namespaces/gone", token: token))
        try core.handle(Request(.update, "sys/mounts/kv", data: ["type": "echo"], token: token, namespace: "gone"))
        try core.handle(Request(.update, "gone/kv/card", data: ["number": "4111111111111111"], token: token))
        let tenantToken = try core.handle(Request(.update, "gone/auth/token/create", data: [:], token: token)).auth!
            .clientToken
        let uuid = try core.handle(Request(.read, "sys/namespaces/gone", token: token)).data?["uuid"]?.stringValue ?? ""

        // A copy of the namespace's rows, as a backup would hold them.
        let keys = try storage.listRecursive(prefix: "namespaces/\(uuid)/")
        #expect(keys.contains { $0.hasSuffix("/card") })
        var backup: [(String, [UInt8])] = []
        for key in keys { backup.append((key, try #require(try storage.get(key)))) }
        // While the namespace exists, its rows are under its keys, not the vault's.
        for (key, blob) in backup {
            expectError(.integrity) { _ = try core.barrier.openWithVaultKeyring(blob, path: key) }
        }
        #expect(try core.barrier.get(backup.first { $0.0.hasSuffix("/card") }!.0) != nil)

        #expect(core.barrier.meters.allRoutes().contains { $0.prefix == "gone/kv/" })
        try core.handle(Request(.delete, "sys/namespaces/gone", token: token))
        #expect(try storage.listRecursive(prefix: "namespaces/\(uuid)/").isEmpty)
        #expect(!core.barrier.meters.allRoutes().contains { $0.prefix.hasPrefix("gone/") })
        #expect(try storage.get("core/namespace-keyring/\(uuid)") == nil)
        expectError(.permissionDenied) { try core.handle(Request(.read, "auth/token/lookup-self", token: tenantToken)) }

        // Put back from the backup: nothing the vault holds decrypts them.
        for (key, blob) in backup { try storage.put(key, blob) }
        for (key, blob) in backup {
            expectError(.integrity) { _ = try core.barrier.openWithVaultKeyring(blob, path: key) }
            expectError(.integrity, containing: "not loaded") { _ = try core.barrier.get(key) }
        }
        // A namespace made again with the same name is a new one, with new keys.
        try core.handle(Request(.update, "sys/namespaces/gone", token: token))
        let again = try core.handle(Request(.read, "sys/namespaces/gone", token: token)).data?["uuid"]?.stringValue
        #expect(again != uuid)
        expectError(.notFound) { try core.handle(Request(.read, "gone/kv/card", token: token)) }
    }

    @Test func aNamespaceKeyringRotatesOnItsOwn() throws {
        try call(.update, "sys/namespaces/r")
        try call(.update, "sys/mounts/kv", ["type": "echo"], ns: "r")
        try call(.update, "kv/old", ["v": "1"], ns: "r")
        #expect(try call(.read, "sys/key-status", ns: "r").data?["term"] == 1)
        let rootTerm = try call(.read, "sys/key-status").data?["term"]
        try call(.update, "sys/rotate", ns: "r")
        #expect(try call(.read, "sys/key-status", ns: "r").data?["term"] == 2)
        #expect(try call(.read, "sys/key-status").data?["term"] == rootTerm)
        try call(.update, "kv/new", ["v": "2"], ns: "r")
        #expect(try call(.read, "kv/old", ns: "r").data?["v"] == "1")
        #expect(try call(.read, "kv/new", ns: "r").data?["v"] == "2")
    }

    /// A namespace keyring counts its encryptions across reopening, as the vault's does (saved every
    /// 65,536, reloaded with that margin), so its rotation bound holds over restarts.
    @Test func aNamespaceKeyringsEncryptionCountSurvivesResealing() throws {
        let (core, result) = try makeCore()
        try core.handle(Request(.update, "sys/namespaces/u", token: result.rootToken))
        let uuid =
            try core.handle(Request(.read, "sys/namespaces/u", token: result.rootToken)).data?["uuid"]?
            .stringValue ?? ""
        for i in 0..<(1 << 16) { try core.barrier.put("namespaces/\(uuid)/bench/\(i % 8)", [1]) }
        let before = try core.barrier.namespaceKeyStatus(uuid).encryptions
        #expect(before >= 1 << 16)
        core.sealVault()
        try core.unseal(key: result.keys[0].unsafeCopy)
        #expect(try core.barrier.namespaceKeyStatus(uuid).encryptions >= before)
    }
}
