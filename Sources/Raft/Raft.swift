/// The Raft protocol proper: roles, terms, votes, replication, commitment, reads and membership. It only
/// mutates itself and queues outgoing messages; ``RawNode`` turns that into ``Ready`` values.
///
/// Terms and indexes from the network are checked by ``RawNode/step(_:)`` before they get here (bounded
/// well below `UInt64.max`, entries contiguous), so the arithmetic below cannot overflow.
final class RaftCore {
    /// Context of a vote request caused by a leadership transfer: voters grant it despite a live leader.
    static let transferContext: [UInt8] = Array("transfer".utf8)

    let id: NodeID
    private(set) var term: UInt64 = 0
    private(set) var vote: NodeID = 0
    private(set) var lead: NodeID = 0
    private(set) var role: Role = .follower
    var log: RaftLog
    private(set) var conf: ConfState
    /// Per member (voters and learners, the leader included); meaningful only while leader.
    private(set) var progress: [NodeID: Progress] = [:]
    private(set) var votes: [NodeID: Bool] = [:]
    var messages: [Message] = []
    var readStates: [ReadState] = []

    private(set) var electionElapsed = 0
    /// Ticks since this node started; the clock of lease-based reads.
    private(set) var ticks: UInt64 = 0
    /// The tick at which this node last heard from a leader (or, as leader, last ticked). With lease-based
    /// reads a node grants no vote within an election timeout of it, and, starting at 0, none within an
    /// election timeout of starting either (a restarted node may have acknowledged a leader just before).
    private var heardFromLeaderAt: UInt64 = 0
    /// Lease-based reads count only heartbeats sent at or after this tick (set past a leadership transfer).
    private var leaseFloor: UInt64 = 0
    private var heartbeatElapsed = 0
    private(set) var randomizedElectionTimeout = 0
    let electionTimeout: Int
    let heartbeatTimeout: Int
    let checkQuorum: Bool
    let preVote: Bool
    let readOnlyOption: ReadOnlyOption
    let maxInflight: Int
    private var random: SplitMix64
    let logger: (any RaftLogger)?

    /// The index of the latest membership change proposed by this leader; no new one until it is applied.
    private(set) var pendingConfIndex: UInt64 = 0
    /// The node this leader is handing leadership to, or 0.
    private(set) var leadTransferee: NodeID = 0
    private var readOnly = ReadOnlyQueue()
    /// ReadIndex requests that arrived before this leader committed an entry of its own term.
    private var pendingReadIndexMessages: [Message] = []

    init(config: Config, storage: any LogStorage) throws(RaftError) {
        try config.validate()
        let (hardState, confState) = try storage.initialState()
        id = config.id
        electionTimeout = config.electionTicks
        heartbeatTimeout = config.heartbeatTicks
        checkQuorum = config.checkQuorum
        preVote = config.preVote
        readOnlyOption = config.readOnly
        maxInflight = config.maxInflightMessages
        random = SplitMix64(seed: config.randomSeed)
        logger = config.logger
        conf = confState
        log = RaftLog(
            storage: storage,
            committed: hardState.commit,
            applied: config.applied,
            maxBytes: config.maxBytesPerMessage
        )
        becomeFollower(term: hardState.term, lead: 0)
        vote = hardState.vote
        info(
            "\(id) started at term \(term) [commit: \(log.committed), applied: \(log.applied), last: \(log.lastIndex)/\(log.lastTerm)] \(describeConf(conf))"
        )
    }

    var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    var softState: SoftState { SoftState(leader: lead, role: role) }

    /// Only voters may campaign; learners and removed or not-yet-added nodes may not.
    var promotable: Bool { conf.isVoter(id) }

    var quorum: Int { conf.voters.count / 2 + 1 }

    // MARK: - Logging

    func info(_ message: @autoclosure () -> String) {
        logger?.log(.info, message())
    }

    func debug(_ message: @autoclosure () -> String) {
        logger?.log(.debug, message())
    }

    func warn(_ message: @autoclosure () -> String) {
        logger?.log(.warning, message())
    }

    // MARK: - Sending

    private func send(_ message: Message) {
        var message = message
        // Forwarded requests keep their origin (for a transfer: the node that should lead).
        if message.from == 0 { message.from = id }
        switch message.kind {
        case .vote, .voteResponse, .preVote, .preVoteResponse:
            // Vote messages carry an explicit term (a pre-vote asks for term + 1).
            break
        case .propose, .readIndex, .transferLeader:
            // Forwarded requests carry no term: the leader treats them as local.
            message.term = 0
        default:
            message.term = term
        }
        messages.append(message)
    }

    // MARK: - Role changes

