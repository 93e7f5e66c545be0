import CPKCS11
public import CofferCore
import Synchronization

/// An auto-unseal seal whose key never leaves a PKCS#11 HSM.
///
/// The root key (and, with seal wrap, the keyring and other critical entries) is encrypted on the
/// token with `CKM_AES_GCM`, or with an AES-256 data key that the token wraps with
/// `CKM_RSA_PKCS_OAEP` (SHA-256). Every blob records the mechanism and the label and id of the key
/// that made it, so after a key rotation (a new `key_label`) old blobs still open with the old key.
///
/// Nothing touches the HSM until the first wrap or unwrap. A connection that fails (module, token,
/// key) is dropped and the next call starts over, so an unseal that failed because the HSM was away
/// works when it is back. A login the token refuses because of the PIN is the exception: this seal
/// then never logs in again (each wrong PIN counts towards locking the token's PIN, and anyone who
/// reaches `sys/unseal` can make the seal try); make a new seal once the PIN is fixed. Safe to use
/// from any number of threads.
public final class PKCS11Seal: Seal {
    /// Where the detail of a failure goes when callers must not see it: the module path, token
    /// label, slot, serial and key names of the configuration.
    public typealias Report = @Sendable (CofferError) -> Void

    /// The configuration, without the PIN (the seal keeps that apart, in `SecureBytes`).
    public let configuration: PKCS11Configuration
    private let pin: SecureBytes
    private let gate = LoginGate()
    private let report: Report?
    /// The message last handed to `report`, so that a failure repeated by every caller is reported once.
    private let lastReported = Mutex<String?>(nil)
    private let connection = Mutex<TokenConnection?>(nil)

    /// Checks the configuration and reads the PIN (`pin`, else `pin_file`, else `COFFER_HSM_PIN`,
    /// which is then removed from the environment); the HSM is reached on first use.
    ///
    /// - Parameter report: for servers, whose callers are not the operator. When given, the errors
    ///   the seal throws say only what kind of failure it was and that the operator's log has the
    ///   reason; the full error (which names the module path, token, slot, serial and key) goes to
    ///   `report`, once per distinct failure. Without it (the default, for a program that embeds
    ///   Coffer and is its own operator), the errors carry the detail.
    public init(_ configuration: PKCS11Configuration, report: Report? = nil) throws(CofferError) {
        try configuration.validate()
        pin = try configuration.resolvePIN()
        var kept = configuration
        kept.pin = nil
        self.configuration = kept
        self.report = report
    }

    public var type: String { "pkcs11" }
    public var isAutoUnseal: Bool { true }
    public var sealWrap: Bool { configuration.sealWrap }

    /// The key new blobs are wrapped with, as found on the token (its real label and id), or as
    /// configured when the token cannot be reached.
    public var currentKeyName: String? {
        if let key = try? withConnection({ (c) throws(CofferError) in
            try c.key(
                label: configuration.keyLabel.flatMap { $0.isEmpty ? nil : $0 },
                id: configuration.keyIDBytes,
                mechanism: configuration.mechanism
            )
        }) {
            return BlobHeader.name(label: key.label, id: key.id, mechanism: configuration.mechanism)
        }
        return BlobHeader.name(
            label: configuration.keyLabel,
            id: configuration.keyIDBytes,
            mechanism: configuration.mechanism
        )
    }

    public func keyName(of blob: [UInt8]) -> String? {
        guard let (header, _) = try? BlobHeader.parse(blob) else { return nil }
        return BlobHeader.name(label: header.label, id: header.id, mechanism: header.mechanism)
    }

    /// Connects now and finds (or, with `generate_key`, creates) the configured key: the same
    /// checks the first wrap would make, with the same errors.
    public func check() throws(CofferError) {
        do {
            _ = try withConnection { (c) throws(CofferError) in try currentKey(c) }
        } catch {
            throw surface(error)
        }
    }

