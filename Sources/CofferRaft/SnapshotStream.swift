package import CofferCore
import CofferStorage
import Raft

/// The data of a snapshot message, produced while the message is sent.
package protocol SnapshotData: Sendable {
    /// Calls `start` with the data's length (the frame's header holds it), then `write` with the bytes in
    /// pieces, in order, until either returns false.
    func produce(start: (Int) -> Bool, write: (UnsafeRawBufferPointer) -> Bool) throws(CofferError)
}

/// Data already in memory (a snapshot message built whole, as in tests).
struct SnapshotBytes: SnapshotData {
    let bytes: [UInt8]

    func produce(start: (Int) -> Bool, write: (UnsafeRawBufferPointer) -> Bool) {
        if start(bytes.count) { _ = bytes.withUnsafeBytes(write) }
    }
}

/// A data file's entries as one replicated batch of puts (``BatchCodec``), read from ``FrozenEntries``
/// as it is sent: the leader holds a piece of it at a time, not the state. One pass over them sizes
/// the batch, a second writes it.
struct StateSnapshot: SnapshotData {
    let entries: any FrozenEntries

    func produce(start: (Int) -> Bool, write: (UnsafeRawBufferPointer) -> Bool) throws(CofferError) {
        var count = 0
        var bytes = 0
        try entries.scanSizes { key, value in
            count += 1
            bytes += BatchCodec.putBytes(key: key, value: value)
        }
        var piece: [UInt8] = []
        BatchCodec.header(id: 0, count: count, &piece)
        guard start(piece.count + bytes) else { return }
        // Small entries are gathered into pieces of about 64 KB; a large value goes as it is.
        var open = true
        try entries.scan { key, value in
            BatchCodec.put(key: key, valueBytes: value.count, &piece)
            if piece.count + value.count >= 1 << 16 {
                open = piece.withUnsafeBytes(write) && write(value)
                piece.removeAll(keepingCapacity: true)
            } else {
                piece.append(contentsOf: value)
            }
            return open
        }
        if open && !piece.isEmpty { _ = piece.withUnsafeBytes(write) }
    }
}

/// Cuts a frame whose length is known, given in pieces, into chunk frames of at most `size` payload bytes
/// (``TCPTransport/chunkMagic``), each handed to `emit` as soon as it is full; the last one is flagged.
struct ChunkWriter {
    let size: Int
    let total: Int
    /// Takes a chunk frame and whether it is the last; false stops the writer.
    let emit: (_ frame: [UInt8], _ last: Bool) -> Bool
    private(set) var written = 0
    private var chunk: [UInt8] = []

    init(size: Int, total: Int, emit: @escaping (_ frame: [UInt8], _ last: Bool) -> Bool) {
        self.size = size
        self.total = total
        self.emit = emit
    }

    /// Whether every byte was given (the last chunk then went to `emit`).
    var complete: Bool { written == total && chunk.isEmpty }

    /// False when `emit` refused a chunk or `bytes` run past `total`.
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= total - written else { return false }
        var start = 0
        while start < bytes.count {
            if chunk.isEmpty {
                chunk.reserveCapacity(TCPTransport.chunkHeaderSize + min(size, total - written))
                chunk.append(contentsOf: repeatElement(0, count: TCPTransport.chunkHeaderSize))
            }
            let take = min(size - (chunk.count - TCPTransport.chunkHeaderSize), bytes.count - start)
            chunk.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + take)]))
            start += take
            written += take
            if chunk.count - TCPTransport.chunkHeaderSize == size || written == total {
                guard flush() else { return false }
            }
        }
        return true
    }

    private mutating func flush() -> Bool {
        let length = chunk.count - TCPTransport.chunkHeaderSize
        let last = written == total
        chunk.replaceSubrange(
            0..<TCPTransport.chunkHeaderSize,
            with: [
                TCPTransport.chunkMagic, MessageCodec.version, last ? 1 : 0,
                UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
            ]
        )
        let frame = chunk
        chunk = []
        return emit(frame, last)
    }
}

/// Where a follower's transport writes a snapshot's data as it arrives, instead of holding it
/// (``TCPTransport/Stage``). Used by one reader thread.
package protocol SnapshotSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws(CofferError)
    /// Every byte arrived: the data the delivered message carries instead. A sink that fails drops what
    /// was written itself.
    func finish() throws(CofferError) -> [UInt8]
    /// The stream broke: drop what was written.
    func abandon()
}

