import CofferCore
import Foundation
import Testing

/// Nesting limits of every recursive parser (issue 13 item 1): input nested past the limit is a 400
/// that names the line and column (or byte) and never quotes the input; input at the limit is
/// accepted and everything that walks it recursively fits in a 512 KiB thread stack, in this debug
/// build (the largest frames Coffer will see), through the Swift API and the wire entry that
/// `coffer_request` and cofferd use.
@Suite("Nesting limits")
struct NestingLimitTests {
    static let limit = HCLReader.maximumDepth
    static let jsonLimit = JSONValue.maximumDepth
    /// What a request at the limit may use of a 512 KiB stack: the rest is left to the frames of
    /// whatever calls Coffer (an HTTP server's handler, a C program).
    static let stackBudget = 384 * 1024
    static let smallStack = 512 * 1024

    /// `path "a" { x = [[[…]]] }`: the crash input of the issue (about 40 KB), brackets left open.
    static let bracketBomb = #"path "a" { x = "# + String(repeating: "[", count: 20_000)
    /// `path "a" { x { x { …`: blocks instead of lists.
    static let blockBomb = #"path "a" "# + String(repeating: "{ x ", count: 10_000)

    /// The 1-based column of the bracket that opens level `limit + 1` when `prefix` is followed by
    /// one bracket per level and `prefix` itself opens `levelsInPrefix` levels.
    static func refusedColumn(prefix: String, levelsInPrefix: Int, bracketWidth: Int = 1) -> Int {
        prefix.unicodeScalars.count + (limit - levelsInPrefix) * bracketWidth + 1
    }

    /// The syntax error `text` must give.
    func policyError(_ text: String) throws -> PolicySyntaxError {
        switch Result(catching: { () throws(PolicySyntaxError) in try Policy.parse(name: "deep", text: text) }) {
        case .failure(let error):
            return error
        case .success(let policy):
            Issue.record("parsed without an error: \(policy.rules.count) rules")
            throw CancellationError()
        }
    }

    @Test func policyNestedPastTheLimitIsASyntaxErrorNamingLineAndColumn() throws {
        let lists = try policyError(Self.bracketBomb)
        #expect(lists.line == 1)
        #expect(lists.column == Self.refusedColumn(prefix: #"path "a" { x = "#, levelsInPrefix: 1))
        #expect(lists.message.contains("nest too deeply") && lists.message.contains("\(Self.limit) levels"), "\(lists)")

        let blocks = try policyError(Self.blockBomb)
        #expect(blocks.line == 1)
        #expect(blocks.column == Self.refusedColumn(prefix: #"path "a" "#, levelsInPrefix: 0, bracketWidth: 4))
        #expect(blocks.message.contains("nest too deeply"))

        // One bracket per line: the line number counts too.
        let multiLine = try policyError("path \"a\" {\n  x =\n" + String(repeating: "[\n", count: 400))
        #expect(multiLine.line == 2 + Self.limit && multiLine.column == 1, "\(multiLine)")

        // JSON policies go through the JSON parser first, whose limit is the same.
        let json = try policyError(#"{"path": {"a": {"x": "# + String(repeating: "[", count: 300))
        #expect(json.line == 1 && json.message.contains("nesting deeper than \(Self.jsonLimit)"), "\(json)")
    }

    @Test func nestingUpToTheLimitParses() throws {
        // The path block is level 1, `allowed_parameters` level 2, the value list level 3.
        let inner = Self.limit - 3
        let value = String(repeating: "[", count: inner) + String(repeating: "]", count: inner)
        let text = #"path "a" { capabilities = ["update"] allowed_parameters = { "k" = ["# + value + "] } }"
        let policy = try Policy.parse(name: "deep", text: text)
        var parameter = try #require(policy.rules.first?.allowedParameters["k"]?.first)
        var depth = 0
        while case .array(let elements) = parameter {
            depth += 1
            guard let first = elements.first else { break }
            parameter = first
        }
        #expect(depth == inner)
        #expect(throws: PolicySyntaxError.self) {
            _ = try Policy.parse(name: "deep", text: text.replacingOccurrences(of: "\"k\" = [", with: "\"k\" = [["))
        }
    }

