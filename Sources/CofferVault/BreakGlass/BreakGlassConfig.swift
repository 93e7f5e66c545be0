package import CofferCore
package import CofferFramework

/// One break-glass configuration, `sys/break-glass/config/<name>`: the emergency policy set, its
/// time box, who may ask for it and who must approve. Stored in the barrier at
/// `sys/break-glass/config/<name>` (docs/break-glass.md).
package struct BreakGlassConfig: Sendable, Equatable {
    /// The longest time box a configuration may set: a day. Longer access is not an emergency.
    package static let maximumTTL: Int64 = 24 * 3600
    /// The default and the longest time a request may wait for approvals and its claim.
    package static let defaultRequestTTL: Int64 = 3600
    package static let maximumRequestTTL: Int64 = 7 * 24 * 3600
    /// The most approvals a configuration may require, and entries a list may hold.
    package static let maximumApprovals = 32
    package static let maximumListEntries = 64

    package var name: String
    /// The policies the emergency token gets (with "default").
    package var policies: [String] = []
    /// The time box: the token's TTL and explicit max TTL, in seconds.
    package var maxTTL: Int64 = 0
    /// A caller may activate when its token or identity carries one of these policies, or its
    /// entity is one of these.
    package var requesterPolicies: [String] = []
    package var requesterEntityIDs: [String] = []
    /// How many distinct approvers must approve before the token can be claimed (0: none).
    package var approvalsRequired = 0
    package var approverPolicies: [String] = []
    package var approverEntityIDs: [String] = []
    /// How long a request waits for its approvals and its claim before it lapses, in seconds.
    package var requestTTL: Int64 = BreakGlassConfig.defaultRequestTTL

    package init(name: String) {
        self.name = name
    }

    /// The stored form, which is also the `data` of a read.
    var json: JSONValue { .object(readData) }

    init(json: JSONValue) throws(CofferError) {
        guard let name = json["name"]?.stringValue, let maxTTL = json["max_ttl"]?.intValue else {
            throw CofferError(.integrity, "a stored break-glass configuration is malformed")
        }
        func strings(_ key: String) -> [String] { (json[key]?.arrayValue ?? []).compactMap(\.stringValue) }
        self.name = name
        self.maxTTL = Int64(maxTTL)
        self.policies = strings("policies")
        self.requesterPolicies = strings("requester_policies")
        self.requesterEntityIDs = strings("requester_entity_ids")
        self.approvalsRequired = json["approvals_required"]?.intValue ?? 0
        self.approverPolicies = strings("approver_policies")
        self.approverEntityIDs = strings("approver_entity_ids")
        self.requestTTL = Int64(json["request_ttl"]?.intValue ?? Int(BreakGlassConfig.defaultRequestTTL))
    }

    /// The fields `sys/break-glass/config/<name>` takes.
    static let fields: [Field] = [
        .strings("policies"), .duration("max_ttl"), .strings("requester_policies"),
        .strings("requester_entity_ids"), .int("approvals_required", 0...BreakGlassConfig.maximumApprovals),
        .strings("approver_policies"), .strings("approver_entity_ids"), .duration("request_ttl"),
    ]

    /// Applies the fields given (a write to an existing configuration changes only those) and checks
    /// the result as a whole. Throws an invalid-argument error saying what is wrong and how to fix it.
    mutating func apply(_ f: FieldData) throws(CofferError) {
        if let list = f.strings("policies") { policies = try Self.policyNames(list, field: "policies") }
        if let seconds = f.seconds("max_ttl") { maxTTL = seconds }
        if let list = f.strings("requester_policies") {
            requesterPolicies = try Self.policyNames(list, field: "requester_policies")
        }
        if let list = f.strings("requester_entity_ids") {
            requesterEntityIDs = try Self.ids(list, field: "requester_entity_ids")
        }
        if let n = f.int("approvals_required") { approvalsRequired = n }
        if let list = f.strings("approver_policies") {
            approverPolicies = try Self.policyNames(list, field: "approver_policies")
        }
        if let list = f.strings("approver_entity_ids") {
            approverEntityIDs = try Self.ids(list, field: "approver_entity_ids")
        }
        if let seconds = f.seconds("request_ttl") { requestTTL = seconds }
        try validate()
    }

    func validate() throws(CofferError) {
        guard !policies.isEmpty else {
            throw CofferError.invalid("policies is required: the policies the emergency token is granted")
        }
        if policies.contains("root") {
            throw CofferError.invalid(
                "policies may not include root: break-glass grants a named policy set (use sys/generate-root for a root token)"
            )
        }
        guard maxTTL > 0, maxTTL <= BreakGlassConfig.maximumTTL else {
            throw CofferError.invalid(
                "max_ttl is required: the time box of the emergency token, from 1s to 24h (e.g. \"2m\")"
            )
        }
        guard requestTTL > 0, requestTTL <= BreakGlassConfig.maximumRequestTTL else {
            throw CofferError.invalid("request_ttl must be from 1s to 168h (how long a request waits for approval)")
        }
        guard !requesterPolicies.isEmpty || !requesterEntityIDs.isEmpty else {
            throw CofferError.invalid(
                "set requester_policies or requester_entity_ids: who may activate this break-glass configuration"
            )
        }
        if approvalsRequired > 0 {
            guard !approverPolicies.isEmpty || !approverEntityIDs.isEmpty else {
                throw CofferError.invalid(
                    "approvals_required is \(approvalsRequired): set approver_policies or approver_entity_ids"
                )
            }
            if approverPolicies.isEmpty, approverEntityIDs.count < approvalsRequired {
                throw CofferError.invalid(
                    "approvals_required is \(approvalsRequired) but only \(approverEntityIDs.count) approver entity ids are listed; no request could ever be approved"
                )
            }
        }
    }

    /// Normalised policy names, at most ``maximumListEntries``.
    static func policyNames(_ list: [String], field: String) throws(CofferError) -> [String] {
        guard list.count <= maximumListEntries else {
            throw CofferError.invalid("\(field) may list at most \(maximumListEntries) policies")
        }
        var out: [String] = []
        for name in list {
            do throws(CofferError) {
                out.append(try PolicyStore.normalize(name))
            } catch {
                throw CofferError.invalid("\(field): \(error.message)")
            }
        }
        return Array(Set(out)).sorted()
    }

    static func ids(_ list: [String], field: String) throws(CofferError) -> [String] {
        guard list.count <= maximumListEntries else {
            throw CofferError.invalid("\(field) may list at most \(maximumListEntries) entity ids")
        }
        for id in list where id.isEmpty || id.utf8.count > 128 || id.contains("/") {
            throw CofferError.invalid("\(field) holds an id that is empty, longer than 128 bytes or contains '/'")
        }
        return Array(Set(list)).sorted()
    }

    /// A configuration name: 1 to 128 letters, digits, '-', '_' or '.'.
    static func checkName(_ name: String) throws(CofferError) {
        func allowed(_ c: UInt8) -> Bool {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                true
            default: false
            }
        }
        guard !name.isEmpty, name.utf8.count <= 128, name.utf8.allSatisfy(allowed) else {
            throw CofferError.invalid(
                "a break-glass configuration name is 1 to 128 letters, digits, '-', '_' or '.'"
            )
        }
    }

    /// The `data` of a read.
    var readData: [String: JSONValue] {
        [
            "name": .string(name), "policies": .strings(policies), "max_ttl": .int(maxTTL),
            "requester_policies": .strings(requesterPolicies), "requester_entity_ids": .strings(requesterEntityIDs),
            "approvals_required": .int(approvalsRequired), "approver_policies": .strings(approverPolicies),
            "approver_entity_ids": .strings(approverEntityIDs), "request_ttl": .int(requestTTL),
        ]
    }
}

extension JSONValue {
    static func strings(_ values: [String]) -> JSONValue { .array(values.map { .string($0) }) }
}
