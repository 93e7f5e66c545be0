@testable import Raft

// Text forms of the core's values for the interaction scripts' golden output. Only the fields that
// matter for a kind are printed, so the scripts stay readable.

func describe(_ bytes: [UInt8]) -> String {
    "\"" + String(decoding: bytes, as: UTF8.self) + "\""
}

func describe(_ entry: Entry) -> String {
    switch entry.kind {
    case .normal:
        return "\(entry.term)/\(entry.index) \(describe(entry.data))"
    case .confChange:
        guard let change = ConfChange(encoded: entry.data) else { return "\(entry.term)/\(entry.index) conf-change ?" }
        return "\(entry.term)/\(entry.index) conf-change \(describe(change))"
    }
}

func describe(_ change: ConfChange) -> String {
    switch change.kind {
    case .addVoter: "add-voter \(change.nodeID)"
    case .addLearner: "add-learner \(change.nodeID)"
    case .removeNode: "remove \(change.nodeID)"
    }
}

func describe(_ snapshot: Snapshot) -> String {
    let meta = snapshot.metadata
    return "Index:\(meta.index) Term:\(meta.term) \(describeConf(meta.confState)) Data:\(describe(snapshot.data))"
}

func describe(_ m: Message) -> String {
    var parts = ["\(m.from)->\(m.to) \(m.kind)"]
    switch m.kind {
    case .propose, .transferLeader, .readIndex:
        break
    default:
        parts.append("Term:\(m.term)")
    }
    switch m.kind {
    case .append, .commit:
        parts.append("Log:\(m.logTerm)/\(m.index) Commit:\(m.commit)")
        if !m.entries.isEmpty { parts.append("Entries:[\(m.entries.map(describe).joined(separator: ", "))]") }
    case .appendResponse:
        if m.reject {
            parts.append("Rejected Index:\(m.index) (Hint: \(m.rejectHint)/\(m.logTerm))")
        } else {
            parts.append("Index:\(m.index)")
        }
    case .vote, .preVote:
        parts.append("Log:\(m.logTerm)/\(m.index)")
        if !m.context.isEmpty { parts.append("Context:\(describe(m.context))") }
    case .voteResponse, .preVoteResponse:
        if m.reject { parts.append("Rejected") }
    case .heartbeat:
        parts.append("Commit:\(m.commit)")
        if !m.context.isEmpty { parts.append("Context:\(describe(m.context))") }
    case .heartbeatResponse:
        if !m.context.isEmpty { parts.append("Context:\(describe(m.context))") }
    case .snapshot:
        if let snapshot = m.snapshot { parts.append("Snapshot:[\(describe(snapshot))]") }
    case .propose:
        parts.append("Entries:[\(m.entries.map(describe).joined(separator: ", "))]")
    case .readIndex:
        parts.append("Context:\(describe(m.context))")
    case .readIndexResponse:
        parts.append("Index:\(m.index) Context:\(describe(m.context))")
    case .transferLeader, .timeoutNow:
        break
    }
    return parts.joined(separator: " ")
}

func describe(_ rd: Ready) -> [String] {
    var lines = ["Ready MustSync=\(rd.mustSync):"]
    if let soft = rd.softState { lines.append("Lead:\(soft.leader) State:\(soft.role)") }
    if let hard = rd.hardState { lines.append("HardState Term:\(hard.term) Vote:\(hard.vote) Commit:\(hard.commit)") }
    if !rd.entries.isEmpty {
        lines.append("Entries:")
        lines += rd.entries.map(describe)
    }
    if let snapshot = rd.snapshot { lines.append("Snapshot \(describe(snapshot))") }
    if !rd.committedEntries.isEmpty {
        lines.append("CommittedEntries:")
        lines += rd.committedEntries.map(describe)
    }
    if !rd.messages.isEmpty {
        lines.append("Messages:")
        lines += rd.messages.map(describe)
    }
    if !rd.readStates.isEmpty {
        lines.append("ReadStates:")
        lines += rd.readStates.map { "Index:\($0.index) Context:\(describe($0.context))" }
    }
    return lines
}