    /// What a caller is shown of `error`: the error itself, or with a `report` hook a message without
    /// the configuration's details, the details going to the hook.
    private func surface(_ error: CofferError) -> CofferError {
        guard let report else { return error }
        let isNew = lastReported.withLock { (last) -> Bool in
            defer { last = error.message }
            return last != error.message
        }
        if isNew { report(error) }
        return CofferError(error.code, "the pkcs11 seal failed (\(error.code)); the reason is in the server's log")
    }

    // MARK: Seal

    public func wrap(_ rootKey: SecureBytes, unsealKey: SecureBytes?) throws(CofferError) -> [UInt8] {
        do {
            return try wrapOnToken(rootKey)
        } catch {
            throw surface(error)
        }
    }

    public func unwrap(_ blob: [UInt8], unsealKey: SecureBytes?) throws(CofferError) -> SecureBytes {
        do {
            return try unwrapOnToken(blob)
        } catch {
            throw surface(error)
        }
    }

    private func wrapOnToken(_ rootKey: SecureBytes) throws(CofferError) -> [UInt8] {
        try withConnection { (c) throws(CofferError) -> [UInt8] in
            let key = try currentKey(c)
            let hash = configuration.mechanism == .rsaOAEP ? configuration.rsaOAEPHash : nil
            let header = BlobHeader(mechanism: configuration.mechanism, hash: hash, label: key.label, id: key.id)
            var blob = header.encoded
            let aad = blob
            switch configuration.mechanism {
            case .aesGCM:
                let (iv, sealed) = try rootKey.withUnsafeBytes { (p) throws(CofferError) in
                    try encryptGCM(c, key: key, plaintext: p, aad: aad)
                }
                blob.append(UInt8(iv.count))
                blob += iv + sealed
            case .rsaOAEP:
                let dataKey = SecureBytes(randomCount: AESGCM.keySize)
                let wrappedKey = try dataKey.withUnsafeBytes { (k) throws(CofferError) in
                    try encryptOAEP(c, key: key, hash: configuration.rsaOAEPHash, plaintext: k)
                }
                let nonce = Random.bytes(AESGCM.nonceSize)
                // Straight from the SecureBytes into the ciphertext: no plain copy of the secret.
                var sealed = [UInt8](repeating: 0, count: rootKey.count + AESGCM.tagSize)
                let sealedOK = dataKey.withUnsafeBytes { k in
                    rootKey.withUnsafeBytes { p in
                        nonce.withUnsafeBytes { n in
                            aad.withUnsafeBytes { a in
                                sealed.withUnsafeMutableBytes { o in
                                    AESGCM.seal(key: k, nonce: n, plaintext: p, aad: a, output: o)
                                }
                            }
                        }
                    }
                }
                guard sealedOK else { throw CofferError(.internal, "AES-256-GCM encryption failed in OpenSSL") }
                blob += [UInt8(wrappedKey.count >> 8), UInt8(wrappedKey.count & 0xFF)] + wrappedKey + nonce + sealed
            }
            return blob
        }
    }

    private func unwrapOnToken(_ blob: [UInt8]) throws(CofferError) -> SecureBytes {
        let (header, bodyStart) = try BlobHeader.parse(blob)
        let aad = Array(blob[0..<bodyStart])
        var body = blob[bodyStart...]
        return try withConnection { (c) throws(CofferError) -> SecureBytes in
            let key = try c.key(
                label: header.label.isEmpty ? nil : header.label,
                id: header.id.isEmpty ? nil : header.id,
                mechanism: header.mechanism
            )
            switch header.mechanism {
            case .aesGCM:
                guard let ivCount = body.popFirst().map(Int.init), body.count >= ivCount + AESGCM.tagSize else {
                    throw BlobHeader.malformed
                }
                let iv = Array(body.prefix(ivCount))
                return try decryptGCM(c, key: key, iv: iv, sealed: Array(body.dropFirst(ivCount)), aad: aad)
            case .rsaOAEP:
                guard body.count >= 2 else { throw BlobHeader.malformed }
                let length = Int(body[body.startIndex]) << 8 | Int(body[body.startIndex + 1])
                body = body.dropFirst(2)
                guard body.count >= length + AESGCM.nonceSize + AESGCM.tagSize else { throw BlobHeader.malformed }
                let dataKey = try decryptOAEP(
                    c,
                    key: key,
                    hash: header.hash ?? .sha256,
                    ciphertext: Array(body.prefix(length))
                )
                let nonce = Array(body.dropFirst(length).prefix(AESGCM.nonceSize))
                let sealed = Array(body.dropFirst(length + AESGCM.nonceSize))
                // Decrypted straight into the SecureBytes: no plain copy of the secret.
                return try SecureBytes(count: sealed.count - AESGCM.tagSize) { (out) throws(CofferError) in
                    let opened = dataKey.withUnsafeBytes { k in
                        nonce.withUnsafeBytes { n in
                            sealed.withUnsafeBytes { s in
                                aad.withUnsafeBytes { a in AESGCM.open(key: k, nonce: n, sealed: s, aad: a, output: out)
                                }
                            }
                        }
                    }
                    guard opened else {
                        throw CofferError(
                            .integrity,
                            "a blob sealed by the HSM failed authentication: it was modified or truncated"
                        )
                    }
                }
            }
        }
    }

