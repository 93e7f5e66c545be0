import CofferCore
import CofferFramework

/// The events KV publishes (docs/events.md), with Vault's metadata: strings only, the paths as the
/// client wrote them under the mount (`secret/data/app`), versions, never a value.
extension BackendRequest {
    /// A KV v1 event: `kv-v1/write` or `kv-v1/delete` on `key`.
    func publishKVv1(_ operation: String, key: String) {
        let path = mount.path + key
        var metadata: [String: JSONValue] = [
            "modified": "true", "operation": .string(operation), "path": .string(path),
        ]
        if operation == "write" { metadata["data_path"] = .string(path) }
        publishEvent("kv-v1/" + operation, metadata: metadata)
    }

    /// A KV v2 event `kv-v2/<operation>` about the secret `key`, requested at `<mount><prefix>/<key>`;
    /// `versions` (current, oldest) when the secret still has them.
    func publishKVv2(_ operation: String, prefix: String, key: String, versions: (current: Int, oldest: Int)? = nil) {
        var metadata: [String: JSONValue] = [
            "modified": "true", "operation": .string(operation), "path": .string(mount.path + prefix + "/" + key),
            "data_path": .string(mount.path + "data/" + key),
        ]
        if let versions {
            metadata["current_version"] = .string(String(versions.current))
            metadata["oldest_version"] = .string(String(versions.oldest))
        }
        publishEvent("kv-v2/" + operation, metadata: metadata)
    }
}
