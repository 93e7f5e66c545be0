// A hand-written parser for the subset of HCL (version 1) that Vault policies use, and for their JSON form.
//
// Both forms are read by the same tokenizer into a small syntax tree that keeps line and column of every node, so
// errors in JSON policies are located as precisely as in HCL ones. The tree is then interpreted as a policy.
//
// Lists and blocks nest at most `HCLReader.maximumDepth` levels: the tree is built (and later walked) by recursion,
// and unbounded nesting would overflow the stack of whatever thread parses it.
//
// Error messages name the line, the column and what was expected, never the text found there: a policy or a
// configuration file may hold a secret typed in the wrong place, and these messages reach HTTP answers and logs.

/// Where a token or node starts: 1-based line and column.
package struct HCLLocation: Sendable, Hashable {
    package var line: Int
    package var column: Int
}

/// A value in the syntax tree.
package struct HCLNode: Sendable {
    package enum Kind: Sendable {
        case string(String)
        case number(String)
        case bool(Bool)
        case null
        case list([HCLNode])
        case object([HCLItem])
    }

    package var kind: Kind
    package var location: HCLLocation

    package var typeName: String {
        switch kind {
        case .string: "a string"
        case .number: "a number"
        case .bool: "a boolean"
        case .null: "null"
        case .list: "a list"
        case .object: "an object"
        }
    }
}

/// `key "label"... = value` or `key "label"... { ... }`.
package struct HCLItem: Sendable {
    package var keys: [(name: String, location: HCLLocation)]
    package var value: HCLNode
}

/// The HCL (version 1) reader on its own, for other HCL documents than policies (cofferd's configuration file).
package enum HCLReader {
    /// The deepest nesting of lists and blocks (`{`, `[`) accepted in a policy or configuration file. Real
    /// policies nest about five levels (a JSON policy's object, `path`, the pattern, `allowed_parameters`, a list).
    /// The parser recurses, and a debug build spends about 3 KiB of stack per level: at this limit a parse
    /// stays well inside a 512 KiB thread stack (docs/limits.md has the measured figures).
    package static let maximumDepth = 64

    /// Reads an HCL document into its items; errors carry the line and column.
    package static func parse(_ text: String) throws(PolicySyntaxError) -> [HCLItem] {
        var parser = try TreeParser(text)
        return try parser.parseDocument()
    }
}

private enum TokenKind: Equatable {
    case string(String)
    case identifier(String)
    case number(String)
    case leftBrace, rightBrace, leftBracket, rightBracket, equals, colon, comma
    case end

    /// What the token is, for error messages. Strings, names and numbers are described, never quoted.
    var display: String {
        switch self {
        case .string: "a string"
        case .identifier: "a name"
        case .number: "a number"
        case .leftBrace: "'{'"
        case .rightBrace: "'}'"
        case .leftBracket: "'['"
        case .rightBracket: "']'"
        case .equals: "'='"
        case .colon: "':'"
        case .comma: "','"
        case .end: "end of input"
        }
    }
}

private struct Token {
    var kind: TokenKind
    var location: HCLLocation
}

/// Splits policy text into tokens, skipping blanks and `#`, `//` and `/* */` comments.
private struct Lexer {
    let bytes: [UInt8]
    var index = 0
    var line = 1
    var column = 1

    init(_ text: String) { bytes = Array(text.utf8) }

    var location: HCLLocation { HCLLocation(line: line, column: column) }

    func peekByte(_ offset: Int = 0) -> UInt8? {
        index + offset < bytes.count ? bytes[index + offset] : nil
    }

    /// Consumes one byte, keeping line and column (columns count Unicode scalars, not UTF-8 continuation bytes).
    mutating func advance() {
        let byte = bytes[index]
        index += 1
        if byte == UInt8(ascii: "\n") {
            line += 1
            column = 1
        } else if byte & 0xC0 != 0x80 {
            column += 1
        }
    }

