package import CofferCore
package import CofferFramework

/// A rotation policy on one KV v2 secret (docs/rotation.md): when it runs, which key of the secret
/// gets the new value, how the value is made and checked, and how long the previous version stays.
struct RotationPolicy: Sendable {
    enum Generator: Sendable {
        case password(policy: String?, length: Int, charset: [Character])
        case bytes(length: Int, hex: Bool)
        case command([String], timeout: Double)
        case webhook(String, timeout: Double)
    }

    enum Validator: Sendable {
        case command([String], timeout: Double)
        case webhook(String, timeout: Double)
    }

    static let defaultTimeout: Int64 = 10
    static let maximumTimeout: Int64 = 300
    static let defaultCharset = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")

    /// nil: rotated only on request (`rotate/<path>`).
    var schedule: RotationSchedule?
    var field: String
    var generator: Generator
    var validator: Validator?
    var gracePeriod: Int64
    var requiredAcks: [String]
    /// Whether the validator runs again against the stored value after the write.
    var postWriteCheck: Bool
    /// The namespace the policy was written in, for the events the scheduler publishes.
    var namespaceID: String
    /// The policy as stored (the request's fields, checked and normalised).
    let stored: [String: JSONValue]

    /// The request fields of `rotation/<path>`.
    static let fields: [Field] = [
        .duration("period"), .string("schedule"), .string("field"), .string("generator"),
        .string("password_policy"), .int("length", 1...4096), .string("charset"), .string("encoding"),
        .any("command"), .string("url"), .duration("timeout", maximum: maximumTimeout),
        .any("validate_command"), .string("validate_url"), .duration("validate_timeout", maximum: maximumTimeout),
        .duration("grace_period"), .strings("required_acks"), .bool("post_write_check"),
    ]

    /// Reads the checked request fields into the stored form, then checks that form.
    static func from(_ f: FieldData, namespaceID: String) throws(CofferError) -> RotationPolicy {
        var out: [String: JSONValue] = ["namespace_id": .string(namespaceID)]
        for name in ["schedule", "field", "generator", "password_policy", "charset", "encoding", "url", "validate_url"]
        {
            if let v = f.string(name) { out[name] = .string(v) }
        }
        for name in ["period", "timeout", "validate_timeout", "grace_period"] {
            if let v = f.seconds(name) { out[name] = .int(Int(v)) }
        }
        if let v = f.int("length") { out["length"] = .int(v) }
        if let v = f.bool("post_write_check") { out["post_write_check"] = .bool(v) }
        if let v = f.strings("required_acks") { out["required_acks"] = .array(v.map { .string($0) }) }
        for name in ["command", "validate_command"] {
            if let v = f.json(name) { out[name] = .array(try argv(v, name: name).map { .string($0) }) }
        }
        return try RotationPolicy(stored: out)
    }

    /// An argv: a JSON array of strings, or text holding one (as the CLI's `key=value` sends it).
    static func argv(_ value: JSONValue, name: String) throws(CofferError) -> [String] {
        var value = value
        if case .string(let text) = value {
            guard let parsed = try? JSONValue.parse(Array(text.utf8)) else {
                throw CofferError.invalid(
                    "\(name) must be a JSON array of strings (the program and its arguments; no shell), such as [\"/usr/bin/gen\", \"--len\", \"24\"]"
                )
            }
            value = parsed
        }
        guard case .array(let items) = value, !items.isEmpty, items.count <= 64 else {
            throw CofferError.invalid("\(name) must be a non-empty JSON array of at most 64 strings")
        }
        var out: [String] = []
        for (i, item) in items.enumerated() {
            guard case .string(let s) = item, !s.utf8.contains(0), s.utf8.count <= 4096 else {
                throw CofferError.invalid("\(name)[\(i)] must be a string of at most 4096 bytes without NUL")
            }
            out.append(s)
        }
        guard out[0].hasPrefix("/") else {
            throw CofferError.invalid("\(name)[0] must be the program's absolute path (no shell, no PATH search)")
        }
        return out
    }

