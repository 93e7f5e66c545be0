// A remote cofferd as `coffer run`'s store.
import CofferCore
import Engines
import Synchronization

/// How to reach and log in to a remote cofferd (flags and BAO_* environment).
struct RemoteOptions: Sendable {
    enum Auth: Sendable {
        case token(String)
        case appRole(roleID: String, secretID: String, mount: String)
        case jwt(jwt: String, role: String, mount: String)
    }

    var address: String
    var caPEM: String?
    var namespace: String?
    var auth: Auth
}

/// Interim store over the engines' HTTP client: one GET per read, token or AppRole/JWT login.
final class HTTPStore: SecretStore, Sendable {
    let options: RemoteOptions
    let token = Mutex<String?>(nil)

    init(_ options: RemoteOptions) {
        self.options = options
        if case .token(let given) = options.auth { token.withLock { $0 = given } }
    }

    func call(_ method: String, _ path: String, body: [UInt8] = [], token: String?) throws -> (Int, JSONValue?) {
        var headers: [(String, String)] = []
        if let token { headers.append(("X-Vault-Token", token)) }
        if let namespace = options.namespace, !namespace.isEmpty { headers.append(("X-Vault-Namespace", namespace)) }
        var httpOptions = HTTPClient.Options(caPEM: options.caPEM)
        httpOptions.deadline = 10
        let base = options.address.hasSuffix("/") ? String(options.address.dropLast()) : options.address
        let response = try HTTPClient.send(
            method,
            "\(base)/v1/\(path)",
            headers: headers,
            body: body,
            options: httpOptions
        )
        return (response.status, try? JSONValue.parse(response.body))
    }

    func login() throws -> String {
        let (path, body): (String, JSONValue)
        switch options.auth {
        case .token(let token): return token
        case .appRole(let roleID, let secretID, let mount):
            (path, body) = ("\(mount)/login", .object(["role_id": .string(roleID), "secret_id": .string(secretID)]))
        case .jwt(let jwt, let role, let mount):
            (path, body) = ("\(mount)/login", .object(["jwt": .string(jwt), "role": .string(role)]))
        }
        let (status, answer) = try call("POST", path, body: body.serialized(), token: nil)
        guard status == 200, let token = answer?["auth"]?["client_token"]?.stringValue else {
            throw CLIError("login at \(path) failed (status \(status))")
        }
        return token
    }

    func read(_ path: String) throws -> StoreRead {
        let current = try token.withLock { (token: inout String?) throws -> String in
            if let token { return token }
            let fresh = try login()
            token = fresh
            return fresh
        }
        let (status, answer) = try call("GET", path, token: current)
        guard status == 200, case .object(let data)? = answer?["data"] else {
            throw CLIError("reading \(path): status \(status)")
        }
        return StoreRead(secret: resolvedSecret(from: data), source: "store", degraded: false)
    }

    func close() {}
}

func openRemoteStore(_ options: RemoteOptions) throws -> any SecretStore { HTTPStore(options) }
