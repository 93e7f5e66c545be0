/// One operation on a Coffer, whatever carried it: the Swift API, the C ABI or HTTP.
public struct Request: Sendable {
    /// Vault's logical operations. HTTP maps GET→read, PUT/POST→create or update (decided by the
    /// engine's existence check), PATCH→patch, DELETE→delete, LIST or `?list=true`→list.
    public enum Operation: String, Sendable, CaseIterable {
        case create, read, update, patch, delete, list
    }

    public var operation: Operation
    /// The path without a leading slash or the `v1/` prefix, e.g. "secret/data/app" or "sys/unseal".
    public var path: String
    /// The request body (for writes) or query parameters (for reads and lists).
    public var data: [String: JSONValue]
    public var token: String?
    /// The namespace (`X-Vault-Namespace`); once the core has resolved it, the full path of the
    /// namespace the request is in ("" for root) and `path` is relative to it.
    public var namespace: String
    /// Set by the core with `namespace`: the namespace's id ("" for root).
    package var namespaceID = ""
    public var clientAddress: String
    public var id: String
    /// Byte fields from an in-process caller, used instead of their base64 text in `data` (transit's
    /// `plaintext`, `context`): the C ABI's fast paths pass bytes through the same pipeline as
    /// everyone else without encoding them. Policies and audit records see them as base64.
    public var rawBytes: [String: [UInt8]] = [:]
    /// Whether byte results should come back as bytes (``Response/rawBytes``) instead of base64 text.
    public var rawResults = false
    /// Set by a caller that writes the answer out as JSON and reads nothing in it (the wire form;
    /// the C ABI's KV read): a backend may then hand a member of `data` on as the JSON bytes it
    /// stored (``Response/verbatimMember``) instead of parsing them. The pipeline ignores it when the
    /// answer is wrapped, which reads the values; an audit device reads them too, but parses them only
    /// to hash a body it has not kept (docs/audit.md).
    package var writesAnswerAsJSON = false
    /// Seconds to wrap the answer for (Vault's `X-Vault-Wrap-TTL`): the caller gets a single-use
    /// wrapping token instead of the answer; `sys/wrapping/unwrap` gives the answer. 0: not wrapped.
    public var wrapTTL: Int64 = 0

    public init(
        _ operation: Operation,
        _ path: String,
        data: [String: JSONValue] = [:],
        token: String? = nil,
        namespace: String = "",
        clientAddress: String = "",
        id: String? = nil
    ) {
        self.operation = operation
        self.path = path
        self.data = data
        self.token = token
        self.namespace = namespace
        self.clientAddress = clientAddress
        self.id = id ?? Random.requestID()
    }

    /// The request parameters as a policy's parameter rules and the audit log see them: `data`, with
    /// each raw byte field as its standard base64 text. Built only when asked for.
    public var parameters: [String: JSONValue] {
        guard !rawBytes.isEmpty else { return data }
        var merged = data
        for (name, bytes) in rawBytes { merged[name] = .string(Base64.encode(bytes)) }
        return merged
    }

    /// Maps an HTTP method name to an operation: GET, PUT, POST, PATCH, DELETE, LIST.
    /// PUT and POST both map to `update`; the core turns it into `create` when nothing exists yet.
    public static func operation(forMethod method: String, listQuery: Bool = false) -> Operation? {
        switch method.uppercased() {
        case "GET", "HEAD": listQuery ? .list : .read
        case "PUT", "POST": .update
        case "PATCH": .patch
        case "DELETE": .delete
        case "LIST": .list
        default: nil
        }
    }
}

/// The `auth` block of a response: what a login or token creation hands back.
public struct AuthInfo: Sendable, Equatable {
    public var clientToken: String
    public var accessor: String
    public var policies: [String]
    public var tokenPolicies: [String]
    public var metadata: [String: String]
    public var leaseDuration: Int64
    public var renewable: Bool
    public var orphan: Bool
    public var numUses: Int
    public var tokenType: String = "service"
    /// The identity entity the token belongs to ("" when none).
    public var entityID: String = ""
    /// Policies the token gets from its entity and groups (listed only when there are some).
    public var identityPolicies: [String] = []
    /// What an auth method's login grants beyond the block itself; the core makes the token from it.
    /// Never on the wire.
    package var grant: LoginGrant?

