package import CofferCore

/// A lease as stored, under `sys/expire/id/<lease id>`: what was handed out, by which mount and
/// token, until when, and how its revocation is going.
package struct LeaseEntry: Sendable, Equatable {
    /// `<mount path><request path>/<24 base62 characters>`, as OpenBao forms it.
    package var id: String
    /// The request path that issued it ("database/creds/ro").
    package var path: String
    /// The mount that issued it, by uuid: a renamed mount still finds its leases' backend.
    package var mountUUID: String
    /// The backend's ``SecretType`` name.
    package var secretType: String
    /// What the backend's hooks need (the database user's name): kept in the barrier, never shown.
    package var internalData: [String: JSONValue]
    /// The salted hash of the token that asked for it ("" for none); its revocation revokes this lease.
    package var tokenHash: String
    package var issueTime: Timestamp
    package var expireTime: Timestamp
    package var lastRenewal: Timestamp?
    /// Renewals never reach past it: issue time plus the effective max TTL.
    package var maxExpireTime: Timestamp
    /// What a renewal without an increment grants (the TTL asked for at issue, before any cap).
    package var defaultTTL: Int64
    package var renewable: Bool
    /// Failed revocations so far; 0 while the lease is live or its revocation never failed.
    package var revokeAttempts: Int
    /// The last revocation error, "" when none.
    package var revokeError: String
    /// The expiry index row naming this lease: the next time it is due (its expiry, or after a
    /// failed revocation the next attempt).
    package var dueKey: String

    var json: JSONValue {
        [
            "id": .string(id), "path": .string(path), "mount_uuid": .string(mountUUID),
            "secret_type": .string(secretType), "internal": .object(internalData), "token": .string(tokenHash),
            "issue_time": .int(issueTime.nanoseconds), "expire_time": .int(expireTime.nanoseconds),
            "last_renewal": lastRenewal.map { .int($0.nanoseconds) } ?? .null,
            "max_expire_time": .int(maxExpireTime.nanoseconds), "default_ttl": .int(defaultTTL),
            "renewable": .bool(renewable), "revoke_attempts": .int(revokeAttempts),
            "revoke_error": .string(revokeError),
            "due_key": .string(dueKey),
        ]
    }

    init(
        id: String,
        path: String,
        mountUUID: String,
        secretType: String,
        internalData: [String: JSONValue],
        tokenHash: String,
        issueTime: Timestamp,
        ttl: Int64,
        maxTTL: Int64,
        defaultTTL: Int64,
        renewable: Bool
    ) {
        self.id = id
        self.path = path
        self.mountUUID = mountUUID
        self.secretType = secretType
        self.internalData = internalData
        self.tokenHash = tokenHash
        self.issueTime = issueTime
        self.expireTime = issueTime.adding(seconds: ttl)
        self.lastRenewal = nil
        self.maxExpireTime = issueTime.adding(seconds: maxTTL)
        self.defaultTTL = defaultTTL
        self.renewable = renewable
        self.revokeAttempts = 0
        self.revokeError = ""
        self.dueKey = ""
    }

    init(json: JSONValue) throws(CofferError) {
        func time(_ key: String) -> Timestamp? { json[key]?.intValue.map { Timestamp(nanoseconds: Int64($0)) } }
        guard let id = json["id"]?.stringValue, let mountUUID = json["mount_uuid"]?.stringValue,
            let type = json["secret_type"]?.stringValue, let issue = time("issue_time"),
            let expire = time("expire_time"), let dueKey = json["due_key"]?.stringValue
        else { throw CofferError(.integrity, "a stored lease entry is malformed") }
        self.id = id
        self.path = json["path"]?.stringValue ?? ""
        self.mountUUID = mountUUID
        self.secretType = type
        self.internalData = json["internal"]?.objectValue ?? [:]
        self.tokenHash = json["token"]?.stringValue ?? ""
        self.issueTime = issue
        self.expireTime = expire
        self.lastRenewal = time("last_renewal")
        self.maxExpireTime = time("max_expire_time") ?? expire
        self.defaultTTL = Int64(json["default_ttl"]?.intValue ?? 0)
        self.renewable = json["renewable"]?.boolValue ?? false
        self.revokeAttempts = json["revoke_attempts"]?.intValue ?? 0
        self.revokeError = json["revoke_error"]?.stringValue ?? ""
        self.dueKey = dueKey
    }

    /// Whole seconds left (negative once expired: a lease whose revocation keeps failing).
    func ttl(now: Timestamp) -> Int64 { now.seconds(until: expireTime) }

    /// `sys/leases/lookup`'s data. Beyond OpenBao: a failing revocation shows its error, its count
    /// and when it is tried next, from the first failure on.
    func lookupData(now: Timestamp, nextAttempt: Timestamp?) -> [String: JSONValue] {
        let ttl = ttl(now: now)
        var data: [String: JSONValue] = [
            "id": .string(id), "path": .string(path), "issue_time": .string(issueTime.rfc3339),
            "expire_time": .string(expireTime.rfc3339),
            "last_renewal": lastRenewal.map { .string($0.rfc3339) } ?? .null,
            "renewable": .bool(renewable && ttl > 0 && revokeAttempts == 0), "ttl": .int(ttl),
        ]
        if revokeAttempts > 0 {
            data["revoke_error"] = .string(revokeError)
            data["revoke_attempts"] = .int(revokeAttempts)
            data["next_revoke_attempt"] = nextAttempt.map { .string($0.rfc3339) } ?? .null
        }
        return data
    }
}

/// The keys of the expiry index: `sys/expire/at/<hour>/<minute>/<nanoseconds>-<random>`, all
/// zero-padded so that storage's sorted listing is time order. The hour and minute levels keep
/// every listing short: finding what is due reads the first few folders, never the whole index, so
/// opening a vault with a million leases reads none of them.
enum DueIndex {
    static let prefix = "sys/expire/at/"

    static func key(_ time: Timestamp) -> String {
        let ns = max(0, time.nanoseconds)
        let seconds = ns / 1_000_000_000
        return prefix + pad(seconds / 3600, 10) + "/" + pad(seconds / 60, 12) + "/" + pad(ns, 20) + "-"
            + Random.base62(8)
    }

    /// The time a row is due, from its last segment.
    static func time(ofRow name: String) -> Timestamp? {
        guard let dash = name.firstIndex(of: "-"), let ns = Int64(name[..<dash]) else { return nil }
        return Timestamp(nanoseconds: ns)
    }

    static func time(ofKey key: String) -> Timestamp? {
        guard let slash = key.lastIndex(of: "/") else { return nil }
        return time(ofRow: String(key[key.index(after: slash)...]))
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
