package import CofferCore

/// DER for the few ASN.1 shapes the PKI engine writes (certificates, requests, CRLs) and a reader
/// for the parts of them it takes apart again. Parsing what users hand in is OpenSSL's (cpki.h).
enum DER {
    static func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [tag]
        out.reserveCapacity(content.count + 6)
        appendLength(content.count, to: &out)
        out += content
        return out
    }

    static func appendLength(_ length: Int, to out: inout [UInt8]) {
        if length < 0x80 {
            out.append(UInt8(length))
            return
        }
        var bytes: [UInt8] = []
        var rest = length
        while rest > 0 {
            bytes.insert(UInt8(rest & 0xFF), at: 0)
            rest >>= 8
        }
        out.append(0x80 | UInt8(bytes.count))
        out += bytes
    }

    /// Writes nested elements into one buffer: an element's length is filled in when
    /// its content is written (no array per element, no copy per level).
    struct Writer {
        private(set) var bytes: [UInt8] = []

        init(capacity: Int) { bytes.reserveCapacity(capacity) }

        mutating func append(_ der: [UInt8]) { bytes += der }

        mutating func tlv(_ tag: UInt8, _ content: some Collection<UInt8>) {
            bytes.append(tag)
            appendLength(content.count, to: &bytes)
            bytes += content
        }

        /// An element whose content `body` writes.
        mutating func element(_ tag: UInt8, _ body: (inout Writer) -> Void) {
            bytes.append(tag)
            bytes.append(0)
            let start = bytes.count
            body(&self)
            let length = bytes.count - start
            guard length >= 0x80 else {
                bytes[start - 1] = UInt8(length)
                return
            }
            var header: [UInt8] = []
            appendLength(length, to: &header)
            bytes.replaceSubrange((start - 1)..<start, with: header)
        }

        mutating func sequence(_ body: (inout Writer) -> Void) { element(0x30, body) }
    }

    static func sequence(_ parts: [[UInt8]]) -> [UInt8] { constructed(0x30, parts) }
    static func set(_ parts: [[UInt8]]) -> [UInt8] { constructed(0x31, parts) }

    /// A constructed element of `parts`, written in one buffer (no flattened copy in between).
    static func constructed(_ tag: UInt8, _ parts: [[UInt8]]) -> [UInt8] {
        var length = 0
        for part in parts { length += part.count }
        var out: [UInt8] = [tag]
        out.reserveCapacity(length + 6)
        appendLength(length, to: &out)
        for part in parts { out.append(contentsOf: part) }
        return out
    }
    /// `[n] EXPLICIT` (constructed, context-specific).
    static func explicit(_ n: UInt8, _ content: [UInt8]) -> [UInt8] { tlv(0xA0 | n, content) }
    /// `[n] IMPLICIT` of a primitive type (context-specific).
    static func implicit(_ n: UInt8, _ content: [UInt8]) -> [UInt8] { tlv(0x80 | n, content) }
    static let null: [UInt8] = [0x05, 0x00]
    static let `true`: [UInt8] = [0x01, 0x01, 0xFF]

    /// A non-negative INTEGER from its big-endian magnitude.
    static func integer(magnitude: [UInt8]) -> [UInt8] {
        var bytes = Array(magnitude.drop { $0 == 0 })
        if bytes.isEmpty || bytes[0] & 0x80 != 0 { bytes.insert(0, at: 0) }
        return tlv(0x02, bytes)
    }

    static func integer(_ value: UInt64) -> [UInt8] {
        integer(magnitude: (0..<8).reversed().map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) })
    }

    static func octetString(_ bytes: [UInt8]) -> [UInt8] { tlv(0x04, bytes) }

    /// A BIT STRING of whole bytes.
    static func bitString(_ bytes: [UInt8]) -> [UInt8] { tlv(0x03, [0] + bytes) }

    /// A named-bit BIT STRING (KeyUsage): bit 0 is the first byte's top bit; trailing zero bits are
    /// dropped, as DER requires.
    static func namedBits(_ bits: UInt16) -> [UInt8] {
        guard bits != 0 else { return tlv(0x03, [0]) }
        var highest = 0
        for bit in 0..<16 where bits & (1 << bit) != 0 { highest = bit }
        let count = highest / 8 + 1
        var bytes = [UInt8](repeating: 0, count: count)
        for bit in 0...highest where bits & (1 << bit) != 0 { bytes[bit / 8] |= 0x80 >> UInt8(bit % 8) }
        return tlv(0x03, [UInt8(7 - highest % 8)] + bytes)
    }

    /// An OBJECT IDENTIFIER from its dotted form (the engine's own constants and role-given OIDs);
    /// nil for text that is not one.
    static func oid(_ dotted: String) -> [UInt8]? {
        let arcs = dotted.split(separator: ".", omittingEmptySubsequences: false).map { UInt64($0) }
        guard arcs.count >= 2, arcs.allSatisfy({ $0 != nil }) else { return nil }
        let values = arcs.map { $0! }
        guard values[0] <= 2, values[0] == 2 || values[1] < 40, values[1] <= UInt64.max - 80 else { return nil }
        var content: [UInt8] = []
        for (index, arc) in ([values[0] * 40 + values[1]] + values.dropFirst(2)).enumerated() {
            _ = index
            var chunk: [UInt8] = [UInt8(arc & 0x7F)]
            var rest = arc >> 7
            while rest > 0 {
                chunk.insert(UInt8(rest & 0x7F) | 0x80, at: 0)
                rest >>= 7
            }
            content += chunk
        }
        return tlv(0x06, content)
    }

    /// A string attribute value: PrintableString when every character allows it, else UTF8String
    /// (as Go's encoding/asn1 chooses, so names compare equal with OpenBao's).
    static func directoryString(_ text: String) -> [UInt8] {
        let printable = text.utf8.allSatisfy { c in
            (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39)
                || " '()+,-./:=?".utf8.contains(c)
        }
        return tlv(printable ? 0x13 : 0x0C, Array(text.utf8))
    }

    static func ia5String(_ text: String) -> [UInt8] { tlv(0x16, Array(text.utf8)) }

    /// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
    static func time(_ seconds: Int64) -> [UInt8] {
        let (year, month, day, hour, minute, second) = civil(seconds)
        let utc = year >= 1950 && year < 2050
        var text: [UInt8] = []
        text.reserveCapacity(15)
        func digits(_ n: Int, _ count: Int) {
            var divisor = 1
            for _ in 1..<count { divisor *= 10 }
            for _ in 0..<count {
                text.append(UInt8(ascii: "0") + UInt8(n / divisor % 10))
                divisor /= 10
            }
        }
        // Validity is bounded by TTLs of at most 100 years; the clamp only keeps a bad clock from trapping.
        if utc { digits(year % 100, 2) } else { digits(min(max(year, 0), 9999), 4) }
        digits(month, 2)
        digits(day, 2)
        digits(hour, 2)
        digits(minute, 2)
        digits(second, 2)
        text.append(UInt8(ascii: "Z"))
        return tlv(utc ? 0x17 : 0x18, text)
    }

    /// UTC calendar fields of a Unix time (days-from-civil inverted, proleptic Gregorian).
    static func civil(_ seconds: Int64) -> (Int, Int, Int, Int, Int, Int) {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = Int(seconds - days * 86_400)
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yoe + era * 400) + (month <= 2 ? 1 : 0)
        return (year, month, day, secondOfDay / 3600, secondOfDay / 60 % 60, secondOfDay % 60)
    }

    /// One element read from DER: its tag, its content and the bytes after it.
    struct Element {
        let tag: UInt8
        let content: ArraySlice<UInt8>
        let whole: ArraySlice<UInt8>
    }

    /// The first element of `bytes`; nil when it is not well-formed DER (short, indefinite or
    /// overlong lengths).
    static func read(_ bytes: ArraySlice<UInt8>) -> (Element, rest: ArraySlice<UInt8>)? {
        var index = bytes.startIndex
        guard index < bytes.endIndex else { return nil }
        let tag = bytes[index]
        index += 1
        guard index < bytes.endIndex else { return nil }
        var length = Int(bytes[index])
        index += 1
        if length & 0x80 != 0 {
            let count = length & 0x7F
            guard count >= 1, count <= 4, bytes.endIndex - index >= count else { return nil }
            length = 0
            for _ in 0..<count {
                length = length << 8 | Int(bytes[index])
                index += 1
            }
        }
        guard bytes.endIndex - index >= length else { return nil }
        let content = bytes[index..<index + length]
        return (
            Element(tag: tag, content: content, whole: bytes[bytes.startIndex..<index + length]),
            bytes[(index + length)...]
        )
    }

    /// The elements inside a constructed element, in order; nil when one is malformed.
    static func children(_ content: ArraySlice<UInt8>) -> [Element]? {
        var out: [Element] = []
        var rest = content
        while !rest.isEmpty {
            guard let (element, after) = read(rest) else { return nil }
            out.append(element)
            rest = after
        }
        return out
    }
}

