package import CofferCore
package import CofferFramework

/// One of a role's per-field sub-paths (`role/<name>/secret-id-num-uses` ...): read, set and reset
/// one setting. The set OpenBao 2.7.2 serves; it has no `bind-secret-id`, `token-policies` or
/// `token-period` (404), so neither does Coffer.
struct AppRoleField: Sendable {
    enum Kind: Sendable {
        case policies, period, secretIDNumUses, secretIDTTL, tokenTTL, tokenMaxTTL, tokenNumUses
        case secretIDBoundCIDRs, tokenBoundCIDRs, localSecretIDs
    }

    let segment: String
    let kind: Kind
    let fields: [Field]
    var writable: Bool { kind != .localSecretIDs }

    static let all: [AppRoleField] = [
        AppRoleField(segment: "policies", kind: .policies, fields: [.strings("token_policies"), .strings("policies")]),
        AppRoleField(segment: "period", kind: .period, fields: [.duration("token_period"), .duration("period")]),
        AppRoleField(
            segment: "secret-id-num-uses",
            kind: .secretIDNumUses,
            fields: [.int("secret_id_num_uses", Int(Int32.min)...Int(Int32.max))]
        ),
        AppRoleField(segment: "secret-id-ttl", kind: .secretIDTTL, fields: [.duration("secret_id_ttl")]),
        AppRoleField(segment: "token-ttl", kind: .tokenTTL, fields: [.duration("token_ttl")]),
        AppRoleField(segment: "token-max-ttl", kind: .tokenMaxTTL, fields: [.duration("token_max_ttl")]),
        AppRoleField(segment: "token-num-uses", kind: .tokenNumUses, fields: [.int("token_num_uses")]),
        AppRoleField(
            segment: "secret-id-bound-cidrs",
            kind: .secretIDBoundCIDRs,
            fields: [.strings("secret_id_bound_cidrs")]
        ),
        AppRoleField(segment: "token-bound-cidrs", kind: .tokenBoundCIDRs, fields: [.strings("token_bound_cidrs")]),
        AppRoleField(segment: "local-secret-ids", kind: .localSecretIDs, fields: []),
    ]
}

extension AppRoleBackend {
    func readField(_ request: BackendRequest, _ field: AppRoleField) throws(CofferError) -> Response {
        guard let role = try loadRole(try Self.roleName(request), request.storage) else { return .notFound }
        let data: [String: JSONValue]
        switch field.kind {
        case .policies:
            let list = JSONValue.array(role.token.policies.map { .string($0) })
            data = role.policiesByOldName ? ["policies": list, "token_policies": list] : ["token_policies": list]
        case .period:
            let period = JSONValue.int(role.token.period)
            data = role.periodByOldName ? ["period": period, "token_period": period] : ["token_period": period]
        case .secretIDNumUses: data = ["secret_id_num_uses": .int(role.secretIDNumUses)]
        case .secretIDTTL: data = ["secret_id_ttl": .int(role.secretIDTTL)]
        case .tokenTTL: data = ["token_ttl": .int(role.token.ttl)]
        case .tokenMaxTTL: data = ["token_max_ttl": .int(role.token.maxTTL)]
        case .tokenNumUses: data = ["token_num_uses": .int(role.token.numUses)]
        case .secretIDBoundCIDRs:
            data = ["secret_id_bound_cidrs": role.secretIDBoundCIDRs.map { .array($0.map { .string($0) }) } ?? .null]
        case .tokenBoundCIDRs:
            // OpenBao reads `null` here while no block is set (the role read shows `[]`).
            let blocks = role.token.boundCIDRs
            data = ["token_bound_cidrs": blocks.isEmpty ? .null : .array(blocks.map { .string($0) })]
        case .localSecretIDs: data = ["local_secret_ids": .bool(role.localSecretIDs)]
        }
        return Response(data: data)
    }

