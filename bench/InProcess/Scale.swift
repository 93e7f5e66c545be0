// Scale: read latency and memory with 1k, 100k and 1M secrets, and the time to open and unseal a
// database that large. Each size runs in its own process (the driver starts one per size) so that
// the resident set size belongs to that size alone.
//
// The databases are built once through the real KV v2 engine and kept under the data directory
// (.build/bench-data by default), so later runs reuse them.
import Coffer
import CofferFramework
import CofferStorage
import Engines
import Foundation
import Synchronization

/// The stored layout version of the cached databases: bump it when KV v2's storage layout changes,
/// so stale databases are rebuilt instead of measured.
let scaleLayout = "v1"

/// Write-behind storage for building a large database quickly: puts and deletes collect in memory
/// and reach SQLite in transactions of `flushEvery` operations (one fsync each, instead of one per
/// secret). Only for building bench data: a crash loses the pending operations.
final class BulkLoadBackend: PhysicalBackend {
    let sqlite: SQLiteBackend
    let flushEvery = 50_000
    /// Told of each change when it is taken into the pending set (where `get` already sees it), so
    /// the caches above stay true before the flush reaches SQLite.
    let changes = ChangeFeed()
    private let pending = Mutex<[String: [UInt8]?]>([:])

    init(path: String) throws(CofferError) { sqlite = try SQLiteBackend(path: path) }

    var typeName: String { sqlite.typeName }

    func get(_ key: String) throws(CofferError) -> [UInt8]? {
        if let value = pending.withLock({ $0[key] }) { return value }
        return try sqlite.get(key)
    }

    func put(_ key: String, _ value: [UInt8]) throws(CofferError) { try batch([.put(key: key, value: value)]) }
    func delete(_ key: String) throws(CofferError) { try batch([.delete(key: key)]) }

    func list(prefix: String) throws(CofferError) -> [String] {
        try flush()
        return try sqlite.list(prefix: prefix)
    }

    func batch(_ operations: [StorageOperation]) throws(CofferError) {
        let count = pending.withLock { pending in
            for op in operations {
                switch op {
                case .put(let key, let value): pending[key] = .some(value)
                case .delete(let key): pending[key] = .some(nil)
                }
            }
            return pending.count
        }
        changes.publish(operations.map(\.key))
        if count >= flushEvery { try flush() }
    }

    func flush() throws(CofferError) {
        let operations: [StorageOperation] = pending.withLock { pending in
            defer { pending.removeAll() }
            return pending.map { key, value in value.map { .put(key: key, value: $0) } ?? .delete(key: key) }
        }
        if !operations.isEmpty { try sqlite.batch(operations) }
    }

    func close() {
        try? flush()
        sqlite.close()
    }
}

struct ScaleData {
    let databasePath: String
    let unsealKey: String
    let token: String
    let buildSeconds: Double
    let reused: Bool

    static func secretPath(_ i: Int) -> String { "bench/s" + String(format: "%07d", i) }
}

/// The cached database `<directory>/<name>.db`, built by `build` first if it is missing: `build`
/// gets a fresh initialised core (over write-behind storage) and its root token, and returns the
/// token the measurements use. The unseal key and that token are kept in `<name>.json`.
func cachedDatabase(
    _ name: String,
    directory: String,
    build: (Core, _ root: String) throws -> String
) throws -> ScaleData {
    let base = "\(directory)/\(name)"
    if let text = FileManager.default.contents(atPath: base + ".json"),
        FileManager.default.fileExists(atPath: base + ".db"),
        let info = try JSONSerialization.jsonObject(with: text) as? [String: Any]
    {
        return ScaleData(
            databasePath: base + ".db",
            unsealKey: info["unseal_key"] as! String,
            token: info["token"] as! String,
            buildSeconds: info["build_seconds"] as! Double,
            reused: true
        )
    }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let partial = base + ".db.partial"
    for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: partial + suffix) }
    let start = nowNanos()
    let storage = try BulkLoadBackend(path: partial)
    let core = try Core(storage: storage, engines: BuiltinEngines.registry)
    let initResult = try core.initialize(shares: 1, threshold: 1)
    let token = try build(core, initResult.rootToken)
    core.sealVault()
    storage.close()
    let seconds = Double(nowNanos() - start) / 1e9
    try FileManager.default.moveItem(atPath: partial, toPath: base + ".db")
    let info: [String: Any] = [
        "unseal_key": initResult.hexKeys[0], "token": token, "build_seconds": seconds,
        "note": "benchmark data only: this unseal key and token open nothing but this generated database",
    ]
    try writeJSON(info, to: base + ".json")
    return ScaleData(
        databasePath: base + ".db",
        unsealKey: initResult.hexKeys[0],
        token: token,
        buildSeconds: seconds,
        reused: false
    )
}

