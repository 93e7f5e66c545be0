package import CofferCore
package import CofferFramework

/// KV v2's paths, as Vault's `path_config.go`, `path_data.go`, `path_metadata.go`,
/// `path_delete.go`, `path_undelete.go`, `path_destroy.go` and `path_subkeys.go` declare them.
extension KVv2Backend {
    static let versionLimit = 0...Int(Int32.max)

    package static let paths = PathTable<KVv2Backend>([
        Path(
            "config",
            fields: [.int("max_versions", versionLimit), .bool("cas_required"), .duration("delete_version_after")],
            read: KVv2Backend.readConfig,
            write: KVv2Backend.writeConfig
        ),
        Path(
            "data/{path*}",
            fields: [.int("version", versionLimit), .object("data"), .object("options")],
            existence: KVv2Backend.secretExists,
            read: KVv2Backend.readData,
            write: KVv2Backend.writeData,
            patch: KVv2Backend.patchData,
            delete: KVv2Backend.deleteLatest
        ),
        Path(
            "metadata/{path*}",
            fields: [
                .int("max_versions", versionLimit), .bool("cas_required"), .duration("delete_version_after"),
                .object("custom_metadata"),
            ],
            existence: KVv2Backend.secretExists,
            read: KVv2Backend.readMetadata,
            list: KVv2Backend.listMetadata,
            write: KVv2Backend.writeMetadata,
            patch: KVv2Backend.writeMetadata,
            delete: KVv2Backend.deleteMetadata
        ),
        Path("delete/{path*}", fields: [.ints("versions", versionLimit)], write: KVv2Backend.deleteVersions),
        Path("undelete/{path*}", fields: [.ints("versions", versionLimit)], write: KVv2Backend.undeleteVersions),
        Path("destroy/{path*}", fields: [.ints("versions", versionLimit)], write: KVv2Backend.destroyVersions),
        Path(
            "subkeys/{path*}",
            fields: [.int("version", versionLimit), .int("depth", versionLimit)],
            read: KVv2Backend.subkeys
        ),
        // Rotation, a Coffer extension (KVRotation.swift, docs/rotation.md).
        Path(
            "rotation/{path*}",
            fields: RotationPolicy.fields,
            read: KVv2Backend.readRotation,
            list: KVv2Backend.listRotation,
            write: KVv2Backend.writeRotation,
            delete: KVv2Backend.deleteRotation
        ),
        Path("rotate/{path*}", write: KVv2Backend.rotateNow),
        Path(
            "rotation-ack/{path*}",
            fields: [.string("consumer"), .int("version", versionLimit), .bool("ok")],
            write: KVv2Backend.ackRotation
        ),
        Path("rotation-rollback/{path*}", write: KVv2Backend.rollbackRotation),
    ])

    // MARK: config

