import Foundation
import Synchronization
import Testing

/// The engine framework: path patterns, fields, the auth mount table with logins, the built-in
/// cubbyhole, and caches that see changes made beneath them.
@Suite struct FrameworkTests {
    @Test func patternsMatchWithoutRegexes() {
        // Each case both ways: the pattern's own match, and a table routing through it (which first
        // checks a leading literal segment on the bytes); the two must agree.
        func match(_ pattern: String, _ path: String) -> [String: String]? {
            let p = PathPattern(pattern)
            var captures = Captures()
            let matched = p.match(Substring(path), into: &captures)
            let routed = PathPattern.firstMatch(in: [p], path)
            #expect((routed != nil) == matched, "\(pattern) against \(path)")
            guard matched else { return nil }
            var out: [String: String] = [:]
            for name in p.captureNames {
                if let v = captures[name] { out[name] = v }
                #expect(routed?.1[name] == captures[name])
            }
            return out
        }
        #expect(match("config", "config") == [:])
        #expect(match("config", "configs") == nil)
        #expect(match("config", "config/") == nil)
        #expect(match("keys/", "keys") == [:])
        #expect(match("keys/", "keys/") == [:])
        #expect(match("keys/{name}", "keys/k1") == ["name": "k1"])
        #expect(match("keys/{name}", "keys/") == nil)
        #expect(match("keys/{name}", "keys/a/b") == nil)
        #expect(match("keys/{name}/rotate", "keys/k/rotate") == ["name": "k"])
        #expect(match("data/{path+}", "data/a/b/c") == ["path": "a/b/c"])
        #expect(match("data/{path+}", "data") == nil)
        #expect(match("data/{path*}", "data") == ["path": ""])
        #expect(match("data/{path*}", "data/") == ["path": ""])
        #expect(match("data/{path*}", "data/folder/") == ["path": "folder/"])
        #expect(match("data/{path*}", "datax") == nil)
        #expect(match("mounts/{path+}/tune", "mounts/a/b/tune") == ["path": "a/b"])
        #expect(match("mounts/{path+}/tune", "mounts/tune") == nil)
        #expect(match("hmac/{name}/{algorithm?}", "hmac/k") == ["name": "k"])
        #expect(match("hmac/{name}/{algorithm?}", "hmac/k/sha2-512") == ["name": "k", "algorithm": "sha2-512"])
        #expect(match("hmac/{name}/{algorithm?}", "hmac/k/a/b") == nil)
        #expect(match("{path*}", "") == ["path": ""])
        #expect(match("config", "conf") == nil)
        #expect(match("config", "") == nil)
        #expect(match("keys/", "key") == nil)
        #expect(PathPattern("a/{x+}/{y}").problem != nil)
        #expect(PathPattern("a/{x?}/b").problem != nil)
        #expect(PathPattern("a//b").problem != nil)
    }