    // MARK: Connection

    /// Runs `body` on a live connection, connecting first if needed. A failure that breaks the
    /// connection drops it so the next call reconnects; a key handle that went stale is looked up
    /// again once.
    private func withConnection<R>(_ body: (TokenConnection) throws(CofferError) -> R) throws(CofferError) -> R {
        let c = try connection.withLock { (current) throws(CofferError) -> TokenConnection in
            if let current, !current.isBroken, (try? current.module.generation()) == current.generation {
                return current
            }
            current = nil
            // After a refused PIN, not even the module is touched again.
            try gate.check()
            let fresh = try TokenConnection.open(configuration, pin: pin, gate: gate)
            current = fresh
            lastReported.withLock { $0 = nil }
            return fresh
        }
        do {
            return try body(c)
        } catch {
            if c.isBroken {
                connection.withLock { if $0 === c { $0 = nil } }
            } else if error.message.contains("CKR_OBJECT_HANDLE_INVALID")
                || error.message.contains("CKR_KEY_HANDLE_INVALID")
            {
                c.forgetKeys()
                return try body(c)
            }
            throw error
        }
    }

    /// The configured key; created first when `generate_key` is set and it does not exist.
    private func currentKey(_ c: TokenConnection) throws(CofferError) -> TokenKey {
        let label = configuration.keyLabel.flatMap { $0.isEmpty ? nil : $0 }
        let id = configuration.keyIDBytes
        do {
            return try c.key(label: label, id: id, mechanism: configuration.mechanism)
        } catch  where configuration.generateKey && error.message.contains("not found") {
            try c.generateAESKey(label: label, id: id)
            return try c.key(label: label, id: id, mechanism: configuration.mechanism)
        }
    }

    // MARK: Mechanisms

    /// AES-GCM on the token with a 96-bit IV from the token's generator and a 128-bit tag. Both IV
    /// length fields of CK_GCM_PARAMS are set (ulIvLen in bytes, ulIvBits in bits) because headers
    /// and modules disagree on which one they read. A token that chooses its own IV either writes it
    /// into the IV buffer or appends it to the output; both are recorded.
    private func encryptGCM(
        _ c: TokenConnection,
        key: TokenKey,
        plaintext: UnsafeRawBufferPointer,
        aad: [UInt8]
    ) throws(CofferError) -> (iv: [UInt8], sealed: [UInt8]) {
        try c.withSession { (s) throws(CofferError) in
            var iv = try c.random(AESGCM.nonceSize, session: s)
            var aad = aad
            var output = [UInt8](repeating: 0, count: plaintext.count + AESGCM.tagSize + 64)
            var length = CK_ULONG(output.count)
            try PKCS11Seal.withGCMMechanism(iv: &iv, aad: &aad) { (mechanism) throws(CofferError) in
                try c.check(c.f.C_EncryptInit?(s, &mechanism, key.encryptHandle), "C_EncryptInit (CKM_AES_GCM)")
                let input = UnsafeMutablePointer(mutating: plaintext.bindMemory(to: UInt8.self).baseAddress)
                try c.check(
                    c.f.C_Encrypt?(s, input, CK_ULONG(plaintext.count), &output, &length),
                    "C_Encrypt (CKM_AES_GCM)"
                )
            }
            output.removeSubrange(Int(length)...)
            if output.count == plaintext.count + AESGCM.tagSize + AESGCM.nonceSize {
                // The token appended the IV it chose (as AWS CloudHSM does).
                iv = Array(output.suffix(AESGCM.nonceSize))
                output.removeLast(AESGCM.nonceSize)
            }
            guard output.count == plaintext.count + AESGCM.tagSize else {
                throw CofferError(
                    .unavailable,
                    "C_Encrypt (CKM_AES_GCM) on HSM token \(c.name) returned \(output.count) bytes for \(plaintext.count); this HSM's GCM output format is not supported"
                )
            }
            return (iv, output)
        }
    }

