package import CofferCore

/// A mounted secrets engine, auth method or system backend: it serves the paths under its mount.
///
/// The pipeline has checked the token and the ACL when ``handle(_:)`` runs; the backend sees the
/// path relative to its mount and a storage view confined to its own prefix, encrypted by the
/// barrier. Handlers are synchronous and may run on many threads at once. Backends built from a
/// ``PathTable`` get `handle` and `exists` from ``TableBackend``.
package protocol Backend: AnyObject, Sendable {
    /// Consuming: the router hands the request on, and a copy would retain every string in it.
    func handle(_ request: consuming BackendRequest) throws(CofferError) -> Response
    /// Vault's existence check for writes: true if the target exists (the write is an `update`),
    /// false if not (a `create`), nil if the path does not distinguish (always `update`).
    func exists(_ request: consuming ExistenceRequest) throws(CofferError) -> Bool?
    /// Paths with special handling: served without a token, needing `sudo`, not audited.
    var specialPaths: SpecialPaths { get }
    /// The kinds of secret with a lease this backend hands out, and how each is renewed and revoked.
    var secretTypes: [SecretType] { get }
    /// A storage key under this mount (relative to it) changed beneath the backend: written by
    /// another Coffer over the same storage, a replica, or a restore. Drop what is cached of it.
    func invalidate(_ key: String)
    /// Scheduled work (Vault's periodic function: a static role's password rotation), called by the
    /// expiration manager's runner about once a second while the vault is unsealed. Errors are the
    /// backend's to record; nothing is thrown.
    func periodic(storage: StorageView, mount: MountEntry, system: any SystemView, now: Timestamp)
    /// An auth method's say on renewing a token one of its logins made (Vault's auth renew callback):
    /// throw to refuse (the role or user is gone, its policies changed), return the token limits
    /// that apply now (the role's current TTL, max TTL and period), or nil to renew as issued.
    func renewLogin(_ renewal: LoginRenewal) throws(CofferError) -> TokenParameters?
    /// The role a login request names, for role-based quotas (OpenBao's ResolveRoleOperation); nil
    /// when it names none. The default reads `role` (or `role_name`); AppRole finds it from `role_id`.
    func loginRole(_ data: [String: JSONValue], storage: StorageView) -> String?
    /// A read with no parameters that the backend answers without its path table (KV v2's
    /// `data/<path>`), or nil when `relative` is not one (the request then goes through ``handle(_:)``).
    /// The pipeline has checked the token and the ACL as for any request; the answer must be the one
    /// ``handle(_:)`` would give. It saves the routing and the ``BackendRequest`` on the hottest read.
    /// `writesAnswerAsJSON` (``Request/writesAnswerAsJSON``, with no wrapping to read the answer):
    /// the backend may give a member of `data` as the JSON it stored (``Response/verbatimMember``).
    func directRead(
        _ relative: String,
        storage: StorageView,
        mount: MountEntry,
        now: Timestamp,
        writesAnswerAsJSON: Bool
    )
        throws(CofferError) -> Response?
}

extension Backend {
    package var specialPaths: SpecialPaths { SpecialPaths() }
    package var secretTypes: [SecretType] { [] }
    package func invalidate(_ key: String) {}
    package func periodic(storage: StorageView, mount: MountEntry, system: any SystemView, now: Timestamp) {}
    package func renewLogin(_ renewal: LoginRenewal) throws(CofferError) -> TokenParameters? { nil }
    package func loginRole(_ data: [String: JSONValue], storage: StorageView) -> String? {
        data["role"]?.stringValue ?? data["role_name"]?.stringValue
    }
    package func directRead(
        _ relative: String,
        storage: StorageView,
        mount: MountEntry,
        now: Timestamp,
        writesAnswerAsJSON: Bool
    )
        throws(CofferError) -> Response?
    { nil }
}

/// A token made by a login of this auth mount, being renewed.
package struct LoginRenewal: Sendable {
    /// The login's path relative to the mount ("login", "login/alice").
    package var path: String
    /// The token's metadata as the login set it (`username`, `role_name`, ...).
    package var metadata: [String: String]
    /// The token's own policies (without `default` unless the login granted it, without identity policies).
    package var policies: [String]
    package var storage: StorageView
    package var mount: MountEntry
    package var now: Timestamp
    package var system: (any SystemView)?

    package init(
        path: String,
        metadata: [String: String],
        policies: [String],
        storage: StorageView,
        mount: MountEntry,
        now: Timestamp,
        system: (any SystemView)? = nil
    ) {
        self.path = path
        self.metadata = metadata
        self.policies = policies
        self.storage = storage
        self.mount = mount
        self.now = now
        self.system = system
    }
}

/// A backend whose paths are declared in a ``PathTable``.
package protocol TableBackend: Backend {
    static var paths: PathTable<Self> { get }
}

extension TableBackend {
    package func handle(_ request: consuming BackendRequest) throws(CofferError) -> Response {
        try Self.paths.handle(self, request)
    }
    package func exists(_ request: consuming ExistenceRequest) throws(CofferError) -> Bool? {
        try Self.paths.exists(self, request)
    }
}

