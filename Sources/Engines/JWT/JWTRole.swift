package import CofferCore
package import CofferFramework

/// A jwt/oidc role (`role/<name>`): which tokens may log in through it and what token they get.
/// Stored as the JSON a read shows (§3.2 of the design), so the stored form is the wire form.
package struct JWTRole: Sendable {
    package var roleType = "oidc"
    package var boundAudiences: [String]? = nil
    package var boundSubject = ""
    package var boundClaims: [String: JSONValue]? = nil
    package var boundClaimsType = "string"
    package var claimMappings: [String: String]? = nil
    package var userClaim = ""
    package var userClaimJSONPointer = false
    package var groupsClaim = ""
    package var leeways = JWTClaims.Leeways()
    package var allowedRedirectURIs: [String]? = nil
    package var oidcScopes: [String]? = nil
    package var callbackMode = "client"
    package var maxAge: Int64 = 0
    package var verboseOIDCLogging = false
    package var oidcDisableConfirmation = false
    package var tokenPoliciesTemplateClaims = false
    package var oauth2Metadata: [String]? = nil
    package var token = TokenParameters()

    package init() {}

    static let fields: [Field] =
        [
            .string("role_type"), .strings("bound_audiences"), .string("bound_subject"), .object("bound_claims"),
            .string("bound_claims_type"), .object("claim_mappings"), .string("user_claim"),
            .bool("user_claim_json_pointer"), .string("groups_claim"), .any("clock_skew_leeway"),
            .any("expiration_leeway"), .any("not_before_leeway"), .strings("allowed_redirect_uris"),
            .strings("oidc_scopes"), .string("callback_mode"), .duration("max_age"), .bool("verbose_oidc_logging"),
            .bool("oidc_disable_confirmation"), .bool("token_policies_template_claims"), .strings("oauth2_metadata"),
        ] + TokenParameters.fields

    /// A leeway field: whole seconds (negative allowed: -1 turns the check's default off) or
    /// duration text ("90s").
    static func leeway(_ f: FieldData, _ name: String) throws(CofferError) -> Int64? {
        guard let value = f.json(name) else { return nil }
        switch value {
        case .number:
            guard let n = Field.integer(value), n >= -1_000_000_000, n <= 1_000_000_000 else {
                throw CofferError.invalid("\(name) must be a number of seconds or a duration")
            }
            return Int64(n)
        case .string(let text):
            if let n = Int64(text), n >= -1_000_000_000, n <= 1_000_000_000 { return n }
            if text.hasPrefix("-"), let seconds = VaultDuration.parse(String(text.dropFirst())) { return -seconds }
            guard let seconds = VaultDuration.parse(text) else {
                throw CofferError.invalid("\(name) must be a number of seconds or a duration")
            }
            return seconds
        default:
            throw CofferError.invalid("\(name) must be a number of seconds or a duration")
        }
    }

    /// Applies a write's fields to this role (a write to an existing role keeps what it does not
    /// name, as OpenBao's does) and checks the result with OpenBao's messages, in its order.
    package mutating func update(from f: FieldData) throws(CofferError) {
        if let v = f.string("role_type") { roleType = v }
        if let v = f.strings("bound_audiences") { boundAudiences = v }
        if let v = f.string("bound_subject") { boundSubject = v }
        if let v = f.object("bound_claims") { boundClaims = v }
        if let v = f.string("bound_claims_type") { boundClaimsType = v }
        if let mappings = f.object("claim_mappings") {
            var out: [String: String] = [:]
            for (source, target) in mappings {
                guard case .string(let name) = target else {
                    throw CofferError.invalid("claim_mappings.\(source) must be a string")
                }
                out[source] = name
            }
            claimMappings = out
        }
        if let v = f.string("user_claim") { userClaim = v }
        if let v = f.bool("user_claim_json_pointer") { userClaimJSONPointer = v }
        if let v = f.string("groups_claim") { groupsClaim = v }
        if let v = try JWTRole.leeway(f, "clock_skew_leeway") { leeways.clockSkew = v }
        if let v = try JWTRole.leeway(f, "expiration_leeway") { leeways.expiration = v }
        if let v = try JWTRole.leeway(f, "not_before_leeway") { leeways.notBefore = v }
        if let v = f.strings("allowed_redirect_uris") { allowedRedirectURIs = v }
        if let v = f.strings("oidc_scopes") { oidcScopes = v }
        if let v = f.string("callback_mode") { callbackMode = v }
        if let v = f.seconds("max_age") { maxAge = v }
        if let v = f.bool("verbose_oidc_logging") { verboseOIDCLogging = v }
        if let v = f.bool("oidc_disable_confirmation") { oidcDisableConfirmation = v }
        if let v = f.bool("token_policies_template_claims") { tokenPoliciesTemplateClaims = v }
        if let v = f.strings("oauth2_metadata") { oauth2Metadata = v }
        try token.update(from: f)
        try check()
    }

    mutating func check() throws(CofferError) {
        if roleType.isEmpty { roleType = "oidc" }
        guard roleType == "jwt" || roleType == "oidc" else {
            throw CofferError.invalid("invalid 'role_type': \(roleType)")
        }
        guard !userClaim.isEmpty else { throw CofferError.invalid("a user claim must be defined on the role") }
        if roleType == "jwt" && (boundAudiences ?? []).isEmpty && boundSubject.isEmpty
            && (boundClaims ?? [:]).isEmpty && token.boundCIDRs.isEmpty
        {
            throw CofferError.invalid("must have at least one bound constraint when creating/updating a role")
        }
        guard boundClaimsType == "string" || boundClaimsType == "glob" else {
            throw CofferError.invalid("invalid 'bound_claims_type': \(boundClaimsType)")
        }
        if boundClaimsType == "glob" {
            for name in (boundClaims ?? [:]).keys.sorted() {
                let value = boundClaims![name]!
                switch value {
                case .string: continue
                case .array(let items):
                    for item in items {
                        guard case .string = item else {
                            throw CofferError.invalid("claim is not a string: \(JWTClaims.text(item) ?? "?")")
                        }
                    }
                default:
                    throw CofferError.invalid("claim is not a string: \(JWTClaims.text(value) ?? "?")")
                }
            }
        }
        var targets: Set<String> = []
        for source in (claimMappings ?? [:]).keys.sorted() {
            let target = claimMappings![source]!
            if target == "role" {
                throw CofferError.invalid("metadata key \"role\" is reserved and may not be a mapping destination")
            }
            guard targets.insert(target).inserted else {
                throw CofferError.invalid("multiple keys are mapped to metadata key \"\(target)\"")
            }
        }
        guard callbackMode == "client" || callbackMode == "direct" else {
            throw CofferError.invalid("invalid callback_mode: \(callbackMode)")
        }
        if roleType == "oidc" && (allowedRedirectURIs ?? []).isEmpty {
            throw CofferError.invalid("'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified.")
        }
    }

    /// The read (and stored) form.
    package var json: [String: JSONValue] {
        func strings(_ list: [String]?) -> JSONValue { list.map { .array($0.map { .string($0) }) } ?? .null }
        var out: [String: JSONValue] = [
            "allowed_redirect_uris": strings(allowedRedirectURIs), "bound_audiences": strings(boundAudiences),
            "bound_claims": boundClaims.map { .object($0) } ?? .null, "bound_claims_type": .string(boundClaimsType),
            "bound_subject": .string(boundSubject), "callback_mode": .string(callbackMode),
            "claim_mappings": claimMappings.map { .object($0.mapValues { .string($0) }) } ?? .null,
            "clock_skew_leeway": .int(leeways.clockSkew), "expiration_leeway": .int(leeways.expiration),
            "groups_claim": .string(groupsClaim), "max_age": .int(maxAge),
            "not_before_leeway": .int(leeways.notBefore), "oauth2_metadata": strings(oauth2Metadata),
            "oidc_disable_confirmation": .bool(oidcDisableConfirmation), "oidc_scopes": strings(oidcScopes),
            "role_type": .string(roleType), "token_policies_template_claims": .bool(tokenPoliciesTemplateClaims),
            "user_claim": .string(userClaim), "user_claim_json_pointer": .bool(userClaimJSONPointer),
            "verbose_oidc_logging": .bool(verboseOIDCLogging),
        ]
        for (key, value) in token.json { out[key] = value }
        return out
    }

    package init(json: [String: JSONValue]) {
        func strings(_ key: String) -> [String]? { json[key]?.arrayValue?.compactMap(\.stringValue) }
        roleType = json["role_type"]?.stringValue ?? "oidc"
        boundAudiences = strings("bound_audiences")
        boundSubject = json["bound_subject"]?.stringValue ?? ""
        boundClaims = json["bound_claims"]?.objectValue
        boundClaimsType = json["bound_claims_type"]?.stringValue ?? "string"
        claimMappings = json["claim_mappings"]?.objectValue?.compactMapValues(\.stringValue)
        userClaim = json["user_claim"]?.stringValue ?? ""
        userClaimJSONPointer = json["user_claim_json_pointer"]?.boolValue ?? false
        groupsClaim = json["groups_claim"]?.stringValue ?? ""
        leeways = JWTClaims.Leeways(
            clockSkew: Int64(json["clock_skew_leeway"]?.intValue ?? 0),
            expiration: Int64(json["expiration_leeway"]?.intValue ?? 0),
            notBefore: Int64(json["not_before_leeway"]?.intValue ?? 0)
        )
        allowedRedirectURIs = strings("allowed_redirect_uris")
        oidcScopes = strings("oidc_scopes")
        callbackMode = json["callback_mode"]?.stringValue ?? "client"
        maxAge = Int64(json["max_age"]?.intValue ?? 0)
        verboseOIDCLogging = json["verbose_oidc_logging"]?.boolValue ?? false
        oidcDisableConfirmation = json["oidc_disable_confirmation"]?.boolValue ?? false
        tokenPoliciesTemplateClaims = json["token_policies_template_claims"]?.boolValue ?? false
        oauth2Metadata = strings("oauth2_metadata")
        token = TokenParameters(json: json)
    }
}
