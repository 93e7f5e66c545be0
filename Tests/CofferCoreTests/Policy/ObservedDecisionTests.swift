import CofferCore
import Testing

/// Coffer's ACL against the decisions observed on OpenBao v2.7.2 (see PolicyFixtures/ObservedOpenBao.swift).
@Suite("Decisions observed on OpenBao")
struct ObservedDecisionTests {
    static let policies: [String: Policy] = {
        var result: [String: Policy] = [:]
        for (name, hcl) in observedPolicies {
            // A fixture that fails to parse is reported by `fixturesParse`; skip it here.
            if let policy = try? Policy.parse(name: name, text: hcl) { result[name] = policy }
        }
        return result
    }()

    static func acl(_ names: [String]) -> ACL { ACL(policies: names.compactMap { policies[$0] }) }

    @Test func fixturesParse() throws {
        for (name, hcl) in observedPolicies {
            _ = try Policy.parse(name: name, text: hcl)
        }
    }

    @Test(arguments: observedCapabilities)
    func capabilities(_ observed: ObservedCapabilities) {
        #expect(Self.acl(observed.policies).capabilityNames(path: observed.path) == observed.capabilities)
    }

    @Test(arguments: observedWrites)
    func writes(_ observed: ObservedWrite) throws {
        let data = try #require(JSONValue.parse(observed.body).objectValue)
        let acl = Self.acl(observed.policies)
        // kv v1 checks `create` for a new key and `update` for an existing one; the fixtures grant both.
        #expect(acl.allowOperation(.update, path: observed.path, data: data).allowed == observed.allowed)
        #expect(acl.allowOperation(.create, path: observed.path, data: data).allowed == observed.allowed)
    }
}