    init(stored json: [String: JSONValue]) throws(CofferError) {
        stored = json
        namespaceID = json["namespace_id"]?.stringValue ?? ""
        let period = Int64(json["period"]?.intValue ?? 0)
        let scheduleText = json["schedule"]?.stringValue ?? ""
        if period > 0 && !scheduleText.isEmpty {
            throw CofferError.invalid("give period or schedule, not both")
        }
        if !scheduleText.isEmpty {
            schedule = .cron(try CronSchedule(scheduleText))
        } else if period > 0 {
            guard period >= 5 else { throw CofferError.invalid("period must be 5 seconds or more") }
            schedule = .period(period)
        }
        field = json["field"]?.stringValue ?? "password"
        guard !field.isEmpty, field.utf8.count <= 256 else {
            throw CofferError.invalid("field must name the key of the secret that gets the new value")
        }
        func timeout(_ name: String) -> Double {
            let v = Int64(json[name]?.intValue ?? 0)
            return Double(v > 0 ? min(v, Self.maximumTimeout) : Self.defaultTimeout)
        }
        let length = json["length"]?.intValue
        switch json["generator"]?.stringValue ?? "password" {
        case "password":
            let name = json["password_policy"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
            let n = length ?? 24
            guard PasswordPolicy.lengthRange.contains(n) || name != nil else {
                throw CofferError.invalid(
                    "length of a password must be from \(PasswordPolicy.lengthRange.lowerBound) to \(PasswordPolicy.lengthRange.upperBound)"
                )
            }
            var charset = Self.defaultCharset
            if let text = json["charset"]?.stringValue, !text.isEmpty {
                var seen = Set<Character>()
                charset = text.filter { seen.insert($0).inserted }.map { $0 }
                guard charset.count >= 2 else { throw CofferError.invalid("charset must hold at least two characters") }
            }
            generator = .password(policy: name, length: n, charset: charset)
        case "bytes":
            let n = length ?? 32
            guard (1...1024).contains(n) else {
                throw CofferError.invalid("length of random bytes must be from 1 to 1024")
            }
            let encoding = json["encoding"]?.stringValue ?? "base64"
            guard encoding == "base64" || encoding == "hex" else {
                throw CofferError.invalid("encoding must be \"base64\" or \"hex\", not \"\(encoding)\"")
            }
            generator = .bytes(length: n, hex: encoding == "hex")
        case "command":
            guard let v = json["command"] else {
                throw CofferError.invalid("generator \"command\" needs command: the program and its arguments")
            }
            generator = .command(try Self.argv(v, name: "command"), timeout: timeout("timeout"))
        case "webhook":
            guard let url = json["url"]?.stringValue, HTTPClient.URL(url) != nil else {
                throw CofferError.invalid("generator \"webhook\" needs url: an http:// or https:// URL")
            }
            generator = .webhook(url, timeout: timeout("timeout"))
        case let other:
            throw CofferError.invalid(
                "generator must be \"password\", \"bytes\", \"command\" or \"webhook\", not \"\(other)\""
            )
        }
        if let v = json["validate_command"] {
            guard json["validate_url"] == nil else {
                throw CofferError.invalid("give validate_command or validate_url, not both")
            }
            validator = .command(try Self.argv(v, name: "validate_command"), timeout: timeout("validate_timeout"))
        } else if let url = json["validate_url"]?.stringValue {
            guard HTTPClient.URL(url) != nil else {
                throw CofferError.invalid("validate_url must be an http:// or https:// URL")
            }
            validator = .webhook(url, timeout: timeout("validate_timeout"))
        }
        gracePeriod = Int64(json["grace_period"]?.intValue ?? 0)
        requiredAcks = json["required_acks"]?.arrayValue?.compactMap(\.stringValue) ?? []
        guard requiredAcks.count <= 64, requiredAcks.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 128 }) else {
            throw CofferError.invalid("required_acks must list at most 64 consumer names of 1 to 128 bytes")
        }
        postWriteCheck = json["post_write_check"]?.boolValue ?? true
    }

    /// Seconds the runner may hold its claim: every external step's timeout, and a minute more.
    var claimSeconds: Int64 {
        var total: Double = 60
        if case .command(_, let t) = generator { total += t }
        if case .webhook(_, let t) = generator { total += t }
        switch validator {
        case .command(_, let t)?, .webhook(_, let t)?: total += 2 * t
        case nil: break
        }
        return Int64(total)
    }

    /// The policy as a read shows it.
    var json: [String: JSONValue] {
        var out = stored
        out.removeValue(forKey: "namespace_id")
        for name in ["period", "timeout", "validate_timeout", "grace_period"] {
            if let v = out[name]?.intValue { out[name] = .string(VaultDuration.format(Int64(v))) }
        }
        out["field"] = .string(field)
        if out["generator"] == nil { out["generator"] = "password" }
        if out["grace_period"] == nil { out["grace_period"] = "0s" }
        out["required_acks"] = .array(requiredAcks.map { .string($0) })
        out["post_write_check"] = .bool(postWriteCheck)
        return out
    }
}

