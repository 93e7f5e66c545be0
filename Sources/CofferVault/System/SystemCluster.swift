package import CofferCore
package import CofferFramework

/// The HA and Raft operator paths of `sys/` with OpenBao's shapes (`sys/ha-status`,
/// `sys/storage/raft/...`), over the core's ``ClusterView``. A vault that is not clustered answers
/// them with "not clustered" (400); `sys/leader` and `sys/health` are in SystemBackend.swift.
extension SystemBackend {
    static let clusterUnauthenticatedPaths = [
        "storage/raft/bootstrap/challenge", "storage/raft/bootstrap/answer", "storage/raft/join",
    ]
    static let clusterRootPaths = [
        "storage/raft/configuration", "storage/raft/remove-peer", "storage/raft/snapshot",
        "storage/raft/snapshot-force", "storage/raft/autopilot/state", "storage/raft/autopilot/configuration",
    ]

    static let clusterPaths: [Path<SystemBackend>] = [
        Path("ha-status", read: SystemBackend.haStatus),
        Path("step-down", write: SystemBackend.stepDown),
        Path("storage/raft/configuration", read: SystemBackend.raftConfiguration),
        Path("storage/raft/remove-peer", fields: [.string("server_id")], write: SystemBackend.removePeer),
        Path(
            "storage/raft/snapshot",
            fields: [.string("snapshot")],
            read: SystemBackend.saveSnapshot,
            write: SystemBackend.restoreSnapshot
        ),
        Path("storage/raft/snapshot-force", fields: [.string("snapshot")], write: SystemBackend.forceRestoreSnapshot),
        Path("storage/raft/autopilot/state", read: SystemBackend.autopilotState),
        Path(
            "storage/raft/autopilot/configuration",
            fields: [
                .bool("cleanup_dead_servers"), .duration("dead_server_last_contact_threshold"),
                .duration("last_contact_threshold"), .int("max_trailing_logs", 1...Int(Int32.max)),
                .int("min_quorum", 0...1000), .duration("server_stabilization_time"),
            ],
            read: SystemBackend.autopilotConfiguration,
            write: SystemBackend.setAutopilotConfiguration
        ),
        Path("storage/raft/bootstrap/challenge", fields: [.string("server_id")], write: SystemBackend.joinChallenge),
        Path(
            "storage/raft/bootstrap/answer",
            fields: [
                .string("server_id"), .string("answer"), .string("cluster_addr"), .string("api_addr"),
                .bool("non_voter"),
            ],
            write: SystemBackend.admit
        ),
        Path(
            "storage/raft/join",
            fields: [
                .string("leader_api_addr"), .bool("non_voter"), .bool("retry"), .string("auto_join"),
                .string("auto_join_scheme"), .int("auto_join_port", 0...65535), .string("leader_ca_cert"),
                .string("leader_client_cert"), .string("leader_client_key"),
            ],
            write: SystemBackend.join
        ),
    ]

    private func clustered() throws(CofferError) -> any ClusterView {
        guard let cluster = core.cluster else {
            throw CofferError.invalid("this vault is not clustered: its storage is not \"raft\"")
        }
        return cluster
    }

    /// `sys/leader`: OpenBao's HA fields; `{"ha_enabled": false}` for a single node.
    func leader(_ request: BackendRequest) throws(CofferError) -> Response {
        guard !core.isSealed else { throw CofferError.sealedError }
        guard let cluster = core.cluster else { return .raw(["ha_enabled": false]) }
        let state = cluster.state
        var body: [String: JSONValue] = [
            "ha_enabled": true, "is_self": .bool(state.isActive),
            "leader_address": .string(state.leaderAPIAddress ?? ""),
            "leader_cluster_address": .string(state.leaderClusterAddress.map { "https://" + $0 } ?? ""),
            "performance_standby": false, "performance_standby_last_remote_wal": 0,
            "raft_committed_index": .int(Int64(clamping: state.committedIndex)),
            "raft_applied_index": .int(Int64(clamping: state.appliedIndex)),
        ]
        if let since = state.activeSince { body["active_time"] = .string(since.rfc3339) }
        return .raw(.object(body))
    }

    /// `sys/step-down`: the active node hands leadership to another voter; a single node does nothing.
    func stepDown(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.cluster?.stepDown()
        return .noContent
    }

