package import CofferCore

/// A request field a path accepts: its name, type and range. Every value is checked against its
/// declaration before a handler runs, so a handler never sees a mistyped or out-of-range value,
/// and an error names the field, the type and the limit — never the value, which may be a secret
/// pasted into the wrong field.
package struct Field: Sendable {
    package enum Kind: Sendable {
        /// Text. Numbers and booleans are accepted and kept as their text (query parameters arrive as text).
        case string
        /// A whole number within `range` (as JSON number or decimal text).
        case int(ClosedRange<Int>)
        /// `true`/`false`, or text Go's `strconv.ParseBool` accepts.
        case bool
        /// Whole seconds from 0 to `maximum`: a number or Go duration text ("90s", "1h30m").
        case duration(maximum: Int64)
        /// A list of strings, or comma-separated text (as the CLI sends lists).
        case stringList
        /// A list of whole numbers within `range`, or comma-separated text.
        case intList(ClosedRange<Int>)
        /// An object of string values (token `meta`, `custom_metadata`).
        case stringMap
        /// Any JSON object.
        case object
        /// Any JSON value, checked by the handler (batch input).
        case any
        /// Bytes: standard base64 text in JSON, raw bytes from an in-process caller (``Request/raw``).
        case bytes
    }

    package let name: String
    package let kind: Kind
    package let required: Bool

    package init(_ name: String, _ kind: Kind, required: Bool = false) {
        self.name = name
        self.kind = kind
        self.required = required
    }

    package static func string(_ name: String, required: Bool = false) -> Field {
        Field(name, .string, required: required)
    }
    package static func int(
        _ name: String,
        _ range: ClosedRange<Int> = 0...Int(Int32.max),
        required: Bool = false
    ) -> Field {
        Field(name, .int(range), required: required)
    }
    package static func bool(_ name: String) -> Field { Field(name, .bool) }
    package static func duration(_ name: String, maximum: Int64 = VaultDuration.maximumSeconds) -> Field {
        Field(name, .duration(maximum: maximum))
    }
    package static func strings(_ name: String) -> Field { Field(name, .stringList) }
    package static func ints(_ name: String, _ range: ClosedRange<Int> = 0...Int(Int32.max)) -> Field {
        Field(name, .intList(range))
    }
    package static func stringMap(_ name: String) -> Field { Field(name, .stringMap) }
    package static func object(_ name: String, required: Bool = false) -> Field {
        Field(name, .object, required: required)
    }
    package static func any(_ name: String) -> Field { Field(name, .any) }
    package static func bytes(_ name: String, required: Bool = false) -> Field {
        Field(name, .bytes, required: required)
    }

    /// What the field holds, for error texts: "an integer from 0 to 2147483647".
    var expected: String {
        switch kind {
        case .string: "a string"
        case .int(let r): "an integer from \(r.lowerBound) to \(r.upperBound)"
        case .bool: "a boolean"
        case .duration(let max):
            "a duration from 0 to \(max) seconds (a number of seconds or text such as \"90s\" or \"1h30m\")"
        case .stringList: "a list of strings"
        case .intList(let r): "a list of integers from \(r.lowerBound) to \(r.upperBound)"
        case .stringMap: "an object of string values"
        case .object: "an object"
        case .any: "a value"
        case .bytes: "standard base64 text"
        }
    }

    /// "<name> must be <expected>", or for one item of a list "<name>[<index>] must be" what an item holds.
    func invalid(_ index: Int? = nil) -> CofferError {
        guard let index else { return CofferError.invalid("\(name) must be \(expected)") }
        let item =
            switch kind {
            case .intList(let r): "an integer from \(r.lowerBound) to \(r.upperBound)"
            default: "a string"
            }
        return CofferError.invalid("\(name)[\(index)] must be \(item)")
    }

    /// Checks `value` and converts it to the field's canonical form.
    package func convert(_ value: JSONValue) throws(CofferError) -> FieldValue {
        switch kind {
        case .string:
            switch value {
            case .string(let s): return .string(s)
            case .number(let n): return .string(n)
            case .bool(let b): return .string(b ? "true" : "false")
            default: throw invalid()
            }
        case .int(let range):
            guard let n = Field.integer(value), range.contains(n) else { throw invalid() }
            return .int(n)
        case .bool:
            switch value {
            case .bool(let b): return .bool(b)
            case .string(let s):
                guard let b = Field.parseBool(s) else { throw invalid() }
                return .bool(b)
            case .number(let n) where n == "0" || n == "1": return .bool(n == "1")
            default: throw invalid()
            }
        case .duration(let maximum):
            guard let seconds = try? VaultDuration.seconds(value, field: name), seconds <= maximum else {
                throw invalid()
            }
            return .int(Int(seconds))
        case .stringList:
            switch value {
            case .string(let s):
                return .strings(s.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty })
            case .array(let items):
                var out: [String] = []
                out.reserveCapacity(items.count)
                for (i, item) in items.enumerated() {
                    switch item {
                    case .string(let s): out.append(s)
                    case .number(let n): out.append(n)
                    default: throw invalid(i)
                    }
                }
                return .strings(out)
            default: throw invalid()
            }
        case .intList(let range):
            let items: [JSONValue]
            switch value {
            case .array(let a): items = a
            case .string(let s): items = s.split(separator: ",").map { .string(String($0).trimmingSpaces()) }
            case .number: items = [value]
            default: throw invalid()
            }
            var out: [Int] = []
            for (i, item) in items.enumerated() {
                guard let n = Field.integer(item), range.contains(n) else { throw invalid(i) }
                out.append(n)
            }
            return .ints(out)
        case .stringMap:
            guard case .object(let object) = value else { throw invalid() }
            var out: [String: String] = [:]
            for (k, v) in object {
                guard case .string(let s) = v else { throw CofferError.invalid("\(name).\(k) must be a string") }
                out[k] = s
            }
            return .stringMap(out)
        case .object:
            guard case .object(let object) = value else { throw invalid() }
            return .object(object)
        case .any:
            return .json(value)
        case .bytes:
            guard case .string(let s) = value, let bytes = Base64.decode(s) else { throw invalid() }
            return .bytes(bytes)
        }
    }

    /// A whole number from a JSON number or decimal text; nil for fractions, exponents past Int's
    /// range, and anything else.
    package static func integer(_ value: JSONValue) -> Int? {
        switch value {
        case .number(let n):
            if let v = Int(n) { return v }
            if let d = Double(n), d.isFinite, d == d.rounded(), abs(d) < 9e15 { return Int(d) }
            return nil
        case .string(let s):
            return Int(s.trimmingSpaces())
        default:
            return nil
        }
    }

    /// Go's `strconv.ParseBool`, as Vault parses booleans given as text; "" is false, as Vault's
    /// field decoder reads an empty query parameter.
    package static func parseBool(_ text: String) -> Bool? {
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": true
        case "0", "f", "F", "FALSE", "false", "False", "": false
        default: nil
        }
    }
}

/// A checked field value.
package enum FieldValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case strings([String])
    case ints([Int])
    case stringMap([String: String])
    case object([String: JSONValue])
    case json(JSONValue)
    case bytes([UInt8])
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
