import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// The connection's setup: ``MethodRewriter`` in front of Hummingbird's HTTP/1 pipeline.
struct CofferHTTPChannel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(MethodRewriter())
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// After the HTTP codec: restores methods ``MethodRewriter`` replaced, and closes a connection
/// whose next request head does not arrive in time: within `first` of the connection opening
/// (Vault's `http_read_header_timeout`), or within `next` of the previous response (its
/// `http_idle_timeout`). This bounds slow-header clients, which an idle timer alone does not
/// (every dribbled byte resets it).
final class RequestGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let first: TimeAmount
    let next: TimeAmount
    var rewriter: MethodRewriter?
    /// Requests whose head arrived and whose response has not ended yet.
    var open = 0
    var timer: Scheduled<Void>?

    init(first: TimeAmount, next: TimeAmount) {
        self.first = first
        self.next = next
    }

    func handlerAdded(context: ChannelHandlerContext) {
        rewriter = try? context.pipeline.syncOperations.handler(type: MethodRewriter.self)
        arm(context, first)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        open += 1
        timer?.cancel()
        timer = nil
        if let original = rewriter?.nextOriginal() {
            head.method = HTTPRequest.Method(original) ?? HTTPRequest.Method("UNKNOWN")!
            return context.fireChannelRead(wrapInboundOut(.head(head)))
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            open = max(0, open - 1)
            if open == 0 { arm(context, next) }
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext, _ delay: TimeAmount) {
        timer?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            loopBound.value.close(promise: nil)
        }
    }
}
