package import CofferAudit
public import CofferCore
package import CofferFramework
import Synchronization

/// What `initialize` hands back exactly once: the unseal (or recovery) shares and the root token.
public struct InitResult: Sendable {
    /// Shares as raw bytes; `hexKeys` and `base64Keys` are the forms Vault prints.
    public let keys: [SecureBytes]
    public let rootToken: String
    public let recovery: Bool

    public var hexKeys: [String] { keys.map { $0.withUnsafeBytes { Hex.encode($0) } } }
    public var base64Keys: [String] { keys.map { $0.withUnsafeBytes { Base64.encode($0) } } }

    /// The raw body of `sys/init`.
    public var json: JSONValue {
        let hex = JSONValue.array(hexKeys.map { .string($0) })
        let b64 = JSONValue.array(base64Keys.map { .string($0) })
        if recovery {
            return [
                "keys": [], "keys_base64": [], "recovery_keys": hex, "recovery_keys_base64": b64,
                "root_token": .string(rootToken),
            ]
        }
        return ["keys": hex, "keys_base64": b64, "root_token": .string(rootToken)]
    }
}

/// Seal status, as `sys/seal-status` reports it.
public struct SealStatus: Sendable, Equatable {
    public var type: String
    public var initialized: Bool
    public var sealed: Bool
    public var threshold: Int
    public var shares: Int
    public var progress: Int
    public var nonce: String
    public var storageType: String
    public var recoverySeal: Bool
    /// The vault's cluster name and id (reported only when unsealed).
    public var cluster: ClusterIdentity?

    package init(
        type: String,
        initialized: Bool,
        sealed: Bool,
        threshold: Int,
        shares: Int,
        progress: Int,
        nonce: String,
        storageType: String,
        recoverySeal: Bool,
        cluster: ClusterIdentity? = nil
    ) {
        self.type = type
        self.initialized = initialized
        self.sealed = sealed
        self.threshold = threshold
        self.shares = shares
        self.progress = progress
        self.nonce = nonce
        self.storageType = storageType
        self.recoverySeal = recoverySeal
        self.cluster = cluster
    }

    /// The `sys/seal-status` body. As in OpenBao, the cluster name and id are shown only when unsealed.
    public var json: JSONValue {
        var body: [String: JSONValue] = [
            "type": .string(type), "initialized": .bool(initialized), "sealed": .bool(sealed), "t": .int(threshold),
            "n": .int(shares), "progress": .int(progress), "nonce": .string(nonce),
            "version": .string(CofferVersion.versionString),
            "migration": false, "recovery_seal": .bool(recoverySeal), "storage_type": .string(storageType),
        ]
        if !sealed, let cluster {
            body["cluster_name"] = .string(cluster.name)
            body["cluster_id"] = .string(cluster.id)
        }
        return .object(body)
    }
}

/// Build-time facts reported on the wire.
public enum CofferVersion {
    public static let versionString = "0.1.0"
}

/// A vault's name and id (`sys/health`, `sys/seal-status`, the `cluster` of `X-Vault-Index`), made at
/// `sys/init` and kept in the barrier, so every node of a cluster reports the same and two vaults differ.
public struct ClusterIdentity: Sendable, Equatable {
    public var name: String
    public var id: String

    /// Where it is kept (OpenBao's path).
    static let path = "core/cluster/local/info"

    /// What a vault made before identities reports until its active node has stored one.
    static let unknown = ClusterIdentity(name: "coffer-cluster", id: "00000000-0000-0000-0000-000000000000")

    static func random() -> ClusterIdentity {
        let id = Random.uuid()
        return ClusterIdentity(name: "coffer-cluster-" + id.prefix(8), id: id)
    }
}

