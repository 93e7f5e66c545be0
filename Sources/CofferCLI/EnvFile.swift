// The `--env-file` of `coffer run`: dotenv syntax.
//
//   # comment
//   DB_PASSWORD=s3cret
//   export API_KEY="with \"escapes\"\n"
//   RAW='taken as written'
//
// Errors name the file, line and column and what was expected, never a value.

enum EnvFile {
    struct SyntaxError: Error, CustomStringConvertible {
        let file: String
        let line: Int
        let column: Int
        let message: String
        var description: String { "\(file):\(line):\(column): \(message)" }
    }

    static func parse(_ text: String, file: String) throws(SyntaxError) -> [String: String] {
        var out: [String: String] = [:]
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Array(rawLine.utf8.last == 13 ? rawLine.utf8.dropLast() : rawLine.utf8[...])
            func error(_ column: Int, _ message: String) -> SyntaxError {
                SyntaxError(file: file, line: lineNumber, column: column + 1, message: message)
            }
            var i = 0
            func skipSpaces() { while i < line.count, line[i] == 32 || line[i] == 9 { i += 1 } }
            skipSpaces()
            if i == line.count || line[i] == UInt8(ascii: "#") { continue }
            if line[i...].starts(with: Array("export ".utf8)) {
                i += 7
                skipSpaces()
            }
            let nameStart = i
            while i < line.count, Template.isNameByte(line[i], first: i == nameStart) { i += 1 }
            guard i > nameStart else { throw error(i, "expected a variable name (letters, digits, _)") }
            let name = String(decoding: line[nameStart..<i], as: UTF8.self)
            skipSpaces()
            guard i < line.count, line[i] == UInt8(ascii: "=") else {
                throw error(i, "expected = after the variable name")
            }
            i += 1
            skipSpaces()
            var value: [UInt8] = []
            if i < line.count, line[i] == UInt8(ascii: "\"") || line[i] == UInt8(ascii: "'") {
                let quote = line[i]
                let open = i
                i += 1
                var closed = false
                while i < line.count {
                    let byte = line[i]
                    if byte == quote {
                        closed = true
                        i += 1
                        break
                    }
                    if quote == UInt8(ascii: "\""), byte == UInt8(ascii: "\\"), i + 1 < line.count {
                        switch line[i + 1] {
                        case UInt8(ascii: "n"): value.append(10)
                        case UInt8(ascii: "t"): value.append(9)
                        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "$"): value.append(line[i + 1])
                        default: throw error(i, "unknown escape; double-quoted values have \\\" \\\\ \\n \\t \\$")
                        }
                        i += 2
                        continue
                    }
                    value.append(byte)
                    i += 1
                }
                guard closed else { throw error(open, "the quoted value is not closed on its line") }
                skipSpaces()
                guard i == line.count || line[i] == UInt8(ascii: "#") else {
                    throw error(i, "unexpected text after the closing quote")
                }
            } else {
                var end = line.count
                if let hash = line[i...].firstIndex(where: { $0 == UInt8(ascii: "#") }),
                    hash > i, line[hash - 1] == 32 || line[hash - 1] == 9
                {
                    end = hash
                }
                value = Array(line[i..<end])
                while let last = value.last, last == 32 || last == 9 { value.removeLast() }
                if let bad = value.firstIndex(where: { $0 == 34 || $0 == 39 }) {
                    throw error(i + bad, "a quote inside an unquoted value: quote the whole value")
                }
            }
            out[name] = String(decoding: value, as: UTF8.self)
        }
        return out
    }
}
