/// The stable log a node has persisted, read by the core. The caller writes to it (from ``Ready``) and the
/// core only reads, so an implementation needs no locking as long as the caller does not write while a
/// ``RawNode`` method runs.
///
/// Indexes: the log holds entries `firstIndex() ... lastIndex()`; everything up to `firstIndex() - 1` is
/// covered by the snapshot, and `term(at: firstIndex() - 1)` must still answer (the snapshot's term).
/// An empty log has `firstIndex() == 1` and `lastIndex() == 0`.
public protocol LogStorage: AnyObject {
    /// The persisted hard state and membership, read once when a ``RawNode`` starts.
    func initialState() throws(RaftError) -> (HardState, ConfState)
    /// Entries `[low, high)`, at most `maxBytes` of entry data but always at least one entry if any.
    /// Throws `.compacted` if `low < firstIndex()` and `.unavailable` if `high > lastIndex() + 1`.
    func entries(from low: UInt64, to high: UInt64, maxBytes: Int) throws(RaftError) -> [Entry]
    /// The term of the entry at `index`, for `firstIndex() - 1 ... lastIndex()`.
    func term(at index: UInt64) throws(RaftError) -> UInt64
    func firstIndex() throws(RaftError) -> UInt64
    func lastIndex() throws(RaftError) -> UInt64
    /// The most recent snapshot, sent to followers too far behind. May throw
    /// `.snapshotTemporarilyUnavailable` while one is being made.
    func snapshot() throws(RaftError) -> Snapshot
}

/// A log store in memory: for tests, and the model a durable store must behave like.
///
/// It holds a snapshot, the entries after a base index (the last compacted index, whose term is kept), and
/// the hard state. ``append(_:)`` has the semantics a ``Ready`` needs: entries that conflict with stored
/// ones replace them and everything after.
public final class MemoryStorage: LogStorage {
    public private(set) var hardState = HardState()
    public private(set) var currentSnapshot = Snapshot()
    private var baseIndex: UInt64 = 0
    private var baseTerm: UInt64 = 0
    /// `log[i]` has index `baseIndex + 1 + i`.
    private var log: [Entry] = []

    public init() {}

    /// A store whose history starts with a snapshot: how a new cluster is bootstrapped (every founding
    /// member gets the same snapshot naming the founding voters), or how a test starts at a later index.
    public convenience init(snapshot: Snapshot) {
        self.init()
        try? applySnapshot(snapshot)
    }

    public func initialState() throws(RaftError) -> (HardState, ConfState) {
        (hardState, currentSnapshot.metadata.confState)
    }

    /// Records the hard state from a ``Ready``.
    public func setHardState(_ state: HardState) {
        hardState = state
    }

    public func firstIndex() throws(RaftError) -> UInt64 { baseIndex + 1 }

    public func lastIndex() throws(RaftError) -> UInt64 { baseIndex + UInt64(log.count) }

    public func term(at index: UInt64) throws(RaftError) -> UInt64 {
        if index == baseIndex { return baseTerm }
        if index < baseIndex { throw RaftError(.compacted, "index \(index) is compacted (first is \(baseIndex + 1))") }
        let offset = index - baseIndex - 1
        guard offset < UInt64(log.count) else {
            throw RaftError(.unavailable, "index \(index) is beyond the last index \(baseIndex + UInt64(log.count))")
        }
        return log[Int(offset)].term
    }

    public func entries(from low: UInt64, to high: UInt64, maxBytes: Int) throws(RaftError) -> [Entry] {
        guard low > baseIndex else {
            throw RaftError(.compacted, "index \(low) is compacted (first is \(baseIndex + 1))")
        }
        let last = baseIndex + UInt64(log.count)
        guard high <= last + 1 else {
            throw RaftError(.unavailable, "index \(high - 1) is beyond the last index \(last)")
        }
        guard low < high else { return [] }
        let slice = log[Int(low - baseIndex - 1)..<Int(high - baseIndex - 1)]
        return limitSize(Array(slice), maxBytes: maxBytes)
    }

    public func snapshot() throws(RaftError) -> Snapshot { currentSnapshot }

    /// Appends entries from a ``Ready``. Entries at or below the base index are ignored (already in the
    /// snapshot); an entry whose index is already stored replaces it and everything after it.
    public func append(_ entries: [Entry]) throws(RaftError) {
        let entries = entries.filter { $0.index > baseIndex }
        guard let first = entries.first else { return }
        let last = baseIndex + UInt64(log.count)
        guard first.index <= last + 1 else {
            throw RaftError(.unavailable, "appending index \(first.index) would leave a gap after \(last)")
        }
        log.removeSubrange(Int(first.index - baseIndex - 1)...)
        log.append(contentsOf: entries)
    }

    /// Replaces the whole log with a snapshot received from the leader (from a ``Ready``).
    public func applySnapshot(_ snapshot: Snapshot) throws(RaftError) {
        guard snapshot.metadata.index > currentSnapshot.metadata.index else {
            throw RaftError(
                .snapshotOutOfDate,
                "snapshot at \(snapshot.metadata.index) is not newer than \(currentSnapshot.metadata.index)"
            )
        }
        currentSnapshot = snapshot
        baseIndex = snapshot.metadata.index
        baseTerm = snapshot.metadata.term
        log = []
    }

    /// Records the application's state at an applied `index` as the snapshot to send to lagging followers.
    /// Does not drop entries; call ``compact(through:)`` for that.
    @discardableResult
    public func createSnapshot(at index: UInt64, confState: ConfState, data: [UInt8]) throws(RaftError) -> Snapshot {
        guard index > currentSnapshot.metadata.index else {
            throw RaftError(
                .snapshotOutOfDate,
                "snapshot at \(index) is not newer than \(currentSnapshot.metadata.index)"
            )
        }
        let term = try term(at: index)
        currentSnapshot = Snapshot(
            metadata: SnapshotMetadata(index: index, term: term, confState: confState),
            data: data
        )
        return currentSnapshot
    }

    /// Drops the entries up to and including `index`, which must be covered by the current snapshot.
    public func compact(through index: UInt64) throws(RaftError) {
        guard index > baseIndex else { return }
        guard index <= currentSnapshot.metadata.index else {
            throw RaftError(
                .unavailable,
                "cannot compact through \(index): the snapshot only covers \(currentSnapshot.metadata.index)"
            )
        }
        let newTerm = try term(at: index)
        log.removeSubrange(0..<Int(index - baseIndex))
        baseIndex = index
        baseTerm = newTerm
    }
}

/// The longest prefix of `entries` within `maxBytes` of data, but never fewer than one entry.
func limitSize(_ entries: [Entry], maxBytes: Int) -> [Entry] {
    guard entries.count > 1 else { return entries }
    var size = entries[0].data.count
    var count = 1
    while count < entries.count {
        size += entries[count].data.count
        if size > maxBytes { break }
        count += 1
    }
    return Array(entries.prefix(count))
}
