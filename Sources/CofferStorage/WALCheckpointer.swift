import CSQLite
import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// Copies a WAL-mode SQLite file's write-ahead log into the file from a thread of its own, a little
/// at a time, so that no commit waits for a whole checkpoint and no checkpoint flushes a large WAL at
/// once.
///
/// SQLite's default runs the checkpoint inside the commit that takes the WAL past 1,000 pages. For a
/// file committed with `synchronous=NORMAL` (a Raft node's data file, whose log makes it durable)
/// that checkpoint first fsyncs the 4 MB of WAL no commit has flushed: measured with strace on a
/// three-node cluster, that fdatasync took 17-25 ms every ~240 writes, and the other files' commit
/// fsyncs queued behind it on the shared disk, so three writes in a row took 12-25 ms against a
/// p50 of 2.4-3.7 ms: they were the replicated write's p99.
///
/// Here the writer's WAL hook wakes this thread every ``copyEvery`` new frames, and it checkpoints
/// through its own connection in `PASSIVE` mode (never blocking the writer or a reader): each pass
/// flushes and copies about half a megabyte. SQLite starts the WAL again from its beginning only when
/// a write begins with every frame copied, which a busy writer never sees from another thread; so once
/// the WAL holds ``restartAt`` frames, the first commit after a pass that left at most ``tailLimit``
/// frames behind copies those itself (a few pages), and the next write starts the WAL again. Should
/// the WAL reach ``ceiling`` frames anyway, the committing thread checkpoints as SQLite would, so the
/// WAL stays bounded either way.
package final class WALCheckpointer: @unchecked Sendable {
    /// New frames (a page each) after which the thread copies them.
    static let copyEvery: Int32 = 128
    /// Frames past which the writer finishes a pass's tail so that the WAL starts again (SQLite's
    /// own checkpoint mark).
    static let restartAt: Int32 = 1000
    /// The most frames the writer copies itself.
    static let tailLimit: Int32 = 32
    /// Frames at which the committing thread checkpoints everything itself (16 MB of 4 KB pages).
    static let ceiling: Int32 = 4000

    private enum Pass { case idle, requested, copying, copied }

    private let connection: OpaquePointer
    private let writer: OpaquePointer
    private let monitor = Monitor()
    /// The WAL's frame count when a pass was last asked for; the writer's thread only.
    private var requestedAt: Int32 = 0
    // Guarded by `monitor`.
    private var pass = Pass.idle
    private var stopping = false
    private var completed = 0
    private var thread: pthread_t?

    /// Attaches to `writer`, the connection that commits to the WAL-mode file at `path`, replacing its
    /// automatic checkpoints. Nil when a second connection cannot be opened: the writer then keeps
    /// SQLite's own.
    package init?(path: String, writer: OpaquePointer) {
        var handle: OpaquePointer?
        // A read opens the WAL on the new connection: until then SQLite (3.40) takes a checkpoint
        // through it for a no-op that succeeds.
        guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK,
            let handle, sqlite3_exec(handle, "SELECT count(*) FROM sqlite_master", nil, nil, nil) == SQLITE_OK
        else {
            sqlite3_close_v2(handle)
            return nil
        }
        connection = handle
        self.writer = writer
        thread = startThread(detached: false) { [self] in run() }
        guard thread != nil else {
            sqlite3_close_v2(handle)
            return nil
        }
        sqlite3_wal_hook(writer, walHook, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Passes the thread has completed that copied frames into the file.
    package var checkpoints: Int { monitor.withLock { completed } }

    /// Stops the thread and gives the writer back SQLite's automatic checkpoints. Call it on the
    /// writer's thread (or holding the writer's lock), before the writer is closed.
    package func stop() {
        let thread: pthread_t? = monitor.withLock {
            defer { self.thread = nil }
            stopping = true
            return self.thread
        }
        guard let thread else { return }
        monitor.broadcast()
        pthread_join(thread, nil)
        sqlite3_close_v2(connection)
        sqlite3_wal_autocheckpoint(writer, Self.restartAt)
    }

    /// The writer committed and the WAL now holds `frames` frames (called by SQLite on its thread).
    fileprivate func committed(frames: Int32) {
        if frames < requestedAt { requestedAt = 0 }  // the WAL started again
        if frames >= Self.ceiling { return checkpointOnWriter() }
        guard frames >= Self.restartAt || frames - requestedAt >= Self.copyEvery else { return }
        let tail = frames - requestedAt
        enum Action { case none, wake, finish }
        let action: Action = monitor.withLock {
            switch pass {
            case .requested, .copying: return .none
            case .copied where frames >= Self.restartAt && tail <= Self.tailLimit:
                pass = .idle
                return .finish
            case .idle, .copied:
                pass = .requested
                return .wake
            }
        }
        switch action {
        case .none: break
        case .wake:
            requestedAt = frames
            monitor.broadcast()
        case .finish: checkpointOnWriter()
        }
    }

    /// Copies what the WAL holds on the writer's own connection, as SQLite's automatic checkpoint does.
    private func checkpointOnWriter() {
        sqlite3_wal_checkpoint_v2(writer, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
    }

    private func run() {
        while true {
            _ = monitor.wait(until: .max) { pass == .requested || stopping }
            let stop = monitor.withLock {
                pass = .copying
                return stopping
            }
            if stop { return }
            // Busy only while the writer checkpoints; the next wake-up tries again.
            var copied: Int32 = 0
            let rc = sqlite3_wal_checkpoint_v2(connection, nil, SQLITE_CHECKPOINT_PASSIVE, nil, &copied)
            monitor.withLock {
                pass = .copied
                if rc == SQLITE_OK && copied > 0 { completed += 1 }
            }
        }
    }
}

private typealias WALHook =
    @convention(c) (
        UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<CChar>?, Int32
    ) -> Int32

private let walHook: WALHook = { context, _, _, frames in
    if let context { Unmanaged<WALCheckpointer>.fromOpaque(context).takeUnretainedValue().committed(frames: frames) }
    return SQLITE_OK
}
