package import CofferCore

/// The `token_*` settings every auth method's roles and users carry (Vault's tokenutil): what the
/// token made at login looks like. Declared once here; a method adds ``fields`` to its role path,
/// calls ``update(from:)`` on writes, stores ``json`` and builds the login answer with
/// ``authInfo(metadata:grant:)``.
package struct TokenParameters: Sendable, Equatable {
    package var policies: [String] = []
    package var ttl: Int64 = 0
    package var maxTTL: Int64 = 0
    package var explicitMaxTTL: Int64 = 0
    package var period: Int64 = 0
    package var numUses = 0
    package var boundCIDRs: [String] = []
    package var noDefaultPolicy = false
    package var strictlyBindIP = false
    /// "default", "service", "batch", "default-service" or "default-batch".
    package var type = "default"

    package init() {}

    package static let types = ["default", "service", "batch", "default-service", "default-batch"]

    package static let fields: [Field] = [
        .strings("token_policies"), .duration("token_ttl"), .duration("token_max_ttl"),
        .duration("token_explicit_max_ttl"), .duration("token_period"), .int("token_num_uses"),
        .strings("token_bound_cidrs"), .bool("token_no_default_policy"), .bool("token_strictly_bind_ip"),
        .string("token_type"),
    ]

    /// Applies the `token_*` fields the request gives (the others keep their values) and checks
    /// the result as Vault does.
    package mutating func update(from fields: FieldData) throws(CofferError) {
        if let policies = fields.strings("token_policies") { self.policies = TokenParameters.sanitize(policies) }
        if let v = fields.seconds("token_ttl") { ttl = v }
        if let v = fields.seconds("token_max_ttl") { maxTTL = v }
        if let v = fields.seconds("token_explicit_max_ttl") { explicitMaxTTL = v }
        if let v = fields.seconds("token_period") { period = v }
        if let v = fields.int("token_num_uses") { numUses = v }
        if let v = fields.strings("token_bound_cidrs") {
            boundCIDRs = try CIDR.parseList(v, field: "token_bound_cidrs").map(\.description)
        }
        if let v = fields.bool("token_no_default_policy") { noDefaultPolicy = v }
        if let v = fields.bool("token_strictly_bind_ip") { strictlyBindIP = v }
        if let v = fields.string("token_type") {
            guard TokenParameters.types.contains(v) else {
                throw CofferError.invalid("invalid 'token_type' value \"\(v)\"")
            }
            type = v
        }
        if maxTTL > 0 && ttl > maxTTL {
            throw CofferError.invalid("'token_ttl' cannot be greater than 'token_max_ttl'")
        }
        if type.hasSuffix("batch") {
            if period > 0 {
                throw CofferError.invalid(
                    "'token_type' cannot be 'batch' or 'default_batch' when set to generate periodic tokens"
                )
            }
            if numUses > 0 {
                throw CofferError.invalid(
                    "'token_type' cannot be 'batch' or 'default_batch' when set to generate tokens with limited use count"
                )
            }
        }
    }

    /// Lower-cased, trimmed, without empties or repeats, sorted: how Vault keeps policy names.
    package static func sanitize(_ policies: [String]) -> [String] {
        Array(Set(policies.map { $0.trimmingSpaces().lowercased() }.filter { !$0.isEmpty })).sorted()
    }

    /// The fields as a role read shows them (and as they are stored).
    package var json: [String: JSONValue] {
        [
            "token_policies": .array(policies.map { .string($0) }), "token_ttl": .int(ttl),
            "token_max_ttl": .int(maxTTL), "token_explicit_max_ttl": .int(explicitMaxTTL),
            "token_period": .int(period), "token_num_uses": .int(numUses),
            "token_bound_cidrs": .array(boundCIDRs.map { .string($0) }),
            "token_no_default_policy": .bool(noDefaultPolicy), "token_strictly_bind_ip": .bool(strictlyBindIP),
            "token_type": .string(type),
        ]
    }

    /// Reads the stored form back (missing keys keep their defaults).
    package init(json: [String: JSONValue]) {
        policies = (json["token_policies"]?.arrayValue ?? []).compactMap(\.stringValue)
        ttl = Int64(json["token_ttl"]?.intValue ?? 0)
        maxTTL = Int64(json["token_max_ttl"]?.intValue ?? 0)
        explicitMaxTTL = Int64(json["token_explicit_max_ttl"]?.intValue ?? 0)
        period = Int64(json["token_period"]?.intValue ?? 0)
        numUses = json["token_num_uses"]?.intValue ?? 0
        boundCIDRs = (json["token_bound_cidrs"]?.arrayValue ?? []).compactMap(\.stringValue)
        noDefaultPolicy = json["token_no_default_policy"]?.boolValue ?? false
        strictlyBindIP = json["token_strictly_bind_ip"]?.boolValue ?? false
        type = json["token_type"]?.stringValue ?? "default"
    }

    /// The login answer for a caller these parameters apply to: an `auth` block without a token,
    /// which the core turns into one (TTLs capped by the mount, `default` added unless
    /// `token_no_default_policy`, the entity found or created from the grant's alias).
    /// `grant` says who logged in; its token limits are filled in from these parameters.
    package func authInfo(metadata: [String: String], grant: LoginGrant) -> AuthInfo {
        var info = AuthInfo(
            clientToken: "",
            accessor: "",
            policies: policies,
            tokenPolicies: policies,
            metadata: metadata,
            leaseDuration: ttl,
            renewable: true,
            orphan: true,
            numUses: numUses
        )
        var grant = grant
        grant.maxTTL = maxTTL
        grant.explicitMaxTTL = explicitMaxTTL
        grant.period = period
        grant.boundCIDRs = boundCIDRs
        grant.tokenType = type
        grant.noDefaultPolicy = noDefaultPolicy
        info.grant = grant
        return info
    }
}
