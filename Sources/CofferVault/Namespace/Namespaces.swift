package import CofferCore
import Synchronization

/// Creating, loading, finding and deleting namespaces, and resolving the namespace a request is for.
extension Core {
    static let namespaceRecordPrefix = "core/namespaces/"
    /// Names a namespace may not take, with OpenBao's list.
    static let reservedNamespaceNames: Set<String> = [
        ".", "..", "root", "sys", "audit", "auth", "cubbyhole", "identity",
    ]
    /// The longest namespace name, and the deepest nesting, accepted.
    static let namespaceNameLimit = 64
    static let namespaceDepthLimit = 16

    // MARK: Loading

    /// Loads every namespace at unseal: its record, keyring, policies and mounts.
    func loadNamespaces() throws(CofferError) {
        var loaded: [Namespace] = []
        for uuid in try barrier.list(Core.namespaceRecordPrefix) {
            if let ns = try loadNamespace(uuid: uuid) { loaded.append(ns) }
        }
        publish(NamespaceIndex(loaded))
    }

    /// One namespace from its stored record, with its keyring, policies and mounts loaded.
    func loadNamespace(uuid: String) throws(CofferError) -> Namespace? {
        guard let bytes = try barrier.get(Core.namespaceRecordPrefix + uuid) else { return nil }
        let record: JSONValue
        do { record = try JSONValue.parse(bytes) } catch {
            throw CofferError(.integrity, "the stored namespace record \(uuid) is not valid JSON")
        }
        let ns = try Namespace(record: record, barrier: barrier)
        guard try barrier.loadNamespaceKeyring(ns.uuid) else {
            throw CofferError(.integrity, "namespace \(ns.path) has no keyring in storage")
        }
        try ns.policies.load()
        try loadMounts(in: ns)
        return ns
    }

    func unloadNamespaces() {
        let index = namespaceIndex.withLock { $0 }
        for ns in index.byPath.values {
            ns.setRoutes(nil)
            ns.policies.unload()
            ns.identity.unload()
        }
        publish(NamespaceIndex())
    }

    func publish(_ index: NamespaceIndex) {
        namespaceIndex.withLock { $0 = index }
        hasNamespaces.store(!index.isEmpty, ordering: .releasing)
        noteLocks()
    }

    /// Keeps `anyNamespaceLocked` true while any namespace is under an API lock (the request path
    /// then looks; otherwise it does not).
    func noteLocks() {
        let index = namespaceIndex.withLock { $0 }
        let locked = index.byPath.values.contains { $0.state.withLock { $0.locked } }
        anyNamespaceLocked.store(locked, ordering: .releasing)
    }

    /// The namespace with this id ("root" or "" for root), if it exists.
    package func namespace(id: String) -> Namespace? {
        if id.isEmpty || id == root.id { return root }
        return namespaceIndex.withLock { $0.byID[id] }
    }

    /// The namespace at this path ("" or "root/" for root; with or without the trailing slash).
    package func namespace(path: String) -> Namespace? {
        var path = path
        while path.hasPrefix("/") { path.removeFirst() }
        if path.isEmpty || path == "root" || path == "root/" { return root }
        if !path.hasSuffix("/") { path += "/" }
        return namespaceIndex.withLock { $0.byPath[path] }
    }

    /// Every routed mount of every namespace (leases and periodic work find their mount here).
    func allRoutedMounts() -> [RoutedMount] {
        var mounts = root.routes?.mounts ?? []
        for ns in namespaceIndex.withLock({ $0 }).byPath.values {
            mounts += ns.routes?.mounts ?? []
        }
        return mounts
    }

    /// The routed mount with this uuid, in whichever namespace it is.
    func routedMount(uuid: String) -> RoutedMount? {
        if let found = root.routes?.mounts.first(where: { $0.entry.uuid == uuid }) { return found }
        for ns in namespaceIndex.withLock({ $0 }).byPath.values {
            if let found = ns.routes?.mounts.first(where: { $0.entry.uuid == uuid }) { return found }
        }
        return nil
    }

    // MARK: Resolving a request's namespace

