import COpenSSL
package import CofferCore

/// A scrypt password hash with its parameters, so they can change later without invalidating the
/// hashes already stored. Text form (also what `password_hash` takes):
/// `$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt, standard base64>$<hash, standard base64>`.
///
/// The default, N = 2^14, r = 8, p = 1 (16 MiB, 16-byte salt, 32-byte hash), costs about 40 ms on one
/// core of the build machine when it is idle (85 ms while two other builds share its two cores);
/// N = 2^15 cost twice that, past the 20-60 ms aimed at.
package struct PasswordHash: Sendable, Equatable {
    package static let defaultLogN = 14
    package static let defaultR = 8
    package static let defaultP = 1
    static let saltLength = 16
    static let hashLength = 32
    /// The most memory (128·r·N bytes) a hash may ask for: a `password_hash` beyond it is refused.
    static let maximumMemory = 256 << 20

    let logN: Int
    let r: Int
    let p: Int
    let salt: [UInt8]
    let hash: [UInt8]

    /// Hashes `password` with the default parameters and a fresh salt.
    package static func make(password: String) throws(CofferError) -> PasswordHash {
        let salt = Random.bytes(saltLength)
        guard
            let hash = derive(
                Array(password.utf8),
                salt: salt,
                logN: defaultLogN,
                r: defaultR,
                p: defaultP,
                length: hashLength
            )
        else { throw CofferError(.internal, "scrypt failed in OpenSSL") }
        return PasswordHash(logN: defaultLogN, r: defaultR, p: defaultP, salt: salt, hash: hash)
    }

    init(logN: Int, r: Int, p: Int, salt: [UInt8], hash: [UInt8]) {
        self.logN = logN
        self.r = r
        self.p = p
        self.salt = salt
        self.hash = hash
    }

    /// Parses the text form; nil when it is not one or its parameters are out of bounds
    /// (log2 N 1...24, r 1...32, p 1...16, at most 256 MiB, salt 8...64 bytes, hash 16...64 bytes).
    package init?(encoded text: String) {
        guard text.utf8.count <= 512, text.hasPrefix("$scrypt$") else { return nil }
        let parts = text.dropFirst("$scrypt$".count).split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var values: [String: Int] = [:]
        for item in parts[0].split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2, pair[1].utf8.count <= 3, let value = Int(pair[1]), values[String(pair[0])] == nil
            else { return nil }
            values[String(pair[0])] = value
        }
        guard values.count == 3, let logN = values["ln"], let r = values["r"], let p = values["p"],
            (1...24).contains(logN), (1...32).contains(r), (1...16).contains(p),
            128 * r * (1 << logN) <= PasswordHash.maximumMemory,
            let salt = Base64.decode(String(parts[1])), (8...64).contains(salt.count),
            let hash = Base64.decode(String(parts[2])), (16...64).contains(hash.count)
        else { return nil }
        self.init(logN: logN, r: r, p: p, salt: salt, hash: hash)
    }

    package var encoded: String {
        "$scrypt$ln=\(logN),r=\(r),p=\(p)$\(Base64.encode(salt))$\(Base64.encode(hash))"
    }

    /// Whether `password` hashes to this hash (compared in constant time).
    package func verify(_ password: String) -> Bool {
        guard
            var derived = PasswordHash.derive(
                Array(password.utf8),
                salt: salt,
                logN: logN,
                r: r,
                p: p,
                length: hash.count
            )
        else { return false }
        defer { derived.wipe() }
        return ConstantTime.equals(derived, hash)
    }

    /// scrypt (RFC 7914) from OpenSSL; nil if OpenSSL refuses the parameters.
    static func derive(_ password: [UInt8], salt: [UInt8], logN: Int, r: Int, p: Int, length: Int) -> [UInt8]? {
        let count = password.count
        // A buffer with a base address even for an empty password (only its first `count` bytes are read).
        var password = password.isEmpty ? [0] : password
        defer { password.wipe() }
        let memory = UInt64(128 * r * ((1 << logN) + p + 2)) + (1 << 20)
        var out = [UInt8](repeating: 0, count: length)
        let ok = password.withUnsafeBytes { pw in
            salt.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { o in
                    EVP_PBE_scrypt(
                        pw.baseAddress!.assumingMemoryBound(to: CChar.self),
                        count,
                        s.baseAddress,
                        s.count,
                        UInt64(1) << UInt64(logN),
                        UInt64(r),
                        UInt64(p),
                        memory,
                        o.baseAddress,
                        o.count
                    )
                }
            }
        }
        return ok == 1 ? out : nil
    }
}
