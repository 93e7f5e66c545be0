public import CofferCore

/// KV version 1: one unversioned JSON object per path.
public struct KVv1Backend: Backend {
    public init() {}

    public func exists(_ request: EngineRequest) throws(CofferError) -> Bool? {
        request.path.isEmpty ? nil : try request.storage.get(request.path) != nil
    }

    public func handle(_ request: EngineRequest) throws(CofferError) -> Response {
        let key = request.path
        switch request.operation {
        case .list:
            let folder = key.isEmpty || key.hasSuffix("/") ? key : key + "/"
            let keys = try request.storage.list(folder)
            guard !keys.isEmpty else { return .notFound }
            return Response(data: ["keys": .array(keys.map { .string($0) })])
        case .read:
            guard !key.isEmpty else { throw request.unsupported() }
            guard case .object(let data)? = try request.storage.getJSON(key) else { return .notFound }
            var response = Response(data: data)
            // Vault reports the mount's lease TTL (the 768h system default), or the secret's own `ttl`.
            let ttl = try? data.duration("ttl")
            response.leaseDuration = (ttl ?? nil) ?? (request.mount.defaultLeaseTTL > 0 ? request.mount.defaultLeaseTTL : 2_764_800)
            return response
        case .create, .update:
            guard !key.isEmpty, !key.hasSuffix("/") else { throw CofferError.invalid("missing secret path after \(request.mount.path)") }
            guard !request.data.isEmpty else { throw CofferError.invalid("missing data fields") }
            try request.storage.putJSON(key, .object(request.data))
            return .noContent
        case .delete:
            guard !key.isEmpty else { throw request.unsupported() }
            try request.storage.delete(key)
            return .noContent
        case .patch:
            throw request.unsupported()
        }
    }
}