/// A snapshot's batch of puts (``StateSnapshot``'s form) written entry by entry into a new SQLite file as
/// it arrives, so a follower holds one entry at a time, not the state. The message then carries
/// ``marker(_:)`` of the file's name as its data, and installing it replaces the data file's entries with
/// the file's (``RaftBackend``).
final class StagedSnapshot: SnapshotSink {
    static let markerPrefix: [UInt8] = [0xFF] + Array("staged ".utf8)

    /// The data a snapshot staged in the file `name` carries (not a batch: batches start with 1 or 2).
    static func marker(_ name: String) -> [UInt8] { markerPrefix + Array(name.utf8) }

    /// The file name in `data`, if it is a marker.
    static func stagedName(_ data: [UInt8]) -> String? {
        guard data.starts(with: markerPrefix) else { return nil }
        return String(decoding: data.dropFirst(markerPrefix.count), as: UTF8.self)
    }

    let name: String
    private let file: EntryFileWriter
    private let abandoned: (String) -> Void
    /// Bytes not yet parsed: at most one entry's.
    private var pending: [UInt8] = []
    /// The entries the header announced, and those written.
    private var count: UInt64?
    private var written: UInt64 = 0

    /// Stages into `directory/name`; `abandoned` is told when the file is deleted unfinished.
    init(directory: String, name: String, abandoned: @escaping (String) -> Void) throws(CofferError) {
        self.name = name
        self.abandoned = abandoned
        file = try EntryFileWriter(path: directory + "/" + name)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(CofferError) {
        pending.append(contentsOf: bytes)
        var reader = BatchReader(pending)
        var puts: [(key: Range<Int>, value: Range<Int>)] = []
        do throws(BatchCodec.Malformed) {
            if count == nil { count = try reader.header() }
            if let count {
                while let put = try reader.put() { puts.append(put) }
                guard written + UInt64(puts.count) <= count else {
                    throw BatchCodec.Malformed(message: "more entries than the \(count) announced")
                }
            }
        } catch {
            throw CofferError(.invalidArgument, "the snapshot is not a batch of puts: \(error.message)")
        }
        let stored = pending.withUnsafeBytes { all in
            Result { () throws(CofferError) in
                for put in puts {
                    try file.put(
                        key: UnsafeRawBufferPointer(rebasing: all[put.key]),
                        value: UnsafeRawBufferPointer(rebasing: all[put.value])
                    )
                }
            }
        }
        try stored.get()
        written += UInt64(puts.count)
        pending.removeFirst(reader.consumed)
    }

    func finish() throws(CofferError) -> [UInt8] {
        guard let count, written == count, pending.isEmpty else {
            abandon()
            throw CofferError(.invalidArgument, "the snapshot ended after \(written) of its \(count ?? 0) entries")
        }
        do {
            try file.finish()
        } catch {
            abandon()
            throw error
        }
        return Self.marker(name)
    }

    func abandon() {
        file.abandon()
        abandoned(name)
    }
}

/// Reads a batch of puts from bytes that may end anywhere: nil where a whole item is not there yet.
private struct BatchReader {
    let bytes: [UInt8]
    /// Bytes of whole items read.
    private(set) var consumed = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The header's entry count.
    mutating func header() throws(BatchCodec.Malformed) -> UInt64? {
        guard bytes.count >= 9 else { return nil }
        guard bytes[0] == 1 else { throw BatchCodec.Malformed(message: "batch version \(bytes[0]) is not 1") }
        var i = 9
        guard let count = try varint(&i) else { return nil }
        consumed = i
        return count
    }

    /// The next put's key and value ranges in `bytes`.
    mutating func put() throws(BatchCodec.Malformed) -> (key: Range<Int>, value: Range<Int>)? {
        var i = consumed
        guard i < bytes.count else { return nil }
        guard bytes[i] == 0 else { throw BatchCodec.Malformed(message: "operation \(bytes[i]) is not a put") }
        i += 1
        guard let keyBytes = try varint(&i), keyBytes <= UInt64(bytes.count - i) else { return nil }
        let key = i..<(i + Int(keyBytes))
        i = key.upperBound
        guard let valueBytes = try varint(&i), valueBytes <= UInt64(bytes.count - i) else { return nil }
        let value = i..<(i + Int(valueBytes))
        consumed = value.upperBound
        return (key, value)
    }

    private func varint(_ i: inout Int) throws(BatchCodec.Malformed) -> UInt64? {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 7) {
            guard i < bytes.count else { return nil }
            let b = bytes[i]
            i += 1
            value |= UInt64(b & 0x7F) << UInt64(shift)
            if b & 0x80 == 0 { return value }
        }
        throw BatchCodec.Malformed(message: "a length is too long")
    }
}
