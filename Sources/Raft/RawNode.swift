/// What the caller must do after some input, as one batch. Handle a `Ready` in this order:
///
/// 1. **Persist** `snapshot` (if any), then append `entries` to stable storage (they may replace a conflicting
///    tail), then persist `hardState` (if any). When `mustSync` is true, fsync before step 2.
/// 2. **Send** `messages` (only after step 1: a vote or an acknowledgement must never reach a peer before
///    what it promises is durable).
/// 3. **Apply** `snapshot` to the state machine (if any), then `committedEntries` in order. Membership
///    entries need no work from the caller: the core applies them in ``RawNode/advance(_:)``.
/// 4. Serve `readStates`: a read for a context may be answered once the state machine applied its `index`.
/// 5. Call ``RawNode/advance(_:)`` with this `Ready`, then ask for the next one.
public struct Ready: Sendable {
    /// Set when the leader or this node's role changed.
    public var softState: SoftState?
    /// Set when term, vote or commit changed: persist it.
    public var hardState: HardState?
    /// Entries to append to stable storage.
    public var entries: [Entry] = []
    /// A snapshot from the leader to persist and restore the state machine from.
    public var snapshot: Snapshot?
    /// Committed entries to apply, in index order; already persisted (or in `entries` of this Ready).
    public var committedEntries: [Entry] = []
    /// Messages to send, after persisting. Delivery may fail, be duplicated or reordered: Raft tolerates it.
    public var messages: [Message] = []
    /// Answers to ``RawNode/readIndex(context:)``.
    public var readStates: [ReadState] = []
    /// Whether the persisted writes of this Ready must reach disk before messages are sent (a new term, a
    /// vote or entries). A commit-index-only change may be written lazily.
    public var mustSync = false
}

/// A node's progress as the leader sees it, for status pages and autopilot-style decisions.
public struct FollowerProgress: Sendable, Hashable {
    public var match: UInt64
    public var next: UInt64
    /// "probe", "replicate" or "snapshot".
    public var state: String
    public var recentActive: Bool
    public var isLearner: Bool
}

/// A snapshot of a node's state for inspection; `progress` is filled only on the leader.
public struct RaftStatus: Sendable, Hashable {
    public var id: NodeID
    public var hardState: HardState
    public var softState: SoftState
    public var applied: UInt64
    public var firstIndex: UInt64
    public var lastIndex: UInt64
    public var confState: ConfState
    public var leadTransferee: NodeID
    public var progress: [NodeID: FollowerProgress]
}

/// One Raft node as a deterministic state machine, with no I/O, threads or clock.
///
/// Inputs: ``tick()`` (the caller's clock), ``step(_:)`` (a message from a peer), and the requests
/// ``propose(_:)``, ``proposeConfChange(_:)``, ``transferLeadership(to:)``, ``readIndex(context:)`` and
/// ``campaign()``. Outputs: ``ready()``, whose contract is on ``Ready``, acknowledged with ``advance(_:)``.
///
/// Invariants the caller relies on: given the same storage, seed and sequence of inputs, a node produces
/// the same outputs; a message from the network can make it drop the message but never trap; nothing is
/// committed unless a quorum of voters persisted it. Not thread-safe: call it from one thread (or actor).
public final class RawNode {
    let raft: RaftCore
    private var previousSoftState: SoftState
    private var previousHardState: HardState
    /// The last committed index handed out in a Ready and not yet advanced past.
    private var applying: UInt64

    /// Starts (or restarts) a node from what `storage` persisted. A node with empty storage and no
    /// membership waits to be contacted by a leader (it joins once a leader added it).
    public init(config: Config, storage: any LogStorage) throws(RaftError) {
        raft = try RaftCore(config: config, storage: storage)
        previousSoftState = raft.softState
        previousHardState = raft.hardState
        applying = raft.log.applied
    }

    public var id: NodeID { raft.id }

    /// The membership this node currently applies.
    public var confState: ConfState { raft.conf }

