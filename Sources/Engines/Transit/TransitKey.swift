import CofferCore
package import CofferFramework
import Synchronization

/// The key types transit offers, by Vault's names.
enum TransitKeyType: String, Sendable, CaseIterable {
    case aes128GCM96 = "aes128-gcm96"
    case aes256GCM96 = "aes256-gcm96"
    case chacha20Poly1305 = "chacha20-poly1305"
    case ed25519 = "ed25519"
    case ecdsaP256 = "ecdsa-p256"
    case ecdsaP384 = "ecdsa-p384"
    case ecdsaP521 = "ecdsa-p521"
    case rsa2048 = "rsa-2048"
    case rsa3072 = "rsa-3072"
    case rsa4096 = "rsa-4096"
    case hmac = "hmac"

    var aead: AEAD? {
        switch self {
        case .aes128GCM96: .aes128GCM
        case .aes256GCM96: .aes256GCM
        case .chacha20Poly1305: .chacha20Poly1305
        default: nil
        }
    }

    var curve: String? {
        switch self {
        case .ecdsaP256: "P-256"
        case .ecdsaP384: "P-384"
        case .ecdsaP521: "P-521"
        default: nil
        }
    }

    /// The byte length of each of r and s in a JWS ECDSA signature.
    var ecdsaComponentSize: Int {
        switch self {
        case .ecdsaP256: 32
        case .ecdsaP384: 48
        default: 66
        }
    }

    var rsaBits: Int? {
        switch self {
        case .rsa2048: 2048
        case .rsa3072: 3072
        case .rsa4096: 4096
        default: nil
        }
    }

    var supportsEncryption: Bool { aead != nil || rsaBits != nil }
    var supportsSigning: Bool { self == .ed25519 || curve != nil || rsaBits != nil }
    var supportsDerivation: Bool { aead != nil || self == .ed25519 }
    var isAsymmetric: Bool { supportsSigning }

    /// The `name` Vault shows for each version of an asymmetric key.
    var versionName: String { curve ?? rawValue }

    /// The number OpenBao's backups use for the type.
    var backupNumber: Int {
        switch self {
        case .aes256GCM96: 0
        case .ecdsaP256: 1
        case .ed25519: 2
        case .rsa2048: 3
        case .rsa4096: 4
        case .chacha20Poly1305: 5
        case .ecdsaP384: 6
        case .ecdsaP521: 7
        case .aes128GCM96: 8
        case .rsa3072: 9
        case .hmac: 10
        }
    }
}

/// One version of a transit key: its material and when it was made. Immutable.
final class KeyVersion: Sendable {
    let number: Int
    let creationTime: Timestamp
    /// Symmetric and HMAC keys: the raw key. Ed25519: the 64-byte seed ‖ public key (Go's form,
    /// which derived Ed25519 keys use as their HKDF input). EC and RSA: the DER private key.
    let material: SecureBytes
    /// The key HMACs are made with (for `hmac` keys, `material` itself).
    let hmacKey: SecureBytes
    /// The parsed asymmetric key (nil for symmetric types).
    let pkey: PKey?
    /// The public key as Vault shows it: base64 for Ed25519, PEM for EC and RSA; empty otherwise.
    let publicKey: String
    /// "vault:v<N>:", the prefix of what this version makes.
    let header: [UInt8]
    /// An aes256-gcm96 version's key expanded for Nettle, made on first use (most versions of a rotated
    /// key are never used again, and an expanded key is 4 KB) and zeroed with this version: the address
    /// of the retained ``AESGCMKey``, 0 until then. (The standard library's `AtomicLazyReference` does
    /// the same in 640 instructions a load, as a generic that is not specialised across modules.)
    private let expandedAES = Atomic<UInt>(0)

    /// This version's material as an expanded AES-256-GCM key (aes256-gcm96 keys that are not derived).
    var aes256GCM: AESGCMKey {
        func key(_ bits: UInt) -> AESGCMKey {
            Unmanaged<AESGCMKey>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
        }
        let bits = expandedAES.load(ordering: .acquiring)
        if bits != 0 { return key(bits) }
        let made = Unmanaged.passRetained(material.withUnsafeBytes { AESGCMKey(key: $0) })
        let mine = UInt(bitPattern: made.toOpaque())
        let (stored, current) = expandedAES.compareExchange(
            expected: 0,
            desired: mine,
            ordering: .acquiringAndReleasing
        )
        if !stored { made.release() }  // another thread's came first
        return key(stored ? mine : current)
    }

