import Testing

@testable import Raft

/// `MemoryStorage` is the model a durable log store must follow: these are the semantics the core relies on.
@Suite struct StorageTests {
    func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [Entry] {
        range.map { Entry(term: term, index: $0, data: [UInt8($0)]) }
    }

    @Test func appendingOverAConflictReplacesTheTail() throws {
        let storage = MemoryStorage()
        try storage.append(entries(1...5, term: 1))
        try storage.append(entries(3...4, term: 2))
        #expect(try storage.lastIndex() == 4)
        #expect(try storage.term(at: 2) == 1)
        #expect(try storage.term(at: 3) == 2)
        #expect(throws: RaftError.self) { try storage.append(self.entries(7...7, term: 2)) }
    }

    @Test func compactionKeepsTheTermOfTheLastCompactedIndex() throws {
        let storage = MemoryStorage()
        try storage.append(entries(1...10, term: 3))
        try storage.createSnapshot(at: 6, confState: ConfState(voters: [1]), data: [42])
        #expect(throws: RaftError.self, "only what a snapshot covers can be compacted") {
            try storage.compact(through: 7)
        }
        try storage.compact(through: 6)
        #expect(try storage.firstIndex() == 7)
        #expect(try storage.term(at: 6) == 3)
        do {
            _ = try storage.term(at: 5)
            Issue.record("index 5 is compacted")
        } catch {
            #expect(error.code == .compacted)
        }
        do {
            _ = try storage.entries(from: 7, to: 12, maxBytes: .max)
            Issue.record("index 11 is beyond the log")
        } catch {
            #expect(error.code == .unavailable)
        }
        // Entries below the first index are ignored on append (they are in the snapshot).
        try storage.append(entries(5...11, term: 3))
        #expect(try storage.lastIndex() == 11)
        #expect(try storage.entries(from: 7, to: 12, maxBytes: 2).count == 2, "limited by size, at least one")
        #expect(try storage.entries(from: 7, to: 12, maxBytes: 0).count == 1)
    }

    @Test func anOlderSnapshotIsRefusedAndANewerOneReplacesTheLog() throws {
        let storage = MemoryStorage()
        try storage.append(entries(1...4, term: 1))
        let meta = SnapshotMetadata(index: 8, term: 2, confState: ConfState(voters: [1, 2], learners: [3]))
        try storage.applySnapshot(Snapshot(metadata: meta, data: [1]))
        #expect(try storage.firstIndex() == 9 && storage.lastIndex() == 8)
        #expect(try storage.term(at: 8) == 2)
        #expect(try storage.initialState().1 == meta.confState)
        do {
            try storage.applySnapshot(Snapshot(metadata: SnapshotMetadata(index: 8, term: 2)))
            Issue.record("a snapshot at the same index is not newer")
        } catch {
            #expect(error.code == .snapshotOutOfDate)
        }
    }

    @Test func aConfigThatCannotWorkIsRefused() {
        var config = Config(id: 0)
        #expect(throws: RaftError.self) { try RawNode(config: config, storage: MemoryStorage()) }
        config = Config(id: 1)
        config.electionTicks = 1
        #expect(throws: RaftError.self) { try RawNode(config: config, storage: MemoryStorage()) }
        config = Config(id: 1)
        config.checkQuorum = false
        config.readOnly = .leaseBased
        #expect(throws: RaftError.self, "lease reads need check-quorum") {
            try RawNode(config: config, storage: MemoryStorage())
        }
    }

    @Test func membershipChangesThatMakeNoSenseAreRefused() {
        let conf = ConfState(voters: [1, 2], learners: [3])
        for change in [
            ConfChange(.addVoter, 1), ConfChange(.addLearner, 3), ConfChange(.removeNode, 4), ConfChange(.addVoter, 0),
        ] {
            #expect(throws: RaftError.self, "\(change)") { try change.validate(against: conf) }
        }
        #expect(throws: RaftError.self, "the last voter") {
            try ConfChange(.removeNode, 1).validate(against: ConfState(voters: [1]))
        }
        #expect(conf.applying(ConfChange(.addVoter, 3)) == ConfState(voters: [1, 2, 3]), "promotion")
        #expect(conf.applying(ConfChange(.addLearner, 2)) == ConfState(voters: [1], learners: [2, 3]), "demotion")
    }

    @Test func aSingleVoterCommitsAndAnswersReadsAlone() throws {
        let storage = MemoryStorage(
            snapshot: Snapshot(metadata: SnapshotMetadata(index: 1, term: 1, confState: ConfState(voters: [1])))
        )
        let node = try RawNode(config: Config(id: 1), storage: storage)
        node.campaign()
        try node.propose([7])
        node.readIndex(context: [1])
        let rd = node.ready()
        #expect(rd.softState?.role == .leader)
        #expect(rd.committedEntries.map(\.data) == [[], [7]])
        #expect(rd.readStates == [ReadState(index: 3, context: [1])], "everything committed when the read was asked")
        #expect(rd.messages.isEmpty)
        try storage.append(rd.entries)
        node.advance(rd)
        #expect(node.status.applied == 3)
    }
    /// A leader told that the snapshot it sends a peer holds a newer state (`sendingSnapshot`, as Coffer's
    /// replicated storage sends its data file as it is) probes the peer from after that state once it is
    /// delivered, with entries its log still holds. Before, it probed from after its stored snapshot, whose
    /// entries it had compacted meanwhile, and sent the whole state again.
    @Test(arguments: [false, true])
    func aSnapshotNewerThanTheStoredOneIsFollowedByEntries(told: Bool) throws {
        let storage = MemoryStorage(
            snapshot: Snapshot(
                metadata: SnapshotMetadata(index: 10, term: 1, confState: ConfState(voters: [1], learners: [2]))
            )
        )
        try storage.append((11...20).map { Entry(term: 1, index: $0) })
        var config = Config(id: 1)
        config.applied = 10
        let node = try RawNode(config: config, storage: storage)
        func drain() throws -> [Message] {
            var out: [Message] = []
            while node.hasReady {
                let rd = node.ready()
                try storage.append(rd.entries)
                out += rd.messages
                node.advance(rd)
            }
            return out.filter { $0.to == 2 }
        }
        node.campaign()
        _ = try drain()
        let term = node.status.hardState.term
        // The learner answers a heartbeat; the leader probes it.
        try node.step(Message(kind: .heartbeatResponse, to: 1, from: 2, term: term))
        let probe = try #require(try drain().last { $0.kind == .append })
        #expect(node.status.applied == 21, "the leader applied everything, its own term's entry included")
        // The learner has nothing: the leader walks back past its first entry and sends its snapshot.
        try node.step(
            Message(kind: .appendResponse, to: 1, from: 2, term: term, index: probe.index, reject: true, rejectHint: 0)
        )
        #expect(try drain().map(\.kind) == [.snapshot])
        // It sends its state at 21, not the stored snapshot at 10; meanwhile its log is compacted through 15.
        if told { node.sendingSnapshot(2, at: 21) }
        _ = try storage.createSnapshot(at: 15, confState: node.confState, data: [])
        try storage.compact(through: 15)
        node.reportSnapshot(2, succeeded: true)
        try node.step(Message(kind: .heartbeatResponse, to: 1, from: 2, term: term))
        let next = try drain()
        if told {
            #expect(next.map(\.kind) == [.append] && next.first?.index == 21, "\(next)")
        } else {
            #expect(next.map(\.kind) == [.snapshot], "without being told, the leader sends the state again")
        }
    }
}