    private func reset(term newTerm: UInt64) {
        if term != newTerm {
            term = newTerm
            vote = 0
        }
        lead = 0
        electionElapsed = 0
        heartbeatElapsed = 0
        randomizedElectionTimeout = electionTimeout + Int(random.next() % UInt64(electionTimeout))
        leadTransferee = 0
        votes = [:]
        pendingConfIndex = 0
        readOnly = ReadOnlyQueue()
        pendingReadIndexMessages = []
        resetProgress()
    }

    private func resetProgress() {
        progress = [:]
        let last = log.lastIndex
        for member in conf.voters + conf.learners {
            var pr = Progress(next: last + 1, isLearner: conf.isLearner(member))
            if member == id { pr.match = last }
            progress[member] = pr
        }
    }

    func becomeFollower(term: UInt64, lead: NodeID) {
        reset(term: term)
        self.lead = lead
        role = .follower
        info("\(id) became follower at term \(term)")
    }

    private func becomePreCandidate() {
        // The term and vote stay: a pre-candidate has not started an election yet.
        role = .preCandidate
        votes = [:]
        lead = 0
        info("\(id) became pre-candidate at term \(term)")
    }

    private func becomeCandidate() {
        reset(term: term + 1)
        vote = id
        role = .candidate
        info("\(id) became candidate at term \(term)")
    }

    private func becomeLeader() {
        reset(term: term)
        lead = id
        role = .leader
        heardFromLeaderAt = ticks
        progress[id]?.becomeReplicate()
        progress[id]?.recentActive = true
        // No membership change until everything before this term's first entry is applied: the new leader
        // may hold an unapplied change from a previous term, and only one may be in flight.
        pendingConfIndex = log.lastIndex
        // An entry of its own term, so that earlier entries can be committed (§5.4.2).
        appendEntries([Entry(term: 0, index: 0)])
        info("\(id) became leader at term \(term)")
    }

    // MARK: - Ticks

    func tick() {
        ticks &+= 1
        if role == .leader {
            heardFromLeaderAt = ticks
            tickHeartbeat()
        } else {
            tickElection()
        }
    }

