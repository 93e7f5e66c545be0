import Foundation
import Testing

@testable import Raft

/// Runs every script in testdata/: each block is a command, `----`, and the output it must print.
/// `RAFT_REWRITE=1 swift test --filter RaftTests` rewrites the files with the actual output (then review
/// the diff: the golden output must show correct Raft behaviour, not merely what the code did).
@Suite struct InteractionTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "testdata"
    )

    static var scripts: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".txt") }.sorted()
    }

    @Test func everyScenarioTheBriefNamesHasAScript() {
        for name in [
            "election.txt", "prevote_rejoin.txt", "checkquorum_step_down.txt", "replication_lagging_follower.txt",
            "snapshot_far_behind.txt", "learner_promotion.txt", "remove_node.txt", "transfer_leadership.txt",
            "read_index.txt",
        ] {
            #expect(Self.scripts.contains(name), "missing testdata/\(name)")
        }
    }

    @Test(arguments: scripts) func script(_ name: String) throws {
        let url = Self.directory.appendingPathComponent(name)
        let text = try String(contentsOf: url, encoding: .utf8)
        let rewrite = ProcessInfo.processInfo.environment["RAFT_REWRITE"] == "1"
        let env = InteractionEnv()
        var rewritten: [String] = []
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)[...]
        var failures = 0
        while let line = lines.popFirst() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") {
                rewritten.append(line)
                continue
            }
            let lineNumber = lines.startIndex
            let separator = lines.popFirst()
            #expect(separator == "----", "\(name):\(lineNumber): a command must be followed by ----")
            var expected: [String] = []
            while let next = lines.first, !next.isEmpty {
                expected.append(next)
                lines.removeFirst()
            }
            let words = trimmed.split(separator: " ").map(String.init)
            let actual = env.run(words[0], Array(words.dropFirst()))
            rewritten += [line, "----", actual]
            if actual != expected.joined(separator: "\n") && !rewrite {
                failures += 1
                Issue.record(
                    "\(name):\(lineNumber): `\(trimmed)` printed:\n\(actual)\n--- but the script expects:\n\(expected.joined(separator: "\n"))"
                )
                if failures >= 3 { return }
            }
        }
        if rewrite {
            var out = rewritten.joined(separator: "\n")
            if !out.hasSuffix("\n") { out += "\n" }
            try out.write(to: url, atomically: true, encoding: .utf8)
        }
    }
}
