@_exported public import CofferAudit
@_exported public import CofferCore
package import CofferFramework
package import CofferStorage
@_exported public import CofferVault
import Engines
@_exported public import PKCS11Seal

/// How to open a vault.
public struct VaultConfiguration: Sendable {
    /// Where the encrypted data lives.
    public enum Storage: Sendable {
        /// One SQLite file (created if missing). The embedded default.
        case sqlite(path: String)
        /// Memory only: for tests and development; nothing survives the process.
        case memory
        /// A node of a replicated cluster (docs/raft.md): its replica and Raft log in a directory.
        /// (Indirect: kept inline, the large payload made valgrind see `Vault.open`'s switch read
        /// bytes a `.sqlite` value leaves unset.)
        indirect case raft(RaftConfiguration)
    }

    public var storage: Storage
    /// What protects the root key: `ShamirSeal()` (unseal shares) or a `PKCS11Seal` (an HSM key;
    /// the vault unseals itself). See docs/hsm.md.
    public var seal: any Seal
    public var limits: Limits
    public var clock: any WallClock
    /// With an auto-unseal seal, unseal through it while opening (default). When false the vault
    /// opens sealed and `Vault.autoUnseal()` unseals it, for callers that want to start while the
    /// HSM is away and retry.
    public var autoUnseal: Bool
    /// When set, ``Vault/open(_:)`` opens a development vault as ``Vault/openDev(storage:rootTokenID:clock:)``
    /// does, with this root token id (the JSON configuration's `dev` key).
    public var devRootToken: String?
    /// Audit devices that must be enabled (the JSON configuration's `audit` list): each is enabled
    /// at unseal if it is not already, and the unseal fails if one cannot be.
    public var auditDevices: [AuditDeviceConfig] = []
    /// Auth methods that `sys/auth/<path>` can enable, by type: the built-in ones; tests may add their own.
    package var authMethods = BuiltinAuthMethods.registry

    public init(
        storage: Storage,
        seal: any Seal = ShamirSeal(),
        limits: Limits = Limits(),
        clock: any WallClock = SystemClock(),
        autoUnseal: Bool = true
    ) {
        self.storage = storage
        self.seal = seal
        self.limits = limits
        self.clock = clock
        self.autoUnseal = autoUnseal
    }
}

/// An embedded Coffer: the whole vault in-process.
///
/// ```swift
/// let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: "data/coffer.db")))
/// let result = try vault.initialize(shares: 5, threshold: 3)   // keep result.keys and result.rootToken safe
/// for key in result.keys.prefix(3) { try vault.unseal(key: key) }
/// let kv = vault.kv(token: result.rootToken)
/// try kv.put("app/db", ["password": "s3cret"])
/// let secret = try kv.get("app/db")
/// ```
///
/// Every method is synchronous and safe to call from any number of threads.
public final class Vault: Sendable {
    /// The core: the request pipeline and the vault's state. Not API: what an embedding program
    /// needs is on `Vault` (docs/public-api.md); the C ABI, cofferd, the tests and bench/ reach it.
    package let core: Core
    /// Revokes what expires, on time: runs when the vault keeps the system's time. With another clock
    /// (tests), nothing happens by itself; ``expireLeases()`` does what is due.
    private let leaseRunner: LeaseRunner?
    /// The cluster this vault's storage replicates in (``VaultConfiguration/Storage/raft(_:)``).
    package let cluster: RaftCluster?

    private init(core: Core, cluster: RaftCluster? = nil) {
        self.core = core
        self.cluster = cluster
        self.leaseRunner = core.clock is SystemClock ? LeaseRunner(core.leases, clock: core.clock) : nil
    }

    deinit { leaseRunner?.stop() }

    /// Revokes the leases and tokens whose time has come, and retries failed revocations that are
    /// due. A vault on the system clock does this by itself every 100 ms; one opened with another
    /// clock (a test's manual clock) does it only when this is called.
    @discardableResult
    public func expireLeases() -> LeaseExpiryReport {
        core.leases.tick(now: core.clock.now())
    }

