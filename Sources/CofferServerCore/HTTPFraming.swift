#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// cofferd's HTTP/1.1 request parser: where each request on a connection starts and ends, its
/// head, and its body bytes, decided once, over bytes only.
///
/// It reads every request head in full, checks it, keeps its method (any token: Vault's `LIST`
/// too), target and header fields, decides the body's framing (`Content-Length`, `chunked` or
/// none) and whether the connection stays open, and hands on the body's bytes (a chunked body
/// without its chunk framing). Anything two parsers could frame differently is refused instead of
/// being guessed at, because request boundaries that a proxy and a server disagree on are how
/// request smuggling starts:
///
/// - `Content-Length` given twice, not only digits, or too large; `Content-Length` together with
///   `Transfer-Encoding`; a transfer coding other than `chunked`, or one in an HTTP/1.0 request;
/// - a line ending in a bare LF, a bare CR anywhere, obs-fold (a header line starting with
///   whitespace), control characters, a header name with characters outside `token`;
/// - a request line other than `METHOD SP target SP HTTP/1.x`, a target not in origin form (`/...`)
///   or `*`;
/// - a line longer than ``Limits/lineBytes``, a head longer than ``Limits/headBytes`` or with more
///   than ``Limits/headerFields`` fields;
/// - chunk extensions, trailer fields, a malformed chunk size or chunk end;
/// - `Upgrade` (cofferd speaks no other protocol on the connection).
///
/// A zero-padded `Content-Length` (`0005`) is legal and framed as its value. After a request that
/// does not keep the connection alive (`Connection: close`, HTTP/1.0 without `keep-alive`), nothing
/// more is framed: the rest of the input is dropped.
///
/// The type does no I/O and holds no channel, so tests and a fuzzer can drive it directly:
///
/// ```swift
/// var framing = HTTPFraming()
/// for event in framing.feed(Array("GET /v1/sys/health HTTP/1.1\r\n\r\n".utf8)) { ... }
/// ```
package struct HTTPFraming: Sendable {
    package struct Limits: Sendable, Equatable {
        /// One line of a head: the request line, a header line, a chunk-size line.
        package var lineBytes = 16 * 1024
        /// A whole request head, request line and headers with their line ends.
        package var headBytes = 64 * 1024
        /// Header fields in one head.
        package var headerFields = 256
        /// A method token.
        package var methodBytes = 32

        package init() {}
    }

    /// How the body of a request is delimited.
    package enum BodyFraming: Sendable, Equatable {
        case none
        case length(Int)
        case chunked
    }

    /// A header field of a request: the name as sent, the value without surrounding whitespace.
    package struct Field: Sendable, Equatable {
        package var name: String
        package var value: String

        package init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// A request head that was read in full and accepted.
    package struct Head: Sendable, Equatable {
        /// The method as the client sent it (`LIST`).
        package var method: String
        package var target: String
        /// The header fields in the order they came.
        package var fields: [Field]
        /// 0 or 1: HTTP/1.0 or HTTP/1.1.
        package var minorVersion: Int
        package var body: BodyFraming
        /// Whether another request may follow on the connection (HTTP/1.1 without `Connection: close`,
        /// HTTP/1.0 with `Connection: keep-alive`).
        package var keepAlive: Bool
        /// The offset in the stream of the request's first byte.
        package var start: Int
    }

    package enum Event: Sendable, Equatable {
        /// The first byte of a request arrived (line ends between requests are skipped).
        case requestStarted(at: Int)
        /// A head was read in full and accepted. Its body's bytes follow as `body`.
        case head(Head)
        /// Bytes of the current request's body: this range of the input given to this `feed`.
        case body(Range<Int>)
        /// The request ended; the offset in the stream just past its last byte.
        case end(at: Int)
        /// The stream is refused from here on: answer 400 and close. Nothing after it is framed.
        case refused(Refusal)
    }

    /// Why a stream was refused, in words that never quote the input.
    package struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        package let reason: String
        /// The offset in the stream of the byte that decided it.
        package let at: Int

        package var description: String { reason }
    }

    enum State: Sendable, Equatable {
        /// Before a request line; `sawCR`: a CR of an empty line was just read.
        case betweenRequests(sawCR: Bool)
        case head(sawCR: Bool)
        case body(remaining: Int)
        case chunkSize(digits: Int, value: Int, sawCR: Bool)
        case chunkData(remaining: Int)
        /// After a chunk's data: its CRLF.
        case chunkEnd(sawCR: Bool)
        /// After the last chunk's size line: the CRLF that ends the (empty) trailer section.
        case trailerEnd(sawCR: Bool)
        /// After a request that closes the connection: nothing more is framed.
        case closed
        case refused
    }

    package let limits: Limits
    var state = State.betweenRequests(sawCR: false)
    /// The offset in the stream of the first byte of the next `feed`.
    var offset = 0
    /// The head being read, and where its current line starts.
    var head: [UInt8] = []
    var lineStart = 0
    var reader = HeadReader()
    /// The request being read, once its head was accepted.
    var current: Head?
    /// Bytes of the current chunk-size line.
    var chunkLine = 0

    package init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// True once the stream was refused or closed: later input is dropped.
    package var isFinished: Bool {
        state == .closed || state == .refused
    }

    /// The stream ended (the client closed its side). Refuses a request that was not complete.
    package mutating func finish() -> Refusal? {
        switch state {
        case .betweenRequests, .closed, .refused:
            return nil
        default:
            state = .refused
            current = nil
            head = []
            return Refusal(reason: "the connection ended before the request was complete", at: offset)
        }
    }

    /// Reads the next bytes of the stream and says what they are.
    package mutating func feed(_ input: [UInt8]) -> [Event] {
        input.withUnsafeBytes { feed($0) }
    }

    /// Reads the next bytes of the stream and says what they are. `body` ranges index `input`.
    package mutating func feed(_ input: UnsafeRawBufferPointer) -> [Event] {
        var events: [Event] = []
        events.reserveCapacity(4)  // a request's start, head, body and end: one allocation
        let count = input.count
        var i = 0
        defer { offset += count }

        func body(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            if case .body(let last) = events.last, last.upperBound == range.lowerBound {
                events[events.count - 1] = .body(last.lowerBound..<range.upperBound)
            } else {
                events.append(.body(range))
            }
        }

        while i < count {
            switch state {
            case .closed, .refused:
                return events

            case .betweenRequests(let sawCR):
                let byte = input[i]
                if sawCR {
                    // (The CR may have ended the previous feed: i - 1 is then an offset before this input.)
                    guard byte == Self.lf else { return refuse(&events, "a bare CR before a request line", at: i - 1) }
                    state = .betweenRequests(sawCR: false)
                    i += 1
                } else if byte == Self.cr {
                    state = .betweenRequests(sawCR: true)
                    i += 1
                } else if byte == Self.lf {
                    return refuse(&events, "a line ends in LF without CR", at: i)
                } else {
                    events.append(.requestStarted(at: offset + i))
                    head.removeAll(keepingCapacity: true)
                    lineStart = 0
                    reader = HeadReader()
                    state = .head(sawCR: false)
                }

            case .head(let sawCR):
                // A line at a time: find its LF, check the bytes before it in bulk, copy them at once.
                var lineEnd: Int  // index of the LF that ends the line
                if sawCR {
                    guard input[i] == Self.lf else {
                        return refuse(&events, "a bare CR in the request head", at: i - 1)
                    }
                    lineEnd = i
                } else {
                    let lf = Self.find(Self.lf, in: input, from: i, to: count)
                    let segmentEnd = lf ?? count
                    if let cr = Self.find(Self.cr, in: input, from: i, to: segmentEnd), cr != segmentEnd - 1 {
                        return refuse(&events, "a bare CR in the request head", at: cr)
                    }
                    if let lf, lf == i || input[lf - 1] != Self.cr {
                        // (A CR that ended the previous feed was handled above.)
                        return refuse(&events, "a line ends in LF without CR", at: lf)
                    }
                    head.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[i..<segmentEnd]))
                    let lineBytes = head.count - lineStart - (head.last == Self.cr ? 1 : 0)
                    if lineBytes > limits.lineBytes {
                        return refuse(
                            &events,
                            "a line of the request head is longer than \(limits.lineBytes) bytes",
                            at: segmentEnd - 1
                        )
                    }
                    if head.count > limits.headBytes {
                        return refuse(
                            &events,
                            "the request head is longer than \(limits.headBytes) bytes",
                            at: segmentEnd - 1
                        )
                    }
                    guard let lf else {
                        state = .head(sawCR: head.last == Self.cr)
                        i = count
                        continue
                    }
                    lineEnd = lf
                }
                head.append(Self.lf)
                i = lineEnd + 1
                state = .head(sawCR: false)
                if head.count > limits.headBytes {
                    return refuse(&events, "the request head is longer than \(limits.headBytes) bytes", at: lineEnd)
                }
                if head.count - 2 > lineStart {
                    // Moved out (not copied), so that its fields array stays uniquely referenced
                    // and grows in place instead of being copied at every line.
                    var lineReader = reader
                    reader = HeadReader()
                    let (start, limits) = (lineStart, limits)
                    let reason = head.withUnsafeBufferPointer { all in
                        lineReader.read(
                            line: UnsafeBufferPointer(rebasing: all[start..<(all.count - 2)]),
                            limits: limits
                        )
                    }
                    reader = lineReader
                    if let reason { return refuse(&events, reason, at: lineEnd) }
                    lineStart = head.count
                    continue
                }
                // The empty line: the head is complete.
                let accepted: Head
                switch reader.finish(start: offset + i - head.count) {
                case .success(let h): accepted = h
                case .failure(let refusal): return refuse(&events, refusal.reason, at: lineEnd)
                }
                events.append(.head(accepted))
                current = accepted
                switch accepted.body {
                case .none: endRequest(&events, at: i)
                case .length(let n): state = .body(remaining: n)
                case .chunked:
                    state = .chunkSize(digits: 0, value: 0, sawCR: false)
                    chunkLine = 0
                }

            case .body(let remaining):
                let take = min(remaining, count - i)
                body(i..<(i + take))
                i += take
                if take == remaining {
                    endRequest(&events, at: i)
                } else {
                    state = .body(remaining: remaining - take)
                }

            case .chunkSize(var digits, var value, let sawCR):
                let byte = input[i]
                chunkLine += 1
                if sawCR {
                    guard byte == Self.lf else {
                        return refuse(&events, "a chunk size line does not end in CRLF", at: i)
                    }
                    guard digits > 0 else {
                        return refuse(&events, "a chunk size line holds no size", at: i)
                    }
                    i += 1
                    state = value == 0 ? .trailerEnd(sawCR: false) : .chunkData(remaining: value)
                    continue
                }
                if byte == Self.cr {
                    state = .chunkSize(digits: digits, value: value, sawCR: true)
                } else if let digit = Self.hexValue(byte) {
                    // 15 hex digits (without leading zeros) stay far below Int.max; a size that big never arrives anyway.
                    guard value < 1 << 56 else {
                        return refuse(&events, "a chunk size is too large", at: i)
                    }
                    value = value << 4 | digit
                    digits += 1
                    state = .chunkSize(digits: digits, value: value, sawCR: false)
                } else if byte == Self.lf {
                    return refuse(&events, "a chunk size line does not end in CRLF", at: i)
                } else if byte == UInt8(ascii: ";") {
                    return refuse(&events, "chunk extensions are not supported", at: i)
                } else {
                    return refuse(&events, "a chunk size must be hexadecimal digits", at: i)
                }
                if chunkLine > limits.lineBytes {
                    return refuse(&events, "a chunk size line is longer than \(limits.lineBytes) bytes", at: i)
                }
                i += 1

            case .chunkData(let remaining):
                let take = min(remaining, count - i)
                body(i..<(i + take))
                i += take
                state = take == remaining ? .chunkEnd(sawCR: false) : .chunkData(remaining: remaining - take)

            case .chunkEnd(let sawCR):
                let byte = input[i]
                guard byte == (sawCR ? Self.lf : Self.cr) else {
                    return refuse(&events, "chunk data is not followed by CRLF", at: i)
                }
                i += 1
                if sawCR {
                    state = .chunkSize(digits: 0, value: 0, sawCR: false)
                    chunkLine = 0
                } else {
                    state = .chunkEnd(sawCR: true)
                }

            case .trailerEnd(let sawCR):
                let byte = input[i]
                if !sawCR {
                    guard byte == Self.cr else {
                        return refuse(&events, "trailer fields after a chunked body are not supported", at: i)
                    }
                    state = .trailerEnd(sawCR: true)
                    i += 1
                } else {
                    guard byte == Self.lf else {
                        return refuse(&events, "the chunked body does not end in CRLF", at: i)
                    }
                    i += 1
                    endRequest(&events, at: i)
                }
            }
        }
        return events
    }

    /// Ends the current request at index `i` of the input.
    private mutating func endRequest(_ events: inout [Event], at i: Int) {
        events.append(.end(at: offset + i))
        let keepAlive = current?.keepAlive ?? false
        current = nil
        state = keepAlive ? .betweenRequests(sawCR: false) : .closed
    }

    /// Refuses the stream at index `i` of the input.
    private mutating func refuse(_ events: inout [Event], _ reason: String, at i: Int) -> [Event] {
        events.append(.refused(Refusal(reason: reason, at: offset + i)))
        state = .refused
        current = nil
        head = []
        return events
    }

    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")

    /// The index of the first `byte` in `input[from..<to]`.
    static func find(_ byte: UInt8, in input: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
        guard from < to, let base = input.baseAddress else { return nil }
        guard let found = memchr(base + from, Int32(byte), to - from) else { return nil }
        return base.distance(to: UnsafeRawPointer(found))
    }

    static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// RFC 9110 `tchar`: the characters of a method and a header name.
    package static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"),
            UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }
}

