import Coffer
import CofferCore
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix

/// Turns an HTTP request into a call of `Core.handleWire` and its answer into an HTTP response.
///
/// Everything about paths, operations, JSON envelopes and errors is the core's; this type only
/// does what is HTTP: the `/v1/` prefix, which header carries the token, the body size cap, HEAD,
/// the PATCH content type, and the response headers OpenBao sends.
///
/// Where the core runs: `handleWire` is synchronous. Reads take microseconds (memory, SQLite page
/// cache), so they run inline on the task that serves the connection (on Swift's cooperative
/// pool, not on a NIO event loop); a hop to another thread would cost more than the work. Writes
/// to SQLite end in an fsync (milliseconds), so with SQLite storage the methods that write go to
/// NIO's blocking thread pool, keeping the cooperative threads free for reads.
struct WireResponder: Sendable {
    let vault: Vault
    let maxRequestSize: Int
    let offloadWrites: Bool
    /// `telemetry { unauthenticated_metrics_access = true }` on the listener: sys/metrics without a token.
    var unauthenticatedMetrics = false
    let logger: Logger

    static let token = HTTPField.Name("X-Vault-Token")!
    static let namespace = HTTPField.Name("X-Vault-Namespace")!
    static let wrapTTL = HTTPField.Name("X-Vault-Wrap-TTL")!
    static let hsts = HTTPField.Name("Strict-Transport-Security")!
    static let index = HTTPField.Name("X-Vault-Index")!
    static let inconsistent = HTTPField.Name("X-Vault-Inconsistent")!
    static let consistency = HTTPField.Name("X-Coffer-Consistency")!
    static let forwardedBy = HTTPField.Name(RaftCluster.forwardedHeader)!

    func respond(
        _ request: HummingbirdCore.Request,
        _ writer: consuming ResponseWriter,
        _ channel: any Channel
    ) async throws {
        let started = ContinuousClock.now
        let method = request.method.rawValue
        let target = request.head.path ?? "/"
        let (status, body, close, contentType, extra) = await answer(
            request,
            method: method,
            target: target,
            channel: channel
        )

        var headers: HTTPFields = [.contentType: contentType ?? "application/json", .cacheControl: "no-store"]
        headers[Self.hsts] = "max-age=31536000; includeSubDomains"
        if close { headers[.connection] = "close" }
        // A quota's Retry-After and X-Ratelimit-* (Quota/); the names are fixed ASCII, always valid.
        for (name, value) in extra { if let field = HTTPField.Name(name) { headers[field] = value } }
        let head = HTTPResponse(status: .init(code: status), headerFields: headers)
        if let body, request.method != .head {
            var buffer = channel.allocator.buffer(capacity: body.count + 1)
            buffer.writeBytes(body)
            // Go's json.Encoder ends every JSON body with a newline; raw bodies go as they are.
            if contentType == nil { buffer.writeInteger(UInt8(ascii: "\n")) }
            var withLength = head
            withLength.headerFields[.contentLength] = String(buffer.readableBytes)
            try await writer.write(response: withLength, body: ResponseBody(byteBuffer: buffer))
        } else {
            try await writer.writeResponse(head)
        }
        if close {
            // Stop reading: the rest of an oversized body is not drained, and the connection ends
            // once the response is out.
            try? await channel.close(mode: .input)
        }
        if logger.logLevel <= .debug {
            // The path without its query (which can hold a token, as in auth/token/lookup?token=).
            let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
            let elapsed = (ContinuousClock.now - started).components
            let micros = elapsed.seconds * 1_000_000 + elapsed.attoseconds / 1_000_000_000_000
            logger.debug(
                "request",
                metadata: ["method": "\(method)", "path": "\(path)", "status": "\(status)", "us": "\(micros)"]
            )
        }
    }

    /// What ``answer(_:method:target:channel:)`` gives: status, body (nil: none), whether to close the
    /// connection afterwards, the body's type when not JSON, and extra headers.
    typealias Answer = (Int, [UInt8]?, Bool, String?, [(String, String)])

