import CofferServerCore
import Logging
import NIOCore

/// The first handler after the socket (or TLS): frames requests with ``HTTPFraming`` and hands NIO's
/// HTTP/1 parser only what it accepted, with `GET` in place of a method the parser does not know
/// (Vault's `LIST`; ``RequestGuard`` puts the original back on the parsed head).
///
/// It also keeps the read deadlines, since it sees where each request starts and ends in the bytes:
/// a request's head must be complete within `headerTimeout` (Vault's `http_read_header_timeout`)
/// and the whole request, body included, within `readTimeout` (Vault's `http_read_timeout`), both
/// counted from the connection's start for its first request and from the first byte of each later
/// one. A client that sends a byte now and then resets an idle timer, but not these.
///
/// A refused stream is passed on as a ``FramingRefused`` error (``RequestGuard`` answers it with 400
/// and closes the connection); nothing after it reaches the parser.
final class RequestFramer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// What ``RequestGuard`` needs about each request whose head the parser has not produced yet.
    struct Pending {
        /// The method the client sent, when the parser was handed `GET` instead.
        let originalMethod: String?
        /// Whether the connection stays open after the response.
        let keepAlive: Bool
    }

    let headerTimeout: TimeAmount
    let readTimeout: TimeAmount
    let logger: Logger
    var framing = HTTPFraming()
    var pending: CircularBuffer<Pending> = []
    /// When the request's head must be complete; nil once it is, or when no request is under way.
    var headerDeadline: NIODeadline?
    /// When the whole request must be complete; nil when no request is under way.
    var readDeadline: NIODeadline?
    /// The one timer of the connection, and when it fires. It is not moved when a deadline is set
    /// or cleared (a keep-alive connection would otherwise schedule and cancel two timers a
    /// request): when it fires, it closes the connection if a deadline passed, or is set again for
    /// the nearest one.
    var timer: Scheduled<Void>?
    var timerAt: NIODeadline?
    /// True while a request's deadlines run (from its start, or the connection's, to its end).
    var timing: Bool { readDeadline != nil }

    init(headerTimeout: TimeAmount, readTimeout: TimeAmount, logger: Logger) {
        self.headerTimeout = headerTimeout
        self.readTimeout = readTimeout
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
        // The client closed its sending side: a request it did not finish is refused here, with a
        // reason, before the parser sees the end of input.
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
        if events.count == 1, case .forward(let range) = events[0], range == 0..<input.readableBytes {
            return context.fireChannelRead(data)  // body bytes only: handed on as they are
        }
        // Verbatim ranges are handed on as slices of the input (no copy); adjacent ones as one.
        var run: Range<Int>?
        func flush() {
            if let r = run, let slice = input.getSlice(at: input.readerIndex + r.lowerBound, length: r.count) {
                context.fireChannelRead(wrapInboundOut(slice))
            }
            run = nil
        }
        var refusal: HTTPFraming.Refusal?
        for event in events {
            switch event {
            case .requestStarted:
                if !timing { startDeadlines(context) }
            case .head(let head):
                headerDeadline = nil
                pending.append(
                    Pending(originalMethod: head.methodReplaced ? head.method : nil, keepAlive: head.keepAlive)
                )
            case .forward(let range):
                if let r = run, r.upperBound == range.lowerBound {
                    run = r.lowerBound..<range.upperBound
                } else {
                    flush()
                    run = range
                }
            case .forwardBytes(let bytes):
                flush()
                context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: bytes)))
            case .end:
                stopDeadlines()
            case .refused(let r):
                refusal = r
                stopDeadlines()
            }
        }
        flush()
        if let refusal {
            logger.debug(
                "refused a malformed request",
                metadata: [
                    "reason": "\(refusal.reason)", "client": "\(context.channel.remoteAddress?.ipAddress ?? "")",
                ]
            )
            context.fireErrorCaught(FramingRefused(reason: refusal.reason))
        }
    }

    /// The original method of the next request head, if the parser was handed `GET` for it, and
    /// whether the connection stays open after it.
    func nextPending() -> Pending? {
        pending.popFirst()
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
        var nearest = readDeadline
        if let headerDeadline, nearest.map({ headerDeadline < $0 }) ?? true { nearest = headerDeadline }
        guard let due = nearest else { return }
        if let timerAt, timerAt <= due { return }
        timer?.cancel()
        timerAt = due
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: due) {
            let (framer, context) = loopBound.value
            framer.timer = nil
            framer.timerAt = nil
            framer.deadlineCheck(context)
        }
    }

    private func deadlineCheck(_ context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        let why: String
        if let headerDeadline, headerDeadline <= now {
            why = "its request head was not complete within http_read_header_timeout"
        } else if let readDeadline, readDeadline <= now {
            why = "its request was not complete within http_read_timeout"
        } else {
            return armTimer(context)
        }
        logger.debug(
            "closed a connection: \(why)",
            metadata: ["client": "\(context.channel.remoteAddress?.ipAddress ?? "")"]
        )
        stopDeadlines()
        context.close(promise: nil)
    }
}

/// A request stream ``HTTPFraming`` refused; ``RequestGuard`` turns it into a 400 that says why.
struct FramingRefused: Error {
    let reason: String
}
