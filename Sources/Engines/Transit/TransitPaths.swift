package import CofferCore
package import CofferFramework

/// Transit's paths, as Vault's `path_keys.go`, `path_config.go`, `path_rotate.go`,
/// `path_trim.go`, `path_encrypt.go`, `path_decrypt.go`, `path_rewrap.go`, `path_datakey.go`,
/// `path_hmac.go`, `path_sign_verify.go`, `path_export.go`, `path_backup.go`,
/// `path_restore.go`, `path_random.go` and `path_hash.go` declare them.
extension TransitBackend {
    /// Key material is stored seal-wrapped (when the seal does seal wrap).
    package var specialPaths: SpecialPaths { SpecialPaths(sealWrapStorage: [TransitKey.storagePrefix + "*"]) }

    /// A parsed key changed beneath the cache (another Coffer over the same storage, a restore).
    package func invalidate(_ key: String) {
        guard key.hasPrefix(TransitKey.storagePrefix) else { return }
        forget(String(key.dropFirst(TransitKey.storagePrefix.count)))
    }

    static let versionRange = 0...Int(Int32.max)
    static let keyFields: [Field] = [
        .string("type"), .bool("derived"), .bool("convergent_encryption"), .bool("exportable"),
        .bool("allow_plaintext_backup"),
        .duration("auto_rotate_period"), .int("key_size", 0...4096), .string("context"),
    ]
    static let itemFields: [Field] = [
        .bytes("plaintext"), .string("ciphertext"), .bytes("context"), .bytes("associated_data"), .string("nonce"),
        .int("key_version", versionRange), .any("batch_input"), .int("partial_failure_response_code", 200...599),
        .string("reference"),
        .string("type"), .bool("convergent_encryption"),
    ]
    static let signFields: [Field] = [
        .string("input"), .string("hash_algorithm"), .string("algorithm"), .bool("prehashed"), .bytes("context"),
        .string("marshaling_algorithm"), .string("salt_length"), .string("signature_algorithm"),
        .int("key_version", versionRange),
        .any("batch_input"), .string("signature"), .string("hmac"), .string("reference"),
    ]

    package static let paths = PathTable<TransitBackend>([
        Path("keys/", list: TransitBackend.listKeys),
        Path(
            "keys/{name}",
            fields: keyFields,
            existence: TransitBackend.keyExists,
            read: TransitBackend.readKey,
            write: TransitBackend.createKey,
            delete: TransitBackend.deleteKey
        ),
        Path(
            "keys/{name}/config",
            fields: [
                .int("min_decryption_version", versionRange), .int("min_encryption_version", versionRange),
                .bool("deletion_allowed"),
                .bool("exportable"), .bool("allow_plaintext_backup"), .duration("auto_rotate_period"),
            ],
            write: TransitBackend.configureKey
        ),
        Path("keys/{name}/rotate", write: TransitBackend.rotateKey),
        Path("keys/{name}/trim", fields: [.int("min_available_version", versionRange)], write: TransitBackend.trimKey),
        Path("encrypt/{name}", fields: itemFields, existence: TransitBackend.keyExists, write: TransitBackend.encrypt),
        Path("decrypt/{name}", fields: itemFields, write: TransitBackend.decrypt),
        Path("rewrap/{name}", fields: itemFields, write: TransitBackend.rewrap),
        Path(
            "datakey/{kind}/{name}",
            fields: [
                .int("bits", 0...4096), .bytes("context"), .bytes("associated_data"), .string("nonce"),
                .int("key_version", versionRange),
            ],
            write: TransitBackend.dataKey
        ),
        Path(
            "hmac/{name}/{algorithm?}",
            fields: [
                .string("input"), .string("algorithm"), .int("key_version", versionRange), .any("batch_input"),
                .string("reference"),
            ],
            write: TransitBackend.hmac
        ),
        Path("sign/{name}/{algorithm?}", fields: signFields, write: TransitBackend.sign),
        Path("verify/{name}/{algorithm?}", fields: signFields, write: TransitBackend.verify),
        Path("export/{kind}/{name}/{version?}", read: TransitBackend.export),
        Path("backup/{name}", read: TransitBackend.backup),
        Path("restore/{name?}", fields: [.string("backup"), .bool("force")], write: TransitBackend.restore),
        Path("random", fields: randomFields, write: TransitBackend.random),
        Path("random/{first}", fields: randomFields, write: TransitBackend.random),
        Path("random/{first}/{second}", fields: randomFields, write: TransitBackend.random),
        Path(
            "hash/{algorithm?}",
            fields: [.string("input"), .string("algorithm"), .string("format")],
            write: TransitBackend.hash
        ),
    ])

    static let randomFields: [Field] = [.int("bytes", 0...Int(Int32.max)), .string("format"), .string("source")]

    /// The key a path names; a name the engine could not store is refused before anything else.
    static func keyName(_ request: BackendRequest) throws(CofferError) -> String {
        let name = request.capture("name")
        try validateName(name)
        return name
    }

    /// Read-only, from the cache or storage: deciding create or update never rotates a key.
    func keyExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        let name = request.capture("name")
        guard (try? TransitBackend.validateName(name)) != nil else { return false }
        return try cached(name, request.storage) != nil
    }
}