    mutating func skipBlanksAndComments() throws(PolicySyntaxError) {
        while let byte = peekByte() {
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"):
                advance()
            case UInt8(ascii: "#"):
                skipLine()
            case UInt8(ascii: "/") where peekByte(1) == UInt8(ascii: "/"):
                skipLine()
            case UInt8(ascii: "/") where peekByte(1) == UInt8(ascii: "*"):
                let start = location
                advance()
                advance()
                while true {
                    guard let next = peekByte() else {
                        throw PolicySyntaxError(at: start, "unterminated comment: '/*' is never closed by '*/'")
                    }
                    if next == UInt8(ascii: "*"), peekByte(1) == UInt8(ascii: "/") {
                        advance()
                        advance()
                        break
                    }
                    advance()
                }
            default:
                return
            }
        }
    }

    mutating func skipLine() {
        while let byte = peekByte(), byte != UInt8(ascii: "\n") { advance() }
    }

    mutating func next() throws(PolicySyntaxError) -> Token {
        try skipBlanksAndComments()
        let start = location
        guard let byte = peekByte() else { return Token(kind: .end, location: start) }
        let single: TokenKind? =
            switch byte {
            case UInt8(ascii: "{"): .leftBrace
            case UInt8(ascii: "}"): .rightBrace
            case UInt8(ascii: "["): .leftBracket
            case UInt8(ascii: "]"): .rightBracket
            case UInt8(ascii: "="): .equals
            case UInt8(ascii: ":"): .colon
            case UInt8(ascii: ","): .comma
            default: nil
            }
        if let single {
            advance()
            return Token(kind: single, location: start)
        }
        if byte == UInt8(ascii: "\"") { return Token(kind: .string(try lexString()), location: start) }
        if byte == UInt8(ascii: "<"), peekByte(1) == UInt8(ascii: "<") {
            return Token(kind: .string(try lexHeredoc()), location: start)
        }
        if byte == UInt8(ascii: "-") || isDigit(byte) { return Token(kind: .number(try lexNumber()), location: start) }
        if isIdentifierStart(byte) {
            let from = index
            while let b = peekByte(),
                isIdentifierStart(b) || isDigit(b) || b == UInt8(ascii: "-")
                    || b == UInt8(ascii: ".")
            {
                advance()
            }
            return Token(kind: .identifier(String(decoding: bytes[from..<index], as: UTF8.self)), location: start)
        }
        throw PolicySyntaxError(
            at: start,
            "unexpected character; expected a name, a string, a number, a heredoc or one of { } [ ] = : ,"
        )
    }

    func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    func isIdentifierStart(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || b == UInt8(ascii: "_")
    }

    mutating func lexNumber() throws(PolicySyntaxError) -> String {
        let start = location
        let from = index
        if peekByte() == UInt8(ascii: "-") { advance() }
        guard let first = peekByte(), isDigit(first) else {
            throw PolicySyntaxError(at: start, "invalid number: a digit must follow '-'")
        }
        while let b = peekByte(), isDigit(b) { advance() }
        if peekByte() == UInt8(ascii: "."), let b = peekByte(1), isDigit(b) {
            advance()
            while let b = peekByte(), isDigit(b) { advance() }
        }
        if let e = peekByte(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            advance()
            if let s = peekByte(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { advance() }
            guard let b = peekByte(), isDigit(b) else {
                throw PolicySyntaxError(at: start, "invalid number: digits must follow the exponent")
            }
            while let b = peekByte(), isDigit(b) { advance() }
        }
        return String(decoding: bytes[from..<index], as: UTF8.self)
    }

    mutating func lexString() throws(PolicySyntaxError) -> String {
        let start = location
        advance()
        var out: [UInt8] = []
        while true {
            guard let byte = peekByte(), byte != UInt8(ascii: "\n") else {
                throw PolicySyntaxError(at: start, "unterminated string: missing closing '\"'")
            }
            if byte == UInt8(ascii: "\"") {
                advance()
                return String(decoding: out, as: UTF8.self)
            }
            if byte != UInt8(ascii: "\\") {
                out.append(byte)
                advance()
                continue
            }
            let escapeLocation = location
            advance()
            guard let escaped = peekByte(), escaped != UInt8(ascii: "\n") else {
                throw PolicySyntaxError(at: start, "unterminated string: missing closing '\"'")
            }
            advance()
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escaped)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                var scalar: UInt32 = 0
                for _ in 0..<4 {
                    guard let h = peekByte(), let digit = Lexer.hexValue(h) else {
                        throw PolicySyntaxError(at: escapeLocation, "invalid \\u escape: four hex digits expected")
                    }
                    scalar = scalar << 4 | digit
                    advance()
                }
                guard let unicode = Unicode.Scalar(scalar) else {
                    throw PolicySyntaxError(at: escapeLocation, "invalid \\u escape: not a Unicode scalar value")
                }
                out.append(contentsOf: String(Character(unicode)).utf8)
            default:
                throw PolicySyntaxError(
                    at: escapeLocation,
                    #"invalid escape in string; expected one of \" \\ \/ \b \f \n \r \t or \u and four hex digits"#
                )
            }
        }
    }

    static func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(b - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// `<<EOT` ... `EOT` (or `<<-EOT`, which lets the closing marker be indented), as in HCL 1.
    mutating func lexHeredoc() throws(PolicySyntaxError) -> String {
        let start = location
        advance()
        advance()
        var indented = false
        if peekByte() == UInt8(ascii: "-") {
            indented = true
            advance()
        }
        let markerStart = index
        while let b = peekByte(), isIdentifierStart(b) || isDigit(b) { advance() }
        let marker = Array(bytes[markerStart..<index])
        guard !marker.isEmpty else { throw PolicySyntaxError(at: start, "heredoc needs a marker after '<<'") }
        if peekByte() == UInt8(ascii: "\r") { advance() }
        guard peekByte() == UInt8(ascii: "\n") else {
            throw PolicySyntaxError(at: location, "heredoc marker must be followed by a line break")
        }
        advance()
        var lines: [ArraySlice<UInt8>] = []
        while index < bytes.count {
            let lineStart = index
            while let b = peekByte(), b != UInt8(ascii: "\n") { advance() }
            var content = bytes[lineStart..<index]
            if content.last == UInt8(ascii: "\r") { content = content.dropLast() }
            var trimmed = content[...]
            if indented { trimmed = trimmed.drop(while: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) }
            if Array(trimmed) == marker {
                return lines.map { String(decoding: $0, as: UTF8.self) + "\n" }.joined()
            }
            lines.append(content)
            if peekByte() == UInt8(ascii: "\n") { advance() }
        }
        throw PolicySyntaxError(at: start, "unterminated heredoc: no line holding only its marker closes it")
    }
}

