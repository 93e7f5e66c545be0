package import CofferCore
package import CofferRaft
package import CofferStorage
package import CofferVault
import Engines
import Raft
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How a node takes part in a replicated cluster: cofferd's `storage "raft" { ... }`.
public struct RaftConfiguration: Sendable {
    /// The node's directory: `coffer.db` (its replica of the encrypted data) and `raft.db` (its log).
    public var path: String
    /// The operator's name for this node, unique in the cluster (OpenBao's `node_id`).
    public var nodeName: String
    /// Where the other nodes reach this one's Raft transport ("127.0.0.1:8201").
    public var clusterAddress: String
    /// Where this node's Raft transport listens, when not at ``clusterAddress`` (a node behind a proxy
    /// or NAT: OpenBao's listener `cluster_address`).
    public var listenAddress: String?
    /// Where clients, and requests forwarded by standbys, reach this node ("http://127.0.0.1:8200").
    public var apiAddress: String
    /// The API addresses of nodes to ask to join, tried in turn until one admits this node. Empty:
    /// a node with no log founds a cluster of its own.
    public var retryJoin: [String] = []
    /// Join as a learner that never votes (an embedded replica).
    public var nonVoter = false
    /// One Raft tick; an election starts after 10-20 ticks without a leader.
    public var tickMilliseconds = 30
    /// Mutual TLS between the nodes' Raft ports: this node's certificate and key, and the cluster's CA
    /// (PEM files). Every node presents its certificate and accepts only peers whose certificate chains
    /// to the CA. All three or none (plain TCP, for a trusted network only).
    public var tlsCertFile: String?
    public var tlsKeyFile: String?
    public var tlsCAFile: String?
    /// A PEM file with the CA of the other nodes' `https://` API certificates (OpenBao's
    /// `retry_join { leader_ca_cert_file }`), trusted for joining and for the requests a standby sends
    /// on to the active node; nil: the system's trust store.
    public var leaderCACertFile: String?
    /// PEM files of the certificate and key this node presents to the other nodes' APIs when they ask
    /// for a client certificate (OpenBao's `retry_join { leader_client_cert_file, leader_client_key_file }`),
    /// for joining and for the requests a standby sends on. Both or neither.
    public var leaderClientCertFile: String?
    public var leaderClientKeyFile: String?
    /// Called when an attempt to reach a `retry_join` address fails, with the reason (nothing secret):
    /// once per distinct reason, not on every retry. The joiner keeps trying either way.
    public var onJoinFailure: (@Sendable (String) -> Void)?
    /// Called with what the node's Raft core decides (elections, votes, step-downs, a leader deposed), with
    /// each snapshot it takes (how long the node paused for it), each time it starts sending a follower the
    /// whole state and each time it installs one; `isWarning` marks what an operator should look at. Node
    /// ids, terms, indexes, sizes and durations only: nothing secret.
    public var onRaftEvent: (@Sendable (_ message: String, _ isWarning: Bool) -> Void)?

    public init(path: String, nodeName: String, clusterAddress: String, apiAddress: String) {
        self.path = path
        self.nodeName = nodeName
        self.clusterAddress = clusterAddress
        self.apiAddress = apiAddress
    }
}

