@testable import Raft

/// Collects the core's log lines at or above a level, for the golden output.
final class LineLogger: RaftLogger {
    var lines: [String] = []
    var level: RaftLogLevel? = .info

    func log(_ level: RaftLogLevel, _ message: String) {
        guard let threshold = self.level, level >= threshold else { return }
        lines.append("\(level) \(message)")
    }
}

/// The nodes, network and application of one interaction script (etcd rafttest style): every command
/// prints what happened, and the script compares that with its golden output.
final class InteractionEnv {
    final class Node {
        let id: NodeID
        var config: Config
        let app: AppStorage
        var storage: MemoryStorage { app.memory }
        var raw: RawNode?
        /// The application's state: the data of every normal entry applied, in order, the index it applied
        /// through and the membership at that index.
        var state: [String] = []
        var applied: UInt64 = 0
        var confState = ConfState()

        init(id: NodeID, config: Config, app: AppStorage) {
            self.id = id
            self.config = config
            self.app = app
            let snapshot = app.memory.currentSnapshot.metadata
            applied = snapshot.index
            confState = snapshot.confState
            app.captureState = { [unowned self] in
                (self.applied, self.confState, Array(self.state.joined(separator: ",").utf8))
            }
        }
    }

    let logger = LineLogger()
    var nodes: [NodeID: Node] = [:]
    /// Sent but not yet delivered, in send order; `cutAtSend` when a partition already separated the two.
    var inFlight: [(message: Message, cutAtSend: Bool)] = []
    /// Directed links that drop everything.
    var cut: Set<[NodeID]> = []
    private var output: [String] = []

    // MARK: - Running a command

    func run(_ command: String, _ args: [String]) -> String {
        output = []
        do {
            try execute(command, args)
        } catch let error as RaftError {
            flushLog(indent: "")
            output.append("error: \(error.message)")
        } catch {
            output.append("error: \(error)")
        }
        flushLog(indent: "")
        return output.isEmpty ? "ok" : output.joined(separator: "\n")
    }

    struct ScriptError: Error, CustomStringConvertible {
        var description: String
    }

