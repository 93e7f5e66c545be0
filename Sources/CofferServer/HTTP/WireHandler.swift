import Coffer
import CofferServerCore
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A connection's setup: the per-address limit, then a plain NIO pipeline that answers on the
/// connection's event loop:
///
/// ```
/// socket (TLS) -> EventsUpgradeSniffer -> HTTPCodec -> WireHandler
/// ```
///
/// Hummingbird's `Server` still owns the listener, the connection count and graceful shutdown
/// (it sends each connection `ChannelShouldQuiesceEvent`, which ``WireHandler`` answers by closing
/// the connection once its requests are answered, and waits for ``handle(value:logger:)`` of every
/// connection to return); the requests never leave NIO (no `NIOAsyncChannel`, no Swift task per
/// connection). The sniffer leaves the pipeline once it saw a connection is not an events upgrade.
struct CofferHTTPChannel: ServerChildChannel {
    /// What ``handle(value:logger:)`` waits on: the channel's close, then the thread-pool job in flight.
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        let inFlight: InFlight
    }

    let responder: WireResponder
    let idleTimeout: TimeAmount
    let headerTimeout: TimeAmount
    let readTimeout: TimeAmount
    let limiter: ConnectionLimiter
    let logger: Logger
    /// Serves `sys/events/subscribe` WebSocket upgrades (EventsWebSocket.swift) when set.
    var events: Vault? = nil

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let admitted = limiter.admit(channel)
        return channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            if let events {
                try pipeline.addHandler(EventsUpgradeSniffer(vault: events, logger: self.logger))
            }
            try pipeline.addHandler(
                HTTPCodec(
                    headerTimeout: headerTimeout,
                    readTimeout: readTimeout,
                    idle: idleTimeout,
                    logger: self.logger
                )
            )
            let inFlight = InFlight()
            try pipeline.addHandler(WireHandler(responder: responder, inFlight: inFlight, logger: self.logger))
            // Refused connections are closed before anything is read (or a TLS handshake starts);
            // serving them would hold a slot that the limit is there to keep free.
            if !admitted { channel.close(promise: nil) }
            return Value(channel: channel, inFlight: inFlight)
        }
    }

    func handle(value: Value, logger: Logger) async {
        try? await value.channel.closeFuture.get()
        // A write on the thread pool outlives its connection: the storage closes after it.
        if let job = value.inFlight.job.withLock({ $0 }) { _ = try? await job.get() }
    }
}

/// The connection's thread-pool job in flight, if any (set and cleared on its event loop, read by
/// ``CofferHTTPChannel/handle(value:logger:)`` once the channel closed).
final class InFlight: Sendable {
    let job = Mutex<EventLoopFuture<Void>?>(nil)
}

