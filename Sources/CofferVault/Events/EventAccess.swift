package import CofferCore

/// Who may see which event (docs/events.md): a subscriber's token needs `subscribe` on
/// `sys/events/subscribe/<event type>` and, for an event about a path, `read` on its `data_path`
/// (or `path`), both in the event's namespace, which is the subscriber's. A root token sees all.
/// The token is checked again for every event, so a revoked or expired token stops receiving.
extension Core {
    /// A subscription to the events of type `pattern` in `namespace` (a path, "" for the root) for
    /// `token`; the caller adds it to ``events`` and drains it when `wake` is called.
    ///
    /// Throws `permission denied` for a token that is not valid, or that lacks `subscribe` on an
    /// exact event type (a pattern without `*`); `invalid` for an empty or overlong pattern; and
    /// `not found` for a namespace that does not exist.
    package func eventSubscription(
        token: String?,
        pattern: String,
        namespace: String = "",
        clientAddress: String = "",
        capacity: Int = 1024,
        overflow: EventSubscription.Overflow,
        wake: @escaping @Sendable (UInt64) -> Void
    ) throws(CofferError) -> EventSubscription {
        let glob = try EventGlob(pattern)
        guard let ns = self.namespace(path: namespace) else {
            throw CofferError(.notFound, "no namespace at \(namespace)")
        }
        let caller = try authenticate(token, now: clock.now(), clientAddress: clientAddress)
        if !pattern.contains("*") {
            try authorize(caller, Request(.read, "sys/events/subscribe/" + pattern), in: ns, capability: .subscribe)
        }
        let token = token ?? ""
        // Checked now: once sealed, no token can be looked up (CoreEvents.swift).
        let sealEvents =
            (try? authorize(caller, Request(.read, "sys/events/subscribe/vault/sealed"), in: ns, capability: .subscribe))
            != nil
        return EventSubscription(
            pattern: glob,
            namespacePath: ns.path,
            capacity: capacity,
            overflow: overflow,
            filter: { [weak self] event in
                guard let self else { return false }
                if event.type == "vault/sealed" { return sealEvents }
                return self.mayReceive(event, token: token, in: ns, clientAddress: clientAddress)
            },
            wake: wake
        )
    }

    /// Whether the holder of `token` may receive `event` (the rule above); false for a token that
    /// is no longer valid.
    func mayReceive(_ event: VaultEvent, token: String, in ns: Namespace, clientAddress: String) -> Bool {
        do throws(CofferError) {
            guard let found = try tokens.lookup(token: token), let caller = try tokens.live(found, now: clock.now())
            else { return false }
            if caller.isRoot && caller.namespaceID.isEmpty { return true }
            try authorize(caller, Request(.read, "sys/events/subscribe/" + event.type), in: ns, capability: .subscribe)
            if let path = event.aclPath {
                try authorize(caller, Request(.read, path), in: ns)
            }
            return true
        } catch {
            return false
        }
    }

    /// ``authorize(_:_:in:requireSudo:)`` for a capability that is no operation (`subscribe`).
    func authorize(
        _ caller: TokenEntry,
        _ request: Request,
        in ns: Namespace,
        capability: Capabilities
    ) throws(CofferError) {
        guard let (acl, prefix) = try governingACL(caller, in: ns) else { return }
        let granted = acl.capabilities(path: prefix + request.path)
        guard granted.contains(capability) || granted.contains(.root) else { throw CofferError.permissionDeniedError }
    }
}
