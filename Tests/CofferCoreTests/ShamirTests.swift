import Testing

@testable import CofferCore

@Suite struct ShamirTests {
    // FIPS-197 section 4.2: {57}•{83} = {c1}, {57}•{13} = {fe}; {53} and {ca} are inverses (section 5.1.1).
    @Test func fieldArithmeticKnownAnswers() {
        #expect(Shamir.multiply(0x57, 0x83) == 0xC1)
        #expect(Shamir.multiply(0x57, 0x13) == 0xFE)
        #expect(Shamir.inverse(0x53) == 0xCA)
        for a in 1...255 { #expect(Shamir.multiply(UInt8(a), Shamir.inverse(UInt8(a))) == 1) }
    }

    @Test func anyThresholdOfSharesRecoverTheSecret() throws {
        let secret = SecureBytes(randomCount: 32)
        let shares = try Shamir.split(secret, shares: 5, threshold: 3)
        #expect(shares.count == 5 && shares.allSatisfy { $0.count == 33 })
        #expect(Set(shares.map { $0.unsafeCopy[32] }).count == 5, "x coordinates must be distinct")
        for i in 0..<5 {
            for j in (i + 1)..<5 {
                for k in (j + 1)..<5 {
                    #expect(try Shamir.combine([shares[i], shares[j], shares[k]]).constantTimeEquals(secret))
                }
            }
        }
        // Two shares interpolate a different polynomial: not the secret.
        #expect(!(try Shamir.combine([shares[0], shares[1]]).constantTimeEquals(secret)))
        // Order does not matter; more than the threshold works too.
        #expect(try Shamir.combine(shares.reversed()).constantTimeEquals(secret))
    }

    @Test func badParametersAreRejected() throws {
        let secret = SecureBytes(randomCount: 32)
        expectError(.invalidArgument, containing: "secret_threshold") {
            _ = try Shamir.split(secret, shares: 3, threshold: 4)
        }
        expectError(.invalidArgument, containing: "secret_shares") {
            _ = try Shamir.split(secret, shares: 256, threshold: 2)
        }
        expectError(.invalidArgument, containing: "at least 2") {
            _ = try Shamir.split(secret, shares: 3, threshold: 1)
        }
        let shares = try Shamir.split(secret, shares: 3, threshold: 2)
        expectError(.invalidArgument, containing: "twice") { _ = try Shamir.combine([shares[0], shares[0]]) }
        expectError(.invalidArgument, containing: "lengths") {
            _ = try Shamir.combine([shares[0], SecureBytes([1, 2])])
        }
    }
}