    /// The namespace a request is for (nil: the root): its `X-Vault-Namespace` (`request.namespace`)
    /// followed by as many leading segments of its path as name namespaces, as OpenBao resolves them.
    /// Rewrites the request's path to be relative to that namespace and its namespace to the full path.
    /// The root is nil, not `root`, so that a request in it holds no reference to the root namespace.
    func resolveNamespace(_ request: inout Request) throws(CofferError) -> Namespace? {
        if request.namespace.isEmpty && !hasNamespaces.load(ordering: .acquiring) { return nil }
        let index = namespaceIndex.withLock { $0 }
        var ns = root
        if !request.namespace.isEmpty {
            let slash = UInt8(ascii: "/")
            var header = Substring(request.namespace)
            // The usual header ("team-a", "team-a/child") is used as it is; others are trimmed first.
            if header.utf8.first == slash || header.utf8.last == slash || header.utf8.starts(with: "root".utf8) {
                while header.utf8.first == slash { header = header.dropFirst() }
                while header.utf8.last == slash { header = header.dropLast() }
                if header.utf8.starts(with: "root/".utf8) { header = header.dropFirst(5) }
            }
            if !header.isEmpty && header != "root" {
                guard let found = index.byHeader[header] else {
                    // Sealed, no namespace is loaded: say so, not that it does not exist.
                    throw barrier.isSealed ? CofferError.sealedError : CofferError(.notFound, "namespace not found")
                }
                ns = found
            }
        } else if request.path.utf8.starts(with: Core.tokenSelfPrefix.utf8), Core.tokenSelfPaths.contains(request.path),
            let id = Core.namespaceSuffix(of: request.token), let home = index.byID[id]
        {
            // A token's own lookup, renewal and revocation find its namespace by the token's suffix.
            ns = home
        }
        // Leading segments that name namespaces, over the path's contiguous UTF-8 bytes. The path of
        // the namespace a segment names is the starting namespace's path, then the request path up to
        // the segment's slash: from the root, that prefix alone (no concatenation).
        var consumed = 0
        let base = ns.isRoot ? nil : ns.path
        var path = request.path
        path.withUTF8 { bytes in
            while ns.depth < index.deepest, let slash = bytes[consumed...].firstIndex(of: UInt8(ascii: "/")) {
                let through = String(decoding: UnsafeBufferPointer(rebasing: bytes[...slash]), as: UTF8.self)
                guard let child = index.byPath[base.map { $0 + through } ?? through] else { break }
                ns = child
                consumed = slash + 1
            }
        }
        if !ns.isRoot {
            if consumed > 0 {
                request.path = path.withUTF8 {
                    String(decoding: UnsafeBufferPointer(rebasing: $0[consumed...]), as: UTF8.self)
                }
            }
            request.namespace = ns.path
            request.namespaceID = ns.id
            return ns
        }
        request.namespace = ""
        return nil
    }

    static let tokenSelfPrefix = "auth/token/"
    static let tokenSelfPaths: Set<String> = [
        "auth/token/lookup-self", "auth/token/renew-self", "auth/token/revoke-self",
    ]

    /// The `<id>` of a service token `s.<random>.<id>`, if it has one.
    static func namespaceSuffix(of token: String?) -> String? {
        guard let token, token.utf8.starts(with: "s.".utf8) else { return nil }
        let bytes = token.utf8
        guard let dot = bytes.lastIndex(of: UInt8(ascii: ".")), bytes.distance(from: bytes.startIndex, to: dot) > 1
        else { return nil }
        return String(Substring(bytes[bytes.index(after: dot)...]))
    }

    /// Refuses requests into a namespace under an API lock (it or an ancestor), except the unlock
    /// itself made from inside with the unlock key. OpenBao's 503 and text.
    func checkAPILock(_ ns: Namespace, _ request: Request) throws(CofferError) {
        guard !ns.isRoot, anyNamespaceLocked.load(ordering: .acquiring) else { return }
        let index = namespaceIndex.withLock { $0 }
        var path = ns.path
        while !path.isEmpty {
            if let locked = index.byPath[path], locked.state.withLock({ $0.locked }) {
                if locked === ns, request.path == "sys/namespaces/api-lock/unlock", request.data["unlock_key"] != nil {
                    return
                }
                throw CofferError(
                    .unavailable,
                    "API access to this namespace has been locked by an administrator - \"\(path)\" must be unlocked to gain access."
                )
            }
            path = Namespace.parent(of: path)
        }
    }

    // MARK: Changes

