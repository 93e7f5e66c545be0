public import CofferCore
import Glibc

/// How to reach the HSM key that seals a Coffer. The JSON/HCL names are Vault's (`lib`, `slot`,
/// `token_label`, `pin`, `key_label`, `key_id`, `mechanism`, `generate_key`) plus Coffer's
/// `serial`, `pin_file` and `seal_wrap`; docs/hsm.md describes every field.
public struct PKCS11Configuration: Sendable {
    /// The mechanism that wraps the root key.
    public enum Mechanism: String, Sendable, CaseIterable {
        /// `CKM_AES_GCM` (0x1087) with an AES-256 key on the token: the default.
        case aesGCM = "CKM_AES_GCM"
        /// `CKM_RSA_PKCS_OAEP` (0x0009) with SHA-256 and MGF1-SHA-256, an RSA key pair of at least
        /// 2048 bits: the HSM wraps a fresh AES-256 data key, which encrypts the payload.
        case rsaOAEP = "CKM_RSA_PKCS_OAEP"

        var value: UInt { self == .aesGCM ? 0x1087 : 0x0009 }

        init?(value: UInt) {
            switch value {
            case 0x1087: self = .aesGCM
            case 0x0009: self = .rsaOAEP
            default: return nil
            }
        }
    }

    /// The hash of `CKM_RSA_PKCS_OAEP` (and of its MGF1).
    public enum OAEPHash: String, Sendable {
        case sha256
        /// For modules without SHA-256 OAEP: SoftHSM 2.6 accepts only SHA-1 ("hashAlg must be CKM_SHA_1").
        case sha1

        var mechanism: UInt { self == .sha256 ? 0x250 : 0x220 }
        var mgf: UInt { self == .sha256 ? 2 : 1 }
        var code: UInt8 { self == .sha256 ? 2 : 1 }

        init?(code: UInt8) {
            switch code {
            case 1: self = .sha1
            case 2: self = .sha256
            default: return nil
            }
        }
    }

    /// Absolute path of the vendor's PKCS#11 library (`lib`).
    public var lib: String
    /// The token's slot id (`slot`). SoftHSM gives random slot ids: prefer `tokenLabel`.
    public var slot: UInt?
    /// The token's label (`token_label`).
    public var tokenLabel: String?
    /// The token's serial number (`serial`).
    public var serial: String?
    /// The user PIN (`pin`). Prefer `pinFile` or the `COFFER_HSM_PIN` environment variable, which
    /// keep the PIN out of configuration files.
    public var pin: String?
    /// A file whose first line is the user PIN (`pin_file`).
    public var pinFile: String?
    /// The key's `CKA_LABEL` (`key_label`).
    public var keyLabel: String?
    /// The key's `CKA_ID` in hex (`key_id`).
    public var keyID: String?
    public var mechanism: Mechanism
    /// The OAEP hash for `CKM_RSA_PKCS_OAEP` (`rsa_oaep_hash`, default sha256).
    public var rsaOAEPHash: OAEPHash
    /// Create an AES-256 key (`CKA_TOKEN`, `CKA_SENSITIVE`, not extractable) with `keyLabel` and
    /// `keyID` when none exists (`generate_key`). AES-GCM only.
    public var generateKey: Bool
    /// Encrypt the keyring and other critical entries a second time with the HSM key (`seal_wrap`),
    /// so a stolen database plus a stolen root key still reveal nothing. On by default.
    public var sealWrap: Bool
    /// The most sessions the seal opens for concurrent operations (besides the one that holds the
    /// login); lowered to what the token allows.
    public var maxSessions: Int

    public init(
        lib: String, slot: UInt? = nil, tokenLabel: String? = nil, serial: String? = nil, pin: String? = nil,
        pinFile: String? = nil, keyLabel: String? = nil, keyID: String? = nil, mechanism: Mechanism = .aesGCM,
        rsaOAEPHash: OAEPHash = .sha256, generateKey: Bool = false, sealWrap: Bool = true, maxSessions: Int = 16
    ) {
        self.lib = lib
        self.slot = slot
        self.tokenLabel = tokenLabel
        self.serial = serial
        self.pin = pin
        self.pinFile = pinFile
        self.keyLabel = keyLabel
        self.keyID = keyID
        self.mechanism = mechanism
        self.rsaOAEPHash = rsaOAEPHash
        self.generateKey = generateKey
        self.sealWrap = sealWrap
        self.maxSessions = maxSessions
    }

    static let fields = [
        "lib", "slot", "token_label", "serial", "pin", "pin_file", "key_label", "key_id", "mechanism", "generate_key",
        "seal_wrap", "rsa_oaep_hash", "max_sessions",
    ]

