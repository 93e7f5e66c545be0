import Foundation
import Synchronization
import Testing

/// What the core does with an auth method's login answer (token limits, batch tokens, CIDR
/// binding, identity entities and group policies), response wrapping, and batch tokens made at
/// auth/token/create. The auth methods themselves are tested in EnginesTests.
@Suite struct AuthCoreTests {
    /// A login method for the test: `role` holds `token_*` parameters; `login` names a user and
    /// the groups it vouches for.
    final class GrantLogin: TableBackend {
        static let paths = PathTable<GrantLogin>([
            Path("role", fields: TokenParameters.fields, write: GrantLogin.writeRole),
            Path("login", fields: [.string("user"), .strings("groups")], write: GrantLogin.login),
        ])
        var specialPaths: SpecialPaths { SpecialPaths(unauthenticated: ["login"]) }

        func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
            var params = TokenParameters(json: try request.storage.getJSON("role")?.objectValue ?? [:])
            try params.update(from: request.fields)
            try request.storage.putJSON("role", .object(params.json))
            return .noContent
        }

        func login(_ request: BackendRequest) throws(CofferError) -> Response {
            let params = TokenParameters(json: try request.storage.getJSON("role")?.objectValue ?? [:])
            let user = request.fields.string("user") ?? ""
            return Response(
                auth: params.authInfo(
                    metadata: ["user": user],
                    grant: LoginGrant(
                        alias: user,
                        aliasMetadata: ["user": user],
                        groups: request.fields.strings("groups") ?? []
                    )
                )
            )
        }
    }

    struct Fixture {
        let core: Core
        let root: String
        let clock: ManualClock

        init() throws {
            var methods = EngineRegistry()
            methods.register("grant") { _ in GrantLogin() }
            let clock = ManualClock()
            let (core, result) = try makeCore(clock: clock, authMethods: methods)
            self.core = core
            self.root = result.rootToken
            self.clock = clock
            try core.call(.update, "sys/auth/people", ["type": "grant"], token: root)
            try core.call(
                .update,
                "sys/policies/acl/reader",
                ["policy": #"path "echo/*" { capabilities = ["read"] }"#],
                token: root
            )
            try core.call(
                .update,
                "sys/policies/acl/writer",
                ["policy": #"path "echo/*" { capabilities = ["create", "update", "read"] }"#],
                token: root
            )
            try core.call(
                .update,
                "sys/policies/acl/creator",
                ["policy": #"path "auth/token/create" { capabilities = ["update"] }"#],
                token: root
            )
            try core.call(.update, "echo/x", ["v": "1"], token: root)
        }

        func role(_ fields: [String: JSONValue]) throws {
            try core.call(.update, "auth/people/role", fields, token: root)
        }

        func login(_ user: String = "alice", groups: [String] = [], from address: String = "") throws -> AuthInfo {
            var request = Request(.update, "auth/people/login", data: ["user": .string(user)])
            if !groups.isEmpty { request.data["groups"] = .array(groups.map { .string($0) }) }
            request.clientAddress = address
            return try #require(try core.handle(request).auth)
        }

        func read(_ path: String, token: String, from address: String = "") throws -> Response {
            var request = Request(.read, path, token: token)
            request.clientAddress = address
            return try core.handle(request)
        }

        var accessor: String {
            get throws { try #require(core.mounts(.auth).first { $0.path == "people/" }?.accessor) }
        }
    }

    @Test func loginsGetTokensShapedByTheirParametersAndAnEntity() throws {
        let f = try Fixture()
        try f.role(["token_policies": ["reader"], "token_ttl": "1h", "token_max_ttl": "2h", "token_num_uses": 3])
        let auth = try f.login()
        #expect(auth.clientToken.hasPrefix("s."))
        #expect(auth.policies == ["default", "reader"])
        #expect(auth.leaseDuration == 3600)
        #expect(auth.numUses == 3)
        #expect(!auth.entityID.isEmpty)
        #expect(try f.login().entityID == auth.entityID, "the same alias finds the same entity")
        #expect(try f.login("bob").entityID != auth.entityID)

        // The entity and its alias, as identity/ shows them.
        let entity = try #require(try f.core.call(.read, "identity/entity/id/\(auth.entityID)", token: f.root).data)
        #expect(entity["name"]?.stringValue?.hasPrefix("entity_") == true)
        let alias = try #require(entity["aliases"]?.arrayValue?.first)
        #expect(alias["name"] == "alice")
        #expect(alias["mount_accessor"]?.stringValue == (try f.accessor))
        #expect(alias["mount_path"] == "auth/people/")
        #expect(alias["mount_type"] == "grant")
        #expect(try f.accessor.hasPrefix("auth_grant_"))
        let lookup = try f.core.call(.read, "auth/token/lookup-self", token: auth.clientToken).data
        #expect(lookup?["entity_id"]?.stringValue == auth.entityID)

        // num_uses counts: the lookup above was one use, two reads are the rest.
        #expect(try f.read("echo/x", token: auth.clientToken).data?["v"] == "1")
        #expect(try f.read("echo/x", token: auth.clientToken).data?["v"] == "1")
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: auth.clientToken) }

        // token_max_ttl caps a renewal-free TTL too; token_no_default_policy leaves `default` out.
        try f.role(["token_ttl": "3h", "token_max_ttl": "4h", "token_num_uses": 0, "token_no_default_policy": true])
        let capped = try f.login()
        #expect(capped.leaseDuration == 3 * 3600)
        #expect(capped.policies == ["reader"])
        // Renewals stay within token_max_ttl, counted from the login.
        try f.role(["token_no_default_policy": false])
        let renewable = try f.login()
        f.clock.advance(seconds: 600)
        let renewed = try f.core.call(
            .update,
            "auth/token/renew-self",
            ["increment": "10h"],
            token: renewable.clientToken
        )
        #expect(renewed.auth?.leaseDuration == Int64(4 * 3600 - 600))
        #expect(renewed.warnings.first?.contains("exceeded the effective max_ttl") == true)
        expectError(.invalidArgument, containing: "'token_ttl' cannot be greater than 'token_max_ttl'") {
            try f.role(["token_ttl": "5h"])
        }
        expectError(.invalidArgument, containing: "invalid 'token_type'") { try f.role(["token_type": "mystery"]) }
    }

    @Test func aListIsOfAFolder() throws {
        let f = try Fixture()
        try f.core.call(
            .update,
            "sys/policies/acl/lister",
            ["policy": #"path "echo/dir/*" { capabilities = ["list"] }"#],
            token: f.root
        )
        let token = try #require(
            try f.core.call(.update, "auth/token/create", ["policies": ["lister"]], token: f.root).auth?.clientToken
        )
        // `LIST echo/dir` is checked as `echo/dir/`, as in Vault: the policy allows it (the echo
        // engine then has no list handler: 405, not 403).
        expectError(.unsupportedOperation) { try f.core.call(.list, "echo/dir", token: token) }
        expectError(.unsupportedOperation) { try f.core.call(.list, "echo/dir/", token: token) }
        expectError(.permissionDenied) { try f.core.call(.list, "echo/other", token: token) }
    }

    @Test func entityAndGroupPoliciesApplyAtRequestTime() throws {
        let f = try Fixture()
        let auth = try f.login()
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: auth.clientToken) }
        // Policies given to the entity after login apply to the token it already has.
        try f.core.call(.update, "identity/entity/id/\(auth.entityID)", ["policies": ["reader"]], token: f.root)
        #expect(try f.read("echo/x", token: auth.clientToken).data?["v"] == "1")
        try f.core.call(.update, "identity/entity/id/\(auth.entityID)", ["policies": []], token: f.root)
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: auth.clientToken) }

        // An external group whose alias on this mount is "eng": a login naming it gets its policies.
        let group = try #require(
            try f.core.call(
                .update,
                "identity/group",
                ["name": "engineers", "type": "external", "policies": ["writer"]],
                token: f.root
            ).data?["id"]?.stringValue
        )
        try f.core.call(
            .update,
            "identity/group-alias",
            ["name": "eng", "mount_accessor": .string(try f.accessor), "canonical_id": .string(group)],
            token: f.root
        )
        let member = try f.login("carol", groups: ["eng", "other"])
        #expect(member.identityPolicies == ["writer"])
        #expect(member.policies == ["default", "writer"])
        try f.core.call(.update, "echo/x", ["v": "2"], token: member.clientToken)
        let entity = try #require(try f.core.call(.read, "identity/entity/id/\(member.entityID)", token: f.root).data)
        #expect(entity["group_ids"] == [.string(group)])
        // A later login without the group takes the membership away.
        let left = try f.login("carol")
        #expect(left.identityPolicies.isEmpty)
        expectError(.permissionDenied) { try f.core.call(.update, "echo/x", ["v": "3"], token: member.clientToken) }

        // A disabled entity cannot log in, and its tokens lose the entity's policies.
        try f.core.call(.update, "identity/entity/id/\(auth.entityID)", ["disabled": true], token: f.root)
        expectError(.permissionDenied) { _ = try f.login() }
        expectError(.invalidArgument, containing: "invalid mount accessor") {
            try f.core.call(
                .update,
                "identity/entity-alias",
                ["name": "x", "mount_accessor": "auth_nope_1", "canonical_id": .string(auth.entityID)],
                token: f.root
            )
        }
    }

    @Test func batchTokensAndCIDRBinding() throws {
        let f = try Fixture()
        try f.role(["token_policies": ["reader", "creator"], "token_type": "batch", "token_ttl": "10m"])
        let batch = try f.login()
        #expect(batch.clientToken.hasPrefix("b."))
        #expect(batch.accessor == "")
        #expect(batch.tokenType == "batch")
        #expect(!batch.renewable)
        #expect(try f.read("echo/x", token: batch.clientToken).data?["v"] == "1")
        expectError(.invalidArgument, containing: "batch tokens cannot create more tokens") {
            try f.core.call(.update, "auth/token/create", [:], token: batch.clientToken)
        }
        expectError(.invalidArgument, containing: "batch tokens cannot be renewed") {
            try f.core.call(.update, "auth/token/renew-self", [:], token: batch.clientToken)
        }
        // A flipped character is not a token.
        var altered = Array(batch.clientToken.utf8)
        altered[20] = altered[20] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: String(decoding: altered, as: UTF8.self)) }
        f.clock.advance(seconds: 601)
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: batch.clientToken) }
        expectError(.invalidArgument, containing: "batch") {
            try f.role(["token_type": "batch", "token_num_uses": 2])
        }

        try f.role(["token_type": "service", "token_bound_cidrs": ["10.0.0.0/8", "::1"]])
        let bound = try f.login()
        #expect(try f.read("echo/x", token: bound.clientToken, from: "10.1.2.3").data?["v"] == "1")
        #expect(try f.read("echo/x", token: bound.clientToken, from: "[::1]:4000").data?["v"] == "1")
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: bound.clientToken, from: "127.0.0.1") }
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: bound.clientToken) }
        expectError(.invalidArgument, containing: "token_bound_cidrs") {
            try f.role(["token_bound_cidrs": ["10.0.0.0/33"]])
        }

        // auth/token/create makes batch tokens too; a child batch token dies with its parent.
        let parent = try #require(
            try f.core.call(.update, "auth/token/create", ["policies": ["reader", "creator"]], token: f.root).auth?
                .clientToken
        )
        let child = try #require(
            try f.core.call(.update, "auth/token/create", ["type": "batch"], token: parent).auth
        )
        #expect(child.clientToken.hasPrefix("b."))
        #expect(try f.read("echo/x", token: child.clientToken).data?["v"] == "1")
        try f.core.call(.update, "auth/token/revoke", ["token": .string(parent)], token: f.root)
        expectError(.permissionDenied) { _ = try f.read("echo/x", token: child.clientToken) }
    }

    /// The JSON of an unwrapped answer (sent as the original bytes).
    static func unwrapped(_ response: Response) -> JSONValue? {
        response.body.flatMap { try? JSONValue.parse($0.bytes) }
    }

    @Test func responseWrappingIsSingleUse() throws {
        let f = try Fixture()
        var request = Request(.read, "echo/x", token: f.root)
        request.wrapTTL = 300
        let wrapped = try f.core.handle(request)
        let info = try #require(wrapped.wrapInfo)
        #expect(wrapped.data == nil)
        #expect(info.ttl == 300)
        #expect(info.creationPath == "echo/x")
        #expect(info.wrappedAccessor == nil)
        let body = try #require(wrapped.body(requestID: "r1"))
        #expect(body["request_id"] == "", "a wrapped answer has no request id, as in OpenBao")

        // Lookup needs no token and does not use the wrapping token up.
        let lookup = try f.core.call(.update, "sys/wrapping/lookup", ["token": .string(info.token)], token: nil).data
        #expect(lookup?["creation_path"] == "echo/x")
        #expect(lookup?["creation_ttl"] == 300)
        // The wrapping token itself cannot read its cubbyhole: unwrapping is the only way in.
        expectError(.permissionDenied) { try f.core.call(.read, "cubbyhole/response", token: info.token) }

        // Unwrap with the wrapping token as the caller's token (what `bao unwrap` with no argument does).
        let unwrapped = try f.core.call(.update, "sys/wrapping/unwrap", token: info.token)
        #expect(Self.unwrapped(unwrapped)?["data"]?["v"] == "1")
        expectError(.invalidArgument, containing: "wrapping token is not valid or does not exist") {
            try f.core.call(.update, "sys/wrapping/unwrap", ["token": .string(info.token)], token: f.root)
        }
        expectError(.invalidArgument, containing: "wrapping token is not valid or does not exist") {
            try f.core.call(.update, "sys/wrapping/lookup", ["token": .string(info.token)], token: nil)
        }

        // Of many concurrent unwraps of one token, exactly one gets the answer.
        let again = try #require(try f.core.handle(request).wrapInfo?.token)
        let wins = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            if (try? f.core.call(.update, "sys/wrapping/unwrap", ["token": .string(again)], token: f.root)) != nil {
                wins.withLock { $0 += 1 }
            }
        }
        #expect(wins.withLock { $0 } == 1)

        // Rewrap: a new token, the old one gone; the answer survives.
        let first = try #require(try f.core.handle(request).wrapInfo?.token)
        let rewrapped = try #require(
            try f.core.call(.update, "sys/wrapping/rewrap", ["token": .string(first)], token: f.root).wrapInfo
        )
        #expect(rewrapped.token != first)
        #expect(rewrapped.creationPath == "echo/x")
        expectError(.invalidArgument) {
            try f.core.call(.update, "sys/wrapping/unwrap", ["token": .string(first)], token: f.root)
        }
        let after = try f.core.call(.update, "sys/wrapping/unwrap", ["token": .string(rewrapped.token)], token: f.root)
        #expect(Self.unwrapped(after)?["data"]?["v"] == "1")

        // A token made under wrapping names its accessor; the wrapping token expires with its TTL.
        var create = Request(.update, "auth/token/create", data: ["policies": ["reader"]], token: f.root)
        create.wrapTTL = 60
        let wrappedToken = try #require(try f.core.handle(create).wrapInfo)
        #expect(wrappedToken.wrappedAccessor?.isEmpty == false)
        f.clock.advance(seconds: 61)
        expectError(.invalidArgument, containing: "wrapping token is not valid") {
            try f.core.call(.update, "sys/wrapping/unwrap", ["token": .string(wrappedToken.token)], token: f.root)
        }

        // sys/wrapping/wrap wraps what it is given, and only under wrapping.
        expectError(.invalidArgument, containing: "endpoint requires response wrapping to be used") {
            try f.core.call(.update, "sys/wrapping/wrap", ["k": "v"], token: f.root)
        }
        var wrapData = Request(.update, "sys/wrapping/wrap", data: ["k": "v"], token: f.root)
        wrapData.wrapTTL = 30
        let dataToken = try #require(try f.core.handle(wrapData).wrapInfo?.token)
        let out = try f.core.call(.update, "sys/wrapping/unwrap", ["token": .string(dataToken)], token: f.root)
        #expect(Self.unwrapped(out)?["data"]?["k"] == "v")
    }
}
