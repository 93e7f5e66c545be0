package import CofferCore

/// `sys/quotas/config`: OpenBao's three settings. Coffer sends the `X-Ratelimit-*` headers by
/// default (OpenBao does not); everything else defaults as in OpenBao 2.7.
package struct QuotaConfig: Sendable, Equatable {
    package static let path = "sys/quotas/config"
    /// OpenBao's default exempt list: what an operator needs to unseal and recover a vault whose
    /// global quota is spent.
    package static let defaultExemptPaths = [
        "sys/generate-recovery-token/attempt", "sys/generate-recovery-token/update", "sys/generate-root/attempt",
        "sys/generate-root/update", "sys/health", "sys/seal-status", "sys/unseal",
    ]

    package var auditLogging = false
    package var responseHeaders = true
    package var exemptPaths = QuotaConfig.defaultExemptPaths

    package init() {}

    package var json: JSONValue {
        [
            "enable_rate_limit_audit_logging": .bool(auditLogging),
            "enable_rate_limit_response_headers": .bool(responseHeaders),
            "rate_limit_exempt_paths": .array(exemptPaths.map { .string($0) }),
        ]
    }

    package init(json: JSONValue) {
        auditLogging = json["enable_rate_limit_audit_logging"]?.boolValue ?? false
        responseHeaders = json["enable_rate_limit_response_headers"]?.boolValue ?? true
        exemptPaths = json["rate_limit_exempt_paths"]?.arrayValue?.compactMap(\.stringValue) ?? []
    }
}

/// Whose requests share a rate-limit bucket.
package enum QuotaKey: String, Sendable, CaseIterable {
    /// One bucket per client IP address, as OpenBao keys every rate-limit quota. The default.
    case clientAddress = "client_address"
    /// One bucket per identity entity (the token's entity id, or its accessor when it has no
    /// entity); a request without a usable token falls back to its client address. Coffer only.
    case entity
    /// One bucket for every caller. Coffer only.
    case shared
}

/// One `sys/quotas/rate-limit/<name>` rule.
package struct RateLimitQuota: Sendable, Equatable {
    package static let prefix = "sys/quotas/rate-limit/"
    package static let maximumRate = 1e12
    /// The longest `interval` and `block_interval`: ten years (their nanoseconds stay far from overflow).
    package static let maximumInterval: Int64 = 10 * 365 * 24 * 3600

    package var name: String
    /// "" (global), a mount (`cubbyhole/`, `auth/approle/`), or a path inside a mount.
    package var path: String
    package var role: String
    package var rate: Double
    package var interval: Int64
    package var blockInterval: Int64
    package var keyBy: QuotaKey
    /// Requests admitted per window: OpenBao rounds the rate (and Coffer admits at least one).
    package var tokens: Int { max(1, Int(rate.rounded())) }

    package var json: JSONValue {
        [
            "name": .string(name), "path": .string(path), "role": .string(role), "type": "rate-limit",
            "rate": .number(QuotaRules.format(rate)), "interval": .int(interval),
            "block_interval": .int(blockInterval), "inheritable": .bool(path.isEmpty),
            "key_by": .string(keyBy.rawValue),
        ]
    }

    package init(
        name: String,
        path: String,
        role: String = "",
        rate: Double,
        interval: Int64 = 1,
        blockInterval: Int64 = 0,
        keyBy: QuotaKey = .clientAddress
    ) {
        self.name = name
        self.path = path
        self.role = role
        self.rate = rate
        self.interval = interval
        self.blockInterval = blockInterval
        self.keyBy = keyBy
    }

    init?(json: JSONValue) {
        guard let name = json["name"]?.stringValue, let path = json["path"]?.stringValue,
            let rate = json["rate"]?.doubleValue, let interval = json["interval"]?.intValue
        else { return nil }
        self.init(
            name: name,
            path: path,
            role: json["role"]?.stringValue ?? "",
            rate: rate,
            interval: Int64(interval),
            blockInterval: Int64(json["block_interval"]?.intValue ?? 0),
            keyBy: json["key_by"]?.stringValue.flatMap(QuotaKey.init(rawValue:)) ?? .clientAddress
        )
    }
}

