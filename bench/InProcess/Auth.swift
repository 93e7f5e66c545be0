// Logins in process against the floor of their cryptography, in one process and one run.
//
//   coffer-bench auth [--iterations N] [--rounds R] [--json PATH]
//
// 1. JWT login: `POST auth/jwt/login {"role","jwt"}` through `Core.handle` on a memory vault (no
//    fsync in the figure), ES256 with a static public key (`jwt_validation_pubkeys`), a batch-token
//    role and a service-token role, in alternating rounds with the floor: one ES256 verification of
//    the same token's signature by OpenSSL (`EVP_DigestVerify` over the signing input with the
//    parsed P-256 key; the JWT's raw r‖s signature converted to DER once, outside the loop).
// 2. AppRole login: `POST auth/approle/login {"role_id","secret_id"}` (unlimited secret-id uses),
//    batch and service tokens, in the same rounds (no floor: an HMAC and a storage read).
// Issue 17's goal: JWT login (batch) p50 <= 1.5x the ES256 verify floor's p50.
import COpenSSL
import Coffer
import Foundation

let authFloorName = "floor: one ES256 verify (OpenSSL EVP_DigestVerify, P-256)"
let jwtBatchName = "jwt login ES256 (Swift API, handle; batch token, memory)"
let jwtServiceName = "jwt login ES256 (Swift API, handle; service token, memory)"
let appRoleBatchName = "approle login (Swift API, handle; batch token, memory)"
let appRoleServiceName = "approle login (Swift API, handle; service token, memory)"

/// A P-256 key pair made with OpenSSL, and ES256 JWTs signed with it.
final class ES256Signer {
    let key: OpaquePointer

    init() throws {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else { throw BenchError("EVP_PKEY_CTX_new") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var pkey: OpaquePointer?
        let ok =
            EVP_PKEY_keygen_init(ctx) == 1
            && EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1 && EVP_PKEY_keygen(ctx, &pkey) == 1
        guard ok, let pkey else { throw BenchError("P-256 key generation failed") }
        key = pkey
    }

    deinit { EVP_PKEY_free(key) }

    /// The public key as PEM (what `jwt_validation_pubkeys` takes).
    var publicPEM: String {
        let bio = BIO_new(BIO_s_mem())!
        defer { BIO_free(bio) }
        PEM_write_bio_PUBKEY(bio, key)
        var pointer: UnsafeMutablePointer<CChar>?
        let length = coffer_bio_mem_data(bio, &pointer)
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: Int(length)), as: UTF8.self)
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// The DER ECDSA signature of `input` (SHA-256).
    func signDER(_ input: [UInt8]) throws -> [UInt8] {
        let md = EVP_MD_CTX_new()!
        defer { EVP_MD_CTX_free(md) }
        var length = 0
        guard EVP_DigestSignInit(md, nil, EVP_sha256(), nil, key) == 1,
            EVP_DigestSign(md, nil, &length, input, input.count) == 1
        else { throw BenchError("EVP_DigestSign") }
        var signature = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(md, &signature, &length, input, input.count) == 1 else {
            throw BenchError("EVP_DigestSign")
        }
        return Array(signature.prefix(length))
    }

    /// A compact ES256 JWT with `claims` (raw r‖s signature, as JWS wants), and its DER signature.
    func jwt(_ claims: [String: Any]) throws -> (token: String, signingInput: [UInt8], der: [UInt8]) {
        let header = try JSONSerialization.data(withJSONObject: ["alg": "ES256", "typ": "JWT"], options: .sortedKeys)
        let body = try JSONSerialization.data(withJSONObject: claims, options: .sortedKeys)
        let input = Array((ES256Signer.base64url(Array(header)) + "." + ES256Signer.base64url(Array(body))).utf8)
        let der = try signDER(input)
        // DER SEQUENCE { INTEGER r, INTEGER s } -> 32-byte r ‖ 32-byte s.
        var raw: [UInt8] = []
        var index = 2
        if der[1] & 0x80 != 0 { index += Int(der[1] & 0x7f) }
        for _ in 0..<2 {
            let length = Int(der[index + 1])
            var integer = Array(der[(index + 2)..<(index + 2 + length)])
            while integer.count > 32, integer.first == 0 { integer.removeFirst() }
            raw += [UInt8](repeating: 0, count: 32 - integer.count) + integer
            index += 2 + length
        }
        return (String(decoding: input, as: UTF8.self) + "." + ES256Signer.base64url(raw), input, der)
    }

