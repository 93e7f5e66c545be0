import CofferCore

/// The seeds' small REST contract, as a thin alias over the Vault API (docs/rest-alias.md):
///
/// | alias | becomes |
/// |---|---|
/// | `GET /api/v1/secrets/{path}` | `GET /v1/secret/data/{path}` (the KV v2 answer as it is) |
/// | `PUT /api/v1/secrets/{path}` with a JSON object | `PUT /v1/secret/data/{path}` with `{"data": <object>}` |
/// | `POST /api/v1/secrets/{path}/rotate` | `POST /v1/secret/rotate/{path}` (rotate now under its policy, docs/rotation.md) |
/// | `POST /api/v1/auth/login` `{"method": "approle", ...}` | `POST /v1/auth/<mount>/login[/<username>]` |
/// | `GET /health` | `GET /v1/sys/health` (query kept) |
///
/// The rewritten request goes through the same pipeline as any `/v1/` one: the same token headers,
/// ACL, audit (which records the `/v1/` path) and errors. Secrets live in the KV v2 mount `secret/`,
/// the mount `cofferd -dev` and the seeds' deployment both have.
enum RestAlias {
    /// The KV version 2 mount `/api/v1/secrets/` reads and writes.
    static let kvMount = "secret"
    static let secretsPrefix = "/api/v1/secrets/"
    static let loginPath = "/api/v1/auth/login"
    /// Auth methods whose login takes the user name in the path (`auth/userpass/login/<username>`).
    static let usernameInPath: Set<String> = ["userpass", "ldap", "okta", "radius"]

    enum Mapped: Equatable {
        /// Serve this request instead (method, `/v1/` target, body).
        case forward(method: String, target: String, body: [UInt8])
        /// Answer with this status and error message, without reaching the vault.
        case refuse(status: Int, message: String)
    }

    /// Whether `target` is one of the alias's paths (the rest of cofferd's paths start with `/v1/`).
    static func handles(_ target: String) -> Bool {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return path == "/health" || path.hasPrefix("/api/v1/")
    }

    static func map(method: String, target: String, body: [UInt8]) -> Mapped {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts.first ?? "")
        let query = parts.count > 1 ? "?" + parts[1] : ""
        if path == "/health" {
            guard method == "GET" || method == "HEAD" else {
                return .refuse(status: 405, message: "/health answers GET (or HEAD): it is GET /v1/sys/health")
            }
            return .forward(method: method, target: "/v1/sys/health" + query, body: [])
        }
        if path == loginPath {
            guard method == "POST" || method == "PUT" else {
                return .refuse(status: 405, message: "log in with POST /api/v1/auth/login")
            }
            return login(body)
        }
        if path.hasPrefix(secretsPrefix) {
            let secret = String(path.dropFirst(secretsPrefix.count))
            guard !secret.isEmpty, !secret.hasSuffix("/") else {
                return .refuse(
                    status: 404,
                    message: "name a secret: /api/v1/secrets/{path}, such as /api/v1/secrets/app/db"
                )
            }
            if method == "POST", secret.hasSuffix("/rotate") {
                let name = secret.dropLast("/rotate".count)
                guard !name.isEmpty, !name.hasSuffix("/") else {
                    return .refuse(status: 404, message: "name a secret: POST /api/v1/secrets/{path}/rotate")
                }
                // Rotate now under its rotation policy (docs/rotation.md): `secret/rotate/{path}`.
                return .forward(method: "POST", target: "/v1/\(kvMount)/rotate/\(name)" + query, body: [])
            }
            switch method {
            case "GET", "HEAD":
                return .forward(method: "GET", target: "/v1/\(kvMount)/data/\(secret)" + query, body: [])
            case "PUT":
                let value: JSONValue
                do {
                    value = try JSONValue.parse(body)
                } catch {
                    return .refuse(status: 400, message: "failed to parse JSON input: \(error)")
                }
                guard case .object = value else {
                    return .refuse(
                        status: 400,
                        message:
                            "the body of PUT /api/v1/secrets/{path} is the secret: a JSON object, not \(value.typeName)"
                    )
                }
                return .forward(
                    method: "PUT",
                    target: "/v1/\(kvMount)/data/\(secret)" + query,
                    body: JSONValue.object(["data": value]).serialized()
                )
            default:
                return .refuse(
                    status: 405,
                    message: "/api/v1/secrets/{path} answers GET and PUT (and POST on {path}/rotate); use the "
                        + "Vault API at /v1/\(kvMount)/ for more"
                )
            }
        }
        return .refuse(
            status: 404,
            message: "no such endpoint; the REST alias has /api/v1/secrets/{path}, /api/v1/auth/login and /health"
        )
    }

    /// `{"method": "<auth method type>", "mount": "<path, default: the type>", ...its login fields}`.
    static func login(_ body: [UInt8]) -> Mapped {
        let value: JSONValue
        do {
            value = try JSONValue.parse(body.isEmpty ? Array("{}".utf8) : body)
        } catch {
            return .refuse(status: 400, message: "failed to parse JSON input: \(error)")
        }
        guard case .object(var fields) = value else {
            return .refuse(status: 400, message: "the login body must be a JSON object, not \(value.typeName)")
        }
        guard case .string(let method)? = fields.removeValue(forKey: "method"), !method.isEmpty else {
            return .refuse(
                status: 400,
                message: "\"method\" is required: the auth method's type, such as \"approle\", \"userpass\", "
                    + "\"jwt\" or \"kubernetes\" (and \"mount\" if it is not mounted at its type's name)"
            )
        }
        var mount = method
        if let given = fields.removeValue(forKey: "mount") {
            guard case .string(let text) = given, !text.isEmpty else {
                return .refuse(status: 400, message: "\"mount\" must be the auth method's path, such as \"approle\"")
            }
            mount = text
        }
        while mount.hasSuffix("/") { mount.removeLast() }
        if mount.hasPrefix("auth/") { mount.removeFirst("auth/".count) }
        guard isPathText(mount) else {
            return .refuse(status: 400, message: "\"mount\" may hold only letters, digits, '.', '_', '-' and '/'")
        }
        var target = "/v1/auth/\(mount)/login"
        if usernameInPath.contains(method) {
            guard case .string(let username)? = fields.removeValue(forKey: "username"), !username.isEmpty else {
                return .refuse(status: 400, message: "\"username\" is required to log in with \(method)")
            }
            guard !username.contains(where: { $0 == "/" || $0 == "?" || $0 == "#" || $0 == "%" }) else {
                return .refuse(status: 400, message: "\"username\" may not contain '/', '?', '#' or '%'")
            }
            target += "/" + username
        }
        return .forward(method: "POST", target: target, body: JSONValue.object(fields).serialized())
    }

    /// Letters, digits, `.`, `_`, `-` and `/`, in segments that are neither empty nor `.` or `..`.
    private static func isPathText(_ text: String) -> Bool {
        !text.isEmpty
            && !text.split(separator: "/", omittingEmptySubsequences: false).contains {
                $0.isEmpty || $0 == "." || $0 == ".."
            }
            && text.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"),
                    UInt8(ascii: "/"):
                    true
                default: false
                }
            }
    }
}
