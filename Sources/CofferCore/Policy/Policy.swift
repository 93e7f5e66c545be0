/// A set of ACL capabilities, as granted by a policy path rule or reported by `sys/capabilities`.
///
/// The bit values follow Vault's `DenyCapabilityInt ... PatchCapabilityInt` order. `root` is not a policy
/// capability: it is only a marker that ``ACL/capabilities(path:)`` returns for a root ACL.
public struct Capabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let deny = Capabilities(rawValue: 1 << 0)
    public static let create = Capabilities(rawValue: 1 << 1)
    public static let read = Capabilities(rawValue: 1 << 2)
    public static let update = Capabilities(rawValue: 1 << 3)
    public static let delete = Capabilities(rawValue: 1 << 4)
    public static let list = Capabilities(rawValue: 1 << 5)
    public static let sudo = Capabilities(rawValue: 1 << 6)
    public static let patch = Capabilities(rawValue: 1 << 7)
    /// Marker for a root ACL (the `root` policy): everything is allowed. Never parsed from a policy.
    public static let root = Capabilities(rawValue: 1 << 31)

    /// The capabilities a policy may name, in alphabetical order, which is the order Vault reports them in.
    static let policyNames: [(String, Capabilities)] = [
        ("create", .create), ("delete", .delete), ("deny", .deny), ("list", .list),
        ("patch", .patch), ("read", .read), ("sudo", .sudo), ("update", .update),
    ]

    /// The names of the policy capabilities, comma-separated, for error messages.
    static let policyNameList = policyNames.map(\.0).joined(separator: ", ")

    /// The capability named `name` as written in a policy (`"read"`, `"sudo"`, ...); `nil` for anything else,
    /// including `"root"`, which no policy can grant. Names are case-sensitive, as in Vault.
    public init?(name: String) {
        guard let entry = Capabilities.policyNames.first(where: { $0.0 == name }) else { return nil }
        self = entry.1
    }

    /// Vault's names for these capabilities, sorted alphabetically as `sys/capabilities` returns them
    /// (e.g. `["create", "delete", "list", "read", "update"]`). The root marker yields `["root"]`.
    public var names: [String] {
        if contains(.root) { return ["root"] }
        return Capabilities.policyNames.compactMap { contains($0.1) ? $0.0 : nil }
    }
}

/// The operation a request performs, as far as ACL checks are concerned.
///
/// Vault's revoke, renew and rollback operations are checked as `update` by the caller.
public enum PolicyOperation: String, Sendable, CaseIterable {
    case create, read, update, patch, delete, list

    /// The capability that grants this operation.
    public var capability: Capabilities {
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
public struct PathRule: Sendable, Hashable {
    /// The path pattern as written, without a leading `/`. A trailing `*` makes it a prefix rule; a `+` segment
    /// matches exactly one path segment.
    public var path: String
    /// The granted capabilities. If `deny` is present it is the only member.
    public var capabilities: Capabilities
    public var allowedParameters: [String: [JSONValue]]
    public var deniedParameters: [String: [JSONValue]]
    /// Parameters that must be present in the request (checked lowercased against the request's keys).
    public var requiredParameters: [String]

    public init(
        path: String, capabilities: Capabilities, allowedParameters: [String: [JSONValue]] = [:],
        deniedParameters: [String: [JSONValue]] = [:], requiredParameters: [String] = []
    ) {
        self.path = path
        self.capabilities = capabilities.contains(.deny) ? .deny : capabilities
        self.allowedParameters = allowedParameters
        self.deniedParameters = deniedParameters
        self.requiredParameters = requiredParameters
    }
}

/// A named ACL policy: its path rules in the order written, and the text it was parsed from.
public struct Policy: Sendable, Hashable {
    public var name: String
    /// The rules in source order. The same pattern may occur more than once; ``ACL`` merges them.
    public var rules: [PathRule]
    /// The policy text as given to ``parse(name:text:)``.
    public var raw: String

    public init(name: String, rules: [PathRule], raw: String = "") {
        self.name = name
        self.rules = rules
        self.raw = raw
    }

    /// Parses a policy written in Vault's HCL policy language or in its JSON form
    /// (`{"path": {"secret/*": {"capabilities": ["read"]}}}`). Text whose first non-blank character is `{` and that
    /// is valid JSON is read as JSON; anything else as HCL. A policy without path rules is valid.
    public static func parse(name: String, text: String) throws(PolicySyntaxError) -> Policy {
        let rules = try PolicyParser.parse(text)
        return Policy(name: name, rules: rules, raw: text)
    }
}

/// Why a policy text was rejected, and where (1-based line and column, columns counted in Unicode scalars).
public struct PolicySyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    public let line: Int
    public let column: Int
    public let message: String

    public init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String { "policy syntax error at line \(line), column \(column): \(message)" }
}
