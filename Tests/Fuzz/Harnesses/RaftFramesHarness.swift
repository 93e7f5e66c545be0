import CofferRaft
import Raft

extension FuzzHarness {
    /// `TCPTransport.decode`: what a node's Raft port makes of the bytes a peer sends (message frames,
    /// and chunk frames reassembled into one message or, for a snapshot, its data written to a sink as it
    /// arrives), read as the transport reads a connection.
    ///
    /// Checks that each step consumes bytes that are there, that staging a snapshot's data gives the same
    /// messages as reassembling it, and that every message decoded survives encoding and decoding, whole
    /// and cut into chunk frames.
    public static let raftFrames = FuzzHarness(
        name: "raft-frames",
        summary: "TCPTransport.decode (a peer's bytes on the Raft port): messages round-trip whole and chunked"
    ) { input in
        let bytes = Array(input)
        var results: [[Message]] = []
        for staging in [false, true] {
            let (messages, problem) = decodeAll(bytes, staging: staging)
            if let problem { return problem }
            results.append(messages)
        }
        // A stream refused part-way may be refused sooner when staged (a length checked per chunk), never later.
        guard results[1].count <= results[0].count, Array(results[0].prefix(results[1].count)) == results[1] else {
            return "staging a snapshot's data decoded other messages than reassembling it"
        }
        return nil
    }

    /// The messages `bytes` decode to, read as a connection, until they end or are refused.
    private static func decodeAll(_ bytes: [UInt8], staging: Bool) -> ([Message], String?) {
        var assembling = TCPTransport.Assembly()
        defer { assembling.abandon() }
        var stage: TCPTransport.Stage?
        if staging { stage = { _, _ in KeepingSink() } }
        var messages: [Message] = []
        var position = 0
        while position < bytes.count {
            let step: (message: Message?, length: Int)?
            do throws(RaftError) {
                step = try TCPTransport.decode(bytes[position...], assembling: &assembling, stage: stage)
            } catch {
                break  // refused: the transport closes the connection
            }
            guard let (message, length) = step else { break }  // waits for more bytes
            guard length > 0, length <= bytes.count - position else {
                return (messages, "decode consumed \(length) bytes at \(position) of \(bytes.count)")
            }
            position += length
            guard let message else { continue }  // a chunk of a message still being assembled
            if let problem = roundTrip(message) { return (messages, problem) }
            messages.append(message)
        }
        return (messages, nil)
    }

    /// A sink that gives back what it was given, so a staged message equals the reassembled one.
    private final class KeepingSink: SnapshotSink {
        var bytes: [UInt8] = []
        func write(_ piece: UnsafeRawBufferPointer) { bytes += piece }
        func finish() -> [UInt8] { bytes }
        func abandon() { bytes = [] }
    }

    /// Encodes `message`, decodes it back whole and through chunk frames of a few bytes each.
    private static func roundTrip(_ message: Message) -> String? {
        guard let frame = try? MessageCodec.encode(message) else { return "a decoded message does not encode" }
        guard let again = try? MessageCodec.decode(frame), again == message else {
            return "a decoded message changed through encode and decode"
        }
        let stream = Array(TCPTransport.chunks(of: frame, size: 5).joined())
        var assembling = TCPTransport.Assembly()
        var position = 0
        var reassembled: Message?
        while position < stream.count {
            // A whole stream: needing more bytes (nil) is as wrong here as a refusal.
            guard let (message, length) = try? TCPTransport.decode(stream[position...], assembling: &assembling) else {
                return "the message cut into chunk frames does not reassemble"
            }
            position += length
            if let message { reassembled = message }
        }
        return reassembled == message ? nil : "the message cut into chunk frames reassembled to another"
    }
}
