package import CofferAudit
package import CofferCore
package import CofferFramework
import Synchronization

/// A token as stored. The token itself is never stored: only its salted hash (HMAC-SHA256 under a
/// per-vault salt kept in the barrier), which is also the storage key, so a lookup compares digests
/// an attacker cannot choose, never the token bytes.
package struct TokenEntry: Sendable, Equatable {
    /// The fields, kept in one shared box: an entry is copied several times a request (the cache, the
    /// caller, the request), and a copy is one reference count instead of one per string and array
    /// (about 20 atomic operations). Copied on write.
    struct Fields: Sendable, Equatable {
        var idHash: String = ""
        var accessor: String = ""
        /// The parent's hash, or "" for an orphan.
        var parentHash: String = ""
        /// The parent's hash as the cache's key, made when `parentHash` is set: the parent check of
        /// every request finds the parent without decoding 64 hex digits.
        var parentKey: TokenCache.Key?
        var policies: [String] = []
        /// `policies` as the compiled-ACL cache's key, made when they are set.
        var policyNames = PolicyNames([])
        var meta: [String: String] = [:]
        var displayName: String = ""
        var path: String = ""
        var creationTime: Timestamp = .zero
        /// The TTL the token was created with (seconds; 0 = never expires).
        var creationTTL: Int64 = 0
        var explicitMaxTTL: Int64 = 0
        /// nil: never expires.
        var expireTime: Timestamp? = nil
        /// Uses left; 0 is unlimited.
        var numUses: Int = 0
        var period: Int64 = 0
        var renewable: Bool = false
        var issueTime: Timestamp = .zero
        /// CIDR blocks the token may be used from (empty: anywhere).
        var boundCIDRs: [String] = []
        /// The identity entity of whoever logged in ("" for tokens made by hand).
        var entityID = ""
        /// A batch token: not stored anywhere, the token is this entry encrypted (``TokenStore/createBatch(_:)``).
        /// It has no id hash, no accessor and no cubbyhole, cannot be renewed or revoked by itself, and
        /// dies with its TTL or its parent.
        var batch = false
        /// The longest life renewals may give a login token, from its creation (the role's
        /// `token_max_ttl` or the mount's max); 0: only the system maximum and `explicitMaxTTL` apply.
        var maxTTL: Int64 = 0
        /// The id of the namespace the token was made in ("" for root); its token and accessor end in
        /// `.<id>`, as OpenBao's do. It is usable there and in the namespaces inside.
        var namespaceID = ""
        /// A break-glass token, or a child of one (BreakGlass/): its requests are audited with the
        /// break-glass marker and reported. The request path tests only this flag.
        var breakGlass = false
    }

    private final class Box: @unchecked Sendable {
        // Mutated only through `mutableFields`, when this entry holds the only reference, so
        // exclusivity needs no checking at run time.
        @exclusivity(unchecked) var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var box = Box(Fields())

    private var mutableFields: Fields {
        _read { yield box.fields }
        _modify {
            if !isKnownUniquelyReferenced(&box) { box = Box(box.fields) }
            yield &box.fields
        }
    }

    package static func == (a: TokenEntry, b: TokenEntry) -> Bool { a.box === b.box || a.box.fields == b.box.fields }

    package var idHash: String {
        get { box.fields.idHash }
        set { mutableFields.idHash = newValue }
    }
    package var accessor: String {
        get { box.fields.accessor }
        set { mutableFields.accessor = newValue }
    }
    package var parentHash: String {
        get { box.fields.parentHash }
        set {
            mutableFields.parentHash = newValue
            mutableFields.parentKey = TokenCache.Key(hex: newValue)
        }
    }
    var parentKey: TokenCache.Key? { box.fields.parentKey }
    package var policies: [String] {
        get { box.fields.policies }
        set {
            mutableFields.policies = newValue
            mutableFields.policyNames = PolicyNames(newValue)
        }
    }
    var policyNames: PolicyNames { box.fields.policyNames }
    package var meta: [String: String] {
        get { box.fields.meta }
        set { mutableFields.meta = newValue }
    }
    package var displayName: String {
        get { box.fields.displayName }
        set { mutableFields.displayName = newValue }
    }
    package var path: String {
        get { box.fields.path }
        set { mutableFields.path = newValue }
    }
    package var creationTime: Timestamp {
        get { box.fields.creationTime }
        set { mutableFields.creationTime = newValue }
    }
    package var creationTTL: Int64 {
        get { box.fields.creationTTL }
        set { mutableFields.creationTTL = newValue }
    }
    package var explicitMaxTTL: Int64 {
        get { box.fields.explicitMaxTTL }
        set { mutableFields.explicitMaxTTL = newValue }
    }
    package var expireTime: Timestamp? {
        get { box.fields.expireTime }
        set { mutableFields.expireTime = newValue }
    }
    package var numUses: Int {
        get { box.fields.numUses }
        set { mutableFields.numUses = newValue }
    }
    package var period: Int64 {
        get { box.fields.period }
        set { mutableFields.period = newValue }
    }
    package var renewable: Bool {
        get { box.fields.renewable }
        set { mutableFields.renewable = newValue }
    }
    package var issueTime: Timestamp {
        get { box.fields.issueTime }
        set { mutableFields.issueTime = newValue }
    }
    package var boundCIDRs: [String] {
        get { box.fields.boundCIDRs }
        set { mutableFields.boundCIDRs = newValue }
    }
    package var maxTTL: Int64 {
        get { box.fields.maxTTL }
        set { mutableFields.maxTTL = newValue }
    }
    package var entityID: String {
        get { box.fields.entityID }
        set { mutableFields.entityID = newValue }
    }
    package var batch: Bool {
        get { box.fields.batch }
        set { mutableFields.batch = newValue }
    }
    package var namespaceID: String {
        get { box.fields.namespaceID }
        set { mutableFields.namespaceID = newValue }
    }
    package var breakGlass: Bool {
        get { box.fields.breakGlass }
        set { mutableFields.breakGlass = newValue }
    }

    package var isRoot: Bool { policies.contains("root") }
    package var orphan: Bool { parentHash.isEmpty }

    var json: JSONValue {
        var fields: [String: JSONValue] = [
            "id_hash": .string(idHash), "accessor": .string(accessor), "parent": .string(parentHash),
            "policies": .array(policies.map { .string($0) }), "meta": .object(meta.mapValues { .string($0) }),
            "display_name": .string(displayName), "path": .string(path),
            "creation_time": .number(String(creationTime.nanoseconds)), "creation_ttl": .int(creationTTL),
            "explicit_max_ttl": .int(explicitMaxTTL),
            "expire_time": expireTime.map { .number(String($0.nanoseconds)) } ?? .null, "num_uses": .int(numUses),
            "period": .int(period), "renewable": .bool(renewable), "issue_time": .number(String(issueTime.nanoseconds)),
            "bound_cidrs": .array(boundCIDRs.map { .string($0) }), "entity_id": .string(entityID),
            "batch": .bool(batch), "max_ttl": .int(maxTTL),
        ]
        // Stored only when set, so an ordinary token's entry is as it was before they existed.
        if !namespaceID.isEmpty { fields["namespace_id"] = .string(namespaceID) }
        if breakGlass { fields["break_glass"] = true }
        return .object(fields)
    }

    init(
        idHash: String,
        accessor: String,
        parentHash: String,
        policies: [String],
        meta: [String: String],
        displayName: String,
        path: String,
        now: Timestamp,
        ttl: Int64,
        explicitMaxTTL: Int64,
        numUses: Int,
        period: Int64,
        renewable: Bool
    ) {
        self.idHash = idHash
        self.accessor = accessor
        self.parentHash = parentHash
        self.policies = policies
        self.meta = meta
        self.displayName = displayName
        self.path = path
        self.creationTime = now
        self.issueTime = now
        self.creationTTL = ttl
        self.explicitMaxTTL = explicitMaxTTL
        self.expireTime = ttl > 0 ? now.adding(seconds: ttl) : nil
        self.numUses = numUses
        self.period = period
        self.renewable = renewable
    }

    init(json: JSONValue) throws(CofferError) {
        guard let idHash = json["id_hash"]?.stringValue, let accessor = json["accessor"]?.stringValue else {
            throw CofferError(.integrity, "a stored token entry is malformed")
        }
        func ts(_ key: String) -> Timestamp? {
            guard case .number(let text)? = json[key], let ns = Int64(text) else { return nil }
            return Timestamp(nanoseconds: ns)
        }
        self.idHash = idHash
        self.accessor = accessor
        self.parentHash = json["parent"]?.stringValue ?? ""
        self.policies = (json["policies"]?.arrayValue ?? []).compactMap(\.stringValue)
        self.meta = (json["meta"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        self.displayName = json["display_name"]?.stringValue ?? ""
        self.path = json["path"]?.stringValue ?? ""
        self.creationTime = ts("creation_time") ?? .zero
        self.issueTime = ts("issue_time") ?? self.creationTime
        self.creationTTL = Int64(json["creation_ttl"]?.intValue ?? 0)
        self.explicitMaxTTL = Int64(json["explicit_max_ttl"]?.intValue ?? 0)
        self.expireTime = ts("expire_time")
        self.numUses = json["num_uses"]?.intValue ?? 0
        self.period = Int64(json["period"]?.intValue ?? 0)
        self.renewable = json["renewable"]?.boolValue ?? false
        self.boundCIDRs = (json["bound_cidrs"]?.arrayValue ?? []).compactMap(\.stringValue)
        self.entityID = json["entity_id"]?.stringValue ?? ""
        self.batch = json["batch"]?.boolValue ?? false
        self.maxTTL = Int64(json["max_ttl"]?.intValue ?? 0)
        self.namespaceID = json["namespace_id"]?.stringValue ?? ""
        self.breakGlass = json["break_glass"]?.boolValue ?? false
    }

    /// Seconds left before expiry (0 for tokens that never expire).
    func ttl(now: Timestamp) -> Int64 {
        guard let expireTime else { return 0 }
        return max(0, now.seconds(until: expireTime))
    }

    func isExpired(now: Timestamp) -> Bool { expireTime.map { $0 <= now } ?? false }

    /// The `data` of token lookups, in Vault's shape. `id` is the token when the caller presented it.
    func lookupData(id: String, now: Timestamp) -> [String: JSONValue] {
        var data: [String: JSONValue] = [
            "accessor": .string(accessor), "creation_time": .int(creationTime.seconds),
            "creation_ttl": .int(creationTTL),
            "display_name": .string(displayName), "entity_id": .string(entityID),
            "expire_time": expireTime.map { .string($0.rfc3339) } ?? .null,
            "explicit_max_ttl": .int(explicitMaxTTL), "id": .string(id),
            "meta": meta.isEmpty ? .null : .object(meta.mapValues { .string($0) }),
            "num_uses": .int(numUses), "orphan": .bool(orphan), "path": .string(path),
            "policies": .array(policies.map { .string($0) }), "ttl": .int(ttl(now: now)),
            "type": batch ? "batch" : "service",
        ]
        if expireTime != nil {
            data["issue_time"] = .string(issueTime.rfc3339)
            data["renewable"] = .bool(renewable)
        } else {
            data["renewable"] = false
        }
        if period > 0 { data["period"] = .int(period) }
        if !boundCIDRs.isEmpty { data["bound_cidrs"] = .array(boundCIDRs.map { .string($0) }) }
        return data
    }
}

/// Token storage with an in-memory cache of entries, so the hot path (look up the caller's token)
/// costs one keyed hash and one dictionary read.
package final class TokenStore: Sendable {
    /// Where the token store keeps everything.
    static let prefix = "sys/token/"
    static let saltPath = "sys/token/salt"
    /// The AES-256-GCM key batch tokens are encrypted under.
    static let batchKeyPath = "sys/token/batch-key"
    package static let idPrefix = "sys/token/id/"
    static let accessorPrefix = "sys/token/accessor/"
    static let parentPrefix = "sys/token/parent/"
    /// Vault's system maximum TTL: 768 hours.
    static let maxTTL: Int64 = 768 * 3600
    /// The deepest chain of parent tokens followed (a guard against a damaged store that loops).
    static let maxDepth = 100_000

    private let barrier: Barrier
    /// The salt (nil: sealed). Token checks reach it through their CPU's handle (`salt.local()`), so
    /// that a check retains the handle, not the key every core's checks share.
    private let salt = PerCPUValue<HMACKey>()
    private let batchKey = Mutex<SecureBytes?>(nil)
    private let cache = TokenCache()
    private let writes = Mutex(())

    init(barrier: Barrier) {
        self.barrier = barrier
    }

    /// Loads (or on first use creates) the salt. Called once the barrier is unsealed.
    func load() throws(CofferError) {
        let existing = try barrier.get(TokenStore.saltPath)
        let key: SecureBytes
        if let existing, existing.count == 32 {
            key = SecureBytes(existing)
        } else if existing != nil {
            throw CofferError(.integrity, "the stored token salt (sys/token/salt) is malformed")
        } else {
            key = SecureBytes(randomCount: 32)
            try barrier.put(TokenStore.saltPath, key.unsafeCopy)
        }
        salt.set(HMACKey(key))
        cache.removeAll()
        let stored = try barrier.get(TokenStore.batchKeyPath)
        let batch: SecureBytes
        if let stored, stored.count == 32 {
            batch = SecureBytes(stored)
        } else if stored != nil {
            throw CofferError(.integrity, "the stored batch token key (sys/token/batch-key) is malformed")
        } else {
            batch = SecureBytes(randomCount: 32)
            try barrier.put(TokenStore.batchKeyPath, batch.unsafeCopy)
        }
        batchKey.withLock { $0 = batch }
    }

    static let batchPrefix = "b."
    static let batchAAD = Array("coffer batch token v1".utf8)
    /// The longest batch token accepted (a real one is about 600 characters).
    static let batchMaximumLength = 4096

    /// A batch token for `entry`: "b." and the entry, AES-256-GCM encrypted under the vault's batch
    /// key, in URL-safe base64. Nothing is stored.
    func createBatch(_ entry: TokenEntry) throws(CofferError) -> (String, TokenEntry) {
        guard let key = batchKey.withLock({ $0 }) else { throw CofferError.sealedError }
        var entry = entry
        entry.idHash = ""
        entry.accessor = ""
        entry.batch = true
        entry.renewable = false
        let nonce = Random.bytes(12)
        let sealed = try AESGCM.seal(
            key: key,
            nonce: nonce,
            plaintext: entry.json.serialized(),
            aad: TokenStore.batchAAD
        )
        let text = Base64.encode(nonce + sealed).utf8.compactMap { (c: UInt8) -> UInt8? in
            c == UInt8(ascii: "+")
                ? UInt8(ascii: "-") : c == UInt8(ascii: "/") ? UInt8(ascii: "_") : c == UInt8(ascii: "=") ? nil : c
        }
        return (TokenStore.batchPrefix + String(decoding: text, as: UTF8.self), entry)
    }

    /// The entry a batch token carries; nil when it is not one this vault made (or was altered).
    func batchEntry(_ token: String) -> TokenEntry? {
        guard token.utf8.count <= TokenStore.batchMaximumLength, let key = batchKey.withLock({ $0 }) else { return nil }
        var text = token.utf8.dropFirst(TokenStore.batchPrefix.utf8.count).map { (c: UInt8) -> UInt8 in
            c == UInt8(ascii: "-") ? UInt8(ascii: "+") : c == UInt8(ascii: "_") ? UInt8(ascii: "/") : c
        }
        while text.count % 4 != 0 { text.append(UInt8(ascii: "=")) }
        guard let bytes = Base64.decode(String(decoding: text, as: UTF8.self)), bytes.count > 12 + 16,
            let plain = AESGCM.open(
                key: key,
                nonce: Array(bytes.prefix(12)),
                sealed: Array(bytes.dropFirst(12)),
                aad: TokenStore.batchAAD
            ),
            let json = try? JSONValue.parse(plain), var entry = try? TokenEntry(json: json)
        else { return nil }
        entry.batch = true
        return entry
    }

    /// The entry filed under `hash` changed in storage: drop the cached copy.
    package func invalidate(hash: String) {
        cache.set(nil, hex: hash)
    }

    /// What the core is told of tokens. Kept in a class, read as a reference: a function value kept
    /// directly in a `Mutex` was wrapped in one more reabstraction thunk at every read, so each
    /// token creation cost more than the last (a login slowed to milliseconds after some thousands).
    final class Hooks: Sendable {
        /// Told the entry of every token revoked, after it is gone (the cubbyhole drops its folder).
        let revoked: @Sendable (TokenEntry) -> Void
        /// Told when a token's expiry is set or moved (creation with a TTL, renewal), inside the
        /// lock: the expiration manager indexes it. It answers with the index row to store in the
        /// same batch as the entry.
        let expiring: @Sendable (String, Timestamp) -> StorageOperation

        init(
            revoked: @escaping @Sendable (TokenEntry) -> Void,
            expiring: @escaping @Sendable (String, Timestamp) -> StorageOperation
        ) {
            self.revoked = revoked
            self.expiring = expiring
        }
    }

    let hooks = Mutex<Hooks?>(nil)

    /// The expiration manager's row for `entry`, when its expiry is new.
    private func expiryRow(_ entry: TokenEntry, was previous: Timestamp?) -> [StorageOperation] {
        guard let time = entry.expireTime, time != previous, let hooks = hooks.withLock({ $0 }) else { return [] }
        return [hooks.expiring(entry.idHash, time)]
    }

    /// Forgets the salt and every cached entry (on seal).
    func unload() {
        salt.set(nil)
        batchKey.withLock { $0 = nil }
        cache.removeAll()
    }

    package func hash(_ value: String) throws(CofferError) -> String {
        guard let salt = self.salt.local() else { throw CofferError.sealedError }
        return Hex.encode(salt.value.mac(value))
    }

    /// The entry for a presented token, or nil if unknown. Does not check expiry. A cached entry is
    /// found by the raw MAC, without writing out its hex form.
    func lookup(token: String) throws(CofferError) -> TokenEntry? {
        // Unretained, as in Barrier.get: the meters live as long as the barrier.
        let summary = Unmanaged.passUnretained(barrier.meters.tokenLookup)
        let timing = summary._withUnsafeGuaranteedRef { $0.begin() }
        defer { summary._withUnsafeGuaranteedRef { $0.end(timing) } }
        if token.hasBytePrefix(TokenStore.batchPrefix) { return batchEntry(token) }
        guard let salt = self.salt.local() else { throw CofferError.sealedError }
        var token = token
        var mac = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return try withUnsafeMutableBytes(of: &mac) { (mac) throws(CofferError) -> TokenEntry? in
            let out = mac.baseAddress!.assumingMemoryBound(to: UInt8.self)
            token.withUTF8 { salt.value.mac(UnsafeRawBufferPointer($0), into: out) }
            let key = TokenCache.Key(mac: UnsafeRawBufferPointer(mac))
            let (cached, ticket) = cache.lookup(key)
            if let cached {
                Unmanaged.passUnretained(barrier.meters.tokenCacheHit)._withUnsafeGuaranteedRef { $0.increment() }
                return cached
            }
            barrier.meters.tokenCacheMiss.increment()
            return try load(hash: Hex.encode(UnsafeRawBufferPointer(mac)), key: key, ticket: ticket)
        }
    }

    func entry(hash: String) throws(CofferError) -> TokenEntry? {
        try entry(hash: hash, key: TokenCache.Key(hex: hash))
    }

    /// The entry stored under `hash`, whose key in the cache is `key` (nil: `hash` is malformed, and
    /// never cached).
    private func entry(hash: String, key: TokenCache.Key?) throws(CofferError) -> TokenEntry? {
        guard let key else { return try load(hash: hash, key: nil, ticket: nil) }
        let (cached, ticket) = cache.lookup(key)
        if let cached { return cached }
        return try load(hash: hash, key: key, ticket: ticket)
    }

    /// The entry stored under `hash`, cached under `key` unless the cache changed since it gave out
    /// `ticket` (a revocation between the two must not be undone by this older copy).
    private func load(hash: String, key: TokenCache.Key?, ticket: TokenCache.Ticket?) throws(CofferError) -> TokenEntry?
    {
        guard let bytes = try barrier.get(TokenStore.idPrefix + hash) else { return nil }
        let entry: TokenEntry
        do {
            entry = try TokenEntry(json: try JSONValue.parse(bytes))
        } catch let error as CofferError {
            throw error
        } catch {
            throw CofferError(.integrity, "a stored token entry is not valid JSON")
        }
        // The stored hash must be the one it is filed under.
        guard ConstantTime.equals(Array(entry.idHash.utf8), Array(hash.utf8)) else {
            throw CofferError(.integrity, "a stored token entry is filed under the wrong id")
        }
        if let key, let ticket { cache.fill(key, entry, ticket) }
        return entry
    }

    func entry(accessor: String) throws(CofferError) -> TokenEntry? {
        guard let bytes = try barrier.get(TokenStore.accessorPrefix + (try hash(accessor))) else { return nil }
        return try entry(hash: String(decoding: bytes, as: UTF8.self))
    }

    /// Runs `body` holding the lock every change to a token entry takes. Creation, use counting,
    /// renewal and revocation each read an entry and write it back; without one lock a revoked
    /// token could be written back by a renewal, or two requests could spend the same last use.
    /// Reads (the request path's lookup) do not take it.
    private func withWriteLock<R>(_ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        let result: Result<R, CofferError> = writes.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Creates a token; returns the token string (shown once) and its entry.
    func create(
        id: String? = nil,
        namespaceID: String = "",
        _ make: (String, String) -> TokenEntry
    ) throws(CofferError) -> (String, TokenEntry) {
        let timing = barrier.meters.tokenCreate.begin()
        defer { barrier.meters.tokenCreate.end(timing) }
        let suffix = namespaceID.isEmpty ? "" : "." + namespaceID
        let token = id ?? "s." + Random.base62(24) + suffix
        let idHash = try hash(token)
        var entry = make(idHash, Random.base62(24) + suffix)
        entry.namespaceID = namespaceID
        let accessorHash = try hash(entry.accessor)
        try withWriteLock { () throws(CofferError) in
            if try self.entry(hash: idHash) != nil { throw CofferError.invalid("a token with that id already exists") }
            if !entry.parentHash.isEmpty, try self.entry(hash: entry.parentHash) == nil {
                throw CofferError.permissionDeniedError  // the parent was revoked meanwhile
            }
            var ops: [StorageOperation] = [
                .put(key: TokenStore.idPrefix + idHash, value: entry.json.serialized()),
                .put(key: TokenStore.accessorPrefix + accessorHash, value: Array(idHash.utf8)),
            ]
            if !entry.parentHash.isEmpty {
                ops.append(.put(key: TokenStore.parentPrefix + entry.parentHash + "/" + idHash, value: []))
            }
            try barrier.batch(ops + expiryRow(entry, was: nil))
            cache.set(entry, hex: idHash)
        }
        return (token, entry)
    }

    /// Applies `change` to the stored entry of `hash` and saves it; nil if the token is gone.
    func update(
        hash: String,
        _ change: (inout TokenEntry) throws(CofferError) -> Void
    ) throws(CofferError) -> TokenEntry? {
        try withWriteLock { () throws(CofferError) -> TokenEntry? in
            guard var entry = try entry(hash: hash) else { return nil }
            let previous = entry.expireTime
            try change(&entry)
            try save(entry, with: expiryRow(entry, was: previous))
            return entry
        }
    }

    /// Stores `entry`, and `more` in the same batch.
    private func save(_ entry: TokenEntry, with more: [StorageOperation] = []) throws(CofferError) {
        let key = TokenStore.idPrefix + entry.idHash
        if more.isEmpty {
            try barrier.put(key, entry.json.serialized())
        } else {
            try barrier.batch([.put(key: key, value: entry.json.serialized())] + more)
        }
        cache.set(entry, hex: entry.idHash)
    }

    /// Spends one use of a token with limited uses, atomically with the check: of any number of
    /// concurrent requests, exactly `num_uses` get through. Returns the entry for this request
    /// (`numUses == -1` when this was the last use: the token is revoked already), or nil when no
    /// use is left (the token is gone).
    func spendUse(hash: String) throws(CofferError) -> TokenEntry? {
        try withWriteLock { () throws(CofferError) -> TokenEntry? in
            guard var entry = try entry(hash: hash) else { return nil }
            guard entry.numUses > 0 else { return entry }
            entry.numUses -= 1
            if entry.numUses == 0 {
                try revokeLocked(hash: hash)
                entry.numUses = -1
            } else {
                try save(entry)
            }
            return entry
        }
    }

    /// The entry of `token` if it may be used at `now`: it exists, has not expired, and neither has
    /// any token above it (a child dies with its parent, as in Vault). An expired token found here
    /// is revoked with everything under it. Does not count a use.
    func live(token: String, now: Timestamp) throws(CofferError) -> TokenEntry? {
        guard let entry = try lookup(token: token) else { return nil }
        return try live(entry, now: now)
    }

    func live(_ entry: TokenEntry, now: Timestamp) throws(CofferError) -> TokenEntry? {
        // `entry` itself is checked without being copied into the loop's variable: each copy of an
        // entry is a retain of its box, an atomic write to a line every core's checks of it share.
        if try revokedAsExpired(entry, now: now) { return nil }
        guard !entry.parentHash.isEmpty else { return entry }
        guard var current = try parent(of: entry, orphaning: entry) else { return nil }
        for _ in 1..<TokenStore.maxDepth {
            if try revokedAsExpired(current, now: now) { return nil }
            guard !current.parentHash.isEmpty else { return entry }
            guard let parent = try parent(of: current, orphaning: entry) else { return nil }
            current = parent
        }
        throw CofferError(
            .integrity,
            "a token's chain of parents is longer than \(TokenStore.maxDepth) (or loops); refusing it"
        )
    }

    /// Whether `token` has expired; if so it is revoked (a batch token has nothing stored to revoke).
    private func revokedAsExpired(_ token: TokenEntry, now: Timestamp) throws(CofferError) -> Bool {
        guard token.isExpired(now: now) else { return false }
        if !token.batch { try revoke(hash: token.idHash) }
        return true
    }

    /// `child`'s parent. When it is gone (revoked, or its revocation was cut short), so is the token
    /// being checked, `entry`: it is revoked, and the answer is nil.
    private func parent(of child: TokenEntry, orphaning entry: TokenEntry) throws(CofferError) -> TokenEntry? {
        if let parent = try self.entry(hash: child.parentHash, key: child.parentKey) { return parent }
        if !entry.batch { try revoke(hash: entry.idHash) }
        return nil
    }

    /// Revokes a token and, unless `orphanChildren`, every descendant. Returns the number revoked.
    @discardableResult
    func revoke(hash: String, orphanChildren: Bool = false) throws(CofferError) -> Int {
        try withWriteLock { () throws(CofferError) -> Int in
            try revokeLocked(hash: hash, orphanChildren: orphanChildren)
        }
    }

    /// Revokes the tree under `hash` leaves first, without recursion (a chain of a million tokens
    /// must not overflow the stack). A token is deleted only after its children, so a revocation
    /// cut short by a crash leaves a tree the next revocation (or the parent check in ``live``)
    /// finishes.
    private func revokeLocked(hash: String, orphanChildren: Bool = false) throws(CofferError) -> Int {
        guard let root = try entry(hash: hash) else { return 0 }
        if orphanChildren {
            for child in try barrier.list(TokenStore.parentPrefix + hash + "/") {
                if var childEntry = try self.entry(hash: child) {
                    childEntry.parentHash = ""
                    try save(childEntry)
                }
                try barrier.delete(TokenStore.parentPrefix + hash + "/" + child)
            }
            try delete(root)
            return 1
        }
        var count = 0
        // Depth-first with an explicit stack: each frame keeps the children it has yet to visit.
        var stack: [(hash: String, pending: [String])] = [
            (root.idHash, try barrier.list(TokenStore.parentPrefix + root.idHash + "/"))
        ]
        while !stack.isEmpty {
            if let child = stack[stack.count - 1].pending.popLast() {
                guard stack.count < TokenStore.maxDepth else {
                    throw CofferError(
                        .integrity,
                        "a token tree deeper than \(TokenStore.maxDepth) (or looping) cannot be revoked"
                    )
                }
                if try entry(hash: child) != nil {
                    stack.append((child, try barrier.list(TokenStore.parentPrefix + child + "/")))
                } else {
                    // A dangling index row.
                    try barrier.delete(TokenStore.parentPrefix + stack[stack.count - 1].hash + "/" + child)
                }
                continue
            }
            let done = stack.removeLast().hash
            if let entry = try entry(hash: done) {
                try delete(entry)
                count += 1
            }
        }
        return count
    }

    private func delete(_ entry: TokenEntry) throws(CofferError) {
        var ops: [StorageOperation] = [
            .delete(key: TokenStore.idPrefix + entry.idHash),
            .delete(key: TokenStore.accessorPrefix + (try hash(entry.accessor))),
        ]
        if !entry.parentHash.isEmpty {
            ops.append(.delete(key: TokenStore.parentPrefix + entry.parentHash + "/" + entry.idHash))
        }
        try barrier.batch(ops)
        cache.set(nil, hex: entry.idHash)
        hooks.withLock { $0 }?.revoked(entry)
    }

    /// Every accessor, for `auth/token/accessors` (sudo).
    /// The accessors of every token, or of the tokens made in the namespaces `within` accepts.
    func accessors(within: ((String) -> Bool)? = nil) throws(CofferError) -> [String] {
        var out: [String] = []
        for hash in try barrier.list(TokenStore.idPrefix) {
            if let entry = try entry(hash: hash), within?(entry.namespaceID) ?? true { out.append(entry.accessor) }
        }
        return out.sorted()
    }

    /// Revokes every token made in the namespace `id` (with their children, wherever they are).
    /// Scans every token: for deleting a namespace, which is rare.
    func revokeAll(inNamespace id: String) throws(CofferError) {
        for hash in try barrier.list(TokenStore.idPrefix) {
            if let entry = try entry(hash: hash), entry.namespaceID == id { try revoke(hash: hash) }
        }
    }
}
