import CSQLite
package import CofferCore
import CofferStorage
package import Raft

/// A node's Raft log on disk: the entries, the hard state and the latest snapshot in one SQLite file
/// (`raft.db` beside the node's data file), written in one transaction per ``Ready`` so that what a
/// vote or an append acknowledgement promises is durable before the message leaves.
///
/// Reads never touch the file: the store keeps the same log in a ``MemoryStorage`` (bounded because
/// the log is compacted after every snapshot), loaded at open and updated only after a write
/// committed. So the core reads what is durable and nothing else.
///
/// Every row carries a 64-bit FNV-1a checksum of its fields, checked when the file is opened: a
/// flipped bit in an entry, which SQLite itself would not notice, is refused with the index it is at
/// instead of being replicated or applied. Not thread-safe: one node drives its store from one thread,
/// as ``RawNode`` requires.
package final class SQLiteLogStore: LogStorage {
    /// The file's `application_id` ("CofR") and the format this code writes.
    static let applicationID: Int32 = 0x436F_6652
    static let formatVersion = 1

    package let path: String
    private let db: OpaquePointer
    private let memory: MemoryStorage
    private var checkpointer: WALCheckpointer?
    private var closed = false
    /// The statements the writes use, prepared once: every `Ready` runs the same few, and preparing
    /// them each time (six parses per save) cost each node about a tenth of its CPU per replicated write.
    private var statements: [String: OpaquePointer] = [:]
    /// The connection's `synchronous` setting as last set (nil: not set yet), so it is set only on a change.
    private var synchronousFull: Bool?

    /// Opens `path`, creating an empty log there if the file does not exist. A file that is not a
    /// Raft log, has another format, or holds a row whose checksum does not match is refused with
    /// `corruptDatabase`, naming what was wrong.
    package init(path: String) throws(CofferError) {
        self.path = path
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw CofferError(.io, "cannot open the Raft log \(path): \(message)")
        }
        db = handle
        do {
            try Self.prepareSchema(handle, path)
            memory = try Self.load(handle, path)
        } catch {
            sqlite3_close_v2(handle)
            throw error
        }
        checkpointer = WALCheckpointer(path: path, writer: handle)
    }

    deinit { close() }

    /// Closes the file; the store must not be used afterwards.
    package func close() {
        guard !closed else { return }
        closed = true
        checkpointer?.stop()
        for stmt in statements.values { sqlite3_finalize(stmt) }
        statements = [:]
        sqlite3_close_v2(db)
    }

    package var hardState: HardState { memory.hardState }

    /// A hard state whose only change is the commit index (a ``Ready`` without `mustSync`), kept in
    /// memory and not written: the commit index can be learned again, and the next save that writes
    /// (entries, a term, a vote) stores the latest one. A node that restarts starts from the index its
    /// data file applied when that is later than the stored one (``RaftBackend``).
    package func noteCommit(_ hardState: HardState) { memory.setHardState(hardState) }

    // MARK: LogStorage (from memory)

    package func initialState() throws(RaftError) -> (HardState, ConfState) { try memory.initialState() }
    package func entries(from low: UInt64, to high: UInt64, maxBytes: Int) throws(RaftError) -> [Entry] {
        try memory.entries(from: low, to: high, maxBytes: maxBytes)
    }
    package func term(at index: UInt64) throws(RaftError) -> UInt64 { try memory.term(at: index) }
    package func firstIndex() throws(RaftError) -> UInt64 { try memory.firstIndex() }
    package func lastIndex() throws(RaftError) -> UInt64 { try memory.lastIndex() }
    package func snapshot() throws(RaftError) -> Snapshot { try memory.snapshot() }

    // MARK: Writes

    /// Persists what a ``Ready`` asks, in this order and in one transaction: the snapshot (which
    /// replaces the whole log), the entries (an entry at an index already stored replaces it and
    /// everything after it), the hard state. With `sync` (the Ready's `mustSync`) the commit is
    /// fsync'd before this returns; without it (only the commit index moved) it reaches the disk with
    /// the next synced write, which Raft allows because the commit index is recoverable.
    package func save(
        snapshot: Snapshot? = nil,
        entries: [Entry] = [],
        hardState: HardState? = nil,
        sync: Bool = true
    ) throws(CofferError) {
        let snapshot = snapshot.flatMap { $0.isEmpty ? nil : $0 }
        if let snapshot, snapshot.metadata.index <= memory.currentSnapshot.metadata.index {
            throw CofferError(
                .invalidArgument,
                "snapshot at \(snapshot.metadata.index) is not newer than the stored one at \(memory.currentSnapshot.metadata.index)"
            )
        }
        let base = snapshot?.metadata.index ?? (memory.currentSnapshot.metadata.index)
        let kept = entries.filter { $0.index > base }
        var replacesEntries = false  // the batch starts at or before the last stored entry
        if let first = kept.first {
            let last = snapshot == nil ? (try? memory.lastIndex()) ?? 0 : base
            replacesEntries = first.index <= last
            guard first.index <= last + 1 else {
                throw CofferError(.invalidArgument, "appending index \(first.index) would leave a gap after \(last)")
            }
            for (offset, entry) in kept.enumerated() where entry.index != first.index + UInt64(offset) {
                throw CofferError(.invalidArgument, "entries to append are not contiguous at index \(entry.index)")
            }
        }
        guard snapshot != nil || !kept.isEmpty || hardState != nil else { return }

        try setSynchronous(full: sync)
        try transaction { () throws(CofferError) in
            if let snapshot {
                try run("DELETE FROM entries")
                try writeSnapshot(snapshot)
            }
            if let first = kept.first {
                if replacesEntries { try run("DELETE FROM entries WHERE idx >= ?1", [.int(first.index)]) }
                for entry in kept {
                    try run(
                        "INSERT INTO entries(idx, term, kind, data, sum) VALUES (?1, ?2, ?3, ?4, ?5)",
                        [
                            .int(entry.index), .int(entry.term), .int(UInt64(entry.kind.rawValue)), .blob(entry.data),
                            .int(Self.checksum(entry)),
                        ]
                    )
                }
            }
            if let hardState {
                let fields = [hardState.term, hardState.vote, hardState.commit]
                try run(
                    "INSERT OR REPLACE INTO hard_state(id, term, vote, commit_index, sum) VALUES (1, ?1, ?2, ?3, ?4)",
                    fields.map { .int($0) } + [.int(Self.checksum(fields))]
                )
            }
        }
        // Durable: now the core may see it.
        do {
            if let snapshot { try memory.applySnapshot(snapshot) }
            if !kept.isEmpty { try memory.append(kept) }
        } catch {
            throw CofferError(.internal, "the Raft log in memory disagrees with \(path): \(error.message)")
        }
        if let hardState { memory.setHardState(hardState) }
    }

    /// Records the application's state at the applied `index` as the snapshot sent to lagging
    /// followers, then drops the entries it covers except the last `keep` (so a follower slightly
    /// behind still catches up from the log instead of a whole snapshot).
    @discardableResult
    package func createSnapshot(
        at index: UInt64,
        confState: ConfState,
        data: [UInt8],
        keep: UInt64 = 0
    ) throws(CofferError) -> Snapshot {
        let term: UInt64
        do {
            term = try memory.term(at: index)
        } catch {
            throw CofferError(.invalidArgument, "cannot snapshot at index \(index): \(error.message)")
        }
        guard index > memory.currentSnapshot.metadata.index else {
            throw CofferError(
                .invalidArgument,
                "snapshot at \(index) is not newer than the stored one at \(memory.currentSnapshot.metadata.index)"
            )
        }
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: index, term: term, confState: confState), data: data)
        let compactThrough = index > keep ? index - keep : 0
        let base = (try? memory.firstIndex()).map { $0 - 1 } ?? 0
        try setSynchronous(full: true)
        try transaction { () throws(CofferError) in
            try writeSnapshot(snapshot)
            if compactThrough > base {
                // The entry at the new base stays: its term answers `term(at: firstIndex() - 1)`.
                try run("DELETE FROM entries WHERE idx < ?1", [.int(compactThrough)])
            }
        }
        do {
            try memory.createSnapshot(at: index, confState: confState, data: data)
            if compactThrough > base { try memory.compact(through: compactThrough) }
        } catch {
            throw CofferError(.internal, "the Raft log in memory disagrees with \(path): \(error.message)")
        }
        return snapshot
    }

    // MARK: The file

    private static func prepareSchema(_ db: OpaquePointer, _ path: String) throws(CofferError) {
        let appID = Int32(truncatingIfNeeded: try scalar(db, path, "PRAGMA application_id"))
        let tables = try scalar(db, path, "SELECT count(*) FROM sqlite_master")
        if appID == 0 && tables == 0 {
            try exec(db, path, "PRAGMA journal_mode=WAL")
            try exec(
                db,
                path,
                """
                BEGIN;
                CREATE TABLE entries(idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
                                     data BLOB NOT NULL, sum INTEGER NOT NULL);
                CREATE TABLE hard_state(id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL,
                                        vote INTEGER NOT NULL, commit_index INTEGER NOT NULL, sum INTEGER NOT NULL);
                CREATE TABLE snapshot(id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL,
                                      voters TEXT NOT NULL, learners TEXT NOT NULL, data BLOB NOT NULL,
                                      sum INTEGER NOT NULL);
                PRAGMA application_id=\(applicationID);
                PRAGMA user_version=\(formatVersion);
                COMMIT;
                """
            )
        } else if appID != applicationID {
            throw CofferError(.corruptDatabase, "\(path) is not a Coffer Raft log (application id \(appID))")
        } else {
            let version = try scalar(db, path, "PRAGMA user_version")
            guard version == Int64(formatVersion) else {
                throw CofferError(
                    .corruptDatabase,
                    "\(path) has Raft log format \(version); this Coffer reads format \(formatVersion)"
                )
            }
            try exec(db, path, "PRAGMA journal_mode=WAL")
        }
    }

    /// Reads the whole file into a ``MemoryStorage``, checking every row's checksum and that the
    /// entries are contiguous after the snapshot.
    private static func load(_ db: OpaquePointer, _ path: String) throws(CofferError) -> MemoryStorage {
        let memory = MemoryStorage()
        func damaged(_ what: String) -> CofferError {
            CofferError(.corruptDatabase, "the Raft log \(path) is damaged: \(what); restore the node from a peer")
        }
        var snapshot: Snapshot?
        try query(db, path, "SELECT idx, term, voters, learners, data, sum FROM snapshot") {
            (row) throws(CofferError) in
            let voters = try ids(row.text(2), damaged: damaged("the snapshot's voters are unreadable"))
            let learners = try ids(row.text(3), damaged: damaged("the snapshot's learners are unreadable"))
            let found = Snapshot(
                metadata: SnapshotMetadata(
                    index: row.uint(0),
                    term: row.uint(1),
                    confState: ConfState(voters: voters, learners: learners)
                ),
                data: row.blob(4)
            )
            guard row.uint(5) == checksum(found) else { throw damaged("the snapshot's checksum does not match") }
            snapshot = found
        }
        if let snapshot, !snapshot.isEmpty {
            do { try memory.applySnapshot(snapshot) } catch { throw damaged(error.message) }
        }
        try query(db, path, "SELECT term, vote, commit_index, sum FROM hard_state") { (row) throws(CofferError) in
            let fields = [row.uint(0), row.uint(1), row.uint(2)]
            guard row.uint(3) == checksum(fields) else { throw damaged("the hard state's checksum does not match") }
            memory.setHardState(HardState(term: fields[0], vote: fields[1], commit: fields[2]))
        }
        var entries: [Entry] = []
        let base = snapshot?.metadata.index ?? 0
        try query(db, path, "SELECT idx, term, kind, data, sum FROM entries ORDER BY idx") {
            (row) throws(CofferError) in
            guard let kind = EntryKind(rawValue: UInt8(truncatingIfNeeded: row.uint(2))), row.uint(2) < 256 else {
                throw damaged("entry \(row.uint(0)) has an unknown kind \(row.uint(2))")
            }
            let entry = Entry(term: row.uint(1), index: row.uint(0), kind: kind, data: row.blob(3))
            guard row.uint(4) == checksum(entry) else {
                throw damaged("entry \(entry.index)'s checksum does not match")
            }
            let expected = (entries.last?.index ?? base) + 1
            // The entry at the snapshot's index may stay after compaction with `keep`; skip what the
            // snapshot covers.
            if entry.index <= base { return }
            guard entry.index == expected else { throw damaged("entry \(expected) is missing") }
            entries.append(entry)
        }
        do { try memory.append(entries) } catch { throw damaged(error.message) }
        return memory
    }

    private static func ids(_ text: String, damaged: CofferError) throws(CofferError) -> [NodeID] {
        if text.isEmpty { return [] }
        var out: [NodeID] = []
        for part in text.split(separator: ",") {
            guard let id = NodeID(part) else { throw damaged }
            out.append(id)
        }
        return out
    }

    private func writeSnapshot(_ snapshot: Snapshot) throws(CofferError) {
        let conf = snapshot.metadata.confState
        try run(
            "INSERT OR REPLACE INTO snapshot(id, idx, term, voters, learners, data, sum) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
            [
                .int(snapshot.metadata.index), .int(snapshot.metadata.term),
                .text(conf.voters.map(String.init).joined(separator: ",")),
                .text(conf.learners.map(String.init).joined(separator: ",")), .blob(snapshot.data),
                .int(Self.checksum(snapshot)),
            ]
        )
    }

    // MARK: Checksums (FNV-1a, 64 bits: any one changed byte changes it)

    private static func checksum(_ words: [UInt64], _ data: [UInt8] = []) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        @inline(__always) func mix(_ byte: UInt8) {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        for word in words {
            for shift in stride(from: 0, to: 64, by: 8) { mix(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
        }
        for byte in data { mix(byte) }
        // SQLite integers are signed: keep the stored value below 2^63 so it reads back the same.
        return hash & 0x7FFF_FFFF_FFFF_FFFF
    }

    private static func checksum(_ entry: Entry) -> UInt64 {
        checksum([entry.index, entry.term, UInt64(entry.kind.rawValue), UInt64(entry.data.count)], entry.data)
    }

    private static func checksum(_ snapshot: Snapshot) -> UInt64 {
        let conf = snapshot.metadata.confState
        let words =
            [snapshot.metadata.index, snapshot.metadata.term, UInt64(conf.voters.count)] + conf.voters
            + [UInt64(conf.learners.count)] + conf.learners
        return checksum(words + [UInt64(snapshot.data.count)], snapshot.data)
    }

    // MARK: SQLite plumbing

    private enum Value {
        case int(UInt64)
        case text(String)
        case blob([UInt8])
    }

    private struct Row {
        let stmt: OpaquePointer
        func uint(_ column: Int32) -> UInt64 { UInt64(bitPattern: sqlite3_column_int64(stmt, column)) }
        func text(_ column: Int32) -> String {
            guard let p = sqlite3_column_text(stmt, column) else { return "" }
            return String(cString: p)
        }
        func blob(_ column: Int32) -> [UInt8] {
            let count = Int(sqlite3_column_bytes(stmt, column))
            guard count > 0, let p = sqlite3_column_blob(stmt, column) else { return [] }
            return Array(UnsafeRawBufferPointer(start: p, count: count))
        }
    }

    private func fail(_ rc: Int32, _ action: String) -> CofferError { Self.error(db, rc, path, action) }

    private static func error(_ db: OpaquePointer, _ rc: Int32, _ path: String, _ action: String) -> CofferError {
        let text = String(cString: sqlite3_errmsg(db))
        switch rc & 0xFF {
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return CofferError(
                .corruptDatabase,
                "the Raft log \(path) is damaged (\(text)); restore the node from a peer"
            )
        case SQLITE_NOMEM:
            return CofferError(.outOfMemory, "SQLite ran out of memory \(action)")
        default:
            return CofferError(.io, "Raft log error in \(path) while \(action): \(text)")
        }
    }

    /// `PRAGMA synchronous=FULL` (the commit is fsync'd) or `NORMAL`, when it is not already that.
    private func setSynchronous(full: Bool) throws(CofferError) {
        guard synchronousFull != full else { return }
        try run(full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
        synchronousFull = full
    }

    private static func exec(_ db: OpaquePointer, _ path: String, _ sql: String) throws(CofferError) {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(db, rc, path, "running \(sql.prefix(40))") }
    }

    private static func scalar(_ db: OpaquePointer, _ path: String, _ sql: String) throws(CofferError) -> Int64 {
        var result: Int64 = 0
        try query(db, path, sql) { row in result = Int64(bitPattern: row.uint(0)) }
        return result
    }

    private static func query(
        _ db: OpaquePointer,
        _ path: String,
        _ sql: String,
        _ each: (Row) throws(CofferError) -> Void
    ) throws(CofferError) {
        var stmt: OpaquePointer?
        var rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(db, rc, path, "reading the log") }
        defer { sqlite3_finalize(stmt) }
        while true {
            rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw error(db, rc, path, "reading the log") }
            try each(Row(stmt: stmt))
        }
    }

    /// Runs one of the write statements (prepared on first use, then kept) with `values` bound.
    private func run(_ sql: String, _ values: [Value] = []) throws(CofferError) {
        var rc: Int32
        let stmt: OpaquePointer
        if let cached = statements[sql] {
            stmt = cached
        } else {
            var prepared: OpaquePointer?
            rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &prepared, nil)
            guard rc == SQLITE_OK, let prepared else { throw fail(rc, "writing the log") }
            statements[sql] = prepared
            stmt = prepared
        }
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            switch value {
            case .int(let v): rc = sqlite3_bind_int64(stmt, index, Int64(bitPattern: v))
            case .text(let t): rc = sqlite3_bind_text(stmt, index, t, -1, coffer_sqlite_transient())
            case .blob(let b):
                rc = b.withUnsafeBytes { raw in
                    sqlite3_bind_blob(
                        stmt,
                        index,
                        raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                        Int32(b.count),
                        coffer_sqlite_transient()
                    )
                }
            }
            guard rc == SQLITE_OK else { throw fail(rc, "writing the log") }
        }
        rc = sqlite3_step(stmt)
        guard rc == SQLITE_DONE else { throw fail(rc, "writing the log") }
    }

    private func transaction(_ body: () throws(CofferError) -> Void) throws(CofferError) {
        try run("BEGIN IMMEDIATE")
        do {
            try body()
            try run("COMMIT")
        } catch {
            _ = sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            throw error
        }
    }
}
