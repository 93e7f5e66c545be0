import CofferCore
import Testing

@Suite("ACL evaluation")
struct ACLTests {
    static func acl(_ texts: String...) throws -> ACL {
        ACL(policies: try texts.enumerated().map { try Policy.parse(name: "p\($0.offset)", text: $0.element) })
    }

    struct PrecedenceCase: Sendable, CustomStringConvertible {
        let rules: [String: [String]]
        let path: String
        let expected: Capabilities
        var description: String { "\(path) -> \(expected.names)" }
    }

    /// Each case compiles `rules` (pattern → capabilities) as one policy and asks for `path`.
    static let precedence: [PrecedenceCase] = [
        PrecedenceCase(rules: ["secret/foo": ["read"], "secret/*": ["list"]], path: "secret/foo", expected: .read),
        PrecedenceCase(
            rules: ["secret/*": ["read"], "secret/data/*": ["update"]],
            path: "secret/data/a",
            expected: .update
        ),
        PrecedenceCase(
            rules: ["secret/*": ["read"], "secret/data/*": ["update"]],
            path: "secret/dat",
            expected: .read
        ),
        PrecedenceCase(
            rules: ["secret/+/foo": ["update"], "secret/data/*": ["read"]],
            path: "secret/data/foo",
            expected: .read
        ),
        PrecedenceCase(
            rules: ["secret/+/foo": ["update"], "secret/*": ["read"]],
            path: "secret/x/foo",
            expected: .update
        ),
        PrecedenceCase(rules: ["a/+/+/d": ["read"], "a/+/c/d": ["update"]], path: "a/b/c/d", expected: .update),
        PrecedenceCase(rules: ["a/+/b*": ["read"], "a/+/bc*": ["update"]], path: "a/x/bcd", expected: .update),
        PrecedenceCase(rules: ["a/+/bc": ["read"], "a/+/b*": ["update"]], path: "a/x/bc", expected: .read),
        PrecedenceCase(rules: ["+": ["read"]], path: "anything", expected: .read),
        PrecedenceCase(rules: ["+": ["read"]], path: "any/thing", expected: .deny),
        PrecedenceCase(rules: ["+/x/*": ["read"]], path: "a/x/", expected: .read),
        PrecedenceCase(rules: ["+/x/*": ["read"]], path: "a/x", expected: .deny),
        PrecedenceCase(rules: ["a/+b": ["read"]], path: "a/+b", expected: .read),
        PrecedenceCase(rules: ["a/+b": ["read"]], path: "a/xb", expected: .deny),
        PrecedenceCase(rules: ["a/b/": ["list"]], path: "a/b/", expected: .list),
        PrecedenceCase(rules: ["a/b": ["list"]], path: "a/b/", expected: .list),
        PrecedenceCase(rules: ["a/b": ["list"]], path: "a/b//", expected: .deny),
        PrecedenceCase(rules: ["*": ["read"], "a*": ["list"]], path: "ab", expected: .list),
        PrecedenceCase(rules: ["sys/*": ["read"]], path: "//sys/x", expected: .read),
        PrecedenceCase(rules: ["dat\u{e9}/*": ["read"]], path: "dat\u{e9}/x", expected: .read),
        PrecedenceCase(rules: ["x/*": []], path: "x/a", expected: .deny),
    ]

