public import CofferCore
import Synchronization

/// KV version 2: versioned secrets with check-and-set, soft delete, undelete, destroy and metadata,
/// with Vault's paths and response shapes.
///
/// Storage under the mount: `config`, `metadata/<path>` (settings and version states) and
/// `versions/<path>/<n>` (one version's data).
///
/// Writes to one secret are serialised by a lock striped over the path, so concurrent writers
/// cannot both take the same version number. Parsed metadata is cached (the core owns its storage,
/// and every change to a secret's metadata goes through here); secret values are never cached.
public final class KVv2Backend: Backend {
    private final class Stripe: Sendable { let mutex = Mutex(()) }
    private let locks: [Stripe] = (0..<64).map { _ in Stripe() }
    /// Parsed metadata by storage key. `epoch` moves on every commit so that a reader which loaded
    /// metadata from storage while a write was being applied does not put the old copy back.
    private let cache = Mutex<(epoch: UInt64, entries: [String: KVMetadata])>((0, [:]))
    static let cacheLimit = 10_000

    public init() {}

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

    private func insert(_ entries: inout [String: KVMetadata], _ key: String, _ metadata: KVMetadata) {
        if entries.count >= KVv2Backend.cacheLimit { entries.removeAll(keepingCapacity: true) }
        entries[key] = metadata
    }

    /// Writes `ops` and, once they are stored, the new metadata of `key` into the cache (nil: removed).
    func commit(_ request: EngineRequest, _ key: String, _ ops: [StorageOperation], metadata: KVMetadata?) throws(CofferError) {
        let cacheKey = request.storage.prefix + key
        cache.withLock { c in
            c.epoch &+= 1
            c.entries.removeValue(forKey: cacheKey)
        }
        try request.storage.batch(ops)
        cache.withLock { c in
            c.epoch &+= 1
            if let metadata { insert(&c.entries, cacheKey, metadata) }
        }
    }

    public func exists(_ request: EngineRequest) throws(CofferError) -> Bool? {
        if let key = request.path.dropPrefixKV("data/") ?? request.path.dropPrefixKV("metadata/") {
            guard !key.isEmpty else { return nil }
            return try loadMetadata(request.storage, key) != nil
        }
        return nil
    }

    public func handle(_ request: EngineRequest) throws(CofferError) -> Response {
        let path = request.path
        if path == "config" { return try config(request) }
        if let key = path.dropPrefixKV("data/") { return try data(request, key) }
        if let key = path.dropPrefixKV("metadata/") { return try metadata(request, key) }
        if path == "metadata" && request.operation == .list { return try metadata(request, "") }
        if let key = path.dropPrefixKV("delete/") { return try versions(request, key, action: .delete) }
        if let key = path.dropPrefixKV("undelete/") { return try versions(request, key, action: .undelete) }
        if let key = path.dropPrefixKV("destroy/") { return try versions(request, key, action: .destroy) }
        if let key = path.dropPrefixKV("subkeys/") { return try subkeys(request, key) }
        throw CofferError(.notFound, "no handler for route \"\(request.fullPath)\". route entry not found.")
    }

    // MARK: Storage

    func loadMetadata(_ storage: StorageView, _ key: String) throws(CofferError) -> KVMetadata? {
        let cacheKey = storage.prefix + key
        let (epoch, cached) = cache.withLock { ($0.epoch, $0.entries[cacheKey]) }
        if let cached { return cached }
        guard let json = try storage.getJSON("metadata/" + key) else { return nil }
        let metadata = try KVMetadata(stored: json, path: key)
        cache.withLock { c in
            if c.epoch == epoch { insert(&c.entries, cacheKey, metadata) }
        }
        return metadata
    }

    func loadConfig(_ storage: StorageView) throws(CofferError) -> KVConfig {
        guard let json = try storage.getJSON("config") else { return KVConfig() }
        return KVConfig(stored: json)
    }

    /// Unambiguous: a secret path never ends in "/", so the last segment is always the version.
    static func versionKey(_ key: String, _ n: Int) -> String {
        "versions/" + key + "/" + String(n)
    }

