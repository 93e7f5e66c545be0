import Coffer
import CofferCore
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// After the HTTP codec: restores the methods ``RequestFramer`` replaced, answers a refused request
/// stream with a 400 that says what was wrong, closes the connection after the response to the last
/// request it may carry (`Connection: close`, HTTP/1.0, a refusal), and closes a connection that
/// stays idle for `idle` after its last response (Vault's `http_idle_timeout`).
final class RequestGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// A request whose head arrived and whose response has not ended yet.
    struct Open {
        var keepAlive: Bool
        /// The framing was refused while its body was being read: its response becomes the 400.
        var refused = false
    }

    let idle: TimeAmount
    var framer: RequestFramer?
    var open: CircularBuffer<Open> = []
    /// A head arrived and its end has not.
    var reading = false
    /// Why the stream was refused, once it was.
    var refusal: String?
    /// The response being written is the 400 for a refusal: the original's parts are dropped.
    var replacing = false
    /// The connection ends after the response being written.
    var closeAfterResponse = false
    /// The last response was written and the connection is closing: nothing more goes out.
    var closing = false
    /// When the connection closes if no request starts; nil while a request is under way.
    var idleDeadline: NIODeadline?
    /// Fires at or before `idleDeadline`; not moved by each request (see ``RequestFramer/timer``).
    var idleTimer: Scheduled<Void>?

    init(idle: TimeAmount) {
        self.idle = idle
    }

    func handlerAdded(context: ChannelHandlerContext) {
        framer = try? context.pipeline.syncOperations.handler(type: RequestFramer.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(var head):
            idleDeadline = nil
            reading = true
            let pending = framer?.nextPending()
            open.append(Open(keepAlive: pending?.keepAlive ?? true))
            if let original = pending?.originalMethod {
                head.method = HTTPRequest.Method(original) ?? HTTPRequest.Method("UNKNOWN")!
                return context.fireChannelRead(wrapInboundOut(.head(head)))
            }
        case .end:
            reading = false
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let refused = error as? FramingRefused else { return context.fireErrorCaught(error) }
        refusal = refused.reason
        if reading, !open.isEmpty {
            open[open.index(before: open.endIndex)].refused = true
        }
        // WireHandler answers a parser error with 400 and ends the connection; the 400 is given a
        // body that says why (below).
        context.fireErrorCaught(HTTPParserError.invalidHeaderToken)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if closing {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head(var response):
            // The response to the refused request, or the one WireHandler writes for the parser error.
            if let refusal, open.first?.refused ?? true {
                replacing = true
                closeAfterResponse = true
                writeRefusal(context, refusal, promise: promise)
                return
            }
            if let first = open.first, !first.keepAlive {
                closeAfterResponse = true
                response.headerFields[.connection] = "close"
                return context.write(wrapOutboundOut(.head(response)), promise: promise)
            }
            // A response that announces the end of the connection (413 with the rest of the body unread) ends it.
            closeAfterResponse = response.headerFields[.connection]?.lowercased() == "close"
        case .body:
            if replacing {
                promise?.succeed()
                return
            }
        case .end:
            _ = open.popFirst()
            let close = closeAfterResponse
            replacing = false
            closeAfterResponse = false
            if close {
                closing = true
                let written = promise ?? context.eventLoop.makePromise()
                context.writeAndFlush(data, promise: written)
                let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
                written.futureResult.whenComplete { _ in Self.lingeringClose(loopBound.value) }
                return
            }
            if open.isEmpty { armIdle(context) }
        }
        context.write(data, promise: promise)
    }

    /// `400 {"errors":["malformed request: <reason>"]}`, and the connection closes after it.
    private func writeRefusal(_ context: ChannelHandlerContext, _ reason: String, promise: EventLoopPromise<Void>?) {
        let body = JSONValue.object(["errors": [.string("malformed request: " + reason)]]).serialized()
        var buffer = context.channel.allocator.buffer(capacity: body.count + 1)
        buffer.writeBytes(body)
        buffer.writeInteger(UInt8(ascii: "\n"))
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store", .connection: "close"]
        headers[.contentLength] = String(buffer.readableBytes)
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .badRequest, headerFields: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(buffer)), promise: promise)
    }

    /// Closes the sending side first (the client reads the response, then the end of the stream) and
    /// the connection half a second later, as Go's server does: a close with unread request bytes
    /// still arriving would make the kernel send a reset that can destroy the response in flight.
    /// What arrives meanwhile is read and dropped (``RequestFramer`` frames nothing more).
    static func lingeringClose(_ context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let halfClosed = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: halfClosed)
        halfClosed.futureResult.whenComplete { result in
            let context = loopBound.value
            guard context.channel.isActive else { return }
            if case .failure = result { return context.close(promise: nil) }
            context.eventLoop.scheduleTask(in: .milliseconds(500)) {
                loopBound.value.close(promise: nil)
            }
        }
    }

    private func armIdle(_ context: ChannelHandlerContext) {
        let due = NIODeadline.now() + idle
        idleDeadline = due
        if idleTimer == nil { scheduleIdleCheck(context, at: due) }
    }

    private func scheduleIdleCheck(_ context: ChannelHandlerContext, at due: NIODeadline) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: due) {
            let (guard_, context) = loopBound.value
            guard_.idleTimer = nil
            guard let deadline = guard_.idleDeadline else { return }  // a request is under way
            if deadline <= .now() {
                context.close(promise: nil)
            } else {
                guard_.scheduleIdleCheck(context, at: deadline)
            }
        }
    }
}
