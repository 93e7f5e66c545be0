package import CofferCore
import CofferStorage
package import Raft

#if canImport(Glibc)
import Glibc
#endif

/// Replicated storage: a ``PhysicalBackend`` whose writes go through Raft and are applied on every
/// node to that node's own backend (its SQLite data file), so the barrier above encrypts before
/// anything is replicated and only ciphertext crosses the network.
///
/// One thread per node runs the ``RawNode`` (ticks, messages, proposals), persists each ``Ready`` in
/// the ``SQLiteLogStore`` before sending its messages, applies committed batches, and takes a
/// snapshot of the data every ``Options/snapshotEvery`` entries. A write on any node is proposed
/// (a follower forwards it to the leader inside Raft) and returns once this node applied it, so a
/// write that returned is committed on a majority and visible in this node's reads. Reads are
/// local: a follower may be behind the leader by what it has not applied yet; ``readBarrier`` waits
/// until this node has applied everything committed when it was called (ReadIndex), for a
/// linearizable read.
///
/// The applied index is stored in the data file in the same transaction as each batch (key
/// ``appliedKey``), so a restart neither loses nor repeats an entry.
package final class RaftBackend: PhysicalBackend, @unchecked Sendable {
    package struct Options: Sendable {
        package var nodeID: NodeID
        /// Where this node listens for its peers ("127.0.0.1:8201"; port 0 picks one, see ``clusterPort``).
        package var listen: String
        /// Every founding voter, this node included: id → cluster address (this node's is what the others
        /// dial, which is ``listen`` unless the node is behind a proxy).
        package var peers: [NodeID: String]
        /// Holds `raft.db`.
        package var directory: String
        package var tickMilliseconds = 50
        package var electionTicks = 10
        package var snapshotEvery: UInt64 = 8192
        /// Entries kept below a snapshot, so a follower slightly behind catches up from the log.
        package var snapshotKeep: UInt64 = 1024
        /// The size of the chunks a snapshot travels in to a follower.
        package var snapshotChunkBytes = 1 << 20
        /// A node joining a running cluster: with an empty log it does not found one, and waits for the
        /// leader to add it with ``RaftBackend/addPeer(_:address:voter:)`` (``awaitingAdmission``).
        package var join = false
        /// How long a write waits to be applied before it answers "unavailable" (it may still commit).
        package var writeTimeoutSeconds = 5.0
        /// Refuse writes (with ``RaftBackend/standbyWrite``) unless this node is active: the leader, with
        /// everything committed before its term applied. cofferd's cluster mode sets it, so that only
        /// the active node's core writes (a standby's request is sent whole to the active node, since
        /// two cores reading and then writing the same keys would lose updates).
        package var writesOnlyWhenActive = false
        /// Mutual TLS between the nodes (their certificates and the cluster's CA); nil: plain TCP.
        package var tls: TCPTransport.TLS?
        /// Called on the node's thread whenever ``Status/isActive`` or the leader changes.
        package var onStatusChange: (@Sendable (Status) -> Void)?
        /// Receives the Raft core's decisions (elections, votes, step-downs) and the node's snapshots, on the
        /// thread that runs the node at the time (its own, or a guest: ``runAsGuest(until:)``).
        package var logger: (any RaftLogger & Sendable)?

        package init(nodeID: NodeID, listen: String, peers: [NodeID: String], directory: String) {
            self.nodeID = nodeID
            self.listen = listen
            self.peers = peers
            self.directory = directory
        }
    }

    /// What the node knows of the cluster right now.
    package struct Status: Sendable, Equatable {
        package var leader: NodeID
        package var term: UInt64
        package var isLeader: Bool
        package var commitIndex: UInt64
        package var appliedIndex: UInt64
        package var voters: [NodeID]
        package var learners: [NodeID] = []
        /// The term of the last entry applied here.
        package var appliedTerm: UInt64 = 0
        /// The leader's replication progress per peer (match index), on the leader only.
        package var matched: [NodeID: UInt64] = [:]

        /// The leader, once it has applied an entry of its own term (the empty entry each new leader
        /// appends): everything committed before it is applied here, so its reads are current.
        package var isActive: Bool { isLeader && appliedTerm == term && term > 0 }
    }

    /// What a write on a node that is not active throws when ``Options/writesOnlyWhenActive`` is set.
    package static let standbyWrite = CofferError(
        .unavailable,
        "this node is a standby: writes go to the active node"
    )

    package static let appliedKey = ".raft/applied"
    /// `.raft/peers/<id>` holds each member's cluster address, replicated like any data, so that every
    /// node (and one restarted or restored from a snapshot) knows where its peers are.
    package static let peersPrefix = ".raft/peers/"

    package let typeName = "raft"
    package let options: Options
    private let local: any PhysicalBackend
    private let store: SQLiteLogStore
    /// Used only by the thread that holds the turn (``turnHeld``; replaced once, by ``found()``).
    private var node: RawNode
    /// Whether ``node`` is the leader, from the last Ready that said (the turn's holder only).
    private var leading = false
    private var transport: TCPTransport!
    /// Condition 0 (``waiters``): callers waiting for a result; condition 1 (``loopWork``): the node's thread,
    /// waiting for work. Apart, a message for the loop does not wake every waiting write as well.
    private let monitor = Monitor(conditions: 2)
    private static let waiters = 0
    private static let loopWork = 1

    // Guarded by `monitor`.
    private var inbox: [Message] = []
    private var proposals: [(id: UInt64, data: [UInt8])] = []
    private var results: [UInt64: Result<Void, CofferError>] = [:]
    private var waiting: Set<UInt64> = []
    private var readRequests: [UInt64] = []
    private var confChanges: [ConfChange] = []
    /// Work that must run between two applies (a consistent read of the whole state).
    private var tasks: [() -> Void] = []
    private var confChangeErrors: [NodeID: CofferError] = [:]
    private var readIndexes: [UInt64: UInt64] = [:]
    /// ReadIndex requests still waiting for their index, and those a leader change ended.
    private var pendingReads: Set<UInt64> = []
    private var failedReads: Set<UInt64> = []
    private var unreachable: [NodeID] = []
    /// Files a snapshot from the leader is being staged in, or was staged in and not yet stepped
    /// (``stage()``): never deleted as stale.
    private var staging: Set<String> = []
    /// Snapshots the transport finished sending (or gave up on), for `reportSnapshot`.
    private var snapshotsSent: [(peer: NodeID, delivered: Bool)] = []
    /// When a message from each peer last arrived (monotonic nanoseconds): autopilot's "last contact".
    private var heard: [NodeID: UInt64] = [:]
    private var running = true
    private var stopped = false
    /// A thread is running the node (``runTurn()``): the node's own thread, or a thread that brought it
    /// work and found it idle (``runAsGuest(until:)``). Only the holder touches `node`, the log store
    /// and the data file's writer; taking and giving back the turn under the monitor orders one
    /// holder's changes before the next one's.
    private var turnHeld = false
    /// When the node ticks next (monotonic nanoseconds).
    private var nextTick: UInt64 = 0
    private var tickNanos: UInt64 { UInt64(options.tickMilliseconds) * 1_000_000 }
    /// Status changes for ``Options/onStatusChange``, which only the node's own thread calls (a guest
    /// may be a writer in the middle of a request, holding what the callback needs).
    private var statusNotices: [Status] = []
    /// Proposal and ReadIndex ids. They start at a random point in each process, so that ids from
    /// before a restart (an old proposal that commits late, an old read the leader still holds) never
    /// answer a request made after it, and ids of different nodes do not meet.
    private var nextID = UInt64.random(in: 1..<(1 << 62))
    private var status: Status
    private var failure: CofferError?
    private var awaitingAdmissionFlag: Bool

    /// Opens (or founds) this node: its log in `options.directory/raft.db`, its data in `local`. A node
    /// with an empty log founds the cluster with `options.peers` as voters, as every founding member
    /// does with the same list.
    package init(options: Options, local: any PhysicalBackend) throws(CofferError) {
        guard options.nodeID != 0, options.peers[options.nodeID] != nil else {
            throw CofferError(
                .invalidArgument,
                "node id \(options.nodeID) must be one of the peers \(options.peers.keys.sorted())"
            )
        }
        self.options = options
        self.local = local
        store = try SQLiteLogStore(path: options.directory + "/raft.db")
        var empty = false
        do {
            empty = try store.lastIndex() == 0 && store.snapshot().isEmpty
            if !options.join, empty {
                try store.save(snapshot: Self.founding(options.peers), hardState: HardState(term: 1, commit: 1))
            }
            var applied = try Self.readApplied(local)
            let snapshot = try store.snapshot()
            if applied < snapshot.metadata.index {
                // A snapshot was received but its state not (wholly) installed before a crash. One this node
                // took holds no data: its data file was synced through that index first, so it cannot be
                // behind it unless the file was replaced.
                guard !snapshot.data.isEmpty else {
                    throw CofferError(
                        .corruptDatabase,
                        "node \(options.nodeID)'s data file is at index \(applied), behind its log's snapshot at \(snapshot.metadata.index): it was replaced or lost writes; remove the node's directory and add it again to copy the data from the cluster"
                    )
                }
                try Self.restore(local, from: snapshot, directory: options.directory)
                applied = snapshot.metadata.index
            }
            // The stored commit index can be behind what this node applied (it is written only with the
            // saves that sync); an entry this node applied was committed, so it starts from there.
            if applied > store.hardState.commit, applied <= (try store.lastIndex()) {
                var hardState = store.hardState
                hardState.commit = applied
                try store.save(hardState: hardState)
            }
            node = try RawNode(config: Self.config(options, applied: applied), storage: store)
            status = Status(leader: 0, term: 0, isLeader: false, commitIndex: 0, appliedIndex: applied, voters: [])
            awaitingAdmissionFlag = options.join && empty
        } catch let error as RaftError {
            store.close()
            throw CofferError(.internal, "cannot start Raft node \(options.nodeID): \(error.message)")
        } catch let error as CofferError {
            store.close()
            throw error
        } catch {
            store.close()
            throw CofferError(.internal, "cannot start Raft node \(options.nodeID): \(error)")
        }
        guard let colon = options.listen.lastIndex(of: ":"),
            let port = Int(options.listen[options.listen.index(after: colon)...])
        else {
            store.close()
            throw CofferError(.invalidArgument, "the cluster address \"\(options.listen)\" is not host:port")
        }
        do {
            transport = try TCPTransport(
                nodeID: options.nodeID,
                listen: String(options.listen[..<colon]),
                port: port,
                peers: options.peers,
                tls: options.tls,
                chunkBytes: options.snapshotChunkBytes,
                receive: { [weak self] message in self?.deliver(message) },
                unreachable: { [weak self] peer in self?.markUnreachable(peer) },
                snapshotSent: { [weak self] peer, delivered in self?.markSnapshotSent(peer, delivered) },
                stage: { [weak self] _, _ in self?.stage() }
            )
        } catch {
            store.close()
            throw CofferError(.unavailable, error.message)
        }
        syncPeers()
        removeStaleStagedFiles()
        guard startThread({ [self] in loop() }) != nil else {
            transport.shutdown()
            store.close()
            throw CofferError(.internal, "cannot start the Raft node's thread")
        }
    }

    /// Started with ``Options/join`` and an empty log: not a member until a leader adds it, or until
    /// ``found()`` makes it a cluster of its own.
    package var awaitingAdmission: Bool { monitor.withLock { awaitingAdmissionFlag && status.appliedIndex == 0 } }

    private static func config(_ options: Options, applied: UInt64) -> Config {
        var config = Config(id: options.nodeID)
        config.electionTicks = options.electionTicks
        config.applied = applied
        config.randomSeed = options.nodeID &* 0x9E37_79B9 ^ monotonicNanos()
        config.logger = options.logger
        return config
    }

    /// The first state of a cluster founded by `peers`: its snapshot names them as voters and holds
    /// only their addresses.
    private static func founding(_ peers: [NodeID: String]) -> Snapshot {
        Snapshot(
            metadata: SnapshotMetadata(index: 1, term: 1, confState: ConfState(voters: Array(peers.keys))),
            data: BatchCodec.encode(
                id: 0,
                peers.map { .put(key: peersPrefix + String($0.key), value: Array($0.value.utf8)) }
            )
        )
    }

    /// Makes a node that is awaiting admission the founder of a cluster of its own (what `sys/init`
    /// does on a node no cluster has admitted) and returns once it is active.
    package func found() throws(CofferError) {
        let result = runOnLoop { [self] () throws(CofferError) -> [UInt8] in
            guard awaitingAdmission else { return [] }
            let founding = Self.founding([options.nodeID: options.peers[options.nodeID] ?? options.listen])
            do {
                try store.save(snapshot: founding, hardState: HardState(term: 1, commit: 1))
                try Self.restore(local, from: founding, directory: options.directory)
                node = try RawNode(config: Self.config(options, applied: 1), storage: store)
                node.campaign()
            } catch let error as CofferError {
                throw error
            } catch {
                throw CofferError(.internal, "cannot found a cluster on node \(options.nodeID): \(error)")
            }
            monitor.withLock {
                awaitingAdmissionFlag = false
                status.appliedIndex = 1
                status.appliedTerm = 1
            }
            return []
        }
        _ = try result.get()
        let deadline = monotonicNanos() + UInt64(options.writeTimeoutSeconds * 1e9)
        guard monitor.wait(until: deadline, { status.isActive || !running }), running else {
            throw CofferError(
                .unavailable,
                "the new cluster did not elect this node within \(options.writeTimeoutSeconds) s"
            )
        }
    }

    /// The port the transport listens on (useful when ``Options/listen`` asked for port 0).
    package var clusterPort: Int { transport.port }

    /// Points this node at a peer's new address (a restarted peer that listens elsewhere).
    package func setPeerAddress(_ id: NodeID, _ address: String) throws(CofferError) {
        do { try transport.setPeer(id, address: address) } catch { throw CofferError(.invalidArgument, error.message) }
    }

    package var currentStatus: Status { monitor.withLock { status } }

    // MARK: PhysicalBackend

    package var changes: ChangeFeed { local.changes }

    package func get(_ key: String) throws(CofferError) -> [UInt8]? {
        do { return try local.get(key) } catch { throw why(error) }
    }

    package func list(prefix: String) throws(CofferError) -> [String] {
        do { return hideApplied(prefix, try local.list(prefix: prefix)) } catch { throw why(error) }
    }

    package func list(prefix: String, limit: Int) throws(CofferError) -> [String] {
        do { return hideApplied(prefix, try local.list(prefix: prefix, limit: limit)) } catch { throw why(error) }
    }

    /// A read failed: when the node stopped on a storage failure, that failure is the reason (the data
    /// file is closed by then).
    private func why(_ error: CofferError) -> CofferError {
        monitor.withLock { failure } ?? error
    }

    package func put(_ key: String, _ value: [UInt8]) throws(CofferError) { try batch([.put(key: key, value: value)]) }

    package func delete(_ key: String) throws(CofferError) { try batch([.delete(key: key)]) }

    package func batch(_ operations: [StorageOperation]) throws(CofferError) {
        guard !operations.isEmpty else { return }
        if options.writesOnlyWhenActive, !currentStatus.isActive { throw Self.standbyWrite }
        try propose(operations, replacing: nil)
    }

    /// A write of Raft's own bookkeeping (a member's addresses), taken on any node.
    package func bookkeeping(_ operations: [StorageOperation]) throws(CofferError) {
        guard operations.allSatisfy({ $0.key.hasPrefix(".raft/") }) else {
            throw CofferError(.internal, "Raft bookkeeping writes only keys under .raft/")
        }
        try propose(operations, replacing: nil)
    }

    /// Proposes a batch and waits until this node applied it.
    private func propose(_ operations: [StorageOperation], replacing digest: [UInt8]?) throws(CofferError) {
        let deadline = monotonicNanos() + UInt64(options.writeTimeoutSeconds * 1e9)
        let id: UInt64 = try monitor.withLock { () throws(CofferError) -> UInt64 in
            if let failure { throw failure }
            guard running else { throw CofferError(.unavailable, "the Raft node is stopped") }
            nextID &+= 1
            let id = nextID
            proposals.append((id, BatchCodec.encode(id: id, operations, replacing: digest)))
            waiting.insert(id)
            return id
        }
        runAsGuest(until: { results[id] != nil })
        _ = monitor.wait(until: deadline) { results[id] != nil || !running }
        let result = monitor.withLock {
            waiting.remove(id)
            return results.removeValue(forKey: id)
        }
        switch result {
        case .success: return
        case .failure(let error): throw error
        case nil:
            throw CofferError(
                .unavailable,
                "the write was not applied within \(options.writeTimeoutSeconds) s (no quorum, or the leader changed); it may still be committed"
            )
        }
    }

    /// Returns once this node has applied every entry that was committed when it was called (a
    /// ReadIndex round with the leader), so a read after it is linearizable.
    package func readBarrier() throws(CofferError) {
        let deadline = monotonicNanos() + UInt64(options.writeTimeoutSeconds * 1e9)
        let id: UInt64? = monitor.withLock {
            // With no leader known the request would wait out its timeout for nothing: the caller retries.
            guard status.leader != 0 else { return nil }
            nextID &+= 1
            let id = nextID
            readRequests.append(id)
            pendingReads.insert(id)
            return id
        }
        guard let id else { throw CofferError(.unavailable, "no leader is known now to confirm a read; retry") }
        monitor.broadcast(Self.loopWork)
        let done = monitor.wait(until: deadline) {
            guard let index = readIndexes[id] else { return !running || failedReads.contains(id) }
            return status.appliedIndex >= index
        }
        let (failed, confirmed) = monitor.withLock {
            pendingReads.remove(id)
            return (failedReads.remove(id) != nil, readIndexes.removeValue(forKey: id) != nil)
        }
        if failed && !confirmed {
            throw CofferError(.unavailable, "the leader changed before it confirmed the read; retry")
        }
        guard done, running else {
            throw CofferError(.unavailable, "no leader confirmed the read within \(options.writeTimeoutSeconds) s")
        }
    }

    package func close() {
        let wasRunning = monitor.withLock {
            let was = running
            running = false
            return was
        }
        guard wasRunning else { return }
        monitor.broadcast(Self.loopWork)
        monitor.broadcast(Self.waiters)
        transport.shutdown()
        // The loop closes the log store and the data file when it sees `running` false.
        _ = monitor.wait(until: monotonicNanos() + 5_000_000_000) { stopped }
    }

    // MARK: Operator snapshots

    /// The first line of a snapshot file.
    package static let snapshotMagic = "coffer-raft-snapshot"

    /// The whole replicated state (outside `.raft/`) as a self-describing, versioned file: a text
    /// header `coffer-raft-snapshot version=1 index=I term=T keys=K sha256=HEX`, a newline, then the
    /// data (``canonicalState(_:)``). Linearizable (a ReadIndex round first) and consistent: the data file
    /// is frozen between two applies, and read off the node's thread, which a large state would otherwise
    /// keep from its heartbeats.
    package func saveSnapshot() throws(CofferError) -> [UInt8] {
        try readBarrier()
        let frozen = runOnLoop { [self] () throws(CofferError) -> (any FrozenEntries, Status) in
            (try local.freeze(), monitor.withLock { self.status })
        }
        let (entries, status) = try frozen.get()
        let (body, count) = try Self.canonicalState(entries)
        let digest = Digest.sha256(body).map { String($0, radix: 16).leftPadded(2) }.joined()
        let header =
            "\(Self.snapshotMagic) version=1 index=\(status.appliedIndex) term=\(status.term) keys=\(count) sha256=\(digest)\n"
        return Array(header.utf8) + body
    }

    /// Replaces the cluster's whole state (outside `.raft/`) with a file from ``saveSnapshot()``,
    /// through the log: every node applies it and checks that its state then has the file's digest
    /// (a node that does not stops rather than serve other data). Returns once this node applied it.
    /// A file that is not a snapshot, of another version, cut short or altered is refused, and
    /// nothing changes.
    package func restoreSnapshot(_ file: [UInt8]) throws(CofferError) {
        guard let newline = file.firstIndex(of: 10), newline < 512 else {
            throw CofferError(.invalidArgument, "not a Coffer Raft snapshot (no header line)")
        }
        let fields = String(decoding: file[..<newline], as: UTF8.self).split(separator: " ")
        guard fields.first.map(String.init) == Self.snapshotMagic else {
            throw CofferError(
                .invalidArgument,
                "not a Coffer Raft snapshot (the header does not start with \(Self.snapshotMagic))"
            )
        }
        var header: [String: String] = [:]
        for field in fields.dropFirst() {
            let pair = field.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { header[String(pair[0])] = String(pair[1]) }
        }
        guard header["version"] == "1" else {
            throw CofferError(
                .invalidArgument,
                "snapshot version \(header["version"] ?? "none") is not one this Coffer reads (1)"
            )
        }
        let body = Array(file[(newline + 1)...])
        let digest = Digest.sha256(body)
        guard digest.map({ String($0, radix: 16).leftPadded(2) }).joined() == header["sha256"] else {
            throw CofferError(.integrity, "the snapshot's data does not match its SHA-256: it is cut short or altered")
        }
        let operations: [StorageOperation]
        do {
            operations = try BatchCodec.decode(body).operations
        } catch {
            throw CofferError(.invalidArgument, "the snapshot's data is not readable: \(error.message)")
        }
        guard !operations.contains(where: { $0.key.hasPrefix(".raft/") }) else {
            throw CofferError(.invalidArgument, "the snapshot holds Raft's own keys; it was not made by saveSnapshot")
        }
        // Every node checks its state against the canonical form's digest, which is the file's own for a
        // file saved since saveSnapshot wrote that form (earlier ones listed the keys in another order).
        let canonical = operations.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        try propose(operations, replacing: Digest.sha256(BatchCodec.encode(id: 0, canonical)))
    }

    /// The index of the latest snapshot in this node's log, how many bytes of data it holds, and the file it
    /// was staged in: no data for one this node took; for one received from a leader, the file's name (or,
    /// over a backend other than SQLite, the whole state).
    package func storedSnapshot() throws(CofferError) -> (index: UInt64, dataBytes: Int, staged: String?) {
        let result = runOnLoop { [store] () throws(CofferError) -> (index: UInt64, dataBytes: Int, staged: String?) in
            let snapshot: Snapshot
            do { snapshot = try store.snapshot() } catch { throw CofferError(.internal, "\(error)") }
            return (snapshot.metadata.index, snapshot.data.count, StagedSnapshot.stagedName(snapshot.data))
        }
        return try result.get()
    }

    /// Runs `body` on the thread that runs the node, between two applies, and waits for its result.
    private func runOnLoop<T>(_ body: @escaping () throws(CofferError) -> T) -> Result<T, CofferError> {
        let box = ResultBox<T>()
        monitor.withLock {
            tasks.append { [self] in
                let result = Result { () throws(CofferError) -> T in try body() }
                monitor.withLock { box.result = result }
                monitor.broadcast(Self.waiters)
            }
        }
        monitor.broadcast(Self.loopWork)
        let deadline = monotonicNanos() + UInt64(options.writeTimeoutSeconds * 1e9)
        _ = monitor.wait(until: deadline) { box.result != nil || !running }
        return monitor.withLock { box.result }
            ?? .failure(CofferError(.unavailable, "the Raft node is stopped or busy"))
    }

    // MARK: Membership (on the leader)

    /// Adds node `id`, listening at `address`, as a learner (it receives the log but does not vote:
    /// an embedded replica, or a voter-to-be catching up) or as a voter. Its address is replicated
    /// first, so every member can reach it, then the change is proposed; returns once this node has
    /// applied it. Only the leader takes membership changes.
    package func addPeer(_ id: NodeID, address: String, voter: Bool) throws(CofferError) {
        try requireLeader()
        guard id != 0 else { throw CofferError(.invalidArgument, "node id 0 is reserved") }
        try bookkeeping([.put(key: Self.peersPrefix + String(id), value: Array(address.utf8))])
        try changeMembership(ConfChange(voter ? .addVoter : .addLearner, id)) { conf in
            voter ? conf.voters.contains(id) : conf.learners.contains(id)
        }
    }

    /// Removes node `id` from the cluster (it stops receiving the log; shut it down).
    package func removePeer(_ id: NodeID) throws(CofferError) {
        try requireLeader()
        try changeMembership(ConfChange(.removeNode, id)) { conf in
            !conf.voters.contains(id) && !conf.learners.contains(id)
        }
        try bookkeeping([.delete(key: Self.peersPrefix + String(id))])
    }

    /// When a message from node `id` last arrived here (monotonic nanoseconds), if one did since start.
    package func lastHeard(from id: NodeID) -> UInt64? { monitor.withLock { heard[id] } }

    /// Waits up to `seconds` for this node to be active (a new leader applying its first entry).
    package func waitUntilActive(seconds: Double) -> Bool {
        let deadline = monotonicNanos() + UInt64(max(0, min(seconds, 60)) * 1e9)
        return monitor.wait(until: deadline) { status.isActive || !running } && currentStatus.isActive
    }

    /// On the leader: hands leadership to the voter whose log is the most up to date (`sys/step-down`).
    /// Returns once the transfer started; the new leader takes over within an election timeout.
    package func stepDown() throws(CofferError) {
        try requireLeader()
        let result = runOnLoop { [self] () throws(CofferError) -> [UInt8] in
            let status = node.status
            let target = status.progress.filter { $0.key != options.nodeID && node.confState.voters.contains($0.key) }
                .max { $0.value.match < $1.value.match }?.key
            guard let target else {
                throw CofferError(.unavailable, "no other voter to hand leadership to")
            }
            node.transferLeadership(to: target)
            return []
        }
        _ = try result.get()
    }

    private func requireLeader() throws(CofferError) {
        let status = currentStatus
        guard status.isLeader else {
            throw CofferError(
                .unavailable,
                status.leader == 0
                    ? "no leader is known: membership cannot change now"
                    : "node \(options.nodeID) is not the leader; send membership changes to node \(status.leader)"
            )
        }
    }

    private func changeMembership(
        _ change: ConfChange,
        done: @escaping (Status) -> Bool
    ) throws(CofferError) {
        monitor.withLock {
            confChangeErrors[change.nodeID] = nil
            confChanges.append(change)
        }
        monitor.broadcast(Self.loopWork)
        let deadline = monotonicNanos() + UInt64(options.writeTimeoutSeconds * 1e9)
        let finished = monitor.wait(until: deadline) {
            confChangeErrors[change.nodeID] != nil || done(status) || !running
        }
        if let error = monitor.withLock({ confChangeErrors.removeValue(forKey: change.nodeID) }) { throw error }
        guard finished, running else {
            throw CofferError(
                .unavailable,
                "the membership change was not applied within \(options.writeTimeoutSeconds) s; it may still be"
            )
        }
    }

    /// Points the transport at every member whose address the data file holds (and drops the others).
    private func syncPeers() {
        guard let transport, let names = try? local.list(prefix: Self.peersPrefix) else { return }
        var known: Set<NodeID> = []
        for name in names {
            guard let id = NodeID(name), id != options.nodeID,
                let bytes = try? local.get(Self.peersPrefix + name)
            else { continue }
            known.insert(id)
            try? transport.setPeerIfChanged(id, address: String(decoding: bytes, as: UTF8.self))
        }
        // A joiner has no addresses in its data until the leader's snapshot arrives: until then it keeps
        // the ones it was started with.
        if !names.isEmpty { transport.keepOnly(known) }
    }

    // MARK: Running the node

    private func deliver(_ message: Message) {
        let now = monotonicNanos()
        monitor.withLock {
            // A snapshot names a staged file only when this node staged it: a peer's message whose data merely
            // looks like that name (a whole frame, not chunks) must not make the node open a file of its choice.
            if let data = message.snapshot?.data, let name = StagedSnapshot.stagedName(data), !staging.contains(name) {
                return
            }
            inbox.append(message)
            heard[message.from] = now
        }
        runAsGuest()
    }

    private func markUnreachable(_ peer: NodeID) {
        monitor.withLock { unreachable.append(peer) }
        monitor.broadcast(Self.loopWork)
    }

    private func markSnapshotSent(_ peer: NodeID, _ delivered: Bool) {
        monitor.withLock { snapshotsSent.append((peer, delivered)) }
        monitor.broadcast(Self.loopWork)
    }

    /// Whether work waits for the node (under the monitor).
    private var hasWork: Bool {
        !inbox.isEmpty || !proposals.isEmpty || !readRequests.isEmpty || !unreachable.isEmpty
            || !confChanges.isEmpty || !tasks.isEmpty || !snapshotsSent.isEmpty
    }

    /// Whether the node's own thread has something to do once the turn is free (under the monitor).
    private var nodeThreadWanted: Bool {
        !running || hasWork || !statusNotices.isEmpty || monotonicNanos() >= nextTick
    }

    /// The node's own thread: it ticks the node, and runs what no guest took (``runAsGuest(until:)``).
    private func loop() {
        monitor.withLock { nextTick = monotonicNanos() + tickNanos }
        while true {
            // While a guest holds the turn, it wakes this thread when it gives the turn back with work
            // left; the deadline is only a backstop.
            let deadline = monitor.withLock { turnHeld ? monotonicNanos() + tickNanos : nextTick }
            guard monitor.wait(until: deadline, on: Self.loopWork, { !turnHeld && nodeThreadWanted }) else { continue }
            let (turn, notices) = monitor.withLock { () -> (Bool?, [Status]) in
                guard !turnHeld else { return (false, []) }
                defer { statusNotices.removeAll() }
                guard running else { return (nil, statusNotices) }
                turnHeld = true
                return (true, statusNotices)
            }
            for notice in notices { options.onStatusChange?(notice) }
            guard let turn else { break }
            guard turn else { continue }
            runTurn()
            monitor.withLock { turnHeld = false }
        }
        transport.shutdown()
        store.close()
        local.close()
        monitor.withLock { stopped = true }
        monitor.broadcast()
    }

    /// Runs the node on the calling thread (a transport reader that brought a message, a writer that
    /// brought a proposal) when no other thread is running it, so the work is done where it arrived,
    /// without waking the node's thread for it and being woken back (docs/raft.md, "Work done where it
    /// arrives"). Runs while work remains, for at most ``guestTurns`` turns or until `done()` (checked
    /// under the monitor) holds, then leaves what remains to the node's thread.
    private func runAsGuest(until done: () -> Bool = { false }) {
        let took = monitor.withLock { () -> Bool in
            guard running, !turnHeld else { return false }  // the holder sees this work before it lets go
            turnHeld = true
            return true
        }
        guard took else { return }
        var turns = 0
        while true {
            runTurn()
            turns += 1
            let (again, wake) = monitor.withLock { () -> (Bool, Bool) in
                if running, hasWork, turns < Self.guestTurns, !done() { return (true, false) }
                turnHeld = false
                return (false, nodeThreadWanted)
            }
            if again { continue }
            if wake { monitor.broadcast(Self.loopWork) }
            return
        }
    }

    private static let guestTurns = 4

    /// One turn: steps what arrived, ticks when a tick is due, and handles the Ready. On a failure to
    /// store, stops the node (``running`` false; the node's thread then closes it).
    private func runTurn() {
        let (messages, proposed, reads, down, changes, work, sent, tickDue) = monitor.withLock {
            defer {
                inbox.removeAll()
                proposals.removeAll()
                readRequests.removeAll()
                unreachable.removeAll()
                confChanges.removeAll()
                tasks.removeAll()
                snapshotsSent.removeAll()
            }
            let now = monotonicNanos()
            let due = now >= nextTick
            if due { nextTick = now + tickNanos }
            return (inbox, proposals, readRequests, unreachable, confChanges, tasks, snapshotsSent, due)
        }
        for task in work { task() }
        var stepped: [String] = []  // staged snapshots
        for message in messages {
            try? node.step(message)  // a message no correct peer sends is dropped
            if let data = message.snapshot?.data, let name = StagedSnapshot.stagedName(data) {
                stepped.append(name)
            }
        }
        // Stepped, a staged snapshot is either the core's (and saved as the log's snapshot by the next
        // Ready) or refused: its file is no longer kept for its own sake.
        if !stepped.isEmpty { monitor.withLock { staging.subtract(stepped) } }
        for peer in Set(down) { node.reportUnreachable(peer) }
        for report in sent { node.reportSnapshot(report.peer, succeeded: report.delivered) }
        for proposal in proposed {
            do {
                try node.propose(proposal.data)
            } catch {
                finish(proposal.id, .failure(CofferError(.unavailable, "the write was not accepted: \(error.message)")))
            }
        }
        for id in reads { node.readIndex(context: BatchCodec.idBytes(id)) }
        for change in changes {
            do {
                try node.proposeConfChange(change)
            } catch {
                let failure = CofferError(.invalidArgument, "the membership change was refused: \(error.message)")
                monitor.withLock { confChangeErrors[change.nodeID] = failure }
                monitor.broadcast()
            }
        }
        if tickDue { node.tick() }
        do {
            try processReady()
            if !stepped.isEmpty { removeStaleStagedFiles() }
            let applied = monitor.withLock { status.appliedIndex }
            // The stored snapshot may also be one just received from the leader.
            let lastSnapshot = (try? store.snapshot().metadata.index) ?? 0
            if applied >= lastSnapshot + options.snapshotEvery { try snapshot(at: applied, node.confState) }
        } catch {
            // The log or the data file cannot be written: this node must not go on (it would
            // acknowledge what it has not stored). Every waiting write fails with the reason.
            monitor.withLock {
                failure = error
                running = false
                for id in waiting { results[id] = .failure(error) }
            }
            monitor.broadcast()
        }
    }

    private func processReady() throws(CofferError) {
        while node.hasReady {
            let rd = node.ready()
            if let soft = rd.softState { leading = soft.role == .leader }
            // A leader sends before its own write is durable, so its fsync overlaps the followers' (the
            // Raft thesis, 10.2.1: an entry commits once a majority stored it, whichever majority; the
            // leader counts itself only after this save, since it steps no message before it returns).
            // Any other node's messages (votes, acknowledgements) promise what it has stored: after.
            if leading { send(rd.messages) }
            if rd.mustSync || rd.snapshot != nil || !rd.entries.isEmpty {
                try store.save(snapshot: rd.snapshot, entries: rd.entries, hardState: rd.hardState, sync: rd.mustSync)
            } else if let hardState = rd.hardState {
                store.noteCommit(hardState)  // only the commit index moved: not worth a transaction
            }
            if !leading { send(rd.messages) }
            var (applied, appliedTerm) = monitor.withLock { (status.appliedIndex, status.appliedTerm) }
            var done: [UInt64] = []  // this node's writes applied by this Ready
            if let snapshot = rd.snapshot, !snapshot.isEmpty {
                let started = monotonicNanos()
                try Self.restore(local, from: snapshot, directory: options.directory)
                options.logger?.log(
                    .info,
                    "\(options.nodeID) installed the state at \(snapshot.metadata.index) in \((monotonicNanos() - started) / 1_000_000) ms"
                )
                applied = snapshot.metadata.index
                appliedTerm = snapshot.metadata.term
                syncPeers()
            }
            for entry in rd.committedEntries where entry.index > applied {
                if entry.kind == .normal && !entry.data.isEmpty {
                    let id: UInt64
                    let operations: [StorageOperation]
                    let replacing: [UInt8]?
                    do {
                        (id, operations, replacing) = try BatchCodec.decode(entry.data)
                    } catch {
                        throw CofferError(
                            .corruptDatabase,
                            "Raft entry \(entry.index) is not a storage batch: \(error.message)"
                        )
                    }
                    let deletes =
                        try replacing == nil
                        ? [] : Self.keys(local, raft: false).map { StorageOperation.delete(key: $0) }
                    try local.batch(
                        deletes + operations + [.put(key: Self.appliedKey, value: Self.encodeIndex(entry.index))]
                    )
                    if let replacing, try Self.stateDigest(local) != replacing {
                        // This node would serve other data than its peers: stop it rather than diverge.
                        throw CofferError(
                            .corruptDatabase,
                            "node \(options.nodeID)'s state after restoring the snapshot in entry \(entry.index) differs from the snapshot"
                        )
                    }
                    if operations.contains(where: { $0.key.hasPrefix(Self.peersPrefix) }) { syncPeers() }
                    done.append(id)  // its waiter learns it with the applied index, below
                } else {
                    try local.put(Self.appliedKey, Self.encodeIndex(entry.index))
                }
                applied = entry.index
                appliedTerm = entry.term
            }
            let soft = node.status
            let (before, after) = monitor.withLock {
                let before = status
                // A write's result and the applied index that includes it are published together: a
                // caller that reports the index it wrote at (X-Vault-Index) must never see an older one.
                for id in done where waiting.contains(id) { results[id] = .success(()) }
                if status.leader != 0 && soft.softState.leader != status.leader {
                    // The leader changed: a write proposed through the old one may be lost with it, and
                    // waiting out the timeout would stall the client for nothing. Say so now; the client
                    // retries on the new leader. (Proposals are never re-sent: a late duplicate could
                    // overwrite a newer value.)
                    for id in pendingReads where readIndexes[id] == nil { failedReads.insert(id) }
                    for id in waiting where results[id] == nil {
                        results[id] = .failure(
                            CofferError(
                                .unavailable,
                                "the leader changed while the write was in flight; it may or may not have been committed"
                            )
                        )
                    }
                }
                status.appliedIndex = applied
                status.appliedTerm = appliedTerm
                status.matched = soft.progress.mapValues(\.match)
                status.leader = soft.softState.leader
                status.isLeader = soft.softState.role == .leader
                status.term = soft.hardState.term
                status.commitIndex = soft.hardState.commit
                for read in rd.readStates {
                    if let id = BatchCodec.id(from: read.context) { readIndexes[id] = read.index }
                }
                return (before, status)
            }
            if options.onStatusChange != nil, before.isActive != after.isActive || before.leader != after.leader {
                monitor.withLock { statusNotices.append(after) }  // the node's thread calls it (``loop()``)
            }
            node.advance(rd)
            // Membership changes take effect in `advance`.
            let conf = node.confState
            let changed = monitor.withLock {
                defer {
                    status.voters = conf.voters
                    status.learners = conf.learners
                }
                return status.voters != conf.voters || status.learners != conf.learners
            }
            if changed, applied > ((try? store.snapshot().metadata.index) ?? 0) {
                // A new member may need a snapshot, and one taken before it joined would be refused by
                // it: take one now that names it.
                try snapshot(at: applied, conf)
            }
            // Waiters look at results, the status (but not at a peer's progress alone, which every
            // acknowledgement moves) and read indexes.
            var was = before
            var now = after
            (was.matched, now.matched) = ([:], [:])
            if !done.isEmpty || changed || was != now || !rd.readStates.isEmpty { monitor.broadcast(Self.waiters) }
        }
    }

    /// Makes the data file the snapshot at `index` (it is there or past it) and compacts the log below it.
    /// The snapshot holds no copy of the data: the data file is synced through `index`, so it can never be
    /// behind the log again, and what a follower needs is read from it when it is sent
    /// (``send(_:)``).
    private func snapshot(at index: UInt64, _ confState: ConfState) throws(CofferError) {
        let started = monotonicNanos()
        try local.sync()
        let synced = monotonicNanos()
        try store.createSnapshot(at: index, confState: confState, data: [], keep: options.snapshotKeep)
        removeStaleStagedFiles()
        let ms = { (from: UInt64, to: UInt64) in (to - from) / 1_000_000 }
        options.logger?.log(
            .info,
            "\(options.nodeID) snapshot at \(index): \(ms(started, synced)) ms to sync the data file, \(ms(synced, monotonicNanos())) ms to compact the log"
        )
    }

    /// Sends `messages`. A snapshot goes as the data file's state now, not the stored snapshot's (which
    /// holds no data): its applied index, that entry's term and the membership then (membership changes
    /// take effect as they are applied, and this runs before the Ready's entries are). The file is frozen
    /// here, between two applies, and read as it is sent, off this thread. The follower then
    /// continues from there, as after any snapshot.
    private func send(_ messages: [Message]) {
        transport.send(messages.filter { $0.kind != .snapshot })
        for message in messages where message.kind == .snapshot {
            let started = monotonicNanos()
            let index = monitor.withLock { status.appliedIndex }
            let entries: any FrozenEntries
            let term: UInt64
            do {
                entries = try local.freeze()
                term = try store.term(at: index)
            } catch {
                options.logger?.log(.warning, "\(options.nodeID) cannot send its state to \(message.to): \(error)")
                markSnapshotSent(message.to, false)
                continue
            }
            node.sendingSnapshot(message.to, at: index)
            var out = message
            out.snapshot = Snapshot(metadata: SnapshotMetadata(index: index, term: term, confState: node.confState))
            transport.send(snapshot: out, data: StateSnapshot(entries: entries))
            options.logger?.log(
                .info,
                "\(options.nodeID) sends its state at \(index) to \(message.to) (\((monotonicNanos() - started) / 1_000) µs to start)"
            )
        }
    }

    /// A sink for a snapshot arriving from the leader (called on a transport reader's thread): its entries
    /// go into a file in the node's directory as they arrive, and the delivered message names the file.
    /// Only over an SQLite data file, whose entries are then replaced with the file's in one statement;
    /// over another backend the message is reassembled in memory.
    private func stage() -> (any SnapshotSink)? {
        guard local is SQLiteBackend else { return nil }
        let name = "\(Self.stagedPrefix)\(String(UInt64.random(in: 0...UInt64.max), radix: 16)).db"
        monitor.withLock { _ = staging.insert(name) }
        do {
            return try StagedSnapshot(directory: options.directory, name: name) { [weak self] name in
                self?.monitor.withLock { _ = self?.staging.remove(name) }
            }
        } catch {
            monitor.withLock { _ = staging.remove(name) }
            options.logger?.log(.warning, "\(options.nodeID) cannot stage a snapshot: \(error.message)")
            return nil
        }
    }

    private static let stagedPrefix = "snapshot-staged-"

    /// Deletes the files of staged snapshots that are neither the log's snapshot nor still in use
    /// (``staging``): left by a crash, refused by the core, or replaced by a newer snapshot.
    private func removeStaleStagedFiles() {
        let keep = (try? store.snapshot()).flatMap { StagedSnapshot.stagedName($0.data) }
        let inUse = monitor.withLock { staging }
        let stale = (directoryEntries(options.directory) ?? []).filter {
            $0.hasPrefix(Self.stagedPrefix) && $0 != keep && !inUse.contains($0)
        }
        for name in stale { unlink(options.directory + "/" + name) }
    }

    private func finish(_ id: UInt64, _ result: Result<Void, CofferError>) {
        let waited = monitor.withLock {
            guard waiting.contains(id) else { return false }
            results[id] = result
            return true
        }
        if waited { monitor.broadcast(Self.waiters) }
    }

    // MARK: The data file

    private func hideApplied(_ prefix: String, _ names: [String]) -> [String] {
        prefix.isEmpty ? names.filter { $0 != ".raft/" } : names
    }

    private static func encodeIndex(_ index: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: index >> (56 - 8 * UInt64($0))) }
    }

    static func readApplied(_ local: any PhysicalBackend) throws(CofferError) -> UInt64 {
        guard let bytes = try local.get(appliedKey) else { return 0 }
        guard bytes.count == 8 else {
            throw CofferError(.corruptDatabase, "the applied Raft index in the data file is damaged")
        }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Every key of the data file, in a fixed order (the same keys list the same way on every node);
    /// with `raft` false, without Raft's own keys (`.raft/`).
    static func keys(_ local: any PhysicalBackend, raft: Bool = true) throws(CofferError) -> [String] {
        var keys: [String] = []
        var folders = [""]
        while let folder = folders.popLast() {
            for name in try local.list(prefix: folder) {
                if !raft && folder.isEmpty && name == ".raft/" { continue }
                if name.hasSuffix("/") { folders.append(folder + name) } else { keys.append(folder + name) }
            }
        }
        return keys
    }

    /// The entries outside `.raft/`, in the order of their keys' bytes, as one batch of puts (the data of an
    /// operator's snapshot), and how many there are.
    static func canonicalState(_ entries: any FrozenEntries) throws(CofferError) -> (body: [UInt8], count: Int) {
        var puts: [UInt8] = []
        var count = 0
        try entries.scan { key, value in
            if !key.starts(with: ".raft/".utf8) {
                BatchCodec.put(key: key, valueBytes: value.count, &puts)
                puts.append(contentsOf: value)
                count += 1
            }
            return true
        }
        var body: [UInt8] = []
        body.reserveCapacity(BatchCodec.headerBytes(count: count) + puts.count)
        BatchCodec.header(id: 0, count: count, &body)
        body += puts
        return (body, count)
    }

    /// The SHA-256 of the data file's state outside `.raft/` (``canonicalState(_:)``): equal on nodes that
    /// hold the same data.
    static func stateDigest(_ local: any PhysicalBackend) throws(CofferError) -> [UInt8] {
        Digest.sha256(try canonicalState(local.freeze()).body)
    }

    /// Replaces the data file's contents with a snapshot's, in one transaction: the entries of the file it
    /// was staged in (in `directory`), or those in its data.
    static func restore(_ local: any PhysicalBackend, from snapshot: Snapshot, directory: String) throws(CofferError) {
        let applied = StorageOperation.put(key: appliedKey, value: encodeIndex(snapshot.metadata.index))
        if let name = StagedSnapshot.stagedName(snapshot.data) {
            let path = directory + "/" + name
            guard let sqlite = local as? SQLiteBackend, access(path, R_OK) == 0 else {
                throw CofferError(
                    .corruptDatabase,
                    "the snapshot at \(snapshot.metadata.index) was staged in \(path), which is gone: remove the node's directory and add it again to copy the data from the cluster"
                )
            }
            return try sqlite.replaceAll(withEntriesOf: path, then: [applied])
        }
        let puts: [StorageOperation]
        do {
            puts = try BatchCodec.decode(snapshot.data).operations
        } catch {
            throw CofferError(
                .corruptDatabase,
                "Raft snapshot \(snapshot.metadata.index) is not readable: \(error.message)"
            )
        }
        let deletes = try keys(local).map { StorageOperation.delete(key: $0) }
        try local.batch(deletes + puts + [applied])
    }
}

