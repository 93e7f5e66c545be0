import Testing

@testable import Raft

/// Messages no correct peer sends (a bug, a corrupted stream, a hostile node) are dropped or refused by
/// `step`, never a crash, and never move the commit index beyond the log.
@Suite struct HostileMessageTests {
    /// A three-voter cluster with node 1 elected, as interaction scripts build it.
    func cluster() throws -> InteractionEnv {
        let env = InteractionEnv()
        env.logger.level = nil
        for (command, args) in [("add-nodes", ["3", "voters=(1,2,3)"]), ("campaign", ["1"]), ("stabilize", [])] {
            #expect(env.run(command, args) == "ok")
        }
        return env
    }

    func raw(_ env: InteractionEnv, _ id: NodeID) throws -> RawNode {
        try #require(env.nodes[id]?.raw)
    }

    @Test func outOfRangeTermsAndIndexesAreRefusedAndChangeNothing() throws {
        let env = try cluster()
        let follower = try raw(env, 2)
        let before = follower.status
        let huge = UInt64.max
        let hostile = [
            Message(kind: .heartbeat, to: 2, from: 1, term: huge, commit: 1),
            Message(kind: .vote, to: 2, from: 3, term: RawNode.maxTermOrIndex + 1, logTerm: 2, index: 2),
            Message(
                kind: .append,
                to: 2,
                from: 1,
                term: 2,
                logTerm: 2,
                index: huge,
                entries: [Entry(term: 2, index: 0)]
            ),
            Message(kind: .append, to: 2, from: 1, term: 2, logTerm: 2, index: 2, commit: huge),
            // Entries that are not contiguous after `index`, or whose terms go backwards or beyond the message's.
            Message(kind: .append, to: 2, from: 1, term: 2, logTerm: 2, index: 2, entries: [Entry(term: 2, index: 4)]),
            Message(kind: .append, to: 2, from: 1, term: 2, logTerm: 2, index: 2, entries: [Entry(term: 3, index: 3)]),
            Message(kind: .append, to: 2, from: 1, term: 2, logTerm: 2, index: 2, entries: [Entry(term: 1, index: 3)]),
            Message(kind: .snapshot, to: 2, from: 1, term: 2),
            Message(
                kind: .snapshot,
                to: 2,
                from: 1,
                term: 2,
                snapshot: Snapshot(metadata: SnapshotMetadata(index: 9, term: 3))
            ),
            Message(kind: .heartbeat, to: 3, from: 1, term: 2),
            Message(kind: .heartbeat, to: 2, from: 0, term: 2),
            Message(kind: .heartbeat, to: 2, from: 2, term: 2),
            Message(kind: .append, to: 2, from: 1, term: 0),
            Message(kind: .propose, to: 2, from: 1, term: 5, entries: [Entry(term: 0, index: 0)]),
            Message(kind: .voteResponse, to: 2, from: 3, term: 2, entries: [Entry(term: 2, index: 3)]),
        ]
        for m in hostile {
            #expect(throws: RaftError.self, "\(m)") { try follower.step(m) }
        }
        #expect(follower.status == before)
        #expect(!follower.hasReady)
    }

    @Test func aLeaderIgnoresAcknowledgementsOfEntriesItDoesNotHave() throws {
        let env = try cluster()
        let leader = try raw(env, 1)
        let commit = leader.status.hardState.commit
        // Two followers "acknowledging" index 1000 would commit it if the leader believed them.
        try leader.step(Message(kind: .appendResponse, to: 1, from: 2, term: 2, index: 1000))
        try leader.step(Message(kind: .appendResponse, to: 1, from: 3, term: 2, index: 1000))
        #expect(leader.status.hardState.commit == commit)
        #expect(leader.status.progress[2]?.match ?? 0 <= leader.status.lastIndex)
    }

    @Test func aHeartbeatCannotCommitBeyondTheLog() throws {
        let env = try cluster()
        let follower = try raw(env, 2)
        try follower.step(Message(kind: .heartbeat, to: 2, from: 1, term: 2, commit: 500))
        #expect(follower.status.hardState.commit == follower.status.lastIndex)
    }

    @Test func thousandsOfRandomMessagesNeverTrapANode() throws {
        let env = try cluster()
        var random = SplitMix64(seed: 7)
        var accepted = 0
        for round in 0..<3000 {
            var m = CodecTests.randomMessage(&random)
            // Mostly plausible addresses and small numbers, so that messages get past validation too.
            m.to = 1 + random.next() % 3
            m.from = random.next() % 4
            if random.next() % 4 != 0 {
                let forwarded = [MessageKind.propose, .readIndex, .transferLeader].contains(m.kind)
                m.term = forwarded ? 0 : 1 + random.next() % 4
                if m.kind != .snapshot { m.snapshot = nil }
                if m.kind != .append && m.kind != .propose { m.entries = [] }
                m.logTerm = random.next() % 5
                m.index = random.next() % 8
                m.commit = random.next() % 8
                m.rejectHint = random.next() % 8
                for i in m.entries.indices {
                    m.entries[i].index = m.index + UInt64(i) + 1
                    m.entries[i].term = min(m.term, max(m.logTerm, m.entries[i].term % 5))
                }
            }
            guard let node = env.nodes[m.to]?.raw else { continue }
            if (try? node.step(m)) != nil { accepted += 1 }
            if round % 10 == 0 { _ = env.run("stabilize", []) }
            for id: NodeID in 1...3 {
                let status = try raw(env, id).status
                #expect(status.hardState.commit <= status.lastIndex)
                #expect(status.applied <= status.hardState.commit)
            }
        }
        #expect(accepted > 300, "the random messages must also exercise the protocol, not only validation")
    }
}