/// Builds the syntax tree from tokens.
private struct TreeParser {
    var lexer: Lexer
    var current: Token
    /// Lists and blocks open around the current token.
    var depth = 0

    init(_ text: String) throws(PolicySyntaxError) {
        lexer = Lexer(text)
        current = Token(kind: .end, location: HCLLocation(line: 1, column: 1))
        current = try lexer.next()
    }

    mutating func bump() throws(PolicySyntaxError) { current = try lexer.next() }

    /// Opens a list or block whose bracket is at `opening`, refusing one level past `HCLReader.maximumDepth`.
    mutating func enter(at opening: HCLLocation) throws(PolicySyntaxError) {
        depth += 1
        guard depth <= HCLReader.maximumDepth else {
            throw PolicySyntaxError(
                at: opening,
                "lists and blocks nest too deeply: at most \(HCLReader.maximumDepth) levels are allowed"
            )
        }
    }

    /// A whole HCL document: items up to the end of input.
    mutating func parseDocument() throws(PolicySyntaxError) -> [HCLItem] {
        try parseBody(opening: nil)
    }

    /// A whole JSON document, which must be one object.
    mutating func parseJSONDocument() throws(PolicySyntaxError) -> [HCLItem] {
        let value = try parseValue()
        guard current.kind == .end else {
            throw PolicySyntaxError(at: current.location, "unexpected \(current.kind.display) after the JSON document")
        }
        guard case .object(let items) = value.kind else {
            throw PolicySyntaxError(at: value.location, "a JSON policy must be an object, not \(value.typeName)")
        }
        return items
    }

    /// Items of an object body. `opening` is the location of the `{` (nil at top level, which ends at end of input).
    mutating func parseBody(opening: HCLLocation?) throws(PolicySyntaxError) -> [HCLItem] {
        var items: [HCLItem] = []
        while true {
            switch current.kind {
            case .comma:
                try bump()
                continue
            case .rightBrace:
                guard opening != nil else { throw PolicySyntaxError(at: current.location, "unexpected '}'") }
                try bump()
                return items
            case .end:
                if let opening {
                    throw PolicySyntaxError(
                        at: current.location,
                        "missing '}' to close the block opened at line \(opening.line), column \(opening.column)"
                    )
                }
                return items
            default:
                items.append(try parseItem())
            }
        }
    }

