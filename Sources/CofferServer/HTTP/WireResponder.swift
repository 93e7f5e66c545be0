import Coffer
import CofferCore
import CofferServerCore
import Logging
import NIOCore
import NIOHTTP1

/// One request as the engine (or, in a cluster, the active node) sees it: the method and `/v1/`
/// target after the REST alias, the client's headers (`X-Vault-Token`, `X-Vault-Namespace`,
/// `X-Vault-Wrap-TTL`, `Authorization`, ...) and the whole body.
struct WireRequest: Sendable {
    var method: String
    var target: String
    var headers: [HTTPFraming.Field]
    var body: [UInt8]
    var clientAddress: String
}

/// Turns an HTTP request into a call of `Core.handleWire` and its answer into an HTTP response.
///
/// Everything about paths, operations, JSON envelopes and errors is the core's; this type only
/// does what is HTTP: the `/v1/` prefix, which header carries the token, the body size cap, HEAD,
/// the PATCH content type, and the response headers OpenBao sends. It is synchronous:
/// ``WireHandler`` (WireHandler.swift) decides on which thread each step runs.
///
/// Where the core runs: `handleWire` is synchronous. Reads take microseconds (memory, the read
/// cache, SQLite's page cache), so they run on the connection's NIO event loop; a hop to another
/// thread would cost more than the work. Writes to SQLite end in an fsync (milliseconds), so with
/// SQLite storage the methods that write run on NIO's blocking thread pool (``offloads(_:)``),
/// keeping the event loops free for reads. A request the engine says belongs to the active node
/// (`WireResult.forward`, a standby in a cluster) goes to ``forwardToActive(_:)`` on the thread
/// pool too.
struct WireResponder: Sendable {
    let vault: Vault
    let maxRequestSize: Int
    let offloadWrites: Bool
    /// `telemetry { unauthenticated_metrics_access = true }` on the listener: sys/metrics without a token.
    var unauthenticatedMetrics = false
    let logger: Logger

    // Request header names, lowercase (they are looked up ASCII case-insensitively).
    static let token = "x-vault-token"
    static let namespace = "x-vault-namespace"
    static let wrapTTL = "x-vault-wrap-ttl"
    static let index = "x-vault-index"
    static let inconsistent = "x-vault-inconsistent"
    static let consistency = "x-coffer-consistency"
    static let forwardedBy = RaftCluster.forwardedHeader.lowercased()

    /// What an answer is: status, body (nil: none), whether to close the connection afterwards, the
    /// body's type when not JSON, and extra headers.
    typealias Answer = (Int, [UInt8]?, Bool, String?, [(String, String)])

