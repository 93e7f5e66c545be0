package import CofferCore
package import CofferFramework
import Synchronization

/// KV version 2: versioned secrets with check-and-set, soft delete, undelete, destroy and metadata,
/// with Vault's paths and response shapes. The paths are declared in KVv2Paths.swift.
///
/// Storage under the mount: `config`, `metadata/<path>` (settings and version states) and
/// `versions/<path>/<n>` (one version's data).
///
/// Writes to one secret are serialised by a lock striped over the path, so concurrent writers
/// cannot both take the same version number. Parsed metadata is cached and invalidated from the
/// storage change feed; secret values are never cached.
package final class KVv2Backend: TableBackend {
    private final class Stripe: Sendable { let mutex = Mutex(()) }
    private let locks: [Stripe] = (0..<64).map { _ in Stripe() }
    /// Parsed metadata by key, a copy per CPU (two cores reading one hot secret share no lock or
    /// reference count). A change refuses the fill of a reader that loaded the metadata from
    /// storage before it (`PerCPUCache.Ticket`), so the old copy is not put back.
    private let cache = PerCPUCache<String, Cached>(limit: KVv2Backend.cacheLimit)
    /// The mount's parsed `config` (read by every write), invalidated as the metadata is.
    private let config = Mutex<(epoch: UInt64, value: KVConfig?)>((0, nil))
    static let cacheLimit = 10_000

    /// A secret's parsed metadata, and the `metadata` block and storage key of its current version,
    /// built once when cached rather than on every read.
    struct Cached: Sendable {
        let metadata: KVMetadata
        let currentBlock: JSONValue
        let currentKey: String

        init(_ metadata: KVMetadata, key: String) {
            self.metadata = metadata
            currentBlock = .object(metadata.versionMetadata(metadata.currentVersion))
            currentKey = KVv2Backend.versionKey(key, metadata.currentVersion)
        }
    }

    package init() {}

    /// Runs `body` holding the write lock of `key`.
    func withKeyLock<R>(_ key: String, _ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        var hasher = Hasher()
        hasher.combine(key)
        let lock = locks[Int(UInt(bitPattern: hasher.finalize()) % UInt(locks.count))]
        let result: Result<R, CofferError> = lock.mutex.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Storage changed under `metadata/<key>` or at `config` (any writer, this one included): drop the
    /// cached copy.
    package func invalidate(_ key: String) {
        if key == "config" {
            config.withLock { c in
                c.epoch &+= 1
                c.value = nil
            }
        }
        guard key.hasPrefix("metadata/") else { return }
        cache.update(String(key.dropFirst("metadata/".count)), to: nil)
    }

    /// Writes `ops` and, once they are stored, the new metadata of `key` into the cache (nil: removed).
    func commit(
        _ storage: StorageView,
        _ key: String,
        _ ops: [StorageOperation],
        metadata: KVMetadata?
    ) throws(CofferError) {
        cache.update(key, to: nil)
        try storage.batch(ops)
        cache.update(key, to: metadata.map { Cached($0, key: key) })
    }

    func loadMetadata(_ storage: some StorageReading, _ key: String) throws(CofferError) -> KVMetadata? {
        try loadCached(storage, key)?.metadata
    }

    func loadCached(_ storage: some StorageReading, _ key: String) throws(CofferError) -> Cached? {
        let (cached, ticket) = cache.lookup(key)
        if let cached { return cached }
        guard let json = try storage.getJSON("metadata/" + key) else { return nil }
        let loaded = Cached(try KVMetadata(stored: json, path: key), key: key)
        cache.fill(key, loaded, ticket)
        return loaded
    }

    func loadConfig(_ storage: some StorageReading) throws(CofferError) -> KVConfig {
        let (epoch, cached) = config.withLock { ($0.epoch, $0.value) }
        if let cached { return cached }
        let loaded = try storage.getJSON("config").map(KVConfig.init(stored:)) ?? KVConfig()
        config.withLock { c in if c.epoch == epoch { c.value = loaded } }
        return loaded
    }

    /// Unambiguous: a secret path never ends in "/", so the last segment is always the version.
    static func versionKey(_ key: String, _ n: Int) -> String {
        var versionKey = "versions/"
        versionKey.reserveCapacity(30 + key.utf8.count)  // one allocation, not one per part
        versionKey += key
        versionKey += "/"
        versionKey += String(n)
        return versionKey
    }

    /// The secret path captured from the request; a folder ("a/") is not a secret.
    static func secretKey(_ request: BackendRequest) throws(CofferError) -> String {
        let key = request.capture("path")
        guard !key.isEmpty, !key.hasSuffix("/") else {
            throw CofferError.invalid("missing secret path after \(request.mount.path)")
        }
        return key
    }
}

extension JSONValue {
    /// A JSON merge patch (RFC 7386): `patch` applied to `target`; `null` removes a key.
    static func mergePatch(_ target: JSONValue, _ patch: JSONValue) -> JSONValue {
        guard case .object(let patchObject) = patch else { return patch }
        var result = target.objectValue ?? [:]
        for (k, v) in patchObject {
            if v == .null { result.removeValue(forKey: k) } else { result[k] = mergePatch(result[k] ?? .null, v) }
        }
        return .object(result)
    }

    /// The keys of an object with every value replaced by null, nested objects down to `depth`
    /// levels (0: all), as KV v2's `subkeys` reports them.
    func subkeys(depth: Int, level: Int = 0) -> JSONValue {
        guard case .object(let object) = self else { return .null }
        if depth > 0 && level >= depth { return .null }
        return .object(
            object.mapValues { value in
                if case .object = value { return value.subkeys(depth: depth, level: level + 1) }
                return .null
            }
        )
    }
}
