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
        for key in keys {
            if key.utf8.starts(with: TokenStore.idPrefix.utf8) {
                tokens.invalidate(
                    hash: String(decoding: key.utf8.dropFirst(TokenStore.idPrefix.utf8.count), as: UTF8.self)
                )
            } else if key.utf8.starts(with: PolicyStore.prefix.utf8) {
                policies.invalidate(String(decoding: key.utf8.dropFirst(PolicyStore.prefix.utf8.count), as: UTF8.self))
            } else if key.utf8.starts(with: IdentityStore.prefix.utf8) {
                identity.invalidate(
                    String(decoding: key.utf8.dropFirst(IdentityStore.prefix.utf8.count), as: UTF8.self)
                )
            } else if key == MountKind.secret.storagePath || key == MountKind.auth.storagePath {
                tablesChanged = true
            } else if key.utf8.starts(with: QuotaManager.storagePrefix.utf8) {
                quotas.storageChanged()
            } else if key == Barrier.keyringPath {
                barrier.reloadKeyring()
            } else if let (mount, relative) = routes.withLock({ $0 })?.owner(ofStorageKey: key) {
                mount.backend.invalidate(relative)
            }
        }
        if tablesChanged { reloadMountsIfChanged() }
    }

    /// Routes the stored mount tables if they differ from what is routed (a change this core made
    /// itself is routed already).
    func reloadMountsIfChanged() {
        guard let table = routes.withLock({ $0 }),
            let secrets = try? storedEntries(.secret), let auth = try? storedEntries(.auth)
        else { return }
        let routed = { (kind: MountKind) in
            table.mounts.filter { $0.kind == kind }.map(\.entry).sorted { $0.uuid < $1.uuid }
        }
        guard
            routed(.secret) != secrets.sorted(by: { $0.uuid < $1.uuid })
                || routed(.auth) != auth.sorted(by: { $0.uuid < $1.uuid })
        else { return }
        if let rebuilt = try? buildTable(secrets: secrets, auth: auth) {
            routes.withLock { $0 = rebuilt }
        }
    }
}