    func writeField(_ request: BackendRequest, _ field: AppRoleField) throws(CofferError) -> Response {
        try updateRole(request) { (role) throws(CofferError) in
            let f = request.fields
            switch field.kind {
            case .policies:
                if let v = f.strings("token_policies") {
                    role.token.policies = TokenParameters.sanitize(v)
                    role.policiesByOldName = false
                } else if let v = f.strings("policies") {
                    role.token.policies = TokenParameters.sanitize(v)
                    role.policiesByOldName = true
                } else {
                    throw CofferError.invalid("missing token_policies")
                }
            case .period:
                if let v = f.seconds("token_period") {
                    role.token.period = v
                    role.periodByOldName = false
                } else if let v = f.seconds("period") {
                    role.token.period = v
                    role.periodByOldName = true
                } else {
                    throw CofferError.invalid("missing period")
                }
            case .secretIDNumUses:
                guard let v = f.int("secret_id_num_uses") else {
                    throw CofferError.invalid("missing secret_id_num_uses")
                }
                guard v >= 0 else { throw CofferError.invalid("secret_id_num_uses cannot be negative") }
                role.secretIDNumUses = v
            case .secretIDTTL:
                guard let v = f.seconds("secret_id_ttl") else { throw CofferError.invalid("missing secret_id_ttl") }
                role.secretIDTTL = v
            case .tokenTTL:
                guard let v = f.seconds("token_ttl") else { throw CofferError.invalid("missing token_ttl") }
                if role.token.maxTTL > 0 && v > role.token.maxTTL {
                    throw CofferError.invalid("token_ttl should not be greater than token_max_ttl")
                }
                role.token.ttl = v
            case .tokenMaxTTL:
                guard let v = f.seconds("token_max_ttl") else { throw CofferError.invalid("missing token_max_ttl") }
                if v > 0 && role.token.ttl > v {
                    throw CofferError.invalid("token_max_ttl should not be less than token_ttl")
                }
                role.token.maxTTL = v
            case .tokenNumUses:
                guard let v = f.int("token_num_uses") else { throw CofferError.invalid("missing token_num_uses") }
                role.token.numUses = v
            case .secretIDBoundCIDRs:
                // OpenBao: absent is a no-op, an empty list is refused with the deprecated name.
                guard let v = f.strings("secret_id_bound_cidrs") else { return }
                let blocks = try Self.parseCIDRs(v, bareAddresses: true)
                guard !blocks.isEmpty else { throw CofferError.invalid("missing bound_cidr_list") }
                role.secretIDBoundCIDRs = blocks
            case .tokenBoundCIDRs:
                guard let v = f.strings("token_bound_cidrs") else {
                    throw CofferError.invalid("missing token_bound_cidrs")
                }
                role.token.boundCIDRs = try CIDR.parseList(v, field: "token_bound_cidrs").map(\.description)
            case .localSecretIDs:
                throw CofferError(.unsupportedOperation, "unsupported operation")
            }
        }
    }

    func deleteField(_ request: BackendRequest, _ field: AppRoleField) throws(CofferError) -> Response {
        try updateRole(request, missingIsFine: true) { (role) throws(CofferError) in
            switch field.kind {
            case .policies:
                role.token.policies = []
                role.policiesByOldName = false
            case .period:
                role.token.period = 0
                role.periodByOldName = false
            case .secretIDNumUses: role.secretIDNumUses = 0
            case .secretIDTTL: role.secretIDTTL = 0
            case .tokenTTL: role.token.ttl = 0
            case .tokenMaxTTL: role.token.maxTTL = 0
            case .tokenNumUses: role.token.numUses = 0
            case .secretIDBoundCIDRs: role.secretIDBoundCIDRs = nil
            case .tokenBoundCIDRs: role.token.boundCIDRs = []
            case .localSecretIDs: throw CofferError(.unsupportedOperation, "unsupported operation")
            }
        }
    }

    /// Loads the role, applies `change` and stores it, holding the role lock. A missing role is
    /// OpenBao's 404 "unsupported path" for writes and a 204 for deletes.
    func updateRole(
        _ request: BackendRequest,
        missingIsFine: Bool = false,
        _ change: (inout AppRole) throws(CofferError) -> Void
    ) throws(CofferError) -> Response {
        let name = try Self.roleName(request)
        return try roleLock.withLock { _ throws(CofferError) -> Response in
            guard var role = try loadRole(name, request.storage) else {
                if missingIsFine { return .noContent }
                throw unsupportedPathError
            }
            try change(&role)
            try role.checkConstraints()
            try request.storage.putJSON(AppRoleKeys.role(name), role.json)
            return .noContent
        }
    }
}
