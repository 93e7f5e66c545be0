import Synchronization

/// When the barrier rotates by itself: Vault's `sys/rotate/config`.
///
/// AES-256-GCM with random 96-bit nonces stays within NIST SP 800-38D's bound (a collision
/// probability below 2^-32) for about 2^32 encryptions under one key. The barrier counts the
/// encryptions of its active term and adds a term before `maxOperations` (Vault's default,
/// 0.9 × 2^32), and, when `interval` is set, once the active term is that old.
package struct RotationPolicy: Sendable, Equatable {
    package static let defaultMaxOperations: Int64 = 3_865_470_566
    package static let minimumMaxOperations: Int64 = 1_000_000
    package static let minimumInterval: Int64 = 24 * 3600

    package var maxOperations: Int64 = RotationPolicy.defaultMaxOperations
    /// Seconds; 0: no time-based rotation.
    package var interval: Int64 = 0
    package var enabled = true

    package init() {}

    static let path = "core/rotation-config"

    package var json: JSONValue {
        [
            "max_operations": .int(maxOperations), "enabled": .bool(enabled),
            // As OpenBao: 0 when unset, Go's duration text when set.
            "interval": interval == 0 ? .int(0) : .string(VaultDuration.format(interval)),
        ]
    }

    init(stored: JSONValue) {
        maxOperations = Int64(stored["max_operations"]?.intValue ?? Int(RotationPolicy.defaultMaxOperations))
        interval = Int64(stored["interval_seconds"]?.intValue ?? 0)
        enabled = stored["enabled"]?.boolValue ?? true
    }

    var stored: JSONValue {
        ["max_operations": .int(maxOperations), "interval_seconds": .int(interval), "enabled": .bool(enabled)]
    }

    /// Applies the fields of a `sys/rotate/config` write, with OpenBao's ranges and texts.
    package mutating func apply(_ data: [String: JSONValue]) throws(CofferError) {
        if let value = try data.int("max_operations") {
            let operations = Int64(value)
            guard operations >= RotationPolicy.minimumMaxOperations, operations <= RotationPolicy.defaultMaxOperations
            else {
                throw CofferError.invalid(
                    "max_operations must be in the range [\(RotationPolicy.minimumMaxOperations),\(RotationPolicy.defaultMaxOperations)]"
                )
            }
            maxOperations = operations
        }
        if let seconds = try data.duration("interval") {
            guard seconds == 0 || seconds >= RotationPolicy.minimumInterval else {
                throw CofferError.invalid(
                    "interval must be greater or equal to \(VaultDuration.format(RotationPolicy.minimumInterval))"
                )
            }
            interval = seconds
        }
        if let enabled = try data.bool("enabled") { self.enabled = enabled }
    }
}

/// The encryption count of the active term, saved every `KeyUsage.saveEvery` encryptions and at
/// seal. A crash can lose at most that many, so unseal adds that many to what it finds: the count
/// errs high, never low.
package enum KeyUsage {
    static let path = "core/key-usage"
    static let saveEvery: Int64 = 1 << 16
}

extension Barrier {
    /// Counts one encryption under `ring`'s active term, saves the count every
    /// ``KeyUsage/saveEvery`` encryptions, and rotates when the policy says the term is spent.
    func counted(_ ring: Keyring) throws(CofferError) {
        let count = ring.encryptions.wrappingAdd(1, ordering: .relaxed).newValue
        if count >= rotateAfterEncryptions.load(ordering: .relaxed) {
            try rotateIfStillActive(
                ring,
                reason: { $0.encryptions.load(ordering: .relaxed) >= rotateAfterEncryptions.load(ordering: .relaxed) }
            )
        } else if count % KeyUsage.saveEvery == 0 {
            try saveKeyUsage(ring)
        }
        let interval = rotateAfterSeconds.load(ordering: .relaxed)
        if interval > 0, ring.active.installTime.adding(seconds: interval) <= clock.now() {
            try rotateIfStillActive(ring, reason: { $0.active.installTime.adding(seconds: interval) <= clock.now() })
        }
    }

    /// Rotates unless another thread already has (the active term is no longer `ring`'s), or is
    /// writing the keyring now: then this encryption goes ahead under the current term and the next
    /// one tries again. Waiting would deadlock when the encryption is made by a keyring writer itself
    /// (seal migration and rewrap seal the recovery key while holding the lock).
    private func rotateIfStillActive(_ ring: Keyring, reason: (Keyring) -> Bool) throws(CofferError) {
        try withKeyringWriteLockIfAvailable { () throws(CofferError) in
            guard let current = currentRing(), current.activeTerm == ring.activeTerm, reason(current) else { return }
            _ = try rotateLocked(now: clock.now())
        }
    }

    /// Saves the active term's count; a save never lowers the stored count of the same term.
    func saveKeyUsage(_ ring: Keyring) throws(CofferError) {
        let result: Result<Void, CofferError> = usageWrites.withLock { _ in
            let count = ring.encryptions.load(ordering: .relaxed)
            let entry: JSONValue = ["term": .int(ring.activeTerm), "encryptions": .int(count)]
            // Written under the active term; that write is counted too, which cannot reach another
            // save (the count moves by one).
            do throws(CofferError) {
                try physical.put(
                    KeyUsage.path,
                    try Envelope.seal(
                        key: ring.active.key,
                        term: ring.activeTerm,
                        path: KeyUsage.path,
                        plaintext: entry.serialized()
                    )
                )
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    /// At unseal: the stored count of the active term plus the margin a crash may have lost, and
    /// the rotation policy.
    func loadKeyUsage(_ ring: Keyring) throws(CofferError) {
        var count: Int64 = 0
        if let bytes = try get(KeyUsage.path) {
            guard let json = try? JSONValue.parse(bytes), let term = json["term"]?.intValue,
                let stored = json["encryptions"]?.intValue
            else { throw CofferError(.integrity, "the stored encryption count (\(KeyUsage.path)) is malformed") }
            if term == Int(ring.activeTerm) { count = Int64(stored) }
        }
        // A crash after a rotation and before the new term's first save leaves the old term's entry.
        ring.encryptions.store(count.addingSaturating(KeyUsage.saveEvery), ordering: .relaxed)
        var policy = RotationPolicy()
        if let bytes = try get(RotationPolicy.path) {
            guard let json = try? JSONValue.parse(bytes) else {
                throw CofferError(.integrity, "the stored rotation configuration (\(RotationPolicy.path)) is malformed")
            }
            policy = RotationPolicy(stored: json)
        }
        install(policy)
    }

    /// `sys/rotate/config`.
    package func rotationPolicy() -> RotationPolicy { rotation.withLock { $0 } }

    /// Stores and applies a new rotation policy.
    package func setRotationPolicy(_ policy: RotationPolicy) throws(CofferError) {
        try put(RotationPolicy.path, policy.stored.serialized())
        install(policy)
    }

    private func install(_ policy: RotationPolicy) {
        rotation.withLock { $0 = policy }
        rotateAfterEncryptions.store(policy.enabled ? policy.maxOperations : .max, ordering: .relaxed)
        rotateAfterSeconds.store(policy.enabled ? policy.interval : 0, ordering: .relaxed)
    }
}

extension Int64 {
    func addingSaturating(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other < 0 ? .min : .max) : sum
    }
}
