import CSQLite
package import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// A new SQLite file of entries, written by one thread in one transaction and made durable at the end:
/// a Raft follower stages the state it receives in one as it arrives, then replaces its data file's
/// entries with the file's (``SQLiteBackend/replaceAll(withEntriesOf:then:)``). Nothing in the file counts
/// until ``finish()`` returns; a file left by a crash before that is garbage to delete.
package final class EntryFileWriter {
    package let path: String
    private var db: OpaquePointer?
    private var insert: OpaquePointer?

    /// Creates the file at `path`, replacing any file there.
    package init(path: String) throws(CofferError) {
        self.path = path
        unlink(path)
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        db = handle
        guard rc == SQLITE_OK, handle != nil else {
            let reason = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            abandon()
            throw CofferError(.io, "cannot create \(path): \(reason)")
        }
        do throws(CofferError) {
            // No journal: the file is whole once finish() returns, and deleted if it never does.
            try exec(
                """
                PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
                CREATE TABLE entries(key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
                BEGIN;
                """
            )
            var stmt: OpaquePointer?
            guard
                sqlite3_prepare_v2(handle, "INSERT INTO entries(key, value) VALUES (?1, ?2)", -1, &stmt, nil)
                    == SQLITE_OK
            else { throw failure("preparing an insert") }
            insert = stmt
        } catch {
            abandon()
            throw error
        }
    }

    deinit { close() }

    /// Adds an entry; a key given twice is refused.
    package func put(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws(CofferError) {
        guard let insert else { throw CofferError(.internal, "\(path) is already finished") }
        guard let keyBytes = Int32(exactly: key.count), let valueBytes = Int32(exactly: value.count) else {
            throw CofferError(.invalidArgument, "an entry of 2 GiB or more cannot be staged")
        }
        defer { sqlite3_reset(insert) }
        sqlite3_bind_text(
            insert,
            1,
            key.baseAddress?.assumingMemoryBound(to: CChar.self),
            keyBytes,
            coffer_sqlite_transient()
        )
        sqlite3_bind_blob(
            insert,
            2,
            value.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
            valueBytes,
            coffer_sqlite_transient()
        )
        guard sqlite3_step(insert) == SQLITE_DONE else { throw failure("writing an entry") }
    }

    /// Commits, closes and fsyncs the file and its directory.
    package func finish() throws(CofferError) {
        try exec("COMMIT")
        close()
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let dir = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer {
            if fd >= 0 { Glibc.close(fd) }
            if dir >= 0 { Glibc.close(dir) }
        }
        guard fd >= 0, fsync(fd) == 0, dir >= 0, fsync(dir) == 0 else {
            throw CofferError(.io, "cannot make \(path) durable: \(String(cString: strerror(errno)))")
        }
    }

    /// Closes and deletes the file.
    package func abandon() {
        close()
        unlink(path)
    }

    private func close() {
        sqlite3_finalize(insert)
        insert = nil
        sqlite3_close_v2(db)
        db = nil
    }

    private func exec(_ sql: String) throws(CofferError) {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw failure("running \(sql.prefix(30))") }
    }

    private func failure(_ action: String) -> CofferError {
        let reason = db.map { String(cString: sqlite3_errmsg($0)) } ?? "closed"
        return CofferError(.io, "staging entries in \(path) failed while \(action): \(reason)")
    }
}
