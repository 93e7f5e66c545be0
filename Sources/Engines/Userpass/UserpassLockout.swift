package import CofferCore

/// OpenBao's user lockout settings for a mount, from `sys/auth/<path>/tune` with
/// `user_lockout_config` (`lockout_threshold`, `lockout_duration`, `lockout_counter_reset`,
/// `disable_lockout`; the `user_lockout_*` names the mount listing shows are read too). Defaults as
/// OpenBao 2.7.2: 5 failures lock the user for 15 minutes; the count restarts 15 minutes after the
/// last failure. Values that do not parse keep their default.
package struct LockoutConfig: Sendable, Equatable {
    package var threshold = 5
    package var duration: Int64 = 15 * 60
    package var counterReset: Int64 = 15 * 60
    package var disabled = false

    package init(_ value: JSONValue?) {
        guard let object = value?.objectValue else { return }
        func pick(_ names: String...) -> String? { names.first { object[$0] != nil && object[$0] != .null } }
        if let key = pick("lockout_threshold", "user_lockout_threshold"), let v = try? object.int(key), v > 0 {
            threshold = v
        }
        if let key = pick("lockout_duration", "user_lockout_duration"), let v = try? object.duration(key), v > 0 {
            duration = v
        }
        if let key = pick(
            "lockout_counter_reset",
            "lockout_counter_reset_duration",
            "user_lockout_counter_reset_duration"
        ),
            let v = try? object.duration(key), v > 0
        {
            counterReset = v
        }
        if let key = pick("disable_lockout", "user_lockout_disable"), let v = try? object.bool(key) { disabled = v }
    }
}

extension UserpassBackend {
    static func lockoutKey(_ name: String) -> String { "lockout/" + name }

    /// Whether `name` is locked out now. A lock whose time has passed is dropped (memory and storage).
    func isLocked(
        _ name: String,
        _ config: LockoutConfig,
        _ now: Timestamp,
        _ storage: StorageView
    ) throws(CofferError) -> Bool {
        let stored = try storage.getJSON(Self.lockoutKey(name))
        guard !config.disabled else { return false }
        var state = failures.withLock { $0[name] }
        if state == nil, let stored, let count = stored["count"]?.intValue,
            let last = stored["last_failure"]?.stringValue.flatMap(Timestamp.init(rfc3339:))
        {
            state = Failures(count: count, last: last)
        }
        guard let state else { return false }
        if state.count >= config.threshold {
            if now < state.last.adding(seconds: config.duration) { return true }
            // The lock has run out: the user starts again from no failures.
            failures.withLock { _ = $0.removeValue(forKey: name) }
            if stored != nil { try storage.delete(Self.lockoutKey(name)) }
        }
        return false
    }

    /// Counts a failed login of an existing user; at the threshold the lock is stored too.
    func recordFailure(
        _ name: String,
        _ config: LockoutConfig,
        _ now: Timestamp,
        _ storage: StorageView
    ) throws(CofferError) {
        guard !config.disabled else { return }
        let state = failures.withLock { (all) -> Failures in
            var state = all[name] ?? Failures(count: 0, last: now)
            if now >= state.last.adding(seconds: config.counterReset) { state.count = 0 }
            state.count += 1
            state.last = now
            all[name] = state
            return state
        }
        if state.count >= config.threshold {
            try storage.putJSON(
                Self.lockoutKey(name),
                ["count": .int(state.count), "last_failure": .string(state.last.rfc3339)]
            )
        }
    }

    /// A successful login starts the count again.
    func clearFailures(_ name: String, _ storage: StorageView) throws(CofferError) {
        let had = failures.withLock { $0.removeValue(forKey: name) } != nil
        if had { try storage.delete(Self.lockoutKey(name)) }
    }
}
