package import CofferCore
package import CofferFramework

/// Response wrapping, as Vault does it: an answer asked for with a wrap TTL is kept in the
/// cubbyhole of a new single-use token (policy `response-wrapping`, orphan, `num_uses` 1, TTL =
/// explicit max TTL = the wrap TTL), and the caller gets only that token in `wrap_info`. `sys/wrapping/unwrap`
/// returns the answer as it was and revokes the token (which drops its cubbyhole); the token
/// store's expiry revokes it when its TTL ends, unwrapped or not. Leases the answer holds were
/// made for the caller that asked, when it asked.
extension Core {
    static let wrappedResponseKey = "/response"
    static let invalidWrappingToken = CofferError.invalid("wrapping token is not valid or does not exist")

    /// `response` wrapped for `ttl` seconds under a new wrapping token; `path` is its creation path.
    func wrap(
        _ response: Response,
        path: String,
        requestID: String,
        ttl: Int64,
        now: Timestamp
    ) throws(CofferError)
        -> Response
    {
        guard let body = response.wireBody(requestID: requestID) else { return response }
        var wrapped = try wrap(
            bytes: body,
            path: path,
            ttl: ttl,
            now: now,
            wrappedAccessor: response.auth.map(\.accessor) ?? response.wrappedAccessor
        )
        wrapped.mountType = response.mountType
        return wrapped
    }

    /// A wrapping token over `bytes` (an answer as it went on the wire), in a `wrap_info` answer.
    func wrap(
        bytes: [UInt8],
        path: String,
        ttl: Int64,
        now: Timestamp,
        wrappedAccessor: String?
    ) throws(CofferError)
        -> Response
    {
        let (token, entry) = try tokens.create { hash, accessor in
            TokenEntry(
                idHash: hash,
                accessor: accessor,
                parentHash: "",
                policies: [PolicyStore.responseWrappingName],
                meta: [:],
                displayName: "token",
                path: path,
                now: now,
                ttl: ttl,
                explicitMaxTTL: ttl,
                numUses: 1,
                period: 0,
                renewable: false
            )
        }
        do {
            try barrier.put(Core.cubbyholePrefix + entry.idHash + Core.wrappedResponseKey, bytes)
        } catch {
            try? tokens.revoke(hash: entry.idHash)
            throw error
        }
        var wrapped = Response()
        wrapped.outcome = .ok
        wrapped.wrapInfo = WrapInfo(
            token: token,
            accessor: entry.accessor,
            ttl: ttl,
            creationTime: now,
            creationPath: path,
            wrappedAccessor: wrappedAccessor
        )
        return wrapped
    }

    /// The entry of a live wrapping token, or Vault's one error for anything else.
    func wrappingEntry(_ token: String, now: Timestamp) throws(CofferError) -> TokenEntry {
        guard !token.isEmpty, token.utf8.count <= 256, let entry = try tokens.live(token: token, now: now),
            entry.policies == [PolicyStore.responseWrappingName]
        else { throw Core.invalidWrappingToken }
        return entry
    }

    /// The wrapped answer of `token` as it went on the wire; the token is revoked: of two
    /// concurrent unwraps only one gets it.
    func unwrap(_ token: String, now: Timestamp) throws(CofferError) -> [UInt8] {
        let entry = try wrappingEntry(token, now: now)
        guard let bytes = try wrappedBytes(entry) else { throw Core.invalidWrappingToken }
        guard try tokens.revoke(hash: entry.idHash) == 1 else { throw Core.invalidWrappingToken }
        return bytes
    }

    func wrappedBytes(_ entry: TokenEntry) throws(CofferError) -> [UInt8]? {
        try barrier.get(Core.cubbyholePrefix + entry.idHash + Core.wrappedResponseKey)
    }
}

extension SystemBackend {
    static let wrappingPaths: [Path<SystemBackend>] = [
        Path("wrapping/wrap", arbitraryFields: true, write: SystemBackend.wrapData),
        Path("wrapping/lookup", fields: [.string("token")], write: SystemBackend.wrapLookup),
        Path("wrapping/unwrap", fields: [.string("token")], write: SystemBackend.unwrap),
        Path("wrapping/rewrap", fields: [.string("token")], write: SystemBackend.rewrapResponse),
    ]

    /// Wraps the request's own data (the core does the wrapping when it answers).
    func wrapData(_ request: BackendRequest) throws(CofferError) -> Response {
        guard request.wrapTTL > 0 else { throw CofferError.invalid("endpoint requires response wrapping to be used") }
        guard !request.data.isEmpty else { throw CofferError.invalid("missing data to wrap") }
        return Response(data: request.data)
    }

    func wrapLookup(_ request: BackendRequest) throws(CofferError) -> Response {
        let entry = try core.wrappingEntry(request.fields.string("token") ?? request.token ?? "", now: request.now)
        return Response(data: [
            "creation_path": .string(entry.path), "creation_time": .string(entry.creationTime.rfc3339),
            "creation_ttl": .int(entry.creationTTL),
        ])
    }

    /// Unwraps the `token` given, or, without one, the caller's own token (a wrapping token used
    /// as X-Vault-Token, as `bao unwrap` with no argument does).
    func unwrap(_ request: BackendRequest) throws(CofferError) -> Response {
        let given = request.fields.string("token") ?? ""
        let token = given.isEmpty ? (request.token ?? "") : given
        // The original answer byte for byte, as OpenBao returns it.
        return .rawBody(try core.unwrap(token, now: request.now), contentType: "application/json")
    }

    /// A new wrapping token over the same answer, with the old one's TTL and creation path; the
    /// old token is revoked once the new one exists.
    func rewrapResponse(_ request: BackendRequest) throws(CofferError) -> Response {
        let entry = try core.wrappingEntry(request.fields.string("token") ?? "", now: request.now)
        guard let bytes = try core.barrier.get(Core.cubbyholePrefix + entry.idHash + Core.wrappedResponseKey),
            let body = try? JSONValue.parse(bytes)
        else { throw Core.invalidWrappingToken }
        let rewrapped = try core.wrap(
            .raw(body),
            path: entry.path,
            requestID: "",
            ttl: entry.creationTTL,
            now: request.now
        )
        guard try core.tokens.revoke(hash: entry.idHash) == 1 else {
            if let token = rewrapped.wrapInfo?.token, let fresh = try core.tokens.lookup(token: token) {
                try core.tokens.revoke(hash: fresh.idHash)
            }
            throw Core.invalidWrappingToken
        }
        return rewrapped
    }
}
