import CofferAudit
package import CofferCore
import CofferFramework
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the quota check decided for one request, and what the HTTP layer sends back with it.
package struct QuotaOutcome: Sendable, Equatable {
    package var limit = 0
    package var remaining = 0
    /// Whole seconds left in the current window (`X-Ratelimit-Reset`).
    package var reset = 0
    /// Set on a refusal: whole seconds to wait (`Retry-After`).
    package var retryAfter: Int?
    /// Refused while blocked (`block_interval`): as in OpenBao, only `Retry-After` is sent.
    package var blocked = false
    /// `enable_rate_limit_response_headers`.
    package var headersEnabled = true
    /// Whether a rate-limit rule decided (a lease-count refusal carries no `X-Ratelimit-*`).
    package var rateLimited = true
    /// The error a refused request fails with.
    package var refusal: CofferError?

    /// The response headers, in OpenBao's names; none when the config turns them off.
    package var headers: [(String, String)] {
        guard headersEnabled else { return [] }
        var out: [(String, String)] = []
        if rateLimited, !blocked {
            out += [
                ("X-Ratelimit-Limit", String(limit)), ("X-Ratelimit-Remaining", String(remaining)),
                ("X-Ratelimit-Reset", String(reset)),
            ]
        }
        if let retryAfter { out.append(("Retry-After", String(retryAfter))) }
        return out
    }
}