/// A vault's membership of a Raft cluster: the ``RaftBackend`` under its storage, the names and
/// addresses of the members, joining, and what the core and the HTTP layer ask of the cluster
/// (``ClusterView``). docs/raft.md describes the design.
///
/// The active node is the Raft leader once it has applied an entry of its own term. Only it writes:
/// a standby's core refuses writes (``RaftBackend/standbyWrite``) and the request goes whole to the
/// active node (``WireResult/forward``), because two cores that each read, then write, the same keys
/// would lose updates. Standbys answer reads from their replica, whose caches the applied log keeps
/// current through the storage change feed.
package final class RaftCluster: ClusterView, @unchecked Sendable {
    package let configuration: RaftConfiguration
    package let backend: RaftBackend
    let nodeID: NodeID
    /// Set once by ``attach(_:)``, before the vault is shared.
    private(set) weak var core: Core?
    private let activeSince = Mutex<Timestamp?>(nil)
    /// Joining: what the active node sent, and the unseal shares entered here meanwhile.
    private let joining = Mutex<JoinState?>(nil)
    /// Challenges this node (as the active node) handed out: name → nonce, with their time.
    private let challenges = Mutex<[String: (nonce: [UInt8], issued: UInt64)]>([:])
    private let stopping = Atomic<Bool>(false)
    /// The highest index the active node answered a forwarded request at.
    let lastWriteIndex = Mutex<UInt64>(0)
    /// Whether this node asks to join as a voter (`non_voter` of the configuration or of the join request).
    private let joinAsVoter: Mutex<Bool>
    /// Whether the thread that joins (``startJoining(_:)``) runs.
    private let joinThread = Mutex(false)
    /// PEM of the CA trusted for the other nodes' API (``RaftConfiguration/leaderCACertFile``, or the
    /// `leader_ca_cert` of a join request); nil: the system's trust store.
    private let apiCA: Mutex<String?>
    /// The certificate and key presented to the other nodes' APIs (``RaftConfiguration/leaderClientCertFile``,
    /// or the `leader_client_cert` and `leader_client_key` of a join request); nil: none.
    private let apiClientIdentity: Mutex<HTTPClient.ClientIdentity?>
    /// Connections to the active node kept between forwarded requests: a write through a standby
    /// skips the connect and the TLS handshake (the client certificate's signature included).
    private let forwarding = HTTPClient.ConnectionPool()
    /// What autopilot's passes on this node remember while it is active (``autopilotPass()``).
    private let pilot = Mutex(Pilot())

    struct Pilot {
        /// The term this node became active in, and when (monotonic nanoseconds).
        var term: UInt64 = 0
        var since: UInt64 = 0
        /// Since when each member has been healthy without a break: monotonic, and wall clock.
        var healthySince: [NodeID: (monotonic: UInt64, wall: Timestamp)] = [:]
    }

    struct JoinState {
        var leader: String
        var challenge: [UInt8]
        var rootKeyBlob: [UInt8]
        var sealConfig: SealConfig
        var shares: [SecureBytes] = []
        var nonce = Random.uuid()
        /// The unseal key the shares combined to, kept until the replica arrives and the core unseals.
        var unsealKey: SecureBytes?
        var admitted = false
    }

    /// `.raft/nodes/<id>`: each member's name and addresses, replicated like the data.
    static let nodesPrefix = ".raft/nodes/"

    /// The Raft id of a node name: FNV-1a, 62 bits, never 0.
    static func nodeID(_ name: String) -> NodeID {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return max(1, hash >> 2)
    }

    /// Opens this node's log and replica: a node with a log restarts; one without founds a cluster
    /// of its own when it has nowhere to join, else waits to be admitted (``startJoining(_:)``).
    package init(_ configuration: RaftConfiguration) throws(CofferError) {
        guard !configuration.nodeName.isEmpty, configuration.nodeName.utf8.count <= 128,
            configuration.nodeName.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) })
        else {
            throw CofferError(
                .invalidArgument,
                "node_id \"\(configuration.nodeName)\" must be 1-128 letters, digits, '-', '_' or '.'"
            )
        }
        self.configuration = configuration
        nodeID = Self.nodeID(configuration.nodeName)
        joinAsVoter = Mutex(!configuration.nonVoter)
        apiCA = Mutex(
            try configuration.leaderCACertFile.map { (file) throws(CofferError) in
                String(decoding: try Self.readPEM(file, "leader CA (leader_ca_cert_file)"), as: UTF8.self)
            }
        )
        switch (configuration.leaderClientCertFile, configuration.leaderClientKeyFile) {
        case (let certificate?, let key?):
            let certificatePEM = try Self.readPEM(certificate, "leader client certificate (leader_client_cert_file)")
            var keyBytes = try Self.readPEM(key, "leader client key (leader_client_key_file)")
            defer { keyBytes.wipe() }
            apiClientIdentity = Mutex(
                HTTPClient.ClientIdentity(
                    certificatePEM: String(decoding: certificatePEM, as: UTF8.self),
                    keyPEM: SecureBytes(keyBytes)
                )
            )
        case (nil, nil): apiClientIdentity = Mutex(nil)
        default:
            throw CofferError(.invalidArgument, "leader_client_cert_file and leader_client_key_file go together")
        }
        if mkdir(configuration.path, 0o700) != 0 && errno != EEXIST {
            throw CofferError(
                .io,
                "cannot create the raft directory \(configuration.path): \(String(cString: strerror(errno)))"
            )
        }
        var options = RaftBackend.Options(
            nodeID: nodeID,
            listen: configuration.listenAddress ?? configuration.clusterAddress,
            peers: [nodeID: configuration.clusterAddress],
            directory: configuration.path
        )
        options.tickMilliseconds = configuration.tickMilliseconds
        // A node with an empty log founds a cluster at `sys/init`, or is admitted into one.
        options.join = true
        options.writesOnlyWhenActive = true
        options.tls = try Self.transportTLS(configuration)
        let me = (nodeID, configuration.nodeName)
        let events = configuration.onRaftEvent.map { RaftEventRelay($0, node: me) }
        options.logger = events
        let relay = StatusRelay()
        options.onStatusChange = { status in relay.target?.statusChanged(status) }
        let data = try SQLiteBackend(path: configuration.path + "/coffer.db")
        // The Raft log makes every entry durable before it is applied here.
        try data.durableElsewhere()
        backend = try RaftBackend(options: options, local: data)
        relay.target = self
        events?.cluster = self
    }

    /// The certificate, key and CA files of ``RaftConfiguration``, read; nil when none is given.
    static func transportTLS(_ configuration: RaftConfiguration) throws(CofferError) -> TCPTransport.TLS? {
        let files = [configuration.tlsCertFile, configuration.tlsKeyFile, configuration.tlsCAFile]
        if files.allSatisfy({ $0 == nil }) { return nil }
        guard let cert = files[0], let key = files[1], let ca = files[2] else {
            throw CofferError(
                .invalidArgument,
                "mutual TLS between nodes needs all of tls_cert_file, tls_key_file and tls_ca_file"
            )
        }
        var keyBytes = try readPEM(key, "node key")
        defer { keyBytes.wipe() }
        return TCPTransport.TLS(
            certificatePEM: try readPEM(cert, "node certificate"),
            keyPEM: SecureBytes(keyBytes),
            caPEM: try readPEM(ca, "cluster CA")
        )
    }

    /// A PEM file of at most 1 MiB; the error names `what` and the path.
    static func readPEM(_ path: String, _ what: String) throws(CofferError) -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw CofferError(
                .invalidArgument,
                "cannot read the \(what) \(path): \(String(cString: strerror(errno)))"
            )
        }
        defer { fclose(file) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n == 0 { break }
            out += chunk[0..<n]
            if out.count > 1 << 20 { throw CofferError(.invalidArgument, "the \(what) \(path) is over 1 MiB") }
        }
        chunk.wipe()
        guard String(decoding: out, as: UTF8.self).contains("-----BEGIN ") else {
            throw CofferError(.invalidArgument, "the \(what) \(path) is not PEM")
        }
        return out
    }

    /// Ties the cluster to the core above its storage, then registers this node's addresses.
    package func attach(_ core: Core) {
        self.core = core
        core.attach(cluster: self)
        if !backend.awaitingAdmission {
            registerAddresses()
        } else if !configuration.retryJoin.isEmpty {
            startJoining(configuration.retryJoin)
        }
        _ = startThread { [weak self] in
            while let self, !self.stopping.load(ordering: .acquiring) {
                self.autopilotPass()
                usleep(250_000)
            }
        }
    }

    package func close() {
        stopping.store(true, ordering: .releasing)
        forwarding.removeAll()
        backend.close()
    }

    // MARK: Activity

    fileprivate func statusChanged(_ status: RaftBackend.Status) {
        if status.isActive {
            activeSince.withLock { $0 = $0 ?? SystemClock().now() }
        } else {
            activeSince.withLock { $0 = nil }
        }
        core?.clusterActivityChanged(active: status.isActive)
    }

    package var state: ClusterState {
        let status = backend.currentStatus
        let leader = status.leader == 0 ? nil : try? member(status.leader)
        return ClusterState(
            nodeName: configuration.nodeName,
            isActive: status.isActive,
            leaderName: leader?.name,
            leaderAPIAddress: leader.map(\.api).flatMap { $0.isEmpty ? nil : $0 },
            leaderClusterAddress: leader?.cluster,
            term: status.term,
            committedIndex: status.commitIndex,
            appliedIndex: status.appliedIndex,
            activeSince: status.isActive ? activeSince.withLock { $0 } : nil
        )
    }

    // MARK: Members

    private func member(_ id: NodeID) throws(CofferError) -> (name: String, cluster: String, api: String)? {
        if id == nodeID { return (configuration.nodeName, configuration.clusterAddress, configuration.apiAddress) }
        guard let bytes = try backend.get(Self.nodesPrefix + String(id)) else {
            let address = try backend.get(RaftBackend.peersPrefix + String(id)).map {
                String(decoding: $0, as: UTF8.self)
            }
            return address.map { ("node-\(id)", $0, "") }
        }
        guard let json = try? JSONValue.parse(bytes), let name = json["name"]?.stringValue else { return nil }
        return (name, json["cluster_addr"]?.stringValue ?? "", json["api_addr"]?.stringValue ?? "")
    }

    /// A member's name, if this node knows it.
    fileprivate func memberName(_ id: NodeID) -> String? {
        guard let name = try? member(id)?.name, !name.hasPrefix("node-") else { return nil }
        return name
    }

    package func members() throws(CofferError) -> [ClusterMember] {
        let status = backend.currentStatus
        var out: [ClusterMember] = []
        for (id, voter) in status.voters.map({ ($0, true) }) + status.learners.map({ ($0, false) }) {
            let info = try member(id) ?? ("node-\(id)", "", "")
            out.append(
                ClusterMember(
                    name: info.name,
                    clusterAddress: info.cluster,
                    apiAddress: info.api,
                    voter: voter,
                    leader: id == status.leader,
                    matchIndex: status.matched[id] ?? (id == nodeID ? status.appliedIndex : 0)
                )
            )
        }
        return out.sorted { $0.name < $1.name }
    }

    package func removeMember(named name: String) throws(CofferError) {
        try removeMember(Self.nodeID(name))
    }

    private func removeMember(_ id: NodeID) throws(CofferError) {
        let status = backend.currentStatus
        guard status.voters.contains(id) || status.learners.contains(id) else { return }
        try backend.removePeer(id)
        try? backend.bookkeeping([.delete(key: Self.nodesPrefix + String(id))])
    }

    /// Records this node's name and addresses in the replicated data (in the background: it needs a
    /// leader), when they are not there already or changed.
    private func registerAddresses() {
        let record = Self.record(
            configuration.nodeName,
            configuration.clusterAddress,
            configuration.apiAddress,
            voter: joinAsVoter.withLock { $0 }
        )
        let key = Self.nodesPrefix + String(nodeID)
        _ = startThread { [weak self] in
            var failures = 0
            while let self, !self.stopping.load(ordering: .acquiring) {
                if (try? self.backend.get(key)) == record { return }
                if (try? self.backend.bookkeeping([.put(key: key, value: record)])) != nil { return }
                failures += 1
                // No leader reaches this node: it may have moved (a new cluster port). Every 2 s, prove
                // to an active node through its API that it holds the keys, from its new address.
                if failures % 10 == 0, !self.configuration.retryJoin.isEmpty {
                    try? self.readdress(through: self.configuration.retryJoin)
                }
                usleep(200_000)
            }
        }
    }

    /// Tells the active node (through one of `leaders`' APIs) this node's current addresses, with the
    /// join's proof that it holds the root key; for a member the cluster knows at another address.
    private func readdress(through leaders: [String]) throws(CofferError) {
        guard let core, !core.isSealed else { return }
        let rootKey = try core.barrier.rootKey()
        var last = CofferError(.unavailable, "no retry_join address to tell the new address to")
        for leader in leaders {
            do {
                let (base, data) = try requestChallenge(from: leader)
                guard let challenge = data["challenge"]?.stringValue.flatMap(Base64.decode) else { continue }
                adoptPeers(data)
                try sendAnswer(to: base, rootKey: rootKey, challenge: challenge)
                return
            } catch {
                last = error
            }
        }
        throw last
    }

    /// A member's record under ``nodesPrefix``; `voter`: whether autopilot is to promote it once stable.
    static func record(_ name: String, _ cluster: String, _ api: String, voter: Bool) -> [UInt8] {
        JSONValue.object([
            "name": .string(name), "cluster_addr": .string(cluster), "api_addr": .string(api),
            "non_voter": .bool(!voter),
        ]).serialized()
    }

    package func stepDown() throws(CofferError) { try backend.stepDown() }

    /// Returns once this node has applied every write committed when it was called (a ReadIndex round
    /// with the leader): a read after it is linearizable, on any node.
    package func readBarrier() throws(CofferError) { try backend.readBarrier() }

    // MARK: Snapshots

    /// `sys/storage/raft/snapshot`: the replicated data at one index, as a gzip'd tar of
    /// `coffer-snapshot` (the self-describing header: format, version, index, term, key count and
    /// the data's SHA-256), `state.bin` (the data), `SHA256SUMS` and `SHA256SUMS.sealed` (an HMAC of
    /// the sums under a key derived from this vault's root key: a restore checks that the file comes
    /// from this vault, unless forced).
    package func saveSnapshot() throws(CofferError) -> [UInt8] {
        guard let core else { throw CofferError.sealedError }
        let raw = try backend.saveSnapshot()
        guard let newline = raw.firstIndex(of: 10) else {
            throw CofferError(.internal, "the Raft snapshot has no header line")
        }
        let header = Array(raw[..<newline])
        let state = Array(raw[(newline + 1)...])
        let sums = Self.sums(header: header, state: state)
        let sealed = Digest.hmacSHA256(key: try Self.snapshotKey(core), data: sums)
        return SnapshotArchive.pack([
            ("coffer-snapshot", header), ("state.bin", state), ("SHA256SUMS", sums),
            ("SHA256SUMS.sealed", Array(Hex.encode(sealed).utf8)),
        ])
    }

    /// Restores a file from ``saveSnapshot()``. Without `force`, only one this vault made (its
    /// `SHA256SUMS.sealed` checks with this root key); with it, one from any Coffer cluster, after
    /// which every node seals, to be unsealed with that cluster's keys.
    package func restoreSnapshot(_ file: [UInt8], force: Bool) throws(CofferError) {
        guard let core else { throw CofferError.sealedError }
        let files = try SnapshotArchive.unpack(file)
        guard let header = files["coffer-snapshot"], let state = files["state.bin"], let sums = files["SHA256SUMS"],
            let sealed = files["SHA256SUMS.sealed"]
        else {
            throw CofferError(
                .invalidArgument,
                "not a Coffer snapshot file: it lacks coffer-snapshot, state.bin, SHA256SUMS or SHA256SUMS.sealed"
            )
        }
        guard ConstantTime.equals(Self.sums(header: header, state: state), sums) else {
            throw CofferError(.integrity, "the snapshot's files do not match its SHA256SUMS: it is damaged")
        }
        let expected = Hex.encode(Digest.hmacSHA256(key: try Self.snapshotKey(core), data: sums))
        if !force, !ConstantTime.equals(Array(expected.utf8), sealed) {
            throw CofferError(
                .invalidArgument,
                "the snapshot was not made by this vault (its SHA256SUMS.sealed does not check with this root key); "
                    + "restore it with snapshot-force (bao operator raft snapshot restore -force) to replace this "
                    + "vault's data and keys with the other vault's"
            )
        }
        try backend.restoreSnapshot(header + [10] + state)
    }

    private static func sums(header: [UInt8], state: [UInt8]) -> [UInt8] {
        Array(
            "\(Hex.encode(Digest.sha256(header)))  coffer-snapshot\n\(Hex.encode(Digest.sha256(state)))  state.bin\n"
                .utf8
        )
    }

    private static func snapshotKey(_ core: Core) throws(CofferError) -> [UInt8] {
        Digest.hmacSHA256(key: try core.barrier.rootKey(), data: Array("coffer raft snapshot v1".utf8))
    }

    // MARK: Joining (the active node's side)

    /// The proof a joiner gives: an HMAC, under a key derived from the root key, of the active node's
    /// nonce and the joiner's name and cluster address. Only a node that could unseal (it has the
    /// unseal shares, or the HSM) can compute it.
    static func joinProof(rootKey: SecureBytes, nonce: [UInt8], name: String, clusterAddress: String) -> String {
        let key = Digest.hmacSHA256(key: rootKey, data: Array("coffer raft join v1".utf8))
        return Hex.encode(
            Digest.hmacSHA256(key: key, data: nonce + [0] + Array(name.utf8) + [0] + Array(clusterAddress.utf8))
        )
    }

    package func joinChallenge(for name: String) throws(CofferError) -> [String: JSONValue] {
        guard let core, state.isActive else { throw RaftBackend.standbyWrite }
        guard let sealConfig = try core.barrier.physical.get(SealConfig.path),
            let rootKey = try core.barrier.physical.get(ShamirSeal.rootKeyPath)
        else { throw CofferError(.notInitialized, "Vault is not initialized") }
        let nonce = Random.bytes(32)
        let now = monotonicNanos()
        challenges.withLock { table in
            // Bounded: anyone may ask, so past 64 pending challenges the oldest is forgotten (a joiner whose
            // challenge went asks again) rather than new ones refused.
            table = table.filter { now - $0.value.issued < 120_000_000_000 }
            if table.count >= 64, let oldest = table.min(by: { $0.value.issued < $1.value.issued })?.key {
                table[oldest] = nil
            }
            table[name] = (nonce, now)
        }
        // Where the members are, so that the joiner can answer the leader before its replica tells it.
        var peers: [String: JSONValue] = [:]
        for id in backend.currentStatus.voters + backend.currentStatus.learners {
            if let address = try member(id)?.cluster, !address.isEmpty { peers[String(id)] = .string(address) }
        }
        return [
            "peers": .object(peers),
            "challenge": .string(Base64.encode(nonce)),
            "seal_config": .string(Base64.encode(sealConfig)),
            "root_key": .string(Base64.encode(rootKey)),
        ]
    }

    package func admit(
        name: String,
        answer: String,
        clusterAddress: String,
        apiAddress: String,
        voter: Bool
    ) throws(CofferError) {
        guard let core, state.isActive else { throw RaftBackend.standbyWrite }
        guard let issued = challenges.withLock({ $0.removeValue(forKey: name) }),
            monotonicNanos() - issued.issued < 120_000_000_000
        else {
            throw CofferError(.permissionDenied, "no current join challenge for node \(name); ask for one first")
        }
        let expected = Self.joinProof(
            rootKey: try core.barrier.rootKey(),
            nonce: issued.nonce,
            name: name,
            clusterAddress: clusterAddress
        )
        guard ConstantTime.equals(Array(expected.utf8), Array(answer.utf8)) else {
            throw CofferError(
                .permissionDenied,
                "the join answer of node \(name) is wrong: it does not hold this vault's keys"
            )
        }
        let id = Self.nodeID(name)
        let status = backend.currentStatus
        if status.voters.contains(id) || status.learners.contains(id) {
            // A member that proved itself again from another address (a replica restarted on a new port,
            // which Raft can no longer reach): the cluster dials it there from now on.
            guard let known = try member(id), known.cluster != clusterAddress || known.api != apiAddress else { return }
            try backend.bookkeeping([
                .put(key: RaftBackend.peersPrefix + String(id), value: Array(clusterAddress.utf8)),
                .put(
                    key: Self.nodesPrefix + String(id),
                    value: Self.record(name, clusterAddress, apiAddress, voter: wantsToVote(id))
                ),
            ])
            return
        }
        try backend.bookkeeping([
            .put(key: Self.nodesPrefix + String(id), value: Self.record(name, clusterAddress, apiAddress, voter: voter))
        ])
        // First a learner: autopilot promotes it once it has caught up and stayed healthy (a voter that
        // is far behind would hold up every commit until it is not).
        try backend.addPeer(id, address: clusterAddress, voter: false)
    }

    // MARK: Autopilot

    static let autopilotKey = ".raft/autopilot"

    package func autopilotConfiguration() throws(CofferError) -> AutopilotConfiguration {
        guard let bytes = try backend.get(Self.autopilotKey), let json = try? JSONValue.parse(bytes) else {
            return AutopilotConfiguration()
        }
        return AutopilotConfiguration(json: json)
    }

    package func setAutopilotConfiguration(_ configuration: AutopilotConfiguration) throws(CofferError) {
        guard state.isActive else { throw RaftBackend.standbyWrite }
        try backend.bookkeeping([.put(key: Self.autopilotKey, value: configuration.json.serialized())])
    }

    package func autopilotMembers() throws(CofferError) -> [AutopilotMember] {
        let configuration = try autopilotConfiguration()
        let status = backend.currentStatus
        let now = monotonicNanos()
        let (since, healthy) = pilot.withLock { ($0.since, $0.healthySince) }
        return try members().map { member in
            let id = Self.nodeID(member.name)
            if id == nodeID {
                return AutopilotMember(
                    member: member,
                    lastContactNanoseconds: 0,
                    healthy: true,
                    stableSince: healthy[id]?.wall
                )
            }
            let contact = status.isActive ? lastContact(id, now: now, activeSince: since) : UInt64.max
            return AutopilotMember(
                member: member,
                lastContactNanoseconds: contact == .max ? 0 : contact,
                healthy: isHealthy(id, contact: contact, status: status, configuration),
                stableSince: healthy[id]?.wall
            )
        }
    }

    /// How long ago the active node heard from `id`, counting from when it became active at the
    /// earliest (a follower talks only to the leader, so what this node heard before is stale).
    private func lastContact(_ id: NodeID, now: UInt64, activeSince: UInt64) -> UInt64 {
        let heard = max(backend.lastHeard(from: id) ?? 0, activeSince)
        return now >= heard ? now - heard : 0
    }

    private func isHealthy(
        _ id: NodeID,
        contact: UInt64,
        status: RaftBackend.Status,
        _ configuration: AutopilotConfiguration
    ) -> Bool {
        let matched = min(status.matched[id] ?? 0, status.commitIndex)
        return contact <= UInt64(configuration.lastContactThreshold) * 1_000_000_000
            && status.commitIndex - matched <= UInt64(configuration.maxTrailingLogs)
    }

    /// One pass of autopilot on the active node (every 250 ms): notes which members are healthy,
    /// promotes a learner that asked to vote once it has been healthy for `server_stabilization_time`
    /// and has every committed entry, and, with `cleanup_dead_servers`, removes members not heard from
    /// for `dead_server_last_contact_threshold` while `min_quorum` voters remain.
    func autopilotPass() {
        let status = backend.currentStatus
        let now = monotonicNanos()
        guard status.isActive else {
            pilot.withLock { $0 = Pilot() }
            return
        }
        guard let configuration = try? autopilotConfiguration() else { return }
        let since = pilot.withLock { pilot in
            if pilot.term != status.term { pilot = Pilot(term: status.term, since: now) }
            return pilot.since
        }
        let wall = SystemClock().now()
        var voters = status.voters.count
        for id in status.voters + status.learners {
            if id == nodeID {
                pilot.withLock { $0.healthySince[id] = $0.healthySince[id] ?? (now, wall) }
                continue
            }
            let contact = lastContact(id, now: now, activeSince: since)
            let healthy = isHealthy(id, contact: contact, status: status, configuration)
            let stable = pilot.withLock { pilot -> UInt64? in
                pilot.healthySince[id] = healthy ? pilot.healthySince[id] ?? (now, wall) : nil
                return pilot.healthySince[id]?.monotonic
            }
            let voter = status.voters.contains(id)
            if configuration.cleanupDeadServers,
                contact > UInt64(configuration.deadServerLastContactThreshold) * 1_000_000_000,
                !voter || voters - 1 >= configuration.minQuorum
            {
                if (try? removeMember(id)) != nil, voter { voters -= 1 }
                continue
            }
            if !voter, let stable, now - stable >= UInt64(configuration.serverStabilizationTime) * 1_000_000_000,
                (status.matched[id] ?? 0) >= status.commitIndex, wantsToVote(id),
                let address = try? member(id)?.cluster
            {
                try? backend.addPeer(id, address: address, voter: true)
            }
        }
    }

    /// Whether the member asked to vote when it joined (its record's `non_voter` is false).
    private func wantsToVote(_ id: NodeID) -> Bool {
        guard let bytes = try? backend.get(Self.nodesPrefix + String(id)), let json = try? JSONValue.parse(bytes) else {
            return false
        }
        return json["non_voter"]?.boolValue == false
    }

    // MARK: Joining (the new node's side)

    /// `sys/init` on a node no cluster admitted: it founds a cluster of its own first.
    package func prepareToInitialize() throws(CofferError) {
        guard backend.awaitingAdmission else { return }
        try backend.found()
        registerAddresses()
    }

    package func join(
        leaderAPIAddress: String,
        voter: Bool,
        leaderCA: String?,
        clientIdentity: (certificate: String, key: SecureBytes)?
    ) throws(CofferError) -> Bool {
        guard backend.awaitingAdmission else { return true }  // already a member: nothing to do, as OpenBao
        if let leaderCA, !leaderCA.isEmpty { apiCA.withLock { $0 = leaderCA } }
        if let clientIdentity {
            apiClientIdentity.withLock {
                $0 = HTTPClient.ClientIdentity(certificatePEM: clientIdentity.certificate, keyPEM: clientIdentity.key)
            }
        }
        let started = joinThread.withLock { running in
            defer { running = true }
            return running
        }
        if started {
            // A retry_join loop is already asking (perhaps without the certificate just given). Return once it
            // has a challenge, as OpenBao's join does: the unseal keys entered next answer it (before, a
            // `bao operator unseal` right after the join could find no challenge and say "not initialized").
            let deadline = monotonicNanos() + 10_000_000_000
            while joining.withLock({ $0?.challenge.isEmpty ?? true }) {
                guard monotonicNanos() < deadline else {
                    throw CofferError(.unavailable, "no join challenge from the cluster within 10 s; still trying")
                }
                usleep(20_000)
            }
            return true
        }
        joinAsVoter.withLock { $0 = voter }
        try fetchChallenge(from: leaderAPIAddress)
        joinThread.withLock { $0 = false }
        startJoining([leaderAPIAddress])
        return true
    }

    /// Asks each `retry_join` address in turn for a challenge until one answers, then answers it as soon
    /// as this node has the root key (at once with an auto-unseal seal; after the unseal shares are
    /// entered here with Shamir), then waits for the replica to arrive and unseals.
    private func startJoining(_ leaders: [String]) {
        joinThread.withLock { $0 = true }
        _ = startThread { [weak self] in
            defer { self?.joinThread.withLock { $0 = false } }
            var attempt = 0
            var lastFailure = ""
            while let self, !self.stopping.load(ordering: .acquiring) {
                if !self.backend.awaitingAdmission && self.joining.withLock({ $0 == nil }) {
                    return  // founded by sys/init meanwhile
                } else if self.joining.withLock({ $0?.admitted ?? false }) {
                    if self.unsealWhenReplicated() { return }
                } else if self.joining.withLock({ $0?.challenge.isEmpty ?? true }) {
                    let leader = leaders[attempt % leaders.count]
                    attempt += 1
                    do throws(CofferError) {
                        try self.fetchChallenge(from: leader)
                    } catch {
                        if error.message != lastFailure { self.configuration.onJoinFailure?(error.message) }
                        lastFailure = error.message
                    }
                } else {
                    try? self.answerIfReady()
                }
                usleep(200_000)
            }
        }
    }

    /// Asks the active node behind `leader` for a join challenge: its normalised address and the answer's data.
    private func requestChallenge(from leader: String) throws(CofferError) -> (base: String, data: JSONValue) {
        let base = leader.hasSuffix("/") ? String(leader.dropLast()) : leader
        let response = try postToJoin(base, "challenge", ["server_id": .string(configuration.nodeName)])
        guard response.status == 200, let json = try? JSONValue.parse(response.body) else {
            throw CofferError(.unavailable, "\(base) did not give a join challenge (HTTP \(response.status))")
        }
        return (base, json["data"] ?? json)
    }

    /// How this node reaches the others' APIs: trusting the API CA, presenting its client certificate.
    private func apiOptions() -> HTTPClient.Options {
        var options = HTTPClient.Options(caPEM: apiCA.withLock { $0 })
        options.clientIdentity = apiClientIdentity.withLock { $0 }
        return options
    }

    /// POSTs `body` to the active node's `sys/storage/raft/bootstrap/<step>` at `base`, trusting the API CA.
    private func postToJoin(
        _ base: String,
        _ step: String,
        _ body: JSONValue
    ) throws(CofferError) -> HTTPClient.Response {
        do {
            return try HTTPClient.send(
                "POST",
                base + "/v1/sys/storage/raft/bootstrap/" + step,
                body: body.serialized(),
                options: apiOptions()
            )
        } catch {
            throw CofferError(.unavailable, "cannot reach \(base) to join: \(error.message)")
        }
    }

    /// Points the transport at the members' addresses a challenge lists, so this node can answer the
    /// leader before its replica tells it where everyone is.
    private func adoptPeers(_ challenge: JSONValue) {
        for (id, address) in challenge["peers"]?.objectValue ?? [:] {
            if let id = NodeID(id), id != nodeID, let address = address.stringValue {
                try? backend.setPeerAddress(id, address)
            }
        }
    }

    private func fetchChallenge(from leader: String) throws(CofferError) {
        let (base, data) = try requestChallenge(from: leader)
        guard let challenge = data["challenge"]?.stringValue.flatMap(Base64.decode),
            let config = data["seal_config"]?.stringValue.flatMap(Base64.decode),
            let rootKey = data["root_key"]?.stringValue.flatMap(Base64.decode),
            let sealJSON = try? JSONValue.parse(config)
        else {
            throw CofferError(.unavailable, "\(base) did not give a whole join challenge")
        }
        let sealConfig = try SealConfig(json: sealJSON)
        adoptPeers(data)
        joining.withLock { state in
            // Shares entered for an earlier challenge (one that expired) still count.
            var fresh = JoinState(leader: base, challenge: challenge, rootKeyBlob: rootKey, sealConfig: sealConfig)
            if let state, state.sealConfig == sealConfig {
                (fresh.shares, fresh.unsealKey, fresh.nonce) = (state.shares, state.unsealKey, state.nonce)
            }
            state = fresh
        }
    }

    /// With the root key at hand (auto-unseal, or the unseal shares entered), answers the challenge.
    private func answerIfReady() throws(CofferError) {
        guard let core, let state = joining.withLock({ $0 }), !state.admitted else { return }
        let rootKey: SecureBytes
        if core.seal.isAutoUnseal {
            rootKey = try core.seal.unwrap(state.rootKeyBlob, unsealKey: nil)
        } else {
            guard let unsealKey = state.unsealKey else { return }
            rootKey = try core.seal.unwrap(state.rootKeyBlob, unsealKey: unsealKey)
        }
        do {
            try sendAnswer(to: state.leader, rootKey: rootKey, challenge: state.challenge)
        } catch {
            // A refused answer (an expired challenge, a leader change): start over with a new challenge.
            joining.withLock { $0?.challenge = [] }
            throw error
        }
        joining.withLock { $0?.admitted = true }
    }

    /// Answers `challenge` from the active node at `base` with the proof that this node holds `rootKey`,
    /// and this node's name and addresses.
    private func sendAnswer(to base: String, rootKey: SecureBytes, challenge: [UInt8]) throws(CofferError) {
        let answer = Self.joinProof(
            rootKey: rootKey,
            nonce: challenge,
            name: configuration.nodeName,
            clusterAddress: configuration.clusterAddress
        )
        let response = try postToJoin(
            base,
            "answer",
            [
                "server_id": .string(configuration.nodeName), "answer": .string(answer),
                "cluster_addr": .string(configuration.clusterAddress), "api_addr": .string(configuration.apiAddress),
                "non_voter": .bool(!joinAsVoter.withLock { $0 }),
            ]
        )
        guard response.status == 200 || response.status == 204 else {
            let message =
                (try? JSONValue.parse(response.body))?["errors"]?.arrayValue?.first?.stringValue
                ?? "HTTP \(response.status)"
            throw CofferError(.unavailable, "\(base) did not admit this node: \(message)")
        }
    }

    /// Once the replica holds the vault (the leader's snapshot arrived), unseals the core as the shares
    /// or the HSM allow. True when done.
    private func unsealWhenReplicated() -> Bool {
        guard let core, core.isInitialized else { return false }
        let unsealKey = joining.withLock { $0?.unsealKey }
        do {
            if core.seal.isAutoUnseal {
                try core.autoUnseal()
            } else if let unsealKey {
                try core.unseal(combinedKey: unsealKey)
            }
        } catch {
            return false
        }
        joining.withLock { $0 = nil }
        return true
    }

    /// While joining with a Shamir seal, `sys/seal-status` and `sys/unseal` are answered here: the
    /// shares unwrap the root key the active node sent (to answer its challenge) and then unseal the
    /// replica. Nil when this node is not joining (the core answers).
    package func joiningSealStatus() -> SealStatus? {
        joining.withLock { state in
            guard let state, !(core?.isInitialized ?? false) else { return nil }
            return SealStatus(
                type: state.sealConfig.type,
                initialized: true,
                sealed: true,
                threshold: state.sealConfig.threshold,
                shares: state.sealConfig.shares,
                progress: state.unsealKey == nil ? state.shares.count : 0,
                nonce: state.unsealKey == nil && !state.shares.isEmpty ? state.nonce : "",
                storageType: "raft",
                recoverySeal: false
            )
        }
    }

    /// One unseal share entered while joining (see ``joiningSealStatus()``).
    package func joiningUnseal(_ share: SecureBytes) throws(CofferError) -> SealStatus? {
        let combined: Bool = try joining.withLock { (state) throws(CofferError) -> Bool in
            guard var current = state, !(core?.isInitialized ?? false) else { return false }
            guard current.unsealKey == nil else { return true }
            let check = SealConfig.check(share)
            guard
                current.sealConfig.shareChecks.contains(where: {
                    ConstantTime.equals(Array($0.utf8), Array(check.utf8))
                })
            else {
                throw CofferError.invalid(
                    "this unseal key is not one of the current unseal keys; progress is unchanged"
                )
            }
            if current.shares.contains(where: { $0.constantTimeEquals(share) }) {
                throw CofferError.invalid("this unseal key was already entered; progress is unchanged")
            }
            current.shares.append(share)
            if current.shares.count >= current.sealConfig.threshold {
                current.unsealKey = try Shamir.combine(current.shares)
                current.shares = []
            }
            state = current
            return current.unsealKey != nil
        }
        if combined { try? answerIfReady() }
        return joiningSealStatus()
    }

    // MARK: Forwarding

    /// The header a forwarded request carries (the sending node's name).
    package static let forwardedHeader = "X-Coffer-Forwarded"

    /// What a node that is not active answers a request another node forwarded to it.
    package static func notActiveAnswer(from sender: String) -> [UInt8] {
        JSONValue.object([
            "errors": [
                .string(
                    "node \(sender) forwarded this request here as to the active node, but this node is not active "
                        + "(the leader is changing); retry"
                )
            ]
        ]).serialized()
    }

    /// Sends a request a standby cannot answer to the active node and returns its answer.
    package func forward(
        method: String,
        target: String,
        headers: [(String, String)],
        body: [UInt8]
    ) -> (status: Int, headers: [(String, String)], body: [UInt8]) {
        var state = self.state
        if state.leaderName == configuration.nodeName, !state.isActive {
            // This node was just elected and is applying its first entry: a moment, then it answers itself.
            _ = backend.waitUntilActive(seconds: 2)
            state = self.state
        }
        guard let leader = state.leaderAPIAddress else {
            return (
                503, [],
                JSONValue.object(["errors": ["local node not active but active cluster node not found"]]).serialized()
            )
        }
        let base = leader.hasSuffix("/") ? String(leader.dropLast()) : leader
        var options = apiOptions()
        options.maximumBodyBytes = 64 << 20
        // Marks the request as forwarded: the receiver answers it or refuses it, never sends it on (a
        // leader change seen differently by two nodes must not bounce a request between them).
        let headers = headers + [(Self.forwardedHeader, configuration.nodeName)]
        do {
            let response = try HTTPClient.send(
                method,
                base + target,
                headers: headers,
                body: body,
                options: options,
                pool: forwarding
            )
            // The index the active node answered at: what ``waitForWrites(timeout:)`` waits for here.
            if let header = response.header("x-vault-index"), let bytes = Base64.decode(header),
                let json = try? JSONValue.parse(bytes), let index = json["value"]?.stringValue.flatMap({ UInt64($0) })
            {
                lastWriteIndex.withLock { $0 = max($0, index) }
            }
            let kept = response.headers.filter {
                ["content-type", "retry-after", "x-vault-index"].contains($0.name) || $0.name.hasPrefix("x-ratelimit")
            }
            return (response.status, kept.map { ($0.name, $0.value) }, response.body)
        } catch {
            return (
                503, [],
                JSONValue.object(["errors": [.string("the active node could not be reached: \(error.message)")]])
                    .serialized()
            )
        }
    }
}

