@testable import Raft

/// A test application's log store: a `MemoryStorage` whose `snapshot()` first captures the application's
/// applied state when it is newer than the stored snapshot — what a real integration does when the leader
/// needs a snapshot for a follower that is behind or was just added.
final class AppStorage: LogStorage {
    let memory = MemoryStorage()
    /// The application's applied index, membership and state bytes, or nil if it cannot snapshot now.
    var captureState: () -> (index: UInt64, confState: ConfState, data: [UInt8])? = { nil }

    init(snapshot: Snapshot? = nil) {
        if let snapshot { try? memory.applySnapshot(snapshot) }
    }

    func initialState() throws(RaftError) -> (HardState, ConfState) { try memory.initialState() }
    func entries(from low: UInt64, to high: UInt64, maxBytes: Int) throws(RaftError) -> [Entry] {
        try memory.entries(from: low, to: high, maxBytes: maxBytes)
    }
    func term(at index: UInt64) throws(RaftError) -> UInt64 { try memory.term(at: index) }
    func firstIndex() throws(RaftError) -> UInt64 { try memory.firstIndex() }
    func lastIndex() throws(RaftError) -> UInt64 { try memory.lastIndex() }

    func snapshot() throws(RaftError) -> Snapshot {
        if let state = captureState(), state.index > memory.currentSnapshot.metadata.index {
            try memory.createSnapshot(at: state.index, confState: state.confState, data: state.data)
        }
        return try memory.snapshot()
    }
}
