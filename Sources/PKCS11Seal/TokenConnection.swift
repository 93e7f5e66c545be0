import CPKCS11
import CofferCore
import Synchronization

/// A key found on the token, with the label and id it really has (recorded in every blob).
struct TokenKey: Sendable {
    /// The handle that decrypts (the AES key, or the RSA private key).
    let decryptHandle: CK_OBJECT_HANDLE
    /// The handle that encrypts (the AES key, or the RSA public key).
    let encryptHandle: CK_OBJECT_HANDLE
    let label: String
    let id: [UInt8]
}

/// One logged-in connection to a token: the session that holds the login, a bounded pool of
/// sessions for operations, and the keys found so far.
final class TokenConnection: Sendable {
    let module: PKCS11Module
    let generation: Int
    let slot: CK_SLOT_ID
    /// How the token is named in messages: its label and slot.
    let name: String
    let loginSession: CK_SESSION_HANDLE
    let pool: SessionPool
    private let keys = Mutex<[String: TokenKey]>([:])
    /// Set when the token or module reported a failure after which sessions cannot be trusted.
    private let broken = Atomic<Bool>(false)

    var isBroken: Bool { broken.load(ordering: .relaxed) }
    var f: CK_FUNCTION_LIST { module.functions.pointee }

    private init(
        module: PKCS11Module,
        generation: Int,
        slot: CK_SLOT_ID,
        name: String,
        loginSession: CK_SESSION_HANDLE,
        limit: Int
    ) {
        self.module = module
        self.generation = generation
        self.slot = slot
        self.name = name
        self.loginSession = loginSession
        self.pool = SessionPool(limit: limit)
    }

    /// Finds the token, opens the login session and logs in with `pin`, unless `gate` says a login
    /// with this PIN was refused before.
    static func open(
        _ config: PKCS11Configuration,
        pin: SecureBytes,
        gate: LoginGate
    ) throws(CofferError) -> TokenConnection {
        let module = try PKCS11Module.acquire(config.lib)
        let generation = try module.generation()
        let f = module.functions.pointee
        var count: CK_ULONG = 0
        try call(f.C_GetSlotList?(CK_BBOOL(CK_TRUE), nil, &count), "C_GetSlotList", token: config.lib)
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        try call(f.C_GetSlotList?(CK_BBOOL(CK_TRUE), &slots, &count), "C_GetSlotList", token: config.lib)
        slots = Array(slots.prefix(Int(count)))

        var seen: [String] = []
        var match: (slot: CK_SLOT_ID, info: CK_TOKEN_INFO, label: String)?
        for slot in slots {
            var info = CK_TOKEN_INFO()
            guard f.C_GetTokenInfo?(slot, &info) == CKR_OK, info.flags & CK_FLAGS(CKF_TOKEN_INITIALIZED) != 0 else {
                continue
            }
            let label = paddedString(info.label)
            let serial = paddedString(info.serialNumber)
            seen.append("'\(label)' (slot \(slot), serial \(serial))")
            if let want = config.tokenLabel, want != label { continue }
            if let want = config.slot, want != slot { continue }
            if let want = config.serial, want != serial { continue }
            if match == nil { match = (slot, info, label) }
        }
        guard let match else {
            let found =
                seen.isEmpty ? "the module shows no initialised token" : "tokens found: " + seen.joined(separator: ", ")
            throw CofferError.invalid(
                "no PKCS#11 token matches \(config.tokenDescription) in '\(config.lib)'; \(found). Fix token_label, slot or serial"
            )
        }
        let name = "'\(match.label)' (slot \(match.slot))"

        var session: CK_SESSION_HANDLE = 0
        try call(
            f.C_OpenSession?(match.slot, CK_FLAGS(CKF_SERIAL_SESSION | CKF_RW_SESSION), nil, nil, &session),
            "C_OpenSession",
            token: name
        )
        do throws(CofferError) {
            // Checked again here, next to the call: only a login that can succeed is tried.
            try gate.check()
            let rv =
                pin.withUnsafeBytes { p in
                    f.C_Login?(
                        session,
                        CK_USER_TYPE(CKU_USER),
                        UnsafeMutablePointer(mutating: p.bindMemory(to: UInt8.self).baseAddress),
                        CK_ULONG(p.count)
                    )
                } ?? CK_RV(CKR_FUNCTION_NOT_SUPPORTED)
            if let refusal = TokenConnection.pinRefusal(rv, token: name) {
                // Every wrong PIN counts towards locking the token's PIN, and unseal can be called by
                // anyone who reaches the listener: no further login with this PIN.
                gate.refuse(refusal)
                throw refusal
            }
            if rv != CK_RV(CKR_USER_ALREADY_LOGGED_IN) { try call(rv, "C_Login", token: name) }
        } catch {
            _ = f.C_CloseSession?(session)
            throw error
        }
        // Leave room for the login session within the token's limit.
        var limit = config.maxSessions
        let tokenMax = match.info.ulMaxRwSessionCount
        if tokenMax != coffer_ck_effectively_infinite && tokenMax != coffer_ck_unavailable_information {
            limit = min(limit, max(Int(tokenMax) - 1, 1))
        }
        return TokenConnection(
            module: module,
            generation: generation,
            slot: match.slot,
            name: name,
            loginSession: session,
            limit: limit
        )
    }

