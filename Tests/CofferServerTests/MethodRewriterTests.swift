@testable import CofferServer
import NIOCore
import NIOEmbedded
import Testing

/// Feeds MethodRewriter a byte stream split at every position and checks what the parser would see.
@Suite struct MethodRewriterTests {
    static let body = #"{"data":{"x":"LIST /v1/ HTTP/1.1"}}"#
    static let stream =
        "PUT /v1/secret/data/a HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        + "LIST /v1/secret/metadata HTTP/1.1\r\nHost: x\r\n\r\n"
        + "\r\nGET /v1/secret/data/a HTTP/1.1\r\ncontent-length:0\r\n\r\n"
        + "SCAN /v1/secret/metadata HTTP/1.1\r\nHost: x\r\n\r\n"
    static let expected =
        "PUT /v1/secret/data/a HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        + "GET /v1/secret/metadata HTTP/1.1\r\nHost: x\r\n\r\n"
        + "\r\nGET /v1/secret/data/a HTTP/1.1\r\ncontent-length:0\r\n\r\n"
        + "GET /v1/secret/metadata HTTP/1.1\r\nHost: x\r\n\r\n"

    func run(_ pieces: [String]) throws -> (String, [String?]) {
        let rewriter = MethodRewriter()
        let channel = EmbeddedChannel(handler: rewriter)
        for piece in pieces {
            try channel.writeInbound(ByteBuffer(string: piece))
        }
        var out = ""
        while let buffer = try channel.readInbound(as: ByteBuffer.self) {
            out += String(buffer: buffer)
        }
        var originals: [String?] = []
        while !rewriter.originals.isEmpty { originals.append(rewriter.nextOriginal()) }
        _ = try channel.finish()
        return (out, originals)
    }

    @Test func rewritesOnlyMethodTokensWhereverTheStreamIsSplit() throws {
        let bytes = Array(Self.stream.utf8)
        for cut in 0...bytes.count {
            let pieces = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            let (out, originals) = try run(pieces)
            #expect(out == Self.expected, "split at \(cut)")
            #expect(originals == [nil, "LIST", nil, "SCAN"], "split at \(cut)")
        }
        let (out, _) = try run(Self.stream.map { String($0) })  // one byte at a time
        #expect(out == Self.expected)
    }

    @Test func stopsRewritingAfterAChunkedBody() throws {
        let stream = "POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nLIST\r\n0\r\n\r\nLIST /v1/y HTTP/1.1\r\n\r\n"
        let (out, originals) = try run([stream])
        #expect(out == stream, "nothing is changed once the framing is not followed")
        #expect(originals == [nil])
    }
}
