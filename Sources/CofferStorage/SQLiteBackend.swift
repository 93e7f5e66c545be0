import CSQLite
package import CofferCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The embedded default: one SQLite file in WAL mode with `synchronous=FULL`, so every acknowledged
/// write survives a crash or power loss.
///
/// One writer connection (behind a mutex) and a pool of reader connections, as GRDB's
/// `DatabasePool` arranges them: in WAL mode a reader sees every committed write and never waits
/// for a commit's fsync, so reads go on at full speed while a write is being made durable.
/// Statements are prepared once per connection and reused. SQLite's own mutexes are off
/// (NOMUTEX): each connection is used by one thread at a time.
///
/// One process owns a database file at a time (the caches above assume every change passes
/// through them): `<path>.lock` is held with `flock` while the backend is open, and a second
/// opener is refused with the holder's pid.
package final class SQLiteBackend: PhysicalBackend {
    /// `PRAGMA application_id` of a Coffer database: "CFFR".
    static let applicationID: Int32 = 0x4346_4652
    /// `PRAGMA user_version`: the layout of the entries table.
    static let formatVersion: Int32 = 1
    /// Reader connections kept open while idle; more are opened under load and closed after.
    static let idleReaders = 8

    package let path: String
    package let changes = ChangeFeed()
    private let writer: Mutex<Connection?>
    private let readers = Mutex<(idle: [Connection], closed: Bool)>(([], false))
    private let owner: OwnerLock

    package var typeName: String { "sqlite" }

    /// Opens (or creates) the database at `path`.
    ///
    /// - Throws: ``CofferError/Code/corruptDatabase`` when the file is not a Coffer database or is
    ///   damaged; ``CofferError/Code/io`` when it cannot be opened or another process has it open.
    package init(path: String) throws(CofferError) {
        _ = SQLiteBackend.configured
        self.path = path
        owner = try OwnerLock(database: path)
        do {
            // A WAL left by a crash is part of the database: the main file alone can look truncated
            // (a checkpoint writes page 1, with the new page count, before the pages it counts).
            // SQLite recovers from the WAL first; the size is judged once a checkpoint has moved the
            // WAL into the file.
            let recovering = SQLiteBackend.fileSize(path + "-wal") > 0
            try SQLiteBackend.checkHeader(path: path, checkSize: !recovering)
            let connection = try Connection(path: path, writer: true)
            if recovering {
                try connection.checkpoint()
                try SQLiteBackend.checkHeader(path: path, checkSize: true)
            }
            writer = Mutex(connection)
        } catch {
            owner.release()
            throw error
        }
    }

    deinit { close() }

    /// Process-wide SQLite settings, made once before the first connection: no memory statistics
    /// (their mutex is shared by every connection, readers included).
    static let configured: Bool = coffer_sqlite_disable_memstatus() == SQLITE_OK

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    package func close() {
        writer.withLock { $0 = nil }
        readers.withLock {
            $0.idle.removeAll()
            $0.closed = true
        }
        owner.release()
    }

    package func get(_ key: String) throws(CofferError) -> [UInt8]? {
        try withReader { (c) throws(CofferError) in try c.get(key) }
    }

    package func list(prefix: String) throws(CofferError) -> [String] {
        try withReader { (c) throws(CofferError) in try c.children(of: prefix, limit: .max) }
    }

    package func list(prefix: String, limit: Int) throws(CofferError) -> [String] {
        try withReader { (c) throws(CofferError) in try c.children(of: prefix, limit: limit) }
    }

    package func put(_ key: String, _ value: [UInt8]) throws(CofferError) {
        try withWriter { (c) throws(CofferError) in try c.put(key, value) }
        changes.publish([key])
    }

    package func delete(_ key: String) throws(CofferError) {
        try withWriter { (c) throws(CofferError) in try c.delete(key) }
        changes.publish([key])
    }

    package func batch(_ operations: [StorageOperation]) throws(CofferError) {
        try withWriter { (c) throws(CofferError) in try c.batch(operations) }
        changes.publish(operations.map(\.key))
    }

    /// For a file whose writes are made durable elsewhere (a Raft node's data file: its log holds every
    /// entry until a snapshot holds the state): commits stop waiting for an fsync (WAL with
    /// `synchronous=NORMAL`, still whole after a process crash; a power loss costs only the last
    /// commits, which the node applies again from its log, since the applied index is in the same
    /// transactions).
    package func durableElsewhere() throws(CofferError) {
        try withWriter { (c) throws(CofferError) in try Connection.exec(c.db, path, "PRAGMA synchronous=NORMAL") }
    }

    /// Every commit so far made durable: the write-ahead log fsync'd (a checkpoint fsyncs what it copied
    /// out of it). Under the writer's lock, so no commit is half-written meanwhile.
    package func sync() throws(CofferError) {
        try withWriter { (_) throws(CofferError) in
            let fd = Glibc.open(path + "-wal", O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if errno == ENOENT { return }  // nothing was written since the last checkpoint emptied it
                throw CofferError(.io, "cannot open \(path)-wal to sync it: \(String(cString: strerror(errno)))")
            }
            defer { Glibc.close(fd) }
            guard fdatasync(fd) == 0 else {
                throw CofferError(.io, "cannot sync \(path)-wal: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Replaces every entry with those of the SQLite file at `path` (written by ``EntryFileWriter``), then
    /// applies `operations`, in one transaction; every key that was or is now present is published.
    package func replaceAll(withEntriesOf path: String, then operations: [StorageOperation]) throws(CofferError) {
        let changed = try withWriter { (c) throws(CofferError) in
            try c.replaceAll(withEntriesOf: path, then: operations)
        }
        changes.publish(changed)
    }

    /// A read transaction on a connection of its own, begun now: later commits are not in it. While it is
    /// open, checkpoints copy only the frames before it, so keep it only as long as it is read.
    package func freeze() throws(CofferError) -> any FrozenEntries {
        if readers.withLock({ $0.closed }) { throw closedError }
        return try SQLiteFrozenEntries(connection: Connection(path: path, writer: false))
    }

    /// Checkpoints made off the writer's thread so far (see ``WALCheckpointer``).
    package var backgroundCheckpoints: Int {
        (try? withWriter { $0.checkpointer?.checkpoints ?? 0 }) ?? 0
    }

    private func withWriter<R>(_ body: (Connection) throws(CofferError) -> R) throws(CofferError) -> R {
        let result: Result<R, CofferError> = writer.withLock { connection in
            guard let connection else { return .failure(closedError) }
            do throws(CofferError) { return .success(try body(connection)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Runs `body` on an idle reader (opening one when none is idle), then returns it to the pool.
    private func withReader<R>(_ body: (Connection) throws(CofferError) -> R) throws(CofferError) -> R {
        let taken: Result<Connection?, CofferError> = readers.withLock { pool in
            if pool.closed { return .failure(closedError) }
            return .success(pool.idle.popLast())
        }
        let connection: Connection
        if let idle = try taken.get() {
            connection = idle
        } else {
            connection = try Connection(path: path, writer: false)
        }
        defer {
            readers.withLock { pool in
                if !pool.closed && pool.idle.count < SQLiteBackend.idleReaders { pool.idle.append(connection) }
            }
        }
        return try body(connection)
    }

    private var closedError: CofferError { CofferError(.io, "the storage file \(path) is closed") }

    /// Refuses a file that is plainly not an SQLite database, or (with `checkSize`) is shorter than
    /// its own header says (a truncated copy).
    static func checkHeader(path: String, checkSize: Bool) throws(CofferError) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }  // does not exist yet: SQLite creates it
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        let size = Int(st.st_size)
        if size == 0 { return }
        var header = [UInt8](repeating: 0, count: 100)
        let n = header.withUnsafeMutableBytes { read(fd, $0.baseAddress, 100) }
        let magic = Array("SQLite format 3\u{0}".utf8)
        guard n == 100, Array(header[0..<16]) == magic else {
            throw CofferError(.corruptDatabase, "\(path) is not a Coffer database (it is not an SQLite file)")
        }
        var pageSize = Int(header[16]) << 8 | Int(header[17])
        if pageSize == 1 { pageSize = 65536 }
        let pages = Int(header[28]) << 24 | Int(header[29]) << 16 | Int(header[30]) << 8 | Int(header[31])
        let changeCounter = header[24..<28]
        let validFor = header[92..<96]
        if checkSize, changeCounter.elementsEqual(validFor), pages > 0, size < pages * pageSize {
            throw CofferError(
                .corruptDatabase,
                "\(path) is truncated: it holds \(size) bytes but its header describes \(pages * pageSize); restore it from a backup"
            )
        }
    }
}

/// `<database>.lock`, held with `flock` for as long as a backend has the database open, with the
/// holder's pid in it for the error a second opener gets. The lock is the kernel's: it ends with
/// the process however it ends, so a crash never leaves a stale lock.
private final class OwnerLock: Sendable {
    private let fd = Mutex<Int32>(-1)

    init(database: String) throws(CofferError) {
        let path = database + ".lock"
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CofferError(.io, "cannot open the lock file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            var holder = [UInt8](repeating: 0, count: 32)
            let n = holder.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, 31, 0) }
            Glibc.close(descriptor)
            let pid = n > 0 ? String(decoding: holder[0..<n], as: UTF8.self).trimmingSpaces() : "unknown"
            throw CofferError(
                .io,
                "the storage file \(database) is in use by another Coffer (pid \(pid.isEmpty ? "unknown" : pid)); "
                    + "one process may open a database at a time: stop that one, or open another file"
            )
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = text.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        fd.withLock { $0 = descriptor }
    }

    func release() {
        fd.withLock { fd in
            guard fd >= 0 else { return }
            _ = flock(fd, LOCK_UN)
            Glibc.close(fd)
            fd = -1
        }
    }
}

/// ``SQLiteBackend/freeze()``: its connection holds a read transaction from its first read until it is
/// released.
// @unchecked: read by one thread at a time, as FrozenEntries says.
private final class SQLiteFrozenEntries: FrozenEntries, @unchecked Sendable {
    let connection: Connection

    init(connection: Connection) throws(CofferError) {
        self.connection = connection
        try Connection.exec(connection.db, connection.path, "BEGIN")
        // The snapshot a WAL reader sees is fixed by its transaction's first read.
        _ = try Connection.scalar(connection.db, connection.path, "SELECT EXISTS (SELECT 1 FROM entries)")
    }

    deinit { _ = sqlite3_exec(connection.db, "COMMIT", nil, nil, nil) }

    func scanSizes(_ body: (Int, Int) -> Void) throws(CofferError) {
        try rows("SELECT key, length(value) FROM entries ORDER BY key") { stmt in
            body(Int(sqlite3_column_bytes(stmt, 0)), Int(sqlite3_column_int64(stmt, 1)))
            return true
        }
    }

    func scan(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Bool) throws(CofferError) {
        try rows("SELECT key, value FROM entries ORDER BY key") { stmt in
            let key = UnsafeRawBufferPointer(
                start: sqlite3_column_text(stmt, 0),
                count: Int(sqlite3_column_bytes(stmt, 0))
            )
            let value = UnsafeRawBufferPointer(
                start: sqlite3_column_blob(stmt, 1),
                count: Int(sqlite3_column_bytes(stmt, 1))
            )
            return body(key, value)
        }
    }

    private func rows(_ sql: String, _ row: (OpaquePointer) -> Bool) throws(CofferError) {
        let stmt = try Connection.prepare(connection.db, connection.path, sql)
        defer { sqlite3_finalize(stmt) }
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw connection.fail(rc, "reading every entry") }
            if !row(stmt) { return }
        }
    }
}

/// One connection and its prepared statements. The writer prepares the write statements too.
// @unchecked: a Connection is used by one thread at a time (the writer behind `SQLiteBackend.writer`,
// a reader between leaving and rejoining the pool), which is why SQLite's own mutexes are off.
private final class Connection: @unchecked Sendable {
    let db: OpaquePointer
    let path: String
    let getStmt: OpaquePointer
    let listStmt: OpaquePointer
    let putStmt: OpaquePointer?
    let deleteStmt: OpaquePointer?
    /// The writer's checkpoints, off its thread.
    private(set) var checkpointer: WALCheckpointer?

    init(path: String, writer: Bool) throws(CofferError) {
        self.path = path
        var handle: OpaquePointer?
        let flags = (writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw CofferError(.io, "cannot open the storage file \(path): \(message)")
        }
        db = handle
        do {
            sqlite3_busy_timeout(handle, 5000)
            if writer {
                try Connection.prepareSchema(db: handle, path: path)
            } else {
                // Readers only read: a bug that tried to write through one fails instead of racing the writer.
                try Connection.exec(handle, path, "PRAGMA query_only=1")
            }
            getStmt = try Connection.prepare(handle, path, "SELECT value FROM entries WHERE key = ?1")
            listStmt = try Connection.prepare(
                handle,
                path,
                "SELECT key FROM entries WHERE key >= ?1 AND key < ?2 ORDER BY key"
            )
            putStmt =
                writer
                ? try Connection.prepare(handle, path, "INSERT OR REPLACE INTO entries(key, value) VALUES (?1, ?2)")
                : nil
            deleteStmt = writer ? try Connection.prepare(handle, path, "DELETE FROM entries WHERE key = ?1") : nil
            if writer { checkpointer = WALCheckpointer(path: path, writer: handle) }
        } catch {
            sqlite3_close_v2(handle)
            throw error
        }
    }

    deinit {
        checkpointer?.stop()
        for stmt in [getStmt, listStmt, putStmt, deleteStmt] { sqlite3_finalize(stmt) }
        sqlite3_close_v2(db)
    }

    static func prepare(_ db: OpaquePointer, _ path: String, _ sql: String) throws(CofferError) -> OpaquePointer {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw Connection.error(db, rc, path, "preparing a statement") }
        return stmt
    }

    static func exec(_ db: OpaquePointer, _ path: String, _ sql: String) throws(CofferError) {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw Connection.error(db, rc, path, "running \(sql.prefix(40))") }
    }

    static func scalar(_ db: OpaquePointer, _ path: String, _ sql: String) throws(CofferError) -> Int64 {
        let stmt = try prepare(db, path, sql)
        defer { sqlite3_finalize(stmt) }
        let rc = sqlite3_step(stmt)
        guard rc == SQLITE_ROW else { throw Connection.error(db, rc, path, "reading \(sql)") }
        return sqlite3_column_int64(stmt, 0)
    }

    /// Creates the schema in a new file; in an existing one, checks that it is ours.
    static func prepareSchema(db: OpaquePointer, path: String) throws(CofferError) {
        let appID = Int32(truncatingIfNeeded: try scalar(db, path, "PRAGMA application_id"))
        let tables = try scalar(db, path, "SELECT count(*) FROM sqlite_master")
        if appID == 0 && tables == 0 {
            try exec(db, path, "PRAGMA journal_mode=WAL")
            try exec(
                db,
                path,
                """
                BEGIN;
                CREATE TABLE entries(key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
                PRAGMA application_id=\(SQLiteBackend.applicationID);
                PRAGMA user_version=\(SQLiteBackend.formatVersion);
                COMMIT;
                """
            )
        } else if appID != SQLiteBackend.applicationID {
            throw CofferError(
                .corruptDatabase,
                "\(path) is not a Coffer database (it is an SQLite file of another application)"
            )
        } else {
            let version = try scalar(db, path, "PRAGMA user_version")
            guard version == Int64(SQLiteBackend.formatVersion) else {
                throw CofferError(
                    .corruptDatabase,
                    "\(path) has storage format \(version); this Coffer reads format \(SQLiteBackend.formatVersion)"
                )
            }
            try exec(db, path, "PRAGMA journal_mode=WAL")
        }
        try exec(db, path, "PRAGMA synchronous=FULL")
    }

    static func error(_ db: OpaquePointer, _ rc: Int32, _ path: String, _ action: String) -> CofferError {
        let primary = rc & 0xFF
        let text = String(cString: sqlite3_errmsg(db))
        switch primary {
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return CofferError(
                .corruptDatabase,
                "the storage file \(path) is damaged (\(text)); restore it from a backup"
            )
        case SQLITE_NOMEM:
            return CofferError(.outOfMemory, "SQLite ran out of memory \(action)")
        default:
            return CofferError(.io, "storage error in \(path) while \(action): \(text)")
        }
    }

    func fail(_ rc: Int32, _ action: String) -> CofferError { Connection.error(db, rc, path, action) }

    /// Moves every frame of the WAL into the database file and empties the WAL.
    func checkpoint() throws(CofferError) {
        var logFrames: Int32 = 0
        var moved: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_TRUNCATE, &logFrames, &moved)
        guard rc == SQLITE_OK else { throw fail(rc, "recovering the write-ahead log (checkpoint)") }
    }

    func bindText(_ stmt: OpaquePointer, _ index: Int32, _ text: String) {
        sqlite3_bind_text(stmt, index, text, -1, coffer_sqlite_transient())
    }

    func get(_ key: String) throws(CofferError) -> [UInt8]? {
        defer {
            sqlite3_reset(getStmt)
            sqlite3_clear_bindings(getStmt)
        }
        bindText(getStmt, 1, key)
        let rc = sqlite3_step(getStmt)
        switch rc {
        case SQLITE_ROW:
            let count = Int(sqlite3_column_bytes(getStmt, 0))
            guard count > 0, let blob = sqlite3_column_blob(getStmt, 0) else { return [] }
            return [UInt8](UnsafeRawBufferPointer(start: blob, count: count))
        case SQLITE_DONE:
            return nil
        default:
            throw fail(rc, "reading an entry")
        }
    }

    /// The immediate children of `prefix` by range queries on the primary key: the keys of one
    /// folder are read in order, and each subfolder found is named once and skipped in one seek
    /// (its keys are never read), so listing a folder costs what its own entries cost.
    func children(of prefix: String, limit: Int) throws(CofferError) -> [String] {
        defer {
            sqlite3_reset(listStmt)
            sqlite3_clear_bindings(listStmt)
        }
        let prefixLength = prefix.utf8.count
        // Every key with the prefix sorts below prefix + U+10FFFF (the largest scalar).
        bindText(listStmt, 2, prefix + "\u{10FFFF}")
        bindText(listStmt, 1, prefix)
        var out: [String] = []
        while out.count < limit {
            let rc = sqlite3_step(listStmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW, let text = sqlite3_column_text(listStmt, 0) else {
                throw fail(rc, "listing entries")
            }
            let count = Int(sqlite3_column_bytes(listStmt, 0))
            guard count >= prefixLength else { continue }
            let key = UnsafeBufferPointer(start: text, count: count)
            let rest = key[prefixLength...]
            if let slash = rest.firstIndex(of: UInt8(ascii: "/")) {
                let folder = String(decoding: rest[...slash], as: UTF8.self)
                out.append(folder)
                // Seek past the folder: "/" + 1 is "0", so prefix + name + "0" follows all its keys.
                sqlite3_reset(listStmt)
                bindText(listStmt, 1, prefix + folder.dropLast() + "0")
            } else if !rest.isEmpty {
                out.append(String(decoding: rest, as: UTF8.self))
            }
        }
        return out
    }

    func put(_ key: String, _ value: [UInt8]) throws(CofferError) {
        guard let putStmt else { throw CofferError(.internal, "a write was sent to a reader connection") }
        defer {
            sqlite3_reset(putStmt)
            sqlite3_clear_bindings(putStmt)
        }
        bindText(putStmt, 1, key)
        value.withUnsafeBytes {
            sqlite3_bind_blob(
                putStmt,
                2,
                $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                Int32($0.count),
                coffer_sqlite_transient()
            )
        }
        let rc = sqlite3_step(putStmt)
        guard rc == SQLITE_DONE else { throw fail(rc, "writing an entry") }
    }

    func delete(_ key: String) throws(CofferError) {
        guard let deleteStmt else { throw CofferError(.internal, "a write was sent to a reader connection") }
        defer {
            sqlite3_reset(deleteStmt)
            sqlite3_clear_bindings(deleteStmt)
        }
        bindText(deleteStmt, 1, key)
        let rc = sqlite3_step(deleteStmt)
        guard rc == SQLITE_DONE else { throw fail(rc, "deleting an entry") }
    }

    /// ``SQLiteBackend/replaceAll(withEntriesOf:then:)``; returns the keys it changed.
    func replaceAll(withEntriesOf file: String, then operations: [StorageOperation]) throws(CofferError) -> [String] {
        let attach = try Connection.prepare(db, path, "ATTACH DATABASE ?1 AS staged")
        bindText(attach, 1, file)
        let rc = sqlite3_step(attach)
        sqlite3_finalize(attach)
        guard rc == SQLITE_DONE else { throw fail(rc, "opening \(file)") }
        defer { _ = sqlite3_exec(db, "DETACH DATABASE staged", nil, nil, nil) }
        try Connection.exec(db, path, "BEGIN IMMEDIATE")
        do throws(CofferError) {
            var keys: [String] = []
            let list = try Connection.prepare(
                db,
                path,
                "SELECT key FROM main.entries UNION SELECT key FROM staged.entries"
            )
            defer { sqlite3_finalize(list) }
            while true {
                let rc = sqlite3_step(list)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW, let text = sqlite3_column_text(list, 0) else { throw fail(rc, "listing keys") }
                keys.append(String(cString: text))
            }
            try Connection.exec(db, path, "DELETE FROM main.entries")
            try Connection.exec(db, path, "INSERT INTO main.entries(key, value) SELECT key, value FROM staged.entries")
            for op in operations {
                switch op {
                case .put(let key, let value): try put(key, value)
                case .delete(let key): try delete(key)
                }
            }
            try Connection.exec(db, path, "COMMIT")
            return keys + operations.map(\.key)
        } catch {
            _ = sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            throw error
        }
    }

    func batch(_ operations: [StorageOperation]) throws(CofferError) {
        try Connection.exec(db, path, "BEGIN IMMEDIATE")
        do {
            for op in operations {
                switch op {
                case .put(let key, let value): try put(key, value)
                case .delete(let key): try delete(key)
                }
            }
            try Connection.exec(db, path, "COMMIT")
        } catch {
            _ = sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            throw error
        }
    }
}