    /// Closes this connection's sessions. The login ends with the last session the process has on
    /// the token; C_Logout is never called because it would log out every other user in the process.
    func close() {
        for session in pool.drain() { _ = f.C_CloseSession?(session) }
        _ = f.C_CloseSession?(loginSession)
    }

    deinit { close() }

    /// The error for a login the token refused because of the PIN, or nil when `rv` is not such a
    /// refusal. These stop all further logins with the same PIN (see `LoginGate`).
    static func pinRefusal(_ rv: CK_RV, token name: String) -> CofferError? {
        let stop =
            " The seal tries no further login with this PIN, because each wrong one counts towards locking "
            + "the token's PIN; fix it, then make a new seal (restart cofferd; in Swift, a new PKCS11Seal)"
        switch rv {
        case CK_RV(CKR_PIN_INCORRECT):
            return CofferError.invalid(
                "the PIN for HSM token \(name) is wrong (CKR_PIN_INCORRECT); fix pin, pin_file or COFFER_HSM_PIN."
                    + stop
            )
        case CK_RV(CKR_PIN_LOCKED):
            return CofferError.invalid(
                "the user PIN of HSM token \(name) is locked (CKR_PIN_LOCKED) after too many wrong PINs; the token's "
                    + "security officer must reset it (pkcs11-tool --init-pin --login --so-pin ...)." + stop
            )
        case CK_RV(CKR_PIN_EXPIRED), CK_RV(CKR_USER_PIN_NOT_INITIALIZED), CK_RV(CKR_PIN_LEN_RANGE),
            CK_RV(CKR_PIN_INVALID):
            return CofferError.invalid(
                "logging in to HSM token \(name) failed with \(PKCS11Error.name(rv)); set a valid user PIN." + stop
            )
        default:
            return nil
        }
    }

    // MARK: Calls

    static func call(_ rv: CK_RV?, _ function: String, token: String) throws(CofferError) {
        let rv = rv ?? CK_RV(CKR_FUNCTION_NOT_SUPPORTED)
        guard rv != CKR_OK else { return }
        throw CofferError(.unavailable, "\(function) failed on HSM token \(token) with \(PKCS11Error.name(rv))")
    }

    /// Throws for a failed call, remembering failures that break the connection.
    func check(_ rv: CK_RV?, _ function: String) throws(CofferError) {
        let rv = rv ?? CK_RV(CKR_FUNCTION_NOT_SUPPORTED)
        guard rv != CKR_OK else { return }
        if PKCS11Error.breaksConnection(rv) { broken.store(true, ordering: .relaxed) }
        throw CofferError(
            .unavailable,
            "\(function) failed on HSM token \(name) with \(PKCS11Error.name(rv)); retry when the HSM is reachable"
        )
    }