    public init(
        clientToken: String,
        accessor: String,
        policies: [String],
        tokenPolicies: [String],
        metadata: [String: String],
        leaseDuration: Int64,
        renewable: Bool,
        orphan: Bool,
        numUses: Int
    ) {
        self.clientToken = clientToken
        self.accessor = accessor
        self.policies = policies
        self.tokenPolicies = tokenPolicies
        self.metadata = metadata
        self.leaseDuration = leaseDuration
        self.renewable = renewable
        self.orphan = orphan
        self.numUses = numUses
    }

    public var json: JSONValue {
        var block: [String: JSONValue] = [
            "client_token": .string(clientToken), "accessor": .string(accessor),
            "policies": .array(policies.map { .string($0) }),
            "token_policies": .array(tokenPolicies.map { .string($0) }),
            "metadata": metadata.isEmpty ? .null : .object(metadata.mapValues { .string($0) }),
            "lease_duration": .int(leaseDuration), "renewable": .bool(renewable), "entity_id": .string(entityID),
            "token_type": .string(tokenType), "orphan": .bool(orphan), "mfa_requirement": nil,
            "num_uses": .int(numUses),
        ]
        if !identityPolicies.isEmpty { block["identity_policies"] = .array(identityPolicies.map { .string($0) }) }
        return .object(block)
    }
}

/// What an auth method grants at login, besides the `auth` block's policies, metadata, TTL and
/// uses: who logged in (the identity alias), the limits of the token to make, and where it may be
/// used. The core turns it into a token and finds or creates the caller's identity entity.
package struct LoginGrant: Sendable, Equatable {
    /// The alias name that identifies the caller to this mount (a username, a role id, a JWT's
    /// `user_claim`), and what the alias records about it.
    package var alias: String
    package var aliasMetadata: [String: String]
    /// Group names the method vouches for (a JWT's groups claim): external groups whose aliases
    /// on this mount carry these names give the token their policies.
    package var groups: [String]
    /// 0: the mount's, else the system's.
    package var maxTTL: Int64
    package var explicitMaxTTL: Int64
    package var period: Int64
    /// CIDR blocks the token may be used from (empty: anywhere).
    package var boundCIDRs: [String]
    /// "service", "batch" or "default" (the mount's default: service).
    package var tokenType: String
    /// Leave out the `default` policy.
    package var noDefaultPolicy: Bool

    package init(
        alias: String,
        aliasMetadata: [String: String] = [:],
        groups: [String] = [],
        maxTTL: Int64 = 0,
        explicitMaxTTL: Int64 = 0,
        period: Int64 = 0,
        boundCIDRs: [String] = [],
        tokenType: String = "default",
        noDefaultPolicy: Bool = false
    ) {
        self.alias = alias
        self.aliasMetadata = aliasMetadata
        self.groups = groups
        self.maxTTL = maxTTL
        self.explicitMaxTTL = explicitMaxTTL
        self.period = period
        self.boundCIDRs = boundCIDRs
        self.tokenType = tokenType
        self.noDefaultPolicy = noDefaultPolicy
    }
}

/// The result of a request. `envelope` is its JSON form on the wire, identical for HTTP and the C ABI.
public struct Response: Sendable {
    /// What kind of answer this is. Transports map it to their own terms (HTTP 200, 204, 404; a C
    /// status); backends never speak HTTP.
    public enum Outcome: Sendable, Equatable {
        /// An answer with a body.
        case ok
        /// Done, nothing to say.
        case noContent
        /// Nothing there. `data` may still say why (a deleted KV version's metadata, as Vault sends it).
        case notFound
        /// An answer with a body and a status the API defines for it: transit's batch with failed
        /// items answers 400, or the status the caller chose (`partial_failure_response_code`).
        case status(Int)
    }

    public var outcome: Outcome
    public var data: [String: JSONValue]?
    public var warnings: [String]
    public var leaseID: String
    public var leaseDuration: Int64
    public var renewable: Bool
    public var mountType: String
    /// What most answers do not carry (a login's auth block, a raw body, wrapping), boxed: a read's
    /// answer is handed up through every layer of the pipeline, and these fields inline made a
    /// `Response` 504 bytes to copy and release at each step. nil: all at their defaults.
    private var rareBox: RareBox?