    private func execute(_ command: String, _ args: [String]) throws {
        var positional: [String] = []
        var options: [String: String] = [:]
        for arg in args {
            if let eq = arg.firstIndex(of: "=") {
                options[String(arg[..<eq])] = String(arg[arg.index(after: eq)...])
            } else {
                positional.append(arg)
            }
        }
        func ids() throws -> [NodeID] {
            try positional.flatMap { try parseIDs($0) }
        }
        func node(_ text: String?) throws -> Node {
            guard let text, let id = NodeID(text), let node = nodes[id] else {
                throw ScriptError(description: "unknown node \(text ?? "")")
            }
            return node
        }
        func raw(_ text: String?) throws -> RawNode {
            let node = try node(text)
            guard let raw = node.raw else { throw ScriptError(description: "node \(node.id) is crashed") }
            return raw
        }
        switch command {
        case "log-level":
            switch positional.first {
            case "none": logger.level = nil
            case "debug": logger.level = .debug
            case "info": logger.level = .info
            default: logger.level = .warning
            }
        case "add-nodes":
            guard let count = positional.first.flatMap(Int.init) else {
                throw ScriptError(description: "add-nodes needs a count")
            }
            try addNodes(count, options)
        case "campaign":
            try raw(positional.first).campaign()
        case "tick":
            let node = try raw(positional.first)
            let count = positional.count > 1 ? Int(positional[1]) ?? 1 : 1
            for _ in 0..<count { node.tick() }
        case "tick-heartbeat", "tick-election":
            let target = try node(positional.first)
            let ticker = try raw(positional.first)
            let count = command == "tick-heartbeat" ? target.config.heartbeatTicks : target.config.electionTicks
            for _ in 0..<count { ticker.tick() }
        case "propose":
            guard positional.count == 2 else { throw ScriptError(description: "propose <id> <data>") }
            try raw(positional[0]).propose(Array(positional[1].utf8))
        case "propose-conf-change":
            guard positional.count == 3, let target = NodeID(positional[2]) else {
                throw ScriptError(description: "propose-conf-change <id> add-voter|add-learner|remove <node>")
            }
            let kind: ConfChange.Kind
            switch positional[1] {
            case "add-voter": kind = .addVoter
            case "add-learner": kind = .addLearner
            case "remove": kind = .removeNode
            default: throw ScriptError(description: "unknown change \(positional[1])")
            }
            try raw(positional[0]).proposeConfChange(ConfChange(kind, target))
        case "transfer-leader":
            guard let to = options["to"].flatMap(NodeID.init) else {
                throw ScriptError(description: "transfer-leader from=<id> to=<id>")
            }
            try raw(options["from"]).transferLeadership(to: to)
        case "read-index":
            guard positional.count == 2 else { throw ScriptError(description: "read-index <id> <context>") }
            try raw(positional[0]).readIndex(context: Array(positional[1].utf8))
        case "process-ready":
            for id in try ids() { try processReady(id) }
        case "deliver-msgs":
            let drop = options["drop"] == "true"
            for id in try ids() { deliver(to: id, drop: drop) }
        case "stabilize":
            let targets = try ids()
            try stabilize(targets.isEmpty ? nodes.keys.sorted() : targets)
        case "partition":
            // partition 1,2 3: links between the groups are cut both ways.
            let groups = try positional.map { try parseIDs($0) }
            cut = []
            for (i, a) in groups.enumerated() {
                for (j, b) in groups.enumerated() where i != j {
                    for x in a { for y in b { cut.insert([x, y]) } }
                }
            }
            output.append("cut: " + cut.map { "\($0[0])->\($0[1])" }.sorted().joined(separator: " "))
        case "cut":
            // cut 1 2: only messages from 1 to 2 are dropped (an asymmetric partition).
            guard positional.count == 2, let from = NodeID(positional[0]), let to = NodeID(positional[1]) else {
                throw ScriptError(description: "cut <from> <to>")
            }
            cut.insert([from, to])
        case "heal":
            cut = []
        case "crash":
            let target = try node(positional.first)
            target.raw = nil
            // What was on its way to the node is lost with it.
            inFlight.removeAll { $0.message.to == target.id }
            let snapshot = target.storage.currentSnapshot
            target.state = stateFromSnapshot(snapshot)
            target.applied = snapshot.metadata.index
            target.confState = snapshot.metadata.confState
        case "restart":
            let target = try node(positional.first)
            target.config.applied = target.applied
            target.raw = try RawNode(config: target.config, storage: target.app)
        case "compact":
            guard positional.count == 2, let index = UInt64(positional[1]) else {
                throw ScriptError(description: "compact <id> <index>")
            }
            let target = try node(positional[0])
            guard let raw = target.raw else { throw ScriptError(description: "node \(target.id) is crashed") }
            // Snapshot the application's state at the index it applied through, then drop the log before it.
            guard raw.status.applied == index else {
                throw ScriptError(description: "compact at the applied index \(raw.status.applied)")
            }
            let data = target.state.joined(separator: ",")
            try target.storage.createSnapshot(at: index, confState: target.confState, data: Array(data.utf8))
            try target.storage.compact(through: index)
            output.append("\(target.id) compacted through \(index); first index \(try target.storage.firstIndex())")
        case "raft-state":
            for id in nodes.keys.sorted() {
                guard let node = nodes[id] else { continue }
                guard let raw = node.raw else {
                    output.append("\(id): crashed")
                    continue
                }
                let s = raw.status
                output.append(
                    "\(id): \(s.softState.role) term:\(s.hardState.term) lead:\(s.softState.leader) commit:\(s.hardState.commit) applied:\(s.applied) last:\(s.lastIndex) \(describeConf(s.confState))"
                )
            }
        case "raft-log":
            let target = try node(positional.first)
            let first = try target.storage.firstIndex()
            let last = try target.storage.lastIndex()
            let entries = try target.storage.entries(from: first, to: last + 1, maxBytes: Int.max)
            if entries.isEmpty { output.append("log is empty: first index=\(first), last index=\(last)") }
            output += entries.map(describe)
        case "app-state":
            for id in try ids() {
                guard let node = nodes[id] else { continue }
                output.append("\(id): [\(node.state.joined(separator: ","))]")
            }
        case "status":
            let s = try raw(positional.first).status
            for (id, pr) in s.progress.sorted(by: { $0.key < $1.key }) {
                output.append("\(id): \(pr.state) match=\(pr.match) next=\(pr.next)\(pr.isLearner ? " learner" : "")")
            }
        default:
            throw ScriptError(description: "unknown command \(command)")
        }
    }

    private func parseIDs(_ text: String) throws -> [NodeID] {
        let trimmed = text.filter { $0 != "(" && $0 != ")" }
        if trimmed.isEmpty { return [] }
        return try trimmed.split(separator: ",").map {
            guard let id = NodeID($0) else { throw ScriptError(description: "bad node id \($0)") }
            return id
        }
    }

