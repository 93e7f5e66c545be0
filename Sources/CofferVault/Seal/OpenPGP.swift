package import CofferAudit
/// OpenPGP public keys (RFC 4880, RFC 9580), read as far as Vault's `pgp_keys` and `pgp_key` need:
/// find the key a message to this person must be encrypted to, after checking that the primary key
/// really certified it.
///
/// A key is given as Vault takes it: base64 of the binary transferable public key
/// (`gpg --export <id> | base64 -w0`); ASCII armor (`gpg --export --armor`) is accepted too. Only
/// version 4 keys (what gpg makes) are read. Supported: RSA and Ed25519 primary keys (their
/// self-signatures are verified), RSA and Curve25519 (cv25519) encryption keys.
package import CofferCore
package import CofferFramework

package enum OpenPGP {
    /// Whom a message is encrypted to: the primary key's fingerprint, which is what Vault reports in
    /// `pgp_fingerprints`, and the key (the primary or a subkey) that may encrypt.
    struct Recipient: Sendable {
        /// Lowercase hex of the primary key's v4 fingerprint.
        let fingerprint: String
        let encryptionKey: Key
    }

    /// A version 4 public key or subkey packet.
    struct Key: Sendable {
        let created: UInt32
        let algorithm: UInt8
        /// The packet body, hashed for fingerprints and signatures.
        let body: [UInt8]
        let material: Material
        /// SHA-1 over 0x99, the two-byte length and the body (RFC 4880 §12.2).
        let fingerprint: [UInt8]

        var keyID: [UInt8] { Array(fingerprint.suffix(8)) }
        /// What a signature over this key hashes first.
        var hashPrefix: [UInt8] { [0x99, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body }
    }

    enum Material: Sendable {
        /// RSA (algorithms 1, 2, 3): modulus and exponent without leading zero bytes.
        case rsa(n: [UInt8], e: [UInt8])
        /// EdDSA (legacy algorithm 22) on Ed25519: the 32-byte public key.
        case ed25519([UInt8])
        /// ECDH (algorithm 18) on Curve25519: the 32-byte public key (native order) and the KDF
        /// parameters: hash algorithm and key-wrap cipher.
        case cv25519([UInt8], kdfHash: UInt8, kekCipher: UInt8)
        /// Anything else: the algorithm's name, for the error message.
        case unsupported(String)
    }

    /// Reads a recipient from the text of one `pgp_keys` entry. Errors say what is wrong with the
    /// key without quoting it; the caller names the entry.
    static func recipient(fromText text: String, now: Int64) throws(CofferError) -> Recipient {
        try recipient(from: try decodeKeyText(text), now: now)
    }

    /// The binary key inside base64 (newlines allowed, as `base64` wraps) or ASCII armor.
    static func decodeKeyText(_ text: String) throws(CofferError) -> [UInt8] {
        let trimmed = text.trimmingSpaces()
        guard !trimmed.isEmpty else { throw CofferError.invalid("is empty") }
        if trimmed.hasPrefix("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
            throw CofferError.invalid("is a private key; give the public key (gpg --export <id> | base64 -w0)")
        }
        var base64 = trimmed
        if trimmed.hasPrefix("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            // Armor: header lines up to the first empty line, then base64, then "=" and a CRC-24 line.
            let lines = trimmed.split(separator: "\n", omittingEmptySubsequences: false).map {
                String($0).trimmingSpaces()
            }
            guard let blank = lines.firstIndex(where: \.isEmpty),
                let end = lines.firstIndex(where: { $0.hasPrefix("-----END PGP") }),
                blank < end
            else { throw CofferError.invalid("is not valid ASCII armor") }
            base64 = lines[(blank + 1)..<end].filter { !$0.hasPrefix("=") }.joined()
        }
        let compact = String(base64.unicodeScalars.filter { $0 != "\n" && $0 != "\r" })
        guard let bytes = Base64.decode(compact), !bytes.isEmpty else {
            throw CofferError.invalid("is not base64 of an OpenPGP public key (give gpg --export <id> | base64 -w0)")
        }
        return bytes
    }

    /// The most self-signatures of one key checked before giving up: bounds the work an
    /// unauthenticated caller can ask for (a key gpg makes has one per user ID and subkey).
    static let maximumSignatureChecks = 32
    /// RSA moduli accepted, in bits: gpg makes up to 4096 (8192 in expert mode); smaller ones are too
    /// weak to guard an unseal share, larger ones only cost verification time.
    static let rsaBits = 2048...8192

    static func recipient(from bytes: [UInt8], now: Int64) throws(CofferError) -> Recipient {
        var reader = PacketReader(bytes: bytes)
        guard let (firstTag, firstBody) = try reader.next() else { throw CofferError.invalid("is empty") }
        switch firstTag {
        case 6: break
        case 5: throw CofferError.invalid("is a secret key; give the public key (gpg --export <id> | base64 -w0)")
        default:
            throw CofferError.invalid(
                "does not start with a public-key packet (is it a public key, not a message or signature?)"
            )
        }
        let primary = try Key(parsing: firstBody)

        // The components of a transferable public key, each with the signatures that follow it.
        var directSignatures: [Signature] = []
        var userSignatures: [(prefix: [UInt8], signature: Signature)] = []
        var subkeys: [(key: Key?, signatures: [Signature])] = []
        enum Component {
            case primary
            case user([UInt8])
            case subkey(Int)
        }
        var component = Component.primary
        while let (tag, body) = try reader.next() {
            switch tag {
            case 2:
                guard let signature = try Signature(parsing: body) else { continue }  // not version 4: not ours to use
                switch component {
                case .primary: directSignatures.append(signature)
                case .user(let prefix): userSignatures.append((prefix, signature))
                case .subkey(let index): subkeys[index].signatures.append(signature)
                }
            case 13:  // user ID
                component = .user([0xB4] + bigEndian32(body.count) + body)
            case 17:  // user attribute
                component = .user([0xD1] + bigEndian32(body.count) + body)
            case 14:
                // A subkey of a version this reader does not know is skipped, not an error.
                subkeys.append(((try? Key(parsing: body)), []))
                component = .subkey(subkeys.count - 1)
            case 6:
                throw CofferError.invalid("holds more than one public key; give exactly one key per entry")
            case 5, 7:
                throw CofferError.invalid("holds secret key material; give the public key only (gpg --export)")
            case 10, 12, 60...63:  // marker, trust, private or experimental packets
                continue
            default:
                throw CofferError.invalid(
                    "holds an OpenPGP packet of type \(tag), which does not belong in a public key"
                )
            }
        }

        var checks = 0
        func verified(_ signature: Signature, over prefix: [UInt8]) throws(CofferError) -> Bool {
            guard signature.isIssued(by: primary), signature.isCurrent(now: now) else { return false }
            checks += 1
            guard checks <= maximumSignatureChecks else {
                throw CofferError.invalid("has more than \(maximumSignatureChecks) self-signatures to check")
            }
            return try signature.verify(by: primary, over: prefix)
        }
        func latest(_ candidates: [Signature]) -> Signature? {
            candidates.max { $0.created < $1.created }
        }

        if case .unsupported(let name) = primary.material {
            throw CofferError.invalid(
                "has a primary key of type \(name); Coffer verifies RSA and Ed25519 primary keys only"
            )
        }
        if case .cv25519 = primary.material {
            throw CofferError.invalid("has an encryption-only primary key, which cannot certify itself")
        }
        try checkRSASize(primary)
        for signature in directSignatures where signature.type == 0x20 {
            if try verified(signature, over: primary.hashPrefix) { throw CofferError.invalid("is revoked") }
        }
        var selfSignatures: [Signature] = []
        for signature in directSignatures where signature.type == 0x1F {
            if try verified(signature, over: primary.hashPrefix) { selfSignatures.append(signature) }
        }
        for (prefix, signature) in userSignatures where (0x10...0x13).contains(signature.type) {
            if try verified(signature, over: primary.hashPrefix + prefix) { selfSignatures.append(signature) }
        }
        guard let selfSignature = latest(selfSignatures) else {
            throw CofferError.invalid(
                "has no valid self-signature by its primary key (export the whole key with gpg --export)"
            )
        }
        if let lifetime = selfSignature.keyExpiration, lifetime > 0, Int64(primary.created) + Int64(lifetime) <= now {
            throw CofferError.invalid("has expired")
        }

        // The newest valid subkey that may encrypt, as gpg chooses; else the primary key if it may.
        var best: (key: Key, created: UInt32)?
        var unusable: String?
        for (subkey, signatures) in subkeys {
            guard let subkey else { continue }
            let prefix = primary.hashPrefix + subkey.hashPrefix
            var revoked = false
            for signature in signatures where signature.type == 0x28 {
                if try verified(signature, over: prefix) { revoked = true }
            }
            if revoked { continue }
            var bindings: [Signature] = []
            for signature in signatures where signature.type == 0x18 {
                if try verified(signature, over: prefix) { bindings.append(signature) }
            }
            guard let binding = latest(bindings) else { continue }
            if let lifetime = binding.keyExpiration, lifetime > 0, Int64(subkey.created) + Int64(lifetime) <= now {
                continue
            }
            guard (binding.keyFlags ?? subkey.defaultFlags) & 0x0C != 0 else { continue }
            switch subkey.material {
            case .rsa, .cv25519:
                guard subkey.algorithm != 3 else { continue }  // RSA sign-only
                if best.map({ subkey.created >= $0.created }) ?? true { best = (subkey, subkey.created) }
            case .ed25519: continue
            case .unsupported(let name): unusable = name
            }
        }
        var encryptionKey = best?.key
        if encryptionKey == nil, (selfSignature.keyFlags ?? primary.defaultFlags) & 0x0C != 0,
            case .rsa = primary.material,
            primary.algorithm != 3
        {
            encryptionKey = primary
        }
        guard let encryptionKey else {
            if let unusable {
                throw CofferError.invalid(
                    "has only an encryption key of type \(unusable), which Coffer cannot encrypt to; use an RSA or Curve25519 (cv25519) key"
                )
            }
            throw CofferError.invalid(
                "has no valid key that may encrypt (add an encryption subkey: gpg --quick-add-key <fingerprint> rsa3072 encr)"
            )
        }
        try checkRSASize(encryptionKey)
        return Recipient(fingerprint: Hex.encode(primary.fingerprint), encryptionKey: encryptionKey)
    }

    static func checkRSASize(_ key: Key) throws(CofferError) {
        guard case .rsa(let n, _) = key.material else { return }
        let bits = n.isEmpty ? 0 : (n.count - 1) * 8 + (8 - n[0].leadingZeroBitCount)
        guard rsaBits.contains(bits) else {
            throw CofferError.invalid(
                "has a \(bits)-bit RSA key; RSA keys of \(rsaBits.lowerBound) to \(rsaBits.upperBound) bits are accepted"
            )
        }
    }
}

// MARK: Packets

extension OpenPGP {
    /// Reads packets (old and new header formats). Partial and indeterminate lengths, which only
    /// messages use, are refused.
    struct PacketReader {
        let bytes: [UInt8]
        var offset = 0

        mutating func next() throws(CofferError) -> (UInt8, [UInt8])? {
            guard offset < bytes.count else { return nil }
            let truncated = CofferError.invalid("is truncated (a packet runs past the end)")
            let ctb = bytes[offset]
            offset += 1
            guard ctb & 0x80 != 0 else {
                throw CofferError.invalid("is not OpenPGP data (a packet header is malformed)")
            }
            let tag: UInt8
            var length = 0
            func readLength(_ count: Int) throws(CofferError) -> Int {
                guard count <= bytes.count - offset else { throw truncated }
                var value = 0
                for i in 0..<count { value = value << 8 | Int(bytes[offset + i]) }
                offset += count
                return value
            }
            if ctb & 0x40 != 0 {
                tag = ctb & 0x3F
                let first = try readLength(1)
                switch first {
                case 0..<192: length = first
                case 192..<224: length = ((first - 192) << 8) + (try readLength(1)) + 192
                case 255: length = try readLength(4)
                default: throw CofferError.invalid("uses partial packet lengths, which a public key does not")
                }
            } else {
                tag = (ctb >> 2) & 0x0F
                switch ctb & 0x03 {
                case 0: length = try readLength(1)
                case 1: length = try readLength(2)
                case 2: length = try readLength(4)
                default: throw CofferError.invalid("uses an indeterminate packet length, which a public key does not")
                }
            }
            guard length <= bytes.count - offset else { throw truncated }
            defer { offset += length }
            return (tag, Array(bytes[offset..<(offset + length)]))
        }
    }

    /// Bounds-checked reads from a packet body.
    struct Cursor {
        let bytes: [UInt8]
        var offset = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var remaining: Int { bytes.count - offset }

        mutating func take(_ count: Int) throws(CofferError) -> [UInt8] {
            guard count >= 0, count <= remaining else {
                throw CofferError.invalid("is truncated (a packet is shorter than its fields)")
            }
            defer { offset += count }
            return Array(bytes[offset..<(offset + count)])
        }

        mutating func byte() throws(CofferError) -> UInt8 { try take(1)[0] }

        mutating func uint(_ count: Int) throws(CofferError) -> Int {
            try take(count).reduce(0) { $0 << 8 | Int($1) }
        }

        /// A multiprecision integer: a two-byte bit count, then the big-endian bytes.
        mutating func mpi() throws(CofferError) -> [UInt8] {
            let bits = try uint(2)
            return try take((bits + 7) / 8)
        }
    }

    static func bigEndian32(_ value: Int) -> [UInt8] {
        [
            UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
            UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value),
        ]
    }

    /// The DER bodies of the curve OIDs OpenPGP names in key packets.
    static let ed25519OID: [UInt8] = [0x2B, 0x06, 0x01, 0x04, 0x01, 0xDA, 0x47, 0x0F, 0x01]
    static let cv25519OID: [UInt8] = [0x2B, 0x06, 0x01, 0x04, 0x01, 0x97, 0x55, 0x01, 0x05, 0x01]

    static func algorithmName(_ algorithm: UInt8) -> String {
        switch algorithm {
        case 1, 2, 3: "RSA"
        case 16: "ElGamal"
        case 17: "DSA"
        case 18: "ECDH"
        case 19: "ECDSA"
        case 22: "EdDSA"
        case 25: "X25519"
        case 26: "X448"
        case 27: "Ed25519"
        case 28: "Ed448"
        default: "public-key algorithm \(algorithm)"
        }
    }
}

