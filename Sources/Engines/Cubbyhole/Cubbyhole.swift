package import CofferCore
package import CofferFramework

/// Vault's cubbyhole: a private KV v1 space per token. What one token stores, no other token can
/// read, not even root; it is destroyed with the token. Mounted at `cubbyhole/` in every vault.
///
/// Storage under the mount: `<token hash>/<path>`, where the token hash is the salted HMAC the token
/// store files the token under (never the token). The token store deletes `<token hash>/` when it
/// revokes the token.
package final class CubbyholeBackend: TableBackend {
    package init() {}

    package static let paths = PathTable<CubbyholeBackend>([
        Path(
            "{path*}",
            arbitraryFields: true,
            existence: CubbyholeBackend.exists,
            read: CubbyholeBackend.read,
            list: CubbyholeBackend.list,
            write: CubbyholeBackend.write,
            delete: CubbyholeBackend.delete
        )
    ])

    /// The caller's own folder; a request without a token has none.
    static func folder(_ request: BackendRequest) throws(CofferError) -> String {
        guard let hash = request.caller?.tokenHash, !hash.isEmpty else { throw CofferError.permissionDeniedError }
        return hash + "/"
    }

    static func key(_ request: BackendRequest) throws(CofferError) -> String {
        let path = request.capture("path")
        guard !path.isEmpty, !path.hasSuffix("/") else { throw CofferError.invalid("missing path") }
        return try folder(request) + path
    }

    func exists(_ request: ExistenceRequest) throws(CofferError) -> Bool {
        guard let hash = request.caller?.tokenHash, !hash.isEmpty, !request.capture("path").isEmpty else {
            return false
        }
        return try request.storage.get(hash + "/" + request.capture("path")) != nil
    }

    func read(_ request: BackendRequest) throws(CofferError) -> Response {
        guard case .object(let data)? = try request.storage.getJSON(try Self.key(request)) else { return .notFound }
        return Response(data: data)
    }

    func list(_ request: BackendRequest) throws(CofferError) -> Response {
        let path = request.capture("path")
        let keys = try request.storage.list(
            try Self.folder(request) + (path.isEmpty || path.hasSuffix("/") ? path : path + "/")
        )
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func write(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.key(request)
        guard !request.fields.raw.isEmpty else { throw CofferError.invalid("missing data fields") }
        try request.storage.putJSON(key, .object(request.fields.raw))
        return .noContent
    }

    func delete(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete(try Self.key(request))
        return .noContent
    }
}
