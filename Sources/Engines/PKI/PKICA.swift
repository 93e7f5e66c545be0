import COpenSSL
package import CofferCore
package import CofferFramework

/// Certificate authorities: generating a root, an intermediate's key and request, signing an
/// intermediate, importing the signed one; and storing keys and issuers.
extension PKIBackend {
    static let caFields: [Field] = [
        .string("common_name"), .strings("alt_names"), .strings("ip_sans"), .strings("uri_sans"),
        .strings("other_sans"), .duration("ttl"), .string("format"), .string("private_key_format"),
        .string("key_type"), .int("key_bits", 0...16384), .int("max_path_length", -1...Int(Int32.max)),
        .bool("exclude_cn_from_sans"), .strings("ou"), .strings("organization"), .strings("country"),
        .strings("locality"), .strings("province"), .strings("street_address"), .strings("postal_code"),
        .string("serial_number"), .string("issuer_name"), .string("key_name"), .string("key_ref"),
        .duration("not_before_duration"), .int("signature_bits", 0...512), .bool("use_pss"),
        .string("csr"), .bool("use_csr_values"), .string("issuer_ref"),
    ]

    /// Stores a private key as `key/<id>` (seal-wrapped) and makes it the default key if there is none.
    func storeKey(_ key: PKey, name: String, _ storage: StorageView) throws(CofferError) -> String {
        if !name.isEmpty, try findKey(name, storage.reader) != nil {
            throw CofferError.invalid("key name already in use")
        }
        let id = Random.uuid()
        var der = try key.privateDER().withUnsafeBytes { Array($0) }
        defer { coffer_openssl_cleanse(&der, der.count) }
        try storage.putJSON(PKIStorage.keyPrefix + id, KeyEntry(id: id, name: name, der: der).json)
        var config = try storage.getJSON(PKIStorage.keysConfig)?.objectValue ?? [:]
        if (config["default"]?.stringValue ?? "").isEmpty {
            config["default"] = .string(id)
            try storage.putJSON(PKIStorage.keysConfig, .object(config))
        }
        return id
    }

    /// The stored key `ref` names ("default", an id or a name).
    func findKey(_ ref: String, _ storage: StorageReader) throws(CofferError) -> KeyEntry? {
        var id = ref
        if ref == "default" {
            id = try storage.getJSON(PKIStorage.keysConfig)?.objectValue?["default"]?.stringValue ?? ""
        }
        if !id.isEmpty, let json = try storage.getJSON(PKIStorage.keyPrefix + id) { return try KeyEntry(stored: json) }
        for candidate in try storage.list(PKIStorage.keyPrefix) {
            if let json = try storage.getJSON(PKIStorage.keyPrefix + candidate) {
                let entry = try KeyEntry(stored: json)
                if entry.name == ref { return entry }
            }
        }
        return nil
    }

    /// Stores a CA certificate as a new issuer and makes it the default when there is none (or the
    /// mount says the default follows the latest issuer). Callers hold `configLock`.
    func storeIssuer(_ entry: IssuerEntry, _ storage: StorageView) throws(CofferError) {
        if !entry.name.isEmpty, try allIssuers(storage.reader).contains(where: { $0.entry.name == entry.name }) {
            throw CofferError.invalid("issuer name already in use")
        }
        try storage.putJSON(PKIStorage.issuerPrefix + entry.id, entry.json)
        let (defaultID, follows) = try issuerConfig(storage.reader)
        if defaultID.isEmpty || follows {
            try storage.putJSON(
                PKIStorage.issuersConfig,
                ["default": .string(entry.id), "default_follows_latest_issuer": .bool(follows)]
            )
        }
        forgetIssuers()
    }

    static func subject(_ fields: FieldData, commonName: String?) -> [UInt8] {
        X509.name(
            commonName: commonName,
            organization: fields.strings("organization") ?? [],
            organizationalUnit: fields.strings("ou") ?? [],
            country: fields.strings("country") ?? [],
            province: fields.strings("province") ?? [],
            locality: fields.strings("locality") ?? [],
            streetAddress: fields.strings("street_address") ?? [],
            postalCode: fields.strings("postal_code") ?? [],
            serialNumber: fields.string("serial_number")
        )
    }

