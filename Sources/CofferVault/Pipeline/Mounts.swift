package import CofferAudit
package import CofferCore
package import CofferFramework
import Synchronization

/// Which table a mount belongs to. Secrets engines are mounted at their path and keep their data
/// under `logical/<uuid>/`; auth methods are mounted under `auth/` and keep theirs under
/// `auth/<uuid>/`, as in Vault. Built-in mounts (`sys/`, `auth/token/`, `cubbyhole/`) are in no
/// stored table.
package enum MountKind: Sendable, Equatable {
    case secret, auth, builtin

    /// Where the table is stored.
    var storagePath: String { self == .auth ? "core/auth" : "core/mounts" }
    /// What a routed path starts with before the entry's own path.
    var routePrefix: String { self == .auth ? "auth/" : "" }
    /// Where a mount's data lives.
    var dataPrefix: String { self == .auth ? "auth/" : "logical/" }
    var name: String { self == .auth ? "auth method" : "secrets engine" }
}

extension Core {
    /// The root namespace's mounts serving requests now: every mount while unsealed, only `sys/`
    /// while sealed.
    package var routeTable: RouteTable { root.routes ?? RouteTable(systemOnly(in: root)) }

    /// The same for the request path: this CPU's copy of it (``Namespace/servingRoutes``).
    var servingRouteTable: RouteTable { root.servingRoutes ?? RouteTable(systemOnly(in: root)) }

    private func systemOnly(in ns: Namespace) -> [RoutedMount] {
        guard let system = builtins.withLock({ $0.system }) else { return [] }
        return [
            RoutedMount(
                kind: .builtin,
                entry: Core.systemEntry,
                backend: system,
                storage: StorageView(barrier: barrier, prefix: ns.prefix + "sys/"),
                namespace: ns
            )
        ]
    }

    static let systemEntry = MountEntry.builtin(
        path: "sys/",
        type: "system",
        description: "system endpoints used for control, policy and debugging",
        id: 1
    )
    static let tokenEntry = MountEntry.builtin(
        path: "token/",
        type: "token",
        description: "token based credentials",
        id: 2
    )
    static let cubbyholeEntry = MountEntry.builtin(
        path: "cubbyhole/",
        type: "cubbyhole",
        description: "per-token private secret storage",
        id: 3,
        local: true
    )

    static let identityEntry = MountEntry.builtin(
        path: "identity/",
        type: "identity",
        description: "identity store",
        id: 4
    )

    /// Where the cubbyhole keeps each token's folder (`<token hash>/`).
    static let cubbyholePrefix = "logical/\(cubbyholeEntry.uuid)/"

    /// The built-in mounts, routed while unsealed: `sys/`, `auth/token/`, `cubbyhole/` and `identity/`
    /// (each namespace's own store). A token's cubbyhole is the same folder in every namespace: it
    /// belongs to the token.
    func builtinMounts(in ns: Namespace) throws(CofferError) -> [RoutedMount] {
        var mounts = systemOnly(in: ns)
        if let token = builtins.withLock({ $0.token }) {
            mounts.append(
                RoutedMount(
                    kind: .builtin,
                    routePrefix: "auth/",
                    entry: Core.tokenEntry,
                    backend: token,
                    storage: StorageView(barrier: barrier, prefix: TokenStore.prefix),
                    namespace: ns
                )
            )
        }
        if let rootIdentity = builtins.withLock({ $0.identity }) {
            let identity = ns.isRoot ? rootIdentity : IdentityBackend(core: self, namespace: ns)
            mounts.append(
                RoutedMount(
                    kind: .builtin,
                    entry: Core.identityEntry,
                    backend: identity,
                    storage: identity.store.storage,
                    namespace: ns
                )
            )
        }
        if engines.types.contains("cubbyhole") {
            let existing = root.routes?.mounts.first { $0.entry.uuid == Core.cubbyholeEntry.uuid }?
                .backend
            let backend: any Backend
            if let existing { backend = existing } else { backend = try engines.make(Core.cubbyholeEntry) }
            mounts.append(
                RoutedMount(
                    kind: .builtin,
                    entry: Core.cubbyholeEntry,
                    backend: backend,
                    storage: StorageView(barrier: barrier, prefix: Core.cubbyholePrefix),
                    namespace: ns
                )
            )
        }
        return mounts
    }