/// Lets the Raft thread reach the cluster, which is made after the backend whose options name it.
private final class StatusRelay: @unchecked Sendable {
    weak var target: RaftCluster?
}

extension RaftCluster {
    /// `sys/seal-status` and `sys/unseal` of a node joining with a Shamir seal (see
    /// ``joiningSealStatus()``); nil for every other request, and when not joining.
    package func answerWhileJoining(method: String, path: String, body: [UInt8]) -> WireResult? {
        // Every request of a cluster node comes through here: the path first, before any lock is taken.
        guard path.contains("sys/seal-status") || path.contains("sys/unseal"), backend.awaitingAdmission,
            let status = joiningSealStatus()
        else { return nil }
        var route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        if route.hasPrefix("/v1/") { route = String(route.dropFirst(4)) }
        switch (method.uppercased(), route) {
        case ("GET", "sys/seal-status"):
            return WireResult(status: 200, body: status.json.serialized())
        case ("PUT", "sys/unseal"), ("POST", "sys/unseal"):
            guard let json = try? JSONValue.parse(body), let text = json["key"]?.stringValue,
                let key = Hex.decode(text) ?? Base64.decode(text)
            else {
                let error = CofferError.invalid("'key' must be a valid hex or base64 string")
                let (code, body) = Wire.errorBody(error)
                return WireResult(status: code, body: body, error: error)
            }
            do {
                let after = try joiningUnseal(SecureBytes(key)) ?? status
                return WireResult(status: 200, body: after.json.serialized())
            } catch {
                let (code, body) = Wire.errorBody(error)
                return WireResult(status: code, body: body, error: error)
            }
        default:
            return nil
        }
    }
}

