package import CofferAudit
/// An operation to replace the unseal shares, in progress.
package import CofferCore
package import CofferFramework

package struct RekeyState: ShareQuorum {
    package let nonce: String
    let shares: Int
    let threshold: Int
    /// With `pgp_keys`: one recipient per new share, in order; each share is handed out encrypted to
    /// its recipient's OpenPGP key and never in plain text.
    let recipients: [OpenPGP.Recipient]
    /// With `require_verification`: the new shares take effect only once a threshold of them has been
    /// entered back at `sys/rekey/verify`; until then the current shares stay in force.
    let requireVerification: Bool
    package var parts: [SecureBytes] = []
    /// Set once the current shares have authorised the rekey and the new ones await verification.
    var verification: RekeyVerification?
}

/// New shares that were handed out but are not in force yet.
package struct RekeyVerification {
    var nonce: String
    let pending: NewShares
    /// The stored seal configuration the rekey was authorised against; if it changes, the rekey is stale.
    let authorised: SealConfig
    var parts: [SecureBytes] = []
}

/// A new unseal (or recovery) key, its shares, and the seal configuration that lists them.
package struct NewShares {
    let key: SecureBytes
    let parts: [SecureBytes]
    let config: SealConfig
}

/// An operation authorised by a threshold of the current shares (rekey, root generation).
package protocol ShareQuorum {
    var nonce: String { get }
    var parts: [SecureBytes] { get set }
}

extension Optional where Wrapped: ShareQuorum {
    /// Adds `share` to the operation in progress; returns the operation once `threshold` shares are in.
    /// A wrong nonce or a repeated share is an error that leaves the progress as it was.
    mutating func add(
        _ share: SecureBytes,
        nonce: String,
        threshold: Int,
        operation: String
    ) throws(CofferError) -> Wrapped? {
        guard var current = self else { throw CofferError.invalid("no \(operation) is in progress") }
        guard current.nonce == nonce else {
            throw CofferError.invalid("the nonce does not match the \(operation) in progress")
        }
        if current.parts.contains(where: { $0.constantTimeEquals(share) }) {
            throw CofferError.invalid("this key was already entered; progress is unchanged")
        }
        current.parts.append(share)
        self = current
        return current.parts.count >= threshold ? current : nil
    }
}

extension Core {
    /// Vault's `sys/rekey/backup` and `sys/rekey/recovery-key-backup`: they need a token (the rest of
    /// `sys/rekey/` is served without one).
    static let rekeyBackupPaths: Set<String> = ["sys/rekey/backup", "sys/rekey/recovery-key-backup"]

    /// `sys/rekey/init|update|verify`: new unseal shares for the same root key, as Vault serves them.
    /// The data is not re-encrypted; only the root key's wrapping changes. Authorised by a threshold
    /// of the current shares, like unseal. With an auto-unseal seal the shares are recovery shares and
    /// the same flow (also under Vault's `sys/rekey-recovery-key/`) issues new recovery shares.
    ///
    /// Security options are honoured or refused, never ignored: `pgp_keys` returns each new share
    /// encrypted to its holder's OpenPGP key; `require_verification` keeps the current shares in force
    /// until a threshold of the new ones is entered at `sys/rekey/verify`; `backup` (Vault stores
    /// encrypted copies of the new shares) is refused.
    func handleRekey(_ request: Request) throws(CofferError) -> Response {
        guard !barrier.isSealed else { throw CofferError.sealedError }
        guard let config = try storedSealConfig() else {
            throw CofferError(.notInitialized, "Vault is not initialized")
        }
        let data = request.data
        let path = request.path.replacingPrefix("sys/rekey-recovery-key/", with: "sys/rekey/")
        switch (path, request.operation) {
        case ("sys/rekey/init", .read):
            return .raw(rekeyStatus(config))
        case ("sys/rekey/init", .update), ("sys/rekey/init", .create):
            return try rekeyInit(data, config: config)
        case ("sys/rekey/init", .delete):
            rekey.withLock { $0 = nil }
            return .noContent
        case ("sys/rekey/update", .update), ("sys/rekey/update", .create):
            let (key, nonce) = try Core.shareAndNonce(data)
            return try rekeyUpdate(key: key, nonce: nonce)
        case ("sys/rekey/verify", .read):
            return .raw(try rekeyVerificationStatus())
        case ("sys/rekey/verify", .update), ("sys/rekey/verify", .create):
            let (key, nonce) = try Core.shareAndNonce(data)
            return try rekeyVerify(key: key, nonce: nonce)
        case ("sys/rekey/verify", .delete):
            // As Vault: the entered keys are forgotten and the verification gets a new nonce; the
            // rekey itself stays pending.
            rekey.withLock { state in
                guard state?.verification != nil else { return }
                state?.verification?.parts = []
                state?.verification?.nonce = Random.uuid()
            }
            return .raw(try rekeyVerificationStatus())
        default:
            throw unsupported(request)
        }
    }

