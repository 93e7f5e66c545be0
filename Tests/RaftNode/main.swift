// coffer-raft-node: one replicated-storage node (RaftBackend over its own SQLite files) in its own
// process, with a line protocol on loopback, so that Tests/compat/test_raft_campaign.py can run real
// multi-process clusters, kill -9 them, stop them with SIGSTOP, and check the clients' histories for
// linearizability. A test harness for the storage layer until cofferd's cluster mode exists.
//
//   coffer-raft-node ID DIR CLIENT_PORT PEERS        PEERS: "1=127.0.0.1:7001,2=127.0.0.1:7002,..."
//
// Requests, one per line, answered by one line:
//   PUT <key> <value>   ->  OK | ERR <reason>          (returns once applied on this node)
//   GET <key>           ->  VAL <value> | NONE | ERR <reason>   (linearizable: a ReadIndex round first)
//   STATUS              ->  STATUS leader=<id> term=<t> commit=<c> applied=<a>
import CofferCore
import CofferRaft
import CofferStorage
import Raft

#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String) -> Never {
    let text = Array("coffer-raft-node: \(message)\n".utf8)
    _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

let args = CommandLine.arguments
guard args.count == 5, let id = NodeID(args[1]), let clientPort = Int(args[3]) else {
    fail("usage: coffer-raft-node ID DIR CLIENT_PORT PEERS")
}
var peers: [NodeID: String] = [:]
for part in args[4].split(separator: ",") {
    let pair = part.split(separator: "=", maxSplits: 1)
    guard pair.count == 2, let peer = NodeID(pair[0]) else { fail("bad peer \(part)") }
    peers[peer] = String(pair[1])
}
guard let clusterAddress = peers[id] else { fail("node \(id) is not among the peers") }
var options = RaftBackend.Options(nodeID: id, listen: clusterAddress, peers: peers, directory: args[2])
options.tickMilliseconds = Int(getenv("RAFT_TICK_MS").map { String(cString: $0) } ?? "") ?? 50
options.writeTimeoutSeconds = 2
options.snapshotEvery = 64
options.snapshotKeep = 16
if getenv("RAFT_LOG") != nil { options.logger = StderrLogger() }

/// RAFT_LOG=1: the core's decisions at info and above on stderr, each with the monotonic clock in ms, so a
/// slow failover can be read off the survivors' logs.
final class StderrLogger: RaftLogger, Sendable {
    func log(_ level: RaftLogLevel, _ message: String) {
        guard level >= .info else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let ms = Double(now.tv_sec) * 1000 + Double(now.tv_nsec) / 1e6
        let text = Array("\(ms) \(message)\n".utf8)
        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

let backend: RaftBackend
do {
    let data = try SQLiteBackend(path: args[2] + "/data.db")
    try data.durableElsewhere()  // as cofferd's nodes: the log makes entries durable
    backend = try RaftBackend(options: options, local: data)
} catch {
    fail(error.message)
}

let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
var one: Int32 = 1
setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
var address = sockaddr_in()
address.sin_family = sa_family_t(AF_INET)
address.sin_addr.s_addr = inet_addr("127.0.0.1")
address.sin_port = UInt16(clientPort).bigEndian
let bound = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
}
guard bound == 0, listen(server, 64) == 0 else { fail("cannot listen on 127.0.0.1:\(clientPort)") }
_ = Array("ready\n".utf8).withUnsafeBytes { write(1, $0.baseAddress, $0.count) }

/// Answers one client connection's lines (not main-actor isolated: each connection has its own thread).
final class Connection: @unchecked Sendable {
    let fd: Int32
    let backend: RaftBackend
    init(_ fd: Int32, _ backend: RaftBackend) {
        self.fd = fd
        self.backend = backend
    }

    func answer(_ line: String) -> String {
        let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
        do {
            switch parts.first {
            case "PUT" where parts.count == 3:
                try backend.put(parts[1], Array(parts[2].utf8))
                return "OK"
            case "GET" where parts.count == 2:
                try backend.readBarrier()
                guard let value = try backend.get(parts[1]) else { return "NONE" }
                return "VAL " + String(decoding: value, as: UTF8.self)
            case "STATUS":
                let s = backend.currentStatus
                return "STATUS leader=\(s.leader) term=\(s.term) commit=\(s.commitIndex) applied=\(s.appliedIndex)"
            default:
                return "ERR unknown request"
            }
        } catch {
            return "ERR " + error.message.split(separator: "\n").joined(separator: " ")
        }
    }

    /// Serves `connection` on its own thread. A static method, so that the thread's entry point is not
    /// isolated to the main actor as top-level code is.
    static func spawn(_ connection: Connection) {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(connection).toOpaque()
        pthread_create(
            &thread,
            nil,
            { raw in
                guard let raw else { return nil }
                Unmanaged<Connection>.fromOpaque(raw).takeRetainedValue().serve()
                return nil
            },
            context
        )
        pthread_detach(thread)
    }

    func serve() {
        defer { close(fd) }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return }
            buffer += chunk[0..<n]
            while let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                let reply = Array((answer(line) + "\n").utf8)
                var offset = 0
                while offset < reply.count {
                    let w = reply.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
                    guard w > 0 else { return }
                    offset += w
                }
            }
        }
    }
}

while true {
    let fd = accept(server, nil, nil)
    guard fd >= 0 else { continue }
    Connection.spawn(Connection(fd, backend))
}
