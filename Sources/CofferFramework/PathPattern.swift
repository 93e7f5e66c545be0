package import CofferCore

/// A path a backend serves, declared as text and matched against request paths (relative to the
/// mount) without regular expressions and without allocating.
///
/// Segments are separated by `/`:
/// - a literal (`config`, `keys`) matches itself;
/// - `{name}` matches one non-empty segment;
/// - `{name+}` matches one or more segments, which may contain `/` and may end in `/` (a folder, for
///   list operations); only literal segments may follow it (`mounts/{path+}/tune`), matched at the
///   end of the path;
/// - `{name*}` is `{name+}` that may also be empty (the mount itself);
/// - `{name?}` (last only) matches one segment or nothing (`random/{bytes?}` serves `random` and
///   `random/32`).
/// A trailing `/` (`keys/`) also matches the path without it: Vault lists `keys` and `keys/` alike.
package struct PathPattern: Sendable, CustomStringConvertible {
    enum Segment: Sendable, Equatable {
        case literal([UInt8])
        case capture(String)
        case rest(String, allowsEmpty: Bool)
        case optional(String)
    }

    let segments: [Segment]
    let listForm: Bool
    package let description: String
    /// The first segment when it is a literal (``mayMatch(_:)``).
    private let firstLiteral: [UInt8]?

    /// The pattern `text`. Patterns are part of a backend's code, not input: a malformed one is a
    /// programming error, found by the test that builds every backend's table
    /// (``PathTable/validate()``), and answered at run time as an internal error, never a trap.
    package init(_ text: String) {
        description = text
        var body = Substring(text)
        listForm = body.hasSuffix("/")
        if listForm { body = body.dropLast() }
        segments =
            body.isEmpty
            ? []
            : body.split(separator: "/", omittingEmptySubsequences: false).map { part in
                if part.hasPrefix("{"), part.hasSuffix("}") {
                    let name = part.dropFirst().dropLast()
                    if name.hasSuffix("+") { return .rest(String(name.dropLast()), allowsEmpty: false) }
                    if name.hasSuffix("*") { return .rest(String(name.dropLast()), allowsEmpty: true) }
                    if name.hasSuffix("?") { return .optional(String(name.dropLast())) }
                    return .capture(String(name))
                }
                return .literal(Array(part.utf8))
            }
        if case .literal(let bytes) = segments.first { firstLiteral = bytes } else { firstLiteral = nil }
    }

    /// Why the pattern is malformed, or nil. Checked once per table.
    package var problem: String? {
        for (i, segment) in segments.enumerated() {
            switch segment {
            case .literal(let bytes) where bytes.isEmpty: return "an empty segment"
            case .literal(let bytes) where bytes.contains(UInt8(ascii: "{")) || bytes.contains(UInt8(ascii: "}")):
                return "a brace inside a literal segment"
            case .capture(let name) where name.isEmpty, .rest(let name, _) where name.isEmpty,
                .optional(let name) where name.isEmpty:
                return "a capture without a name"
            case .rest:
                let after = segments[(i + 1)...]
                if !after.allSatisfy({ if case .literal = $0 { true } else { false } }) {
                    return "only literal segments may follow {name+}"
                }
                if listForm { return "{name+} cannot be followed by '/'" }
            case .optional:
                if i != segments.count - 1 { return "{name?} must be the last segment" }
                if listForm { return "{name?} cannot be followed by '/'" }
            default: break
            }
        }
        return nil
    }

    /// The capture names in order.
    package var captureNames: [String] {
        segments.compactMap {
            switch $0 {
            case .literal: nil
            case .capture(let n), .rest(let n, _), .optional(let n): n
            }
        }
    }

    /// The index of the first of `patterns` that matches `path`, with its captures.
    package static func firstMatch(in patterns: [PathPattern], _ path: String) -> (Int, Captures)? {
        var captures = Captures()
        let target = Substring(path)
        var path = path
        return path.withUTF8 { bytes in
            for index in patterns.indices
            where patterns[index].mayMatch(bytes) && patterns[index].match(target, into: &captures) {
                return (index, captures)
            }
            return nil
        }
    }

    /// Whether a path of these bytes can match: it starts with the first literal segment, followed by
    /// `/` or nothing. A cheap test on the bytes before the full match.
    private func mayMatch(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let literal = firstLiteral else { return true }
        let count = literal.count
        guard bytes.count >= count, bytes.count == count || bytes[count] == UInt8(ascii: "/") else { return false }
        return literal.withUnsafeBufferPointer { literal in (0..<count).allSatisfy { literal[$0] == bytes[$0] } }
    }

    /// Matches `path` (relative to the mount, no leading `/`); on success fills `captures`.
    package func match(_ path: Substring, into captures: inout Captures) -> Bool {
        captures.removeAll()
        var rest = path.utf8[...]
        for (i, segment) in segments.enumerated() {
            let last = i == segments.count - 1
            switch segment {
            case .rest(let name, let allowsEmpty):
                // The literal segments after it are matched from the end of the path.
                var tail = rest
                for case .literal(let bytes) in segments[(i + 1)...].reversed() {
                    guard tail.count > bytes.count, tail.suffix(bytes.count).elementsEqual(bytes),
                        tail[tail.index(tail.endIndex, offsetBy: -bytes.count - 1)] == UInt8(ascii: "/")
                    else { return false }
                    tail = tail.dropLast(bytes.count + 1)
                }
                guard allowsEmpty || !tail.isEmpty, tail.first != UInt8(ascii: "/") else { return false }
                captures.append(name, Substring(tail))
                return true
            case .optional(let name):
                if rest.isEmpty { return true }
                guard !rest.contains(UInt8(ascii: "/")) else { return false }
                captures.append(name, Substring(rest))
                return true
            case .literal(let bytes):
                guard rest.starts(with: bytes) else { return false }
                rest = rest.dropFirst(bytes.count)
            case .capture(let name):
                let end = rest.firstIndex(of: UInt8(ascii: "/")) ?? rest.endIndex
                guard end > rest.startIndex else { return false }
                captures.append(name, Substring(rest[rest.startIndex..<end]))
                rest = rest[end...]
            }
            if last { break }
            // A `{name*}` next may match nothing: "data" serves "data/{path*}" with an empty path.
            if rest.isEmpty {
                switch segments[i + 1] {
                case .rest(_, true), .optional: continue
                default: break
                }
            }
            guard rest.first == UInt8(ascii: "/") else { return false }
            rest = rest.dropFirst()
        }
        // All segments consumed: the path must end here (or with the "/" of a list form).
        return rest.isEmpty || (listForm && rest.elementsEqual([UInt8(ascii: "/")]))
    }
}

/// The captured segments of a matched path, by name. Inline storage for up to four captures (no
/// declared pattern has more), so matching does not allocate.
package struct Captures: Sendable {
    private var names: (String?, String?, String?, String?) = (nil, nil, nil, nil)
    private var values: (Substring, Substring, Substring, Substring) = ("", "", "", "")
    package private(set) var count = 0

    package init() {}

    mutating func removeAll() { count = 0 }

    mutating func append(_ name: String, _ value: Substring) {
        switch count {
        case 0:
            names.0 = name
            values.0 = value
        case 1:
            names.1 = name
            values.1 = value
        case 2:
            names.2 = name
            values.2 = value
        case 3:
            names.3 = name
            values.3 = value
        default: return  // tables with more captures are refused by validate()
        }
        count += 1
    }

    /// The segment captured as `name`, or nil.
    package subscript(_ name: String) -> String? {
        if count > 0, names.0 == name { return String(values.0) }
        if count > 1, names.1 == name { return String(values.1) }
        if count > 2, names.2 == name { return String(values.2) }
        if count > 3, names.3 == name { return String(values.3) }
        return nil
    }
}