    /// Runs `body` with a session from the pool; a session that failed is closed, not reused.
    func withSession<R>(_ body: (CK_SESSION_HANDLE) throws(CofferError) -> R) throws(CofferError) -> R {
        let f = self.f
        let slot = self.slot
        let session = try pool.take { () throws(CofferError) -> CK_SESSION_HANDLE in
            var session: CK_SESSION_HANDLE = 0
            try check(
                f.C_OpenSession?(slot, CK_FLAGS(CKF_SERIAL_SESSION | CKF_RW_SESSION), nil, nil, &session),
                "C_OpenSession"
            )
            return session
        }
        do {
            let result = try body(session)
            pool.give(session)
            return result
        } catch {
            _ = f.C_CloseSession?(session)
            pool.forget()
            throw error
        }
    }

    // MARK: Keys

    /// The key with `label` and/or `id` usable with `mechanism`, found once and remembered.
    func key(label: String?, id: [UInt8]?, mechanism: PKCS11Configuration.Mechanism) throws(CofferError) -> TokenKey {
        let cacheKey = "\(mechanism.rawValue)|\(label ?? "")|\(Hex.encode(id ?? []))"
        if let known = keys.withLock({ $0[cacheKey] }) { return known }
        let found = try withSession { (s) throws(CofferError) -> TokenKey in
            try findKey(s, label: label, id: id, mechanism: mechanism)
        }
        keys.withLock { $0[cacheKey] = found }
        return found
    }

    /// Forgets found keys (after a handle turned invalid: the key was deleted or replaced).
    func forgetKeys() { keys.withLock { $0 = [:] } }

    static func describe(label: String?, id: [UInt8]?) -> String {
        var parts: [String] = []
        if let label { parts.append("key_label '\(label)'") }
        if let id { parts.append("key_id \(Hex.encode(id))") }
        return parts.joined(separator: " and ")
    }

    private func findKey(
        _ s: CK_SESSION_HANDLE,
        label: String?,
        id: [UInt8]?,
        mechanism: PKCS11Configuration.Mechanism
    ) throws(CofferError) -> TokenKey {
        let wanted = TokenConnection.describe(label: label, id: id)
        let isAES = mechanism == .aesGCM
        let decryptClass = CK_OBJECT_CLASS(isAES ? CKO_SECRET_KEY : CKO_PRIVATE_KEY)
        let candidates = try find(s, objectClass: decryptClass, label: label, id: id)
        guard let handle = candidates.first else {
            if let other = try find(s, objectClass: nil, label: label, id: id).first {
                let cls = try ulong(s, other, CK_ATTRIBUTE_TYPE(CKA_CLASS))
                throw CofferError.invalid(
                    "the object with \(wanted) on HSM token \(name) is a \(className(cls)), but \(mechanism.rawValue) needs "
                        + (isAES ? "an AES secret key" : "an RSA private and public key pair")
                        + "; fix key_label/key_id or mechanism"
                )
            }
            let create =
                isAES
                ? "create it (pkcs11-tool --keygen --key-type AES:32 --label ... --id ...) or set generate_key = true"
                : "create it (pkcs11-tool --keypairgen --key-type rsa:2048 --label ... --id ...)"
            throw CofferError.invalid(
                "PKCS#11 key with \(wanted) not found on HSM token \(name); \(create), or fix key_label/key_id"
            )
        }
        guard candidates.count == 1 else {
            throw CofferError.invalid(
                "\(candidates.count) keys on HSM token \(name) match \(wanted); set both key_label and key_id to pick one"
            )
        }
        let keyType = try ulong(s, handle, CK_ATTRIBUTE_TYPE(CKA_KEY_TYPE))
        let expected = CK_KEY_TYPE(isAES ? CKK_AES : CKK_RSA)
        guard keyType == expected else {
            throw CofferError.invalid(
                "the key with \(wanted) on HSM token \(name) is of type \(keyTypeName(keyType)), but \(mechanism.rawValue) needs "
                    + "\(isAES ? "CKK_AES" : "CKK_RSA"); fix key_label/key_id or mechanism"
            )
        }
        let realLabel = String(decoding: try bytes(s, handle, CK_ATTRIBUTE_TYPE(CKA_LABEL)), as: UTF8.self)
        let realID = try bytes(s, handle, CK_ATTRIBUTE_TYPE(CKA_ID))
        var encryptHandle = handle
        if !isAES {
            let publics = try find(s, objectClass: CK_OBJECT_CLASS(CKO_PUBLIC_KEY), label: label, id: id)
            guard publics.count == 1, let pub = publics.first else {
                throw CofferError.invalid(
                    "the RSA private key with \(wanted) on HSM token \(name) has \(publics.isEmpty ? "no" : "more than one") "
                        + "matching public key; CKM_RSA_PKCS_OAEP needs the pair (same label and id)"
                )
            }
            let bits = try ulong(s, pub, CK_ATTRIBUTE_TYPE(CKA_MODULUS_BITS))
            guard bits >= 2048 else {
                throw CofferError.invalid(
                    "the RSA key with \(wanted) on HSM token \(name) has \(bits) bits; use at least 2048"
                )
            }
            encryptHandle = pub
        }
        return TokenKey(decryptHandle: handle, encryptHandle: encryptHandle, label: realLabel, id: realID)
    }