/// One `sys/quotas/lease-count/<name>` rule (OpenBao has none): at most `maxLeases` live leases
/// whose request path lies under `path`.
package struct LeaseCountQuota: Sendable, Equatable {
    package static let prefix = "sys/quotas/lease-count/"

    package var name: String
    package var path: String
    package var maxLeases: Int

    package init(name: String, path: String, maxLeases: Int) {
        self.name = name
        self.path = path
        self.maxLeases = maxLeases
    }

    package var json: JSONValue {
        [
            "name": .string(name), "path": .string(path), "role": "", "type": "lease-count",
            "max_leases": .int(maxLeases), "inheritable": .bool(path.isEmpty),
        ]
    }

    init?(json: JSONValue) {
        guard let name = json["name"]?.stringValue, let path = json["path"]?.stringValue,
            let max = json["max_leases"]?.intValue
        else { return nil }
        self.init(name: name, path: path, maxLeases: max)
    }
}

/// Checks and normalises what a quota names, against the mounts routed now.
package enum QuotaRules {
    /// Numbers as Go's JSON encoder writes a float64 that is whole: `3`, not `3.0`.
    static func format(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// `'rate' is invalid` unless `text` is a finite number above 0 (and not absurdly large).
    static func rate(_ text: String?) throws(CofferError) -> Double {
        guard let text, let rate = Double(text.trimmingCharacters(in: " ")), rate.isFinite, rate > 0 else {
            throw CofferError.invalid("'rate' is invalid")
        }
        guard rate <= RateLimitQuota.maximumRate else {
            throw CofferError.invalid("'rate' is invalid: at most \(Int64(RateLimitQuota.maximumRate)) per interval")
        }
        return rate
    }

    /// A quota name: what a storage key and a URL segment can hold.
    static func name(_ name: String) throws(CofferError) -> String {
        guard !name.isEmpty, name.utf8.count <= 128, !name.contains("/"), name != ".", name != ".." else {
            throw CofferError.invalid("a quota name must be 1 to 128 characters and contain no \"/\"")
        }
        return name
    }

    /// The stored form of `path`: "" (global), a mount with its trailing "/", or a path inside a
    /// mount as given. A role needs the path to be an auth mount.
    static func path(_ raw: String, role: String, table: RouteTable) throws(CofferError) -> String {
        var path = raw
        while path.hasPrefix("/") { path.removeFirst() }
        if path.isEmpty {
            guard role.isEmpty else { throw notAuthMount("") }
            return ""
        }
        let normalised: String
        do throws(CofferError) {
            normalised = try PathRules.normalize(path)
        } catch {
            throw CofferError.invalid("invalid mount path \"\(raw)\"")
        }
        let withSlash = normalised.hasSuffix("/") ? normalised : normalised + "/"
        guard let (mount, relative) = table.route(withSlash) ?? table.route(normalised) else {
            throw CofferError.invalid("invalid mount path \"\(raw)\"")
        }
        let isMount = relative.isEmpty || withSlash == mount.prefix
        if !role.isEmpty {
            // OpenBao's texts and order: a path inside a mount first, then a mount that is not an auth method.
            guard isMount else {
                throw CofferError.invalid(
                    "Quotas cannot contain both a path suffix and a role. If a role is provided, path must be a "
                        + "valid auth mount with a concept of roles"
                )
            }
            guard mount.kind == .auth else { throw notAuthMount(mount.prefix) }
        }
        return isMount ? mount.prefix : normalised
    }

    static func notAuthMount(_ path: String) -> CofferError {
        CofferError.invalid(
            "Mount path \"\(path)\" is not a valid auth method and therefore unsuitable for use with role-based quotas"
        )
    }

    /// Whether a rule's `path` covers `full` (the request's namespace path and path): "" covers all,
    /// a path ending in "/" covers what starts with it, any other covers itself and what is below it.
    @inline(__always)
    static func covers(_ rule: String, _ full: String) -> Bool {
        if rule.isEmpty { return true }
        guard full.hasBytePrefix(rule) else { return false }
        if rule.utf8.last == UInt8(ascii: "/") || full.utf8.count == rule.utf8.count { return true }
        return full.utf8.dropFirst(rule.utf8.count).first == UInt8(ascii: "/")
    }
}

extension String {
    fileprivate func trimmingCharacters(in character: Character) -> String {
        var s = Substring(self)
        while s.first == character { s = s.dropFirst() }
        while s.last == character { s = s.dropLast() }
        return String(s)
    }
}
