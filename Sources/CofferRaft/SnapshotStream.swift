package import CofferCore
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
    /// The pieces held more bytes than `total`.
    private(set) var overran = false
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
        guard bytes.count <= total - written else {
            overran = true
            return false
        }
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
