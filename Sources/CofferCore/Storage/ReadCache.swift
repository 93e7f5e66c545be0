import Synchronization

/// A read cache in front of a physical backend, as Vault keeps one: the bytes a backend returns,
/// which are the barrier's **ciphertext** (the barrier still authenticates and decrypts every read,
/// and no plaintext outlives the call), so a hot entry never reaches SQLite.
///
/// Bounded by bytes and split into shards with a lock each, in one set per CPU (`PerCPU.copies`
/// sets). A read looks in the set of the CPU it runs on, so two cores reading the same hot entry
/// share no lock and no reference count: each gets its own set's copy. A hot entry is read from
/// storage once per set, and the budget is split between the sets. Each shard keeps two generations
/// of entries: a hit in the older one moves the entry to the newer, and when the newer fills half the
/// shard's budget the older is dropped whole. That keeps what is read often at O(1) per operation,
/// without a linked list to maintain.
///
/// **Coherence.** Writes go through this backend: before a write reaches storage its keys are marked
/// pending in their shard of every set (the entries dropped, no read may insert them until the write
/// is done) and after it they are dropped again, so a reader overlapping the write reads storage, as
/// without the cache. Changes made beneath (another writer of the same backend, a replica applying its
/// log) come through the backend's change feed, which this cache subscribes to before anything else:
/// its entries are dropped, in every set, before any other subscriber is told. A read that misses
/// records its shard's generation first and inserts what it read only if no change touched the shard
/// meanwhile, so a value read before a change is never cached after it.
package final class CachingBackend: PhysicalBackend {
    /// Entries larger than this share of a shard's budget are not cached (a few large values would
    /// push out many small ones).
    private static let largestShare = 8
    /// What an entry costs beyond its key and value bytes: the dictionary slot, the array header.
    private static let entryOverhead = 64
    /// Shards in all, split between the per-CPU sets (each set has at least 2).
    private static let shardCount = 16

    package let underlying: any PhysicalBackend
    /// The budget in bytes (keys, values and bookkeeping).
    package let capacity: Int
    private let shards: [Shard]
    /// How many per-CPU sets of shards (a power of two), and how many shards each has.
    package let copies: Int
    private let perCopy: Int
    private let feedID: Int

    package var typeName: String { underlying.typeName }
    package var changes: ChangeFeed { underlying.changes }

    /// Caches the reads of `underlying` up to `capacity` bytes.
    package init(_ underlying: any PhysicalBackend, capacity: Int) {
        self.underlying = underlying
        self.capacity = max(0, capacity)
        let copies = PerCPU.copies
        let perCopy = max(2, CachingBackend.shardCount / copies)
        let budget = self.capacity / (copies * perCopy)
        let shards = (0..<copies * perCopy).map { _ in Shard(budget: budget) }
        self.shards = shards
        self.copies = copies
        self.perCopy = perCopy
        feedID = underlying.changes.subscribe { keys in
            for key in keys {
                for index in CachingBackend.everyCopy(of: key, copies, perCopy) { shards[index].invalidate(key) }
            }
        }
    }

    deinit { underlying.changes.unsubscribe(feedID) }

    /// `key`'s shard within a set of `perCopy`.
    private static func shardIndex(_ key: String, _ perCopy: Int) -> Int {
        // FNV-1a over the last bytes: keys share long prefixes ("logical/<mount uuid>/versions/").
        // Over the contiguous bytes: `utf8.suffix` walks a String's indices one by one.
        var key = key
        let h = key.withUTF8 { bytes in
            var h: UInt32 = 2_166_136_261
            for byte in bytes[max(0, bytes.count - 16)...] { h = (h ^ UInt32(byte)) &* 16_777_619 }
            return h
        }
        return Int(h % UInt32(perCopy))
    }

    /// The indices of `key`'s shard in every set, for a change.
    private static func everyCopy(of key: String, _ copies: Int, _ perCopy: Int) -> StrideTo<Int> {
        stride(from: shardIndex(key, perCopy), to: copies * perCopy, by: perCopy)
    }

    /// `key`'s shard in every set.
    private func everyCopy(of key: String) -> some Sequence<Shard> {
        CachingBackend.everyCopy(of: key, copies, perCopy).lazy.map { self.shards[$0] }
    }

    package func get(_ key: String) throws(CofferError) -> [UInt8]? {
        // Unretained: the shards live as long as the cache, and a retain is an atomic write to a line
        // every core's reads share.
        let copy = currentCPU() & (copies - 1)
        let shard = Unmanaged.passUnretained(shards[copy * perCopy + CachingBackend.shardIndex(key, perCopy)])
        let generation: UInt64
        switch shard._withUnsafeGuaranteedRef({ $0.lookup(key) }) {
        case .hit(let value): return value
        case .miss(let g): generation = g
        case .pending: return try underlying.get(key)
        }
        let value = try underlying.get(key)
        if let value { shard._withUnsafeGuaranteedRef { $0.insert(key, value, ifGeneration: generation) } }
        return value
    }

    package func list(prefix: String) throws(CofferError) -> [String] { try underlying.list(prefix: prefix) }

    package func list(prefix: String, limit: Int) throws(CofferError) -> [String] {
        try underlying.list(prefix: prefix, limit: limit)
    }

    package func put(_ key: String, _ value: [UInt8]) throws(CofferError) {
        try writing([key]) { () throws(CofferError) in try underlying.put(key, value) }
    }

    package func delete(_ key: String) throws(CofferError) {
        try writing([key]) { () throws(CofferError) in try underlying.delete(key) }
    }

    package func batch(_ operations: [StorageOperation]) throws(CofferError) {
        try writing(operations.map(\.key)) { () throws(CofferError) in try underlying.batch(operations) }
    }

    package func sync() throws(CofferError) { try underlying.sync() }

    package func freeze() throws(CofferError) -> any FrozenEntries { try underlying.freeze() }

    package func close() {
        underlying.close()
        for shard in shards { shard.removeAll() }
    }

    /// Bytes held now (for tests and metrics).
    package var cachedBytes: Int { shards.reduce(0) { $0 + $1.bytes } }
    /// Reads answered from the cache, and reads that went to storage, since the cache was made
    /// (`vault.cache.hit` and `vault.cache.miss` in sys/metrics). Counted under the shard's lock
    /// that the read takes anyway: no extra atomic operation.
    package var hits: UInt64 { shards.reduce(0) { $0 &+ $1.counts.hits } }
    package var misses: UInt64 { shards.reduce(0) { $0 &+ $1.counts.misses } }

    /// Runs a write with its keys pending: dropped before, uncacheable during, dropped after (also
    /// when the write fails: it may have been stored before the error).
    private func writing(_ keys: [String], _ write: () throws(CofferError) -> Void) throws(CofferError) {
        for key in keys { for shard in everyCopy(of: key) { shard.beginWrite(key) } }
        defer { for key in keys { for shard in everyCopy(of: key) { shard.endWrite(key) } } }
        try write()
    }

    private final class Shard: Sendable {
        enum Lookup {
            case hit([UInt8])
            case miss(generation: UInt64)
            case pending
        }

        struct State {
            var newer: [String: [UInt8]] = [:]
            var older: [String: [UInt8]] = [:]
            var newerBytes = 0
            var olderBytes = 0
            /// Bumped by every change to a key of this shard; a miss inserts only if it is unchanged.
            var generation: UInt64 = 0
            /// Keys with a write in progress, and how many.
            var pending: [String: Int] = [:]
            var hits: UInt64 = 0
            var misses: UInt64 = 0
        }

        let budget: Int
        let state = Mutex(State())

        init(budget: Int) { self.budget = budget }

        var bytes: Int { state.withLock { $0.newerBytes + $0.olderBytes } }
        var counts: (hits: UInt64, misses: UInt64) { state.withLock { ($0.hits, $0.misses) } }

        static func cost(_ key: String, _ value: [UInt8]) -> Int {
            key.utf8.count + value.count + CachingBackend.entryOverhead
        }

        func lookup(_ key: String) -> Lookup {
            state.withLock { s in
                if let value = s.newer[key] {
                    s.hits &+= 1
                    return .hit(value)
                }
                s.misses &+= 1  // undone below if the older generation has it
                if !s.pending.isEmpty, s.pending[key] != nil { return .pending }
                if let value = s.older.removeValue(forKey: key) {
                    s.misses &-= 1
                    s.hits &+= 1
                    let cost = Shard.cost(key, value)
                    s.olderBytes -= cost
                    Shard.add(&s, key, value, cost: cost, budget: budget)
                    return .hit(value)
                }
                return .miss(generation: s.generation)
            }
        }

        func insert(_ key: String, _ value: [UInt8], ifGeneration generation: UInt64) {
            let cost = Shard.cost(key, value)
            guard cost * CachingBackend.largestShare <= budget else { return }
            state.withLock { s in
                guard s.generation == generation, s.newer[key] == nil, s.older[key] == nil else { return }
                Shard.add(&s, key, value, cost: cost, budget: budget)
            }
        }

        /// Adds to the newer generation, retiring it to older when it holds half the budget.
        private static func add(_ s: inout State, _ key: String, _ value: [UInt8], cost: Int, budget: Int) {
            if s.newerBytes + cost > budget / 2 {
                s.older = s.newer
                s.olderBytes = s.newerBytes
                s.newer = [:]
                s.newerBytes = 0
            }
            s.newer[key] = value
            s.newerBytes += cost
        }

        private static func drop(_ s: inout State, _ key: String) {
            s.generation &+= 1
            if let value = s.newer.removeValue(forKey: key) { s.newerBytes -= cost(key, value) }
            if let value = s.older.removeValue(forKey: key) { s.olderBytes -= cost(key, value) }
        }

        func invalidate(_ key: String) { state.withLock { Shard.drop(&$0, key) } }

        func beginWrite(_ key: String) {
            state.withLock { s in
                s.pending[key, default: 0] += 1
                Shard.drop(&s, key)
            }
        }

        func endWrite(_ key: String) {
            state.withLock { s in
                if let n = s.pending[key], n > 1 { s.pending[key] = n - 1 } else { s.pending[key] = nil }
                Shard.drop(&s, key)
            }
        }

        func removeAll() {
            state.withLock { s in
                s = State(generation: s.generation &+ 1, hits: s.hits, misses: s.misses)
            }
        }
    }
}
