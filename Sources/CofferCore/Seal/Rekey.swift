/// An operation to replace the unseal shares, in progress.
struct RekeyState {
    let nonce: String
    let shares: Int
    let threshold: Int
    var parts: [SecureBytes] = []
}

extension Core {
    /// `sys/rekey/init` and `sys/rekey/update`: new unseal shares for the same root key. The data is
    /// not re-encrypted; only the root key's wrapping changes. Authorised by a threshold of the
    /// current shares, like unseal.
    func handleRekey(_ request: Request) throws(CofferError) -> Response {
        guard !barrier.isSealed else { throw CofferError.sealedError }
        guard let config = try storedSealConfig() else { throw CofferError(.notInitialized, "Vault is not initialized") }
        let data = request.data
        switch (request.path, request.operation) {
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
        let share = SecureBytes(key)
        let check = SealConfig.check(share)
        guard config.shareChecks.contains(where: { ConstantTime.equals(Array($0.utf8), Array(check.utf8)) }) else {
            throw CofferError.invalid("this key is not one of the current unseal keys; progress is unchanged")
        }
        let ready: RekeyState? = try rekey.withLock { (state) throws(CofferError) -> RekeyState? in
            guard var current = state else { throw CofferError.invalid("no rekey is in progress") }
            guard current.nonce == nonce else { throw CofferError.invalid("the nonce does not match the rekey in progress") }
            if current.parts.contains(where: { $0.constantTimeEquals(share) }) {
                throw CofferError.invalid("this key was already entered; progress is unchanged")
            }
            current.parts.append(share)
            state = current
            return current.parts.count >= config.threshold ? current : nil
        }
        guard let ready else { return .raw(rekeyStatus(config)) }
        defer { rekey.withLock { $0 = nil } }
        let result = try lifecycle.withLock { (_) throws(CofferError) -> InitResult in
            let oldKey = try Shamir.combine(ready.parts)
            // Prove the old shares are right before replacing anything.
            guard let blob = try barrier.physical.get(ShamirSeal.rootKeyPath) else {
                throw CofferError(.corruptDatabase, "the root key (core/root-key) is missing from storage")
            }
            _ = try seal.unwrap(blob, unsealKey: oldKey)
            return try reissueShares(shares: ready.shares, threshold: ready.threshold)
        }
        return .raw([
            "nonce": .string(ready.nonce), "complete": true, "keys": .array(result.hexKeys.map { .string($0) }),
            "keys_base64": .array(result.base64Keys.map { .string($0) }), "pgp_fingerprints": nil, "backup": false,
            "verification_required": false,
        ])
    }

    /// A new unseal key split into new shares; the root key re-wrapped; both written atomically.
    func reissueShares(shares: Int, threshold: Int) throws(CofferError) -> InitResult {
        let rootKey = try barrier.rootKey()
        let unsealKey = SecureBytes(randomCount: 32)
        let parts = try Shamir.split(unsealKey, shares: shares, threshold: threshold)
        let wrapped = try seal.wrap(rootKey, unsealKey: seal.isAutoUnseal ? nil : unsealKey)
        var config = SealConfig(type: seal.type, shares: shares, threshold: threshold, shareChecks: parts.map(SealConfig.check))
        if seal.isAutoUnseal {
            config.recoveryShares = shares
            config.recoveryThreshold = threshold
        }
        try barrier.physical.batch([
            .put(key: ShamirSeal.rootKeyPath, value: wrapped), .put(key: SealConfig.path, value: config.json.serialized()),
        ])
        return InitResult(keys: parts, rootToken: "", recovery: seal.isAutoUnseal)
    }
}
