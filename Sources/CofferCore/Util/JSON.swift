/// A JSON value as it crosses Coffer's API: request data, stored engine state and response bodies.
///
/// Numbers keep their original text so that values survive a round trip exactly (a 64-bit id or a
/// long decimal written into a secret reads back byte for byte), as Go's `json.Number` does in Vault.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// A number from an integer.
    public static func int<I: BinaryInteger>(_ value: I) -> JSONValue { .number(String(value)) }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The value as an integer if it is a number without a fraction or exponent that fits in `Int`.
    public var intValue: Int? {
        if case .number(let n) = self { return Int(n) }
        return nil
    }

    /// The value as a `Double` if it is a number.
    public var doubleValue: Double? {
        if case .number(let n) = self { return Double(n) }
        return nil
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    /// A short name of the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(String(value)) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(nilLiteral: ()) { self = .null }
}

/// A JSON document that failed to parse: what was wrong and at which byte offset. The reason says what
/// was expected and never quotes the input (a request body may hold secrets).
public struct JSONParseError: Error, Sendable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

// MARK: - Parsing

extension JSONValue {
    /// The deepest nesting of arrays and objects accepted, so hostile input cannot exhaust the stack. The
    /// parser does not recurse; what walks a value afterwards does (serialising, comparing, hashing, freeing,
    /// audit hashing, KV merge-patch and subkeys, ACL parameter matching), and at this depth all of it stays
    /// well inside a 512 KiB thread stack even in a debug build (docs/limits.md has the measured figures).
    public static let maximumDepth = 256

    /// Parses a complete JSON document (RFC 8259). Strings must be valid UTF-8.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONParseError) -> JSONValue {
        try parse(bytes, maximumDepth: maximumDepth)
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try parse(text, maximumDepth: maximumDepth)
    }

    /// `parse` with another nesting limit, for reading Coffer's own answers (whose envelope adds a few
    /// levels around data that was at most `maximumDepth` deep).
    package static func parse(_ bytes: some Collection<UInt8>, maximumDepth: Int) throws(JSONParseError) -> JSONValue {
        let array = bytes as? [UInt8] ?? Array(bytes)
        return try array.withUnsafeBufferPointer { buffer throws(JSONParseError) in
            var parser = JSONParser(buffer, maximumDepth: maximumDepth)
            return try parser.parseDocument()
        }
    }

    /// `parse(bytes)[name]`, without building the outer object when the document is that member
    /// alone (`{"data":...}` compact, the form KV v2 stores a version in); any other document is
    /// parsed whole. nil when the document is not an object or has no such member.
    package static func parseMember(_ name: StaticString, of bytes: [UInt8]) throws(JSONParseError) -> JSONValue? {
        if let valueStart = soleMemberStart(name, of: bytes) {
            // The value must fill the rest exactly: anything after it (another member) parses whole.
            let alone = bytes.withUnsafeBufferPointer { buffer -> JSONValue? in
                var parser = JSONParser(
                    UnsafeBufferPointer(rebasing: buffer[valueStart..<(buffer.count - 1)]),
                    maximumDepth: maximumDepth - 1
                )
                return try? parser.parseDocument()
            }
            if let alone { return alone }
        }
        return try parse(bytes)[name.description]
    }

    /// The bytes of member `name`'s value when `bytes` is the compact document `{"name":<value>}`
    /// with nothing after the value, and the value is an object or an array; nil otherwise. Only
    /// strings and nesting are followed, not the whole grammar: this is for JSON that Coffer wrote
    /// and the barrier authenticated (a KV v2 version), handed on without parsing it, where the
    /// question is whether the value ends where the document does.
    package static func soleMember(_ name: StaticString, of bytes: [UInt8]) -> ArraySlice<UInt8>? {
        guard let start = soleMemberStart(name, of: bytes) else { return nil }
        let end = bytes.count - 1  // the document's closing brace
        let closed = bytes.withUnsafeBufferPointer { buffer -> Int? in
            guard buffer[start] == UInt8(ascii: "{") || buffer[start] == UInt8(ascii: "[") else { return nil }
            var depth = 0
            var inString = false
            var i = start
            while i < end {
                let byte = buffer[i]
                if inString {
                    if byte == UInt8(ascii: "\\") {
                        i += 1
                    } else if byte == UInt8(ascii: "\"") {
                        inString = false
                    }
                } else {
                    switch byte {
                    case UInt8(ascii: "\""): inString = true
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"):
                        depth -= 1
                        if depth == 0 { return i }
                    default: break
                    }
                }
                i += 1
            }
            return nil
        }
        guard closed == end - 1 else { return nil }
        return bytes[start..<end]
    }

    /// Where the value starts when `bytes` begins `{"name":` and ends `}`.
    private static func soleMemberStart(_ name: StaticString, of bytes: [UInt8]) -> Int? {
        let nameLength = name.utf8CodeUnitCount
        let valueStart = nameLength + 4  // {"name":
        return bytes.withUnsafeBufferPointer { buffer -> Int? in
            guard buffer.count > valueStart + 1, buffer[0] == UInt8(ascii: "{"), buffer[1] == UInt8(ascii: "\""),
                (0..<nameLength).allSatisfy({ buffer[2 + $0] == name.utf8Start[$0] }),
                buffer[nameLength + 2] == UInt8(ascii: "\""), buffer[nameLength + 3] == UInt8(ascii: ":"),
                buffer[buffer.count - 1] == UInt8(ascii: "}")
            else { return nil }
            return valueStart
        }
    }

    package static func parse(_ text: String, maximumDepth: Int) throws(JSONParseError) -> JSONValue {
        var text = text
        // `String.withUTF8` rethrows untyped errors, so the typed error travels out in a `Result`.
        let result = text.withUTF8 { buffer in
            var parser = JSONParser(buffer, maximumDepth: maximumDepth)
            return Result { () throws(JSONParseError) in try parser.parseDocument() }
        }
        return try result.get()
    }
}

