import Coffer
import CofferCore
import HummingbirdCore
import Logging
import NIOCore
import NIOWebSocket

/// `GET /v1/sys/events/subscribe/<event type glob>?json=true` upgraded to a WebSocket (RFC 6455):
/// one text frame per event, Vault's CloudEvents JSON (docs/events.md).
///
/// The first handler after the socket (or TLS) looks at a connection's first request. When it is a
/// WebSocket upgrade for `sys/events/subscribe/`, this handler answers it itself: the token
/// (`X-Vault-Token`), the namespace (`X-Vault-Namespace`) and `json=true` are checked, an error is
/// an HTTP response with Vault's `{"errors":[...]}` body, and on success the 101 response goes out,
/// the HTTP handlers' timers are removed, and ``EventsWebSocketSession`` serves the connection.
/// Any other first request, and every later one, passes through untouched to ``HTTPCodec``
/// (which refuses an `Upgrade` anywhere else). Upgrading a later request of a keep-alive
/// connection is not supported: clients (`vault events subscribe`, Python's `websockets`) open a
/// new connection for it.
final class EventsUpgradeSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let prefix = Array("GET /v1/sys/events/subscribe/".utf8)
    /// A head larger than this is not looked at (the HTTP path refuses it as it would any other).
    static let maxHead = 16 * 1024

    let vault: Vault
    let logger: Logger
    var buffered: ByteBuffer?
    var passing = false
    var upgraded = false

    init(vault: Vault, logger: Logger) {
        self.vault = vault
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if passing { return context.fireChannelRead(data) }
        if upgraded { return }
        var input = unwrapInboundIn(data)
        if buffered == nil {
            buffered = input
        } else {
            buffered!.writeBuffer(&input)
        }
        let bytes = buffered!.readableBytesView
        // Not (or no longer possibly) an events upgrade: hand everything on and step aside.
        let compared = min(bytes.count, Self.prefix.count)
        if !bytes.prefix(compared).elementsEqual(Self.prefix.prefix(compared)) || bytes.count > Self.maxHead {
            return passOn(context)
        }
        guard let end = Self.headEnd(bytes) else { return }  // wait for the rest of the head
        guard let head = UpgradeHead(Array(bytes.prefix(end))), head.isWebSocketUpgrade else {
            return passOn(context)
        }
        let rest = buffered!.getSlice(at: buffered!.readerIndex + end, length: bytes.count - end)
        buffered = nil
        upgrade(context, head, rest: rest)
    }

    private func passOn(_ context: ChannelHandlerContext) {
        passing = true
        if let all = buffered {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(all))
        }
        // Not an events connection: out of the way of every later read.
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// The offset just past the `\r\n\r\n` that ends the head, if it arrived.
    static func headEnd(_ bytes: ByteBufferView) -> Int? {
        let array = Array(bytes)
        guard array.count >= 4 else { return nil }
        for i in 0...(array.count - 4)
        where array[i] == 13 && array[i + 1] == 10 && array[i + 2] == 13 && array[i + 3] == 10 {
            return i + 4
        }
        return nil
    }

    private func upgrade(_ context: ChannelHandlerContext, _ head: UpgradeHead, rest: ByteBuffer?) {
        upgraded = true
        let channel = context.channel
        guard head.version == "13", let key = head.header("sec-websocket-key"), !key.isEmpty else {
            return refuse(context, 400, "a WebSocket upgrade needs Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key")
        }
        guard head.query["json"] == "true" else {
            return refuse(
                context,
                400,
                "Coffer sends events as JSON only: add ?json=true to sys/events/subscribe (Vault's default is protobuf)"
            )
        }
        let loop = context.eventLoop
        let box = SessionBox()
        let subscription: EventSubscription
        do {
            subscription = try vault.networkEventSubscription(
                token: head.header("x-vault-token"),
                pattern: head.pattern,
                namespace: head.header("x-vault-namespace") ?? "",
                clientAddress: channel.remoteAddress?.ipAddress ?? "",
                wake: { _ in loop.execute { box.session?.drain() } }
            )
        } catch {
            let status =
                switch error.code {
                case .permissionDenied: 403
                case .notFound: 404
                case .sealed: 503
                default: 400
                }
            return refuse(context, status, error.message)
        }
        // The HTTP path's deadlines (read, header, idle) are for requests: a subscription lasts.
        let pipeline = context.pipeline.syncOperations
        if let codec = try? pipeline.handler(type: HTTPCodec.self) { _ = pipeline.removeHandler(codec) }

        let session = EventsWebSocketSession(subscription: subscription, bus: vault.eventBus, logger: logger)
        box.session = session
        do {
            try pipeline.addHandlers(
                [
                    ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 64 * 1024)), WebSocketFrameEncoder(),
                    session,
                ],
                position: .after(self)
            )
        } catch {
            channel.close(promise: nil)
            return
        }
        // On the bus before the 101 goes out: a client that writes as soon as it sees the 101 (on
        // another connection, maybe another event loop) gets the event. The session's first drain is
        // queued on this event loop, so it writes after the 101.
        vault.eventBus.add(subscription)
        let accept = Base64.encode(SHA1.hash(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
        let response =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(accept)\r\n\r\n"
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
        passing = true
        if let rest, rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
    }

    private func refuse(_ context: ChannelHandlerContext, _ status: Int, _ message: String) {
        let body = JSONValue.object(["errors": [.string(message)]]).serialized() + [10]
        let reason =
            switch status {
            case 403: "Forbidden"
            case 404: "Not Found"
            case 503: "Service Unavailable"
            default: "Bad Request"
            }
        var buffer = context.channel.allocator.buffer(
            string: "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        )
        buffer.writeBytes(body)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Lets the subscription's wake find the session made after it.
private final class SessionBox: @unchecked Sendable {
    // Set and read on the channel's event loop only.
    var session: EventsWebSocketSession?
}

/// A subscribed WebSocket: drains the subscription's queue into text frames while the socket can
/// take them. A client that does not read fills the socket, then NIO's buffer (the channel stops
/// being writable), then the subscription's bounded queue: the bus then closes the subscription and
/// this sends a Close frame (1008, with the reason) and ends the connection. Pings are answered;
/// a Close from the client ends it too.
final class EventsWebSocketSession: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let subscription: EventSubscription
    let bus: EventBus
    let logger: Logger
    var context: ChannelHandlerContext?
    var closing = false

    init(subscription: EventSubscription, bus: EventBus, logger: Logger) {
        self.subscription = subscription
        self.bus = bus
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        end()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    private func end() {
        bus.remove(subscription.id)
        subscription.close(reason: "the connection closed")
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drain() }
        context.fireChannelWritabilityChanged()
    }

    /// Sends what is queued (on the event loop).
    func drain() {
        guard let context, !closing else { return }
        if let reason = subscription.closedReason {
            logger.info("events subscriber dropped", metadata: ["reason": "\(reason)"])
            return close(context, code: .policyViolation, reason: reason)
        }
        var wrote = false
        while context.channel.isWritable {
            let events = subscription.take()
            for event in events {
                let json = event.cloudEvent().serialized()
                let frame = WebSocketFrame(
                    fin: true,
                    opcode: .text,
                    data: context.channel.allocator.buffer(bytes: json)
                )
                context.write(wrapOutboundOut(frame), promise: nil)
                wrote = true
            }
            if subscription.settle() { break }
        }
        if wrote { context.flush() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            close(context, code: .normalClosure, reason: "")
        default:
            break  // the subscription takes no input
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context, code: .protocolError, reason: "malformed WebSocket frame")
    }

    private func close(_ context: ChannelHandlerContext, code: WebSocketErrorCode, reason: String) {
        guard !closing else { return }
        closing = true
        end()
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        // A Close frame's reason is at most 123 bytes.
        data.writeBytes(reason.utf8.prefix(123))
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// The parts of an upgrade request's head that matter here.
struct UpgradeHead {
    let target: String
    let headers: [(String, String)]

    /// nil for a head that is not `GET <target> HTTP/1.1` with headers.
    init?(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: true)
        guard !lines.isEmpty else { return nil }
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count == 3, requestLine[0] == "GET", requestLine[2] == "HTTP/1.1" else { return nil }
        target = String(requestLine[1])
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces()
            headers.append((name, String(value)))
        }
        self.headers = headers
    }

    func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }

    var version: String? { header("sec-websocket-version") }

    var isWebSocketUpgrade: Bool {
        (header("upgrade")?.lowercased() == "websocket")
            && (header("connection")?.lowercased().split(separator: ",").contains { $0.trimmingSpaces() == "upgrade" }
                ?? false)
    }

    /// The glob after `/v1/sys/events/subscribe/`, percent-decoded (`kv%2A` is `kv*`).
    var pattern: String {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        let raw = path.dropFirst("/v1/sys/events/subscribe/".count)
        return Self.percentDecoded(String(raw))
    }

    var query: [String: String] {
        let parts = target.split(separator: "?", maxSplits: 1)
        guard parts.count == 2 else { return [:] }
        var out: [String: String] = [:]
        for pair in parts[1].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            out[Self.percentDecoded(String(kv[0]))] = kv.count > 1 ? Self.percentDecoded(String(kv[1])) : ""
        }
        return out
    }

    static func percentDecoded(_ s: String) -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%"), bytes.count >= 2,
                let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16)
            {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}

