import CofferRaft
import Raft

extension FuzzHarness {
    /// `TCPTransport.decode`: what a node's Raft port makes of the bytes a peer sends (message frames,
    /// and chunk frames reassembled into one message), read as the transport reads a connection.
    ///
    /// Checks that each step consumes bytes that are there, and that every message decoded survives
    /// encoding and decoding, whole and cut into chunk frames.
    public static let raftFrames = FuzzHarness(
        name: "raft-frames",
        summary: "TCPTransport.decode (a peer's bytes on the Raft port): messages round-trip whole and chunked"
    ) { input in
        let bytes = Array(input)
        var assembling: [UInt8] = []
        var position = 0
        while position < bytes.count {
            let step: (message: Message?, length: Int)?
            do throws(RaftError) {
                step = try TCPTransport.decode(bytes[position...], assembling: &assembling)
            } catch {
                return nil  // refused: the transport closes the connection
            }
            guard let (message, length) = step else { return nil }  // waits for more bytes
            guard length > 0, length <= bytes.count - position else {
                return "decode consumed \(length) bytes at \(position) of \(bytes.count)"
            }
            position += length
            guard let message else { continue }  // a chunk of a message still being assembled
            if let problem = roundTrip(message) { return problem }
        }
        return nil
    }

    /// Encodes `message`, decodes it back whole and through chunk frames of a few bytes each.
    private static func roundTrip(_ message: Message) -> String? {
        guard let frame = try? MessageCodec.encode(message) else { return "a decoded message does not encode" }
        guard let again = try? MessageCodec.decode(frame), again == message else {
            return "a decoded message changed through encode and decode"
        }
        let stream = Array(TCPTransport.chunks(of: frame, size: 5).joined())
        var assembling: [UInt8] = []
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
