import CTLS
package import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// A small HTTP/1.1 client for the few outbound calls auth methods make: a JWKS, an OIDC discovery
/// document, an OIDC token endpoint, a Kubernetes TokenReview; and for a cluster's standbys, which
/// forward writes to the active node. Blocking, over POSIX sockets and (for `https://`) libssl through
/// `CTLS`. One request per connection (`Connection: close`), unless the caller passes a
/// ``ConnectionPool``: then connections are kept open for the next request to the same server.
///
/// Bounded in every way a server can misbehave: a connect timeout, a timeout per read or write, a
/// deadline for the whole exchange (a server that trickles bytes), a cap on the header block and on
/// the body (checked against `Content-Length` before reading, and while reading chunked or
/// close-delimited bodies). TLS verifies the chain against the given CA PEM, or the system trust
/// store without one, and the host name (or IP address) from the URL. `http://` is allowed, as
/// OpenBao allows it. Redirects are not followed.
///
/// Errors name the method, the URL and what failed, in Go's shape (`Get "https://idp.example/jwks":
/// dial tcp idp.example:443: connect: connection refused`); never a header or a body, so a bearer token or a client secret cannot leak through one.
package enum HTTPClient {
    /// Limits and trust for one request.
    package struct Options: Sendable {
        /// PEM certificates to trust for `https://`; nil or "" for the system trust store.
        package var caPEM: String?
        package var connectTimeout: Double = 5
        /// For each read and write.
        package var ioTimeout: Double = 10
        /// For the whole exchange, connect included.
        package var deadline: Double = 30
        package var maximumBodyBytes = 4 << 20
        package var maximumHeaderBytes = 64 << 10
        /// The Host header to send instead of the URL's: a request signed for one host (AWS SigV4
        /// signs `Host`) sent to another address, as the AWS auth method forwards a client's
        /// GetCallerIdentity to the configured STS endpoint.
        package var hostHeader: String?
        /// A certificate to present to a server that asks for one (mutual TLS).
        package var clientIdentity: ClientIdentity?

        package init(caPEM: String? = nil) { self.caPEM = caPEM }
    }

    /// A client certificate and its private key, both PEM; the key is zeroed when released.
    package struct ClientIdentity: Sendable {
        package var certificatePEM: String
        package var keyPEM: SecureBytes

        package init(certificatePEM: String, keyPEM: SecureBytes) {
            self.certificatePEM = certificatePEM
            self.keyPEM = keyPEM
        }
    }

    /// The TLS handshake on a connected socket: checks the server's chain (against `options.caPEM`,
    /// or the system's trust store) and its name, and presents `options.clientIdentity` if the
    /// server asks for a certificate. The connection, or the reason there is none.
    static func startTLS(_ fd: Int32, host: String, options: Options) -> Result<OpaquePointer, Failure> {
        var err = [CChar](repeating: 0, count: 512)
        let ca = options.caPEM ?? ""
        let certificate = options.clientIdentity?.certificatePEM ?? ""
        let key = options.clientIdentity?.keyPEM ?? SecureBytes([])
        let tls = ca.withCString { caPEM in
            certificate.withCString { certificatePEM in
                key.withUnsafeBytes { keyPEM in
                    var tlsOptions = ctls_options()
                    if !certificate.isEmpty, let keyBytes = keyPEM.baseAddress, !keyPEM.isEmpty {
                        tlsOptions.cert_pem = certificatePEM
                        tlsOptions.cert_len = strlen(certificatePEM)
                        tlsOptions.key_pem = keyBytes.assumingMemoryBound(to: CChar.self)
                        tlsOptions.key_len = keyPEM.count
                    }
                    return ctls_connect_ex(fd, host, ca.isEmpty ? nil : caPEM, strlen(caPEM), &tlsOptions, &err, 512)
                }
            }
        }
        guard let tls else {
            let message = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .failure(Failure(message: message.isEmpty ? "TLS handshake failed" : message))
        }
        return .success(tls)
    }

    package struct Response: Sendable {
        package var status: Int
        /// Header names lower-cased, in the order received.
        package var headers: [(name: String, value: String)]
        package var body: [UInt8]

        package func header(_ name: String) -> String? {
            let lower = name.lowercased()
            return headers.first { $0.name == lower }?.value
        }
    }

    /// The parts of an `http://` or `https://` URL the client needs.
    package struct URL: Sendable, Equatable {
        package var secure: Bool
        package var host: String
        package var port: Int
        /// Path and query, starting with "/".
        package var target: String

        /// Parses `text`; nil for another scheme, user info, an empty host or a bad port.
        package init?(_ text: String) {
            var rest: Substring
            if text.lowercased().hasPrefix("https://") {
                secure = true
                rest = text.dropFirst(8)
            } else if text.lowercased().hasPrefix("http://") {
                secure = false
                rest = text.dropFirst(7)
            } else {
                return nil
            }
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
            let authority = rest[..<authorityEnd]
            rest = rest[authorityEnd...]
            if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
            target = rest.isEmpty ? "/" : (rest.first == "?" ? "/" + rest : String(rest))
            guard let (host, port) = URL.hostAndPort(authority, defaultPort: secure ? 443 : 80) else { return nil }
            self.host = host
            self.port = port
        }

        /// `host`, `host:port`, `[v6]` or `[v6]:port` of a URL's authority (user info refused): the host
        /// and the port, `defaultPort` when none is written; nil for an empty host or a bad port.
        package static func hostAndPort(_ authority: Substring, defaultPort: Int) -> (String, Int)? {
            guard !authority.isEmpty, !authority.contains("@") else { return nil }
            var hostPart = authority
            var portText: Substring? = nil
            if authority.first == "[" {
                guard let close = authority.firstIndex(of: "]") else { return nil }
                hostPart = authority[authority.index(after: authority.startIndex)..<close]
                let after = authority[authority.index(after: close)...]
                if !after.isEmpty {
                    guard after.first == ":" else { return nil }
                    portText = after.dropFirst()
                }
            } else if let colon = authority.lastIndex(of: ":") {
                hostPart = authority[..<colon]
                portText = authority[authority.index(after: colon)...]
            }
            guard !hostPart.isEmpty, hostPart.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
            guard let portText else { return (String(hostPart), defaultPort) }
            guard let port = Int(portText), (1...65535).contains(port) else { return nil }
            return (String(hostPart), port)
        }

        /// The Host header's value.
        var hostHeader: String {
            let name = host.contains(":") ? "[\(host)]" : host
            return port == (secure ? 443 : 80) ? name : "\(name):\(port)"
        }
    }

    /// The failure of one exchange; the message names the method and URL.
    package struct Failure: Error, Sendable, CustomStringConvertible {
        package let message: String
        package var description: String { message }
    }

    /// Sends one request and reads the whole answer (any status). With `pool`, the request goes on a
    /// connection the pool kept from an earlier one to the same server (and the same trust and client
    /// certificate) when it has one, and the connection goes back to the pool after a complete answer.
    package static func send(
        _ method: String,
        _ urlText: String,
        headers: [(String, String)] = [],
        body: [UInt8] = [],
        options: Options = Options(),
        pool: ConnectionPool? = nil
    ) throws(Failure) -> Response {
        // Go's shape, as OpenBao's errors show it: `Get "https://idp.example/jwks": ...`.
        let what = "\(method.prefix(1).uppercased())\(method.dropFirst().lowercased()) \"\(urlText)\""
        func fail(_ reason: String) -> Failure { Failure(message: "\(what): \(reason)") }
        guard let url = URL(urlText) else { throw fail("not an http:// or https:// URL") }
        let host = options.hostHeader ?? url.hostHeader
        guard !host.contains(where: { $0 == "\r" || $0 == "\n" }) else {
            throw fail("the Host header contains a line break")
        }
        var head = "\(method) \(url.target) HTTP/1.1\r\nHost: \(host)\r\n"
        if !headers.contains(where: { $0.0.lowercased() == "user-agent" }) { head += "User-Agent: Coffer\r\n" }
        head += pool == nil ? "Connection: close\r\nAccept-Encoding: identity\r\n" : "Accept-Encoding: identity\r\n"
        for (name, value) in headers {
            guard !name.contains(where: { $0 == "\r" || $0 == "\n" || $0 == ":" }),
                !value.contains(where: { $0 == "\r" || $0 == "\n" })
            else { throw fail("a request header contains a line break") }
            head += "\(name): \(value)\r\n"
        }
        if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        let request = Array(head.utf8) + body
        let start = TCP.monotonicSeconds()
        let key = ConnectionPool.Key(url, options)
        if let pool, let kept = pool.take(key),
            let response = try exchange(kept, request, reused: true, method, options, start, fail, pool, key)
        {
            return response
        }
        let connection = try open(url, options, fail)
        guard let response = try exchange(connection, request, reused: false, method, options, start, fail, pool, key)
        else { throw fail("the connection closed before the answer") }  // only a kept one answers nil
        return response
    }

    /// Connects to `url`'s server (and shakes hands for `https://`).
    private static func open(_ url: URL, _ options: Options, _ fail: (String) -> Failure) throws(Failure) -> Connection
    {
        let fd = try connect(url, timeout: options.connectTimeout, fail: fail)
        let connection = Connection(fd: fd)
        TCP.setTimeout(fd, SO_RCVTIMEO, options.ioTimeout)
        TCP.setTimeout(fd, SO_SNDTIMEO, options.ioTimeout)
        if url.secure {
            switch startTLS(fd, host: url.host, options: options) {
            case .success(let tls): connection.tls = tls
            case .failure(let failure): throw fail(failure.message)
            }
        }
        return connection
    }

    /// Sends `request` on `connection` and reads the answer; back to `pool` after a complete answer the
    /// server did not end the connection with. Nil (only when `reused`) when the server had closed
    /// the kept connection: the request could not be sent, or the connection ended before a byte of an
    /// answer. The server closes a kept connection only while it is idle, so it did not see the
    /// request, and the caller sends it again on a new connection (as Go's net/http does).
    private static func exchange(
        _ connection: Connection,
        _ request: [UInt8],
        reused: Bool,
        _ method: String,
        _ options: Options,
        _ start: Double,
        _ fail: @escaping (String) -> Failure,
        _ pool: ConnectionPool?,
        _ key: ConnectionPool.Key
    ) throws(Failure) -> Response? {
        guard connection.write(request) else {
            if reused { return nil }
            throw fail("writing the request failed")
        }
        var reader = Reader(connection: connection, start: start, deadline: options.deadline, fail: fail)
        let response: Response
        do {
            response = try reader.readResponse(options: options, isHead: method == "HEAD")
        } catch {
            if reused && reader.closedBeforeAnswer { return nil }
            throw error
        }
        if let pool, reader.available == 0, !reader.ended,
            response.header("connection")?.lowercased().contains("close") != true
        {
            pool.put(connection, key)
        }
        return response
    }

    // MARK: - Sockets

    /// Resolves the host and connects to the first address that answers within the timeout.
    private static func connect(
        _ url: URL,
        timeout: Double,
        fail: (String) -> Failure
    ) throws(Failure) -> Int32 {
        do throws(TCP.ConnectFailure) {
            return try TCP.connect(host: url.host, port: url.port, timeout: timeout, timedOut: "connect timed out")
        } catch {
            switch error {
            case .lookup(let reason): throw fail("cannot resolve host \"\(url.host)\": \(reason)")
            case .connect(let reason): throw fail("dial tcp \(url.host):\(url.port): connect: \(reason)")
            }
        }
    }

    /// A socket and its TLS session, closed when released. Used by one request at a time: a pooled one
    /// is handed over through the pool's lock.
    final class Connection: @unchecked Sendable {
        let fd: Int32
        var tls: OpaquePointer?

        init(fd: Int32) { self.fd = fd }

        deinit {
            if let tls { ctls_free(tls) }
            Glibc.close(fd)
        }

        /// Whether the server has sent nothing since the last answer: not even the end of the stream.
        var isQuiet: Bool {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            return poll(&poller, 1, 0) == 0
        }

        /// Bytes read, 0 at the end of the stream, -1 on error or timeout.
        func read(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
            if let tls { return ctls_read(tls, buffer.baseAddress, buffer.count) }
            while true {
                let n = recv(fd, buffer.baseAddress, buffer.count, 0)
                if n < 0 && errno == EINTR { continue }
                return n
            }
        }

        func write(_ bytes: [UInt8]) -> Bool {
            bytes.withUnsafeBytes { raw in
                if let tls { return ctls_write(tls, raw.baseAddress, raw.count) == 0 }
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return false }
                    offset += n
                }
                return true
            }
        }
    }

    /// Reads the response from a buffer refilled from the connection.
    private struct Reader {
        let connection: Connection
        let start: Double
        let deadline: Double
        let fail: (String) -> Failure
        var buffer: [UInt8] = []
        var position = 0
        var ended = false
        /// Bytes read from the connection so far.
        var received = 0
        /// The connection ended (or was reset) before a byte of the answer arrived.
        var closedBeforeAnswer = false

        init(connection: Connection, start: Double, deadline: Double, fail: @escaping (String) -> Failure) {
            self.connection = connection
            self.start = start
            self.deadline = deadline
            self.fail = fail
        }

        var available: Int { buffer.count - position }

        /// Reads more bytes; false at the end of the stream.
        mutating func fill() throws(Failure) -> Bool {
            guard !ended else { return false }
            if TCP.monotonicSeconds() - start > deadline {
                throw fail("no complete answer within \(Int(deadline)) s")
            }
            if position > 0 && position == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                position = 0
            }
            var chunk = [UInt8](repeating: 0, count: 16384)
            let n = chunk.withUnsafeMutableBytes { connection.read($0) }
            if received == 0 && (n == 0 || (n < 0 && errno == ECONNRESET)) { closedBeforeAnswer = true }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { throw fail("read timed out") }
                let reason = connection.tls.map { String(cString: ctls_read_error($0)) } ?? ""
                throw fail(reason.isEmpty ? "reading the answer failed" : "reading the answer failed: \(reason)")
            }
            if n == 0 {
                ended = true
                return false
            }
            received += n
            buffer.append(contentsOf: chunk[0..<n])
            return true
        }

        /// One line ending in CRLF (or LF), without it; at most `limit` bytes.
        mutating func line(limit: Int) throws(Failure) -> String {
            while true {
                if let newline = buffer[position...].firstIndex(of: 0x0A) {
                    var end = newline
                    if end > position && buffer[end - 1] == 0x0D { end -= 1 }
                    let text = String(decoding: buffer[position..<end], as: UTF8.self)
                    position = newline + 1
                    return text
                }
                if available > limit { throw fail("the answer's header is larger than \(limit) bytes") }
                guard try fill() else { throw fail("the connection closed before the answer was complete") }
            }
        }

        mutating func take(_ count: Int) throws(Failure) -> ArraySlice<UInt8> {
            while available < count {
                guard try fill() else { throw fail("the connection closed before the answer was complete") }
            }
            defer { position += count }
            return buffer[position..<position + count]
        }

        mutating func readResponse(options: Options, isHead: Bool) throws(Failure) -> Response {
            var status = 0
            var headers: [(name: String, value: String)] = []
            repeat {
                let statusLine = try line(limit: options.maximumHeaderBytes)
                let parts = statusLine.split(separator: " ", maxSplits: 2)
                guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]),
                    (100...999).contains(code)
                else { throw fail("the answer is not HTTP/1.x") }
                status = code
                headers = []
                var headerBytes = 0
                while true {
                    let text = try line(limit: options.maximumHeaderBytes)
                    if text.isEmpty { break }
                    headerBytes += text.utf8.count
                    guard headerBytes <= options.maximumHeaderBytes else {
                        throw fail("the answer's header is larger than \(options.maximumHeaderBytes) bytes")
                    }
                    guard let colon = text.firstIndex(of: ":") else { throw fail("malformed header line") }
                    let name = text[..<colon].lowercased()
                    let value = text[text.index(after: colon)...].trimmingCharacters(in: " \t")
                    headers.append((name, value))
                }
            } while (100...199).contains(status)
            let response = Response(status: status, headers: headers, body: [])
            if isHead || status == 204 || status == 304 { return response }
            var body: [UInt8] = []
            let limit = options.maximumBodyBytes
            if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
                while true {
                    let sizeLine = try line(limit: 1024)
                    let hex = sizeLine.split(separator: ";", maxSplits: 1).first.map {
                        $0.trimmingCharacters(in: " \t")
                    }
                    guard let hex, !hex.isEmpty, hex.count <= 16, let size = Int(hex, radix: 16), size >= 0 else {
                        throw fail("malformed chunked body")
                    }
                    if size == 0 { break }
                    guard size <= limit - body.count else { throw fail("the answer is larger than \(limit) bytes") }
                    body.append(contentsOf: try take(size))
                    guard try line(limit: 2).isEmpty else { throw fail("malformed chunked body") }
                }
            } else if let lengthText = response.header("content-length") {
                guard let length = Int(lengthText), length >= 0 else { throw fail("malformed Content-Length") }
                guard length <= limit else { throw fail("the answer is larger than \(limit) bytes") }
                body.append(contentsOf: try take(length))
            } else {
                while true {
                    if available > limit { throw fail("the answer is larger than \(limit) bytes") }
                    guard try fill() else { break }
                }
                body.append(contentsOf: buffer[position...])
                if body.count > limit { throw fail("the answer is larger than \(limit) bytes") }
            }
            var out = response
            out.body = body
            return out
        }
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let first = s.first, set.contains(first) { s = s.dropFirst() }
        while let last = s.last, set.contains(last) { s = s.dropLast() }
        return String(s)
    }
}

extension HTTPClient {
    /// `application/x-www-form-urlencoded` text of `pairs`, in the order given.
    package static func formEncode(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(percentEncode($0.0))=\(percentEncode($0.1))" }.joined(separator: "&")
    }

    /// Percent-encoding of everything but unreserved characters (RFC 3986), spaces as `+` when `form`.
    package static func percentEncode(_ text: String, form: Bool = true) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            case UInt8(ascii: " ") where form:
                out += "+"
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%"
                out.unicodeScalars.append(UnicodeScalar(hex[Int(byte >> 4)]))
                out.unicodeScalars.append(UnicodeScalar(hex[Int(byte & 15)]))
            }
        }
        return out
    }
}