extension OpenPGP.Key {
    init(parsing body: [UInt8]) throws(CofferError) {
        var cursor = OpenPGP.Cursor(body)
        let version = try cursor.byte()
        guard version == 4 else {
            throw CofferError.invalid(
                "is an OpenPGP version \(version) key; only version 4 keys (what gpg makes by default) are supported"
            )
        }
        guard body.count <= 0xFFFF else { throw CofferError.invalid("has a key packet too large to fingerprint") }
        created = UInt32(try cursor.uint(4))
        algorithm = try cursor.byte()
        switch algorithm {
        case 1, 2, 3:
            let n = Array(try cursor.mpi().drop { $0 == 0 })
            let e = Array(try cursor.mpi().drop { $0 == 0 })
            guard !n.isEmpty, !e.isEmpty, e.count <= 8 else { throw CofferError.invalid("has a malformed RSA key") }
            material = .rsa(n: n, e: e)
        case 18, 22:
            let oidLength = Int(try cursor.byte())
            let oid = try cursor.take(oidLength)
            let point = try cursor.mpi()
            if algorithm == 22 {
                material =
                    oid == OpenPGP.ed25519OID && point.count == 33 && point[0] == 0x40
                    ? .ed25519(Array(point.dropFirst())) : .unsupported("EdDSA (a curve other than Ed25519)")
            } else {
                let kdf = try cursor.take(Int(try cursor.byte()))
                guard kdf.count >= 3, kdf[0] == 0x01 else {
                    throw CofferError.invalid("has malformed ECDH KDF parameters")
                }
                if oid != OpenPGP.cv25519OID || point.count != 33 || point[0] != 0x40 {
                    material = .unsupported("ECDH (a curve other than Curve25519)")
                } else if OpenPGP.kdfHashName(kdf[1]) == nil || OpenPGP.keyWrapCipher(kdf[2]) == nil {
                    material = .unsupported("ECDH (KDF parameters other than SHA-2 with AES key wrap)")
                } else {
                    material = .cv25519(Array(point.dropFirst()), kdfHash: kdf[1], kekCipher: kdf[2])
                }
            }
        default:
            material = .unsupported(OpenPGP.algorithmName(algorithm))
        }
        self.body = body
        fingerprint = OpenPGP.digest("SHA1", [0x99, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body)
        guard fingerprint.count == 20 else { throw CofferError(.internal, "SHA-1 is not available in OpenSSL") }
    }

    /// Key flags assumed when a signature has none: what the algorithm can do.
    var defaultFlags: UInt8 {
        switch algorithm {
        case 1: 0x0F
        case 2, 18: 0x0C
        case 3, 22: 0x03
        default: 0
        }
    }
}

// MARK: Signatures

extension OpenPGP {
    /// A version 4 signature packet, with what key selection needs from its subpackets.
    struct Signature {
        let type: UInt8
        let publicKeyAlgorithm: UInt8
        let hashAlgorithm: UInt8
        /// Version through the hashed subpackets: hashed, then the trailer.
        let hashedPart: [UInt8]
        let hashPrefix16: [UInt8]
        let values: [[UInt8]]
        var created: UInt32 = 0
        var signatureExpiration: UInt32?
        var keyExpiration: UInt32?
        var keyFlags: UInt8?
        var issuerKeyID: [UInt8]?
        var issuerFingerprint: [UInt8]?
        /// A critical subpacket this reader does not understand: the signature must not be used.
        var unknownCritical = false