    private struct Rare: Sendable {
        var auth: AuthInfo? = nil
        var raw: JSONValue? = nil
        var rawStatus = 200
        var repeatDataAtTopLevel = false
        var rawBytes: [String: [UInt8]] = [:]
        var body: (contentType: String, bytes: [UInt8])? = nil
        var verbatimMember: (name: String, json: ArraySlice<UInt8>)? = nil
        var secret: SecretLease? = nil
        var wrappedAccessor: String? = nil
        var wrapInfo: WrapInfo? = nil
    }

    private final class RareBox: Sendable {
        let value: Rare
        init(_ value: Rare) { self.value = value }
    }

    /// Read from the box; a change makes a new box, so copies of the answer never share a change.
    private var rare: Rare {
        get { rareBox?.value ?? Rare() }
        set { rareBox = RareBox(newValue) }
    }

    public var auth: AuthInfo? {
        get { rareBox?.value.auth }
        set { rare.auth = newValue }
    }
    /// For the endpoints Vault answers without the envelope (sys/init, seal-status, unseal, health,
    /// leader): the body as it goes on the wire, and the status those endpoints define (sys/health
    /// answers 429, 472, 473, 501 or 503 by the state of the vault).
    public var raw: JSONValue? {
        get { rareBox?.value.raw }
        set { rare.raw = newValue }
    }
    public var rawStatus: Int {
        get { rareBox?.value.rawStatus ?? 200 }
        set { rare.rawStatus = newValue }
    }
    /// For sys endpoints that repeat their `data` keys at the top level of the envelope.
    public var repeatDataAtTopLevel: Bool {
        get { rareBox?.value.repeatDataAtTopLevel ?? false }
        set { rare.repeatDataAtTopLevel = newValue }
    }
    /// Byte results for in-process callers that asked for raw bytes (``Request/rawBytes``): transit's
    /// plaintext without base64. Not part of the JSON form.
    public var rawBytes: [String: [UInt8]] {
        get { rareBox?.value.rawBytes ?? [:] }
        set { rare.rawBytes = newValue }
    }
    /// A body that is not JSON (Vault's `http_raw_body`): a DER certificate or CRL, PEM text. Sent
    /// as it is, with this content type and a 200.
    public var body: (contentType: String, bytes: [UInt8])? {
        get { rareBox?.value.body }
        set { rare.body = newValue }
    }
    /// A member of `data` given as the compact JSON its backend stored, for a request that
    /// ``Request/writesAnswerAsJSON``: written as it is into the wire form (in key order with the
    /// members of `data`), never parsed. KV v2's `data` of a read: the secret's values.
    /// ``completeData`` is `data` with it parsed in.
    package var verbatimMember: (name: String, json: ArraySlice<UInt8>)? {
        get { rareBox?.value.verbatimMember }
        set { rare.verbatimMember = newValue }
    }
    /// `data` with ``verbatimMember`` parsed into it: what a reader of the values sees. nil when the
    /// verbatim JSON does not parse (it came from the barrier, which authenticated it, so it does).
    package var completeData: [String: JSONValue]? {
        guard let member = verbatimMember else { return data }
        guard let value = try? JSONValue.parse(member.json) else { return nil }
        var complete = data ?? [:]
        complete[member.name] = value
        return complete
    }
    /// Set by an engine that hands out a secret with a lease (a database user): the core registers
    /// the lease and fills in ``leaseID``, ``leaseDuration`` and ``renewable``. Never on the wire.
    package var secret: SecretLease? {
        get { rareBox?.value.secret }
        set { rare.secret = newValue }
    }
    /// When this answer is response-wrapped, the accessor `wrap_info.wrapped_accessor` names: the
    /// token's for a login or token creation (set by the core), an AppRole secret ID's accessor
    /// (set by the method). Never on the wire otherwise.
    package var wrappedAccessor: String? {
        get { rareBox?.value.wrappedAccessor }
        set { rare.wrappedAccessor = newValue }
    }
    /// Set on a wrapped answer: the wrapping token and what it wraps (the body's `wrap_info`).
    public var wrapInfo: WrapInfo? {
        get { rareBox?.value.wrapInfo }
        set { rare.wrapInfo = newValue }
    }

