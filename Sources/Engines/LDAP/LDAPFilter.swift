/// RFC 4515 search filters: the string form parsed into the BER an LDAP search carries, and the
/// escaping of values put into a filter (RFC 4515 §3) or a DN (RFC 4514 §2.4).
///
/// A username is always escaped before it meets a filter or a DN, so `*)(|(uid=*` is searched for
/// literally and cannot widen a search or change a DN.
package enum LDAPFilter {
    package struct ParseError: Error, Equatable, CustomStringConvertible {
        package let description: String
        init(_ description: String) { self.description = description }
    }

    /// The longest filter text accepted, and the deepest nesting of `&`, `|` and `!`.
    static let maximumLength = 64 << 10
    static let maximumDepth = 32

    /// Parses `text` (one parenthesised filter, surrounding spaces allowed) into its BER.
    package static func parse(_ text: String) throws(ParseError) -> BER {
        let bytes = Array(text.utf8)
        guard bytes.count <= maximumLength else { throw ParseError("filter longer than \(maximumLength) bytes") }
        var parser = Parser(bytes: bytes)
        parser.skipSpaces()
        let filter = try parser.filter(depth: 0)
        parser.skipSpaces()
        guard parser.index == bytes.count else { throw ParseError("unexpected text after the filter") }
        return filter
    }

    struct Parser {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipSpaces() {
            while current == UInt8(ascii: " ") { index += 1 }
        }

        mutating func expect(_ c: Character) throws(ParseError) {
            // Go's ldap package says this too; OpenBao shows it.
            guard index < bytes.count else { throw ParseError("unexpected end of filter") }
            guard let ascii = c.asciiValue, current == ascii else {
                throw ParseError("expected '\(c)' at offset \(index)")
            }
            index += 1
        }

        mutating func filter(depth: Int) throws(ParseError) -> BER {
            guard depth < LDAPFilter.maximumDepth else { throw ParseError("filter nested too deeply") }
            try expect("(")
            let result: BER
            switch current {
            case UInt8(ascii: "&"), UInt8(ascii: "|"):
                let tag: UInt8 = current == UInt8(ascii: "&") ? 0xA0 : 0xA1
                index += 1
                var items: [BER] = []
                skipSpaces()
                while current == UInt8(ascii: "(") {
                    items.append(try filter(depth: depth + 1))
                    skipSpaces()
                }
                guard !items.isEmpty else { throw ParseError("empty filter list at offset \(index)") }
                result = BER(tag: tag, children: items)
            case UInt8(ascii: "!"):
                index += 1
                skipSpaces()
                result = BER(tag: 0xA2, children: [try filter(depth: depth + 1)])
                skipSpaces()
            case nil:
                throw ParseError("unexpected end of filter")
            default:
                let start = index
                while let c = current, c != UInt8(ascii: ")"), c != UInt8(ascii: "(") { index += 1 }
                result = try LDAPFilter.item(bytes[start..<index])
            }
            try expect(")")
            return result
        }
    }

    /// One `attr op value` item (the text between its parentheses).
    static func item(_ text: ArraySlice<UInt8>) throws(ParseError) -> BER {
        guard let equals = text.firstIndex(of: UInt8(ascii: "=")) else {
            throw ParseError("filter item without '='")
        }
        var left = text[..<equals]
        let value = text[(equals + 1)...]
        var tag: UInt8 = 0xA3
        switch left.last {
        case UInt8(ascii: "~"): tag = 0xA8
        case UInt8(ascii: ">"): tag = 0xA5
        case UInt8(ascii: "<"): tag = 0xA6
        case UInt8(ascii: ":"): return try extensible(left.dropLast(), value)
        default: break
        }
        if tag != 0xA3 { left = left.dropLast() }
        let attribute = try attributeDescription(left)
        if tag == 0xA3 {
            if value.elementsEqual([UInt8(ascii: "*")]) { return BER(tag: 0x87, bytes: Array(attribute.utf8)) }
            if value.contains(UInt8(ascii: "*")) {
                let parts = value.split(separator: UInt8(ascii: "*"), omittingEmptySubsequences: false)
                var subs: [BER] = []
                for (i, part) in parts.enumerated() where !part.isEmpty {
                    let subTag: UInt8 = i == 0 ? 0x80 : (i == parts.count - 1 ? 0x82 : 0x81)
                    subs.append(BER(tag: subTag, bytes: try unescape(part)))
                }
                return BER(tag: 0xA4, children: [.octets(attribute), .sequence(subs)])
            }
        }
        return BER(tag: tag, children: [.octets(attribute), .octets(try unescape(value))])
    }

    /// `[attr][:dn][:rule]` before `:=` (the trailing colon already removed).
    static func extensible(_ left: ArraySlice<UInt8>, _ value: ArraySlice<UInt8>) throws(ParseError) -> BER {
        let parts = left.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        var attribute: String? = nil
        var rule: String? = nil
        var dnAttributes = false
        for (i, raw) in parts.enumerated() {
            let part = String(decoding: raw, as: UTF8.self)
            if i == 0 {
                if !part.isEmpty { attribute = try attributeDescription(raw) }
            } else if part.lowercased() == "dn" && !dnAttributes && rule == nil {
                dnAttributes = true
            } else if rule == nil && !part.isEmpty {
                rule = try attributeDescription(raw)
            } else {
                throw ParseError("malformed extensible match")
            }
        }
        guard attribute != nil || rule != nil else { throw ParseError("extensible match needs a type or a rule") }
        var children: [BER] = []
        if let rule { children.append(.octets(rule, tag: 0x81)) }
        if let attribute { children.append(.octets(attribute, tag: 0x82)) }
        children.append(.octets(try unescape(value), tag: 0x83))
        if dnAttributes { children.append(.boolean(true, tag: 0x84)) }
        return BER(tag: 0xA9, children: children)
    }

    /// An attribute description or OID: letters, digits, `-`, `.` and `;` options.
    static func attributeDescription(_ raw: ArraySlice<UInt8>) throws(ParseError) -> String {
        var s = raw[...]
        while s.first == UInt8(ascii: " ") { s = s.dropFirst() }
        guard !s.isEmpty,
            s.allSatisfy({ c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                    || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: ";")
            })
        else { throw ParseError("invalid attribute description in filter") }
        return String(decoding: s, as: UTF8.self)
    }

    /// The value with its `\XX` escapes decoded.
    static func unescape(_ raw: ArraySlice<UInt8>) throws(ParseError) -> [UInt8] {
        var out: [UInt8] = []
        var i = raw.startIndex
        while i < raw.endIndex {
            let c = raw[i]
            if c == UInt8(ascii: "\\") {
                guard raw.endIndex - i >= 3, let hi = hexValue(raw[i + 1]), let lo = hexValue(raw[i + 2]) else {
                    throw ParseError("invalid escape in filter value")
                }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(c)
                i += 1
            }
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    /// `value` escaped for a filter (RFC 4515 §3): NUL, `(`, `)`, `*`, `\` and every non-ASCII byte
    /// as `\XX` (what Go's `ldap.EscapeFilter`, which OpenBao uses, escapes).
    package static func escape(_ value: String) -> String {
        var out: [UInt8] = []
        for c in value.utf8 {
            if c == 0 || c == UInt8(ascii: "(") || c == UInt8(ascii: ")") || c == UInt8(ascii: "*")
                || c == UInt8(ascii: "\\") || c > 0x7F
            {
                out += [UInt8(ascii: "\\"), hexDigits[Int(c >> 4)], hexDigits[Int(c & 15)]]
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `value` escaped as an attribute value in a DN (RFC 4514 §2.4): `"`, `+`, `,`, `;`, `<`,
    /// `>`, `\` with a backslash, a leading space or `#` and a trailing space too, NUL as `\00`.
    package static func escapeDNValue(_ value: String) -> String {
        let bytes = Array(value.utf8)
        var out: [UInt8] = []
        for (i, c) in bytes.enumerated() {
            if c == 0 {
                out += Array("\\00".utf8)
            } else if "\"+,;<>\\=".utf8.contains(c) || (i == 0 && (c == UInt8(ascii: " ") || c == UInt8(ascii: "#")))
                || (i == bytes.count - 1 && c == UInt8(ascii: " "))
            {
                out += [UInt8(ascii: "\\"), c]
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A distinguished name's RDNs as (type, value) pairs, values unescaped (RFC 4514). Enough to take
/// a group's CN out of its DN and to compare DNs.
package enum LDAPDN {
    /// The RDNs of `text`, each a list of (type, value); nil when it is not a DN.
    package static func parse(_ text: String) -> [[(type: String, value: String)]]? {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 64 << 10 else { return nil }
        var rdns: [[(type: String, value: String)]] = []
        var rdn: [(type: String, value: String)] = []
        var i = 0
        while i < bytes.count {
            while i < bytes.count && bytes[i] == UInt8(ascii: " ") { i += 1 }
            let typeStart = i
            while i < bytes.count && bytes[i] != UInt8(ascii: "=") { i += 1 }
            guard i < bytes.count else { return nil }
            var typeBytes = bytes[typeStart..<i]
            while typeBytes.last == UInt8(ascii: " ") { typeBytes = typeBytes.dropLast() }
            guard !typeBytes.isEmpty,
                typeBytes.allSatisfy({ c in
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                        || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")
                })
            else { return nil }
            i += 1
            while i < bytes.count && bytes[i] == UInt8(ascii: " ") { i += 1 }
            var value: [UInt8] = []
            var trailingSpaces = 0
            var end: UInt8? = nil
            while i < bytes.count {
                let c = bytes[i]
                if c == UInt8(ascii: ",") || c == UInt8(ascii: "+") || c == UInt8(ascii: ";") {
                    end = c
                    i += 1
                    break
                }
                if c == UInt8(ascii: "\\") {
                    guard i + 1 < bytes.count else { return nil }
                    if i + 2 < bytes.count, let hi = LDAPFilter.hexValue(bytes[i + 1]),
                        let lo = LDAPFilter.hexValue(bytes[i + 2])
                    {
                        value.append(hi << 4 | lo)
                        i += 3
                    } else {
                        value.append(bytes[i + 1])
                        i += 2
                    }
                    trailingSpaces = 0
                    continue
                }
                value.append(c)
                trailingSpaces = c == UInt8(ascii: " ") ? trailingSpaces + 1 : 0
                i += 1
            }
            value.removeLast(trailingSpaces)
            rdn.append((String(decoding: typeBytes, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            if end != UInt8(ascii: "+") {
                rdns.append(rdn)
                rdn = []
            }
            if end != nil && i >= bytes.count { return nil }
        }
        if !rdn.isEmpty { rdns.append(rdn) }
        return rdns
    }

    /// A comparable form: types and values lower-cased, spacing normalised.
    package static func normalized(_ text: String) -> String {
        guard let rdns = parse(text) else { return text.lowercased() }
        return rdns.map { $0.map { "\($0.type.lowercased())=\($0.value.lowercased())" }.joined(separator: "+") }
            .joined(separator: ",")
    }
}