    /// Opens the vault described by `configuration`. It starts sealed (or uninitialised); with an
    /// auto-unseal seal (PKCS#11) an initialised vault unseals itself through the HSM.
    ///
    /// - Throws: ``CofferError`` with code `corruptDatabase` when the file is not a Coffer database or
    ///   is damaged, `io` when it cannot be opened; with an auto-unseal seal, the seal's error
    ///   (`invalidArgument` for a configuration to fix, `unavailable` for an HSM to bring back) when
    ///   it cannot unseal. Nothing is changed then: open again once it is fixed.
    public static func open(_ configuration: VaultConfiguration) throws(CofferError) -> Vault {
        if let rootTokenID = configuration.devRootToken {
            var plain = configuration
            plain.devRootToken = nil
            let vault = try open(plain)
            do {
                _ = try vault.makeDev(rootTokenID: rootTokenID)
            } catch {
                vault.close()
                throw error
            }
            return vault
        }
        let storage: any PhysicalBackend
        var cluster: RaftCluster?
        let cacheBytes = configuration.limits.readCacheBytes
        switch configuration.storage {
        case .sqlite(let path):
            let file = try SQLiteBackend(path: path)
            storage = cacheBytes > 0 ? CachingBackend(file, capacity: cacheBytes) : file
        case .memory: storage = InMemoryBackend()
        case .raft(let raft):
            let node = try RaftCluster(raft)
            cluster = node
            storage = cacheBytes > 0 ? CachingBackend(node.backend, capacity: cacheBytes) : node.backend
        }
        do {
            let core = try Core(
                storage: storage,
                seal: configuration.seal,
                engines: BuiltinEngines.registry,
                authMethods: configuration.authMethods,
                clock: configuration.clock,
                limits: configuration.limits,
                auditDevices: configuration.auditDevices
            )
            cluster?.attach(core)
            if configuration.autoUnseal, configuration.seal.isAutoUnseal, core.isInitialized {
                try core.autoUnseal()
            }
            return Vault(core: core, cluster: cluster)
        } catch {
            storage.close()
            throw error
        }
    }

    /// A development vault: initialised with one share, unsealed, `secret/` mounted as KV v2 and a
    /// root token with the id you choose — what `bao server -dev` gives.
    public static func openDev(
        storage: VaultConfiguration.Storage = .memory,
        rootTokenID: String = "root",
        clock: any WallClock = SystemClock()
    ) throws(CofferError) -> (vault: Vault, unsealKey: SecureBytes) {
        let vault = try open(VaultConfiguration(storage: storage, clock: clock))
        return (vault, try vault.makeDev(rootTokenID: rootTokenID))
    }

    /// Initialises with one share, replaces the root token by one with id `rootTokenID` and mounts
    /// `secret/` as KV v2. Returns the unseal key.
    private func makeDev(rootTokenID: String) throws(CofferError) -> SecureBytes {
        let result = try initialize(shares: 1, threshold: 1)
        // Made as initialisation makes a root token, so any id is taken (`s.…` included), as in OpenBao.
        _ = try core.createRootToken(id: rootTokenID)
        _ = try core.handle(Request(.update, "auth/token/revoke-self", token: result.rootToken))
        try core.mount(
            MountEntry(path: "secret/", type: "kv", description: "key/value secret storage", options: ["version": "2"])
        )
        return result.keys[0]
    }

    /// Initialises a new vault; returns the unseal shares and root token, once. Leaves it unsealed.
    public func initialize(shares: Int, threshold: Int) throws(CofferError) -> InitResult {
        try core.initialize(shares: shares, threshold: threshold)
    }

    /// Enters one unseal share; the vault unseals when the threshold is reached.
    @discardableResult
    public func unseal(key: SecureBytes) throws(CofferError) -> SealStatus {
        if let cluster, cluster.backend.awaitingAdmission, !core.isInitialized {
            // A node joining a cluster: the shares open the root key the active node sent with its challenge.
            guard let status = try cluster.joiningUnseal(key) else {
                throw CofferError(
                    .unavailable,
                    "this node is joining a cluster and has not reached its active node yet; retry the unseal"
                )
            }
            return status
        }
        return try core.unseal(key: key.unsafeCopy)
    }