    /// Deletes the cubbyhole folder of the token filed under `hash` (best effort: a folder left by a
    /// failed delete is unreachable, since no token has that hash any more).
    func dropCubbyhole(of hash: String) {
        guard let keys = try? barrier.physical.listRecursive(prefix: Core.cubbyholePrefix + hash + "/"), !keys.isEmpty
        else { return }
        try? barrier.physical.batch(keys.map { .delete(key: $0) })
    }

    // MARK: Loading and building

    /// Reads the namespace's stored tables and routes them with the built-in mounts.
    func loadMounts(in ns: Namespace? = nil) throws(CofferError) {
        let ns = ns ?? root
        let table = try buildTable(
            secrets: try storedEntries(.secret, in: ns),
            auth: try storedEntries(.auth, in: ns),
            in: ns
        )
        ns.setRoutes(table)
    }

    func storedEntries(_ kind: MountKind, in ns: Namespace? = nil) throws(CofferError) -> [MountEntry] {
        let path = (ns ?? root).prefix + kind.storagePath
        guard let bytes = try barrier.get(path) else { return [] }
        guard let array = (try? JSONValue.parse(bytes))?.arrayValue else {
            throw CofferError(.integrity, "the stored mount table (\(path)) is malformed")
        }
        var entries: [MountEntry] = []
        for item in array { entries.append(try MountEntry(json: item)) }
        return entries
    }

    /// The route table for these entries. A mount that is already routed keeps its backend instance
    /// (and so its caches) unless its type or options changed: engines cache parsed state, and a
    /// second instance serving the same storage could cache a copy the first one is about to change.
    func buildTable(
        secrets: [MountEntry],
        auth: [MountEntry],
        in ns: Namespace? = nil
    ) throws(CofferError)
        -> RouteTable
    {
        let ns = ns ?? root
        let current = ns.routes
        var mounts = try builtinMounts(in: ns)
        for (kind, entries) in [(MountKind.secret, secrets), (MountKind.auth, auth)] {
            for entry in entries {
                let backend: any Backend
                if let existing = current?.mounts.first(where: { $0.entry.uuid == entry.uuid }),
                    existing.entry.type == entry.type, existing.entry.options == entry.options
                {
                    backend = existing.backend
                } else {
                    backend = try (kind == .auth ? authMethods : engines).make(entry)
                }
                mounts.append(
                    RoutedMount(
                        kind: kind,
                        routePrefix: kind.routePrefix,
                        entry: entry,
                        backend: backend,
                        storage: StorageView(
                            barrier: barrier,
                            prefix: "\(ns.prefix)\(kind.dataPrefix)\(entry.uuid)/",
                            sealWrapped: backend.specialPaths.sealWrapStorage
                        ),
                        namespace: ns
                    )
                )
            }
        }
        return RouteTable(mounts)
    }

    /// The stored entries of `kind` (the built-in ones are not in them).
    package func mounts(_ kind: MountKind = .secret, in ns: Namespace? = nil) throws(CofferError) -> [MountEntry] {
        guard let table = (ns ?? root).routes else { throw CofferError.sealedError }
        return table.mounts.filter { $0.kind == kind }.map(\.entry).sorted { $0.path < $1.path }
    }

    /// Replaces the stored table of `kind` with `entries` and routes it. The new table is routed
    /// just before it is stored (so the change feed finds it routed already) and the old one put
    /// back if storing fails. The caller holds `lifecycle`.
    private func replace(_ kind: MountKind, with entries: [MountEntry], in ns: Namespace) throws(CofferError) {
        let secrets = kind == .secret ? entries : try mounts(.secret, in: ns)
        let auth = kind == .auth ? entries : try mounts(.auth, in: ns)
        let table = try buildTable(secrets: secrets, auth: auth, in: ns)
        let previous = ns.setRoutes(table)
        do {
            try barrier.put(ns.prefix + kind.storagePath, JSONValue.array(entries.map(\.json)).serialized())
        } catch {
            ns.setRoutes(previous)
            throw error
        }
    }

