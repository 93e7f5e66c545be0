import Testing

@testable import CofferServer
@testable import CofferServerCore

/// HTTPFraming over byte streams, fed whole, split at every position and byte by byte: where each
/// request ends, its head and body, and what is refused and why.
@Suite struct HTTPFramingTests {
    struct Outcome: Equatable {
        /// The body bytes of every request, one after the other.
        var body: [UInt8] = []
        var heads: [HTTPFraming.Head] = []
        var ends: [Int] = []
        var starts: [Int] = []
        var refusal: HTTPFraming.Refusal?

        var text: String { String(decoding: body, as: UTF8.self) }
    }

    static func run(_ pieces: [[UInt8]], limits: HTTPFraming.Limits = .init()) -> Outcome {
        var framing = HTTPFraming(limits: limits)
        var outcome = Outcome()
        for piece in pieces {
            for event in framing.feed(piece) {
                switch event {
                case .requestStarted(let at): outcome.starts.append(at)
                case .head(let head): outcome.heads.append(head)
                case .body(let range): outcome.body += piece[range]
                case .end(let at): outcome.ends.append(at)
                case .refused(let refusal):
                    #expect(outcome.refusal == nil, "refused twice")
                    outcome.refusal = refusal
                }
            }
        }
        return outcome
    }

    static func run(_ text: String, limits: HTTPFraming.Limits = .init()) -> Outcome {
        run([Array(text.utf8)], limits: limits)
    }

    /// The same outcome whether the stream arrives whole, in two pieces split anywhere, or byte by byte.
    static func runSplitEverywhere(_ text: String) -> Outcome {
        let bytes = Array(text.utf8)
        let whole = run([bytes])
        for cut in 0...bytes.count {
            let split = run([Array(bytes[..<cut]), Array(bytes[cut...])])
            #expect(split == whole, "split at \(cut)")
        }
        #expect(run(bytes.map { [$0] }) == whole, "byte by byte")
        return whole
    }

    static let body = #"{"data":{"x":"LIST /v1/ HTTP/1.1"}}"#

