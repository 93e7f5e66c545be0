import CofferCore
import Engines

/// A small RFC 6455 client for the event subscription: the opening handshake (checking
/// `Sec-WebSocket-Accept`), unmasked server frames (text, continuation, ping, pong, close), masked
/// client frames (pong and close). Messages are bounded (``maximumMessageBytes``); a masked or
/// oversized server frame, or a reserved opcode, ends the connection. One thread uses it;
/// ``shutdown()`` may be called from another to wake it.
final class WebSocketClient: Sendable {
    static let maximumMessageBytes = 1 << 20
    private let stream: HTTPClient.Stream

    enum Failure: Error {
        /// The server answered the handshake with this status (not 101): it does not offer the
        /// endpoint or refused the token.
        case refused(Int)
        /// Connecting or the handshake failed; the message names the URL, never a header.
        case failed(String)
    }

    private init(stream: HTTPClient.Stream) { self.stream = stream }

    /// Opens `url` (http(s)://, upgraded) with `headers` added to the handshake.
    static func connect(
        _ url: String,
        headers: [(String, String)],
        options: HTTPClient.Options
    ) throws(Failure) -> WebSocketClient {
        var keyBytes = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for i in 0..<16 { keyBytes[i] = generator.next() }
        let key = Base64.encode(keyBytes)
        let all =
            [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
                ("Sec-WebSocket-Version", "13"),
            ] + headers
        let response: HTTPClient.Response
        let stream: HTTPClient.Stream
        do throws(HTTPClient.Failure) {
            (response, stream) = try HTTPClient.Stream.open(url, headers: all, options: options)
        } catch {
            throw .failed(error.message)
        }
        guard response.status == 101 else { throw .refused(response.status) }
        let expected = Base64.encode(SHA1.digest(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
        guard response.header("sec-websocket-accept") == expected,
            response.header("upgrade")?.lowercased() == "websocket"
        else { throw .failed("the server's WebSocket handshake answer is not valid (Sec-WebSocket-Accept)") }
        return WebSocketClient(stream: stream)
    }

    /// The next text message; nil when the connection ended (close frame, end of stream, error or a
    /// protocol violation). Pings are answered on the way.
    func nextText() -> String? {
        var message: [UInt8] = []
        var inMessage = false
        while true {
            guard let head = read(2) else { return nil }
            let fin = head[0] & 0x80 != 0
            let opcode = head[0] & 0x0F
            guard head[0] & 0x70 == 0, head[1] & 0x80 == 0 else {
                close(code: 1002)
                return nil
            }
            var length = UInt64(head[1] & 0x7F)
            if length == 126 {
                guard let extended = read(2) else { return nil }
                length = UInt64(extended[0]) << 8 | UInt64(extended[1])
            } else if length == 127 {
                guard let extended = read(8) else { return nil }
                length = extended.reduce(0) { $0 << 8 | UInt64($1) }
            }
            guard length <= UInt64(WebSocketClient.maximumMessageBytes - message.count) else {
                close(code: 1009)
                return nil
            }
            var payload: [UInt8] = []
            if length > 0 {
                guard let bytes = read(Int(length)) else { return nil }
                payload = bytes
            }
            switch opcode {
            case 0x0:
                guard inMessage else {
                    close(code: 1002)
                    return nil
                }
                message += payload
            case 0x1:
                guard !inMessage else {
                    close(code: 1002)
                    return nil
                }
                message = payload
                inMessage = true
            case 0x8:
                close(code: 1000)
                return nil
            case 0x9:
                guard payload.count <= 125, fin else { return nil }
                guard send(opcode: 0xA, payload) else { return nil }
                continue
            case 0xA:
                continue
            default:
                close(code: 1003)
                return nil
            }
            if fin && inMessage {
                return String(decoding: message, as: UTF8.self)
            }
        }
    }

    /// A masked frame with FIN set.
    @discardableResult
    func send(opcode: UInt8, _ payload: [UInt8]) -> Bool {
        var frame: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) {
                frame.append(UInt8((UInt64(payload.count) >> UInt64(shift)) & 0xFF))
            }
        }
        var generator = SystemRandomNumberGenerator()
        let mask: [UInt8] = (0..<4).map { _ in generator.next() }
        frame += mask
        for (index, byte) in payload.enumerated() { frame.append(byte ^ mask[index & 3]) }
        return stream.write(frame)
    }

    func close(code: UInt16) {
        send(opcode: 0x8, [UInt8(code >> 8), UInt8(code & 0xFF)])
        stream.shutdown()
    }

    /// Wakes a blocked ``nextText()`` (it returns nil).
    func shutdown() { stream.shutdown() }

    private func read(_ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = out.withUnsafeMutableBytes { raw in
                stream.read(UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
            }
            guard n > 0 else { return nil }
            filled += n
        }
        return out
    }
}

/// SHA-1 (FIPS 180-4), for the WebSocket handshake's accept key only (not a security function here).
enum SHA1 {
    static func digest(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0]
        var data = message
        let bitLength = UInt64(message.count) &* 8
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8((bitLength >> UInt64(shift)) & 0xFF)) }
        var w = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                w[i] =
                    UInt32(data[chunk + 4 * i]) << 24 | UInt32(data[chunk + 4 * i + 1]) << 16
                    | UInt32(data[chunk + 4 * i + 2]) << 8 | UInt32(data[chunk + 4 * i + 3])
            }
            for i in 16..<80 {
                let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
                w[i] = (x << 1) | (x >> 31)
            }
            var a = h[0]
            var b = h[1]
            var c = h[2]
            var d = h[3]
            var e = h[4]
            for i in 0..<80 {
                let f: UInt32
                let k: UInt32
                switch i {
                case 0..<20:
                    f = (b & c) | (~b & d)
                    k = 0x5A82_7999
                case 20..<40:
                    f = b ^ c ^ d
                    k = 0x6ED9_EBA1
                case 40..<60:
                    f = (b & c) | (b & d) | (c & d)
                    k = 0x8F1B_BCDC
                default:
                    f = b ^ c ^ d
                    k = 0xCA62_C1D6
                }
                let temp = ((a << 5) | (a >> 27)) &+ f &+ e &+ k &+ w[i]
                e = d
                d = c
                c = (b << 30) | (b >> 2)
                b = a
                a = temp
            }
            h[0] = h[0] &+ a
            h[1] = h[1] &+ b
            h[2] = h[2] &+ c
            h[3] = h[3] &+ d
            h[4] = h[4] &+ e
        }
        return h.flatMap { [UInt8($0 >> 24), UInt8(($0 >> 16) & 0xFF), UInt8(($0 >> 8) & 0xFF), UInt8($0 & 0xFF)] }
    }
}
