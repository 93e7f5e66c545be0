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
    /// On a node that is not in a cluster yet: join the one whose active node answers at `leaderAPIAddress`,
    /// trusting `leaderCA` (PEM) for its certificate when given, and presenting `clientIdentity` (a PEM
    /// certificate and key) if its API asks for a client certificate.
    func join(
        leaderAPIAddress: String,
        voter: Bool,
        leaderCA: String?,
        clientIdentity: (certificate: String, key: SecureBytes)?
    ) throws(CofferError) -> Bool
    /// Autopilot's settings, as replicated (the defaults until an operator sets them).
    func autopilotConfiguration() throws(CofferError) -> AutopilotConfiguration
    /// On the active node: replaces autopilot's settings.
    func setAutopilotConfiguration(_ configuration: AutopilotConfiguration) throws(CofferError)
    /// On the active node: how autopilot sees each member now.
    func autopilotMembers() throws(CofferError) -> [AutopilotMember]
}

/// A member as autopilot judges it on the active node (`sys/storage/raft/autopilot/state`).
package struct AutopilotMember: Sendable, Equatable {
    package var member: ClusterMember
    /// Nanoseconds since the active node last heard from it (0 for the active node itself).
    package var lastContactNanoseconds: UInt64
    /// Heard from within `last_contact_threshold` and no more than `max_trailing_logs` behind.
    package var healthy: Bool
    /// Since when it has been healthy without a break, as this active node saw it.
    package var stableSince: Timestamp?

    package init(member: ClusterMember, lastContactNanoseconds: UInt64, healthy: Bool, stableSince: Timestamp?) {
        self.member = member
        self.lastContactNanoseconds = lastContactNanoseconds
        self.healthy = healthy
        self.stableSince = stableSince
    }
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

/// Autopilot's settings (`sys/storage/raft/autopilot/configuration`, OpenBao's fields), replicated with
/// the data; durations in seconds. The active node applies them: it promotes a joining node to voter
/// once it has been healthy for ``serverStabilizationTime`` and has caught up, and, with
/// ``cleanupDeadServers``, removes a member it has not heard from for ``deadServerLastContactThreshold``
/// while at least ``minQuorum`` voters remain.
package struct AutopilotConfiguration: Sendable, Equatable {
    package var cleanupDeadServers = false
    package var deadServerLastContactThreshold: Int64 = 86_400
    /// A member not heard from for longer is unhealthy.
    package var lastContactThreshold: Int64 = 10
    /// A member more entries than this behind the leader's commit index is unhealthy.
    package var maxTrailingLogs: Int64 = 1000
    package var minQuorum: Int64 = 0
    /// OpenBao's default is 10 s; Coffer's is 3 s, since a node must also have caught up with the
    /// leader's log to be promoted.
    package var serverStabilizationTime: Int64 = 3

    package init() {}

    /// From its stored form; a field that is missing, of the wrong type, negative or past 100 years keeps
    /// its default, so autopilot's nanosecond arithmetic on these values can neither go negative nor overflow.
    package init(json: JSONValue) {
        func number(_ name: String, _ fallback: Int64) -> Int64 {
            guard let value = json[name]?.intValue, (0...VaultDuration.maximumSeconds).contains(Int64(value)) else {
                return fallback
            }
            return Int64(value)
        }
        cleanupDeadServers = json["cleanup_dead_servers"]?.boolValue ?? false
        deadServerLastContactThreshold = number("dead_server_last_contact_threshold", deadServerLastContactThreshold)
        lastContactThreshold = number("last_contact_threshold", lastContactThreshold)
        maxTrailingLogs = number("max_trailing_logs", maxTrailingLogs)
        minQuorum = number("min_quorum", minQuorum)
        serverStabilizationTime = number("server_stabilization_time", serverStabilizationTime)
    }

    /// The stored form (durations as seconds).
    package var json: JSONValue {
        [
            "cleanup_dead_servers": .bool(cleanupDeadServers),
            "dead_server_last_contact_threshold": .int(deadServerLastContactThreshold),
            "last_contact_threshold": .int(lastContactThreshold), "max_trailing_logs": .int(maxTrailingLogs),
            "min_quorum": .int(minQuorum), "server_stabilization_time": .int(serverStabilizationTime),
        ]
    }

    /// What `GET sys/storage/raft/autopilot/configuration` answers: durations as Go prints them.
    package var response: [String: JSONValue] {
        [
            "cleanup_dead_servers": .bool(cleanupDeadServers),
            "dead_server_last_contact_threshold": .string(
                VaultDuration.goString(seconds: deadServerLastContactThreshold)
            ),
            "last_contact_threshold": .string(VaultDuration.goString(seconds: lastContactThreshold)),
            "max_trailing_logs": .int(maxTrailingLogs), "min_quorum": .int(minQuorum),
            "server_stabilization_time": .string(VaultDuration.goString(seconds: serverStabilizationTime)),
        ]
    }

    /// Refuses settings that would remove voters down to no quorum or declare live nodes dead (OpenBao's
    /// two rules), or that mean nothing (a zero contact threshold).
    package func validate() throws(CofferError) {
        if cleanupDeadServers && minQuorum < 3 {
            throw CofferError.invalid(
                "min_quorum must be set when cleanup_dead_servers is set and it should at least be 3; "
                    + "cleanup_dead_servers: true, min_quorum: \(minQuorum)"
            )
        }
        if deadServerLastContactThreshold < 60 {
            throw CofferError.invalid(
                "dead_server_last_contact_threshold should not be set to less than 1m; received: "
                    + VaultDuration.goString(seconds: deadServerLastContactThreshold)
            )
        }
        if lastContactThreshold < 1 {
            throw CofferError.invalid("last_contact_threshold must be at least 1s")
        }
    }
}