extension JSONValue {
    /// Whether arrays and objects nest more than `limit` levels deep in an object with these members
    /// (the object itself is level 1, as a request body is). Values parsed from JSON never do; values
    /// built in Swift may, and are refused before anything walks them recursively. The walk keeps its
    /// place on the heap, so a value of any depth can be checked, and a flat object costs no allocation.
    public static func nestingExceeds(_ limit: Int, members: [String: JSONValue]) -> Bool {
        guard limit >= 1 else { return true }
        var pending: [(value: JSONValue, depth: Int)] = []
        for value in members.values where value.isContainer { pending.append((value, 2)) }
        while let (value, depth) = pending.popLast() {
            if depth > limit { return true }
            switch value {
            case .array(let elements):
                for element in elements where element.isContainer { pending.append((element, depth + 1)) }
            case .object(let object):
                for element in object.values where element.isContainer { pending.append((element, depth + 1)) }
            default: break
            }
        }
        return false
    }

    var isContainer: Bool {
        switch self {
        case .array, .object: true
        default: false
        }
    }
}

/// The parser keeps the arrays and objects it is inside on a heap stack (`enclosing`) instead of recursing,
/// so its own stack use does not grow with the nesting: only the limit bounds the depth of the values
/// it builds, for the code that walks them afterwards.
private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let maximumDepth: Int
    var index = 0

    /// An array or object being read: the elements so far, or the members so far and the key whose value
    /// comes next.
    enum Container {
        case array([JSONValue])
        case object([String: JSONValue], key: String)
    }

    init(_ bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
    }

    func fail(_ reason: String) -> JSONParseError { JSONParseError(offset: index, reason: reason) }

    mutating func parseDocument() throws(JSONParseError) -> JSONValue {
        skipWhitespace()
        let value = try parseValue()
        skipWhitespace()
        guard index == bytes.count else { throw fail("unexpected data after the end of the document") }
        return value
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    /// Reads one value (with everything nested in it) starting at `index`.
    mutating func parseValue() throws(JSONParseError) -> JSONValue {
        // `current` is the innermost array or object being read, `enclosing` the ones around it.
        var current: Container? = nil
        var enclosing: [Container] = []
        values: while true {
            // A value starts here: a scalar, an empty container, or the first element of one.
            var value: JSONValue
            guard index < bytes.count else { throw fail("unexpected end of input") }
            switch bytes[index] {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let isObject = bytes[index] == UInt8(ascii: "{")
                try enter(depth: enclosing.count + (current == nil ? 1 : 2))
                index += 1
                skipWhitespace()
                if index < bytes.count, bytes[index] == UInt8(ascii: isObject ? "}" : "]") {
                    index += 1
                    value = isObject ? .object([:]) : .array([])
                } else {
                    if let outer = consume current { enclosing.append(outer) }
                    // Room for a few members up front: growing from empty rehashes at the 2nd and 4th.
                    current = isObject ? .object(Dictionary(minimumCapacity: 4), key: try parseKey()) : .array([])
                    continue values
                }
            case UInt8(ascii: "\""): value = .string(try parseString())
            case UInt8(ascii: "t"):
                try expectLiteral("true")
                value = .bool(true)
            case UInt8(ascii: "f"):
                try expectLiteral("false")
                value = .bool(false)
            case UInt8(ascii: "n"):
                try expectLiteral("null")
                value = .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): value = try parseNumber()
            default:
                throw fail(
                    "unexpected character; expected a value (an object, array, string, number, true, false or null)"
                )
            }
            // The value is complete: it joins the innermost open container, which either continues
            // (a ',' and the next value) or closes and becomes the value that joins the next one out.
            while let container = consume current {
                skipWhitespace()
                guard index < bytes.count else {
                    if case .array = container { throw fail("unexpected end of input in array") }
                    throw fail("unexpected end of input in object")
                }
                let byte = bytes[index]
                switch consume container {
                case .array(var elements):
                    elements.append(value)
                    if byte == UInt8(ascii: ",") {
                        index += 1
                        skipWhitespace()
                        current = .array(elements)
                        continue values
                    }
                    guard byte == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
                    index += 1
                    value = .array(elements)
                case .object(var members, let key):
                    members[key] = value
                    if byte == UInt8(ascii: ",") {
                        index += 1
                        current = .object(members, key: try parseKey())
                        continue values
                    }
                    guard byte == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
                    index += 1
                    value = .object(members)
                }
                current = enclosing.popLast()
            }
            return value
        }
    }

    /// `"key" :` and the blanks around it, before a member's value.
    mutating func parseKey() throws(JSONParseError) -> String {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
        let key = try parseString()
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
        index += 1
        skipWhitespace()
        return key
    }

    mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw fail("unexpected end of input") }
        for i in 0..<count where bytes[index + i] != literal.utf8Start[i] {
            throw fail("invalid literal")
        }
        index += count
    }

    /// Refuses to open a container at nesting level `depth` past the limit.
    func enter(depth: Int) throws(JSONParseError) {
        guard depth <= maximumDepth else {
            throw fail("nesting deeper than \(maximumDepth) levels of arrays and objects")
        }
    }

    mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count else { throw fail("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if isDigit(bytes[index]) {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        } else {
            throw fail("invalid number")
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else {
                throw fail("invalid number: digit expected after '.'")
            }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                index += 1
            }
            guard index < bytes.count, isDigit(bytes[index]) else {
                throw fail("invalid number: digit expected in exponent")
            }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        return .number(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
    }

    func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    mutating func parseString() throws(JSONParseError) -> String {
        index += 1
        let start = index
        // Fast path: no escapes. An all-ASCII string (the usual case) needs no UTF-8 validation;
        // String(decoding:) copies it without the generic validating initializer's overhead.
        var highBits: UInt8 = 0
        // Eight bytes at a time while none of them ends the fast path (a quote, a backslash, a control
        // character); the byte loop below takes the rest.
        if let base = bytes.baseAddress {
            let ones: UInt64 = 0x0101_0101_0101_0101
            let top = ones &* 0x80
            var words: UInt64 = 0
            while index &+ 8 <= bytes.count {
                let word = UInt64(littleEndian: UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self))
                // Nonzero when some byte is zero, for `word` xor a repeated byte; below 0x20, for `word`.
                func hasZero(_ v: UInt64) -> UInt64 { (v &- ones) & ~v & top }
                let quote = hasZero(word ^ (ones &* 0x22))
                let backslash = hasZero(word ^ (ones &* 0x5C))
                let control = (word &- ones &* 0x20) & ~word & top
                if quote | backslash | control != 0 { break }
                words |= word
                index &+= 8
            }
            if words & top != 0 { highBits = 0x80 }
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
                if highBits & 0x80 == 0 {
                    index += 1
                    return String(decoding: slice, as: UTF8.self)
                }
                guard let string = String(validating: slice, as: UTF8.self) else {
                    throw JSONParseError(offset: start, reason: "string is not valid UTF-8")
                }
                index += 1
                return string
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw fail("control character in string") }
            highBits |= byte
            index += 1
        }
        var scratch = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                guard let string = String(validating: scratch, as: UTF8.self) else {
                    throw JSONParseError(offset: start, reason: "string is not valid UTF-8")
                }
                index += 1
                return string
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw fail("unexpected end of input in escape") }
                let escaped = bytes[index]
                index += 1
                switch escaped {
                case UInt8(ascii: "\""): scratch.append(0x22)
                case UInt8(ascii: "\\"): scratch.append(0x5C)
                case UInt8(ascii: "/"): scratch.append(0x2F)
                case UInt8(ascii: "b"): scratch.append(0x08)
                case UInt8(ascii: "f"): scratch.append(0x0C)
                case UInt8(ascii: "n"): scratch.append(0x0A)
                case UInt8(ascii: "r"): scratch.append(0x0D)
                case UInt8(ascii: "t"): scratch.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                            bytes[index + 1] == UInt8(ascii: "u")
                        else { throw fail("unpaired surrogate in \\u escape") }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid low surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw fail("unpaired surrogate in \\u escape")
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                    scratch.append(contentsOf: Array(String(Character(unicode)).utf8))
                default:
                    index -= 2
                    throw fail(
                        #"invalid escape in string; expected one of \" \\ \/ \b \f \n \r \t or \u and four hex digits"#
                    )
                }
            default:
                if byte < 0x20 { throw fail("control character in string") }
                scratch.append(byte)
                index += 1
            }
        }
        throw fail("unterminated string")
    }

    mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail("invalid hex digit in \\u escape")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }
}

