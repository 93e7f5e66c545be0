public import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// The fallback env file and the names of its variables.
///
/// Syntax, one entry a line: `KEY=value`; an optional `export ` before the key; blank lines and lines
/// starting with `#` are skipped; the key is letters, digits and `_`, not starting with a digit; the
/// value runs to the end of the line (surrounding blanks trimmed), or is in double quotes (with `\"`,
/// `\\`, `\n` escapes) or single quotes (taken literally), optionally followed by blanks and a `#`
/// comment. A bad line is an error naming the file and the line number, never its value.
public enum EnvFile {
    /// At most this many bytes are read from an env file.
    public static let maximumBytes = 1 << 20

    /// Parses env file text; `origin` names it in errors.
    public static func parse(_ text: String, origin: String = "env file") throws(CofferError) -> [String: String] {
        var out: [String: String] = [:]
        var number = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            var line = Substring(rawLine)
            if line.last == "\r" { line = line.dropLast() }
            line = trimmed(line)
            if line.isEmpty || line.first == "#" { continue }
            func bad(_ why: String) -> CofferError {
                CofferError(.invalidArgument, "\(origin) line \(number): \(why)")
            }
            if line.hasPrefix("export ") { line = trimmed(line.dropFirst(7)) }
            guard let equals = line.firstIndex(of: "=") else { throw bad("expected KEY=value") }
            let key = trimmed(line[..<equals])
            guard isName(key) else {
                throw bad("the key is not a variable name (letters, digits and _, not starting with a digit)")
            }
            var rest = trimmed(line[line.index(after: equals)...])
            var value = ""
            if let quote = rest.first, quote == "\"" || quote == "'" {
                rest = rest.dropFirst()
                var closed = false
                var escaped = false
                var index = rest.startIndex
                while index < rest.endIndex {
                    let c = rest[index]
                    index = rest.index(after: index)
                    if quote == "\"" && escaped {
                        switch c {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "\"", "\\", "$": value.append(c)
                        default:
                            value.append("\\")
                            value.append(c)
                        }
                        escaped = false
                    } else if quote == "\"" && c == "\\" {
                        escaped = true
                    } else if c == quote {
                        closed = true
                        break
                    } else {
                        value.append(c)
                    }
                }
                guard closed else { throw bad("the quoted value is not closed on this line") }
                let after = trimmed(rest[index...])
                guard after.isEmpty || after.first == "#" else {
                    throw bad("unexpected text after the closing quote")
                }
            } else {
                // An unquoted value: a " #" starts a comment.
                var previous: Character = "x"
                for index in rest.indices {
                    if rest[index] == "#" && (previous == " " || previous == "\t") {
                        rest = rest[..<index]
                        break
                    }
                    previous = rest[index]
                }
                value = String(trimmed(rest))
            }
            out[String(key)] = value
        }
        return out
    }

    /// Reads and parses the file at `path`.
    public static func load(_ path: String) throws(CofferError) -> [String: String] {
        guard let file = fopen(path, "rb") else {
            throw CofferError(
                .invalidArgument,
                "env file \(path): cannot be opened (\(String(cString: strerror(errno))))"
            )
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            guard bytes.count <= maximumBytes else {
                throw CofferError(.invalidArgument, "env file \(path): larger than \(maximumBytes) bytes")
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CofferError(.invalidArgument, "env file \(path): not UTF-8 text")
        }
        return try parse(text, origin: "env file \(path)")
    }

    /// The prefix of the variables that hold the fields of the secret at `path`: the path after its
    /// mount (and after `data/` for KV v2's `<mount>/data/...`), upper-cased, every character that is
    /// not a letter or digit made `_`, then `_`. `secret/data/app` → `APP_`, so its field `password`
    /// is `APP_PASSWORD`; `kv/team/db` → `TEAM_DB_`.
    public static func variablePrefix(for path: String) -> String {
        var parts = path.split(separator: "/").map(String.init)
        if parts.count > 1 { parts.removeFirst() }
        if parts.count > 1 && parts.first == "data" { parts.removeFirst() }
        return variableName(parts.joined(separator: "_")) + "_"
    }

    /// `text` upper-cased with every character that is not an ASCII letter or digit made `_`.
    public static func variableName(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "a"..."z": out.unicodeScalars.append(Unicode.Scalar(scalar.value - 32)!)
            case "A"..."Z", "0"..."9": out.unicodeScalars.append(scalar)
            default: out.append("_")
            }
        }
        return out
    }

    /// The fields of the secret at `path` found in `variables`: with an explicit `mapping` (field →
    /// variable) exactly those; otherwise every variable starting with ``variablePrefix(for:)``,
    /// the rest of its name lower-cased as the field's name.
    public static func fields(
        for path: String,
        in variables: [String: String],
        mapping: [String: String]?
    ) -> [String: String] {
        var out: [String: String] = [:]
        if let mapping {
            for (field, name) in mapping {
                if let value = variables[name] { out[field] = value }
            }
            return out
        }
        let prefix = variablePrefix(for: path)
        for (name, value) in variables where name.hasPrefix(prefix) && name.utf8.count > prefix.utf8.count {
            out[String(name.dropFirst(prefix.count)).lowercased()] = value
        }
        return out
    }

    private static func isName(_ text: Substring) -> Bool {
        guard let first = text.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return text.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
        }
    }

    private static func trimmed(_ text: Substring) -> Substring {
        var s = text
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }
}