    private func decryptGCM(
        _ c: TokenConnection,
        key: TokenKey,
        iv: [UInt8],
        sealed: [UInt8],
        aad: [UInt8]
    ) throws(CofferError) -> SecureBytes {
        try c.withSession { (s) throws(CofferError) -> SecureBytes in
            var iv = iv
            var aad = aad
            var sealed = sealed
            return try SecureBytes(count: sealed.count - AESGCM.tagSize) { (out) throws(CofferError) in
                try PKCS11Seal.withGCMMechanism(iv: &iv, aad: &aad) { (mechanism) throws(CofferError) in
                    try c.check(c.f.C_DecryptInit?(s, &mechanism, key.decryptHandle), "C_DecryptInit (CKM_AES_GCM)")
                    // Room for the tag too: some modules want the whole input's size.
                    var scratch = [UInt8](repeating: 0, count: sealed.count)
                    defer { scratch.wipe() }
                    var length = CK_ULONG(scratch.count)
                    let rv = c.f.C_Decrypt?(s, &sealed, CK_ULONG(sealed.count), &scratch, &length)
                    try PKCS11Seal.checkDecrypt(c, rv, "C_Decrypt (CKM_AES_GCM)")
                    guard Int(length) == out.count else { throw BlobHeader.malformed }
                    scratch.withUnsafeBytes {
                        out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<out.count]))
                    }
                }
            }
        }
    }

    /// Runs `body` with a CKM_AES_GCM mechanism over `iv` and `aad`: both IV length fields set (bytes
    /// and bits), a 128-bit tag.
    private static func withGCMMechanism(
        iv: inout [UInt8],
        aad: inout [UInt8],
        _ body: (inout CK_MECHANISM) throws(CofferError) -> Void
    ) throws(CofferError) {
        try iv.withUnsafeMutableBufferPointer { (ivp) throws(CofferError) in
            try aad.withUnsafeMutableBufferPointer { (a) throws(CofferError) in
                var params = CK_GCM_PARAMS(
                    pIv: ivp.baseAddress,
                    ulIvLen: CK_ULONG(ivp.count),
                    ulIvBits: CK_ULONG(ivp.count * 8),
                    pAAD: a.baseAddress,
                    ulAADLen: CK_ULONG(a.count),
                    ulTagBits: CK_ULONG(AESGCM.tagSize * 8)
                )
                try withUnsafeMutablePointer(to: &params) { (p) throws(CofferError) in
                    var mechanism = CK_MECHANISM(
                        mechanism: CK_MECHANISM_TYPE(CKM_AES_GCM),
                        pParameter: UnsafeMutableRawPointer(p),
                        ulParameterLen: CK_ULONG(MemoryLayout<CK_GCM_PARAMS>.size)
                    )
                    try body(&mechanism)
                }
            }
        }
    }

    private static func checkDecrypt(_ c: TokenConnection, _ rv: CK_RV?, _ function: String) throws(CofferError) {
        if rv == CK_RV(CKR_ENCRYPTED_DATA_INVALID) || rv == CK_RV(CKR_ENCRYPTED_DATA_LEN_RANGE)
            || rv == CK_RV(CKR_DATA_INVALID)
        {
            throw CofferError(
                .integrity,
                "the HSM (token \(c.name)) could not decrypt a sealed blob (\(PKCS11Error.name(rv!))): it was modified or made by another key"
            )
        }
        try c.check(rv, function)
    }

    private static func oaepMechanism<R>(
        _ hash: PKCS11Configuration.OAEPHash,
        _ body: (inout CK_MECHANISM) throws(CofferError) -> R
    ) throws(CofferError) -> R {
        var params = CK_RSA_PKCS_OAEP_PARAMS(
            hashAlg: CK_MECHANISM_TYPE(hash.mechanism),
            mgf: CK_RSA_PKCS_MGF_TYPE(hash.mgf),
            source: CK_RSA_PKCS_OAEP_SOURCE_TYPE(CKZ_DATA_SPECIFIED),
            pSourceData: nil,
            ulSourceDataLen: 0
        )
        return try withUnsafeMutablePointer(to: &params) { (p) throws(CofferError) -> R in
            var mechanism = CK_MECHANISM(
                mechanism: CK_MECHANISM_TYPE(CKM_RSA_PKCS_OAEP),
                pParameter: UnsafeMutableRawPointer(p),
                ulParameterLen: CK_ULONG(MemoryLayout<CK_RSA_PKCS_OAEP_PARAMS>.size)
            )
            return try body(&mechanism)
        }
    }

    /// OAEP parameters some modules refuse (SoftHSM 2.6 takes SHA-1 only) fail at Init with one of these.
    private static func checkOAEPInit(
        _ c: TokenConnection,
        _ rv: CK_RV?,
        _ function: String,
        hash: PKCS11Configuration.OAEPHash
    ) throws(CofferError) {
        if rv == CK_RV(CKR_ARGUMENTS_BAD) || rv == CK_RV(CKR_MECHANISM_PARAM_INVALID)
            || rv == CK_RV(CKR_MECHANISM_INVALID)
        {
            throw CofferError.invalid(
                "\(function) failed on HSM token \(c.name) with \(PKCS11Error.name(rv!)): this module does not support "
                    + "CKM_RSA_PKCS_OAEP with \(hash.rawValue.uppercased()); set rsa_oaep_hash to what it supports "
                    + "(SoftHSM 2.6 supports only sha1) or use CKM_AES_GCM"
            )
        }
        try c.check(rv, function)
    }

    private func encryptOAEP(
        _ c: TokenConnection,
        key: TokenKey,
        hash: PKCS11Configuration.OAEPHash,
        plaintext: UnsafeRawBufferPointer
    ) throws(CofferError) -> [UInt8] {
        try c.withSession { (s) throws(CofferError) -> [UInt8] in
            try PKCS11Seal.oaepMechanism(hash) { (mechanism) throws(CofferError) -> [UInt8] in
                try PKCS11Seal.checkOAEPInit(
                    c,
                    c.f.C_EncryptInit?(s, &mechanism, key.encryptHandle),
                    "C_EncryptInit (CKM_RSA_PKCS_OAEP)",
                    hash: hash
                )
                var output = [UInt8](repeating: 0, count: 1024)
                var length = CK_ULONG(output.count)
                let input = UnsafeMutablePointer(mutating: plaintext.bindMemory(to: UInt8.self).baseAddress)
                try c.check(
                    c.f.C_Encrypt?(s, input, CK_ULONG(plaintext.count), &output, &length),
                    "C_Encrypt (CKM_RSA_PKCS_OAEP)"
                )
                return Array(output.prefix(Int(length)))
            }
        }
    }

    private func decryptOAEP(
        _ c: TokenConnection,
        key: TokenKey,
        hash: PKCS11Configuration.OAEPHash,
        ciphertext: [UInt8]
    ) throws(CofferError) -> SecureBytes {
        try c.withSession { (s) throws(CofferError) -> SecureBytes in
            try PKCS11Seal.oaepMechanism(hash) { (mechanism) throws(CofferError) -> SecureBytes in
                try PKCS11Seal.checkOAEPInit(
                    c,
                    c.f.C_DecryptInit?(s, &mechanism, key.decryptHandle),
                    "C_DecryptInit (CKM_RSA_PKCS_OAEP)",
                    hash: hash
                )
                var input = ciphertext
                var scratch = [UInt8](repeating: 0, count: ciphertext.count)
                defer { scratch.wipe() }
                var length = CK_ULONG(scratch.count)
                try PKCS11Seal.checkDecrypt(
                    c,
                    c.f.C_Decrypt?(s, &input, CK_ULONG(input.count), &scratch, &length),
                    "C_Decrypt (CKM_RSA_PKCS_OAEP)"
                )
                guard Int(length) == AESGCM.keySize else { throw BlobHeader.malformed }
                return scratch.withUnsafeBytes { SecureBytes(UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)])) }
            }
        }
    }
}