/// SHA-1 (FIPS 180-4), for the WebSocket handshake's Sec-WebSocket-Accept only (RFC 6455 fixes it;
/// it protects nothing here).
enum SHA1 {
    static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0]
        var data = message
        let bitLength = UInt64(message.count) &* 8
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        for i in (0..<8).reversed() { data.append(UInt8(truncatingIfNeeded: bitLength >> (UInt64(i) * 8))) }
        var w = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                let j = chunk + i * 4
                w[i] =
                    UInt32(data[j]) << 24 | UInt32(data[j + 1]) << 16 | UInt32(data[j + 2]) << 8 | UInt32(data[j + 3])
            }
            for i in 16..<80 {
                let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
                w[i] = x << 1 | x >> 31
            }
            var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
            for i in 0..<80 {
                let (f, k): (UInt32, UInt32) =
                    switch i {
                    case 0..<20: ((b & c) | (~b & d), 0x5A82_7999)
                    case 20..<40: (b ^ c ^ d, 0x6ED9_EBA1)
                    case 40..<60: ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC)
                    default: (b ^ c ^ d, 0xCA62_C1D6)
                    }
                let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[i]
                (e, d, c, b, a) = (d, c, b << 30 | b >> 2, a, temp)
            }
            h[0] = h[0] &+ a
            h[1] = h[1] &+ b
            h[2] = h[2] &+ c
            h[3] = h[3] &+ d
            h[4] = h[4] &+ e
        }
        return h.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - $0 * 8)) } }
    }
}
