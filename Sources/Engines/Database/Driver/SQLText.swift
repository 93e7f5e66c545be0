/// Quoting of identifiers and literals for the statements the engine writes itself (its default
/// creation and revocation statements). Statements an operator configures are run as given.
package enum SQLQuote {
    /// A PostgreSQL identifier: in double quotes, a double quote doubled (`my"role` -> `"my""role"`).
    package static func postgresIdentifier(_ name: String) -> String {
        "\"" + name.replacing("\"", with: "\"\"") + "\""
    }

    /// A PostgreSQL string literal, as `PQescapeLiteral` writes it: in single quotes with a single
    /// quote doubled; with a backslash in the value, the ` E'...'` form with backslashes doubled, so
    /// the literal means the same whatever `standard_conforming_strings` is.
    package static func postgresLiteral(_ value: String) -> String {
        let quoted = value.replacing("'", with: "''")
        if value.contains("\\") { return " E'" + quoted.replacing("\\", with: "\\\\") + "'" }
        return "'" + quoted + "'"
    }

    /// A MySQL identifier: in backticks, a backtick doubled.
    package static func mysqlIdentifier(_ name: String) -> String {
        "`" + name.replacing("`", with: "``") + "`"
    }

    /// A MySQL string literal for the default SQL mode (backslash escapes on), escaping what
    /// `mysql_real_escape_string` escapes. A connection's own ``DatabaseConnection/quoteLiteral(_:)``
    /// also knows whether the server has `NO_BACKSLASH_ESCAPES` set; prefer it when one is at hand.
    package static func mysqlLiteral(_ value: String) -> String {
        var out = "'"
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\0": out += "\\0"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\\": out += "\\\\"
            case "'": out += "\\'"
            case "\"": out += "\\\""
            case "\u{1A}": out += "\\Z"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "'"
    }
}

/// Vault's handling of the statement lists (`creation_statements`, `revocation_statements`, ...).
package enum SQLStatements {
    /// The statements one element of a statement list stands for, as Vault runs them: an element in
    /// which the keyword `END` appears outside quotes (a `DO $$ BEGIN ... END $$` block, a function
    /// body) is run whole; any other is split on `;` (also inside quotes, as Vault does) and each piece
    /// trimmed, empty pieces dropped.
    package static func split(_ element: String) -> [String] {
        let trimmed = element.trimmingSQLWhitespace()
        if trimmed.isEmpty { return [] }
        if containsEndKeyword(trimmed) { return [trimmed] }
        return trimmed.split(separator: ";", omittingEmptySubsequences: true).map { String($0).trimmingSQLWhitespace() }
            .filter { !$0.isEmpty }
    }

    /// Every element of `elements` split as ``split(_:)`` does, in order.
    package static func split(_ elements: [String]) -> [String] { elements.flatMap { split($0) } }

    /// Whether the word `END` (any case, not part of a longer word) occurs outside '...' and "..." quotes.
    static func containsEndKeyword(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var index = 0
        var quote: UInt8? = nil
        func isWord(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b >= 0x80
        }
        while index < bytes.count {
            let b = bytes[index]
            if let q = quote {
                if b == q { quote = nil }
                index += 1
                continue
            }
            if b == UInt8(ascii: "'") || b == UInt8(ascii: "\"") {
                quote = b
                index += 1
                continue
            }
            if index + 3 <= bytes.count, bytes[index] | 0x20 == UInt8(ascii: "e"),
                bytes[index + 1] | 0x20 == UInt8(ascii: "n"), bytes[index + 2] | 0x20 == UInt8(ascii: "d"),
                index == 0 || !isWord(bytes[index - 1]), index + 3 == bytes.count || !isWord(bytes[index + 3])
            {
                return true
            }
            index += 1
        }
        return false
    }
}

extension String {
    func trimmingSQLWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[first...last])
    }
}
