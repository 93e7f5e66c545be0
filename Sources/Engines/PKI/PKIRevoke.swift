package import CofferCore
package import CofferFramework

/// Revocation, the CRL, certificate lookups and tidy.
extension PKIBackend {
    /// The outcome of a revocation: when, or why nothing was added to a CRL.
    enum Revocation {
        case revoked(Timestamp)
        /// Expired already: OpenBao's 200 with no data and a warning.
        case expired
    }

    /// Revokes `serial`: records it and adds it to its issuer's CRL (signed again on the next read).
    /// Idempotent: a second revocation answers the first one's time. A serial this mount made
    /// but never stored (`no_store`) is revoked from what its serial carries.
    func revoke(
        serial: [UInt8],
        storage: StorageView,
        now: Timestamp,
        byLease: Bool = false
    ) throws(CofferError)
        -> Revocation
    {
        let colons = SerialText.colons(serial)
        let name = PKIStorage.name(serial)
        var record: CertRecord?
        if let json = try storage.getJSON(PKIStorage.certPrefix + name) { record = try CertRecord(stored: json) }
        if let at = record?.revokedAt { return .revoked(at) }
        if let json = try storage.getJSON(PKIStorage.revokedPrefix + name) {
            return .revoked(try RevokedRecord(stored: json).revokedAt)
        }
        let issuerID: String
        let notAfter: Int64
        if let record {
            if let issuer = try allIssuers(storage.reader).first(where: { $0.entry.certificate == record.certificate })
            {
                throw CofferError.invalid("adding issuer (id: \(issuer.entry.id)) to its own CRL is not allowed")
            }
            issuerID = record.issuerID
            notAfter = record.notAfter
        } else if let origin = try serialOrigin(serial, storage) {
            (issuerID, notAfter) = origin
        } else {
            if byLease { return .expired }
            throw CofferError.invalid("certificate with serial \(colons) not found.")
        }
        if notAfter < now.seconds {
            // A lease outliving its certificate by a second has nothing left to revoke.
            return .expired
        }
        let revoked = RevokedRecord(serial: serial, issuerID: issuerID, revokedAt: now, notAfter: notAfter)
        var operations: [StorageOperation] = [
            .put(key: PKIStorage.revokedPrefix + name, value: revoked.json.serialized())
        ]
        if var record {
            record.revokedAt = now
            operations.append(.put(key: PKIStorage.certPrefix + name, value: record.json.serialized()))
        }
        try storage.batch(operations)  // the change feed tells the CRLs (invalidate)
        return .revoked(now)
    }

    func revokeRequest(_ request: BackendRequest) throws(CofferError) -> Response {
        let fields = request.fields
        var serial: [UInt8]
        var certificate: (der: [UInt8], parsed: ParsedX509)?
        if let text = fields.string("certificate"), !text.isEmpty {
            guard let block = PEM.decodeAll(text)?.first, let parsed = ParsedX509.certificate(block.der) else {
                throw CofferError.invalid("certificate could not be parsed")
            }
            if fields.string("serial_number").map({ !$0.isEmpty }) ?? false {
                throw CofferError.invalid("must provide either the certificate or the serial to revoke; not both")
            }
            certificate = (block.der, parsed)
            serial = parsed.serial
        } else {
            guard let text = fields.string("serial_number"), !text.isEmpty else {
                throw CofferError.invalid("The serial number or certificate to revoke must be provided.")
            }
            guard let parsed = SerialText.serial(text) else {
                throw CofferError.invalid("certificate with serial \(text) not found.")
            }
            serial = parsed
        }
        if request.path == "revoke-with-key" {
            try checkPrivateKey(
                fields.string("private_key") ?? "",
                matches: certificate?.parsed,
                serial: serial,
                request.storage
            )
        }
        if let certificate {
            // A certificate handed in must carry the signature of one of this mount's issuers: a
            // stranger's (or a forgery naming our CA) is not ours to put on a CRL.
            guard
                let issuer = try allIssuers(request.storage.reader).first(where: {
                    $0.parsed.subject == certificate.parsed.issuer
                        && ParsedX509.isSigned(certificate.der, by: $0.entry.certificate)
                })
            else { throw Self.notOurs }
            if try request.storage.getJSON(PKIStorage.certPrefix + PKIStorage.name(serial)) == nil,
                try serialOrigin(serial, request.storage) == nil
            {
                // Issued by this CA elsewhere (another mount holding its key): record it from the
                // certificate itself.
                try storeCertificate(
                    certificate.der,
                    serial: serial,
                    issuerID: issuer.entry.id,
                    notAfter: certificate.parsed.notAfter,
                    request.storage
                )
            }
        }
        switch try revoke(serial: serial, storage: request.storage, now: request.now) {
        case .revoked(let at):
            return Response(data: [
                "revocation_time": .int(at.seconds), "revocation_time_rfc3339": .string(at.rfc3339),
                "state": "revoked",
            ])
        case .expired:
            var response = Response(
                data: nil,
                warnings: [
                    "certificate with serial \(SerialText.colons(serial)) already expired; refusing to add to CRL. Enable 'AllowExpiredCertRevocation' to allow revoking expired certificates."
                ]
            )
            response.outcome = .ok
            return response
        }
    }