    /// The key a CA generation uses: a new one (`internal`, `exported`) or a stored one (`existing`).
    func caKey(_ request: BackendRequest) throws(CofferError) -> (key: PKey, keyID: String?, exported: Bool) {
        let kind = request.capture("exported")
        switch kind {
        case "internal", "exported":
            let type = request.fields.string("key_type") ?? "rsa"
            let bits = request.fields.int("key_bits") ?? 0
            try Self.checkKeyParameters(type: type, bits: bits, allowAny: false)
            return (try Self.generateKey(type: type, bits: bits), nil, kind == "exported")
        case "existing":
            guard let entry = try findKey(request.fields.string("key_ref") ?? "default", request.storage.reader) else {
                throw CofferError.invalid(
                    "unable to find PKI key for reference: \(request.fields.string("key_ref") ?? "default")"
                )
            }
            let key = try PKey.privateKey(bytes: entry.der)
            return (key, entry.id, false)
        case "kms":
            throw CofferError.invalid("managed (kms) keys are not supported by Coffer")
        default:
            throw CofferError.invalid(
                "the \"exported\" path parameter must be \"internal\", \"existing\", exported\" or \"kms\""
            )
        }
    }

    func exportedKey(_ key: PKey, _ fields: FieldData, into data: inout [String: JSONValue]) throws(CofferError) {
        let (format, pkcs8) = try Self.checkFormat(fields)
        var (bytes, label) = try key.exportPrivate(pkcs8: pkcs8, der: format == "der")
        defer { coffer_openssl_cleanse(&bytes, bytes.count) }
        data["private_key"] = .string(format == "der" ? Base64.encode(bytes) : PEM.encode(bytes, label: label))
        data["private_key_type"] = .string(key.vaultType)
    }

    /// `root/generate/<internal|exported|existing>`: a self-signed CA, stored as a new issuer.
    func generateRoot(_ request: BackendRequest) throws(CofferError) -> Response {
        let fields = request.fields
        let (format, _) = try Self.checkFormat(fields)
        var names = try Self.requestedNames(fields)
        guard names.commonName != nil else { throw CofferError.invalid("the common_name field is required") }
        let (key, existingKeyID, exported) = try caKey(request)
        if !(fields.bool("exclude_cn_from_sans") ?? false) { try names.addCommonName(first: true) }
        var warnings: [String] = []
        let (notBefore, notAfter) = try validity(
            request,
            asked: fields.seconds("ttl"),
            defaultTTL: 0,
            maxTTL: 0,
            backdate: fields.seconds("not_before_duration") ?? 30,
            issuer: nil,
            warnings: &warnings
        )
        return try configured { () throws(CofferError) -> Response in
            let issuerName = fields.string("issuer_name") ?? ""
            if !issuerName.isEmpty,
                try allIssuers(request.storage.reader).contains(where: { $0.entry.name == issuerName })
            {
                throw CofferError.invalid("issuer name already in use")
            }
            let keyID: String
            if let existingKeyID {
                keyID = existingKeyID
            } else {
                keyID = try storeKey(key, name: fields.string("key_name") ?? "", request.storage)
            }
            let issuerID = Random.uuid()
            let serial = try newSerial(issuerID: issuerID, notAfter: notAfter, request.storage)
            let subject = Self.subject(fields, commonName: names.commonName)
            let urls = try urls(for: nil, request.storage.reader)
            var template = CertificateTemplate(
                serial: serial,
                subject: subject,
                notBefore: notBefore,
                notAfter: notAfter,
                publicKey: try key.subjectPublicKeyInfo()
            )
            template.isCA = true
            template.maxPathLength = fields.int("max_path_length") ?? -1
            template.keyUsage = KeyUsage.caBits
            template.names = names
            template.urls = urls
            let algorithm = SignatureAlgorithm.of(
                key,
                pss: fields.bool("use_pss") ?? false,
                bits: fields.int("signature_bits") ?? 0
            )
            let der = try X509.certificate(
                template,
                signer: Signer(key: key, name: subject, keyID: [], algorithm: algorithm)
            )
            try storeIssuer(
                IssuerEntry(id: issuerID, name: issuerName, keyID: keyID, certificate: der),
                request.storage
            )
            try storeCertificate(der, serial: serial, issuerID: issuerID, notAfter: notAfter, request.storage)
            var data: [String: JSONValue] = [
                "certificate": .string(Self.encode(der, format: format)),
                "issuing_ca": .string(Self.encode(der, format: format)), "expiration": .int(notAfter),
                "serial_number": .string(SerialText.colons(serial)), "issuer_id": .string(issuerID),
                "issuer_name": .string(issuerName), "key_id": .string(keyID),
                "key_name": .string(fields.string("key_name") ?? ""),
            ]
            if exported { try exportedKey(key, fields, into: &data) }
            if urls.isEmpty { warnings.append(Self.aiaWarning) }
            return Response(data: data, warnings: warnings)
        }
    }

