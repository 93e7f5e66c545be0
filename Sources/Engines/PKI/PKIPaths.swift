package import CofferCore
package import CofferFramework

/// The PKI paths, as OpenBao's `builtin/logical/pki` declares them (the subset docs/pki.md lists).
extension PKIBackend {
    static let issueFields: [Field] = [
        .string("common_name"), .strings("alt_names"), .strings("ip_sans"), .strings("uri_sans"),
        .strings("other_sans"),
        .duration("ttl"), .string("format"), .string("private_key_format"), .bool("exclude_cn_from_sans"),
        .string("serial_number"), .string("issuer_ref"), .string("csr"), .strings("key_usage"),
        .strings("ext_key_usage"), .strings("ext_key_usage_oids"),
    ]

    static let roleFields: [Field] = {
        var fields: [Field] = []
        for (name, value) in PKIRole.defaults.sorted(by: { $0.key < $1.key }) {
            switch (name, value) {
            case ("ttl", _), ("max_ttl", _), ("not_before_duration", _): fields.append(.duration(name))
            case ("key_bits", _): fields.append(.int(name, 0...16384))
            case ("signature_bits", _): fields.append(.int(name, 0...512))
            case (_, .bool): fields.append(.bool(name))
            case (_, .array): fields.append(.strings(name))
            default: fields.append(.string(name))
            }
        }
        return fields
    }()

    static let issuerFields: [Field] = [
        .string("issuer_name"), .string("leaf_not_after_behavior"), .string("usage"), .strings("issuing_certificates"),
        .strings("crl_distribution_points"), .strings("ocsp_servers"), .strings("manual_chain"),
        .string("revocation_signature_algorithm"), .bool("enable_aia_url_templating"),
    ]

    static let urlFields: [Field] = [
        .strings("issuing_certificates"), .strings("crl_distribution_points"), .strings("ocsp_servers"),
        .strings("delta_crl_distribution_points"), .bool("enable_templating"),
    ]

    static let crlFields: [Field] = [
        .string("expiry"), .bool("disable"), .bool("ocsp_disable"), .string("ocsp_expiry"), .bool("auto_rebuild"),
        .string("auto_rebuild_grace_period"), .bool("enable_delta"), .string("delta_rebuild_interval"),
        .bool("allow_expired_cert_revocation"),
    ]

    static let tidyFields: [Field] = [
        .bool("tidy_cert_store"), .bool("tidy_revoked_certs"), .bool("tidy_revoked_cert_issuer_associations"),
        .bool("tidy_expired_issuers"), .bool("tidy_invalid_certs"), .bool("tidy_move_legacy_ca_bundle"),
        .bool("tidy_acme"), .duration("safety_buffer"), .int("page_size", 1...100_000), .duration("pause_duration"),
        .duration("issuer_safety_buffer"),
    ]