    static let notOurs = CofferError(
        .internal,
        multierror(
            "unable to verify signature on presented cert from any present issuer in this mount; certificates from previous CAs will need to have their issuing CA and key re-imported if revocation is necessary"
        )
    )

    /// `revoke-with-key`: the private key must be the certificate's.
    func checkPrivateKey(
        _ text: String,
        matches certificate: ParsedX509?,
        serial: [UInt8],
        _ storage: StorageView
    ) throws(CofferError) {
        var publicKey = certificate?.publicKey
        if publicKey == nil, let json = try storage.getJSON(PKIStorage.certPrefix + PKIStorage.name(serial)) {
            publicKey = ParsedX509.certificate(try CertRecord(stored: json).certificate)?.publicKey
        }
        guard let publicKey else {
            throw CofferError.invalid("certificate with serial \(SerialText.colons(serial)) not found.")
        }
        guard var block = PEM.decodeAll(text)?.first else {
            throw CofferError.invalid("private_key could not be parsed")
        }
        defer { block.der.withUnsafeMutableBytes { coffer_openssl_cleanse_bytes($0) } }
        guard let key = try? PKey.privateKey(bytes: block.der) else {
            throw CofferError.invalid("private_key could not be parsed")
        }
        guard try key.subjectPublicKeyInfo() == publicKey else {
            throw CofferError(.internal, multierror("provided private key does not match the certificate's public key"))
        }
    }

    // MARK: CRL

    /// The CRL `issuer` signs now: from memory when nothing changed and it is fresh (less than
    /// half its validity old), else signed again. The first call per issuer reads its revocations
    /// from storage.
    func crl(
        _ issuer: LoadedIssuer,
        _ storage: StorageReader,
        now: Timestamp,
        force: Bool = false
    ) throws(CofferError) -> [UInt8] {
        guard let signer = issuer.signer else {
            throw CofferError.invalid("issuer \(issuer.entry.id) has no key on this mount and cannot sign a CRL")
        }
        let config = try crlConfig(storage)
        let id = issuer.entry.id
        // Revocations since the last build: add each to its issuer's list (a list not loaded yet
        // reads them with the rest). One that is gone again (tidy) sends its issuer's list back to
        // storage.
        let pending = pendingRevocations.withLock { names in
            defer { names.removeAll() }
            return names
        }
        var added: [RevokedRecord] = []
        var removed = false
        for name in pending {
            if let json = try storage.getJSON(PKIStorage.revokedPrefix + name) {
                added.append(try RevokedRecord(stored: json))
            } else {
                removed = true
            }
        }
        crls.withLock { states in
            if removed { states.removeAll() }
            for record in added where states[record.issuerID] != nil {
                states[record.issuerID]!.add(
                    record.serial,
                    revokedAt: record.revokedAt.seconds,
                    notAfter: record.notAfter
                )
            }
        }
        if crls.withLock({ $0[id] == nil }) {
            var state = CRLState()
            for name in try storage.list(PKIStorage.revokedPrefix) {
                guard let json = try storage.getJSON(PKIStorage.revokedPrefix + name) else { continue }
                let record = try RevokedRecord(stored: json)
                if record.issuerID == id {
                    state.add(record.serial, revokedAt: record.revokedAt.seconds, notAfter: record.notAfter)
                }
            }
            crls.withLock { if $0[id] == nil { $0[id] = state } }
        }
        let result: Result<[UInt8], CofferError> = crls.withLock { states in
            do throws(CofferError) {
                var state = states[id]!
                state.dropExpired(now: now.seconds)
                if !force, !state.stale, let der = state.der, now.seconds < state.thisUpdate + config.expiry / 2 {
                    return .success(der)
                }
                let number = max(state.number + 1, UInt64(max(0, now.nanoseconds / 1_000_000)))
                let der = try X509.crl(
                    signer: signer,
                    thisUpdate: now.seconds,
                    nextUpdate: now.seconds + config.expiry,
                    number: number,
                    entries: config.disable ? [] : state.encoded
                )
                state.der = der
                state.thisUpdate = now.seconds
                state.number = number
                state.stale = false
                states[id] = state
                return .success(der)
            } catch { return .failure(error) }
        }
        return try result.get()
    }

