/// The node's view of the log: what ``LogStorage`` holds (persisted) followed by an unstable tail that has
/// been appended in memory and handed out in a ``Ready`` but not yet acknowledged as persisted, plus an
/// unstable snapshot received from the leader. Storage errors are not trusted to be impossible: a lookup
/// that fails reads as "unknown" (nil) instead of trapping.
struct RaftLog {
    let storage: any LogStorage
    /// A snapshot received from the leader and not yet persisted; it supersedes storage below its index.
    private(set) var unstableSnapshot: Snapshot?
    /// Entries not yet persisted; `unstableEntries[i]` has index `unstableOffset + i`.
    private(set) var unstableEntries: [Entry] = []
    private(set) var unstableOffset: UInt64
    /// The highest index known to be committed (never decreases, never beyond `lastIndex`).
    private(set) var committed: UInt64
    /// The highest index the application has applied (never beyond `committed`).
    private(set) var applied: UInt64
    let maxBytes: Int

    init(storage: any LogStorage, committed: UInt64, applied: UInt64, maxBytes: Int) {
        self.storage = storage
        self.maxBytes = maxBytes
        let last = (try? storage.lastIndex()) ?? 0
        let first = (try? storage.firstIndex()) ?? 1
        unstableOffset = last + 1
        // Everything the snapshot covers is committed, whatever the hard state says.
        self.committed = min(max(committed, first - 1), last)
        self.applied = min(max(applied, first - 1), self.committed)
    }

    var firstIndex: UInt64 {
        if let snapshot = unstableSnapshot { return snapshot.metadata.index + 1 }
        return (try? storage.firstIndex()) ?? 1
    }

    var lastIndex: UInt64 {
        if !unstableEntries.isEmpty { return unstableOffset + UInt64(unstableEntries.count) - 1 }
        if let snapshot = unstableSnapshot { return snapshot.metadata.index }
        return (try? storage.lastIndex()) ?? 0
    }

    var lastTerm: UInt64 { term(at: lastIndex) ?? 0 }

    /// The term at `index`, or nil when it is compacted away or beyond the log.
    func term(at index: UInt64) -> UInt64? {
        if index >= unstableOffset, index - unstableOffset < UInt64(unstableEntries.count) {
            return unstableEntries[Int(index - unstableOffset)].term
        }
        if let snapshot = unstableSnapshot {
            if index == snapshot.metadata.index { return snapshot.metadata.term }
            if index < snapshot.metadata.index { return nil }
        }
        if index >= unstableOffset { return nil }
        return try? storage.term(at: index)
    }

    func matchTerm(_ index: UInt64, _ term: UInt64) -> Bool {
        self.term(at: index) == term
    }

    /// Raft's "at least as up-to-date" rule (§5.4.1): a later last term wins, then a longer log.
    func isUpToDate(lastIndex index: UInt64, term: UInt64) -> Bool {
        term > lastTerm || (term == lastTerm && index >= lastIndex)
    }

    /// Entries `[low, high)` within `maxBytes`, or nil when part of the range is compacted or missing.
    func slice(_ low: UInt64, _ high: UInt64, maxBytes: Int) -> [Entry]? {
        guard low < high else { return [] }
        guard low >= firstIndex, high <= lastIndex + 1 else { return nil }
        var result: [Entry] = []
        if low < unstableOffset {
            guard let stored = try? storage.entries(from: low, to: min(high, unstableOffset), maxBytes: maxBytes) else {
                return nil
            }
            result = stored
            // Storage cut the range short to respect maxBytes: stop there.
            if UInt64(stored.count) < min(high, unstableOffset) - low { return result }
        }
        if high > unstableOffset {
            let from = Int(max(low, unstableOffset) - unstableOffset)
            let to = Int(high - unstableOffset)
            result.append(contentsOf: unstableEntries[from..<to])
        }
        return limitSize(result, maxBytes: maxBytes)
    }

    func entries(from index: UInt64) -> [Entry]? {
        guard index <= lastIndex else { return index == lastIndex + 1 ? [] : nil }
        return slice(index, lastIndex + 1, maxBytes: maxBytes)
    }