/// OpenBao's `X-Vault-Index` consistency header: every answer of a cluster node carries the Raft index
/// it reflects (base64 of `{"cluster": id, "value": "index"}`); a client that sends it back is not
/// answered by a standby that has not applied that index yet.
package enum ClusterConsistency {
    package enum Decision: Sendable { case serve, behind }

    /// Whether this node may answer a request that carries `requested` (nil: no header).
    package static func check(_ cluster: RaftCluster, requested: String?) -> Decision {
        guard let requested, let bytes = Base64.decode(requested), let json = try? JSONValue.parse(bytes),
            let value = json["value"]?.stringValue.flatMap({ UInt64($0) })
        else { return .serve }
        // The Raft status alone: `cluster.state` would also read the leader's member record.
        let status = cluster.backend.currentStatus
        return status.isActive || status.appliedIndex >= value ? .serve : .behind
    }

    /// The header for an answer to `path`; nil for the paths OpenBao sends it on none of (health,
    /// leader, seal status).
    package static func header(_ cluster: RaftCluster, path: String) -> String? {
        for quiet in ["/v1/sys/health", "/v1/sys/leader", "/v1/sys/seal-status"] where path.hasPrefix(quiet) {
            return nil
        }
        let value = JSONValue.object([
            "cluster": .string(cluster.core?.clusterIdentity.id ?? ""),
            "value": .string(String(cluster.backend.currentStatus.appliedIndex)),
        ])
        return Base64.encode(value.serialized())
    }
}