    private func addNodes(_ count: Int, _ options: [String: String]) throws {
        let voters = try options["voters"].map(parseIDs) ?? []
        let learners = try options["learners"].map(parseIDs) ?? []
        let index = options["index"].flatMap(UInt64.init) ?? 1
        let first = (nodes.keys.max() ?? 0) + 1
        for id in first..<(first + UInt64(count)) {
            let app: AppStorage
            if voters.isEmpty {
                app = AppStorage()
            } else {
                let meta = SnapshotMetadata(
                    index: index,
                    term: 1,
                    confState: ConfState(voters: voters, learners: learners)
                )
                app = AppStorage(snapshot: Snapshot(metadata: meta))
                app.memory.setHardState(HardState(term: 1, vote: 0, commit: index))
            }
            var config = Config(id: id)
            config.logger = logger
            config.preVote = options["prevote"] != "false"
            config.checkQuorum = options["checkquorum"] != "false"
            if options["readonly"] == "lease" { config.readOnly = .leaseBased }
            if let bytes = options["max-msg-bytes"].flatMap(Int.init) { config.maxBytesPerMessage = bytes }
            let node = Node(id: id, config: config, app: app)
            node.raw = try RawNode(config: config, storage: app)
            nodes[id] = node
        }
    }

    private func stateFromSnapshot(_ snapshot: Snapshot) -> [String] {
        let text = String(decoding: snapshot.data, as: UTF8.self)
        return text.isEmpty ? [] : text.split(separator: ",").map(String.init)
    }

    /// `log-level none` silences everything, Ready and message traces included (for a script's set-up).
    private var quiet: Bool { logger.level == nil }

    private func emit(_ line: String) {
        if !quiet { output.append(line) }
    }

    private func flushLog(indent: String) {
        output += logger.lines.map { indent + $0 }
        logger.lines = []
    }

    // MARK: - Ready handling and delivery

    /// Handles one Ready the way the contract on `Ready` says: persist, send, apply, advance.
    private func processReady(_ id: NodeID) throws {
        guard let node = nodes[id], let raw = node.raw else { return }
        flushLog(indent: "")
        emit("> \(id) handling Ready")
        guard raw.hasReady else {
            emit("  <empty Ready>")
            return
        }
        let rd = raw.ready()
        for line in describe(rd) { emit("  " + line) }
        if let snapshot = rd.snapshot {
            try node.storage.applySnapshot(snapshot)
            node.state = stateFromSnapshot(snapshot)
            node.applied = snapshot.metadata.index
        }
        try node.storage.append(rd.entries)
        if let hard = rd.hardState { node.storage.setHardState(hard) }
        // A message is lost if a partition separates the two or its target is down when it is sent.
        inFlight += rd.messages.map { ($0, cut.contains([$0.from, $0.to]) || nodes[$0.to]?.raw == nil) }
        for entry in rd.committedEntries where entry.kind == .normal && !entry.data.isEmpty {
            node.state.append(String(decoding: entry.data, as: UTF8.self))
        }
        if let last = rd.committedEntries.last { node.applied = last.index }
        raw.advance(rd)
        node.confState = raw.confState
        flushLog(indent: "  ")
    }

    private func deliver(to id: NodeID, drop: Bool) {
        let mine = inFlight.filter { $0.message.to == id }
        inFlight.removeAll { $0.message.to == id }
        guard !mine.isEmpty else { return }
        flushLog(indent: "")
        emit("> \(id) receiving messages")
        for (m, cutAtSend) in mine {
            if drop {
                emit("  dropped: \(describe(m))")
                continue
            }
            guard let raw = nodes[id]?.raw else {
                emit("  dropped (crashed): \(describe(m))")
                continue
            }
            if cutAtSend || cut.contains([m.from, m.to]) {
                emit("  dropped (partition or crash): \(describe(m))")
                continue
            }
            emit("  \(describe(m))")
            do {
                try raw.step(m)
            } catch {
                emit("  rejected: \(error.message)")
            }
            flushLog(indent: "  ")
        }
    }

    private func stabilize(_ ids: [NodeID]) throws {
        while true {
            var progressed = false
            for id in ids where nodes[id]?.raw?.hasReady == true {
                try processReady(id)
                progressed = true
            }
            for id in ids where inFlight.contains(where: { $0.message.to == id }) {
                deliver(to: id, drop: false)
                progressed = true
            }
            if !progressed { return }
        }
    }
}
