package import CofferCore
import Synchronization

/// One member of a replicated cluster, as `sys/storage/raft/configuration` and `sys/ha-status` list it.
package struct ClusterMember: Sendable, Equatable {
    /// The operator's name for it (`node_id` in its configuration).
    package var name: String
    package var clusterAddress: String
    /// Its `api_addr`, where clients and forwarded requests reach it ("" until it registered one).
    package var apiAddress: String
    package var voter: Bool
    package var leader: Bool
    /// How far the leader knows its log to match (on the leader; 0 elsewhere).
    package var matchIndex: UInt64

    package init(
        name: String,
        clusterAddress: String,
        apiAddress: String,
        voter: Bool,
        leader: Bool,
        matchIndex: UInt64
    ) {
        self.name = name
        self.clusterAddress = clusterAddress
        self.apiAddress = apiAddress
        self.voter = voter
        self.leader = leader
        self.matchIndex = matchIndex
    }
}

/// This node's view of its cluster right now.
package struct ClusterState: Sendable, Equatable {
    package var nodeName: String
    /// The leader with everything before its term applied: the node that answers writes.
    package var isActive: Bool
    package var leaderName: String?
    package var leaderAPIAddress: String?
    package var leaderClusterAddress: String?
    package var term: UInt64
    package var committedIndex: UInt64
    package var appliedIndex: UInt64
    /// When this node last became active.
    package var activeSince: Timestamp?

    package init(
        nodeName: String,
        isActive: Bool,
        leaderName: String? = nil,
        leaderAPIAddress: String? = nil,
        leaderClusterAddress: String? = nil,
        term: UInt64 = 0,
        committedIndex: UInt64 = 0,
        appliedIndex: UInt64 = 0,
        activeSince: Timestamp? = nil
    ) {
        self.nodeName = nodeName
        self.isActive = isActive
        self.leaderName = leaderName
        self.leaderAPIAddress = leaderAPIAddress
        self.leaderClusterAddress = leaderClusterAddress
        self.term = term
        self.committedIndex = committedIndex
        self.appliedIndex = appliedIndex
        self.activeSince = activeSince
    }
}

/// What the core needs of a replicated cluster (Sources/Coffer/Cluster implements it over Raft): the
/// HA fields of `sys/health`, `sys/leader` and `sys/ha-status`, and the operator API under
/// `sys/storage/raft/`. A core without one is a single node (`ha_enabled: false`).
package protocol ClusterView: AnyObject, Sendable {
    var state: ClusterState { get }
    /// Every member (voters and learners), in a stable order.
    func members() throws(CofferError) -> [ClusterMember]
    /// On the active node: removes the member named `name` (nothing happens for an unknown name, as
    /// in OpenBao).
    func removeMember(named name: String) throws(CofferError)
    /// A self-describing, versioned snapshot of the replicated data.
    func saveSnapshot() throws(CofferError) -> [UInt8]
    /// Replaces the cluster's data with a snapshot's, verified on every node; `force` accepts one made
    /// by another vault.
    func restoreSnapshot(_ file: [UInt8], force: Bool) throws(CofferError)
    /// On the active node: a challenge for node `name`, which wants to join.
    func joinChallenge(for name: String) throws(CofferError) -> [String: JSONValue]
    /// On the active node: admits node `name` if `answer` proves it holds the root key.
    func admit(
        name: String,
        answer: String,
        clusterAddress: String,
        apiAddress: String,
        voter: Bool
    ) throws(CofferError)
    /// On the active node: hands leadership to another voter (`sys/step-down`).
    func stepDown() throws(CofferError)
    /// Before `sys/init`: a node that no cluster admitted founds one of its own.
    func prepareToInitialize() throws(CofferError)
    /// On a node that is not in a cluster yet: join the one whose active node answers at `leaderAPIAddress`.
    func join(leaderAPIAddress: String, voter: Bool) throws(CofferError) -> Bool
}

extension Core {
    /// The cluster this core's storage replicates in, or nil for a single node.
    package var cluster: (any ClusterView)? { clusterSlot.withLock { $0 } }

    /// Set once, when the vault that owns this core joins its storage to a cluster.
    package func attach(cluster: any ClusterView) {
        clusterSlot.withLock { $0 = cluster }
        standby.store(!cluster.state.isActive, ordering: .releasing)
    }

    /// In a cluster, whether this node is not the active one now: it answers what it can from its
    /// replica and sends the rest to the active node; its background work (lease expiry, rotation)
    /// waits until it becomes active.
    package var isStandby: Bool { standby.load(ordering: .acquiring) }

    /// The cluster's activity changed (on the Raft thread): a node that becomes active forgets what it
    /// knew of due leases, so its first pass reads them from the replicated data.
    package func clusterActivityChanged(active: Bool) {
        let was = standby.exchange(!active, ordering: .acquiringAndReleasing)
        if was && active { leases.unload() }
    }
}