    static func validateKey(_ key: String, _ request: EngineRequest) throws(CofferError) {
        guard !key.isEmpty, !key.hasSuffix("/") else {
            throw CofferError.invalid("missing secret path after \(request.fullPath.isEmpty ? "mount" : request.mount.path)")
        }
    }

    // MARK: data/

    func data(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        switch request.operation {
        case .read: return try readData(request, key)
        case .create, .update: return try writeData(request, key)
        case .patch: return try patchData(request, key)
        case .delete:
            try Self.validateKey(key, request)
            return try changeVersions(request, key, action: .delete, versions: nil)
        case .list: throw request.unsupported()
        }
    }

    func readData(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        try Self.validateKey(key, request)
        guard let meta = try loadMetadata(request.storage, key) else { return .notFound }
        let n = try request.data.int("version").flatMap { $0 == 0 ? nil : $0 } ?? meta.currentVersion
        guard let version = meta.versions[n] else { return .notFound }
        if version.destroyed || version.isDeleted(now: request.now) {
            return Response(notFound: ["data": .null, "metadata": .object(meta.versionMetadata(n, now: request.now))])
        }
        guard let stored = try request.storage.getJSON(Self.versionKey(key, n)), let data = stored["data"] else {
            throw CofferError(.integrity, "version \(n) of '\(request.fullPath)' is listed but its data is missing")
        }
        return Response(data: ["data": data, "metadata": .object(meta.versionMetadata(n, now: request.now))])
    }

    func writeData(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        try Self.validateKey(key, request)
        guard let data = try request.data.object("data") else {
            throw CofferError.invalid("no data provided")
        }
        let cas = try request.data.object("options").flatMap { (o) throws(CofferError) in try o.int("cas") }
        return try withKeyLock(key) { () throws(CofferError) in try store(request, key, data: data, cas: cas) }
    }

    /// Writes a new version, enforcing check-and-set and trimming to max_versions, in one batch.
    func store(_ request: EngineRequest, _ key: String, data: [String: JSONValue], cas: Int?) throws(CofferError) -> Response {
        let config = try loadConfig(request.storage)
        var meta = try loadMetadata(request.storage, key) ?? KVMetadata(now: request.now)
        if cas == nil && (config.casRequired || meta.casRequired) {
            throw CofferError.invalid("check-and-set parameter required for this call")
        }
        if let cas, cas != meta.currentVersion {
            throw CofferError(.conflict, "check-and-set parameter did not match the current version")
        }
        let n = meta.currentVersion + 1
        let deleteAfter = meta.deleteVersionAfter > 0 ? meta.deleteVersionAfter : config.deleteVersionAfter
        meta.versions[n] = .init(
            created: request.now, deletion: deleteAfter > 0 ? request.now.adding(seconds: deleteAfter) : nil, destroyed: false)
        meta.currentVersion = n
        meta.updated = request.now

        var ops: [StorageOperation] = [
            .put(key: Self.versionKey(key, n), value: JSONValue.object(["data": .object(data)]).serialized())
        ]
        ops += trim(&meta, key: key, config: config)
        ops.append(.put(key: "metadata/" + key, value: meta.stored.serialized()))
        try commit(request, key, ops, metadata: meta)
        return Response(data: meta.versionMetadata(n, now: request.now))
    }

    /// Drops the oldest versions beyond max_versions; returns the storage deletes.
    func trim(_ meta: inout KVMetadata, key: String, config: KVConfig) -> [StorageOperation] {
        let limit = meta.maxVersions > 0 ? meta.maxVersions : (config.maxVersions > 0 ? config.maxVersions : KVConfig.defaultMaxVersions)
        var ops: [StorageOperation] = []
        let sorted = meta.versions.keys.sorted()
        if sorted.count > limit {
            for n in sorted.prefix(sorted.count - limit) {
                meta.versions.removeValue(forKey: n)
                ops.append(.delete(key: Self.versionKey(key, n)))
            }
            // Moves only when versions are pruned; 0 until then, as in OpenBao.
            meta.oldestVersion = meta.versions.keys.min() ?? meta.oldestVersion
        }
        return ops
    }

