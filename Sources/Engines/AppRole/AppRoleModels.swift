package import CofferCore
package import CofferFramework

/// An AppRole role as stored at `role/<name>`: the secret-ID rules and the `token_*` settings of
/// the tokens its logins get.
struct AppRole: Sendable, Equatable {
    var name: String
    var roleID: String
    /// A random id, made once at creation, under which the role's secret IDs are filed (so a role
    /// deleted and created again under the same name does not see the old ones).
    var uid: String
    var bindSecretID = true
    /// nil until set: a role read shows `null` then, as OpenBao does.
    var secretIDBoundCIDRs: [String]?
    var secretIDNumUses = 0
    var secretIDTTL: Int64 = 0
    var localSecretIDs = false
    var token = TokenParameters()
    /// Set when `policies` / `period` (the deprecated names) were written last: the per-field
    /// reads then show both names, as OpenBao does.
    var policiesByOldName = false
    var periodByOldName = false

    init(name: String, roleID: String, uid: String) {
        self.name = name
        self.roleID = roleID
        self.uid = uid
    }

    /// What `GET role/<name>` shows (no role_id, no deprecated names).
    var read: [String: JSONValue] {
        var data = token.json
        data["bind_secret_id"] = .bool(bindSecretID)
        data["local_secret_ids"] = .bool(localSecretIDs)
        data["secret_id_bound_cidrs"] = secretIDBoundCIDRs.map { .array($0.map { .string($0) }) } ?? .null
        data["secret_id_num_uses"] = .int(secretIDNumUses)
        data["secret_id_ttl"] = .int(secretIDTTL)
        return data
    }

    var json: JSONValue {
        var data = read
        data["name"] = .string(name)
        data["role_id"] = .string(roleID)
        data["uid"] = .string(uid)
        data["policies_by_old_name"] = .bool(policiesByOldName)
        data["period_by_old_name"] = .bool(periodByOldName)
        return .object(data)
    }

    init?(json: JSONValue) {
        guard let object = json.objectValue, let name = object["name"]?.stringValue,
            let roleID = object["role_id"]?.stringValue, let uid = object["uid"]?.stringValue
        else { return nil }
        self.init(name: name, roleID: roleID, uid: uid)
        bindSecretID = object["bind_secret_id"]?.boolValue ?? true
        secretIDBoundCIDRs = object["secret_id_bound_cidrs"]?.arrayValue?.compactMap(\.stringValue)
        secretIDNumUses = object["secret_id_num_uses"]?.intValue ?? 0
        secretIDTTL = Int64(object["secret_id_ttl"]?.intValue ?? 0)
        localSecretIDs = object["local_secret_ids"]?.boolValue ?? false
        token = TokenParameters(json: object)
        policiesByOldName = object["policies_by_old_name"]?.boolValue ?? false
        periodByOldName = object["period_by_old_name"]?.boolValue ?? false
    }

    /// OpenBao refuses a role anyone holding its role_id could log in with from anywhere.
    func checkConstraints() throws(CofferError) {
        if !bindSecretID && (secretIDBoundCIDRs ?? []).isEmpty && token.boundCIDRs.isEmpty {
            throw CofferError(.internal, multierror("at least one constraint should be enabled on the role"))
        }
    }
}

/// One secret ID as stored at `secret-id/<role uid>/<hmac>`: never the secret itself.
struct SecretIDEntry: Sendable, Equatable {
    var accessor: String
    var creationTime: Timestamp
    /// nil: never expires.
    var expirationTime: Timestamp?
    var lastUpdatedTime: Timestamp
    /// Coffer addition: when a login last used it (OpenBao keeps no such time).
    var lastUsedTime: Timestamp?
    var metadata: [String: String]
    /// Uses left; 0 means unlimited.
    var numUses: Int
    var ttl: Int64
    var cidrList: [String]
    var tokenBoundCIDRs: [String]

    var json: JSONValue {
        var object: [String: JSONValue] = [
            "secret_id_accessor": .string(accessor), "creation_time": .string(creationTime.rfc3339),
            "last_updated_time": .string(lastUpdatedTime.rfc3339),
            "metadata": .object(metadata.mapValues { .string($0) }), "secret_id_num_uses": .int(numUses),
            "secret_id_ttl": .int(ttl), "cidr_list": .array(cidrList.map { .string($0) }),
            "token_bound_cidrs": .array(tokenBoundCIDRs.map { .string($0) }),
        ]
        if let expirationTime { object["expiration_time"] = .string(expirationTime.rfc3339) }
        if let lastUsedTime { object["last_used_time"] = .string(lastUsedTime.rfc3339) }
        return .object(object)
    }