/// The vault core: storage, barrier, seal, tokens, policies and the mount tables behind one
/// synchronous, thread-safe `handle(_:)`. It knows nothing of HTTP or C; those encode its requests
/// and responses (the `Coffer` module's wire form).
package final class Core: Sendable {
    package let barrier: Barrier
    /// What protects the root key. Replaced only by a seal migration.
    package var seal: any Seal { sealBox.withLock { $0 } }
    let sealBox: Mutex<any Seal>
    package let clock: any WallClock
    package let limits: Limits
    /// The secrets engines and auth methods that can be mounted, by type.
    let engines: EngineRegistry
    let authMethods: EngineRegistry
    package let tokens: TokenStore
    /// Every secret handed out with a lease (LeaseManager.swift).
    package let leases = LeaseManager()
    /// The root namespace: the vault's own mounts and policies (Namespace/).
    package let root: Namespace
    var policies: PolicyStore { root.policies }
    /// The other namespaces, while unsealed (Namespace/Namespaces.swift).
    let namespaceIndex = Mutex(NamespaceIndex())
    /// Whether any namespace but root exists: the request path skips namespace resolution when not.
    let hasNamespaces = Atomic<Bool>(false)
    /// Whether any namespace is under an API lock: the request path checks locks only then.
    let anyNamespaceLocked = Atomic<Bool>(false)
    /// Rate-limit and lease-count quotas (Quota/).
    package let quotas = QuotaManager()
    /// Entities, aliases and groups (Identity/).
    var identity: IdentityStore { root.identity }
    package let audit: AuditBroker
    /// Break-glass activations (BreakGlass/) and the in-process event bus (Events/).
    let breakGlass = BreakGlassLedger()
    package let events = EventBus()
    /// Audit devices the configuration requires: enabled (if not already) at every unseal; if one
    /// cannot be enabled the unseal fails, so nothing is served unaudited.
    package let declaredAuditDevices: [AuditDeviceConfig]

    struct UnsealProgress {
        var parts: [SecureBytes] = []
        var nonce: String = ""
    }
    let progress = Mutex(UnsealProgress())
    let rekey = Mutex<RekeyState?>(nil)
    let generateRoot = Mutex<GenerateRootState?>(nil)
    /// Finished mount moves, newest last, for `sys/remount/status/<migration_id>` (SystemMounts.swift).
    let remountMigrations = Mutex<[RemountMigration]>([])
    /// The built-in backends: `sys/` (served sealed too) and `auth/token/`.
    let builtins: Mutex<(system: SystemBackend?, token: TokenBackend?, identity: IdentityBackend?)> = Mutex(
        (nil, nil, nil)
    )
    /// Serialises state changes (init, unseal, seal, mount, rekey) against each other; requests do
    /// not take it.
    let lifecycle = Mutex(())
    /// The storage change feed subscription (Invalidation.swift).
    let feed = Mutex<Int?>(nil)
    /// The cluster, when the storage is replicated (Cluster/ClusterView.swift).
    let clusterSlot = Mutex<(any ClusterView)?>(nil)
    let standby = Atomic<Bool>(false)
    /// The barrier is open and everything the request path needs (tokens, policies, mounts, audit
    /// devices) is loaded: set last by ``postUnseal()``, cleared first by ``sealNow(saveKeyUsage:)``. Until
    /// then the vault answers as sealed, so no request is routed against half-loaded tables or served
    /// before its audit devices are open.
    let opened = Atomic<Bool>(false)
    /// Loaded by ``postUnseal()``.
    let clusterIdentitySlot = Mutex(ClusterIdentity.unknown)

    /// Opens a core over `storage`. It starts sealed; if `storage` holds no Coffer yet, call
    /// `initialize`; with an auto-unseal seal, call `autoUnseal()` to unseal through the seal.
    package init(
        storage: any PhysicalBackend,
        seal: any Seal = ShamirSeal(),
        engines: EngineRegistry,
        authMethods: EngineRegistry = EngineRegistry(),
        clock: any WallClock = SystemClock(),
        limits: Limits = Limits(),
        auditDevices: [AuditDeviceConfig] = []
    ) throws(CofferError) {
        self.declaredAuditDevices = auditDevices
        self.barrier = Barrier(physical: storage, maxEntrySize: limits.maxEntrySize, clock: clock)
        self.sealBox = Mutex(seal)
        barrier.setSeal(seal)
        self.engines = engines
        self.authMethods = authMethods
        self.clock = clock
        self.limits = limits
        self.tokens = TokenStore(barrier: barrier)
        self.root = Namespace(id: "root", uuid: "", path: "", barrier: barrier)
        self.audit = AuditBroker(barrier: barrier)
        if let config = try storedSealConfig(), config.type != seal.type {
            throw CofferError.invalid(
                "this storage is sealed by a \(config.type) seal but Coffer was opened with a \(seal.type) seal; migrate the seal first"
            )
        }
        builtins.withLock {
            $0 = (SystemBackend(core: self), TokenBackend(core: self), IdentityBackend(core: self, namespace: root))
        }
        leases.attach(self)
        quotas.attach(self)
        let leases = self.leases
        // A revoked token's cubbyhole and leases go with it, as in Vault; a token with a TTL is revoked
        // on time by the expiration manager even if it is never presented again.
        let hooks = TokenStore.Hooks(
            revoked: { [weak self] entry in
                self?.dropCubbyhole(of: entry.idHash)
                leases.tokenRevoked(entry.idHash)
                if entry.breakGlass { self?.breakGlassTokenEnded(entry) }
            },
            expiring: { hash, time in leases.tokenExpiryRow(hash, at: time) }
        )
        tokens.hooks.withLock { $0 = hooks }
        subscribeToChanges()
    }

    deinit {
        if let id = feed.withLock({ $0 }) { barrier.physical.changes.unsubscribe(id) }
    }

    // MARK: Lifecycle

    func storedSealConfig() throws(CofferError) -> SealConfig? {
        guard let bytes = try barrier.physical.get(SealConfig.path) else { return nil }
        do {
            return try SealConfig(json: try JSONValue.parse(bytes))
        } catch let error as CofferError {
            throw error
        } catch {
            throw CofferError(.corruptDatabase, "the seal configuration (core/seal-config) is not valid JSON")
        }
    }

    package var isInitialized: Bool { (try? storedSealConfig()) != nil }
    package var isSealed: Bool { !opened.load(ordering: .acquiring) }

    package func sealStatus() throws(CofferError) -> SealStatus {
        let config = try storedSealConfig()
        let (count, nonce) = progress.withLock { ($0.parts.count, $0.nonce) }
        return SealStatus(
            type: seal.type,
            initialized: config != nil,
            sealed: isSealed,
            threshold: config?.threshold ?? 0,
            shares: config?.shares ?? 0,
            progress: count,
            nonce: nonce,
            storageType: barrier.physical.typeName,
            recoverySeal: seal.isAutoUnseal,
            cluster: isSealed ? nil : clusterIdentity
        )
    }

    /// Creates the vault: a root key, the keyring, the unseal shares and a root token. Returns the
    /// shares and token once; they are not stored anywhere. Leaves the vault unsealed.
    package func initialize(shares: Int, threshold: Int) throws(CofferError) -> InitResult {
        try lifecycle.withLock { (_) throws(CofferError) -> InitResult in
            guard try storedSealConfig() == nil else {
                throw CofferError(.alreadyInitialized, "Vault is already initialized")
            }
            try cluster?.prepareToInitialize()
            // Refuse to initialise over data that is not ours (a half-written init, a foreign file).
            guard try barrier.physical.list(prefix: "").isEmpty else {
                throw CofferError(
                    .corruptDatabase,
                    "storage is not empty but holds no seal configuration; refusing to initialise over it"
                )
            }
            // With an auto-unseal seal the shares are recovery shares: their key authorises rekey
            // and root-token generation, and is stored (seal-wrapped) to check them against.
            let seal = self.seal
            let unsealKey = SecureBytes(randomCount: 32)
            let parts = try Shamir.split(unsealKey, shares: shares, threshold: threshold)
            let rootKey = SecureBytes(randomCount: 32)
            let wrapped = try seal.wrap(rootKey, unsealKey: seal.isAutoUnseal ? nil : unsealKey)
            try barrier.initialize(rootKey: rootKey, now: clock.now())
            try barrier.physical.put(ShamirSeal.rootKeyPath, wrapped)
            if seal.isAutoUnseal {
                try barrier.physical.put(
                    RecoveryKey.path,
                    try barrier.sealedEntry(RecoveryKey.path, secret: unsealKey, wrappingWith: seal)
                )
            }
            try postUnseal()
            try loadMounts()
            let token = try createRootToken()
            // Written last: until it exists the vault counts as uninitialised.
            try barrier.physical.put(
                SealConfig.path,
                SealConfig(for: seal, shares: shares, threshold: threshold, parts: parts).json.serialized()
            )
            return InitResult(keys: parts, rootToken: token, recovery: seal.isAutoUnseal)
        }
    }

    /// Adds one unseal share. At the threshold the shares are combined and the vault unseals.
    ///
    /// A share that is malformed, a repeat, or not one of the current set is rejected with an error
    /// and the shares already given are kept.
    @discardableResult
    package func unseal(key: [UInt8]) throws(CofferError) -> SealStatus {
        try lifecycle.withLock { (_) throws(CofferError) in
            guard let config = try storedSealConfig() else {
                throw CofferError(.notInitialized, "Vault is not initialized")
            }
            guard barrier.isSealed else { return }
            guard !seal.isAutoUnseal else {
                throw CofferError.invalid(
                    "this vault unseals itself through its \(seal.type) seal; recovery keys do not unseal it. "
                        + "Call autoUnseal() (or sys/unseal with no key) to retry"
                )
            }
            let share = SecureBytes(key)
            guard share.count == 33 else {
                throw CofferError.invalid(
                    "unseal key is \(share.count) bytes; a Coffer unseal key is 33 bytes (66 hex digits)"
                )
            }
            let check = SealConfig.check(share)
            guard config.shareChecks.contains(where: { ConstantTime.equals(Array($0.utf8), Array(check.utf8)) }) else {
                throw CofferError.invalid(
                    "this unseal key is not one of the current unseal keys; progress is unchanged"
                )
            }
            let parts: [SecureBytes]? = try progress.withLock { (p) throws(CofferError) -> [SecureBytes]? in
                if p.parts.contains(where: { $0.constantTimeEquals(share) }) {
                    throw CofferError.invalid("this unseal key was already entered; progress is unchanged")
                }
                if p.parts.isEmpty { p.nonce = Random.uuid() }
                p.parts.append(share)
                return p.parts.count >= config.threshold ? p.parts : nil
            }
            guard let parts else { return }
            defer { progress.withLock { $0 = UnsealProgress() } }
            let unsealKey = try Shamir.combine(parts)
            try unsealWith(unsealKey: unsealKey)
        }
        return try sealStatus()
    }

    /// Unseals through an auto-unseal seal (PKCS#11): no shares needed. Does nothing when already
    /// unsealed. When the seal fails (HSM unreachable, key missing, wrong PIN) the error says what
    /// to fix and the vault stays sealed with nothing changed; calling again later retries.
    package func autoUnseal() throws(CofferError) {
        try lifecycle.withLock { (_) throws(CofferError) in
            guard try storedSealConfig() != nil else { throw CofferError(.notInitialized, "Vault is not initialized") }
            guard barrier.isSealed else { return }
            guard seal.isAutoUnseal else {
                throw CofferError.invalid(
                    "this vault is sealed by a \(seal.type) seal and needs unseal keys; it cannot unseal itself"
                )
            }
            try unsealWith(unsealKey: nil)
        }
    }

    /// Unseals with the unseal key the shares combine to (a cluster node that combined them while it
    /// was joining, before its replica held the seal configuration).
    package func unseal(combinedKey: SecureBytes) throws(CofferError) {
        try lifecycle.withLock { (_) throws(CofferError) in
            guard try storedSealConfig() != nil else { throw CofferError(.notInitialized, "Vault is not initialized") }
            guard barrier.isSealed else { return }
            try unsealWith(unsealKey: combinedKey)
        }
    }

    /// A new root token (initialisation, root-token generation, and a dev vault's root token with the
    /// id it was given: `id`).
    package func createRootToken(id: String? = nil) throws(CofferError) -> String {
        let now = clock.now()
        return try tokens.create(id: id) { hash, accessor in
            TokenEntry(
                idHash: hash,
                accessor: accessor,
                parentHash: "",
                policies: ["root"],
                meta: [:],
                displayName: "root",
                path: "auth/token/root",
                now: now,
                ttl: 0,
                explicitMaxTTL: 0,
                numUses: 0,
                period: 0,
                renewable: false
            )
        }.0
    }

    /// Discards the shares entered so far.
    package func resetUnsealProgress() {
        progress.withLock { $0 = UnsealProgress() }
    }

    func unsealWith(unsealKey: SecureBytes?) throws(CofferError) {
        guard let blob = try barrier.physical.get(ShamirSeal.rootKeyPath) else {
            throw CofferError(.corruptDatabase, "the root key (core/root-key) is missing from storage")
        }
        let rootKey = try seal.unwrap(blob, unsealKey: unsealKey)
        try barrier.unseal(rootKey: rootKey)
        try postUnseal()
        publishSealChange(sealed: false)
    }

    /// Loads what the request path needs once the barrier is open.
    func postUnseal() throws(CofferError) {
        do throws(CofferError) {
            try loadIdentity()
            try tokens.load()
            try policies.load()
            try loadMounts()
            try loadNamespaces()
            try quotas.load()
            // A device that cannot open does not stop the unseal: it stays listed, and requests fail
            // closed if no device can record them.
            try audit.load()
            let stored = try audit.storedConfigs()
            let enabled = Set(stored.map(\.path))
            for device in declaredAuditDevices where !enabled.contains(device.path) {
                do throws(CofferError) {
                    try audit.enable(device)
                } catch {
                    throw CofferError(
                        error.code,
                        "the configured audit device \(device.path) cannot be enabled: \(error.message)"
                    )
                }
            }
        } catch {
            sealNow()
            throw error
        }
        opened.store(true, ordering: .releasing)
    }

    package var clusterIdentity: ClusterIdentity { clusterIdentitySlot.withLock { $0 } }

    /// Reads the vault's identity, making one for a vault that has none yet (one made before
    /// identities, or a new one). A standby of a cluster made before identities cannot store one: it
    /// reports ``ClusterIdentity/unknown`` until it is unsealed again after its active node has.
    private func loadIdentity() throws(CofferError) {
        var loaded = ClusterIdentity.unknown
        if let bytes = try barrier.get(ClusterIdentity.path), let json = try? JSONValue.parse(bytes),
            let name = json["name"]?.stringValue, let id = json["id"]?.stringValue
        {
            loaded = ClusterIdentity(name: name, id: id)
        } else {
            let made = ClusterIdentity.random()
            let record: JSONValue = ["name": .string(made.name), "id": .string(made.id)]
            if (try? barrier.put(ClusterIdentity.path, record.serialized())) != nil { loaded = made }
        }
        clusterIdentitySlot.withLock { $0 = loaded }
    }

    /// Seals: drops the keys, caches and mounts. The next request fails with "Vault is sealed".
    ///
    /// `saveKeyUsage` false: the storage now holds another vault's data (a forced snapshot restore),
    /// which this vault's keys must not write into.
    package func sealVault(saveKeyUsage: Bool = true) {
        let wasSealed = barrier.isSealed
        lifecycle.withLock { _ in sealNow(saveKeyUsage: saveKeyUsage) }
        if !wasSealed { publishSealChange(sealed: true) }
    }

    func sealNow(saveKeyUsage: Bool = true) {
        opened.store(false, ordering: .releasing)
        root.setRoutes(nil)
        unloadNamespaces()
        quotas.unload()
        audit.unload()
        tokens.unload()
        policies.unload()
        identity.unload()
        leases.unload()
        barrier.seal(saveKeyUsage: saveKeyUsage)
        progress.withLock { $0 = UnsealProgress() }
        rekey.withLock { $0 = nil }
        generateRoot.withLock { $0 = nil }
    }

    // MARK: The request path

    /// Handles one request. Synchronous and thread-safe; the steps, in order:
    ///
    /// normalise the path → its namespace → find the mount serving it (when sealed, only `sys/`) → API
    /// lock → quotas (Quota/) → its unauthenticated paths are served here → sealed? → token (expiry, parents, uses) → existence check
    /// (update or create) → audit the request → ACL (with `sudo` for the backend's root paths) →
    /// the backend → audit the response. The C ABI's fast paths and HTTP come through here alike.
    package func handle(_ request: consuming Request, quota: inout QuotaOutcome?) throws(CofferError) -> Response {
        var timer = VaultMeters.startRequest()  // vault.core.handle_request (Metrics/)
        // Unretained, as in Barrier.get: the meters live as long as the barrier.
        let meters = Unmanaged.passUnretained(barrier.meters)
        defer { meters._withUnsafeGuaranteedRef { $0.finish(timer) } }
        var request = request  // moved, not copied: the parameter is consumed
        request.path = try PathRules.normalize(request.path)
        // As OpenBao, whatever serves the path: a write to "foo/" could mean a key named "foo/" or a
        // folder with its key forgotten, and some engines take a trailing "/" as a prefix.
        if request.path.utf8.last == UInt8(ascii: "/"), [.create, .update, .patch].contains(request.operation) {
            throw CofferError.invalid("cannot write to a path ending in '/'")
        }
        // Data built in Swift (JSON input is limited by its parser) must not nest past what the code that
        // walks it recursively (audit hashing, storage, engines) and a later parse of what is stored allow.
        if JSONValue.nestingExceeds(JSONValue.maximumDepth, members: request.data) {
            throw CofferError.invalid(
                "request data nests arrays and objects more than \(JSONValue.maximumDepth) levels deep"
            )
        }
        // The namespace: from the header and the path's leading segments (Namespace/Namespaces.swift);
        // nil for the root. The root is reached through `self.root` below, never held in a local: a
        // local would be a retain of an object every core's requests share (docs/benchmarks.md,
        // "No shared object on the request path").
        let ns = try resolveNamespace(&request)
        let table: RouteTable
        if let ns {
            guard let routed = ns.servingRoutes else { throw CofferError.sealedError }
            table = routed
        } else {
            table = servingRouteTable
        }
        guard let (mount, relative) = table.route(request.path) else {
            if isSealed { throw CofferError.sealedError }
            throw CofferError(.notFound, "no handler for route \"\(request.path)\". route entry not found.")
        }
        if let ns {
            try checkAPILock(ns, request)
            if mount.kind == .builtin, mount.entry.uuid == Core.systemEntry.uuid,
                !SystemBackend.servedInNamespace(relative)
            {
                throw CofferError(.notFound, "unsupported path")
            }
        }
        let special = mount.specialPaths
        // One clock read for the quota check, the token's expiry and the audit records.
        let now = clock.now()
        // Quotas, before the token as in OpenBao (Quota/): one relaxed load when there are none.
        if quotas.active.load(ordering: .relaxed) {
            try checkQuotas(
                request,
                mount,
                login: SpecialPaths.matches(special.unauthenticated, relative),
                now: now,
                &quota
            )
        }
        if SpecialPaths.matches(special.unauthenticated, relative) {
            timer.login = mount.kind == .auth
            if SpecialPaths.matches(special.unaudited, relative) {
                return try dispatch(request, to: mount, relative, caller: nil, now: now)
            }
            return try audited(request, caller: nil, now: now) { (request) throws(CofferError) in
                try dispatch(request, to: mount, relative, caller: nil, now: now)
            }
        }
        if isSealed {
            // Sealing a sealed vault is a no-op that succeeds, as in OpenBao (no token can be checked).
            if request.path == "sys/seal" && (request.operation == .update || request.operation == .create) {
                return .noContent
            }
            throw CofferError.sealedError
        }
        let caller: TokenEntry
        do {
            caller = try authenticate(request.token, now: now, clientAddress: request.clientAddress)
        } catch {
            // A refused token is recorded too (best effort: the request is refused either way).
            var record = AuditRecord(request: request, caller: nil, time: now)
            record.requestError = error
            record.error = error
            audit.logRefused(record)
            // Unwrapping with a wrapping token that is spent or unknown as the client token says so,
            // as OpenBao does (400), rather than "permission denied".
            if request.path == "sys/wrapping/unwrap", request.data["token"] == nil { throw Core.invalidWrappingToken }
            throw error
        }
        // Vault's existence check: a write to a path its backend says does not exist yet is a
        // `create`. Before the audit record, so the record shows the operation the ACL decides on; a
        // check that fails decides nothing (the backend meets the same failure, audited).
        if request.operation == .update,
            let exists = try? mount.backend.exists(existenceRequest(request, mount, relative, caller, now)),
            !exists
        {
            request.operation = .create
        }
        // Without a device, no closure and no lock: forming the closure retains what it captures
        // (`self`, the namespace, the mount), and the devices' lock is taken by every core's requests.
        // Each is a write to a line those requests share.
        if audit.isEmpty && !caller.breakGlass {
            try permit(caller, request, in: ns, special, relative)
            return try dispatch(request, to: mount, relative, caller: caller, now: now)
        }
        return try audited(request, caller: caller, now: now) { (request) throws(CofferError) in
            try permit(caller, request, in: ns, special, relative)
            return try dispatch(request, to: mount, relative, caller: caller, now: now)
        }
    }

    /// The ACL step of ``handle(_:quota:)``: a self-service path (`sys/capabilities-self`) needs only a
    /// token of the namespace or one above it; any other, the ACL's permission (and `sudo` on the
    /// backend's root paths).
    private func permit(
        _ caller: TokenEntry,
        _ request: Request,
        in ns: Namespace?,
        _ special: SpecialPaths,
        _ relative: String
    ) throws(CofferError) {
        if !SpecialPaths.matches(special.selfService, relative) {
            try authorize(caller, request, in: ns, requireSudo: SpecialPaths.matches(special.root, relative))
        } else if !(callerNamespace(caller).map { (ns ?? root).isWithin($0) } ?? false) {
            throw CofferError.permissionDeniedError
        }
    }

    /// The answer for an operation a path does not serve (Vault's text).
    func unsupported(_ request: Request) -> CofferError { CofferError(.unsupportedOperation, "unsupported operation") }

    /// Runs the backend. An auth method's login answer (an `auth` block without a token) becomes a
    /// token here, as Vault's router does.
    func dispatch(
        _ request: Request,
        to mount: RoutedMount,
        _ relative: String,
        caller: TokenEntry?,
        now: Timestamp
    ) throws(CofferError) -> Response {
        // vault.route.<op>.<mount>: begin/end, not a generic closure, which CofferCore cannot inline here.
        let routeTiming = mount.meters.begin(request.operation)
        var response: Response
        do {
            defer { mount.meters.end(request.operation, routeTiming) }
            if request.operation == .read, request.data.isEmpty, !request.rawResults,
                let direct = try mount.backend.directRead(
                    relative,
                    storage: mount.storage,
                    mount: mount.entry,
                    now: now,
                    writesAnswerAsJSON: request.writesAnswerAsJSON && request.wrapTTL == 0
                )
            {
                response = direct
            } else {
                // Built in the call: a temporary is handed on, where a local would be copied.
                response = try mount.backend.handle(backendRequest(request, mount, relative, caller: caller, now: now))
            }
        }
        response.mountType = mount.entry.type
        if mount.kind == .auth, let auth = response.auth, auth.clientToken.isEmpty {
            response.auth = try issueLoginToken(auth, mount: mount, path: request.path, now: now)
        }
        if response.secret != nil {
            try leases.register(
                &response,
                requestPath: mount.namespacePath + request.path,
                mount: mount,
                tokenHash: caller?.idHash ?? "",
                now: now
            )
        }
        // The leases of tokens this request revoked (auth/token/revoke, a last use) go before it answers.
        leases.drainRevokedTokens(now: now)
        if request.wrapTTL > 0, response.outcome == .ok, response.raw == nil, response.body == nil,
            response.wrapInfo == nil
        {
            response = try wrap(response, path: request.path, requestID: request.id, ttl: request.wrapTTL, now: now)
        }
        return response
    }

    /// The request as `mount`'s backend sees it.
    func backendRequest(
        _ request: Request,
        _ mount: RoutedMount,
        _ relative: String,
        caller: TokenEntry?,
        now: Timestamp
    ) -> BackendRequest {
        var backendRequest = BackendRequest(
            operation: request.operation,
            path: relative,
            fields: FieldData(request.data, rawBytes: request.rawBytes, rawResults: request.rawResults),
            storage: mount.storage,
            mount: mount.entry,
            now: now,
            caller: caller?.caller,
            token: request.token,
            requestID: request.id,
            clientAddress: request.clientAddress
        )
        backendRequest.system = self
        backendRequest.wrapTTL = request.wrapTTL
        backendRequest.namespaceID = mount.namespaceID
        return backendRequest
    }

    func existenceRequest(
        _ request: Request,
        _ mount: RoutedMount,
        _ relative: String,
        _ caller: TokenEntry,
        _ now: Timestamp
    )
        -> ExistenceRequest
    {
        ExistenceRequest(
            path: relative,
            fields: FieldData(request.data, rawBytes: request.rawBytes),
            storage: mount.storage.reader,
            mount: mount.entry,
            now: now,
            caller: caller.caller
        )
    }

    /// Records the request, runs `body`, records the response. If no audit device records the request,
    /// `body` never runs.
    func audited(
        _ request: Request,
        caller: TokenEntry?,
        now: Timestamp,
        _ body: (Request) throws(CofferError) -> Response
    ) throws(CofferError) -> Response {
        let devices = audit.current
        // A break-glass token's requests are reported even with no device (BreakGlass/).
        guard !devices.isEmpty || caller?.breakGlass == true else { return try body(request) }
        var record = AuditRecord(request: request, caller: caller?.auditCaller, time: now)
        let ticket = try audit.logRequest(record, devices: devices)
        do {
            record.response = try body(request)
        } catch {
            record.error = error
            try? audit.logResponse(record, ticket)
            if let caller, caller.breakGlass { breakGlassUsed(caller, record) }
            throw error
        }
        record.mountType = record.response!.mountType
        try audit.logResponse(record, ticket)
        if let caller, caller.breakGlass { breakGlassUsed(caller, record) }
        return record.response!
    }

    /// The token's entry, with expiry enforced and a use counted. `package` so that bench/ can time
    /// this step of the request path on its own (docs/benchmarks.md); not API.
    package func authenticate(
        _ token: String?,
        now: Timestamp,
        clientAddress: String = ""
    ) throws(CofferError)
        -> TokenEntry
    {
        guard let token, !token.isEmpty, let found = try tokens.lookup(token: token),
            var entry = try tokens.live(found, now: now)
        else {
            throw CofferError.permissionDeniedError
        }
        // A token bound to CIDR blocks is refused from anywhere else, and from a caller that gives
        // no address (an in-process call that does not say where it acts for).
        if !entry.boundCIDRs.isEmpty, clientAddress.isEmpty || !CIDR.allows(entry.boundCIDRs, clientAddress) {
            throw CofferError.permissionDeniedError
        }
        // A wrapping token's one use is its unwrap, which revokes it (Wrapping.swift); its policy
        // allows nothing else, so no request spends it here.
        if entry.numUses > 0, entry.policies != [PolicyStore.responseWrappingName] {
            // Checked and spent under the token store's lock: concurrent requests cannot share a use.
            guard let spent = try tokens.spendUse(hash: entry.idHash) else { throw CofferError.permissionDeniedError }
            entry = spent
        }
        return entry
    }

    /// Checks the ACL of the caller's policies for the request. `package` for bench/, as `authenticate`.
    ///
    /// A token made in a namespace acts there and in the namespaces inside it, with the policies of
    /// its own namespace over paths relative to it (`child/kv/data/x` from the parent), as in OpenBao;
    /// anywhere else it is denied.
    package func authorize(
        _ caller: TokenEntry,
        _ request: Request,
        in ns: Namespace? = nil,
        requireSudo: Bool = false
    ) throws(CofferError) {
        // Two calls, not `ns ?? root`: that would retain the root namespace, which every core's
        // requests share.
        let governing = if let ns { try governingACL(caller, in: ns) } else { try governingACL(caller, in: root) }
        guard let (acl, prefix) = governing else { return }
        // A list is of a folder: Vault's HTTP layer adds the trailing "/" before the ACL sees the
        // path, so `path "secret/metadata/a/*"` allows `LIST secret/metadata/a`.
        var path = request.operation == .list && !request.path.hasSuffix("/") ? request.path + "/" : request.path
        if !prefix.isEmpty { path = prefix + path }
        let decision = acl.allowOperation(
            PolicyOperation(request.operation),
            path: path,
            wrapTTL: request.wrapTTL,
            lazyData: { request.parameters }
        )
        guard decision.allowed, !requireSudo || decision.rootPrivileges else {
            throw CofferError.permissionDeniedError
        }
    }

    /// The ACL of `caller`'s policies (its token's and its entity's) in its home namespace, and the
    /// path of `ns` below that home, to put before a request's path; nil for a root token of a
    /// namespace `ns` is in (everything allowed). Denied when `ns` is outside the caller's home.
    func governingACL(_ caller: TokenEntry, in ns: Namespace) throws(CofferError) -> (ACL, String)? {
        // Most often the token is of the namespace it is used in: no lookup then, and, without an
        // entity, no copy of the namespace, its policy store or the token's policies (each would be a
        // retain, an atomic write to a line every core's requests share).
        if caller.namespaceID == (ns.isRoot ? "" : ns.id) {
            if caller.isRoot { return nil }
            if caller.entityID.isEmpty { return (try ns.policies.acl(for: caller.policyNames), "") }
            return try governingACL(caller, in: ns, home: ns)
        }
        guard let home = callerNamespace(caller), ns.isWithin(home) else { throw CofferError.permissionDeniedError }
        if caller.isRoot { return nil }
        return try governingACL(caller, in: ns, home: home)
    }

    private func governingACL(
        _ caller: TokenEntry,
        in ns: Namespace,
        home: Namespace
    ) throws(CofferError) -> (ACL, String) {
        var policies = caller.policies
        if !caller.entityID.isEmpty {
            let extra = try home.identity.policies(entityID: caller.entityID)
            if !extra.isEmpty { policies = Array(Set(policies).union(extra)).sorted() }
        }
        let acl = try home.policies.acl(for: policies)
        return (acl, ns === home ? "" : String(ns.path.dropFirst(home.path.count)))
    }

    /// The namespace the token was made in; nil once it is deleted (its tokens are revoked then).
    func callerNamespace(_ caller: TokenEntry) -> Namespace? { namespace(id: caller.namespaceID) }
}

extension PolicyOperation {
    init(_ op: Request.Operation) {
        switch op {
        case .create: self = .create
        case .read: self = .read
        case .update: self = .update
        case .patch: self = .patch
        case .delete: self = .delete
        case .list: self = .list
        }
    }
}