    /// One ES256 verification: the floor.
    func verify(_ input: [UInt8], _ der: [UInt8], _ md: OpaquePointer) -> Bool {
        EVP_DigestVerifyInit(md, nil, EVP_sha256(), nil, key) == 1
            && EVP_DigestVerify(md, der, der.count, input, input.count) == 1
    }
}

func runAuth(_ bench: Bench, iterations: Int, rounds: Int) throws -> [String: Any] {
    let (vault, _) = try Vault.openDev()
    defer { vault.close() }
    let core = vault.core
    func call(
        _ op: Request.Operation,
        _ path: String,
        _ data: [String: JSONValue],
        token: String? = "root"
    ) throws
        -> Response
    {
        try core.handle(Request(op, path, data: data, token: token))
    }
    let signer = try ES256Signer()
    let now = Int(Date().timeIntervalSince1970)
    let jwt = try signer.jwt(["sub": "bench-client", "aud": "bench", "iat": now, "exp": now + 86400])
    _ = try call(.update, "sys/auth/jwt", ["type": "jwt"])
    _ = try call(.update, "auth/jwt/config", ["jwt_validation_pubkeys": [.string(signer.publicPEM)]])
    for type in ["batch", "service"] {
        _ = try call(
            .update,
            "auth/jwt/role/\(type)",
            [
                "role_type": "jwt", "bound_audiences": ["bench"], "user_claim": "sub", "token_policies": ["default"],
                "token_type": .string(type), "token_ttl": "1h",
            ]
        )
    }
    _ = try call(.update, "sys/auth/approle", ["type": "approle"])
    var appRole: [String: (String, String)] = [:]
    for type in ["batch", "service"] {
        _ = try call(
            .update,
            "auth/approle/role/\(type)",
            ["token_policies": ["default"], "token_type": .string(type), "token_ttl": "1h"]
        )
        let roleID = try call(.read, "auth/approle/role/\(type)/role-id", [:]).data?["role_id"]?.stringValue ?? ""
        let secretID =
            try call(.update, "auth/approle/role/\(type)/secret-id", [:]).data?["secret_id"]?.stringValue ?? ""
        appRole[type] = (roleID, secretID)
    }
    func jwtLogin(_ role: String) throws {
        let r = try call(.update, "auth/jwt/login", ["role": .string(role), "jwt": .string(jwt.token)], token: nil)
        guard r.auth?.clientToken.isEmpty == false else { throw BenchError("jwt login gave no token") }
    }
    func appRoleLogin(_ role: String) throws {
        let (roleID, secretID) = appRole[role]!
        let r = try call(
            .update,
            "auth/approle/login",
            ["role_id": .string(roleID), "secret_id": .string(secretID)],
            token: nil
        )
        guard r.auth?.clientToken.isEmpty == false else { throw BenchError("approle login gave no token") }
    }
    let md = EVP_MD_CTX_new()!
    defer { EVP_MD_CTX_free(md) }
    guard signer.verify(jwt.signingInput, jwt.der, md) else { throw BenchError("the floor does not verify") }
    try jwtLogin("batch")
    try bench.compare(
        [
            Compared(name: authFloorName) {
                guard signer.verify(jwt.signingInput, jwt.der, md) else { throw BenchError("floor verify failed") }
            },
            Compared(name: jwtBatchName) { try jwtLogin("batch") },
            Compared(name: jwtServiceName) { try jwtLogin("service") },
            Compared(name: appRoleBatchName) { try appRoleLogin("batch") },
            Compared(name: appRoleServiceName) { try appRoleLogin("service") },
        ],
        rounds: rounds,
        count: iterations
    )
    var summary: [String: Any] = ["rounds": rounds, "storage": "memory", "key": "EC P-256 (ES256), static PEM"]
    if let floor = bench.figure(authFloorName)?.p50, floor > 0 {
        for (label, name) in [("jwt_batch", jwtBatchName), ("jwt_service", jwtServiceName)] {
            if let p50 = bench.figure(name)?.p50 { summary["\(label)_login_over_floor_p50"] = p50 / floor }
        }
    }
    return summary
}
