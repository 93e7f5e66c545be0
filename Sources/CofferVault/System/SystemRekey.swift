package import CofferAudit
package import CofferCore
package import CofferFramework

/// `sys/rekey/*`, `sys/rekey-recovery-key/*`, `sys/generate-root/*` and `sys/generate-root-token/*`.
/// Served without a token (a threshold of shares is the authority; the backups need a token), by
/// the share quorums in Seal/Rekey.swift and Seal/GenerateRoot.swift.
extension SystemBackend {
    static let rekeyInitFields: [Field] = [
        .int("secret_shares", 0...255), .int("secret_threshold", 0...255), .strings("pgp_keys"), .bool("backup"),
        .bool("require_verification"), .int("stored_shares", 0...255),
    ]
    static let shareFields: [Field] = [.string("key"), .string("nonce")]
    static let generateRootFields: [Field] = [.string("otp"), .string("pgp_key")]

    static let rekeyPaths: [Path<SystemBackend>] =
        ["rekey", "rekey-recovery-key"].flatMap { (base) -> [Path<SystemBackend>] in
            [
                Path(
                    "\(base)/init",
                    fields: rekeyInitFields,
                    read: SystemBackend.rekey,
                    write: SystemBackend.rekey,
                    delete: SystemBackend.rekey
                ),
                Path("\(base)/update", fields: shareFields, write: SystemBackend.rekey),
                Path(
                    "\(base)/verify",
                    fields: shareFields,
                    read: SystemBackend.rekey,
                    write: SystemBackend.rekey,
                    delete: SystemBackend.rekey
                ),
            ]
        } + [
            Path("rekey/backup", read: SystemBackend.rekeyBackup, delete: SystemBackend.rekeyBackup),
            Path("rekey/recovery-key-backup", read: SystemBackend.rekeyBackup, delete: SystemBackend.rekeyBackup),
        ]
        + ["generate-root", "generate-root-token"].flatMap { (base) -> [Path<SystemBackend>] in
            [
                Path(
                    "\(base)/attempt",
                    fields: generateRootFields,
                    read: SystemBackend.generateRoot,
                    write: SystemBackend.generateRoot,
                    delete: SystemBackend.generateRoot
                ),
                Path("\(base)/update", fields: shareFields, write: SystemBackend.generateRoot),
            ]
        }

    /// The quorum state machines take the request as `sys/` paths with their data.
    static func sysRequest(_ request: BackendRequest) -> Request {
        Request(request.operation, "sys/" + request.path, data: request.fields.raw, token: request.token)
    }

    func rekey(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.handleRekey(Self.sysRequest(request))
    }
    func rekeyBackup(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.rekeyBackup(Self.sysRequest(request))
    }
    func generateRoot(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.handleGenerateRoot(Self.sysRequest(request))
    }
}