extension HTTPFraming {
    /// Reads a head line by line and keeps what decides the framing.
    struct HeadReader: Sendable, Equatable {
        var method: [UInt8] = []
        var target: [UInt8] = []
        var minorVersion = 1
        var fields: [Field] = []
        var contentLength: Int?
        var chunked = false
        var sawTransferEncoding = false
        var connectionClose = false
        var connectionKeepAlive = false
        var sawRequestLine = false

        /// Reads one line (without its CRLF); returns why the head is refused, or nil.
        mutating func read(line: UnsafeBufferPointer<UInt8>, limits: Limits) -> String? {
            if !sawRequestLine {
                sawRequestLine = true
                return readRequestLine(line, limits: limits)
            }
            if fields.count == limits.headerFields {
                return "the request head has more than \(limits.headerFields) header fields"
            }
            let first = line[0]
            if first == Self.space || first == Self.tab {
                return "a header line starts with whitespace (obs-fold is not accepted)"
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return "a header line has no colon" }
            let name = UnsafeBufferPointer(rebasing: line[0..<colon])
            guard colon > 0, Self.allTokenBytes(name) else {
                return "a header name holds a character that is not allowed (or whitespace before its colon)"
            }
            // The value: leading whitespace skipped; control characters other than HTAB refused.
            var valueStart = colon + 1
            while valueStart < line.count, line[valueStart] == Self.space || line[valueStart] == Self.tab {
                valueStart += 1
            }
            var index = valueStart
            while index < line.count {
                let b = line[index]
                if (b < 0x20 && b != Self.tab) || b == 0x7F { return "a header value holds a control character" }
                index += 1
            }
            let value = UnsafeBufferPointer(rebasing: line[valueStart..<line.count])
            var trimmedEnd = line.count
            while trimmedEnd > valueStart, line[trimmedEnd - 1] == Self.space || line[trimmedEnd - 1] == Self.tab {
                trimmedEnd -= 1
            }
            let trimmed = UnsafeBufferPointer(rebasing: line[valueStart..<trimmedEnd])

            // Only names of the length of one that matters are compared.
            switch name.count {
            case 14 where Self.equalsIgnoringCase(name, "content-length"):
                guard contentLength == nil else { return "Content-Length is given more than once" }
                guard !sawTransferEncoding else { return "Content-Length and Transfer-Encoding are given together" }
                // No trailing whitespace either (llhttp and Go refuse it too).
                guard !value.isEmpty, Self.allDigits(value) else { return "Content-Length must be a decimal number" }
                var digits = value[...]
                while digits.count > 1, digits.first == UInt8(ascii: "0") { digits = digits.dropFirst() }
                guard digits.count <= 18 else { return "Content-Length is too large" }
                var length = 0
                for d in digits { length = length * 10 + Int(d - UInt8(ascii: "0")) }
                contentLength = length
            case 17 where Self.equalsIgnoringCase(name, "transfer-encoding"):
                guard !sawTransferEncoding else { return "Transfer-Encoding is given more than once" }
                guard contentLength == nil else { return "Content-Length and Transfer-Encoding are given together" }
                sawTransferEncoding = true
                guard Self.equalsIgnoringCase(trimmed, "chunked") else {
                    return "Transfer-Encoding must be chunked (no other transfer coding is supported)"
                }
                chunked = true
            case 10 where Self.equalsIgnoringCase(name, "connection"):
                for element in trimmed.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                    var token = element[...]
                    while let b = token.first, b == Self.space || b == Self.tab { token = token.dropFirst() }
                    while let b = token.last, b == Self.space || b == Self.tab { token = token.dropLast() }
                    if token.isEmpty { continue }
                    let bytes = UnsafeBufferPointer(rebasing: token)
                    guard Self.allTokenBytes(bytes) else { return "Connection must be a list of tokens" }
                    if Self.equalsIgnoringCase(bytes, "close") { connectionClose = true }
                    if Self.equalsIgnoringCase(bytes, "keep-alive") { connectionKeepAlive = true }
                }
            case 7 where Self.equalsIgnoringCase(name, "upgrade"):
                return "protocol upgrades (Upgrade) are not supported"
            default:
                break
            }
            fields.append(
                Field(name: String(decoding: name, as: UTF8.self), value: String(decoding: trimmed, as: UTF8.self))
            )
            return nil
        }

