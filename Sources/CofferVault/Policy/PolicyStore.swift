package import CofferAudit
package import CofferCore
package import CofferFramework
import Synchronization

/// ACL policies kept in the barrier, parsed once and compiled into ACLs cached per policy set.
package final class PolicyStore: Sendable {
    static let prefix = "sys/policy/"

    /// Vault's default policy: what every token may do to itself.
    package static let defaultPolicy = """
        # Allow tokens to look up their own properties
        path "auth/token/lookup-self" {
            capabilities = ["read"]
        }

        # Allow tokens to renew themselves
        path "auth/token/renew-self" {
            capabilities = ["update"]
        }

        # Allow tokens to revoke themselves
        path "auth/token/revoke-self" {
            capabilities = ["update"]
        }

        # Allow a token to look up its own capabilities on a path
        path "sys/capabilities-self" {
            capabilities = ["update"]
        }

        # Allow a token to look up its resultant ACL from all policies
        path "sys/internal/ui/resultant-acl" {
            capabilities = ["read"]
        }

        # Allow a token to renew a lease via lease_id in the request body
        path "sys/leases/renew" {
            capabilities = ["update"]
        }

        # Allow looking up lease properties
        path "sys/leases/lookup" {
            capabilities = ["update"]
        }

        # Allow a token to wrap arbitrary values in a response-wrapping token
        path "sys/wrapping/wrap" {
            capabilities = ["update"]
        }

        # Allow a token to look up response-wrapping properties and unwrap what was wrapped for it
        path "sys/wrapping/lookup" {
            capabilities = ["update"]
        }
        path "sys/wrapping/unwrap" {
            capabilities = ["update"]
        }

        # Allow general purpose tools
        path "sys/tools/hash" {
            capabilities = ["update"]
        }
        path "sys/tools/hash/*" {
            capabilities = ["update"]
        }
        """

    /// The policy of response-wrapping tokens (built in, never stored): they may only be unwrapped.
    /// Vault also lets them read `cubbyhole/response`; Coffer does not, so unwrapping is the only
    /// way to the wrapped answer and it is single use.
    static let responseWrappingName = "response-wrapping"
    static let responseWrapping: Policy = {
        let text = """
            path "sys/wrapping/unwrap" {
                capabilities = ["update"]
            }
            """
        return (try? Policy.parse(name: responseWrappingName, text: text))
            ?? Policy(name: responseWrappingName, rules: [])
    }()

    private let barrier: Barrier
    /// Where this store's policies are kept: `sys/policy/` for the root namespace, under the
    /// namespace's own prefix for the others.
    let storagePrefix: String
    /// Parsed policies. `epoch` moves on every change, so a reader that parsed what storage held
    /// before a change never puts its stale result back.
    private let cache = Mutex<(epoch: UInt64, parsed: [String: Policy])>((0, [:]))
    /// Compiled ACLs, a copy per CPU (every request of a token reads one: two cores checking the same
    /// policies share no lock or reference count). Every change empties them and refuses the fill of
    /// an ACL compiled before it (`PerCPUCache.Ticket`): a stale ACL would keep granting what a policy
    /// change took away.
    private let compiled = PerCPUCache<PolicyNames, ACL>()

    init(barrier: Barrier, prefix: String = PolicyStore.prefix) {
        self.barrier = barrier
        self.storagePrefix = prefix
    }

    /// Writes the default policy on first unseal; clears the caches.
    func load() throws(CofferError) {
        unload()
        if try barrier.get(storagePrefix + "default") == nil {
            try store(name: "default", text: PolicyStore.defaultPolicy)
        }
    }

    func unload() {
        cache.withLock { c in
            c.epoch &+= 1
            c.parsed = [:]
        }
        compiled.removeAll()
    }

    /// The policy `name` changed in storage (here or beneath this store): forget it and every ACL.
    func invalidate(_ name: String) {
        cache.withLock { c in
            c.epoch &+= 1
            c.parsed.removeValue(forKey: name)
        }
        compiled.removeAll()
    }

    static func normalize(_ name: String) throws(CofferError) -> String {
        let lowered = name.lowercased()
        guard !lowered.isEmpty, lowered.utf8.count <= 128,
            lowered.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F && $0 != "/" })
        else {
            throw CofferError.invalid("policy name must be 1 to 128 printable characters without '/' or spaces")
        }
        return lowered
    }

    /// The policy text, or nil. "root" has no text.
    func get(_ name: String) throws(CofferError) -> Policy? {
        let name = try PolicyStore.normalize(name)
        let (epoch, cached) = cache.withLock { ($0.epoch, $0.parsed[name]) }
        if let cached { return cached }
        guard let bytes = try barrier.get(storagePrefix + name) else { return nil }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CofferError(.integrity, "stored policy '\(name)' is not UTF-8")
        }
        let policy: Policy
        do {
            policy = try Policy.parse(name: name, text: text)
        } catch {
            throw CofferError(.integrity, "stored policy '\(name)' no longer parses: \(error)")
        }
        cache.withLock { c in
            if c.epoch == epoch { c.parsed[name] = policy }
        }
        return policy
    }

    /// Parses and stores a policy. Syntax errors name line and column; nothing is stored then.
    func put(name: String, text: String, maxSize: Int) throws(CofferError) {
        let name = try PolicyStore.normalize(name)
        guard name != "root" else { throw CofferError.invalid("cannot update the root policy") }
        guard name != PolicyStore.responseWrappingName else {
            throw CofferError.invalid("cannot update the response-wrapping policy")
        }
        guard text.utf8.count <= maxSize else {
            throw CofferError.invalid("policy is \(text.utf8.count) bytes; the limit is \(maxSize)")
        }
        try store(name: name, text: text)
    }

    private func store(name: String, text: String) throws(CofferError) {
        let policy: Policy
        do {
            policy = try Policy.parse(name: name, text: text)
        } catch {
            throw CofferError.invalid("failed to parse policy: \(error)")
        }
        try barrier.put(storagePrefix + name, Array(text.utf8))
        invalidate(name)
    }

    func delete(_ name: String) throws(CofferError) {
        let name = try PolicyStore.normalize(name)
        guard name != "root", name != "default" else { throw CofferError.invalid("cannot delete the \(name) policy") }
        try barrier.delete(storagePrefix + name)
        invalidate(name)
    }

    /// Every policy name: the stored ones sorted, then "root" (the order OpenBao lists them in).
    func list() throws(CofferError) -> [String] {
        try barrier.list(storagePrefix).sorted() + ["root"]
    }

    /// The compiled ACL for a set of policy names; unknown names contribute nothing.
    func acl(for names: [String]) throws(CofferError) -> ACL { try acl(for: PolicyNames(names)) }

    /// The same, for names hashed beforehand (a token's, hashed when it is loaded).
    func acl(for key: PolicyNames) throws(CofferError) -> ACL {
        let (cached, ticket) = compiled.lookup(key)
        if let cached { return cached }
        var policies: [Policy] = []
        for name in key.names {
            if name == "root" {
                policies.append(Policy(name: "root", rules: []))
            } else if name == PolicyStore.responseWrappingName {
                policies.append(PolicyStore.responseWrapping)
            } else if let policy = try get(name) {
                policies.append(policy)
            }
        }
        let acl = ACL(policies: policies)
        compiled.fill(key, acl, ticket)
        return acl
    }
}

/// A list of policy names as the key of the compiled-ACL cache, hashed once when made: a token's
/// names are hashed when the token is loaded, not on each of its requests.
package struct PolicyNames: Hashable, Sendable {
    package let names: [String]
    private let hash: Int

    package init(_ names: [String]) {
        self.names = names
        hash = names.hashValue
    }

    package static func == (a: PolicyNames, b: PolicyNames) -> Bool { a.hash == b.hash && a.names == b.names }
    package func hash(into hasher: inout Hasher) { hasher.combine(hash) }
}
