@testable import Raft

/// One seeded run of an in-process cluster: ticks instead of time, a network that loses, delays, reorders
/// and duplicates messages and is cut by symmetric and asymmetric partitions, nodes that crash (keeping only
/// what they persisted from their Ready) and restart. The Raft paper's safety properties are checked on
/// every Ready; after the chaos the network heals and every acknowledged proposal must reach every node
/// within a bounded number of ticks. Everything random comes from the seed, so a failure replays exactly.
final class Simulation {
    struct Options {
        var nodes = 3
        /// Nodes that start outside the cluster, with empty storage, for membership changes to add.
        var spares = 2
        var chaosTicks = 200
        /// Ticks allowed, after healing, for a leader to emerge and every node to apply everything.
        var healTicks = 300
        var electionTicks = 10
        /// A healthy leader and a perfect network; only one follower at a time crashes, restarts, or is cut
        /// off (both ways, or only inbound, or only outbound). With pre-vote and check-quorum on, the check is
        /// that no node's term moves past the first leader's: a rejoining follower never forces an election.
        var onlyFollowerFaults = false
    }

    final class Node {
        let id: NodeID
        var config: Config
        let app: AppStorage
        var raw: RawNode?
        /// The application: a hash chained over every applied entry, the index applied through, the membership.
        var stateHash: UInt64 = 0
        var applied: UInt64 = 0
        var confState = ConfState()
        /// The term this node last led in, to check that a leader only appends.
        var ledTerm: UInt64 = 0
        /// Removed from the cluster and shut down for good, as an operator would.
        var retired = false

        init(id: NodeID, config: Config, app: AppStorage) {
            self.id = id
            self.config = config
            self.app = app
            resetToSnapshot()
            app.captureState = { [unowned self] in
                (self.applied, self.confState, encodeHash(self.stateHash))
            }
        }