        mutating func readRequestLine(_ line: UnsafeBufferPointer<UInt8>, limits: Limits) -> String? {
            let malformed = "the request line must be METHOD SP target SP HTTP/1.1"
            guard let space1 = line.firstIndex(of: Self.space) else { return malformed }
            let method = UnsafeBufferPointer(rebasing: line[0..<space1])
            guard !method.isEmpty, Self.allTokenBytes(method) else { return malformed }
            guard method.count <= limits.methodBytes else {
                return "the method is longer than \(limits.methodBytes) bytes"
            }
            let rest = UnsafeBufferPointer(rebasing: line[(space1 + 1)...])
            guard let space2 = rest.firstIndex(of: Self.space) else { return malformed }
            let target = UnsafeBufferPointer(rebasing: rest[0..<space2])
            guard !target.isEmpty else { return malformed }
            for b in target where b <= 0x20 || b >= 0x7F { return malformed }
            guard target[0] == UInt8(ascii: "/") || (target.count == 1 && target[0] == UInt8(ascii: "*")) else {
                return "the request target must be a path starting with / (or *)"
            }
            let version = UnsafeBufferPointer(rebasing: rest[(space2 + 1)...])
            if version.elementsEqual("HTTP/1.1".utf8) {
                minorVersion = 1
            } else if version.elementsEqual("HTTP/1.0".utf8) {
                minorVersion = 0
            } else {
                return "the HTTP version must be HTTP/1.1 or HTTP/1.0"
            }
            self.method = Array(method)
            self.target = Array(target)
            return nil
        }