    static func shareAndNonce(_ data: [String: JSONValue]) throws(CofferError) -> ([UInt8], String) {
        guard let nonce = try data.string("nonce"), !nonce.isEmpty else { throw CofferError.invalid("missing nonce") }
        guard let text = try data.string("key"), let key = Hex.decode(text) ?? Base64.decode(text) else {
            throw CofferError.invalid("'key' must be a valid hex or base64 string")
        }
        return (key, nonce)
    }

    func rekeyInit(_ data: [String: JSONValue], config: SealConfig) throws(CofferError) -> Response {
        let shares = try data.int("secret_shares") ?? 0
        let threshold = try data.int("secret_threshold") ?? 0
        // Validate now, not at the end, so a bad request does not waste the operators' time.
        _ = try Shamir.split(SecureBytes([0]), shares: max(shares, 1), threshold: max(threshold, 1))
        guard shares > 0, threshold > 0 else {
            throw CofferError.invalid("secret_shares and secret_threshold are required")
        }
        if try data.bool("backup") == true {
            throw CofferError.invalid(
                "backup is not supported: Coffer keeps no copy of the new keys (Vault stores them PGP-encrypted); "
                    + "keep the keys this rekey returns, encrypted with pgp_keys if you like"
            )
        }
        if let stored = try data.int("stored_shares"), stored > 0 {
            throw CofferError.invalid("stored_shares is not supported: every new share is handed out")
        }
        let requireVerification = try data.bool("require_verification") ?? false
        guard rekey.withLock({ $0 == nil }) else { throw CofferError.invalid("rekey already in progress") }
        let recipients = try Core.recipients(
            try data.stringList("pgp_keys") ?? [],
            field: "pgp_keys",
            shares: shares,
            now: clock.now()
        )
        try rekey.withLock { (state) throws(CofferError) in
            guard state == nil else { throw CofferError.invalid("rekey already in progress") }
            state = RekeyState(
                nonce: Random.uuid(),
                shares: shares,
                threshold: threshold,
                recipients: recipients,
                requireVerification: requireVerification
            )
        }
        return .raw(rekeyStatus(config))
    }

    /// Parses one OpenPGP recipient per share; an error names the entry that is wrong.
    static func recipients(
        _ keys: [String],
        field: String,
        shares: Int,
        now: Timestamp
    ) throws(CofferError) -> [OpenPGP.Recipient] {
        guard !keys.isEmpty else { return [] }
        guard keys.count == shares else {
            throw CofferError.invalid(
                "\(field) has \(keys.count) keys but secret_shares is \(shares); give one public key per share"
            )
        }
        var recipients: [OpenPGP.Recipient] = []
        for (index, text) in keys.enumerated() {
            do {
                recipients.append(try OpenPGP.recipient(fromText: text, now: now.seconds))
            } catch  where error.code == .invalidArgument {
                throw CofferError.invalid("\(field)[\(index)] \(error.message)")
            }
        }
        return recipients
    }

    func rekeyStatus(_ config: SealConfig) -> JSONValue {
        let state = rekey.withLock { $0 }
        var body: [String: JSONValue] = [
            "nonce": .string(state?.nonce ?? ""), "started": .bool(state != nil), "t": .int(state?.threshold ?? 0),
            "n": .int(state?.shares ?? 0), "progress": .int(state?.parts.count ?? 0),
            "required": .int(config.threshold),
            "pgp_fingerprints": state.map { .array($0.recipients.map { .string($0.fingerprint) }) } ?? .null,
            "backup": false,
            "verification_required": .bool(state?.requireVerification ?? false),
        ]
        if let verification = state?.verification { body["verification_nonce"] = .string(verification.nonce) }
        return .object(body)
    }