/// The bytes of a replicated storage batch: version 1, the proposal id (8 bytes), then each operation
/// as a tag (0 put, 1 delete), the key and (for a put) the value, lengths as LEB128 varints. The
/// decoder checks every length against what remains and never traps.
enum BatchCodec {
    struct Malformed: Error {
        let message: String
    }

    static func idBytes(_ id: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: id >> (56 - 8 * UInt64($0))) }
    }

    static func id(from bytes: [UInt8]) -> UInt64? {
        bytes.count == 8 ? bytes.reduce(0) { $0 << 8 | UInt64($1) } : nil
    }

    /// `replacing`: the batch is a restored snapshot: it replaces every key outside `.raft/`, and each
    /// node checks that its state then has this SHA-256 (``RaftBackend/stateDigest(_:)``).
    static func encode(id: UInt64, _ operations: [StorageOperation], replacing digest: [UInt8]? = nil) -> [UInt8] {
        var out: [UInt8] = []
        if let digest {
            out = [2] + idBytes(id) + digest
            varint(UInt64(operations.count), &out)
        } else {
            header(id: id, count: operations.count, &out)
        }
        for operation in operations {
            switch operation {
            case .put(let key, let value):
                out.append(0)
                bytes(Array(key.utf8), &out)
                bytes(value, &out)
            case .delete(let key):
                out.append(1)
                bytes(Array(key.utf8), &out)
            }
        }
        return out
    }

    /// The start of a batch of `count` operations (version 1), before the operations.
    static func header(id: UInt64, count: Int, _ out: inout [UInt8]) {
        out.append(1)
        out += idBytes(id)
        varint(UInt64(count), &out)
    }

    /// The bytes before `header` for `count` operations.
    static func headerBytes(count: Int) -> Int { 9 + varintBytes(UInt64(count)) }

    /// The bytes of a put of a `key`-byte key and a `value`-byte value.
    static func putBytes(key: Int, value: Int) -> Int {
        1 + varintBytes(UInt64(key)) + key + varintBytes(UInt64(value)) + value
    }

    /// A put up to its value, which the caller appends (`valueBytes` long).
    static func put(key: UnsafeRawBufferPointer, valueBytes: Int, _ out: inout [UInt8]) {
        out.append(0)
        varint(UInt64(key.count), &out)
        out.append(contentsOf: key)
        varint(UInt64(valueBytes), &out)
    }

    static func decode(
        _ data: [UInt8]
    ) throws(Malformed) -> (id: UInt64, operations: [StorageOperation], replacing: [UInt8]?) {
        var i = 0
        func byte() throws(Malformed) -> UInt8 {
            guard i < data.count else { throw Malformed(message: "truncated at byte \(i)") }
            defer { i += 1 }
            return data[i]
        }
        func readVarint() throws(Malformed) -> UInt64 {
            var value: UInt64 = 0
            for shift in stride(from: 0, to: 64, by: 7) {
                let b = try byte()
                value |= UInt64(b & 0x7F) << UInt64(shift)
                if b & 0x80 == 0 { return value }
            }
            throw Malformed(message: "a length at byte \(i) is too long")
        }
        func readBytes() throws(Malformed) -> [UInt8] {
            let count = try readVarint()
            guard count <= UInt64(data.count - i) else {
                throw Malformed(message: "a length at byte \(i) runs past the end")
            }
            defer { i += Int(count) }
            return Array(data[i..<i + Int(count)])
        }
        let version = try byte()
        guard version == 1 || version == 2 else { throw Malformed(message: "unknown batch version \(version)") }
        var id: UInt64 = 0
        for _ in 0..<8 { id = id << 8 | UInt64(try byte()) }
        var digest: [UInt8]?
        if version == 2 {
            var d: [UInt8] = []
            for _ in 0..<32 { d.append(try byte()) }
            digest = d
        }
        let count = try readVarint()
        guard count <= UInt64(data.count - i) else { throw Malformed(message: "\(count) operations cannot fit") }
        var operations: [StorageOperation] = []
        operations.reserveCapacity(Int(count))
        for _ in 0..<count {
            let tag = try byte()
            let key = String(decoding: try readBytes(), as: UTF8.self)
            switch tag {
            case 0: operations.append(.put(key: key, value: try readBytes()))
            case 1: operations.append(.delete(key: key))
            default: throw Malformed(message: "unknown operation \(tag)")
            }
        }
        guard i == data.count else { throw Malformed(message: "\(data.count - i) trailing bytes") }
        return (id, operations, digest)
    }

    private static func varintBytes(_ value: UInt64) -> Int {
        var n = 1
        var v = value
        while v >= 0x80 {
            v >>= 7
            n += 1
        }
        return n
    }

    private static func varint(_ value: UInt64, _ out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private static func bytes(_ b: [UInt8], _ out: inout [UInt8]) {
        varint(UInt64(b.count), &out)
        out += b
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, CofferError>?
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
