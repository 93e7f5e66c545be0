/// Shamir's secret sharing over GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1.
///
/// A share is the evaluations of one random polynomial per secret byte, followed by one byte holding
/// the x coordinate, the layout Vault uses, so a share is `secret.count + 1` bytes. Field arithmetic
/// runs in constant time (no table lookups indexed by secret data).
package enum Shamir {
    /// Multiplication in GF(2^8), constant time.
    package static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var a = a
        var b = b
        var product: UInt8 = 0
        for _ in 0..<8 {
            product ^= (0 &- (b & 1)) & a
            let carry = 0 &- (a >> 7)
            a = (a << 1) ^ (carry & 0x1B)
            b >>= 1
        }
        return product
    }

    /// The multiplicative inverse (a^254); zero maps to zero.
    package static func inverse(_ a: UInt8) -> UInt8 {
        var result: UInt8 = 1
        var base = a
        var exponent = 254
        while exponent > 0 {
            if exponent & 1 == 1 { result = multiply(result, base) }
            base = multiply(base, base)
            exponent >>= 1
        }
        return result
    }

    /// Splits `secret` into `shares` parts of which any `threshold` recover it.
    package static func split(_ secret: SecureBytes, shares: Int, threshold: Int) throws(CofferError) -> [SecureBytes] {
        guard shares >= 1, shares <= 255 else { throw CofferError.invalid("secret_shares must be between 1 and 255") }
        guard threshold >= 1, threshold <= shares else {
            throw CofferError.invalid("secret_threshold must be between 1 and secret_shares (\(shares))")
        }
        guard secret.count > 0 else { throw CofferError.invalid("cannot split an empty secret") }
        if shares > 1, threshold == 1 {
            throw CofferError.invalid("secret_threshold must be at least 2 when secret_shares is more than 1")
        }
        if shares == 1 { return [secret.withX(1)] }

        // Distinct non-zero x coordinates in random order.
        var xs = Array(UInt8(1)...UInt8(255))
        for i in stride(from: xs.count - 1, to: 0, by: -1) {
            let j = Int(uniform(UInt32(i + 1)))
            xs.swapAt(i, j)
        }
        let chosen = Array(xs.prefix(shares))
        let length = secret.count
        // coefficients[byte][k] for k in 1..<threshold, kept in secure memory.
        let coefficients = SecureBytes(randomCount: length * (threshold - 1))
        return chosen.map { x in
            SecureBytes(count: length + 1) { out in
                secret.withUnsafeBytes { s in
                    coefficients.withUnsafeBytes { c in
                        for i in 0..<length {
                            // Horner's rule from the highest coefficient down to the secret byte.
                            var y: UInt8 = 0
                            for k in stride(from: threshold - 2, through: 0, by: -1) {
                                y = multiply(y, x) ^ c[i * (threshold - 1) + k]
                            }
                            y = multiply(y, x) ^ s[i]
                            out[i] = y
                        }
                    }
                }
                out[length] = x
            }
        }
    }

    /// Recombines shares by Lagrange interpolation at zero. With too few or wrong shares the result is
    /// a wrong secret, not an error: the caller verifies it (the root key fails to decrypt).
    package static func combine(_ parts: [SecureBytes]) throws(CofferError) -> SecureBytes {
        guard let first = parts.first else { throw CofferError.invalid("no unseal keys were given") }
        let length = first.count - 1
        guard length > 0, parts.allSatisfy({ $0.count == first.count }) else {
            throw CofferError.invalid("unseal keys have different lengths; they do not belong together")
        }
        let xs = parts.map { p in p.withUnsafeBytes { $0[length] } }
        guard Set(xs).count == xs.count else { throw CofferError.invalid("the same unseal key was given twice") }
        if parts.count == 1 {
            return first.withUnsafeBytes { SecureBytes(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
        }
        // Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j); subtraction is XOR.
        var basis = [UInt8](repeating: 1, count: parts.count)
        for j in 0..<parts.count {
            for m in 0..<parts.count where m != j {
                basis[j] = multiply(basis[j], multiply(xs[m], inverse(xs[m] ^ xs[j])))
            }
        }
        return SecureBytes(count: length) { out in
            for i in 0..<length { out[i] = 0 }
            for (j, part) in parts.enumerated() {
                part.withUnsafeBytes { p in
                    for i in 0..<length { out[i] ^= multiply(p[i], basis[j]) }
                }
            }
        }
    }

    /// A uniform random number in 0..<bound.
    static func uniform(_ bound: UInt32) -> UInt32 {
        let limit = UInt32.max - UInt32.max % bound
        while true {
            var v: UInt32 = 0
            withUnsafeMutableBytes(of: &v) { Random.fill($0) }
            if v < limit { return v % bound }
        }
    }
}

extension SecureBytes {
    /// The bytes followed by `x`, with no plain copy on the way.
    fileprivate func withX(_ x: UInt8) -> SecureBytes {
        withUnsafeBytes { s in
            SecureBytes(count: s.count + 1) { out in
                out.copyMemory(from: s)
                out[s.count] = x
            }
        }
    }
}
