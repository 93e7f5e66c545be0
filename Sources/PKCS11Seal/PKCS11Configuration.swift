public import CofferCore
import Glibc
import Synchronization

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
    /// The user PIN (`pin`), in memory that is zeroed when released (the initialiser's `pin:` takes
    /// a String and copies it here; the configuration keeps no String of it). Prefer `pinFile` or
    /// the `COFFER_HSM_PIN` environment variable, which keep the PIN out of configuration files.
    public var pin: SecureBytes?
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
        lib: String,
        slot: UInt? = nil,
        tokenLabel: String? = nil,
        serial: String? = nil,
        pin: String? = nil,
        pinFile: String? = nil,
        keyLabel: String? = nil,
        keyID: String? = nil,
        mechanism: Mechanism = .aesGCM,
        rsaOAEPHash: OAEPHash = .sha256,
        generateKey: Bool = false,
        sealWrap: Bool = true,
        maxSessions: Int = 16
    ) {
        self.lib = lib
        self.slot = slot
        self.tokenLabel = tokenLabel
        self.serial = serial
        self.pin = pin.map { SecureBytes($0.utf8) }
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
        guard let fields = json.objectValue else {
            throw CofferError.invalid("the pkcs11 seal configuration must be an object")
        }
        for key in fields.keys where !PKCS11Configuration.fields.contains(key) {
            throw CofferError.invalid(
                "unknown pkcs11 seal field '\(key)'; the fields are \(PKCS11Configuration.fields.joined(separator: ", "))"
            )
        }
        guard let lib = try fields.string("lib"), !lib.isEmpty else {
            throw CofferError.invalid("the pkcs11 seal needs lib: the absolute path of the HSM's PKCS#11 library")
        }
        self.init(lib: lib)
        if let slot = try fields.string("slot"), !slot.isEmpty {
            let parsed = slot.hasPrefix("0x") ? UInt(slot.dropFirst(2), radix: 16) : UInt(slot)
            guard let parsed else {
                throw CofferError.invalid("slot must be a decimal or 0x-prefixed hex number, got '\(slot)'")
            }
            self.slot = parsed
        }
        tokenLabel = try fields.string("token_label")
        serial = try fields.string("serial")
        pin = try fields.string("pin").map { SecureBytes($0.utf8) }
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
            "mechanism '\(text)' is not supported; use CKM_AES_GCM (0x1087, the default) or CKM_RSA_PKCS_OAEP (0x0009)"
        )
    }

    /// Checks what can be checked without the HSM.
    func validate() throws(CofferError) {
        guard keyLabel?.isEmpty == false || keyID?.isEmpty == false else {
            throw CofferError.invalid("the pkcs11 seal needs key_label or key_id to find its key")
        }
        if let keyID, !keyID.isEmpty,
            Hex.decode(keyID.lowercased().hasPrefix("0x") ? String(keyID.dropFirst(2)) : keyID) == nil
        {
            throw CofferError.invalid("key_id must be hex (as pkcs11-tool --id takes it), got '\(keyID)'")
        }
        guard tokenLabel != nil || slot != nil || serial != nil else {
            throw CofferError.invalid("the pkcs11 seal needs token_label, slot or serial to find its token")
        }
        if generateKey, mechanism != .aesGCM {
            throw CofferError.invalid(
                "generate_key creates AES keys only; for CKM_RSA_PKCS_OAEP create the key pair on the token "
                    + "(e.g. pkcs11-tool --keypairgen --key-type rsa:2048)"
            )
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

    /// The user PIN from `pin`, else `pin_file`, else `COFFER_HSM_PIN`. Read once, when the seal is
    /// made: the seal keeps it (only) in `SecureBytes`.
    func resolvePIN() throws(CofferError) -> SecureBytes {
        if let pin, pin.count > 0 { return pin }
        if let pinFile, !pinFile.isEmpty { return try PKCS11Configuration.readPINFile(pinFile) }
        if let pin = PKCS11Configuration.takeEnvironmentPIN() { return pin }
        throw CofferError.invalid("no PIN for the HSM token (\(tokenDescription)): set pin, pin_file or COFFER_HSM_PIN")
    }

    /// The first line of `path` (trailing CR, LF and spaces are not part of the PIN). The file must be
    /// a regular file that neither its group nor others can read or write, as OpenSSH demands of
    /// private keys: a PIN anyone on the machine can read protects nothing.
    static func readPINFile(_ path: String) throws(CofferError) -> SecureBytes {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CofferError.invalid("cannot read pin_file '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw CofferError.invalid("cannot read pin_file '\(path)': \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & 0o170000 == 0o100000 else {
            throw CofferError.invalid(
                "pin_file '\(path)' is not a regular file; it must be a file whose first line is the PIN"
            )
        }
        let loose = info.st_mode & 0o066
        guard loose == 0 else {
            let who =
                loose & 0o060 != 0 && loose & 0o006 != 0
                ? "its group and others" : loose & 0o060 != 0 ? "its group" : "others"
            throw CofferError.invalid(
                "pin_file '\(path)' can be read or written by \(who) (mode \(String(info.st_mode & 0o7777, radix: 8))); "
                    + "the PIN must be readable by its owner only: chmod 600 '\(path)' (or 400)"
            )
        }
        let capacity = 256
        return try SecureBytes(count: capacity) { (buffer: UnsafeMutableRawBufferPointer) throws(CofferError) in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let bytes = buffer.bindMemory(to: UInt8.self)
            var filled = 0
            while filled < capacity - 1 {
                let n = read(fd, bytes.baseAddress! + filled, capacity - 1 - filled)
                if n < 0, errno == EINTR { continue }
                guard n >= 0 else {
                    throw CofferError.invalid("cannot read pin_file '\(path)': \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                filled += n
            }
            // The first line only; trailing CR/LF and spaces are not part of the PIN.
            guard
                let newline = bytes[0..<filled].firstIndex(where: { $0 == 10 || $0 == 13 })
                    ?? (filled < capacity - 1 ? filled : nil)
            else {
                throw CofferError.invalid(
                    "the first line of pin_file '\(path)' is longer than \(capacity - 2) bytes; it must be the PIN"
                )
            }
            var end = newline
            while end > 0, bytes[end - 1] == 32 { end -= 1 }
            guard end > 0 else { throw CofferError.invalid("pin_file '\(path)' is empty") }
            // Mark the length in the last byte; trimmed below.
            bytes[capacity - 1] = UInt8(end)
        }.trimmedPIN()
    }

    /// `COFFER_HSM_PIN`, taken out of the environment: copied into `SecureBytes`, its text in the
    /// process's initial environment block overwritten (what `/proc/<pid>/environ` shows), and the
    /// variable unset, so neither child processes nor readers of the environment see it. The copy
    /// serves every later seal of this process (a new value set later replaces it).
    static func takeEnvironmentPIN() -> SecureBytes? {
        environmentPIN.withLock { kept in
            if let value = getenv(environmentVariable) {
                let count = strlen(value)
                if count > 0 { kept = SecureBytes(UnsafeRawBufferPointer(start: value, count: count)) }
                wipeIfInInitialEnvironment(value, count: count)
                unsetenv(environmentVariable)
            }
            return kept
        }
    }

    static let environmentVariable = "COFFER_HSM_PIN"
    private static let environmentPIN = Mutex<SecureBytes?>(nil)

    /// Forgets the PIN taken from the environment (for tests of the other sources).
    static func forgetEnvironmentPIN() { environmentPIN.withLock { $0 = nil } }

    /// Zeroes `count` bytes at `value` when they lie in the environment block the kernel set up at
    /// exec (between `env_start` and `env_end` of /proc/self/stat). Strings that `setenv`/`putenv`
    /// placed elsewhere are left alone: they may be read-only or still owned by their setter.
    private static func wipeIfInInitialEnvironment(_ value: UnsafeMutablePointer<CChar>, count: Int) {
        guard count > 0, let file = fopen("/proc/self/stat", "r") else { return }
        defer { fclose(file) }
        var text = [UInt8](repeating: 0, count: 4096)
        let length = text.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count - 1, file) }
        guard length > 0 else { return }
        // Fields after the command name, which is in parentheses and may contain spaces: the first
        // of them is field 3 (state); env_start and env_end are fields 50 and 51 (Linux 3.5+).
        guard let paren = text[0..<length].lastIndex(of: UInt8(ascii: ")")) else { return }
        let fields = text[(paren + 1)..<length].split(separator: UInt8(ascii: " "))
        guard fields.count > 48,
            let start = UInt(String(decoding: fields[47], as: UTF8.self)),
            let end = UInt(String(decoding: fields[48].prefix { $0 >= 48 && $0 <= 57 }, as: UTF8.self))
        else { return }
        let address = UInt(bitPattern: value)
        guard address >= start, address < end, count <= Int(end - address) else { return }
        Wipe.bytes(UnsafeMutableRawPointer(value), count: count)
    }
}

extension SecureBytes {
    /// The PIN read by `resolvePIN`: the length is in the last byte of the 256-byte buffer.
    fileprivate func trimmedPIN() -> SecureBytes {
        withUnsafeBytes { b in SecureBytes(UnsafeRawBufferPointer(rebasing: b[0..<Int(b[255])])) }
    }
}
