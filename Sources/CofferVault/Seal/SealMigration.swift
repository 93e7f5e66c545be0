package import CofferAudit
/// Seal rewrap (after an HSM key rotation) and seal migration (Shamir <-> PKCS#11).
///
/// Both rewrite only what the seal protects, in one atomic storage batch: the root key blob, the
/// keyring, the recovery key, and every seal-wrapped entry. The data keys and the data stay as
/// they are, so a failure half-way (the HSM going away) writes nothing and loses nothing.
public import CofferCore
package import CofferFramework

extension Core {
    /// Moves everything the seal protects to the seal's current key and makes seal wrap match the
    /// seal's setting (wrapping the keyring and recovery key when it is on, unwrapping every entry
    /// when it is off). Old keys must still be on the token until this has run.
    @discardableResult
    package func rewrapSealedEntries() throws(CofferError) -> SealWrapStatus {
        try lifecycle.withLock { (_) throws(CofferError) in
            guard !barrier.isSealed else { throw CofferError.sealedError }
            let seal = self.seal
            guard seal.isAutoUnseal else {
                throw CofferError.invalid("rewrap moves entries to a new HSM key; this vault's seal is \(seal.type)")
            }
            try barrier.withSealWrapWriteLock { () throws(CofferError) in
                try barrier.withKeyringWriteLock { () throws(CofferError) in
                    try barrier.physical.batch(try resealOperations(to: seal, unsealKey: nil, recoveryKey: nil))
                }
            }
        }
        return try sealWrapStatus()
    }

    /// Moves the vault to `newSeal` (Shamir to PKCS#11, PKCS#11 to Shamir, or another HSM) with
    /// every secret intact, and issues new shares: recovery shares when `newSeal` unseals itself,
    /// unseal shares otherwise. The vault must be unsealed; it stays unsealed under the new seal.
    /// Open it with `newSeal` from now on. The old shares (and the old HSM key) no longer open it.
    package func migrateSeal(to newSeal: any Seal, shares: Int, threshold: Int) throws(CofferError) -> InitResult {
        try lifecycle.withLock { (_) throws(CofferError) -> InitResult in
            guard try storedSealConfig() != nil else { throw CofferError(.notInitialized, "Vault is not initialized") }
            guard !barrier.isSealed else { throw CofferError.sealedError }
            let newKey = SecureBytes(randomCount: 32)
            let parts = try Shamir.split(newKey, shares: shares, threshold: threshold)
            try barrier.withSealWrapWriteLock { () throws(CofferError) in
                try barrier.withKeyringWriteLock { () throws(CofferError) in
                    var operations = try resealOperations(
                        to: newSeal,
                        unsealKey: newSeal.isAutoUnseal ? nil : newKey,
                        recoveryKey: newSeal.isAutoUnseal ? newKey : nil
                    )
                    let config = SealConfig(for: newSeal, shares: shares, threshold: threshold, parts: parts)
                    operations.append(.put(key: SealConfig.path, value: config.json.serialized()))
                    try barrier.physical.batch(operations)
                }
                sealBox.withLock { $0 = newSeal }
                barrier.setSeal(newSeal)
            }
            rekey.withLock { $0 = nil }
            generateRoot.withLock { $0 = nil }
            return InitResult(keys: parts, rootToken: "", recovery: newSeal.isAutoUnseal)
        }
    }

    /// The writes that put everything the current seal protects under `newSeal`. `recoveryKey`
    /// replaces the stored recovery key (nil keeps it); a seal that is not auto-unseal gets none.
    func resealOperations(
        to newSeal: any Seal,
        unsealKey: SecureBytes?,
        recoveryKey: SecureBytes?
    ) throws(CofferError) -> [StorageOperation] {
        let physical = barrier.physical
        var operations: [StorageOperation] = [
            .put(key: ShamirSeal.rootKeyPath, value: try newSeal.wrap(try barrier.rootKey(), unsealKey: unsealKey)),
            .put(key: Barrier.keyringPath, value: try barrier.sealedKeyring(wrappingWith: newSeal)),
        ]
        if newSeal.isAutoUnseal {
            var key = recoveryKey
            if key == nil, var stored = try barrier.get(RecoveryKey.path) {
                key = SecureBytes(stored)
                stored.wipe()
            }
            guard let key else {
                throw CofferError(.corruptDatabase, "the recovery key (\(RecoveryKey.path)) is missing from storage")
            }
            operations.append(
                .put(
                    key: RecoveryKey.path,
                    value: try barrier.sealedEntry(RecoveryKey.path, secret: key, wrappingWith: newSeal)
                )
            )
        } else {
            operations.append(.delete(key: RecoveryKey.path))
        }
        let handled: Set<String> = [ShamirSeal.rootKeyPath, Barrier.keyringPath, RecoveryKey.path, SealConfig.path]
        for path in try physical.listRecursive(prefix: "") where !handled.contains(path) {
            guard let stored = try physical.get(path), SealWrap.isWrapped(stored) else { continue }
            let inner = try barrier.openSealWrap(stored, path: path)
            operations.append(.put(key: path, value: try SealWrap.wrapIfEnabled(inner, seal: newSeal)))
        }
        return operations
    }

    /// Which key wraps what: the root key blob and every seal-wrapped entry, by path.
    package func sealWrapStatus() throws(CofferError) -> SealWrapStatus {
        guard !barrier.isSealed else { throw CofferError.sealedError }
        let seal = self.seal
        let physical = barrier.physical
        var entries: [String: String] = [:]
        for path in try physical.listRecursive(prefix: "") {
            guard let stored = try physical.get(path) else { continue }
            if path == ShamirSeal.rootKeyPath {
                entries[path] = seal.keyName(of: stored) ?? seal.type
            } else if SealWrap.isWrapped(stored) {
                entries[path] = seal.keyName(of: Array(stored[SealWrap.marker.count...])) ?? seal.type
            }
        }
        return SealWrapStatus(
            sealType: seal.type,
            sealWrap: seal.isAutoUnseal && seal.sealWrap,
            currentKey: seal.currentKeyName,
            entries: entries
        )
    }
}

/// What `sys/sealwrap/rewrap` reports: the key new blobs use and the key that wraps each entry.
public struct SealWrapStatus: Sendable, Equatable {
    public var sealType: String
    /// Whether critical entries are seal-wrapped by new writes.
    public var sealWrap: Bool
    /// The key new blobs are wrapped with (nil for Shamir).
    public var currentKey: String?
    /// Storage path -> the key that wraps it (the root key blob and every seal-wrapped entry).
    public var entries: [String: String]

    /// Entries not yet wrapped by the current key: what a rewrap would move.
    public var stale: [String] {
        guard let currentKey else { return [] }
        return entries.filter { $0.value != currentKey }.keys.sorted()
    }

    public var json: JSONValue {
        var counts: [String: JSONValue] = [:]
        for key in entries.values { counts[key] = .int((counts[key]?.intValue ?? 0) + 1) }
        return [
            "is_running": false, "seal_type": .string(sealType), "seal_wrap": .bool(sealWrap),
            "current_key": currentKey.map { .string($0) } ?? .null,
            "entries": .object(entries.mapValues { .string($0) }), "keys": .object(counts),
            "stale": .array(stale.map { .string($0) }),
        ]
    }
}
