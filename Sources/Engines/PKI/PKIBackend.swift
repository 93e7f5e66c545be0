import COpenSSL
package import CofferCore
package import CofferFramework
import Synchronization

/// The PKI engine: a certificate authority with Vault's paths and shapes (docs/pki.md).
///
/// Certificates, requests and CRLs are written by the engine itself (PKICertificate.swift) and
/// signed with OpenSSL; what users hand in is parsed by OpenSSL (cpki.h). Private keys are stored
/// seal-wrapped at `key/<id>`; parsed issuers (certificate and key) are cached, since every change
/// to one goes through this backend. The CRL of each issuer is kept in memory as its encoded
/// entries: a revocation appends one entry and marks it stale, and the next read signs it again
/// (no rebuild from storage, no signing on the revoke itself).
package final class PKIBackend: TableBackend {
    /// A CA the mount holds, parsed once.
    final class LoadedIssuer: Sendable {
        let entry: IssuerEntry
        let parsed: ParsedX509
        let key: PKey?
        /// The key identifier it signs as (its SKI, or one computed from its key).
        let keyID: [UInt8]
        let signer: Signer?
        let pem: String
        let canIssue: Bool

        init(entry: IssuerEntry, parsed: ParsedX509, key: PKey?) throws(CofferError) {
            self.entry = entry
            self.parsed = parsed
            self.key = key
            let keyID = parsed.subjectKeyID.isEmpty ? try X509.keyIdentifier(parsed.publicKey) : parsed.subjectKeyID
            self.keyID = keyID
            signer = key.map {
                Signer(key: $0, name: parsed.subject, keyID: keyID, algorithm: SignatureAlgorithm.of($0))
            }
            pem = PEM.encode(entry.certificate, label: "CERTIFICATE")
            canIssue = entry.allows("issuing-certificates")
        }
        var selfSigned: Bool { parsed.subject == parsed.issuer }
    }

    /// One issuer's revocation list, built from storage on first use and kept up to date after.
    struct CRLState {
        var revoked: [[UInt8]: (revokedAt: Int64, notAfter: Int64)] = [:]
        /// The DER entries of `revoked`, concatenated, in the order they were added.
        var encoded: [UInt8] = []
        var earliestExpiry = Int64.max
        var der: [UInt8]?
        var thisUpdate: Int64 = 0
        var number: UInt64 = 0
        var stale = true

        mutating func add(_ serial: [UInt8], revokedAt: Int64, notAfter: Int64) {
            guard revoked[serial] == nil else { return }
            revoked[serial] = (revokedAt, notAfter)
            encoded += X509.crlEntry(serial: serial, revokedAt: revokedAt)
            earliestExpiry = min(earliestExpiry, notAfter)
            stale = true
        }

        /// Drops the entries of certificates expired before `now` (they need no revocation any more).
        mutating func dropExpired(now: Int64) {
            guard earliestExpiry < now else { return }
            revoked = revoked.filter { $0.value.notAfter >= now }
            let ordered = revoked.sorted { $0.value.revokedAt < $1.value.revokedAt }
            encoded = Array(ordered.map { X509.crlEntry(serial: $0.key, revokedAt: $0.value.revokedAt) }.joined())
            earliestExpiry = revoked.values.map(\.notAfter).min() ?? .max
            stale = true
        }
    }

    let issuers = Mutex<(epoch: UInt64, byID: [String: LoadedIssuer], ids: [String]?)>((0, [:], nil))
    /// Roles and `config/*` entries as stored (`.null`: none), read on every issue; dropped per key
    /// when the change feed reports a write.
    let settings = Mutex<(epoch: UInt64, values: [String: JSONValue])>((0, [:]))
    let crls = Mutex<[String: CRLState]>([:])
    /// Serialises changes to the issuer and key set and their defaults (read-modify-write of config).
    let configLock = Mutex(())
    let serialKey = Mutex<HMACKey?>(nil)
    let tidy = Mutex<[String: JSONValue]>([:])
    /// Revocations written since the CRLs last looked (`revoked/` names), from the change feed.
    let pendingRevocations = Mutex<[String]>([])

    package init() {}

    /// Runs `body` holding `configLock`.
    func configured<R>(_ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        let result: Result<R, CofferError> = configLock.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    package var specialPaths: SpecialPaths {
        SpecialPaths(
            unauthenticated: [
                "cert/*", "ca", "ca/pem", "ca_chain", "crl", "crl/pem", "issuer/+/pem", "issuer/+/der", "issuer/+/json",
                "issuer/+/crl", "issuer/+/crl/pem", "issuer/+/crl/der",
            ],
            sealWrapStorage: [PKIStorage.keyPrefix + "*", PKIStorage.serialKey]
        )
    }

    package var secretTypes: [SecretType] {
        [
            SecretType(name: "pki") { [weak self] (request) throws(CofferError) in
                guard let self,
                    let serial = request.internalData["serial_number"]?.stringValue.flatMap(SerialText.serial)
                else { return }
                _ = try self.revoke(serial: serial, storage: request.storage, now: request.now, byLease: true)
            }
        ]
    }

    /// Called for every write under the mount, this backend's own included, while the writer may
    /// hold its locks: it only notes what changed. A revocation is read back by the next CRL build
    /// (one entry, not the whole list); the serial key is written once and never changes.
    package func invalidate(_ key: String) {
        if key.hasPrefix(PKIStorage.issuerPrefix) || key.hasPrefix(PKIStorage.keyPrefix) {
            forgetIssuers()
            crls.withLock { $0.removeAll() }
        } else if key.hasPrefix(PKIStorage.rolePrefix) || key.hasPrefix("config/") {
            settings.withLock {
                $0.epoch &+= 1
                $0.values.removeValue(forKey: key)
            }
        } else if key.hasPrefix(PKIStorage.revokedPrefix) {
            let name = String(key.dropFirst(PKIStorage.revokedPrefix.count))
            pendingRevocations.withLock { $0.append(name) }
        }
    }

    // MARK: Issuers and keys

    func loadIssuer(_ id: String, _ storage: StorageReader) throws(CofferError) -> LoadedIssuer? {
        let (epoch, cached) = issuers.withLock { ($0.epoch, $0.byID[id]) }
        if let cached { return cached }
        guard let json = try storage.getJSON(PKIStorage.issuerPrefix + id) else { return nil }
        let entry = try IssuerEntry(stored: json)
        guard let parsed = ParsedX509.certificate(entry.certificate) else {
            throw CofferError(.integrity, "the stored certificate of issuer \(id) does not parse")
        }
        var key: PKey?
        if !entry.keyID.isEmpty, let stored = try storage.getJSON(PKIStorage.keyPrefix + entry.keyID) {
            let keyEntry = try KeyEntry(stored: stored)
            key = try PKey.privateKey(bytes: keyEntry.der)
        }
        let loaded = try LoadedIssuer(entry: entry, parsed: parsed, key: key)
        issuers.withLock { if $0.epoch == epoch { $0.byID[id] = loaded } }
        return loaded
    }

    func forgetIssuers() {
        issuers.withLock {
            $0.epoch &+= 1
            $0.byID.removeAll()
            $0.ids = nil
        }
    }

    /// A role or `config/*` entry, from memory after its first read.
    func setting(_ key: String, _ storage: StorageReader) throws(CofferError) -> JSONValue? {
        let (epoch, cached) = settings.withLock { ($0.epoch, $0.values[key]) }
        if let cached { return cached == .null ? nil : cached }
        let value = try storage.getJSON(key)
        settings.withLock { if $0.epoch == epoch { $0.values[key] = value ?? .null } }
        return value
    }

    func issuerIDs(_ storage: StorageReader) throws(CofferError) -> [String] {
        let (epoch, cached) = issuers.withLock { ($0.epoch, $0.ids) }
        if let cached { return cached }
        let ids = try storage.list(PKIStorage.issuerPrefix)
        issuers.withLock { if $0.epoch == epoch { $0.ids = ids } }
        return ids
    }

    func allIssuers(_ storage: StorageReader) throws(CofferError) -> [LoadedIssuer] {
        var out: [LoadedIssuer] = []
        for id in try issuerIDs(storage) {
            if let issuer = try loadIssuer(id, storage) { out.append(issuer) }
        }
        return out
    }

    func issuerConfig(_ storage: StorageReader) throws(CofferError) -> (defaultID: String, followsLatest: Bool) {
        let o = try setting(PKIStorage.issuersConfig, storage)?.objectValue ?? [:]
        return (o["default"]?.stringValue ?? "", o["default_follows_latest_issuer"]?.boolValue ?? false)
    }

    /// What OpenBao puts before "unable to find PKI issuer" when a signing request names one.
    static let fetchContext = "could not fetch the CA certificate (was one set?): "

    /// The issuer `ref` names: "default", an id or a name. Unknown: OpenBao's 500 (its message after
    /// `context`).
    func resolveIssuer(
        _ ref: String,
        _ storage: StorageReader,
        context: String = ""
    ) throws(CofferError) -> LoadedIssuer {
        if ref == "default" || ref.isEmpty {
            let id = try issuerConfig(storage).defaultID
            guard !id.isEmpty, let issuer = try loadIssuer(id, storage) else {
                throw CofferError(
                    .internal,
                    multierror(
                        "could not fetch the CA certificate (was one set?): no default issuer currently configured"
                    )
                )
            }
            return issuer
        }
        if let issuer = try loadIssuer(ref, storage) { return issuer }
        if let issuer = try allIssuers(storage).first(where: { $0.entry.name == ref }) { return issuer }
        throw CofferError(.internal, multierror(context + "unable to find PKI issuer for reference: \(ref)"))
    }

    /// The issuer's chain: itself, then the issuers on this mount that signed it, up to a root.
    func chain(_ issuer: LoadedIssuer, _ storage: StorageReader) throws(CofferError) -> [LoadedIssuer] {
        var chain = [issuer]
        var current = issuer
        let all = try allIssuers(storage)
        while !current.selfSigned {
            guard
                let parent = all.first(where: { candidate in
                    candidate.parsed.subject == current.parsed.issuer
                        && (current.parsed.authorityKeyID.isEmpty || candidate.keyID == current.parsed.authorityKeyID)
                        && !chain.contains { $0 === candidate }
                })
            else { break }
            chain.append(parent)
            current = parent
        }
        return chain
    }

    // MARK: Serial numbers

    /// The mount's serial key: it tags each serial with the issuer and expiry, so a certificate
    /// that was never stored (`no_store`) can still be revoked by its serial alone.
    func serialMAC(_ storage: StorageView) throws(CofferError) -> HMACKey {
        let result: Result<HMACKey, CofferError> = serialKey.withLock { cached in
            if let cached { return .success(cached) }
            do throws(CofferError) {
                var bytes: [UInt8]
                if let stored = try storage.get(PKIStorage.serialKey) {
                    bytes = stored
                } else {
                    bytes = Random.bytes(32)
                    try storage.put(PKIStorage.serialKey, bytes)
                }
                let key = HMACKey(SecureBytes(bytes))
                coffer_openssl_cleanse(&bytes, bytes.count)
                cached = key
                return .success(key)
            } catch { return .failure(error) }
        }
        return try result.get()
    }

    static func serialTag(
        _ key: HMACKey,
        random: ArraySlice<UInt8>,
        expiry: ArraySlice<UInt8>,
        issuerID: String
    ) -> [UInt8] {
        let message = Array(random) + Array(expiry) + Array(issuerID.utf8)
        var mac = [UInt8](repeating: 0, count: 32)
        message.withUnsafeBytes { m in mac.withUnsafeMutableBufferPointer { key.mac(m, into: $0.baseAddress!) } }
        return Array(mac.prefix(5))
    }

    /// A 20-byte serial: 11 random bytes (87 bits of entropy), the certificate's NotAfter (32 bits)
    /// and a 40-bit tag binding the two to the issuer.
    func newSerial(issuerID: String, notAfter: Int64, _ storage: StorageView) throws(CofferError) -> [UInt8] {
        // CSPRNG output from this thread's batch, as a nonce is: a serial must be unpredictable, not secret.
        var random = [UInt8](repeating: 0, count: 11)
        random.withUnsafeMutableBytes { Random.nonce($0) }
        random[0] = (random[0] & 0x3F) | 0x40
        let expiry = UInt32(clamping: notAfter)
        let expiryBytes: [UInt8] = [
            UInt8(expiry >> 24), UInt8(expiry >> 16 & 0xFF), UInt8(expiry >> 8 & 0xFF), UInt8(expiry & 0xFF),
        ]
        let tag = Self.serialTag(
            try serialMAC(storage),
            random: random[...],
            expiry: expiryBytes[...],
            issuerID: issuerID
        )
        return random + expiryBytes + tag
    }

    /// The issuer and NotAfter a serial of this mount carries; nil for a serial it did not make.
    func serialOrigin(
        _ serial: [UInt8],
        _ storage: StorageView
    ) throws(CofferError) -> (issuerID: String, notAfter: Int64)? {
        guard serial.count == 20 else { return nil }
        let key = try serialMAC(storage)
        let expiry = serial[11..<15]
        for id in try issuerIDs(storage.reader) {
            let tag = Self.serialTag(key, random: serial[0..<11], expiry: expiry, issuerID: id)
            if ConstantTime.equals(tag, Array(serial[15...])) {
                let seconds = expiry.reduce(Int64(0)) { $0 << 8 | Int64($1) }
                return (id, seconds)
            }
        }
        return nil
    }
}
