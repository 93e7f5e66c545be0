import CofferCore
import CofferStorage
import Foundation
import Synchronization
import Testing

@testable import CofferRaft
@testable import Raft

/// Three real nodes in one process, each with its own log and SQLite data file, talking over loopback
/// TCP: a write through any node is readable on every node, the cluster survives losing its leader,
/// and a stopped node comes back from its files and catches up.
@Suite(.serialized) struct RaftBackendTests {
    final class Cluster {
        let root: String
        var nodes: [NodeID: RaftBackend] = [:]
        var addresses: [NodeID: String] = [:]

        init(size: Int) throws {
            root =
                FileManager.default.temporaryDirectory.appendingPathComponent("coffer-raft-\(UUID().uuidString)").path
            for id in 1...NodeID(size) {
                try FileManager.default.createDirectory(atPath: "\(root)/n\(id)", withIntermediateDirectories: true)
                addresses[id] = "127.0.0.1:\(try Self.freePort())"
            }
            for id in addresses.keys.sorted() { try start(id) }
        }

        deinit {
            for node in nodes.values { node.close() }
            try? FileManager.default.removeItem(atPath: root)
        }

        func start(_ id: NodeID, join: Bool = false) throws {
            var options = RaftBackend.Options(
                nodeID: id,
                listen: addresses[id]!,
                peers: addresses,
                directory: "\(root)/n\(id)"
            )
            options.tickMilliseconds = 20
            options.writeTimeoutSeconds = 2
            // Small, so that a node that was down catches up by an installed snapshot.
            options.snapshotEvery = 16
            options.snapshotKeep = 4
            // The smallest chunks, so that every installed snapshot travels in many.
            options.snapshotChunkBytes = 1024
            options.join = join
            nodes[id] = try RaftBackend(options: options, local: try SQLiteBackend(path: "\(root)/n\(id)/data.db"))
        }

        func stop(_ id: NodeID) {
            nodes.removeValue(forKey: id)?.close()
        }

