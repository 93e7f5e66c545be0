// `coffer run`'s template: which environment variables and files a child gets, made of secrets.
//
//   # a comment
//   DB_PASSWORD = "{{ secret "secret/data/app" "password" }}"
//   DB_URL      = "postgres://app:{{ secret "secret/data/app" "password" }}@db:5432/app"
//   file "/run/app/db.conf" = "password={{ secret "secret/data/app" "password" }}\n"
//
// One entry a line: a variable name (or `file "PATH"`), `=`, and a double-quoted value that runs to
// the last `"` of the line. In the value, `{{ secret "PATH" "FIELD" }}` is the field of the secret
// read at the API path PATH (KV v2: `secret/data/app`; KV v1 and other engines: their read path);
// the rest is literal text with the escapes \" \\ \n \t. Errors name the file, line and column
// and what was expected, never the text of the line (a secret pasted into a template stays out of
// logs).

/// A parsed template.
struct Template: Sendable {
    enum Part: Sendable, Equatable {
        case literal(String)
        case secret(path: String, field: String)
    }

    struct Entry: Sendable {
        enum Target: Sendable, Hashable {
            case environment(String)
            case file(String)
        }

        var target: Target
        var parts: [Part]
        var line: Int
    }

    var entries: [Entry]

    /// The distinct secret paths the template reads, in first-use order.
    var paths: [String] {
        var seen: Set<String> = []
        var out: [String] = []
        for entry in entries {
            for case .secret(let path, _) in entry.parts where seen.insert(path).inserted { out.append(path) }
        }
        return out
    }

    struct SyntaxError: Error, CustomStringConvertible {
        let file: String
        let line: Int
        let column: Int
        let message: String
        var description: String { "\(file):\(line):\(column): \(message)" }
    }

    /// The most entries and the longest line a template may have: templates are small.
    static let maximumEntries = 1000
    static let maximumLineBytes = 64 << 10