    init(
        accessor: String,
        now: Timestamp,
        ttl: Int64,
        numUses: Int,
        metadata: [String: String],
        cidrList: [String],
        tokenBoundCIDRs: [String]
    ) {
        self.accessor = accessor
        creationTime = now
        expirationTime = ttl > 0 ? now.adding(seconds: ttl) : nil
        lastUpdatedTime = now
        lastUsedTime = nil
        self.metadata = metadata
        self.numUses = numUses
        self.ttl = ttl
        self.cidrList = cidrList
        self.tokenBoundCIDRs = tokenBoundCIDRs
    }

    init?(json: JSONValue) {
        guard let object = json.objectValue, let accessor = object["secret_id_accessor"]?.stringValue,
            let created = object["creation_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:)),
            let updated = object["last_updated_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:))
        else { return nil }
        self.accessor = accessor
        creationTime = created
        lastUpdatedTime = updated
        expirationTime = object["expiration_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:))
        lastUsedTime = object["last_used_time"]?.stringValue.flatMap(Timestamp.init(rfc3339:))
        metadata = (object["metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        numUses = object["secret_id_num_uses"]?.intValue ?? 0
        ttl = Int64(object["secret_id_ttl"]?.intValue ?? 0)
        cidrList = (object["cidr_list"]?.arrayValue ?? []).compactMap(\.stringValue)
        tokenBoundCIDRs = (object["token_bound_cidrs"]?.arrayValue ?? []).compactMap(\.stringValue)
    }

    func expired(at now: Timestamp) -> Bool {
        guard let expirationTime else { return false }
        return now >= expirationTime
    }

    /// What `secret-id/lookup` and `secret-id-accessor/lookup` show. `last_used_time` is a Coffer
    /// addition (null until a login uses the secret ID).
    var lookup: [String: JSONValue] {
        [
            "cidr_list": .array(cidrList.map { .string($0) }), "creation_time": .string(creationTime.rfc3339),
            "expiration_time": .string(expirationTime?.rfc3339 ?? "0001-01-01T00:00:00Z"),
            "last_updated_time": .string(lastUpdatedTime.rfc3339),
            "last_used_time": lastUsedTime.map { .string($0.rfc3339) } ?? .null,
            "metadata": .object(metadata.mapValues { .string($0) }), "secret_id_accessor": .string(accessor),
            "secret_id_num_uses": .int(numUses), "secret_id_ttl": .int(ttl),
            "token_bound_cidrs": .array(tokenBoundCIDRs.map { .string($0) }),
        ]
    }
}

/// The storage keys under an AppRole mount.
enum AppRoleKeys {
    /// The mount's HMAC key (32 random bytes) for secret IDs and role IDs.
    static let hmacKey = "hmac-key"
    static func role(_ name: String) -> String { "role/" + name }
    static func roleID(_ hmac: String) -> String { "role-id/" + hmac }
    static func secretIDFolder(_ uid: String) -> String { "secret-id/\(uid)/" }
    static func secretID(_ uid: String, _ hmac: String) -> String { "secret-id/\(uid)/\(hmac)" }
    static func accessor(_ accessor: String) -> String { "accessor/" + accessor }
    /// The expiry index: one folder an hour, one key a secret ID that expires in that hour, so tidy
    /// reads only what has expired.
    static let expiryFolder = "expiry/"
    static func expiryBucket(_ time: Timestamp) -> String {
        let hour = max(0, time.nanoseconds / 3_600_000_000_000)
        let digits = String(hour)
        return String(repeating: "0", count: max(0, 12 - digits.count)) + digits
    }
    static func expiry(_ time: Timestamp, _ uid: String, _ hmac: String) -> String {
        "expiry/\(expiryBucket(time))/\(time.seconds).\(uid).\(hmac)"
    }
}

/// Go's `%q` of a `[]string`, as OpenBao's messages print CIDR lists: `["a" "b"]`.
func goQuotedList(_ items: [String]) -> String {
    "[" + items.map { "\"\($0)\"" }.joined(separator: " ") + "]"
}

/// Vault's generic name rule for roles and users: word characters, with `-`, `.` (and `@` where
/// `at` is set) inside.
func isValidName(_ name: String, allowAt: Bool = false) -> Bool {
    let bytes = Array(name.utf8)
    guard !bytes.isEmpty else { return false }
    func word(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F
    }
    guard word(bytes[0]), word(bytes[bytes.count - 1]) else { return false }
    return bytes.allSatisfy {
        word($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || (allowAt && $0 == UInt8(ascii: "@"))
    }
}

/// OpenBao's 404 for a path whose name does not fit, or a write to a sub-path of a missing role.
let unsupportedPathError = CofferError(.notFound, multierror("unsupported path"))