/// The cached database of `count` secrets, built first if it is missing.
func scaleData(count: Int, directory: String) throws -> ScaleData {
    try cachedDatabase("scale-\(scaleLayout)-\(count)", directory: directory) { core, root in
        try core.mount(MountEntry(path: "secret/", type: "kv", options: ["version": "2"]))
        _ = try core.handle(
            Request(
                .update,
                "sys/policies/acl/reader",
                data: ["policy": #"path "secret/data/bench/*" { capabilities = ["read"] }"#],
                token: root
            )
        )
        let token = try core.handle(Request(.update, "auth/token/create", data: ["policies": ["reader"]], token: root))
            .auth!.clientToken
        let start = nowNanos()
        for i in 0..<count {
            let data: JSONValue = [
                "username": .string("svc-\(i)"), "password": .string(String(repeating: "x", count: 32)),
            ]
            _ = try core.handle(
                Request(.update, "secret/data/" + ScaleData.secretPath(i), data: ["data": data], token: root)
            )
            if i % 50_000 == 49_999 {
                say(
                    String(
                        format: "  building %d secrets: %d written (%.0f s)",
                        count,
                        i + 1,
                        Double(nowNanos() - start) / 1e9
                    )
                )
            }
        }
        return token
    }
}

/// Opens and unseals `data`'s database `times` times (each vault closed before the next opens);
/// returns the last vault, open, and the time each open + unseal took.
func openAndUnseal(_ data: ScaleData, times: Int) throws -> (Vault, [UInt64]) {
    var samples: [UInt64] = []
    var vault: Vault?
    for _ in 0..<times {
        vault?.close()
        let start = nowNanos()
        let opened = try Vault.open(VaultConfiguration(storage: .sqlite(path: data.databasePath)))
        try opened.unseal(key: data.unsealKey)
        samples.append(nowNanos() - start)
        vault = opened
    }
    return (vault!, samples)
}

/// Opens and unseals the database of `count` secrets `opens` times, then reads random secrets.
func runScale(_ bench: Bench, count: Int, directory: String, opens: Int = 5) throws -> [String: Any] {
    let data = try scaleData(count: count, directory: directory)
    let (opened, openSamples) = try openAndUnseal(data, times: opens)
    defer { opened.close() }
    let afterOpen = residentMiB()

    var generator = SystemRandomNumberGenerator()
    let requests = (0..<bench.iterations).map { _ in
        Request(
            .read,
            "secret/data/" + ScaleData.secretPath(Int.random(in: 0..<count, using: &generator)),
            token: data.token
        )
    }
    var i = 0
    // First with the page cache as the machine left it (after a rebuild or a reclaim the file is
    // on disk, not in memory), then with the whole file read once so that it is in the page cache.
    let asFound = try bench.measure(
        "kv read, random key of \(count), page cache as found",
        iterations: min(2000, bench.iterations)
    ) {
        _ = try opened.handle(requests[i % requests.count])
        i += 1
    }
    let warmStart = nowNanos()
    if let file = FileHandle(forReadingAtPath: data.databasePath) {
        while let chunk = try file.read(upToCount: 1 << 20), !chunk.isEmpty {}
        try file.close()
    }
    let warmSeconds = Double(nowNanos() - warmStart) / 1e9
    let random = try bench.measure("kv read, random key of \(count)") {
        _ = try opened.handle(requests[i % requests.count])
        i += 1
    }
    let hotRequest = Request(.read, "secret/data/" + ScaleData.secretPath(count / 2), token: data.token)
    try bench.measure("kv read, one key of \(count)") { _ = try opened.handle(hotRequest) }
    let afterReads = residentMiB()
    let size = (try? FileManager.default.attributesOfItem(atPath: data.databasePath)[.size] as? Int) ?? 0
    let sortedOpens = openSamples.sorted()
    say(
        String(
            format:
                "  open + unseal of %d secrets: first %.1f ms, median %.1f ms; RSS %.0f MiB after open, %.0f MiB after reads",
            count,
            Double(openSamples[0]) / 1e6,
            Double(sortedOpens[sortedOpens.count / 2]) / 1e6,
            afterOpen.rss,
            afterReads.rss
        )
    )
    return [
        "secrets": count, "database_mib": Double(size) / 1_048_576, "build_seconds": data.buildSeconds,
        "build_reused": data.reused,
        "open_unseal_first_ms": Double(openSamples[0]) / 1e6,
        "open_unseal_median_ms": Double(sortedOpens[sortedOpens.count / 2]) / 1e6,
        "rss_after_open_mib": afterOpen.rss, "rss_after_reads_mib": afterReads.rss, "rss_peak_mib": afterReads.peak,
        "random_read_p50_us": random?.p50 ?? 0, "random_read_p99_us": random?.p99 ?? 0,
        "random_read_as_found_p50_us": asFound?.p50 ?? 0, "random_read_as_found_p99_us": asFound?.p99 ?? 0,
        "page_cache_warm_seconds": warmSeconds,
    ]
}