/// PEM armour: `-----BEGIN <label>-----`, base64 in 64-character lines, `-----END <label>-----`.
enum PEM {
    static func encode(_ der: [UInt8], label: String) -> String {
        let head = Array("-----BEGIN \(label)-----\n".utf8)
        let tail = Array("-----END \(label)-----".utf8)
        let lines = (der.count + 47) / 48
        let capacity = head.count + Base64.encodedLength(der.count) + lines + tail.count
        return String(unsafeUninitializedCapacity: capacity) { out in
            var at = 0
            for byte in head {
                out[at] = byte
                at += 1
            }
            der.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let chunk = UnsafeRawBufferPointer(rebasing: bytes[offset..<min(offset + 48, bytes.count)])
                    Base64.encode(chunk, into: out.baseAddress! + at)  // 48 bytes: one 64-character line
                    at += Base64.encodedLength(chunk.count)
                    out[at] = 0x0A
                    at += 1
                    offset += 48
                }
            }
            for byte in tail {
                out[at] = byte
                at += 1
            }
            return at
        }
    }

    /// Every block in `text` with its label, in order; nil when an armour is broken or its base64
    /// does not decode. Text between blocks is ignored, as OpenSSL does.
    static func decodeAll(_ text: String) -> [(label: String, der: [UInt8])]? {
        let bytes = Array(text.utf8)
        var blocks: [(String, [UInt8])] = []
        var index = 0
        while let begin = find(Array("-----BEGIN ".utf8), in: bytes, from: index) {
            let labelStart = begin + 11
            guard let labelEnd = find(Array("-----".utf8), in: bytes, from: labelStart) else { return nil }
            let label = Array(bytes[labelStart..<labelEnd])
            guard let end = find(Array("-----END ".utf8) + label + Array("-----".utf8), in: bytes, from: labelEnd + 5)
            else { return nil }
            let base64 = bytes[(labelEnd + 5)..<end].filter { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
            guard let der = Base64.decode(String(decoding: base64, as: UTF8.self)), !der.isEmpty else { return nil }
            blocks.append((String(decoding: label, as: UTF8.self), der))
            index = end + 14 + label.count
        }
        return blocks
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard needle.count <= haystack.count, start <= haystack.count - needle.count else { return nil }
        outer: for i in start...(haystack.count - needle.count) {
            for j in 0..<needle.count where haystack[i + j] != needle[j] { continue outer }
            return i
        }
        return nil
    }
}