    deinit {
        let bits = expandedAES.load(ordering: .acquiring)
        if bits != 0 { Unmanaged<AESGCMKey>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).release() }
    }

    init(
        number: Int,
        creationTime: Timestamp,
        material: SecureBytes,
        hmacKey: SecureBytes,
        type: TransitKeyType
    ) throws(CofferError) {
        self.number = number
        self.creationTime = creationTime
        self.material = material
        self.hmacKey = hmacKey
        self.header = VersionedValue.header(number)
        switch type {
        case .ed25519:
            guard material.count == 64 else {
                throw CofferError(.integrity, "a stored Ed25519 key has the wrong length")
            }
            let key = try material.withUnsafeBytes { (m) throws(CofferError) in
                try PKey.ed25519(seed: UnsafeRawBufferPointer(rebasing: m[0..<32]))
            }
            pkey = key
            publicKey = Base64.encode(try key.rawPublicKey())
        case _ where type.isAsymmetric:
            let key = try material.withUnsafeBytes { (m) throws(CofferError) in try PKey.privateKey(der: m) }
            pkey = key
            publicKey = try key.pem(privateKey: false)
        default:
            // An AEAD key of another length would be refused by OpenSSL and trap the expanded key's setup.
            if let aead = type.aead, material.count != aead.keySize {
                throw CofferError(.integrity, "a stored \(type.rawValue) key has the wrong length")
            }
            pkey = nil
            publicKey = ""
        }
    }

    /// A fresh version of `type` (`hmacSize` bytes for HMAC keys).
    static func generate(
        number: Int,
        type: TransitKeyType,
        hmacSize: Int,
        now: Timestamp
    ) throws(CofferError) -> KeyVersion {
        let material: SecureBytes
        switch type {
        case .aes128GCM96, .aes256GCM96, .chacha20Poly1305: material = SecureBytes(randomCount: type.aead!.keySize)
        case .hmac: material = SecureBytes(randomCount: hmacSize)
        case .ed25519:
            let seed = SecureBytes(randomCount: 32)
            let pub = try seed.withUnsafeBytes { (s) throws(CofferError) in try PKey.ed25519(seed: s).rawPublicKey() }
            material = seed.withUnsafeBytes { s in SecureBytes(Array(s) + pub) }
        default: material = try PKey.generate(curve: type.curve, rsaBits: type.rsaBits).privateDER()
        }
        let hmacKey = type == .hmac ? material : SecureBytes(randomCount: 32)
        return try KeyVersion(number: number, creationTime: now, material: material, hmacKey: hmacKey, type: type)
    }
}

/// A named transit key: its settings and versions, as stored at `policy/<name>`. A value; changes
/// make a new one, which the backend stores and caches.
struct TransitKey: Sendable {
    var name: String
    var type: TransitKeyType
    var derived = false
    var convergent = false
    var exportable = false
    var allowPlaintextBackup = false
    var deletionAllowed = false
    var minDecryptionVersion = 1
    var minEncryptionVersion = 0
    var minAvailableVersion = 0
    var latestVersion = 0
    var autoRotatePeriod: Int64 = 0
    /// HMAC keys only: the key length in bytes.
    var keySize = 0
    var versions: [Int: KeyVersion] = [:]

    static let storagePrefix = "policy/"

    /// Adds a new version and makes it the latest.
    mutating func rotate(now: Timestamp) throws(CofferError) {
        let next = latestVersion + 1
        versions[next] = try KeyVersion.generate(number: next, type: type, hmacSize: keySize, now: now)
        latestVersion = next
    }

    /// True when `auto_rotate_period` has passed since the latest version was made.
    func rotationDue(now: Timestamp) -> Bool {
        guard autoRotatePeriod > 0, let latest = versions[latestVersion] else { return false }
        return latest.creationTime.adding(seconds: autoRotatePeriod) <= now
    }

    // MARK: Stored form