    // MARK: Changes

    /// Mounts a secrets engine (or, with `.auth`, enables an auth method) at `path` ("secret/" or
    /// "secret"; for an auth method the path under `auth/`).
    package func mount(_ entry: MountEntry, kind: MountKind = .secret, in ns: Namespace? = nil) throws(CofferError) {
        let ns = ns ?? root
        var entry = entry
        entry.path = try Core.mountPoint(entry.path)
        if entry.type == "kv-v2" {
            entry.type = "kv"
            entry.options["version"] = "2"
        }
        let entryPath = entry.path
        if kind == .secret {
            guard !RouteTable.reserved.contains(where: { entryPath.hasPrefix($0) }) else {
                throw CofferError.invalid("cannot mount at '\(entryPath)': the path is reserved")
            }
        } else {
            guard entryPath != "token/" else { throw CofferError.invalid("path is already in use at auth/token/") }
            guard entry.type != "token" else {
                throw CofferError.invalid("token credential backend cannot be instantiated")
            }
        }
        if kind == .auth && !entry.accessor.hasPrefix("auth_") { entry.accessor = "auth_" + entry.accessor }
        let registry = kind == .auth ? authMethods : engines
        guard registry.types.contains(entry.type), entry.type != "cubbyhole" else {
            throw CofferError.invalid(
                "unknown \(kind.name) type \"\(entry.type)\"; available: \(registry.types.filter { $0 != "cubbyhole" }.joined(separator: ", "))"
            )
        }
        try lifecycle.withLock { (_) throws(CofferError) in
            let current = try mounts(kind, in: ns)
            if let clash = current.first(where: { entryPath.hasPrefix($0.path) || $0.path.hasPrefix(entryPath) }) {
                throw CofferError.invalid("path is already in use at \(kind.routePrefix)\(clash.path)")
            }
            if kind == .secret,
                namespaceIndex.withLock({ $0.byPath[ns.path + entryPath.prefix(while: { $0 != "/" }) + "/"] }) != nil
            {
                throw CofferError.invalid("path is already in use by the namespace \(ns.path)\(entryPath)")
            }
            try replace(kind, with: current + [entry], in: ns)
        }
    }

    /// Unmounts `path` and deletes everything the backend stored. Its leases are revoked first (the
    /// database users dropped); if one cannot be, nothing is unmounted and the error says which
    /// (`sys/leases/revoke-force` on the mount's path gives up on them).
    package func unmount(_ path: String, kind: MountKind = .secret, in ns: Namespace? = nil) throws(CofferError) {
        let ns = ns ?? root
        let point = try Core.mountPoint(path)
        // The vault's own mounts, as OpenBao protects them.
        if kind == .secret, RouteTable.reserved.contains(where: { point.hasPrefix($0) }) {
            throw CofferError.invalid("cannot unmount \"\(point)\"")
        }
        if kind == .auth, point == "token/" { throw CofferError.invalid("cannot unmount \"auth/token/\"") }
        try lifecycle.withLock { (_) throws(CofferError) in
            let current = try mounts(kind, in: ns)
            guard let entry = current.first(where: { $0.path == point }) else { return }
            let failed = try leases.revokeMount(entry.uuid, now: clock.now())
            if let first = failed.first {
                throw CofferError.invalid(
                    "failed to revoke \(failed.count) lease(s) of \(kind.routePrefix)\(point), so it stays mounted; the first, \(first.id): \(first.error.message)"
                )
            }
            try replace(kind, with: current.filter { $0.path != point }, in: ns)
            let keys = try barrier.physical.listRecursive(prefix: "\(ns.prefix)\(kind.dataPrefix)\(entry.uuid)/")
            try barrier.physical.batch(keys.map { .delete(key: $0) })
        }
    }

