// Where `coffer run` reads secrets: a remote cofferd (through the library's remote client) or a
// local vault file opened in-process.
import Coffer
import CofferCore

/// One read: the secret's fields as text, its version, and whether the store itself answered.
struct StoreRead: Sendable {
    var secret: ResolvedSecret
    /// "store", "cache", "env-file", ... as the client reports it.
    var source: String
    var degraded: Bool
}

/// What `coffer run` needs of a store.
protocol SecretStore: AnyObject, Sendable {
    /// Reads the secret at the API path (`secret/data/app`). Throws when nothing can answer.
    func read(_ path: String) throws -> StoreRead
    /// A write (POST) to `path`; nil when it succeeded, else what went wrong (never a value).
    func write(_ path: String, _ body: [String: JSONValue]) -> String?
    /// Calls `handler` with the API path of each secret the store says changed (its `kv*` events),
    /// so that a change is read at once instead of at the next poll. A store without events never calls it.
    func onChange(_ handler: @escaping @Sendable (String) -> Void)
    func close()
}

/// The fields of a read's `data`: KV v2's `data.data` (with `metadata.version`), otherwise `data` itself.
/// Strings as they are; other JSON values as their JSON text.
func resolvedSecret(from data: [String: JSONValue]) -> ResolvedSecret {
    var fields = data
    var version: Int?
    if case .object(let inner)? = data["data"], case .object(let metadata)? = data["metadata"] {
        fields = inner
        version = metadata["version"]?.intValue
    }
    return ResolvedSecret(
        fields: fields.mapValues { value in
            if case .string(let text) = value { return text }
            return String(decoding: value.serialized(), as: UTF8.self)
        },
        version: version
    )
}

/// A vault file opened in this process (`--config FILE`, the JSON `coffer_open` takes).
final class LocalStore: SecretStore, @unchecked Sendable {
    let vault: Vault
    let token: String

    init(configPath: String, token: String?, unsealKeyPath: String?) throws(CLIError) {
        let bytes = try readFileOrThrow(configPath, limit: 1 << 20)
        do {
            let configuration = try VaultConfiguration(json: bytes)
            vault = try Vault.open(configuration)
            if let unsealKeyPath, (try? vault.status())?.sealed != false {
                let key = String(decoding: try readFileOrThrow(unsealKeyPath, limit: 4096), as: UTF8.self)
                _ = try vault.unseal(key: key.filter { !$0.isWhitespace })
            }
        } catch let error as CofferError {
            throw CLIError("\(configPath): \(error.message)")
        } catch {
            throw CLIError("\(error)")
        }
        guard let token, !token.isEmpty else {
            vault.close()
            throw CLIError("a local vault needs a token: --token-file FILE or COFFER_TOKEN/BAO_TOKEN")
        }
        self.token = token
    }

    func read(_ path: String) throws -> StoreRead {
        let response: Response
        do {
            response = try vault.handle(Request(.read, path, token: token))
        } catch {
            throw CLIError("reading \(path): \(error.message)")
        }
        guard response.outcome == .ok, let data = response.data else {
            throw CLIError("reading \(path): no secret there (status \(response.status))")
        }
        return StoreRead(secret: resolvedSecret(from: data), source: "store", degraded: false)
    }

    func write(_ path: String, _ body: [String: JSONValue]) -> String? {
        do {
            _ = try vault.handle(Request(.update, path, data: body, token: token))
            return nil
        } catch {
            return error.message
        }
    }

    func onChange(_ handler: @escaping @Sendable (String) -> Void) {}

    func close() { vault.close() }
}
