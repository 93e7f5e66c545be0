package import CofferCore
package import CofferFramework

/// `sys/namespaces` and its API lock, with OpenBao 2.x's paths and shapes (docs/namespaces.md).
/// Paths name namespaces relative to the namespace the request is in.
extension SystemBackend {
    static let namespacePaths: [Path<SystemBackend>] = [
        Path("namespaces", read: SystemBackend.listNamespaces, list: SystemBackend.listNamespaces),
        Path("namespaces/api-lock/lock", write: SystemBackend.lockNamespace),
        Path("namespaces/api-lock/lock/{path+}", write: SystemBackend.lockNamespace),
        Path("namespaces/api-lock/unlock", fields: [.string("unlock_key")], write: SystemBackend.unlockNamespace),
        Path(
            "namespaces/api-lock/unlock/{path+}",
            fields: [.string("unlock_key")],
            write: SystemBackend.unlockNamespace
        ),
        Path(
            "namespaces/{path+}",
            fields: [.object("custom_metadata")],
            read: SystemBackend.readNamespace,
            write: SystemBackend.createNamespace,
            patch: SystemBackend.patchNamespace,
            delete: SystemBackend.deleteNamespace
        ),
    ]

    /// The non-root `sys/` paths a namespace serves; the rest (seal, init, audit, raw, ...) are the
    /// vault's alone and answer 404 in a namespace.
    static let namespacedPaths = [
        "mounts", "auth", "policy", "policies/acl", "capabilities", "capabilities-self", "capabilities-accessor",
        "internal/ui/mounts", "namespaces", "remount", "rotate", "key-status", "seal-status", "health", "leader",
    ]

    static func servedInNamespace(_ path: String) -> Bool {
        namespacedPaths.contains { path == $0 || path.hasPrefix($0 + "/") }
    }

    /// The namespace `path` names inside the request's namespace, if it exists.
    private func existing(_ request: BackendRequest) throws(CofferError) -> Namespace? {
        let here = try ns(request)
        var path = request.capture("path")
        while path.hasSuffix("/") { path.removeLast() }
        guard !path.isEmpty, let found = core.namespace(path: here.path + path), !found.isRoot else { return nil }
        return found
    }

    private func target(_ request: BackendRequest) throws(CofferError) -> Namespace {
        guard let found = try existing(request) else {
            throw CofferError(.notFound, "namespace not found: \"\(request.capture("path"))\"")
        }
        return found
    }

    func listNamespaces(_ request: BackendRequest) throws(CofferError) -> Response {
        let here = try ns(request)
        let children = core.namespaceIndex.withLock { $0 }.children(of: here.path)
        guard !children.isEmpty else { return .notFound }
        var info: [String: JSONValue] = [:]
        var keys: [JSONValue] = []
        for child in children {
            let key = String(child.path.dropFirst(here.path.count))
            info[key] = child.json
            keys.append(.string(key))
        }
        return Response(data: ["key_info": .object(info), "keys": .array(keys)])
    }

    /// Reads a child namespace; deeper ones are read from inside their parent, as in OpenBao.
    func readNamespace(_ request: BackendRequest) throws(CofferError) -> Response {
        var path = request.capture("path")
        while path.hasSuffix("/") { path.removeLast() }
        guard !path.contains("/") else { throw CofferError.invalid("namespace name cannot contain /") }
        guard let found = try existing(request) else { return .notFound }
        return Response(data: found.json.objectValue)
    }

    func createNamespace(_ request: BackendRequest) throws(CofferError) -> Response {
        let here = try ns(request)
        var name = request.capture("path")
        while name.hasSuffix("/") { name.removeLast() }
        let metadata = try request.fields.raw.stringMap("custom_metadata") ?? [:]
        let created = try core.createNamespace(name, in: here, metadata: metadata, now: request.now)
        return Response(data: created.json.objectValue)
    }

    func patchNamespace(_ request: BackendRequest) throws(CofferError) -> Response {
        let found = try target(request)
        // A JSON merge patch of custom_metadata: null removes a key.
        let patch = try request.fields.raw.object("custom_metadata") ?? [:]
        let removed = patch.filter { $0.value == .null }.keys
        let values =
            try ["custom_metadata": .object(patch.filter { $0.value != .null })].stringMap("custom_metadata") ?? [:]
        try core.changeNamespace(found) { state in
            for key in removed { state.customMetadata.removeValue(forKey: key) }
            state.customMetadata.merge(values) { $1 }
        }
        return Response(data: found.json.objectValue)
    }

    func deleteNamespace(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let found = try existing(request) else { return .noContent }
        try core.deleteNamespace(found, now: request.now)
        // OpenBao deletes in the background and says so; Coffer has finished when it answers.
        return Response(data: ["status": "in-progress"])
    }

    /// Locks the request's namespace (no path) or the one `path` names inside it.
    func lockNamespace(_ request: BackendRequest) throws(CofferError) -> Response {
        let found = request.capture("path").isEmpty ? try ns(request) : try target(request)
        guard !found.isRoot else { throw CofferError.invalid("the root namespace cannot be locked") }
        let key = Random.base62(24)
        try core.changeNamespace(found) { (state) throws(CofferError) in
            guard !state.locked else {
                throw CofferError.invalid("cannot lock namespace \"\(found.path)\": is already locked")
            }
            state.locked = true
            state.unlockKeyHash = Hex.encode(Digest.sha256(Array(key.utf8)))
        }
        return Response(data: ["unlock_key": .string(key)])
    }

    /// Unlocks with the unlock key, or from a parent namespace with sudo (the path is root-protected).
    func unlockNamespace(_ request: BackendRequest) throws(CofferError) -> Response {
        let fromParent = !request.capture("path").isEmpty
        let found = fromParent ? try target(request) : try ns(request)
        let given = request.fields.string("unlock_key") ?? ""
        let usedSudo = fromParent && given.isEmpty
        try core.changeNamespace(found) { (state) throws(CofferError) in
            guard state.locked else { throw CofferError.invalid("namespace \"\(found.path)\" is not locked") }
            if !usedSudo {
                let hash = Hex.encode(Digest.sha256(Array(given.utf8)))
                guard !given.isEmpty, ConstantTime.equals(Array(hash.utf8), Array(state.unlockKeyHash.utf8)) else {
                    throw CofferError.invalid("incorrect unlock key")
                }
            }
            state.locked = false
            state.unlockKeyHash = ""
        }
        guard usedSudo else { return .noContent }
        return Response(warnings: ["Namespace unlocked using sudo capabilities"])
    }
}

extension Core {
    /// Applies `change` to a namespace's state and stores its record; nothing changes if either fails.
    func changeNamespace(
        _ ns: Namespace,
        _ change: (inout NamespaceState) throws(CofferError) -> Void
    ) throws(CofferError) {
        try lifecycle.withLock { (_) throws(CofferError) in
            let before = ns.state.withLock { $0 }
            var after = before
            try change(&after)
            ns.state.withLock { $0 = after }
            defer { noteLocks() }
            do throws(CofferError) {
                try saveRecord(ns)
            } catch {
                ns.state.withLock { $0 = before }
                throw error
            }
        }
    }
}