    /// Creates an AES-256 key that never leaves the token.
    func generateAESKey(label: String?, id: [UInt8]?) throws(CofferError) {
        try withSession { (s) throws(CofferError) in
            let template = Template()
            template.add(CKA_CLASS, ulong: CK_ULONG(CKO_SECRET_KEY))
            template.add(CKA_KEY_TYPE, ulong: CK_ULONG(CKK_AES))
            template.add(CKA_VALUE_LEN, ulong: 32)
            for attribute in [CKA_TOKEN, CKA_SENSITIVE, CKA_PRIVATE, CKA_ENCRYPT, CKA_DECRYPT] {
                template.add(attribute, bool: true)
            }
            template.add(CKA_EXTRACTABLE, bool: false)
            if let label { template.add(CKA_LABEL, bytes: Array(label.utf8)) }
            if let id { template.add(CKA_ID, bytes: id) }
            var mechanism = CK_MECHANISM(
                mechanism: CK_MECHANISM_TYPE(CKM_AES_KEY_GEN),
                pParameter: nil,
                ulParameterLen: 0
            )
            var key: CK_OBJECT_HANDLE = 0
            try check(
                template.attributes.withUnsafeMutableBufferPointer { a in
                    f.C_GenerateKey?(s, &mechanism, a.baseAddress, CK_ULONG(a.count), &key)
                },
                "C_GenerateKey"
            )
        }
    }

    private func find(
        _ s: CK_SESSION_HANDLE,
        objectClass: CK_OBJECT_CLASS?,
        label: String?,
        id: [UInt8]?
    ) throws(CofferError) -> [CK_OBJECT_HANDLE] {
        let template = Template()
        if let objectClass { template.add(CKA_CLASS, ulong: objectClass) }
        if let label { template.add(CKA_LABEL, bytes: Array(label.utf8)) }
        if let id { template.add(CKA_ID, bytes: id) }
        try check(
            template.attributes.withUnsafeMutableBufferPointer {
                f.C_FindObjectsInit?(s, $0.baseAddress, CK_ULONG($0.count))
            },
            "C_FindObjectsInit"
        )
        defer { _ = f.C_FindObjectsFinal?(s) }
        var found: [CK_OBJECT_HANDLE] = []
        var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 8)
        while true {
            var count: CK_ULONG = 0
            try check(f.C_FindObjects?(s, &batch, CK_ULONG(batch.count), &count), "C_FindObjects")
            found += batch.prefix(Int(count))
            if count < CK_ULONG(batch.count) { return found }
        }
    }

    private func ulong(
        _ s: CK_SESSION_HANDLE,
        _ object: CK_OBJECT_HANDLE,
        _ type: CK_ATTRIBUTE_TYPE
    ) throws(CofferError) -> CK_ULONG {
        var value: CK_ULONG = 0
        var attribute = CK_ATTRIBUTE(type: type, pValue: nil, ulValueLen: CK_ULONG(MemoryLayout<CK_ULONG>.size))
        try withUnsafeMutablePointer(to: &value) { (p) throws(CofferError) in
            attribute.pValue = UnsafeMutableRawPointer(p)
            try check(f.C_GetAttributeValue?(s, object, &attribute, 1), "C_GetAttributeValue")
        }
        return value
    }

    private func bytes(
        _ s: CK_SESSION_HANDLE,
        _ object: CK_OBJECT_HANDLE,
        _ type: CK_ATTRIBUTE_TYPE
    ) throws(CofferError) -> [UInt8] {
        var attribute = CK_ATTRIBUTE(type: type, pValue: nil, ulValueLen: 0)
        try check(f.C_GetAttributeValue?(s, object, &attribute, 1), "C_GetAttributeValue")
        guard attribute.ulValueLen != coffer_ck_unavailable_information, attribute.ulValueLen > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: Int(attribute.ulValueLen))
        let rv = out.withUnsafeMutableBytes { b in
            attribute.pValue = b.baseAddress
            return f.C_GetAttributeValue?(s, object, &attribute, 1)
        }
        try check(rv, "C_GetAttributeValue")
        return out
    }

    /// Random bytes from the token's generator.
    func random(_ count: Int, session s: CK_SESSION_HANDLE) throws(CofferError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try check(f.C_GenerateRandom?(s, &out, CK_ULONG(count)), "C_GenerateRandom")
        return out
    }
}

