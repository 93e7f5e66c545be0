import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A loopback HTTP/1.1 server that keeps connections open: it answers each request with its number
/// (`Content-Length` framed), counts the connections it accepts, and can close every connection it
/// holds (as an idle timeout does) or drop the next request without answering it.
private final class KeepAliveServer: @unchecked Sendable {
    let port: Int
    let accepted = Atomic(0)
    let requests = Atomic(0)
    /// Read the next request, then close its connection without answering.
    let dropNext = Atomic(false)
    /// Microseconds to wait before each answer.
    let delay = Atomic(0)
    private let listener: Int32
    private let connections = Mutex<[Int32]>([])

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard fd >= 0, bound else {
            close(fd)
            throw CofferError(.io, "cannot listen on loopback")
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in acceptLoop() }.start()
    }

    /// Closes every connection it holds; the listener stays.
    func closeConnections() {
        // Under the lock: a connection leaves the list before its socket closes, so every number here is
        // still this server's (a closed one's number may already be another test's socket).
        connections.withLock { for fd in $0 { shutdown(fd, Int32(SHUT_RDWR)) } }
    }

    func stop() {
        closeConnections()
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            accepted.add(1, ordering: .relaxed)
            connections.withLock { $0.append(fd) }
            Thread { [self] in serve(fd) }.start()
        }
    }

    private func serve(_ fd: Int32) {
        defer {
            connections.withLock { $0.removeAll { $0 == fd } }
            close(fd)
        }
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            // A request: its head, then as many body bytes as its Content-Length says.
            while true {
                if let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                    let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self).lowercased()
                    let length =
                        head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                        .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }
                        ?? 0
                    if pending.count >= end.upperBound + length {
                        pending.removeFirst(end.upperBound + length)
                        break
                    }
                }
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return }
                pending += chunk[0..<n]
            }
            if dropNext.exchange(false, ordering: .relaxed) { return }
            usleep(UInt32(delay.load(ordering: .relaxed)))
            let number = requests.add(1, ordering: .relaxed).newValue
            let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: \(String(number).utf8.count)\r\n\r\n\(number)".utf8)
            guard answer.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == answer.count
            else { return }
        }
    }
}

@Suite struct HTTPClientPoolTests {
    @Test func keptConnectionsServeTheNextRequests() throws {
        let server = try KeepAliveServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)/v1/secret/data/x"
        let pool = HTTPClient.ConnectionPool()
        for n in 1...5 {
            let response = try HTTPClient.send("PUT", url, body: Array("{}".utf8), pool: pool)
            #expect(response.status == 200 && response.body == Array(String(n).utf8))
        }
        #expect(server.accepted.load(ordering: .relaxed) == 1, "five requests, one connection")
        #expect(pool.idleCount == 1)
        // Without a pool: a connection each, closed after its answer.
        for _ in 1...3 { _ = try HTTPClient.send("GET", url) }
        #expect(server.accepted.load(ordering: .relaxed) == 4)
        pool.removeAll()
        #expect(pool.idleCount == 0)
    }

    @Test func aConnectionTheServerClosedIsNotUsed() throws {
        let server = try KeepAliveServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)/"
        let pool = HTTPClient.ConnectionPool()
        _ = try HTTPClient.send("GET", url, pool: pool)
        server.closeConnections()  // the server's idle timeout
        usleep(50_000)  // its FIN arrives
        let response = try HTTPClient.send("GET", url, pool: pool)
        #expect(response.status == 200 && response.body == Array("2".utf8))
        #expect(server.accepted.load(ordering: .relaxed) == 2)
    }

    /// The server closes a kept connection just as a request goes out on it (here: it reads the request
    /// and closes without a byte of answer): the request is sent again on a new connection, once.
    @Test func aRequestThatMeetsAClosingKeptConnectionIsSentAgain() throws {
        let server = try KeepAliveServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)/"
        let pool = HTTPClient.ConnectionPool()
        _ = try HTTPClient.send("GET", url, pool: pool)
        server.dropNext.store(true, ordering: .relaxed)
        let response = try HTTPClient.send("POST", url, body: Array("{}".utf8), pool: pool)
        #expect(response.status == 200 && response.body == Array("2".utf8))
        #expect(server.accepted.load(ordering: .relaxed) == 2)
        // On a new connection the same failure is an error: nothing says the server did not act on it.
        pool.removeAll()
        server.dropNext.store(true, ordering: .relaxed)
        #expect(throws: HTTPClient.Failure.self) { try HTTPClient.send("POST", url, body: [1], pool: pool) }
        #expect(server.accepted.load(ordering: .relaxed) == 3)
    }

    @Test func keptConnectionsAreBoundedAndExpire() throws {
        let server = try KeepAliveServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)/"
        let pool = HTTPClient.ConnectionPool(maximumIdle: 2, idleSeconds: 0.2)
        // Three requests at once (each answered after 100 ms) need three connections; two are kept.
        server.delay.store(100_000, ordering: .relaxed)
        let group = DispatchGroup()
        for _ in 0..<3 {
            group.enter()
            Thread {
                _ = try? HTTPClient.send("GET", url, pool: pool)
                group.leave()
            }.start()
        }
        group.wait()
        server.delay.store(0, ordering: .relaxed)
        #expect(server.accepted.load(ordering: .relaxed) == 3)
        #expect(pool.idleCount == 2)
        usleep(300_000)
        let before = server.accepted.load(ordering: .relaxed)
        _ = try HTTPClient.send("GET", url, pool: pool)
        #expect(server.accepted.load(ordering: .relaxed) == before + 1, "an expired connection is not reused")
    }
}
