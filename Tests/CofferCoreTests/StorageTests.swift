import Foundation
import Synchronization
import Testing

@testable import CofferCore

@Suite struct StorageTests {
    /// The backend contract, run against both implementations.
    @Test(arguments: ["inmem", "sqlite", "cached"])
    func backendContract(kind: String) throws {
        let dir = TemporaryDirectory()
        let backend: any PhysicalBackend =
            switch kind {
            case "sqlite": try SQLiteBackend(path: dir.file("c.db"))
            case "cached": CachingBackend(try SQLiteBackend(path: dir.file("c.db")), capacity: 1 << 20)
            default: InMemoryBackend()
            }
        #expect(backend.typeName == (kind == "cached" ? "sqlite" : kind))
        #expect(try backend.get("missing") == nil)
        try backend.put("a/b/c", [1, 2, 3])
        try backend.put("a/d", [])
        try backend.put("a/b/e", [4])
        try backend.put("ab", [5])
        #expect(try backend.get("a/b/c") == [1, 2, 3])
        #expect(try backend.get("a/d") == [])
        #expect(try backend.list(prefix: "a/") == ["b/", "d"])
        #expect(try backend.list(prefix: "a/b/") == ["c", "e"])
        #expect(try backend.list(prefix: "") == ["a/", "ab"])
        #expect(try backend.list(prefix: "a/", limit: 1) == ["b/"])
        #expect(try backend.list(prefix: "a/b/", limit: 5) == ["c", "e"])
        #expect(try backend.list(prefix: "", limit: 0) == [])
        #expect(try backend.listRecursive(prefix: "a/") == ["a/b/c", "a/b/e", "a/d"])
        try backend.batch([.put(key: "x", value: [9]), .delete(key: "a/d"), .put(key: "a/b/c", value: [7])])
        #expect(try backend.get("x") == [9])
        #expect(try backend.get("a/d") == nil)
        #expect(try backend.get("a/b/c") == [7])
        try backend.delete("x")
        try backend.delete("never-existed")
        #expect(try backend.get("x") == nil)

        // Frozen entries stay what they were, in key order, while the backend changes.
        let frozen = try backend.freeze()
        try backend.put("a/b/c", [8])
        try backend.put("late", [1])
        try backend.delete("ab")
        var entries: [String] = []
        try frozen.scan { key, value in
            entries.append("\(String(decoding: key, as: UTF8.self))=\(Array(value))")
            return true
        }
        #expect(entries == ["a/b/c=[7]", "a/b/e=[4]", "ab=[5]"])
        var sizes: [Int] = []
        try frozen.scanSizes { key, value in sizes += [key, value] }
        #expect(sizes == [5, 1, 5, 1, 2, 1])
        var first: [String] = []
        try frozen.scan { key, _ in
            first.append(String(decoding: key, as: UTF8.self))
            return false
        }
        #expect(first == ["a/b/c"], "a scan stops when its body says so")
        backend.close()
    }

    @Test func sqliteReopenGivesBackEverythingAcknowledged() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("c.db")
        do {
            let db = try SQLiteBackend(path: path)
            for i in 0..<200 { try db.put("k/\(i)", Array("value \(i)".utf8)) }
            try db.batch((0..<50).map { .delete(key: "k/\($0)") })
            db.close()
        }
        let db = try SQLiteBackend(path: path)
        #expect(try db.list(prefix: "k/").count == 150)
        #expect(try db.get("k/199") == Array("value 199".utf8))
        #expect(try db.get("k/0") == nil)
        #expect(throws: CofferError.self) {
            _ = try {
                db.close()
                return try db.get("k/1")
            }()
        }
    }

    /// A WAL past SQLite's checkpoint mark is copied into the file by the backend's own thread, the
    /// WAL then starts again from its beginning (it stays a fraction of what was written), and
    /// nothing is lost by it: the file reopened holds every row.
    @Test func theWALIsCheckpointedOffTheWritersThread() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("c.db")
        let value = [UInt8](repeating: 0x5A, count: 3000)
        var largestWAL = 0
        do {
            let db = try SQLiteBackend(path: path)
            // 800 commits of 5 rows of 3 KB (a leaf and an overflow page each): about 8,000 frames.
            for commit in 0..<800 {
                try db.batch((0..<5).map { .put(key: "k/\(commit)/\($0)", value: value) })
                let size = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int
                largestWAL = max(largestWAL, size ?? 0)
            }
            #expect(db.backgroundCheckpoints >= 1)
            db.close()
        }
        #expect(largestWAL < 3000 * 4096, "the WAL grew to \(largestWAL / 4096) pages")
        let db = try SQLiteBackend(path: path)
        #expect(try db.listRecursive(prefix: "k/").count == 4000)
        #expect(try db.get("k/799/4") == value)
        db.close()
    }

    @Test func foreignAndDamagedFilesAreRefusedClearly() throws {
        let dir = TemporaryDirectory()
        let text = dir.file("notes.txt")
        try "just some text, not a database at all, long enough to have a header...................................."
            .write(
                toFile: text,
                atomically: true,
                encoding: .utf8
            )
        expectError(.corruptDatabase, containing: "not an SQLite file") { _ = try SQLiteBackend(path: text) }
        #expect(try String(contentsOfFile: text, encoding: .utf8).hasPrefix("just some text"), "nothing was changed")

        let foreign = dir.file("other.db")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        p.arguments = [foreign, "CREATE TABLE t(x); INSERT INTO t VALUES (1);"]
        try p.run()
        p.waitUntilExit()
        expectError(.corruptDatabase, containing: "another application") { _ = try SQLiteBackend(path: foreign) }

        let good = dir.file("good.db")
        do {
            let db = try SQLiteBackend(path: good)
            for i in 0..<2000 { try db.put("k/\(i)", [UInt8](repeating: UInt8(i % 256), count: 200)) }
            db.close()
        }
        let size = try FileManager.default.attributesOfItem(atPath: good)[.size] as! Int
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: good))
        try handle.truncate(atOffset: UInt64(size / 2))
        try handle.close()
        expectError(.corruptDatabase, containing: "truncated") { _ = try SQLiteBackend(path: good) }
    }
}