    /// Enters one unseal share given as hex or base64 text (as `sys/init` printed it).
    @discardableResult
    public func unseal(key text: String) throws(CofferError) -> SealStatus {
        guard let bytes = Hex.decode(text) ?? Base64.decode(text) else {
            throw CofferError(.invalidArgument, "unseal key must be hex or base64")
        }
        return try core.unseal(key: bytes)
    }

    /// Unseals through the auto-unseal seal (PKCS#11): retries after a failed open or a `seal()`.
    public func autoUnseal() throws(CofferError) { try core.autoUnseal() }

    /// Moves the vault to another seal with every secret intact (Shamir to PKCS#11 or back) and
    /// returns the new shares: recovery shares for an auto-unseal seal, unseal shares otherwise.
    /// The vault must be unsealed and stays so; from now on open it with `newSeal`.
    public func migrateSeal(to newSeal: any Seal, shares: Int, threshold: Int) throws(CofferError) -> InitResult {
        try core.migrateSeal(to: newSeal, shares: shares, threshold: threshold)
    }

    /// Seals: forgets every key until the next unseal.
    public func seal() { core.sealVault() }

    /// Whether the storage holds an initialised vault.
    public var isInitialized: Bool { core.isInitialized }

    /// Whether the vault is sealed (no key in memory; only `sys/` status paths answer).
    public var isSealed: Bool { core.isSealed }

    /// Which seal key wraps what (the root key and every seal-wrapped entry): `sys/sealwrap/rewrap` GET.
    public func sealWrapStatus() throws(CofferError) -> SealWrapStatus { try core.sealWrapStatus() }

    /// Moves everything the seal protects to the seal's current HSM key (after an HSM key rotation):
    /// `sys/sealwrap/rewrap` POST. See docs/hsm.md.
    @discardableResult
    public func rewrapSealedEntries() throws(CofferError) -> SealWrapStatus { try core.rewrapSealedEntries() }

    public func status() throws(CofferError) -> SealStatus { try core.sealStatus() }

    /// Handles any request of the API.
    /// Consuming: the core normalises the request in place, so one handed over is not copied.
    public func handle(_ request: consuming Request) throws(CofferError) -> Response {
        try Vault.perform(request, core, cluster)
    }

    /// `core.handle`; on a standby or an embedded replica, a request that would write goes to the
    /// cluster's active node instead (docs/raft.md, "Embedded replicas").
    static func perform(
        _ request: consuming Request,
        _ core: Core,
        _ cluster: RaftCluster?
    ) throws(CofferError) -> Response {
        guard let cluster else { return try core.handle(request) }
        let original = copy request  // what is forwarded if this node cannot write
        do {
            return try core.handle(request)
        } catch {
            guard RaftCluster.isStandbyWrite(error) else { throw error }
            return try cluster.forward(original)
        }
    }

    /// On an embedded replica (or a standby): waits until this node has applied every write this
    /// process made through it (they went to the active node), so that a read after it sees them.
    /// Returns at once elsewhere. Throws `unavailable` when `timeout` seconds pass first.
    public func waitForOwnWrites(timeout: Double = 5) throws(CofferError) {
        guard let cluster, !cluster.waitForWrites(timeout: timeout) else { return }
        throw CofferError(.unavailable, "this replica did not apply this process's writes within \(timeout) s")
    }

    /// A KV v2 client for the engine mounted at `mount`.
    public func kv(mount: String = "secret", token: String) -> KVClient {
        KVClient(
            core: core,
            cluster: cluster,
            mount: mount.hasSuffix("/") ? String(mount.dropLast()) : mount,
            token: token
        )
    }