    /// The node's current state; on the leader, with every member's replication progress.
    public var status: RaftStatus {
        var progress: [NodeID: FollowerProgress] = [:]
        if raft.role == .leader {
            for (id, pr) in raft.progress {
                progress[id] = FollowerProgress(
                    match: pr.match,
                    next: pr.next,
                    state: pr.state.description,
                    recentActive: pr.recentActive,
                    isLearner: pr.isLearner
                )
            }
        }
        return RaftStatus(
            id: raft.id,
            hardState: raft.hardState,
            softState: raft.softState,
            applied: raft.log.applied,
            firstIndex: raft.log.firstIndex,
            lastIndex: raft.log.lastIndex,
            confState: raft.conf,
            leadTransferee: raft.leadTransferee,
            progress: progress
        )
    }

    /// Advances the logical clock by one tick: followers count towards an election, leaders towards a heartbeat
    /// and the check-quorum round.
    public func tick() {
        raft.tick()
    }

    /// Starts an election now (with pre-vote when configured), as if the election timeout had passed.
    public func campaign() {
        raft.hup(transfer: false)
    }

    /// Proposes `data` for the log. On a follower the proposal is forwarded to the leader; either way,
    /// success means "sent on its way", not "committed": watch the committed entries for it.
    /// Throws `.proposalDropped` when there is no leader to take it.
    public func propose(_ data: [UInt8]) throws(RaftError) {
        try raft.step(Message(kind: .propose, from: raft.id, entries: [Entry(term: 0, index: 0, data: data)]))
    }

    /// Proposes a single-server membership change. On the leader it is validated at once (throws
    /// `.confChangeRejected` for a no-op, a change that leaves no voter, or while another change is
    /// unapplied); it takes effect on each node when its entry is applied.
    public func proposeConfChange(_ change: ConfChange) throws(RaftError) {
        let entry = Entry(term: 0, index: 0, kind: .confChange, data: change.encoded)
        try raft.step(Message(kind: .propose, from: raft.id, entries: [entry]))
    }

    /// Asks the leader to hand leadership to `target` (a voter): it brings the target's log up to date and
    /// sends it TimeoutNow, and refuses proposals meanwhile; the attempt is abandoned after an election timeout.
    public func transferLeadership(to target: NodeID) {
        try? raft.step(Message(kind: .transferLeader, from: target))
    }

    /// Requests a linearizable read. The answer arrives as a ``ReadState`` with the same `context` (which
    /// must be unique among outstanding requests) in a later ``Ready``: read once `index` is applied.
    /// No answer comes if leadership changes meanwhile: retry after a timeout.
    public func readIndex(context: [UInt8]) {
        try? raft.step(Message(kind: .readIndex, from: raft.id, context: context))
    }

    /// Tells the leader that the last message to `peer` could not be sent; it falls back to probing.
    public func reportUnreachable(_ peer: NodeID) {
        raft.reportUnreachable(peer)
    }

    /// Tells the leader whether the snapshot sent to `peer` was delivered; until then nothing else is sent to it.
    public func reportSnapshot(_ peer: NodeID, succeeded: Bool) {
        raft.reportSnapshot(peer, succeeded: succeeded)
    }

    /// Tells the leader that the snapshot message it made for `peer` goes with the state at `index`, newer
    /// than the stored snapshot it named (an application that sends its current state instead, as
    /// Coffer's replicated storage does). Once it is delivered the peer is probed from after `index`, not
    /// from after the stored snapshot, whose entries the log may have compacted meanwhile (which made the
    /// leader send the whole state again).
    public func sendingSnapshot(_ peer: NodeID, at index: UInt64) {
        raft.sendingSnapshot(peer, at: index)
    }

    /// Feeds a message received from a peer. Throws `.invalidMessage` (and changes nothing) if the message
    /// breaks an invariant no correct peer breaks; a valid message the node cannot act on is dropped and
    /// logged, not thrown.
    public func step(_ message: Message) throws(RaftError) {
        try validate(message)
        do {
            try raft.step(message)
        } catch {
            raft.debug("\(raft.id) dropped \(message.kind) from \(message.from): \(error.message)")
        }
    }

    /// The largest term or index accepted from the network: far beyond any real cluster's lifetime, and far
    /// enough below `UInt64.max` that `term + 1` and `index + count` cannot overflow.
    public static let maxTermOrIndex: UInt64 = UInt64.max >> 2

