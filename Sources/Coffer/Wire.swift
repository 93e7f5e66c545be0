package import CofferCore
package import CofferFramework
package import CofferVault

/// The wire form shared by the HTTP server and the C ABI: a method, a path with an optional query,
/// a token and a JSON body in; a status and a JSON body out. Both transports call
/// ``Vault/handleWire(method:path:token:body:namespace:clientAddress:)``, so they cannot drift
/// apart; the core below knows nothing of methods, query strings or status codes.
package struct WireResult: Sendable {
    /// The status Vault's API gives the answer (HTTP's numbers).
    package var status: Int
    /// The JSON body, or nil (204, or a 404 that says nothing).
    package var body: [UInt8]?
    /// The error the body was made from: a caller that reports a typed status (the C ABI) takes
    /// its code from here, not from the number.
    package var error: CofferError?
    /// What the request came to, when it did not fail: `.notFound` for a missing secret.
    package var outcome: Response.Outcome?
    /// The body's type when it is not JSON (a certificate, a CRL); nil for JSON.
    package var contentType: String?
    /// Headers to send with the answer: a quota's `Retry-After` and `X-Ratelimit-*` (Quota/).
    package var headers: [(String, String)] = []
    /// In a cluster, this node is a standby and the request must be answered by the active node:
    /// the HTTP layer sends it there (ClusterForwarding.swift) and returns that node's answer.
    package var forward = false
}

extension Vault {
    /// Handles a request given in wire form. Never throws: errors become `{"errors": [...]}` with
    /// the status of their code; the message never holds a secret.
    package func handleWire(
        method: String,
        path: String,
        token: String?,
        body: [UInt8],
        namespace: String = "",
        clientAddress: String = "",
        wrapTTL: String? = nil
    ) -> WireResult {
        if let cluster {
            if let answer = cluster.answerWhileJoining(method: method, path: path, body: body) { return answer }
            if core.isStandby, !core.isSealed, !Wire.servedByEveryNode(method: method, path: path) {
                return WireResult(status: 0, body: nil, forward: true)
            }
        }
        var body = body
        if Wire.isSnapshotRestore(method: method, path: path) {
            // The snapshot file is the body, as the CLI sends it: into the request's data as base64.
            body = JSONValue.object(["snapshot": .string(Base64.encode(body))]).serialized()
        }
        var result = Wire.handle(
            core,
            method: method,
            path: path,
            token: token,
            body: body,
            namespace: namespace,
            clientAddress: clientAddress,
            wrapTTL: wrapTTL
        )
        // A read that wanted to write on a standby (a token's use count, a lease): the active node answers.
        if cluster != nil, let error = result.error, RaftCluster.isStandbyWrite(error) {
            result.forward = true
        }
        return result
    }
}