        /// Subpacket types RFC 4880 and RFC 9580 define; an unknown one marked critical voids the signature.
        static let knownSubpackets: Set<UInt8> = [
            2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 16, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
            32, 33, 34, 35, 37, 38, 39,
        ]

        /// Nil for a signature of another version (v3 and v6 signatures are not used here).
        init?(parsing body: [UInt8]) throws(CofferError) {
            var cursor = Cursor(body)
            guard try cursor.byte() == 4 else { return nil }
            type = try cursor.byte()
            publicKeyAlgorithm = try cursor.byte()
            hashAlgorithm = try cursor.byte()
            let hashedLength = try cursor.uint(2)
            let hashed = try cursor.take(hashedLength)
            hashedPart = Array(body[0..<(6 + hashedLength)])
            let unhashed = try cursor.take(try cursor.uint(2))
            hashPrefix16 = try cursor.take(2)
            var values: [[UInt8]] = []
            while cursor.remaining > 0 { values.append(try cursor.mpi()) }
            self.values = values
            try readSubpackets(hashed, hashed: true)
            try readSubpackets(unhashed, hashed: false)
        }

        private mutating func readSubpackets(_ area: [UInt8], hashed: Bool) throws(CofferError) {
            var cursor = Cursor(area)
            while cursor.remaining > 0 {
                let first = Int(try cursor.byte())
                let length: Int
                switch first {
                case 0..<192: length = first
                case 192..<255: length = ((first - 192) << 8) + Int(try cursor.byte()) + 192
                default: length = try cursor.uint(4)
                }
                guard length >= 1 else { throw CofferError.invalid("has a malformed signature subpacket") }
                let content = try cursor.take(length)
                let critical = content[0] & 0x80 != 0
                let kind = content[0] & 0x7F
                let value = Array(content.dropFirst())
                // Only hashed subpackets are trusted, except the issuer, which only picks the key to try.
                switch (kind, hashed) {
                case (2, true) where value.count == 4: created = UInt32(value.reduce(0) { $0 << 8 | Int($1) })
                case (3, true) where value.count == 4:
                    signatureExpiration = UInt32(value.reduce(0) { $0 << 8 | Int($1) })
                case (9, true) where value.count == 4: keyExpiration = UInt32(value.reduce(0) { $0 << 8 | Int($1) })
                case (27, true) where !value.isEmpty: keyFlags = value[0]
                case (16, _) where value.count == 8: issuerKeyID = issuerKeyID ?? value
                case (33, _) where value.count == 21 && value[0] == 4:
                    issuerFingerprint = issuerFingerprint ?? Array(value.dropFirst())
                default: break
                }
                if hashed, critical, !Signature.knownSubpackets.contains(kind) { unknownCritical = true }
            }
        }