    /// PATCH: a JSON merge patch (RFC 7386) of the current version, written as a new version.
    func patchData(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        try Self.validateKey(key, request)
        return try withKeyLock(key) { () throws(CofferError) in try patchLocked(request, key) }
    }

    private func patchLocked(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        guard let patch = try request.data.object("data") else { throw CofferError.invalid("no data provided") }
        guard let meta = try loadMetadata(request.storage, key), let current = meta.versions[meta.currentVersion],
            meta.currentVersion > 0
        else {
            return .notFound
        }
        if current.destroyed || current.isDeleted(now: request.now) {
            return Response(notFound: ["data": .null, "metadata": .object(meta.versionMetadata(meta.currentVersion, now: request.now))])
        }
        guard let stored = try request.storage.getJSON(Self.versionKey(key, meta.currentVersion)),
            case .object(let existing)? = stored["data"]
        else {
            throw CofferError(.integrity, "version \(meta.currentVersion) of '\(request.fullPath)' is listed but its data is missing")
        }
        let merged = mergePatch(.object(existing), .object(patch)).objectValue ?? [:]
        let cas = try request.data.object("options").flatMap { (o) throws(CofferError) in try o.int("cas") }
        return try store(request, key, data: merged, cas: cas ?? meta.currentVersion)
    }

    func mergePatch(_ target: JSONValue, _ patch: JSONValue) -> JSONValue {
        guard case .object(let patchObject) = patch else { return patch }
        var result = target.objectValue ?? [:]
        for (k, v) in patchObject {
            if v == .null { result.removeValue(forKey: k) } else { result[k] = mergePatch(result[k] ?? .null, v) }
        }
        return .object(result)
    }

    // MARK: delete/, undelete/, destroy/

    enum VersionAction { case delete, undelete, destroy }

    func versions(_ request: EngineRequest, _ key: String, action: VersionAction) throws(CofferError) -> Response {
        guard request.operation == .update || request.operation == .create else { throw request.unsupported() }
        try Self.validateKey(key, request)
        guard let raw = request.data["versions"], raw != .null else { throw CofferError.invalid("no version number provided") }
        var numbers: [Int] = []
        switch raw {
        case .array(let items):
            for item in items {
                guard let n = [String: JSONValue](dictionaryLiteral: ("v", item)).intValueLenient("v") else {
                    throw CofferError.invalid("versions must be a list of version numbers")
                }
                numbers.append(n)
            }
        default:
            guard let list = try request.data.stringList("versions") else { throw CofferError.invalid("no version number provided") }
            for s in list {
                guard let n = Int(s) else { throw CofferError.invalid("versions must be a list of version numbers") }
                numbers.append(n)
            }
        }
        guard !numbers.isEmpty else { throw CofferError.invalid("no version number provided") }
        return try changeVersions(request, key, action: action, versions: numbers)
    }

    /// Soft-deletes, restores or destroys versions (nil: the current version). Unknown versions are skipped, as in Vault.
    func changeVersions(_ request: EngineRequest, _ key: String, action: VersionAction, versions: [Int]?) throws(CofferError) -> Response {
        try withKeyLock(key) { () throws(CofferError) in try changeVersionsLocked(request, key, action: action, versions: versions) }
    }

    private func changeVersionsLocked(
        _ request: EngineRequest, _ key: String, action: VersionAction, versions: [Int]?
    ) throws(CofferError) -> Response {
        guard var meta = try loadMetadata(request.storage, key) else { return .noContent }
        let targets = versions ?? [meta.currentVersion]
        var ops: [StorageOperation] = []
        for n in targets {
            guard var v = meta.versions[n] else { continue }
            switch action {
            case .delete:
                if !v.destroyed && !v.isDeleted(now: request.now) { v.deletion = request.now }
            case .undelete:
                if !v.destroyed { v.deletion = nil }
            case .destroy:
                if !v.destroyed {
                    v.destroyed = true
                    ops.append(.delete(key: Self.versionKey(key, n)))
                }
            }
            meta.versions[n] = v
        }
        meta.updated = request.now
        ops.append(.put(key: "metadata/" + key, value: meta.stored.serialized()))
        try commit(request, key, ops, metadata: meta)
        return .noContent
    }

    // MARK: metadata/