// MARK: Embedded replicas

extension RaftCluster {
    /// Whether `error` is a replica's refusal to write (``RaftBackend/standbyWrite``), which the
    /// active node must answer instead.
    static func isStandbyWrite(_ error: CofferError) -> Bool {
        error.code == .unavailable && error.message.contains(RaftBackend.standbyWrite.message)
    }

    /// A request made in this process on a standby or an embedded replica, sent to the active node.
    /// Remembers the index the active node answered at, for ``waitForWrites(timeout:)``.
    package func forward(_ request: Request) throws(CofferError) -> Response {
        let method: String
        switch request.operation {
        case .read: method = "GET"
        case .list: method = "LIST"
        case .delete: method = "DELETE"
        case .patch: method = "PATCH"
        default: method = "PUT"
        }
        var headers: [(String, String)] = []
        if let token = request.token { headers.append(("X-Vault-Token", token)) }
        if !request.namespace.isEmpty { headers.append(("X-Vault-Namespace", request.namespace)) }
        if method == "PATCH" { headers.append(("Content-Type", "application/merge-patch+json")) }
        let writes = method != "GET" && method != "LIST"
        let body = writes ? JSONValue.object(request.data).serialized() : []
        let answer = forward(method: method, target: "/v1/" + request.path, headers: headers, body: body)
        let json = answer.body.isEmpty ? nil : try? JSONValue.parse(answer.body)
        guard (200..<300).contains(answer.status) else {
            let message = json?["errors"]?.arrayValue?.compactMap(\.stringValue).joined(separator: "; ") ?? ""
            throw RemoteClient.error(
                status: answer.status,
                message.isEmpty ? "the active node answered HTTP \(answer.status)" : message
            )
        }
        guard let json else { return .noContent }
        if case .object(let data)? = json["data"] { return Response(data: data) }
        return .raw(json, status: answer.status)
    }