/// The last handler: collects each request (head and body, up to the cap), calls the engine
/// (``WireResponder``) and writes the response, in request order.
///
/// Reads (GET, HEAD, LIST; and everything when storage is in memory) are answered right here on
/// the event loop, inside `channelRead`; responses written while handling one batch of input go
/// out in one flush. A request that writes to SQLite (an fsync), or that the engine says must be
/// forwarded to the active node, goes to NIO's thread pool; until its answer is written, later
/// requests of the connection (HTTP pipelining) wait in ``queue`` and the socket is not read, so
/// answers keep their order and a client cannot queue without bound.
final class WireHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = RequestPart
    typealias OutboundIn = EncodedResponse
    typealias OutboundOut = EncodedResponse

    /// A request whose answer has not been written yet.
    enum Work {
        /// Known without the engine (from the head, or a parse error).
        case ready(WireResponder.Answer)
        /// The head and the whole body.
        case complete(HTTPFraming.Head, [UInt8])
    }

    struct Queued {
        let work: Work
        let isHead: Bool
        let method: String
        let target: String
        /// The connection stays open after the answer (unless the answer itself ends it).
        let keepAlive: Bool
        let started: ContinuousClock.Instant
    }

    /// A request whose head arrived and whose end has not.
    struct Reading {
        let head: HTTPFraming.Head
        var body: [UInt8]
        let started: ContinuousClock.Instant
        /// Already answered from its head (or over the cap): the rest of it is dropped.
        var answered: Bool
    }

    /// Requests waiting for the one on the thread pool (bounded: the socket is not read meanwhile).
    static let maxQueued = 64

    let responder: WireResponder
    let inFlight: InFlight
    let logger: Logger
    var reading: Reading?
    var queue: CircularBuffer<Queued> = []
    /// A request is on the thread pool: later ones wait.
    var busy = false
    /// A read was asked for while busy.
    var readPending = false
    /// A parse error or a refusal was answered: nothing more is read into requests.
    var stopped = false
    var inputClosed = false
    /// Graceful shutdown: the connection ends once the requests it carries are answered.
    var quiescing = false
    var active = true
    /// Responses were written and not flushed yet.
    var unflushed = false
    var lastWrite: EventLoopFuture<Void>?
    /// The client's IP address, formatted once per connection (`inet_ntop` and a lock each request
    /// were 1.3% of an HTTP read).
    var client: String?

    init(responder: WireResponder, inFlight: InFlight, logger: Logger) {
        self.responder = responder
        self.inFlight = inFlight
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if stopped { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            let started = ContinuousClock.now
            if let answer = responder.check(head) {
                // Answered from the head; its body (if any) is dropped as it arrives.
                reading = Reading(head: head, body: [], started: started, answered: true)
                enqueue(context, Queued(work: .ready(answer), head: head, started: started))
            } else {
                var body: [UInt8] = []
                if case .length(let length) = head.body { body.reserveCapacity(length) }
                reading = Reading(head: head, body: body, started: started, answered: false)
            }
        case .body(let chunk):
            guard var current = reading, !current.answered else { return }
            reading = nil  // the body array is uniquely referenced while it grows
            if current.body.count + chunk.readableBytes > responder.maxRequestSize {
                current.answered = true
                current.body = []
                reading = current
                enqueue(
                    context,
                    Queued(work: .ready(WireResponder.tooLarge), head: current.head, started: current.started)
                )
                return
            }
            current.body.append(contentsOf: chunk.readableBytesView)
            reading = current
        case .end:
            guard let current = reading else { return }
            reading = nil
            if current.answered { return closeIfDone(context) }
            enqueue(
                context,
                Queued(work: .complete(current.head, current.body), head: current.head, started: current.started)
            )
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded(context)
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if stopped { return }  // the last answer is going out; HTTPCodec closes the connection
        guard let refused = error as? FramingRefused else {
            logger.trace("closing a connection", metadata: ["error": "\(error)"])
            return context.close(promise: nil)
        }
        // One 400 that says why and ends the connection, in its turn.
        let started = reading?.started ?? .now
        var answer = WireResponder.error(400, "malformed request: " + refused.reason)
        answer.2 = true
        if let head = reading?.head {
            enqueue(context, Queued(work: .ready(answer), head: head, started: started))
        } else {
            let item = Queued(
                work: .ready(answer),
                isHead: false,
                method: "",
                target: "",
                keepAlive: false,
                started: started
            )
            enqueue(context, item)
        }
        reading = nil
        stopped = true
        flushIfNeeded(context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed:
            inputClosed = true
            closeIfDone(context)
        case is ChannelShouldQuiesceEvent:
            // Graceful shutdown: a request under way is answered first (an events WebSocket has none).
            quiescing = true
            closeIfDone(context)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        queue.removeAll()
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        if busy || queue.count >= Self.maxQueued {
            readPending = true
        } else {
            context.read()
        }
    }

    // MARK: answering

    private func enqueue(_ context: ChannelHandlerContext, _ item: Queued) {
        queue.append(item)
        if !busy { drain(context) }
    }

    /// Answers queued requests in order until one goes to the thread pool or none is left.
    private func drain(_ context: ChannelHandlerContext) {
        while !busy, active, let item = queue.popFirst() {
            switch item.work {
            case .ready(let answer):
                write(context, item, answer)
            case .complete(let head, let body):
                if client == nil { client = context.channel.remoteAddress?.ipAddress ?? "" }
                switch responder.route(head, body: body, clientAddress: client ?? "") {
                case .answer(let answer):
                    write(context, item, answer)
                case .engine(let request, let offload):
                    if !offload, let answer = responder.engine(request) {
                        write(context, item, answer)
                    } else {
                        // A write (fsync), or a request for the active node: off the event loop.
                        offloadToThreadPool(context, item, request, engine: offload)
                    }
                case .forward(let request):
                    offloadToThreadPool(context, item, request, engine: false)
                }
            }
        }
        if !busy, readPending, queue.count < Self.maxQueued {
            readPending = false
            context.read()
        }
        closeIfDone(context)
    }

    private func offloadToThreadPool(
        _ context: ChannelHandlerContext,
        _ item: Queued,
        _ request: WireRequest,
        engine: Bool
    ) {
        busy = true
        flushIfNeeded(context)
        let responder = self.responder
        let job = NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) {
            responder.blockingAnswer(request, engine: engine)
        }
        inFlight.job.withLock { $0 = job.map { _ in } }
        let bound = NIOLoopBound((self, context, item), eventLoop: context.eventLoop)
        job.whenComplete { result in
            let (handler, context, item) = bound.value
            handler.inFlight.job.withLock { $0 = nil }
            handler.busy = false
            guard handler.active else { return }
            switch result {
            case .success(let answer): handler.write(context, item, answer)
            case .failure: handler.write(context, item, WireResponder.error(503, "the server is shutting down"))
            }
            handler.drain(context)
            handler.flushIfNeeded(context)
        }
    }

    private func write(_ context: ChannelHandlerContext, _ item: Queued, _ answer: WireResponder.Answer) {
        let close = answer.2 || !item.keepAlive
        let bytes = WireResponder.encode(
            answer,
            isHead: item.isHead,
            close: close,
            allocator: context.channel.allocator
        )
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(EncodedResponse(bytes: bytes, close: close)), promise: written)
        lastWrite = written.futureResult
        unflushed = true
        if answer.2 {
            // The connection ends once the response is out (HTTPCodec closes it). The rest of an
            // oversized body is not read: input is closed.
            stopped = true
            reading = nil
            queue.removeAll()
            flushIfNeeded(context)
            if answer.0 == 413 { context.close(mode: .input, promise: nil) }
        }
        if logger.logLevel <= .debug {
            // The path without its query (which can hold a token, as in auth/token/lookup?token=).
            let path = item.target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
            let elapsed = (ContinuousClock.now - item.started).components
            let micros = elapsed.seconds * 1_000_000 + elapsed.attoseconds / 1_000_000_000_000
            logger.debug(
                "request",
                metadata: ["method": "\(item.method)", "path": "\(path)", "status": "\(answer.0)", "us": "\(micros)"]
            )
        }
    }

    private func flushIfNeeded(_ context: ChannelHandlerContext) {
        if unflushed {
            unflushed = false
            context.flush()
        }
    }

    /// The client closed its side, or the server is shutting down: once every answer is out, the
    /// connection ends.
    private func closeIfDone(_ context: ChannelHandlerContext) {
        guard inputClosed || (quiescing && reading == nil), !busy, queue.isEmpty, active else { return }
        flushIfNeeded(context)
        if let lastWrite {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            lastWrite.whenComplete { _ in bound.value.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }
}

extension WireHandler.Queued {
    init(work: WireHandler.Work, head: HTTPFraming.Head, started: ContinuousClock.Instant) {
        self.init(
            work: work,
            isHead: head.method == "HEAD",
            method: head.method,
            target: head.target,
            keepAlive: head.keepAlive,
            started: started
        )
    }
}