/// Remembers that the token refused a login because of the PIN (wrong, locked, expired...), so
/// that the seal never tries that PIN again: on most HSMs a few wrong PINs lock the user PIN until
/// the security officer resets it, and `sys/unseal` needs no token. One gate per seal: a new seal
/// (a reloaded configuration) starts open.
final class LoginGate: Sendable {
    private let refusal = Mutex<CofferError?>(nil)

    /// Throws the refusal, if there was one.
    func check() throws(CofferError) {
        if let refusal = refusal.withLock({ $0 }) { throw refusal }
    }

    func refuse(_ error: CofferError) {
        refusal.withLock { $0 = error }
    }
}

/// Attribute values kept alive while a call reads the template.
final class Template {
    var attributes: [CK_ATTRIBUTE] = []
    private var buffers: [UnsafeMutableRawPointer] = []

    deinit { for buffer in buffers { buffer.deallocate() } }

    func add(_ type: some BinaryInteger, bytes: [UInt8]) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
        bytes.withUnsafeBytes {
            buffer.copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(buffer), byteCount: bytes.count)
        }
        buffers.append(buffer)
        attributes.append(
            CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(type), pValue: buffer, ulValueLen: CK_ULONG(bytes.count))
        )
    }

    func add(_ type: some BinaryInteger, ulong: CK_ULONG) {
        add(type, bytes: withUnsafeBytes(of: ulong) { Array($0) })
    }

    func add(_ type: some BinaryInteger, bool: Bool) {
        add(type, bytes: [bool ? 1 : 0])
    }
}

/// A fixed-width, space-padded PKCS#11 string field as a Swift string.
func paddedString<T>(_ field: T) -> String {
    withUnsafeBytes(of: field) { raw in
        var end = raw.count
        while end > 0, raw[end - 1] == 32 || raw[end - 1] == 0 { end -= 1 }
        return String(decoding: raw[0..<end], as: UTF8.self)
    }
}

func className(_ value: CK_ULONG) -> String {
    switch value {
    case CK_ULONG(CKO_DATA): "data object (CKO_DATA)"
    case CK_ULONG(CKO_CERTIFICATE): "certificate (CKO_CERTIFICATE)"
    case CK_ULONG(CKO_PUBLIC_KEY): "public key (CKO_PUBLIC_KEY)"
    case CK_ULONG(CKO_PRIVATE_KEY): "private key (CKO_PRIVATE_KEY)"
    case CK_ULONG(CKO_SECRET_KEY): "secret key (CKO_SECRET_KEY)"
    default: "object of class 0x" + String(value, radix: 16)
    }
}

func keyTypeName(_ value: CK_ULONG) -> String {
    switch value {
    case CK_ULONG(CKK_RSA): "CKK_RSA"
    case CK_ULONG(CKK_EC): "CKK_EC"
    case CK_ULONG(CKK_AES): "CKK_AES"
    case CK_ULONG(CKK_DES3): "CKK_DES3"
    case CK_ULONG(CKK_GENERIC_SECRET): "CKK_GENERIC_SECRET"
    default: "0x" + String(value, radix: 16)
    }
}