    /// What can be told from the head alone: an answer that needs no body (a wrong path, HEAD where
    /// only health answers it, a PATCH of the wrong type, a declared body over the cap), or nil.
    func check(_ head: HTTPFraming.Head) -> Answer? {
        let target = head.target
        guard target.hasPrefix("/v1/") || RestAlias.handles(target) else {
            return (404, Array(#"{"errors":[]}"#.utf8), false, nil, [])
        }
        if head.method == "HEAD", !target.hasPrefix("/v1/sys/health"), !target.hasPrefix("/health") {
            return (405, Array(#"{"errors":[]}"#.utf8), false, nil, [])
        }
        if head.method == "PATCH" {
            let type = head.fields["content-type"] ?? ""
            let mediaType = type.split(separator: ";").first.map { $0.trimmingCharacters(in: " ") } ?? ""
            if mediaType.lowercased() != "application/merge-patch+json" {
                return Self.error(415, "PATCH requires Content-Type of application/merge-patch+json, provided \(type)")
            }
        }
        // A larger body is refused without reading it (and the connection closed, since the rest of
        // it is still on the wire), as OpenBao does.
        if case .length(let length) = head.body, length > maxRequestSize {
            return Self.tooLarge
        }
        return nil
    }

    /// Where a request whose head passed ``check(_:)`` and whose body arrived goes.
    enum Routed {
        /// Answered without the engine (the REST alias refused it, unauthenticated metrics, ...).
        case answer(Answer)
        /// To `handleWire`: on the event loop, or on the thread pool when `offload` is true.
        case engine(WireRequest, offload: Bool)
        /// Straight to the cluster's active node (``forwardToActive(_:)``, on the thread pool).
        case forward(WireRequest)
    }

    func route(_ head: HTTPFraming.Head, body: [UInt8], clientAddress: String) -> Routed {
        var (method, target, body) = (head.method, head.target, body)
        // The seeds' REST contract (RestAlias.swift) becomes a /v1/ request here, or is refused.
        if !target.hasPrefix("/v1/") {
            switch RestAlias.map(method: method, target: target, body: body) {
            case .forward(let m, let t, let b): (method, target, body) = (m, t, b)
            case .refuse(let status, let message): return .answer(Self.error(status, message))
            }
        }
        if unauthenticatedMetrics, method == "GET", target == "/v1/sys/metrics" || target.hasPrefix("/v1/sys/metrics?")
        {
            let result = vault.unauthenticatedMetricsWire(target: target)
            return .answer((result.status, result.body, false, result.contentType, result.headers))
        }
        if target.hasPrefix("/v1/sys/events/subscribe/") {
            // EventsWebSocket.swift serves it when it is a connection's first request and an upgrade.
            return .answer(
                Self.error(
                    400,
                    "sys/events/subscribe is a WebSocket: connect with a WebSocket client (Upgrade: websocket) "
                        + "on a new connection, with ?json=true"
                )
            )
        }
        let request = WireRequest(
            method: method,
            target: target,
            headers: head.fields,
            body: body,
            clientAddress: clientAddress
        )
        var offload = offloadWrites && head.method != "GET" && head.method != "HEAD" && method != "LIST"
        if let cluster = vault.cluster {
            // X-Vault-Index: a standby behind the index a client saw answers 429, or sends the request on
            // when the client asks so (and it was not itself forwarded here).
            if ClusterConsistency.check(cluster, requested: head.fields[Self.index]) == .behind {
                if head.fields[Self.inconsistent] == "forward-active-node",
                    head.fields[Self.forwardedBy] == nil
                {
                    return .forward(request)
                }
                return .answer((429, Array(#"{"errors":[]}"#.utf8), false, nil, [("Retry-After", "1")]))
            }
            // A linearizable read waits for a ReadIndex round (milliseconds): on the thread pool.
            if head.fields[Self.consistency] == "linearizable" { offload = true }
        }
        return .engine(request, offload: offload)
    }

    /// The engine's answer; nil when the engine says the active node must answer (`forward`), in
    /// which case the caller hands the request to ``forwardToActive(_:)`` on the thread pool.
    func engine(_ request: WireRequest) -> Answer? {
        let cluster = vault.cluster
        if let cluster, request.headers[Self.consistency] == "linearizable" {
            // `route` sent this request to the thread pool: a ReadIndex round first (docs/raft.md).
            do {
                try cluster.readBarrier()
            } catch {
                return Self.error(error.code.httpStatus, error.message)
            }
        }
        // X-Vault-Token wins; otherwise `Authorization: Bearer <token>` (the scheme is case-sensitive, as in OpenBao).
        var token = request.headers[Self.token]
        if token == nil, let authorization = request.headers["authorization"], authorization.hasPrefix("Bearer ") {
            token = String(authorization.dropFirst("Bearer ".count))
        }
        let result = vault.handleWire(
            method: request.method,
            path: request.target,
            token: token,
            body: request.body,
            namespace: request.headers[Self.namespace] ?? "",
            clientAddress: request.clientAddress,
            wrapTTL: request.headers[Self.wrapTTL]
        )
        if result.forward {
            // A request another node forwarded here is answered or refused, never sent on.
            guard let sender = request.headers[Self.forwardedBy] else { return nil }
            return (503, RaftCluster.notActiveAnswer(from: sender), false, nil, [("Retry-After", "1")])
        }
        var extra = result.headers
        if let cluster, let index = ClusterConsistency.header(cluster, path: request.target) {
            extra.append(("X-Vault-Index", index))
        }
        return (result.status, result.body, false, result.contentType, extra)
    }

    /// Blocking (runs on NIO's thread pool): the engine first when `engine` is true, then, if it
    /// says so, the active node.
    func blockingAnswer(_ request: WireRequest, engine: Bool) -> Answer {
        if engine, let answer = self.engine(request) { return answer }
        return forwardToActive(request)
    }

    /// Headers the active node needs of a forwarded request: the token, namespace, wrapping, content
    /// type, and what the client asked of consistency. Hop-by-hop headers and the client's Host stay behind.
    static let carried = [
        "X-Vault-Token", "X-Vault-Namespace", "X-Vault-Wrap-TTL", "X-Vault-Request", "X-Vault-Index",
        "X-Coffer-Consistency", "Authorization", "Content-Type",
    ]

    /// A request this node (a standby) must not answer, sent whole to the cluster's active node
    /// (docs/raft.md, "Active node and standbys"), whose status, headers and body become the answer.
    /// Runs on NIO's thread pool: it blocks for the exchange.
    func forwardToActive(_ request: WireRequest) -> Answer {
        guard let cluster = vault.cluster else { return Self.error(500, "this node is not in a cluster") }
        let headers = Self.carried.compactMap { name in request.headers[name.lowercased()].map { (name, $0) } }
        let answer = cluster.forward(
            method: request.method,
            target: request.target,
            headers: headers,
            body: request.body
        )
        let contentType = answer.headers.first { $0.0 == "content-type" }?.1
        let json = contentType == nil || contentType?.hasPrefix("application/json") == true
        var body: [UInt8]? = answer.body.isEmpty ? nil : answer.body
        // The active node's JSON body ends with the newline Go's encoder writes; `response` adds one.
        if json, body?.last == 10 { body?.removeLast() }
        return (answer.status, body, false, json ? nil : contentType, answer.headers.filter { $0.0 != "content-type" })
    }

    /// An answer as the bytes of its response: the status line, OpenBao's headers (`Content-Type`,
    /// `Cache-Control: no-store`, `Strict-Transport-Security`), the answer's own (a quota's
    /// `Retry-After`, `X-Vault-Index`, ...), `Connection: close` when the connection ends after it,
    /// `Content-Length`, and the body: JSON ends with the newline Go's encoder writes; raw bodies go
    /// as they are; HEAD gets the headers GET would, without the body.
    static func encode(_ answer: Answer, isHead: Bool, close: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let (status, body, _, contentType, extra) = answer
        let length = body.map { $0.count + (contentType == nil ? 1 : 0) }
        var out = allocator.buffer(capacity: 192 + (isHead ? 0 : length ?? 0))
        out.writeBytes((100..<600).contains(status) ? statusLines[status - 100] : statusLines[500 - 100])
        out.writeStaticString("Content-Type: ")
        if let contentType { writeFieldValue(contentType, to: &out) } else { out.writeStaticString("application/json") }
        out.writeStaticString(
            "\r\nCache-Control: no-store\r\nStrict-Transport-Security: max-age=31536000; includeSubDomains\r\n"
        )
        if close { out.writeStaticString("Connection: close\r\n") }
        for (name, value) in extra where isExtraName(name) {
            out.writeString(name)
            out.writeStaticString(": ")
            writeFieldValue(value, to: &out)
            out.writeStaticString("\r\n")
        }
        // 1xx, 204 and 304 never carry a body, nor a length.
        let bodiless = status < 200 || status == 204 || status == 304
        if !bodiless {
            out.writeStaticString("Content-Length: ")
            out.writeString(String(length ?? 0))  // a small string: no allocation
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
        if let body, !isHead, !bodiless {
            out.writeBytes(body)
            if contentType == nil { out.writeInteger(UInt8(ascii: "\n")) }
        }
        return out
    }

    /// `HTTP/1.1 <code> <reason>\r\n` for every code from 100 to 599.
    static let statusLines: [[UInt8]] = (100..<600).map {
        Array("HTTP/1.1 \($0) \(HTTPResponseStatus(statusCode: $0).reasonPhrase)\r\n".utf8)
    }

    /// A header name of an answer's own: a token, and not one the encoder writes itself.
    static func isExtraName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.allSatisfy(HTTPFraming.isTokenByte) else { return false }
        switch name.lowercased() {
        case "content-type", "content-length", "transfer-encoding", "connection", "cache-control",
            "strict-transport-security":
            return false
        default:
            return true
        }
    }

    /// A field value, with any control character (a CR or LF would end the field) written as a space.
    static func writeFieldValue(_ value: String, to out: inout ByteBuffer) {
        if value.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == 0x09 }) {
            out.writeString(value)
            return
        }
        for byte in value.utf8 {
            out.writeInteger(byte >= 0x20 && byte != 0x7F || byte == 0x09 ? byte : UInt8(ascii: " "))
        }
    }

    static let tooLarge: Answer = (413, Array(#"{"errors":["http: request body too large"]}"#.utf8), true, nil, [])

    static func error(_ status: Int, _ message: String) -> Answer {
        (status, JSONValue.object(["errors": [.string(message)]]).serialized(), false, nil, [])
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Character) -> Substring {
        var s = self
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return s
    }
}