    func rekeyUpdate(key: [UInt8], nonce: String) throws(CofferError) -> Response {
        // The lifecycle lock makes the step that crosses the threshold the only one running.
        try lifecycle.withLock { (_) throws(CofferError) -> Response in
            guard let config = try storedSealConfig() else {
                throw CofferError(.notInitialized, "Vault is not initialized")
            }
            let share = try checkedShare(key, config: config)
            let ready = try rekey.withLock { (state) throws(CofferError) -> RekeyState? in
                if state?.verification != nil {
                    throw CofferError.invalid(
                        "this rekey is complete and its new keys await verification: enter a threshold of them at sys/rekey/verify"
                    )
                }
                return try state.add(share, nonce: nonce, threshold: config.threshold, operation: "rekey")
            }
            guard let ready else { return .raw(rekeyStatus(config)) }
            do throws(CofferError) {
                // Prove the current shares are right before anything is replaced.
                try verifyShares(ready.parts)
                let new = try makeShares(shares: ready.shares, threshold: ready.threshold)
                // Encrypted before anything is stored: shares nobody can receive must never take effect.
                var body = try handOut(new, to: ready.recipients)
                body["nonce"] = .string(ready.nonce)
                body["complete"] = true
                body["backup"] = false
                body["verification_required"] = .bool(ready.requireVerification)
                if ready.requireVerification {
                    let verificationNonce = Random.uuid()
                    try rekey.withLock { (state) throws(CofferError) in
                        guard state?.nonce == ready.nonce else {
                            throw CofferError.invalid("the rekey was cancelled while it completed")
                        }
                        state?.parts = []
                        state?.verification = RekeyVerification(
                            nonce: verificationNonce,
                            pending: new,
                            authorised: config
                        )
                    }
                    body["verification_nonce"] = .string(verificationNonce)
                } else {
                    try commitShares(new)
                    rekey.withLock { if $0?.nonce == ready.nonce { $0 = nil } }
                }
                return .raw(.object(body))
            } catch {
                rekey.withLock { if $0?.nonce == ready.nonce { $0 = nil } }
                throw error
            }
        }
    }

    /// The `keys`, `keys_base64` and `pgp_fingerprints` of a completed rekey. With recipients, each
    /// share's hex form is encrypted to its recipient (as Vault does) and the keys are the hex and
    /// base64 forms of the OpenPGP message: `base64 -d | gpg -d` gives the share.
    func handOut(_ new: NewShares, to recipients: [OpenPGP.Recipient]) throws(CofferError) -> [String: JSONValue] {
        var keys: [JSONValue] = []
        var keysBase64: [JSONValue] = []
        guard !recipients.isEmpty else {
            for part in new.parts {
                part.withUnsafeBytes { bytes in
                    keys.append(.string(Hex.encode(bytes)))
                    keysBase64.append(.string(Base64.encode(bytes)))
                }
            }
            return ["keys": .array(keys), "keys_base64": .array(keysBase64), "pgp_fingerprints": .null]
        }
        for (part, recipient) in zip(new.parts, recipients) {
            var hex: [UInt8] = []
            part.withUnsafeBytes { Hex.append($0, to: &hex) }
            defer { OpenPGP.cleanse(&hex) }
            let message = try OpenPGP.encrypt(hex, to: recipient)
            keys.append(.string(Hex.encode(message)))
            keysBase64.append(.string(Base64.encode(message)))
        }
        return [
            "keys": .array(keys), "keys_base64": .array(keysBase64),
            "pgp_fingerprints": .array(recipients.map { .string($0.fingerprint) }),
        ]
    }

    func rekeyVerificationStatus() throws(CofferError) -> JSONValue {
        guard let state = rekey.withLock({ $0 }) else { throw CofferError.invalid("no rekey configuration found") }
        return [
            "nonce": .string(state.verification?.nonce ?? ""), "started": .bool(state.verification != nil),
            "t": .int(state.threshold), "n": .int(state.shares), "progress": .int(state.verification?.parts.count ?? 0),
        ]
    }