/// Paths of a backend that the pipeline treats specially, as globs relative to the mount: a
/// literal path, or a prefix ending in `*` ("login", "rekey/*").
package struct SpecialPaths: Sendable {
    /// Served without a token (login, unseal, health).
    package var unauthenticated: [String]
    /// Need `sudo` in the caller's policy on top of the operation's capability.
    package var root: [String]
    /// Unauthenticated paths that are not audited either (health checks: they must answer while
    /// auditing is broken).
    package var unaudited: [String]
    /// Need a valid token but no ACL: they only tell the caller about itself (`sys/capabilities-self`,
    /// the CLI's mount probe `sys/internal/ui/mounts`).
    package var selfService: [String]
    /// Storage keys (relative to the mount, as globs) that hold key material: stored seal-wrapped —
    /// encrypted by the barrier and again by the HSM key — when the seal does seal wrap. The mount's
    /// storage view applies it to every write; handlers just write.
    package var sealWrapStorage: [String]

    package init(
        unauthenticated: [String] = [],
        root: [String] = [],
        unaudited: [String] = [],
        selfService: [String] = [],
        sealWrapStorage: [String] = []
    ) {
        self.unauthenticated = unauthenticated
        self.root = root
        self.unaudited = unaudited
        self.selfService = selfService
        self.sealWrapStorage = sealWrapStorage
    }

    /// Whether `path` matches one of `globs`: a literal path, a prefix ending in `*`, or either with
    /// `+` standing for one whole segment ("issuer/+/pem"), as Vault's path globs.
    package static func matches(_ globs: [String], _ path: String) -> Bool {
        for glob in globs {
            if glob.utf8.contains(UInt8(ascii: "+")) {
                if matchesSegments(glob, path) { return true }
            } else if glob.hasSuffix("*") {
                if path.utf8.starts(with: glob.utf8.dropLast()) { return true }
            } else if path == glob {
                return true
            }
        }
        return false
    }

    /// Segment by segment, over the bytes (no split: PKI's issue path checks six such globs a request).
    private static func matchesSegments(_ glob: String, _ path: String) -> Bool {
        var glob = glob
        var path = path
        return glob.withUTF8 { g in path.withUTF8 { p in matchesSegments(g, p) } }
    }

    private static func matchesSegments(_ glob: UnsafeBufferPointer<UInt8>, _ path: UnsafeBufferPointer<UInt8>) -> Bool
    {
        let slash = UInt8(ascii: "/")
        var g = 0
        var p = 0
        while true {
            var gEnd = g
            while gEnd < glob.count && glob[gEnd] != slash { gEnd += 1 }
            var pEnd = p
            while pEnd < path.count && path[pEnd] != slash { pEnd += 1 }
            let part = glob[g..<gEnd]
            let segment = path[p..<pEnd]
            let lastPart = gEnd == glob.count
            if lastPart, part.last == UInt8(ascii: "*") {
                return segment.starts(with: part.dropLast())
            }
            if part.count == 1, part.first == UInt8(ascii: "+") {
                if segment.isEmpty { return false }
            } else if !part.elementsEqual(segment) {
                return false
            }
            let pathGoesOn = pEnd < path.count
            if lastPart || !pathGoesOn { return lastPart && !pathGoesOn }
            g = gEnd + 1
            p = pEnd + 1
        }
    }
}

/// A kind of secret with a lease (a database credential, a certificate): what the lease manager
/// calls to extend it and to destroy it when its lease ends, its token is revoked or its mount goes.
package struct SecretType: Sendable {
    package let name: String
    /// Extends the secret to ``SecretRequest/expireTime`` (a database user's `VALID UNTIL`); nil when
    /// extending the lease is all a renewal takes.
    package let renew: (@Sendable (SecretRequest) throws(CofferError) -> Void)?
    /// Destroys the secret (drops the database user). Must succeed when the secret is already gone:
    /// a revocation cut short is retried.
    package let revoke: @Sendable (SecretRequest) throws(CofferError) -> Void

    package init(
        name: String,
        renew: (@Sendable (SecretRequest) throws(CofferError) -> Void)? = nil,
        revoke: @escaping @Sendable (SecretRequest) throws(CofferError) -> Void
    ) {
        self.name = name
        self.renew = renew
        self.revoke = revoke
    }
}

/// What a secret type's hooks receive: the data stored with the lease when it was issued.
package struct SecretRequest: Sendable {
    package var leaseID: String
    /// What the handler put in ``SecretLease/internalData`` when it issued the secret.
    package var internalData: [String: JSONValue]
    /// For a renewal, when the lease now ends; for a revocation, when it was due.
    package var expireTime: Timestamp
    package var storage: StorageView
    package var mount: MountEntry
    package var now: Timestamp

    package init(
        leaseID: String,
        internalData: [String: JSONValue],
        expireTime: Timestamp,
        storage: StorageView,
        mount: MountEntry,
        now: Timestamp
    ) {
        self.leaseID = leaseID
        self.internalData = internalData
        self.expireTime = expireTime
        self.storage = storage
        self.mount = mount
        self.now = now
    }
}