    /// `intermediate/generate/<internal|exported|existing>`: a key and a request for a CA to sign.
    func generateIntermediate(_ request: BackendRequest) throws(CofferError) -> Response {
        let fields = request.fields
        let (format, _) = try Self.checkFormat(fields)
        var names = try Self.requestedNames(fields)
        guard names.commonName != nil else { throw CofferError.invalid("the common_name field is required") }
        if !(fields.bool("exclude_cn_from_sans") ?? false) { try names.addCommonName(first: true) }
        let (key, existingKeyID, exported) = try caKey(request)
        let csr = try X509.request(
            subject: Self.subject(fields, commonName: names.commonName),
            key: key,
            names: names
        )
        var keyID = existingKeyID ?? ""
        if existingKeyID == nil {
            keyID = try configured { () throws(CofferError) -> String in
                try storeKey(key, name: fields.string("key_name") ?? "", request.storage)
            }
        }
        var data: [String: JSONValue] = [
            "csr": .string(Self.encode(csr, format: format, label: "CERTIFICATE REQUEST")), "key_id": .string(keyID),
        ]
        if exported { try exportedKey(key, fields, into: &data) }
        var warnings: [String] = []
        let urls = try urls(for: nil, request.storage.reader)
        if urls.isEmpty {
            warnings.append(
                Self.aiaWarning
                    + " Since this certificate is an intermediate, it might be useful to regenerate this certificate after fixing this problem for the root mount."
            )
        }
        return Response(data: data, warnings: warnings)
    }

    /// `root/sign-intermediate` (and `issuer/<ref>/sign-intermediate`): signs a CA request.
    func signIntermediate(_ request: BackendRequest) throws(CofferError) -> Response {
        let fields = request.fields
        let (format, _) = try Self.checkFormat(fields)
        let issuer = try resolveIssuer(
            request.captures["issuer"] ?? fields.string("issuer_ref") ?? "default",
            request.storage.reader
        )
        guard let signer = issuer.signer else {
            throw CofferError.invalid(
                "issuer \(issuer.entry.id) has no key on this mount and cannot issue certificates"
            )
        }
        let parsed = try Self.csr(fields)
        let useCSR = fields.bool("use_csr_values") ?? false
        var names = try Self.requestedNames(fields)
        if names.commonName == nil || useCSR { names.commonName = parsed.commonName }
        if useCSR {
            names.takeSANs(of: parsed)
        }
        guard names.commonName != nil || useCSR else { throw CofferError.invalid("the common_name field is required") }
        if !(fields.bool("exclude_cn_from_sans") ?? false) { try names.addCommonName(first: true) }
        var warnings: [String] = []
        let (notBefore, notAfter) = try validity(
            request,
            asked: fields.seconds("ttl"),
            defaultTTL: 0,
            maxTTL: 0,
            backdate: fields.seconds("not_before_duration") ?? 30,
            issuer: issuer,
            warnings: &warnings
        )
        var pathLength = fields.int("max_path_length") ?? -1
        if issuer.parsed.pathLength >= 0 {
            let limit = issuer.parsed.pathLength - 1
            guard limit >= 0 else {
                throw CofferError.invalid("the issuer's path length constraint does not allow it to sign a CA")
            }
            pathLength = pathLength < 0 ? limit : min(pathLength, limit)
        }
        let serial = try newSerial(issuerID: issuer.entry.id, notAfter: notAfter, request.storage)
        let urls = try urls(for: issuer, request.storage.reader)
        var template = CertificateTemplate(
            serial: serial,
            subject: useCSR ? parsed.subject : Self.subject(fields, commonName: names.commonName),
            notBefore: notBefore,
            notAfter: notAfter,
            publicKey: parsed.publicKey
        )
        template.isCA = true
        template.maxPathLength = pathLength
        template.keyUsage = KeyUsage.caBits
        template.names = names
        template.urls = urls
        let der = try X509.certificate(template, signer: signer)
        try storeCertificate(der, serial: serial, issuerID: issuer.entry.id, notAfter: notAfter, request.storage)
        let chain = try chain(issuer, request.storage.reader)
        var data = try certificateData(
            der,
            serial: serial,
            notAfter: notAfter,
            chain: chain,
            key: nil,
            format: format,
            pkcs8: false
        )
        data["ca_chain"] = .array(
            [.string(Self.encode(der, format: format))]
                + chain.map { .string(Self.encode($0.entry.certificate, format: format)) }
        )
        data.removeValue(forKey: "not_before")
        return Response(data: data, warnings: warnings)
    }