    @Test(arguments: precedence)
    func precedenceCases(_ test: PrecedenceCase) throws {
        let text = test.rules.map { pattern, caps in
            "path \"\(pattern)\" { capabilities = [\(caps.map { "\"\($0)\"" }.joined(separator: ", "))] }"
        }.joined(separator: "\n")
        #expect(try Self.acl(text).capabilities(path: test.path) == test.expected)
    }

    @Test func mergingAcrossPolicies() throws {
        let acl = try Self.acl(
            #"path "s/*" { capabilities = ["read"] allowed_parameters = { "a" = ["1"], "b" = [] } }"#,
            #"path "s/*" { capabilities = ["update"] allowed_parameters = { "a" = ["2"], "b" = ["x"] } }"#,
            #"path "s/*" { capabilities = ["list"] required_parameters = ["r"] }"#,
            #"path "d" { capabilities = ["read", "sudo"] }"#,
            #"path "d" { capabilities = ["deny"] }"#,
            #"path "d" { capabilities = ["list"] }"#
        )
        let rules = Dictionary(uniqueKeysWithValues: acl.mergedRules.map { ($0.path, $0) })
        let merged = try #require(rules["s/*"])
        #expect(merged.capabilities == [.read, .update, .list])
        #expect(Set(merged.allowedParameters["a"] ?? []) == ["1", "2"])
        #expect(merged.allowedParameters["b"] == [])
        #expect(merged.requiredParameters == ["r"])
        #expect(rules["d"]?.capabilities == .deny)
        #expect(acl.capabilityNames(path: "d") == ["deny"])
    }

    @Test func wrappingTTLBoundsMakeWrappingMandatoryAndMergeToTheSmallest() throws {
        let acl = try Self.acl(
            #"path "w/*" { capabilities = ["list"] min_wrapping_ttl = "100s" max_wrapping_ttl = "150s" }"#,
            #"path "w/*" { capabilities = ["read"] min_wrapping_ttl = "50s" max_wrapping_ttl = 110 }"#,
            #"path "m/*" { capabilities = ["read"] max_wrapping_ttl = "1m" }"#
        )
        func allowed(_ path: String, _ ttl: Int64) -> Bool {
            acl.allowOperation(.read, path: path, data: nil, wrapTTL: ttl).allowed
        }
        #expect(!allowed("w/a", 0) && !allowed("w/a", 49) && allowed("w/a", 50) && allowed("w/a", 110))
        #expect(!allowed("w/a", 111))
        #expect(acl.allowOperation(.read, path: "w/a", data: nil).reason == .wrappingTTLOutOfBounds)
        #expect(!allowed("m/a", 0) && allowed("m/a", 1) && allowed("m/a", 60) && !allowed("m/a", 61))
        // Each policy alone is consistent, but merged a maximum can fall under a minimum: nothing fits.
        let crossed = try Self.acl(
            #"path "c" { capabilities = ["read"] min_wrapping_ttl = 100 }"#,
            #"path "c" { capabilities = ["read"] max_wrapping_ttl = 50 }"#
        )
        for ttl: Int64 in [0, 50, 75, 100] {
            #expect(!crossed.allowOperation(.read, path: "c", data: nil, wrapTTL: ttl).allowed)
        }
        #expect(throws: PolicySyntaxError.self) {
            try Self.acl(#"path "x" { capabilities = ["read"] min_wrapping_ttl = "2m" max_wrapping_ttl = "1m" }"#)
        }
        #expect(throws: PolicySyntaxError.self) {
            try Self.acl(#"path "x" { capabilities = ["read"] min_wrapping_ttl = "soon" }"#)
        }
    }

    @Test func rootACL() throws {
        let acl = ACL(policies: [Policy(name: "root", rules: []), try Policy.parse(name: "x", text: "")])
        #expect(acl.isRoot)
        #expect(acl.capabilities(path: "anything") == .root)
        #expect(acl.capabilityNames(path: "sys/seal") == ["root"])
        #expect(
            acl.allowOperation(.delete, path: "x", data: nil)
                == ACLDecision(allowed: true, rootPrivileges: true, reason: .root)
        )
    }

    @Test func decisionsAndReasons() throws {
        let acl = try Self.acl(
            """
            path "sys/mounts/*" { capabilities = ["update", "sudo"] }
            path "kv/*" { capabilities = ["read", "update", "delete"] required_parameters = ["Owner"] }
            path "kv/blocked" { capabilities = ["deny"] }
            path "kv/open" { capabilities = ["update", "list"] denied_parameters = { "*" = [] } }
            path "kv/some" {
              capabilities = ["update"]
              denied_parameters = { "mode" = ["*admin*"] }
              allowed_parameters = { "*" = [], "mode" = ["user", "super*"] }
            }
            """
        )
        func check(_ op: PolicyOperation, _ path: String, _ data: [String: JSONValue]?) -> ACLDecision {
            acl.allowOperation(op, path: path, data: data)
        }
        #expect(
            check(.update, "sys/mounts/x", nil) == ACLDecision(allowed: true, rootPrivileges: true, reason: .granted)
        )
        #expect(
            check(.read, "sys/mounts/x", nil)
                == ACLDecision(allowed: false, rootPrivileges: true, reason: .missingCapability)
        )
        #expect(
            check(.read, "nowhere", nil) == ACLDecision(allowed: false, rootPrivileges: false, reason: .noMatchingRule)
        )
        #expect(check(.read, "kv/blocked", nil).reason == .explicitDeny)
        // required_parameters: lowercased policy name against the request's exact key; even reads need it.
        #expect(check(.read, "kv/x", nil).reason == .missingRequiredParameter)
        #expect(check(.read, "kv/x", ["Owner": "me"]).reason == .missingRequiredParameter)
        #expect(check(.read, "kv/x", ["owner": "me"]).allowed)
        #expect(check(.delete, "kv/x", nil).allowed)
        // denied "*" denies any non-empty data, but empty data and list are fine.
        #expect(check(.update, "kv/open", ["a": "b"]).reason == .deniedParameter)
        #expect(check(.update, "kv/open", [:]).allowed)
        #expect(check(.list, "kv/open", ["a": "b"]).allowed)
        // Per-value denial with globs, then allowed values; keys are lowercased before lookup.
        #expect(check(.update, "kv/some", ["MODE": "the-admin-mode"]).reason == .deniedParameter)
        #expect(check(.update, "kv/some", ["mode": "superuser"]).allowed)
        #expect(check(.update, "kv/some", ["mode": "guest"]).reason == .parameterNotAllowed)
        #expect(check(.update, "kv/some", ["other": 1]).allowed)
    }

    @Test func valueMatching() throws {
        let acl = try Self.acl(
            #"""
            path "v" {
              capabilities = ["update"]
              allowed_parameters = {
                "s" = ["*mid*", "pre*", "*suf", "*", "x"], "n" = [1], "b" = [false], "l" = [["a", "b"]]
              }
            }
            """#
        )
        func allowed(_ key: String, _ value: JSONValue) -> Bool {
            acl.allowOperation(.update, path: "v", data: [key: value]).allowed
        }
        #expect(allowed("s", "a-mid-b"))
        #expect(allowed("s", "prefix"))
        #expect(allowed("s", "endsuf"))
        #expect(allowed("s", "*"))
        #expect(allowed("s", "x"))
        #expect(!allowed("s", "y"))
        #expect(!allowed("s", "X"))
        #expect(!allowed("n", 1))
        #expect(!allowed("n", "1"))
        #expect(allowed("b", false))
        #expect(!allowed("b", "false"))
        #expect(allowed("l", ["a", "b"]))
        #expect(!allowed("l", ["a"]))
        #expect(!allowed("l", ["a", "*"]))
        #expect(!allowed("s", .null))
    }
}