    func crlConfig(_ storage: StorageReader) throws(CofferError) -> (expiry: Int64, disable: Bool) {
        let o = try setting(PKIStorage.crlConfig, storage)?.objectValue ?? [:]
        let expiry = o["expiry"]?.stringValue.flatMap { VaultDuration.parse($0) } ?? 72 * 3600
        return (max(expiry, 60), o["disable"]?.boolValue ?? false)
    }

    /// `crl`, `crl/pem`, `issuer/<ref>/crl[/pem|/der]`, `cert/crl`.
    func readCRL(_ request: BackendRequest) throws(CofferError) -> Response {
        let ref = request.captures["issuer"] ?? "default"
        let issuer: LoadedIssuer
        do {
            issuer = try resolveIssuer(ref, request.storage.reader)
        } catch {
            if ref == "default" { return .noContent }  // OpenBao: 204 before any CA exists
            throw error
        }
        let der = try crl(issuer, request.storage.reader, now: request.now)
        var pem: String { PEM.encode(der, label: "X509 CRL") }
        let path = request.path
        if path.hasPrefix("issuer/") {
            if path.hasSuffix("/der") { return .rawBody(der, contentType: "application/pkix-crl") }
            if path.hasSuffix("/pem") {
                return .rawBody(Array((pem + "\n").utf8), contentType: "application/x-pem-file")
            }
            return Response(data: ["crl": .string(pem)])
        }
        if path == "cert/crl" {
            return Response(data: ["certificate": .string(pem), "revocation_time": 0, "revocation_time_rfc3339": ""])
        }
        if path.hasSuffix("/pem") { return .rawBody(Array((pem + "\n").utf8), contentType: "application/x-pem-file") }
        return .rawBody(der, contentType: "application/pkix-crl")
    }

    /// `crl/rotate`: signs every issuer's CRL again now.
    func rotateCRL(_ request: BackendRequest) throws(CofferError) -> Response {
        for issuer in try allIssuers(request.storage.reader) where issuer.key != nil {
            _ = try crl(issuer, request.storage.reader, now: request.now, force: true)
        }
        return Response(data: ["success": true])
    }

    // MARK: Certificates