/// The persisted state of a secret's rotation: the phase of the run in progress (so a restart
/// resumes or cleanly ends it), the runner's claim, the next run time and the last run's outcome.
struct RotationState: Sendable {
    enum Phase: String, Sendable {
        /// No run in progress.
        case idle
        /// Health-checked; generating and validating a candidate. Nothing written yet.
        case generating
        /// About to write version `old + 1`; `digest` identifies the candidate.
        case writing
        /// The new version is stored; the post-write check is next.
        case written
        /// Notified; waiting for the acknowledgements or the end of the grace period.
        case waiting
        /// Writing the previous value back.
        case rollingBack = "rolling-back"
    }

    var phase: Phase = .idle
    var runID = ""
    var reason = ""
    var started: Timestamp?
    var oldVersion = 0
    var newVersion = 0
    var digest = ""
    var salt = ""
    var graceUntil: Timestamp?
    var acks: [String: Bool] = [:]
    var rollbackReason = ""
    var claimBy = ""
    var claimUntil: Timestamp?
    var nextRun: Timestamp?
    var lastRun: [String: JSONValue] = [:]

    init() {}

    init(json: JSONValue) {
        func ts(_ v: JSONValue?) -> Timestamp? {
            guard case .number(let t)? = v, let n = Int64(t) else { return nil }
            return Timestamp(nanoseconds: n)
        }
        phase = Phase(rawValue: json["phase"]?.stringValue ?? "") ?? .idle
        runID = json["run_id"]?.stringValue ?? ""
        reason = json["reason"]?.stringValue ?? ""
        started = ts(json["started"])
        oldVersion = json["old_version"]?.intValue ?? 0
        newVersion = json["new_version"]?.intValue ?? 0
        digest = json["digest"]?.stringValue ?? ""
        salt = json["salt"]?.stringValue ?? ""
        graceUntil = ts(json["grace_until"])
        acks = (json["acks"]?.objectValue ?? [:]).compactMapValues(\.boolValue)
        rollbackReason = json["rollback_reason"]?.stringValue ?? ""
        claimBy = json["claim_by"]?.stringValue ?? ""
        claimUntil = ts(json["claim_until"])
        nextRun = ts(json["next_run"])
        lastRun = json["last_run"]?.objectValue ?? [:]
    }

    var stored: JSONValue {
        func ts(_ t: Timestamp?) -> JSONValue { t.map { .number(String($0.nanoseconds)) } ?? .null }
        return [
            "phase": .string(phase.rawValue), "run_id": .string(runID), "reason": .string(reason),
            "started": ts(started), "old_version": .int(oldVersion), "new_version": .int(newVersion),
            "digest": .string(digest), "salt": .string(salt), "grace_until": ts(graceUntil),
            "acks": .object(acks.mapValues { .bool($0) }), "rollback_reason": .string(rollbackReason),
            "claim_by": .string(claimBy), "claim_until": ts(claimUntil), "next_run": ts(nextRun),
            "last_run": .object(lastRun),
        ]
    }

    /// The `status` block of a read.
    var status: [String: JSONValue] {
        func time(_ t: Timestamp?) -> JSONValue { t.map { .string($0.rfc3339) } ?? .null }
        var out: [String: JSONValue] = [
            "phase": .string(phase.rawValue), "next_run": time(nextRun),
            "last_run": lastRun.isEmpty ? .null : .object(lastRun),
        ]
        if phase != .idle {
            out["run"] = [
                "run_id": .string(runID), "reason": .string(reason), "started": time(started),
                "old_version": .int(oldVersion), "new_version": newVersion > 0 ? .int(newVersion) : .null,
                "grace_until": time(graceUntil),
                "acks": .object(acks.mapValues { .bool($0) }),
            ]
        }
        if !claimBy.isEmpty {
            out["claim"] = ["by": .string(claimBy), "until": time(claimUntil)]
        }
        return out
    }
}