        func isIssued(by key: Key) -> Bool {
            if let issuerFingerprint { return issuerFingerprint == key.fingerprint }
            if let issuerKeyID { return issuerKeyID == key.keyID }
            return true
        }

        /// Has a creation time, has not expired, and carries no critical subpacket we do not understand.
        func isCurrent(now: Int64) -> Bool {
            guard created > 0, !unknownCritical else { return false }
            if let signatureExpiration, signatureExpiration > 0, Int64(created) + Int64(signatureExpiration) <= now {
                return false
            }
            return true
        }

        /// The OpenSSL name of the hash, if it is one a signature may still rely on: RFC 9580 §9.5
        /// forbids SHA-1 (and worse) for signatures made after 2013.
        var hashName: String? {
            switch hashAlgorithm {
            case 2 where created < 1_356_998_400: "SHA1"
            case 8: "SHA256"
            case 9: "SHA384"
            case 10: "SHA512"
            case 11: "SHA224"
            case 12: "SHA3-256"
            case 14: "SHA3-512"
            default: nil
            }
        }

        /// Checks the signature by `key` over `prefix` (the signed key, user ID or subkey data).
        func verify(by key: Key, over prefix: [UInt8]) throws(CofferError) -> Bool {
            guard let hashName else { return false }
            let digest = OpenPGP.digest(hashName, prefix + hashedPart + [0x04, 0xFF] + bigEndian32(hashedPart.count))
            guard digest.count >= 2, Array(digest.prefix(2)) == hashPrefix16 else { return false }
            switch key.material {
            case .rsa(let n, let e):
                guard publicKeyAlgorithm == 1 || publicKeyAlgorithm == 3, values.count == 1 else { return false }
                let signature = Array(values[0].drop { $0 == 0 })
                guard signature.count <= n.count else { return false }
                let padded = [UInt8](repeating: 0, count: n.count - signature.count) + signature
                return try OpenPGP.verifyRSA(n: n, e: e, digest: digest, hashName: hashName, signature: padded)
            case .ed25519(let point):
                guard publicKeyAlgorithm == 22, values.count == 2 else { return false }
                let r = Array(values[0].drop { $0 == 0 })
                let s = Array(values[1].drop { $0 == 0 })
                guard r.count <= 32, s.count <= 32 else { return false }
                let signature =
                    [UInt8](repeating: 0, count: 32 - r.count) + r + [UInt8](repeating: 0, count: 32 - s.count) + s
                return OpenPGP.verifyEd25519(publicKey: point, message: digest, signature: signature)
            case .cv25519, .unsupported:
                return false
            }
        }
    }
}