    /// Reads a `seal "pkcs11" { ... }` stanza given as a JSON object with Vault's field names.
    /// Unknown fields are rejected so a typo does not silently select another key.
    public init(json: JSONValue) throws(CofferError) {
        guard let fields = json.objectValue else { throw CofferError.invalid("the pkcs11 seal configuration must be an object") }
        for key in fields.keys where !PKCS11Configuration.fields.contains(key) {
            throw CofferError.invalid(
                "unknown pkcs11 seal field '\(key)'; the fields are \(PKCS11Configuration.fields.joined(separator: ", "))")
        }
        guard let lib = try fields.string("lib"), !lib.isEmpty else {
            throw CofferError.invalid("the pkcs11 seal needs lib: the absolute path of the HSM's PKCS#11 library")
        }
        self.init(lib: lib)
        if let slot = try fields.string("slot"), !slot.isEmpty {
            let parsed = slot.hasPrefix("0x") ? UInt(slot.dropFirst(2), radix: 16) : UInt(slot)
            guard let parsed else { throw CofferError.invalid("slot must be a decimal or 0x-prefixed hex number, got '\(slot)'") }
            self.slot = parsed
        }
        tokenLabel = try fields.string("token_label")
        serial = try fields.string("serial")
        pin = try fields.string("pin")
        pinFile = try fields.string("pin_file")
        keyLabel = try fields.string("key_label")
        keyID = try fields.string("key_id")
        if let text = try fields.string("mechanism"), !text.isEmpty {
            mechanism = try PKCS11Configuration.parseMechanism(text)
        }
        if let hash = try fields.string("rsa_oaep_hash"), !hash.isEmpty {
            guard let parsed = OAEPHash(rawValue: hash.lowercased()) else {
                throw CofferError.invalid("rsa_oaep_hash '\(hash)' is not supported; use sha256 (the default) or sha1")
            }
            rsaOAEPHash = parsed
        }
        generateKey = try fields.bool("generate_key") ?? false
        sealWrap = try fields.bool("seal_wrap") ?? true
        maxSessions = try fields.int("max_sessions") ?? 16
    }

    static func parseMechanism(_ text: String) throws(CofferError) -> Mechanism {
        if let named = Mechanism(rawValue: text.uppercased()) { return named }
        let number = text.lowercased().hasPrefix("0x") ? UInt(text.dropFirst(2), radix: 16) : UInt(text)
        if let number, let mechanism = Mechanism(value: number) { return mechanism }
        throw CofferError.invalid(
            "mechanism '\(text)' is not supported; use CKM_AES_GCM (0x1087, the default) or CKM_RSA_PKCS_OAEP (0x0009)")
    }

    /// Checks what can be checked without the HSM.
    func validate() throws(CofferError) {
        guard keyLabel?.isEmpty == false || keyID?.isEmpty == false else {
            throw CofferError.invalid("the pkcs11 seal needs key_label or key_id to find its key")
        }
        if let keyID, !keyID.isEmpty, Hex.decode(keyID.lowercased().hasPrefix("0x") ? String(keyID.dropFirst(2)) : keyID) == nil {
            throw CofferError.invalid("key_id must be hex (as pkcs11-tool --id takes it), got '\(keyID)'")
        }
        guard tokenLabel != nil || slot != nil || serial != nil else {
            throw CofferError.invalid("the pkcs11 seal needs token_label, slot or serial to find its token")
        }
        if generateKey, mechanism != .aesGCM {
            throw CofferError.invalid(
                "generate_key creates AES keys only; for CKM_RSA_PKCS_OAEP create the key pair on the token "
                    + "(e.g. pkcs11-tool --keypairgen --key-type rsa:2048)")
        }
        guard maxSessions >= 1 else { throw CofferError.invalid("max_sessions must be at least 1") }
    }

    var keyIDBytes: [UInt8]? {
        guard let keyID, !keyID.isEmpty else { return nil }
        return Hex.decode(keyID.lowercased().hasPrefix("0x") ? String(keyID.dropFirst(2)) : keyID)
    }

    /// How the token is named in messages.
    var tokenDescription: String {
        var parts: [String] = []
        if let tokenLabel { parts.append("token_label '\(tokenLabel)'") }
        if let slot { parts.append("slot \(slot)") }
        if let serial { parts.append("serial '\(serial)'") }
        return parts.joined(separator: ", ")
    }

    /// The user PIN from `pin`, else `pin_file`, else `COFFER_HSM_PIN`.
    func resolvePIN() throws(CofferError) -> SecureBytes {
        if let pin, !pin.isEmpty { return SecureBytes(Array(pin.utf8)) }
        if let pinFile, !pinFile.isEmpty {
            guard let file = fopen(pinFile, "r") else {
                throw CofferError.invalid("cannot read pin_file '\(pinFile)': \(String(cString: strerror(errno)))")
            }
            defer { fclose(file) }
            return try SecureBytes(count: 256) { (buffer: UnsafeMutableRawBufferPointer) throws(CofferError) in
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                let read = fread(buffer.baseAddress, 1, 255, file)
                let bytes = buffer.bindMemory(to: UInt8.self)
                // The first line only; trailing CR/LF are not part of the PIN.
                var end = bytes[0..<read].firstIndex { $0 == 10 || $0 == 13 } ?? read
                while end > 0, bytes[end - 1] == 32 { end -= 1 }
                guard end > 0 else { throw CofferError.invalid("pin_file '\(pinFile)' is empty") }
                // Mark the length in the last byte; trimmed below.
                bytes[255] = UInt8(end)
            }.trimmedPIN()
        }
        if let env = getenv("COFFER_HSM_PIN"), env.pointee != 0 {
            return SecureBytes(UnsafeRawBufferPointer(start: env, count: strlen(env)))
        }
        throw CofferError.invalid("no PIN for the HSM token (\(tokenDescription)): set pin, pin_file or COFFER_HSM_PIN")
    }
}

extension SecureBytes {
    /// The PIN read by `resolvePIN`: the length is in the last byte of the 256-byte buffer.
    fileprivate func trimmedPIN() -> SecureBytes {
        withUnsafeBytes { b in SecureBytes(UnsafeRawBufferPointer(rebasing: b[0..<Int(b[255])])) }
    }
}
