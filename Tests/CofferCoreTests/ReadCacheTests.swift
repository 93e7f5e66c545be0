import Foundation
import Synchronization
import Testing

@testable import CofferCore

/// Counts the reads that reach the backend under the cache.
private final class CountingBackend: PhysicalBackend {
    let inner: any PhysicalBackend
    let gets = Atomic(0)
    init(_ inner: any PhysicalBackend) { self.inner = inner }
    var typeName: String { inner.typeName }
    var changes: ChangeFeed { inner.changes }
    func get(_ key: String) throws(CofferError) -> [UInt8]? {
        gets.add(1, ordering: .relaxed)
        return try inner.get(key)
    }
    func put(_ key: String, _ value: [UInt8]) throws(CofferError) { try inner.put(key, value) }
    func delete(_ key: String) throws(CofferError) { try inner.delete(key) }
    func list(prefix: String) throws(CofferError) -> [String] { try inner.list(prefix: prefix) }
    func batch(_ operations: [StorageOperation]) throws(CofferError) { try inner.batch(operations) }
    func close() { inner.close() }
}

@Suite struct ReadCacheTests {
    @Test func aHotEntryIsReadFromStorageOnce() throws {
        let dir = TemporaryDirectory()
        let file = CountingBackend(try SQLiteBackend(path: dir.file("c.db")))
        let cache = CachingBackend(file, capacity: 1 << 20)
        try cache.put("k", [1, 2, 3])
        for _ in 0..<100 { #expect(try cache.get("k") == [1, 2, 3]) }
        // Once per CPU's copy of the cache at most: the thread may have moved between CPUs.
        #expect((1...cache.copies).contains(file.gets.load(ordering: .relaxed)))
        // A missing key is not cached: a later write must be seen, and is.
        #expect(try cache.get("absent") == nil)
        try cache.put("absent", [4])
        #expect(try cache.get("absent") == [4])
        cache.close()
    }

    @Test func writesDeletesAndBatchesAreSeenAtOnce() throws {
        let dir = TemporaryDirectory()
        let cache = CachingBackend(try SQLiteBackend(path: dir.file("c.db")), capacity: 1 << 20)
        try cache.put("a", [1])
        try cache.put("b", [2])
        #expect(try cache.get("a") == [1])
        #expect(try cache.get("b") == [2])
        try cache.put("a", [10])
        #expect(try cache.get("a") == [10])
        try cache.batch([.put(key: "a", value: [11]), .delete(key: "b")])
        #expect(try cache.get("a") == [11])
        #expect(try cache.get("b") == nil)
        try cache.delete("a")
        #expect(try cache.get("a") == nil)
        cache.close()
    }

    /// A change made beneath the cache (here: straight to the file backend, as a replica applying
    /// its log would) reaches it through the change feed.
    @Test func aChangeBeneathTheCacheIsSeen() throws {
        let dir = TemporaryDirectory()
        let file = try SQLiteBackend(path: dir.file("c.db"))
        let cache = CachingBackend(file, capacity: 1 << 20)
        try cache.put("k", [1])
        #expect(try cache.get("k") == [1])
        try file.put("k", [2])
        #expect(try cache.get("k") == [2])
        try file.batch([.delete(key: "k")])
        #expect(try cache.get("k") == nil)
        cache.close()
    }

    /// Other subscribers of the feed are told after the cache has dropped the key, so one that reads
    /// the key again (a core reloading its mount table) reads the new value.
    @Test func subscribersReadTheNewValue() throws {
        let dir = TemporaryDirectory()
        let cache = CachingBackend(try SQLiteBackend(path: dir.file("c.db")), capacity: 1 << 20)
        try cache.put("k", [1])
        #expect(try cache.get("k") == [1])
        let seen = Mutex<[[UInt8]?]>([])
        let id = cache.changes.subscribe { keys in
            let value = try? cache.get(keys[0])
            seen.withLock { $0.append(value ?? nil) }
        }
        try cache.put("k", [2])
        cache.changes.unsubscribe(id)
        #expect(seen.withLock { $0 } == [[2]])
        cache.close()
    }

    @Test func itHoldsNoMoreThanItsBudget() throws {
        let dir = TemporaryDirectory()
        let budget = 64 << 10
        let cache = CachingBackend(try SQLiteBackend(path: dir.file("c.db")), capacity: budget)
        let value = [UInt8](repeating: 7, count: 200)
        try cache.batch((0..<2000).map { .put(key: "k/\($0)", value: value) })
        for round in 0..<3 {
            for i in 0..<2000 { #expect(try cache.get("k/\(i)") == value, "round \(round) key \(i)") }
        }
        #expect(cache.cachedBytes <= budget)
        // One thread fills the copy of the CPU it runs on, which has its share of the budget.
        #expect(
            cache.cachedBytes > budget / (4 * cache.copies),
            "the cache holds something: \(cache.cachedBytes) bytes"
        )
        // An entry too large for a shard is read but not kept.
        let large = [UInt8](repeating: 1, count: budget / 16)
        try cache.put("large", large)
        let before = cache.cachedBytes
        #expect(try cache.get("large") == large)
        #expect(cache.cachedBytes <= before)
        cache.close()
    }

    /// Readers racing one writer: every value a reader sees is one that was written, never older than
    /// one it saw before, and once a write has returned every read returns it or a later one.
    @Test func readersRacingAWriterNeverGoBackInTime() throws {
        let dir = TemporaryDirectory()
        let cache = CachingBackend(try SQLiteBackend(path: dir.file("c.db")), capacity: 1 << 20)
        @Sendable func encode(_ n: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(n).littleEndian) { Array($0) } }
        @Sendable func decode(_ b: [UInt8]) -> Int { Int(b.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) }
        try cache.put("k", encode(0))
        let acknowledged = Atomic(0)
        let done = Atomic(false)
        let finished = Atomic(0)
        let failures = Mutex<[String]>([])
        let writes = 400
        let readers = (0..<3).map { r in
            Thread {
                defer { finished.add(1, ordering: .releasing) }
                var last = 0
                while !done.load(ordering: .acquiring) {
                    let floor = acknowledged.load(ordering: .acquiring)
                    guard let bytes = try? cache.get("k") else {
                        failures.withLock { $0.append("reader \(r): a read failed or found nothing") }
                        return
                    }
                    let n = decode(bytes)
                    if n < floor || n < last {
                        failures.withLock { $0.append("reader \(r) read \(n) after \(max(floor, last))") }
                        return
                    }
                    last = n
                }
            }
        }
        for thread in readers { thread.start() }
        for n in 1...writes {
            if n % 2 == 0 {
                try cache.put("k", encode(n))
            } else {
                try cache.batch([.put(key: "k", value: encode(n)), .put(key: "other/\(n)", value: [1])])
            }
            acknowledged.store(n, ordering: .releasing)
        }
        done.store(true, ordering: .releasing)
        while finished.load(ordering: .acquiring) < readers.count { Thread.sleep(forTimeInterval: 0.001) }
        #expect(failures.withLock { $0 } == [])
        #expect(decode(try cache.get("k") ?? []) == writes)
        cache.close()
    }
}