    static func parse(_ text: String, file: String) throws(SyntaxError) -> Template {
        var entries: [Entry] = []
        var targets: [Entry.Target: Int] = [:]
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Array(rawLine.utf8.last == 13 ? rawLine.utf8.dropLast() : rawLine.utf8[...])
            func error(_ column: Int, _ message: String) -> SyntaxError {
                SyntaxError(file: file, line: lineNumber, column: column + 1, message: message)
            }
            guard line.count <= maximumLineBytes else { throw error(0, "the line is longer than 64 KiB") }
            var i = 0
            func skipSpaces() { while i < line.count, line[i] == 32 || line[i] == 9 { i += 1 } }
            skipSpaces()
            if i == line.count || line[i] == UInt8(ascii: "#") { continue }

            // The target: NAME or file "PATH".
            let nameStart = i
            while i < line.count, isNameByte(line[i], first: i == nameStart) { i += 1 }
            guard i > nameStart else {
                throw error(i, "expected a variable name (letters, digits, _) or file \"PATH\"")
            }
            var target = Entry.Target.environment(String(decoding: line[nameStart..<i], as: UTF8.self))
            if target == .environment("file") {
                skipSpaces()
                if i < line.count, line[i] == UInt8(ascii: "\"") {
                    let (path, end) = try quoted(line, from: i, error: error)
                    guard !path.isEmpty, !path.contains("\0") else { throw error(i, "the file path is empty") }
                    target = .file(path)
                    i = end
                }
            }
            skipSpaces()
            guard i < line.count, line[i] == UInt8(ascii: "=") else {
                throw error(i, "expected = after the variable name")
            }
            i += 1
            skipSpaces()
            guard i < line.count, line[i] == UInt8(ascii: "\"") else {
                throw error(i, "expected a double-quoted value after =")
            }
            var end = line.count
            while end > i + 1, line[end - 1] == 32 || line[end - 1] == 9 { end -= 1 }
            guard end > i + 1, line[end - 1] == UInt8(ascii: "\"") else {
                throw error(i, "the value is not closed: it must end with \" at the end of the line")
            }
            let parts = try value(line, from: i + 1, to: end - 1, error: error)
            if let first = targets[target] {
                throw error(nameStart, "\(describe(target)) is already set at line \(first)")
            }
            targets[target] = lineNumber
            entries.append(Entry(target: target, parts: parts, line: lineNumber))
            guard entries.count <= maximumEntries else { throw error(0, "more than \(maximumEntries) entries") }
        }
        guard !entries.isEmpty else {
            throw SyntaxError(file: file, line: max(lineNumber, 1), column: 1, message: "the template has no entries")
        }
        return Template(entries: entries)
    }

    static func describe(_ target: Entry.Target) -> String {
        switch target {
        case .environment(let name): "variable \(name)"
        case .file(let path): "file \"\(path)\""
        }
    }

    static func isNameByte(_ byte: UInt8, first: Bool) -> Bool {
        (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || byte == 95 || (!first && byte >= 48 && byte <= 57)
    }

    /// A "..." string at `start` (escapes \" \\); returns it and the index after the closing quote.
    static func quoted(
        _ line: [UInt8],
        from start: Int,
        error: (Int, String) -> SyntaxError
    ) throws(SyntaxError) -> (String, Int) {
        var out: [UInt8] = []
        var i = start + 1
        while i < line.count {
            switch line[i] {
            case UInt8(ascii: "\""): return (String(decoding: out, as: UTF8.self), i + 1)
            case UInt8(ascii: "\\") where i + 1 < line.count && (line[i + 1] == 34 || line[i + 1] == 92):
                out.append(line[i + 1])
                i += 2
            default:
                out.append(line[i])
                i += 1
            }
        }
        throw error(start, "the quoted string is not closed")
    }

    /// The value between its quotes: literal text and {{ ... }} actions.
    static func value(
        _ line: [UInt8],
        from start: Int,
        to end: Int,
        error: (Int, String) -> SyntaxError
    ) throws(SyntaxError) -> [Part] {
        var parts: [Part] = []
        var literal: [UInt8] = []
        var i = start
        func flush() {
            if !literal.isEmpty { parts.append(.literal(String(decoding: literal, as: UTF8.self))) }
            literal.removeAll()
        }
        while i < end {
            let byte = line[i]
            if byte == UInt8(ascii: "{"), i + 1 < end, line[i + 1] == UInt8(ascii: "{") {
                flush()
                let actionStart = i
                i += 2
                var words: [(String, Int)] = []
                while true {
                    while i < end, line[i] == 32 || line[i] == 9 { i += 1 }
                    guard i < end else { throw error(actionStart, "{{ is not closed by }}") }
                    if line[i] == UInt8(ascii: "}") {
                        guard i + 1 < end, line[i + 1] == UInt8(ascii: "}") else {
                            throw error(i, "expected }} to close the action")
                        }
                        i += 2
                        break
                    }
                    if line[i] == UInt8(ascii: "\"") {
                        let wordStart = i
                        let (word, after) = try quoted(Array(line[..<end]), from: i, error: error)
                        words.append((word, wordStart))
                        i = after
                    } else {
                        let wordStart = i
                        while i < end, isNameByte(line[i], first: false) { i += 1 }
                        guard i > wordStart else {
                            throw error(i, "expected a function name, a double-quoted argument or }}")
                        }
                        words.append(("\u{0}" + String(decoding: line[wordStart..<i], as: UTF8.self), wordStart))
                    }
                }
                guard let (function, column) = words.first else { throw error(actionStart, "the action is empty") }
                guard function == "\u{0}secret" else {
                    throw error(column, "unknown function; the template has {{ secret \"PATH\" \"FIELD\" }}")
                }
                guard words.count == 3, !words[1].0.hasPrefix("\u{0}"), !words[2].0.hasPrefix("\u{0}") else {
                    throw error(column, "secret takes two double-quoted arguments: {{ secret \"PATH\" \"FIELD\" }}")
                }
                var path = Substring(words[1].0)
                while path.first == "/" { path = path.dropFirst() }
                if path.hasPrefix("v1/") { path = path.dropFirst(3) }
                guard !path.isEmpty else { throw error(words[1].1, "the secret path is empty") }
                guard !words[2].0.isEmpty else { throw error(words[2].1, "the field name is empty") }
                parts.append(.secret(path: String(path), field: words[2].0))
                continue
            }
            if byte == UInt8(ascii: "\\") {
                guard i + 1 < end else { throw error(i, "a \\ at the end of the value escapes nothing") }
                switch line[i + 1] {
                case UInt8(ascii: "n"): literal.append(10)
                case UInt8(ascii: "t"): literal.append(9)
                case UInt8(ascii: "\""): literal.append(34)
                case UInt8(ascii: "\\"): literal.append(92)
                case UInt8(ascii: "{"): literal.append(123)
                default: throw error(i, "unknown escape; the value has \\\" \\\\ \\n \\t \\{")
                }
                i += 2
                continue
            }
            if byte == UInt8(ascii: "\"") {
                throw error(i, "a \" inside the value must be written \\\" (outside {{ }})")
            }
            literal.append(byte)
            i += 1
        }
        flush()
        return parts
    }
}

/// A secret as the template sees it: its fields as text, its version.
struct ResolvedSecret: Sendable, Equatable {
    var fields: [String: String]
    var version: Int?
}

extension Template.Entry {
    /// The entry's text with the secrets filled in; an error (naming the line, path and field, never
    /// a value) when a field is missing.
    func render(_ secrets: [String: ResolvedSecret], file: String) throws(CLIError) -> String {
        var out = ""
        for part in parts {
            switch part {
            case .literal(let text): out += text
            case .secret(let path, let field):
                guard let secret = secrets[path] else { throw CLIError("\(file):\(line): \(path) was not read") }
                guard let value = secret.fields[field] else {
                    throw CLIError("\(file):\(line): the secret \(path) has no field \"\(field)\"")
                }
                out += value
            }
        }
        return out
    }
}