    /// The index of the first entry in `entries` whose term differs from ours (or that we lack), or 0 when
    /// every entry is already in the log.
    func findConflict(_ entries: [Entry]) -> UInt64 {
        for entry in entries where !matchTerm(entry.index, entry.term) {
            return entry.index
        }
        return 0
    }

    /// The fast back-off hint: the largest index `<= index` whose term is `<= term`, with its term. A leader
    /// whose probe at `index` was rejected can skip every entry of a term this log does not share with it.
    func findConflictByTerm(_ index: UInt64, _ term: UInt64) -> (index: UInt64, term: UInt64) {
        var index = min(index, lastIndex)
        while index > 0 {
            guard let ourTerm = self.term(at: index) else { return (index, 0) }
            if ourTerm <= term { return (index, ourTerm) }
            index -= 1
        }
        return (0, 0)
    }

    enum AppendResult {
        case appended(lastNew: UInt64)
        case mismatch
        /// The leader would overwrite a committed entry: a broken or hostile peer. Nothing is changed.
        case conflictsWithCommitted
    }

    /// A follower's append: if our entry at `index` has `logTerm`, take `entries` (which follow it, already
    /// checked contiguous) and advance the commit index to `min(commit, last new index)`.
    mutating func maybeAppend(index: UInt64, logTerm: UInt64, commit: UInt64, entries: [Entry]) -> AppendResult {
        guard matchTerm(index, logTerm) else { return .mismatch }
        let lastNew = index + UInt64(entries.count)
        let conflict = findConflict(entries)
        if conflict != 0 {
            if conflict <= committed { return .conflictsWithCommitted }
            append(Array(entries[Int(conflict - index - 1)...]))
        }
        self.commit(to: min(commit, lastNew))
        return .appended(lastNew: lastNew)
    }

    /// Appends entries that start at or below `lastIndex + 1`, truncating whatever they replace.
    mutating func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        let after = first.index
        if after == unstableOffset + UInt64(unstableEntries.count) {
            unstableEntries.append(contentsOf: entries)
        } else if after <= unstableOffset {
            // Replaces persisted entries too: the new tail starts at `after`.
            unstableOffset = after
            unstableEntries = entries
        } else {
            unstableEntries = Array(unstableEntries[0..<Int(after - unstableOffset)]) + entries
        }
    }

    mutating func commit(to index: UInt64) {
        let index = min(index, lastIndex)
        if index > committed { committed = index }
    }

    mutating func applied(to index: UInt64) {
        if index > applied, index <= committed { applied = index }
    }

    /// Whether committed entries wait to be applied (none while a snapshot is pending: it goes first).
    var hasNextCommittedEntries: Bool {
        unstableSnapshot == nil && committed > applied
    }

    func nextCommittedEntries() -> [Entry] {
        guard hasNextCommittedEntries else { return [] }
        let low = max(applied + 1, firstIndex)
        return slice(low, committed + 1, maxBytes: Int.max) ?? []
    }

    /// The caller persisted entries through `index` (with `term` there): they leave the unstable tail,
    /// unless the tail was rewritten since (the term no longer matches).
    mutating func stable(to index: UInt64, term: UInt64) {
        guard index >= unstableOffset, index - unstableOffset < UInt64(unstableEntries.count),
            unstableEntries[Int(index - unstableOffset)].term == term
        else { return }
        let count = Int(index - unstableOffset) + 1
        unstableEntries.removeFirst(count)
        unstableOffset = index + 1
    }

    mutating func stableSnapshot(to index: UInt64) {
        if unstableSnapshot?.metadata.index == index { unstableSnapshot = nil }
    }

    /// Replaces the log with a snapshot from the leader; the commit index jumps to it.
    mutating func restore(_ snapshot: Snapshot) {
        unstableSnapshot = snapshot
        unstableEntries = []
        unstableOffset = snapshot.metadata.index + 1
        committed = snapshot.metadata.index
    }

    /// After the caller applied the snapshot handed out in a Ready.
    mutating func appliedSnapshot(_ index: UInt64) {
        if index > applied { applied = index }
    }
}
