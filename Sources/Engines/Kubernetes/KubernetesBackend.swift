import CofferCore
package import CofferFramework

#if canImport(Glibc)
import Glibc
#endif

/// The Kubernetes auth method (`kubernetes` type), as OpenBao 2.7.2 serves it: a pod logs in with
/// its service-account JWT.
///
/// - `config`: `kubernetes_host`, `kubernetes_ca_cert`, `token_reviewer_jwt` (never read back:
///   `token_reviewer_jwt_set`), `pem_keys`, `disable_local_ca_jwt`, `issuer`, `disable_iss_validation`.
///   Without a CA (and unless `disable_local_ca_jwt`), the pod's own CA and token are read from
///   `/var/run/secrets/kubernetes.io/serviceaccount/`, as OpenBao does when it runs in the cluster.
/// - `role/<name>`: `bound_service_account_names` / `_namespaces` (`*` and `prefix*` globs),
///   `audience`, `alias_name_source` (`serviceaccount_uid` or `serviceaccount_name`), `token_*`.
/// - `login` {role, jwt}: the token's claims are read (legacy secret tokens and projected tokens
///   alike) and checked against the role; then the token is proven genuine in one of two ways:
///   - with `pem_keys`: locally, by its signature (plus `exp`, and `iss` unless
///     `disable_iss_validation`); no request to the cluster;
///   - without: by a TokenReview (`POST <host>/apis/authentication.k8s.io/v1/tokenreviews`,
///     bearer `token_reviewer_jwt`, or the client's own JWT when none is set; body
///     `{"metadata":{},"spec":{"token":…,"audiences":[the JWT's aud]},"status":{"user":{}}}`), whose
///     `status.authenticated` and `status.user` (`system:serviceaccount:<ns>:<name>`, `uid`) are trusted.
///
/// Differences from OpenBao: a string `aud` is accepted (RFC 7519 allows it; OpenBao answers 500);
/// refusals say which check failed ("permission denied: TokenReview did not authenticate the
/// token: …") while keeping OpenBao's leading text, and a cluster that cannot be reached is a 500
/// naming the host, not a bare "permission denied".
package final class KubernetesBackend: TableBackend {
    package init() {}

    static let secretsDirectory = "/var/run/secrets/kubernetes.io/serviceaccount/"
    static let legacyIssuer = "kubernetes/serviceaccount"

    package var specialPaths: SpecialPaths { SpecialPaths(unauthenticated: ["login"]) }

    package static let paths = PathTable<KubernetesBackend>([
        Path(
            "config",
            fields: [
                .string("kubernetes_host"), .string("kubernetes_ca_cert"), .string("token_reviewer_jwt"),
                .strings("pem_keys"), .bool("disable_local_ca_jwt"), .string("issuer"),
                .bool("disable_iss_validation"),
            ],
            read: KubernetesBackend.readConfig,
            write: KubernetesBackend.writeConfig
        ),
        Path("role/", list: KubernetesBackend.listRoles),
        Path(
            "role/{name}",
            fields: [
                .strings("bound_service_account_names"), .strings("bound_service_account_namespaces"),
                .string("bound_service_account_namespace_selector"), .string("audience"),
                .string("alias_name_source"),
            ] + TokenParameters.fields,
            existence: KubernetesBackend.roleExists,
            read: KubernetesBackend.readRole,
            write: KubernetesBackend.writeRole,
            delete: KubernetesBackend.deleteRole
        ),
        Path("login", fields: [.string("role"), .string("jwt")], write: KubernetesBackend.login),
    ])

    // MARK: - config

    func readConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        guard case .object(var json)? = try request.storage.getJSON("config") else { return .notFound }
        let reviewer = json.removeValue(forKey: "token_reviewer_jwt")?.stringValue ?? ""
        json["token_reviewer_jwt_set"] = .bool(!reviewer.isEmpty)
        json["pem_keys"] = .array(
            (json["pem_keys"]?.arrayValue ?? []).compactMap(\.stringValue).map { pem in
                var s = Substring(pem)
                while s.last == "\n" || s.last == "\r" { s = s.dropLast() }
                return .string(String(s))
            }
        )
        return Response(data: json)
    }

    static func readLocalFile(_ name: String) throws(CofferError) -> String {
        let path = secretsDirectory + name
        guard let file = fopen(path, "r") else {
            throw CofferError.invalid("open \(path): \(String(cString: strerror(errno)).lowercased())")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func writeConfig(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let host = f.string("kubernetes_host") ?? ""
        guard !host.isEmpty else { throw CofferError.invalid("no host provided") }
        guard HTTPClient.URL(host) != nil else {
            throw CofferError.invalid("kubernetes_host must be an http:// or https:// URL")
        }
        let disableLocal = f.bool("disable_local_ca_jwt") ?? false
        var ca = f.string("kubernetes_ca_cert") ?? ""
        var reviewer = f.string("token_reviewer_jwt") ?? ""
        if ca.isEmpty {
            if disableLocal {
                throw CofferError.invalid("kubernetes_ca_cert must be given when disable_local_ca_jwt is true")
            }
            ca = try Self.readLocalFile("ca.crt")
        }
        if reviewer.isEmpty && !disableLocal { reviewer = (try? Self.readLocalFile("token")) ?? "" }
        if !(PEM.decodeAll(ca) ?? []).contains(where: { $0.label == "CERTIFICATE" }) {
            throw CofferError.invalid("kubernetes_ca_cert does not contain a PEM certificate")
        }
        let pemKeys = (f.strings("pem_keys") ?? []).filter { !$0.isEmpty }
        for pem in pemKeys {
            do {
                _ = try JOSEKey.fromPEM(pem)
            } catch {
                throw CofferError.invalid(error.message)
            }
        }
        let config: [String: JSONValue] = [
            "kubernetes_host": .string(host), "kubernetes_ca_cert": .string(ca),
            "token_reviewer_jwt": .string(reviewer), "pem_keys": .array(pemKeys.map { .string($0) }),
            "disable_local_ca_jwt": .bool(disableLocal), "issuer": .string(f.string("issuer") ?? ""),
            "disable_iss_validation": .bool(f.bool("disable_iss_validation") ?? true),
        ]
        try request.storage.putJSON("config", .object(config))
        return .noContent
    }

    // MARK: - roles

    func roleExists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        try request.storage.get("role/" + request.capture("name")) != nil
    }

    func listRoles(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list("role/")
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func readRole(_ request: BackendRequest) throws(CofferError) -> Response {
        guard case .object(let json)? = try request.storage.getJSON("role/" + request.capture("name")) else {
            return .notFound
        }
        return Response(data: json)
    }

    func writeRole(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = "role/" + request.capture("name")
        let f = request.fields
        var role = try request.storage.getJSON(key)?.objectValue ?? [:]
        func strings(_ name: String) -> [String] { (role[name]?.arrayValue ?? []).compactMap(\.stringValue) }
        var token = TokenParameters(json: role)
        try token.update(from: f)
        let names = f.strings("bound_service_account_names") ?? strings("bound_service_account_names")
        let namespaces = f.strings("bound_service_account_namespaces") ?? strings("bound_service_account_namespaces")
        let selector =
            f.string("bound_service_account_namespace_selector")
            ?? role["bound_service_account_namespace_selector"]?.stringValue ?? ""
        let audience = f.string("audience") ?? role["audience"]?.stringValue ?? ""
        let aliasSource =
            f.string("alias_name_source") ?? role["alias_name_source"]?.stringValue ?? "serviceaccount_uid"
        guard !names.isEmpty else { throw CofferError.invalid("\"bound_service_account_names\" can not be empty") }
        guard !namespaces.isEmpty || !selector.isEmpty else {
            throw CofferError.invalid(
                "\"bound_service_account_namespaces\" can not be empty if \"bound_service_account_namespace_selector\" is not set"
            )
        }
        guard selector.isEmpty else {
            throw CofferError.invalid(
                "bound_service_account_namespace_selector is not supported (it needs the cluster's namespace labels); list the namespaces"
            )
        }
        guard aliasSource == "serviceaccount_uid" || aliasSource == "serviceaccount_name" else {
            throw CofferError.invalid("invalid alias_name_source: \(aliasSource)")
        }
        role = token.json
        role["bound_service_account_names"] = .array(names.map { .string($0) })
        role["bound_service_account_namespaces"] = .array(namespaces.map { .string($0) })
        role["bound_service_account_namespace_selector"] = .string(selector)
        role["alias_name_source"] = .string(aliasSource)
        if !audience.isEmpty { role["audience"] = .string(audience) }
        try request.storage.putJSON(key, .object(role))
        return .noContent
    }

    func deleteRole(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete("role/" + request.capture("name"))
        return .noContent
    }

    // MARK: - login

    /// The service account a token names: from a legacy secret token's flat claims or a projected
    /// token's `kubernetes.io` object.
    struct ServiceAccount: Equatable {
        var namespace = ""
        var name = ""
        var uid = ""
        var secretName = ""

        init(claims: [String: JSONValue]) {
            if case .object(let k8s)? = claims["kubernetes.io"] {
                namespace = k8s["namespace"]?.stringValue ?? ""
                if case .object(let account)? = k8s["serviceaccount"] {
                    name = account["name"]?.stringValue ?? ""
                    uid = account["uid"]?.stringValue ?? ""
                }
            } else {
                namespace = claims["kubernetes.io/serviceaccount/namespace"]?.stringValue ?? ""
                name = claims["kubernetes.io/serviceaccount/service-account.name"]?.stringValue ?? ""
                uid = claims["kubernetes.io/serviceaccount/service-account.uid"]?.stringValue ?? ""
                secretName = claims["kubernetes.io/serviceaccount/secret.name"]?.stringValue ?? ""
            }
        }
    }

    static func denied(_ reason: String) -> CofferError { CofferError(.permissionDenied, reason) }

    static func bound(_ patterns: [String], _ value: String) -> Bool {
        patterns.contains { $0 == "*" || JWTClaims.globMatch($0, value) }
    }

    func login(_ request: BackendRequest) throws(CofferError) -> Response {
        let roleName = request.fields.string("role") ?? ""
        guard !roleName.isEmpty else { throw CofferError.invalid("missing role") }
        guard let token = request.fields.string("jwt"), !token.isEmpty else { throw CofferError.invalid("missing jwt") }
        guard case .object(let roleJSON)? = try request.storage.getJSON("role/" + roleName) else {
            throw CofferError.invalid("invalid role name \"\(roleName)\"")
        }
        guard case .object(let config)? = try request.storage.getJSON("config") else {
            throw CofferError(.internal, "could not load backend configuration")
        }
        let params = TokenParameters(json: roleJSON)
        guard CIDR.allows(params.boundCIDRs, request.clientAddress) else { throw CofferError.permissionDeniedError }

        let jws: CompactJWS
        do {
            jws = try CompactJWS(token)
        } catch {
            throw Self.denied("permission denied: the token is not a JWT: \(error.message)")
        }
        let claims = jws.claims
        let account = ServiceAccount(claims: claims)
        func strings(_ name: String) -> [String] { (roleJSON[name]?.arrayValue ?? []).compactMap(\.stringValue) }
        guard Self.bound(strings("bound_service_account_namespaces"), account.namespace) else {
            throw Self.denied("namespace not authorized")
        }
        guard Self.bound(strings("bound_service_account_names"), account.name) else {
            throw Self.denied("service account name not authorized")
        }
        let audiences: [String]
        do {
            audiences = try JWTClaims.audiences(claims)
        } catch {
            throw Self.denied("permission denied: \(error.message)")
        }
        if let audience = roleJSON["audience"]?.stringValue, !audience.isEmpty, !audiences.contains(audience) {
            throw Self.denied("invalid audience (aud) claim: audience claim does not match any expected audience")
        }
        // Time claims when present (legacy secret tokens have none), with the usual 60 s skew.
        let now = request.now.seconds
        let skew = JWTClaims.Leeways.defaultClockSkew
        let expiry = (try? JWTClaims.seconds(claims, "exp")) ?? 1
        let notBefore = (try? JWTClaims.seconds(claims, "nbf")) ?? 0
        if expiry != 0 && now &- skew > expiry {
            throw Self.denied("invalid expiration time (exp) claim: token is expired")
        }
        if notBefore != 0 && now &+ skew < notBefore {
            throw Self.denied("invalid not before (nbf) claim: token not yet valid")
        }
        if config["disable_iss_validation"]?.boolValue == false {
            let issuer = config["issuer"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? Self.legacyIssuer
            guard claims["iss"]?.stringValue == issuer else { throw Self.denied("invalid issuer (iss) claim") }
        }

        var verified = account
        let pemKeys = (config["pem_keys"]?.arrayValue ?? []).compactMap(\.stringValue)
        if !pemKeys.isEmpty {
            var keys: [JOSEKey] = []
            for pem in pemKeys { keys += (try? JOSEKey.fromPEM(pem)) ?? [] }
            guard jws.verified(by: keys) else {
                throw Self.denied("permission denied: the token's signature does not verify with any of pem_keys")
            }
        } else {
            verified = try Self.review(token: token, audiences: audiences, config: config)
            guard verified.namespace == account.namespace, verified.name == account.name else {
                throw Self.denied(
                    "permission denied: TokenReview authenticated a different service account than the token names"
                )
            }
            if !account.uid.isEmpty && verified.uid != account.uid {
                throw Self.denied(
                    "permission denied: TokenReview returned a different service account uid than the token names"
                )
            }
        }
        let uid = verified.uid.isEmpty ? account.uid : verified.uid
        let metadata: [String: String] = [
            "role": roleName, "service_account_name": account.name, "service_account_namespace": account.namespace,
            "service_account_secret_name": account.secretName, "service_account_uid": uid,
        ]
        let alias =
            roleJSON["alias_name_source"]?.stringValue == "serviceaccount_name"
            ? "\(account.namespace)/\(account.name)" : uid
        guard !alias.isEmpty else {
            throw Self.denied("permission denied: the token names no service account uid (set alias_name_source)")
        }
        var aliasMetadata = metadata
        aliasMetadata["role"] = nil
        return Response(
            auth: params.authInfo(metadata: metadata, grant: LoginGrant(alias: alias, aliasMetadata: aliasMetadata))
        )
    }

    /// Asks the cluster about `token` (TokenReview, authentication.k8s.io/v1): the service account
    /// it authenticates. Throws 403 when the cluster says the token is not valid, 500 when it
    /// cannot be asked. The token is never part of a message.
    static func review(
        token: String,
        audiences: [String],
        config: [String: JSONValue]
    ) throws(CofferError) -> ServiceAccount {
        let host = config["kubernetes_host"]?.stringValue ?? ""
        let reviewer = config["token_reviewer_jwt"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? token
        // Built by hand to send the fields in the order OpenBao (client-go) sends them.
        var body = #"{"metadata":{},"spec":{"token":"#
        body += String(decoding: JSONValue.string(token).serialized(), as: UTF8.self)
        if !audiences.isEmpty {
            body += #","audiences":"#
            body += String(decoding: JSONValue.array(audiences.map { .string($0) }).serialized(), as: UTF8.self)
        }
        body += #"},"status":{"user":{}}}"#
        let url = (host.hasSuffix("/") ? String(host.dropLast()) : host) + "/apis/authentication.k8s.io/v1/tokenreviews"
        var options = HTTPClient.Options(caPEM: config["kubernetes_ca_cert"]?.stringValue)
        options.maximumBodyBytes = 1 << 20
        options.deadline = 15
        let response: HTTPClient.Response
        do {
            response = try HTTPClient.send(
                "POST",
                url,
                headers: [
                    ("Authorization", "Bearer " + reviewer), ("Content-Type", "application/json"),
                    ("Accept", "application/json"),
                ],
                body: Array(body.utf8),
                options: options
            )
        } catch {
            throw CofferError(.internal, "TokenReview request failed: \(error.message)")
        }
        let json = (try? JSONValue.parse(response.body, maximumDepth: 32))?.objectValue ?? [:]
        guard response.status == 200 || response.status == 201 else {
            let message = json["message"]?.stringValue ?? ""
            if response.status == 401 || response.status == 403 {
                throw denied(
                    "permission denied: the cluster refused the TokenReview request (HTTP \(response.status)); check token_reviewer_jwt and its system:auth-delegator binding"
                        + (message.isEmpty ? "" : ": \(message)")
                )
            }
            throw CofferError(
                .internal,
                "TokenReview request to \(host) answered HTTP \(response.status)"
                    + (message.isEmpty ? "" : ": \(message)")
            )
        }
        let status = json["status"]?.objectValue ?? [:]
        guard status["authenticated"]?.boolValue == true else {
            let error = status["error"]?.stringValue ?? ""
            throw denied(
                "permission denied: TokenReview did not authenticate the token" + (error.isEmpty ? "" : ": \(error)")
            )
        }
        let user = status["user"]?.objectValue ?? [:]
        let username = user["username"]?.stringValue ?? ""
        let parts = username.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "system", parts[1] == "serviceaccount" else {
            throw denied("permission denied: TokenReview authenticated a user that is not a service account")
        }
        var account = ServiceAccount(claims: [:])
        account.namespace = String(parts[2])
        account.name = String(parts[3])
        account.uid = user["uid"]?.stringValue ?? ""
        return account
    }
}
