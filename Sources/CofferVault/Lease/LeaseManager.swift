package import CofferCore
package import CofferFramework
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Vault's expiration manager: every secret handed out with a lease is recorded here, and revoked
/// (its backend's revoke hook run) when the lease expires, when it is revoked by hand, when the
/// token that asked for it is revoked or expires, and when its mount goes.
///
/// Storage, all in the barrier:
/// - `sys/expire/id/<lease id>`: the ``LeaseEntry``. Lease ids start with their mount's path, so a
///   prefix (`revoke-prefix`, LIST `sys/leases/lookup/`) is a storage listing.
/// - `sys/expire/at/<hour>/<minute>/<ns>-<random>` (``DueIndex``): one row per lease, at the time
///   it is next due, whose value is the lease id; and one per token with a TTL (`t:` + its hash).
/// - `sys/expire/token/<token hash>/<lease id's last segment>`: the leases of a token;
///   `sys/expire/mount/<mount uuid>/<last segment>`: of a mount (which may have moved since);
///   `sys/expire/failing/<last segment>`: the leases whose revocation is failing.
///
/// Nothing is loaded at unseal. Time comes from the core's clock and nothing here sleeps:
/// ``tick(now:)`` does what is due, and the vault calls it from a background thread when it runs on
/// the system clock (tests with a manual clock call it themselves).
///
/// A revocation that fails (the database is down) is never given up: the lease stays, its error and
/// attempt count show in `sys/leases/lookup`, and it is retried after 1 s, 2 s, 4 s, ... up to every
/// ``maximumBackoff`` seconds, with jitter, until it succeeds or is force-revoked.
package final class LeaseManager: Sendable {
    static let idPrefix = "sys/expire/id/"
    static let tokenPrefix = "sys/expire/token/"
    static let mountPrefix = "sys/expire/mount/"
    static let failingPrefix = "sys/expire/failing/"
    /// The longest wait between two attempts at a failing revocation, in seconds.
    package static let maximumBackoff: Int64 = 300
    /// How many due rows one pass of ``tick(now:)`` takes at most (the rest wait for the next pass).
    static let batchLimit = 1000

    /// The core it serves: set once by the core's initialiser, before the core is shared.
    nonisolated(unsafe) private weak var owner: Core?
    private var core: Core { owner! }
    /// The earliest due time in the index, when known; nil when it must be read from storage.
    private let nextDue = Mutex<Timestamp?>(nil)
    /// Tokens revoked since the last drain, whose leases are to be revoked.
    private let revokedTokens = Mutex<[String]>([])
    private let hasRevokedTokens = Atomic<Bool>(false)
    /// Leases whose backend revocation is running now: nothing else revokes or renews them meanwhile.
    private let inFlight = Mutex<Set<String>>([])
    /// When mounts' periodic work last ran.
    private let lastPeriodic = Mutex(Timestamp.zero)
    /// Serialises changes to lease entries (read, change, write back). Never held across a backend call.
    private let writes = Mutex(())

    init() {}

    func attach(_ core: Core) { owner = core }

    private var barrier: Barrier { core.barrier }

    /// Forgets what it knows (at seal); storage is read again at the next tick.
    func unload() {
        nextDue.withLock { $0 = nil }
        revokedTokens.withLock { $0 = [] }
        hasRevokedTokens.store(false, ordering: .releasing)
    }

    private func withWriteLock<R>(_ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        let result: Result<R, CofferError> = writes.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    private func load(_ id: String) throws(CofferError) -> LeaseEntry? {
        guard let bytes = try barrier.get(LeaseManager.idPrefix + id) else { return nil }
        guard let json = try? JSONValue.parse(bytes) else {
            throw CofferError(.integrity, "the stored lease \(id) is not valid JSON")
        }
        return try LeaseEntry(json: json)
    }

    /// Lowers the earliest due time known in memory. While it is unknown (nil: after unseal, until
    /// the first pass reads the index) it stays unknown: rows already in storage may be due earlier.
    private func noteDue(_ time: Timestamp) {
        nextDue.withLock { due in
            if let current = due, time < current { due = time }
        }
    }

    // MARK: Issuing

    /// Records the lease for a secret a backend just handed out and puts it in the response: its id,
    /// duration and whether it renews. The TTL is the role's, else the mount's default, else 768 h,
    /// capped by the role's max TTL, the mount's and the system's (with OpenBao's warning). If the
    /// lease cannot be stored the secret is revoked at once, so nothing is left without a lease.
    func register(
        _ response: inout Response,
        requestPath: String,
        mount: RoutedMount,
        tokenHash: String,
        now: Timestamp
    ) throws(CofferError) {
        guard let secret = response.secret else { return }
        response.secret = nil
        guard let type = mount.backend.secretTypes.first(where: { $0.name == secret.type }) else {
            throw CofferError(
                .internal,
                "the \(mount.entry.type) engine at \(mount.prefix) issued a secret of unknown type \(secret.type)"
            )
        }
        let (ttl, maxTTL, asked) = mount.entry.leaseTTL(asked: secret.ttl, max: secret.maxTTL)
        if asked > maxTTL { response.warnings.append(LeaseManager.cappedWarning(asked: asked, max: maxTTL)) }
        var entry = LeaseEntry(
            id: requestPath + "/" + Random.base62(24),
            path: requestPath,
            mountUUID: mount.entry.uuid,
            secretType: secret.type,
            internalData: secret.internalData,
            tokenHash: tokenHash,
            issueTime: now,
            ttl: ttl,
            maxTTL: maxTTL,
            defaultTTL: asked,
            renewable: secret.renewable
        )
        entry.dueKey = DueIndex.key(entry.expireTime)
        var ops: [StorageOperation] = [
            .put(key: LeaseManager.idPrefix + entry.id, value: entry.json.serialized()),
            .put(key: entry.dueKey, value: Array(entry.id.utf8)),
        ]
        for key in indexKeys(entry) { ops.append(.put(key: key, value: Array(entry.id.utf8))) }
        do {
            try barrier.batch(ops)
        } catch {
            let request = SecretRequest(
                leaseID: entry.id,
                internalData: entry.internalData,
                expireTime: now,
                storage: mount.storage,
                mount: mount.entry,
                now: now
            )
            try? type.revoke(request)
            throw error
        }
        noteDue(entry.expireTime)
        core.quotas.leaseRegistered(entry.id)
        response.leaseID = entry.id
        response.leaseDuration = ttl
        response.renewable = entry.renewable
    }

    /// The index rows naming `entry` besides its due row: its token's, its mount's, and while its
    /// revocation is failing, the failing list's. Each holds the lease id.
    private func indexKeys(_ entry: LeaseEntry) -> [String] {
        let last = entry.id.split(separator: "/").last.map(String.init) ?? entry.id
        var keys = [LeaseManager.mountPrefix + entry.mountUUID + "/" + last]
        if !entry.tokenHash.isEmpty { keys.append(LeaseManager.tokenPrefix + entry.tokenHash + "/" + last) }
        if entry.revokeAttempts > 0 { keys.append(LeaseManager.failingPrefix + last) }
        return keys
    }

    /// OpenBao's warning when a TTL is cut down to the max TTL, with durations as Go's `humanDuration`
    /// prints them ("100h", "23h59m52s").
    static func cappedWarning(asked: Int64, max: Int64) -> String {
        "TTL of \"\(VaultDuration.formatShort(asked))\" exceeded the effective max_ttl of \"\(VaultDuration.formatShort(max))\"; TTL value is capped accordingly"
    }

    // MARK: Lookup and renewal

    package func lookup(_ id: String, now: Timestamp) throws(CofferError) -> [String: JSONValue] {
        guard let entry = try load(id) else { throw CofferError.invalid("invalid lease") }
        let next = entry.revokeAttempts > 0 ? DueIndex.time(ofKey: entry.dueKey) : nil
        return entry.lookupData(now: now, nextAttempt: next)
    }

    /// The ids under `prefix` as a storage listing: lease ids, and folders ending in "/".
    package func list(prefix: String) throws(CofferError) -> [String] {
        try barrier.list(LeaseManager.idPrefix + prefix)
    }

    /// Renews a lease: its TTL becomes `increment` (or the TTL it was issued with) counted from now,
    /// never past issue time plus its max TTL. Returns the new TTL and any warning.
    package func renew(_ id: String, increment: Int64, now: Timestamp) throws(CofferError) -> (Int64, [String]) {
        if id.hasPrefix("auth/") { throw CofferError.invalid("tokens cannot be renewed through this endpoint") }
        guard !inFlight.withLock({ $0.contains(id) }), let entry = try load(id) else {
            throw CofferError.invalid("lease not found")
        }
        guard entry.renewable, entry.revokeAttempts == 0, entry.expireTime > now else {
            throw CofferError.invalid("lease is not renewable")
        }
        let asked = increment > 0 ? increment : entry.defaultTTL
        // What is left to the max, to the nearest second, as OpenBao rounds it ("24h" half a second
        // after issue, not "23h59m59s"); the expiry itself never passes the max.
        let left = max(0, now.nanosecondsUntil(entry.maxExpireTime).roundedSeconds)
        var warnings: [String] = []
        var ttl = asked
        if ttl > left {
            warnings.append(LeaseManager.cappedWarning(asked: asked, max: left))
            ttl = left
        }
        let expire = min(now.adding(seconds: ttl), entry.maxExpireTime)
        guard let mount = mount(of: entry) else {
            throw CofferError.invalid("lease is not renewable: the mount that issued it is gone")
        }
        if let renewHook = try secretType(of: entry, in: mount).renew {
            try renewHook(secretRequest(entry, mount, expireTime: expire, now: now))
        }
        try withWriteLock { () throws(CofferError) in
            guard var current = try load(id) else { throw CofferError.invalid("lease not found") }
            current.expireTime = expire
            current.lastRenewal = now
            try store(&current, dueAt: expire)
        }
        noteDue(expire)
        return (ttl, warnings)
    }

    // MARK: Revocation

    private func mount(of entry: LeaseEntry) -> RoutedMount? {
        core.routedMount(uuid: entry.mountUUID)
    }

    private func secretType(of entry: LeaseEntry, in mount: RoutedMount) throws(CofferError) -> SecretType {
        guard let type = mount.backend.secretTypes.first(where: { $0.name == entry.secretType }) else {
            throw CofferError(
                .internal,
                "the engine at \(mount.prefix) no longer knows secrets of type \(entry.secretType)"
            )
        }
        return type
    }

    private func secretRequest(
        _ entry: LeaseEntry,
        _ mount: RoutedMount,
        expireTime: Timestamp,
        now: Timestamp
    )
        -> SecretRequest
    {
        SecretRequest(
            leaseID: entry.id,
            internalData: entry.internalData,
            expireTime: expireTime,
            storage: mount.storage,
            mount: mount.entry,
            now: now
        )
    }

    /// Revokes one lease: runs its backend's revoke hook and, when that succeeds (or `force`), deletes
    /// it. Returns nil on success, or the error that left it in place (with `force`: the error that
    /// was ignored, the lease being gone). A failed attempt is recorded on the lease and retried
    /// later with backoff. A lease that does not exist counts as revoked.
    @discardableResult
    package func revoke(_ id: String, now: Timestamp, force: Bool = false) throws(CofferError) -> CofferError? {
        var batch = RevocationBatch()
        defer { release(batch) }
        let outcome = try revoke(id, ifDueAt: nil, now: now, force: force, into: &batch)
        try commit(&batch)
        if case .failed(let error) = outcome { return error }
        return nil
    }

    /// Revokes many leases, committing the deletions of those revoked together (one storage
    /// transaction per ``RevocationBatch/limit``, not one per lease: a durable commit costs more than
    /// dropping a database user). A crash before a commit leaves leases whose secret is gone; they are
    /// revoked again later, and revocation is idempotent. Many leases are revoked by up to
    /// ``revocationWorkers`` threads at once (the database engine's pool holds 4 connections by
    /// default): a revocation mostly waits for the database's commit.
    private func revokeMany(
        _ items: [(id: String, dueKey: String?)],
        now: Timestamp,
        force: Bool = false
    ) throws(CofferError) -> (revoked: Int, failed: [(id: String, error: CofferError)]) {
        let workers = min(LeaseManager.revocationWorkers, items.count / 8 + 1)
        guard workers > 1 else { return try revokeInOrder(items, now: now, force: force, record: true) }
        // Revocations at once can collide in the database (PostgreSQL refuses two concurrent REVOKEs
        // on one table: "tuple concurrently updated"). What fails here is tried once more, alone,
        // before it counts as a failure.
        let results = Mutex<[Result<(revoked: Int, failed: [(id: String, error: CofferError)]), CofferError>]>([])
        runConcurrently(workers) { worker in
            let mine = stride(from: worker, to: items.count, by: workers).map { items[$0] }
            let outcome = Result { () throws(CofferError) in
                try self.revokeInOrder(mine, now: now, force: force, record: false)
            }
            results.withLock { $0.append(outcome) }
        }
        var revoked = 0
        var failed: [(id: String, error: CofferError)] = []
        for result in results.withLock({ $0 }) {
            let outcome = try result.get()
            revoked += outcome.revoked
            failed += outcome.failed
        }
        // Forced ones are gone already, and reported as they are.
        guard !force else { return (revoked, failed.sorted { $0.id < $1.id }) }
        let dueKeys = Dictionary(items.map { ($0.id, $0.dueKey) }, uniquingKeysWith: { first, _ in first })
        let retry = failed.map { (id: $0.id, dueKey: dueKeys[$0.id] ?? nil) }
        let second = try revokeInOrder(retry, now: now, force: force, record: true)
        return (revoked + second.revoked, second.failed.sorted { $0.id < $1.id })
    }

    /// Revokes `items` one after the other on this thread; a failure is recorded on its lease (and
    /// retried later) only when `record`.
    private func revokeInOrder(
        _ items: [(id: String, dueKey: String?)],
        now: Timestamp,
        force: Bool,
        record: Bool
    ) throws(CofferError) -> (revoked: Int, failed: [(id: String, error: CofferError)]) {
        var batch = RevocationBatch()
        defer { release(batch) }
        var revoked = 0
        var failed: [(id: String, error: CofferError)] = []
        for item in items {
            let outcome = try revoke(
                item.id,
                ifDueAt: item.dueKey,
                now: now,
                force: force,
                record: record,
                into: &batch
            )
            switch outcome {
            case .revoked: revoked += 1
            case .failed(let error): failed.append((item.id, error))
            case .skipped: break
            }
            if batch.deletions.count >= RevocationBatch.limit { try commit(&batch) }
        }
        try commit(&batch)
        return (revoked, failed)
    }

    /// How many threads revoke at once.
    static let revocationWorkers = 4

    /// Leases revoked whose deletion is not stored yet: claimed (in ``inFlight``) until it is.
    private struct RevocationBatch {
        static let limit = 256
        var deletions: [StorageOperation] = []
        var claimed: [String] = []
    }

    private enum RevocationOutcome {
        case revoked, skipped
        case failed(CofferError)
    }

    private func revoke(
        _ id: String,
        ifDueAt dueKey: String?,
        now: Timestamp,
        force: Bool,
        record: Bool = true,
        into batch: inout RevocationBatch
    ) throws(CofferError) -> RevocationOutcome {
        guard inFlight.withLock({ $0.insert(id).inserted }) else {
            return .failed(CofferError(.conflict, "the lease is being revoked by another request"))
        }
        batch.claimed.append(id)
        // A due row no lease claims any more (a renewal moved the lease, or a revocation was cut
        // short after the lease went) is dropped with the batch.
        guard let entry = try load(id), dueKey == nil || entry.dueKey == dueKey else {
            if let dueKey { batch.deletions.append(.delete(key: dueKey)) }
            return .skipped
        }
        var failure: CofferError?
        if let mount = mount(of: entry) {
            do throws(CofferError) {
                try secretType(of: entry, in: mount).revoke(
                    secretRequest(entry, mount, expireTime: entry.expireTime, now: now)
                )
            } catch {
                failure = error
            }
        } else {
            failure = CofferError(.unavailable, "the mount that issued this lease is gone")
        }
        if failure == nil || force {
            // Claimed, so nothing else changed the entry since it was loaded.
            batch.deletions += ([LeaseManager.idPrefix + id, entry.dueKey] + indexKeys(entry)).map { .delete(key: $0) }
            return failure.map { .failed($0) } ?? .revoked
        }
        if record { try recordFailure(id, failure!, now: now) }
        return .failed(failure!)
    }

    private func commit(_ batch: inout RevocationBatch) throws(CofferError) {
        guard !batch.deletions.isEmpty else { return }
        let deletions = batch.deletions
        try withWriteLock { () throws(CofferError) in try barrier.batch(deletions) }
        let removed = deletions.compactMap(LeaseManager.deletedLeaseID)
        core.quotas.leasesRemoved(removed)
        core.publishLeasesRevoked(removed)
        batch.deletions = []
        release(batch)
        batch.claimed = []
    }

    /// The lease a deletion of its `sys/expire/id/` row removes (for lease-count quotas).
    private static func deletedLeaseID(_ operation: StorageOperation) -> String? {
        guard case .delete(let key) = operation, key.hasPrefix(idPrefix) else { return nil }
        return String(key.dropFirst(idPrefix.count))
    }

    private func release(_ batch: RevocationBatch) {
        guard !batch.claimed.isEmpty else { return }
        inFlight.withLock { claims in for id in batch.claimed { claims.remove(id) } }
    }

    /// Stores `entry` with its due row moved to `time` (and its other index rows written again when
    /// `indexes`: a first failure adds the failing row). The caller holds the write lock.
    private func store(_ entry: inout LeaseEntry, dueAt time: Timestamp, indexes: Bool = false) throws(CofferError) {
        let id = Array(entry.id.utf8)
        let oldKey = entry.dueKey
        entry.dueKey = DueIndex.key(time)
        var ops: [StorageOperation] = [
            .put(key: LeaseManager.idPrefix + entry.id, value: entry.json.serialized()), .delete(key: oldKey),
            .put(key: entry.dueKey, value: id),
        ]
        if indexes { ops += indexKeys(entry).map { .put(key: $0, value: id) } }
        try barrier.batch(ops)
    }

    /// Counts a failed attempt and schedules the next: 1 s after the first failure, doubling up to
    /// ``maximumBackoff``, less up to a quarter at random so that many failing leases spread out.
    private func recordFailure(_ id: String, _ error: CofferError, now: Timestamp) throws(CofferError) {
        let next: Timestamp? = try withWriteLock { () throws(CofferError) -> Timestamp? in
            guard var entry = try load(id) else { return nil }
            entry.revokeAttempts += 1
            entry.revokeError = error.message
            let exponent = min(entry.revokeAttempts - 1, 20)
            let backoff = min(Int64(1) << exponent, LeaseManager.maximumBackoff)
            let jitter = backoff > 1 ? Int64(Random.bytes(1)[0]) * (backoff / 4) / 255 : 0
            let next = now.adding(seconds: backoff - jitter)
            try store(&entry, dueAt: next, indexes: entry.revokeAttempts == 1)
            return next
        }
        if let next { noteDue(next) }
    }

    /// Every lease id under `prefix` ("" for all), sorted.
    package func ids(prefix: String) throws(CofferError) -> [String] {
        try barrier.physical.listRecursive(prefix: LeaseManager.idPrefix + prefix).map {
            String($0.dropFirst(LeaseManager.idPrefix.count))
        }
    }

    /// Revokes every lease under `prefix`. Returns the leases whose revocation failed, with why
    /// (with `force` they are deleted all the same: what they stood for was left behind).
    package func revokePrefix(
        _ prefix: String,
        now: Timestamp,
        force: Bool = false
    ) throws(CofferError) -> [(id: String, error: CofferError)] {
        try revokeMany(try ids(prefix: prefix).map { ($0, nil) }, now: now, force: force).failed
    }

    /// Revokes every lease a mount issued, wherever the mount has moved since (its unmount).
    package func revokeMount(_ uuid: String, now: Timestamp) throws(CofferError) -> [(id: String, error: CofferError)] {
        try revokeMany(try indexedIDs(LeaseManager.mountPrefix + uuid + "/").map { ($0, nil) }, now: now).failed
    }

    /// The lease ids an index folder names.
    private func indexedIDs(_ folder: String) throws(CofferError) -> [String] {
        var ids: [String] = []
        for child in try barrier.list(folder) where !child.hasSuffix("/") {
            if let bytes = try barrier.get(folder + child) { ids.append(String(decoding: bytes, as: UTF8.self)) }
        }
        return ids
    }

    /// The leases whose revocation is failing (OpenBao's "irrevocable" leases, which it gives up on;
    /// Coffer keeps retrying them): id, issuing mount's accessor, last error.
    package func failing() throws(CofferError) -> [(id: String, mountAccessor: String, error: String)] {
        let mounts = core.allRoutedMounts()
        var out: [(id: String, mountAccessor: String, error: String)] = []
        for id in try indexedIDs(LeaseManager.failingPrefix) {
            guard let entry = try load(id) else { continue }
            let accessor = mounts.first { $0.entry.uuid == entry.mountUUID }?.entry.accessor ?? entry.mountUUID
            out.append((id, accessor, entry.revokeError))
        }
        return out.sorted { $0.id < $1.id }
    }

    /// Makes the leases under `prefix` due now, for the next tick (`sync: false` revocations).
    package func scheduleRevocation(prefix: String, exact: Bool, now: Timestamp) throws(CofferError) {
        let ids: [String] = exact ? [prefix] : try ids(prefix: prefix)
        for id in ids {
            try withWriteLock { () throws(CofferError) in
                guard var entry = try load(id) else { return }
                try store(&entry, dueAt: now)
            }
        }
        noteDue(now)
    }

    // MARK: Tokens

    /// Told of every token revoked (inside the token store's lock): its leases are revoked at the
    /// next ``drainRevokedTokens(now:)``, which the request that revoked it runs before answering.
    func tokenRevoked(_ hash: String) {
        revokedTokens.withLock { $0.append(hash) }
        hasRevokedTokens.store(true, ordering: .releasing)
    }

    /// The due row that has a token with a TTL revoked (with its leases) on time even if no request
    /// ever presents it again; the token store writes it with the token's entry.
    func tokenExpiryRow(_ hash: String, at time: Timestamp) -> StorageOperation {
        noteDue(time)  // early if the write fails: a pass then finds nothing and reads the index again
        return .put(key: DueIndex.key(time), value: Array(("t:" + hash).utf8))
    }

    /// Revokes the leases of the tokens revoked since the last call.
    package func drainRevokedTokens(now: Timestamp) {
        guard hasRevokedTokens.load(ordering: .acquiring) else { return }
        let hashes = revokedTokens.withLock { pending in
            defer { pending = [] }
            hasRevokedTokens.store(false, ordering: .releasing)
            return pending
        }
        for hash in hashes {
            guard let ids = try? indexedIDs(LeaseManager.tokenPrefix + hash + "/") else { continue }
            _ = try? revokeMany(ids.map { ($0, nil) }, now: now)
        }
    }

    /// Revokes the leases whose token no longer exists (`sys/leases/tidy`); returns how many leases
    /// were scanned and how many of them were revoked.
    package func tidy(now: Timestamp) throws(CofferError) -> (scanned: Int, revoked: Int) {
        var scanned = 0
        var revoked = 0
        for hash in try barrier.list(LeaseManager.tokenPrefix) where hash.hasSuffix("/") {
            let tokenHash = String(hash.dropLast())
            let leases = try barrier.list(LeaseManager.tokenPrefix + hash)
            scanned += leases.count
            guard try core.tokens.entry(hash: tokenHash) == nil else { continue }
            for child in leases {
                guard let bytes = try barrier.get(LeaseManager.tokenPrefix + hash + child) else { continue }
                let id = String(decoding: bytes, as: UTF8.self)
                if try load(id) == nil {
                    try barrier.delete(LeaseManager.tokenPrefix + hash + child)
                } else if try revoke(id, now: now) == nil {
                    revoked += 1
                }
            }
        }
        return (scanned, revoked)
    }

    // MARK: Expiry

    /// Does what is due at `now`: revokes the leases of revoked tokens, revokes the tokens and leases
    /// whose time has come and retries failed revocations that are due, up to ``batchLimit`` rows.
    /// Cheap when nothing is due (a comparison with the earliest due time in memory).
    @discardableResult
    package func tick(now: Timestamp) -> LeaseExpiryReport {
        var report = LeaseExpiryReport()
        // A standby's replica is revoked by the active node's passes; it waits until it is active.
        guard !barrier.isSealed, !core.isStandby else { return report }
        drainRevokedTokens(now: now)
        runPeriodic(now: now)
        if let due = nextDue.withLock({ $0 }), due > now { return report }
        guard let rows = try? dueRows(now: now) else { return report }
        var due: [(id: String, dueKey: String?)] = []
        var stale: [StorageOperation] = []
        for key in rows {
            guard let bytes = try? barrier.get(key) else { continue }
            let value = String(decoding: bytes, as: UTF8.self)
            if value.hasPrefix("t:") {
                let hash = String(value.dropFirst(2))
                if let entry = try? core.tokens.entry(hash: hash), entry.isExpired(now: now) {
                    _ = try? core.tokens.live(entry, now: now)
                    report.tokensExpired += 1
                }
                stale.append(.delete(key: key))
            } else {
                due.append((value, key))
            }
        }
        if !stale.isEmpty { try? barrier.batch(stale) }
        if let outcome = try? revokeMany(due, now: now) {
            report.revoked = outcome.revoked
            report.failed = outcome.failed.count
        } else {
            report.failed = due.count
        }
        drainRevokedTokens(now: now)
        let earliest = (try? earliestDue()) ?? nil
        nextDue.withLock { $0 = earliest ?? Timestamp(nanoseconds: .max) }
        return report
    }

    /// Mounts' scheduled work, at most once a second.
    private func runPeriodic(now: Timestamp) {
        let due = lastPeriodic.withLock { last in
            guard last.seconds(until: now) >= 1 || now < last else { return false }
            last = now
            return true
        }
        guard due else { return }
        let core = self.core
        for mount in core.allRoutedMounts() {
            mount.backend.periodic(storage: mount.storage, mount: mount.entry, system: core, now: now)
        }
    }

    /// The index rows due at `now`, oldest first, at most ``batchLimit``.
    private func dueRows(now: Timestamp) throws(CofferError) -> [String] {
        var rows: [String] = []
        let seconds = max(0, now.nanoseconds) / 1_000_000_000
        for hour in try barrier.list(DueIndex.prefix) {
            guard let h = Int64(hour.dropLast()), h <= seconds / 3600 else { break }
            for minute in try barrier.list(DueIndex.prefix + hour) {
                guard let m = Int64(minute.dropLast()), m <= seconds / 60 else { break }
                // Only as many as the batch takes: a minute may hold a million rows.
                for row in try barrier.list(
                    DueIndex.prefix + hour + minute,
                    limit: LeaseManager.batchLimit - rows.count
                ) {
                    guard let time = DueIndex.time(ofRow: row), time <= now else { return rows }
                    rows.append(DueIndex.prefix + hour + minute + row)
                    if rows.count >= LeaseManager.batchLimit { return rows }
                }
            }
        }
        return rows
    }

    /// The time of the first row of the index, nil when it is empty.
    private func earliestDue() throws(CofferError) -> Timestamp? {
        guard let hour = try barrier.list(DueIndex.prefix, limit: 1).first,
            let minute = try barrier.list(DueIndex.prefix + hour, limit: 1).first,
            let row = try barrier.list(DueIndex.prefix + hour + minute, limit: 1).first
        else { return nil }
        return DueIndex.time(ofRow: row)
    }
}

/// The thread that runs a vault's expiration manager on the system clock: it checks what is due
/// every ``interval`` and stops when the vault closes.
package final class LeaseRunner: Sendable {
    /// How often the runner looks at the clock, in milliseconds.
    static let interval: UInt32 = 100
    private let stopped = Atomic<Bool>(false)
    private let thread = Mutex<pthread_t?>(nil)

    package init(_ leases: LeaseManager, clock: any WallClock) {
        let started = startThread(detached: false) { [self, weak leases] in
            while !stopped.load(ordering: .acquiring) {
                usleep(Self.interval * 1000)
                guard !stopped.load(ordering: .acquiring), let leases else { return }
                leases.tick(now: clock.now())
            }
        }
        thread.withLock { $0 = started }
    }

    /// Stops the thread and returns once the pass it is in has finished, so that nothing of the
    /// expiration manager (or a mount's periodic work, such as a KV rotation) runs while the vault
    /// seals and closes its storage.
    package func stop() {
        stopped.store(true, ordering: .releasing)
        guard
            let running = thread.withLock({ current in
                defer { current = nil }
                return current
            })
        else { return }
        if pthread_equal(running, pthread_self()) != 0 {
            pthread_detach(running)
        } else {
            pthread_join(running, nil)
        }
    }
}

extension Timestamp {
    fileprivate func nanosecondsUntil(_ later: Timestamp) -> Int64 {
        later.nanoseconds.subtractingReportingOverflow(nanoseconds).overflow
            ? (later < self ? .min : .max) : later.nanoseconds - nanoseconds
    }
}

extension Int64 {
    /// Nanoseconds as whole seconds, rounded half up.
    fileprivate var roundedSeconds: Int64 {
        self >= Int64.max - 500_000_000 ? self / 1_000_000_000 : (self + 500_000_000) / 1_000_000_000
    }
}

/// What one pass of the expiration manager did (``Vault/expireLeases()``).
public struct LeaseExpiryReport: Sendable, Equatable {
    /// Leases whose secret was revoked.
    public var revoked = 0
    /// Revocations that failed; those leases are retried later.
    public var failed = 0
    /// Tokens revoked because their TTL ran out (their leases go with them).
    public var tokensExpired = 0

    public init() {}
}
