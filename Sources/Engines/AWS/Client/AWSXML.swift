/// An XML element as AWS's query APIs answer: a tree of elements whose leaves hold text.
///
/// ``parse(_:)`` reads the subset those answers use: a prolog, elements with attributes, character
/// data with the five predefined entities and numeric references, CDATA, comments and processing
/// instructions. A document type declaration is refused (no entity expansion, so no "billion
/// laughs"), and so is anything malformed: a truncated document, a mismatched end tag, an unknown
/// entity, text after the root, more than 64 levels of nesting or 100,000 elements. Names keep
/// their local part only (`ns:Arn` is `Arn`).
package struct AWSXML: Sendable, Equatable {
    package var name: String
    package var attributes: [String: String]
    package var children: [AWSXML]
    /// The element's own character data, entities decoded, leading and trailing white space trimmed.
    package var text: String

    package init(name: String, attributes: [String: String] = [:], children: [AWSXML] = [], text: String = "") {
        self.name = name
        self.attributes = attributes
        self.children = children
        self.text = text
    }

    /// The first child named `name`.
    package func child(_ name: String) -> AWSXML? { children.first { $0.name == name } }

    /// The element at a path of child names below this one (`["GetUserResult", "User", "Arn"]`).
    package func element(_ path: [String]) -> AWSXML? {
        var node = self
        for name in path {
            guard let next = node.child(name) else { return nil }
            node = next
        }
        return node
    }

    /// The text at a path of child names (`xml.text("GetUserResult", "User", "Arn")`).
    package func text(_ path: String...) -> String? { element(path)?.text }

    /// This element and every element below it named `name`, in document order.
    package func all(_ name: String) -> [AWSXML] {
        var out: [AWSXML] = []
        func walk(_ node: AWSXML) {
            if node.name == name { out.append(node) }
            for child in node.children { walk(child) }
        }
        walk(self)
        return out
    }

    /// The first element named `name` at or below this one.
    package func first(_ name: String) -> AWSXML? {
        if self.name == name { return self }
        for child in children {
            if let found = child.first(name) { return found }
        }
        return nil
    }

    /// The texts of the `member` elements of the list at `path` (the query protocol's lists).
    package func members(_ path: String...) -> [AWSXML] { element(path)?.children.filter { $0.name == "member" } ?? [] }

    package struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        package var message: String
        package var description: String { message }
    }

    package static let maximumDepth = 64
    package static let maximumElements = 100_000

    /// Parses a whole document; its root element.
    package static func parse(_ bytes: [UInt8]) throws(ParseError) -> AWSXML {
        var parser = Parser(bytes: bytes)
        return try parser.document()
    }

    package static func parse(_ text: String) throws(ParseError) -> AWSXML { try parse(Array(text.utf8)) }

    private struct Parser {
        let bytes: [UInt8]
        var i = 0
        var elements = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func fail(_ what: String) -> ParseError { ParseError(message: "malformed XML at byte \(i): \(what)") }

        func starts(_ text: StaticString) -> Bool {
            let count = text.utf8CodeUnitCount
            guard i + count <= bytes.count else { return false }
            for k in 0..<count where bytes[i + k] != text.utf8Start[k] { return false }
            return true
        }

        mutating func skip(past end: StaticString, what: String) throws(ParseError) {
            while i < bytes.count {
                if starts(end) {
                    i += end.utf8CodeUnitCount
                    return
                }
                i += 1
            }
            throw fail("unterminated \(what)")
        }

        static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }

        mutating func skipSpace() { while i < bytes.count && Parser.isSpace(bytes[i]) { i += 1 } }

        /// Comments, processing instructions and white space between elements.
        mutating func skipMisc() throws(ParseError) {
            while true {
                skipSpace()
                if starts("<?") {
                    try skip(past: "?>", what: "processing instruction")
                } else if starts("<!--") {
                    try skip(past: "-->", what: "comment")
                } else if starts("<!DOCTYPE") || starts("<!doctype") {
                    throw fail("document type declarations are not accepted")
                } else {
                    return
                }
            }
        }

        mutating func document() throws(ParseError) -> AWSXML {
            if starts("\u{FEFF}") { i += 3 }
            try skipMisc()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "<") else {
                throw fail(i >= bytes.count ? "empty document" : "expected an element")
            }
            let root = try element(depth: 1)
            try skipMisc()
            guard i == bytes.count else { throw fail("content after the root element") }
            return root
        }

        mutating func name() throws(ParseError) -> String {
            let start = i
            while i < bytes.count {
                let b = bytes[i]
                if Parser.isSpace(b) || b == UInt8(ascii: ">") || b == UInt8(ascii: "/") || b == UInt8(ascii: "=")
                    || b == UInt8(ascii: "<") || b == UInt8(ascii: "\"") || b == UInt8(ascii: "'")
                {
                    break
                }
                i += 1
            }
            guard i > start else { throw fail(i >= bytes.count ? "truncated document" : "expected a name") }
            return String(decoding: bytes[start..<i], as: UTF8.self)
        }

        static func local(_ name: String) -> String {
            guard let colon = name.lastIndex(of: ":") else { return name }
            return String(name[name.index(after: colon)...])
        }

        /// An element starting at `<`.
        mutating func element(depth: Int) throws(ParseError) -> AWSXML {
            guard depth <= AWSXML.maximumDepth else { throw fail("nested more than \(AWSXML.maximumDepth) levels") }
            elements += 1
            guard elements <= AWSXML.maximumElements else {
                throw fail("more than \(AWSXML.maximumElements) elements")
            }
            i += 1  // "<"
            let qualified = try name()
            var node = AWSXML(name: Parser.local(qualified))
            // Attributes.
            while true {
                skipSpace()
                guard i < bytes.count else { throw fail("truncated document") }
                if bytes[i] == UInt8(ascii: "/") {
                    guard i + 1 < bytes.count else { throw fail("truncated document") }
                    guard bytes[i + 1] == UInt8(ascii: ">") else { throw fail("expected \"/>\"") }
                    i += 2
                    return node
                }
                if bytes[i] == UInt8(ascii: ">") {
                    i += 1
                    break
                }
                let attribute = try name()
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "=") else { throw fail("expected \"=\"") }
                i += 1
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") || bytes[i] == UInt8(ascii: "'") else {
                    throw fail("expected a quoted attribute value")
                }
                let quote = bytes[i]
                i += 1
                let start = i
                while i < bytes.count && bytes[i] != quote {
                    guard bytes[i] != UInt8(ascii: "<") else { throw fail("\"<\" in an attribute value") }
                    i += 1
                }
                guard i < bytes.count else { throw fail("truncated document") }
                node.attributes[attribute] = try decode(bytes[start..<i])
                i += 1
            }
            // Content.
            var text: [UInt8] = []
            while true {
                guard i < bytes.count else { throw fail("truncated document: <\(qualified)> is not closed") }
                if starts("</") {
                    i += 2
                    let closing = try name()
                    guard closing == qualified else {
                        throw fail("</\(closing)> closes <\(qualified)>")
                    }
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ">") else { throw fail("expected \">\"") }
                    i += 1
                    break
                } else if starts("<![CDATA[") {
                    i += 9
                    let start = i
                    try skip(past: "]]>", what: "CDATA section")
                    text.append(contentsOf: bytes[start..<(i - 3)])
                } else if starts("<!--") {
                    try skip(past: "-->", what: "comment")
                } else if starts("<?") {
                    try skip(past: "?>", what: "processing instruction")
                } else if starts("<!") {
                    throw fail("declarations are not accepted inside elements")
                } else if bytes[i] == UInt8(ascii: "<") {
                    node.children.append(try element(depth: depth + 1))
                } else {
                    let start = i
                    while i < bytes.count && bytes[i] != UInt8(ascii: "<") { i += 1 }
                    text.append(contentsOf: try Array(decode(bytes[start..<i]).utf8))
                }
            }
            var slice = text[...]
            while let first = slice.first, Parser.isSpace(first) { slice = slice.dropFirst() }
            while let last = slice.last, Parser.isSpace(last) { slice = slice.dropLast() }
            node.text = String(decoding: slice, as: UTF8.self)
            return node
        }

        /// Character data with `&name;` and `&#N;` / `&#xN;` references decoded.
        func decode(_ raw: ArraySlice<UInt8>) throws(ParseError) -> String {
            guard raw.contains(UInt8(ascii: "&")) else { return String(decoding: raw, as: UTF8.self) }
            var out = ""
            var k = raw.startIndex
            var run = k
            while k < raw.endIndex {
                guard raw[k] == UInt8(ascii: "&") else {
                    k += 1
                    continue
                }
                out += String(decoding: raw[run..<k], as: UTF8.self)
                guard let semicolon = raw[k...].prefix(12).firstIndex(of: UInt8(ascii: ";")) else {
                    throw fail("unterminated entity reference")
                }
                let entity = String(decoding: raw[(k + 1)..<semicolon], as: UTF8.self)
                switch entity {
                case "amp": out += "&"
                case "lt": out += "<"
                case "gt": out += ">"
                case "quot": out += "\""
                case "apos": out += "'"
                default:
                    var number: UInt32?
                    if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                        number = UInt32(entity.dropFirst(2), radix: 16)
                    } else if entity.hasPrefix("#") {
                        number = UInt32(entity.dropFirst(1))
                    }
                    guard let number, number != 0, let scalar = Unicode.Scalar(number) else {
                        throw fail("unknown entity &\(entity.prefix(10));")
                    }
                    out.unicodeScalars.append(scalar)
                }
                k = semicolon + 1
                run = k
            }
            out += String(decoding: raw[run..<raw.endIndex], as: UTF8.self)
            return out
        }
    }
}
