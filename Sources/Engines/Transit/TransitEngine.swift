public import CofferCore

/// Transit encrypt and decrypt on raw bytes, in process: no JSON and no base64 of the plaintext, with
/// the same token, ACL and key checks as `Core.handle` on `<mount>/encrypt/<key>` and
/// `<mount>/decrypt/<key>`. For the C ABI's `coffer_transit_encrypt` / `coffer_transit_decrypt`.
///
/// Requests that need more than the fast path (an audit device is enabled, the key does not exist
/// yet and encrypt would create it, the mount is not a transit mount) go through `Core.handle` with
/// the equivalent JSON, so the result and every error are the same either way. Thread-safe.
public enum TransitEngine {
    /// Encrypts `plaintext` with the latest version of `key` and returns Vault's ciphertext text,
    /// `vault:v<N>:<base64>`, as ASCII bytes. `context` is required for derived keys.
    ///
    /// Errors: `.permissionDenied` (token or policy), `.invalidArgument` (bad name, wrong key type,
    /// missing context), `.sealed`, `.notFound` (nothing mounted at `mount`), `.auditFailed`.
    public static func encrypt(
        core: Core, token: String, mount: String, key: String, plaintext: UnsafeRawBufferPointer,
        context: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)
    ) throws(CofferError) -> [UInt8] {
        let path = try operationPath(mount, "encrypt/", key)
        if let (backend, mounted) = try fastMount(core, path), let transitKey = try backend.cached(key, mounted.storage) {
            let now = try core.directAuthorize(.update, path: path, token: token) { parameters(plaintext: plaintext, context: context) }
            let current = transitKey.rotationDue(now: now) ? try backend.load(key, mounted.storage, now: now)! : transitKey
            return try current.encrypt(plaintext, context: context, aad: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        let response = try core.handle(Request(.update, path, data: parameters(plaintext: plaintext, context: context), token: token))
        guard let ciphertext = response.data?["ciphertext"]?.stringValue else {
            throw CofferError(.internal, "transit encrypt answered without a ciphertext")
        }
        return Array(ciphertext.utf8)
    }

    /// Decrypts Vault's ciphertext text (`vault:v<N>:<base64>`, as ASCII bytes) with `key`.
    ///
    /// Errors as ``encrypt(core:token:mount:key:plaintext:context:)``, and `.invalidArgument` for a
    /// malformed or tampered ciphertext, one from another key or context, or a version below
    /// `min_decryption_version`.
    public static func decrypt(
        core: Core, token: String, mount: String, key: String, ciphertext: UnsafeRawBufferPointer,
        context: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)
    ) throws(CofferError) -> [UInt8] {
        let path = try operationPath(mount, "decrypt/", key)
        let text = { String(decoding: ciphertext, as: UTF8.self) }
        let data = { () -> [String: JSONValue] in
            var data: [String: JSONValue] = ["ciphertext": .string(text())]
            if context.count > 0 { data["context"] = .string(base64(context)) }
            return data
        }
        if let (backend, mounted) = try fastMount(core, path), let transitKey = try backend.cached(key, mounted.storage) {
            let now = try core.directAuthorize(.update, path: path, token: token, data: data)
            let current = transitKey.rotationDue(now: now) ? try backend.load(key, mounted.storage, now: now)! : transitKey
            return try current.decrypt(ciphertext, context: context, aad: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        let response = try core.handle(Request(.update, path, data: data(), token: token))
        guard let plaintext = response.data?["plaintext"]?.stringValue.flatMap(Base64.decode) else {
            throw CofferError(.internal, "transit decrypt answered without a plaintext")
        }
        return plaintext
    }

    /// `[UInt8]` forms of the two calls above.
    public static func encrypt(core: Core, token: String, mount: String, key: String, plaintext: [UInt8], context: [UInt8] = []) throws(CofferError) -> [UInt8] {
        try withRawBytes(plaintext, context, []) { (p, c, _) throws(CofferError) in
            try encrypt(core: core, token: token, mount: mount, key: key, plaintext: p, context: c)
        }
    }

    public static func decrypt(core: Core, token: String, mount: String, key: String, ciphertext: [UInt8], context: [UInt8] = []) throws(CofferError) -> [UInt8] {
        try withRawBytes(ciphertext, context, []) { (t, c, _) throws(CofferError) in
            try decrypt(core: core, token: token, mount: mount, key: key, ciphertext: t, context: c)
        }
    }

    /// "<mount>/<operation><key>" with the mount's slashes trimmed; rejects what routing would
    /// (empty, `//`, `.` or `..` segments, control characters). One pass over the bytes.
    static func operationPath(_ mount: String, _ operation: StaticString, _ key: String) throws(CofferError) -> String {
        try TransitBackend.validateName(key)
        var bytes = mount.utf8[...]
        while bytes.first == UInt8(ascii: "/") { bytes = bytes.dropFirst() }
        while bytes.last == UInt8(ascii: "/") { bytes = bytes.dropLast() }
        var segmentLength = 0
        var dots = 0
        var valid = !bytes.isEmpty
        for b in bytes where valid {
            if b == UInt8(ascii: "/") {
                valid = segmentLength > 0 && !(segmentLength <= 2 && dots == segmentLength)
                segmentLength = 0
                dots = 0
            } else {
                valid = b >= 0x20 && b != 0x7F
                segmentLength += 1
                if b == UInt8(ascii: ".") { dots += 1 }
            }
        }
        guard valid, !(segmentLength <= 2 && dots == segmentLength) else {
            throw CofferError.invalid("invalid mount path \"\(mount)\"")
        }
        var path = String(Substring(bytes))
        path.reserveCapacity(bytes.count + 1 + operation.utf8CodeUnitCount + key.utf8.count)
        path += "/"
        path += operation.description
        path += key
        return path
    }

    static func fastMount(_ core: Core, _ path: String) throws(CofferError) -> (TransitBackend, DirectMount)? {
        guard let mounted = try core.directMount(path), let backend = mounted.backend as? TransitBackend else { return nil }
        return (backend, mounted)
    }

    /// The request parameters of the equivalent wire request (for the ACL when a policy constrains
    /// parameters, and for the full path).
    static func parameters(plaintext: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer) -> [String: JSONValue] {
        var data: [String: JSONValue] = ["plaintext": .string(base64(plaintext))]
        if context.count > 0 { data["context"] = .string(base64(context)) }
        return data
    }

    static func base64(_ bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: Base64.encodedLength(bytes.count)) { out in
            Base64.encode(bytes, into: out.baseAddress!)
            return Base64.encodedLength(bytes.count)
        }
    }
}
