package import CofferCore

/// Checks on a verified token's claims, shared by the jwt/oidc and kubernetes methods. Messages are
/// OpenBao's (hashicorp/cap `jwt.Validator` and vault-plugin-auth-jwt), so clients that match on
/// them keep working.
package enum JWTClaims {
    /// A claim by name, or by JSON pointer (RFC 6901) when the name starts with "/"
    /// ("/kubernetes.io/namespace" walks into `kubernetes.io` then `namespace`).
    package static func value(_ claims: [String: JSONValue], _ name: String) -> JSONValue? {
        guard name.hasPrefix("/") else { return claims[name].flatMap { $0 == .null ? nil : $0 } }
        var current: JSONValue = .object(claims)
        for raw in name.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            let token = raw.replacingOccurrences("~1", "/").replacingOccurrences("~0", "~")
            switch current {
            case .object(let object):
                guard let next = object[token] else { return nil }
                current = next
            case .array(let items):
                guard let index = Int(token), index >= 0, index < items.count else { return nil }
                current = items[index]
            default:
                return nil
            }
        }
        return current == .null ? nil : current
    }

    /// A scalar's text as Go's `%v` prints it; nil for arrays, objects and null.
    package static func text(_ value: JSONValue) -> String? {
        switch value {
        case .string(let s): s
        case .number(let n): n
        case .bool(let b): b ? "true" : "false"
        default: nil
        }
    }

    /// Go's JSON type name, for OpenBao's unmarshal messages.
    static func goType(_ value: JSONValue) -> String {
        switch value {
        case .number: "number"
        case .bool: "bool"
        case .array: "array"
        case .object: "object"
        case .string: "string"
        case .null: "null"
        }
    }

    /// The role's time leeways, as OpenBao reads them: 0 means the default, -1 (any negative) none.
    package struct Leeways: Sendable, Equatable {
        package var clockSkew: Int64 = 0
        package var expiration: Int64 = 0
        package var notBefore: Int64 = 0
        package init(clockSkew: Int64 = 0, expiration: Int64 = 0, notBefore: Int64 = 0) {
            self.clockSkew = clockSkew
            self.expiration = expiration
            self.notBefore = notBefore
        }

        /// Default clock skew (go-jose's `DefaultLeeway`): tolerance on exp, nbf and iat.
        package static let defaultClockSkew: Int64 = 60
        /// Default for the exp a token without one is given: its iat/nbf + 150 s (`expiration_leeway`
        /// overrides it). `not_before_leeway` is kept and shown but, as measured in OpenBao, adds nothing.
        package static let defaultMissingClaim: Int64 = 150

        static func effective(_ value: Int64, default fallback: Int64) -> Int64 {
            value < 0 ? 0 : value == 0 ? fallback : value
        }
    }

    /// What the token must match (empty: not checked).
    package struct Expected: Sendable {
        package var issuer = ""
        package var subject = ""
        package var audiences: [String] = []
        package var leeways = Leeways()
        package init() {}
    }

    /// A NumericDate claim in whole seconds (0 when absent), saturated to a year-9999 bound so that
    /// huge values never overflow. Throws go-jose's text for a value that is not a number.
    static func seconds(_ claims: [String: JSONValue], _ name: String) throws(JOSEError) -> Int64 {
        guard let value = claims[name], value != .null else { return 0 }
        guard case .number(let text) = value, let number = Double(text), number.isFinite else {
            throw JOSEError("go-jose/go-jose/jwt: expected number value to unmarshal NumericDate")
        }
        let limit = 253_402_300_799.0  // 9999-12-31T23:59:59Z
        return Int64(max(-limit, min(limit, number.rounded(.down))))
    }

    /// A registered string claim (iss, sub); throws Go's unmarshal text for another type.
    static func string(_ claims: [String: JSONValue], _ name: String) throws(JOSEError) -> String {
        guard let value = claims[name], value != .null else { return "" }
        guard case .string(let s) = value else {
            throw JOSEError(
                "json: cannot unmarshal \(goType(value)) into Go struct field Claims.\(name) of type string"
            )
        }
        return s
    }

    /// The `aud` claim: a string or an array of strings (RFC 7519 §4.1.3).
    package static func audiences(_ claims: [String: JSONValue]) throws(JOSEError) -> [String] {
        switch claims["aud"] {
        case nil, .null?: return []
        case .string(let s)?: return [s]
        case .array(let items)?:
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item else {
                    throw JOSEError("go-jose/go-jose/jwt: expected string or array value to unmarshal to Audience")
                }
                out.append(s)
            }
            return out
        case let other?:
            _ = other
            throw JOSEError("go-jose/go-jose/jwt: expected string or array value to unmarshal to Audience")
        }
    }

    /// hashicorp/cap's `Validate` after the signature: the time claims' presence, iss, sub, aud, then
    /// nbf, exp and iat against `now` with the clock-skew leeway. Messages without the
    /// "error validating token: " prefix.
    package static func validate(
        _ claims: [String: JSONValue],
        expected: Expected,
        now: Int64
    ) throws(JOSEError) {
        let issuedAt = try seconds(claims, "iat")
        var expiry = try seconds(claims, "exp")
        let notBefore = try seconds(claims, "nbf")
        let issuer = try string(claims, "iss")
        let subject = try string(claims, "sub")
        let audience = try audiences(claims)
        if issuedAt == 0 && expiry == 0 && notBefore == 0 {
            throw JOSEError("no issued at (iat), not before (nbf), or expiration time (exp) claims in token")
        }
        let leeways = expected.leeways
        if expiry == 0 {
            let start = max(issuedAt, notBefore)
            expiry = start &+ Leeways.effective(leeways.expiration, default: Leeways.defaultMissingClaim)
        }
        // A missing nbf is not derived from iat (cap's code would, and would then answer "not yet
        // valid" for a future iat; OpenBao 2.7.2 was measured answering the iat message).
        let skew = Leeways.effective(leeways.clockSkew, default: Leeways.defaultClockSkew)
        if !expected.issuer.isEmpty && expected.issuer != issuer { throw JOSEError("invalid issuer (iss) claim") }
        if !expected.subject.isEmpty && expected.subject != subject {
            throw JOSEError("invalid subject (sub) claim")
        }
        if !expected.audiences.isEmpty && !expected.audiences.contains(where: audience.contains) {
            throw JOSEError("invalid audience (aud) claim: audience claim does not match any expected audience")
        }
        if notBefore != 0 && now &+ skew < notBefore {
            throw JOSEError("invalid not before (nbf) claim: token not yet valid")
        }
        if now &- skew > expiry { throw JOSEError("invalid expiration time (exp) claim: token is expired") }
        if issuedAt != 0 && now &+ skew < issuedAt {
            throw JOSEError("invalid issued at (iat) claim: token issued in the future")
        }
    }

    /// vault-plugin-auth-jwt's `validateBoundClaims`: every bound claim must be present and one of
    /// its values must equal (or, with `glob`, match) one of the claim's values. Messages without
    /// the "error validating claims: " prefix.
    package static func validateBound(
        _ bound: [String: JSONValue],
        glob: Bool,
        claims: [String: JSONValue]
    ) throws(JOSEError) {
        for name in bound.keys.sorted() {
            guard let actual = value(claims, name) else { throw JOSEError("claim \"\(name)\" is missing") }
            let actualValues: [JSONValue]
            switch actual {
            case .array(let items): actualValues = items
            case .object: throw JOSEError("received claim is not a string or list")
            default: actualValues = [actual]
            }
            let expectedValues: [JSONValue]
            switch bound[name]! {
            case .array(let items): expectedValues = items
            default: expectedValues = [bound[name]!]
            }
            let found = expectedValues.contains { expected in
                guard let pattern = text(expected) else { return false }
                return actualValues.contains { item in
                    guard let actualText = text(item) else { return false }
                    return glob ? globMatch(pattern, actualText) : pattern == actualText
                }
            }
            if !found { throw JOSEError("claim \"\(name)\" does not match any associated bound claim values") }
        }
    }

    /// `*` matches any run of characters (OpenBao's glob for bound claims); nothing else is special.
    package static func globMatch(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8)
        let t = Array(text.utf8)
        var pi = 0
        var ti = 0
        var star = -1
        var mark = 0
        while ti < t.count {
            if pi < p.count && p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = ti
                pi += 1
            } else if pi < p.count && p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }

    /// `claim_mappings`: each source claim's value (a string) into metadata under its target name.
    package static func mapped(
        _ mappings: [String: String],
        claims: [String: JSONValue]
    ) throws(JOSEError) -> [String:
        String]
    {
        var out: [String: String] = [:]
        for source in mappings.keys.sorted() {
            guard let value = value(claims, source) else { continue }
            guard case .string(let s) = value else { throw JOSEError("error converting claim '\(source)' to string") }
            out[mappings[source]!] = s
        }
        return out
    }

    /// The `groups_claim` values: a string or a list of strings.
    package static func groups(_ name: String, claims: [String: JSONValue]) throws(JOSEError) -> [String] {
        guard let raw = value(claims, name) else {
            throw JOSEError("failed to fetch groups: \"\(name)\" claim not found in token")
        }
        let items: [JSONValue]
        switch raw {
        case .array(let a): items = a
        case .string: items = [raw]
        default: throw JOSEError("failed to fetch groups: \"\(name)\" claim could not be converted to string list")
        }
        var out: [String] = []
        for item in items {
            guard case .string(let s) = item else {
                throw JOSEError("value \(text(item) ?? goType(item)) in groups claim could not be parsed as string")
            }
            out.append(s)
        }
        return out
    }
}

extension Substring {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        String(self).replacingOccurrences(target, replacement)
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        guard contains(target) else { return self }
        var out = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            out += rest[..<range.lowerBound]
            out += replacement
            rest = rest[range.upperBound...]
        }
        return out + rest
    }
}