    /// `cert/<serial>` (JSON), `cert/<serial>/raw` (DER), `cert/<serial>/raw/pem`, and the special
    /// serials `ca`, `ca_chain`, `crl`.
    func readCertificate(_ request: BackendRequest) throws(CofferError) -> Response {
        let text = request.capture("serial")
        let raw = request.path.hasSuffix("/raw") || request.path.hasSuffix("/raw/pem")
        let pem = request.path.hasSuffix("/raw/pem")
        switch text {
        case "crl", "delta-crl":
            guard !raw else { break }
            return try readCRL(request)
        case "ca", "ca_chain":
            let issuer: LoadedIssuer
            do { issuer = try resolveIssuer("default", request.storage.reader) } catch { return .noContent }
            let chain = text == "ca" ? [issuer] : try chain(issuer, request.storage.reader)
            let body = chain.map(\.pem).joined(separator: "\n")
            if raw {
                return pem
                    ? .rawBody(Array((body + "\n").utf8), contentType: "application/pem-certificate-chain")
                    : .rawBody(issuer.entry.certificate, contentType: "application/pkix-cert")
            }
            return Response(data: ["certificate": .string(body), "revocation_time": 0, "revocation_time_rfc3339": ""])
        default: break
        }
        guard let serial = SerialText.serial(text),
            let json = try request.storage.getJSON(PKIStorage.certPrefix + PKIStorage.name(serial))
        else { return .notFound }
        let record = try CertRecord(stored: json)
        if raw {
            return pem
                ? .rawBody(
                    Array((PEM.encode(record.certificate, label: "CERTIFICATE") + "\n").utf8),
                    contentType: "application/pem-certificate-chain"
                )
                : .rawBody(record.certificate, contentType: "application/pkix-cert")
        }
        var data: [String: JSONValue] = [
            "certificate": .string(PEM.encode(record.certificate, label: "CERTIFICATE") + "\n"),
            "revocation_time": .int(record.revokedAt?.seconds ?? 0),
            "revocation_time_rfc3339": .string(record.revokedAt?.rfc3339 ?? ""),
        ]
        if record.revokedAt != nil { data["issuer_id"] = .string(record.issuerID) }
        return Response(data: data)
    }

    func listCertificates(_ request: BackendRequest) throws(CofferError) -> Response {
        let prefix = request.path.hasPrefix("certs/revoked") ? PKIStorage.revokedPrefix : PKIStorage.certPrefix
        let names = try request.storage.list(prefix)
        guard !names.isEmpty else { return .notFound }
        return Response(data: [
            "keys": .array(names.map { String($0.map { $0 == "-" ? ":" : $0 }) }.sorted().map { .string($0) })
        ])
    }

    /// `ca`, `ca/pem`, `ca_chain`, `issuer/<ref>/pem|der|json`.
    func readCA(_ request: BackendRequest) throws(CofferError) -> Response {
        let ref = request.captures["issuer"] ?? "default"
        let issuer: LoadedIssuer
        do {
            issuer = try resolveIssuer(ref, request.storage.reader)
        } catch {
            if ref == "default" { return .noContent }
            throw error
        }
        let path = request.path
        let chain = try chain(issuer, request.storage.reader)
        switch path {
        case "ca": return .rawBody(issuer.entry.certificate, contentType: "application/pkix-cert")
        case "ca/pem":
            return .rawBody(Array((issuer.pem + "\n").utf8), contentType: "application/pem-certificate-chain")
        case "ca_chain":
            return .rawBody(
                Array((chain.map(\.pem).joined(separator: "\n") + "\n").utf8),
                contentType: "application/pkix-cert"
            )
        default: break
        }
        if path.hasSuffix("/der") { return .rawBody(issuer.entry.certificate, contentType: "application/pkix-cert") }
        if path.hasSuffix("/pem") {
            return .rawBody(
                Array((chain.map(\.pem).joined(separator: "\n") + "\n").utf8),
                contentType: "application/pem-certificate-chain"
            )
        }
        return Response(data: [
            "ca_chain": .array(chain.map { .string($0.pem + "\n") }), "certificate": .string(issuer.pem + "\n"),
            "issuer_id": .string(issuer.entry.id), "issuer_name": .string(issuer.entry.name),
        ])
    }

    // MARK: Tidy

