/// The subset of ASN.1 BER that LDAPv3 (RFC 4511 §5.1) uses: one-byte identifiers (tag numbers
/// below 31), definite lengths, primitive and constructed encodings.
///
/// The decoder is written for hostile input: every length is checked against the bytes that are
/// there before anything is allocated, lengths longer than 4 bytes and the indefinite form are
/// refused, nesting is bounded, and integers longer than 8 bytes are refused; nothing traps.
package struct BER: Sendable, Equatable {
    /// The identifier byte: class (bits 8-7), constructed (bit 6), tag number (bits 5-1).
    package var tag: UInt8
    /// The content octets of a primitive element.
    package var bytes: [UInt8]
    /// The elements inside a constructed element.
    package var children: [BER]

    package var isConstructed: Bool { tag & 0x20 != 0 }

    package init(tag: UInt8, bytes: [UInt8]) {
        self.tag = tag
        self.bytes = bytes
        self.children = []
    }

    package init(tag: UInt8, children: [BER]) {
        self.tag = tag | 0x20
        self.bytes = []
        self.children = children
    }

    // MARK: Universal types

    package static func sequence(_ children: [BER]) -> BER { BER(tag: 0x30, children: children) }
    package static func set(_ children: [BER]) -> BER { BER(tag: 0x31, children: children) }
    package static func octets(_ text: String, tag: UInt8 = 0x04) -> BER { BER(tag: tag, bytes: Array(text.utf8)) }
    package static func octets(_ bytes: [UInt8], tag: UInt8 = 0x04) -> BER { BER(tag: tag, bytes: bytes) }
    package static func boolean(_ value: Bool, tag: UInt8 = 0x01) -> BER { BER(tag: tag, bytes: [value ? 0xFF : 0x00]) }
    package static func integer(_ value: Int64, tag: UInt8 = 0x02) -> BER {
        var out: [UInt8] = []
        var v = value
        repeat {
            out.insert(UInt8(truncatingIfNeeded: v), at: 0)
            v >>= 8
        } while !(v == 0 && out[0] & 0x80 == 0) && !(v == -1 && out[0] & 0x80 != 0)
        return BER(tag: tag, bytes: out)
    }
    package static func enumerated(_ value: Int64) -> BER { integer(value, tag: 0x0A) }

    // MARK: Reading values

    /// The two's-complement integer of a primitive element; nil if empty or longer than 8 bytes.
    package var integerValue: Int64? {
        guard !isConstructed, (1...8).contains(bytes.count) else { return nil }
        var value: Int64 = bytes[0] & 0x80 != 0 ? -1 : 0
        for byte in bytes { value = (value << 8) | Int64(byte) }
        return value
    }

    package var stringValue: String { String(decoding: bytes, as: UTF8.self) }

    package var booleanValue: Bool? {
        guard !isConstructed, bytes.count == 1 else { return nil }
        return bytes[0] != 0
    }

    // MARK: Encoding

    package var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    package func encode(into out: inout [UInt8]) {
        out.append(tag)
        if isConstructed {
            var content: [UInt8] = []
            for child in children { child.encode(into: &content) }
            BER.appendLength(content.count, to: &out)
            out.append(contentsOf: content)
        } else {
            BER.appendLength(bytes.count, to: &out)
            out.append(contentsOf: bytes)
        }
    }

    static func appendLength(_ length: Int, to out: inout [UInt8]) {
        if length < 0x80 {
            out.append(UInt8(length))
            return
        }
        var bytes: [UInt8] = []
        var n = length
        while n > 0 {
            bytes.insert(UInt8(truncatingIfNeeded: n), at: 0)
            n >>= 8
        }
        out.append(0x80 | UInt8(bytes.count))
        out.append(contentsOf: bytes)
    }

    // MARK: Decoding

    package struct DecodeError: Error, Equatable, CustomStringConvertible {
        package let description: String
        init(_ description: String) { self.description = description }
    }

    /// The deepest nesting decoded (an LDAP message with a search entry needs 5).
    package static let maximumDepth = 16

    /// The header of the element at the start of `bytes`: its tag, the length of the header and of
    /// the content. nil when more bytes are needed to know; an error for a form LDAP does not allow.
    package static func header(
        _ bytes: ArraySlice<UInt8>
    ) throws(DecodeError) -> (tag: UInt8, headerLength: Int, contentLength: Int)? {
        var i = bytes.startIndex
        guard i < bytes.endIndex else { return nil }
        let tag = bytes[i]
        guard tag & 0x1F != 0x1F else { throw DecodeError("multi-byte BER tags are not used by LDAP") }
        i += 1
        guard i < bytes.endIndex else { return nil }
        let first = bytes[i]
        i += 1
        if first < 0x80 { return (tag, 2, Int(first)) }
        let count = Int(first & 0x7F)
        guard count != 0 else { throw DecodeError("indefinite BER length") }
        guard count <= 4 else { throw DecodeError("BER length of \(count) bytes") }
        guard bytes.endIndex - i >= count else { return nil }
        var length = 0
        for _ in 0..<count {
            length = (length << 8) | Int(bytes[i])
            i += 1
        }
        return (tag, 2 + count, length)
    }

    /// Decodes exactly one element filling `bytes`.
    package static func decode(_ bytes: [UInt8]) throws(DecodeError) -> BER {
        var slice = bytes[...]
        let element = try decodeOne(&slice, depth: 0)
        guard slice.isEmpty else { throw DecodeError("bytes after the BER element") }
        return element
    }

    static func decodeOne(_ bytes: inout ArraySlice<UInt8>, depth: Int) throws(DecodeError) -> BER {
        guard depth < maximumDepth else { throw DecodeError("BER nested too deeply") }
        guard let (tag, headerLength, contentLength) = try header(bytes) else {
            throw DecodeError("truncated BER element")
        }
        guard bytes.count - headerLength >= contentLength else { throw DecodeError("truncated BER element") }
        let start = bytes.startIndex + headerLength
        var content = bytes[start..<start + contentLength]
        bytes = bytes[(start + contentLength)...]
        if tag & 0x20 == 0 { return BER(tag: tag, bytes: Array(content)) }
        var children: [BER] = []
        while !content.isEmpty { children.append(try decodeOne(&content, depth: depth + 1)) }
        var element = BER(tag: tag, children: children)
        element.tag = tag
        return element
    }
}