    package static let paths = PathTable<PKIBackend>([
        Path("roles/", list: PKIBackend.listRoles),
        Path(
            "roles/{role}",
            fields: roleFields,
            read: PKIBackend.readRole,
            write: PKIBackend.writeRole,
            patch: PKIBackend.writeRole,
            delete: PKIBackend.deleteRole
        ),
        Path("issue/{role}", fields: issueFields, write: PKIBackend.issue),
        Path("sign/{role}", fields: issueFields, write: PKIBackend.sign),
        Path("sign-verbatim/{role?}", fields: issueFields, write: PKIBackend.signVerbatim),
        Path("issuer/{issuer}/issue/{role}", fields: issueFields, write: PKIBackend.issue),
        Path("issuer/{issuer}/sign/{role}", fields: issueFields, write: PKIBackend.sign),
        Path("issuer/{issuer}/sign-verbatim/{role?}", fields: issueFields, write: PKIBackend.signVerbatim),
        Path("issuer/{issuer}/sign-intermediate", fields: caFields, write: PKIBackend.signIntermediate),
        Path("issuer/{issuer}/pem", read: PKIBackend.readCA),
        Path("issuer/{issuer}/der", read: PKIBackend.readCA),
        Path("issuer/{issuer}/json", read: PKIBackend.readCA),
        Path("issuer/{issuer}/crl", read: PKIBackend.readCRL),
        Path("issuer/{issuer}/crl/pem", read: PKIBackend.readCRL),
        Path("issuer/{issuer}/crl/der", read: PKIBackend.readCRL),
        Path(
            "issuer/{issuer}",
            fields: issuerFields,
            read: PKIBackend.readIssuer,
            write: PKIBackend.writeIssuer,
            patch: PKIBackend.writeIssuer,
            delete: PKIBackend.deleteIssuer
        ),
        Path("issuers/", list: PKIBackend.listIssuers),
        Path("issuers/import/{kind}", fields: [.string("pem_bundle")], write: PKIBackend.importIssuers),
        Path("keys/", list: PKIBackend.listKeys),
        Path(
            "key/{key}",
            fields: [.string("key_name")],
            read: PKIBackend.readKey,
            write: PKIBackend.renameKey,
            delete: PKIBackend.deleteKey
        ),
        Path("root", delete: PKIBackend.deleteAll),
        Path("root/generate/{exported}", fields: caFields, write: PKIBackend.generateRoot),
        Path("root/sign-intermediate", fields: caFields, write: PKIBackend.signIntermediate),
        Path("intermediate/generate/{exported}", fields: caFields, write: PKIBackend.generateIntermediate),
        Path("intermediate/set-signed", fields: [.string("certificate")], write: PKIBackend.importIssuers),
        Path("config/urls", fields: urlFields, read: PKIBackend.readURLs, write: PKIBackend.writeURLs),
        Path("config/crl", fields: crlFields, read: PKIBackend.readCRLConfig, write: PKIBackend.writeCRLConfig),
        Path(
            "config/issuers",
            fields: [.string("default"), .bool("default_follows_latest_issuer")],
            read: PKIBackend.readIssuersConfig,
            write: PKIBackend.writeIssuersConfig
        ),
        Path(
            "config/keys",
            fields: [.string("default")],
            read: PKIBackend.readKeysConfig,
            write: PKIBackend.writeKeysConfig
        ),
        Path("config/cluster", read: PKIBackend.readClusterConfig),
        Path(
            "revoke",
            fields: [.string("serial_number"), .string("certificate")],
            write: PKIBackend.revokeRequest
        ),
        Path(
            "revoke-with-key",
            fields: [.string("serial_number"), .string("certificate"), .string("private_key")],
            write: PKIBackend.revokeRequest
        ),
        Path("cert/{serial}/raw/pem", read: PKIBackend.readCertificate),
        Path("cert/{serial}/raw", read: PKIBackend.readCertificate),
        Path("cert/{serial}", read: PKIBackend.readCertificate),
        Path("certs/revoked/", list: PKIBackend.listCertificates),
        Path("certs/", list: PKIBackend.listCertificates),
        Path("ca", read: PKIBackend.readCA),
        Path("ca/pem", read: PKIBackend.readCA),
        Path("ca_chain", read: PKIBackend.readCA),
        Path("crl", read: PKIBackend.readCRL),
        Path("crl/pem", read: PKIBackend.readCRL),
        Path("crl/rotate", read: PKIBackend.rotateCRL),
        Path("tidy", fields: tidyFields, write: PKIBackend.tidy),
        Path("tidy-status", read: PKIBackend.tidyStatus),
    ])

    // MARK: Roles

