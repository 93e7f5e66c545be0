package import CofferCore
package import CofferVault

/// Transit encrypt and decrypt on raw bytes, in process: through the same pipeline as every other
/// request (token, ACL, audit, the transit backend), with the bytes passed as bytes — no JSON and no
/// base64 of the plaintext. For the C ABI's `coffer_transit_encrypt` / `coffer_transit_decrypt` and
/// Swift callers. Thread-safe.
public struct TransitClient: Sendable {
    let core: Core
    public let mount: String
    public let token: String

    package init(core: Core, mount: String, token: String) {
        self.core = core
        self.mount = mount
        self.token = token
    }

    /// Encrypts `plaintext` with the latest version of `key` and returns Vault's ciphertext text,
    /// `vault:v<N>:<base64>`, as ASCII bytes. `context` is required for derived keys. A missing key is
    /// created (Vault's upsert) when the token may create it.
    ///
    /// Errors: `.permissionDenied` (token or policy), `.invalidArgument` (bad name, wrong key type,
    /// missing context), `.sealed`, `.notFound` (nothing mounted at `mount`), `.auditFailed`.
    public func encrypt(key: String, plaintext: [UInt8], context: [UInt8] = []) throws(CofferError) -> [UInt8] {
        var request = Request(.update, try path("encrypt/", key), token: token)
        request.rawBytes["plaintext"] = plaintext
        if !context.isEmpty { request.rawBytes["context"] = context }
        let response = try core.handle(request)
        guard let ciphertext = response.data?["ciphertext"]?.stringValue else {
            throw CofferError(.internal, "transit encrypt answered without a ciphertext")
        }
        return Array(ciphertext.utf8)
    }

    /// Decrypts Vault's ciphertext text (`vault:v<N>:<base64>`, as ASCII bytes) with `key`.
    ///
    /// Errors as ``encrypt(key:plaintext:context:)``, and `.invalidArgument` for a malformed or
    /// tampered ciphertext, one from another key or context, or a version below
    /// `min_decryption_version`.
    public func decrypt(key: String, ciphertext: [UInt8], context: [UInt8] = []) throws(CofferError) -> [UInt8] {
        guard let text = String(validating: ciphertext, as: UTF8.self) else {
            throw CofferError.invalid("invalid ciphertext: no prefix (expected \"vault:v<version>:\")")
        }
        var request = Request(.update, try path("decrypt/", key), data: ["ciphertext": .string(text)], token: token)
        if !context.isEmpty { request.rawBytes["context"] = context }
        request.rawResults = true
        guard let plaintext = try core.handle(request).rawBytes["plaintext"] else {
            throw CofferError(.internal, "transit decrypt answered without a plaintext")
        }
        return plaintext
    }

    /// "<mount>/<operation><key>", the mount without slashes at either end; the pipeline checks the
    /// path as it checks every path. Written into one string of its final length (this is on the fast
    /// path of every call).
    func path(_ operation: String, _ key: String) throws(CofferError) -> String {
        var mount = self.mount
        var operation = operation
        var key = key
        let (start, end) = mount.withUTF8 { m in
            var start = 0
            var end = m.count
            while start < end, m[start] == UInt8(ascii: "/") { start += 1 }
            while end > start, m[end - 1] == UInt8(ascii: "/") { end -= 1 }
            return (start, end)
        }
        guard end > start else { throw CofferError.invalid("the transit mount path is empty") }
        return mount.withUTF8 { m in
            operation.withUTF8 { op in
                key.withUTF8 { k in
                    String(unsafeUninitializedCapacity: end - start + 1 + op.count + k.count) { out in
                        var at = out.initialize(fromContentsOf: m[start..<end])
                        out[at] = UInt8(ascii: "/")
                        at += 1
                        at = UnsafeMutableBufferPointer(rebasing: out[at...]).initialize(fromContentsOf: op) + at
                        return UnsafeMutableBufferPointer(rebasing: out[at...]).initialize(fromContentsOf: k) + at
                    }
                }
            }
        }
    }
}

extension Vault {
    /// A transit client for the engine mounted at `mount`, acting with `token`.
    public func transit(mount: String = "transit", token: String) -> TransitClient {
        TransitClient(core: core, mount: mount, token: token)
    }
}
