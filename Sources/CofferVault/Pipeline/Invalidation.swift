package import CofferAudit
package import CofferCore
package import CofferFramework

/// Every cache above storage is invalidated from storage's change feed, so a change made beneath
/// this core (another `Core` over the same storage, a replica applying its log, a restore) is seen
/// on the next read, as OpenBao's `InvalidateKey` does. This core's own writes come through the
/// feed too; the caches that already hold the new value drop it and read it again.
extension Core {
    func subscribeToChanges() {
        let id = barrier.physical.changes.subscribe { [weak self] keys in self?.storageChanged(keys) }
        feed.withLock { $0 = id }
    }

    func storageChanged(_ keys: [String]) {
        guard !barrier.isSealed else { return }
        var tablesChanged = false
        var namespacesChanged = false
        for key in keys {
            if key.hasBytePrefix(Barrier.namespacePrefix) {
                namespaceEntryChanged(key)
            } else if key.hasBytePrefix(Core.namespaceRecordPrefix) {
                namespacesChanged = true
            } else if key.hasBytePrefix(TokenStore.idPrefix) {
                tokens.invalidate(
                    hash: String(decoding: key.utf8.dropFirst(TokenStore.idPrefix.utf8.count), as: UTF8.self)
                )
            } else if key.hasBytePrefix(PolicyStore.prefix) {
                policies.invalidate(String(decoding: key.utf8.dropFirst(PolicyStore.prefix.utf8.count), as: UTF8.self))
            } else if key.hasBytePrefix(IdentityStore.prefix) {
                identity.invalidate(
                    String(decoding: key.utf8.dropFirst(IdentityStore.prefix.utf8.count), as: UTF8.self)
                )
            } else if key == MountKind.secret.storagePath || key == MountKind.auth.storagePath {
                tablesChanged = true
            } else if key.hasBytePrefix(Barrier.namespaceKeyringPrefix) {
                barrier.namespaceKeyringChanged(key)
            } else if key.hasBytePrefix(QuotaManager.storagePrefix) {
                quotas.storageChanged()
            } else if key == Barrier.keyringPath {
                if !barrier.reloadKeyring(), cluster != nil {
                    // Another vault's data replaced this one's (a forced snapshot restore): seal, to be
                    // unsealed with that vault's keys. On another thread: this one may be applying a
                    // write that a thread holding the lifecycle lock waits for.
                    _ = startThread { [weak self] in self?.sealVault(saveKeyUsage: false) }
                }
            } else if let (mount, relative) = root.routes?.owner(ofStorageKey: key) {
                mount.backend.invalidate(relative)
            }
        }
        if tablesChanged { reloadMountsIfChanged() }
        if namespacesChanged { reloadNamespacesIfChanged() }
    }

    /// An entry of a namespace changed: its policies, mount tables or a mount's data.
    private func namespaceEntryChanged(_ key: String) {
        guard let ns = namespaceIndex.withLock({ $0 }).owner(ofStorageKey: key) else { return }
        let relative = String(key.dropFirst(ns.prefix.count))
        if relative.hasPrefix(PolicyStore.prefix) {
            ns.policies.invalidate(String(relative.dropFirst(PolicyStore.prefix.count)))
        } else if relative.hasPrefix(IdentityStore.prefix) {
            ns.identity.invalidate(String(relative.dropFirst(IdentityStore.prefix.count)))
        } else if relative == MountKind.secret.storagePath || relative == MountKind.auth.storagePath {
            reloadMountsIfChanged(in: ns)
        } else if let (mount, inner) = ns.routes?.owner(ofStorageKey: key) {
            mount.backend.invalidate(inner)
        }
    }

    /// Loads the namespaces another process made and drops those it deleted; the ones known here
    /// keep their objects (and so their mounts' backends). Takes no lock: this core's own changes
    /// arrive here from inside `lifecycle`, and find the index already changed.
    private func reloadNamespacesIfChanged() {
        guard let stored = try? barrier.list(Core.namespaceRecordPrefix) else { return }
        do {
            let index = namespaceIndex.withLock { $0 }
            var known = index.byUUID
            var kept: [Namespace] = []
            for uuid in stored {
                if let ns = known.removeValue(forKey: uuid) {
                    kept.append(ns)
                } else if let ns = try? loadNamespace(uuid: uuid) {
                    kept.append(ns)
                }
            }
            for gone in known.values { gone.setRoutes(nil) }
            publish(NamespaceIndex(kept))
        }
    }

    /// Routes the stored mount tables if they differ from what is routed (a change this core made
    /// itself is routed already).
    func reloadMountsIfChanged(in ns: Namespace? = nil) {
        let ns = ns ?? root
        guard let table = ns.routes,
            let secrets = try? storedEntries(.secret, in: ns), let auth = try? storedEntries(.auth, in: ns)
        else { return }
        let routed = { (kind: MountKind) in
            table.mounts.filter { $0.kind == kind }.map(\.entry).sorted { $0.uuid < $1.uuid }
        }
        guard
            routed(.secret) != secrets.sorted(by: { $0.uuid < $1.uuid })
                || routed(.auth) != auth.sorted(by: { $0.uuid < $1.uuid })
        else { return }
        if let rebuilt = try? buildTable(secrets: secrets, auth: auth, in: ns) {
            ns.setRoutes(rebuilt)
        }
    }
}