    /// Creates the namespace `name` inside `parent`.
    func createNamespace(
        _ name: String,
        in parent: Namespace,
        metadata: [String: String],
        now: Timestamp
    ) throws(CofferError) -> Namespace {
        try Core.validateNamespaceName(name)
        let path = parent.path + name + "/"
        guard path.split(separator: "/").count <= Core.namespaceDepthLimit else {
            throw CofferError.invalid("namespaces nest at most \(Core.namespaceDepthLimit) deep")
        }
        return try lifecycle.withLock { (_) throws(CofferError) -> Namespace in
            if let existing = namespaceIndex.withLock({ $0.byPath[path] }) { return existing }
            // A mount at the same path in the parent would be hidden by the namespace.
            if let table = parent.routes,
                table.mounts.contains(where: { $0.kind == .secret && $0.prefix == name + "/" })
            {
                throw CofferError.invalid("cannot create namespace \"\(path)\": a mount is at \(parent.path)\(name)/")
            }
            var id = Random.base62(6)
            while namespaceIndex.withLock({ $0.byID[id] }) != nil || id == root.id { id = Random.base62(6) }
            var state = NamespaceState()
            state.customMetadata = metadata
            let ns = Namespace(id: id, uuid: Random.uuid(), path: path, barrier: barrier, state: state)
            try barrier.createNamespaceKeyring(ns.uuid, now: now)
            // Published before its record is stored: the change feed then finds it known.
            let before = namespaceIndex.withLock { $0 }
            do throws(CofferError) {
                try ns.policies.load()
                try loadMounts(in: ns)
                publish(before.adding(ns))
                try saveRecord(ns)
            } catch {
                publish(before)
                try? eraseStorage(of: ns)
                throw error
            }
            return ns
        }
    }

    func saveRecord(_ ns: Namespace) throws(CofferError) {
        try barrier.put(Core.namespaceRecordPrefix + ns.uuid, ns.record.serialized())
    }

    /// Deletes `ns`: revokes its mounts' leases and its tokens, deletes its entries, then destroys its
    /// keyring. A namespace with children is refused, as in OpenBao.
    func deleteNamespace(_ ns: Namespace, now: Timestamp) throws(CofferError) {
        try lifecycle.withLock { (_) throws(CofferError) in
            let index = namespaceIndex.withLock { $0 }
            guard index.byPath[ns.path] === ns else { return }
            guard index.children(of: ns.path).isEmpty else {
                throw CofferError.invalid("unable to delete namespace containing child namespaces")
            }
            for mount in ns.routes?.mounts ?? [] where mount.kind != .builtin {
                let failed = try leases.revokeMount(mount.entry.uuid, now: now)
                if let first = failed.first {
                    throw CofferError.invalid(
                        "failed to revoke \(failed.count) lease(s) of \(ns.path)\(mount.prefix), so the namespace stays; the first, \(first.id): \(first.error.message)"
                    )
                }
            }
            try tokens.revokeAll(inNamespace: ns.id)
            publish(index.removing(ns))
            ns.setRoutes(nil)
            ns.policies.unload()
            barrier.meters.forgetRoutes(under: ns.path)
            try eraseStorage(of: ns)
        }
    }

    /// Deletes the namespace's record, entries and, last, its keyring.
    private func eraseStorage(of ns: Namespace) throws(CofferError) {
        try barrier.delete(Core.namespaceRecordPrefix + ns.uuid)
        let keys = try barrier.physical.listRecursive(prefix: ns.prefix)
        if !keys.isEmpty { try barrier.physical.batch(keys.map { .delete(key: $0) }) }
        try barrier.destroyNamespaceKeyring(ns.uuid)
    }

    static func validateNamespaceName(_ name: String) throws(CofferError) {
        guard !name.isEmpty else { throw CofferError.invalid("namespace name must not be empty") }
        guard !name.contains("/") else { throw CofferError.invalid("namespace name cannot contain /") }
        guard !reservedNamespaceNames.contains(name.lowercased()) else {
            throw CofferError.invalid("\"\(name)/\" is a reserved path and cannot be used as a namespace name")
        }
        guard name.utf8.count <= namespaceNameLimit else {
            throw CofferError.invalid("namespace name is \(name.utf8.count) bytes; the limit is \(namespaceNameLimit)")
        }
        guard
            name.unicodeScalars.allSatisfy({
                ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") || $0 == "-"
                    || $0 == "_" || $0 == "."
            })
        else {
            throw CofferError.invalid(
                "namespace name \"\(name)\" may contain only letters, digits, '-', '_' and '.'"
            )
        }
    }
}

extension Namespace {
    static func parent(of path: String) -> String {
        guard let slash = path.dropLast().lastIndex(of: "/") else { return "" }
        return String(path[...slash])
    }
}
