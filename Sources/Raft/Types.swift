// The values the Raft core takes in and hands out. All are plain Sendable values so that a caller can
// move them between its storage, network and apply threads; the core itself is single-threaded.

/// A node's identity in a cluster. `0` is reserved and means "no node" (no leader, no vote).
public typealias NodeID = UInt64

/// What an entry carries: an opaque command for the application, or a membership change that the
/// core applies itself when the entry is applied (see ``RawNode/advance(_:)``).
public enum EntryKind: UInt8, Sendable, Hashable {
    case normal = 0
    case confChange = 1
}

/// One slot of the replicated log. `index` starts at 1; `term` is the leader's term that created it.
public struct Entry: Sendable, Hashable {
    public var term: UInt64
    public var index: UInt64
    public var kind: EntryKind
    public var data: [UInt8]

    public init(term: UInt64, index: UInt64, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }
}

/// The state a node must persist before it sends any message of the same ``Ready``: its current term,
/// the node it voted for in that term, and the highest index it knows to be committed.
public struct HardState: Sendable, Hashable {
    public var term: UInt64
    public var vote: NodeID
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: NodeID = 0, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// The membership of the cluster: the voters (who elect leaders and form quorums) and the learners
/// (who receive the log but neither vote nor count for a quorum). A node is in at most one of the two.
/// Both lists are kept sorted so that equal configurations compare equal.
public struct ConfState: Sendable, Hashable {
    public private(set) var voters: [NodeID]
    public private(set) var learners: [NodeID]

    public init(voters: [NodeID] = [], learners: [NodeID] = []) {
        let voterSet = Set(voters)
        self.voters = voterSet.sorted()
        self.learners = Set(learners).subtracting(voterSet).sorted()
    }

    public func isVoter(_ id: NodeID) -> Bool { voters.contains(id) }
    public func isLearner(_ id: NodeID) -> Bool { learners.contains(id) }
    public func contains(_ id: NodeID) -> Bool { isVoter(id) || isLearner(id) }

    /// The configuration after `change`. It does not validate the change (see ``ConfChange/validate(against:)``).
    public func applying(_ change: ConfChange) -> ConfState {
        var voters = Set(self.voters)
        var learners = Set(self.learners)
        switch change.kind {
        case .addVoter:
            learners.remove(change.nodeID)
            voters.insert(change.nodeID)
        case .addLearner:
            voters.remove(change.nodeID)
            learners.insert(change.nodeID)
        case .removeNode:
            voters.remove(change.nodeID)
            learners.remove(change.nodeID)
        }
        return ConfState(voters: Array(voters), learners: Array(learners))
    }
}

/// A single-server membership change. Promoting a learner is `addVoter` of a learner; demoting a voter is
/// `addLearner` of a voter. Only one change may be in flight at a time (the leader refuses a second one
/// until the first is applied), which is what keeps single-server changes safe.
public struct ConfChange: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable {
        case addVoter = 0
        case addLearner = 1
        case removeNode = 2
    }

    public var kind: Kind
    public var nodeID: NodeID

    public init(_ kind: Kind, _ nodeID: NodeID) {
        self.kind = kind
        self.nodeID = nodeID
    }

    /// Refuses changes that are no-ops, that touch node 0, or that would leave the cluster without a voter.
    public func validate(against conf: ConfState) throws(RaftError) {
        guard nodeID != 0 else { throw RaftError(.confChangeRejected, "node id 0 is reserved") }
        switch kind {
        case .addVoter where conf.isVoter(nodeID):
            throw RaftError(.confChangeRejected, "node \(nodeID) is already a voter")
        case .addLearner where conf.isLearner(nodeID):
            throw RaftError(.confChangeRejected, "node \(nodeID) is already a learner")
        case .removeNode where !conf.contains(nodeID):
            throw RaftError(.confChangeRejected, "node \(nodeID) is not a member")
        default:
            break
        }
        if conf.applying(self).voters.isEmpty {
            throw RaftError(.confChangeRejected, "the change would leave the cluster without a voter")
        }
    }
}

/// What a snapshot covers: the state after applying every entry up to `index` (whose term is `term`), and
/// the membership at that index.
public struct SnapshotMetadata: Sendable, Hashable {
    public var index: UInt64
    public var term: UInt64
    public var confState: ConfState

    public init(index: UInt64 = 0, term: UInt64 = 0, confState: ConfState = ConfState()) {
        self.index = index
        self.term = term
        self.confState = confState
    }
}

