import CofferServerCore

extension FuzzHarness {
    /// `HTTPFraming`, cofferd's HTTP/1.1 request parser, which decides where each request on a
    /// connection starts and ends (issue 13 item 6) and what its head and body are.
    ///
    /// The input's first byte picks how the rest, the byte stream of one connection, is cut into
    /// reads; the stream is framed once in a single read and once in those pieces. Checks that both
    /// framings tell the same story (the same heads, request ends, refusal and the same body bytes:
    /// a boundary that moved with the reads is the kind of disagreement request smuggling lives
    /// on), that every body range lies inside the read it indexes, that request
    /// ends only move forward and stay inside the stream, and that nothing follows a refusal.
    public static let httpFraming = FuzzHarness(
        name: "http-framing",
        summary: "HTTPFraming (cofferd's HTTP/1.1 request parser), whole and in pieces"
    ) { input in
        guard let seed = input.first else { return nil }
        let stream = Array(input.dropFirst())
        let whole = FramingRun(stream, pieces: [stream.count])
        if let problem = whole.problem { return "in one read: \(problem)" }
        let pieces = FramingRun(stream, pieces: FramingRun.pieceSizes(seed: seed, total: stream.count))
        if let problem = pieces.problem { return "in pieces: \(problem)" }
        if whole.story != pieces.story {
            return "framing in pieces disagreed with framing in one read: \(pieces.story) against \(whole.story)"
        }
        if whole.body != pieces.body {
            return "the body bytes depend on how the stream was read"
        }
        return nil
    }
}

/// One framing of a stream, read in the given pieces, and what it said.
struct FramingRun {
    /// Heads, request ends and the refusal, in order (body bytes are compared separately).
    var story: [String] = []
    /// Every body byte, in order.
    var body: [UInt8] = []
    var problem: String?

    init(_ stream: [UInt8], pieces: [Int]) {
        var framing = HTTPFraming()
        var position = 0
        var lastEnd = 0
        var refused = false
        for size in pieces where problem == nil {
            let read = Array(stream[position..<(position + size)])
            position += size
            events: for event in framing.feed(read) {
                if refused {
                    problem = "an event followed a refusal"
                    break events
                }
                switch event {
                case .requestStarted(let at):
                    story.append("start \(at)")
                case .head(let head):
                    story.append(
                        "head \(head.method) \(head.target) \(head.fields) \(head.minorVersion) \(head.body) \(head.keepAlive) \(head.start)"
                    )
                case .body(let range):
                    guard range.lowerBound >= 0 && range.upperBound <= read.count else {
                        problem = "body bytes \(range) of a \(read.count)-byte read"
                        break events
                    }
                    body += read[range]
                case .end(let at):
                    guard at > lastEnd, at <= position else {
                        problem =
                            "a request ended at \(at), after one ending at \(lastEnd), with \(position) bytes read"
                        break events
                    }
                    lastEnd = at
                    story.append("end \(at)")
                case .refused(let refusal):
                    guard refusal.at >= 0 && refusal.at <= position else {
                        problem = "refused at \(refusal.at) with \(position) bytes read"
                        break events
                    }
                    refused = true
                    story.append("refused \(refusal.at) \(refusal.reason)")
                }
            }
        }
        if problem == nil, let refusal = framing.finish() {
            if refused { problem = "finish refused a stream that was already refused" }
            story.append("finish refused \(refusal.at) \(refusal.reason)")
        }
        if problem == nil && !framing.isFinished && refused { problem = "a refused stream is not finished" }
    }

    /// Sizes adding up to `total`, cycling through lengths 1 to 16 chosen by `seed`.
    static func pieceSizes(seed: UInt8, total: Int) -> [Int] {
        var sizes: [Int] = []
        var left = total
        var state = UInt32(seed) &* 2_654_435_761 | 1
        while left > 0 {
            state = state &* 1_103_515_245 &+ 12345
            let size = min(left, Int((state >> 16) % 16) + 1)
            sizes.append(size)
            left -= size
        }
        return sizes
    }
}
