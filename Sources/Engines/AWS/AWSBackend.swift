package import CofferCore
package import CofferFramework
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Vault's AWS secrets engine (docs/secrets-aws.md): `config/root` (the key pair Coffer calls IAM
/// and STS with), `config/rotate-root`, `config/lease`, `roles/<name>` with credential_type
/// `iam_user`, `assumed_role`, `federation_token` or `session_token`, and `creds/<name>` / `sts/<name>`.
///
/// `iam_user` credentials are an IAM user made for the request, with the role's inline policy,
/// managed policies, groups and tags, and an access key; under a renewable lease whose end
/// (revocation or expiry) deletes the user's access keys, policies, group memberships and then the
/// user. STS credentials carry a lease that matches their expiry, not renewable, and end by
/// themselves. IAM and STS are called through ``AWSQueryClient`` (SigV4, query protocol).
///
/// Storage under the mount: `config/root` (seal-wrapped), `config/lease`, `role/<name>`, and
/// `wal/user/<id>` (an IAM user being made, until a lease holds it).
package final class AWSBackend: TableBackend {
    package init() {}

    package static let paths = PathTable<AWSBackend>([
        Path("config/root", fields: rootFields, read: AWSBackend.readRoot, write: AWSBackend.writeRoot),
        Path("config/rotate-root", write: AWSBackend.rotateRoot),
        Path("config/lease", fields: leaseFields, read: AWSBackend.readLease, write: AWSBackend.writeLease),
        Path("roles/", list: AWSBackend.listRoles),
        Path(
            "roles/{name}",
            fields: roleFields,
            existence: AWSBackend.roleExists,
            read: AWSBackend.readRole,
            write: AWSBackend.writeRole,
            delete: AWSBackend.deleteRole
        ),
        Path("creds/{name}", fields: credsFields, read: AWSBackend.creds, write: AWSBackend.creds),
        Path("sts/{name}", fields: credsFields, read: AWSBackend.creds, write: AWSBackend.creds),
    ])

    static let rootFields: [Field] = [
        .string("access_key"), .string("secret_key"), .string("region"), .string("iam_endpoint"),
        .string("sts_endpoint"), .string("sts_region"), .int("max_retries", -1...100), .string("username_template"),
    ]
    static let leaseFields: [Field] = [.string("lease"), .string("lease_max")]
    static let roleFields: [Field] = [
        .string("credential_type"), .strings("role_arns"), .strings("policy_arns"), .string("policy_document"),
        .strings("iam_groups"), .any("iam_tags"), .any("session_tags"), .string("external_id"),
        .duration("default_sts_ttl"), .duration("max_sts_ttl"), .string("user_path"),
        .string("permissions_boundary_arn"), .string("mfa_serial_number"),
    ]
    static let credsFields: [Field] = [
        .string("role_arn"), .duration("ttl"), .string("role_session_name"), .string("mfa_code"),
    ]

    package var specialPaths: SpecialPaths {
        // The root configuration holds the secret key.
        SpecialPaths(sealWrapStorage: ["config/root"])
    }

    package var secretTypes: [SecretType] {
        [
            SecretType(
                name: "access_keys",
                revoke: { [self] (request) throws(CofferError) in try revokeCredential(request) }
            )
        ]
    }

    // MARK: Clients

    func rootConfig(_ storage: StorageView) throws(CofferError) -> AWSRootConfig? {
        guard let json = try storage.getJSON("config/root") else { return nil }
        return AWSRootConfig(json: json)
    }

    /// The key Coffer calls AWS with: config/root's, else the process environment's
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), as Vault's credential chain
    /// starts.
    static func credentials(_ config: AWSRootConfig) throws(CofferError) -> AWSCredentials {
        if !config.accessKey.isEmpty && !config.secretKey.isEmpty {
            return AWSCredentials(accessKeyID: config.accessKey, secretAccessKey: config.secretKey)
        }
        func env(_ name: String) -> String { getenv(name).map { String(cString: $0) } ?? "" }
        let id = env("AWS_ACCESS_KEY_ID")
        let secret = env("AWS_SECRET_ACCESS_KEY")
        guard !id.isEmpty, !secret.isEmpty else {
            throw CofferError.invalid(
                "no AWS credentials: write access_key and secret_key to config/root (or give cofferd AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        }
        let token = env("AWS_SESSION_TOKEN")
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token.isEmpty ? nil : token)
    }

    static func iam(_ config: AWSRootConfig) throws(CofferError) -> AWSQueryClient {
        var client = AWSQueryClient.iam(
            try credentials(config),
            region: config.region.isEmpty ? "us-east-1" : config.region,
            endpoint: config.iamEndpoint
        )
        if config.maxRetries >= 0 { client.maxRetries = config.maxRetries }
        return client
    }

    static func sts(_ config: AWSRootConfig) throws(CofferError) -> AWSQueryClient {
        let region = config.stsRegion.isEmpty ? config.region : config.stsRegion
        var client = AWSQueryClient.sts(
            try credentials(config),
            region: config.stsEndpoint.isEmpty && region == "us-east-1" ? "" : region,
            endpoint: config.stsEndpoint
        )
        if config.maxRetries >= 0 { client.maxRetries = config.maxRetries }
        return client
    }

    func config(_ storage: StorageView) throws(CofferError) -> AWSRootConfig {
        // As in Vault, a mount without config/root still works from the environment's key.
        try rootConfig(storage) ?? AWSRootConfig()
    }

    // MARK: config/root

    func readRoot(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let config = try rootConfig(request.storage) else { return .notFound }
        return Response(data: [
            "access_key": .string(config.accessKey), "region": .string(config.region),
            "iam_endpoint": .string(config.iamEndpoint), "sts_endpoint": .string(config.stsEndpoint),
            "sts_region": .string(config.stsRegion), "max_retries": .int(config.maxRetries),
            "username_template": .string(config.usernameTemplate),
        ])
    }

    /// Stores the configuration. As in Vault, nothing is called here: a wrong key shows on the
    /// first credentials asked for (or on `config/rotate-root`).
    func writeRoot(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        var config = try rootConfig(request.storage) ?? AWSRootConfig()
        if let v = f.string("access_key") { config.accessKey = v }
        if let v = f.string("secret_key") { config.secretKey = v }
        if let v = f.string("region") { config.region = v }
        if let v = f.string("iam_endpoint") { config.iamEndpoint = v }
        if let v = f.string("sts_endpoint") { config.stsEndpoint = v }
        if let v = f.string("sts_region") { config.stsRegion = v }
        if let v = f.int("max_retries") { config.maxRetries = v }
        if let v = f.string("username_template") { config.usernameTemplate = v }
        for (name, url) in [("iam_endpoint", config.iamEndpoint), ("sts_endpoint", config.stsEndpoint)]
        where !url.isEmpty && HTTPClient.URL(url) == nil {
            throw CofferError.invalid("\(name) must be an http:// or https:// URL")
        }
        if !config.usernameTemplate.isEmpty {
            do {
                _ = try AWSUsernames.template(config.usernameTemplate)
            } catch {
                throw CofferError.invalid("unable to initialize username template: \(error.message)")
            }
        }
        try request.storage.putJSON("config/root", config.json)
        return .noContent
    }

    /// Vault's rotation: the configured user (IAM `GetUser` without a name) gets a new access key,
    /// which is stored; then the old key is deleted. The answer names the new key's ID only.
    func rotateRoot(_ request: BackendRequest) throws(CofferError) -> Response {
        guard var config = try rootConfig(request.storage) else {
            throw CofferError(.internal, "no configuration found for config/root")
        }
        guard !config.accessKey.isEmpty, !config.secretKey.isEmpty else {
            throw CofferError.invalid("Cannot call config/rotate-root when either access_key or secret_key is empty")
        }
        let client = try Self.iam(config)
        let userName: String
        let created: (id: String, secret: String)
        do throws(AWSError) {
            let user = try client.call(action: "GetUser")
            guard let name = user.text("GetUserResult", "User", "UserName"), !name.isEmpty else {
                throw AWSError(.response, service: "iam", action: "GetUser", message: "no UserName in the answer")
            }
            userName = name
            let key = try client.call(action: "CreateAccessKey", parameters: [("UserName", name)])
            guard let id = key.text("CreateAccessKeyResult", "AccessKey", "AccessKeyId"),
                let secret = key.text("CreateAccessKeyResult", "AccessKey", "SecretAccessKey"), !id.isEmpty,
                !secret.isEmpty
            else {
                throw AWSError(
                    .response,
                    service: "iam",
                    action: "CreateAccessKey",
                    message: "no AccessKeyId or SecretAccessKey in the answer"
                )
            }
            created = (id, secret)
        } catch {
            throw CofferError(.internal, "error rotating the root key: \(error)")
        }
        let oldKey = config.accessKey
        config.accessKey = created.id
        config.secretKey = created.secret
        try request.storage.putJSON("config/root", config.json)
        do {
            // With the old key, as Vault does: a new IAM key may take a moment to be accepted.
            try client.call(action: "DeleteAccessKey", parameters: [("AccessKeyId", oldKey), ("UserName", userName)])
        } catch {
            throw CofferError(.internal, "error deleting old access key: \(error)")
        }
        return Response(data: ["access_key": .string(created.id)])
    }

    // MARK: config/lease

    func readLease(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let json = try request.storage.getJSON("config/lease") else { return .notFound }
        let lease = AWSLeaseConfig(json: json)
        return Response(data: [
            "lease": .string(VaultDuration.goString(seconds: lease.lease)),
            "lease_max": .string(VaultDuration.goString(seconds: lease.leaseMax)),
        ])
    }

    func writeLease(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        guard let leaseText = f.string("lease"), !leaseText.isEmpty else {
            throw CofferError.invalid("'lease' is a required parameter")
        }
        guard let maxText = f.string("lease_max"), !maxText.isEmpty else {
            throw CofferError.invalid("'lease_max' is a required parameter")
        }
        guard let lease = VaultDuration.parse(leaseText) else {
            throw CofferError.invalid("Invalid lease: time: invalid duration")
        }
        guard let leaseMax = VaultDuration.parse(maxText) else {
            throw CofferError.invalid("Invalid lease_max: time: invalid duration")
        }
        try request.storage.putJSON("config/lease", AWSLeaseConfig(lease: lease, leaseMax: leaseMax).json)
        return .noContent
    }

    // MARK: roles/

    func listRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list("role/")
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func roleExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("role/" + request.capture("name")) != nil
    }

    func role(_ storage: StorageView, _ name: String) throws(CofferError) -> AWSRole? {
        try storage.getJSON("role/" + name).map { AWSRole(json: $0) }
    }

    func readRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try role(request.storage, request.capture("name")) else { return .notFound }
        return Response(data: role.responseData)
    }

    /// Vault's checks, all at once, before anything is stored: a refused write changes nothing.
    func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let name = request.capture("name")
        let existing = try role(request.storage, name)
        var role = existing ?? AWSRole()
        guard let typeText = f.string("credential_type") ?? existing?.credentialType.rawValue else {
            throw CofferError.invalid(#"error(s) validating supplied role data: "did not supply credential_type""#)
        }
        guard let type = AWSCredentialType(rawValue: typeText) else {
            throw CofferError.invalid(
                "error(s) validating supplied role data: \"unrecognized credential type: \(typeText)\""
            )
        }
        role.credentialType = type
        if let v = f.strings("role_arns") { role.roleARNs = v }
        if let v = f.strings("policy_arns") { role.policyARNs = v }
        if let v = f.string("policy_document") {
            if v.isEmpty {
                role.policyDocument = ""
            } else {
                guard let compacted = compactJSON(v) else {
                    throw CofferError.invalid("cannot parse policy document: it is not valid JSON")
                }
                role.policyDocument = compacted
            }
        }
        if let v = f.strings("iam_groups") { role.iamGroups = v }
        if let v = f.json("iam_tags") { role.iamTags = try Self.keyValuePairs(v, field: "iam_tags") }
        if let v = f.json("session_tags") { role.sessionTags = try Self.keyValuePairs(v, field: "session_tags") }
        if let v = f.string("external_id") { role.externalID = v }
        if let v = f.seconds("default_sts_ttl") { role.defaultSTSTTL = v }
        if let v = f.seconds("max_sts_ttl") { role.maxSTSTTL = v }
        if let v = f.string("user_path") { role.userPath = v }
        if let v = f.string("permissions_boundary_arn") { role.permissionsBoundaryARN = v }
        if let v = f.string("mfa_serial_number") { role.mfaSerialNumber = v }
        let problems = role.problems
        guard problems.isEmpty else {
            let quoted =
                problems.count == 1
                ? problems[0] : "\(problems.count) errors occurred: " + problems.joined(separator: "; ")
            throw CofferError.invalid("error(s) validating supplied role data: \(AWSBackend.quoted(quoted))")
        }
        try request.storage.putJSON("role/" + name, role.json)
        return .noContent
    }

    /// Go's `%q` of `text` (near enough: JSON's quoting).
    static func quoted(_ text: String) -> String {
        String(decoding: JSONValue.string(text).serialized(), as: UTF8.self)
    }

    func deleteRole(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("role/" + request.capture("name"))
        return .noContent
    }

    /// Vault's `TypeKVPairs`: an object of strings, or a list (or comma-separated text) of `key=value`.
    static func keyValuePairs(_ value: JSONValue, field: String) throws(CofferError) -> [String: String] {
        var out: [String: String] = [:]
        var items: [String] = []
        switch value {
        case .object(let o):
            for (k, v) in o {
                guard let s = v.stringValue else { throw CofferError.invalid("\(field).\(k) must be a string") }
                out[k] = s
            }
            return out
        case .array(let a):
            for item in a {
                guard let s = item.stringValue else { throw CofferError.invalid("\(field) must hold key=value text") }
                items.append(s)
            }
        case .string(let s):
            items = s.split(separator: ",").map(String.init)
        default:
            throw CofferError.invalid("\(field) must be an object or a list of key=value pairs")
        }
        for item in items where !item.isEmpty {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw CofferError.invalid("invalid key value pair in \(field): each item must be key=value")
            }
            out[String(item[..<eq]).trimmingSpaces] = String(item[item.index(after: eq)...]).trimmingSpaces
        }
        return out
    }

    // MARK: creds/ and sts/

    func creds(_ request: BackendRequest) throws(CofferError) -> Response {
        let roleName = request.capture("name")
        guard let role = try role(request.storage, roleName) else {
            throw CofferError.invalid("Role \"\(roleName)\" not found")
        }
        let config = try config(request.storage)
        let displayName = request.caller?.displayName ?? ""
        switch role.credentialType {
        case .iamUser:
            return try createUser(request, config, role, roleName: roleName, displayName: displayName)
        case .assumedRole, .federationToken, .sessionToken:
            // Vault: `ttl` (default 3600), else the role's default_sts_ttl; capped by max_sts_ttl,
            // else the mount's maximum lease TTL.
            var ttl = request.fields.seconds("ttl") ?? (role.defaultSTSTTL > 0 ? role.defaultSTSTTL : 3600)
            let maxTTL = role.maxSTSTTL > 0 ? role.maxSTSTTL : request.mount.leaseTTL(asked: 0, max: 0).max
            ttl = min(ttl, maxTTL)
            if role.credentialType == .assumedRole {
                var roleARN = request.fields.string("role_arn") ?? ""
                if roleARN.isEmpty {
                    guard role.roleARNs.count == 1 else {
                        throw CofferError.invalid("did not supply a role_arn parameter and unable to determine one")
                    }
                    roleARN = role.roleARNs[0]
                } else if !role.roleARNs.contains(roleARN) {
                    throw CofferError.invalid(
                        "role_arn \"\(roleARN)\" not in allowed role arns for Vault role \"\(roleName)\""
                    )
                }
                return try assumeRole(request, config, role, roleName: roleName, roleARN: roleARN, ttl: ttl)
            }
            if role.credentialType == .sessionToken { return try sessionToken(request, config, role, ttl: ttl) }
            return try federationToken(request, config, role, ttl: ttl)
        }
    }

    /// An AWS failure as the answer's error: Vault's 400 with its words first.
    static func failure(_ what: String, _ error: AWSError) -> CofferError {
        CofferError.invalid("\(what): \(error)")
    }

    func createUser(
        _ request: BackendRequest,
        _ config: AWSRootConfig,
        _ role: AWSRole,
        roleName: String,
        displayName: String
    ) throws(CofferError) -> Response {
        let client = try Self.iam(config)
        let username = try AWSUsernames.iamUser(
            template: config.usernameTemplate,
            displayName: displayName,
            roleName: roleName,
            now: request.now
        )
        var parameters = [("UserName", username), ("Path", role.userPath.isEmpty ? "/" : role.userPath)]
        if !role.permissionsBoundaryARN.isEmpty {
            parameters.append(("PermissionsBoundary", role.permissionsBoundaryARN))
        }
        // As Vault does: a write-ahead entry names the user before it exists, so a user left by a
        // crash or a failed clean-up is found and deleted later (``periodic``).
        let wal = "wal/user/" + Random.uuid()
        try request.storage.putJSON(wal, ["username": .string(username), "created": .int(Int(request.now.seconds))])
        do {
            try client.call(action: "CreateUser", parameters: parameters)
        } catch {
            try? request.storage.delete(wal)
            throw Self.failure("Error creating IAM user", error)
        }
        // From here on a failure deletes what was made, so nothing is left half-made.
        let accessKey: (id: String, secret: String)
        do throws(CofferError) {
            for arn in role.policyARNs {
                do {
                    try client.call(
                        action: "AttachUserPolicy",
                        parameters: [("UserName", username), ("PolicyArn", arn)]
                    )
                } catch { throw Self.failure("Error attaching user policy", error) }
            }
            if !role.policyDocument.isEmpty {
                do {
                    try client.call(
                        action: "PutUserPolicy",
                        parameters: [
                            ("UserName", username), ("PolicyName", roleName), ("PolicyDocument", role.policyDocument),
                        ]
                    )
                } catch { throw Self.failure("Error putting user policy", error) }
            }
            for group in role.iamGroups {
                do {
                    try client.call(
                        action: "AddUserToGroup",
                        parameters: [("UserName", username), ("GroupName", group)]
                    )
                } catch { throw Self.failure("Error adding user to group", error) }
            }
            if !role.iamTags.isEmpty {
                var tags = [("UserName", username)]
                for (i, (key, value)) in role.iamTags.sorted(by: { $0.key < $1.key }).enumerated() {
                    tags.append(("Tags.member.\(i + 1).Key", key))
                    tags.append(("Tags.member.\(i + 1).Value", value))
                }
                do {
                    try client.call(action: "TagUser", parameters: tags)
                } catch { throw Self.failure("Error adding tags to user", error) }
            }
            let answer: AWSXML
            do {
                answer = try client.call(action: "CreateAccessKey", parameters: [("UserName", username)])
            } catch { throw Self.failure("Error creating access keys", error) }
            guard let id = answer.text("CreateAccessKeyResult", "AccessKey", "AccessKeyId"),
                let secret = answer.text("CreateAccessKeyResult", "AccessKey", "SecretAccessKey"), !id.isEmpty,
                !secret.isEmpty
            else { throw CofferError(.internal, "Error creating access keys: no access key in IAM's answer") }
            accessKey = (id, secret)
        } catch {
            do {
                try Self.deleteUser(client, username)
            } catch let cleanup {
                // The write-ahead entry stays: Coffer tries again later.
                throw CofferError(
                    error.code,
                    "\(error.message); deleting the half-made IAM user \(username) failed too (Coffer tries again after \(Self.walMinimumAge / 60) minutes): \(cleanup)"
                )
            }
            try? request.storage.delete(wal)
            throw error
        }
        // The lease holds the user from here on (a crash before it is recorded leaves the entry).
        try? request.storage.delete(wal)
        var lease = AWSLeaseConfig(lease: 0, leaseMax: 0)
        if let json = try request.storage.getJSON("config/lease") { lease = AWSLeaseConfig(json: json) }
        var response = Response(data: [
            "access_key": .string(accessKey.id), "secret_key": .string(accessKey.secret), "security_token": .null,
        ])
        response.secret = SecretLease(
            type: "access_keys",
            internalData: ["username": .string(username), "policy": .string(roleName), "is_sts": false],
            ttl: lease.lease,
            maxTTL: lease.leaseMax
        )
        return response
    }

    func assumeRole(
        _ request: BackendRequest,
        _ config: AWSRootConfig,
        _ role: AWSRole,
        roleName: String,
        roleARN: String,
        ttl: Int64
    ) throws(CofferError) -> Response {
        let client = try Self.sts(config)
        var sessionName = request.fields.string("role_session_name") ?? ""
        if sessionName.isEmpty {
            sessionName = try AWSUsernames.assumedRoleSession(
                template: config.usernameTemplate,
                displayName: request.caller?.displayName ?? "",
                roleName: roleName,
                now: request.now
            )
        } else {
            sessionName = AWSUsernames.normalize(sessionName)
        }
        let (policy, policyARNs) = try Self.withGroupPolicies(config, role)
        var parameters = [("RoleArn", roleARN), ("RoleSessionName", sessionName), ("DurationSeconds", String(ttl))]
        if !policy.isEmpty { parameters.append(("Policy", policy)) }
        for (i, arn) in policyARNs.enumerated() { parameters.append(("PolicyArns.member.\(i + 1).arn", arn)) }
        for (i, (key, value)) in role.sessionTags.sorted(by: { $0.key < $1.key }).enumerated() {
            parameters.append(("Tags.member.\(i + 1).Key", key))
            parameters.append(("Tags.member.\(i + 1).Value", value))
        }
        if !role.externalID.isEmpty { parameters.append(("ExternalId", role.externalID)) }
        let answer: AWSXML
        do {
            answer = try client.call(action: "AssumeRole", parameters: parameters)
        } catch {
            throw Self.failure("Error assuming role", error)
        }
        guard let credentials = answer.element(["AssumeRoleResult", "Credentials"]) else {
            throw CofferError(.internal, "Error assuming role: no Credentials in STS's answer")
        }
        var response = try Self.stsResponse(credentials, request.now)
        response.data?["arn"] = .string(answer.text("AssumeRoleResult", "AssumedRoleUser", "Arn") ?? "")
        response.secret?.internalData = [
            "username": .string(sessionName), "policy": .string(roleARN), "is_sts": true,
        ]
        return response
    }

    func federationToken(
        _ request: BackendRequest,
        _ config: AWSRootConfig,
        _ role: AWSRole,
        ttl: Int64
    ) throws(CofferError) -> Response {
        let (policy, policyARNs) = try Self.withGroupPolicies(config, role)
        // Without a policy GetFederationToken would hand out Coffer's own permissions.
        guard !policy.isEmpty || !policyARNs.isEmpty else {
            throw CofferError.invalid(
                "must specify at least one of policy_arns or policy_document with federation_token credential_type"
            )
        }
        let client = try Self.sts(config)
        let name = try AWSUsernames.stsName(template: config.usernameTemplate, now: request.now)
        var parameters = [("Name", name), ("DurationSeconds", String(ttl))]
        if !policy.isEmpty { parameters.append(("Policy", policy)) }
        for (i, arn) in policyARNs.enumerated() { parameters.append(("PolicyArns.member.\(i + 1).arn", arn)) }
        let answer: AWSXML
        do {
            answer = try client.call(action: "GetFederationToken", parameters: parameters)
        } catch {
            throw Self.failure("Error generating STS keys", error)
        }
        guard let credentials = answer.element(["GetFederationTokenResult", "Credentials"]) else {
            throw CofferError(.internal, "Error generating STS keys: no Credentials in STS's answer")
        }
        var response = try Self.stsResponse(credentials, request.now)
        response.secret?.internalData = [
            "username": .string(name), "policy": .string(policy), "is_sts": true,
        ]
        return response
    }

    /// `sts:GetSessionToken` for Coffer's own user (with `mfa_serial_number` and the request's
    /// `mfa_code` when the role has a serial number), as Vault's `session_token` type.
    func sessionToken(
        _ request: BackendRequest,
        _ config: AWSRootConfig,
        _ role: AWSRole,
        ttl: Int64
    ) throws(CofferError) -> Response {
        let client = try Self.sts(config)
        var parameters = [("DurationSeconds", String(ttl))]
        if !role.mfaSerialNumber.isEmpty {
            parameters.append(("SerialNumber", role.mfaSerialNumber))
            if let code = request.fields.string("mfa_code"), !code.isEmpty { parameters.append(("TokenCode", code)) }
        }
        let answer: AWSXML
        do {
            answer = try client.call(action: "GetSessionToken", parameters: parameters)
        } catch {
            throw Self.failure("Error generating STS keys", error)
        }
        guard let credentials = answer.element(["GetSessionTokenResult", "Credentials"]) else {
            throw CofferError(.internal, "Error generating STS keys: no Credentials in STS's answer")
        }
        var response = try Self.stsResponse(credentials, request.now)
        response.secret?.internalData = ["username": "", "policy": "", "is_sts": true]
        return response
    }

    /// The role's policy document and managed policy ARNs with, as in Vault, those of its
    /// `iam_groups` for the STS types: each group's inline policies (from IAM, URL-encoded) merged
    /// into one document with the role's own statements, its attached policies' ARNs appended.
    static func withGroupPolicies(_ config: AWSRootConfig, _ role: AWSRole) throws(CofferError) -> (String, [String]) {
        guard !role.iamGroups.isEmpty else { return (role.policyDocument, role.policyARNs) }
        let client = try iam(config)
        var documents: [String] = []
        var arns = role.policyARNs
        do throws(AWSError) {
            for group in role.iamGroups {
                let named = [("GroupName", group)]
                arns += try list(
                    client,
                    "ListAttachedGroupPolicies",
                    named,
                    ["ListAttachedGroupPoliciesResult", "AttachedPolicies"],
                    "PolicyArn"
                )
                let names = try list(
                    client,
                    "ListGroupPolicies",
                    named,
                    ["ListGroupPoliciesResult", "PolicyNames"],
                    nil
                )
                for name in names {
                    let answer = try client.call(action: "GetGroupPolicy", parameters: named + [("PolicyName", name)])
                    if let text = answer.text("GetGroupPolicyResult", "PolicyDocument"), !text.isEmpty {
                        documents.append(percentDecode(text))
                    }
                }
            }
        } catch {
            throw CofferError.invalid("error reading the policies of iam_groups: \(error)")
        }
        guard !documents.isEmpty else { return (role.policyDocument, arns) }
        guard let merged = combinePolicyDocuments(documents + [role.policyDocument]) else {
            throw CofferError.invalid("an inline policy of iam_groups is not a JSON policy document")
        }
        return (merged, arns)
    }

    /// One document holding every statement of `documents` ("" skipped; a single statement object
    /// counts as a list of one), version 2012-10-17; nil if one is not a JSON object.
    package static func combinePolicyDocuments(_ documents: [String]) -> String? {
        var statements: [JSONValue] = []
        for text in documents where !text.isEmpty {
            guard let document = try? JSONValue.parse(text), case .object(let fields) = document else { return nil }
            switch fields["Statement"] {
            case .array(let items)?: statements += items
            case .some(let item) where item != .null: statements.append(item)
            default: break
            }
        }
        let combined: JSONValue = ["Version": "2012-10-17", "Statement": .array(statements)]
        return String(decoding: combined.serialized(), as: UTF8.self)
    }

    /// Go's `url.QueryUnescape` (IAM's answers carry policy documents URL-encoded); a malformed
    /// escape is kept as it is.
    package static func percentDecode(_ text: String) -> String {
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2])
            {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(bytes[i] == UInt8(ascii: "+") ? 0x20 : bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// STS credentials with a lease ending when they expire, not renewable (as in Vault).
    static func stsResponse(_ credentials: AWSXML, _ now: Timestamp) throws(CofferError) -> Response {
        guard let id = credentials.text("AccessKeyId"), let secret = credentials.text("SecretAccessKey"),
            let token = credentials.text("SessionToken"), !id.isEmpty, !secret.isEmpty
        else { throw CofferError(.internal, "no access key in STS's answer") }
        let expiration = credentials.text("Expiration").flatMap { Timestamp(rfc3339: $0) }
        let ttl = max(1, expiration.map { now.seconds(until: $0) } ?? 3600)
        var response = Response(data: [
            "access_key": .string(id), "secret_key": .string(secret), "security_token": .string(token),
        ])
        response.secret = SecretLease(type: "access_keys", internalData: [:], ttl: ttl, maxTTL: ttl, renewable: false)
        return response
    }

    // MARK: Write-ahead entries of IAM users (Vault's WAL rollback)

    /// Entries younger than this are left alone: the request that wrote one may still be running, and
    /// IAM may not yet show a user just made (Vault waits the same 5 minutes).
    static let walMinimumAge: Int64 = 300
    private let lastWALScan = Mutex<Timestamp>(.zero)

    /// About once a minute: each write-ahead entry older than ``walMinimumAge`` is a user no lease
    /// holds (issuing failed and so did its clean-up, or cofferd stopped half-way); delete it, then
    /// the entry. One that cannot be deleted now is tried again next time.
    package func periodic(storage: StorageView, mount: MountEntry, system: any SystemView, now: Timestamp) {
        let due = lastWALScan.withLock { last in
            guard last.seconds(until: now) >= 60 || now < last else { return false }
            last = now
            return true
        }
        guard due, let keys = try? storage.list("wal/user/"), !keys.isEmpty else { return }
        guard let config = try? config(storage), var client = try? Self.iam(config) else { return }
        // This runs on the lease runner's thread: no retries, and a few entries per scan.
        client.maxRetries = 0
        var tried = 0
        for key in keys where tried < 10 {
            guard let entry = try? storage.getJSON("wal/user/" + key),
                let username = entry["username"]?.stringValue,
                now.seconds - Int64(entry["created"]?.intValue ?? 0) >= Self.walMinimumAge
            else { continue }
            tried += 1
            if !username.isEmpty {
                do {
                    try Self.deleteUser(client, username)
                } catch {
                    continue
                }
            }
            try? storage.delete("wal/user/" + key)
        }
    }

    // MARK: Revocation (the lease manager calls it at revoke and at expiry)

    /// STS credentials end by themselves. An IAM user loses its group memberships, access keys,
    /// managed and inline policies, and is then deleted; a user already gone counts as revoked.
    func revokeCredential(_ request: SecretRequest) throws(CofferError) {
        if request.internalData["is_sts"]?.boolValue == true { return }
        guard let username = request.internalData["username"]?.stringValue, !username.isEmpty else {
            throw CofferError(.internal, "secret is missing username internal data")
        }
        let client = try Self.iam(try config(request.storage))
        do {
            try Self.deleteUser(client, username)
        } catch {
            throw CofferError(.internal, "error deleting IAM user \(username): \(error)")
        }
    }

    /// Vault's order: groups, access keys, managed policies, inline policies, the user.
    static func deleteUser(_ client: AWSQueryClient, _ username: String) throws(AWSError) {
        let user = [("UserName", username)]
        let groups: [String]
        do {
            groups = try list(client, "ListGroupsForUser", user, ["ListGroupsForUserResult", "Groups"], "GroupName")
        } catch  where error.code == "NoSuchEntity" {
            return
        }
        let keys = try list(
            client,
            "ListAccessKeys",
            user,
            ["ListAccessKeysResult", "AccessKeyMetadata"],
            "AccessKeyId"
        )
        let attached = try list(
            client,
            "ListAttachedUserPolicies",
            user,
            ["ListAttachedUserPoliciesResult", "AttachedPolicies"],
            "PolicyArn"
        )
        let inline = try list(client, "ListUserPolicies", user, ["ListUserPoliciesResult", "PolicyNames"], nil)
        for group in groups {
            try ignoringGone { () throws(AWSError) in
                try client.call(action: "RemoveUserFromGroup", parameters: user + [("GroupName", group)])
            }
        }
        for key in keys {
            try ignoringGone { () throws(AWSError) in
                try client.call(action: "DeleteAccessKey", parameters: user + [("AccessKeyId", key)])
            }
        }
        for arn in attached {
            try ignoringGone { () throws(AWSError) in
                try client.call(action: "DetachUserPolicy", parameters: user + [("PolicyArn", arn)])
            }
        }
        for name in inline {
            try ignoringGone { () throws(AWSError) in
                try client.call(action: "DeleteUserPolicy", parameters: user + [("PolicyName", name)])
            }
        }
        try ignoringGone { () throws(AWSError) in try client.call(action: "DeleteUser", parameters: user) }
    }

    static func ignoringGone(_ body: () throws(AWSError) -> AWSXML) throws(AWSError) {
        do {
            _ = try body()
        } catch  where error.code == "NoSuchEntity" {}
    }

    /// Every page of an IAM list: the `member` elements at `path`, their `field` child's text (or
    /// their own text when `field` is nil).
    static func list(
        _ client: AWSQueryClient,
        _ action: String,
        _ parameters: [(String, String)],
        _ path: [String],
        _ field: String?
    ) throws(AWSError) -> [String] {
        var out: [String] = []
        var marker = ""
        for _ in 0..<100 {
            var page = parameters + [("MaxItems", "1000")]
            if !marker.isEmpty { page.append(("Marker", marker)) }
            let answer = try client.call(action: action, parameters: page)
            let members = answer.element(path)?.children.filter { $0.name == "member" } ?? []
            for member in members {
                if let field {
                    if let text = member.child(field)?.text { out.append(text) }
                } else {
                    out.append(member.text)
                }
            }
            let result = answer.element([path[0]])
            guard result?.text("IsTruncated") == "true", let next = result?.text("Marker"), !next.isEmpty else { break }
            marker = next
        }
        return out
    }
}

/// Names for the IAM users, role sessions and federated users Coffer makes: Vault's default
/// template, or config/root's `username_template` (the fields `.DisplayName`, `.RoleName` and
/// `.PolicyName`, the role's name; Go template conditionals are not supported).
enum AWSUsernames {
    static func template(_ text: String) throws(CofferError) -> UsernameTemplate {
        try UsernameTemplate.parsed(text.replacing(".PolicyName", with: ".RoleName"))
    }

    /// Vault's `normalizeDisplayName`: anything outside `[a-zA-Z0-9+=,.@_-]` becomes `_`.
    static func normalize(_ text: String) -> String {
        String(
            text.map { c -> Character in
                c.isASCII && (c.isLetter || c.isNumber || "+=,.@_-".contains(c)) ? c : "_"
            }
        )
    }

    static func random(_ count: Int) -> String {
        let charset = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        var out = ""
        while out.count < count {
            for byte in Random.bytes(count * 2) where Int(byte) < 256 - 256 % charset.count && out.count < count {
                out.append(charset[Int(byte) % charset.count])
            }
        }
        return out
    }

    /// `vault-<display>-<role>-<unix time>-<20 random>`, at most 64 characters (Vault's default).
    static func iamUser(
        template: String,
        displayName: String,
        roleName: String,
        now: Timestamp
    ) throws(CofferError)
        -> String
    {
        let name: String
        if template.isEmpty {
            let middle = String("\(normalize(displayName))-\(normalize(roleName))".prefix(42))
            name = String("vault-\(middle)-\(now.seconds)-\(random(20))".prefix(64))
        } else {
            name = try self.template(template).render(
                .init(roleName: normalize(roleName), displayName: normalize(displayName), now: now)
            )
        }
        guard name.count <= 64 else {
            throw CofferError.invalid(
                "the username generated by the template exceeds the IAM username length limits of 64 chars"
            )
        }
        return name
    }

    static func assumedRoleSession(
        template: String,
        displayName: String,
        roleName: String,
        now: Timestamp
    )
        throws(CofferError) -> String
    {
        try iamUser(template: template, displayName: displayName, roleName: roleName, now: now)
    }

    /// `vault-<unix time>-<random>`, 32 characters (GetFederationToken's limit).
    static func stsName(template: String, now: Timestamp) throws(CofferError) -> String {
        let name: String
        if template.isEmpty {
            name = String("vault-\(now.seconds)-\(random(20))".prefix(32))
        } else {
            name = try self.template(template).render(.init(roleName: "", displayName: "", now: now))
        }
        guard name.count <= 32 else {
            throw CofferError.invalid(
                "the username generated by the template exceeds the STS username length limits of 32 chars"
            )
        }
        return name
    }
}
