package import CofferAudit
/// A root-token generation in progress.
package import CofferCore
package import CofferFramework

package struct GenerateRootState: ShareQuorum {
    package let nonce: String
    /// How the new token is handed out: XORed with a one-time pad as long as a token, or encrypted
    /// to an OpenPGP key (`pgp_key`).
    enum Encoding {
        case otp(SecureBytes)
        case pgp(OpenPGP.Recipient)
    }
    let encoding: Encoding
    package var parts: [SecureBytes] = []

    var pgpFingerprint: String {
        if case .pgp(let recipient) = encoding { return recipient.fingerprint }
        return ""
    }
}

extension Core {
    /// The length of a root token ("s." and 24 characters), hence of the one-time password.
    static let rootTokenLength = 26

    /// `sys/generate-root/attempt|update` (Vault) and `sys/generate-root-token/...` (what the
    /// OpenBao 2.x CLI calls): a new root token for whoever holds a threshold of the unseal keys, or
    /// of the recovery keys with an auto-unseal seal. The token is returned XORed with a one-time
    /// password and base64-encoded (`bao operator generate-root -decode=... -otp=...` decodes it),
    /// so nobody watching the responses alone learns it; or, with `pgp_key`, encrypted to that OpenPGP
    /// key as Vault does (`base64 -d | gpg -d` gives the token).
    func handleGenerateRoot(_ request: Request) throws(CofferError) -> Response {
        guard !barrier.isSealed else { throw CofferError.sealedError }
        guard let config = try storedSealConfig() else {
            throw CofferError(.notInitialized, "Vault is not initialized")
        }
        // Vault answers sys/generate-root unwrapped; OpenBao's sys/generate-root-token in the envelope.
        let enveloped = request.path.hasPrefix("sys/generate-root-token/")
        let path = request.path.replacingPrefix("sys/generate-root-token/", with: "sys/generate-root/")
        func reply(_ body: [String: JSONValue]) -> Response { enveloped ? Response(data: body) : .raw(.object(body)) }
        let data = request.data
        switch (path, request.operation) {
        case ("sys/generate-root/attempt", .read):
            return reply(generateRootStatus(config))
        case ("sys/generate-root/attempt", .update), ("sys/generate-root/attempt", .create):
            let pgpKey = try data.string("pgp_key") ?? ""
            let given = try data.string("otp") ?? ""
            guard pgpKey.isEmpty || given.isEmpty else {
                throw CofferError.invalid("only one of otp and pgp_key may be given")
            }
            guard generateRoot.withLock({ $0 == nil }) else {
                throw CofferError.invalid("root generation already in progress")
            }
            var generated = false
            let encoding: GenerateRootState.Encoding
            if !pgpKey.isEmpty {
                do {
                    encoding = .pgp(try OpenPGP.recipient(fromText: pgpKey, now: clock.now().seconds))
                } catch  where error.code == .invalidArgument {
                    throw CofferError.invalid("pgp_key \(error.message)")
                }
            } else if !given.isEmpty {
                guard given.utf8.count == Core.rootTokenLength else {
                    throw CofferError.invalid(
                        "the otp must be \(Core.rootTokenLength) characters long (otp_length), got \(given.utf8.count)"
                    )
                }
                encoding = .otp(SecureBytes(Array(given.utf8)))
            } else {
                encoding = .otp(SecureBytes(Array(Random.base62(Core.rootTokenLength).utf8)))
                generated = true
            }
            try generateRoot.withLock { (state) throws(CofferError) in
                guard state == nil else { throw CofferError.invalid("root generation already in progress") }
                state = GenerateRootState(nonce: Random.uuid(), encoding: encoding)
            }
            var body = generateRootStatus(config)
            // The generated OTP is shown once, in this answer only.
            if generated, case .otp(let otp) = encoding {
                body["otp"] = .string(otp.withUnsafeBytes { String(decoding: $0, as: UTF8.self) })
            }
            return reply(body)
        case ("sys/generate-root/attempt", .delete):
            generateRoot.withLock { $0 = nil }
            return .noContent
        case ("sys/generate-root/update", .update), ("sys/generate-root/update", .create):
            guard let nonce = try data.string("nonce"), !nonce.isEmpty else {
                throw CofferError.invalid("nonce is required")
            }
            guard let text = try data.string("key"), let key = Hex.decode(text) ?? Base64.decode(text) else {
                throw CofferError.invalid("'key' must be a valid hex or base64 string")
            }
            let share = try checkedShare(key, config: config)
            let ready = try generateRoot.withLock { (state) throws(CofferError) in
                try state.add(share, nonce: nonce, threshold: config.threshold, operation: "root generation")
            }
            guard let ready else { return reply(generateRootStatus(config)) }
            defer { generateRoot.withLock { $0 = nil } }
            let encoded = try lifecycle.withLock { (_) throws(CofferError) -> String in
                try verifyShares(ready.parts)
                let token = try createRootToken()
                switch ready.encoding {
                case .otp(let otp):
                    return otp.withUnsafeBytes { otp in
                        Base64.encode(zip(Array(token.utf8), otp).map { $0 ^ $1 }).filter { $0 != "=" }
                    }
                case .pgp(let recipient):
                    do throws(CofferError) {
                        return Base64.encode(try OpenPGP.encrypt(Array(token.utf8), to: recipient))
                    } catch {
                        // A token nobody can receive must not stay valid.
                        if let entry = try? tokens.lookup(token: token) { _ = try? tokens.revoke(hash: entry.idHash) }
                        throw error
                    }
                }
            }
            return reply([
                "started": true, "nonce": .string(ready.nonce), "progress": .int(ready.parts.count),
                "required": .int(config.threshold),
                "complete": true, "encoded_token": .string(encoded), "encoded_root_token": .string(encoded),
                "pgp_fingerprint": .string(ready.pgpFingerprint),
            ])
        default:
            throw CofferError(
                .unsupportedOperation,
                "unsupported operation: \(request.operation.rawValue) on \(request.path)"
            )
        }
    }

    func generateRootStatus(_ config: SealConfig) -> [String: JSONValue] {
        let state = generateRoot.withLock { $0 }
        var body: [String: JSONValue] = [
            "started": .bool(state != nil), "progress": .int(state?.parts.count ?? 0),
            "required": .int(config.threshold),
            "complete": false, "otp": "", "otp_length": .int(Core.rootTokenLength), "encoded_token": "",
            "encoded_root_token": "",
        ]
        if let state {
            body["nonce"] = .string(state.nonce)
            body["pgp_fingerprint"] = .string(state.pgpFingerprint)
        }
        return body
    }
}
