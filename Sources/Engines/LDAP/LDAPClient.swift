import CTLS

#if canImport(Glibc)
import Glibc
#endif

/// A small LDAPv3 client (RFC 4511) of our own: simple bind, search, StartTLS, unbind, over POSIX
/// sockets and, for `ldaps://` and StartTLS, libssl through `CTLS`. Blocking, one operation at a
/// time, one connection per login.
///
/// Every operation is bounded by `requestTimeout` (each read waits at most what is left of it),
/// the connect by `connectTimeout`. Messages larger than ``maximumMessageBytes``, searches with
/// more than ``maximumEntries`` entries or ``maximumSearchBytes`` bytes are refused, so a hostile
/// server cannot make us allocate without limit.
package final class LDAPConnection {
    package static let maximumMessageBytes = 4 << 20
    package static let maximumSearchBytes = 16 << 20
    package static let maximumEntries = 10_000

    /// A failure: the connection or the protocol (`resultCode` nil; the next URL may answer), or an
    /// LDAP result other than success.
    package struct Failure: Error, Sendable, CustomStringConvertible {
        package let message: String
        package let resultCode: Int?
        package var description: String { message }

        static func network(_ message: String) -> Failure {
            Failure(message: "LDAP Result Code 200 \"Network Error\": \(message)", resultCode: nil)
        }
        static func result(_ code: Int, _ diagnostic: String) -> Failure {
            let name = LDAPConnection.resultNames[code] ?? "Unknown"
            // Go's form, which OpenBao shows: the colon stays when the diagnostic is empty.
            return Failure(message: "LDAP Result Code \(code) \"\(name)\": \(diagnostic)", resultCode: code)
        }
    }

    static let resultNames: [Int: String] = [
        1: "Operations Error", 2: "Protocol Error", 3: "Time Limit Exceeded", 4: "Size Limit Exceeded",
        7: "Auth Method Not Supported", 8: "Strong Auth Required", 10: "Referral", 11: "Admin Limit Exceeded",
        13: "Confidentiality Required", 14: "Sasl Bind In Progress", 16: "No Such Attribute",
        17: "Undefined Attribute Type", 18: "Inappropriate Matching", 19: "Constraint Violation",
        21: "Invalid Attribute Syntax", 32: "No Such Object", 34: "Invalid DN Syntax",
        48: "Inappropriate Authentication",
        49: "Invalid Credentials", 50: "Insufficient Access Rights", 51: "Busy", 52: "Unavailable",
        53: "Unwilling To Perform", 80: "Other",
    ]

    package struct URL: Sendable, Equatable {
        package var secure: Bool
        package var host: String
        package var port: Int
        package var text: String

        /// `ldap://host[:port]` or `ldaps://host[:port]` (a trailing `/` or DN part is ignored).
        package init?(_ text: String) {
            self.text = text
            let lower = text.lowercased()
            var rest: Substring
            if lower.hasPrefix("ldaps://") {
                secure = true
                rest = Substring(text).dropFirst(8)
            } else if lower.hasPrefix("ldap://") {
                secure = false
                rest = Substring(text).dropFirst(7)
            } else {
                return nil
            }
            if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) { rest = rest[..<slash] }
            guard let (host, port) = HTTPClient.URL.hostAndPort(rest, defaultPort: secure ? 636 : 389) else {
                return nil
            }
            self.host = host
            self.port = port
        }
    }

    /// TLS settings for `ldaps://` and StartTLS.
    package struct TLS: Sendable {
        package var caPEM = ""
        package var insecure = false
        package var minVersion: Int32 = 0x0303
        package var maxVersion: Int32 = 0x0303
        package var clientCertPEM = ""
        package var clientKeyPEM = ""
        package init() {}
    }

    package struct Entry: Sendable, Equatable {
        package var dn: String
        package var attributes: [(name: String, values: [String])]

        package static func == (a: Entry, b: Entry) -> Bool {
            a.dn == b.dn && a.attributes.map(\.name) == b.attributes.map(\.name)
                && a.attributes.map(\.values) == b.attributes.map(\.values)
        }

        /// The values of `name` (compared without case, as attribute types are).
        package func values(_ name: String) -> [String] {
            let lower = name.lowercased()
            return attributes.filter { $0.name.lowercased() == lower }.flatMap(\.values)
        }
    }

    package enum Scope: Int64, Sendable {
        case base = 0
        case one = 1
        case subtree = 2
    }

    let fd: Int32
    var tls: OpaquePointer? = nil
    let requestTimeout: Double
    var nextID: Int64 = 1
    var buffer: [UInt8] = []
    var closed = false

    private init(fd: Int32, requestTimeout: Double) {
        self.fd = fd
        self.requestTimeout = requestTimeout
    }

    deinit {
        if let tls { ctls_free(tls) }
        close(fd)
    }

    /// Connects to `url` (TLS first for `ldaps://`, the StartTLS operation when `startTLS`).
    package static func open(
        _ url: URL,
        startTLS: Bool,
        tls: TLS,
        connectTimeout: Double,
        requestTimeout: Double
    ) throws(Failure) -> LDAPConnection {
        let fd = try connect(url, timeout: connectTimeout)
        let connection = LDAPConnection(fd: fd, requestTimeout: requestTimeout)
        if url.secure {
            try connection.handshake(url, tls)
        } else if startTLS {
            let deadline = monotonicSeconds() + requestTimeout
            let op = BER(tag: 0x77, children: [.octets("1.3.6.1.4.1.1466.20037", tag: 0x80)])
            let id = try connection.send(op: op).get()
            let response = try connection.receive(id: id, deadline: deadline)
            guard response.tag == 0x78 else { throw Failure.network("unexpected answer to StartTLS") }
            try checkResult(response)
            try connection.handshake(url, tls)
        }
        return connection
    }

    private func handshake(_ url: URL, _ options: TLS) throws(Failure) {
        TCP.setTimeout(fd, SO_RCVTIMEO, requestTimeout)
        TCP.setTimeout(fd, SO_SNDTIMEO, requestTimeout)
        var err = [CChar](repeating: 0, count: 512)
        let ca = options.caPEM
        let cert = options.clientCertPEM
        let key = options.clientKeyPEM
        let conn: OpaquePointer? = ca.withCString { caPtr in
            cert.withCString { certPtr in
                key.withCString { keyPtr in
                    var o = ctls_options(
                        insecure: options.insecure ? 1 : 0,
                        min_version: options.minVersion,
                        max_version: options.maxVersion,
                        cert_pem: cert.isEmpty ? nil : certPtr,
                        cert_len: strlen(certPtr),
                        key_pem: key.isEmpty ? nil : keyPtr,
                        key_len: strlen(keyPtr),
                        skip_name_check: 0
                    )
                    return ctls_connect_ex(fd, url.host, ca.isEmpty ? nil : caPtr, strlen(caPtr), &o, &err, 512)
                }
            }
        }
        guard let conn else {
            let message = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw Failure.network(message.isEmpty ? "TLS handshake failed" : message)
        }
        tls = conn
    }

    // MARK: Operations

    /// A simple bind (an empty password is an unauthenticated bind, RFC 4513 §5.1.2).
    package func bind(_ dn: String, password: String) throws(Failure) {
        let op = BER(
            tag: 0x60,
            children: [.integer(3), .octets(dn), BER(tag: 0x80, bytes: Array(password.utf8))]
        )
        let deadline = Self.monotonicSeconds() + requestTimeout
        let id = try send(op: op).get()
        let response = try receive(id: id, deadline: deadline)
        guard response.tag == 0x61 else { throw Failure.network("unexpected answer to a bind") }
        try Self.checkResult(response)
    }

    /// The entries of a search (references skipped).
    package func search(
        base: String,
        scope: Scope,
        filter: BER,
        attributes: [String],
        sizeLimit: Int64 = 0
    ) throws(Failure) -> [Entry] {
        let op = BER(
            tag: 0x63,
            children: [
                .octets(base), .enumerated(scope.rawValue), .enumerated(0), .integer(sizeLimit),
                .integer(Int64(max(0, Int(requestTimeout.rounded(.up))))), .boolean(false), filter,
                .sequence(attributes.map { .octets($0) }),
            ]
        )
        let deadline = Self.monotonicSeconds() + requestTimeout
        let id = try send(op: op).get()
        var entries: [Entry] = []
        var total = 0
        while true {
            let (response, size) = try receiveSized(id: id, deadline: deadline)
            total += size
            guard total <= Self.maximumSearchBytes else {
                throw Failure.network("search answer larger than \(Self.maximumSearchBytes) bytes")
            }
            switch response.tag {
            case 0x64:
                guard entries.count < Self.maximumEntries else {
                    throw Failure.network("search answer with more than \(Self.maximumEntries) entries")
                }
                entries.append(try Self.entry(response))
            case 0x73:
                continue
            case 0x65:
                try Self.checkResult(response)
                return entries
            default:
                throw Failure.network("unexpected answer to a search")
            }
        }
    }

    /// Sends an unbind and stops using the connection (the socket closes when it is freed).
    package func unbind() {
        guard !closed else { return }
        closed = true
        _ = send(op: BER(tag: 0x42, bytes: []))
    }

    // MARK: Messages

    private func send(op: BER) -> Result<Int64, Failure> {
        let id = nextID
        nextID += 1
        let message = BER.sequence([.integer(id), op]).encoded
        TCP.setTimeout(fd, SO_SNDTIMEO, requestTimeout)
        let ok = message.withUnsafeBytes { raw -> Bool in
            guard let base = raw.baseAddress else { return false }
            if let tls { return ctls_write(tls, base, raw.count) == 0 }
            var offset = 0
            while offset < raw.count {
                let n = Glibc.send(fd, base + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                offset += n
            }
            return true
        }
        return ok ? .success(id) : .failure(.network("writing the request failed"))
    }

    private func receive(id: Int64, deadline: Double) throws(Failure) -> BER {
        try receiveSized(id: id, deadline: deadline).0
    }

    /// The protocol operation of the next message for `id`, and the message's size.
    private func receiveSized(id: Int64, deadline: Double) throws(Failure) -> (BER, Int) {
        while true {
            let bytes = try readMessage(deadline: deadline)
            let message: BER
            do {
                message = try BER.decode(bytes)
            } catch {
                throw Failure.network("malformed LDAP message: \(error)")
            }
            guard message.tag == 0x30, message.children.count >= 2, let messageID = message.children[0].integerValue
            else { throw Failure.network("malformed LDAP message") }
            let op = message.children[1]
            if messageID == 0 {
                // An unsolicited notification: the server is closing the connection.
                throw Failure.network("the server closed the connection (notice of disconnection)")
            }
            guard messageID == id else { throw Failure.network("answer to an unknown message id") }
            return (op, bytes.count)
        }
    }

    /// One whole BER message from the connection.
    private func readMessage(deadline: Double) throws(Failure) -> [UInt8] {
        while true {
            // Every LDAPMessage is a SEQUENCE: anything else (an HTTP or TLS answer) is refused at
            // its first byte rather than waited on.
            if let first = buffer.first, first != 0x30 { throw Failure.network("not an LDAP message") }
            let header: (tag: UInt8, headerLength: Int, contentLength: Int)?
            do {
                header = try BER.header(buffer[...])
            } catch {
                throw Failure.network("malformed LDAP message: \(error)")
            }
            if let header {
                guard header.contentLength <= Self.maximumMessageBytes - header.headerLength else {
                    throw Failure.network("LDAP message larger than \(Self.maximumMessageBytes) bytes")
                }
                let total = header.headerLength + header.contentLength
                if buffer.count >= total {
                    let message = Array(buffer[0..<total])
                    buffer.removeFirst(total)
                    return message
                }
            }
            try fill(deadline: deadline)
        }
    }

    private func fill(deadline: Double) throws(Failure) {
        let remaining = deadline - Self.monotonicSeconds()
        guard remaining > 0 else { throw timeout() }
        TCP.setTimeout(fd, SO_RCVTIMEO, max(remaining, 0.001))
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = chunk.withUnsafeMutableBytes { raw -> Int in
            if let tls { return ctls_read(tls, raw.baseAddress, raw.count) }
            while true {
                let n = recv(fd, raw.baseAddress, raw.count, 0)
                if n < 0 && errno == EINTR { continue }
                return n
            }
        }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw timeout() }
            throw Failure.network("reading the answer failed: \(String(cString: strerror(errno)).lowercased())")
        }
        if n == 0 { throw Failure.network("the server closed the connection") }
        buffer.append(contentsOf: chunk[0..<n])
    }

    private func timeout() -> Failure {
        .network("no answer within the request timeout (\(Self.formatSeconds(requestTimeout)))")
    }

    static func formatSeconds(_ s: Double) -> String {
        s == s.rounded() ? "\(Int(s))s" : "\(s)s"
    }

    // MARK: Decoding answers

    static func checkResult(_ op: BER) throws(Failure) {
        guard op.isConstructed, op.children.count >= 3, let code = op.children[0].integerValue,
            op.children[0].tag == 0x0A
        else { throw Failure.network("malformed LDAP result") }
        guard code != 0 else { return }
        let diagnostic = op.children[2].stringValue
        throw Failure.result(Int(clamping: code), String(diagnostic.prefix(512)))
    }

    static func entry(_ op: BER) throws(Failure) -> Entry {
        guard op.isConstructed, op.children.count == 2, op.children[0].tag == 0x04, op.children[1].tag == 0x30 else {
            throw Failure.network("malformed search entry")
        }
        var attributes: [(name: String, values: [String])] = []
        for attribute in op.children[1].children {
            guard attribute.tag == 0x30, attribute.children.count == 2, attribute.children[0].tag == 0x04,
                attribute.children[1].tag == 0x31
            else { throw Failure.network("malformed search entry") }
            attributes.append((attribute.children[0].stringValue, attribute.children[1].children.map(\.stringValue)))
        }
        return Entry(dn: op.children[0].stringValue, attributes: attributes)
    }

    // MARK: Sockets

    static func monotonicSeconds() -> Double { TCP.monotonicSeconds() }

    /// Resolves the host and connects to the first address that answers within the timeout; the
    /// error in Go's words (`dial tcp 127.0.0.1:1: connect: connection refused`).
    static func connect(_ url: URL, timeout: Double) throws(Failure) -> Int32 {
        do throws(TCP.ConnectFailure) {
            return try TCP.connect(host: url.host, port: url.port, timeout: timeout, timedOut: "i/o timeout")
        } catch {
            switch error {
            case .lookup(let reason):
                throw Failure.network("dial tcp: lookup \(url.host): \(reason.lowercased())")
            case .connect(let reason):
                let hostPort = url.host.contains(":") ? "[\(url.host)]:\(url.port)" : "\(url.host):\(url.port)"
                throw Failure.network("dial tcp \(hostPort): connect: \(reason)")
            }
        }
    }
}