    /// A table serves a path by its first matching pattern, in declaration order: the same answer as
    /// trying every pattern's full match in turn, for every path made of the tables' own words.
    /// Vault's special-path globs: a literal path, a prefix ending in `*`, and `+` for one whole segment.
    @Test func specialPathGlobs() {
        let pki = [
            "cert/*", "ca", "crl/pem", "issuer/+/pem", "issuer/+/crl/der", "issuer/+/x*", "+/only", "keys/+/*",
        ]
        let cases: [(String, Bool)] = [
            ("cert/", true), ("cert/1a:2b", true), ("certs", false), ("ca", true), ("ca/pem", false), ("crl/pem", true),
            ("issuer/abc/pem", true), ("issuer//pem", false), ("issuer/abc", false), ("issuer/abc/pem/more", false),
            ("issuer/abc/crl/der", true), ("issuer/abc/crl", false), ("issuer/a/b/crl/der", false),
            ("issuer/abc/xyz", true), ("issuer/abc/y", false), ("issuer/abc/x", true), ("a/only", true), ("a/b", false),
            ("/only", false), ("a/only/c", false), ("keys/k/", true), ("keys/k/anything/else", true), ("keys/k", false),
            ("", false), ("issue/web", false),
        ]
        for (path, expected) in cases {
            #expect(SpecialPaths.matches(pki, path) == expected, "\(path)")
        }
        #expect(!SpecialPaths.matches([], "ca"))
        #expect(
            SpecialPaths.matches(["+"], "x") && !SpecialPaths.matches(["+"], "") && !SpecialPaths.matches(["+"], "x/y")
        )
    }

    @Test func aTableRoutesToTheFirstPatternThatMatches() {
        let patterns = [
            "keys/", "keys/{name}", "keys/{name}/rotate", "encrypt/{name}", "export/{kind}/{name}/{version?}",
            "data/{path*}", "random", "random/{first}", "{name}/tune", "{path+}", "",
        ].map(PathPattern.init)
        let words = ["keys", "key", "encrypt", "export", "data", "random", "tune", "k", "a-b", ""]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let count = Int.random(in: 1...4, using: &generator)
            var path = (0..<count).map { _ in words.randomElement(using: &generator)! }.joined(separator: "/")
            if Bool.random(using: &generator) { path += "/" }
            var captures = Captures()
            let linear = patterns.indices.first { patterns[$0].match(Substring(path), into: &captures) }
            #expect(PathPattern.firstMatch(in: patterns, path)?.0 == linear, "path \(path)")
        }
    }

    /// Checking a request's fields looks at the fields it names and the required ones, not at every
    /// declared field: it must answer exactly as the plain walk over the declaration in order does (the
    /// same values, the same ignored names, the same first error), for random declarations and requests.
    @Test func checkingFieldsByTheNamesGivenAnswersAsTheWalkOverTheDeclaration() {
        let names = ["a", "b", "plaintext", "ttl", "n", "zz"]
        let kinds: [Field.Kind] = [.string, .int(0...10), .bool, .bytes, .any, .stringList, .duration(maximum: 100)]
        let values: [JSONValue] = [
            .null, .string("x"), .string("7"), .int(5), .int(50), .bool(true), .array([.string("s")]),
        ]
        /// The declaration walked in order, as the check did before it looked at names first.
        func reference(
            _ data: FieldData,
            _ fields: [Field],
            arbitrary: Bool
        ) -> Result<([String: FieldValue], [String]), CofferError> {
            var checked: [String: FieldValue] = [:]
            for field in fields {
                if case .bytes = field.kind, let bytes = data.rawBytes[field.name] {
                    checked[field.name] = .bytes(bytes)
                    continue
                }
                guard let value = data.raw[field.name], value != .null else {
                    if field.required { return .failure(CofferError.invalid("missing \(field.name)")) }
                    continue
                }
                do { checked[field.name] = try field.convert(value) } catch { return .failure(error) }
            }
            let ignored = arbitrary ? [] : data.raw.keys.filter { key in !fields.contains { $0.name == key } }.sorted()
            return .success((checked, ignored))
        }
        var generator = SystemRandomNumberGenerator()
        var errors = 0
        for _ in 0..<4000 {
            let fields = names.shuffled(using: &generator).prefix(Int.random(in: 0...5, using: &generator)).map {
                Field(
                    $0,
                    kinds.randomElement(using: &generator)!,
                    required: Int.random(in: 0..<4, using: &generator) == 0
                )
            }
            var raw: [String: JSONValue] = [:]
            for name in names where Bool.random(using: &generator) {
                raw[name] = values.randomElement(using: &generator)!
            }
            var rawBytes: [String: [UInt8]] = [:]
            for name in names where Int.random(in: 0..<4, using: &generator) == 0 { rawBytes[name] = [1, 2] }
            let arbitrary = Int.random(in: 0..<4, using: &generator) == 0
            var data = FieldData(raw, rawBytes: rawBytes)
            let expected = reference(data, fields, arbitrary: arbitrary)
            do {
                let ignored = try data.check(against: fields, arbitrary: arbitrary)
                guard case .success(let (checked, referenceIgnored)) = expected else {
                    Issue.record("no error where the walk fails: \(fields.map(\.name)) \(raw)")
                    continue
                }
                #expect(ignored == referenceIgnored)
                for field in fields { #expect(data.value(field.name) == checked[field.name], "\(field.name)") }
            } catch {
                errors += 1
                guard case .failure(let referenceError) = expected else {
                    Issue.record("an error where the walk succeeds: \(error.message)")
                    continue
                }
                #expect(error.message == referenceError.message)
            }
        }
        #expect(errors > 100)  // the requests exercise refusals, not only successes
    }

    @Test func fieldsAreCheckedAndUndeclaredOnesNamedInAWarning() throws {
        let (core, result) = try makeCore()
        // Token creation declares `ttl` as a duration: the framework refuses what does not fit, naming it.
        expectError(.invalidArgument, containing: "ttl must be a duration from 0 to 3153600000 seconds") {
            try core.call(.update, "auth/token/create", ["ttl": ["1h"]], token: result.rootToken)
        }
        // An item of a list is named by its index and what an item must be.
        expectError(.invalidArgument, containing: "policies[1] must be a string") {
            try core.call(.update, "auth/token/create", ["policies": ["default", ["x"]]], token: result.rootToken)
        }
        let created = try core.call(
            .update,
            "auth/token/create",
            ["ttl": "1h", "colour": "blue"],
            token: result.rootToken
        )
        #expect(created.warnings == ["Endpoint ignored these unrecognized parameters: [colour]"])
        // 404 for a path nothing declares, 405 for an operation the path does not serve: Vault's texts.
        expectError(.notFound, containing: "unsupported path") {
            try core.call(.read, "sys/nothing-here", token: result.rootToken)
        }
        expectError(.unsupportedOperation, containing: "unsupported operation") {
            try core.call(.delete, "sys/seal", token: result.rootToken)
        }
    }

    /// A login method for the test: `login` with a username answers an auth block without a token.
    final class PasswordLogin: TableBackend {
        static let paths = PathTable<PasswordLogin>([
            Path(
                "login",
                fields: [.string("username"), .string("password"), .duration("ttl")],
                write: PasswordLogin.login
            )
        ])
        var specialPaths: SpecialPaths { SpecialPaths(unauthenticated: ["login"]) }

        func login(_ request: BackendRequest) throws(CofferError) -> Response {
            guard request.fields.string("username") == "alice", request.fields.string("password") == "pw" else {
                throw CofferError.permissionDeniedError
            }
            return Response(
                auth: AuthInfo(
                    clientToken: "",
                    accessor: "",
                    policies: ["reader"],
                    tokenPolicies: [],
                    metadata: ["username": "alice"],
                    leaseDuration: request.fields.seconds("ttl") ?? 0,
                    renewable: true,
                    orphan: true,
                    numUses: 0
                )
            )
        }
    }

    @Test func authMethodsAreMountedAndLoginsIssueTokens() throws {
        var methods = EngineRegistry()
        methods.register("password") { _ in PasswordLogin() }
        let (core, result) = try makeCore(authMethods: methods)
        let root = result.rootToken
        try core.call(
            .update,
            "sys/policies/acl/reader",
            ["policy": #"path "echo/*" { capabilities = ["read"] }"#],
            token: root
        )
        try core.call(.update, "sys/auth/people", ["type": "password"], token: root)
        try core.call(.update, "sys/auth/people/tune", ["max_lease_ttl": "2h"], token: root)
        #expect(try core.call(.read, "sys/auth", token: root).data?.keys.sorted() == ["people/", "token/"])
        expectError(.invalidArgument, containing: "unknown auth method type") {
            try core.call(.update, "sys/auth/other", ["type": "nonesuch"], token: root)
        }

        // The login path needs no token; what it answers becomes a token with its policies.
        let login = try core.call(
            .update,
            "auth/people/login",
            ["username": "alice", "password": "pw", "ttl": "10h"],
            token: nil
        )
        let auth = try #require(login.auth)
        #expect(auth.clientToken.hasPrefix("s."))
        #expect(auth.policies == ["default", "reader"])
        #expect(auth.leaseDuration == 7200, "capped by the mount's max_lease_ttl")
        #expect(auth.orphan)
        try core.call(.update, "echo/x", ["v": "1"], token: root)
        #expect(try core.call(.read, "echo/x", token: auth.clientToken).data?["v"] == "1")
        expectError(.permissionDenied) { try core.call(.update, "echo/x", ["v": "2"], token: auth.clientToken) }
        expectError(.permissionDenied) {
            try core.call(.update, "auth/people/login", ["username": "alice", "password": "no"], token: nil)
        }

        // Disabled, its paths are gone.
        try core.call(.delete, "sys/auth/people", token: root)
        expectError(.notFound) {
            try core.call(.update, "auth/people/login", ["username": "alice", "password": "pw"], token: nil)
        }
        expectError(.invalidArgument) { try core.call(.update, "sys/auth/token", ["type": "token"], token: root) }
    }

    @Test func cubbyholeIsPrivateToEachTokenAndDiesWithIt() throws {
        let (core, result) = try makeCore()
        let root = result.rootToken
        let a = try #require(
            try core.call(.update, "auth/token/create", ["policies": ["default"]], token: root).auth?.clientToken
        )
        let b = try #require(
            try core.call(.update, "auth/token/create", ["policies": ["default"]], token: root).auth?.clientToken
        )
        try core.call(
            .update,
            "sys/policies/acl/default",
            [
                "policy": .string(
                    PolicyStore.defaultPolicy
                        + #"path "cubbyhole/*" { capabilities = ["create", "read", "update", "delete", "list"] }"#
                )
            ],
            token: root
        )
        try core.call(.update, "cubbyhole/notes/first", ["secret": "for a only"], token: a)
        #expect(try core.call(.read, "cubbyhole/notes/first", token: a).data?["secret"] == "for a only")
        #expect(try core.call(.list, "cubbyhole/notes/", token: a).data?["keys"] == ["first"])
        // Nothing to store is the client's mistake (OpenBao answers 500).
        expectError(.invalidArgument, containing: "missing data fields") {
            try core.call(.update, "cubbyhole/notes/empty", [:], token: a)
        }
        // Another token, even root, sees its own empty cubbyhole.
        #expect(try core.call(.read, "cubbyhole/notes/first", token: b).outcome == .notFound)
        #expect(try core.call(.read, "cubbyhole/notes/first", token: root).outcome == .notFound)
        #expect(try core.call(.read, "sys/mounts", token: root).data?["cubbyhole/"]?["type"] == "cubbyhole")
        // Revoking the token deletes its cubbyhole from storage.
        let before = try core.barrier.physical.listRecursive(prefix: "logical/").filter { $0.contains("notes/first") }
        #expect(before.count == 1)
        try core.call(.update, "auth/token/revoke-self", token: a)
        #expect(try core.barrier.physical.listRecursive(prefix: "logical/").filter { $0.contains("notes/first") } == [])
        expectError(.invalidArgument, containing: "reserved") {
            try core.call(.update, "sys/mounts/cubbyhole", ["type": "echo"], token: root)
        }
    }

    @Test func aSecondCoreOverTheSameStorageSeesEveryChange() throws {
        let storage = InMemoryBackend()
        let clock = ManualClock()
        var engines = EngineRegistry()
        engines.register("kv") { _ in KVv2Backend() }
        engines.register("transit") { _ in TransitBackend() }
        let first = try Core(storage: storage, engines: engines, clock: clock)
        let initResult = try first.initialize(shares: 1, threshold: 1)
        let root = initResult.rootToken
        let second = try Core(storage: storage, engines: engines, clock: clock)
        try second.unseal(key: initResult.keys[0].unsafeCopy)

        // Mount tables: a mount made by one is routed by the other.
        try first.call(.update, "sys/mounts/secret", ["type": "kv"], token: root)
        try first.call(.update, "sys/mounts/transit", ["type": "transit"], token: root)
        #expect(try second.mounts().map(\.path) == ["secret/", "transit/"])
        // KV metadata cached by the second is refreshed when the first writes.
        try first.call(.update, "secret/data/app", ["data": ["v": "1"]], token: root)
        #expect(try second.call(.read, "secret/data/app", token: root).data?["data"] == ["v": "1"])
        try first.call(.update, "secret/data/app", ["data": ["v": "2"]], token: root)
        #expect(try second.call(.read, "secret/data/app", token: root).data?["data"] == ["v": "2"])
        try first.call(.update, "secret/metadata/app", ["max_versions": 3], token: root)
        #expect(try second.call(.read, "secret/metadata/app", token: root).data?["max_versions"] == 3)
        // Policies: a narrowed policy takes effect in the other at once (its ACL cache is dropped).
        try first.call(
            .update,
            "sys/policies/acl/app",
            ["policy": #"path "secret/data/app" { capabilities = ["read"] }"#],
            token: root
        )
        let limited = try #require(
            try first.call(.update, "auth/token/create", ["policies": ["app"]], token: root).auth?.clientToken
        )
        #expect(try second.call(.read, "secret/data/app", token: limited).data?["data"] == ["v": "2"])
        try first.call(
            .update,
            "sys/policies/acl/app",
            ["policy": #"path "secret/data/other" { capabilities = ["read"] }"#],
            token: root
        )
        expectError(.permissionDenied) { try second.call(.read, "secret/data/app", token: limited) }
        // Tokens: revoked by one, refused by the other.
        try first.call(.update, "auth/token/revoke", ["token": .string(limited)], token: root)
        expectError(.permissionDenied) { try second.call(.read, "auth/token/lookup-self", token: limited) }
        // Transit keys: a rotation by one is used by the other.
        try first.call(.update, "transit/keys/k", token: root)
        _ = try second.call(.update, "transit/encrypt/k", ["plaintext": "aGk="], token: root)
        try first.call(.update, "transit/keys/k/rotate", token: root)
        let sealed = try second.call(.update, "transit/encrypt/k", ["plaintext": "aGk="], token: root)
        #expect(sealed.data?["key_version"] == 2)
        // The barrier keyring: entries written under a term the first added are readable by the second.
        try first.call(.update, "sys/rotate", token: root)
        try first.call(.update, "secret/data/after-rotation", ["data": ["v": "3"]], token: root)
        #expect(try second.call(.read, "secret/data/after-rotation", token: root).data?["data"] == ["v": "3"])
        // Unmounted by one, gone from the other.
        try first.call(.delete, "sys/mounts/transit", token: root)
        #expect(try second.mounts().map(\.path) == ["secret/"])
        // Namespaces: made by one, with a mount, a secret and a rotated keyring, served by the other;
        // deleted by one, gone from the other.
        try first.call(.update, "sys/namespaces/shared", token: root)
        try first.call(.update, "shared/sys/mounts/kv", ["type": "kv"], token: root)
        try first.call(.update, "shared/kv/data/a", ["data": ["v": "1"]], token: root)
        #expect(try second.call(.read, "shared/kv/data/a", token: root).data?["data"] == ["v": "1"])
        try first.call(.update, "shared/sys/rotate", token: root)
        try first.call(.update, "shared/kv/data/a", ["data": ["v": "2"]], token: root)
        #expect(try second.call(.read, "shared/kv/data/a", token: root).data?["data"] == ["v": "2"])
        try first.call(.delete, "sys/namespaces/shared", token: root)
        expectError(.notFound) { try second.call(.read, "shared/kv/data/a", token: root) }
    }

    @Test func anExistenceCheckNeverWrites() throws {
        let clock = ManualClock()
        var engines = EngineRegistry()
        engines.register("transit") { _ in TransitBackend() }
        let storage = InMemoryBackend()
        let core = try Core(storage: storage, engines: engines, clock: clock)
        let root = try core.initialize(shares: 1, threshold: 1).rootToken
        try core.call(.update, "sys/mounts/transit", ["type": "transit"], token: root)
        try core.call(.update, "transit/keys/k", ["auto_rotate_period": "1h"], token: root)
        clock.advance(seconds: 7200)
        // A token that may not encrypt: its write is refused by the ACL, and the existence check that
        // ran first (to call the write a create or an update) did not rotate the key.
        let none = try #require(
            try core.call(.update, "auth/token/create", ["policies": ["default"]], token: root).auth?.clientToken
        )
        let writes = Mutex(0)
        _ = storage.changes.subscribe { keys in
            if keys.contains(where: { $0.contains("/policy/k") }) { writes.withLock { $0 += 1 } }
        }
        expectError(.permissionDenied) {
            try core.call(.update, "transit/encrypt/k", ["plaintext": "aGk="], token: none)
        }
        #expect(writes.withLock { $0 } == 0)
        #expect(
            try core.call(.read, "transit/keys/k", token: root).data?["latest_version"] == 2,
            "rotated when used, by one allowed to"
        )
    }
}
