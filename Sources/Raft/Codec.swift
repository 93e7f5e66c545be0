/// The binary form of a ``Message`` that the transport carries between nodes.
///
/// A frame is `0x52 'R'`, a version byte (1), the body length as a 4-byte big-endian integer, then the
/// body. The body is the kind byte, a flags byte (bit 0: reject, bit 1: a snapshot follows), the numeric
/// fields as LEB128 varints (to, from, term, logTerm, index, commit, rejectHint), the context (varint
/// length + bytes), the entries (varint count; each: kind byte, varint term, varint index, varint length +
/// data) and, if flagged, the snapshot (varint index, varint term, varint count + voter ids, varint count +
/// learner ids, varint length + data).
///
/// The decoder never traps and never allocates more than the input holds: every length and count is checked
/// against the bytes that remain, varints longer than 10 bytes or overflowing 64 bits, unknown kinds and
/// flags, trailing bytes and truncation all throw `.malformedMessage`. Decoding does not check Raft
/// invariants (terms, contiguity); ``RawNode/step(_:)`` does.
public enum MessageCodec {
    public static let magic: UInt8 = 0x52
    public static let version: UInt8 = 1
    /// Magic, version and the 4-byte body length.
    public static let headerSize = 6
    /// The default largest body the decoder accepts (snapshots larger than this must be chunked by the transport).
    public static let defaultMaxBodyBytes = 64 << 20

    /// The frame for `m`. Throws `.invalidMessage` for a body of 4 GiB or more, which the length field cannot
    /// express: the core's appends are bounded by `Config.maxBytesPerMessage`, but a snapshot's data is as
    /// large as the state (``head(_:snapshotDataBytes:)`` lets a transport stream it instead of holding it).
    public static func encode(_ m: Message) throws(RaftError) -> [UInt8] {
        var frame = try head(m, snapshotDataBytes: m.snapshot?.data.count ?? 0)
        if let data = m.snapshot?.data { frame += data }
        return frame
    }

