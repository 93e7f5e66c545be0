import CTLS
package import CofferCore
package import Raft
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Raft messages between nodes over TCP, in ``MessageCodec`` frames.
///
/// Each peer has one outbound connection, made lazily by a writer thread that owns a bounded queue:
/// when the peer is down, frames are dropped (Raft resends what matters) and the node is told the
/// peer is unreachable, so nothing a node does ever blocks on another. When the connection is idle
/// (plain TCP, nothing queued), ``send(_:)`` writes the frames itself, without blocking, so a write's
/// append and acknowledgement do not wait for a writer thread to wake; what the socket does not take
/// at once goes to the writer. Inbound connections are
/// read by a thread each; a frame that can never be valid (bad magic, too large, malformed) closes
/// the connection. A snapshot travels as chunks of ``chunkBytes``, with the peer's other messages
/// (heartbeats, appends) sent between them, so a large state neither delays them nor needs one huge
/// frame. Its data is produced as it is sent (``SnapshotData``), by a thread of its own that stays two
/// chunks ahead of the connection, so the sender never holds the whole state; the reader reassembles it
/// (up to ``maximumChunkedBytes``) and the node is told when the last chunk was written or the stream
/// broke (`snapshotSent`), as Raft's `reportSnapshot` wants.
/// When the node listens on one address (not a wildcard such as 0.0.0.0), its outbound
/// connections leave from that address too, so a firewall, or a test's proxy, can tell the nodes apart.
/// With ``TLS`` every connection is mutual TLS: each side presents its node certificate
/// and accepts only a peer whose certificate chains to the cluster's CA. Without it, plain TCP (a
/// trusted network only; everything replicated is already ciphertext from the barrier).
package final class TCPTransport: Sendable {
    /// A node's certificate and key and the cluster's CA, in PEM.
    package struct TLS: Sendable {
        package var certificatePEM: [UInt8]
        package var keyPEM: SecureBytes
        package var caPEM: [UInt8]

        package init(certificatePEM: [UInt8], keyPEM: SecureBytes, caPEM: [UInt8]) {
            self.certificatePEM = certificatePEM
            self.keyPEM = keyPEM
            self.caPEM = caPEM
        }
    }

    package typealias Receive = @Sendable (Message) -> Void
    package typealias Unreachable = @Sendable (NodeID) -> Void
    package typealias SnapshotSent = @Sendable (NodeID, _ delivered: Bool) -> Void

    /// Frames waiting per peer before new ones are dropped.
    static let queueLimit = 4096
    /// The first byte of a chunk frame: magic, version, 1 if it is the message's last chunk, the payload's
    /// length (4 bytes, big-endian), the payload: a piece of the message's ordinary frame.
    static let chunkMagic: UInt8 = 0x43
    static let chunkHeaderSize = 7
    /// The largest message a reader reassembles from chunks (a snapshot of the whole state).
    package static let maximumChunkedBytes = 1 << 30

    /// The size of a snapshot's chunks.
    package let chunkBytes: Int

    package let nodeID: NodeID
    private let listener: Int32
    package let port: Int
    private let peers: Mutex<[NodeID: Peer]>
    private let receive: Receive
    private let unreachable: Unreachable
    private let snapshotSent: SnapshotSent
    private let stage: Stage?
    private let closed = Atomic<Bool>(false)
    private let inbound = Mutex<Set<Int32>>([])
    private let tls: TLS?
    /// The address outbound connections are bound to; nil: the kernel's choice.
    private let source: String?

    /// Listens on `host:port` (port 0: the kernel picks; see ``port``) and sends to `peers`
    /// (id → "host:port"). `receive` is called on a reader thread for every message.
    package init(
        nodeID: NodeID,
        listen host: String,
        port: Int,
        peers: [NodeID: String],
        tls: TLS? = nil,
        chunkBytes: Int = 1 << 20,
        receive: @escaping Receive,
        unreachable: @escaping Unreachable,
        snapshotSent: @escaping SnapshotSent = { _, _ in },
        stage: Stage? = nil
    ) throws(RaftTransportError) {
        self.nodeID = nodeID
        self.tls = tls
        self.chunkBytes = max(1024, min(chunkBytes, 16 << 20))
        self.receive = receive
        self.unreachable = unreachable
        self.snapshotSent = snapshotSent
        self.stage = stage
        source = Self.isSpecificAddress(host) ? host : nil
        (listener, self.port) = try Self.listen(host: host, port: port)
        var links: [NodeID: Peer] = [:]
        for (id, address) in peers where id != nodeID {
            links[id] = try Peer(id: id, address: address)
        }
        self.peers = Mutex(links)
        let listener = self.listener
        guard startThread({ [self] in acceptLoop(listener) }) != nil else {
            close(listener)
            throw RaftTransportError("cannot start the transport's accept thread")
        }
        for peer in links.values { startWriter(peer) }
    }

    /// Adds or re-points a peer (a membership change).
    package func setPeer(_ id: NodeID, address: String) throws(RaftTransportError) {
        guard id != nodeID else { return }
        let peer = try Peer(id: id, address: address)
        let old = peers.withLock { peers in
            let old = peers[id]
            peers[id] = peer
            return old
        }
        old?.stop()
        startWriter(peer)
    }

    /// ``setPeer(_:address:)`` unless the peer already has that address.
    package func setPeerIfChanged(_ id: NodeID, address: String) throws(RaftTransportError) {
        guard id != nodeID else { return }
        if let current = peers.withLock({ $0[id] }), current.address == address { return }
        try setPeer(id, address: address)
    }

    /// Drops every peer not in `ids`.
    package func keepOnly(_ ids: Set<NodeID>) {
        let dropped = peers.withLock { peers in
            let gone = peers.keys.filter { !ids.contains($0) }
            return gone.compactMap { peers.removeValue(forKey: $0) }
        }
        for peer in dropped { peer.stop() }
    }

    package func removePeer(_ id: NodeID) {
        peers.withLock { $0.removeValue(forKey: id) }?.stop()
    }

    /// Queues the messages for their peers; never blocks.
    package func send(_ messages: [Message]) {
        guard !messages.isEmpty, !closed.load(ordering: .acquiring) else { return }
        let links = peers.withLock { $0 }
        var frames: [NodeID: [[UInt8]]] = [:]
        for message in messages {
            guard let peer = links[message.to] else { continue }
            if message.kind == .snapshot {
                stream(message, SnapshotBytes(bytes: message.snapshot?.data ?? []), to: peer)
            } else if let frame = try? MessageCodec.encode(message) {
                frames[message.to, default: []].append(frame)
            }
        }
        // Written here when the peer's connection is idle and takes them at once (no hand-off to its
        // writer thread, whose wake-up would sit between a leader and its followers on every write).
        for (id, outgoing) in frames where !links[id]!.sendNow(outgoing) {
            links[id]!.enqueue(outgoing)
        }
    }

    /// Queues a snapshot message whose data (`message.snapshot.data` is ignored) is produced as it is
    /// sent, on a thread of its own that stays at most two chunks ahead of the connection; never blocks.
    package func send(snapshot message: Message, data: any SnapshotData) {
        guard !closed.load(ordering: .acquiring), let peer = peers.withLock({ $0[message.to] }) else { return }
        stream(message, data, to: peer)
    }

    private func stream(_ message: Message, _ data: any SnapshotData, to peer: Peer) {
        let stream = peer.beginStream()
        let started = startThread { [self] in
            var chunks: ChunkWriter?
            var refused = false
            var failed = false
            do throws(CofferError) {
                try data.produce(
                    start: { count in
                        do {
                            let head = try MessageCodec.head(message, snapshotDataBytes: count)
                            chunks = ChunkWriter(size: chunkBytes, total: head.count + count) { frame, last in
                                refused = !peer.offer(frame, last: last, stream: stream)
                                return !refused
                            }
                            return head.withUnsafeBytes { chunks!.append($0) }
                        } catch {
                            failed = true
                            return false
                        }
                    },
                    write: { chunks!.append($0) }
                )
            } catch {
                failed = true  // the data could not be read
            }
            // A refused chunk: the connection broke (the writer reported it), a newer snapshot replaced this
            // one, or the peer was removed or re-addressed (nothing else will report it).
            if refused {
                if peer.isStopped { snapshotSent(peer.id, false) }
                return
            }
            // Otherwise every byte must have gone: data shorter or longer than it said is a failure too.
            guard failed || chunks?.complete != true else { return }
            peer.cancel(stream)
            snapshotSent(peer.id, false)
        }
        if started == nil {
            peer.cancel(stream)
            snapshotSent(peer.id, false)
        }
    }

    /// `frame` cut into chunk frames of at most `size` payload bytes.
    package static func chunks(of frame: [UInt8], size: Int) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var writer = ChunkWriter(size: size, total: frame.count) { chunk, _ in
            out.append(chunk)
            return true
        }
        _ = frame.withUnsafeBytes { writer.append($0) }
        return out
    }

    /// A chunked message being received on one connection: its bytes so far, or, for a snapshot whose
    /// data goes to a ``SnapshotSink``, the message without its data and the bytes still to come.
    package struct Assembly {
        var bytes: [UInt8] = []
        var staged: (message: Message, sink: any SnapshotSink, remaining: Int)?

        package init() {}

        package var isEmpty: Bool { bytes.isEmpty && staged == nil }

        /// Drops what was received (the connection ended mid-message).
        package mutating func abandon() {
            staged?.sink.abandon()
            staged = nil
            bytes = []
        }
    }

    /// Where a snapshot's data goes as it arrives: given the message (without its data) and the data's
    /// length, a sink, or nil to reassemble the message in memory.
    package typealias Stage = @Sendable (Message, _ dataBytes: Int) -> (any SnapshotSink)?

    /// What a reader makes of the bytes at the start of `buffer`: a message (ordinary, or the last chunk of
    /// a chunked one, reassembled in `assembling` or written to the sink `stage` gives), nil when more bytes
    /// are needed; throws for bytes that can never be valid (the connection is then closed).
    package static func decode(
        _ buffer: ArraySlice<UInt8>,
        assembling: inout Assembly,
        stage: Stage? = nil
    ) throws(RaftError) -> (message: Message?, length: Int)? {
        let start = buffer.startIndex
        guard let first = buffer.first else { return nil }
        guard first == chunkMagic else {
            return try MessageCodec.decodeFrame(buffer).map { ($0.message, $0.frameLength) }
        }
        guard buffer.count >= chunkHeaderSize else { return nil }
        guard buffer[start + 1] == MessageCodec.version, buffer[start + 2] <= 1 else {
            throw RaftError(.malformedMessage, "a chunk frame with an unknown version or flag")
        }
        var length = 0
        for i in 3..<7 { length = length << 8 | Int(buffer[start + i]) }
        guard assembling.bytes.count + length <= maximumChunkedBytes else {
            throw RaftError(.malformedMessage, "a chunked message over \(maximumChunkedBytes) bytes")
        }
        guard buffer.count - chunkHeaderSize >= length else { return nil }
        var payload = buffer[(start + chunkHeaderSize)..<(start + chunkHeaderSize + length)]
        let last = buffer[start + 2] == 1
        if assembling.isEmpty, let stage, let head = MessageCodec.decodeSnapshotHead(payload),
            head.dataBytes <= maximumChunkedBytes, let sink = stage(head.message, head.dataBytes)
        {
            assembling.staged = (head.message, sink, head.dataBytes)
            payload = payload.dropFirst(head.headLength)
        }
        if let staged = assembling.staged {
            return (try stream(payload, last: last, staged, &assembling), chunkHeaderSize + length)
        }
        assembling.bytes += payload
        guard last else { return (nil, chunkHeaderSize + length) }
        defer { assembling.bytes = [] }
        let whole: (message: Message, frameLength: Int)?
        do {
            whole = try MessageCodec.decodeFrame(assembling.bytes[...], maxBodyBytes: maximumChunkedBytes)
        } catch {
            throw RaftError(.malformedMessage, "a chunked message that is not one whole frame: \(error.message)")
        }
        guard let (message, frameLength) = whole, frameLength == assembling.bytes.count else {
            throw RaftError(.malformedMessage, "a chunked message that is not one whole frame")
        }
        return (message, chunkHeaderSize + length)
    }

    /// Writes a chunk's data to the staged snapshot's sink; the message, with the data the sink made of it,
    /// after the last chunk.
    private static func stream(
        _ payload: ArraySlice<UInt8>,
        last: Bool,
        _ staged: (message: Message, sink: any SnapshotSink, remaining: Int),
        _ assembling: inout Assembly
    ) throws(RaftError) -> Message? {
        var failure: String?
        if payload.count > staged.remaining {
            failure = "a snapshot longer than its frame said"
        } else if last && payload.count != staged.remaining {
            failure = "a snapshot shorter than its frame said"
        } else {
            let written = payload.withUnsafeBytes { bytes in
                Result { () throws(CofferError) in try staged.sink.write(bytes) }
            }
            if case .failure(let error) = written { failure = "a snapshot that cannot be staged: \(error.message)" }
        }
        if let failure {
            assembling.abandon()
            throw RaftError(.malformedMessage, failure)
        }
        assembling.staged?.remaining -= payload.count
        guard last else { return nil }
        assembling.staged = nil
        var message = staged.message
        do {
            message.snapshot?.data = try staged.sink.finish()
        } catch {
            throw RaftError(.malformedMessage, "a snapshot that cannot be staged: \(error.message)")
        }
        return message
    }

    /// Stops listening, closes every connection and stops the writers.
    package func shutdown() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in inbound.withLock({ $0 }) { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        for peer in peers.withLock({ $0.values }) { peer.stop() }
    }

    // MARK: Inbound

    private func acceptLoop(_ listener: Int32) {
        while !closed.load(ordering: .acquiring) {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            inbound.withLock { _ = $0.insert(fd) }
            if startThread({ [self] in readLoop(fd) }) == nil {
                inbound.withLock { _ = $0.remove(fd) }
                close(fd)
            }
        }
    }

    private func readLoop(_ fd: Int32) {
        guard let link = Link.accept(fd, tls) else {  // a peer without the cluster's certificate
            inbound.withLock { _ = $0.remove(fd) }
            return
        }
        defer {
            // Out of the set before the socket closes (with the link), so its number is not reused meanwhile.
            inbound.withLock { _ = $0.remove(fd) }
            withExtendedLifetime(link) {}
        }
        var buffer: [UInt8] = []
        var assembling = Assembly()  // a chunked message so far
        defer { assembling.abandon() }
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while !closed.load(ordering: .acquiring) {
            let n = chunk.withUnsafeMutableBytes { link.read($0) }
            if n < 0 && errno == EINTR && link.tls == nil { continue }
            guard n > 0 else { return }
            buffer.append(contentsOf: chunk[0..<n])
            var start = 0
            while true {
                let decoded: (message: Message?, length: Int)?
                do {
                    decoded = try Self.decode(buffer[start...], assembling: &assembling, stage: stage)
                } catch {
                    return  // a stream that can never be valid: drop the connection
                }
                guard let (message, length) = decoded else { break }
                start += length
                if let message, message.to == nodeID { receive(message) }
            }
            if start > 0 { buffer.removeFirst(start) }
        }
    }

    // MARK: Outbound

    private func startWriter(_ peer: Peer) {
        _ = startThread({ [self] in
            while let next = peer.next() {
                var link = next.link
                defer { peer.checkIn(link) }
                var chunk = next.chunk
                if next.reset { link = nil }
                if let open = link, !open.isQuiet {
                    // The peer closed this connection (it restarted, say) while it was idle: writing into
                    // it would lose the frames to the peer's reset. A follower writes to another follower
                    // only in an election, so this is where the first vote of a failover would vanish.
                    link = nil
                    if let rest = chunk, next.continuing {
                        // The message's earlier chunks went with the connection.
                        if !rest.last { peer.dropChunkedMessage() }
                        snapshotSent(peer.id, false)
                        chunk = nil
                    }
                }
                // The end of a frame ``Peer/sendNow(_:)`` began goes first, and only on the connection it began on.
                let frames = (link == nil ? [] : next.rest.map { [$0] } ?? []) + next.frames
                if link == nil {
                    link = Link.connect(peer.host, peer.port, from: source, tls)
                    if link == nil {
                        unreachable(peer.id)
                        if let chunk {
                            if !chunk.last { peer.dropChunkedMessage() }
                            snapshotSent(peer.id, false)
                        }
                        peer.pause(milliseconds: 100)
                        continue  // these frames are dropped; Raft resends
                    }
                }
                var failed = false
                for frame in frames where !failed {
                    failed = !(link?.write(frame) ?? false)
                }
                if let chunk {
                    if failed || !(link?.write(chunk.frame) ?? false) {
                        // The rest of the message would start mid-frame on a new connection: drop it.
                        failed = true
                        if !chunk.last { peer.dropChunkedMessage() }
                        snapshotSent(peer.id, false)
                    } else if chunk.last {
                        snapshotSent(peer.id, true)
                    }
                }
                if failed {
                    link = nil
                    unreachable(peer.id)
                }
            }
        })
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// Whether `host` is one numeric address that is not a wildcard.
    static func isSpecificAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return v4.s_addr != 0 }
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        return withUnsafeBytes(of: &v6) { $0.contains { $0 != 0 } }
    }

    /// A blocking connection to host:port within 1 s (Linux bounds a blocking connect by SO_SNDTIMEO), with
    /// 5 s send timeouts and no Nagle delay, leaving from `source` when given; -1 on failure.
    static func connect(_ host: String, _ port: Int, from source: String? = nil) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let info = list else { return -1 }
        defer { freeaddrinfo(list) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if let source {
            // Of the peer's address family only; a source that cannot be bound leaves the kernel's choice.
            hints.ai_family = info.pointee.ai_family
            hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE
            var local: UnsafeMutablePointer<addrinfo>?
            if getaddrinfo(source, "0", &hints, &local) == 0, let bound = local {
                _ = bind(fd, bound.pointee.ai_addr, bound.pointee.ai_addrlen)
                freeaddrinfo(local)
            }
        }
        guard Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            close(fd)
            return -1
        }
        timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func listen(host: String, port: Int) throws(RaftTransportError) -> (Int32, Int) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let info = list else {
            throw RaftTransportError("cannot resolve the cluster address \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RaftTransportError("cannot open a socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, Glibc.listen(fd, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw RaftTransportError("cannot listen on \(host):\(port) for the cluster: \(reason)")
        }
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        var actual = port
        if bound == 0 {
            actual = withUnsafePointer(to: &address) { raw in
                raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        }
        return (fd, actual)
    }
}

/// One connection between two nodes: a socket, with TLS over it when the cluster has certificates. Used
/// by one thread; closed when released.
private final class Link: @unchecked Sendable {
    let fd: Int32
    let tls: OpaquePointer?

    private init(fd: Int32, tls: OpaquePointer?) {
        self.fd = fd
        self.tls = tls
    }

    deinit {
        ctls_free(tls)
        close(fd)
    }

    /// An accepted socket; with TLS, after the handshake (bounded by 5 s), or nil when it fails.
    static func accept(_ fd: Int32, _ tls: TCPTransport.TLS?) -> Link? {
        guard let tls else { return Link(fd: fd, tls: nil) }
        setTimeout(fd, SO_RCVTIMEO, seconds: 5)
        var error = [CChar](repeating: 0, count: 256)
        let conn = tls.certificatePEM.withUnsafeBytes { cert in
            tls.keyPEM.withUnsafeBytes { key in
                tls.caPEM.withUnsafeBytes { ca in
                    ctls_accept(
                        fd,
                        cert.baseAddress?.assumingMemoryBound(to: CChar.self),
                        cert.count,
                        key.baseAddress?.assumingMemoryBound(to: CChar.self),
                        key.count,
                        ca.baseAddress?.assumingMemoryBound(to: CChar.self),
                        ca.count,
                        &error,
                        error.count
                    )
                }
            }
        }
        guard let conn else {
            close(fd)
            return nil
        }
        setTimeout(fd, SO_RCVTIMEO, seconds: 0)
        return Link(fd: fd, tls: conn)
    }

    /// A connection to a peer (TCPTransport.connect), with the TLS handshake when configured.
    static func connect(_ host: String, _ port: Int, from source: String?, _ tls: TCPTransport.TLS?) -> Link? {
        let fd = TCPTransport.connect(host, port, from: source)
        guard fd >= 0 else { return nil }
        guard let tls else { return Link(fd: fd, tls: nil) }
        setTimeout(fd, SO_RCVTIMEO, seconds: 5)
        var error = [CChar](repeating: 0, count: 256)
        let conn = tls.certificatePEM.withUnsafeBytes { cert in
            tls.keyPEM.withUnsafeBytes { key in
                tls.caPEM.withUnsafeBytes { ca in
                    var options = ctls_options()
                    options.cert_pem = cert.baseAddress?.assumingMemoryBound(to: CChar.self)
                    options.cert_len = cert.count
                    options.key_pem = key.baseAddress?.assumingMemoryBound(to: CChar.self)
                    options.key_len = key.count
                    options.skip_name_check = 1
                    return ctls_connect_ex(
                        fd,
                        host,
                        ca.baseAddress?.assumingMemoryBound(to: CChar.self),
                        ca.count,
                        &options,
                        &error,
                        error.count
                    )
                }
            }
        }
        guard let conn else {
            close(fd)
            return nil
        }
        return Link(fd: fd, tls: conn)
    }

    /// Whether nothing can be read. A peer never writes on a connection this node opened to it (its TLS
    /// side sends no session tickets), so anything readable (the end of the stream, an error, a byte)
    /// means the connection is over.
    var isQuiet: Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, 0) == 0
    }

    func read(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        if let tls { return ctls_read(tls, buffer.baseAddress, buffer.count) }
        return Glibc.read(fd, buffer.baseAddress, buffer.count)
    }

    /// Writes what the socket takes now (plain TCP only): the bytes written (0: none), or -1 when the
    /// connection broke.
    func writeWithoutBlocking(_ bytes: [UInt8]) -> Int {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            guard n > 0 else { return -1 }
            offset += n
        }
        return offset
    }

    func write(_ bytes: [UInt8]) -> Bool {
        if let tls { return bytes.withUnsafeBytes { ctls_write(tls, $0.baseAddress, $0.count) } == 0 }
        return TCPTransport.writeAll(fd, bytes)
    }

    private static func setTimeout(_ fd: Int32, _ option: Int32, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, option, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// One peer's outbound queue and its writer's wake-up.
private final class Peer: @unchecked Sendable {
    let id: NodeID
    let address: String
    let host: String
    let port: Int
    private let monitor = Monitor()
    private var queue: [[UInt8]] = []
    /// Chunk frames of the snapshot being streamed, sent one at a time between the ordinary frames.
    private var chunks: [(frame: [UInt8], last: Bool)] = []
    /// The snapshot stream whose chunks are wanted (``beginStream()``); an older stream's are refused.
    private var stream: UInt64 = 0
    /// A chunk of the current stream has been written, and not its last.
    private var midStream = false
    /// The connection must be dropped before the next write: a stream ended mid-message, and the peer
    /// would take the next stream's chunks for the rest of it.
    private var resetLink = false
    private var stopped = false
    /// The connection, while no thread has it (``next()`` and ``sendNow(_:)`` take it, ``checkIn(_:)``
    /// returns it): the writer and a direct sender never write into it at once.
    private var link: Link?
    private var linkTaken = false
    /// The end of a frame ``sendNow(_:)`` began and the socket would not take at once: the writer sends
    /// it first, on the same connection (on another it would start mid-frame).
    private var rest: [UInt8]?

    init(id: NodeID, address: String) throws(RaftTransportError) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (1...65535).contains(port), colon != address.startIndex
        else {
            throw RaftTransportError("node \(id)'s cluster address \"\(address)\" is not host:port")
        }
        self.id = id
        self.address = address
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host
        self.port = port
    }

    func enqueue(_ frames: [[UInt8]]) {
        monitor.withLock {
            queue += frames.prefix(max(0, TCPTransport.queueLimit - queue.count))
        }
        monitor.broadcast()
    }

    /// Writes `frames` on the calling thread when the connection is open, idle, plain TCP, nothing is queued
    /// before them, and the socket takes them without blocking; false when they must go through the
    /// writer (``enqueue(_:)``). A frame the socket took only part of is finished by the writer.
    func sendNow(_ frames: [[UInt8]]) -> Bool {
        let taken: Link? = monitor.withLock {
            guard !stopped, !linkTaken, queue.isEmpty, chunks.isEmpty, !resetLink, rest == nil,
                let open = link, open.tls == nil
            else { return nil }
            linkTaken = true
            return open
        }
        guard let open = taken else { return false }
        guard open.isQuiet else {
            checkIn(open)  // closed by the peer: the writer reconnects
            return false
        }
        let bytes = frames.count == 1 ? frames[0] : Array(frames.joined())
        let written = open.writeWithoutBlocking(bytes)
        guard written > 0 else {
            // Broken: the writer makes a new connection and sends them; full: the writer waits for room.
            checkIn(written < 0 ? nil : open)
            return false
        }
        checkIn(open, rest: written < bytes.count ? Array(bytes[written...]) : nil)
        return true
    }

    /// Gives the connection back (nil: it broke), with the unwritten end of a frame begun on it;
    /// wakes the writer when work waits for it.
    func checkIn(_ returned: Link?, rest unwritten: [UInt8]? = nil) {
        let wake = monitor.withLock {
            linkTaken = false
            link = stopped ? nil : returned
            rest = returned == nil ? nil : unwritten ?? rest
            return !queue.isEmpty || !chunks.isEmpty || resetLink || rest != nil
        }
        if wake { monitor.broadcast() }
    }

    /// Starts a snapshot stream, ending any earlier one; its chunks go through ``offer(_:last:stream:)``.
    func beginStream() -> UInt64 {
        defer { monitor.broadcast() }
        return monitor.withLock {
            endStream()
            return stream
        }
    }

    /// Queues a chunk of `stream`, waiting while two are queued. False once the stream has ended (the
    /// connection broke, a newer stream began) or the peer stopped.
    func offer(_ frame: [UInt8], last: Bool, stream id: UInt64) -> Bool {
        while true {
            _ = monitor.wait(until: monotonicNanos() + 1_000_000_000) {
                stopped || stream != id || chunks.count < 2
            }
            let queued: Bool? = monitor.withLock {
                if stopped || stream != id { return false }
                guard chunks.count < 2 else { return nil }
                chunks.append((frame, last))
                return true
            }
            if let queued {
                monitor.broadcast()
                return queued
            }
        }
    }

    /// Ends `stream` if it is still the current one, dropping its queued chunks.
    func cancel(_ id: UInt64) {
        monitor.withLock { if stream == id { endStream() } }
        monitor.broadcast()
    }

    /// The connection broke while a chunk was written: the rest of the message would start mid-frame on a
    /// new one, so the stream ends.
    func dropChunkedMessage() {
        monitor.withLock {
            midStream = false
            endStream()
        }
        monitor.broadcast()
    }

    private func endStream() {
        stream &+= 1
        chunks.removeAll()
        if midStream { resetLink = true }
        midStream = false
    }

    /// What the writer takes next: the queued ordinary frames and at most one chunk; `reset` when the
    /// connection must be dropped first, `continuing` when the chunk's message began on the connection.
    struct Outbound {
        var link: Link?
        var rest: [UInt8]?
        var frames: [[UInt8]]
        var chunk: (frame: [UInt8], last: Bool)?
        var reset = false
        var continuing = false
    }

    /// The next ``Outbound``, with the connection (given back with ``checkIn(_:)``), waiting for one;
    /// nil once stopped.
    func next() -> Outbound? {
        while true {
            _ = monitor.wait(until: monotonicNanos() + 1_000_000_000) {
                stopped || (!linkTaken && (!queue.isEmpty || !chunks.isEmpty || resetLink || rest != nil))
            }
            var stop = false
            let taken: Outbound? = monitor.withLock {
                if stopped {
                    link = nil
                    stop = true
                    return nil
                }
                guard !linkTaken, !queue.isEmpty || !chunks.isEmpty || resetLink || rest != nil else { return nil }
                var out = Outbound(link: link, rest: rest, frames: queue, reset: resetLink, continuing: midStream)
                linkTaken = true
                link = nil
                rest = nil
                queue.removeAll(keepingCapacity: true)
                resetLink = false
                if !chunks.isEmpty {
                    out.chunk = chunks.removeFirst()
                    midStream = !out.chunk!.last
                }
                return out
            }
            if stop { return nil }
            guard let taken else { continue }
            if taken.chunk != nil { monitor.broadcast() }  // room for the producer's next chunk
            return taken
        }
    }

    var isStopped: Bool { monitor.withLock { stopped } }

    func pause(milliseconds: Int) {
        let deadline = monotonicNanos() + UInt64(milliseconds) * 1_000_000
        _ = monitor.wait(until: deadline) { stopped }
    }

    func stop() {
        monitor.withLock {
            stopped = true
            if !linkTaken { link = nil }
        }
        monitor.broadcast()
    }
}

/// Why the transport could not start or take a peer: an address that does not parse or resolve, a
/// port in use.
package struct RaftTransportError: Error, Sendable, CustomStringConvertible {
    package let message: String
    init(_ message: String) { self.message = message }
    package var description: String { message }
}
