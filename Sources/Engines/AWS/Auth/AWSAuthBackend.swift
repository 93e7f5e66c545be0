package import CofferCore
package import CofferFramework
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Looks an IAM principal up in IAM with Coffer's own credentials (`config/client`): its full ARN
/// (with path) and unique ID, by iam:GetUser or iam:GetRole.
package protocol IAMPrincipalLookup: Sendable {
    func lookUp(
        _ entity: IAMEntity,
        config: AWSAuthClientConfig
    ) throws(AWSAuthError) -> (arn: String, uniqueID: String)
}

/// Vault's AWS auth method (`aws` type), the `iam` login only.
///
/// The client signs an `sts:GetCallerIdentity` request with its own AWS credentials (SigV4) and
/// sends it, unsent, to `login`; Coffer checks it (POST, a body that asks GetCallerIdentity and
/// nothing else, no query, the `X-Vault-AWS-IAM-Server-ID` header signed and equal to this vault's
/// value when one is configured), forwards it to the configured STS endpoint with the client's
/// headers and `Host`, and trusts the ARN STS answers with. The ARN is bound to the role:
///
/// - `config/client`: `access_key`/`secret_key` (never read back) for Coffer's own IAM calls,
///   `sts_endpoint`, `iam_endpoint`, `sts_region`, `iam_server_id_header_value`,
///   `allowed_sts_header_values`, `max_retries`.
/// - `config/identity`: `iam_alias` (`role_id`, `unique_id`, `full_arn`), `iam_metadata`.
/// - `role/<name>`: `auth_type` iam, `bound_iam_principal_arn` (`*` at the end matches a prefix,
///   checked against the principal's full ARN from IAM), `resolve_aws_unique_ids` (default true:
///   each bound ARN's unique ID is looked up at write and the login must come from that ID),
///   `token_*`.
/// - `login` {role, iam_http_request_method, iam_request_url, iam_request_body,
///   iam_request_headers}: the role defaults to the principal's friendly name.
///
/// Refusals are 400s with Vault's texts. Storage under the mount: `config/client` (seal-wrapped),
/// `config/identity`, `role/<name>`.
package final class AWSAuthBackend: TableBackend {
    let lookup: (any IAMPrincipalLookup)?

    package init(lookup: (any IAMPrincipalLookup)? = nil) { self.lookup = lookup }

    let roleLock = Mutex(())

    package var specialPaths: SpecialPaths {
        SpecialPaths(unauthenticated: ["login"], sealWrapStorage: ["config/client"])
    }

    package static let paths = PathTable<AWSAuthBackend>([
        Path(
            "config/client",
            fields: AWSAuthClientConfig.fields,
            read: AWSAuthBackend.readClientConfig,
            write: AWSAuthBackend.writeClientConfig,
            delete: AWSAuthBackend.deleteClientConfig
        ),
        Path(
            "config/identity",
            fields: AWSAuthIdentityConfig.fields,
            read: AWSAuthBackend.readIdentityConfig,
            write: AWSAuthBackend.writeIdentityConfig
        ),
        Path("role/", list: AWSAuthBackend.listRoles),
        Path("roles/", list: AWSAuthBackend.listRoles),
        Path(
            "role/{name}",
            fields: AWSAuthRole.fields,
            existence: AWSAuthBackend.roleExists,
            read: AWSAuthBackend.readRole,
            write: AWSAuthBackend.writeRole,
            delete: AWSAuthBackend.deleteRole
        ),
        Path(
            "login",
            fields: [
                .string("role"), .string("iam_http_request_method"), .string("iam_request_url"),
                .string("iam_request_body"), .any("iam_request_headers"), .string("pkcs7"), .string("identity"),
                .string("signature"), .string("nonce"),
            ],
            write: AWSAuthBackend.login
        ),
    ])

    // MARK: - config

    static func loadClientConfig(_ storage: StorageView) throws(CofferError) -> AWSAuthClientConfig? {
        guard case .object(let json)? = try storage.getJSON("config/client") else { return nil }
        return AWSAuthClientConfig(json: json)
    }

    func readClientConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let config = try Self.loadClientConfig(request.storage) else { return .notFound }
        return Response(data: config.readable)
    }

    func writeClientConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        var config = try Self.loadClientConfig(request.storage) ?? AWSAuthClientConfig()
        try config.update(from: request.fields)
        try request.storage.putJSON("config/client", config.stored)
        return .noContent
    }

    func deleteClientConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("config/client")
        return .noContent
    }

    static func loadIdentityConfig(_ storage: StorageView) throws(CofferError) -> AWSAuthIdentityConfig {
        guard case .object(let json)? = try storage.getJSON("config/identity") else { return AWSAuthIdentityConfig() }
        return AWSAuthIdentityConfig(json: json)
    }

    func readIdentityConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        Response(data: try Self.loadIdentityConfig(request.storage).json)
    }

    func writeIdentityConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        var config = try Self.loadIdentityConfig(request.storage)
        try config.update(from: request.fields)
        var stored = config.json
        stored["ec2_alias"] = nil
        stored["ec2_metadata"] = nil
        try request.storage.putJSON("config/identity", .object(stored))
        return .noContent
    }

    // MARK: - roles

    static func roleName(_ request: BackendRequest) throws(CofferError) -> String {
        let name = request.capture("name").lowercased()
        guard !name.isEmpty else { throw CofferError.invalid("missing role") }
        return name
    }

    /// A renewal needs the role that made the token (found by the `role_id` in its metadata) and
    /// follows its current token TTLs, as Vault's renew does; a deleted role stops it with Vault's text.
    package func renewLogin(_ renewal: LoginRenewal) throws(CofferError) -> TokenParameters? {
        guard let roleID = renewal.metadata["role_id"] else { return nil }
        for name in try renewal.storage.list("role/") {
            if let role = try Self.loadRole(renewal.storage, name), role.roleID == roleID { return role.token }
        }
        throw CofferError.invalid("role entry not found")
    }

    static func loadRole(_ storage: StorageView, _ name: String) throws(CofferError) -> AWSAuthRole? {
        guard !name.isEmpty, case .object(let json)? = try storage.getJSON("role/" + name) else { return nil }
        return AWSAuthRole(json: json)
    }

    func roleExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("role/" + request.capture("name").lowercased()) != nil
    }

    func listRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list("role/")
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.sorted().map { .string($0) })])
    }

    func readRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let role = try Self.loadRole(request.storage, try Self.roleName(request)) else { return .notFound }
        return Response(data: role.readable)
    }

    func deleteRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.roleName(request)
        try roleLock.withLock { _ throws(CofferError) in try request.storage.delete("role/" + name) }
        return .noContent
    }

    /// Vault's checks and messages for a role write, for the iam auth type.
    func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Self.roleName(request)
        let f = request.fields
        return try roleLock.withLock { _ throws(CofferError) -> Response in
            let existing = try Self.loadRole(request.storage, name)
            var role = existing ?? AWSAuthRole()
            if existing == nil { role.roleID = Random.uuid() }
            if let type = f.string("auth_type") {
                switch type {
                case "iam": break
                case "ec2":
                    throw CofferError.invalid(
                        "auth_type ec2 is not supported: Coffer's aws auth method supports only the iam auth type"
                    )
                default: throw CofferError.invalid("unrecognized auth_type: \(type)")
                }
            }
            if let resolve = f.bool("resolve_aws_unique_ids") {
                if existing != nil && role.resolveUniqueIDs && !resolve {
                    throw CofferError.invalid("changing resolve_aws_unique_ids from true to false is not allowed")
                }
                role.resolveUniqueIDs = resolve
            }
            if let arns = f.strings("bound_iam_principal_arn") {
                role.boundARNs = arns.map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
                role.boundIDs = []
            }
            if let inferred = f.string("inferred_entity_type"), !inferred.isEmpty {
                throw CofferError.invalid(
                    "inferred_entity_type is not supported: Coffer's aws auth method does not infer EC2 instances"
                )
            }
            if let region = f.string("inferred_aws_region"), !region.isEmpty {
                throw CofferError.invalid("specified inferred_aws_region but not inferred_entity_type")
            }
            for field in AWSAuthRole.ec2ListFields where !(f.strings(field) ?? []).isEmpty {
                throw CofferError.invalid(
                    "specified \(field) but not specifying ec2 auth_type or inferring ec2_instance"
                )
            }
            if !(f.strings("bound_region") ?? []).isEmpty {
                throw CofferError.invalid("specified bound_region but not specifying ec2 auth_type")
            }
            for field in ["disallow_reauthentication", "allow_instance_migration"] where f.has(field) {
                throw CofferError.invalid("specified \(field) when not using ec2 auth type")
            }
            if let tag = f.string("role_tag"), !tag.isEmpty {
                throw CofferError.invalid("tried to enable role_tag when not using ec2 auth method")
            }
            guard !role.boundARNs.isEmpty else {
                throw CofferError.invalid("at least one bound parameter should be specified on the role")
            }
            if role.resolveUniqueIDs && role.boundIDs.isEmpty {
                let config = try Self.loadClientConfig(request.storage) ?? AWSAuthClientConfig()
                for arn in role.boundARNs where !arn.hasSuffix("*") {
                    do throws(AWSAuthError) {
                        role.boundIDs.append(try resolveUniqueID(arn, config: config))
                    } catch {
                        throw CofferError.invalid("unable to resolve ARN \"\(arn)\" to internal ID: \(error.message)")
                    }
                }
            }
            try role.token.update(from: f)
            if !f.has("token_policies"), let old = f.strings("policies") {
                role.token.policies = TokenParameters.sanitize(old)
            }
            try request.storage.putJSON("role/" + name, .object(role.json))
            return .noContent
        }
    }

    /// A bound ARN's unique ID, from IAM (Vault's `resolveArnToUniqueIDFunc`).
    func resolveUniqueID(_ arn: String, config: AWSAuthClientConfig) throws(AWSAuthError) -> String {
        let entity = try IAMEntity(arn: arn)
        guard entity.type == "user" || entity.type == "role" else {
            throw AWSAuthError("unrecognized principal type: \"\(entity.type)\" (Coffer resolves users and roles)")
        }
        guard let lookup else {
            throw AWSAuthError("this Coffer has no IAM client; write the role with resolve_aws_unique_ids=false")
        }
        return try lookup.lookUp(entity, config: config).uniqueID
    }

    // MARK: - login

    static let iamFields = ["iam_http_request_method", "iam_request_url", "iam_request_body", "iam_request_headers"]
    static let ec2Fields = ["pkcs7", "identity", "signature"]

    func login(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let anyIAM = Self.iamFields.contains { f.has($0) }
        let allIAM = Self.iamFields.allSatisfy { f.has($0) }
        let anyEC2 = Self.ec2Fields.contains { f.has($0) }
        if anyEC2 && anyIAM { throw CofferError.invalid("supplied auth values for both ec2 and iam auth types") }
        if anyEC2 {
            throw CofferError.invalid("the ec2 login is not supported: Coffer's aws auth method supports only iam")
        }
        if anyIAM && !allIAM {
            throw CofferError.invalid("supplied some of the auth values for the iam auth type but not all")
        }
        guard anyIAM else { throw CofferError.invalid("didn't supply required authentication values") }
        do {
            return try loginIAM(request)
        } catch let error as AWSAuthError {
            throw CofferError.invalid(error.message)
        } catch let error as CofferError {
            throw error
        } catch {
            throw CofferError(.internal, "\(error)")
        }
    }

    /// The checks of Vault's `pathLoginUpdateIam`, in its order; refusals as ``AWSAuthError``.
    func loginIAM(_ request: BackendRequest) throws -> Response {
        let f = request.fields
        let method = f.string("iam_http_request_method") ?? ""
        guard !method.isEmpty else { throw AWSAuthError("missing iam_http_request_method") }
        guard method == "POST" else {
            throw AWSAuthError("invalid iam_http_request_method; currently only 'POST' is supported")
        }
        let urlB64 = f.string("iam_request_url") ?? ""
        guard !urlB64.isEmpty else { throw AWSAuthError("missing iam_request_url") }
        guard let urlBytes = Base64.decode(urlB64) else {
            throw AWSAuthError("failed to base64 decode iam_request_url")
        }
        guard let urlText = String(validating: urlBytes, as: UTF8.self), let url = HTTPClient.URL(urlText) else {
            throw AWSAuthError("error parsing iam_request_url")
        }
        if let q = url.target.firstIndex(of: "?"), url.target.index(after: q) < url.target.endIndex {
            throw AWSAuthError("invalid request")
        }
        let bodyB64 = f.string("iam_request_body") ?? ""
        guard !bodyB64.isEmpty else { throw AWSAuthError("missing iam_request_body") }
        guard let body = Base64.decode(bodyB64) else { throw AWSAuthError("failed to base64 decode iam_request_body") }
        try IAMLoginRequest.validateBody(String(decoding: body, as: UTF8.self))
        let headers = try IAMRequestHeaders(field: f.json("iam_request_headers") ?? .null)
        guard !headers.isEmpty else { throw AWSAuthError("missing iam_request_headers") }

        let config = try Self.loadClientConfig(request.storage)
        var endpoint = "https://sts.amazonaws.com"
        var maxRetries = -1
        if let config {
            if !config.iamServerIDHeaderValue.isEmpty {
                do {
                    try IAMLoginRequest.validateServerID(headers, required: config.iamServerIDHeaderValue)
                } catch {
                    throw AWSAuthError("error validating \(IAMLoginRequest.serverIDHeader) header: \(error.message)")
                }
            }
            try IAMLoginRequest.validateAmzHeaders(headers, allowed: config.allowedSTSHeaderValues)
            if !config.stsEndpoint.isEmpty { endpoint = config.stsEndpoint }
            maxRetries = config.maxRetries
        }
        let caller: CallerIdentity
        do {
            caller = try STSForwarder.submit(
                endpoint: endpoint,
                url: url,
                body: body,
                headers: headers,
                maxRetries: maxRetries
            )
        } catch {
            throw AWSAuthError("error making upstream request: \(error.message)")
        }
        let entity: IAMEntity
        do {
            entity = try IAMEntity(arn: caller.arn)
        } catch {
            throw AWSAuthError("error parsing arn \"\(caller.arn)\": \(error.message)")
        }
        var roleName = f.string("role") ?? ""
        if roleName.isEmpty { roleName = entity.friendlyName }
        roleName = roleName.lowercased()
        guard let role = try Self.loadRole(request.storage, roleName) else {
            throw AWSAuthError("entry for role \(roleName) not found")
        }
        if !role.token.boundCIDRs.isEmpty
            && !CIDR.allows(role.token.boundCIDRs, AppRoleBackend.sourceAddress(request.clientAddress))
        {
            throw CofferError.permissionDeniedError
        }
        let identity = try Self.loadIdentityConfig(request.storage)
        // "AIDA…" for a user, "AROA…:session" for an assumed role.
        let uniqueID = String(caller.userID.split(separator: ":", omittingEmptySubsequences: false).first ?? "")
        let allowed = try IAMBinding.allows(
            boundARNs: role.boundARNs,
            boundIDs: role.boundIDs,
            resolveUniqueIDs: role.resolveUniqueIDs,
            uniqueID: uniqueID,
            canonicalARN: entity.canonicalARN
        ) { () throws(AWSAuthError) -> String in
            guard let lookup else {
                throw AWSAuthError(
                    "error looking up full ARN of entity \(entity.canonicalARN) when attempting login for role \"\(roleName)\": this Coffer has no IAM client"
                )
            }
            do throws(AWSAuthError) {
                let full = try lookup.lookUp(entity, config: config ?? AWSAuthClientConfig()).arn
                guard !full.isEmpty else { throw AWSAuthError("empty ARN") }
                return full
            } catch {
                throw AWSAuthError(
                    "error looking up full ARN of entity \(entity.canonicalARN) when attempting login for role \"\(roleName)\": \(error.message)"
                )
            }
        }
        guard allowed else {
            throw AWSAuthError("IAM Principal \"\(caller.arn)\" does not belong to the role \"\(roleName)\"")
        }
        let available: [String: String] = [
            "client_arn": caller.arn, "canonical_arn": entity.canonicalARN, "client_user_id": uniqueID,
            "auth_type": "iam", "inferred_entity_type": "", "inferred_entity_id": "", "inferred_aws_region": "",
            "account_id": entity.account,
        ]
        var aliasMetadata: [String: String] = [:]
        for name in identity.iamMetadata { aliasMetadata[name] = available[name] }
        var metadata = aliasMetadata
        metadata["role_id"] = role.roleID
        let alias =
            switch identity.iamAlias {
            case "unique_id": uniqueID
            case "full_arn": caller.arn
            default: role.roleID
            }
        return Response(
            auth: role.token.authInfo(metadata: metadata, grant: LoginGrant(alias: alias, aliasMetadata: aliasMetadata))
        )
    }
}