    /// Waits until this replica has applied every write this process sent to the active node
    /// (read-your-writes on a replica). False when `timeout` seconds pass first.
    package func waitForWrites(timeout: Double) -> Bool {
        let target = lastWriteIndex.withLock { $0 }
        let deadline = monotonicNanos() + UInt64(max(0, min(timeout, 3600)) * 1e9)
        while backend.currentStatus.appliedIndex < target {
            if monotonicNanos() >= deadline { return false }
            usleep(1000)
        }
        return true
    }
}

/// Hands the Raft core's info and warning lines to ``RaftConfiguration/onRaftEvent``, with each member's
/// Raft id (a hash of its name) replaced by its name.
private final class RaftEventRelay: RaftLogger, @unchecked Sendable {
    let sink: @Sendable (String, Bool) -> Void
    /// This node's id and name, known before ``cluster`` is.
    let me: (id: NodeID, name: String)
    /// Set once, right after the node opens (its first lines, while it opens, name only itself).
    weak var cluster: RaftCluster?

    init(_ sink: @escaping @Sendable (String, Bool) -> Void, node: (NodeID, String)) {
        self.sink = sink
        me = node
    }

    func log(_ level: RaftLogLevel, _ message: String) {
        guard level >= .info else { return }
        var named = ""
        var digits = ""
        for character in message + " " {
            if character.isASCII && character.isNumber {
                digits.append(character)
                continue
            }
            if !digits.isEmpty {
                let id = digits.count >= 6 ? UInt64(digits) : nil
                let name = id == me.id ? me.name : id.flatMap { cluster?.memberName($0) }
                named += name ?? digits
                digits = ""
            }
            named.append(character)
        }
        sink(String(named.dropLast()), level == .warning)
    }
}
