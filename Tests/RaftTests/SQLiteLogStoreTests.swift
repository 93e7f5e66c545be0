import CofferCore
import CofferRaft
import Foundation
import Testing

@testable import Raft

/// The node's durable Raft log: what a Ready persists is there after a reopen (a crash is a reopen
/// without close), what conflicts is replaced, compaction keeps `term(at: first - 1)`, and a damaged
/// file is refused with the place it is damaged.
@Suite struct SQLiteLogStoreTests {
    final class Scratch {
        let path: String
        init() {
            path =
                FileManager.default.temporaryDirectory.appendingPathComponent("coffer-raftlog-\(UUID().uuidString)")
                .path
            try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        var log: String { path + "/raft.db" }
    }

    static func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [Entry] {
        range.map { Entry(term: term, index: $0, data: Array("e\($0)t\(term)".utf8)) }
    }

    @Test func whatIsSavedIsThereAfterReopening() throws {
        let scratch = Scratch()
        do {
            let store = try SQLiteLogStore(path: scratch.log)
            let bootstrap = Snapshot(
                metadata: SnapshotMetadata(index: 1, term: 1, confState: ConfState(voters: [1, 2, 3])),
                data: []
            )
            try store.save(snapshot: bootstrap, hardState: HardState(term: 1, vote: 0, commit: 1))
            try store.save(entries: Self.entries(2...6, term: 2), hardState: HardState(term: 2, vote: 3, commit: 4))
            // Not closed: as after a crash.
        }
        let store = try SQLiteLogStore(path: scratch.log)
        let (hard, conf) = try store.initialState()
        #expect(hard == HardState(term: 2, vote: 3, commit: 4))
        #expect(conf.voters == [1, 2, 3])
        #expect(try store.firstIndex() == 2)
        #expect(try store.lastIndex() == 6)
        #expect(try store.term(at: 1) == 1)
        #expect(try store.entries(from: 2, to: 7, maxBytes: .max) == Self.entries(2...6, term: 2))
    }

    @Test func aConflictingTailIsReplacedOnDiskToo() throws {
        let scratch = Scratch()
        do {
            let store = try SQLiteLogStore(path: scratch.log)
            try store.save(entries: Self.entries(1...5, term: 1))
            try store.save(entries: Self.entries(3...4, term: 2))
            #expect(try store.lastIndex() == 4)
            store.close()
        }
        let store = try SQLiteLogStore(path: scratch.log)
        #expect(try store.lastIndex() == 4)
        #expect(
            try store.entries(from: 1, to: 5, maxBytes: .max) == Self.entries(1...2, term: 1)
                + Self.entries(3...4, term: 2)
        )
    }

    @Test func aGapOrAnOldSnapshotIsRefusedAndNothingIsWritten() throws {
        let scratch = Scratch()
        let store = try SQLiteLogStore(path: scratch.log)
        try store.save(entries: Self.entries(1...3, term: 1))
        #expect(throws: CofferError.self) { try store.save(entries: Self.entries(5...6, term: 1)) }
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 2, term: 1, confState: ConfState(voters: [1])))
        try store.save(snapshot: snapshot)
        #expect(throws: CofferError.self) { try store.save(snapshot: snapshot) }
        #expect(try store.firstIndex() == 3)
        #expect(try store.lastIndex() == 2)
        store.close()
        let reopened = try SQLiteLogStore(path: scratch.log)
        #expect(try reopened.lastIndex() == 2)
        #expect(try reopened.snapshot() == snapshot)
    }

    @Test func aSnapshotCompactsTheLogAndKeepsTheTail() throws {
        let scratch = Scratch()
        do {
            let store = try SQLiteLogStore(path: scratch.log)
            try store.save(entries: Self.entries(1...10, term: 3))
            try store.createSnapshot(
                at: 8,
                confState: ConfState(voters: [1, 2, 3], learners: [4]),
                data: [9, 9],
                keep: 2
            )
            #expect(try store.firstIndex() == 7)
            #expect(throws: RaftError.self) { try store.entries(from: 5, to: 7, maxBytes: .max) }
        }
        let store = try SQLiteLogStore(path: scratch.log)
        #expect(try store.firstIndex() == 9)  // reopened from the snapshot at 8: the kept rows below it are skipped
        #expect(try store.term(at: 8) == 3)
        #expect(try store.lastIndex() == 10)
        let snapshot = try store.snapshot()
        #expect(snapshot.metadata.index == 8)
        #expect(snapshot.metadata.confState.learners == [4])
        #expect(snapshot.data == [9, 9])
    }

    @Test func aFlippedBitInAnEntryIsRefusedWithItsIndex() throws {
        let scratch = Scratch()
        do {
            let store = try SQLiteLogStore(path: scratch.log)
            try store.save(entries: Self.entries(1...4, term: 1))
            store.close()
        }
        // Flip one bit of entry 3's data the way a bad disk would: below SQLite, which does not notice.
        try flipBit(in: scratch.log, of: Array("e3t1".utf8))
        do {
            _ = try SQLiteLogStore(path: scratch.log)
            Issue.record("a damaged log was opened")
        } catch {
            #expect(error.code == .corruptDatabase)
            #expect(error.message.contains("entry 3"), "\(error.message)")
        }
    }

    @Test func aFileOfAnotherKindIsRefused() throws {
        let scratch = Scratch()
        try Data("not a database at all, just text".utf8).write(to: URL(fileURLWithPath: scratch.log))
        #expect(throws: CofferError.self) { try SQLiteLogStore(path: scratch.log) }
    }

    /// The store drives a real node: a single-voter cluster commits what it proposes, and a node
    /// restarted from the file comes back with its term, vote and log.
    @Test func aNodeRestartsFromItsFile() throws {
        let scratch = Scratch()
        var lastIndex: UInt64 = 0
        do {
            let store = try SQLiteLogStore(path: scratch.log)
            try store.save(
                snapshot: Snapshot(metadata: SnapshotMetadata(index: 1, term: 1, confState: ConfState(voters: [1]))),
                hardState: HardState(term: 1, commit: 1)
            )
            let node = try RawNode(config: Config(id: 1), storage: store)
            node.campaign()
            try drive(node, store)
            for i in 0..<5 { try node.propose(Array("value \(i)".utf8)) }
            try drive(node, store)
            lastIndex = try store.lastIndex()
            #expect(store.hardState.commit == lastIndex)
        }
        let store = try SQLiteLogStore(path: scratch.log)
        #expect(try store.lastIndex() == lastIndex)
        var config = Config(id: 1)
        config.applied = 1
        let node = try RawNode(config: config, storage: store)
        let status = node.status
        #expect(status.hardState.term >= 2)
        #expect(status.hardState.commit == lastIndex)
    }

    private func drive(_ node: RawNode, _ store: SQLiteLogStore) throws {
        while node.hasReady {
            let rd = node.ready()
            try store.save(
                snapshot: rd.snapshot,
                entries: rd.entries,
                hardState: rd.hardState,
                sync: rd.mustSync
            )
            node.advance(rd)
        }
    }

    private func flipBit(in path: String, of needle: [UInt8]) throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var found = false
        var i = 0
        while i + needle.count <= bytes.count {
            if Array(bytes[i..<i + needle.count]) == needle {
                bytes[i + 1] ^= 0x04
                found = true
                break
            }
            i += 1
        }
        #expect(found, "the entry's bytes were not found in the file")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}
