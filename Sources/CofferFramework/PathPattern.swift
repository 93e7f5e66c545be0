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
    /// The capture names in order.
    package let captureNames: [String]

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
        captureNames = segments.compactMap {
            switch $0 {
            case .literal: nil
            case .capture(let n), .rest(let n, _), .optional(let n): n
            }
        }
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

    /// The index of the first of `patterns` that matches `path`, with its captures.
    package static func firstMatch(in patterns: [PathPattern], _ path: String) -> (Int, Captures)? {
        var captures = Captures()
        var bytes = path
        let found = bytes.withUTF8 { bytes in
            patterns.indices.first { patterns[$0].mayMatch(bytes) && patterns[$0].match(bytes, into: &captures) }
        }
        guard let found else { return nil }
        captures.bind(path, patterns[found].captureNames)
        return (found, captures)
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
        var path = String(path)
        let matched = path.withUTF8 { match($0, into: &captures) }
        if matched { captures.bind(path, captureNames) }
        return matched
    }

    /// Matches the bytes of a path, recording where each capture lies (``Captures/bind(_:_:)`` then
    /// names them): offsets into the bytes, no strings made, nothing retained.
    private func match(_ path: UnsafeBufferPointer<UInt8>, into captures: inout Captures) -> Bool {
        captures.removeAll()
        var at = 0
        let end = path.count
        for i in segments.indices {
            let last = i == segments.count - 1
            switch segments[i] {
            case .rest(_, let allowsEmpty):
                // The literal segments after it are matched from the end of the path.
                var tailEnd = end
                for case .literal(let bytes) in segments[(i + 1)...].reversed() {
                    let count = bytes.count
                    guard tailEnd - at > count, Self.equal(path, tailEnd - count, bytes),
                        path[tailEnd - count - 1] == UInt8(ascii: "/")
                    else { return false }
                    tailEnd -= count + 1
                }
                guard allowsEmpty || tailEnd > at, tailEnd == at || path[at] != UInt8(ascii: "/") else { return false }
                captures.append(at..<tailEnd)
                return true
            case .optional:
                if at == end { return true }
                guard !path[at..<end].contains(UInt8(ascii: "/")) else { return false }
                captures.append(at..<end)
                return true
            case .literal(let bytes):
                guard end - at >= bytes.count, Self.equal(path, at, bytes) else { return false }
                at += bytes.count
            case .capture:
                var stop = at
                while stop < end, path[stop] != UInt8(ascii: "/") { stop += 1 }
                guard stop > at else { return false }
                captures.append(at..<stop)
                at = stop
            }
            if last { break }
            // A `{name*}` next may match nothing: "data" serves "data/{path*}" with an empty path.
            if at == end {
                switch segments[i + 1] {
                case .rest(_, true), .optional: continue
                default: break
                }
            }
            guard at < end, path[at] == UInt8(ascii: "/") else { return false }
            at += 1
        }
        // All segments consumed: the path must end here (or with the "/" of a list form).
        return at == end || (listForm && at == end - 1 && path[at] == UInt8(ascii: "/"))
    }

    /// Whether `path` holds `literal` at `offset` (the caller has checked the length).
    private static func equal(_ path: UnsafeBufferPointer<UInt8>, _ offset: Int, _ literal: [UInt8]) -> Bool {
        literal.withUnsafeBufferPointer { literal in
            for j in literal.indices where literal[j] != path[offset + j] { return false }
            return true
        }
    }
}

/// The captured segments of a matched path, by name. Matching records byte ranges, inline for up to
/// four captures (no declared pattern has more), and the path and the pattern's capture names are
/// attached once a pattern has matched: routing makes no string and does not allocate.
package struct Captures: Sendable {
    private var path = ""
    private var names: [String] = []
    private var ranges: (Range<Int>, Range<Int>, Range<Int>, Range<Int>) = (0..<0, 0..<0, 0..<0, 0..<0)
    package private(set) var count = 0

    package init() {}

    mutating func removeAll() { count = 0 }

    mutating func append(_ range: Range<Int>) {
        switch count {
        case 0: ranges.0 = range
        case 1: ranges.1 = range
        case 2: ranges.2 = range
        case 3: ranges.3 = range
        default: return  // tables with more captures are refused by validate()
        }
        count += 1
    }

    /// The path the ranges are in and the names of the captures in order (those made are a prefix:
    /// only a last `{name?}` may be missing).
    mutating func bind(_ path: String, _ names: [String]) {
        self.path = path
        self.names = names
    }

    /// The segment captured as `name`, or nil.
    package subscript(_ name: String) -> String? {
        for i in 0..<min(count, names.count) where names[i] == name {
            let range =
                switch i {
                case 0: ranges.0
                case 1: ranges.1
                case 2: ranges.2
                default: ranges.3
                }
            let utf8 = path.utf8
            let start = utf8.index(utf8.startIndex, offsetBy: range.lowerBound)
            let end = utf8.index(start, offsetBy: range.count)
            return String(path[start..<end])
        }
        return nil
    }
}
