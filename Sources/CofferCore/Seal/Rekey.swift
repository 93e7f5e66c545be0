/// An operation to replace the unseal shares, in progress.
struct RekeyState: ShareQuorum {
    let nonce: String
    let shares: Int
    let threshold: Int
    var parts: [SecureBytes] = []
}

/// An operation authorised by a threshold of the current shares (rekey, root generation).
protocol ShareQuorum {
    var nonce: String { get }
    var parts: [SecureBytes] { get set }
}

extension Optional where Wrapped: ShareQuorum {
    /// Adds `share` to the operation in progress; returns the operation once `threshold` shares are in.
    /// A wrong nonce or a repeated share is an error that leaves the progress as it was.
    mutating func add(_ share: SecureBytes, nonce: String, threshold: Int, operation: String) throws(CofferError) -> Wrapped? {
        guard var current = self else { throw CofferError.invalid("no \(operation) is in progress") }
        guard current.nonce == nonce else { throw CofferError.invalid("the nonce does not match the \(operation) in progress") }
        if current.parts.contains(where: { $0.constantTimeEquals(share) }) {
            throw CofferError.invalid("this key was already entered; progress is unchanged")
        }
        current.parts.append(share)
        self = current
        return current.parts.count >= threshold ? current : nil
    }
}

extension Core {
    /// `sys/rekey/init` and `sys/rekey/update`: new unseal shares for the same root key. The data is
    /// not re-encrypted; only the root key's wrapping changes. Authorised by a threshold of the
    /// current shares, like unseal. With an auto-unseal seal the shares are recovery shares and the
    /// same flow (also under Vault's `sys/rekey-recovery-key/`) issues new recovery shares.
    func handleRekey(_ request: Request) throws(CofferError) -> Response {
        guard !barrier.isSealed else { throw CofferError.sealedError }
        guard let config = try storedSealConfig() else { throw CofferError(.notInitialized, "Vault is not initialized") }
        let data = request.data
        let path = request.path.replacingPrefix("sys/rekey-recovery-key/", with: "sys/rekey/")
        switch (path, request.operation) {
        case ("sys/rekey/init", .read):
            return .raw(rekeyStatus(config))
        case ("sys/rekey/init", .update), ("sys/rekey/init", .create):
            let shares = try data.int("secret_shares") ?? 0
            let threshold = try data.int("secret_threshold") ?? 0
            // Validate now, not at the end, so a bad request does not waste the operators' time.
            _ = try Shamir.split(SecureBytes([0]), shares: max(shares, 1), threshold: max(threshold, 1))
            guard shares > 0, threshold > 0 else { throw CofferError.invalid("secret_shares and secret_threshold are required") }
            try rekey.withLock { (state) throws(CofferError) in
                guard state == nil else { throw CofferError.invalid("rekey already in progress") }
                state = RekeyState(nonce: Random.uuid(), shares: shares, threshold: threshold)
            }
            return .raw(rekeyStatus(config))
        case ("sys/rekey/init", .delete):
            rekey.withLock { $0 = nil }
            return .noContent
        case ("sys/rekey/update", .update), ("sys/rekey/update", .create):
            guard let nonce = try data.string("nonce") else { throw CofferError.invalid("missing nonce") }
            guard let text = try data.string("key"), let key = Hex.decode(text) ?? Base64.decode(text) else {
                throw CofferError.invalid("'key' must be a valid hex or base64 string")
            }
            return try rekeyUpdate(key: key, nonce: nonce, config: config)
        default:
            throw unsupported(request)
        }
    }

    func rekeyStatus(_ config: SealConfig) -> JSONValue {
        let state = rekey.withLock { $0 }
        return [
            "nonce": .string(state?.nonce ?? ""), "started": .bool(state != nil), "t": .int(state?.threshold ?? 0),
            "n": .int(state?.shares ?? 0), "progress": .int(state?.parts.count ?? 0), "required": .int(config.threshold),
            "pgp_fingerprints": nil, "backup": false, "verification_required": false,
        ]
    }

