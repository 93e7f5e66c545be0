import NIOCore

/// Lets Vault's `LIST` verb (and any other method) through NIO's HTTP/1 parser.
///
/// llhttp, the parser under swift-nio, knows a fixed list of methods and answers anything else,
/// `LIST` included, with 400 before a handler sees it. The Go api client and hvac send `LIST`.
/// This handler sits in front of the parser, follows the request framing (request line, headers,
/// `Content-Length` body), replaces a method token the parser does not know with `GET`, and queues
/// the original name; ``RequestGuard``, after the parser, puts it back on the request head.
///
/// It never changes anything else. On a body it cannot frame (chunked), it stops rewriting for the
/// rest of the connection: a later unknown method there gets the parser's 400, nothing worse.
final class MethodRewriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Methods llhttp accepts and Vault clients use; every other token is rewritten.
    static let parserMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

    enum State {
        /// At a request start, collecting the method token (withheld until complete).
        case method([UInt8])
        /// In the request line or headers; `line` holds the start of the current line.
        case head(line: [UInt8], contentLength: Int, chunked: Bool)
        case body(remaining: Int)
        case off
    }

    var state = State.method([])
    /// The original method of each request whose head the parser has not produced yet (nil: unchanged).
    var originals: CircularBuffer<String?> = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .off = state { return context.fireChannelRead(data) }
        let input = unwrapInboundIn(data)
        let view = input.readableBytesView
        var output: ByteBuffer?
        var copied = view.startIndex  // bytes of `view` before this index are already in `output`
        func replace(upTo index: Int, with bytes: some Collection<UInt8>) {
            if output == nil { output = context.channel.allocator.buffer(capacity: view.count + 8) }
            output!.writeBytes(view[copied..<index])
            output!.writeBytes(bytes)
        }

        var i = view.startIndex
        while i < view.endIndex {
            switch state {
            case .off:
                i = view.endIndex
            case .body(let remaining):
                let take = min(remaining, view.endIndex - i)
                i += take
                state = remaining == take ? .method([]) : .body(remaining: remaining - take)
            case .method(var token):
                let byte = view[i]
                if token.isEmpty, byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") {
                    i += 1  // stray line ends between requests: not part of the method, passed on as they are
                    continue
                }
                if byte != UInt8(ascii: " ") {
                    token.append(byte)
                    i += 1
                    if token.count > 32 {
                        // Not a method: stop withholding and let the parser reject the bytes itself.
                        replace(upTo: i - min(token.count, i - view.startIndex), with: token)
                        copied = i
                        originals.append(nil)
                        state = .head(line: [], contentLength: 0, chunked: false)
                    } else {
                        state = .method(token)
                    }
                    continue
                }
                // The token is complete. It was withheld: write it (or GET) where it started.
                let name = String(decoding: token, as: UTF8.self)
                let known = Self.parserMethods.contains(name)
                originals.append(known ? nil : name)
                let startedHere = token.count <= i - view.startIndex
                let start = startedHere ? i - token.count : view.startIndex
                if !known {
                    replace(upTo: start, with: Array("GET".utf8))
                    copied = i
                } else if !startedHere {
                    replace(upTo: start, with: token)
                    copied = i
                }
                state = .head(line: [], contentLength: 0, chunked: false)
            case .head(var line, var contentLength, var chunked):
                let byte = view[i]
                i += 1
                guard byte == UInt8(ascii: "\n") else {
                    if line.count < 64 { line.append(byte) }
                    state = .head(line: line, contentLength: contentLength, chunked: chunked)
                    continue
                }
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                if line.isEmpty {
                    state = chunked ? .off : contentLength > 0 ? .body(remaining: contentLength) : .method([])
                    continue
                }
                let text = String(decoding: line, as: UTF8.self).lowercased()
                if text.hasPrefix("content-length:") {
                    contentLength = Int(text.dropFirst("content-length:".count).filter { $0 != " " && $0 != "\t" }) ?? 0
                } else if text.hasPrefix("transfer-encoding:") {
                    chunked = true
                }
                state = .head(line: [], contentLength: contentLength, chunked: chunked)
            }
        }
        // A method token still being collected at the end of the read stays withheld.
        if case .method(let token) = state, !token.isEmpty {
            let start = view.endIndex - min(token.count, view.count)
            if output != nil || start > copied {
                replace(upTo: start, with: EmptyCollection())
            } else if output == nil {
                output = context.channel.allocator.buffer(capacity: 0)
            }
            copied = view.endIndex
        }
        if var out = output {
            out.writeBytes(view[copied..<view.endIndex])
            if out.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(out)) }
        } else {
            context.fireChannelRead(data)
        }
    }

    /// The original method of the next request head, if this handler changed it.
    func nextOriginal() -> String? {
        originals.isEmpty ? nil : originals.removeFirst()
    }
}