    /// `intermediate/set-signed` (and `issuers/import/cert`): imports CA certificates as issuers,
    /// each tied to the stored key whose public key it carries.
    func importIssuers(_ request: BackendRequest) throws(CofferError) -> Response {
        let text = request.fields.string("certificate") ?? request.fields.string("pem_bundle") ?? ""
        guard let blocks = PEM.decodeAll(text), !blocks.isEmpty else {
            throw CofferError.invalid(
                "provided data for import was too short; perhaps a path was passed to the API rather than the contents of a PEM file"
            )
        }
        var parsedCerts: [(der: [UInt8], parsed: ParsedX509)] = []
        for (index, block) in blocks.enumerated() {
            guard block.label == "CERTIFICATE" else {
                throw CofferError.invalid(
                    "Error parsing issuer \(index): only certificates can be imported here, found \(block.label)"
                )
            }
            guard let parsed = ParsedX509.certificate(block.der) else {
                throw CofferError.invalid("Error parsing issuer \(index): the certificate could not be parsed")
            }
            guard parsed.isCA else {
                throw CofferError.invalid(
                    "Error parsing issuer \(index): Refusing to import non-CA certificate\n\(PEM.encode(block.der, label: "CERTIFICATE"))\n"
                )
            }
            parsedCerts.append((block.der, parsed))
        }
        return try configured { () throws(CofferError) -> Response in
            var keysBySPKI: [[UInt8]: String] = [:]
            for id in try request.storage.list(PKIStorage.keyPrefix) {
                guard let json = try request.storage.getJSON(PKIStorage.keyPrefix + id) else { continue }
                let entry = try KeyEntry(stored: json)
                let key = try PKey.privateKey(bytes: entry.der)
                keysBySPKI[try key.subjectPublicKeyInfo()] = entry.id
            }
            let existing = try allIssuers(request.storage.reader)
            var imported: [String] = []
            var already: [String] = []
            var mapping: [String: JSONValue] = [:]
            for (der, parsed) in parsedCerts {
                if let found = existing.first(where: { $0.entry.certificate == der }) {
                    already.append(found.entry.id)
                    mapping[found.entry.id] = .string(found.entry.keyID)
                    continue
                }
                let keyID = keysBySPKI[parsed.publicKey] ?? ""
                let entry = IssuerEntry(id: Random.uuid(), name: "", keyID: keyID, certificate: der)
                try request.storage.putJSON(PKIStorage.issuerPrefix + entry.id, entry.json)
                imported.append(entry.id)
                mapping[entry.id] = .string(keyID)
            }
            // The first imported issuer that has its key here becomes the default when there is none.
            let (defaultID, follows) = try issuerConfig(request.storage.reader)
            if defaultID.isEmpty || follows,
                let first = imported.first(where: { mapping[$0]?.stringValue?.isEmpty == false }) ?? imported.first
            {
                try request.storage.putJSON(
                    PKIStorage.issuersConfig,
                    ["default": .string(first), "default_follows_latest_issuer": .bool(follows)]
                )
            }
            forgetIssuers()
            func list(_ ids: [String]) -> JSONValue { ids.isEmpty ? .null : .array(ids.map { .string($0) }) }
            let urls = try urls(for: nil, request.storage.reader)
            return Response(
                data: [
                    "existing_issuers": list(already), "existing_keys": .null, "imported_issuers": list(imported),
                    "imported_keys": .null, "mapping": .object(mapping),
                ],
                warnings: urls.isEmpty ? [Self.aiaWarning] : []
            )
        }
    }
}