/// The clear header of every blob the seal makes; it is also the AES-GCM associated data, so
/// changing the recorded key or mechanism makes the blob fail to open.
///
/// `"CP11" | version (1) | mechanism (u32 BE) | OAEP hash (u8: 0 none, 1 SHA-1, 2 SHA-256) |
/// label length (u16 BE) | label | id length (u16 BE) | id`,
/// then for CKM_AES_GCM `IV length (u8) | IV | ciphertext | tag`, and for CKM_RSA_PKCS_OAEP
/// `wrapped data key length (u16 BE) | wrapped data key | nonce (12) | ciphertext | tag`.
struct BlobHeader {
    static let magic: [UInt8] = Array("CP11".utf8)
    static let version: UInt8 = 1
    static let malformed = CofferError(.integrity, "a blob sealed by the HSM is malformed or truncated")

    var mechanism: PKCS11Configuration.Mechanism
    var hash: PKCS11Configuration.OAEPHash?
    var label: String
    var id: [UInt8]

    var encoded: [UInt8] {
        let value = mechanism.value
        let labelBytes = Array(label.utf8)
        return BlobHeader.magic + [BlobHeader.version]
            + [
                UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF),
                hash?.code ?? 0,
            ]
            + [UInt8(labelBytes.count >> 8), UInt8(labelBytes.count & 0xFF)] + labelBytes
            + [UInt8(id.count >> 8), UInt8(id.count & 0xFF)] + id
    }

    static func parse(_ blob: [UInt8]) throws(CofferError) -> (BlobHeader, Int) {
        guard blob.count >= 14, Array(blob[0..<4]) == magic else {
            throw CofferError(
                .integrity,
                "this blob was not made by the pkcs11 seal; is the storage sealed by another seal type?"
            )
        }
        guard blob[4] == version else {
            throw CofferError(.integrity, "pkcs11 seal blob has unknown version \(blob[4])")
        }
        let value = UInt(blob[5]) << 24 | UInt(blob[6]) << 16 | UInt(blob[7]) << 8 | UInt(blob[8])
        guard let mechanism = PKCS11Configuration.Mechanism(value: value) else {
            throw CofferError(.integrity, "pkcs11 seal blob names unknown mechanism 0x\(String(value, radix: 16))")
        }
        let hash = PKCS11Configuration.OAEPHash(code: blob[9])
        guard (mechanism == .rsaOAEP) == (hash != nil) else { throw malformed }
        var offset = 10
        func field() throws(CofferError) -> [UInt8] {
            guard blob.count >= offset + 2 else { throw malformed }
            let length = Int(blob[offset]) << 8 | Int(blob[offset + 1])
            guard blob.count >= offset + 2 + length else { throw malformed }
            defer { offset += 2 + length }
            return Array(blob[(offset + 2)..<(offset + 2 + length)])
        }
        let label = String(decoding: try field(), as: UTF8.self)
        let id = try field()
        return (BlobHeader(mechanism: mechanism, hash: hash, label: label, id: id), offset)
    }

    static func name(label: String?, id: [UInt8]?, mechanism: PKCS11Configuration.Mechanism) -> String {
        var parts = ["pkcs11"]
        if let label, !label.isEmpty { parts.append("key_label=\(label)") }
        if let id, !id.isEmpty { parts.append("key_id=\(Hex.encode(id))") }
        parts.append("mechanism=\(mechanism.rawValue)")
        return parts.joined(separator: " ")
    }
}
