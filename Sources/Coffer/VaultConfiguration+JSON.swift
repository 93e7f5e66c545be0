/// The JSON form of ``VaultConfiguration``: what `coffer_open` takes and what a server config file
/// holds. Documented in docs/c-abi.md ("Configuration").
///
/// ```json
/// {
///   "storage": {"type": "sqlite", "path": "/var/lib/app/coffer.db"},
///   "seal": {"type": "shamir"},
///   "limits": {"max_entry_size": 1048576},
///   "audit": [{"path": "file", "type": "file", "options": {"file_path": "/var/log/app/coffer-audit.log"}}]
/// }
/// ```
///
/// `seal` may also be `{"type": "pkcs11", "lib": ..., "token_label": ..., "key_label": ...}` with
/// Vault's field names (docs/hsm.md). Each `audit` entry is a device enabled at every unseal if it
/// is not already (docs/audit.md); the unseal fails if one cannot be.
///
/// `storage` is required unless `dev` is set; `seal` defaults to Shamir and `limits` to ``Limits``'
/// defaults. `"dev": true` (or `{"root_token": "..."}`) opens what ``Vault/openDev(storage:rootTokenID:clock:)``
/// gives: in memory, initialised, unsealed, `secret/` mounted as KV v2, root token `root`.
/// An unknown key anywhere is an error that names it, so a typo never silently falls back to a default.
extension VaultConfiguration {
    /// Parses a configuration document.
    ///
    /// - Throws: ``CofferError`` with code `invalidArgument` naming the offending key (`storage.paht`)
    ///   or value, for malformed JSON, unknown keys, missing or mistyped values.
    public init(json bytes: some Collection<UInt8>) throws(CofferError) {
        let document: JSONValue
        do {
            document = try JSONValue.parse(bytes)
        } catch {
            throw CofferError.invalid("the configuration is not valid JSON: \(error)")
        }
        let root = try ConfigObject(document, at: "")
        try root.allowOnly(["storage", "seal", "limits", "dev", "audit"])

        var devRootToken: String?
        switch root.fields["dev"] {
        case nil, .bool(false)?: break
        case .bool(true)?: devRootToken = "root"
        case let value?:
            let dev = try ConfigObject(value, at: "dev", allowBool: true)
            try dev.allowOnly(["root_token"])
            devRootToken = try dev.string("root_token") ?? "root"
            guard devRootToken?.isEmpty == false else {
                throw CofferError.invalid("configuration key 'dev.root_token' must not be empty")
            }
        }

        let storage: Storage
        if let value = root.fields["storage"] {
            let object = try ConfigObject(value, at: "storage")
            guard let type = try object.string("type") else {
                throw CofferError.invalid("configuration key 'storage.type' is required: \"sqlite\" or \"memory\"")
            }
            switch type {
            case "sqlite":
                try object.allowOnly(["type", "path"])
                guard let path = try object.string("path"), !path.isEmpty else {
                    throw CofferError.invalid(
                        "configuration key 'storage.path' is required for sqlite storage: the database file"
                    )
                }
                storage = .sqlite(path: path)
            case "memory":
                try object.allowOnly(["type"])
                storage = .memory
            case "raft":
                storage = .raft(try Self.raft(object))
            default:
                throw CofferError.invalid(
                    "configuration key 'storage.type' is \"\(type)\"; supported: \"sqlite\", \"memory\", \"raft\""
                )
            }
        } else if devRootToken != nil {
            storage = .memory
        } else {
            throw CofferError.invalid(
                "configuration key 'storage' is required, e.g. {\"storage\": {\"type\": \"sqlite\", \"path\": \"coffer.db\"}}"
            )
        }
        if devRootToken != nil, case .memory = storage {
        } else if devRootToken != nil {
            throw CofferError.invalid(
                "dev mode keeps everything in memory; remove 'storage' or set 'storage.type' to \"memory\""
            )
        }

        let seal: any Seal
        if let value = root.fields["seal"] {
            let object = try ConfigObject(value, at: "seal")
            switch try object.string("type") {
            case "shamir"?, nil:
                try object.allowOnly(["type"])
                seal = ShamirSeal()
            case "pkcs11"?:
                var fields = object.fields
                fields.removeValue(forKey: "type")
                do {
                    seal = try PKCS11Seal(try PKCS11Configuration(json: .object(fields)))
                } catch {
                    throw CofferError(error.code, "configuration key 'seal': \(error.message)")
                }
            case let type?:
                throw CofferError.invalid(
                    "configuration key 'seal.type' is \"\(type)\"; supported: \"shamir\", \"pkcs11\""
                )
            }
        } else {
            seal = ShamirSeal()
        }

        var limits = Limits()
        if let value = root.fields["limits"] {
            let object = try ConfigObject(value, at: "limits")
            try object.allowOnly(["max_entry_size", "read_cache_bytes"])
            if let size = try object.int("max_entry_size") {
                guard size > 0 else {
                    throw CofferError.invalid(
                        "configuration key 'limits.max_entry_size' must be a positive number of bytes"
                    )
                }
                limits.maxEntrySize = size
            }
            if let size = try object.int("read_cache_bytes") {
                guard size >= 0 else {
                    throw CofferError.invalid(
                        "configuration key 'limits.read_cache_bytes' must be a number of bytes, 0 or more (0 turns the cache off)"
                    )
                }
                limits.readCacheBytes = size
            }
        }

        var auditDevices: [AuditDeviceConfig] = []
        if let value = root.fields["audit"] {
            guard case .array(let items) = value else {
                throw CofferError.invalid("configuration key 'audit' must be a list of devices, not \(value.typeName)")
            }
            for (index, item) in items.enumerated() {
                let object = try ConfigObject(item, at: "audit[\(index)]")
                try object.allowOnly(["path", "type", "description", "options", "local"])
                guard let type = try object.string("type"), let path = try object.string("path"), !path.isEmpty else {
                    throw CofferError.invalid(
                        "configuration key 'audit[\(index)]' needs 'type' (file, socket, syslog) and 'path' (e.g. \"file\")"
                    )
                }
                var options: [String: String] = [:]
                if let raw = object.fields["options"] {
                    let optionObject = try ConfigObject(raw, at: "audit[\(index)].options")
                    for key in optionObject.fields.keys { options[key] = try optionObject.string(key) }
                }
                auditDevices.append(
                    AuditDeviceConfig(
                        path: path,
                        type: type,
                        description: try object.string("description") ?? "",
                        options: options
                    )
                )
            }
        }

        self.init(storage: storage, seal: seal, limits: limits)
        self.devRootToken = devRootToken
        self.auditDevices = auditDevices
    }