    private func tickElection() {
        electionElapsed += 1
        if promotable && electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            hup(transfer: false)
        }
    }

    private func tickHeartbeat() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if electionElapsed >= electionTimeout {
            electionElapsed = 0
            if checkQuorum { checkQuorumActive() }
            if role == .leader && leadTransferee != 0 {
                info(
                    "\(id) abandons transferring leadership to \(leadTransferee): it did not finish within an election timeout"
                )
                leadTransferee = 0
            }
        }
        guard role == .leader else { return }
        if heartbeatElapsed >= heartbeatTimeout {
            heartbeatElapsed = 0
            broadcastHeartbeat(context: [])
        }
    }

    /// Check-quorum: a leader that has not heard from a quorum of voters since the last check steps down.
    private func checkQuorumActive() {
        var active = 0
        for voter in conf.voters {
            if voter == id || progress[voter]?.recentActive == true { active += 1 }
        }
        for member in progress.keys where member != id {
            progress[member]?.recentActive = false
        }
        if active < quorum {
            warn("\(id) stepped down to follower since quorum is not active")
            becomeFollower(term: term, lead: 0)
        }
    }

    // MARK: - Elections

    /// Starts an election (or a pre-vote) if this node may.
    func hup(transfer: Bool) {
        if role == .leader {
            debug("\(id) ignoring campaign because already leader")
            return
        }
        guard promotable else {
            warn("\(id) is unpromotable and can not campaign")
            return
        }
        if hasUnappliedConfChange() {
            warn("\(id) cannot campaign at term \(term) since there are still unapplied membership changes")
            return
        }
        info("\(id) is starting a new election at term \(term)")
        if preVote && !transfer {
            campaign(pre: true, transfer: false)
        } else {
            campaign(pre: false, transfer: transfer)
        }
    }

    private func hasUnappliedConfChange() -> Bool {
        guard log.committed > log.applied else { return false }
        let pending = log.slice(log.applied + 1, log.committed + 1, maxBytes: Int.max) ?? []
        return pending.contains { $0.kind == .confChange }
    }

    private func campaign(pre: Bool, transfer: Bool) {
        let voteTerm: UInt64
        let kind: MessageKind
        if pre {
            becomePreCandidate()
            voteTerm = term + 1
            kind = .preVote
        } else {
            becomeCandidate()
            voteTerm = term
            kind = .vote
        }
        if poll(id, granted: true, kind: kind) == .won {
            // A single-voter cluster wins at once.
            if pre { campaign(pre: false, transfer: transfer) } else { becomeLeader() }
            return
        }
        let lastIndex = log.lastIndex
        let lastTerm = log.lastTerm
        for voter in conf.voters where voter != id {
            info(
                "\(id) [logterm: \(lastTerm), index: \(lastIndex)] sent \(kind) request to \(voter) at term \(voteTerm)"
            )
            send(
                Message(
                    kind: kind,
                    to: voter,
                    term: voteTerm,
                    logTerm: lastTerm,
                    index: lastIndex,
                    context: transfer ? Self.transferContext : []
                )
            )
        }
    }

    private enum VoteResult { case pending, won, lost }

    private func poll(_ voter: NodeID, granted: Bool, kind: MessageKind) -> VoteResult {
        if granted {
            info("\(id) received \(kind) from \(voter) at term \(term)")
        } else {
            info("\(id) received \(kind) rejection from \(voter) at term \(term)")
        }
        if votes[voter] == nil { votes[voter] = granted }
        var yes = 0
        var no = 0
        for voter in conf.voters {
            switch votes[voter] {
            case true?: yes += 1
            case false?: no += 1
            case nil: break
            }
        }
        if yes >= quorum { return .won }
        if no > conf.voters.count - quorum { return .lost }
        return .pending
    }

    // MARK: - Step

    /// Handles one message. Errors are returned only for local requests (proposals and the like); a peer's
    /// message that cannot be acted on is dropped and logged.
    func step(_ m: Message) throws(RaftError) {
        if (m.kind == .vote || m.kind == .preVote) && m.term >= term && !(m.term == term && vote == m.from) {
            // Check-quorum's lease: a node that heard from a leader within an election timeout ignores vote
            // requests, so that a node cut off for a while cannot depose a healthy leader. A leadership
            // transfer overrides it: the leader asked for that election.
            let force = m.context == Self.transferContext
            let remaining: Int
            if readOnlyOption == .leaseBased {
                // Stricter, because the leader serves reads on the strength of this promise: measured from the
                // last message of any leader (or from starting), and for same-term requests too.
                let until = heardFromLeaderAt &+ UInt64(electionTimeout)
                remaining = ticks < until ? Int(until - ticks) : 0
            } else {
                // It ends a tick before the shortest election timeout: when the leader dies, the survivors'
                // clocks are up to a tick apart, and the first to time out (after `electionTimeout` ticks at
                // the least) must not find the others a tick short of it and wait out a second timeout.
                // A leader is always in its lease: its `electionElapsed` counts its check-quorum round, which
                // reaches `lease` on the round's last tick (check-quorum steps it down when it is not heard).
                let lease = electionTimeout - 1
                let elapsed = role == .leader ? 0 : electionElapsed
                let inLease = checkQuorum && lead != 0 && elapsed < lease && m.term > term
                remaining = inLease ? lease - elapsed : 0
            }
            if !force && remaining > 0 {
                info(
                    "\(id) [logterm: \(log.lastTerm), index: \(log.lastIndex), vote: \(vote)] ignored \(m.kind) from \(m.from) [logterm: \(m.logTerm), index: \(m.index)] at term \(term): lease is not expired (remaining ticks: \(remaining))"
                )
                return
            }
        }
        if m.term == 0 {
            // Local or forwarded request: no term checks.
        } else if m.term > term {
            switch m.kind {
            case .preVote:
                // A pre-vote request never changes our term.
                break
            case .preVoteResponse where !m.reject:
                // Granted pre-votes carry the future term; we bump ours only once we campaign for real.
                break
            default:
                info(
                    "\(id) [term: \(term)] received a \(m.kind) message with higher term from \(m.from) [term: \(m.term)]"
                )
                if m.kind == .append || m.kind == .commit || m.kind == .heartbeat || m.kind == .snapshot {
                    becomeFollower(term: m.term, lead: m.from)
                } else {
                    becomeFollower(term: m.term, lead: 0)
                }
            }
        } else if m.term < term {
            if (checkQuorum || preVote) && (m.kind == .heartbeat || m.kind == .append || m.kind == .commit) {
                // A leader cut off long enough for the rest to move on: tell it our term so it steps down.
                // (With pre-vote and check-quorum it would otherwise never learn of the higher term.)
                send(Message(kind: .appendResponse, to: m.from))
            } else if m.kind == .preVote {
                info(
                    "\(id) [logterm: \(log.lastTerm), index: \(log.lastIndex), vote: \(vote)] rejected \(m.kind) from \(m.from) [logterm: \(m.logTerm), index: \(m.index)] at term \(term)"
                )
                send(Message(kind: .preVoteResponse, to: m.from, term: term, reject: true))
            } else {
                debug(
                    "\(id) [term: \(term)] ignored a \(m.kind) message with lower term from \(m.from) [term: \(m.term)]"
                )
            }
            return
        }

        switch m.kind {
        case .vote, .preVote:
            handleVoteRequest(m)
        default:
            switch role {
            case .leader: try stepLeader(m)
            case .candidate, .preCandidate: try stepCandidate(m)
            case .follower: try stepFollower(m)
            }
        }
    }

    private func handleVoteRequest(_ m: Message) {
        let canVote =
            vote == m.from
            // We have not voted in this term and know of no leader.
            || (vote == 0 && lead == 0)
            // A pre-vote for a future term is not bound by this term's vote.
            || (m.kind == .preVote && m.term > term)
        let responseKind: MessageKind = m.kind == .vote ? .voteResponse : .preVoteResponse
        if canVote && log.isUpToDate(lastIndex: m.index, term: m.logTerm) {
            info(
                "\(id) [logterm: \(log.lastTerm), index: \(log.lastIndex), vote: \(vote)] cast \(m.kind) for \(m.from) [logterm: \(m.logTerm), index: \(m.index)] at term \(term)"
            )
            // The response carries the request's term so that a pre-candidate recognises it.
            send(Message(kind: responseKind, to: m.from, term: m.term))
            if m.kind == .vote {
                electionElapsed = 0
                vote = m.from
            }
        } else {
            info(
                "\(id) [logterm: \(log.lastTerm), index: \(log.lastIndex), vote: \(vote)] rejected \(m.kind) from \(m.from) [logterm: \(m.logTerm), index: \(m.index)] at term \(term)"
            )
            send(Message(kind: responseKind, to: m.from, term: term, reject: true))
        }
    }

    // MARK: - Leader

    private func stepLeader(_ m: Message) throws(RaftError) {
        switch m.kind {
        case .propose:
            try propose(m)
            return
        case .readIndex:
            handleReadIndex(m)
            return
        case .transferLeader:
            handleTransferLeader(m)
            return
        default:
            break
        }
        guard var pr = progress[m.from] else {
            debug("\(id) no progress available for \(m.from)")
            return
        }
        switch m.kind {
        case .appendResponse:
            pr.recentActive = true
            if m.reject {
                debug(
                    "\(id) received append rejection (last index \(m.rejectHint), term \(m.logTerm)) from \(m.from) for index \(m.index)"
                )
                var nextProbe = m.rejectHint
                if m.logTerm > 0 {
                    // Skip every index of ours whose term is above the follower's term there.
                    nextProbe = log.findConflictByTerm(m.rejectHint, m.logTerm).index
                }
                let backedOff = pr.maybeDecrease(rejected: m.index, hint: nextProbe)
                if backedOff {
                    if pr.state == .replicate { pr.becomeProbe() }
                    progress[m.from] = pr
                    sendAppend(to: m.from)
                } else {
                    progress[m.from] = pr
                }
                return
            }
            guard m.index <= log.lastIndex else {
                warn(
                    "\(id) ignored an append response from \(m.from) acknowledging index \(m.index) beyond the last index \(log.lastIndex)"
                )
                progress[m.from] = pr
                return
            }
            let wasPaused = pr.isPaused(maxInflight: maxInflight)
            guard pr.maybeUpdate(m.index) else {
                progress[m.from] = pr
                return
            }
            switch pr.state {
            case .probe:
                pr.becomeReplicate()
            case .snapshot where pr.match >= pr.pendingSnapshot:
                debug("\(id) recovered from needing snapshot, resumed sending replication messages to \(m.from)")
                pr.becomeProbe()
                pr.becomeReplicate()
            case .replicate:
                pr.acknowledgeInflight(through: m.index)
            case .snapshot:
                break
            }
            progress[m.from] = pr
            if maybeCommit() {
                releasePendingReadIndexMessages()
                broadcastAppend(commitOnly: true)
            } else if wasPaused {
                sendAppend(to: m.from)
            }
            // Keep streaming while there is more to send and room in flight.
            while sendAppend(to: m.from, sendIfEmpty: false) {}
            if m.from == leadTransferee, progress[m.from]?.match == log.lastIndex {
                info("\(id) sent TimeoutNow to \(m.from) after it caught up")
                send(Message(kind: .timeoutNow, to: m.from))
            }
        case .heartbeatResponse:
            pr.recentActive = true
            pr.probeSent = false
            // The follower heard from us no earlier than we sent this heartbeat (never trust a future tick).
            let sent = min(m.index, ticks)
            if sent >= leaseFloor { pr.leaseSentAt = max(pr.leaseSentAt ?? 0, sent) }
            if pr.state == .replicate && pr.inflight.count >= maxInflight {
                pr.inflight.removeFirst()
            }
            progress[m.from] = pr
            if pr.match < log.lastIndex { sendAppend(to: m.from) }
            guard !m.context.isEmpty else { return }
            guard readOnly.acknowledge(m.context, from: m.from, voters: conf) >= quorum else { return }
            for request in readOnly.advance(through: m.context) {
                respondToReadIndex(request.message, index: request.index)
            }
        default:
            break
        }
    }

    private func propose(_ m: Message) throws(RaftError) {
        guard !m.entries.isEmpty else { throw RaftError(.proposalDropped, "empty proposal") }
        guard progress[id] != nil else {
            throw RaftError(.proposalDropped, "\(id) is the leader but no longer a member")
        }
        guard leadTransferee == 0 else {
            throw RaftError(.proposalDropped, "\(id) is transferring leadership to \(leadTransferee)")
        }
        if m.entries.contains(where: { $0.kind == .confChange }) {
            guard m.entries.count == 1, let change = ConfChange(encoded: m.entries[0].data) else {
                throw RaftError(.confChangeRejected, "a membership change must be proposed alone and decode")
            }
            guard pendingConfIndex <= log.applied else {
                throw RaftError(
                    .confChangeRejected,
                    "the membership change at index \(pendingConfIndex) is not applied yet (applied: \(log.applied))"
                )
            }
            try change.validate(against: conf)
            pendingConfIndex = log.lastIndex + 1
        }
        appendEntries(m.entries)
        broadcastAppend()
    }

    private func appendEntries(_ entries: [Entry]) {
        var entries = entries
        let last = log.lastIndex
        for i in entries.indices {
            entries[i].term = term
            entries[i].index = last + 1 + UInt64(i)
        }
        log.append(entries)
        _ = progress[id]?.maybeUpdate(log.lastIndex)
        // A single-voter cluster commits at once.
        _ = maybeCommit()
    }

    /// Advances the commit index to the highest index a quorum of voters has, if it is of this term.
    @discardableResult
    private func maybeCommit() -> Bool {
        guard !conf.voters.isEmpty else { return false }
        let matches = conf.voters.map { progress[$0]?.match ?? 0 }.sorted(by: >)
        let index = matches[quorum - 1]
        // Only entries of the leader's own term are committed by counting replicas (§5.4.2).
        guard index > log.committed, log.term(at: index) == term else { return false }
        log.commit(to: index)
        return true
    }

    var committedEntryInCurrentTerm: Bool { log.term(at: log.committed) == term }

    /// Sends the follower what it needs next (entries, or a snapshot when they are compacted). Returns
    /// whether a message was sent.
    ///
    /// With `commitOnly`, a follower that is sent nothing new is sent a `commit` (no acknowledgement wanted)
    /// instead of an empty `append`: only the commit index moved. A follower being probed is always sent an
    /// `append`, whose answer the probe needs.
    @discardableResult
    private func sendAppend(to peer: NodeID, sendIfEmpty: Bool = true, commitOnly: Bool = false) -> Bool {
        guard peer != id, var pr = progress[peer], !pr.isPaused(maxInflight: maxInflight) else { return false }
        let prevIndex = pr.next - 1
        let prevTerm = log.term(at: prevIndex)
        let entries = log.entries(from: pr.next)
        if let prevTerm, let entries {
            if entries.isEmpty && !sendIfEmpty { return false }
            let lastIndex = entries.last?.index ?? prevIndex
            pr.sentEntries(count: entries.count, lastIndex: lastIndex)
            progress[peer] = pr
            send(
                Message(
                    kind: commitOnly && entries.isEmpty && pr.state == .replicate ? .commit : .append,
                    to: peer,
                    logTerm: prevTerm,
                    index: prevIndex,
                    entries: entries,
                    commit: log.committed
                )
            )
            return true
        }
        // The entries the follower needs are compacted: send the snapshot instead.
        guard pr.recentActive else {
            debug("\(id) not sending a snapshot to \(peer): it was not recently active")
            return false
        }
        let snapshot: Snapshot
        do {
            snapshot = try log.storage.snapshot()
        } catch {
            debug("\(id) failed to send snapshot to \(peer) because snapshot is temporarily unavailable")
            return false
        }
        guard !snapshot.isEmpty, snapshot.metadata.index + 1 >= log.firstIndex else {
            warn("\(id) has no snapshot covering index \(pr.next) for \(peer)")
            return false
        }
        // A node refuses a snapshot whose membership does not include it (it was taken before the node was
        // added): wait for storage to produce a newer one.
        guard snapshot.metadata.confState.contains(peer) else {
            warn(
                "\(id) not sending snapshot [index: \(snapshot.metadata.index)] to \(peer): it predates \(peer)'s membership"
            )
            return false
        }
        info(
            "\(id) [firstindex: \(log.firstIndex), commit: \(log.committed)] sent snapshot[index: \(snapshot.metadata.index), term: \(snapshot.metadata.term)] to \(peer)"
        )
        pr.becomeSnapshot(snapshot.metadata.index)
        progress[peer] = pr
        send(Message(kind: .snapshot, to: peer, snapshot: snapshot))
        return true
    }

    private func broadcastAppend(commitOnly: Bool = false) {
        for peer in progress.keys.sorted() where peer != id {
            sendAppend(to: peer, commitOnly: commitOnly)
        }
    }

    private func broadcastHeartbeat(context: [UInt8]) {
        for peer in progress.keys.sorted() where peer != id {
            guard let pr = progress[peer] else { continue }
            // Never tell a follower to commit beyond what it is known to hold.
            let commit = min(pr.match, log.committed)
            // `index` carries the tick of sending, echoed back for lease-based reads.
            send(Message(kind: .heartbeat, to: peer, index: ticks, commit: commit, context: context))
        }
    }

    // MARK: - Reads

    private func handleReadIndex(_ m: Message) {
        if conf.voters == [id] {
            respondToReadIndex(m, index: log.committed)
            return
        }
        // Until this leader has committed an entry of its own term it does not know the latest commit index.
        guard committedEntryInCurrentTerm else {
            pendingReadIndexMessages.append(m)
            return
        }
        serveReadIndex(m)
    }

    private func serveReadIndex(_ m: Message) {
        switch readOnlyOption {
        case .safe:
            guard readOnly.add(index: log.committed, message: m) else { return }
            _ = readOnly.acknowledge(m.context, from: id, voters: conf)
            broadcastHeartbeat(context: m.context)
        case .leaseBased:
            guard holdsLease else {
                // No valid lease (just elected, quorum not heard from lately, or a transfer): confirm by heartbeat.
                guard readOnly.add(index: log.committed, message: m) else { return }
                _ = readOnly.acknowledge(m.context, from: id, voters: conf)
                broadcastHeartbeat(context: m.context)
                return
            }
            respondToReadIndex(m, index: log.committed)
        }
    }

    /// The leader's lease: a quorum of voters acknowledged a heartbeat sent less than an election timeout
    /// ago, so none of them grants a vote before it runs out (they refuse votes for an election timeout after
    /// hearing from a leader). Safe as long as tick rates do not drift apart.
    var holdsLease: Bool {
        guard role == .leader, leadTransferee == 0 else { return false }
        var count = 0
        for voter in conf.voters {
            if voter == id {
                count += 1
            } else if let sent = progress[voter]?.leaseSentAt, sent &+ UInt64(electionTimeout) > ticks {
                count += 1
            }
        }
        return count >= quorum
    }

    private func releasePendingReadIndexMessages() {
        guard committedEntryInCurrentTerm else { return }
        let pending = pendingReadIndexMessages
        pendingReadIndexMessages = []
        for m in pending { serveReadIndex(m) }
    }

    private func respondToReadIndex(_ m: Message, index: UInt64) {
        if m.from == 0 || m.from == id {
            readStates.append(ReadState(index: index, context: m.context))
        } else {
            send(Message(kind: .readIndexResponse, to: m.from, index: index, context: m.context))
        }
    }

    // MARK: - Leadership transfer

    private func handleTransferLeader(_ m: Message) {
        let transferee = m.from
        guard let pr = progress[transferee], !pr.isLearner else {
            debug("\(id) ignored transferring leadership to \(transferee): not a voter")
            return
        }
        if leadTransferee != 0 {
            if leadTransferee == transferee {
                info(
                    "\(id) [term \(term)] transfer leadership to \(transferee) is in progress, ignores request to same node \(transferee)"
                )
                return
            }
            info("\(id) [term \(term)] abort previous transferring leadership to \(leadTransferee)")
            leadTransferee = 0
        }
        guard transferee != id else {
            debug("\(id) is already leader. Ignored transferring leadership to \(id)")
            return
        }
        info("\(id) [term \(term)] starts to transfer leadership to \(transferee)")
        // The transfer must finish within one election timeout.
        electionElapsed = 0
        leadTransferee = transferee
        // Voters grant the transferee's vote despite their lease, so no lease from before the transfer, or
        // from before it is abandoned, may be trusted.
        leaseFloor = ticks &+ UInt64(electionTimeout)
        if pr.match == log.lastIndex {
            info("\(id) sends TimeoutNow to \(transferee) immediately as \(transferee) already has up-to-date log")
            send(Message(kind: .timeoutNow, to: transferee))
        } else {
            sendAppend(to: transferee)
        }
    }

    // MARK: - Candidate

    private func stepCandidate(_ m: Message) throws(RaftError) {
        switch m.kind {
        case .propose:
            throw RaftError(.proposalDropped, "\(id) is campaigning at term \(term): no leader")
        case .append, .commit:
            becomeFollower(term: m.term, lead: m.from)
            handleAppend(m)
        case .heartbeat:
            becomeFollower(term: m.term, lead: m.from)
            handleHeartbeat(m)
        case .snapshot:
            becomeFollower(term: m.term, lead: m.from)
            handleSnapshot(m)
        case .voteResponse where role == .candidate, .preVoteResponse where role == .preCandidate:
            switch poll(m.from, granted: !m.reject, kind: m.kind) {
            case .won:
                if role == .preCandidate {
                    campaign(pre: false, transfer: false)
                } else {
                    becomeLeader()
                    broadcastAppend()
                }
            case .lost:
                becomeFollower(term: term, lead: 0)
            case .pending:
                break
            }
        case .timeoutNow:
            debug("\(id) [term \(term) state \(role)] ignored TimeoutNow from \(m.from)")
        default:
            break
        }
    }

    // MARK: - Follower

    private func stepFollower(_ m: Message) throws(RaftError) {
        switch m.kind {
        case .propose:
            guard lead != 0 else { throw RaftError(.proposalDropped, "\(id) knows no leader at term \(term)") }
            var forwarded = m
            forwarded.to = lead
            send(forwarded)
        case .append, .commit:
            electionElapsed = 0
            lead = m.from
            handleAppend(m)
        case .heartbeat:
            electionElapsed = 0
            lead = m.from
            handleHeartbeat(m)
        case .snapshot:
            electionElapsed = 0
            lead = m.from
            handleSnapshot(m)
        case .transferLeader, .readIndex:
            // A follower forwards both to its leader.
            guard lead != 0 else {
                let what = m.kind == .transferLeader ? "leader transfer" : "index reading"
                info("\(id) no leader at term \(term); dropping \(what) msg")
                return
            }
            var forwarded = m
            forwarded.to = lead
            send(forwarded)
        case .timeoutNow:
            info("\(id) [term \(term)] received TimeoutNow from \(m.from) and starts an election to get leadership")
            // Leadership transfer skips pre-vote: the leader asked for it.
            hup(transfer: true)
        case .readIndexResponse:
            readStates.append(ReadState(index: m.index, context: m.context))
        default:
            break
        }
    }

    private func handleAppend(_ m: Message) {
        heardFromLeaderAt = ticks
        // A `commit` carries no entries and is answered only when the log does not match (the leader must
        // then probe).
        let notice = m.kind == .commit
        if m.index < log.committed {
            if !notice { send(Message(kind: .appendResponse, to: m.from, index: log.committed)) }
            return
        }
        switch log.maybeAppend(index: m.index, logTerm: m.logTerm, commit: m.commit, entries: notice ? [] : m.entries) {
        case .appended(let lastNew):
            if !notice { send(Message(kind: .appendResponse, to: m.from, index: lastNew)) }
        case .mismatch:
            let probe = min(m.index, log.lastIndex)
            let hint = log.findConflictByTerm(probe, m.logTerm)
            debug(
                "\(id) [logterm: \(log.term(at: m.index) ?? 0), index: \(m.index)] rejected append [logterm: \(m.logTerm), index: \(m.index)] from \(m.from)"
            )
            send(
                Message(
                    kind: .appendResponse,
                    to: m.from,
                    logTerm: hint.term,
                    index: m.index,
                    reject: true,
                    rejectHint: hint.index
                )
            )
        case .conflictsWithCommitted:
            warn("\(id) ignored an append from \(m.from) that conflicts with committed index \(log.committed)")
        }
    }

    private func handleHeartbeat(_ m: Message) {
        heardFromLeaderAt = ticks
        log.commit(to: m.commit)
        send(Message(kind: .heartbeatResponse, to: m.from, index: m.index, context: m.context))
    }

    private func handleSnapshot(_ m: Message) {
        heardFromLeaderAt = ticks
        guard let snapshot = m.snapshot else { return }
        let index = snapshot.metadata.index
        let term = snapshot.metadata.term
        if restore(snapshot) {
            info("\(id) [commit: \(log.committed)] restored snapshot [index: \(index), term: \(term)]")
            send(Message(kind: .appendResponse, to: m.from, index: log.lastIndex))
        } else {
            info("\(id) [commit: \(log.committed)] ignored snapshot [index: \(index), term: \(term)]")
            send(Message(kind: .appendResponse, to: m.from, index: log.committed))
        }
    }

    /// Takes a snapshot from the leader unless we already have what it covers. Returns whether it replaced
    /// the log.
    private func restore(_ snapshot: Snapshot) -> Bool {
        let meta = snapshot.metadata
        guard meta.index > log.committed else { return false }
        guard meta.confState.contains(id) else {
            warn(
                "\(id) attempted to restore snapshot but it is not in the ConfState \(describeConf(meta.confState)); should never happen"
            )
            return false
        }
        if log.matchTerm(meta.index, meta.term) {
            // We already have the entries: just learn that they are committed.
            info(
                "\(id) [commit: \(log.committed), lastindex: \(log.lastIndex), lastterm: \(log.lastTerm)] fast-forwarded commit to snapshot [index: \(meta.index), term: \(meta.term)]"
            )
            log.commit(to: meta.index)
            return false
        }
        log.restore(snapshot)
        conf = meta.confState
        resetProgress()
        info("\(id) switched to configuration \(describeConf(conf))")
        return true
    }

    // MARK: - Membership

    /// Applies a committed membership change (called as the entry is applied).
    func applyConfChange(_ change: ConfChange) {
        conf = conf.applying(change)
        info("\(id) switched to configuration \(describeConf(conf))")
        for member in progress.keys where !conf.contains(member) {
            progress[member] = nil
        }
        var added: [NodeID] = []
        for member in conf.voters + conf.learners {
            if progress[member] == nil {
                progress[member] = Progress(next: log.lastIndex + 1, isLearner: conf.isLearner(member))
                added.append(member)
            } else {
                progress[member]?.isLearner = conf.isLearner(member)
            }
        }
        guard role == .leader else { return }
        // Start probing a new member now rather than at the next heartbeat.
        for member in added where member != id {
            progress[member]?.recentActive = true
            sendAppend(to: member)
        }
        if !conf.isVoter(id) {
            // Removed (or demoted): stop leading; the remaining voters elect a new leader.
            info("\(id) is no longer a voter; stepping down")
            becomeFollower(term: term, lead: 0)
            return
        }
        if leadTransferee != 0 && !conf.isVoter(leadTransferee) {
            leadTransferee = 0
        }
        // The quorum may have shrunk.
        if maybeCommit() { broadcastAppend() }
    }

    func reportUnreachable(_ peer: NodeID) {
        guard role == .leader, progress[peer]?.state == .replicate else { return }
        debug("\(id) failed to send message to \(peer) because it is unreachable")
        progress[peer]?.becomeProbe()
    }

    func sendingSnapshot(_ peer: NodeID, at index: UInt64) {
        guard role == .leader, var pr = progress[peer], pr.state == .snapshot, index > pr.pendingSnapshot else {
            return
        }
        pr.pendingSnapshot = index
        progress[peer] = pr
    }

    func reportSnapshot(_ peer: NodeID, succeeded: Bool) {
        guard role == .leader, var pr = progress[peer], pr.state == .snapshot else { return }
        if !succeeded { pr.pendingSnapshot = 0 }
        debug("\(id) snapshot \(succeeded ? "succeeded" : "failed"), resumed sending replication messages to \(peer)")
        pr.becomeProbe()
        // Wait for a heartbeat response before probing again.
        pr.probeSent = true
        progress[peer] = pr
    }
}

func describeConf(_ conf: ConfState) -> String {
    let voters = conf.voters.map(String.init).joined(separator: ",")
    if conf.learners.isEmpty { return "voters=(\(voters))" }
    return "voters=(\(voters)) learners=(\(conf.learners.map(String.init).joined(separator: ",")))"
}

extension MessageKind: CustomStringConvertible {
    public var description: String {
        switch self {
        case .propose: "Propose"
        case .append: "App"
        case .appendResponse: "AppResp"
        case .vote: "Vote"
        case .voteResponse: "VoteResp"
        case .preVote: "PreVote"
        case .preVoteResponse: "PreVoteResp"
        case .snapshot: "Snap"
        case .heartbeat: "Heartbeat"
        case .heartbeatResponse: "HeartbeatResp"
        case .transferLeader: "TransferLeader"
        case .timeoutNow: "TimeoutNow"
        case .readIndex: "ReadIndex"
        case .readIndexResponse: "ReadIndexResp"
        case .commit: "Commit"
        }
    }
}

extension Role: CustomStringConvertible {
    public var description: String {
        switch self {
        case .follower: "follower"
        case .preCandidate: "pre-candidate"
        case .candidate: "candidate"
        case .leader: "leader"
        }
    }
}