    public init(
        data: [String: JSONValue]? = nil,
        auth: AuthInfo? = nil,
        warnings: [String] = [],
        mountType: String = ""
    ) {
        self.outcome = (data == nil && auth == nil && warnings.isEmpty) ? .noContent : .ok
        self.data = data
        self.warnings = warnings
        self.leaseID = ""
        self.leaseDuration = 0
        self.renewable = false
        self.mountType = mountType
        self.rareBox = auth.map { RareBox(Rare(auth: $0)) }
    }

    /// A 200 whose body is `bytes` as they are (not JSON), of `contentType`.
    public static func rawBody(_ bytes: [UInt8], contentType: String) -> Response {
        var r = Response(data: [:])
        r.body = (contentType, bytes)
        return r
    }

    /// Nothing found, with `data` saying why (sent as the body, as Vault does for a deleted version).
    public init(notFound data: [String: JSONValue]) {
        self.init(data: data)
        outcome = .notFound
    }

    /// A response sent as-is without the envelope.
    public static func raw(_ body: JSONValue, status: Int = 200) -> Response {
        var r = Response(data: [:])
        r.raw = body
        r.rawStatus = status
        return r
    }

    /// An empty success (HTTP 204).
    public static let noContent = Response()

    /// Accepted, to be done in the background (HTTP 202, no body): an asynchronous lease revocation.
    public static let accepted: Response = {
        var r = Response()
        r.outcome = .status(202)
        return r
    }()

    /// Nothing found (HTTP 404).
    public static let notFound: Response = {
        var r = Response()
        r.outcome = .notFound
        return r
    }()

    /// The status the Vault API gives this answer (HTTP's numbers: both transports send it and the
    /// audit log records it).
    public var status: Int {
        if raw != nil { return rawStatus }
        switch outcome {
        case .ok: return 200
        case .noContent: return 204
        case .notFound: return 404
        case .status(let code): return code
        }
    }

    /// Whether the answer has a JSON envelope: not for no content, nor for a not-found or error
    /// status that carries no data, auth or warnings.
    var hasEnvelope: Bool {
        outcome != .noContent && (outcome == .ok || data != nil || auth != nil || !warnings.isEmpty)
    }

    /// The wire body for a request id, or nil when there is none (no content; not found without data).
    public func body(requestID: String) -> JSONValue? {
        if let raw { return raw }
        guard hasEnvelope else { return nil }
        var envelope: [String: JSONValue] = [
            "request_id": .string(wrapInfo == nil ? requestID : ""), "lease_id": .string(leaseID),
            "renewable": .bool(renewable),
            "lease_duration": .int(leaseDuration), "data": completeData.map { .object($0) } ?? .null,
            "wrap_info": wrapInfo?.json ?? .null,
            "warnings": warnings.isEmpty ? .null : .array(warnings.map { .string($0) }), "auth": auth?.json ?? .null,
        ]
        if repeatDataAtTopLevel, let data {
            for (key, value) in data where envelope[key] == nil { envelope[key] = value }
        }
        return .object(envelope)
    }
}

