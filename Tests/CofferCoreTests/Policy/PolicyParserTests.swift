import CofferCore
import Testing

@Suite("Policy parser")
struct PolicyParserTests {
    struct ErrorCase: Sendable, CustomStringConvertible {
        let text: String
        let line: Int
        let column: Int
        let message: String
        var description: String { "\(line):\(column) \(message)" }
    }

    static let errorCases: [ErrorCase] = [
        ErrorCase(
            text: #"path "a" { capabilities = ["raed"] }"#,
            line: 1,
            column: 28,
            message:
                "unknown capability; expected one of create, delete, deny, list, patch, read, subscribe, sudo, update"
        ),
        ErrorCase(
            text: "path \"a\" {\n  capabilities = [\"read\"]\n  foo = 1\n}",
            line: 3,
            column: 3,
            message: "unknown attribute in a path block; expected one of capabilities, policy"
        ),
        // The first string ends at the quote before `read`; the one opened after it is never closed.
        ErrorCase(text: #"path "a { capabilities = ["read"] }"#, line: 1, column: 32, message: "unterminated string"),
        ErrorCase(
            text: "path \"a\" {\n  capabilities = [\"read\"]\n",
            line: 3,
            column: 1,
            message: "missing '}' to close the block opened at line 1, column 10"
        ),
        ErrorCase(
            text: #"path "secret/*/foo" { capabilities = ["read"] }"#,
            line: 1,
            column: 14,
            message: "'*' may only appear at the end of a path pattern"
        ),
        ErrorCase(
            text: #"path "secret/+*" { capabilities = ["read"] }"#,
            line: 1,
            column: 14,
            message: "'+*' is forbidden"
        ),
        ErrorCase(
            text: "# comment\nblah \"a\" { capabilities = [\"read\"] }",
            line: 2,
            column: 1,
            message: "unknown top-level block or attribute; a policy contains only 'path' blocks"
        ),
        ErrorCase(
            text: #"path "a" { policy = "admin" }"#,
            line: 1,
            column: 21,
            message: "'policy' must be one of deny, read, write, sudo"
        ),
        ErrorCase(
            text: #"path "a" { capabilities = "read" }"#,
            line: 1,
            column: 27,
            message: "'capabilities' must be a list, found a string"
        ),
        ErrorCase(
            text: #"path "a" { allowed_parameters = { "k" = "v" } }"#,
            line: 1,
            column: 41,
            message: "each parameter in 'allowed_parameters' must be a list of values, found a string"
        ),
        ErrorCase(
            text: #"path "a" { capabilities = ["read" "list"] }"#,
            line: 1,
            column: 35,
            message: "expected ',' or ']' in list"
        ),
        ErrorCase(
            text: "path \"a\" { capabilities = [\"read\",\n",
            line: 2,
            column: 1,
            message: "missing ']' to close the list opened at line 1, column 27"
        ),
        ErrorCase(text: "/* open comment\npath", line: 1, column: 1, message: "unterminated comment"),
        ErrorCase(
            text: #"path "a" { mfa_methods = ["x"] }"#,
            line: 1,
            column: 12,
            message: #"attribute "mfa_methods" is not supported by Coffer"#
        ),
        ErrorCase(text: #"path "a" "b" { }"#, line: 1, column: 10, message: "found a second label"),
        ErrorCase(text: "path \"a\" { capabilities = [\"read\"] } }", line: 1, column: 38, message: "unexpected '}'"),
        ErrorCase(
            text: "path \"é\" { ! }",
            line: 1,
            column: 12,
            message: "unexpected character; expected a name, a string"
        ),
        ErrorCase(text: "path \"a\" { capabilities = [\"read\"] ", line: 1, column: 36, message: "missing '}'"),
        ErrorCase(
            text: "{\n  \"path\": {\n    \"a\": {\"capabilities\": [\"raed\"]}\n  }\n}",
            line: 3,
            column: 28,
            message: "unknown capability"
        ),
        ErrorCase(
            text: "{\n  \"path\": {\"a\": {\"capabilities\": [\"read\"]}},\n}",
            line: 3,
            column: 1,
            message: "invalid JSON policy"
        ),
        ErrorCase(
            text: #"{"paths": {}}"#,
            line: 1,
            column: 2,
            message: "unknown top-level block or attribute"
        ),
        ErrorCase(text: "path \"a\" { capabilities = [\"a\\q\"] }", line: 1, column: 30, message: "invalid escape"),
    ]

    @Test(arguments: errorCases)
    func syntaxErrors(_ expected: ErrorCase) {
        do {
            let policy = try Policy.parse(name: "p", text: expected.text)
            Issue.record("parsed without error: \(policy.rules)")
        } catch {
            #expect(error.line == expected.line && error.column == expected.column, "\(error)")
            #expect(error.message.contains(expected.message), "\(error)")
            #expect(error.description.contains("line \(expected.line), column \(expected.column)"))
        }
    }

    @Test func emptyPoliciesAreValid() throws {
        for text in ["", "  \n", "# nothing here\n// nor here\n/* at all */", "{}", #"name = "x""#] {
            #expect(try Policy.parse(name: "empty", text: text).rules.isEmpty)
        }
    }

    @Test func parsesTheFullSubset() throws {
        let text = """
            # A realistic policy
            path "secret/data/*" {
              capabilities = ["create", "read", "update", "patch", "delete", "list",]
              allowed_parameters = {
                "Color" = ["red", "bl*", 5, true, ["x"]]
                size = []
                "*" = []
              }
              denied_parameters {
                "secret" = []
              }
              required_parameters = ["owner"]
              min_wrapping_ttl = "1s"
              max_wrapping_ttl = 3600
              comment = <<EOT
            Heredocs are accepted
            EOT
            }
            path "/sys/mounts" { policy = "sudo" } // leading slash stripped
            path "esc\\"aped\\u00e9" { capabilities = ["deny", "read"] }
            """
        let policy = try Policy.parse(name: "full", text: text)
        #expect(policy.raw == text)
        #expect(policy.name == "full")
        #expect(
            policy.rules == [
                PathRule(
                    path: "secret/data/*",
                    capabilities: [.create, .read, .update, .patch, .delete, .list],
                    allowedParameters: ["color": ["red", "bl*", .number("5"), true, ["x"]], "size": [], "*": []],
                    deniedParameters: ["secret": []],
                    requiredParameters: ["owner"],
                    minWrappingTTL: 1,
                    maxWrappingTTL: 3600
                ),
                PathRule(path: "sys/mounts", capabilities: [.create, .read, .update, .delete, .list, .sudo]),
                PathRule(path: "esc\"aped\u{e9}", capabilities: .deny),
            ]
        )
    }

    @Test func legacyPolicyMapping() throws {
        let cases: [(String, Capabilities)] = [
            ("deny", .deny),
            ("read", [.read, .list]),
            ("write", [.read, .list, .create, .update, .delete]),
            ("sudo", [.read, .list, .create, .update, .delete, .sudo]),
        ]
        for (legacy, expected) in cases {
            let policy = try Policy.parse(name: "p", text: "path \"a\" { policy = \"\(legacy)\" }")
            #expect(policy.rules.first?.capabilities == expected, "policy = \(legacy)")
        }
        let mixed = try Policy.parse(name: "p", text: #"path "a" { policy = "deny" capabilities = ["read"] }"#)
        #expect(mixed.rules.first?.capabilities == .deny)
    }

    @Test func hclAndJSONFormsGiveIdenticalACLs() throws {
        let hcl = """
            path "secret/*" { capabilities = ["read", "list"] }
            path "secret/+/config" {
              capabilities = ["update"]
              allowed_parameters = { "ttl" = ["1h", "2h"], "*" = [] }
              denied_parameters = { "root" = [] }
              required_parameters = ["ttl"]
            }
            path "sys/*" { policy = "deny" }
            path "secret/*" { capabilities = ["create"] }
            """
        let json = """
            {
              "path": {
                "secret/*": {"capabilities": ["read", "list", "create"]},
                "secret/+/config": {
                  "capabilities": ["update"],
                  "allowed_parameters": {"ttl": ["1h", "2h"], "*": []},
                  "denied_parameters": {"root": []},
                  "required_parameters": ["ttl"]
                },
                "sys/*": {"policy": "deny"}
              }
            }
            """
        let fromHCL = ACL(policies: [try Policy.parse(name: "h", text: hcl)])
        let fromJSON = ACL(policies: [try Policy.parse(name: "j", text: json)])
        #expect(fromHCL.mergedRules == fromJSON.mergedRules)
        #expect(fromHCL.mergedRules.count == 3)
        // The JSON list form is accepted too.
        let list = #"{"path": [{"secret/*": {"capabilities": ["read"]}}, {"sys/*": {"capabilities": ["deny"]}}]}"#
        #expect(try Policy.parse(name: "l", text: list).rules.map(\.path) == ["secret/*", "sys/*"])
    }

    @Test func capabilityNames() {
        #expect(Capabilities(name: "read") == .read)
        #expect(Capabilities(name: "Read") == nil)
        #expect(Capabilities(name: "root") == nil)
        #expect(Capabilities(name: "scan") == nil)
        let all: Capabilities = [.create, .read, .update, .patch, .delete, .list, .sudo, .deny]
        #expect(all.names == ["create", "delete", "deny", "list", "patch", "read", "sudo", "update"])
        #expect(Capabilities.root.names == ["root"])
        #expect(Capabilities().names.isEmpty)
    }
}