    func haStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        let cluster = try clustered()
        let nodes: [JSONValue] = try cluster.members().map { member in
            [
                "hostname": .string(member.name), "api_address": .string(member.apiAddress),
                "cluster_address": .string("https://" + member.clusterAddress), "active_node": .bool(member.leader),
                "last_echo": .null, "version": .string(CofferVersion.versionString),
                "upgrade_version": .string(CofferVersion.versionString),
            ]
        }
        // OpenBao lists the nodes both at the top level (what its CLI reads) and under `data`.
        return .raw(["nodes": .array(nodes), "data": ["nodes": .array(nodes)]])
    }

    func raftConfiguration(_ request: BackendRequest) throws(CofferError) -> Response {
        let servers: [JSONValue] = try clustered().members().map { member in
            [
                "node_id": .string(member.name), "address": .string(member.clusterAddress),
                "leader": .bool(member.leader), "protocol_version": "3", "voter": .bool(member.voter),
            ]
        }
        return Response(data: ["config": ["servers": .array(servers), "index": 0]])
    }

    func removePeer(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let name = request.fields.string("server_id"), !name.isEmpty else {
            throw CofferError.invalid("no server id provided")
        }
        try clustered().removeMember(named: name)
        return .noContent
    }

    func saveSnapshot(_ request: BackendRequest) throws(CofferError) -> Response {
        .rawBody(try clustered().saveSnapshot(), contentType: "application/gzip")
    }

    func restoreSnapshot(_ request: BackendRequest) throws(CofferError) -> Response {
        try restore(request, force: false)
    }

    func forceRestoreSnapshot(_ request: BackendRequest) throws(CofferError) -> Response {
        try restore(request, force: true)
    }

    private func restore(_ request: BackendRequest, force: Bool) throws(CofferError) -> Response {
        guard let text = request.fields.string("snapshot"), let file = Base64.decode(text), !file.isEmpty else {
            throw CofferError.invalid("the request body must be a snapshot file (from sys/storage/raft/snapshot)")
        }
        try clustered().restoreSnapshot(file, force: force)
        return .noContent
    }

    func autopilotState(_ request: BackendRequest) throws(CofferError) -> Response {
        let cluster = try clustered()
        let state = cluster.state
        let members = try cluster.autopilotMembers()
        let voters = members.filter(\.member.voter)
        let healthyVoters = voters.filter(\.healthy).count
        var servers: [String: JSONValue] = [:]
        for judged in members {
            let member = judged.member
            var server: [String: JSONValue] = [
                "id": .string(member.name), "name": .string(member.name), "address": .string(member.clusterAddress),
                "node_status": .string(judged.healthy ? "alive" : "failed"),
                "last_contact": .string(VaultDuration.goString(nanoseconds: judged.lastContactNanoseconds)),
                "last_index": .int(member.matchIndex), "last_term": .int(state.term), "healthy": .bool(judged.healthy),
                "status": .string(member.leader ? "leader" : member.voter ? "voter" : "non-voter"),
                "node_type": .string(member.voter ? "voter" : "non-voter"),
                "version": .string(CofferVersion.versionString),
            ]
            if let since = judged.stableSince { server["stable_since"] = .string(since.rfc3339) }
            servers[member.name] = .object(server)
        }
        return Response(data: [
            "healthy": .bool(healthyVoters == voters.count),
            "failure_tolerance": .int(max(0, healthyVoters - (voters.count / 2 + 1))),
            "leader": .string(state.leaderName ?? ""), "voters": .array(voters.map { .string($0.member.name) }),
            "servers": .object(servers),
        ])
    }

    func autopilotConfiguration(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: try clustered().autopilotConfiguration().response)
    }

    /// Sets the fields the request gives; the others keep their values.
    func setAutopilotConfiguration(_ request: BackendRequest) throws(CofferError) -> Response {
        let cluster = try clustered()
        let f = request.fields
        var configuration = try cluster.autopilotConfiguration()
        if let v = f.bool("cleanup_dead_servers") { configuration.cleanupDeadServers = v }
        if let v = f.seconds("dead_server_last_contact_threshold") { configuration.deadServerLastContactThreshold = v }
        if let v = f.seconds("last_contact_threshold") { configuration.lastContactThreshold = v }
        if let v = f.int("max_trailing_logs") { configuration.maxTrailingLogs = Int64(v) }
        if let v = f.int("min_quorum") { configuration.minQuorum = Int64(v) }
        if let v = f.seconds("server_stabilization_time") { configuration.serverStabilizationTime = v }
        try configuration.validate()
        try cluster.setAutopilotConfiguration(configuration)
        return .noContent
    }

    func joinChallenge(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let name = request.fields.string("server_id"), !name.isEmpty else {
            throw CofferError.invalid("no server id provided")
        }
        return Response(data: try clustered().joinChallenge(for: name))
    }

    func admit(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        guard let name = f.string("server_id"), !name.isEmpty, let answer = f.string("answer"),
            let clusterAddress = f.string("cluster_addr"), !clusterAddress.isEmpty
        else {
            throw CofferError.invalid("server_id, answer and cluster_addr are required")
        }
        try clustered().admit(
            name: name,
            answer: answer,
            clusterAddress: clusterAddress,
            apiAddress: f.string("api_addr") ?? "",
            voter: !(f.bool("non_voter") ?? false)
        )
        return .noContent
    }

    /// `sys/storage/raft/join` on a node to add: `{"joined": true}`, bare, as OpenBao answers.
    func join(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let leader = request.fields.string("leader_api_addr"), !leader.isEmpty else {
            throw CofferError.invalid("leader_api_addr is required")
        }
        let certificate = request.fields.string("leader_client_cert").flatMap { $0.isEmpty ? nil : $0 }
        let key = request.fields.string("leader_client_key").flatMap { $0.isEmpty ? nil : $0 }
        guard (certificate == nil) == (key == nil) else {
            throw CofferError.invalid("leader_client_cert and leader_client_key go together")
        }
        var keyBytes = Array((key ?? "").utf8)
        defer { keyBytes.wipe() }
        let joined = try clustered().join(
            leaderAPIAddress: leader,
            voter: !(request.fields.bool("non_voter") ?? false),
            leaderCA: request.fields.string("leader_ca_cert"),
            clientIdentity: certificate.map { ($0, SecureBytes(keyBytes)) }
        )
        return .raw(["joined": .bool(joined)])
    }
}