/// A snapshot: metadata plus the application's opaque state bytes. Streaming it in chunks is the
/// transport's concern; the core hands out and takes in whole snapshots.
public struct Snapshot: Sendable, Hashable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata = SnapshotMetadata(), data: [UInt8] = []) {
        self.metadata = metadata
        self.data = data
    }

    /// A snapshot at index 0 stands for "no snapshot".
    public var isEmpty: Bool { metadata.index == 0 }
}

/// The kinds of messages nodes exchange. Raw values are the wire encoding and never change.
public enum MessageKind: UInt8, Sendable, Hashable, CaseIterable {
    /// A proposal forwarded from a follower to its leader (term 0: the leader treats it as local).
    case propose = 1
    /// Log entries (possibly none) after `index`/`logTerm`, with the leader's commit index.
    case append = 2
    /// A follower's answer to `append` or `snapshot`: `index` is its new last index, or on `reject` the
    /// index it could not match, with `rejectHint`/`logTerm` pointing the leader at a probe index.
    case appendResponse = 3
    case vote = 4
    case voteResponse = 5
    case preVote = 6
    case preVoteResponse = 7
    case snapshot = 8
    /// Keeps followers from campaigning, carries the commit index (never beyond the follower's match) and,
    /// for ReadIndex, a context to be echoed back.
    case heartbeat = 9
    case heartbeatResponse = 10
    /// A leadership-transfer request forwarded to the leader; `from` is the node that should lead.
    case transferLeader = 11
    /// The leader tells the transfer target to campaign at once, without pre-vote.
    case timeoutNow = 12
    /// A ReadIndex request forwarded from a follower (term 0); `context` identifies it.
    case readIndex = 13
    /// The leader's answer to `readIndex`: read once the state machine has applied `index`.
    case readIndexResponse = 14
    /// An `append` with no entries that only carries a newer commit index, sent when a commit advances to a
    /// follower that already has every entry: it answers only when its log does not match at `index`/`logTerm`
    /// (the leader already knows the follower's last index, so an acknowledgement would tell it nothing).
    case commit = 15
}

/// One message between two nodes. Which fields matter depends on `kind`; the others are zero or empty.
public struct Message: Sendable, Hashable {
    public var kind: MessageKind
    public var to: NodeID
    public var from: NodeID
    public var term: UInt64
    public var logTerm: UInt64
    public var index: UInt64
    public var entries: [Entry]
    public var commit: UInt64
    public var snapshot: Snapshot?
    public var reject: Bool
    public var rejectHint: UInt64
    public var context: [UInt8]

    public init(
        kind: MessageKind,
        to: NodeID = 0,
        from: NodeID = 0,
        term: UInt64 = 0,
        logTerm: UInt64 = 0,
        index: UInt64 = 0,
        entries: [Entry] = [],
        commit: UInt64 = 0,
        snapshot: Snapshot? = nil,
        reject: Bool = false,
        rejectHint: UInt64 = 0,
        context: [UInt8] = []
    ) {
        self.kind = kind
        self.to = to
        self.from = from
        self.term = term
        self.logTerm = logTerm
        self.index = index
        self.entries = entries
        self.commit = commit
        self.snapshot = snapshot
        self.reject = reject
        self.rejectHint = rejectHint
        self.context = context
    }
}

/// A node's role. `preCandidate` is the pre-vote phase: it asks whether it could win before it bumps its term.
public enum Role: UInt8, Sendable, Hashable {
    case follower
    case preCandidate
    case candidate
    case leader
}

/// Volatile state worth telling the caller about when it changes: who leads and what this node is.
public struct SoftState: Sendable, Hashable {
    public var leader: NodeID
    public var role: Role
}

/// The answer to a ``RawNode/readIndex(context:)`` request: once the local state machine has applied
/// `index`, a read served from it is linearizable with respect to the moment of the request.
public struct ReadState: Sendable, Hashable {
    public var index: UInt64
    public var context: [UInt8]
}

/// How the leader confirms it is still the leader before answering a ReadIndex request.
public enum ReadOnlyOption: Sendable, Hashable {
    /// A heartbeat round acknowledged by a quorum (the default; safe under any clock drift).
    case safe
    /// The leader's lease: no heartbeat round while a quorum acknowledged a heartbeat sent less than an
    /// election timeout ago; every node then refuses votes for an election timeout after hearing from a
    /// leader (and after starting). Safe only if tick rates do not drift apart and a vote request forced by
    /// a leadership transfer is not delayed by more than an election timeout. Without a lease (a new leader,
    /// a quorum not heard from lately, a transfer) a request falls back to the heartbeat round.
    case leaseBased
}