    /// Replaces a mount's tunables.
    func tune(
        _ path: String,
        kind: MountKind = .secret,
        in ns: Namespace? = nil,
        _ change: (inout MountEntry) throws(CofferError) -> Void
    ) throws(CofferError) {
        let ns = ns ?? root
        let point = try Core.mountPoint(path)
        try lifecycle.withLock { (_) throws(CofferError) in
            var current = try mounts(kind, in: ns)
            guard let index = current.firstIndex(where: { $0.path == point }) else {
                throw CofferError.invalid("no mount at \(kind.routePrefix)\(point)")
            }
            try change(&current[index])
            try replace(kind, with: current, in: ns)
        }
    }

    /// Moves the mount at `from` to `to`. It keeps its uuid, accessor, configuration and engine
    /// instance; its data lives under `logical/<uuid>/`, so nothing moves in storage and the move is
    /// one atomic write of the mount table. Policies naming the old path are not rewritten (as in
    /// Vault). Auth methods move the same way, between paths that start with `auth/`.
    func remount(from: String, to: String, in ns: Namespace? = nil) throws(CofferError) -> RemountMigration {
        let ns = ns ?? root
        var source = try Core.mountPoint(from)
        var target = try Core.mountPoint(to)
        let kind: MountKind = source.hasPrefix("auth/") ? .auth : .secret
        guard source != "auth/token/", kind == .auth || !RouteTable.reserved.contains(where: { source.hasPrefix($0) })
        else {
            throw CofferError.invalid("cannot remount \"\(source)\"")
        }
        if kind == .auth {
            guard target.hasPrefix("auth/") else {
                throw CofferError.invalid("cannot remount auth mount to non-auth mount \"\(target)\"")
            }
            source = String(source.dropFirst("auth/".count))
            target = String(target.dropFirst("auth/".count))
        }
        let reserved = kind == .auth ? ["token/"] : RouteTable.reserved
        guard !reserved.contains(where: { source.hasPrefix($0) }) else {
            throw CofferError.invalid("cannot remount \"\(kind.routePrefix)\(source)\"")
        }
        guard !reserved.contains(where: { target.hasPrefix($0) }), !target.isEmpty else {
            throw CofferError.invalid("cannot remount to destination \(kind.routePrefix)\(target)")
        }
        let migration = RemountMigration(
            id: Random.uuid(),
            source: kind.routePrefix + source,
            target: kind.routePrefix + target
        )
        try lifecycle.withLock { (_) throws(CofferError) in
            var current = try mounts(kind, in: ns)
            guard let index = current.firstIndex(where: { $0.path == source }) else {
                throw CofferError.invalid("no matching mount at \"\(kind.routePrefix)\(source)\"")
            }
            // The source counts too: a mount cannot move onto itself or inside itself.
            if let clash = current.first(where: { target.hasPrefix($0.path) || $0.path.hasPrefix(target) }) {
                throw CofferError.invalid("path already in use at \"\(kind.routePrefix)\(clash.path)\"")
            }
            current[index].path = target
            try replace(kind, with: current, in: ns)
        }
        remountMigrations.withLock { history in
            history.append(migration)
            if history.count > Core.remountHistoryLimit {
                history.removeFirst(history.count - Core.remountHistoryLimit)
            }
        }
        return migration
    }

    /// How many finished moves `sys/remount/status/` remembers (in memory, as OpenBao does).
    static let remountHistoryLimit = 256

    static func mountPoint(_ raw: String) throws(CofferError) -> String {
        let path = try PathRules.normalize(raw)
        return path.hasSuffix("/") ? path : path + "/"
    }
}

/// A finished mount move, as `sys/remount/status/<migration_id>` reports it.
package struct RemountMigration: Sendable {
    let id: String
    let source: String
    let target: String
}

extension MountEntry {
    /// A built-in mount: fixed ids, nothing stored.
    static func builtin(path: String, type: String, description: String, id: Int, local: Bool = false) -> MountEntry {
        var entry = MountEntry(path: path, type: type, description: description)
        entry.accessor = "\(type)_00000000"
        entry.uuid = "00000000-0000-0000-0000-00000000000\(id)"
        entry.local = local
        return entry
    }
}
