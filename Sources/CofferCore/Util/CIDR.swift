/// An IPv4 or IPv6 network in CIDR notation ("10.0.0.0/8", "::1/128"); a bare address is its own
/// /32 or /128. Used for the CIDR bindings of tokens and AppRole secret IDs.
package struct CIDR: Sendable, Equatable, CustomStringConvertible {
    /// The network address, 4 or 16 bytes, with the host bits cleared.
    package let network: [UInt8]
    package let prefixLength: Int
    /// The text it was parsed from.
    package let description: String

    /// Parses CIDR text or a bare address; nil when it is neither.
    package init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = CIDR.address(String(parts[0])) else { return nil }
        let bits = address.count * 8
        var length = bits
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...bits).contains(n), parts[1].allSatisfy(\.isASCII) else { return nil }
            length = n
        }
        network = CIDR.masked(address, length)
        prefixLength = length
        description = text
    }

    /// Whether `address` (an IP address in text, maybe with a port or IPv6 brackets) is inside.
    package func contains(_ address: String) -> Bool {
        guard var bytes = CIDR.address(CIDR.stripPort(address)) else { return false }
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address.
        if bytes.count == 16, network.count == 4, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff,
            bytes[11] == 0xff
        {
            bytes = Array(bytes[12...])
        }
        guard bytes.count == network.count else { return false }
        return CIDR.masked(bytes, prefixLength) == network
    }

    /// Whether every address of `other` is inside this network.
    package func contains(_ other: CIDR) -> Bool {
        other.network.count == network.count && other.prefixLength >= prefixLength
            && CIDR.masked(other.network, prefixLength) == network
    }

    /// Parses a list; throws naming the first entry that is not CIDR text or an address.
    package static func parseList(_ texts: [String], field: String) throws(CofferError) -> [CIDR] {
        var out: [CIDR] = []
        for text in texts {
            let trimmed = text.trimmingSpaces()
            if trimmed.isEmpty { continue }
            guard let cidr = CIDR(trimmed) else {
                throw CofferError.invalid("\(field): \"\(trimmed)\" is not an IP address or CIDR block")
            }
            out.append(cidr)
        }
        return out
    }

    /// Whether `address` is inside any of `blocks` (true when there are none).
    package static func allows(_ blocks: [String], _ address: String) -> Bool {
        blocks.isEmpty || blocks.contains { CIDR($0)?.contains(address) ?? false }
    }

    static func stripPort(_ text: String) -> String {
        if text.hasPrefix("["), let end = text.firstIndex(of: "]") {
            return String(text[text.index(after: text.startIndex)..<end])
        }
        // "1.2.3.4:5678": one colon means a port; IPv6 has several.
        if text.utf8.filter({ $0 == UInt8(ascii: ":") }).count == 1, let colon = text.firstIndex(of: ":") {
            return String(text[..<colon])
        }
        return text
    }

    static func masked(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        var out = bytes
        for i in 0..<out.count {
            let keep = max(0, min(8, length - i * 8))
            out[i] &= keep == 8 ? 0xff : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
        return out
    }

    /// The bytes of an IPv4 (dotted quad) or IPv6 address; nil otherwise.
    static func address(_ text: String) -> [UInt8]? {
        if text.contains(":") { return ipv6(text) }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let value = UInt8(part)
            else { return nil }
            out.append(value)
        }
        return out
    }

    static func ipv6(_ text: String) -> [UInt8]? {
        var text = Substring(text)
        var tail: [UInt8] = []
        // A trailing dotted quad (::ffff:1.2.3.4).
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = address(String(text[text.index(after: lastColon)...])) else { return nil }
            tail = v4
            text = text[...lastColon]
            if text.hasSuffix(":") && !text.hasSuffix("::") { text = text.dropLast() }
        }
        var halves: [String] = [String(text)]
        if let range = text.firstRange(of: "::") {
            halves = [String(text[..<range.lowerBound]), String(text[range.upperBound...])]
            guard !halves[1].contains("::") else { return nil }
        }
        func groups(_ s: String) -> [UInt8]? {
            if s.isEmpty { return [] }
            var out: [UInt8] = []
            for group in s.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(group.count), let v = UInt16(group, radix: 16) else { return nil }
                out += [UInt8(v >> 8), UInt8(v & 0xff)]
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        if halves.count == 1 {
            let all = head + tail
            return all.count == 16 ? all : nil
        }
        guard let rest = groups(halves[1]) else { return nil }
        let known = head.count + rest.count + tail.count
        guard known < 16 else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - known) + rest + tail
    }
}