    @Test func framesEveryRequestWhateverItsMethodAndKeepsItsFields() {
        let put =
            "PUT /v1/secret/data/a HTTP/1.1\r\nHost: x\r\nContent-Length: \(Self.body.utf8.count)\r\n\r\n\(Self.body)"
        let stream =
            put
            + "LIST /v1/secret/metadata HTTP/1.1\r\nHost: x\r\n\r\n"
            + "\r\nGET /v1/secret/data/a HTTP/1.1\r\ncontent-length:0\r\n\r\n"
            + "SCAN /v1/secret/metadata HTTP/1.1\r\nHost: x\r\n\r\n"
        let outcome = Self.runSplitEverywhere(stream)
        #expect(outcome.text == Self.body, "only the PUT has a body")
        #expect(outcome.refusal == nil)
        #expect(outcome.heads.map(\.method) == ["PUT", "LIST", "GET", "SCAN"])
        #expect(
            outcome.heads.map(\.target) == [
                "/v1/secret/data/a", "/v1/secret/metadata", "/v1/secret/data/a", "/v1/secret/metadata",
            ]
        )
        #expect(
            outcome.heads[0].fields == [
                .init(name: "Host", value: "x"), .init(name: "Content-Length", value: "\(Self.body.utf8.count)"),
            ]
        )
        #expect(outcome.heads[2].fields == [.init(name: "content-length", value: "0")])
        #expect(outcome.heads[0].body == .length(Self.body.utf8.count))
        #expect(outcome.ends.first == put.utf8.count)
        #expect(outcome.ends.last == stream.utf8.count)
        #expect(outcome.starts == outcome.heads.map(\.start))
    }

    @Test func zeroPaddedContentLengthIsFramedAsItsValue() {
        // The old pre-parser kept 64 bytes of a header line and read this as 0: the body became the next "request".
        let padding = String(repeating: "0", count: 200)
        let stream =
            "POST /v1/sys/tools/x HTTP/1.1\r\nContent-Length: \(padding)6\r\n\r\nLIST /"
            + "LIST /v1/secret/metadata HTTP/1.1\r\n\r\n"
        let outcome = Self.runSplitEverywhere(stream)
        #expect(outcome.refusal == nil)
        #expect(outcome.heads.map(\.method) == ["POST", "LIST"])
        #expect(outcome.heads[0].body == .length(6))
        #expect(
            outcome.ends == [
                stream.utf8.count - "LIST /v1/secret/metadata HTTP/1.1\r\n\r\n".utf8.count, stream.utf8.count,
            ]
        )
        #expect(outcome.text == "LIST /", "the body is six bytes, whatever they look like")
    }

    @Test func chunkedBodiesAreFramedAndLISTStillWorksAfterThem() {
        let post =
            "POST /v1/x HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n4\r\nLIST\r\n00000A\r\n0123456789\r\n0\r\n\r\n"
        let stream = post + "LIST /v1/y HTTP/1.1\r\n\r\n"
        let outcome = Self.runSplitEverywhere(stream)
        #expect(outcome.refusal == nil)
        #expect(outcome.heads.map(\.method) == ["POST", "LIST"])
        #expect(outcome.heads[0].body == .chunked)
        #expect(outcome.text == "LIST0123456789", "the chunks' data without their framing")
        #expect(outcome.ends == [post.utf8.count, stream.utf8.count])
    }

    @Test func nothingIsFramedAfterARequestThatClosesTheConnection() {
        let after = "GET /v1/b HTTP/1.1\r\n\r\n"
        for (head, keepAlive) in [
            ("GET /v1/a HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET /v1/a HTTP/1.1\r\nConnection: keep-alive, CLOSE\r\n\r\n", false),
            ("GET /v1/a HTTP/1.0\r\n\r\n", false),
            ("GET /v1/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            // llhttp's rule, followed exactly: for HTTP/1.0 keep-alive decides, close is not looked at.
            ("GET /v1/a HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", true),
            ("GET /v1/a HTTP/1.1\r\nConnection: te, ,upgrade\r\n\r\n", true),
        ] {
            let outcome = Self.run(head + after)
            #expect(outcome.refusal == nil, "\(head)")
            #expect(outcome.heads.first?.keepAlive == keepAlive, "\(head)")
            #expect(outcome.heads.count == (keepAlive ? 2 : 1), "\(head)")
            #expect(outcome.heads.last?.target == (keepAlive ? "/v1/b" : "/v1/a"), "\(head)")
        }
    }

    @Test(arguments: [
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "Content-Length is given more than once"
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\nhello",
            "Content-Length is given more than once"
        ),
        ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", "Content-Length must be a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 5 \r\n\r\nhello", "Content-Length must be a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 5,5\r\n\r\nhello", "Content-Length must be a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length:\r\n\r\nhello", "Content-Length must be a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello", "Content-Length must be a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", "Content-Length is too large"),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Content-Length and Transfer-Encoding"
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            "Content-Length and Transfer-Encoding"
        ),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding must be chunked"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", "Transfer-Encoding must be chunked"),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding is given more than once"
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding is not allowed in an HTTP/1.0 request"
        ),
        ("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", "obs-fold"),
        ("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "a bare CR in the request head"),
        ("GET / HTTP/1.1\r\nX: a\n\r\n", "a line ends in LF without CR"),
        ("GET / HTTP/1.1\nX: a\r\n\r\n", "a line ends in LF without CR"),
        ("\rGET / HTTP/1.1\r\n\r\n", "a bare CR before a request line"),
        ("\nGET / HTTP/1.1\r\n\r\n", "a line ends in LF without CR"),
        ("GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n", "a header value holds a control character"),
        ("GET / HTTP/1.1\r\nX: a\u{7F}\r\n\r\n", "a header value holds a control character"),
        ("GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello", "a header name holds a character that is not allowed"),
        ("GET / HTTP/1.1\r\n: x\r\n\r\n", "a header name holds a character that is not allowed"),
        ("GET / HTTP/1.1\r\nno colon\r\n\r\n", "a header line has no colon"),
        ("GET / HTTP/1.1\r\nConnection: close x\r\n\r\n", "Connection must be a list of tokens"),
        (
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "protocol upgrades (Upgrade) are not supported"
        ),
        ("GET  / HTTP/1.1\r\n\r\n", "the request line must be"),
        ("GET / HTTP/1.1 \r\n\r\n", "the HTTP version must be"),
        ("GET / HTTP/1.2\r\n\r\n", "the HTTP version must be"),
        ("GET / HTTP/2.0\r\n\r\n", "the HTTP version must be"),
        ("GET / http/1.1\r\n\r\n", "the HTTP version must be"),
        ("GET http://x/v1/sys/health HTTP/1.1\r\n\r\n", "the request target must be a path"),
        ("GET /a\u{7F} HTTP/1.1\r\n\r\n", "the request line must be"),
        ("G(T / HTTP/1.1\r\n\r\n", "the request line must be"),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
            "chunk extensions are not supported"
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            "a chunk size must be hexadecimal digits"
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            "a chunk size must be hexadecimal digits"
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
            "a chunk size line holds no size"
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            "a chunk size line does not end in CRLF"
        ),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", "a chunk size is too large"),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            "chunk data is not followed by CRLF"
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
            "trailer fields after a chunked body are not supported"
        ),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rx", "the chunked body does not end in CRLF"),
    ])
    func ambiguousFramingIsRefusedWithAReason(stream: String, reason: String) {
        let prefix = "GET /v1/first HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        // Refused at the same byte, for the same reason, however the stream is cut into reads.
        let outcome = Self.runSplitEverywhere(prefix + stream + "GET /v1/after HTTP/1.1\r\n\r\n")
        #expect(outcome.refusal?.reason.contains(reason) == true, "\(outcome.refusal?.reason ?? "accepted")")
        #expect(outcome.heads.first?.target == "/v1/first" && outcome.ends.first == prefix.utf8.count)
        #expect(!outcome.heads.contains { $0.target == "/v1/after" }, "nothing after a refusal is framed")
        // The refused request never reaches the parser whole: no head if the head was refused.
        if outcome.heads.count == 2 { #expect(outcome.ends.count == 1) }
        // The reason never quotes the input.
        #expect(
            !(outcome.refusal?.reason.contains("hello") ?? false) && !(outcome.refusal?.reason.contains("h2c") ?? false)
        )
    }

    @Test func linesHeadsAndFieldCountsAreLimited() {
        var limits = HTTPFraming.Limits()
        limits.lineBytes = 100
        limits.headBytes = 300
        limits.headerFields = 3
        let long = String(repeating: "a", count: 101)
        #expect(
            Self.run("GET /\(long) HTTP/1.1\r\n\r\n", limits: limits).refusal?.reason
                == "a line of the request head is longer than 100 bytes"
        )
        #expect(Self.run("GET / HTTP/1.1\r\nX: \(long)\r\n\r\n", limits: limits).refusal != nil)
        let fields = (1...4).map { "X\($0): y\r\n" }.joined()
        #expect(
            Self.run("GET / HTTP/1.1\r\n\(fields)\r\n", limits: limits).refusal?.reason
                == "the request head has more than 3 header fields"
        )
        let big = (1...3).map { "X\($0): \(String(repeating: "b", count: 90))\r\n" }.joined()
        #expect(
            Self.run("GET / HTTP/1.1\r\n\(big)\r\n", limits: limits).refusal?.reason
                == "the request head is longer than 300 bytes"
        )
        #expect(
            Self.run(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\(String(repeating: "0", count: 101))5\r\n",
                limits: limits
            ).refusal != nil
        )
        // Just within every limit: accepted. A long line is refused as soon as it passes the limit, without waiting for its end.
        #expect(Self.run("GET /\(String(repeating: "a", count: 84)) HTTP/1.1\r\n\r\n", limits: limits).refusal == nil)
        #expect(Self.run("GET /\(long)", limits: limits).refusal != nil)
        // The defaults: 16 KiB a line, 64 KiB a head, 256 fields, a 32-byte method.
        #expect(
            HTTPFraming.Limits()
                == {
                    var l = HTTPFraming.Limits()
                    l.lineBytes = 16384
                    l.headBytes = 65536
                    l.headerFields = 256
                    l.methodBytes = 32
                    return l
                }()
        )
        #expect(
            Self.run("\(String(repeating: "M", count: 33)) / HTTP/1.1\r\n\r\n").refusal?.reason
                == "the method is longer than 32 bytes"
        )
    }

    @Test func aBodyIsHandedOnAsItArrivesAndTheRequestEndsWithIt() {
        var framing = HTTPFraming()
        let head = Array("PUT /v1/a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234".utf8)
        let first = framing.feed(head)
        #expect(first.contains { if case .head = $0 { true } else { false } })
        #expect(!first.contains { if case .end = $0 { true } else { false } })
        #expect(first.last == .body((head.count - 5)..<head.count), "the body's first bytes come with the head")
        #expect(framing.feed(Array("567".utf8)) == [.body(0..<3)])
        #expect(
            framing.feed(Array("89GET".utf8)) == [
                .body(0..<2), .end(at: head.count + 5), .requestStarted(at: head.count + 5),
            ]
        )
    }

    @Test func fieldValuesAreTrimmedAndLookedUpByNameInAnyCase() {
        let stream =
            "GET /v1/a HTTP/1.1\r\nX-Vault-Token: \t s.abc \t\r\nx-vault-request:true\r\nAccept: a\r\n"
            + "ACCEPT: b\r\nEmpty:\r\n\r\n"
        let fields = Self.runSplitEverywhere(stream).heads.first?.fields ?? []
        #expect(fields.map(\.name) == ["X-Vault-Token", "x-vault-request", "Accept", "ACCEPT", "Empty"])
        #expect(fields["x-vault-token"] == "s.abc")
        #expect(fields["x-vault-request"] == "true")
        #expect(fields["accept"] == "a, b", "fields of one name are joined, as a list")
        #expect(fields["empty"] == "")
        #expect(fields["x-vault-namespace"] == nil)
        #expect(fields["x-vault-toke"] == nil && fields["x-vault-tokens"] == nil)
    }

    @Test func responsesAreEncodedWithTheirLengthAndNoInjectedFields() {
        func text(_ answer: WireResponder.Answer, isHead: Bool = false, close: Bool = false) -> String {
            let buffer = WireResponder.encode(answer, isHead: isHead, close: close, allocator: .init())
            return String(decoding: buffer.readableBytesView, as: UTF8.self)
        }
        let common = "Cache-Control: no-store\r\nStrict-Transport-Security: max-age=31536000; includeSubDomains\r\n"
        #expect(
            text((200, Array(#"{"a":1}"#.utf8), false, nil, []))
                == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\(common)Content-Length: 8\r\n\r\n{\"a\":1}\n"
        )
        // HEAD: the length GET would have, no body. A raw body goes as it is, with its own type.
        #expect(
            text((200, Array(#"{"a":1}"#.utf8), false, nil, []), isHead: true)
                == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\(common)Content-Length: 8\r\n\r\n"
        )
        #expect(
            text((200, Array("pem".utf8), false, "application/pem-certificate-chain", []), close: true)
                == "HTTP/1.1 200 OK\r\nContent-Type: application/pem-certificate-chain\r\n\(common)"
                + "Connection: close\r\nContent-Length: 3\r\n\r\npem"
        )
        #expect(
            text((204, nil, false, nil, []))
                == "HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n\(common)\r\n"
        )
        #expect(text((204, Array("{}".utf8), false, nil, [])) == text((204, nil, false, nil, [])), "a 204 has no body")
        // An answer's own fields: a CR or LF in a value cannot start a field; names the encoder owns are not repeated.
        let extra = text(
            (429, nil, false, nil, [("Retry-After", "1\r\nSet-Cookie: x"), ("Content-Length", "9"), ("Bad Name", "v")])
        )
        #expect(
            extra
                == "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\(common)"
                + "Retry-After: 1  Set-Cookie: x\r\nContent-Length: 0\r\n\r\n"
        )
    }
}