    /// cofferd's configuration file is read by the same HCL reader.
    @Test func serverStyleHCLIsLimitedToo() throws {
        let text = "listener \"tcp\" {\n  address = " + String(repeating: "[", count: 5_000) + "\n}\n"
        #expect {
            _ = try HCLReader.parse(text)
        } throws: { error in
            guard let error = error as? PolicySyntaxError else { return false }
            return error.line == 2 && error.column == Self.refusedColumn(prefix: "  address = ", levelsInPrefix: 1)
        }
    }

    @Test func errorsNeverQuoteThePolicyText() throws {
        let marker = "Zq7MarkerValue"
        let texts = [
            "path \"a\" { \(marker) }",
            "path \"a\" { capabilities = [\"\(marker)\"] }",
            "path \"a\" { policy = \"\(marker)\" }",
            "path \"a\" { \(marker) = [] }",
            "path \"a\" { capabilities \"\(marker)\" = [] }",
            "path \"a\" { allowed_parameters = { \"\(marker)\" = \"x\" } }",
            "path \"a\" { allowed_parameters = { \"\(marker)\" \"b\" = [] } }",
            "path \"\(marker)*x\" { capabilities = [\"read\"] }",
            "path \"\(marker)+*\" { capabilities = [\"read\"] }",
            "path \"a\" \"\(marker)\" { }",
            "path \"a\" { capabilities = [\"read\" \"\(marker)\"] }",
            "\(marker) \"a\" { }",
            "path \"a\" { capabilities = [\(marker)] }",
            "path \"a\" { capabilities = [\"\\q\(marker)\"] }",
            "path \"a\" = \"\(marker)\"",
            "path \"a\" { comment = <<\(marker)\nnever closed\n",
            "path \"a\" { x = 1 } \"\(marker)\" \"b\" = 1",
            "{\"path\": {\"a\": {\"\(marker)\": 1}}}",
            "{\"path\": {\"a\": {\"capabilities\": [\"\(marker)\"]}}} \(marker)",
            "{\"\(marker)\": {}}",
            "path \"a\" { capabilities = [\"read\"] } !\(marker)",
        ]
        for text in texts {
            let error = try policyError(text)
            #expect(!error.description.contains(marker), "\(error)")
            #expect(!error.description.contains(String(marker.prefix(5))), "\(error)")
        }
        for body in [#"{"a": "# + marker, #"{"a": "\q"# + marker + #""}"#, #"{"a": x"# + marker + "}"] {
            #expect {
                _ = try JSONValue.parse(body)
            } throws: { error in
                !"\(error)".contains(String(marker.prefix(5)))
            }
        }
    }

    // MARK: Through the request path

    func answer(_ core: Core, _ method: String, _ path: String, _ body: String, token: String?) -> (Int, String) {
        let (status, bytes) = core.handleWire(method: method, path: path, token: token, body: Array(body.utf8))
        return (status, String(decoding: bytes ?? [], as: UTF8.self))
    }

    func policyBody(_ text: String) -> String { JSONValue.object(["policy": .string(text)]).jsonString }

    @Test func deepPoliciesAre400sThroughHandleAndTheWireAndTheCoreLivesOn() throws {
        let (core, result) = try makeCore()
        let root = result.rootToken
        // Through the Swift API (Core.handle, what Vault.handle calls).
        for (name, text) in [("lists", Self.bracketBomb), ("blocks", Self.blockBomb)] {
            expectError(.invalidArgument, containing: "line 1, column") {
                try core.call(.update, "sys/policies/acl/\(name)", ["policy": .string(text)], token: root)
            }
        }
        // Through handleWire, what coffer_request and cofferd call: an HTTP 400 naming the place.
        let column = Self.refusedColumn(prefix: #"path "a" { x = "#, levelsInPrefix: 1)
        let (status, body) = answer(core, "PUT", "sys/policies/acl/deep", policyBody(Self.bracketBomb), token: root)
        #expect(status == 400)
        #expect(body.contains("line 1, column \(column)") && body.contains("nest too deeply"), "\(body.prefix(300))")
        #expect(!body.contains("[[["))
        let (legacyStatus, legacyBody) = answer(core, "PUT", "sys/policy/deep", policyBody(Self.blockBomb), token: root)
        #expect(legacyStatus == 400 && legacyBody.contains("line 1, column"), "\(legacyBody.prefix(300))")
        // Nothing was stored, and the core answers the next request.
        #expect(answer(core, "GET", "sys/policies/acl/deep", "", token: root).0 == 404)
        #expect(
            answer(
                core,
                "PUT",
                "sys/policies/acl/fine",
                policyBody(#"path "a" { capabilities = ["read"] }"#),
                token: root
            ).0 == 204
        )
        #expect(answer(core, "GET", "sys/policies/acl/fine", "", token: root).0 == 200)
    }

    @Test func deepJSONBodiesAre400sNamingTheByte() throws {
        let (core, result) = try makeCore()
        let depth = Self.jsonLimit + 1
        let body = #"{"a":"# + String(repeating: "[", count: depth - 1) + String(repeating: "]", count: depth - 1) + "}"
        let (status, text) = answer(core, "PUT", "echo/deep", body, token: result.rootToken)
        #expect(status == 400)
        // The bracket that opens level 257 is at byte 5 + 255.
        #expect(
            text.contains("at byte \(5 + Self.jsonLimit - 1)")
                && text.contains("nesting deeper than \(Self.jsonLimit)"),
            "\(text)"
        )
        #expect(answer(core, "GET", "echo/deep", "", token: result.rootToken).0 == 404)
    }

    // MARK: Small stacks

    /// A JSON object nested `depth` levels (`{"a":{"a":…{}…}}`), and the same as nested arrays.
    static func nestedObjects(_ depth: Int) -> String {
        String(repeating: #"{"a":"#, count: depth - 1) + "{}" + String(repeating: "}", count: depth - 1)
    }

    static func nestedArrays(_ depth: Int) -> String {
        String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
    }

    /// Runs `work` on a painted 8 MiB stack to measure it, then on a real 512 KiB stack; returns the
    /// bytes used.
    func measure(_ what: String, _ work: @escaping () -> Void) -> Int {
        let used = StackProbe.run(stackSize: 8 << 20, work)
        #expect(
            used <= Self.stackBudget,
            "\(what) used \(used / 1024) KiB of stack, over the \(Self.stackBudget / 1024) KiB budget"
        )
        if used <= Self.stackBudget { _ = StackProbe.run(stackSize: Self.smallStack, work) }
        print("stack: \(what): \(used / 1024) KiB")
        return used
    }

    @Test func parsingAndWalkingValuesAtTheLimitFitsASmallStack() throws {
        let objects = Self.nestedObjects(Self.jsonLimit)
        let arrays = Self.nestedArrays(Self.jsonLimit)
        let value = try JSONValue.parse(objects)
        let copy = try JSONValue.parse(Array(objects.utf8))
        _ = measure("JSON parse, \(Self.jsonLimit) nested objects") { _ = try? JSONValue.parse(objects) }
        _ = measure("JSON parse, \(Self.jsonLimit) nested arrays") { _ = try? JSONValue.parse(arrays) }
        _ = measure("JSON past the limit (refused)") { _ = try? JSONValue.parse(Self.nestedArrays(100_000)) }
        _ = measure("JSON serialise") { _ = value.serialized() }
        _ = measure("JSON compare") { _ = value == copy }
        _ = measure("JSON hash") {
            var hasher = Hasher()
            value.hash(into: &hasher)
            _ = hasher.finalize()
        }
        _ = measure("JSON free") { _ = try? JSONValue.parse(objects) }

        let inner = Self.limit - 3
        let policy =
            #"path "a" { capabilities = ["update"] allowed_parameters = { "k" = ["#
            + Self.nestedArrays(inner) + "] } }"
        _ = measure("policy parse, \(Self.limit) levels") { _ = try? Policy.parse(name: "p", text: policy) }
        _ = measure("policy past the limit (refused)") { _ = try? Policy.parse(name: "p", text: Self.bracketBomb) }
        _ = measure("policy blocks past the limit (refused)") { _ = try? Policy.parse(name: "p", text: Self.blockBomb) }
        let parsed = try Policy.parse(name: "p", text: policy)
        let acl = ACL(policies: [parsed])
        let matching = try JSONValue.parse(Self.nestedArrays(inner))
        #expect(acl.allowOperation(.update, path: "a", data: ["k": matching]).allowed)
        _ = measure("ACL parameter match, \(inner) levels") {
            _ = acl.allowOperation(.update, path: "a", data: ["k": matching])
        }
    }

    /// What a request run on a probe thread answered (expectations are checked back on the test's thread).
    final class Answers {
        var statuses: [String: Int] = [:]
        var bodies: [String: String] = [:]
    }

    @Test func requestsAtTheLimitFitASmallStackWithAuditing() throws {
        let directory = TemporaryDirectory()
        let (core, result) = try makeCore()
        let root = result.rootToken
        let audit = JSONValue.object(["type": "file", "options": ["file_path": .string(directory.file("audit.log"))]])
        #expect(answer(core, "PUT", "sys/audit/file", audit.jsonString, token: root).0 == 204)
        // The request body itself is the outermost level.
        let body = #"{"a":"# + Self.nestedObjects(Self.jsonLimit - 1) + "}"
        let deepPolicy =
            #"path "echo/*" { capabilities = ["create", "read", "update"] allowed_parameters = { "a" = ["#
            + Self.nestedArrays(Self.limit - 3) + "] } }"
        let bomb = #"{"a":"# + Self.nestedArrays(100_000) + "}"
        let answers = Answers()
        let requests: [(String, String, String, String)] = [
            ("PUT a body at the limit, audited", "PUT", "echo/deep", body),
            ("GET it back, audited", "GET", "echo/deep", ""),
            ("PUT a policy at the limit", "PUT", "sys/policies/acl/deep", policyBody(deepPolicy)),
            ("PUT a policy past the limit", "PUT", "sys/policies/acl/bomb", policyBody(Self.bracketBomb)),
            ("PUT a body past the limit", "PUT", "echo/bomb", bomb),
        ]
        for (what, method, path, requestBody) in requests {
            _ = measure("handleWire: \(what)") {
                let (status, text) = self.answer(core, method, path, requestBody, token: root)
                answers.statuses[what] = status
                answers.bodies[what] = String(text.prefix(300))
            }
        }
        let expected = [204, 200, 204, 400, 400]
        for ((what, _, _, _), status) in zip(requests, expected) {
            #expect(answers.statuses[what] == status, "\(what): \(answers.bodies[what] ?? "")")
        }
        #expect(answers.bodies["GET it back, audited"]?.contains(String(repeating: #"{"a":"#, count: 20)) == true)
        try core.flushAudit()
        let log = try String(contentsOfFile: directory.file("audit.log"), encoding: .utf8)
        #expect(log.contains(String(repeating: #"{"a":"#, count: 20)), "the audit log holds the deep request, hashed")
    }
}
