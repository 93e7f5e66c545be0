package import CofferCore
import Synchronization

/// A namespace (issue 19; docs/namespaces.md): a vault within the vault, with its own mounts, auth
/// methods, policies, tokens and `sys/`, and its own keyring. The root namespace is the vault itself.
///
/// A namespace's entries live under `namespaces/<uuid>/` (mount tables, policies, its mounts' data),
/// which the barrier encrypts with the namespace's keyring (CofferCore's NamespaceKeys.swift). Its
/// record is `core/namespaces/<uuid>`, under the vault's keyring.
package final class Namespace: Sendable {
    /// Six base62 characters, the suffix of the namespace's tokens; "root" for the root namespace.
    package let id: String
    /// "" for the root namespace.
    package let uuid: String
    /// The full path with a trailing slash ("team-a/", "team-a/child/"); "" for the root namespace.
    package let path: String
    /// How many namespaces deep it is: 0 for the root, 1 for "team-a/", 2 for "team-a/child/".
    let depth: Int
    /// Where its entries live: "" for root, "namespaces/<uuid>/" for the others.
    let prefix: String
    let policies: PolicyStore
    /// Its entities, aliases and groups (Identity/): logins to its auth methods make them here.
    let identity: IdentityStore
    /// The namespace's mounts while unsealed (for root: everything; see Mounts.swift).
    /// The request path routes with a copy of it per CPU (``servingRoutes``): its copies of the
    /// mounts are retained by the requests of that CPU only.
    private let table = PerCPUValue<RouteTable>(localize: { $0.copy() })
    /// What `sys/namespaces` shows and PATCH changes; the API lock.
    let state: Mutex<NamespaceState>

    init(id: String, uuid: String, path: String, barrier: Barrier, state: NamespaceState = NamespaceState()) {
        self.id = id
        self.uuid = uuid
        self.path = path
        self.depth = path.utf8.count(where: { $0 == UInt8(ascii: "/") })
        self.prefix = uuid.isEmpty ? "" : Barrier.namespacePrefix + uuid + "/"
        self.policies = PolicyStore(barrier: barrier, prefix: prefix + PolicyStore.prefix)
        self.identity = IdentityStore(barrier: barrier, namespacePrefix: prefix)
        self.state = Mutex(state)
    }

    package var isRoot: Bool { uuid.isEmpty }

    /// The namespace's mounts while unsealed: nil while sealed (or, for root, before the first load).
    var routes: RouteTable? { table.value }

    /// Replaces the mounts (nil: none are served) and drops every CPU's copy of the old table; returns
    /// the old table.
    @discardableResult
    func setRoutes(_ routes: RouteTable?) -> RouteTable? { table.set(routes) }

    /// The table the request path routes with: this CPU's copy of ``routes``. Two cores routing
    /// requests then retain and release different objects; with one table (and its mounts), each
    /// request's retains were atomic writes to lines the other core had to fetch back.
    var servingRoutes: RouteTable? { table.local()?.value }

    /// The parent's path ("" for a top-level namespace).
    var parentPath: String { Namespace.parent(of: path) }

    /// Whether this namespace is `other` or inside it.
    func isWithin(_ other: Namespace) -> Bool { other.isRoot || path.hasPrefix(other.path) }

    /// The six fields OpenBao shows for a namespace.
    var json: JSONValue {
        let state = self.state.withLock { $0 }
        return [
            "id": .string(id), "uuid": .string(uuid), "path": .string(path), "locked": .bool(state.locked),
            "tainted": false, "custom_metadata": .object(state.customMetadata.mapValues { .string($0) }),
        ]
    }

    /// The stored record: the fields above and the API lock's key hash.
    var record: JSONValue {
        let state = self.state.withLock { $0 }
        return [
            "id": .string(id), "uuid": .string(uuid), "path": .string(path),
            "custom_metadata": .object(state.customMetadata.mapValues { .string($0) }),
            "locked": .bool(state.locked), "unlock_key_hash": .string(state.unlockKeyHash),
        ]
    }

    convenience init(record: JSONValue, barrier: Barrier) throws(CofferError) {
        guard let id = record["id"]?.stringValue, let uuid = record["uuid"]?.stringValue, !uuid.isEmpty,
            let path = record["path"]?.stringValue, path.hasSuffix("/")
        else {
            throw CofferError(.integrity, "a stored namespace record is malformed")
        }
        var state = NamespaceState()
        state.customMetadata = (record["custom_metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        state.locked = record["locked"]?.boolValue ?? false
        state.unlockKeyHash = record["unlock_key_hash"]?.stringValue ?? ""
        self.init(id: id, uuid: uuid, path: path, barrier: barrier, state: state)
    }
}

package struct NamespaceState: Sendable {
    var customMetadata: [String: String] = [:]
    var locked = false
    /// SHA-256 (hex) of the key that unlocks the API lock from inside; "" when unlocked.
    var unlockKeyHash = ""
}

/// Every namespace but root, by path, id and uuid: an immutable snapshot, replaced on each change, so
/// the request path reads it without holding a lock.
final class NamespaceIndex: Sendable {
    let byPath: [String: Namespace]
    let byID: [String: Namespace]
    let byUUID: [String: Namespace]

    convenience init(_ namespaces: [Namespace] = []) {
        var byPath: [String: Namespace] = [:]
        var byID: [String: Namespace] = [:]
        var byUUID: [String: Namespace] = [:]
        for ns in namespaces {
            byPath[ns.path] = ns
            byID[ns.id] = ns
            byUUID[ns.uuid] = ns
        }
        self.init(byPath: byPath, byID: byID, byUUID: byUUID)
    }

    private init(byPath: [String: Namespace], byID: [String: Namespace], byUUID: [String: Namespace]) {
        self.byPath = byPath
        self.byID = byID
        self.byUUID = byUUID
        byHeader = Dictionary(uniqueKeysWithValues: byPath.map { ($0.key.dropLast(), $0.value) })
        deepest = byPath.values.reduce(0) { max($0, $1.depth) }
    }

    /// By path without its trailing slash, as an `X-Vault-Namespace` header names it ("team-a/child"):
    /// the header is looked up as it comes, with no string built per request.
    let byHeader: [Substring: Namespace]

    /// The depth of the deepest namespace: a request path's leading segments are looked up as
    /// namespaces only until one this deep is found.
    let deepest: Int

    var isEmpty: Bool { byPath.isEmpty }

    /// The direct children of the namespace at `path`.
    func children(of path: String) -> [Namespace] {
        byPath.values.filter { $0.parentPath == path }.sorted { $0.path < $1.path }
    }

    /// The namespace whose entries a storage key is among (`namespaces/<uuid>/...`).
    func owner(ofStorageKey key: String) -> Namespace? {
        Barrier.namespaceUUID(of: key).flatMap { byUUID[$0] }
    }

    // Copies of the dictionaries, not rebuilt ones: a change costs a copy, not n insertions.
    func adding(_ ns: Namespace) -> NamespaceIndex {
        var (byPath, byID, byUUID) = (self.byPath, self.byID, self.byUUID)
        byPath[ns.path] = ns
        byID[ns.id] = ns
        byUUID[ns.uuid] = ns
        return NamespaceIndex(byPath: byPath, byID: byID, byUUID: byUUID)
    }

    func removing(_ ns: Namespace) -> NamespaceIndex {
        var (byPath, byID, byUUID) = (self.byPath, self.byID, self.byUUID)
        byPath.removeValue(forKey: ns.path)
        byID.removeValue(forKey: ns.id)
        byUUID.removeValue(forKey: ns.uuid)
        return NamespaceIndex(byPath: byPath, byID: byID, byUUID: byUUID)
    }
}