/// Sends the client's signed GetCallerIdentity to STS, as Vault's `submitCallerIdentityRequest`:
/// to the configured endpoint with the client's path, its headers and the `Host` it signed;
/// retried on connection errors, 429 and 5xx (not 501), 0.5 s doubling to 30 s between tries.
enum STSForwarder {
    /// Headers the HTTP client sets itself (Go's client ignores them in a request's header map too).
    static let ownHeaders: Set<String> = ["Host", "Content-Length", "Connection", "Transfer-Encoding"]

    static func submit(
        endpoint: String,
        url: HTTPClient.URL,
        body: [UInt8],
        headers: IAMRequestHeaders,
        maxRetries: Int
    ) throws(AWSAuthError) -> CallerIdentity {
        var base = endpoint
        while base.hasSuffix("/") { base.removeLast() }
        let target = base + url.target
        var forwarded: [(String, String)] = []
        for (name, values) in headers.entries where !ownHeaders.contains(name) {
            for value in values { forwarded.append((name, value)) }
        }
        var options = HTTPClient.Options()
        options.hostHeader = url.hostHeader
        options.maximumBodyBytes = 64 << 10
        options.deadline = 20
        let attempts = (maxRetries < 0 ? 3 : min(maxRetries, 100)) + 1
        var response: HTTPClient.Response? = nil
        for attempt in 1...attempts {
            var failure: HTTPClient.Failure? = nil
            do {
                response = try HTTPClient.send("POST", target, headers: forwarded, body: body, options: options)
            } catch {
                failure = error
                response = nil
            }
            let retryable =
                failure != nil || response.map { $0.status == 429 || ($0.status >= 500 && $0.status != 501) } ?? false
            if !retryable { break }
            if attempt == attempts {
                let cause = failure.map { ": " + $0.message } ?? ""
                throw AWSAuthError("error making request: POST \(target) giving up after \(attempt) attempt(s)\(cause)")
            }
            let wait = min(0.5 * Double(1 << min(attempt - 1, 10)), 30)
            usleep(UInt32(wait * 1_000_000))
        }
        guard let response else { throw AWSAuthError("error making request: no answer") }
        let contentType = response.header("content-type") ?? ""
        guard contentType == "text/xml" || contentType.hasPrefix("text/xml;") else {
            throw AWSAuthError("body of GetCallerIdentity is invalid")
        }
        guard response.status == 200 else {
            var text = String(decoding: response.body.prefix(2048), as: UTF8.self)
            // AWS's SignatureDoesNotMatch can quote the canonical request, session token and all;
            // the message goes back to the client and into the audit log's error, so the
            // credentials the client sent are cut out first.
            for name in ["Authorization", "X-Amz-Security-Token"] {
                for value in headers.values(name) ?? [] {
                    var secrets = [value]
                    if let signature = value.ranges(of: "Signature=").last {
                        secrets.append(String(value[signature.upperBound...].prefix { $0 != "," && $0 != " " }))
                    }
                    for secret in secrets where secret.count >= 8 {
                        text = text.replacing(secret, with: "<redacted>")
                    }
                }
            }
            throw AWSAuthError("received error code \(response.status) from STS: \(text)")
        }
        return try CallerIdentity(xml: response.body)
    }
}