    /// Status, body (nil: none) and whether to close the connection afterwards.
    func answer(
        _ request: HummingbirdCore.Request,
        method: String,
        target: String,
        channel: any Channel
    ) async -> Answer {
        guard target.hasPrefix("/v1/") || RestAlias.handles(target) else {
            return (404, Array(#"{"errors":[]}"#.utf8), false, nil, [])
        }
        if request.method == .head, !target.hasPrefix("/v1/sys/health"), !target.hasPrefix("/health") {
            return (405, Array(#"{"errors":[]}"#.utf8), false, nil, [])
        }
        if request.method == .patch {
            let type = request.headers[.contentType] ?? ""
            let mediaType = type.split(separator: ";").first.map { $0.trimmingCharacters(in: " ") } ?? ""
            if mediaType.lowercased() != "application/merge-patch+json" {
                return Self.error(415, "PATCH requires Content-Type of application/merge-patch+json, provided \(type)")
            }
        }

        // The body, up to the cap. A larger body is refused without reading it all (and the
        // connection closed, since the rest of it is still on the wire), as OpenBao does.
        var body: [UInt8] = []
        if let length = request.headers[.contentLength].flatMap({ Int($0) }) {
            if length > maxRequestSize { return Self.tooLarge }
            body.reserveCapacity(length)
        }
        do {
            for try await chunk in request.body {
                if body.count + chunk.readableBytes > maxRequestSize { return Self.tooLarge }
                body.append(contentsOf: chunk.readableBytesView)
            }
        } catch {
            return Self.error(400, "failed to read the request body")
        }

        // X-Vault-Token wins; otherwise `Authorization: Bearer <token>` (the scheme is case-sensitive, as in OpenBao).
        var token = request.headers[Self.token]
        if token == nil, let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer ") {
            token = String(authorization.dropFirst("Bearer ".count))
        }
        let namespace = request.headers[Self.namespace] ?? ""
        // The seeds' REST contract (RestAlias.swift) becomes a /v1/ request here, or is refused.
        var (method, target) = (method, target)
        if !target.hasPrefix("/v1/") {
            switch RestAlias.map(method: method, target: target, body: body) {
            case .forward(let m, let t, let b): (method, target, body) = (m, t, b)
            case .refuse(let status, let message): return Self.error(status, message)
            }
        }
        if unauthenticatedMetrics, method == "GET", target == "/v1/sys/metrics" || target.hasPrefix("/v1/sys/metrics?")
        {
            let result = vault.unauthenticatedMetricsWire(target: target)
            return (result.status, result.body, false, result.contentType, result.headers)
        }
        if target.hasPrefix("/v1/sys/events/subscribe/") {
            // EventsWebSocket.swift serves it when it is a connection's first request and an upgrade.
            return Self.error(
                400,
                "sys/events/subscribe is a WebSocket: connect with a WebSocket client (Upgrade: websocket) "
                    + "on a new connection, with ?json=true"
            )
        }
        let wrapTTL = request.headers[Self.wrapTTL]
        let client = channel.remoteAddress?.ipAddress ?? ""
        let vault = self.vault
        let forwarded = ForwardedRequest(method: method, target: target, headers: request.headers, body: body)
        if let cluster = vault.cluster {
            // X-Vault-Index: a standby behind the index a client saw answers 429 or sends the request on.
            switch ClusterConsistency.check(cluster, requested: request.headers[Self.index]) {
            case .serve: break
            case .behind:
                if request.headers[Self.inconsistent] != "forward-active-node"
                    || request.headers[Self.forwardedBy] != nil
                {
                    return (429, Array(#"{"errors":[]}"#.utf8), false, nil, [("Retry-After", "1")])
                }
                return await forwarded.send(through: cluster)
            }
            // X-Coffer-Consistency: linearizable: a ReadIndex round first, so that the read reflects every
            // write acknowledged before it began, on any node (docs/raft.md, "Guarantees").
            if request.headers[Self.consistency] == "linearizable" {
                do {
                    try await NIOThreadPool.singleton.runIfActive { try cluster.readBarrier() }
                } catch let error as CofferError {
                    return Self.error(error.code.httpStatus, error.message)
                } catch {
                    return Self.error(503, "the server is shutting down")
                }
            }
        }
        let result: WireResult
        if offloadWrites, request.method != .get, request.method != .head, method != "LIST" {
            do {
                result = try await NIOThreadPool.singleton.runIfActive { [body, token, method, target] in
                    vault.handleWire(
                        method: method,
                        path: target,
                        token: token,
                        body: body,
                        namespace: namespace,
                        clientAddress: client,
                        wrapTTL: wrapTTL
                    )
                }
            } catch {
                return Self.error(503, "the server is shutting down")
            }
        } else {
            result = vault.handleWire(
                method: method,
                path: target,
                token: token,
                body: body,
                namespace: namespace,
                clientAddress: client,
                wrapTTL: wrapTTL
            )
        }
        if result.forward, let cluster = vault.cluster {
            if let sender = request.headers[Self.forwardedBy] {
                return (503, RaftCluster.notActiveAnswer(from: sender), false, nil, [("Retry-After", "1")])
            }
            return await forwarded.send(through: cluster)
        }
        var extra = result.headers
        if let cluster = vault.cluster, let index = ClusterConsistency.header(cluster, path: target) {
            extra.append(("X-Vault-Index", index))
        }
        return (result.status, result.body, false, result.contentType, extra)
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