    mutating func parseItem() throws(PolicySyntaxError) -> HCLItem {
        var keys: [(name: String, location: HCLLocation)] = []
        while true {
            switch current.kind {
            case .string(let s), .identifier(let s):
                keys.append((s, current.location))
                try bump()
                continue
            default: break
            }
            break
        }
        guard !keys.isEmpty else {
            throw PolicySyntaxError(
                at: current.location,
                "expected an attribute or block name, found \(current.kind.display)"
            )
        }
        switch current.kind {
        case .equals, .colon:
            let assignment = current
            try bump()
            let value = try parseValue()
            if keys.count > 1, case .object = value.kind {
            } else if keys.count > 1 {
                throw PolicySyntaxError(
                    at: assignment.location,
                    "a name with labels must be followed by a '{ ... }' block, not '='"
                )
            }
            return HCLItem(keys: keys, value: value)
        case .leftBrace:
            let opening = current.location
            try enter(at: opening)
            try bump()
            let body = try parseBody(opening: opening)
            depth -= 1
            return HCLItem(keys: keys, value: HCLNode(kind: .object(body), location: opening))
        default:
            throw PolicySyntaxError(
                at: current.location,
                "expected '=' or '{' after the \(keys.count == 1 ? "name" : "labels"), found \(current.kind.display)"
            )
        }
    }

    mutating func parseValue() throws(PolicySyntaxError) -> HCLNode {
        let token = current
        switch token.kind {
        case .string(let s):
            try bump()
            return HCLNode(kind: .string(s), location: token.location)
        case .number(let n):
            try bump()
            return HCLNode(kind: .number(n), location: token.location)
        case .identifier("true"):
            try bump()
            return HCLNode(kind: .bool(true), location: token.location)
        case .identifier("false"):
            try bump()
            return HCLNode(kind: .bool(false), location: token.location)
        case .identifier("null"):
            try bump()
            return HCLNode(kind: .null, location: token.location)
        case .leftBracket:
            try enter(at: token.location)
            try bump()
            var elements: [HCLNode] = []
            while true {
                if current.kind == .rightBracket {
                    try bump()
                    depth -= 1
                    return HCLNode(kind: .list(elements), location: token.location)
                }
                if current.kind == .end {
                    throw PolicySyntaxError(
                        at: current.location,
                        "missing ']' to close the list opened at line \(token.location.line), "
                            + "column \(token.location.column)"
                    )
                }
                elements.append(try parseValue())
                switch current.kind {
                case .comma: try bump()
                case .rightBracket: continue
                default:
                    throw PolicySyntaxError(
                        at: current.location,
                        "expected ',' or ']' in list, found \(current.kind.display)"
                    )
                }
            }
        case .leftBrace:
            try enter(at: token.location)
            try bump()
            let body = try parseBody(opening: token.location)
            depth -= 1
            return HCLNode(kind: .object(body), location: token.location)
        default:
            throw PolicySyntaxError(at: token.location, "expected a value, found \(token.kind.display)")
        }
    }
}

extension PolicySyntaxError {
    init(at location: HCLLocation, _ message: String) {
        self.init(line: location.line, column: location.column, message: message)
    }
}

