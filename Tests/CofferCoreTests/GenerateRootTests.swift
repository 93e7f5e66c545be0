import Testing

@testable import CofferCore

@Suite struct GenerateRootTests {
    /// base64 without padding, XORed with the OTP: what `bao operator generate-root -decode` undoes.
    func decode(_ encoded: String, otp: String) throws -> String {
        let bytes = try #require(Base64.decode(encoded + String(repeating: "=", count: (4 - encoded.count % 4) % 4)))
        return String(decoding: zip(bytes, Array(otp.utf8)).map { $0 ^ $1 }, as: UTF8.self)
    }

    @Test func unsealSharesGenerateANewRootTokenEncodedWithTheOTP() throws {
        let (core, result) = try makeCore(shares: 3, threshold: 2)
        #expect(
            try decode("GR0gBgU6BgokBVk1Ohd4MVU4eT8rWA5JPy0", otp: "j3cQuTCcGb4aQDNIgVANNhaptO")
                == "s.CWpnEicgmTkS6x2n8qe0o9Kb",
            "the encoding OpenBao 2.7.2 uses"
        )
        let idle = try core.call(.read, "sys/generate-root/attempt", token: nil)
        #expect(idle.raw?["started"] == false && idle.raw?["otp_length"] == 26 && idle.raw?["required"] == 2)
        expectError(.invalidArgument, containing: "26 characters") {
            try core.call(.update, "sys/generate-root/attempt", ["otp": "short"], token: nil)
        }
        // OpenBao's path answers in the envelope; Vault's unwrapped.
        let started = try core.call(.update, "sys/generate-root-token/attempt", token: nil)
        let otp = try #require(started.data?["otp"]?.stringValue)
        let nonce = try #require(started.data?["nonce"]?.stringValue)
        expectError(.invalidArgument, containing: "already in progress") {
            try core.call(.update, "sys/generate-root/attempt", token: nil)
        }
        expectError(.invalidArgument, containing: "the nonce does not match the root generation in progress") {
            try core.call(
                .update,
                "sys/generate-root/update",
                ["key": .string(result.hexKeys[0]), "nonce": "nope"],
                token: nil
            )
        }
        var foreign = result.keys[1].unsafeCopy
        foreign[0] ^= 1
        expectError(.invalidArgument, containing: "not one of the current unseal keys") {
            try core.call(
                .update,
                "sys/generate-root/update",
                ["key": .string(Hex.encode(foreign)), "nonce": .string(nonce)],
                token: nil
            )
        }
        let half = try core.call(
            .update,
            "sys/generate-root/update",
            ["key": .string(result.hexKeys[2]), "nonce": .string(nonce)],
            token: nil
        )
        #expect(half.raw?["progress"] == 1 && half.raw?["complete"] == false)
        let done = try core.call(
            .update,
            "sys/generate-root/update",
            ["key": .string(result.hexKeys[0]), "nonce": .string(nonce)],
            token: nil
        )
        #expect(done.raw?["complete"] == true)
        let token = try decode(try #require(done.raw?["encoded_token"]?.stringValue), otp: otp)
        #expect(token.hasPrefix("s.") && token != result.rootToken)
        #expect(try core.call(.read, "auth/token/lookup-self", token: token).data?["policies"] == ["root"])
        #expect(
            try core.call(.read, "sys/generate-root/attempt", token: nil).raw?["started"] == false,
            "done: nothing in progress"
        )
    }

    @Test func cancellingForgetsTheSharesAndSealedVaultsRefuse() throws {
        let (core, result) = try makeCore(shares: 3, threshold: 2)
        let started = try core.call(.update, "sys/generate-root/attempt", token: nil)
        let nonce = try #require(started.raw?["nonce"]?.stringValue)
        try core.call(
            .update,
            "sys/generate-root/update",
            ["key": .string(result.hexKeys[0]), "nonce": .string(nonce)],
            token: nil
        )
        try core.call(.delete, "sys/generate-root/attempt", token: nil)
        expectError(.invalidArgument, containing: "no root generation is in progress") {
            try core.call(
                .update,
                "sys/generate-root/update",
                ["key": .string(result.hexKeys[1]), "nonce": .string(nonce)],
                token: nil
            )
        }
        core.sealVault()
        expectError(.sealed, containing: "Vault is sealed") {
            try core.call(.update, "sys/generate-root/attempt", token: nil)
        }
    }
}
