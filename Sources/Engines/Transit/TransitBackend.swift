import COpenSSL
package import CofferCore
package import CofferFramework
import Synchronization

/// The transit engine: encryption, signing and HMAC as a service, with Vault's paths and shapes.
///
/// Keys are stored at `policy/<name>` through the barrier and seal-wrapped (when the seal does seal
/// wrap); the parsed keys are cached here, since every change to a key goes through this backend.
/// Writes to one key are serialised by a lock striped over its name. See docs/transit.md.
package final class TransitBackend: TableBackend {
    private final class Stripe: Sendable { let mutex = Mutex(()) }
    private let locks: [Stripe] = (0..<32).map { _ in Stripe() }
    /// Parsed keys by name. `epoch` moves on every write so that a reader which loaded a key while it
    /// was being changed does not put the old copy back.
    private let cache = Mutex<(epoch: UInt64, keys: [String: TransitKey])>((0, [:]))
    static let cacheLimit = 10_000
    /// The most `random` returns at once, as Vault.
    static let maxRandomBytes = 128 * 1024

    package init() {}

    // MARK: Keys in storage

    func withKeyLock<R>(_ name: String, _ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        var hasher = Hasher()
        hasher.combine(name)
        let lock = locks[Int(UInt(bitPattern: hasher.finalize()) % UInt(locks.count))]
        let result: Result<R, CofferError> = lock.mutex.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// The key `name` as stored (from the cache when it is there); nil if there is none.
    func cached(_ name: String, _ storage: StorageReader) throws(CofferError) -> TransitKey? {
        let (epoch, cached) = cache.withLock { ($0.epoch, $0.keys[name]) }
        if let cached { return cached }
        guard let json = try storage.getJSON(TransitKey.storagePrefix + name) else { return nil }
        let key = try TransitKey(stored: json)
        cache.withLock { c in
            if c.epoch == epoch {
                if c.keys.count >= TransitBackend.cacheLimit { c.keys.removeAll(keepingCapacity: true) }
                c.keys[name] = key
            }
        }
        return key
    }

    /// The key `name`, rotated first if its `auto_rotate_period` has passed; nil if there is none.
    /// Not for use under the key's lock (rotation takes it).
    func load(_ name: String, _ storage: StorageView, now: Timestamp) throws(CofferError) -> TransitKey? {
        guard let key = try cached(name, storage.reader) else { return nil }
        guard key.rotationDue(now: now) else { return key }
        return try update(name, storage, now: now) { (key) throws(CofferError) in
            if key.rotationDue(now: now) { try key.rotate(now: now) }
        }
    }

    /// Drops the cached copy of `name` (its storage changed).
    func forget(_ name: String) {
        cache.withLock { c in
            c.epoch &+= 1
            c.keys.removeValue(forKey: name)
        }
    }

    /// Stores `key` seal-wrapped and caches it (nil: deletes it).
    func save(_ name: String, _ key: TransitKey?, _ storage: StorageView) throws(CofferError) {
        cache.withLock { c in
            c.epoch &+= 1
            c.keys.removeValue(forKey: name)
        }
        if let key {
            var bytes = key.stored.serialized()
            defer { bytes.withUnsafeMutableBytes { coffer_openssl_cleanse($0.baseAddress, $0.count) } }
            try storage.put(TransitKey.storagePrefix + name, bytes)
        } else {
            try storage.delete(TransitKey.storagePrefix + name)
        }
        cache.withLock { c in
            c.epoch &+= 1
            if let key { c.keys[name] = key }
        }
    }

    /// Applies `change` to the stored key under its lock and saves the result.
    func update(
        _ name: String,
        _ storage: StorageView,
        now: Timestamp,
        _ change: (inout TransitKey) throws(CofferError) -> Void
    ) throws(CofferError) -> TransitKey {
        try withKeyLock(name) { () throws(CofferError) -> TransitKey in
            guard let json = try storage.getJSON(TransitKey.storagePrefix + name) else {
                throw CofferError.invalid("no existing key named \(name) could be found")
            }
            var key = try TransitKey(stored: json)
            try change(&key)
            try save(name, key, storage)
            return key
        }
    }

    /// The key an operation names, or a 400 naming what is missing.
    func require(
        _ name: String,
        _ request: BackendRequest,
        missing: String = "encryption key not found"
    ) throws(CofferError) -> TransitKey {
        guard let key = try load(name, request.storage, now: request.now) else { throw CofferError.invalid(missing) }
        return key
    }

    static func validateName(_ name: String) throws(CofferError) {
        guard !name.isEmpty, name.utf8.count <= 256,
            name.utf8.allSatisfy({
                $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
                    || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A)
            })
        else {
            throw CofferError.invalid("invalid key name \"\(name)\": use letters, digits, '-', '_' and '.'")
        }
    }

    // MARK: Key management

    func listKeys(_ request: BackendRequest) throws(CofferError) -> Response {
        let names = try request.storage.list(TransitKey.storagePrefix)
        guard !names.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(names.sorted().map { .string($0) })])
    }

    func readKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        guard let key = try load(name, request.storage, now: request.now) else { return .notFound }
        return Response(data: key.readData)
    }

    /// Creates a key from the request's settings; an existing key is returned unchanged (as Vault).
    func createKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let key = try withKeyLock(name) { () throws(CofferError) -> TransitKey in
            if let existing = try cached(name, request.storage.reader) { return existing }
            let key = try TransitBackend.newKey(name, request.data, now: request.now)
            try save(name, key, request.storage)
            return key
        }
        return Response(data: key.readData)
    }

    static func newKey(
        _ name: String,
        _ data: [String: JSONValue],
        now: Timestamp,
        derivedByContext: Bool = false
    ) throws(CofferError) -> TransitKey {
        let typeName = try data.string("type") ?? TransitKeyType.aes256GCM96.rawValue
        guard let type = TransitKeyType(rawValue: typeName) else {
            throw CofferError.invalid(
                "type is not a known key type; use one of \(TransitKeyType.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        var key = TransitKey(name: name, type: type)
        key.derived = try data.bool("derived") ?? derivedByContext
        key.convergent = try data.bool("convergent_encryption") ?? false
        key.exportable = try data.bool("exportable") ?? false
        key.allowPlaintextBackup = try data.bool("allow_plaintext_backup") ?? false
        key.autoRotatePeriod = try autoRotatePeriod(data) ?? 0
        if key.convergent && !key.derived {
            throw CofferError.invalid("convergent encryption requires derivation to be enabled")
        }
        if key.derived && !type.supportsDerivation {
            throw CofferError.invalid("key derivation not supported for key type \(type.rawValue)")
        }
        if key.convergent && type.aead == nil {
            throw CofferError.invalid("convergent encryption not supported for keys of type \(type.rawValue)")
        }
        if type == .hmac {
            key.keySize = try data.int("key_size") ?? 32
            guard (32...512).contains(key.keySize) else {
                throw CofferError.invalid("invalid key size for HMAC key, must be between 32 and 512 bytes")
            }
        }
        try key.rotate(now: now)
        return key
    }

    static func autoRotatePeriod(_ data: [String: JSONValue]) throws(CofferError) -> Int64? {
        guard let period = try data.duration("auto_rotate_period") else { return nil }
        guard period == 0 || period >= 3600 else {
            throw CofferError.invalid("auto rotate period must be 0 to disable or at least an hour")
        }
        return period
    }

    func deleteKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        try withKeyLock(name) { () throws(CofferError) in
            guard let key = try cached(name, request.storage.reader) else { return }
            guard key.deletionAllowed else {
                throw CofferError.invalid("error deleting policy \(name): deletion is not allowed for this key")
            }
            try save(name, nil, request.storage)
        }
        return .noContent
    }

    func configureKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let data = request.data
        let key = try update(name, request.storage, now: request.now) { (key) throws(CofferError) in
            var minDecryption = try data.int("min_decryption_version") ?? key.minDecryptionVersion
            if minDecryption == 0 { minDecryption = 1 }
            let minEncryption = try data.int("min_encryption_version") ?? key.minEncryptionVersion
            guard minDecryption > 0, minEncryption >= 0 else {
                throw CofferError.invalid("key versions cannot be negative")
            }
            guard minDecryption <= key.latestVersion else {
                throw CofferError.invalid(
                    "cannot set min decryption version of \(minDecryption), latest key version is \(key.latestVersion)"
                )
            }
            guard minEncryption <= key.latestVersion else {
                throw CofferError.invalid(
                    "cannot set min encryption version of \(minEncryption), latest key version is \(key.latestVersion)"
                )
            }
            guard minEncryption == 0 || minEncryption >= minDecryption else {
                throw CofferError.invalid(
                    "cannot set min encryption/decryption values; min encryption version of \(minEncryption) must be greater than or equal to min decryption version of \(minDecryption)"
                )
            }
            guard minDecryption >= key.minAvailableVersion else {
                throw CofferError.invalid(
                    "cannot set min decryption version of \(minDecryption) below the min available version of \(key.minAvailableVersion): older versions were trimmed"
                )
            }
            key.minDecryptionVersion = minDecryption
            key.minEncryptionVersion = minEncryption
            if let allowed = try data.bool("deletion_allowed") { key.deletionAllowed = allowed }
            // As in Vault, exportability and plaintext backup cannot be turned off once on.
            if try data.bool("exportable") == true { key.exportable = true }
            if try data.bool("allow_plaintext_backup") == true { key.allowPlaintextBackup = true }
            if let period = try TransitBackend.autoRotatePeriod(data) { key.autoRotatePeriod = period }
        }
        return Response(data: key.readData)
    }

    func rotateKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let key = try update(name, request.storage, now: request.now) { (key) throws(CofferError) in
            try key.rotate(now: request.now)
        }
        return Response(data: key.readData)
    }

    func trimKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let requested = try request.data.int("min_available_version") ?? 0
        let key = try update(name, request.storage, now: request.now) { (key) throws(CofferError) in
            guard key.minEncryptionVersion > 0 else {
                throw CofferError.invalid(
                    "minimum available version cannot be set when minimum encryption version is not set"
                )
            }
            guard requested > 0 else { throw CofferError.invalid("minimum available version should be positive") }
            guard requested >= key.minAvailableVersion else {
                throw CofferError.invalid("minimum available version cannot be decremented")
            }
            guard requested <= key.minEncryptionVersion else {
                throw CofferError.invalid(
                    "minimum available version should not be greater than minimum encryption version"
                )
            }
            guard requested <= key.minDecryptionVersion else {
                throw CofferError.invalid(
                    "cannot set minimum available version to \(requested), it should not be greater than minimum decryption version \(key.minDecryptionVersion)"
                )
            }
            key.minAvailableVersion = requested
            key.versions = key.versions.filter { $0.key >= requested }
        }
        return Response(data: key.readData)
    }

    // MARK: Batches

    /// The items of `batch_input`, or the request itself as the one item.
    static func items(_ data: [String: JSONValue]) throws(CofferError) -> (items: [[String: JSONValue]], batch: Bool) {
        guard let raw = data["batch_input"], raw != .null else { return ([data], false) }
        guard case .array(let array) = raw else { throw CofferError.invalid("batch_input must be a list of objects") }
        var items: [[String: JSONValue]] = []
        for entry in array {
            guard case .object(let item) = entry else {
                throw CofferError.invalid("every batch_input item must be an object")
            }
            items.append(item)
        }
        guard !items.isEmpty else { throw CofferError.invalid("missing batch input to process") }
        return (items, true)
    }

    /// Runs `body` on every item. A single request's error is thrown; a batch item's error goes into
    /// its result, and the others still run. Encrypt, decrypt and rewrap answer 400 when any item
    /// failed (or `partial_failure_response_code` when some succeeded), as Vault does.
    static func batch(
        _ data: [String: JSONValue],
        errorFields: [String: JSONValue] = [:],
        failStatus: Bool,
        _ body: ([String: JSONValue]) throws(CofferError) -> [String: JSONValue]
    ) throws(CofferError) -> Response {
        let (items, isBatch) = try items(data)
        guard isBatch else { return Response(data: try body(items[0])) }
        var results: [JSONValue] = []
        var failures = 0
        for item in items {
            var result: [String: JSONValue]
            do {
                result = try body(item)
            } catch {
                failures += 1
                result = errorFields
                result["error"] = .string(error.message)
            }
            result["reference"] = .string(try item.string("reference") ?? "")
            results.append(.object(result))
        }
        var response = Response(data: ["batch_results": .array(results)])
        if failStatus && failures > 0 {
            response.outcome = .status(400)
            if failures < items.count, let code = try data.int("partial_failure_response_code") {
                // An HTTP status: anything else would be no answer at all.
                guard (200...599).contains(code) else {
                    throw CofferError.invalid("partial_failure_response_code must be an HTTP status from 200 to 599")
                }
                response.outcome = .status(code)
            }
        }
        return response
    }

    // MARK: Encryption

    func encrypt(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        // A `let`: the batch closure below captures it, and a captured `var` is a heap box per call.
        let key: TransitKey
        if let loaded = try load(name, request.storage, now: request.now) {
            key = loaded
        } else {
            // Vault's upsert: encrypting to a missing key creates it when the token may create it.
            guard request.operation == .create else { throw CofferError.invalid("encryption key not found") }
            let (items, _) = try TransitBackend.items(request.data)
            var hasContext = request.fields.rawBytes["context"]?.isEmpty == false
            for item in items where try item.string("context")?.isEmpty == false { hasContext = true }
            key = try withKeyLock(name) { () throws(CofferError) -> TransitKey in
                if let existing = try cached(name, request.storage.reader) { return existing }
                let created = try TransitBackend.newKey(
                    name,
                    request.data,
                    now: request.now,
                    derivedByContext: hasContext
                )
                try save(name, created, request.storage)
                return created
            }
        }
        let topVersion = try request.data.int("key_version") ?? 0
        // An in-process caller's bytes (the C ABI): no base64 either way, one item.
        if let plaintext = request.fields.rawBytes["plaintext"] {
            let ciphertext = try withRawBytes(plaintext, request.fields.rawBytes["context"] ?? [], []) {
                (p, c, a) throws(CofferError) in
                try key.encrypt(p, context: c, aad: a, keyVersion: topVersion)
            }
            return Response(data: [
                "ciphertext": .string(String(decoding: ciphertext, as: UTF8.self)),
                "key_version": .int(TransitBackend.version(of: ciphertext)),
            ])
        }
        return try TransitBackend.batch(request.data, failStatus: true) { (item) throws(CofferError) in
            guard let plaintextText = try item.string("plaintext") else {
                throw CofferError.invalid("missing plaintext to encrypt")
            }
            let plaintext = try base64Field(plaintextText, "plaintext")!
            let context = try base64Field(try item.string("context"), "context") ?? []
            let aad = try base64Field(try item.string("associated_data"), "associated_data") ?? []
            if let nonce = try item.string("nonce"), !nonce.isEmpty {
                throw CofferError.invalid("nonce provided when not allowed")
            }
            let version = try item.int("key_version") ?? topVersion
            let ciphertext = try withRawBytes(plaintext, context, aad) { (p, c, a) throws(CofferError) in
                try key.encrypt(p, context: c, aad: a, keyVersion: version)
            }
            return [
                "ciphertext": .string(String(decoding: ciphertext, as: UTF8.self)),
                "key_version": .int(TransitBackend.version(of: ciphertext)),
            ]
        }
    }

    static func version(of ciphertext: [UInt8]) -> Int {
        var version = 0
        for b in ciphertext.dropFirst(VersionedValue.prefix.count) {
            guard b != UInt8(ascii: ":") else { break }
            version = version * 10 + Int(b - 0x30)
        }
        return version
    }

    func decryptItem(_ key: TransitKey, _ item: [String: JSONValue]) throws(CofferError) -> [UInt8] {
        guard let ciphertext = try item.string("ciphertext"), !ciphertext.isEmpty else {
            throw CofferError.invalid("missing ciphertext to decrypt")
        }
        let context = try base64Field(try item.string("context"), "context") ?? []
        let aad = try base64Field(try item.string("associated_data"), "associated_data") ?? []
        if let nonce = try item.string("nonce"), !nonce.isEmpty {
            throw CofferError.invalid("nonce provided when not allowed")
        }
        return try withRawBytes(Array(ciphertext.utf8), context, aad) { (t, c, a) throws(CofferError) in
            try key.decrypt(t, context: c, aad: a)
        }
    }

    func decrypt(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let key = try require(name, request)
        // An in-process caller that wants bytes (the C ABI): the plaintext comes back as bytes, never base64.
        if request.fields.rawResults, let ciphertext = request.fields.string("ciphertext") {
            var response = Response(data: [:])
            response.rawBytes["plaintext"] = try withRawBytes(
                Array(ciphertext.utf8),
                request.fields.bytes("context") ?? [],
                []
            ) {
                (t, c, a) throws(CofferError) in try key.decrypt(t, context: c, aad: a)
            }
            return response
        }
        return try TransitBackend.batch(request.data, errorFields: ["plaintext": ""], failStatus: true) {
            (item) throws(CofferError) in
            ["plaintext": .string(Base64.encode(try decryptItem(key, item)))]
        }
    }

    func rewrap(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let key = try require(name, request)
        let topVersion = try request.data.int("key_version") ?? 0
        return try TransitBackend.batch(request.data, failStatus: false) { (item) throws(CofferError) in
            let plaintext = try decryptItem(key, item)
            let context = try base64Field(try item.string("context"), "context") ?? []
            let aad = try base64Field(try item.string("associated_data"), "associated_data") ?? []
            let version = try item.int("key_version") ?? topVersion
            let ciphertext = try withRawBytes(plaintext, context, aad) { (p, c, a) throws(CofferError) in
                try key.encrypt(p, context: c, aad: a, keyVersion: version)
            }
            return [
                "ciphertext": .string(String(decoding: ciphertext, as: UTF8.self)),
                "key_version": .int(TransitBackend.version(of: ciphertext)),
            ]
        }
    }

    func dataKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let kind = request.capture("kind")
        let name = try Self.keyName(request)
        guard kind == "plaintext" || kind == "wrapped" else {
            throw CofferError.invalid("Invalid path, must be 'plaintext' or 'wrapped'")
        }
        let key = try require(name, request)
        let bits = try request.data.int("bits") ?? 256
        guard [128, 256, 512].contains(bits) else {
            throw CofferError.invalid("invalid bit length \(bits); use 128, 256 or 512")
        }
        let context = try base64Field(try request.data.string("context"), "context") ?? []
        let aad = try base64Field(try request.data.string("associated_data"), "associated_data") ?? []
        let secret = SecureBytes(randomCount: bits / 8)
        let version = try request.data.int("key_version") ?? 0
        let ciphertext = try secret.withUnsafeBytes { (p) throws(CofferError) in
            try withRawBytes(context, aad, []) { (c, a, _) throws(CofferError) in
                try key.encrypt(p, context: c, aad: a, keyVersion: version)
            }
        }
        var data: [String: JSONValue] = [
            "ciphertext": .string(String(decoding: ciphertext, as: UTF8.self)),
            "key_version": .int(TransitBackend.version(of: ciphertext)),
        ]
        if kind == "plaintext" { data["plaintext"] = .string(secret.withUnsafeBytes { Base64.encode($0) }) }
        return Response(data: data)
    }

    // MARK: HMAC, signatures

    static func algorithm(
        _ data: [String: JSONValue],
        _ field: String,
        url: String?
    ) throws(CofferError) -> HashAlgorithm {
        if let url { return try HashAlgorithm(name: url, field: field) }
        return try HashAlgorithm(name: try data.string(field) ?? "sha2-256", field: field)
    }

    func hmac(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let urlAlgorithm = request.captures["algorithm"]
        let key = try require(name, request, missing: "HMAC key not found")
        let algorithm = try TransitBackend.algorithm(request.data, "algorithm", url: urlAlgorithm)
        let topVersion = try request.data.int("key_version") ?? 0
        return try TransitBackend.batch(request.data, failStatus: false) { (item) throws(CofferError) in
            guard let inputText = try item.string("input") else { throw CofferError.invalid("missing input for HMAC") }
            let input = try base64Field(inputText, "input")!
            return [
                "hmac": .string(
                    try key.hmac(input, algorithm: algorithm, keyVersion: try item.int("key_version") ?? topVersion)
                )
            ]
        }
    }

    /// Signing settings from a batch item, falling back to the request's top level.
    static func signingOptions(
        _ data: [String: JSONValue],
        _ item: [String: JSONValue],
        url: String?
    ) throws(CofferError) -> TransitKey.SigningOptions {
        var fields = data
        fields.removeValue(forKey: "batch_input")
        for (k, v) in item { fields[k] = v }
        var options = TransitKey.SigningOptions()
        options.hash = try algorithm(fields, fields["hash_algorithm"] != nil ? "hash_algorithm" : "algorithm", url: url)
        options.prehashed = try fields.bool("prehashed") ?? false
        options.context = try base64Field(try fields.string("context"), "context") ?? []
        switch try fields.string("marshaling_algorithm") ?? "asn1" {
        case "asn1": options.jws = false
        case "jws": options.jws = true
        default: throw CofferError.invalid("marshaling_algorithm must be asn1 or jws")
        }
        // Vault's rule (Go's crypto/rsa constants): "auto" or 0 signs with the longest salt and verifies
        // any; "hash" or -1 uses the digest's length; a positive number is that many bytes.
        let salt: PKey.SaltLength
        switch (try fields.string("salt_length") ?? "auto").lowercased() {
        case "auto": salt = .auto
        case "hash": salt = .hash
        case let text:
            switch Int32(text) {
            case .some(0): salt = .auto
            case .some(-1): salt = .hash
            case .some(let n) where n > 0: salt = .bytes(n)
            default:
                throw CofferError.invalid(
                    "salt_length must be auto, hash, 0 (auto), -1 (hash) or a positive number of bytes"
                )
            }
        }
        switch try fields.string("signature_algorithm") ?? "pss" {
        case "pss", "": options.rsa = .pss(salt)
        case "pkcs1v15": options.rsa = .pkcs1v15
        default: throw CofferError.invalid("signature_algorithm must be pss or pkcs1v15")
        }
        return options
    }

    func sign(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let urlAlgorithm = request.captures["algorithm"]
        let key = try require(name, request, missing: "signing key not found")
        guard key.type.supportsSigning else {
            throw CofferError.invalid("key type \(key.type.rawValue) does not support signing")
        }
        let topVersion = try request.data.int("key_version") ?? 0
        return try TransitBackend.batch(request.data, errorFields: ["key_version": 0], failStatus: false) {
            (item) throws(CofferError) in
            let options = try TransitBackend.signingOptions(request.data, item, url: urlAlgorithm)
            let input = try base64Field(try item.string("input") ?? "", "input")!
            let (signature, version) = try key.sign(
                input,
                keyVersion: try item.int("key_version") ?? topVersion,
                options: options
            )
            return ["signature": .string(signature), "key_version": .int(version)]
        }
    }

    func verify(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        let urlAlgorithm = request.captures["algorithm"]
        let key = try require(name, request, missing: "signature verification key not found")
        return try TransitBackend.batch(request.data, errorFields: ["valid": false], failStatus: false) {
            (item) throws(CofferError) in
            let input = try base64Field(try item.string("input") ?? "", "input")!
            if let mac = try item.string("hmac"), !mac.isEmpty {
                let algorithm = try TransitBackend.algorithm(
                    item["algorithm"] != nil ? item : request.data,
                    "algorithm",
                    url: urlAlgorithm
                )
                return ["valid": .bool(try key.verifyHMAC(input, hmac: mac, algorithm: algorithm))]
            }
            guard let signature = try item.string("signature"), !signature.isEmpty else {
                throw CofferError.invalid("neither a 'signature' nor an 'hmac' were given to verify")
            }
            let options = try TransitBackend.signingOptions(request.data, item, url: urlAlgorithm)
            return ["valid": .bool(try key.verify(input, signature: signature, options: options))]
        }
    }

    // MARK: Export, backup, restore

    func export(_ request: BackendRequest) throws(CofferError) -> Response {
        let kind = request.capture("kind")
        let name = try Self.keyName(request)
        let requested = request.captures["version"]
        guard ["encryption-key", "signing-key", "hmac-key", "public-key"].contains(kind) else {
            throw CofferError.invalid("invalid export type: \(kind)")
        }
        guard let key = try load(name, request.storage, now: request.now) else { return .notFound }
        guard kind == "public-key" || key.exportable else {
            throw CofferError.invalid("private key material is not exportable")
        }
        switch kind {
        case "encryption-key" where !key.type.supportsEncryption:
            throw CofferError.invalid("encryption not supported for the key")
        case "signing-key" where !key.type.supportsSigning:
            throw CofferError.invalid("signing not supported for the key")
        case "public-key" where !key.type.isAsymmetric:
            throw CofferError.invalid("public key not available for key type \(key.type.rawValue)")
        case "public-key" where key.derived:
            throw CofferError.invalid("public keys of derived keys depend on the context and are not exported")
        default: break
        }
        var numbers = key.versions.keys.filter { $0 >= key.minDecryptionVersion }
        if let requested, requested != "latest" {
            guard let n = Int(requested), n > 0 else { throw CofferError.invalid("invalid key version \(requested)") }
            guard n >= key.minDecryptionVersion, key.versions[n] != nil else {
                throw CofferError.invalid(
                    "version \(n) of key \(name) is not available (below min_decryption_version or trimmed)"
                )
            }
            numbers = [n]
        } else if requested == "latest" {
            numbers = [key.latestVersion]
        }
        var keys: [String: JSONValue] = [:]
        for n in numbers {
            let version = key.versions[n]!
            keys[String(n)] = .string(try TransitBackend.exported(key.type, version, kind: kind))
        }
        return Response(data: ["name": .string(name), "type": .string(key.type.rawValue), "keys": .object(keys)])
    }

    /// One version in Vault's export forms: base64 raw keys, the 64-byte Go form for Ed25519, PEM for EC
    /// (without the final newline, as Vault) and RSA.
    static func exported(_ type: TransitKeyType, _ version: KeyVersion, kind: String) throws(CofferError) -> String {
        switch kind {
        case "hmac-key": return version.hmacKey.withUnsafeBytes { Base64.encode($0) }
        case "public-key":
            let pem = version.publicKey
            return type.curve != nil && pem.hasSuffix("\n") ? String(pem.dropLast()) : pem
        default:
            if type.aead != nil || type == .ed25519 { return version.material.withUnsafeBytes { Base64.encode($0) } }
            let pem = try version.pkey!.pem(privateKey: true)
            return type.curve != nil && pem.hasSuffix("\n") ? String(pem.dropLast()) : pem
        }
    }

    func backup(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.keyName(request)
        guard let key = try load(name, request.storage, now: request.now) else {
            throw CofferError.invalid("key \"\(name)\" not found")
        }
        guard key.exportable else {
            throw CofferError.invalid("exporting is disallowed on the policy; set exportable to back it up")
        }
        guard key.allowPlaintextBackup else {
            throw CofferError.invalid(
                "plaintext backup is disallowed on the policy; set allow_plaintext_backup to back it up"
            )
        }
        return Response(data: ["backup": .string(try TransitBackup.encode(key, now: request.now))])
    }

    func restore(_ request: BackendRequest) throws(CofferError) -> Response {
        let given = request.captures["name"]
        if let given { try Self.validateName(given) }
        guard let text = try request.data.string("backup"), !text.isEmpty else {
            throw CofferError.invalid("'backup' must be supplied")
        }
        var key = try TransitBackup.decode(text)
        if let given { key.name = given }
        try TransitBackend.validateName(key.name)
        let force = try request.data.bool("force") ?? false
        try withKeyLock(key.name) { () throws(CofferError) in
            if !force, try cached(key.name, request.storage.reader) != nil {
                throw CofferError.invalid("key \"\(key.name)\" already exists; set force to overwrite it")
            }
            try save(key.name, key, request.storage)
        }
        return .noContent
    }

    // MARK: Random, hash

    func random(_ request: BackendRequest) throws(CofferError) -> Response {
        var rest = [request.captures["first"], request.captures["second"]].compactMap { $0 }
        var source = try request.data.string("source") ?? "platform"
        if let first = rest.first, ["platform", "seal", "all"].contains(first) {
            source = first
            rest.removeFirst()
        }
        guard ["platform", "seal", "all"].contains(source) else {
            throw CofferError.invalid("source must be platform, seal or all")
        }
        guard rest.count <= 1 else { throw request.unsupported() }
        let count: Int
        if let text = rest.first {
            guard let n = Int(text) else { throw CofferError.invalid("error parsing URL-specified byte count \(text)") }
            count = n
        } else {
            count = try request.data.int("bytes") ?? 32
        }
        guard count >= 1 else { throw CofferError.invalid("bytes must be at least 1") }
        guard count <= TransitBackend.maxRandomBytes else {
            throw CofferError.invalid("'bytes' should be less than \(TransitBackend.maxRandomBytes)")
        }
        let bytes = Random.bytes(count)
        return Response(data: ["random_bytes": .string(try TransitBackend.formatted(bytes, request.data))])
    }

    static func formatted(_ bytes: [UInt8], _ data: [String: JSONValue]) throws(CofferError) -> String {
        switch try data.string("format") ?? "base64" {
        case "base64": return Base64.encode(bytes)
        case "hex": return Hex.encode(bytes)
        default: throw CofferError.invalid("format must be \"hex\" or \"base64\"")
        }
    }

    func hash(_ request: BackendRequest) throws(CofferError) -> Response {
        let urlAlgorithm = request.captures["algorithm"]
        guard let inputText = try request.data.string("input") else {
            throw CofferError.invalid("missing input to hash")
        }
        let input = try base64Field(inputText, "input")!
        let algorithm = try TransitBackend.algorithm(request.data, "algorithm", url: urlAlgorithm)
        var data = request.data
        if data["format"] == nil { data["format"] = "hex" }
        return Response(data: ["sum": .string(try TransitBackend.formatted(algorithm.digest(input), data))])
    }
}