    /// Parses a configuration document given as text. See ``init(json:)-(Collection<UInt8>)``.
    public init(json text: String) throws(CofferError) {
        try self.init(json: Array(text.utf8))
    }
}

/// One JSON object of the configuration, with the dotted path that names it in errors.
extension VaultConfiguration {
    /// `{"type": "raft", "path", "node_id", "cluster_addr", "retry_join": [api addresses], "api_addr",
    /// "non_voter", "leader_ca_cert_file", "leader_client_cert_file", "leader_client_key_file"}`: a node of a
    /// cluster; in a program that links the library, usually an embedded
    /// replica (`non_voter` true, the default here: it receives the log and never votes).
    fileprivate static func raft(_ object: ConfigObject) throws(CofferError) -> RaftConfiguration {
        try object.allowOnly([
            "type", "path", "node_id", "cluster_addr", "api_addr", "retry_join", "non_voter", "tls_cert_file",
            "tls_key_file", "tls_ca_file", "leader_ca_cert_file", "leader_client_cert_file", "leader_client_key_file",
        ])
        guard let path = try object.string("path"), !path.isEmpty, let name = try object.string("node_id"),
            let cluster = try object.string("cluster_addr"), cluster.contains(":")
        else {
            throw CofferError.invalid(
                "raft storage needs 'storage.path' (a directory), 'storage.node_id' and 'storage.cluster_addr' (host:port)"
            )
        }
        var raft = RaftConfiguration(
            path: path,
            nodeName: name,
            clusterAddress: cluster,
            apiAddress: try object.string("api_addr") ?? ""
        )
        if let joins = object.fields["retry_join"] {
            guard let list = joins.arrayValue?.compactMap(\.stringValue), list.count == joins.arrayValue?.count else {
                throw CofferError.invalid("configuration key 'storage.retry_join' must be a list of API addresses")
            }
            raft.retryJoin = list
        }
        raft.tlsCertFile = try object.string("tls_cert_file")
        raft.tlsKeyFile = try object.string("tls_key_file")
        raft.tlsCAFile = try object.string("tls_ca_file")
        raft.leaderCACertFile = try object.string("leader_ca_cert_file")
        raft.leaderClientCertFile = try object.string("leader_client_cert_file")
        raft.leaderClientKeyFile = try object.string("leader_client_key_file")
        switch object.fields["non_voter"] {
        case nil: raft.nonVoter = true
        case .bool(let flag)?: raft.nonVoter = flag
        case let other?:
            throw CofferError.invalid("configuration key 'storage.non_voter' must be a boolean, not \(other.typeName)")
        }
        return raft
    }
}

private struct ConfigObject {
    let fields: [String: JSONValue]
    let path: String

    init(_ value: JSONValue, at path: String, allowBool: Bool = false) throws(CofferError) {
        guard case .object(let fields) = value else {
            let what = path.isEmpty ? "the configuration" : "configuration key '\(path)'"
            throw CofferError.invalid(
                "\(what) must be a JSON object\(allowBool ? " or a boolean" : ""), not \(value.typeName)"
            )
        }
        self.fields = fields
        self.path = path
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func allowOnly(_ known: [String]) throws(CofferError) {
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw CofferError.invalid(
                "unknown configuration key '\(name(unknown))'; known keys here: \(known.joined(separator: ", "))"
            )
        }
    }

    func string(_ key: String) throws(CofferError) -> String? {
        guard let value = fields[key] else { return nil }
        guard case .string(let text) = value else {
            throw CofferError.invalid("configuration key '\(name(key))' must be a string, not \(value.typeName)")
        }
        return text
    }

    func int(_ key: String) throws(CofferError) -> Int? {
        guard let value = fields[key] else { return nil }
        guard let number = value.intValue else {
            throw CofferError.invalid(
                "configuration key '\(name(key))' must be an integer, not \(value.typeName == "number" ? "a fraction or out of range" : value.typeName)"
            )
        }
        return number
    }
}
