/// A set of ACL capabilities, as granted by a policy path rule or reported by `sys/capabilities`.
///
/// The bit values follow Vault's `DenyCapabilityInt ... PatchCapabilityInt` order. `root` is not a policy
/// capability: it is only a marker that ``ACL/capabilities(path:)`` returns for a root ACL.
package struct Capabilities: OptionSet, Sendable, Hashable {
    package let rawValue: UInt32

    package init(rawValue: UInt32) { self.rawValue = rawValue }

    package static let deny = Capabilities(rawValue: 1 << 0)
    package static let create = Capabilities(rawValue: 1 << 1)
    package static let read = Capabilities(rawValue: 1 << 2)
    package static let update = Capabilities(rawValue: 1 << 3)
    package static let delete = Capabilities(rawValue: 1 << 4)
    package static let list = Capabilities(rawValue: 1 << 5)
    package static let sudo = Capabilities(rawValue: 1 << 6)
    package static let patch = Capabilities(rawValue: 1 << 7)
    /// Vault's `subscribe`: on `sys/events/subscribe/<event type>`, may receive events of that type
    /// (docs/events.md). It grants no request.
    package static let subscribe = Capabilities(rawValue: 1 << 8)
    /// Marker for a root ACL (the `root` policy): everything is allowed. Never parsed from a policy.
    package static let root = Capabilities(rawValue: 1 << 31)

    /// The capabilities a policy may name, in alphabetical order, which is the order Vault reports them in.
    static let policyNames: [(String, Capabilities)] = [
        ("create", .create), ("delete", .delete), ("deny", .deny), ("list", .list),
        ("patch", .patch), ("read", .read), ("subscribe", .subscribe), ("sudo", .sudo), ("update", .update),
    ]

    /// The names of the policy capabilities, comma-separated, for error messages.
    static let policyNameList = policyNames.map(\.0).joined(separator: ", ")

    /// The capability named `name` as written in a policy (`"read"`, `"sudo"`, ...); `nil` for anything else,
    /// including `"root"`, which no policy can grant. Names are case-sensitive, as in Vault.
    package init?(name: String) {
        guard let entry = Capabilities.policyNames.first(where: { $0.0 == name }) else { return nil }
        self = entry.1
    }

    /// Vault's names for these capabilities, sorted alphabetically as `sys/capabilities` returns them
    /// (e.g. `["create", "delete", "list", "read", "update"]`). The root marker yields `["root"]`.
    package var names: [String] {
        if contains(.root) { return ["root"] }
        return Capabilities.policyNames.compactMap { contains($0.1) ? $0.0 : nil }
    }
}

/// The operation a request performs, as far as ACL checks are concerned.
///
/// Vault's revoke, renew and rollback operations are checked as `update` by the caller.
package enum PolicyOperation: String, Sendable, CaseIterable {
    case create, read, update, patch, delete, list

    /// The capability that grants this operation.
    package var capability: Capabilities {
        switch self {
        case .create: .create
        case .read: .read
        case .update: .update
        case .patch: .patch
        case .delete: .delete
        case .list: .list
        }
    }
}

/// One `path "pattern" { ... }` stanza of a policy.
///
/// `allowedParameters` and `deniedParameters` map lowercased parameter names to value lists; an empty list means
/// any value, and the key `"*"` means any parameter. Values are compared as Vault does: strings may carry a
/// leading and/or trailing `*` glob; numbers never match (Vault compares its HCL integers to JSON numbers and
/// they never compare equal).
package struct PathRule: Sendable, Hashable {
    /// The path pattern as written, without a leading `/`. A trailing `*` makes it a prefix rule; a `+` segment
    /// matches exactly one path segment.
    package var path: String
    /// The granted capabilities. If `deny` is present it is the only member.
    package var capabilities: Capabilities
    package var allowedParameters: [String: [JSONValue]]
    package var deniedParameters: [String: [JSONValue]]
    /// Parameters that must be present in the request (checked lowercased against the request's keys).
    package var requiredParameters: [String]
    /// `min_wrapping_ttl` and `max_wrapping_ttl` in seconds (0: none). Either makes response wrapping mandatory
    /// on the path, with a wrap TTL within the bounds, as in Vault.
    package var minWrappingTTL: Int64
    package var maxWrappingTTL: Int64

    package init(
        path: String,
        capabilities: Capabilities,
        allowedParameters: [String: [JSONValue]] = [:],
        deniedParameters: [String: [JSONValue]] = [:],
        requiredParameters: [String] = [],
        minWrappingTTL: Int64 = 0,
        maxWrappingTTL: Int64 = 0
    ) {
        self.path = path
        self.capabilities = capabilities.contains(.deny) ? .deny : capabilities
        self.allowedParameters = allowedParameters
        self.deniedParameters = deniedParameters
        self.requiredParameters = requiredParameters
        self.minWrappingTTL = minWrappingTTL
        self.maxWrappingTTL = maxWrappingTTL
    }
}

/// A named ACL policy: its path rules in the order written, and the text it was parsed from.
package struct Policy: Sendable, Hashable {
    package var name: String
    /// The rules in source order. The same pattern may occur more than once; ``ACL`` merges them.
    package var rules: [PathRule]
    /// The policy text as given to ``parse(name:text:)``.
    package var raw: String

    package init(name: String, rules: [PathRule], raw: String = "") {
        self.name = name
        self.rules = rules
        self.raw = raw
    }

    /// Parses a policy written in Vault's HCL policy language or in its JSON form
    /// (`{"path": {"secret/*": {"capabilities": ["read"]}}}`). Text whose first non-blank character is `{` and that
    /// is valid JSON is read as JSON; anything else as HCL. A policy without path rules is valid.
    package static func parse(name: String, text: String) throws(PolicySyntaxError) -> Policy {
        let rules = try PolicyParser.parse(text)
        return Policy(name: name, rules: rules, raw: text)
    }
}

/// Why a policy text was rejected, and where (1-based line and column, columns counted in Unicode scalars).
package struct PolicySyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    package let line: Int
    package let column: Int
    package let message: String

    package init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    package var description: String { "policy syntax error at line \(line), column \(column): \(message)" }
}
