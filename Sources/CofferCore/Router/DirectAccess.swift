/// A mounted engine reached without building a `Request`: for engines' in-process entry points
/// (transit's encrypt and decrypt on raw bytes) that must cost little more than the work itself.
package struct DirectMount: Sendable {
    package let backend: any Backend
    package let storage: StorageView
    package let entry: MountEntry
}

extension Core {
    /// The mount serving `path` (already in normal form: no leading slash, no empty or dot segments),
    /// without checking the token: call ``directAuthorize(_:path:token:data:)`` before using it.
    ///
    /// Returns nil when an audit device is enabled, or when nothing is mounted there: the caller must
    /// then go through ``handle(_:)``, which records the request (and fails closed) or answers with
    /// the exact routing error. Throws when sealed.
    package func directMount(_ path: String) throws(CofferError) -> DirectMount? {
        guard !barrier.isSealed, let table = routes.withLock({ $0 }) else { throw CofferError.sealedError }
        guard audit.current.isEmpty, !path.hasPrefix("sys/"), !path.hasPrefix("auth/") else { return nil }
        for mount in table.mounts where path.utf8.starts(with: mount.entry.path.utf8) {
            return DirectMount(backend: mount.backend, storage: mount.storage, entry: mount.entry)
        }
        return nil
    }

    /// The checks ``handle(_:)`` makes before an engine runs: the token (expiry and use count) and
    /// the ACL for `operation` on `path` with the request parameters `data` (built only when a
    /// non-root policy needs them). Returns the request time.
    package func directAuthorize(
        _ operation: Request.Operation, path: String, token: String?, data: () -> [String: JSONValue]
    ) throws(CofferError) -> Timestamp {
        let now = clock.now()
        let caller = try authenticate(token, now: now)
        if caller.isRoot { return now }
        let decision = try policies.acl(for: caller.policies).allowOperation(PolicyOperation(operation), path: path, lazyData: data)
        guard decision.allowed else { throw CofferError.permissionDeniedError }
        return now
    }
}
