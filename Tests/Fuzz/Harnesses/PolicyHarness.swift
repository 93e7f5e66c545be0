import CofferCore

extension FuzzHarness {
    /// `Policy.parse` (HCL and JSON policies, the same reader as cofferd's configuration file), and
    /// the ACL compiled from what parses.
    ///
    /// Checks that a syntax error's line and column lie inside the text, and that a policy that parses
    /// compiles and answers ACL questions for the paths it names.
    public static let policy = FuzzHarness(
        name: "policy",
        summary: "Policy.parse (HCL and JSON policies) and the ACL built from them"
    ) { input in
        let text = String(decoding: input, as: UTF8.self)
        let policy: Policy
        do throws(PolicySyntaxError) {
            policy = try Policy.parse(name: "fuzz", text: text)
        } catch {
            let shape = TextShape(text)
            guard shape.contains(line: error.line, column: error.column) else {
                return "syntax error at line \(error.line), column \(error.column) is outside the text "
                    + "(\(shape.lines) lines, longest \(shape.longestLine))"
            }
            return nil
        }
        let acl = ACL(policies: [policy])
        let data: [String: JSONValue] = ["a": "b", "list": ["x", 1, true, .null], "n": 5, "o": ["k": "v"]]
        for rule in policy.rules.prefix(16) {
            var path = rule.path
            if path.hasSuffix("*") { path.removeLast() }
            path = path.split(separator: "/", omittingEmptySubsequences: false)
                .map { $0 == "+" ? "seg" : String($0) }.joined(separator: "/")
            _ = acl.capabilities(path: path)
            for op in PolicyOperation.allCases {
                _ = acl.allowOperation(op, path: path, data: data)
                _ = acl.allowOperation(op, path: path + "x/y", data: nil)
            }
            for (_, values) in rule.allowedParameters.prefix(4) {
                for value in values.prefix(4) {
                    _ = acl.allowOperation(.update, path: path, data: ["a": value, "A": value])
                }
            }
        }
        return nil
    }
}