    /// The frame for `m` up to its snapshot's data, which is `snapshotDataBytes` long and follows it (the
    /// transport streams a large state into the frame from storage; `m.snapshot.data` is ignored).
    public static func head(_ m: Message, snapshotDataBytes: Int) throws(RaftError) -> [UInt8] {
        guard snapshotDataBytes >= 0 else { throw RaftError(.invalidMessage, "a negative snapshot size") }
        var body: [UInt8] = []
        body.reserveCapacity(64 + m.context.count + m.entries.reduce(0) { $0 + $1.data.count + 24 })
        body.append(m.kind.rawValue)
        var flags: UInt8 = 0
        if m.reject { flags |= 1 }
        if m.snapshot != nil { flags |= 2 }
        body.append(flags)
        for value in [m.to, m.from, m.term, m.logTerm, m.index, m.commit, m.rejectHint] {
            appendVarint(value, to: &body)
        }
        appendBytes(m.context, to: &body)
        appendVarint(UInt64(m.entries.count), to: &body)
        for entry in m.entries {
            body.append(entry.kind.rawValue)
            appendVarint(entry.term, to: &body)
            appendVarint(entry.index, to: &body)
            appendBytes(entry.data, to: &body)
        }
        if let snapshot = m.snapshot {
            appendVarint(snapshot.metadata.index, to: &body)
            appendVarint(snapshot.metadata.term, to: &body)
            for ids in [snapshot.metadata.confState.voters, snapshot.metadata.confState.learners] {
                appendVarint(UInt64(ids.count), to: &body)
                for id in ids { appendVarint(id, to: &body) }
            }
            appendVarint(UInt64(snapshotDataBytes), to: &body)
        }
        let bodyBytes = body.count + (m.snapshot == nil ? 0 : snapshotDataBytes)
        guard let length = UInt32(exactly: bodyBytes) else {
            throw RaftError(.invalidMessage, "a message body of \(bodyBytes) bytes does not fit one frame")
        }
        var frame: [UInt8] = [magic, version]
        frame.append(contentsOf: [
            UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF),
        ])
        frame.append(contentsOf: body)
        return frame
    }

    /// Decodes exactly one frame; anything short of that or beyond it throws.
    public static func decode(_ bytes: [UInt8], maxBodyBytes: Int = defaultMaxBodyBytes) throws(RaftError) -> Message {
        guard let (message, length) = try decodeFrame(bytes[...], maxBodyBytes: maxBodyBytes) else {
            throw RaftError(.malformedMessage, "truncated frame: \(bytes.count) bytes")
        }
        guard length == bytes.count else {
            throw RaftError(.malformedMessage, "\(bytes.count - length) trailing bytes after the frame")
        }
        return message
    }

    /// Decodes the frame at the start of a stream buffer. Returns nil when the buffer does not hold a whole
    /// frame yet (read more), the message and the frame's length otherwise; throws on bytes that can never
    /// become a valid frame (then the connection should be closed).
    public static func decodeFrame(
        _ bytes: ArraySlice<UInt8>,
        maxBodyBytes: Int = defaultMaxBodyBytes
    ) throws(RaftError) -> (message: Message, frameLength: Int)? {
        let start = bytes.startIndex
        if bytes.count >= 1, bytes[start] != magic {
            throw RaftError(.malformedMessage, "not a Raft message frame (bad magic byte)")
        }
        if bytes.count >= 2, bytes[start + 1] != version {
            throw RaftError(.malformedMessage, "unsupported Raft message version \(bytes[start + 1])")
        }
        guard bytes.count >= headerSize else { return nil }
        var length = 0
        for i in 2..<6 { length = length << 8 | Int(bytes[start + i]) }
        guard length <= maxBodyBytes else {
            throw RaftError(.malformedMessage, "frame body of \(length) bytes exceeds the limit of \(maxBodyBytes)")
        }
        guard bytes.count - headerSize >= length else { return nil }
        var reader = ByteReader(bytes[(start + headerSize)..<(start + headerSize + length)])
        let message = try reader.readMessage()
        guard reader.isAtEnd else { throw RaftError(.malformedMessage, "trailing bytes inside the frame body") }
        return (message, headerSize + length)
    }

    /// A snapshot message's frame up to its data (``head(_:snapshotDataBytes:)``), from the start of `bytes`:
    /// the message without its data, the head's length and the data's. Nil when `bytes` do not hold a whole
    /// head of a snapshot message, or the frame's length does not match (decode the whole frame instead).
    public static func decodeSnapshotHead(
        _ bytes: ArraySlice<UInt8>
    ) -> (message: Message, headLength: Int, dataBytes: Int)? {
        let start = bytes.startIndex
        guard bytes.count > headerSize, bytes[start] == magic, bytes[start + 1] == version else { return nil }
        var length = 0
        for i in 2..<6 { length = length << 8 | Int(bytes[start + i]) }
        var reader = ByteReader(bytes[(start + headerSize)...])
        guard let message = try? reader.readMessage(headOnly: true), message.snapshot != nil,
            length >= reader.consumed, reader.snapshotDataBytes == UInt64(length - reader.consumed)
        else { return nil }
        return (message, headerSize + reader.consumed, Int(reader.snapshotDataBytes))
    }

    static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
    }

    static func appendBytes(_ bytes: [UInt8], to out: inout [UInt8]) {
        appendVarint(UInt64(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }
}

/// A bounds-checked cursor over bytes; every read that would run past the end throws.
struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    /// Set by ``readMessage(headOnly:)``.
    private(set) var snapshotDataBytes: UInt64 = 0

    var isAtEnd: Bool { position == bytes.endIndex }
    var consumed: Int { position - bytes.startIndex }
    var remaining: Int { bytes.endIndex - position }

    mutating func readByte() throws(RaftError) -> UInt8 {
        guard position < bytes.endIndex else { throw RaftError(.malformedMessage, "truncated message") }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func readVarint() throws(RaftError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try readByte()
            // The tenth byte holds the 64th bit only: anything more (or a continuation) overflows.
            if shift == 63 && byte > 1 {
                throw RaftError(.malformedMessage, "varint overflows 64 bits or is longer than 10 bytes")
            }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// A count of items each at least `minimumSize` bytes long: no more than the remaining bytes can hold.
    mutating func readCount(minimumSize: Int) throws(RaftError) -> Int {
        let count = try readVarint()
        guard count <= UInt64(remaining / max(minimumSize, 1)) else {
            throw RaftError(.malformedMessage, "count \(count) exceeds the remaining \(remaining) bytes")
        }
        return Int(count)
    }

    mutating func readBytes() throws(RaftError) -> [UInt8] {
        let count = try readCount(minimumSize: 1)
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    /// With `headOnly`, a snapshot's data is not read: its length is left in `snapshotDataBytes`.
    mutating func readMessage(headOnly: Bool = false) throws(RaftError) -> Message {
        let kindByte = try readByte()
        guard let kind = MessageKind(rawValue: kindByte) else {
            throw RaftError(.malformedMessage, "unknown message kind \(kindByte)")
        }
        let flags = try readByte()
        guard flags & ~3 == 0 else { throw RaftError(.malformedMessage, "unknown flags \(flags)") }
        var m = Message(kind: kind)
        m.reject = flags & 1 != 0
        m.to = try readVarint()
        m.from = try readVarint()
        m.term = try readVarint()
        m.logTerm = try readVarint()
        m.index = try readVarint()
        m.commit = try readVarint()
        m.rejectHint = try readVarint()
        m.context = try readBytes()
        // An entry is at least 4 bytes: kind, term, index, data length.
        let count = try readCount(minimumSize: 4)
        m.entries.reserveCapacity(count)
        for _ in 0..<count {
            let kindByte = try readByte()
            guard let entryKind = EntryKind(rawValue: kindByte) else {
                throw RaftError(.malformedMessage, "unknown entry kind \(kindByte)")
            }
            let term = try readVarint()
            let index = try readVarint()
            let data = try readBytes()
            m.entries.append(Entry(term: term, index: index, kind: entryKind, data: data))
        }
        if flags & 2 != 0 {
            let index = try readVarint()
            let term = try readVarint()
            var lists: [[NodeID]] = []
            for _ in 0..<2 {
                let count = try readCount(minimumSize: 1)
                var ids: [NodeID] = []
                ids.reserveCapacity(count)
                for _ in 0..<count { ids.append(try readVarint()) }
                lists.append(ids)
            }
            var data: [UInt8] = []
            if headOnly {
                snapshotDataBytes = try readVarint()
            } else {
                data = try readBytes()
            }
            let conf = ConfState(voters: lists[0], learners: lists[1])
            m.snapshot = Snapshot(metadata: SnapshotMetadata(index: index, term: term, confState: conf), data: data)
        }
        return m
    }
}

extension ConfChange {
    static let encodingVersion: UInt8 = 1

    /// The data of a `.confChange` entry: a version byte, the kind byte and the node id as a varint.
    public var encoded: [UInt8] {
        var out: [UInt8] = [Self.encodingVersion, kind.rawValue]
        MessageCodec.appendVarint(nodeID, to: &out)
        return out
    }

    /// Decodes an entry's data; nil if it is not exactly one membership change of a known version.
    public init?(encoded bytes: [UInt8]) {
        var reader = ByteReader(bytes[...])
        guard (try? reader.readByte()) == Self.encodingVersion,
            let kindByte = try? reader.readByte(), let kind = Kind(rawValue: kindByte),
            let nodeID = try? reader.readVarint(), reader.isAtEnd
        else { return nil }
        self.init(kind, nodeID)
    }
}
