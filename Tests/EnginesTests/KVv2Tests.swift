import Coffer
@_exported import CofferTesting
import Foundation
import Synchronization
import Testing

typealias TestClock = ManualClock

/// A dev vault (secret/ as KV v2, root token "root") and a helper that speaks the wire form, so the
/// assertions are on exactly what HTTP and C callers will see.
struct Harness: @unchecked Sendable {  // Vault and TestClock are thread-safe; the struct is immutable

    let vault: Vault
    let unsealKey: SecureBytes
    let clock = TestClock()

    init(storage: VaultConfiguration.Storage = .memory, rootTokenID: String = "root") throws {
        (vault, unsealKey) = try Vault.openDev(storage: storage, rootTokenID: rootTokenID, clock: clock)
    }

    @discardableResult
    func wire(
        _ method: String,
        _ path: String,
        _ body: JSONValue? = nil,
        token: String? = "root"
    ) -> (status: Int, json: JSONValue?) {
        let (status, bytes) = vault.core.handleWire(
            method: method,
            path: path,
            token: token,
            body: body?.serialized() ?? []
        )
        return (status, bytes.map { try! JSONValue.parse($0) })
    }
}

func errors(_ json: JSONValue?) -> [String] { json?["errors"]?.arrayValue?.compactMap(\.stringValue) ?? [] }

@Suite struct KVv2Tests {
    @Test func writeReadVersionsAndShapes() throws {
        let h = try Harness()
        let w1 = h.wire("PUT", "secret/data/app", ["data": ["user": "u", "n": 1]])
        #expect(w1.status == 200)
        let meta1 = try #require(w1.json?["data"]?.objectValue)
        #expect(Set(meta1.keys) == ["created_time", "custom_metadata", "deletion_time", "destroyed", "version"])
        #expect(meta1["version"] == 1 && meta1["deletion_time"] == "" && meta1["custom_metadata"] == .null)
        #expect(
            Set(w1.json?.objectValue?.keys ?? [:].keys) == [
                "request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth",
            ]
        )

