import CofferServerCore
import Logging
import NIOCore

/// One part of a request as ``WireHandler`` receives it.
enum RequestPart {
    case head(HTTPFraming.Head)
    case body(ByteBuffer)
    case end
}

/// A response as ``WireHandler`` writes it: its bytes, status line to body
/// (``WireResponder/encode(_:isHead:close:allocator:)``), and whether the connection ends after it.
struct EncodedResponse {
    var bytes: ByteBuffer
    var close: Bool
}

/// cofferd's HTTP/1.1 codec, the first handler after the socket (or TLS): requests are parsed by
/// ``HTTPFraming`` (which refuses what two parsers could read differently) and handed on as
/// ``RequestPart``s, body bytes as slices of what was read; responses arrive encoded and go out as
/// they are. A refused stream is passed on as a ``FramingRefused`` error, which ``WireHandler``
/// answers with a 400 that says why; nothing after it is parsed.
///
/// It keeps the connection's deadlines, since it sees where each request starts and ends:
/// - a request's head must be complete within `headerTimeout` (Vault's `http_read_header_timeout`)
///   and the whole request, body included, within `readTimeout` (Vault's `http_read_timeout`), both
///   counted from the connection's start for its first request and from the first byte of each
///   later one. A client that sends a byte now and then resets an idle timer, but not these;
/// - a connection with no request under way closes `idle` after its last response (Vault's
///   `http_idle_timeout`).
///
/// After a response marked `close` (`Connection: close`, HTTP/1.0, a refusal, an oversized body),
/// the connection ends: its sending side first, the rest half a second later (``lingeringClose(_:)``).
final class HTTPCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = RequestPart
    typealias OutboundIn = EncodedResponse
    typealias OutboundOut = ByteBuffer

    let headerTimeout: TimeAmount
    let readTimeout: TimeAmount
    let idle: TimeAmount
    let logger: Logger
    var framing = HTTPFraming()
    /// Heads handed on whose responses were not written yet.
    var unanswered = 0
    /// The last response was written and the connection is closing: nothing more goes out.
    var closing = false
    /// When the request's head must be complete; nil once it is, or when no request is under way.
    var headerDeadline: NIODeadline?
    /// When the whole request must be complete; nil when no request is under way.
    var readDeadline: NIODeadline?
    /// When the connection closes if no request starts; nil while one is under way or unanswered.
    var idleDeadline: NIODeadline?
    /// The one timer of the connection, and when it fires. It is not moved when a deadline is set
    /// or cleared (a keep-alive connection would otherwise schedule and cancel timers each
    /// request): when it fires, it closes the connection if a deadline passed, or is set again for
    /// the nearest one.
    var timer: Scheduled<Void>?
    var timerAt: NIODeadline?
    /// True while a request's deadlines run (from its start, or the connection's, to its end).
    var timing: Bool { readDeadline != nil }

    init(headerTimeout: TimeAmount, readTimeout: TimeAmount, idle: TimeAmount, logger: Logger) {
        self.headerTimeout = headerTimeout
        self.readTimeout = readTimeout
        self.idle = idle
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startDeadlines(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopDeadlines()
        cancelTimer()
    }

    func channelActive(context: ChannelHandlerContext) {
        if !timing { startDeadlines(context) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopDeadlines()
        cancelTimer()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client closed its sending side: a request it did not finish is refused, with a reason.
        if case ChannelEvent.inputClosed = event, let refusal = framing.finish() {
            stopDeadlines()
            context.fireErrorCaught(FramingRefused(reason: refusal.reason))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if framing.isFinished { return }  // refused or closed: the rest is not read
        let input = unwrapInboundIn(data)
        let events = input.withUnsafeReadableBytes { framing.feed($0) }
        for event in events {
            switch event {
            case .requestStarted:
                idleDeadline = nil
                if !timing { startDeadlines(context) }
            case .head(let head):
                headerDeadline = nil
                unanswered += 1
                context.fireChannelRead(wrapInboundOut(.head(head)))
            case .body(let range):
                if range == 0..<input.readableBytes {
                    context.fireChannelRead(wrapInboundOut(.body(input)))
                } else if let slice = input.getSlice(at: input.readerIndex + range.lowerBound, length: range.count) {
                    context.fireChannelRead(wrapInboundOut(.body(slice)))
                }
            case .end:
                stopDeadlines()
                context.fireChannelRead(wrapInboundOut(.end))
            case .refused(let refusal):
                stopDeadlines()
                logger.debug(
                    "refused a malformed request",
                    metadata: [
                        "reason": "\(refusal.reason)", "client": "\(context.channel.remoteAddress?.ipAddress ?? "")",
                    ]
                )
                context.fireErrorCaught(FramingRefused(reason: refusal.reason))
            }
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if closing {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let response = unwrapOutboundIn(data)
        unanswered = max(0, unanswered - 1)
        if response.close {
            closing = true
            let written = promise ?? context.eventLoop.makePromise()
            context.writeAndFlush(wrapOutboundOut(response.bytes), promise: written)
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in Self.lingeringClose(loopBound.value) }
            return
        }
        if unanswered == 0, !timing {
            idleDeadline = .now() + idle
            armTimer(context)
        }
        context.write(wrapOutboundOut(response.bytes), promise: promise)
    }

    /// Closes the sending side first (the client reads the response, then the end of the stream) and
    /// the connection half a second later, as Go's server does: a close with unread request bytes
    /// still arriving would make the kernel send a reset that can destroy the response in flight.
    /// What arrives meanwhile is read and dropped (the framing is finished).
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

    private func startDeadlines(_ context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        headerDeadline = now + headerTimeout
        readDeadline = now + readTimeout
        armTimer(context)
    }

    private func stopDeadlines() {
        headerDeadline = nil
        readDeadline = nil
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        timerAt = nil
    }

    /// Makes sure the timer fires no later than the nearest deadline.
    private func armTimer(_ context: ChannelHandlerContext) {
        func earlier(_ a: NIODeadline?, _ b: NIODeadline?) -> NIODeadline? {
            guard let a, let b else { return a ?? b }
            return min(a, b)
        }
        guard let due = earlier(earlier(headerDeadline, readDeadline), idleDeadline) else { return }
        if let timerAt, timerAt <= due { return }
        timer?.cancel()
        timerAt = due
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: due) {
            let (codec, context) = loopBound.value
            codec.timer = nil
            codec.timerAt = nil
            codec.deadlineCheck(context)
        }
    }

    private func deadlineCheck(_ context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        let why: String
        if let headerDeadline, headerDeadline <= now {
            why = "its request head was not complete within http_read_header_timeout"
        } else if let readDeadline, readDeadline <= now {
            why = "its request was not complete within http_read_timeout"
        } else if let idleDeadline, idleDeadline <= now {
            why = "it was idle for http_idle_timeout"
        } else {
            return armTimer(context)
        }
        logger.debug(
            "closed a connection: \(why)",
            metadata: ["client": "\(context.channel.remoteAddress?.ipAddress ?? "")"]
        )
        stopDeadlines()
        idleDeadline = nil
        context.close(promise: nil)
    }
}

/// A request stream ``HTTPFraming`` refused; ``WireHandler`` answers it with a 400 that says why.
struct FramingRefused: Error {
    let reason: String
}
