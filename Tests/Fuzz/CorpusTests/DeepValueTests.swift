import Testing

/// Values at the JSON nesting limit through the engines' recursive code (KV v2 merge-patch and
/// subkeys, KV v1, responses and storage round trips), on a 512 KiB stack in a debug build, through
/// `handleWire` as `coffer_request` and cofferd call it (issue 13 item 1).
@Suite("Deep values through the engines")
struct DeepValueTests {
    static let limit = JSONValue.maximumDepth
    /// What one request at the limit may use of a 512 KiB stack (the rest is the caller's).
    static let stackBudget = 384 * 1024

    static func nestedObjects(_ depth: Int, leaf: String = "{}") -> String {
        String(repeating: #"{"a":"#, count: depth - 1) + leaf + String(repeating: "}", count: depth - 1)
    }

    final class Answers {
        var statuses: [Int] = []
        var bodies: [String] = []
    }

    /// Sends each request on a painted 8 MiB stack (measuring it), then again on a 512 KiB stack (so a
    /// write makes two versions); the answers kept are those of the second run.
    func send(_ vault: Vault, _ requests: [(String, String, String)]) -> Answers {
        let answers = Answers()
        for (method, path, body) in requests {
            let work = {
                let (status, bytes) = vault.core.handleWire(
                    method: method,
                    path: path,
                    token: "root",
                    body: Array(body.utf8)
                )
                answers.statuses.append(status)
                answers.bodies.append(String(decoding: bytes ?? [], as: UTF8.self))
            }
            let used = StackProbe.run(stackSize: 8 << 20, work)
            print("stack: \(method) \(path): \(used / 1024) KiB")
            #expect(used <= Self.stackBudget, "\(method) \(path) used \(used / 1024) KiB of stack")
            answers.statuses.removeLast()
            answers.bodies.removeLast()
            if used <= Self.stackBudget {
                _ = StackProbe.run(stackSize: 512 * 1024, work)
            } else {
                answers.statuses.append(0)
                answers.bodies.append("not run on a 512 KiB stack")
            }
        }
        return answers
    }

    @Test func kvValuesAtTheLimitRoundTripOnASmallStack() throws {
        let (vault, _) = try Vault.openDev()
        defer { vault.close() }
        #expect(
            vault.core.handleWire(
                method: "POST",
                path: "sys/mounts/kv",
                token: "root",
                body: Array(#"{"type":"kv"}"#.utf8)
            ).status == 204
        )
        // KV v2 bodies wrap the secret in {"data": ...}: the secret may nest one level less.
        let secret = Self.nestedObjects(Self.limit - 1, leaf: #"{"x":1}"#)
        let patch = Self.nestedObjects(Self.limit - 1, leaf: #"{"x":null,"y":2}"#)
        let answers = send(
            vault,
            [
                ("PUT", "secret/data/deep", #"{"data":"# + secret + "}"),
                ("GET", "secret/data/deep", ""),
                ("PATCH", "secret/data/deep", #"{"data":"# + patch + "}"),
                ("GET", "secret/data/deep", ""),
                ("GET", "secret/subkeys/deep", ""),
                ("GET", "secret/subkeys/deep?depth=300", ""),
                ("PUT", "kv/deep", Self.nestedObjects(Self.limit, leaf: #"{"x":1}"#)),
                ("GET", "kv/deep", ""),
            ]
        )
        #expect(
            answers.statuses == [200, 200, 200, 200, 200, 200, 204, 200],
            "\(answers.bodies.map { $0.prefix(200) })"
        )
        let innermost = String(repeating: "}", count: 20)
        #expect(answers.bodies[1].contains(#"{"x":1}"# + innermost))
        #expect(answers.bodies[3].contains(#"{"y":2}"# + innermost), "merge-patch removed x and added y at the bottom")
        #expect(answers.bodies[4].contains(#"{"y":null}"# + innermost), "subkeys keeps the shape, values null")
        #expect(answers.bodies[7].contains(#"{"x":1}"# + innermost))
    }

    @Test func kvValuesPastTheLimitAre400s() throws {
        let (vault, _) = try Vault.openDev()
        defer { vault.close() }
        let deep = #"{"data":"# + Self.nestedObjects(Self.limit) + "}"
        let bomb = #"{"data":"# + String(repeating: "[", count: 100_000) + "}"
        let answers = send(
            vault,
            [
                ("PUT", "secret/data/deep", deep),
                ("PUT", "secret/data/bomb", bomb),
                ("PUT", "secret/data/fine", #"{"data":{"a":1}}"#),
                ("PATCH", "secret/data/fine", deep),
                ("GET", "secret/data/fine", ""),
            ]
        )
        #expect(answers.statuses == [400, 400, 200, 400, 200], "\(answers.bodies.map { $0.prefix(200) })")
        #expect(answers.bodies[0].contains("nesting deeper than \(Self.limit)"))
        #expect(answers.bodies[4].contains(#""data":{"a":1}"#), "the refused patch changed nothing")
    }

    /// `{"a": {"a": … {"x": 1} … }}`, `depth` levels, built in Swift.
    static func nested(_ depth: Int) -> JSONValue {
        var value: JSONValue = ["x": 1]
        for _ in 1..<depth { value = ["a": value] }
        return value
    }

    /// Values built in Swift have no parser to limit them: the core refuses them before the audit
    /// hashing, storage and engines walk them (which could overflow the stack), and before storing
    /// something that could not be read back.
    @Test func swiftValuesNestedPastTheLimitAreRefusedBeforeAnythingWalksThem() throws {
        let (vault, _) = try Vault.openDev()
        defer { vault.close() }
        let kv = vault.kv(token: "root")
        // KVClient.put sends {"data": {"d": value}}: the request is level 1, so `value` may nest 254 levels.
        let atLimit = Self.nested(Self.limit - 2)
        #expect(try kv.put("fine", ["d": atLimit]) == 1)
        #expect(try kv.get("fine")?.data["d"] == atLimit)
        do {
            try kv.put("deep", ["d": Self.nested(Self.limit - 1)])
            Issue.record("a value nested past the limit was stored")
        } catch {
            #expect(
                error.code == .invalidArgument && error.message.contains("more than \(Self.limit) levels"),
                "\(error)"
            )
        }
        #expect(try kv.get("deep") == nil)
        // Far past the limit, on a 512 KiB stack: refused without recursing into it.
        let bomb = Self.nested(1000)
        final class Outcome { var error: CofferError? }
        let outcome = Outcome()
        let used = StackProbe.run(stackSize: 512 * 1024) {
            do throws(CofferError) {
                _ = try vault.core.handle(Request(.update, "secret/data/bomb", data: ["data": bomb], token: "root"))
            } catch {
                outcome.error = error
            }
        }
        #expect(outcome.error?.code == .invalidArgument, "\(String(describing: outcome.error))")
        #expect(used <= Self.stackBudget)
    }
}
