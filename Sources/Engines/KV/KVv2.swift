public import CofferCore

/// KV version 2: versioned secrets with check-and-set, soft delete, undelete, destroy and metadata,
/// with Vault's paths and response shapes.
///
/// Storage under the mount: `config`, `metadata/<path>` (settings and version states) and
/// `versions/<sha256(path)>/<n>` (one version's data).
public struct KVv2Backend: Backend {
    public init() {}

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
        guard let json = try storage.getJSON("metadata/" + key) else { return nil }
        return try KVMetadata(stored: json, path: key)
    }

    func loadConfig(_ storage: StorageView) throws(CofferError) -> KVConfig {
        guard let json = try storage.getJSON("config") else { return KVConfig() }
        return KVConfig(stored: json)
    }

    static func versionKey(_ key: String, _ n: Int) -> String {
        "versions/" + Hex.encode(Digest.sha256(Array(key.utf8))) + "/" + String(n)
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
        guard let meta = try loadMetadata(request.storage, key) else { return Response(status: 404) }
        let n = try request.data.int("version").flatMap { $0 == 0 ? nil : $0 } ?? meta.currentVersion
        guard let version = meta.versions[n] else { return Response(status: 404) }
        if version.destroyed || version.isDeleted(now: request.now) {
            return Response(status: 404, data: ["data": .null, "metadata": .object(meta.versionMetadata(n, now: request.now))])
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
        return try store(request, key, data: data, cas: cas)
    }

    /// Writes a new version, enforcing check-and-set and trimming to max_versions, in one batch.
    func store(_ request: EngineRequest, _ key: String, data: [String: JSONValue], cas: Int?) throws(CofferError) -> Response {
        let config = try loadConfig(request.storage)
        var meta = try loadMetadata(request.storage, key) ?? KVMetadata(now: request.now)
        if cas == nil && (config.casRequired || meta.casRequired) {
            throw CofferError.invalid("check-and-set parameter required for this call")
        }
        if let cas, cas != meta.currentVersion {
            throw CofferError.invalid("check-and-set parameter did not match the current version")
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
        try request.storage.batch(ops)
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
        guard let patch = try request.data.object("data") else { throw CofferError.invalid("no data provided") }
        guard let meta = try loadMetadata(request.storage, key), let current = meta.versions[meta.currentVersion],
            meta.currentVersion > 0
        else {
            return Response(status: 404)
        }
        if current.destroyed || current.isDeleted(now: request.now) {
            return Response(status: 404, data: ["data": .null, "metadata": .object(meta.versionMetadata(meta.currentVersion, now: request.now))])
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
        try request.storage.batch(ops)
        return .noContent
    }

    // MARK: metadata/

    func metadata(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        switch request.operation {
        case .list:
            let folder = key.isEmpty || key.hasSuffix("/") ? key : key + "/"
            let keys = try request.storage.list("metadata/" + folder)
            guard !keys.isEmpty else { return Response(status: 404) }
            return Response(data: ["keys": .array(keys.map { .string($0) })])
        case .read:
            try Self.validateKey(key, request)
            guard let meta = try loadMetadata(request.storage, key) else { return Response(status: 404) }
            return Response(data: meta.full(now: request.now))
        case .create, .update, .patch:
            try Self.validateKey(key, request)
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
            try request.storage.batch(ops + [.put(key: "metadata/" + key, value: meta.stored.serialized())])
            return .noContent
        case .delete:
            try Self.validateKey(key, request)
            guard let meta = try loadMetadata(request.storage, key) else { return .noContent }
            var ops: [StorageOperation] = meta.versions.keys.map { .delete(key: Self.versionKey(key, $0)) }
            ops.append(.delete(key: "metadata/" + key))
            try request.storage.batch(ops)
            return .noContent
        }
    }

    // MARK: subkeys/, config

    func subkeys(_ request: EngineRequest, _ key: String) throws(CofferError) -> Response {
        guard request.operation == .read else { throw request.unsupported() }
        let read = try readData(request, key)
        guard read.status == 200, let data = read.data?["data"], let metadata = read.data?["metadata"] else {
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