    func readConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let c = try loadConfig(request.storage)
        return Response(data: [
            "max_versions": .int(c.maxVersions), "cas_required": .bool(c.casRequired),
            "delete_version_after": .string(VaultDuration.format(c.deleteVersionAfter)), "metadata_cas_required": false,
        ])
    }

    func writeConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        var c = try loadConfig(request.storage)
        let f = request.fields
        if let v = f.int("max_versions") { c.maxVersions = v }
        if let v = f.bool("cas_required") { c.casRequired = v }
        if let v = f.seconds("delete_version_after") { c.deleteVersionAfter = v }
        try request.storage.putJSON("config", c.stored)
        invalidate("config")  // the change feed does too; here it is certain before the answer
        return .noContent
    }

    // MARK: data/

    func secretExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        let key = request.capture("path")
        guard !key.isEmpty, !key.hasSuffix("/") else { return false }
        return try loadMetadata(request.storage, key) != nil
    }

    func readData(_ request: BackendRequest) throws(CofferError) -> Response {
        let version = request.fields.int("version").flatMap { $0 == 0 ? nil : $0 }
        return try read(request.storage, try Self.secretKey(request), version: version, now: request.now) {
            request.fullPath
        }
    }

    /// `GET data/<path>` without parameters (the current version), straight from the pipeline.
    package func directRead(
        _ relative: String,
        storage: StorageView,
        mount: MountEntry,
        now: Timestamp,
        writesAnswerAsJSON: Bool
    )
        throws(CofferError) -> Response?
    {
        // What readData refuses or reads differently (no path, a folder) goes the usual way.
        guard relative.utf8.count > 5, relative.hasPrefix("data/"), !relative.hasSuffix("/"),
            let key = String(relative.utf8.dropFirst(5))  // by bytes: String.dropFirst walks characters
        else { return nil }
        return try read(storage, key, version: nil, now: now, verbatim: writesAnswerAsJSON) {
            mount.path + relative
        }
    }

    /// Version `version` of secret `key` (nil: the current one), with its metadata block. `verbatim`:
    /// the secret's values as the JSON stored (``Response/verbatimMember``), not parsed.
    func read(
        _ storage: some StorageReading,
        _ key: String,
        version: Int?,
        now: Timestamp,
        verbatim: Bool = false,
        fullPath: () -> String
    ) throws(CofferError) -> Response {
        guard let cached = try loadCached(storage, key) else { return .notFound }
        let meta = cached.metadata
        let n = version ?? meta.currentVersion
        guard let entry = meta.versions[n] else { return .notFound }
        let current = n == meta.currentVersion
        let block = current ? cached.currentBlock : .object(meta.versionMetadata(n))
        if entry.destroyed || entry.isDeleted(now: now) {
            return Response(notFound: ["data": .null, "metadata": block])
        }
        let versionKey = current ? cached.currentKey : Self.versionKey(key, n)
        if verbatim, let stored = try storage.get(versionKey), let values = JSONValue.soleMember("data", of: stored) {
            var response = Response(data: ["metadata": block])
            response.verbatimMember = ("data", values)
            return response
        }
        guard let data = try storage.getJSON(versionKey, member: "data") else {
            throw CofferError(.integrity, "version \(n) of '\(fullPath())' is listed but its data is missing")
        }
        return Response(data: ["data": data, "metadata": block])
    }

    func writeData(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        guard let data = request.fields.object("data") else { throw CofferError.invalid("no data provided") }
        let cas = try Self.cas(request)
        return try withKeyLock(key) { () throws(CofferError) in try store(request, key, data: data, cas: cas) }
    }

    /// `options.cas`: a version number, 0 meaning "only if it does not exist".
    static func cas(_ request: BackendRequest) throws(CofferError) -> Int? {
        guard let value = request.fields.object("options")?["cas"], value != .null else { return nil }
        guard let n = Field.integer(value), versionLimit.contains(n) else {
            throw CofferError.invalid("options.cas must be an integer from 0 to \(versionLimit.upperBound)")
        }
        return n
    }

    /// Check-and-set: `cas` must be given when the mount or the secret requires it, and must name the
    /// current version (0: the secret must not exist yet).
    static func checkCAS(_ cas: Int?, config: KVConfig, meta: KVMetadata) throws(CofferError) {
        if cas == nil && (config.casRequired || meta.casRequired) {
            throw CofferError.invalid("check-and-set parameter required for this call")
        }
        if let cas, cas != meta.currentVersion {
            throw CofferError(.conflict, "check-and-set parameter did not match the current version")
        }
    }

    /// Writes a new version, enforcing check-and-set and trimming to max_versions, in one batch.
    func store(
        _ request: BackendRequest,
        _ key: String,
        data: [String: JSONValue],
        cas: Int?
    ) throws(CofferError) -> Response {
        let config = try loadConfig(request.storage)
        var meta = try loadMetadata(request.storage, key) ?? KVMetadata(now: request.now)
        try Self.checkCAS(cas, config: config, meta: meta)
        let n = meta.currentVersion + 1
        let deleteAfter = meta.deleteVersionAfter > 0 ? meta.deleteVersionAfter : config.deleteVersionAfter
        meta.versions[n] = .init(
            created: request.now,
            deletion: deleteAfter > 0 ? request.now.adding(seconds: deleteAfter) : nil,
            destroyed: false
        )
        meta.currentVersion = n
        meta.updated = request.now
        var ops: [StorageOperation] = [
            .put(key: Self.versionKey(key, n), value: JSONValue.object(["data": .object(data)]).serialized())
        ]
        ops += trim(&meta, key: key, config: config)
        ops.append(.put(key: "metadata/" + key, value: meta.stored))
        try commit(request.storage, key, ops, metadata: meta)
        let operation = request.operation == .patch ? "data-patch" : "data-write"
        request.publishKVv2(operation, prefix: "data", key: key, versions: (n, meta.oldestVersion))
        return Response(data: meta.versionMetadata(n))
    }

    /// Drops the oldest versions beyond max_versions; returns the storage deletes.
    func trim(_ meta: inout KVMetadata, key: String, config: KVConfig) -> [StorageOperation] {
        let limit =
            meta.maxVersions > 0
            ? meta.maxVersions : (config.maxVersions > 0 ? config.maxVersions : KVConfig.defaultMaxVersions)
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
    func patchData(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        guard let patch = request.fields.object("data") else { throw CofferError.invalid("no data provided") }
        let cas = try Self.cas(request)
        return try withKeyLock(key) { () throws(CofferError) -> Response in
            guard let meta = try loadMetadata(request.storage, key) else { return .notFound }
            // As OpenBao: check-and-set before the current version's state.
            try Self.checkCAS(cas, config: try loadConfig(request.storage), meta: meta)
            guard meta.currentVersion > 0, let current = meta.versions[meta.currentVersion] else { return .notFound }
            if current.destroyed || current.isDeleted(now: request.now) {
                return Response(notFound: [
                    "data": .null, "metadata": .object(meta.versionMetadata(meta.currentVersion)),
                ])
            }
            guard let stored = try request.storage.getJSON(Self.versionKey(key, meta.currentVersion)),
                case .object(let existing)? = stored["data"]
            else {
                throw CofferError(
                    .integrity,
                    "version \(meta.currentVersion) of '\(request.fullPath)' is listed but its data is missing"
                )
            }
            let merged = JSONValue.mergePatch(.object(existing), .object(patch)).objectValue ?? [:]
            return try store(request, key, data: merged, cas: cas ?? meta.currentVersion)
        }
    }

    func deleteLatest(_ request: BackendRequest) throws(CofferError) -> Response {
        try changeVersions(request, try Self.secretKey(request), action: .delete, versions: nil)
    }

    // MARK: delete/, undelete/, destroy/

    enum VersionAction { case delete, undelete, destroy }

    func deleteVersions(_ request: BackendRequest) throws(CofferError) -> Response { try versions(request, .delete) }
    func undeleteVersions(_ request: BackendRequest) throws(CofferError) -> Response {
        try versions(request, .undelete)
    }
    func destroyVersions(_ request: BackendRequest) throws(CofferError) -> Response { try versions(request, .destroy) }

    func versions(_ request: BackendRequest, _ action: VersionAction) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        guard let numbers = request.fields.ints("versions"), !numbers.isEmpty else {
            throw CofferError.invalid("No version number provided")  // OpenBao's capital
        }
        return try changeVersions(request, key, action: action, versions: numbers)
    }

    /// Soft-deletes, restores or destroys versions (nil: the current version). Unknown versions are skipped, as in Vault.
    func changeVersions(
        _ request: BackendRequest,
        _ key: String,
        action: VersionAction,
        versions: [Int]?
    ) throws(CofferError) -> Response {
        try withKeyLock(key) { () throws(CofferError) -> Response in
            guard var meta = try loadMetadata(request.storage, key) else { return .noContent }
            var ops: [StorageOperation] = []
            for n in versions ?? [meta.currentVersion] {
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
            ops.append(.put(key: "metadata/" + key, value: meta.stored))
            try commit(request.storage, key, ops, metadata: meta)
            let (operation, prefix) =
                switch action {
                case .delete: versions == nil ? ("data-delete", "data") : ("delete", "delete")
                case .undelete: ("undelete", "undelete")
                case .destroy: ("destroy", "destroy")
                }
            request.publishKVv2(
                operation,
                prefix: prefix,
                key: key,
                versions: (meta.currentVersion, meta.oldestVersion)
            )
            return .noContent
        }
    }

    // MARK: metadata/

    func listMetadata(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = request.capture("path")
        let folder = key.isEmpty || key.hasSuffix("/") ? key : key + "/"
        let keys = try request.storage.list("metadata/" + folder)
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func readMetadata(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        guard let meta = try loadMetadata(request.storage, key) else { return .notFound }
        return Response(data: meta.full)
    }

    func writeMetadata(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        let f = request.fields
        // String values; in a PATCH a null removes its key (JSON merge patch, as OpenBao).
        var custom: [String: String?]?
        if let object = f.object("custom_metadata") {
            var values: [String: String?] = [:]
            for (k, v) in object {
                switch v {
                case .string(let s): values[k] = .some(s)
                case .null where request.operation == .patch: values[k] = .some(nil)
                default: throw CofferError.invalid("custom_metadata.\(k) must be a string")
                }
            }
            custom = values
        }
        return try withKeyLock(key) { () throws(CofferError) -> Response in
            var meta = try loadMetadata(request.storage, key) ?? KVMetadata(now: request.now)
            if let v = f.int("max_versions") { meta.maxVersions = v }
            if let v = f.bool("cas_required") { meta.casRequired = v }
            if let v = f.seconds("delete_version_after") { meta.deleteVersionAfter = v }
            if let custom {
                if request.operation != .patch { meta.customMetadata = [:] }
                for (k, v) in custom { meta.customMetadata[k] = v }
                guard meta.customMetadata.count <= 64 else {
                    throw CofferError.invalid("custom_metadata may hold at most 64 keys")
                }
            }
            meta.metadataVersion += 1
            meta.updated = request.now
            // A lower max_versions takes effect at the next write of the data, as in OpenBao.
            try commit(request.storage, key, [.put(key: "metadata/" + key, value: meta.stored)], metadata: meta)
            let operation = request.operation == .patch ? "metadata-patch" : "metadata-write"
            request.publishKVv2(
                operation,
                prefix: "metadata",
                key: key,
                versions: (meta.currentVersion, meta.oldestVersion)
            )
            return .noContent
        }
    }

    func deleteMetadata(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        return try withKeyLock(key) { () throws(CofferError) -> Response in
            guard let meta = try loadMetadata(request.storage, key) else { return .noContent }
            var ops: [StorageOperation] = meta.versions.keys.map { .delete(key: Self.versionKey(key, $0)) }
            ops.append(.delete(key: "metadata/" + key))
            try commit(request.storage, key, ops, metadata: nil)
            request.publishKVv2("metadata-delete", prefix: "metadata", key: key)
            return .noContent
        }
    }

    // MARK: subkeys/

    func subkeys(_ request: BackendRequest) throws(CofferError) -> Response {
        let read = try readData(request)
        guard let metadata = read.data?["metadata"] else { return read }
        guard read.outcome == .ok, let data = read.data?["data"] else {
            // A deleted or destroyed version: its metadata and no subkeys (not `data`), as OpenBao.
            var answer = read
            answer.data = ["metadata": metadata, "subkeys": .null]
            return answer
        }
        let depth = request.fields.int("depth") ?? 0
        return Response(data: ["subkeys": data.subkeys(depth: depth), "metadata": metadata])
    }
}
