import CofferCore

/// The vault's own events (docs/events.md): `lease/revoked`, `vault/sealed`, `vault/unsealed`.
/// Ids and paths only.
extension Core {
    /// `lease/revoked` for each lease whose record was deleted (revoked, or forced).
    func publishLeasesRevoked(_ ids: [String]) {
        guard !ids.isEmpty else { return }
        let now = clock.now()
        for id in ids {
            // A lease id is `<request path>/<id>`: the path is what a subscriber needs `read` on.
            let path = id.lastIndex(of: "/").map { String(id[..<$0]) } ?? id
            events.publish(
                "lease/revoked",
                data: ["metadata": ["lease_id": .string(id), "path": .string(path), "operation": "revoke"]],
                time: now
            )
        }
    }

    /// `vault/sealed` or `vault/unsealed`. While sealed no token can be looked up, so `vault/sealed`
    /// reaches the subscribers whose token had `subscribe` on it when they subscribed.
    func publishSealChange(sealed: Bool) {
        events.publish(
            sealed ? "vault/sealed" : "vault/unsealed",
            data: ["operation": .string(sealed ? "seal" : "unseal")],
            time: clock.now()
        )
    }
}
