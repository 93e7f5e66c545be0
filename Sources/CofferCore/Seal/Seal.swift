/// What protects the root key at rest.
///
/// The root key is stored only as the blob `wrap` returns. A Shamir seal wraps it with the unseal key
/// that the operators' shares recombine into; an auto-unseal seal (PKCS#11) wraps it with a key that
/// never leaves the HSM and needs no `unsealKey`.
public protocol Seal: Sendable {
    /// The name shown as `type` in seal-status: "shamir", "pkcs11".
    var type: String { get }
    /// True when the seal unseals by itself; init then issues recovery shares instead of unseal shares.
    var isAutoUnseal: Bool { get }
    func wrap(_ rootKey: SecureBytes, unsealKey: SecureBytes?) throws(CofferError) -> [UInt8]
    func unwrap(_ blob: [UInt8], unsealKey: SecureBytes?) throws(CofferError) -> SecureBytes
    /// Seal wrap: when true, the keyring and other critical entries are additionally encrypted by
    /// this seal (`wrap` with no unseal key), so the database and the root key alone reveal nothing.
    /// Only auto-unseal seals can seal-wrap.
    var sealWrap: Bool { get }
    /// The key that made `blob`, for status and rewrap ("pkcs11 key_label=... mechanism=..."); nil
    /// when the seal has one key only.
    func keyName(of blob: [UInt8]) -> String?
    /// The key new blobs are wrapped with; nil when the seal has one key only.
    var currentKeyName: String? { get }
}

extension Seal {
    public var sealWrap: Bool { false }
    public func keyName(of blob: [UInt8]) -> String? { nil }
    public var currentKeyName: String? { nil }
}

/// The default seal: the root key is encrypted by an unseal key that exists only as Shamir shares.
public struct ShamirSeal: Seal {
    package static let rootKeyPath = "core/root-key"

    public init() {}

    public var type: String { "shamir" }
    public var isAutoUnseal: Bool { false }

    public func wrap(_ rootKey: SecureBytes, unsealKey: SecureBytes?) throws(CofferError) -> [UInt8] {
        guard let unsealKey else { throw CofferError(.internal, "the Shamir seal needs the unseal key to wrap") }
        return try Envelope.seal(key: unsealKey, term: 0, path: ShamirSeal.rootKeyPath, secret: rootKey)
    }

    public func unwrap(_ blob: [UInt8], unsealKey: SecureBytes?) throws(CofferError) -> SecureBytes {
        guard let unsealKey else { throw CofferError(.internal, "the Shamir seal needs the unseal key to unwrap") }
        _ = try Envelope.term(of: blob, path: ShamirSeal.rootKeyPath)
        return try Envelope.openSecure(key: unsealKey, blob: blob, path: ShamirSeal.rootKeyPath)
    }
}

/// The seal configuration, stored in plaintext at `core/seal-config`: enough to report seal-status
/// while sealed, and nothing secret.
package struct SealConfig: Sendable, Equatable {
    package static let path = "core/seal-config"

    package var type: String
    package var shares: Int
    package var threshold: Int
    /// HMAC-SHA256 of each current share under a fixed label. Lets unseal reject a share that is not
    /// one of the current set at once, without resetting the progress of the right ones. Shares are
    /// 256-bit random values, so these checks cannot be reversed.
    package var shareChecks: [String]
    /// Recovery shares for auto-unseal seals (0 for Shamir).
    var recoveryShares: Int = 0
    var recoveryThreshold: Int = 0

    static let checkLabel = Array("coffer share check v1".utf8)

    package static func check(_ share: SecureBytes) -> String {
        // MACed in place: no plain copy of the share.
        let key = HMACKey(SecureBytes(checkLabel))
        let mac = [UInt8](unsafeUninitializedCapacity: Digest.sha256Size) { out, count in
            share.withUnsafeBytes { key.mac($0, into: out.baseAddress!) }
            count = Digest.sha256Size
        }
        return Hex.encode(mac)
    }

    package var json: JSONValue {
        [
            "type": .string(type), "secret_shares": .int(shares), "secret_threshold": .int(threshold),
            "share_checks": .array(shareChecks.map { .string($0) }),
            "recovery_shares": .int(recoveryShares), "recovery_threshold": .int(recoveryThreshold),
        ]
    }

    init(type: String, shares: Int, threshold: Int, shareChecks: [String]) {
        self.type = type
        self.shares = shares
        self.threshold = threshold
        self.shareChecks = shareChecks
    }

    /// The configuration for `seal` with a fresh set of shares (unseal or recovery shares).
    package init(for seal: any Seal, shares: Int, threshold: Int, parts: [SecureBytes]) {
        self.init(type: seal.type, shares: shares, threshold: threshold, shareChecks: parts.map(SealConfig.check))
        if seal.isAutoUnseal {
            recoveryShares = shares
            recoveryThreshold = threshold
        }
    }

    package init(json: JSONValue) throws(CofferError) {
        let bad = CofferError(.corruptDatabase, "the seal configuration (core/seal-config) is malformed")
        guard let type = json["type"]?.stringValue, let shares = json["secret_shares"]?.intValue,
            let threshold = json["secret_threshold"]?.intValue, let checks = json["share_checks"]?.arrayValue
        else { throw bad }
        self.type = type
        self.shares = shares
        self.threshold = threshold
        self.shareChecks = checks.compactMap(\.stringValue)
        self.recoveryShares = json["recovery_shares"]?.intValue ?? 0
        self.recoveryThreshold = json["recovery_threshold"]?.intValue ?? 0
    }
}
