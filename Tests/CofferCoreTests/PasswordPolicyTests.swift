import Testing

/// `sys/policies/password/*`, with OpenBao 2.7.2's statuses and texts (checked against `bao server -dev`).
@Suite struct PasswordPolicyTests {
    let policy = """
        length = 24
        rule "charset" {
          charset = "abcdefghijklmnopqrstuvwxyz"
        }
        rule "charset" {
          charset = "0123456789"
          min-chars = 3
        }
        """

    @Test func generatedPasswordsFollowTheRules() throws {
        let parsed = try PasswordPolicy(hcl: policy)
        for _ in 0..<200 {
            let password = try parsed.generate()
            #expect(password.count == 24)
            #expect(password.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber) })
            #expect(password.filter(\.isNumber).count >= 3)
        }
    }

    @Test func theAPIStoresReadsListsGeneratesAndDeletes() throws {
        let (core, result) = try makeCore()
        let root = result.rootToken
        #expect(
            try core.call(.update, "sys/policies/password/pgpol", ["policy": .string(policy)], token: root).status
                == 204
        )
        #expect(try core.call(.read, "sys/policies/password/pgpol", token: root).data?["policy"]?.stringValue == policy)
        #expect(try core.call(.list, "sys/policies/password", token: root).data?["keys"] == ["pgpol"])
        let password = try core.call(.read, "sys/policies/password/pgpol/generate", token: root).data?["password"]?
            .stringValue
        #expect(password?.count == 24)
        #expect(try core.call(.delete, "sys/policies/password/pgpol", token: root).status == 204)
        expectError(.notFound, containing: "policy does not exist") {
            try core.call(.read, "sys/policies/password/pgpol/generate", token: root)
        }
    }

    @Test func badPoliciesAreRefusedWithOpenBaosWords() throws {
        let (core, result) = try makeCore()
        let cases: [(String, String)] = [
            ("length = 3\nrule \"charset\" {\n charset = \"abc\"\n}", "passwords must be between 4 and 100 characters"),
            (
                "length = 500\nrule \"charset\" {\n charset = \"abc\"\n}",
                "passwords must be between 4 and 100 characters"
            ),
            (
                "length = 8\nrule \"charset\" {\n charset = \"abc\"\n min-chars = 9\n}",
                "invalid password policy: specified rules require at least 9 characters but 8 is specified"
            ),
            ("length = 8", "invalid password policy: no charset specified"),
            (
                "length = 8\nrule \"charset\" {\n charset = \"a\"\n min-chars = 9223372036854775807\n}\nrule \"charset\" {\n charset = \"b\"\n min-chars = 9223372036854775807\n}",
                "invalid password policy: specified rules require at least"
            ),
            ("nonsense {", "invalid password policy: unable to decode"),
        ]
        for (text, message) in cases {
            expectError(.invalidArgument, containing: message) {
                try core.call(.update, "sys/policies/password/bad", ["policy": .string(text)], token: result.rootToken)
            }
        }
        expectError(.invalidArgument, containing: "missing policy") {
            try core.call(.update, "sys/policies/password/bad", token: result.rootToken)
        }
    }
}