// MARK: - Serialising

extension JSONValue {
    /// Compact JSON with object keys in sorted order, as Go's encoding/json writes them.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        write(to: &out)
        return out
    }

    /// Compact JSON as a `String`.
    public var jsonString: String { String(decoding: serialized(), as: UTF8.self) }

    public func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n): out.append(contentsOf: n.utf8)
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            var first = true
            // The pairs sorted by key: no second hash lookup of each key.
            for (key, value) in object.sorted(by: { $0.key < $1.key }) {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                JSONValue.writeString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// `object` with one more member whose value is JSON already written (`member.json`, written as it
    /// is), in key order as ``write(to:)`` writes an object; it takes the place of a member of that name.
    package static func writeObject(
        _ object: [String: JSONValue],
        with member: (name: String, json: ArraySlice<UInt8>),
        to out: inout [UInt8]
    ) {
        out.append(UInt8(ascii: "{"))
        var pending = true
        var first = true
        func writeMember() {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            writeString(member.name, to: &out)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: member.json)
            pending = false
        }
        for (key, value) in object.sorted(by: { $0.key < $1.key }) where key != member.name {
            if pending, member.name < key { writeMember() }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            writeString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            value.write(to: &out)
        }
        if pending { writeMember() }
        out.append(UInt8(ascii: "}"))
    }

    package static func writeString(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var string = string
        string.withUTF8 { bytes in
            // Most strings need no escaping: copy them in one go.
            guard bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else {
                out.append(contentsOf: bytes)
                return
            }
            let hex: StaticString = "0123456789abcdef"
            for byte in bytes {
                switch byte {
                case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
                case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0..<0x20:
                    out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30])
                    out.append(hex.utf8Start[Int(byte >> 4)])
                    out.append(hex.utf8Start[Int(byte & 0xF)])
                default: out.append(byte)
                }
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension JSONValue: CustomStringConvertible {
    public var description: String { jsonString }
}