        h.clock.advance(seconds: 1)
        #expect(h.wire("POST", "secret/data/app", ["data": ["user": "u2"]]).json?["data"]?["version"] == 2)
        let read = h.wire("GET", "secret/data/app")
        #expect(read.status == 200)
        #expect(read.json?["data"]?["data"] == ["user": "u2"])
        #expect(read.json?["data"]?["metadata"]?["version"] == 2)
        #expect(h.wire("GET", "secret/data/app?version=1").json?["data"]?["data"] == ["user": "u", "n": 1])
        #expect(h.wire("GET", "secret/data/app?version=0").json?["data"]?["metadata"]?["version"] == 2)
        let missing = h.wire("GET", "secret/data/app?version=9")
        #expect(missing.status == 404 && errors(missing.json).isEmpty)
        #expect(h.wire("GET", "secret/data/nope").status == 404)
        let badVersion = h.wire("GET", "secret/data/app?version=abc")
        #expect(badVersion.status == 400 && errors(badVersion.json).first?.contains("version") == true)
    }

    /// A read with no parameters is answered by the engine straight from the pipeline
    /// (`Backend.directRead`); `?version=0` asks for the same version through the path table. Both
    /// must give the same answer in every state a secret can be in.
    @Test func theDirectReadAnswersAsThePathTableDoes() throws {
        let h = try Harness()
        func same(_ path: String, _ expectedStatus: Int, sourceLocation: SourceLocation = #_sourceLocation) {
            func answer(_ query: String) -> (Int, JSONValue?) {
                let (status, json) = h.wire("GET", path + query)
                guard case .object(var body)? = json else { return (status, json) }
                body["request_id"] = nil
                return (status, .object(body))
            }
            let direct = answer("")
            #expect(direct.0 == expectedStatus, sourceLocation: sourceLocation)
            let table = answer("?version=0")
            #expect(direct.0 == table.0 && direct.1 == table.1, "\(path)", sourceLocation: sourceLocation)
        }
        h.wire("PUT", "secret/data/app/db", ["data": ["user": "u1"]])
        same("secret/data/app/db", 200)
        // A new version replaces what the engine cached of the secret.
        h.wire("PUT", "secret/data/app/db", ["data": ["user": "u2"]])
        same("secret/data/app/db", 200)
        #expect(h.wire("GET", "secret/data/app/db").json?["data"]?["data"] == ["user": "u2"])
        h.wire("DELETE", "secret/data/app/db")
        same("secret/data/app/db", 404)
        h.wire("POST", "secret/undelete/app/db", ["versions": [2]])
        same("secret/data/app/db", 200)
        h.wire("POST", "secret/destroy/app/db", ["versions": [2]])
        same("secret/data/app/db", 404)
        same("secret/data/never", 404)
        let folder = h.wire("GET", "secret/data/app/")  // not a secret: the path table says so
        #expect(folder.status == 400 && errors(folder.json) == ["missing secret path after secret/"])
        // No write to a path ending in "/", whatever serves it (OpenBao's rule and text); the mount's
        // own root was once written as a secret with an empty name.
        for (method, path) in [
            ("PUT", "secret/data/"), ("PUT", "secret/data/app/"), ("PATCH", "secret/data/app/"),
            ("POST", "secret/delete/app/"), ("PUT", "sys/policies/acl/p/"),
        ] {
            let refused = h.wire(method, path, ["data": ["user": "u3"]])
            #expect(
                refused.status == 400 && errors(refused.json) == ["cannot write to a path ending in '/'"],
                "\(path)"
            )
        }
        #expect(h.wire("LIST", "secret/metadata/").json?["data"]?["keys"] == ["app/"])
    }

    /// A wire read of the current version writes the values as the JSON the engine stored, unparsed
    /// (`Response.verbatimMember`). Its bytes must be those of the parsed answer (`?version=0`, through
    /// the path table), whatever the values hold. Audited, it still answers unparsed, and its record
    /// hashes each value as the parsed read's does, also when the device copies a body it hashed
    /// before, and not once the values change.
    @Test func theUnparsedReadWritesTheBytesOfTheParsedOne() throws {
        let h = try Harness()
        let values: JSONValue = [
            "zeta": "last", "alpha": ["nested": [1, .number("2.50"), .number("-3e2"), true, false, nil]],
            "quote": "a\"b\\c\n\u{1}é😀", "empty": [:], "list": [], "a}": "{[", "b": "\\", "n": .number("-0.5e-7"),
        ]
        #expect(h.wire("PUT", "secret/data/odd", ["data": values]).status == 200)
        func body(_ path: String) throws -> String {
            let bytes = try #require(h.vault.core.handleWire(method: "GET", path: path, token: "root", body: []).body)
            let text = String(decoding: bytes, as: UTF8.self)
            // The request id is the one field that differs between two answers.
            return text.replacing(#/"request_id":"[^"]*"/#, with: #""request_id":"""#)
        }
        let unparsed = try body("secret/data/odd")
        #expect(unparsed == (try body("secret/data/odd?version=0")))
        #expect(unparsed.contains(#""data":{"data":{"alpha":{"nested":[1,2.50,-3e2,true,false,null]},"a}":"{[","#))
        #expect(try JSONValue.parse(unparsed)["data"]?["data"] == values)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-kv-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = dir.appendingPathComponent("audit.log").path
        #expect(
            h.wire("PUT", "sys/audit/file", ["type": "file", "options": ["file_path": .string(log)]]).status == 204
        )
        func hash(_ value: String) -> JSONValue? {
            h.wire("POST", "sys/audit-hash/file", ["input": .string(value)]).json?["data"]?["hash"]
        }
        func recordedData() throws -> [JSONValue] {
            try h.vault.core.flushAudit()
            return try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map {
                try JSONValue.parse(String($0))
            }.filter { $0["type"] == "response" && $0["request"]?["path"] == "secret/data/odd" }.compactMap {
                $0["response"]?["data"]?["data"]
            }
        }
        // Unparsed twice (the second record copies the body the first hashed), then parsed.
        #expect(try body("secret/data/odd") == unparsed)
        #expect(try body("secret/data/odd") == unparsed)
        #expect(try body("secret/data/odd?version=0") == unparsed)
        let hashed = try recordedData()
        #expect(hashed.count == 3 && Set(hashed).count == 1)
        #expect(hashed.first?["zeta"] == hash("last") && hashed.first?["quote"] == hash("a\"b\\c\n\u{1}é😀"))
        #expect(hashed.first?["alpha"]?["nested"] == [1, .number("2.50"), .number("-3e2"), true, false, nil])

        // New values, the same keys: the record hashes the new ones.
        var changed = try #require(values.objectValue)
        changed["zeta"] = "changed"
        #expect(h.wire("PUT", "secret/data/odd", ["data": .object(changed)]).status == 200)
        _ = try body("secret/data/odd")
        #expect(try recordedData().last?["zeta"] == hash("changed"))
    }

    /// A secret's metadata is written straight to bytes (no dictionaries): they must be the compact,
    /// key-sorted JSON the general writer makes of the same value (so versions sort as "1", "10", "2"),
    /// hold every field, and read back the same after a restart (parsed from storage, not the cache).
    @Test func storedMetadataIsTheSortedJSONAndReadsBackAfterARestart() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("coffer.db")
        var h: Harness? = try Harness(storage: .sqlite(path: path))
        let key = h!.unsealKey
        let custom: JSONValue = ["b": "quote \" and \\", "a": "é\nline", "c\u{1}": ""]
        let settings: JSONValue = [
            "max_versions": 12, "cas_required": false, "delete_version_after": "1h", "custom_metadata": custom,
        ]
        #expect(h!.wire("POST", "secret/metadata/m", settings).status == 204)
        for n in 1...11 { #expect(h!.wire("PUT", "secret/data/m", ["data": ["n": .int(n)]]).status == 200) }
        #expect(h!.wire("POST", "secret/delete/m", ["versions": [3]]).status == 204)
        #expect(h!.wire("POST", "secret/destroy/m", ["versions": [2]]).status == 204)
        let before = try #require(h!.wire("GET", "secret/metadata/m").json?["data"])

        let core = h!.vault.core
        let uuid = try #require(try core.mounts().first { $0.path == "secret/" }?.uuid)
        let raw = try #require(try core.barrier.get("logical/\(uuid)/metadata/m"))
        let stored = try JSONValue.parse(raw)
        #expect(stored.serialized() == raw, "\(String(decoding: raw, as: UTF8.self))")
        #expect(stored["custom_metadata"] == custom)
        #expect(stored["current_version"] == 11 && stored["max_versions"] == 12 && stored["oldest_version"] == 0)
        #expect(stored["delete_version_after"] == 3600 && stored["cas_required"] == false)
        let versions = try #require(stored["versions"]?.objectValue)
        #expect(versions.keys.sorted() == (1...11).map(String.init).sorted())
        #expect(versions["2"]?["destroyed"] == true && versions["3"]?["destroyed"] == false)
        #expect(versions["3"]?["deletion"]?.intValue != nil)
        h!.vault.close()
        h = nil

        let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
        defer { vault.close() }
        try vault.unseal(key: key)
        let (status, bytes) = vault.core.handleWire(method: "GET", path: "secret/metadata/m", token: "root", body: [])
        #expect(status == 200)
        #expect(try bytes.map { try JSONValue.parse($0)["data"] } == before)
    }

    @Test func checkAndSet() throws {
        let h = try Harness()
        #expect(h.wire("PUT", "secret/data/c", ["data": ["a": 1], "options": ["cas": 0]]).status == 200)
        let conflict = h.wire("PUT", "secret/data/c", ["data": ["a": 2], "options": ["cas": 0]])
        #expect(conflict.status == 400)
        #expect(errors(conflict.json) == ["check-and-set parameter did not match the current version"])
        #expect(
            h.wire("PUT", "secret/data/c", ["data": ["a": 2], "options": ["cas": 1]]).json?["data"]?["version"] == 2
        )

        #expect(h.wire("POST", "secret/config", ["cas_required": true]).status == 204)
        let required = h.wire("PUT", "secret/data/c", ["data": ["a": 3]])
        #expect(errors(required.json) == ["check-and-set parameter required for this call"])
        #expect(h.wire("GET", "secret/config").json?["data"]?["cas_required"] == true)
        #expect(h.wire("PUT", "secret/data/c", ["data": ["a": 3], "options": ["cas": 2]]).status == 200)
        // The per-secret flag works the same way.
        h.wire("POST", "secret/config", ["cas_required": false])
        h.wire("POST", "secret/metadata/d", ["cas_required": true])
        #expect(
            errors(h.wire("PUT", "secret/data/d", ["data": ["x": 1]]).json) == [
                "check-and-set parameter required for this call"
            ]
        )
    }

    @Test func softDeleteUndeleteAndDestroy() throws {
        let h = try Harness()
        for i in 1...3 { h.wire("PUT", "secret/data/s", ["data": ["i": .int(i)]]) }
        #expect(h.wire("DELETE", "secret/data/s").status == 204)
        let deleted = h.wire("GET", "secret/data/s")
        #expect(deleted.status == 404, "a deleted version is 404...")
        #expect(deleted.json?["data"]?["data"] == .null)
        #expect(deleted.json?["data"]?["metadata"]?["version"] == 3, "...with its metadata in the body")
        #expect(deleted.json?["data"]?["metadata"]?["deletion_time"]?.stringValue?.isEmpty == false)
        #expect(h.wire("GET", "secret/data/s?version=2").json?["data"]?["data"] == ["i": 2])

        #expect(h.wire("POST", "secret/undelete/s", ["versions": [3]]).status == 204)
        #expect(h.wire("GET", "secret/data/s").json?["data"]?["data"] == ["i": 3])

        #expect(h.wire("POST", "secret/delete/s", ["versions": [1, 2]]).status == 204)
        #expect(h.wire("GET", "secret/data/s?version=1").status == 404)
        #expect(h.wire("POST", "secret/destroy/s", ["versions": [1]]).status == 204)
        let destroyed = h.wire("GET", "secret/data/s?version=1")
        #expect(destroyed.status == 404 && destroyed.json?["data"]?["metadata"]?["destroyed"] == true)
        // A destroyed version cannot be undeleted; a soft-deleted one can.
        h.wire("POST", "secret/undelete/s", ["versions": [1, 2]])
        #expect(h.wire("GET", "secret/data/s?version=1").status == 404)
        #expect(h.wire("GET", "secret/data/s?version=2").json?["data"]?["data"] == ["i": 2])
        #expect(errors(h.wire("POST", "secret/destroy/s", [:]).json) == ["No version number provided"])

        let metadata = try #require(h.wire("GET", "secret/metadata/s").json?["data"])
        #expect(metadata["versions"]?["1"]?["destroyed"] == true)
        #expect(metadata["current_version"] == 3 && metadata["oldest_version"] == 0)
        #expect(h.wire("DELETE", "secret/metadata/s").status == 204)
        #expect(h.wire("GET", "secret/data/s?version=2").status == 404)
        #expect(h.wire("GET", "secret/metadata/s").status == 404)
    }

    @Test func maxVersionsTrimsTheOldest() throws {
        let h = try Harness()
        #expect(
            h.wire(
                "POST",
                "secret/metadata/m",
                ["max_versions": 2, "custom_metadata": ["owner": "team-a"], "delete_version_after": "1h"]
            ).status == 204
        )
        for i in 1...4 { h.wire("PUT", "secret/data/m", ["data": ["i": .int(i)]]) }
        let meta = try #require(h.wire("GET", "secret/metadata/m").json?["data"])
        #expect(meta["versions"]?.objectValue?.keys.sorted() == ["3", "4"])
        #expect(meta["oldest_version"] == 3 && meta["current_version"] == 4 && meta["max_versions"] == 2)
        #expect(meta["custom_metadata"] == ["owner": "team-a"])
        #expect(meta["delete_version_after"] == "1h0m0s")
        #expect(h.wire("GET", "secret/data/m?version=1").status == 404)
        #expect(h.wire("GET", "secret/data/m").json?["data"]?["metadata"]?["custom_metadata"] == ["owner": "team-a"])

        // delete_version_after: the version is readable for an hour, then reads as deleted.
        h.clock.advance(seconds: 3599)
        #expect(h.wire("GET", "secret/data/m").status == 200)
        h.clock.advance(seconds: 2)
        #expect(h.wire("GET", "secret/data/m").status == 404)

        // The mount default applies when the secret has none.
        h.wire("POST", "secret/config", ["max_versions": 3])
        for i in 1...5 { h.wire("PUT", "secret/data/n", ["data": ["i": .int(i)]]) }
        #expect(h.wire("GET", "secret/metadata/n").json?["data"]?["versions"]?.objectValue?.count == 3)
    }

    @Test func patchListAndSubkeys() throws {
        let h = try Harness()
        h.wire("PUT", "secret/data/p", ["data": ["a": 1, "b": ["c": 2, "d": 3], "e": "x"]])
        let patched = h.wire("PATCH", "secret/data/p", ["data": ["a": .null, "b": ["c": 20], "f": true]])
        #expect(patched.status == 200 && patched.json?["data"]?["version"] == 2)
        #expect(
            h.wire("GET", "secret/data/p").json?["data"]?["data"] == ["b": ["c": 20, "d": 3], "e": "x", "f": true]
        )
        #expect(h.wire("PATCH", "secret/data/none", ["data": ["a": 1]]).status == 404)

        let sub = h.wire("GET", "secret/subkeys/p")
        #expect(sub.json?["data"]?["subkeys"] == ["b": ["c": nil, "d": nil], "e": nil, "f": nil])
        #expect(h.wire("GET", "secret/subkeys/p?depth=1").json?["data"]?["subkeys"] == ["b": nil, "e": nil, "f": nil])

        h.wire("PUT", "secret/data/dir/one", ["data": ["x": 1]])
        h.wire("PUT", "secret/data/dir/two/deep", ["data": ["x": 1]])
        #expect(h.wire("LIST", "secret/metadata/dir").json?["data"]?["keys"] == ["one", "two/"])
        #expect(h.wire("GET", "secret/metadata/?list=true").json?["data"]?["keys"] == ["dir/", "p"])
        #expect(h.wire("LIST", "secret/metadata/empty/").status == 404)
    }

    @Test func badInputGetsClearErrorsAndChangesNothing() throws {
        let h = try Harness()
        h.wire("PUT", "secret/data/keep", ["data": ["v": "original"]])
        #expect(errors(h.wire("PUT", "secret/data/keep", ["nodata": 1]).json) == ["no data provided"])
        #expect(
            errors(h.wire("PUT", "secret/data/keep", ["data": "string"]).json).first?.contains("must be an object")
                == true
        )
        let (status, body) = h.vault.core.handleWire(
            method: "PUT",
            path: "secret/data/keep",
            token: "root",
            body: Array("{not json".utf8)
        )
        #expect(status == 400 && String(decoding: body ?? [], as: UTF8.self).contains("failed to parse JSON input"))
        let array = h.vault.core.handleWire(
            method: "PUT",
            path: "secret/data/keep",
            token: "root",
            body: Array("[1,2]".utf8)
        )
        #expect(array.status == 400)
        let huge = String(repeating: "x", count: 1_100_000)
        let tooBig = h.wire("PUT", "secret/data/keep", ["data": ["v": .string(huge)]])
        #expect(tooBig.status == 400 && errors(tooBig.json).first?.contains("limit") == true)
        #expect(h.wire("PUT", "secret/data/keep", ["data": ["v": 1], "options": ["cas": "x"]]).status == 400)
        #expect(h.wire("GET", "secret/data/keep").json?["data"]?["data"] == ["v": "original"])
        #expect(h.wire("GET", "secret/metadata/keep").json?["data"]?["current_version"] == 1)
        #expect(h.wire("FOO", "secret/data/keep").status == 405)
    }

    @Test func createVersusUpdateFollowsTheExistenceCheck() throws {
        let h = try Harness()
        h.wire(
            "PUT",
            "sys/policies/acl/create-only",
            ["policy": #"path "secret/data/*" { capabilities = ["create"] }"#]
        )
        let token = try #require(
            h.wire("POST", "auth/token/create", ["policies": ["create-only"]]).json?["auth"]?["client_token"]?
                .stringValue
        )
        #expect(
            h.wire("PUT", "secret/data/new", ["data": ["a": 1]], token: token).status == 200,
            "a new secret is a create"
        )
        let update = h.wire("PUT", "secret/data/new", ["data": ["a": 2]], token: token)
        #expect(update.status == 403 && errors(update.json) == ["permission denied"], "an existing one is an update")
        #expect(h.wire("GET", "secret/data/new", token: token).status == 403)
    }

    @Test func concurrentWritersToOneSecretNeverShareAVersion() async throws {
        let h = try Harness()
        h.wire("POST", "secret/metadata/busy", ["max_versions": 1000])
        let versions = await withTaskGroup(of: [Int].self) { group in
            for t in 0..<8 {
                group.addTask {
                    (0..<25).map { i in
                        h.wire("PUT", "secret/data/busy", ["data": ["t": .int(t), "i": .int(i)]]).json?["data"]?[
                            "version"
                        ]?.intValue ?? -1
                    }
                }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(versions.sorted() == Array(1...200), "every write got its own version")
        #expect(h.wire("GET", "secret/metadata/busy").json?["data"]?["current_version"] == 200)
    }

    @Test func sealedVaultAnswers503WithTheTextClientsMatch() throws {
        let h = try Harness()
        h.vault.seal()
        let sealed = h.wire("GET", "secret/data/x")
        #expect(sealed.status == 503 && errors(sealed.json) == ["Vault is sealed"])
        #expect(h.wire("GET", "sys/seal-status").json?["sealed"] == true)
    }
}

@Suite struct KVv1Tests {
    @Test func putGetListDelete() throws {
        let h = try Harness()
        #expect(h.wire("POST", "sys/mounts/kv1", ["type": "kv"]).status == 204)
        #expect(h.wire("PUT", "kv1/foo", ["a": "b", "n": 2]).status == 204)
        h.wire("PUT", "kv1/dir/bar", ["x": "y"])
        let read = h.wire("GET", "kv1/foo")
        #expect(read.json?["data"] == ["a": "b", "n": 2])
        #expect(read.json?["lease_duration"] == 2_764_800)
        #expect(h.wire("LIST", "kv1/").json?["data"]?["keys"] == ["dir/", "foo"])
        #expect(errors(h.wire("PUT", "kv1/empty", [:]).json) == ["missing data fields"])
        #expect(h.wire("DELETE", "kv1/foo").status == 204)
        #expect(h.wire("GET", "kv1/foo").status == 404)
        #expect(h.wire("PATCH", "kv1/dir/bar", ["x": "z"]).status == 405)
    }
}

@Suite struct SwiftAPITests {
    @Test func quickStartFlowOnSQLiteSurvivesARestart() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-api-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("coffer.db").path
        let result: InitResult
        do {
            let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
            result = try vault.initialize(shares: 5, threshold: 3)
            _ = try vault.handle(
                Request(.update, "sys/mounts/secret", data: ["type": "kv-v2"], token: result.rootToken)
            )
            let kv = vault.kv(token: result.rootToken)
            #expect(try kv.put("app/db", ["password": "s3cret"]) == 1)
            #expect(try kv.put("app/db", ["password": "rotated"], cas: 1) == 2)
            #expect(throws: CofferError.self) { try kv.put("app/db", ["password": "lost"], cas: 1) }
            vault.close()
        }
        let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
        #expect(try vault.status().sealed)
        for key in result.base64Keys.suffix(3) { try vault.unseal(key: key) }
        let kv = vault.kv(token: result.rootToken)
        let secret = try #require(try kv.get("app/db"))
        #expect(secret.data == ["password": "rotated"] && secret.version == 2)
        #expect(try kv.get("app/db", version: 1)?.data == ["password": "s3cret"])
        #expect(try kv.list("app/") == ["db"])
        try kv.delete("app/db")
        #expect(try kv.get("app/db") == nil)
        vault.close()
    }

    @Test func openingSomethingThatIsNotACofferFails() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("not-coffer-\(UUID().uuidString)").path
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect {
            _ = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
        } throws: { error in
            (error as? CofferError)?.code == .corruptDatabase
        }
    }
}