/// Rate-limit and lease-count quotas: their rules (in the barrier under `sys/quotas/`), an
/// immutable snapshot of them for the request path, and the buckets.
///
/// When no quota exists the request path pays one relaxed atomic load (``active``): no lock, no
/// allocation. With quotas, one lock around the buckets of the rules that apply.
package final class QuotaManager: Sendable {
    /// False while sealed and while no rule exists: the one thing every request reads.
    let active = Atomic<Bool>(false)
    /// True when some lease-count rule exists (LeaseManager asks on every register and revoke).
    let countsLeases = Atomic<Bool>(false)
    /// Whether any rule is in force (for tests and tools; the request path reads ``active`` itself).
    package var isActive: Bool { active.load(ordering: .relaxed) }
    let current = Mutex<Snapshot?>(nil)
    /// Serialises rule changes against each other (and against load/unload).
    let writes = Mutex(())
    /// The thread inside ``writes`` (0: none): the storage change feed calls back on the writing
    /// thread, and a change this manager makes is rebuilt by the write itself.
    private let writer = Atomic<UInt>(0)
    /// Where the rules and the config live in the barrier.
    static let storagePrefix = "sys/quotas/"
    /// `quota.rate_limit.violation` by quota name.
    let violations = Mutex<[String: UInt64]>([:])
    nonisolated(unsafe) private weak var owner: Core?

    func attach(_ core: Core) { owner = core }

    /// The rules in force, and the mutable state of their buckets and lease counts.
    final class Snapshot: Sendable {
        let config: QuotaConfig
        /// Longest path first, role rules before others on the same path.
        let rate: [RateLimitQuota]
        /// The rate rules by path and role, in the same order: the first group that covers a request
        /// is the most specific, and every rule of it applies.
        let groups: [Group]
        /// Each rate rule's numbers, in the same order (no strings to retain on the request path).
        let limits: [Limit]
        /// Auth mounts with role rules: only their logins need the role looked up.
        let roleMounts: Set<String>
        let exemptExact: [String]
        let exemptPrefixes: [String]
        let leaseCount: [LeaseCountQuota]
        let buckets = Mutex<[BucketKey: Bucket]>([:])
        /// Live leases under each lease-count rule, by rule name.
        let leases: Mutex<[String: Int]>

        init(config: QuotaConfig, rate: [RateLimitQuota], leaseCount: [LeaseCountQuota], counts: [String: Int]) {
            self.config = config
            let rate = rate.sorted {
                ($0.path.utf8.count, $0.path, $0.role.isEmpty ? 0 : 1, $0.role, $0.name) > (
                    $1.path.utf8.count, $1.path, $1.role.isEmpty ? 0 : 1, $1.role, $1.name
                )
            }
            self.rate = rate
            var groups: [Group] = []
            for (index, rule) in rate.enumerated() {
                if let last = groups.last, last.path == rule.path, last.role == rule.role {
                    groups[groups.count - 1].rules.append(index)
                    groups[groups.count - 1].byEntity = last.byEntity || rule.keyBy == .entity
                } else {
                    groups.append(
                        Group(path: rule.path, role: rule.role, rules: [index], byEntity: rule.keyBy == .entity)
                    )
                }
            }
            self.groups = groups
            limits = rate.map {
                Limit(
                    tokens: $0.tokens,
                    windowNanos: $0.interval * 1_000_000_000,
                    blockNanos: $0.blockInterval * 1_000_000_000,
                    keyBy: $0.keyBy
                )
            }
            roleMounts = Set(rate.filter { !$0.role.isEmpty }.map(\.path))
            var exact: [String] = []
            var prefixes: [String] = []
            for entry in config.exemptPaths {
                if entry.hasSuffix("*") {
                    prefixes.append(String(entry.dropLast()))
                } else {
                    exact.append(entry)
                    if entry.hasSuffix("/") { exact.append(String(entry.dropLast())) }
                }
            }
            exemptExact = exact
            exemptPrefixes = prefixes
            self.leaseCount = leaseCount.sorted { ($0.path.utf8.count, $0.name) > ($1.path.utf8.count, $1.name) }
            self.leases = Mutex(counts)
        }

        /// Whether `path` is exempt: an entry names it exactly, or ends in `*` and is a prefix of it.
        func isExempt(_ path: String) -> Bool {
            // Lengths first: most paths match no entry's length, and the count of a native string is stored.
            let count = path.utf8.count
            return exemptExact.contains { $0.utf8.count == count && $0 == path }
                || exemptPrefixes.contains { path.hasPrefix($0) }
        }
    }

    struct Limit: Sendable {
        var tokens: Int
        var windowNanos: Int64
        var blockNanos: Int64
        var keyBy: QuotaKey
    }

    struct Group: Sendable {
        var path: String
        var role: String
        var rules: [Int]
        /// Whether a rule keys its buckets by entity (the token is looked up once for the group).
        var byEntity: Bool
    }

    struct BucketKey: Hashable, Sendable {
        var rule: Int
        var client: String
    }

    /// OpenBao's limiter (go-limiter's memory store): a fixed window of `interval` from the first
    /// request, refilled in full at each window's start.
    struct Bucket: Sendable {
        var start: Int64
        var tick: Int64 = 0
        var available: Int
        var blockedAt: Int64?
    }

    /// Buckets kept before the idle ones are dropped.
    static let bucketSweepThreshold = 10_000

    // MARK: Loading

    private var barrier: Barrier { owner!.barrier }

    /// Reads the rules from the barrier (after unseal) and counts the leases under lease-count rules.
    func load() throws(CofferError) {
        try locked { () throws(CofferError) in try rebuild() }
    }

    /// Runs `body` under ``writes``, noting this thread as the writer.
    private func locked(_ body: () throws(CofferError) -> Void) throws(CofferError) {
        let result: Result<Void, CofferError> = writes.withLock { _ in
            writer.store(UInt(pthread_self()), ordering: .relaxed)
            defer { writer.store(0, ordering: .relaxed) }
            return Result { () throws(CofferError) in try body() }
        }
        try result.get()
    }

    /// A key under `sys/quotas/` changed in storage. A change from beneath this core (another core
    /// over the same storage, a replica) is loaded; this manager's own writes rebuild by themselves.
    func storageChanged() {
        guard writer.load(ordering: .relaxed) != UInt(pthread_self()) else { return }
        guard current.withLock({ $0 }) != nil else { return }
        try? locked { () throws(CofferError) in try rebuild() }
    }

    func unload() {
        writes.withLock { _ in
            active.store(false, ordering: .relaxed)
            countsLeases.store(false, ordering: .relaxed)
            current.withLock { $0 = nil }
        }
    }

    /// Builds a new snapshot from storage. The caller holds `writes`. A new or changed rule's buckets
    /// start full.
    private func rebuild() throws(CofferError) {
        let config = try storedConfig()
        var rate: [RateLimitQuota] = []
        for name in try barrier.list(RateLimitQuota.prefix) {
            if let rule = try storedRate(name) { rate.append(rule) }
        }
        var leaseRules: [LeaseCountQuota] = []
        var counts: [String: Int] = [:]
        for name in try barrier.list(LeaseCountQuota.prefix) {
            guard let rule = try storedLeaseCount(name) else { continue }
            leaseRules.append(rule)
            counts[rule.name] = try countLeases(under: rule.path)
        }
        let snapshot = Snapshot(config: config, rate: rate, leaseCount: leaseRules, counts: counts)
        // Rules that did not change keep their buckets (a config change or another rule's write
        // does not refill anyone's window).
        if let old = current.withLock({ $0 }) {
            var moved: [Int: Int] = [:]
            for (index, rule) in old.rate.enumerated() {
                if let new = snapshot.rate.firstIndex(of: rule) { moved[index] = new }
            }
            let kept = old.buckets.withLock { buckets in
                buckets.compactMap { key, bucket in
                    moved[key.rule].map { (BucketKey(rule: $0, client: key.client), bucket) }
                }
            }
            snapshot.buckets.withLock { $0 = Dictionary(kept) { first, _ in first } }
        }
        current.withLock { $0 = snapshot }
        countsLeases.store(!leaseRules.isEmpty, ordering: .relaxed)
        active.store(!rate.isEmpty || !leaseRules.isEmpty, ordering: .relaxed)
    }

    /// The live leases whose id lies under `path` (one scan, when a rule is made or loaded).
    private func countLeases(under path: String) throws(CofferError) -> Int {
        guard let core = owner else { return 0 }
        return try core.leases.ids(prefix: path).filter { QuotaRules.covers(path, $0) }.count
    }

    func storedConfig() throws(CofferError) -> QuotaConfig {
        guard let bytes = try barrier.get(QuotaConfig.path) else { return QuotaConfig() }
        guard let json = try? JSONValue.parse(bytes) else {
            throw CofferError(.corruptDatabase, "the quota configuration (\(QuotaConfig.path)) is not valid JSON")
        }
        return QuotaConfig(json: json)
    }

    func storedRate(_ name: String) throws(CofferError) -> RateLimitQuota? {
        guard let bytes = try barrier.get(RateLimitQuota.prefix + name) else { return nil }
        guard let json = try? JSONValue.parse(bytes), let rule = RateLimitQuota(json: json) else {
            throw CofferError(.corruptDatabase, "the rate-limit quota \(name) is not valid in storage")
        }
        return rule
    }

    func storedLeaseCount(_ name: String) throws(CofferError) -> LeaseCountQuota? {
        guard let bytes = try barrier.get(LeaseCountQuota.prefix + name) else { return nil }
        guard let json = try? JSONValue.parse(bytes), let rule = LeaseCountQuota(json: json) else {
            throw CofferError(.corruptDatabase, "the lease-count quota \(name) is not valid in storage")
        }
        return rule
    }

    // MARK: Changing rules

    func writeConfig(_ config: QuotaConfig) throws(CofferError) {
        try locked { () throws(CofferError) in
            try barrier.put(QuotaConfig.path, config.json.serialized())
            try rebuild()
        }
    }

    /// Stores `rule` (replacing one of the same name) unless another rule is its exact twin.
    func writeRate(_ rule: RateLimitQuota) throws(CofferError) {
        try locked { () throws(CofferError) in
            for name in try barrier.list(RateLimitQuota.prefix) where name != rule.name {
                guard let other = try storedRate(name) else { continue }
                if other.path == rule.path, other.role == rule.role, other.interval == rule.interval,
                    other.tokens == rule.tokens, other.keyBy == rule.keyBy
                {
                    throw CofferError.invalid("quota rule with similar properties exists under the name \"\(name)\"")
                }
            }
            try barrier.put(RateLimitQuota.prefix + rule.name, rule.json.serialized())
            try rebuild()
        }
    }

    func writeLeaseCount(_ rule: LeaseCountQuota) throws(CofferError) {
        try locked { () throws(CofferError) in
            for name in try barrier.list(LeaseCountQuota.prefix) where name != rule.name {
                guard let other = try storedLeaseCount(name) else { continue }
                if other.path == rule.path {
                    throw CofferError.invalid("quota rule with similar properties exists under the name \"\(name)\"")
                }
            }
            try barrier.put(LeaseCountQuota.prefix + rule.name, rule.json.serialized())
            try rebuild()
        }
    }

    func delete(_ prefix: String, _ name: String) throws(CofferError) {
        try locked { () throws(CofferError) in
            try barrier.delete(prefix + name)
            try rebuild()
        }
    }

    /// The current config, or what storage holds while no snapshot is loaded.
    var config: QuotaConfig { current.withLock { $0?.config } ?? QuotaConfig() }

    /// Counted refusals by quota name (`quota.rate_limit.violation`).
    package func violationCounts() -> [(String, UInt64)] {
        violations.withLock { $0.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }

    // MARK: The request path

    /// Decides a request. Nil when no rule applies (or the path is exempt). `login` says whether the
    /// request is an auth method's unauthenticated (login) path, where role rules apply.
    func check(
        _ request: Request,
        mount: RoutedMount,
        login: Bool,
        now: Timestamp
    ) -> QuotaOutcome? {
        guard let snapshot = current.withLock({ $0 }) else { return nil }
        let config = snapshot.config
        if snapshot.isExempt(request.path) { return nil }
        let full = Self.fullPath(request)
        if let refusal = leaseCountRefusal(snapshot, request, full) {
            refuse(request, refusal, config: config, now: now)
            return QuotaOutcome(headersEnabled: config.responseHeaders, rateLimited: false, refusal: refusal)
        }
        // The role is looked up only when a role rule could apply (AppRole reads storage for it).
        var role: String?
        if login, mount.kind == .auth, snapshot.roleMounts.contains(mount.prefix) {
            role = mount.backend.loginRole(request.data, storage: mount.storage)
        }
        // The most specific rules: the longest path that covers the request, a role rule before a plain one.
        var found: Int?
        for (index, group) in snapshot.groups.enumerated() {
            if !group.role.isEmpty, group.role != role { continue }
            if QuotaRules.covers(group.path, full) {
                found = index
                break
            }
        }
        guard let found else { return nil }
        let group = snapshot.groups[found]
        let entity = group.byEntity ? entityKey(request) : ""
        let outcome =
            group.rules.count == 1
            ? takeOne(snapshot, group.rules[0], address: request.clientAddress, entity: entity, now: now)
            : take(snapshot, group.rules, address: request.clientAddress, entity: entity, now: now)
        guard outcome.outcome.retryAfter == nil else {
            let error = CofferError(
                .rateLimited,
                "request path \"\(request.path)\": rate limit quota exceeded",
                retryAfter: outcome.outcome.retryAfter
            )
            violations.withLock { for name in outcome.refusedBy { $0[name, default: 0] += 1 } }
            refuse(request, error, config: config, now: now)
            var refused = outcome.outcome
            refused.headersEnabled = config.responseHeaders
            refused.refusal = error
            return refused
        }
        var admitted = outcome.outcome
        admitted.headersEnabled = config.responseHeaders
        return admitted
    }

    /// ``take(_:_:address:entity:now:)`` for one rule, the common case: one dictionary access, in place.
    private func takeOne(
        _ snapshot: Snapshot,
        _ index: Int,
        address: String,
        entity: String,
        now: Timestamp
    ) -> (outcome: QuotaOutcome, refusedBy: [String]) {
        let limit = snapshot.limits[index]
        let client: String
        switch limit.keyBy {
        case .clientAddress: client = address
        case .entity: client = entity
        case .shared: client = ""
        }
        let nanos = now.nanoseconds
        let outcome = snapshot.buckets.withLock { buckets in
            if buckets.count > Self.bucketSweepThreshold { Self.sweep(&buckets, snapshot, now: nanos) }
            return Self.admit(
                &buckets[
                    BucketKey(rule: index, client: client),
                    default: Bucket(start: nanos, available: limit.tokens)
                ],
                limit,
                nanos
            )
        }
        return (outcome, outcome.retryAfter == nil ? [] : [snapshot.rate[index].name])
    }

    /// One bucket's decision: blocked, refill at a new window, refuse (and block) or take one.
    private static func admit(_ bucket: inout Bucket, _ limit: Limit, _ nanos: Int64) -> QuotaOutcome {
        if let blockedAt = bucket.blockedAt {
            let until = blockedAt &+ limit.blockNanos
            if nanos < until { return QuotaOutcome(retryAfter: wholeSeconds(until &- nanos), blocked: true) }
            bucket.blockedAt = nil
        }
        let tick = max(0, (nanos &- bucket.start) / limit.windowNanos)
        if tick > bucket.tick {
            bucket.tick = tick
            bucket.available = limit.tokens
        }
        let reset = wholeSeconds(bucket.start &+ (tick + 1) &* limit.windowNanos &- nanos)
        guard bucket.available > 0 else {
            var retry = reset
            if limit.blockNanos > 0 {
                bucket.blockedAt = nanos
                retry = max(retry, wholeSeconds(limit.blockNanos))
            }
            return QuotaOutcome(limit: limit.tokens, remaining: 0, reset: reset, retryAfter: retry)
        }
        bucket.available -= 1
        return QuotaOutcome(limit: limit.tokens, remaining: bucket.available, reset: reset)
    }

    /// Takes one request from every chosen bucket, or from none: a request every window admits
    /// is counted in each; one any window refuses is counted in none.
    private func take(
        _ snapshot: Snapshot,
        _ chosen: [Int],
        address: String,
        entity: String,
        now: Timestamp
    ) -> (outcome: QuotaOutcome, refusedBy: [String]) {
        func client(_ rule: RateLimitQuota) -> String {
            switch rule.keyBy {
            case .clientAddress: address
            case .entity: entity
            case .shared: ""
            }
        }
        let nanos = now.nanoseconds
        return snapshot.buckets.withLock { buckets in
            if buckets.count > Self.bucketSweepThreshold { Self.sweep(&buckets, snapshot, now: nanos) }
            var outcome = QuotaOutcome()
            var refusedBy: [String] = []
            var blockedRetry: Int?
            var refusedReset = 0
            var lowest = Int.max
            // First pass: refill and look; nothing is taken yet.
            for index in chosen {
                let rule = snapshot.rate[index]
                let key = BucketKey(rule: index, client: client(rule))
                var bucket = buckets[key] ?? Bucket(start: nanos, available: rule.tokens)
                let window = rule.interval * 1_000_000_000
                if let blockedAt = bucket.blockedAt {
                    let until = blockedAt &+ rule.blockInterval * 1_000_000_000
                    if nanos < until {
                        blockedRetry = max(blockedRetry ?? 0, Self.wholeSeconds(until &- nanos))
                        refusedBy.append(rule.name)
                        continue
                    }
                    bucket.blockedAt = nil
                }
                let tick = max(0, (nanos &- bucket.start) / window)
                if tick > bucket.tick {
                    bucket.tick = tick
                    bucket.available = rule.tokens
                }
                buckets[key] = bucket
                let reset = Self.wholeSeconds(bucket.start &+ (tick + 1) * window &- nanos)
                if bucket.available == 0 {
                    refusedBy.append(rule.name)
                    if reset >= refusedReset {
                        refusedReset = reset
                        outcome = QuotaOutcome(limit: rule.tokens, remaining: 0, reset: reset)
                    }
                    lowest = -1
                } else if lowest >= 0, bucket.available - 1 < lowest {
                    lowest = bucket.available - 1
                    outcome = QuotaOutcome(limit: rule.tokens, remaining: bucket.available - 1, reset: reset)
                }
            }
            if let blockedRetry {
                return (QuotaOutcome(retryAfter: blockedRetry, blocked: true), refusedBy)
            }
            if !refusedBy.isEmpty {
                // Refused: a rule with a block interval blocks this client from now on.
                var retry = refusedReset
                for index in chosen where refusedBy.contains(snapshot.rate[index].name) {
                    let rule = snapshot.rate[index]
                    guard rule.blockInterval > 0 else { continue }
                    buckets[BucketKey(rule: index, client: client(rule))]?.blockedAt = nanos
                    retry = max(retry, Self.wholeSeconds(rule.blockInterval * 1_000_000_000))
                }
                outcome.retryAfter = retry
                return (outcome, refusedBy)
            }
            for index in chosen {
                buckets[BucketKey(rule: index, client: client(snapshot.rate[index]))]?.available -= 1
            }
            return (outcome, [])
        }
    }

    /// Drops buckets whose window has ended and that are not blocking anyone.
    private static func sweep(_ buckets: inout [BucketKey: Bucket], _ snapshot: Snapshot, now: Int64) {
        buckets = buckets.filter { key, bucket in
            let rule = snapshot.rate[key.rule]
            if let blockedAt = bucket.blockedAt, now < blockedAt &+ rule.blockInterval * 1_000_000_000 { return true }
            return now < bucket.start &+ (bucket.tick + 1) * rule.interval * 1_000_000_000
        }
    }

    /// Seconds as OpenBao shows a time left: Go's `int(d.Seconds())` of a duration measured a
    /// moment after the start, so a fresh 20 s block shows 19 and a 1 s window 0.
    static func wholeSeconds(_ nanoseconds: Int64) -> Int {
        Int(max(0, nanoseconds &- 1) / 1_000_000_000)
    }

    /// The `entity` bucket of a request: its token's entity, else its accessor, else its address.
    private func entityKey(_ request: Request) -> String {
        guard let token = request.token, !token.isEmpty, let core = owner,
            let entry = try? core.tokens.lookup(token: token)
        else { return "address:" + request.clientAddress }
        return entry.entityID.isEmpty ? "accessor:" + entry.accessor : "entity:" + entry.entityID
    }

    /// "<namespace path>/<request path>": the path quota rules are matched against ("" for root).
    static func fullPath(_ request: Request) -> String {
        if request.namespace.isEmpty { return request.path }
        let namespace = request.namespace.split(separator: "/")
        if namespace.isEmpty || namespace == ["root"] { return request.path }
        return namespace.joined(separator: "/") + "/" + request.path
    }

    /// Records a refusal in the audit log when the config asks for it.
    private func refuse(_ request: Request, _ error: CofferError, config: QuotaConfig, now: Timestamp) {
        guard config.auditLogging, let core = owner else { return }
        var record = AuditRecord(request: request, caller: nil, time: now)
        record.requestError = error
        record.error = error
        core.audit.logRefused(record)
    }

    // MARK: Lease counts

    /// The refusal for a request under a full lease-count rule: one that could create a lease
    /// (anything but list and delete, which stay open so that a full path can be cleaned up).
    private func leaseCountRefusal(_ snapshot: Snapshot, _ request: Request, _ full: String) -> CofferError? {
        guard !snapshot.leaseCount.isEmpty, request.operation != .list, request.operation != .delete else {
            return nil
        }
        guard let rule = snapshot.leaseCount.first(where: { QuotaRules.covers($0.path, full) }) else { return nil }
        let count = snapshot.leases.withLock { $0[rule.name] ?? 0 }
        guard count >= rule.maxLeases else { return nil }
        return CofferError(
            .rateLimited,
            "request path \"\(request.path)\": lease count quota exceeded (\(rule.name) allows \(rule.maxLeases))"
        )
    }

    /// A lease was stored: counted under every lease-count rule that covers its id.
    func leaseRegistered(_ id: String) {
        guard countsLeases.load(ordering: .relaxed), let snapshot = current.withLock({ $0 }) else { return }
        snapshot.leases.withLock { counts in
            for rule in snapshot.leaseCount where QuotaRules.covers(rule.path, id) {
                counts[rule.name, default: 0] += 1
            }
        }
    }

    /// Leases were deleted (revoked or expired).
    func leasesRemoved(_ ids: [String]) {
        guard countsLeases.load(ordering: .relaxed), let snapshot = current.withLock({ $0 }) else { return }
        snapshot.leases.withLock { counts in
            for id in ids {
                for rule in snapshot.leaseCount where QuotaRules.covers(rule.path, id) {
                    counts[rule.name] = max(0, (counts[rule.name] ?? 0) - 1)
                }
            }
        }
    }

    /// Live leases counted under the lease-count rule `name` (for its read).
    func leaseCount(_ name: String) -> Int? {
        current.withLock { $0 }?.leases.withLock { $0[name] }
    }
}
