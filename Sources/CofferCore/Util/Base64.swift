/// Standard base64 (RFC 4648 §4, with padding), as Vault uses for keys_base64 and transit bodies.
package enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    package static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = bytes as? [UInt8] ?? Array(bytes)
        var out: [UInt8] = []
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= input.count {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            out += [
                alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)],
                alphabet[Int(n & 63)],
            ]
            i += 3
        }
        let rest = input.count - i
        if rest == 1 {
            let n = UInt32(input[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
        } else if rest == 2 {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8
            out += [
                alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], UInt8(ascii: "="),
            ]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes padded or unpadded standard base64; nil if any character is outside the alphabet.
    package static func decode(_ text: String) -> [UInt8]? {
        var chars = Array(text.utf8)
        while chars.last == UInt8(ascii: "=") { chars.removeLast() }
        guard chars.count % 4 != 1 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for c in chars {
            let v = reverse[Int(c)]
            guard v != 0xFF else { return nil }
            buffer = buffer << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        return out
    }
}

// Buffer forms for hot paths (transit's in-process API): no intermediate arrays or strings.
extension Base64 {
    private static let table: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    /// The padded base64 length of `count` bytes.
    package static func encodedLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    /// Writes the padded base64 of `input` to `output`, which must hold `encodedLength(input.count)` bytes.
    package static func encode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutablePointer<UInt8>) {
        let a = table.utf8Start
        var i = 0
        var o = 0
        let n = input.count
        while i + 3 <= n {
            let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            output[o] = a[Int(v >> 18)]
            output[o + 1] = a[Int(v >> 12 & 63)]
            output[o + 2] = a[Int(v >> 6 & 63)]
            output[o + 3] = a[Int(v & 63)]
            i += 3
            o += 4
        }
        if n - i == 1 {
            let v = UInt32(input[i]) << 16
            output[o] = a[Int(v >> 18)]
            output[o + 1] = a[Int(v >> 12 & 63)]
            output[o + 2] = UInt8(ascii: "=")
            output[o + 3] = UInt8(ascii: "=")
        } else if n - i == 2 {
            let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8
            output[o] = a[Int(v >> 18)]
            output[o + 1] = a[Int(v >> 12 & 63)]
            output[o + 2] = a[Int(v >> 6 & 63)]
            output[o + 3] = UInt8(ascii: "=")
        }
    }

    /// Decodes padded or unpadded standard base64 into `output` (at least `input.count * 3 / 4`
    /// bytes); returns the number of bytes written, or nil if a character is outside the alphabet or
    /// the length is impossible.
    package static func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        var end = input.count
        while end > 0 && input[end - 1] == UInt8(ascii: "=") { end -= 1 }
        guard end % 4 != 1, input.count - end <= 2 else { return nil }
        var buffer: UInt32 = 0
        var bits = 0
        var o = 0
        for i in 0..<end {
            let v = reverse[Int(input[i])]
            guard v != 0xFF else { return nil }
            buffer = buffer << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                guard o < output.count else { return nil }
                output[o] = UInt8(truncatingIfNeeded: buffer >> UInt32(bits))
                o += 1
            }
        }
        return o
    }
}