    /// Closes the storage. Later calls fail.
    public func close() {
        core.events.stopDelivery()
        leaseRunner?.stop()
        cluster?.close()
        core.sealVault()
        core.barrier.physical.close()
    }

    /// Writes every queued audit record now (a read's records otherwise wait up to about a
    /// millisecond for the device's writer thread; docs/audit.md). Throws if a device cannot write.
    public func flushAudit() throws(CofferError) { try core.flushAudit() }

    /// Reopens every audit device's file or socket: call after logrotate moved the files.
    public func reopenAuditDevices() throws(CofferError) { try core.reopenAuditDevices() }

    /// The name of the storage backend ("sqlite", "inmem").
    public var storageType: String { core.barrier.physical.typeName }
}

/// A secret as read from KV v2.
public struct KVSecret: Sendable, Equatable {
    public var data: [String: JSONValue]
    public var version: Int
    public var createdTime: String
    public var customMetadata: [String: String]
}

/// Typed access to a KV v2 mount, through the same request path (token, ACL) as every other caller.
public struct KVClient: Sendable {
    let core: Core
    let cluster: RaftCluster?
    public let mount: String
    public let token: String

    /// Writes a new version; returns its number. With `cas`, the write succeeds only if the current
    /// version is `cas` (0: only if the secret does not exist).
    @discardableResult
    public func put(_ path: String, _ data: [String: JSONValue], cas: Int? = nil) throws(CofferError) -> Int {
        var body: [String: JSONValue] = ["data": .object(data)]
        if let cas { body["options"] = ["cas": .int(cas)] }
        let response = try Vault.perform(
            Request(.update, "\(mount)/data/\(path)", data: body, token: token),
            core,
            cluster
        )
        return response.data?["version"]?.intValue ?? 0
    }

    /// The current (or the given) version, or nil if it does not exist or is deleted or destroyed.
    public func get(_ path: String, version: Int? = nil) throws(CofferError) -> KVSecret? {
        var query: [String: JSONValue] = [:]
        if let version { query["version"] = .int(version) }
        let response = try Vault.perform(
            Request(.read, "\(mount)/data/\(path)", data: query, token: token),
            core,
            cluster
        )
        guard response.outcome == .ok, case .object(let data)? = response.data?["data"],
            let metadata = response.data?["metadata"]
        else { return nil }
        return KVSecret(
            data: data,
            version: metadata["version"]?.intValue ?? 0,
            createdTime: metadata["created_time"]?.stringValue ?? "",
            customMetadata: (metadata["custom_metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        )
    }

    /// ``get(_:version:)`` for a caller that wants the values as JSON (the C ABI): the version's data
    /// as compact JSON (keys sorted) and its number. The JSON the engine stored is handed on without
    /// being parsed when no audit device or wrapping reads the answer.
    package func getJSON(
        _ path: String,
        version: Int? = nil
    ) throws(CofferError) -> (data: ArraySlice<UInt8>, version: Int)? {
        var request = Request(.read, "\(mount)/data/\(path)", token: token)
        if let version { request.data["version"] = .int(version) }
        request.writesAnswerAsJSON = true
        let response = try Vault.perform(request, core, cluster)
        guard response.outcome == .ok, let metadata = response.data?["metadata"] else { return nil }
        let number = metadata["version"]?.intValue ?? 0
        if let member = response.verbatimMember, member.name == "data" { return (member.json, number) }
        guard case .object(let data)? = response.data?["data"] else { return nil }
        return (JSONValue.object(data).serialized()[...], number)
    }

    /// Soft-deletes the current version (undelete can restore it).
    public func delete(_ path: String) throws(CofferError) {
        _ = try Vault.perform(Request(.delete, "\(mount)/data/\(path)", token: token), core, cluster)
    }

    /// The keys under a folder ("" for the top).
    public func list(_ folder: String = "") throws(CofferError) -> [String] {
        let response = try Vault.perform(Request(.list, "\(mount)/metadata/\(folder)", token: token), core, cluster)
        return (response.data?["keys"]?.arrayValue ?? []).compactMap(\.stringValue)
    }
}