/// Turns policy text into path rules.
package enum PolicyParser {
    static let pathAttributes = [
        "capabilities", "policy", "allowed_parameters", "denied_parameters", "required_parameters",
        "min_wrapping_ttl", "max_wrapping_ttl", "comment",
    ]
    /// Attributes OpenBao knows that Coffer does not implement: rejected rather than silently ignored, because
    /// ignoring them would grant more than the policy author meant.
    static let unsupportedAttributes = [
        "mfa_methods", "pagination_limit", "expiration", "list_scan_response_keys_filter_path", "control_group",
        "subscribe_event_types",
    ]

    static func parse(_ text: String) throws(PolicySyntaxError) -> [PathRule] {
        var parser = try TreeParser(text)
        let items: [HCLItem]
        if text.utf8.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{") {
            do {
                _ = try JSONValue.parse(text)
            } catch {
                let location = location(ofByte: error.offset, in: text)
                throw PolicySyntaxError(at: location, "invalid JSON policy: \(error.reason)")
            }
            items = try parser.parseJSONDocument()
        } else {
            items = try parser.parseDocument()
        }
        var rules: [PathRule] = []
        for item in items {
            let (name, location) = item.keys[0]
            switch name {
            case "name":
                guard item.keys.count == 1 else {
                    throw PolicySyntaxError(at: location, "'name' takes no labels")
                }
            case "path":
                try collectPaths(item, into: &rules)
            default:
                throw PolicySyntaxError(
                    at: location,
                    "unknown top-level block or attribute; a policy contains only 'path' blocks"
                )
            }
        }
        return rules
    }

    static func location(ofByte offset: Int, in text: String) -> HCLLocation {
        var location = HCLLocation(line: 1, column: 1)
        for byte in text.utf8.prefix(offset) {
            if byte == UInt8(ascii: "\n") {
                location.line += 1
                location.column = 1
            } else if byte & 0xC0 != 0x80 {
                location.column += 1
            }
        }
        return location
    }

    /// `path "p" { ... }`, or the object forms `path = { "p" = { ... } }` / JSON `"path": {"p": {...}}`,
    /// or the JSON list form `"path": [{"p": {...}}]`.
    static func collectPaths(_ item: HCLItem, into rules: inout [PathRule]) throws(PolicySyntaxError) {
        switch item.keys.count {
        case 2:
            guard case .object(let body) = item.value.kind else {
                throw PolicySyntaxError(at: item.value.location, "a path pattern must be followed by a '{ ... }' block")
            }
            rules.append(try pathRule(pattern: item.keys[1].name, at: item.keys[1].location, body: body))
        case 1:
            var objects: [[HCLItem]] = []
            switch item.value.kind {
            case .object(let inner): objects = [inner]
            case .list(let elements):
                for element in elements {
                    guard case .object(let inner) = element.kind else {
                        throw PolicySyntaxError(
                            at: element.location,
                            "'path' list entries must be objects, not \(element.typeName)"
                        )
                    }
                    objects.append(inner)
                }
            default:
                throw PolicySyntaxError(
                    at: item.value.location,
                    "'path' must be followed by a path pattern and a block"
                )
            }
            for inner in objects {
                for entry in inner {
                    guard entry.keys.count == 1, case .object(let body) = entry.value.kind else {
                        throw PolicySyntaxError(
                            at: entry.keys[0].location,
                            "a path pattern must be followed by a '{ ... }' block"
                        )
                    }
                    rules.append(try pathRule(pattern: entry.keys[0].name, at: entry.keys[0].location, body: body))
                }
            }
        default:
            throw PolicySyntaxError(
                at: item.keys[2].location,
                "'path' takes one path pattern, found a second label"
            )
        }
    }

    /// Location of the character at `offset` (in Unicode scalars) inside a quoted pattern that starts at `start`.
    static func location(in pattern: String, at start: HCLLocation, scalarOffset: Int) -> HCLLocation {
        HCLLocation(line: start.line, column: start.column + 1 + scalarOffset)
    }

    static func validatePattern(_ written: String, at start: HCLLocation) throws(PolicySyntaxError) -> String {
        var pattern = written
        var shift = 0
        if pattern.utf8.first == UInt8(ascii: "/") {
            pattern.removeFirst()
            shift = 1
        }
        let scalars = Array(pattern.unicodeScalars)
        for (i, scalar) in scalars.enumerated() {
            if scalar == "+", i + 1 < scalars.count, scalars[i + 1] == "*" {
                throw PolicySyntaxError(
                    at: location(in: written, at: start, scalarOffset: i + shift),
                    "invalid use of wildcards in a path pattern: '+*' is forbidden"
                )
            }
            if scalar == "*", i != scalars.count - 1 {
                throw PolicySyntaxError(
                    at: location(in: written, at: start, scalarOffset: i + shift),
                    "'*' may only appear at the end of a path pattern"
                )
            }
        }
        return pattern
    }

    static func pathRule(
        pattern written: String,
        at start: HCLLocation,
        body: [HCLItem]
    )
        throws(PolicySyntaxError) -> PathRule
    {
        let pattern = try validatePattern(written, at: start)
        var capabilities: Capabilities = []
        var allowed: [String: [JSONValue]] = [:]
        var denied: [String: [JSONValue]] = [:]
        var required: [String] = []
        var wrappingTTL: (min: Int64, max: Int64) = (0, 0)
        for attribute in body {
            let (name, location) = attribute.keys[0]
            let value = attribute.value
            if attribute.keys.count > 1 {
                throw PolicySyntaxError(at: attribute.keys[1].location, "attributes of a path block take no labels")
            }
            switch name {
            case "capabilities":
                for element in try list(value, of: name) {
                    guard case .string(let capability) = element.kind else {
                        throw PolicySyntaxError(
                            at: element.location,
                            "capabilities must be strings, found \(element.typeName)"
                        )
                    }
                    guard let parsed = Capabilities(name: capability) else {
                        throw PolicySyntaxError(
                            at: element.location,
                            "unknown capability; expected one of \(Capabilities.policyNameList)"
                        )
                    }
                    capabilities.insert(parsed)
                }
            case "policy":
                guard case .string(let legacy) = value.kind else {
                    throw PolicySyntaxError(at: value.location, "'policy' must be a string, found \(value.typeName)")
                }
                switch legacy {
                case "deny": capabilities.insert(.deny)
                case "read": capabilities.formUnion([.read, .list])
                case "write": capabilities.formUnion([.create, .read, .update, .delete, .list])
                case "sudo": capabilities.formUnion([.create, .read, .update, .delete, .list, .sudo])
                default:
                    throw PolicySyntaxError(
                        at: value.location,
                        "'policy' must be one of deny, read, write, sudo (prefer 'capabilities')"
                    )
                }
            case "allowed_parameters":
                try parameters(value, of: name, into: &allowed)
            case "denied_parameters":
                try parameters(value, of: name, into: &denied)
            case "required_parameters":
                for element in try list(value, of: name) {
                    guard case .string(let parameter) = element.kind else {
                        throw PolicySyntaxError(
                            at: element.location,
                            "required_parameters must be strings, found \(element.typeName)"
                        )
                    }
                    if !required.contains(parameter) { required.append(parameter) }
                }
            case "min_wrapping_ttl", "max_wrapping_ttl":
                let seconds: Int64?
                switch value.kind {
                case .string(let text), .number(let text): seconds = VaultDuration.parse(text)
                default: seconds = nil
                }
                guard let seconds else {
                    throw PolicySyntaxError(
                        at: value.location,
                        "'\(name)' must be a duration from 0 to 100 years: seconds or text such as \"90s\", found \(value.typeName)"
                    )
                }
                if name == "min_wrapping_ttl" { wrappingTTL.min = seconds } else { wrappingTTL.max = seconds }
            case "comment":
                break
            default:
                if unsupportedAttributes.contains(name) {
                    // `name` is one of the fixed names above, not free text.
                    throw PolicySyntaxError(at: location, "attribute \"\(name)\" is not supported by Coffer")
                }
                throw PolicySyntaxError(
                    at: location,
                    "unknown attribute in a path block; expected one of " + pathAttributes.joined(separator: ", ")
                )
            }
        }
        if wrappingTTL.max != 0, wrappingTTL.max < wrappingTTL.min {
            throw PolicySyntaxError(at: start, "max_wrapping_ttl cannot be less than min_wrapping_ttl")
        }
        return PathRule(
            path: pattern,
            capabilities: capabilities,
            allowedParameters: allowed,
            deniedParameters: denied,
            requiredParameters: required,
            minWrappingTTL: wrappingTTL.min,
            maxWrappingTTL: wrappingTTL.max
        )
    }

    /// The elements of the list attribute `name` (one of the fixed attribute names).
    static func list(_ value: HCLNode, of name: String) throws(PolicySyntaxError) -> [HCLNode] {
        guard case .list(let elements) = value.kind else {
            throw PolicySyntaxError(at: value.location, "'\(name)' must be a list, found \(value.typeName)")
        }
        return elements
    }

    /// `{ "key" = [values], other = [] }`: keys are lowercased as Vault does.
    static func parameters(
        _ value: HCLNode,
        of name: String,
        into map: inout [String: [JSONValue]]
    )
        throws(PolicySyntaxError)
    {
        guard case .object(let items) = value.kind else {
            throw PolicySyntaxError(
                at: value.location,
                "'\(name)' must be an object of parameter lists, found \(value.typeName)"
            )
        }
        for item in items {
            guard item.keys.count == 1 else {
                throw PolicySyntaxError(at: item.keys[1].location, "a parameter name takes no labels")
            }
            guard case .list(let elements) = item.value.kind else {
                throw PolicySyntaxError(
                    at: item.value.location,
                    "each parameter in '\(name)' must be a list of values, found \(item.value.typeName)"
                )
            }
            let key = item.keys[0].name.lowercased()
            // Repeated keys: HCL decodes the last one; Vault never merges within a single map.
            map[key] = elements.map(jsonValue)
        }
    }

    static func jsonValue(_ node: HCLNode) -> JSONValue {
        switch node.kind {
        case .string(let s): .string(s)
        case .number(let n): .number(n)
        case .bool(let b): .bool(b)
        case .null: .null
        case .list(let elements): .array(elements.map(jsonValue))
        case .object(let items):
            .object(Dictionary(items.map { ($0.keys[0].name, jsonValue($0.value)) }, uniquingKeysWith: { _, b in b }))
        }
    }
}
