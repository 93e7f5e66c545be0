// A remote cofferd as `coffer run`'s store: the library's RemoteClient (cache, retries, fallback).
import Coffer
import CofferCore

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

/// `coffer run`'s reads through a ``RemoteClient``.
final class ClientStore: SecretStore, Sendable {
    let client: RemoteClient

    init(_ client: RemoteClient) { self.client = client }

    func read(_ path: String) throws -> StoreRead {
        let read: SecretRead
        do {
            read = try client.read(path)
        } catch {
            throw CLIError("reading \(path): \(error.message)")
        }
        let fields = read.fields.mapValues { value in
            if case .string(let text) = value { return text }
            return String(decoding: value.serialized(), as: UTF8.self)
        }
        return StoreRead(
            secret: ResolvedSecret(fields: fields, version: read.version),
            source: read.source.rawValue,
            degraded: read.degraded
        )
    }

    func write(_ path: String, _ body: [String: JSONValue]) -> String? {
        do {
            let response = try client.request("POST", path, body: JSONValue.object(body).serialized())
            return response.status < 300 ? nil : "status \(response.status): \(response.errorText)"
        } catch {
            return error.message
        }
    }

    func onChange(_ handler: @escaping @Sendable (String) -> Void) {
        client.subscribe { event in
            guard event.type.hasPrefix("kv"), case .object(let metadata)? = event.data["metadata"] else { return }
            for name in ["data_path", "path"] {
                if let path = metadata[name]?.stringValue { handler(path) }
            }
        }
    }

    func close() { client.close() }
}

/// A client for `coffer run`: its cache answers for half a poll interval (so every poll asks the
/// store, or the cache when events keep it current), stale entries serve a week while the store is
/// down, and the env file's variables are named by the template (`NAME = "{{ secret "P" "F" }}"`
/// makes NAME the fallback of P's field F).
func openRemoteStore(
    _ options: RemoteOptions,
    template: Template,
    envFile: String?,
    pollInterval: Double
) throws -> any SecretStore {
    func mount(_ text: String) -> String {
        var mount = Substring(text)
        while mount.hasSuffix("/") { mount = mount.dropLast() }
        if mount.hasPrefix("auth/") { mount = mount.dropFirst(5) }
        return String(mount)
    }
    let auth: RemoteConfiguration.Auth
    switch options.auth {
    case .token(let token): auth = .token(token)
    case .appRole(let roleID, let secretID, let path):
        auth = .appRole(roleID: roleID, secretID: secretID, mount: mount(path))
    case .jwt(let jwt, let role, let path): auth = .jwt(role: role, jwt: jwt, mount: mount(path))
    }
    var configuration = RemoteConfiguration(
        address: options.address,
        auth: auth,
        caPEM: options.caPEM,
        namespace: options.namespace ?? ""
    )
    configuration.cache.defaultTTL = pollInterval / 2
    configuration.cache.maxStale = 7 * 86400
    configuration.fallback.envFile = envFile
    configuration.fallback.environment = false
    for entry in template.entries {
        guard case .environment(let name) = entry.target, entry.parts.count == 1,
            case .secret(let path, let field) = entry.parts[0], configuration.fallback.mapping[path]?[field] == nil
        else { continue }
        configuration.fallback.mapping[path, default: [:]][field] = name
    }
    do {
        return ClientStore(try RemoteClient(configuration))
    } catch {
        throw CLIError(error.message)
    }
}