    /// The stored JSON (key material base64-encoded; the entry is written seal-wrapped).
    var stored: JSONValue {
        var versionsJSON: [String: JSONValue] = [:]
        for (number, version) in versions {
            versionsJSON[String(number)] = [
                "key": .string(version.material.withUnsafeBytes { Base64.encode($0) }),
                "hmac_key": .string(version.hmacKey.withUnsafeBytes { Base64.encode($0) }),
                "creation_time": .int(version.creationTime.nanoseconds),
            ]
        }
        return [
            "name": .string(name), "type": .string(type.rawValue), "derived": .bool(derived),
            "convergent_encryption": .bool(convergent),
            "exportable": .bool(exportable), "allow_plaintext_backup": .bool(allowPlaintextBackup),
            "deletion_allowed": .bool(deletionAllowed), "min_decryption_version": .int(Int64(minDecryptionVersion)),
            "min_encryption_version": .int(Int64(minEncryptionVersion)),
            "min_available_version": .int(Int64(minAvailableVersion)),
            "latest_version": .int(Int64(latestVersion)), "auto_rotate_period": .int(autoRotatePeriod),
            "key_size": .int(Int64(keySize)),
            "versions": .object(versionsJSON),
        ]
    }

    init(name: String, type: TransitKeyType) {
        self.name = name
        self.type = type
    }

    init(stored json: JSONValue) throws(CofferError) {
        let malformed = CofferError(.integrity, "a stored transit key is malformed")
        guard let name = json["name"]?.stringValue,
            let type = json["type"]?.stringValue.flatMap(TransitKeyType.init(rawValue:)),
            let versions = json["versions"]?.objectValue
        else { throw malformed }
        self.name = name
        self.type = type
        derived = json["derived"]?.boolValue ?? false
        convergent = json["convergent_encryption"]?.boolValue ?? false
        exportable = json["exportable"]?.boolValue ?? false
        allowPlaintextBackup = json["allow_plaintext_backup"]?.boolValue ?? false
        deletionAllowed = json["deletion_allowed"]?.boolValue ?? false
        minDecryptionVersion = json["min_decryption_version"]?.intValue ?? 1
        minEncryptionVersion = json["min_encryption_version"]?.intValue ?? 0
        minAvailableVersion = json["min_available_version"]?.intValue ?? 0
        latestVersion = json["latest_version"]?.intValue ?? 0
        autoRotatePeriod = Int64(json["auto_rotate_period"]?.intValue ?? 0)
        keySize = json["key_size"]?.intValue ?? 0
        for (numberText, entry) in versions {
            guard let number = Int(numberText), let key = entry["key"]?.stringValue.flatMap(Base64.decode),
                let hmac = entry["hmac_key"]?.stringValue.flatMap(Base64.decode),
                let created = entry["creation_time"]?.intValue
            else { throw malformed }
            self.versions[number] = try KeyVersion(
                number: number,
                creationTime: Timestamp(nanoseconds: Int64(created)),
                material: SecureBytes(key),
                hmacKey: SecureBytes(hmac),
                type: type
            )
        }
    }

    // MARK: What `keys/<name>` shows

    var readData: [String: JSONValue] {
        var data: [String: JSONValue] = [
            "name": .string(name), "type": .string(type.rawValue), "derived": .bool(derived),
            "exportable": .bool(exportable),
            "allow_plaintext_backup": .bool(allowPlaintextBackup), "deletion_allowed": .bool(deletionAllowed),
            "min_decryption_version": .int(Int64(minDecryptionVersion)),
            "min_encryption_version": .int(Int64(minEncryptionVersion)),
            "min_available_version": .int(Int64(minAvailableVersion)), "latest_version": .int(Int64(latestVersion)),
            "auto_rotate_period": .int(autoRotatePeriod), "imported_key": false, "soft_deleted": false,
            "supports_encryption": .bool(type.supportsEncryption),
            "supports_decryption": .bool(type.supportsEncryption),
            "supports_derivation": .bool(type.supportsDerivation), "supports_signing": .bool(type.supportsSigning),
        ]
        if derived {
            data["kdf"] = "hkdf_sha256"
            data["convergent_encryption"] = .bool(convergent)
            if convergent { data["convergent_encryption_version"] = -1 }
        }
        if type == .hmac {
            data["key_size"] = .int(Int64(keySize))
            return data
        }
        var keys: [String: JSONValue] = [:]
        for (number, version) in versions where number >= minDecryptionVersion {
            if type.isAsymmetric {
                keys[String(number)] = [
                    "name": .string(type.versionName), "public_key": .string(derived ? "" : version.publicKey),
                    "creation_time": .string(version.creationTime.rfc3339), "certificate_chain": "",
                ]
            } else {
                keys[String(number)] = .int(version.creationTime.seconds)
            }
        }
        data["keys"] = .object(keys)
        return data
    }
}
