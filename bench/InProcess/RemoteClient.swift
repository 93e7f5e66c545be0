// Issue 20: a cached read through the remote client's API (RemoteClient.read, docs/delivery.md):
// goal p50 <= 1 µs (a lock, a hash lookup and a copy). The store is a one-answer HTTP server on
// loopback that serves the secret once; every measured read is a cache hit.
import Coffer
import Foundation

let remoteCachedReadName = "remote client cached read (RemoteClient.read)"

/// A loopback HTTP server answering every request with a KV v2 read of `payload`; stops when released.
final class StaticKVServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32

    init(payload: [String: JSONValue]) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw BenchError("cannot listen on loopback")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = fd
        let body = Array(
            JSONValue.object(["data": ["data": .object(payload), "metadata": ["version": 1]]]).serialized()
        )
        let head = Array(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
                .utf8
        )
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 65536)
                _ = recv(client, &buffer, buffer.count, 0)
                let answer = head + body
                _ = answer.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(client)
            }
        }
    }

    deinit {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// Measures a cached read through RemoteClient.read against the static server.
func measureRemoteCachedRead(_ bench: Bench, payload: [String: JSONValue]) throws {
    let server = try StaticKVServer(payload: payload)
    var configuration = RemoteConfiguration(address: "http://127.0.0.1:\(server.port)", auth: .token("bench"))
    configuration.cache.defaultTTL = 3600
    configuration.cache.invalidateOnEvents = false
    let client = try RemoteClient(configuration)
    defer { client.close() }
    let first = try client.read("secret/data/app/db")
    guard first.source == .store, first.fields == payload else {
        throw BenchError("the first read was not the store's")
    }
    try bench.measure(remoteCachedReadName) {
        let read = try client.read("secret/data/app/db")
        if read.source != .cache { throw BenchError("a measured read missed the cache") }
    }
    withExtendedLifetime(server) {}
}