extension Response {
    /// The wire body as OpenBao writes it: the envelope's keys in Go's struct order (`request_id`,
    /// `lease_id`, `renewable`, `lease_duration`, `data`, `wrap_info`, `warnings`, `auth`) and the
    /// `auth` block's and `wrap_info`'s in theirs (clients that print them keep the order); inside
    /// `data`, keys are sorted, as Go writes maps. nil when there is no body.
    public func wireBody(requestID: String) -> [UInt8]? {
        guard raw == nil else { return raw!.serialized() }
        guard hasEnvelope else { return nil }
        // Written field by field, without building the envelope as a dictionary first (the same
        // bytes as `body(requestID:)` serialized in this order).
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(256)
        // Sys endpoints that repeat `data` at the top level put those keys first, as OpenBao does.
        if repeatDataAtTopLevel, let data {
            for name in data.keys.sorted() where !Self.envelopeKeys.contains(name) {
                JSONValue.writeString(name, to: &out)
                out.append(UInt8(ascii: ":"))
                data[name]!.write(to: &out)
                out.append(UInt8(ascii: ","))
            }
        }
        out.append(contentsOf: #""request_id":"#.utf8)
        JSONValue.writeString(wrapInfo == nil ? requestID : "", to: &out)
        out.append(contentsOf: #","lease_id":"#.utf8)
        JSONValue.writeString(leaseID, to: &out)
        out.append(contentsOf: (renewable ? #","renewable":true"# : #","renewable":false"#).utf8)
        out.append(contentsOf: #","lease_duration":"#.utf8)
        out.append(contentsOf: String(leaseDuration).utf8)
        out.append(contentsOf: #","data":"#.utf8)
        if let data {
            if let member = verbatimMember {
                JSONValue.writeObject(data, with: member, to: &out)
            } else {
                JSONValue.object(data).write(to: &out)
            }
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(contentsOf: #","wrap_info":"#.utf8)
        if let wrapInfo {
            Response.writeOrdered(wrapInfo.json, WrapInfo.wireOrder, to: &out)
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(contentsOf: #","warnings":"#.utf8)
        if warnings.isEmpty {
            out.append(contentsOf: "null".utf8)
        } else {
            JSONValue.array(warnings.map { .string($0) }).write(to: &out)
        }
        out.append(contentsOf: #","auth":"#.utf8)
        if let auth {
            Response.writeOrdered(auth.json, AuthInfo.wireOrder, to: &out)
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// The envelope's keys, in Go's struct order.
    static let envelopeKeys: Set<String> = [
        "request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth",
    ]

    static func writeOrdered(_ value: JSONValue, _ order: [String], to out: inout [UInt8]) {
        guard case .object(let object) = value else { return value.write(to: &out) }
        out.append(UInt8(ascii: "{"))
        var first = true
        for name in order + object.keys.sorted().filter({ !order.contains($0) }) {
            guard let v = object[name] else { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSONValue.writeString(name, to: &out)
            out.append(UInt8(ascii: ":"))
            v.write(to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }
}

extension AuthInfo {
    /// The `auth` block's keys in the order OpenBao writes them.
    static let wireOrder = [
        "client_token", "accessor", "policies", "token_policies", "identity_policies", "metadata", "lease_duration",
        "renewable", "entity_id", "token_type", "orphan", "mfa_requirement", "num_uses",
    ]
}

extension WrapInfo {
    static let wireOrder = ["token", "accessor", "ttl", "creation_time", "creation_path", "wrapped_accessor"]
}

/// The `wrap_info` of a wrapped answer.
public struct WrapInfo: Sendable, Equatable {
    public var token: String
    public var accessor: String
    public var ttl: Int64
    public var creationTime: Timestamp
    public var creationPath: String
    /// The accessor of the wrapped token (or AppRole secret ID); nil when the answer wraps neither.
    public var wrappedAccessor: String?

    package init(
        token: String,
        accessor: String,
        ttl: Int64,
        creationTime: Timestamp,
        creationPath: String,
        wrappedAccessor: String?
    ) {
        self.token = token
        self.accessor = accessor
        self.ttl = ttl
        self.creationTime = creationTime
        self.creationPath = creationPath
        self.wrappedAccessor = wrappedAccessor
    }

    public var json: JSONValue {
        var out: [String: JSONValue] = [
            "token": .string(token), "accessor": .string(accessor), "ttl": .int(ttl),
            "creation_time": .string(creationTime.rfc3339), "creation_path": .string(creationPath),
        ]
        if let wrappedAccessor { out["wrapped_accessor"] = .string(wrappedAccessor) }
        return .object(out)
    }
}

/// What an engine asks of the lease manager for a secret it hands out: which of its secret types
/// this is, what its revoke and renew hooks need later (kept in the barrier with the lease, never
/// sent to the client), and the TTLs its role asks for (0: the mount's default, else the system's).
package struct SecretLease: Sendable {
    package var type: String
    package var internalData: [String: JSONValue]
    package var ttl: Int64
    package var maxTTL: Int64
    package var renewable: Bool

    package init(type: String, internalData: [String: JSONValue], ttl: Int64, maxTTL: Int64, renewable: Bool = true) {
        self.type = type
        self.internalData = internalData
        self.ttl = ttl
        self.maxTTL = maxTTL
        self.renewable = renewable
    }
}