    /// `sys/rekey/verify`: one of the new shares. At the threshold the new shares take effect.
    func rekeyVerify(key: [UInt8], nonce: String) throws(CofferError) -> Response {
        try lifecycle.withLock { (_) throws(CofferError) -> Response in
            let share = SecureBytes(key)
            let ready = try rekey.withLock { (state) throws(CofferError) -> RekeyVerification? in
                guard state != nil else { throw CofferError.invalid("no rekey in progress") }
                guard var verification = state?.verification else {
                    throw CofferError.invalid("no rekey verification in progress")
                }
                guard verification.nonce == nonce else {
                    throw CofferError.invalid("the nonce does not match the rekey verification in progress")
                }
                let check = SealConfig.check(share)
                guard
                    verification.pending.config.shareChecks.contains(where: {
                        ConstantTime.equals(Array($0.utf8), Array(check.utf8))
                    })
                else {
                    throw CofferError.invalid(
                        "this key is not one of the new keys of this rekey; progress is unchanged"
                    )
                }
                if verification.parts.contains(where: { $0.constantTimeEquals(share) }) {
                    throw CofferError.invalid("this key was already entered; progress is unchanged")
                }
                verification.parts.append(share)
                // This round of keys is used up once the threshold is reached, whatever the outcome.
                let complete = verification.parts.count >= verification.pending.config.threshold
                state?.verification?.parts = complete ? [] : verification.parts
                return complete ? verification : nil
            }
            guard let ready else { return .raw(try rekeyVerificationStatus()) }
            do throws(CofferError) {
                guard try Shamir.combine(ready.parts).constantTimeEquals(ready.pending.key) else {
                    throw CofferError.invalid(
                        "the keys entered do not combine into the new key of this rekey; enter them again"
                    )
                }
                guard try storedSealConfig() == ready.authorised else {
                    rekey.withLock { $0 = nil }
                    throw CofferError.invalid(
                        "the seal changed since this rekey was authorised; the rekey is cancelled, start again"
                    )
                }
                try commitShares(ready.pending)
            } catch {
                // As Vault: a failed round gets a new nonce.
                rekey.withLock { if $0?.verification?.nonce == ready.nonce { $0?.verification?.nonce = Random.uuid() } }
                throw error
            }
            rekey.withLock { if $0?.verification?.nonce == ready.nonce { $0 = nil } }
            return .raw(["nonce": .string(ready.nonce), "complete": true])
        }
    }

    /// `sys/rekey/backup`, `sys/rekey/recovery-key-backup`: Vault keeps PGP-encrypted copies of new
    /// shares there when a rekey asks for `backup`. Coffer refuses `backup`, so there is never one to
    /// read; the answers are OpenBao's when it holds none.
    func rekeyBackup(_ request: Request) throws(CofferError) -> Response {
        switch request.operation {
        case .read: throw CofferError.invalid("no backed-up keys found")
        case .delete: return .noContent
        default: throw unsupported(request)
        }
    }

    /// A new unseal key (Shamir) or recovery key (auto-unseal) and its shares; nothing is stored.
    func makeShares(shares: Int, threshold: Int) throws(CofferError) -> NewShares {
        let key = SecureBytes(randomCount: 32)
        let parts = try Shamir.split(key, shares: shares, threshold: threshold)
        return NewShares(
            key: key,
            parts: parts,
            config: SealConfig(for: seal, shares: shares, threshold: threshold, parts: parts)
        )
    }

    /// Puts `new` in force: the root key re-wrapped by the new unseal key (Shamir), or the new
    /// recovery key stored in place of the old one (auto-unseal), written atomically with the seal config.
    func commitShares(_ new: NewShares) throws(CofferError) {
        let seal = self.seal
        var operations: [StorageOperation] = [.put(key: SealConfig.path, value: new.config.json.serialized())]
        if seal.isAutoUnseal {
            let sealed = try barrier.sealedEntry(RecoveryKey.path, secret: new.key, wrappingWith: seal)
            operations.append(.put(key: RecoveryKey.path, value: sealed))
        } else {
            operations.append(
                .put(key: ShamirSeal.rootKeyPath, value: try seal.wrap(try barrier.rootKey(), unsealKey: new.key))
            )
        }
        try barrier.physical.batch(operations)
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
            guard matches else {
                throw CofferError.invalid("the recovery keys given do not combine into this vault's recovery key")
            }
        } else {
            guard let blob = try barrier.physical.get(ShamirSeal.rootKeyPath) else {
                throw CofferError(.corruptDatabase, "the root key (core/root-key) is missing from storage")
            }
            do {
                _ = try seal.unwrap(blob, unsealKey: key)
            } catch  where error.code == .integrity {
                throw CofferError.invalid("the unseal keys given do not combine into this vault's unseal key")
            }
        }
    }
}

/// Where the recovery key of an auto-unseal seal is kept: through the barrier, and seal-wrapped
/// when the seal does that.
package enum RecoveryKey {
    static let path = "core/recovery-key"
}

extension String {
    func replacingPrefix(_ prefix: String, with replacement: String) -> String {
        hasPrefix(prefix) ? replacement + dropFirst(prefix.count) : self
    }
}