        /// After a crash the application restarts from the last snapshot it persisted.
        func resetToSnapshot() {
            let snapshot = app.memory.currentSnapshot
            stateHash = decodeHash(snapshot.data)
            applied = snapshot.metadata.index
            confState = snapshot.metadata.confState
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let seed: UInt64
    let options: Options
    private var random: SplitMix64
    private(set) var nodes: [Node] = []
    private var network: [(at: Int, message: Message)] = []
    private var cut: Set<[NodeID]> = []
    private(set) var now = 0
    private var lossRate = 0.0
    private var duplicateRate = 0.0
    private var maxDelay = 0
    /// How often the leader itself is crashed or cut off: leader churn is where Raft's subtle cases live
    /// (Figure 8 of the paper: entries of old terms replicated by a later leader).
    private var leaderFaultRate = 0.0
    /// Whether this run adds learners, promotes them and removes members.
    private var membershipChanges = false
    /// The chance per tick of a ReadIndex request.
    private var readRate = 0.05

    // What the checker knows: the leader of each term, every (index, term) entry seen persisted (its data
    // hash and the term before it), what was applied at each index, and the proposals acknowledged.
    private var leaderOfTerm: [UInt64: NodeID] = [:]
    private var entryOf: [EntryKey: (data: UInt64, previousTerm: UInt64)] = [:]
    private var appliedAt: [UInt64: (term: UInt64, data: UInt64, stateHash: UInt64)] = [:]
    private var committedTerm: [UInt64: UInt64] = [:]
    private var highestApplied: UInt64 = 0
    /// Reads in flight: the highest index applied anywhere when the read was requested.
    private var readFloor: [[UInt8]: UInt64] = [:]
    private var nextProposal = 0
    /// Nodes whose removal was applied somewhere: shut down after the current Ready.
    private var retirements: [NodeID] = []
    private(set) var stats = Stats()
    private(set) var trace: [String] = []
    var keepTrace = false

    struct Stats {
        var elections = 0
        var proposalsApplied = 0
        var snapshotsInstalled = 0
        var readsServed = 0
        var crashes = 0
        var messagesDelivered = 0
        var membershipChanges = 0
    }

    struct EntryKey: Hashable {
        var index: UInt64
        var term: UInt64
    }

    init(seed: UInt64, options: Options) {
        self.seed = seed
        self.options = options
        random = SplitMix64(seed: seed)
        let voters = (1...UInt64(options.nodes)).map { $0 }
        let bootstrap = Snapshot(
            metadata: SnapshotMetadata(index: 1, term: 1, confState: ConfState(voters: voters)),
            data: encodeHash(0)
        )
        // Vary the fault mix and the features per run.
        lossRate = [0.0, 0.02, 0.1, 0.25][Int(random.next() % 4)]
        duplicateRate = [0.0, 0.02, 0.1][Int(random.next() % 3)]
        maxDelay = [0, 2, 5][Int(random.next() % 3)]
        leaderFaultRate = [0.0, 0.01, 0.03][Int(random.next() % 3)]
        membershipChanges = random.next() % 2 == 0
        var preVote = random.next() % 4 != 0
        var checkQuorum = random.next() % 4 != 0
        let leaseReads = random.next() % 3 == 0
        readRate = [0.05, 0.15][Int(random.next() % 2)]
        if options.onlyFollowerFaults {
            (lossRate, duplicateRate, maxDelay, leaderFaultRate, membershipChanges) = (0, 0, 1, 0, false)
            (preVote, checkQuorum) = (true, true)
        }
        for id in 1...UInt64(options.nodes + options.spares) {
            let app: AppStorage
            if id <= UInt64(options.nodes) {
                app = AppStorage(snapshot: bootstrap)
                app.memory.setHardState(HardState(term: 1, vote: 0, commit: 1))
            } else {
                app = AppStorage()
            }
            var config = Config(id: id, randomSeed: random.next())
            config.electionTicks = options.electionTicks
            config.preVote = preVote
            config.checkQuorum = checkQuorum
            if checkQuorum && leaseReads { config.readOnly = .leaseBased }
            config.maxInflightMessages = 8
            config.maxBytesPerMessage = 64
            nodes.append(Node(id: id, config: config, app: app))
        }
        note(
            "seed \(seed): \(options.nodes) nodes, loss \(lossRate), dup \(duplicateRate), delay \(maxDelay), leader faults \(leaderFaultRate), membership \(membershipChanges), lease reads \(leaseReads && checkQuorum), prevote \(preVote), checkquorum \(checkQuorum)"
        )
    }

    private func note(_ line: @autoclosure () -> String) {
        if keepTrace { trace.append("[\(now)] " + line()) }
    }

    private func chance(_ p: Double) -> Bool {
        Double(random.next() >> 11) / Double(1 << 53) < p
    }

    private func pick<T>(_ items: [T]) -> T? {
        items.isEmpty ? nil : items[Int(random.next() % UInt64(items.count))]
    }

    private var live: [Node] { nodes.filter { $0.raw != nil } }

    // MARK: - Running

    /// Runs the chaos phase, heals, and checks liveness. Throws the first property violation.
    func run() throws {
        for node in nodes { node.raw = try RawNode(config: node.config, storage: node.app) }
        for _ in 0..<options.chaosTicks {
            if options.onlyFollowerFaults { injectFollowerFault() } else { injectFaults() }
            injectWorkload()
            try step()
        }
        // Heal: every node back, no more loss or partitions; a new proposal must commit everywhere.
        cut = []
        lossRate = 0
        duplicateRate = 0
        for node in nodes where node.raw == nil && !node.retired { try restart(node) }
        note("healed")
        let acknowledged = highestApplied
        var finalIndex: UInt64?
        for tick in 0..<options.healTicks {
            try step()
            if finalIndex == nil, tick % options.electionTicks == 0,
                let leader = live.first(where: { $0.raw?.status.softState.role == .leader })
            {
                try? leader.raw?.propose(Array("final-\(tick)".utf8))
            }
            if finalIndex == nil, let found = appliedFinal() { finalIndex = found }
            if let finalIndex, members.allSatisfy({ $0.applied >= finalIndex }) {
                guard finalIndex > acknowledged else {
                    throw Failure(description: "final proposal at \(finalIndex) not after acknowledged \(acknowledged)")
                }
                return
            }
        }
        let states = nodes.map {
            "\($0.id): applied \($0.applied) \($0.raw.map { "\($0.status.softState.role) term \($0.status.hardState.term) commit \($0.status.hardState.commit)" } ?? "down")"
        }
        throw Failure(
            description:
                "liveness: \(options.healTicks) ticks after healing not every node applied a new proposal and the \(acknowledged) acknowledged entries (\(states.joined(separator: "; ")))"
        )
    }

    private var finalProposals: [UInt64: UInt64] = [:]

    /// The nodes the current membership names (as the most advanced live node applied it).
    private var members: [Node] {
        guard let reference = live.max(by: { $0.applied < $1.applied }) else { return [] }
        return nodes.filter { reference.confState.contains($0.id) && !$0.retired }
    }

    private func changeMembership() {
        guard let leader = live.first(where: { $0.raw?.raft.role == .leader }), let raw = leader.raw else { return }
        let conf = raw.confState
        let change: ConfChange
        switch random.next() % 3 {
        case 0:
            guard let spare = pick(nodes.filter { !conf.contains($0.id) && !$0.retired }) else { return }
            change = ConfChange(.addLearner, spare.id)
        case 1:
            // Promote a learner only once it has caught up, as an integrator would.
            let status = raw.status
            guard let learner = pick(conf.learners), let match = status.progress[learner]?.match,
                match + 3 >= status.lastIndex
            else { return }
            change = ConfChange(.addVoter, learner)
        default:
            // Keep at least three voters, so that the cluster survives one more crash.
            let candidates = conf.voters.count > 3 ? conf.voters + conf.learners : conf.learners
            guard let target = pick(candidates) else { return }
            change = ConfChange(.removeNode, target)
        }
        do {
            try raw.proposeConfChange(change)
            note("propose \(change) on \(leader.id)")
        } catch {}
    }

    private func appliedFinal() -> UInt64? {
        finalProposals.values.min()
    }

    private func injectFaults() {
        if membershipChanges && chance(0.02) {
            changeMembership()
        }
        if chance(0.004), let node = pick(live) {
            note("crash \(node.id)")
            node.raw = nil
            node.resetToSnapshot()
            stats.crashes += 1
        }
        if chance(leaderFaultRate), let leader = live.first(where: { $0.raw?.raft.role == .leader }) {
            if random.next() % 2 == 0 {
                note("crash leader \(leader.id)")
                leader.raw = nil
                leader.resetToSnapshot()
                stats.crashes += 1
            } else {
                note("isolate leader \(leader.id)")
                cut = []
                for other in nodes where other.id != leader.id {
                    cut.insert([leader.id, other.id])
                    cut.insert([other.id, leader.id])
                }
            }
        }
        if chance(0.03), let node = pick(nodes.filter { $0.raw == nil && !$0.retired }) {
            try? restart(node)
        }
        if chance(0.008) {
            partition()
        }
        if chance(0.015), !cut.isEmpty {
            note("heal")
            cut = []
        }
        if chance(0.005), let leader = live.first(where: { $0.raw?.status.softState.role == .leader }),
            let target = pick(leader.confState.voters.filter { $0 != leader.id })
        {
            note("transfer leadership \(leader.id) -> \(target)")
            leader.raw?.transferLeadership(to: target)
        }
    }

    /// The one follower currently crashed or cut off, if any.
    private var victim: Node?

    private func injectFollowerFault() {
        guard let leader = live.first(where: { $0.raw?.raft.role == .leader }) else { return }
        if let node = victim {
            guard chance(0.03) else { return }
            if node.raw == nil { try? restart(node) }
            cut = []
            victim = nil
            note("\(node.id) rejoins")
            return
        }
        guard chance(0.02), let node = pick(live.filter { $0.id != leader.id }) else { return }
        victim = node
        let others = nodes.map(\.id).filter { $0 != node.id }
        switch random.next() % 4 {
        case 0:
            note("crash \(node.id)")
            node.raw = nil
            node.resetToSnapshot()
            stats.crashes += 1
            // It restarts cut off, so that its election timeout passes before it hears from the leader.
            if random.next() % 2 == 0 {
                try? restart(node)
                for other in others {
                    cut.insert([node.id, other])
                    cut.insert([other, node.id])
                }
            }
        case 1:
            for other in others {
                cut.insert([node.id, other])
                cut.insert([other, node.id])
            }
        case 2:
            for other in others { cut.insert([other, node.id]) }
        default:
            for other in others { cut.insert([node.id, other]) }
        }
        note("fault on follower \(node.id): cut \(cut.count) links")
    }

    /// Client work: proposals, ReadIndex requests, snapshots with compaction.
    private func injectWorkload() {
        if chance(0.3), let node = pick(live) {
            nextProposal += 1
            let data = Array("p\(nextProposal)".utf8)
            do {
                try node.raw?.propose(data)
                note("propose p\(nextProposal) on \(node.id)")
            } catch {}
        }
        if chance(readRate), let node = pick(live) {
            let context = Array("r\(now)-\(node.id)".utf8)
            readFloor[context] = highestApplied
            node.raw?.readIndex(context: context)
            note("read \(String(decoding: context, as: UTF8.self)) on \(node.id) after \(highestApplied) was applied")
        }
        if chance(0.01), let node = pick(live), node.applied > node.app.memory.currentSnapshot.metadata.index {
            // Snapshot and compact, keeping a few entries for followers just behind.
            let snapshot = try? node.app.snapshot()
            if let index = snapshot?.metadata.index, index > 3 {
                try? node.app.memory.compact(through: index - 2)
                note("\(node.id) compacted through \(index - 2)")
            }
        }
    }

    private func partition() {
        let ids = nodes.filter { !$0.retired }.map(\.id)
        guard ids.count > 1 else { return }
        cut = []
        switch random.next() % 3 {
        case 0:
            // Isolate one node both ways.
            guard let alone = pick(ids) else { return }
            for other in ids where other != alone {
                cut.insert([alone, other])
                cut.insert([other, alone])
            }
        case 1:
            // Split into two groups.
            let shuffled = ids.shuffled(using: &random)
            let size = 1 + Int(random.next() % UInt64(ids.count - 1))
            let a = Set(shuffled.prefix(size))
            for x in ids { for y in ids where a.contains(x) != a.contains(y) { cut.insert([x, y]) } }
        default:
            // Asymmetric: one node can send but not receive (or the reverse).
            guard let node = pick(ids) else { return }
            let inbound = random.next() % 2 == 0
            for other in ids where other != node {
                cut.insert(inbound ? [other, node] : [node, other])
            }
        }
        note("partition \(cut.map { "\($0[0])->\($0[1])" }.sorted().joined(separator: " "))")
    }

    private func restart(_ node: Node) throws {
        node.config.randomSeed = random.next()
        node.resetToSnapshot()
        node.config.applied = node.applied
        node.raw = try RawNode(config: node.config, storage: node.app)
        node.ledTerm = 0
        note("restart \(node.id)")
    }

    private func step() throws {
        now += 1
        let up = live
        for node in up { node.raw?.tick() }
        for _ in 0..<2 {
            for node in up.shuffled(using: &random) {
                try handleReady(node)
            }
            try deliverDue()
        }
    }

    private func deliverDue() throws {
        var due: [Message] = []
        var later: [(at: Int, message: Message)] = []
        for item in network {
            if item.at <= now { due.append(item.message) } else { later.append(item) }
        }
        network = later
        due.shuffle(using: &random)
        for m in due {
            let target = nodes[Int(m.to - 1)]
            let delivered = !cut.contains([m.from, m.to]) && target.raw != nil
            if m.kind == .snapshot {
                // The transport learns a snapshot's fate and tells the sender.
                nodes[Int(m.from - 1)].raw?.reportSnapshot(m.to, succeeded: delivered)
            }
            guard delivered, let raw = target.raw else { continue }
            stats.messagesDelivered += 1
            do {
                try raw.step(m)
            } catch {
                throw Failure(description: "node \(m.to) rejected a message a correct peer sent: \(error)")
            }
        }
    }

    private func send(_ messages: [Message]) {
        for m in messages {
            if chance(lossRate) {
                if m.kind == .snapshot { nodes[Int(m.from - 1)].raw?.reportSnapshot(m.to, succeeded: false) }
                continue
            }
            let copies = chance(duplicateRate) ? 2 : 1
            for _ in 0..<copies {
                let delay = maxDelay == 0 || chance(0.6) ? 0 : Int(random.next() % UInt64(maxDelay)) + 1
                network.append((now + delay, m))
            }
        }
    }

    // MARK: - Ready handling with the safety checks

    private func handleReady(_ node: Node) throws {
        guard let raw = node.raw, raw.hasReady else { return }
        let rd = raw.ready()
        let isLeader = raw.raft.role == .leader
        let term = raw.raft.term
        let id = node.id

        // Election Safety: at most one leader per term.
        if isLeader {
            if let other = leaderOfTerm[term], other != id {
                throw Failure(description: "election safety: \(other) and \(id) both led term \(term)")
            }
            if leaderOfTerm[term] == nil {
                leaderOfTerm[term] = id
                stats.elections += 1
                note("\(id) leads term \(term)")
                try checkLeaderCompleteness(node, raw: raw, term: term)
            }
        }

        if options.onlyFollowerFaults, let first = leaderOfTerm.keys.min(), term > first {
            throw Failure(
                description:
                    "disruption: node \(id) reached term \(term) although leader \(leaderOfTerm[first] ?? 0) of term \(first) stayed healthy"
            )
        }

        // Persist: snapshot, entries, hard state.
        let memory = node.app.memory
        if let snapshot = rd.snapshot {
            try memory.applySnapshot(snapshot)
            let key = EntryKey(index: snapshot.metadata.index, term: snapshot.metadata.term)
            if let applied = appliedAt[key.index],
                applied.term != key.term || applied.stateHash != decodeHash(snapshot.data)
            {
                throw Failure(
                    description:
                        "state machine safety: snapshot at \(key.index) term \(key.term) differs from what was applied there"
                )
            }
        }
        if let first = rd.entries.first {
            if isLeader && node.ledTerm == term {
                // Leader Append-Only: a leader only appends entries of its term after what it holds.
                let last = try memory.lastIndex()
                guard first.index == last + 1, rd.entries.allSatisfy({ $0.term == term }) else {
                    throw Failure(
                        description:
                            "leader append-only: leader \(id) of term \(term) wrote from index \(first.index) over its last index \(last)"
                    )
                }
            }
            try memory.append(rd.entries)
            for entry in rd.entries {
                // Log Matching, inductively: an (index, term) pair always names the same data after the same term.
                let key = EntryKey(index: entry.index, term: entry.term)
                let value = (
                    data: fnv(entry.data, kind: entry.kind), previousTerm: try memory.term(at: entry.index - 1)
                )
                if let seen = entryOf[key] {
                    guard seen.data == value.data, seen.previousTerm == value.previousTerm else {
                        throw Failure(
                            description: "log matching: node \(id) holds a different entry \(entry.index)/\(entry.term)"
                        )
                    }
                } else {
                    entryOf[key] = value
                }
            }
        }
        if isLeader { node.ledTerm = term }
        if let hard = rd.hardState { memory.setHardState(hard) }

        // Send only after persisting.
        send(rd.messages)

        // Apply.
        if let snapshot = rd.snapshot {
            node.stateHash = decodeHash(snapshot.data)
            node.applied = snapshot.metadata.index
            stats.snapshotsInstalled += 1
            note("\(id) installed snapshot \(snapshot.metadata.index)")
        }
        for entry in rd.committedEntries {
            guard entry.index == node.applied + 1 else {
                throw Failure(description: "node \(id) applied \(entry.index) after \(node.applied)")
            }
            let data = fnv(entry.data, kind: entry.kind)
            node.stateHash = chain(node.stateHash, entry, data)
            node.applied = entry.index
            // State Machine Safety: every node applies the same entry at an index.
            if let seen = appliedAt[entry.index] {
                guard seen.term == entry.term, seen.data == data, seen.stateHash == node.stateHash else {
                    throw Failure(
                        description:
                            "state machine safety: node \(id) applied \(entry.index)/\(entry.term), others applied \(entry.index)/\(seen.term)"
                    )
                }
            } else {
                appliedAt[entry.index] = (entry.term, data, node.stateHash)
                committedTerm[entry.index] = entry.term
                if entry.data.starts(with: Array("final-".utf8)) { finalProposals[entry.index] = entry.index }
                if entry.kind == .confChange {
                    stats.membershipChanges += 1
                } else if !entry.data.isEmpty {
                    stats.proposalsApplied += 1
                }
            }
            highestApplied = max(highestApplied, entry.index)
            if entry.kind == .confChange, let change = ConfChange(encoded: entry.data), change.kind == .removeNode {
                retirements.append(change.nodeID)
            }
        }
        for read in rd.readStates {
            // A read must observe everything committed before it was requested.
            note("\(id) serves read \(String(decoding: read.context, as: UTF8.self)) at \(read.index)")
            if let floor = readFloor.removeValue(forKey: read.context), read.index < floor {
                throw Failure(
                    description:
                        "linearizable read: \(id) served a read at \(read.index) requested after \(floor) was applied"
                )
            }
            stats.readsServed += 1
        }
        raw.advance(rd)
        node.confState = raw.confState
        for id in retirements {
            let retired = nodes[Int(id - 1)]
            guard !retired.retired else { continue }
            note("retire \(id)")
            retired.retired = true
            retired.raw = nil
        }
        retirements = []
    }

    /// Leader Completeness: a new leader's log holds every entry committed in earlier terms.
    private func checkLeaderCompleteness(_ node: Node, raw: RawNode, term: UInt64) throws {
        let log = raw.raft.log
        let compacted = log.firstIndex - 1
        for (index, committed) in committedTerm where index >= compacted {
            guard let held = log.term(at: index), held == committed else {
                throw Failure(
                    description:
                        "leader completeness: leader \(node.id) of term \(term) lacks committed entry \(index)/\(committed)"
                )
            }
        }
    }
}

func encodeHash(_ hash: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: hash >> (8 * $0)) }
}

func decodeHash(_ bytes: [UInt8]) -> UInt64 {
    guard bytes.count == 8 else { return 0 }
    return bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
}

func fnv(_ bytes: [UInt8], kind: EntryKind) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(kind.rawValue)
    for byte in bytes {
        hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
    }
    return hash
}

func chain(_ state: UInt64, _ entry: Entry, _ data: UInt64) -> UInt64 {
    var hash = state ^ 0x9E37_79B9_7F4A_7C15
    for value in [entry.index, entry.term, data] {
        hash = (hash ^ value) &* 0x100_0000_01b3
        hash ^= hash >> 29
    }
    return hash
}