extension Wire {
    /// ``Vault/handleWire(method:path:token:body:namespace:clientAddress:)`` on a core.
    package static func handle(
        _ core: Core,
        method: String,
        path: String,
        token: String?,
        body: [UInt8],
        namespace: String = "",
        clientAddress: String = "",
        wrapTTL: String? = nil
    ) -> WireResult {
        let requestID = Random.requestID()
        var quota: QuotaOutcome?
        do {
            var request = try parse(method: method, path: path, token: token, body: body, id: requestID)
            request.namespace = namespace
            request.clientAddress = clientAddress
            request.writesAnswerAsJSON = true
            if let wrapTTL { request.wrapTTL = try parseWrapTTL(wrapTTL) }
            let response = try core.handle(request, quota: &quota)
            if let raw = response.body {
                return WireResult(
                    status: 200,
                    body: raw.bytes,
                    outcome: response.outcome,
                    contentType: raw.contentType,
                    headers: quota?.headers ?? []
                )
            }
            // Every 404 is JSON: the CLI and hvac read `errors` whatever the path.
            let body =
                response.wireBody(requestID: requestID)
                ?? (response.outcome == .notFound ? Array(#"{"errors":[]}"#.utf8) : nil)
            return WireResult(
                status: response.status,
                body: body,
                outcome: response.outcome,
                headers: quota?.headers ?? []
            )
        } catch {
            let (status, body) = errorBody(error)
            return WireResult(status: status, body: body, error: error, headers: quota?.headers ?? [])
        }
    }
}

/// Parsing a request from its wire form, and the error body.
package enum Wire {
    /// `{"errors":[message]}` with the HTTP status of the error's code.
    package static func errorBody(_ error: CofferError) -> (status: Int, body: [UInt8]) {
        (error.code.httpStatus, JSONValue.object(["errors": [.string(error.message)]]).serialized())
    }

    /// Maps an HTTP method name to an operation: GET, PUT, POST, PATCH, DELETE, LIST. PUT and POST
    /// both map to `update`; the core turns it into `create` when nothing exists yet.
    /// The method's case does not matter (the C ABI's callers may write `get`).
    package static func operation(forMethod method: String, listQuery: Bool = false) -> Request.Operation? {
        switch method {
        case "GET", "HEAD": return listQuery ? .list : .read
        case "PUT", "POST": return .update
        case "PATCH": return .patch
        case "DELETE": return .delete
        case "LIST": return .list
        default:
            let upper = method.uppercased()
            return upper == method ? nil : operation(forMethod: upper, listQuery: listQuery)
        }
    }

    /// Splits the query off `path` and builds the request: query parameters become data for reads
    /// and lists, the JSON body (an object) for writes.
    package static func parse(
        method: String,
        path: String,
        token: String?,
        body: [UInt8],
        id: String
    ) throws(CofferError) -> Request {
        // The path is searched as bytes: Character by Character, finding the `?` alone cost more
        // than a whole request's HTTP parsing.
        var path = path
        var query: [String: JSONValue] = [:]
        if let mark = path.utf8.firstIndex(of: UInt8(ascii: "?")) {
            for pair in path[path.utf8.index(after: mark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = percentDecode(String(parts[0]))
                let value = parts.count > 1 ? percentDecode(String(parts[1])) : ""
                if !key.isEmpty { query[key] = .string(value) }
            }
            path = String(path[..<mark])
        }
        // Leading slashes, then `v1/`.
        let bytes = path.utf8
        var start = bytes.startIndex
        while start < bytes.endIndex, bytes[start] == UInt8(ascii: "/") { start = bytes.index(after: start) }
        if bytes[start...].starts(with: "v1/".utf8) { start = bytes.index(start, offsetBy: 3) }
        if start != bytes.startIndex { path = String(path[start...]) }
        var listQuery = false
        if let flag = query["list"]?.stringValue, !flag.isEmpty, ["GET", "HEAD"].contains(method.uppercased()) {
            // Go's strconv.ParseBool, as Vault parses it (hvac sends "True").
            guard let list = Field.parseBool(flag) else {
                throw CofferError.invalid(
                    "the list query parameter must be true or false (1, t, T, TRUE, true, True or their false forms)"
                )
            }
            listQuery = list
        }
        guard let operation = operation(forMethod: method, listQuery: listQuery) else {
            throw CofferError(
                .unsupportedOperation,
                "unsupported method \(method); use GET, PUT, POST, PATCH, DELETE or LIST"
            )
        }
        var data = query
        data.removeValue(forKey: "list")
        if !body.isEmpty, operation != .read, operation != .list || !body.allSatisfy({ $0 == 0x20 || $0 == 0x0A }) {
            let parsed: JSONValue
            do {
                parsed = try JSONValue.parse(body)
            } catch {
                throw CofferError.invalid("failed to parse JSON input: \(error)")
            }
            switch parsed {
            case .object(let object): for (k, v) in object { data[k] = v }
            case .null: break
            default:
                throw CofferError.invalid(
                    "failed to parse JSON input: the body must be a JSON object, not \(parsed.typeName)"
                )
            }
        }
        return Request(operation, path, data: data, token: token, id: id)
    }

    /// `X-Vault-Wrap-TTL`: seconds or a Go duration ("2m0s"); "0" means no wrapping.
    package static func parseWrapTTL(_ text: String) throws(CofferError) -> Int64 {
        guard let seconds = VaultDuration.parse(text.trimmingSpaces()) else {
            let shown = text.utf8.count <= 64 ? text : String(text.prefix(64)) + "…"
            throw CofferError.invalid("error parsing X-Vault-Wrap-TTL header: time: invalid duration \"\(shown)\"")
        }
        return seconds
    }

    static func percentDecode(_ text: String) -> String {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.first {
            bytes = bytes.dropFirst()
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%"), bytes.count >= 2,
                let v = Hex.decode(String(decoding: bytes.prefix(2), as: UTF8.self))
            {
                out.append(v[0])
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Wire {
    /// Paths every node of a cluster answers about itself (health, seal state, its own metrics,
    /// joining); a standby sends the rest of what is not a read to the active node.
    static let nodeLocalPaths: Set<String> = [
        "sys/health", "sys/leader", "sys/seal-status", "sys/unseal", "sys/init", "sys/seal", "sys/metrics",
        "sys/storage/raft/join",
    ]

    /// Whether a standby answers this request itself: a read (forwarded anyway if it turns out to
    /// write), or one of ``nodeLocalPaths``. Operator paths of the cluster (`sys/storage/raft/`,
    /// `sys/ha-status`) are the active node's, which knows its peers' progress.
    static func isSnapshotRestore(method: String, path: String) -> Bool {
        let upper = method.uppercased()
        guard upper == "POST" || upper == "PUT" else { return false }
        let route = path.split(separator: "?", maxSplits: 1).first ?? ""
        return route.hasSuffix("sys/storage/raft/snapshot") || route.hasSuffix("sys/storage/raft/snapshot-force")
    }

    static func servedByEveryNode(method: String, path: String) -> Bool {
        var route = path[...]
        if let mark = route.firstIndex(of: "?") { route = route[..<mark] }
        while route.hasPrefix("/") { route = route.dropFirst() }
        if route.hasPrefix("v1/") { route = route.dropFirst(3) }
        while route.hasSuffix("/") { route = route.dropLast() }
        if nodeLocalPaths.contains(String(route)) { return true }
        if route.hasPrefix("sys/storage/raft") || route == "sys/ha-status" { return false }
        let upper = method.uppercased()
        return upper == "GET" || upper == "HEAD" || upper == "LIST"
    }
}

extension Vault {
    /// ``handleWire(method:path:token:body:namespace:clientAddress:wrapTTL:)`` for a caller in this
    /// process (the C ABI): a request a standby or an embedded replica cannot answer is sent to the
    /// active node here, over its API, and its answer returned.
    package func handleWireHere(
        method: String,
        path: String,
        token: String?,
        body: [UInt8],
        namespace: String = "",
        clientAddress: String = "",
        wrapTTL: String? = nil
    ) -> WireResult {
        let result = handleWire(
            method: method,
            path: path,
            token: token,
            body: body,
            namespace: namespace,
            clientAddress: clientAddress,
            wrapTTL: wrapTTL
        )
        guard result.forward, let cluster else { return result }
        var headers: [(String, String)] = []
        if let token { headers.append(("X-Vault-Token", token)) }
        if !namespace.isEmpty { headers.append(("X-Vault-Namespace", namespace)) }
        if let wrapTTL { headers.append(("X-Vault-Wrap-TTL", wrapTTL)) }
        if method.uppercased() == "PATCH" { headers.append(("Content-Type", "application/merge-patch+json")) }
        let target = path.hasPrefix("/") ? path : "/v1/" + path
        let answer = cluster.forward(method: method, target: target, headers: headers, body: body)
        var forwarded = WireResult(status: answer.status, body: answer.body.isEmpty ? nil : answer.body)
        forwarded.contentType =
            answer.headers.first { $0.0 == "content-type" && !$0.1.hasPrefix("application/json") }?.1
        if answer.status >= 400 {
            let message = answer.body.isEmpty ? nil : try? JSONValue.parse(answer.body)
            let text = message?["errors"]?.arrayValue?.compactMap(\.stringValue).joined(separator: "; ") ?? ""
            forwarded.error = RemoteClient.error(
                status: answer.status,
                text.isEmpty ? "the active node answered HTTP \(answer.status)" : text
            )
        }
        return forwarded
    }
}
