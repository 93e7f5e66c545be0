package import CofferCore
package import CofferFramework

/// KV version 1: one unversioned JSON object per path. Any fields are taken (the secret is what
/// the request carries), as Vault's `TakesArbitraryInput`.
package final class KVv1Backend: TableBackend {
    package init() {}

    package static let paths = PathTable<KVv1Backend>([
        Path(
            "{path*}",
            arbitraryFields: true,
            existence: KVv1Backend.exists,
            read: KVv1Backend.read,
            list: KVv1Backend.list,
            write: KVv1Backend.write,
            delete: KVv1Backend.delete
        )
    ])

    func exists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        let key = request.capture("path")
        guard !key.isEmpty else { return false }
        return try request.storage.get(key) != nil
    }

    func list(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = request.capture("path")
        let keys = try request.storage.list(key.isEmpty || key.hasSuffix("/") ? key : key + "/")
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func read(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = request.capture("path")
        guard !key.isEmpty else { throw request.unsupported() }
        guard case .object(let data)? = try request.storage.getJSON(key) else { return .notFound }
        var response = Response(data: data)
        // Vault reports the mount's lease TTL (the 768h system default), or the secret's own `ttl`.
        let ttl = try? data.duration("ttl")
        response.leaseDuration =
            (ttl ?? nil) ?? (request.mount.defaultLeaseTTL > 0 ? request.mount.defaultLeaseTTL : 2_764_800)
        return response
    }

    func write(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = request.capture("path")
        guard !key.isEmpty, !key.hasSuffix("/") else {
            throw CofferError.invalid("missing secret path after \(request.mount.path)")
        }
        guard !request.data.isEmpty else { throw CofferError.invalid("missing data fields") }
        try request.storage.putJSON(key, .object(request.data))
        request.publishKVv1("write", key: key)
        return .noContent
    }

    func delete(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = request.capture("path")
        guard !key.isEmpty else { throw request.unsupported() }
        try request.storage.delete(key)
        request.publishKVv1("delete", key: key)
        return .noContent
    }
}
