import CTLS

#if canImport(Glibc)
import Glibc
#endif

extension HTTPClient {
    /// A connection that stays open after its HTTP/1.1 head: what a WebSocket (RFC 6455) runs on
    /// after `101 Switching Protocols`. Same sockets, TLS and limits as ``HTTPClient/send(_:_:headers:body:options:)``
    /// (which is unchanged: one request per connection).
    ///
    /// One thread reads and writes; another may call ``shutdown()`` to wake a blocked read (it then
    /// returns the end of the stream). Closed (TLS freed, socket closed) when released.
    package final class Stream: @unchecked Sendable {
        private let fd: Int32
        private var tls: OpaquePointer?
        /// Bytes read past the head, handed out first.
        private var pending: [UInt8] = []
        private var pendingPosition = 0

        private init(fd: Int32, tls: OpaquePointer?) {
            self.fd = fd
            self.tls = tls
        }

        deinit {
            if let tls { ctls_free(tls) }
            close(fd)
        }

        /// Connects, sends `GET` with `headers` (no body, no `Connection: close`) and reads the
        /// answer's head. The stream is returned with every status; the caller checks it (a 101 for
        /// an upgrade). `ioTimeout` applies to the head; afterwards reads block until data, the end
        /// of the stream or ``shutdown()`` (`readTimeout` seconds when given).
        package static func open(
            _ urlText: String,
            headers: [(String, String)],
            options: Options,
            readTimeout: Double? = nil
        ) throws(Failure) -> (Response, Stream) {
            let what = "Get \"\(urlText)\""
            func fail(_ reason: String) -> Failure { Failure(message: "\(what): \(reason)") }
            guard let url = URL(urlText) else { throw fail("not an http:// or https:// URL") }
            let start = TCP.monotonicSeconds()
            let fd: Int32
            do throws(TCP.ConnectFailure) {
                fd = try TCP.connect(
                    host: url.host,
                    port: url.port,
                    timeout: options.connectTimeout,
                    timedOut: "connect timed out"
                )
            } catch {
                switch error {
                case .lookup(let reason): throw fail("cannot resolve host \"\(url.host)\": \(reason)")
                case .connect(let reason): throw fail("dial tcp \(url.host):\(url.port): connect: \(reason)")
                }
            }
            TCP.setTimeout(fd, SO_RCVTIMEO, options.ioTimeout)
            TCP.setTimeout(fd, SO_SNDTIMEO, options.ioTimeout)
            var tls: OpaquePointer? = nil
            if url.secure {
                switch HTTPClient.startTLS(fd, host: url.host, options: options) {
                case .success(let connection): tls = connection
                case .failure(let failure):
                    close(fd)
                    throw fail(failure.message)
                }
            }
            let stream = Stream(fd: fd, tls: tls)
            var head =
                "GET \(url.target) HTTP/1.1\r\nHost: \(options.hostHeader ?? url.hostHeader)\r\nUser-Agent: Coffer\r\n"
            for (name, value) in headers {
                guard !name.contains(where: { $0 == "\r" || $0 == "\n" || $0 == ":" }),
                    !value.contains(where: { $0 == "\r" || $0 == "\n" })
                else { throw fail("a request header contains a line break") }
                head += "\(name): \(value)\r\n"
            }
            head += "\r\n"
            guard stream.write(Array(head.utf8)) else { throw fail("writing the request failed") }

            // The head: up to the blank line, at most maximumHeaderBytes.
            var bytes: [UInt8] = []
            var end: Int? = nil
            while end == nil {
                if TCP.monotonicSeconds() - start > options.deadline {
                    throw fail("no complete answer within \(Int(options.deadline)) s")
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = chunk.withUnsafeMutableBytes { stream.rawRead($0) }
                guard n > 0 else {
                    throw fail(n == 0 ? "the connection closed before the answer was complete" : "read timed out")
                }
                let searchFrom = max(0, bytes.count - 3)
                bytes.append(contentsOf: chunk[0..<n])
                if bytes.count >= 4 {
                    for i in searchFrom...(bytes.count - 4)
                    where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
                        end = i
                        break
                    }
                }
                if end == nil && bytes.count > options.maximumHeaderBytes {
                    throw fail("the answer's header is larger than \(options.maximumHeaderBytes) bytes")
                }
            }
            guard let end else { throw fail("the answer is not HTTP/1.x") }
            let lines = String(decoding: bytes[0..<end], as: UTF8.self).split(separator: "\r\n")
            guard let statusLine = lines.first else { throw fail("the answer is not HTTP/1.x") }
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]),
                (100...999).contains(status)
            else { throw fail("the answer is not HTTP/1.x") }
            var responseHeaders: [(name: String, value: String)] = []
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { throw fail("malformed header line") }
                var value = line[line.index(after: colon)...]
                while value.first == " " || value.first == "\t" { value = value.dropFirst() }
                while value.last == " " || value.last == "\t" { value = value.dropLast() }
                responseHeaders.append((line[..<colon].lowercased(), String(value)))
            }
            stream.pending = Array(bytes[(end + 4)...])
            if let readTimeout {
                TCP.setTimeout(fd, SO_RCVTIMEO, readTimeout)
            } else {
                // No timeout: a zero timeval means "block".
                var tv = timeval(tv_sec: 0, tv_usec: 0)
                _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            }
            return (Response(status: status, headers: responseHeaders, body: []), stream)
        }

        private func rawRead(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
            if let tls { return ctls_read(tls, buffer.baseAddress, buffer.count) }
            while true {
                let n = recv(fd, buffer.baseAddress, buffer.count, 0)
                if n < 0 && errno == EINTR { continue }
                return n
            }
        }

        /// Reads up to `buffer.count` bytes: the count, 0 at the end of the stream, -1 on an error.
        package func read(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
            if pendingPosition < pending.count {
                let n = min(buffer.count, pending.count - pendingPosition)
                pending.withUnsafeBytes { source in
                    buffer.baseAddress!.copyMemory(from: source.baseAddress! + pendingPosition, byteCount: n)
                }
                pendingPosition += n
                if pendingPosition == pending.count {
                    pending = []
                    pendingPosition = 0
                }
                return n
            }
            return rawRead(buffer)
        }

        /// Writes all of `bytes`; false when the connection failed.
        package func write(_ bytes: [UInt8]) -> Bool {
            bytes.withUnsafeBytes { raw in
                guard let base = raw.baseAddress else { return true }
                if let tls { return ctls_write(tls, base, raw.count) == 0 }
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.send(fd, base + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return false }
                    offset += n
                }
                return true
            }
        }

        /// Wakes a read blocked on another thread (it returns 0 or -1); later reads and writes fail.
        package func shutdown() {
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
        }
    }
}