        static let space = UInt8(ascii: " ")
        static let tab = UInt8(ascii: "\t")

        static func allTokenBytes(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
            for b in bytes where !HTTPFraming.isTokenByte(b) { return false }
            return true
        }

        static func allDigits(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
            for b in bytes where b < UInt8(ascii: "0") || b > UInt8(ascii: "9") { return false }
            return true
        }

        /// The accepted head once its empty line arrived.
        func finish(start: Int) -> Result<Head, Refusal> {
            if chunked && minorVersion == 0 {
                return .failure(Refusal(reason: "Transfer-Encoding is not allowed in an HTTP/1.0 request", at: start))
            }
            let body: BodyFraming
            if chunked {
                body = .chunked
            } else if let length = contentLength, length > 0 {
                body = .length(length)
            } else {
                body = .none
            }
            // HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive` (for HTTP/1.0, `close` is not
            // looked at, as llhttp, NIO's parser, decides it).
            let keepAlive = minorVersion == 1 ? !connectionClose : connectionKeepAlive
            return .success(
                Head(
                    method: String(decoding: method, as: UTF8.self),
                    target: String(decoding: target, as: UTF8.self),
                    fields: fields,
                    minorVersion: minorVersion,
                    body: body,
                    keepAlive: keepAlive,
                    start: start
                )
            )
        }

        static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
            guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
            return lowercase.withUTF8Buffer { expected in
                for index in 0..<bytes.count {
                    let b = bytes[index]
                    let folded = b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b + 32 : b
                    if folded != expected[index] { return false }
                }
                return true
            }
        }
    }
}

extension [HTTPFraming.Field] {
    /// The value of the fields named `lowercaseName` (names compare ASCII case-insensitively); the
    /// values of several are joined with ", ", as for a list-valued field; nil when there is none.
    package subscript(lowercaseName: String) -> String? {
        var found: String?
        for field in self where Self.nameMatches(field.name, lowercaseName) {
            found = found.map { $0 + ", " + field.value } ?? field.value
        }
        return found
    }

    static func nameMatches(_ name: String, _ lowercase: String) -> Bool {
        guard name.utf8.count == lowercase.utf8.count else { return false }
        var (name, lowercase) = (name, lowercase)
        return name.withUTF8 { a in
            lowercase.withUTF8 { b in
                for i in 0..<a.count
                where (a[i] >= UInt8(ascii: "A") && a[i] <= UInt8(ascii: "Z") ? a[i] + 32 : a[i]) != b[i] {
                    return false
                }
                return true
            }
        }
    }
}