    /// `tidy`: deletes certificates (and revocations) that expired more than `safety_buffer` ago, in
    /// batches of at most `page_size` deletions per storage commit. Runs before it answers (OpenBao
    /// answers first and tidies in the background); the answer is OpenBao's 202.
    func tidy(_ request: BackendRequest) throws(CofferError) -> Response {
        let fields = request.fields
        let certStore = fields.bool("tidy_cert_store") ?? false
        let revokedCerts = fields.bool("tidy_revoked_certs") ?? false
        guard certStore || revokedCerts else {
            return Self.accepted(
                warning:
                    "Manual tidy requested but no tidy operations were set. Enable at least one tidy operation to be run (tidy_cert_store / tidy_revoked_certs / tidy_invalid_certs / tidy_revoked_cert_issuer_associations / tidy_expired_issuers / tidy_move_legacy_ca_bundle / tidy_acme)."
            )
        }
        let buffer = fields.seconds("safety_buffer") ?? 72 * 3600
        let pageSize = max(1, fields.int("page_size") ?? 1000)
        let started = request.now
        // Gone once now is past NotAfter + safety_buffer (OpenBao compares instants, not whole seconds).
        let now = request.now
        var deletedCerts = 0
        var deletedRevoked = 0
        let issuerCerts = Set(try allIssuers(request.storage.reader).map(\.entry.certificate))
        func sweep(_ prefix: String, expiry: (JSONValue) throws(CofferError) -> Int64?) throws(CofferError) -> Int {
            var deleted = 0
            var batch: [StorageOperation] = []
            for name in try request.storage.list(prefix) {
                guard let json = try request.storage.getJSON(prefix + name), let notAfter = try expiry(json),
                    Timestamp(seconds: notAfter).adding(seconds: buffer) < now
                else { continue }
                batch.append(.delete(key: prefix + name))
                if batch.count >= pageSize {
                    try request.storage.batch(batch)
                    deleted += batch.count
                    batch.removeAll(keepingCapacity: true)
                }
            }
            if !batch.isEmpty { try request.storage.batch(batch) }
            return deleted + batch.count
        }
        if certStore {
            deletedCerts = try sweep(PKIStorage.certPrefix) { (json) throws(CofferError) -> Int64? in
                let record = try CertRecord(stored: json)
                return issuerCerts.contains(record.certificate) ? nil : record.notAfter
            }
        }
        if revokedCerts {
            deletedRevoked = try sweep(PKIStorage.revokedPrefix) { (json) throws(CofferError) in
                try RevokedRecord(stored: json).notAfter
            }
            crls.withLock { $0.removeAll() }
        }
        let status: [String: JSONValue] = [
            "state": "Finished", "error": .null, "message": .null, "safety_buffer": .int(buffer),
            "tidy_cert_store": .bool(certStore), "tidy_revoked_certs": .bool(revokedCerts),
            "tidy_revoked_cert_issuer_associations": false, "tidy_expired_issuers": false, "tidy_invalid_certs": false,
            "tidy_move_legacy_ca_bundle": false, "tidy_acme": false, "pause_duration": "0s",
            "page_size": .int(pageSize),
            "cert_store_deleted_count": .int(deletedCerts), "revoked_cert_deleted_count": .int(deletedRevoked),
            "missing_issuer_cert_count": 0, "current_cert_store_count": .null, "current_revoked_cert_count": .null,
            "time_started": .string(started.rfc3339), "time_finished": .string(request.now.rfc3339),
            "last_auto_tidy_finished": .string(request.now.rfc3339),
            "revoked_safety_buffer": .int(buffer), "issuer_safety_buffer": 31_536_000,
            "acme_account_safety_buffer": 2_592_000, "acme_account_deleted_count": 0, "acme_account_revoked_count": 0,
            "acme_orders_deleted_count": 0, "total_acme_account_count": 0,
            "internal_backend_uuid": .string(request.mount.uuid),
        ]
        tidy.withLock { $0 = status }
        return Self.accepted(
            warning:
                "Tidy operation successfully started. Any information from the operation will be printed to OpenBao's server logs."
        )
    }

    /// OpenBao's answer to an operation it runs in the background: 202, an envelope with an empty
    /// `request_id` and one warning.
    static func accepted(warning: String) -> Response {
        .raw(
            [
                "request_id": "", "lease_id": "", "renewable": false, "lease_duration": 0, "data": .null,
                "wrap_info": .null, "warnings": [.string(warning)], "auth": .null,
            ],
            status: 202
        )
    }

    func tidyStatus(_ request: BackendRequest) throws(CofferError) -> Response {
        let status = tidy.withLock { $0 }
        return Response(data: status.isEmpty ? ["state": "Inactive"] : status)
    }
}