    func metadata(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        switch request.operation {
        case .list:
            let folder = key.isEmpty || key.hasSuffix("/") ? key : key + "/"
            let keys = try request.storage.list("metadata/" + folder)
            guard !keys.isEmpty else { return .notFound }
            return Response(data: ["keys": .array(keys.map { .string($0) })])
        case .read:
            try Self.validateKey(key, request)
            guard let meta = try loadMetadata(request.storage, key) else { return .notFound }
            return Response(data: meta.full(now: request.now))
        case .create, .update, .patch:
            try Self.validateKey(key, request)
            return try withKeyLock(key) { () throws(CofferError) in try writeMetadata(request, key) }
        case .delete:
            try Self.validateKey(key, request)
            return try withKeyLock(key) { () throws(CofferError) in
                guard let meta = try loadMetadata(request.storage, key) else { return .noContent }
                var ops: [StorageOperation] = meta.versions.keys.map { .delete(key: Self.versionKey(key, $0)) }
                ops.append(.delete(key: "metadata/" + key))
                try commit(request, key, ops, metadata: nil)
                return .noContent
            }
        }
    }

    private func writeMetadata(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
            var meta = try loadMetadata(request.storage, key) ?? KVMetadata(now: request.now)
            let d = request.data
            if let v = try d.int("max_versions") {
                guard v >= 0 else { throw CofferError.invalid("max_versions must not be negative") }
                meta.maxVersions = v
            }
            if let v = try d.bool("cas_required") { meta.casRequired = v }
            if let v = try d.duration("delete_version_after") { meta.deleteVersionAfter = v }
            if let custom = try d.stringMap("custom_metadata") {
                guard custom.count <= 64 else { throw CofferError.invalid("custom_metadata may hold at most 64 keys") }
                if request.operation == .patch {
                    for (k, v) in custom { meta.customMetadata[k] = v }
                } else {
                    meta.customMetadata = custom
                }
            }
            meta.updated = request.now
            let ops = trim(&meta, key: key, config: try loadConfig(request.storage))
            try commit(request, key, ops + [.put(key: "metadata/" + key, value: meta.stored.serialized())], metadata: meta)
            return .noContent
    }

    // MARK: subkeys/, config

    func subkeys(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        guard request.operation == .read else { throw request.unsupported() }
        let read = try readData(request, key)
        guard read.outcome == .ok, let data = read.data?["data"], let metadata = read.data?["metadata"] else {
            return read
        }
        let depth = try request.data.int("depth") ?? 0
        func strip(_ value: JSONValue, level: Int) -> JSONValue {
            guard case .object(let o) = value else { return .null }
            if depth > 0 && level >= depth { return .null }
            return .object(o.mapValues { v in
                if case .object = v { return strip(v, level: level + 1) }
                return .null
            })
        }
        return Response(data: ["subkeys": strip(data, level: 0), "metadata": metadata])
    }

    func config(_ request: EngineRequest) throws(CofferError) -> Response {
        switch request.operation {
        case .read:
            let c = try loadConfig(request.storage)
            return Response(data: [
                "max_versions": .int(c.maxVersions), "cas_required": .bool(c.casRequired),
                "delete_version_after": .string(Duration.format(c.deleteVersionAfter)), "metadata_cas_required": false,
            ])
        case .create, .update:
            var c = try loadConfig(request.storage)
            if let v = try request.data.int("max_versions") {
                guard v >= 0 else { throw CofferError.invalid("max_versions must not be negative") }
                c.maxVersions = v
            }
            if let v = try request.data.bool("cas_required") { c.casRequired = v }
            if let v = try request.data.duration("delete_version_after") { c.deleteVersionAfter = v }
            try request.storage.putJSON("config", c.stored)
            return .noContent
        default:
            throw request.unsupported()
        }
    }
}

extension Dictionary where Key == String, Value == JSONValue {
    func intValueLenient(_ key: String) -> Int? { (try? int(key)) ?? nil }
}

extension String {
    func dropPrefixKV(_ prefix: String) -> String? {
        utf8.starts(with: prefix.utf8) ? String(decoding: utf8.dropFirst(prefix.utf8.count), as: UTF8.self) : nil
    }
}