    private func validate(_ m: Message) throws(RaftError) {
        func invalid(_ why: String) -> RaftError {
            RaftError(.invalidMessage, "\(raft.id) dropped \(m.kind) from \(m.from): \(why)")
        }
        switch m.kind {
        case .propose, .readIndex, .transferLeader:
            // Forwarded requests keep their origin, which may be this node (forwarded back by a stale leader).
            guard m.from != 0 else { throw invalid("no sender") }
        default:
            guard m.from != 0, m.from != raft.id else { throw invalid("bad sender") }
        }
        guard m.to == raft.id else { throw invalid("addressed to \(m.to)") }
        let limit = Self.maxTermOrIndex
        guard m.term <= limit, m.logTerm <= limit, m.index <= limit, m.commit <= limit, m.rejectHint <= limit else {
            throw invalid("term or index out of range")
        }
        switch m.kind {
        case .propose, .readIndex, .transferLeader:
            guard m.term == 0 else { throw invalid("a forwarded request carries no term") }
        default:
            guard m.term > 0 else { throw invalid("term 0") }
        }
        switch m.kind {
        case .append:
            var previousTerm = m.logTerm
            for (offset, entry) in m.entries.enumerated() {
                guard entry.index == m.index + UInt64(offset) + 1 else { throw invalid("entries are not contiguous") }
                guard entry.term >= previousTerm, entry.term <= m.term else {
                    throw invalid("entry terms out of order")
                }
                previousTerm = entry.term
            }
        case .propose:
            guard !m.entries.isEmpty else { throw invalid("empty proposal") }
        default:
            guard m.entries.isEmpty else { throw invalid("unexpected entries") }
        }
        if m.kind == .snapshot {
            guard let snapshot = m.snapshot else { throw invalid("no snapshot") }
            let meta = snapshot.metadata
            guard meta.index > 0, meta.index <= limit, meta.term > 0, meta.term <= m.term else {
                throw invalid("snapshot index or term out of range")
            }
        } else if m.snapshot != nil {
            throw invalid("unexpected snapshot")
        }
    }

    /// Whether ``ready()`` has anything to hand out.
    public var hasReady: Bool {
        if raft.softState != previousSoftState { return true }
        if raft.hardState != previousHardState { return true }
        if !raft.log.unstableEntries.isEmpty || raft.log.unstableSnapshot != nil { return true }
        if !raft.messages.isEmpty || !raft.readStates.isEmpty { return true }
        return raft.log.hasNextCommittedEntries && raft.log.committed > applying
    }

    /// The next batch of work; see ``Ready`` for what to do with it. Call ``advance(_:)`` before the next
    /// `ready()`.
    public func ready() -> Ready {
        var rd = Ready()
        rd.entries = raft.log.unstableEntries
        rd.snapshot = raft.log.unstableSnapshot
        if raft.log.committed > applying {
            rd.committedEntries = raft.log.nextCommittedEntries().filter { $0.index > applying }
        }
        rd.messages = raft.messages
        raft.messages = []
        rd.readStates = raft.readStates
        raft.readStates = []
        let soft = raft.softState
        if soft != previousSoftState {
            rd.softState = soft
            previousSoftState = soft
        }
        let hard = raft.hardState
        if hard != previousHardState {
            rd.hardState = hard
            rd.mustSync = hard.term != previousHardState.term || hard.vote != previousHardState.vote
            previousHardState = hard
        }
        if !rd.entries.isEmpty || rd.snapshot != nil { rd.mustSync = true }
        if let last = rd.committedEntries.last { applying = last.index }
        return rd
    }

    /// Acknowledges that `ready` was handled: its entries and snapshot are persisted and its committed entries
    /// applied. Membership changes among the committed entries take effect here.
    public func advance(_ ready: Ready) {
        if let snapshot = ready.snapshot {
            raft.log.stableSnapshot(to: snapshot.metadata.index)
            raft.log.appliedSnapshot(snapshot.metadata.index)
            applying = max(applying, snapshot.metadata.index)
        }
        if let last = ready.entries.last {
            raft.log.stable(to: last.index, term: last.term)
        }
        for entry in ready.committedEntries {
            raft.log.applied(to: entry.index)
            if entry.kind == .confChange {
                if let change = ConfChange(encoded: entry.data) {
                    raft.applyConfChange(change)
                } else {
                    raft.warn("\(raft.id) skipped an undecodable membership change at index \(entry.index)")
                }
            }
        }
    }
}
