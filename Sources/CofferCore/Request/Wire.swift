/// The wire form shared by the HTTP server and the C ABI: a method, a path with an optional query,
/// a token and a JSON body in; a status and a JSON body out. Both transports call this, so they
/// cannot drift apart.
extension Core {
    /// Handles a request given in wire form and returns its HTTP status and body (nil for 204).
    ///
    /// Errors become `{"errors": [...]}` with the status of their code; the message never holds a
    /// secret. Never throws.
    public func handleWire(
        method: String, path: String, token: String?, body: [UInt8], namespace: String = "", clientAddress: String = ""
    ) -> (status: Int, body: [UInt8]?) {
        let result = handleWireWithError(
            method: method, path: path, token: token, body: body, namespace: namespace, clientAddress: clientAddress)
        return (result.status, result.body)
    }

    /// ``handleWire(method:path:token:body:namespace:clientAddress:)`` that also hands back the error
    /// the body was made from, so a caller that reports a typed status (the C ABI) need not guess it
    /// from the HTTP status. `error` is nil when the request succeeded (whatever its status, e.g. a
    /// 404 for a missing secret or the statuses of `sys/health`).
    public func handleWireWithError(
        method: String, path: String, token: String?, body: [UInt8], namespace: String = "", clientAddress: String = ""
    ) -> (status: Int, body: [UInt8]?, error: CofferError?) {
        let requestID = Random.uuid()
        do {
            let request = try Core.parseWire(method: method, path: path, token: token, body: body, id: requestID)
            var r = request
            r.namespace = namespace
            r.clientAddress = clientAddress
            let response = try handle(r)
            if response.status == 404 && response.data == nil && response.raw == nil {
                return (404, Array(#"{"errors":[]}"#.utf8), nil)
            }
            return (response.status, response.body(requestID: requestID)?.serialized(), nil)
        } catch {
            let (status, body) = Core.errorBody(error)
            return (status, body, error)
        }
    }

    /// `{"errors":[message]}` with the HTTP status of the error's code.
    public static func errorBody(_ error: CofferError) -> (status: Int, body: [UInt8]?) {
        (error.code.httpStatus, JSONValue.object(["errors": [.string(error.message)]]).serialized())
    }

    /// Splits the query off `path` and builds the request: query parameters become data for reads
    /// and lists, the JSON body (an object) for writes.
    public static func parseWire(method: String, path: String, token: String?, body: [UInt8], id: String) throws(CofferError) -> Request {
        var path = path
        var query: [String: JSONValue] = [:]
        if let mark = path.firstIndex(of: "?") {
            for pair in path[path.index(after: mark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = percentDecode(String(parts[0]))
                let value = parts.count > 1 ? percentDecode(String(parts[1])) : ""
                if !key.isEmpty { query[key] = .string(value) }
            }
            path = String(path[..<mark])
        }
        if path.hasPrefix("/") { path = String(path.drop { $0 == "/" }) }
        if path.hasPrefix("v1/") { path = String(path.dropFirst(3)) }
        var listQuery = false
        if ["GET", "HEAD"].contains(method.uppercased()), let flag = query["list"]?.stringValue, !flag.isEmpty {
            // Go's strconv.ParseBool, as Vault parses it (hvac sends "True").
            switch flag {
            case "1", "t", "T", "TRUE", "true", "True": listQuery = true
            case "0", "f", "F", "FALSE", "false", "False": listQuery = false
            default: throw CofferError.invalid("the list query parameter must be true or false (1, t, T, TRUE, true, True or their false forms)")
            }
        }
        guard let operation = Request.operation(forMethod: method, listQuery: listQuery) else {
            throw CofferError(.unsupportedOperation, "unsupported method \(method); use GET, PUT, POST, PATCH, DELETE or LIST")
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
            default: throw CofferError.invalid("failed to parse JSON input: the body must be a JSON object, not \(parsed.typeName)")
            }
        }
        return Request(operation, path, data: data, token: token, id: id)
    }

    static func percentDecode(_ text: String) -> String {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.first {
            bytes = bytes.dropFirst()
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%"), bytes.count >= 2, let v = Hex.decode(String(decoding: bytes.prefix(2), as: UTF8.self)) {
                out.append(v[0])
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
