package import CofferCore
package import CofferFramework

/// Per-secret metadata of KV v2: settings and the state of every version.
struct KVMetadata: Sendable {
    struct Version: Sendable {
        var created: Timestamp {
            didSet { createdText = created.rfc3339 }
        }
        var deletion: Timestamp? {
            didSet { deletionText = deletion.map { $0.rfc3339 } ?? "" }
        }
        var destroyed: Bool
        /// The RFC 3339 forms, kept so that a read (metadata is cached) does not format them again.
        private(set) var createdText: String
        private(set) var deletionText: String

        init(created: Timestamp, deletion: Timestamp?, destroyed: Bool) {
            self.created = created
            self.deletion = deletion
            self.destroyed = destroyed
            createdText = created.rfc3339
            deletionText = deletion.map { $0.rfc3339 } ?? ""
        }

        func isDeleted(now: Timestamp) -> Bool { deletion.map { $0 <= now } ?? false }

        var json: JSONValue {
            [
                "created_time": .string(createdText), "deletion_time": .string(deletionText),
                "destroyed": .bool(destroyed),
            ]
        }
    }

    var created: Timestamp
    var updated: Timestamp
    var currentVersion: Int = 0
    var oldestVersion: Int = 0
    var maxVersions: Int = 0
    var casRequired: Bool = false
    var deleteVersionAfter: Int64 = 0
    var customMetadata: [String: String] = [:]
    /// Bumped by each write or patch of the metadata itself (`current_metadata_version`).
    var metadataVersion: Int = 0
    var versions: [Int: Version] = [:]

    init(now: Timestamp) {
        created = now
        updated = now
    }

    /// The stored form: compact JSON with keys in sorted order (as ``JSONValue/serialized()`` writes an
    /// object), written straight out. A write stores the metadata of every version it keeps, and
    /// building it as dictionaries first cost a third of a KV write's instructions.
    var stored: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + 80 * versions.count + 32 * customMetadata.count)
        out.appendLiteral("{\"cas_required\":")
        out.appendLiteral(casRequired ? "true" : "false")
        out.appendLiteral(",\"created\":")
        appendDecimal(Int(created.nanoseconds), to: &out)
        out.appendLiteral(",\"current_metadata_version\":")
        appendDecimal(metadataVersion, to: &out)
        out.appendLiteral(",\"current_version\":")
        appendDecimal(currentVersion, to: &out)
        out.appendLiteral(",\"custom_metadata\":{")
        for (i, (name, value)) in customMetadata.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONValue.writeString(name, to: &out)
            out.append(UInt8(ascii: ":"))
            JSONValue.writeString(value, to: &out)
        }
        out.appendLiteral("},\"delete_version_after\":")
        appendDecimal(Int(deleteVersionAfter), to: &out)
        out.appendLiteral(",\"max_versions\":")
        appendDecimal(maxVersions, to: &out)
        out.appendLiteral(",\"oldest_version\":")
        appendDecimal(oldestVersion, to: &out)
        out.appendLiteral(",\"updated\":")
        appendDecimal(Int(updated.nanoseconds), to: &out)
        out.appendLiteral(",\"versions\":{")
        // Keys in the order of their decimal text, as an object's are written.
        for (i, (n, v)) in versions.map({ (String($0.key), $0.value) }).sorted(by: { $0.0 < $1.0 }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: n.utf8)
            out.appendLiteral("\":{\"created\":")
            appendDecimal(Int(v.created.nanoseconds), to: &out)
            out.appendLiteral(",\"deletion\":")
            if let deletion = v.deletion {
                appendDecimal(Int(deletion.nanoseconds), to: &out)
            } else {
                out.appendLiteral("null")
            }
            out.appendLiteral(v.destroyed ? ",\"destroyed\":true}" : ",\"destroyed\":false}")
        }
        out.appendLiteral("}}")
        return out
    }

    init(stored json: JSONValue, path: String) throws(CofferError) {
        func ts(_ v: JSONValue?) -> Timestamp? {
            guard let n = v, case .number(let text) = n, let ns = Int64(text) else { return nil }
            return Timestamp(nanoseconds: ns)
        }
        guard let created = ts(json["created"]), let updated = ts(json["updated"]) else {
            throw CofferError(.integrity, "stored KV metadata for '\(path)' is malformed")
        }
        self.created = created
        self.updated = updated
        currentVersion = json["current_version"]?.intValue ?? 0
        metadataVersion = json["current_metadata_version"]?.intValue ?? 0
        oldestVersion = json["oldest_version"]?.intValue ?? 0
        maxVersions = json["max_versions"]?.intValue ?? 0
        casRequired = json["cas_required"]?.boolValue ?? false
        deleteVersionAfter = Int64(json["delete_version_after"]?.intValue ?? 0)
        customMetadata = (json["custom_metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        for (key, value) in json["versions"]?.objectValue ?? [:] {
            guard let n = Int(key), let c = ts(value["created"]) else { continue }
            versions[n] = Version(
                created: c,
                deletion: ts(value["deletion"]),
                destroyed: value["destroyed"]?.boolValue ?? false
            )
        }
    }

    var customMetadataJSON: JSONValue {
        customMetadata.isEmpty ? .null : .object(customMetadata.mapValues { .string($0) })
    }

    /// The `metadata` block of a data read or write.
    func versionMetadata(_ n: Int) -> [String: JSONValue] {
        let v = versions[n]
        return [
            "created_time": .string(v?.createdText ?? ""), "custom_metadata": customMetadataJSON,
            "deletion_time": .string(v?.deletionText ?? ""), "destroyed": .bool(v?.destroyed ?? false),
            "version": .int(n),
        ]
    }

    /// The body of `metadata/<path>` reads.
    var full: [String: JSONValue] {
        var versionMap: [String: JSONValue] = [:]
        for (n, v) in versions { versionMap[String(n)] = v.json }
        return [
            "cas_required": .bool(casRequired), "created_time": .string(created.rfc3339),
            "current_version": .int(currentVersion),
            "current_metadata_version": .int(metadataVersion), "metadata_cas_required": false,
            "custom_metadata": customMetadataJSON,
            "delete_version_after": .string(VaultDuration.format(deleteVersionAfter)),
            "max_versions": .int(maxVersions), "oldest_version": .int(oldestVersion),
            "updated_time": .string(updated.rfc3339),
            "versions": .object(versionMap),
        ]
    }
}

/// Mount-wide KV v2 settings (`<mount>/config`).
struct KVConfig: Sendable {
    static let defaultMaxVersions = 10
    var maxVersions: Int = 0
    var casRequired: Bool = false
    var deleteVersionAfter: Int64 = 0

    init() {}

    init(stored json: JSONValue) {
        maxVersions = json["max_versions"]?.intValue ?? 0
        casRequired = json["cas_required"]?.boolValue ?? false
        deleteVersionAfter = Int64(json["delete_version_after"]?.intValue ?? 0)
    }

    var stored: JSONValue {
        [
            "max_versions": .int(maxVersions), "cas_required": .bool(casRequired),
            "delete_version_after": .int(deleteVersionAfter),
        ]
    }
}