    func rekeyUpdate(key: [UInt8], nonce: String, config: SealConfig) throws(CofferError) -> Response {
        let share = try checkedShare(key, config: config)
        let ready = try rekey.withLock { (state) throws(CofferError) in
            try state.add(share, nonce: nonce, threshold: config.threshold, operation: "rekey")
        }
        guard let ready else { return .raw(rekeyStatus(config)) }
        defer { rekey.withLock { $0 = nil } }
        let result = try lifecycle.withLock { (_) throws(CofferError) -> InitResult in
            // Prove the old shares are right before replacing anything.
            try verifyShares(ready.parts)
            return try reissueShares(shares: ready.shares, threshold: ready.threshold)
        }
        return .raw([
            "nonce": .string(ready.nonce), "complete": true, "keys": .array(result.hexKeys.map { .string($0) }),
            "keys_base64": .array(result.base64Keys.map { .string($0) }), "pgp_fingerprints": nil, "backup": false,
            "verification_required": false,
        ])
    }

    /// A new unseal key split into new shares and the root key re-wrapped by it (Shamir), or a new
    /// recovery key stored in its place (auto-unseal); written atomically with the seal config.
    func reissueShares(shares: Int, threshold: Int) throws(CofferError) -> InitResult {
        let seal = self.seal
        let newKey = SecureBytes(randomCount: 32)
        let parts = try Shamir.split(newKey, shares: shares, threshold: threshold)
        let config = SealConfig(for: seal, shares: shares, threshold: threshold, parts: parts)
        var operations: [StorageOperation] = [.put(key: SealConfig.path, value: config.json.serialized())]
        if seal.isAutoUnseal {
            let sealed = try barrier.sealedEntry(RecoveryKey.path, secret: newKey, wrappingWith: seal)
            operations.append(.put(key: RecoveryKey.path, value: sealed))
        } else {
            operations.append(.put(key: ShamirSeal.rootKeyPath, value: try seal.wrap(try barrier.rootKey(), unsealKey: newKey)))
        }
        try barrier.physical.batch(operations)
        return InitResult(keys: parts, rootToken: "", recovery: seal.isAutoUnseal)
    }

    /// A share from a rekey or root-generation request, checked against the current set.
    func checkedShare(_ key: [UInt8], config: SealConfig) throws(CofferError) -> SecureBytes {
        let share = SecureBytes(key)
        let check = SealConfig.check(share)
        guard config.shareChecks.contains(where: { ConstantTime.equals(Array($0.utf8), Array(check.utf8)) }) else {
            let kind = seal.isAutoUnseal ? "recovery" : "unseal"
            throw CofferError.invalid("this key is not one of the current \(kind) keys; progress is unchanged")
        }
        return share
    }

    /// Proves that `parts` recombine into the current unseal key (the root key opens with it) or,
    /// with an auto-unseal seal, into the stored recovery key.
    func verifyShares(_ parts: [SecureBytes]) throws(CofferError) {
        let key = try Shamir.combine(parts)
        let seal = self.seal
        if seal.isAutoUnseal {
            guard var stored = try barrier.get(RecoveryKey.path) else {
                throw CofferError(.corruptDatabase, "the recovery key (\(RecoveryKey.path)) is missing from storage")
            }
            defer { stored.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) } }
            let matches = key.withUnsafeBytes { k in stored.withUnsafeBytes { ConstantTime.equals(k, $0) } }
            guard matches else { throw CofferError.invalid("the recovery keys given do not combine into this vault's recovery key") }
        } else {
            guard let blob = try barrier.physical.get(ShamirSeal.rootKeyPath) else {
                throw CofferError(.corruptDatabase, "the root key (core/root-key) is missing from storage")
            }
            do {
                _ = try seal.unwrap(blob, unsealKey: key)
            } catch where error.code == .integrity {
                throw CofferError.invalid("the unseal keys given do not combine into this vault's unseal key")
            }
        }
    }
}

/// Where the recovery key of an auto-unseal seal is kept: through the barrier, and seal-wrapped
/// when the seal does that.
enum RecoveryKey {
    static let path = "core/recovery-key"
}

extension String {
    func replacingPrefix(_ prefix: String, with replacement: String) -> String {
        hasPrefix(prefix) ? replacement + dropFirst(prefix.count) : self
    }
}