        /// The leader every running node agrees on, waiting up to `seconds`.
        func leader(within seconds: Double = 10) -> NodeID? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let views = nodes.values.map(\.currentStatus)
                if let first = views.first, first.leader != 0, views.allSatisfy({ $0.leader == first.leader }),
                    nodes[first.leader] != nil
                {
                    return first.leader
                }
                usleep(10_000)
            }
            return nil
        }

        /// Waits until `key` reads `value` on every running node.
        func converged(_ key: String, _ value: [UInt8]?, within seconds: Double = 10) throws -> Bool {
            try eventually(within: seconds) { try nodes.values.allSatisfy { try $0.get(key) == value } }
        }

        /// Waits until `condition` holds (checked every 10 ms); false if it did not within `seconds`.
        func eventually(within seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if try condition() { return true }
                usleep(10_000)
            }
            return false
        }

        /// A bare transport for node 2 on `port`, with no peers of its own: what a test's node sends to.
        static func peer(listeningOn port: Int, receive: @escaping TCPTransport.Receive) throws -> TCPTransport {
            try TCPTransport(
                nodeID: 2,
                listen: "127.0.0.1",
                port: port,
                peers: [:],
                receive: receive,
                unreachable: { _ in }
            )
        }

        /// Node 1's transport, sending to node 2 at `port` and ignoring what it receives.
        static func sender(to port: Int) throws -> TCPTransport {
            try TCPTransport(
                nodeID: 1,
                listen: "127.0.0.1",
                port: 0,
                peers: [2: "127.0.0.1:\(port)"],
                receive: { _ in },
                unreachable: { _ in }
            )
        }

        /// A loopback port below the kernel's ephemeral range, checked free and never handed out twice
        /// (as Tests/compat/ports.py): a port from binding port 0 lies in the range every outgoing
        /// connection draws from, and a test running alongside could take it before the node binds it.
        static func freePort() throws -> Int {
            let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
            let floor = range.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32768
            for _ in 0..<1000 {
                let port = Int.random(in: 20000..<max(floor, 20001))
                guard Self.handedOut.withLock({ $0.insert(port).inserted }) else { continue }
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                defer { close(fd) }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                address.sin_port = UInt16(port).bigEndian
                let bound = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                if bound == 0 { return port }
            }
            throw CofferError(.internal, "no free loopback port below the ephemeral range")
        }

        private static let handedOut = Mutex<Set<Int>>([])
    }

    @Test func aWriteThroughAnyNodeIsReadOnEveryNode() throws {
        let cluster = try Cluster(size: 3)
        let leader = try #require(cluster.leader())
        let follower = cluster.nodes.keys.first { $0 != leader }!
        try cluster.nodes[leader]!.put("logical/a", Array("from the leader".utf8))
        try cluster.nodes[follower]!.put("logical/b", Array("through a follower".utf8))
        #expect(try cluster.converged("logical/a", Array("from the leader".utf8)))
        #expect(try cluster.converged("logical/b", Array("through a follower".utf8)))
        // A write returned only after this node applied it: read-your-writes on the node written to.
        try cluster.nodes[follower]!.batch([.delete(key: "logical/a"), .put(key: "logical/c", value: [1])])
        #expect(try cluster.nodes[follower]!.get("logical/a") == nil)
        #expect(try cluster.nodes[follower]!.get("logical/c") == [1])
        #expect(try cluster.nodes[follower]!.list(prefix: "") == ["logical/"])
        try cluster.nodes[follower]!.readBarrier()
    }

    /// When a write returns, the node's applied index already includes it: cofferd answers a write with that
    /// index (X-Vault-Index), and a replica that waits for it must then see the write. Each write takes a
    /// new entry, so the index after each one is higher than after the one before.
    @Test func theAppliedIndexAfterAWriteIncludesIt() throws {
        let cluster = try Cluster(size: 3)
        let leader = try #require(cluster.leader())
        let node = cluster.nodes[leader]!
        var last = node.currentStatus.appliedIndex
        var stale = 0
        for i in 0..<200 {
            try node.put("logical/k", Array(String(i).utf8))
            let now = node.currentStatus.appliedIndex
            if now <= last { stale += 1 }
            last = now
        }
        #expect(stale == 0, "\(stale) of 200 writes returned before the applied index included them")
    }

    /// The returning node is 50 entries behind with snapshots every 16: it catches up by an installed
    /// snapshot, then the log.
    @Test func theClusterKeepsWritingWhenItsLeaderStopsAndTheLeaderCatchesUpOnReturn() throws {
        let cluster = try Cluster(size: 3)
        let first = try #require(cluster.leader())
        try cluster.nodes[first]!.put("logical/k", Array("1".utf8))
        #expect(try cluster.converged("logical/k", Array("1".utf8)))

        cluster.stop(first)
        let started = Date()
        let second = try #require(cluster.leader())
        #expect(second != first)
        try cluster.nodes[second]!.put("logical/k", Array("2".utf8))
        let failover = Date().timeIntervalSince(started)
        print(
            "raft backend: a new leader accepted a write \(Int(failover * 1000)) ms after the old one stopped (tick 20 ms)"
        )
        for i in 0..<50 { try cluster.nodes[second]!.put("logical/n\(i)", [UInt8(i)]) }

        try cluster.start(first)  // from its files
        #expect(try cluster.converged("logical/k", Array("2".utf8)))
        #expect(try cluster.converged("logical/n49", [49]))
        // Two nodes down: no quorum, and a write says so instead of hanging.
        let others = cluster.nodes.keys.filter { $0 != first }
        for id in others { cluster.stop(id) }
        #expect(throws: CofferError.self) { try cluster.nodes[first]!.put("logical/lost", [0]) }
    }

    /// A node stores its commit index only with the saves that sync (entries, a term, a vote), so after the
    /// last write of a run the stored index is behind what the node applied. The whole cluster, stopped
    /// and started again from its files, keeps every write and goes on writing through every node.
    @Test func aClusterRestartedFromItsFilesKeepsEveryWrite() throws {
        let cluster = try Cluster(size: 3)
        let leader = try #require(cluster.leader())
        for i in 0..<40 { try cluster.nodes[leader]!.put("logical/r\(i)", [UInt8(i)]) }
        #expect(try cluster.converged("logical/r39", [39]))
        for id in cluster.addresses.keys { cluster.stop(id) }
        var behind = 0
        for id in cluster.addresses.keys.sorted() {
            let store = try SQLiteLogStore(path: "\(cluster.root)/n\(id)/raft.db")
            let applied = try RaftBackend.readApplied(try SQLiteBackend(path: "\(cluster.root)/n\(id)/data.db"))
            if store.hardState.commit < applied { behind += 1 }
            store.close()
        }
        #expect(behind > 0, "no node's stored commit index was behind its applied one: the case is not exercised")

        for id in cluster.addresses.keys.sorted() { try cluster.start(id) }
        #expect(cluster.leader() != nil)
        for i in 0..<40 { #expect(try cluster.converged("logical/r\(i)", [UInt8(i)])) }
        for id in cluster.addresses.keys.sorted() {
            try cluster.nodes[id]!.put("logical/after-\(id)", [UInt8(id)])
            #expect(try cluster.converged("logical/after-\(id)", [UInt8(id)]))
        }
    }

    /// A fourth node joins as a learner, catches up (by snapshot) and reads locally, is promoted to
    /// voter; then a founding node is removed and the cluster goes on without it.
    @Test func membershipChanges() throws {
        let cluster = try Cluster(size: 3)
        let leader = try #require(cluster.leader())
        for i in 0..<40 { try cluster.nodes[leader]!.put("logical/k\(i)", [UInt8(i)]) }

        let port = try Cluster.freePort()
        cluster.addresses[4] = "127.0.0.1:\(port)"
        try FileManager.default.createDirectory(atPath: "\(cluster.root)/n4", withIntermediateDirectories: true)
        // The joiner knows only the leader's address and its own.
        var options = RaftBackend.Options(
            nodeID: 4,
            listen: cluster.addresses[4]!,
            peers: [leader: cluster.addresses[leader]!, 4: cluster.addresses[4]!],
            directory: "\(cluster.root)/n4"
        )
        options.join = true
        options.tickMilliseconds = 20
        cluster.nodes[4] = try RaftBackend(
            options: options,
            local: try SQLiteBackend(path: "\(cluster.root)/n4/data.db")
        )
        #expect(throws: CofferError.self) {
            try cluster.nodes[cluster.nodes.keys.first { $0 != leader && $0 != 4 }!]!.addPeer(
                4,
                address: "x:1",
                voter: false
            )
        }
        try cluster.nodes[leader]!.addPeer(4, address: cluster.addresses[4]!, voter: false)
        #expect(cluster.nodes[leader]!.currentStatus.learners == [4])
        #expect(try cluster.converged("logical/k39", [39]))
        // k39 is before the membership change in the log: the joiner may read it before it has applied
        // the change that names it a learner.
        #expect(cluster.eventually { cluster.nodes[4]!.currentStatus.learners == [4] })
        // A write through the learner is forwarded to the leader like any follower's.
        try cluster.nodes[4]!.put("logical/from-learner", [4])
        #expect(try cluster.converged("logical/from-learner", [4]))

        try cluster.nodes[leader]!.addPeer(4, address: cluster.addresses[4]!, voter: true)
        #expect(cluster.nodes[leader]!.currentStatus.voters.contains(4))

        let removed = cluster.nodes.keys.first { $0 != leader && $0 != 4 }!
        try cluster.nodes[leader]!.removePeer(removed)
        cluster.stop(removed)
        #expect(!cluster.nodes[leader]!.currentStatus.voters.contains(removed))
        try cluster.nodes[leader]!.put("logical/after", [1])
        #expect(try cluster.converged("logical/after", [1]))
        #expect(try cluster.nodes[4]!.list(prefix: "") == ["logical/"])
    }

    /// A follower that was down while the log moved past what the leader keeps catches up from a snapshot
    /// of 80 KB, sent in 1 KiB chunks between the leader's heartbeats, which keep it a follower meanwhile,
    /// and staged in a file as it arrives.
    @Test func aFollowerFarBehindCatchesUpFromASnapshotSentInChunks() throws {
        let cluster = try Cluster(size: 3)
        let leader = try #require(cluster.leader())
        let follower = cluster.nodes.keys.first { $0 != leader }!
        cluster.stop(follower)
        let value = [UInt8](repeating: 0x5A, count: 800)
        for i in 0..<100 { try cluster.nodes[leader]!.put("logical/big\(i)", value + [UInt8(i)]) }
        let term = cluster.nodes[leader]!.currentStatus.term
        // The leader's snapshots hold no copy of the data (its data file is the snapshot), and it has
        // compacted its log past what the follower has.
        let stored = try cluster.nodes[leader]!.storedSnapshot()
        #expect(stored.index >= 64 && stored.dataBytes == 0, "\(stored)")
        try cluster.start(follower)
        #expect(try cluster.converged("logical/big99", value + [99]))
        #expect(try cluster.converged("logical/big0", value + [0]))
        // The follower staged what it received in a file of its own, and its log's snapshot names the file.
        let received = try cluster.nodes[follower]!.storedSnapshot()
        let staged = try #require(received.staged)
        let file = "\(cluster.root)/n\(follower)/\(staged)"
        #expect(received.dataBytes < 100 && FileManager.default.fileExists(atPath: file))
        #expect(cluster.nodes[leader]!.currentStatus.term == term, "no election while the snapshot travelled")
        try cluster.nodes[follower]!.put("logical/after", [1])
        #expect(try cluster.converged("logical/after", [1]))

        // A crash after the snapshot was saved in the log but before the data file had it (its applied
        // index lost here) installs it again from the staged file on restart; a stale staged file (left by
        // a crash mid-stream) is deleted.
        cluster.stop(follower)
        let data = try SQLiteBackend(path: "\(cluster.root)/n\(follower)/data.db")
        try data.batch(
            try data.listRecursive(prefix: "logical/").map { StorageOperation.delete(key: $0) }
                + [.delete(key: RaftBackend.appliedKey)]
        )
        data.close()
        let leftover = "\(cluster.root)/n\(follower)/snapshot-staged-left-by-a-crash.db"
        #expect(FileManager.default.createFile(atPath: leftover, contents: Data([1, 2, 3])))
        try cluster.start(follower)
        #expect(try cluster.nodes[follower]!.get("logical/big7") == value + [7])
        #expect(try cluster.converged("logical/after", [1]))
        #expect(!FileManager.default.fileExists(atPath: leftover))
        // The file the log's snapshot names is kept.
        let kept = try cluster.nodes[follower]!.storedSnapshot().staged
        #expect(kept.map { FileManager.default.fileExists(atPath: "\(cluster.root)/n\(follower)/\($0)") } != false)
    }

    /// A snapshot message whose data merely has the form of a staged file's name (sent whole, not staged by
    /// the receiver) is dropped: the follower neither opens a file a peer names nor stops for a missing one.
    @Test func aPeerCannotNameTheFileAFollowerInstallsFrom() throws {
        let cluster = try Cluster(size: 3)
        let leader = try #require(cluster.leader())
        let follower = cluster.nodes.keys.first { $0 != leader }!
        try cluster.nodes[leader]!.put("logical/before", [1])
        #expect(try cluster.converged("logical/before", [1]))
        let status = cluster.nodes[follower]!.currentStatus
        let forged = Message(
            kind: .snapshot,
            to: follower,
            from: leader,
            term: status.term,
            snapshot: Snapshot(
                metadata: SnapshotMetadata(
                    index: status.commitIndex + 1000,
                    term: status.term,
                    confState: ConfState(voters: status.voters)
                ),
                data: StagedSnapshot.marker("snapshot-staged-../../nowhere.db")
            )
        )
        // One whole frame, as a peer may send it (the transport itself would send chunks, which are staged).
        let address = cluster.addresses[follower]!
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var peer = sockaddr_in()
        peer.sin_family = sa_family_t(AF_INET)
        peer.sin_addr.s_addr = inet_addr("127.0.0.1")
        peer.sin_port = UInt16(Int(address.split(separator: ":").last!)!).bigEndian
        let connected = withUnsafePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(connected == 0)
        let frame = try MessageCodec.encode(forged)
        #expect(frame.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == frame.count)
        usleep(300_000)
        try cluster.nodes[leader]!.put("logical/after", [2])
        #expect(try cluster.converged("logical/after", [2]), "the follower still applies what the leader sends")
        #expect(cluster.nodes[follower]!.currentStatus.appliedIndex < status.commitIndex + 1000)
    }

    /// A peer that restarts while this node's connection to it is idle receives the first message sent after
    /// its return. Followers write to each other only in an election, so a connection between them is often
    /// one the peer's previous process closed; the frames written into it were lost to the peer's reset,
    /// and with them the vote that would have ended a failover (which then waited out a second election
    /// timeout).
    @Test func theFirstMessageToAPeerThatRestartedArrives() throws {
        let port = try Cluster.freePort()
        let received = Mutex<[Message]>([])
        func startPeer() throws -> TCPTransport {
            try Cluster.peer(listeningOn: port) { message in received.withLock { $0.append(message) } }
        }
        func arrived(_ kind: MessageKind) -> Bool {
            let deadline = Date().addingTimeInterval(3)
            while Date() < deadline {
                if received.withLock({ $0.contains { $0.kind == kind } }) { return true }
                usleep(5_000)
            }
            return false
        }
        var peer = try startPeer()
        let node = try Cluster.sender(to: port)
        defer { node.shutdown() }
        node.send([Message(kind: .heartbeat, to: 2, from: 1, term: 1)])
        #expect(arrived(.heartbeat))
        peer.shutdown()
        usleep(50_000)
        peer = try startPeer()
        defer { peer.shutdown() }
        node.send([Message(kind: .preVote, to: 2, from: 1, term: 2, logTerm: 1, index: 1)])
        #expect(arrived(.preVote), "the first message after the peer's restart was lost")
    }

    /// Messages sent while the peer does not read fill the socket: the first go straight from the sending
    /// thread, a frame the socket took only part of is finished by the writer thread, and the rest wait in
    /// the queue. Once the peer reads, every message arrives whole and in order.
    @Test func messagesSentFasterThanThePeerReadsArriveWholeAndInOrder() throws {
        let port = try Cluster.freePort()
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(bound == 0 && listen(listener, 4) == 0)
        let node = try Cluster.sender(to: port)
        defer { node.shutdown() }
        // The writer makes the connection for the first message; it is idle before the burst.
        node.send([Message(kind: .heartbeat, to: 2, from: 1, term: 1)])
        let connection = accept(listener, nil, nil)
        #expect(connection >= 0)
        defer { close(connection) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer: [UInt8] = []
        var assembling = TCPTransport.Assembly()
        var received: [Message] = []
        func read(until count: Int) {
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while received.count < count {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(connection, $0.baseAddress, $0.count) }
                guard n > 0 else { return }
                buffer += chunk[0..<n]
                var start = 0
                while let (message, length) = try! TCPTransport.decode(buffer[start...], assembling: &assembling) {
                    start += length
                    if let message { received.append(message) }
                }
                buffer.removeFirst(start)
            }
        }
        read(until: 1)
        usleep(50_000)
        let count = 400
        let payload = (0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for i in 1...count {
            let entry = Entry(term: 1, index: UInt64(i), data: payload)
            node.send([Message(kind: .append, to: 2, from: 1, term: 1, index: UInt64(i - 1), entries: [entry])])
        }
        usleep(200_000)  // the socket is full: the sender never blocked, the writer waits
        read(until: count + 1)
        #expect(received.count == count + 1)
        let appends = received.dropFirst()
        #expect(appends.map { $0.entries.first?.index ?? 0 } == (1...UInt64(count)).map { $0 })
        #expect(appends.allSatisfy { $0.entries.first?.data == payload })
    }

    /// A sink that keeps what it is given, for the transport's staging of snapshot data.
    final class KeepingSink: SnapshotSink, @unchecked Sendable {
        var bytes: [UInt8] = []
        var finished = false
        var abandoned = false
        func write(_ piece: UnsafeRawBufferPointer) { bytes += piece }
        func finish() -> [UInt8] {
            finished = true
            return Array("kept".utf8)
        }
        func abandon() { abandoned = true }
    }

    /// A chunked message comes back whole, with other frames between its chunks, or, given a sink for
    /// snapshot data, with the data written to the sink as it arrives and the sink's answer as its data;
    /// chunk frames that are malformed, too large in sum, or do not end in one whole frame are refused.
    @Test func chunkFramesReassembleAndRefuseWhatCannotBeValid() throws {
        let snapshot = Message(
            kind: .snapshot,
            to: 2,
            from: 1,
            term: 3,
            snapshot: Snapshot(
                metadata: SnapshotMetadata(index: 9, term: 3, confState: ConfState(voters: [1, 2, 3])),
                data: [UInt8](repeating: 7, count: 5000)
            )
        )
        let heartbeat = Message(kind: .heartbeat, to: 2, from: 1, term: 3)
        let chunks = TCPTransport.chunks(of: try MessageCodec.encode(snapshot), size: 1024)
        #expect(chunks.count == 5)
        var stream: [UInt8] = []
        for chunk in chunks { stream += chunk + (try MessageCodec.encode(heartbeat)) }
        for staging in [false, true] {
            let sink = KeepingSink()
            var assembling = TCPTransport.Assembly()
            var received: [Message] = []
            var start = 0
            var stage: TCPTransport.Stage?
            if staging { stage = { _, count in count == 5000 ? sink : nil } }
            while let (message, length) = try TCPTransport.decode(
                stream[start...],
                assembling: &assembling,
                stage: stage
            ) {
                start += length
                if let message { received.append(message) }
            }
            #expect(start == stream.count && assembling.isEmpty)
            #expect(received.map(\.kind) == [.heartbeat, .heartbeat, .heartbeat, .heartbeat, .snapshot, .heartbeat])
            #expect(received[4].snapshot?.metadata == snapshot.snapshot?.metadata)
            #expect(received[4].snapshot?.data == (staging ? Array("kept".utf8) : snapshot.snapshot?.data))
            #expect(sink.bytes == (staging ? snapshot.snapshot!.data : []) && sink.finished == staging)
        }
        // A staged snapshot whose connection ends mid-way is abandoned.
        let sink = KeepingSink()
        var assembling = TCPTransport.Assembly()
        let stage: TCPTransport.Stage = { _, _ in sink }
        _ = try TCPTransport.decode(chunks[0][...], assembling: &assembling, stage: stage)
        #expect(!assembling.isEmpty && !sink.bytes.isEmpty)
        assembling.abandon()
        #expect(sink.abandoned && !sink.finished)

        var lastAlone = chunks[4]
        lastAlone[2] = 1
        for (bad, why) in [
            ([TCPTransport.chunkMagic, 9, 1, 0, 0, 0, 0], "unknown version"),
            ([TCPTransport.chunkMagic, MessageCodec.version, 1, 0x7F, 0xFF, 0xFF, 0xFF], "over"),
            (lastAlone, "not one whole frame"),
        ] {
            var scratch = TCPTransport.Assembly()
            do {
                _ = try TCPTransport.decode(bad[...], assembling: &scratch)
                Issue.record("accepted: \(why)")
            } catch {
                #expect(error.message.contains(why), "\(error.message)")
            }
        }
    }

    /// Snapshot data is produced while it is sent, a piece at a time, with heartbeats between its chunks;
    /// data that throws, or that is not the length it announced, ends its stream and is reported
    /// undelivered, and the next snapshot still arrives whole (the peer never takes the rest of a broken
    /// message for the start of the next).
    @Test func snapshotDataStreamsAndABrokenStreamIsNotTakenForTheNext() throws {
        struct Pattern: SnapshotData {
            let announced: Int
            let written: Int
            var fails = false
            func produce(start: (Int) -> Bool, write: (UnsafeRawBufferPointer) -> Bool) throws(CofferError) {
                guard start(announced) else { return }
                var sent = 0
                while sent < written {
                    if fails && sent >= written / 2 { throw CofferError(.io, "the disk went away") }
                    let piece = (0..<min(10_000, written - sent)).map { UInt8(truncatingIfNeeded: (sent + $0) % 251) }
                    guard piece.withUnsafeBytes(write) else { return }
                    sent += piece.count
                }
            }
        }
        let port = try Cluster.freePort()
        let received = Mutex<[Message]>([])
        let reports = Mutex<[Bool]>([])
        let peer = try Cluster.peer(listeningOn: port) { message in received.withLock { $0.append(message) } }
        defer { peer.shutdown() }
        let node = try TCPTransport(
            nodeID: 1,
            listen: "127.0.0.1",
            port: 0,
            peers: [2: "127.0.0.1:\(port)"],
            chunkBytes: 64 << 10,
            receive: { _ in },
            unreachable: { _ in },
            snapshotSent: { _, delivered in reports.withLock { $0.append(delivered) } }
        )
        defer { node.shutdown() }
        func snapshot(_ index: UInt64) -> Message {
            Message(
                kind: .snapshot,
                to: 2,
                from: 1,
                term: 3,
                snapshot: Snapshot(
                    metadata: SnapshotMetadata(index: index, term: 3, confState: ConfState(voters: [1, 2]))
                )
            )
        }
        func waitForReports(_ count: Int) -> [Bool] {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, reports.withLock({ $0.count }) < count { usleep(5_000) }
            return reports.withLock { $0 }
        }
        /// The snapshots received, once there are `count` (or after 5 s).
        func snapshotsReceived(_ count: Int) -> [Message] {
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline, received.withLock({ $0.filter { $0.kind == .snapshot }.count }) < count {
                usleep(5_000)
            }
            return received.withLock { $0.filter { $0.kind == .snapshot } }
        }
        let size = 3 << 20
        let expected = (0..<size).map { UInt8(truncatingIfNeeded: $0 % 251) }

        node.send(snapshot: snapshot(10), data: Pattern(announced: size, written: size))
        for _ in 0..<20 {
            node.send([Message(kind: .heartbeat, to: 2, from: 1, term: 3)])
            usleep(2_000)
        }
        #expect(waitForReports(1) == [true])
        let first = snapshotsReceived(1)
        #expect(
            first.count == 1 && first.first?.snapshot?.data == expected && first.first?.snapshot?.metadata.index == 10
        )

        node.send(snapshot: snapshot(11), data: Pattern(announced: size, written: size - 100_000))
        #expect(waitForReports(2) == [true, false], "a stream shorter than it said")
        node.send(snapshot: snapshot(12), data: Pattern(announced: size, written: size, fails: true))
        #expect(waitForReports(3) == [true, false, false], "a stream whose data could not be read")
        node.send(snapshot: snapshot(13), data: Pattern(announced: size, written: size))
        #expect(waitForReports(4) == [true, false, false, true])
        let all = snapshotsReceived(2)
        #expect(all.map { $0.snapshot?.metadata.index } == [10, 13])
        #expect(all.last?.snapshot?.data == expected)
        #expect(received.withLock { $0.contains { $0.kind == .heartbeat } })
    }

    /// A data file's frozen entries stream as the batch of puts that the follower installs.
    @Test func theStateStreamsAsOneBatchOfPuts() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-state-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let data = try SQLiteBackend(path: root.appendingPathComponent("data.db").path)
        defer { data.close() }
        var puts: [StorageOperation] = []
        for i in 0..<300 {
            // Values on both sides of the 64 KB pieces the stream gathers small entries into.
            let value = [UInt8](repeating: UInt8(i % 256), count: i % 50 == 0 ? 70_000 : i * 7)
            puts.append(.put(key: "logical/k\(String(i + 1000))", value: value))
        }
        try data.batch(puts)
        var streamed: [UInt8] = []
        var announced = -1
        try StateSnapshot(entries: data.freeze()).produce(
            start: { count in
                announced = count
                return true
            },
            write: { piece in
                streamed.append(contentsOf: piece)
                return true
            }
        )
        #expect(announced == streamed.count)
        #expect(streamed == BatchCodec.encode(id: 0, puts))
    }

    /// An operator's snapshot restores the state it was taken from on every node; a file cut short,
    /// altered or of another kind is refused and nothing changes.
    @Test func aSnapshotIsSavedAndRestoredOnEveryNode() throws {
        let cluster = try Cluster(size: 3)
        let leader = try #require(cluster.leader())
        let follower = cluster.nodes.keys.first { $0 != leader }!
        for i in 0..<20 { try cluster.nodes[leader]!.put("logical/s\(i)", Array("v\(i)".utf8)) }
        let file = try cluster.nodes[follower]!.saveSnapshot()
        let header = String(decoding: file.prefix(while: { $0 != 10 }), as: UTF8.self)
        #expect(header.hasPrefix("coffer-raft-snapshot version=1 index="))
        #expect(header.contains(" keys=20 "))

        try cluster.nodes[leader]!.put("logical/s0", Array("changed".utf8))
        try cluster.nodes[leader]!.put("logical/new", [1])
        try cluster.nodes[leader]!.delete("logical/s5")

        var altered = file
        altered[altered.count - 3] ^= 1
        for (bad, why) in [
            (Array(file.prefix(file.count - 10)), "SHA-256"), (altered, "SHA-256"),
            (Array("hello\nworld".utf8), "not a Coffer Raft snapshot"),
            (
                Array(
                    String(decoding: file, as: UTF8.self).replacingOccurrences(of: "version=1", with: "version=9").utf8
                ), "version 9"
            ),
        ] {
            do {
                try cluster.nodes[leader]!.restoreSnapshot(bad)
                Issue.record("a bad snapshot was restored")
            } catch {
                #expect(error.message.contains(why), "\(error.message)")
            }
        }
        #expect(try cluster.nodes[leader]!.get("logical/new") == [1])

        try cluster.nodes[leader]!.restoreSnapshot(file)
        #expect(try cluster.converged("logical/s0", Array("v0".utf8)))
        #expect(try cluster.converged("logical/s5", Array("v5".utf8)))
        #expect(try cluster.converged("logical/new", nil))
        // The cluster's own membership survived the restore, and it still takes writes.
        #expect(cluster.nodes[leader]!.currentStatus.voters.count == 3)
        try cluster.nodes[follower]!.put("logical/after", [2])
        #expect(try cluster.converged("logical/after", [2]))

        // The file lists the keys in the order of their bytes. One that lists them in another order (as
        // files saved before that did) restores too: every node checks its state against the canonical form.
        let newline = try #require(file.firstIndex(of: 10))
        let operations = try BatchCodec.decode(Array(file[(newline + 1)...])).operations
        #expect(operations.map(\.key) == operations.map(\.key).sorted() && operations.count == 20)
        let reversed = BatchCodec.encode(id: 0, operations.reversed())
        let hex = Digest.sha256(reversed).map { String(format: "%02x", $0) }.joined()
        let reorderedHeader = header.replacingOccurrences(
            of: #"sha256=[0-9a-f]+"#,
            with: "sha256=\(hex)",
            options: .regularExpression
        )
        try cluster.nodes[leader]!.put("logical/s1", Array("changed again".utf8))
        try cluster.nodes[leader]!.restoreSnapshot(Array((reorderedHeader + "\n").utf8) + reversed)
        #expect(try cluster.converged("logical/s1", Array("v1".utf8)))
        #expect(try cluster.converged("logical/after", nil))
        try cluster.nodes[follower]!.put("logical/after-second", [3])
        #expect(try cluster.converged("logical/after-second", [3]), "every node still serves after the restore")
    }

    /// A replicated batch that is cut short or has a byte changed never traps: it decodes or throws.
    @Test func aDamagedBatchNeverTraps() throws {
        let batch = BatchCodec.encode(
            id: 7,
            [.put(key: "logical/a", value: Array(repeating: 9, count: 300)), .delete(key: "b")]
        )
        let (id, operations, replacing) = try BatchCodec.decode(batch)
        #expect(replacing == nil)
        #expect(id == 7)
        #expect(operations.count == 2)
        for length in 0..<batch.count {
            #expect(throws: BatchCodec.Malformed.self) { try BatchCodec.decode(Array(batch.prefix(length))) }
        }
        var rng = SplitMix64(seed: 5)
        for _ in 0..<2000 {
            var damaged = batch
            damaged[Int(rng.next() % UInt64(damaged.count))] = UInt8(truncatingIfNeeded: rng.next())
            _ = try? BatchCodec.decode(damaged)
        }
    }
}