@Suite struct StoragePoolTests {
    @Test func listingByRangeQueriesMatchesTheFullScan() throws {
        let dir = TemporaryDirectory()
        let sqlite = try SQLiteBackend(path: dir.file("c.db"))
        let memory = InMemoryBackend()
        var generator = SystemRandomNumberGenerator()
        let segments = ["a", "b", "b.c", "b0", "b/", "ü", "z", "a-b", "0"]
        var keys: [String] = []
        for _ in 0..<400 {
            let depth = Int.random(in: 1...4, using: &generator)
            let key = (0..<depth).map { _ in
                segments.randomElement(using: &generator)!.replacingOccurrences(of: "/", with: "")
            }
            .filter { !$0.isEmpty }.joined(separator: "/")
            guard !key.isEmpty else { continue }
            keys.append(key)
        }
        try sqlite.batch(keys.map { .put(key: $0, value: [1]) })
        try memory.batch(keys.map { .put(key: $0, value: [1]) })
        var prefixes: Set<String> = [""]
        for key in keys {
            var parts = key.split(separator: "/").map(String.init)
            while !parts.isEmpty {
                parts.removeLast()
                prefixes.insert(parts.isEmpty ? "" : parts.joined(separator: "/") + "/")
            }
        }
        for prefix in prefixes.sorted() {
            #expect(try sqlite.list(prefix: prefix) == memory.list(prefix: prefix), "prefix \(prefix)")
        }
        // After deleting every other key (and one that is not there), the memory backend's folder
        // index still lists what a full scan finds, and empty folders are gone.
        let deleted = keys.enumerated().filter { $0.offset % 2 == 0 }.map(\.element) + ["not/there"]
        try sqlite.batch(deleted.map { .delete(key: $0) })
        try memory.batch(deleted.map { .delete(key: $0) })
        let left = Set(keys).subtracting(deleted)
        for prefix in prefixes.sorted() {
            #expect(try memory.list(prefix: prefix) == immediateChildren(of: prefix, keys: left), "prefix \(prefix)")
            #expect(try sqlite.list(prefix: prefix) == memory.list(prefix: prefix), "prefix \(prefix)")
        }
    }

    @Test func aSecondOwnerIsRefusedNamingTheHolder() throws {
        let dir = TemporaryDirectory()
        let first = try SQLiteBackend(path: dir.file("c.db"))
        expectError(.io, containing: "in use by another Coffer (pid \(ProcessInfo.processInfo.processIdentifier))") {
            _ = try SQLiteBackend(path: dir.file("c.db"))
        }
        first.close()
        let second = try SQLiteBackend(path: dir.file("c.db"))  // released on close
        try second.put("k", [1])
        second.close()
    }

    @Test func readsDoNotWaitForAWriteInProgress() throws {
        let dir = TemporaryDirectory()
        let db = try SQLiteBackend(path: dir.file("c.db"))
        try db.put("k", [42])
        // One large transaction holds the writer for a long while; reads from another thread go on
        // meanwhile (with one connection behind one lock they waited for the whole commit).
        let writing = Atomic(0)  // 1: the batch is running, 2: it has returned
        let batch = (0..<150_000).map {
            StorageOperation.put(key: "bulk/\($0)", value: [UInt8](repeating: 7, count: 64))
        }
        let writer = Thread {
            writing.store(1, ordering: .sequentiallyConsistent)
            try? db.batch(batch)
            writing.store(2, ordering: .sequentiallyConsistent)
        }
        writer.start()
        while writing.load(ordering: .sequentiallyConsistent) == 0 {}
        var duringWrite = 0
        while writing.load(ordering: .sequentiallyConsistent) == 1 {
            #expect(try db.get("k") == [42])
            if writing.load(ordering: .sequentiallyConsistent) == 1 { duringWrite += 1 }
        }
        #expect(duringWrite >= 100, "only \(duringWrite) reads completed while the batch was being written")
        #expect(try db.list(prefix: "bulk/").count == 150_000)
        db.close()
    }

    @Test(arguments: ["inmem", "sqlite"])
    func everyChangeIsPublished(kind: String) throws {
        let dir = TemporaryDirectory()
        let backend: any PhysicalBackend =
            kind == "sqlite" ? try SQLiteBackend(path: dir.file("c.db")) : InMemoryBackend()
        let seen = Mutex<[[String]]>([])
        let id = backend.changes.subscribe { keys in seen.withLock { $0.append(keys) } }
        try backend.put("a", [1])
        try backend.delete("a")
        try backend.batch([.put(key: "b", value: [2]), .delete(key: "c")])
        backend.changes.unsubscribe(id)
        try backend.put("d", [3])
        #expect(seen.withLock { $0 } == [["a"], ["a"], ["b", "c"]])
        backend.close()
    }
}