    func listRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        let names = try request.storage.list(PKIStorage.rolePrefix)
        guard !names.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(names.sorted().map { .string($0) })])
    }

    func readRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try loadRole(request.capture("role"), request.storage.reader) else { return .notFound }
        return Response(data: role.fields)
    }

    /// POST writes the role from OpenBao's defaults and the given fields; PATCH changes only the
    /// given fields of the stored role. Answers 200 with the role, as OpenBao.
    func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = request.capture("role")
        var fields = PKIRole.defaults
        if request.operation == .patch {
            guard let existing = try loadRole(name, request.storage.reader) else { return .notFound }
            fields.merge(existing.fields) { _, stored in stored }
        }
        for field in Self.roleFields where request.fields.has(field.name) {
            let value: JSONValue
            switch field.kind {
            case .duration: value = .int(request.fields.seconds(field.name) ?? 0)
            case .int: value = .int(request.fields.int(field.name) ?? 0)
            case .bool: value = .bool(request.fields.bool(field.name) ?? false)
            case .stringList: value = .array((request.fields.strings(field.name) ?? []).map { .string($0) })
            default: value = .string(request.fields.string(field.name) ?? "")
            }
            if PKIRole.unsupported.contains(field.name), value != PKIRole.defaults[field.name] {
                throw CofferError.invalid("\(field.name) is not supported by Coffer yet; leave it at its default")
            }
            fields[field.name] = value
        }
        let role = PKIRole(fields: fields)
        try Self.checkKeyParameters(type: role.keyType, bits: role.int("key_bits"), allowAny: true)
        if role.keyType == "rsa" || role.keyType == "ec" { fields["key_bits"] = .int(role.keyBits) }
        _ = try KeyUsage.bits(role.strings("key_usage"))
        for usage in role.strings("ext_key_usage") where !usage.isEmpty { _ = try ExtKeyUsage.oid(named: usage) }
        for oid in role.strings("ext_key_usage_oids") where DER.oid(oid) == nil {
            throw CofferError.invalid("ext_key_usage_oids: \"\(oid)\" is not an OID")
        }
        if role.int("max_ttl") > 0, role.int("ttl") > role.int("max_ttl") {
            throw CofferError.invalid("\"ttl\" value must be less than \"max_ttl\" value")
        }
        if role.bool("generate_lease") && role.bool("no_store") {
            throw CofferError.invalid("\"generate_lease\" and \"no_store\" cannot both be true")
        }
        if role.bool("use_pss") && role.keyType != "rsa" && role.keyType != "any" {
            throw CofferError.invalid("use_pss applies to RSA keys only")
        }
        for cidr in role.strings("allowed_ip_sans_cidr") {
            guard let address = cidr.split(separator: "/").first, Self.ipAddress(String(address)) != nil else {
                throw CofferError.invalid("allowed_ip_sans_cidr: \"\(cidr)\" is not a CIDR block")
            }
        }
        for value in role.strings("cn_validations") where !["email", "hostname", "disabled"].contains(value) {
            throw CofferError.invalid("cn_validations: unknown value \"\(value)\"; use email, hostname or disabled")
        }
        try request.storage.putJSON(PKIStorage.rolePrefix + name, .object(fields))
        return Response(data: fields)
    }

    func deleteRole(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete(PKIStorage.rolePrefix + request.capture("role"))
        return .noContent
    }

    // MARK: Issuers and keys

    func issuerData(_ issuer: LoadedIssuer, _ storage: StorageReader) throws(CofferError) -> [String: JSONValue] {
        let e = issuer.entry
        return [
            "issuer_id": .string(e.id), "issuer_name": .string(e.name), "key_id": .string(e.keyID),
            "certificate": .string(issuer.pem + "\n"),
            "ca_chain": .array(try chain(issuer, storage).map { .string($0.pem + "\n") }),
            "leaf_not_after_behavior": .string(e.leafNotAfterBehavior), "manual_chain": .null,
            "usage": .string(e.usage), "revoked": .bool(e.revoked),
            "revocation_signature_algorithm": .string(issuer.key.map { SignatureAlgorithm.of($0).goName } ?? ""),
            "issuing_certificates": .array(e.issuingCertificates.map { .string($0) }),
            "crl_distribution_points": .array(e.crlDistributionPoints.map { .string($0) }),
            "delta_crl_distribution_points": [], "ocsp_servers": .array(e.ocspServers.map { .string($0) }),
        ]
    }

    func listIssuers(_ request: BackendRequest) throws(CofferError) -> Response {
        let all = try allIssuers(request.storage.reader)
        guard !all.isEmpty else { return .notFound }
        let defaultID = try issuerConfig(request.storage.reader).defaultID
        var info: [String: JSONValue] = [:]
        for issuer in all {
            info[issuer.entry.id] = [
                "is_default": .bool(issuer.entry.id == defaultID), "issuer_name": .string(issuer.entry.name),
                "key_id": .string(issuer.entry.keyID),
                "serial_number": .string(SerialText.colons(issuer.parsed.serial)),
            ]
        }
        return Response(data: [
            "keys": .array(all.map(\.entry.id).sorted().map { .string($0) }), "key_info": .object(info),
        ])
    }

    func readIssuer(_ request: BackendRequest) throws(CofferError) -> Response {
        let issuer = try resolveIssuer(request.capture("issuer"), request.storage.reader)
        return Response(data: try issuerData(issuer, request.storage.reader))
    }

    /// POST and PATCH `issuer/<ref>`: name, leaf NotAfter behaviour, usage, per-issuer URLs.
    func writeIssuer(_ request: BackendRequest) throws(CofferError) -> Response {
        try configured { () throws(CofferError) -> Response in
            let issuer = try resolveIssuer(request.capture("issuer"), request.storage.reader)
            var entry = issuer.entry
            let f = request.fields
            if let name = f.string("issuer_name"), name != entry.name {
                if !name.isEmpty, try allIssuers(request.storage.reader).contains(where: { $0.entry.name == name }) {
                    throw CofferError.invalid("issuer name already in use")
                }
                entry.name = name
            }
            if let behavior = f.string("leaf_not_after_behavior") {
                guard ["err", "truncate", "permit"].contains(behavior) else {
                    throw CofferError.invalid(
                        "Unknown value for field `leaf_not_after_behavior`. Possible values are `err`, `truncate`, and `permit`."
                    )
                }
                entry.leafNotAfterBehavior = behavior
            }
            if let usage = f.string("usage") {
                let known = ["read-only", "issuing-certificates", "crl-signing", "ocsp-signing"]
                var uses = Set(["read-only"])
                for use in usage.split(separator: ",").map({ String($0).trimmingSpaces() }) where !use.isEmpty {
                    guard known.contains(use) else { throw CofferError.invalid("unknown usage: \(use)") }
                    uses.insert(use)
                }
                entry.usage = uses.sorted().joined(separator: ",")
            }
            if let urls = f.strings("issuing_certificates") { entry.issuingCertificates = urls }
            if let urls = f.strings("crl_distribution_points") { entry.crlDistributionPoints = urls }
            if let urls = f.strings("ocsp_servers") { entry.ocspServers = urls }
            if let chain = f.strings("manual_chain"), !chain.isEmpty {
                throw CofferError.invalid("manual_chain is not supported by Coffer yet")
            }
            try request.storage.putJSON(PKIStorage.issuerPrefix + entry.id, entry.json)
            forgetIssuers()
            guard let updated = try loadIssuer(entry.id, request.storage.reader) else { return .notFound }
            return Response(data: try issuerData(updated, request.storage.reader))
        }
    }

    func deleteIssuer(_ request: BackendRequest) throws(CofferError) -> Response {
        try configured { () throws(CofferError) -> Response in
            let ref = request.capture("issuer")
            let issuer: LoadedIssuer
            do { issuer = try resolveIssuer(ref, request.storage.reader) } catch { return .noContent }
            try request.storage.delete(PKIStorage.issuerPrefix + issuer.entry.id)
            forgetIssuers()
            crls.withLock { _ = $0.removeValue(forKey: issuer.entry.id) }
            var warnings: [String] = []
            let (defaultID, follows) = try issuerConfig(request.storage.reader)
            if defaultID == issuer.entry.id {
                try request.storage.putJSON(
                    PKIStorage.issuersConfig,
                    ["default": "", "default_follows_latest_issuer": .bool(follows)]
                )
                warnings.append(
                    "Deleted issuer \(issuer.entry.id) (via issuer_ref \(ref)); this was configured as the default issuer. Operations without an explicit issuer will not work until a new default is configured."
                )
            }
            // Roles left naming an issuer that is gone.
            var names: Set<String> = [issuer.entry.id]
            if !issuer.entry.name.isEmpty { names.insert(issuer.entry.name) }
            if defaultID == issuer.entry.id { names.insert("default") }
            var referencing = 0
            for role in try request.storage.list(PKIStorage.rolePrefix) {
                if let found = try loadRole(role, request.storage.reader), names.contains(found.string("issuer_ref")) {
                    referencing += 1
                }
            }
            if referencing > 0 { warnings.append("\(referencing) roles reference \(ref)") }
            return warnings.isEmpty ? .noContent : Response(data: nil, warnings: warnings)
        }
    }

    func listKeys(_ request: BackendRequest) throws(CofferError) -> Response {
        let ids = try request.storage.list(PKIStorage.keyPrefix)
        guard !ids.isEmpty else { return .notFound }
        let defaultID = try request.storage.getJSON(PKIStorage.keysConfig)?.objectValue?["default"]?.stringValue ?? ""
        var info: [String: JSONValue] = [:]
        for id in ids {
            guard let json = try request.storage.getJSON(PKIStorage.keyPrefix + id) else { continue }
            let entry = try KeyEntry(stored: json)
            info[id] = ["is_default": .bool(id == defaultID), "key_name": .string(entry.name)]
        }
        return Response(data: ["keys": .array(ids.sorted().map { .string($0) }), "key_info": .object(info)])
    }

    func readKey(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let entry = try findKey(request.capture("key"), request.storage.reader) else { return .notFound }
        let key = try PKey.privateKey(bytes: entry.der)
        return Response(data: [
            "key_id": .string(entry.id), "key_name": .string(entry.name), "key_type": .string(key.vaultType),
            "subject_key_id": .string(SerialText.colons(try X509.keyIdentifier(try key.subjectPublicKeyInfo()))),
        ])
    }

    func renameKey(_ request: BackendRequest) throws(CofferError) -> Response {
        try configured { () throws(CofferError) -> Response in
            guard var entry = try findKey(request.capture("key"), request.storage.reader) else { return .notFound }
            let name = request.fields.string("key_name") ?? ""
            if !name.isEmpty, name != entry.name, try findKey(name, request.storage.reader) != nil {
                throw CofferError.invalid("key name already in use")
            }
            entry.name = name
            try request.storage.putJSON(PKIStorage.keyPrefix + entry.id, entry.json)
            return try readKey(request)
        }
    }

    func deleteKey(_ request: BackendRequest) throws(CofferError) -> Response {
        try configured { () throws(CofferError) -> Response in
            guard let entry = try findKey(request.capture("key"), request.storage.reader) else { return .noContent }
            if let user = try allIssuers(request.storage.reader).first(where: { $0.entry.keyID == entry.id }) {
                throw CofferError.invalid("unable to delete key: it is in use by issuer \(user.entry.id)")
            }
            try request.storage.delete(PKIStorage.keyPrefix + entry.id)
            forgetIssuers()
            return .noContent
        }
    }

    /// `DELETE root`: removes every issuer and key of the mount (certificates and revocations stay).
    func deleteAll(_ request: BackendRequest) throws(CofferError) -> Response {
        try configured { () throws(CofferError) -> Response in
            var operations: [StorageOperation] = []
            for id in try request.storage.list(PKIStorage.issuerPrefix) {
                operations.append(.delete(key: PKIStorage.issuerPrefix + id))
            }
            for id in try request.storage.list(PKIStorage.keyPrefix) {
                operations.append(.delete(key: PKIStorage.keyPrefix + id))
            }
            operations += [.delete(key: PKIStorage.issuersConfig), .delete(key: PKIStorage.keysConfig)]
            try request.storage.batch(operations)
            forgetIssuers()
            crls.withLock { $0.removeAll() }
            return .noContent
        }
    }

    // MARK: Configuration

    func readURLs(_ request: BackendRequest) throws(CofferError) -> Response {
        let o = try request.storage.getJSON(PKIStorage.urlsConfig)?.objectValue ?? [:]
        var data: [String: JSONValue] = [:]
        for key in ["issuing_certificates", "crl_distribution_points", "ocsp_servers", "delta_crl_distribution_points"]
        {
            data[key] = o[key] ?? []
        }
        data["enable_templating"] = o["enable_templating"] ?? false
        return Response(data: data)
    }

    func writeURLs(_ request: BackendRequest) throws(CofferError) -> Response {
        var o = try request.storage.getJSON(PKIStorage.urlsConfig)?.objectValue ?? [:]
        for key in ["issuing_certificates", "crl_distribution_points", "ocsp_servers", "delta_crl_distribution_points"]
        {
            guard let urls = request.fields.strings(key) else { continue }
            for url in urls where !(url.hasPrefix("http://") || url.hasPrefix("https://") || url.hasPrefix("ldap://")) {
                throw CofferError.invalid("invalid URL found in \(key): \(url)")
            }
            o[key] = .array(urls.map { .string($0) })
        }
        if request.fields.bool("enable_templating") == true {
            throw CofferError.invalid("enable_templating is not supported by Coffer yet")
        }
        try request.storage.putJSON(PKIStorage.urlsConfig, .object(o))
        return try readURLs(request)
    }

    static let crlDefaults: [String: JSONValue] = [
        "allow_expired_cert_revocation": false, "auto_rebuild": false, "auto_rebuild_grace_period": "12h",
        "delta_rebuild_interval": "15m", "disable": false, "enable_delta": false, "expiry": "72h",
        "ocsp_disable": false, "ocsp_expiry": "12h",
    ]

    func readCRLConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        var data = Self.crlDefaults
        data.merge(try request.storage.getJSON(PKIStorage.crlConfig)?.objectValue ?? [:]) { _, stored in stored }
        return Response(data: data)
    }

    func writeCRLConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        var o = try request.storage.getJSON(PKIStorage.crlConfig)?.objectValue ?? [:]
        let f = request.fields
        if let expiry = f.string("expiry") {
            guard let seconds = VaultDuration.parse(expiry), seconds >= 60 else {
                throw CofferError.invalid("given expiry could not be decoded or is under a minute: \(expiry)")
            }
            o["expiry"] = .string(expiry)
        }
        if let disable = f.bool("disable") { o["disable"] = .bool(disable) }
        for name in ["enable_delta", "auto_rebuild", "allow_expired_cert_revocation"] where f.bool(name) == true {
            throw CofferError.invalid("\(name) is not supported by Coffer yet")
        }
        try request.storage.putJSON(PKIStorage.crlConfig, .object(o))
        crls.withLock { states in for id in states.keys { states[id]!.stale = true } }
        return try readCRLConfig(request)
    }

    func readIssuersConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let (id, follows) = try issuerConfig(request.storage.reader)
        return Response(data: ["default": .string(id), "default_follows_latest_issuer": .bool(follows)])
    }

    func writeIssuersConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        try configured { () throws(CofferError) -> Response in
            var (id, follows) = try issuerConfig(request.storage.reader)
            if let ref = request.fields.string("default") {
                id = ref.isEmpty ? "" : try resolveIssuer(ref, request.storage.reader).entry.id
            }
            if let value = request.fields.bool("default_follows_latest_issuer") { follows = value }
            try request.storage.putJSON(
                PKIStorage.issuersConfig,
                ["default": .string(id), "default_follows_latest_issuer": .bool(follows)]
            )
            return Response(data: ["default": .string(id), "default_follows_latest_issuer": .bool(follows)])
        }
    }

    func readKeysConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let id = try request.storage.getJSON(PKIStorage.keysConfig)?.objectValue?["default"]?.stringValue ?? ""
        return Response(data: ["default": .string(id)])
    }

    func writeKeysConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        try configured { () throws(CofferError) -> Response in
            guard let ref = request.fields.string("default"), let entry = try findKey(ref, request.storage.reader)
            else {
                throw CofferError.invalid(
                    "unable to find PKI key for reference: \(request.fields.string("default") ?? "")"
                )
            }
            try request.storage.putJSON(PKIStorage.keysConfig, ["default": .string(entry.id)])
            return Response(data: ["default": .string(entry.id)])
        }
    }

    func readClusterConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: ["aia_path": "", "path": ""])
    }
}
