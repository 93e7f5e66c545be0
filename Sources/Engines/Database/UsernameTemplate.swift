package import CofferCore
import Synchronization

/// Vault's `username_template`: the part of Go's text/template that Vault's templates use.
///
/// Text outside `{{ }}` is copied. Inside, a pipeline: a first value, then `| function args...`
/// steps, each taking the value so far as its last argument. Values: `.RoleName`, `.DisplayName`,
/// a quoted string, a number, `(pipeline)`, or a function call: `random N` (N characters of
/// `[a-zA-Z0-9]`), `unix_time`, `unix_time_millis`, `uuid`, `printf "fmt" args...` (`%s`, `%d`),
/// `truncate N`, `truncate_sha256 N`, `lowercase`, `uppercase`, `replace "old" "new"`, `sha256`.
/// A template is parsed when the configuration is written, so a mistake is refused there.
package struct UsernameTemplate: Sendable {
    /// Vault's `postgresql-database-plugin` default: `v-token-ro-eZDiq2WcqZNlbSILNk7j-1796036063`.
    package static let postgresDefault =
        #"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#
    /// Vault's `mysql-database-plugin` default (MySQL user names hold 32 characters).
    package static let mysqlDefault =
        #"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 10) (.RoleName | truncate 10) (random 20) (unix_time) | truncate 32 }}"#

    indirect enum Node: Sendable {
        case text(String)
        case field(String)
        case string(String)
        case number(Int)
        case call(String, [Node])
    }

    let parts: [Node]

    package struct Values: Sendable {
        package var roleName: String
        package var displayName: String
        package var now: Timestamp

        package init(roleName: String, displayName: String, now: Timestamp) {
            self.roleName = roleName
            self.displayName = displayName
            self.now = now
        }
    }

    package init(_ text: String) throws(CofferError) {
        var parts: [Node] = []
        var rest = Substring(text)
        while let open = rest.firstRange(of: "{{") {
            if open.lowerBound > rest.startIndex { parts.append(.text(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].firstRange(of: "}}") else {
                throw CofferError.invalid("username_template: unclosed {{")
            }
            var tokens = try UsernameTemplate.tokenize(rest[open.upperBound..<close.lowerBound])
            parts.append(try UsernameTemplate.pipeline(&tokens))
            guard tokens.isEmpty else {
                throw CofferError.invalid("username_template: unexpected \"\(tokens[0])\"")
            }
            rest = rest[close.upperBound...]
        }
        if !rest.isEmpty { parts.append(.text(String(rest))) }
        self.parts = parts
        // Every function and field is checked once now.
        _ = try render(Values(roleName: "role", displayName: "token", now: .zero))
    }

    /// Templates parsed once per text (a handful per vault: one per connection's `username_template`).
    private static let cache = Mutex<[String: UsernameTemplate]>([:])

    /// The template for `text`, parsed on first use.
    package static func parsed(_ text: String) throws(CofferError) -> UsernameTemplate {
        if let cached = cache.withLock({ $0[text] }) { return cached }
        let template = try UsernameTemplate(text)
        cache.withLock { cache in
            if cache.count >= 256 { cache.removeAll() }
            cache[text] = template
        }
        return template
    }

    package func render(_ values: Values) throws(CofferError) -> String {
        var out = ""
        for part in parts { out += try UsernameTemplate.evaluate(part, values, piped: nil) }
        return out
    }

    // MARK: Parsing

    private static func tokenize(_ text: Substring) throws(CofferError) -> [String] {
        var tokens: [String] = []
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if c.isWhitespace {
                i = text.index(after: i)
            } else if c == "|" || c == "(" || c == ")" {
                tokens.append(String(c))
                i = text.index(after: i)
            } else if c == "\"" {
                var j = text.index(after: i)
                var value = "\""
                while j < text.endIndex, text[j] != "\"" {
                    if text[j] == "\\", text.index(after: j) < text.endIndex { j = text.index(after: j) }
                    value.append(text[j])
                    j = text.index(after: j)
                }
                guard j < text.endIndex else { throw CofferError.invalid("username_template: unclosed string") }
                tokens.append(value)
                i = text.index(after: j)
            } else {
                var j = i
                while j < text.endIndex, !text[j].isWhitespace, !"|()\"".contains(text[j]) { j = text.index(after: j) }
                tokens.append(String(text[i..<j]))
                i = j
            }
        }
        return tokens
    }

    private static func pipeline(_ tokens: inout [String]) throws(CofferError) -> Node {
        var node = try command(&tokens)
        while tokens.first == "|" {
            tokens.removeFirst()
            guard case .call(let name, let args) = try command(&tokens) else {
                throw CofferError.invalid("username_template: only a function can follow |")
            }
            node = .call(name, args + [node])
        }
        return node
    }

    private static func command(_ tokens: inout [String]) throws(CofferError) -> Node {
        guard let first = tokens.first else { throw CofferError.invalid("username_template: empty action") }
        let head = try operand(&tokens)
        guard case .call(let name, _) = head, !first.hasPrefix("(") else { return head }
        var args: [Node] = []
        while let next = tokens.first, next != "|", next != ")" { args.append(try operand(&tokens)) }
        return .call(name, args)
    }

    private static func operand(_ tokens: inout [String]) throws(CofferError) -> Node {
        let token = tokens.removeFirst()
        if token == "(" {
            let inner = try pipeline(&tokens)
            guard tokens.first == ")" else { throw CofferError.invalid("username_template: missing )") }
            tokens.removeFirst()
            return inner
        }
        if token.hasPrefix("\"") { return .string(String(token.dropFirst())) }
        if token.hasPrefix(".") { return .field(String(token.dropFirst())) }
        if let n = Int(token) { return .number(n) }
        guard functions.contains(token) else {
            throw CofferError.invalid("username_template: unknown function \"\(token)\"")
        }
        return .call(token, [])
    }

    static let functions: Set<String> = [
        "random", "unix_time", "unix_time_millis", "uuid", "printf", "truncate", "truncate_sha256", "lowercase",
        "uppercase", "replace", "sha256",
    ]

    // MARK: Evaluation

    private static func evaluate(_ node: Node, _ values: Values, piped: String?) throws(CofferError) -> String {
        switch node {
        case .text(let text), .string(let text): return text
        case .number(let n): return String(n)
        case .field(let name):
            switch name {
            case "RoleName": return values.roleName
            case "DisplayName": return values.displayName
            default: throw CofferError.invalid("username_template: unknown field .\(name)")
            }
        case .call(let name, let args):
            var evaluated: [String] = []
            for arg in args { evaluated.append(try evaluate(arg, values, piped: nil)) }
            return try call(name, evaluated, values)
        }
    }

    private static func call(_ name: String, _ args: [String], _ values: Values) throws(CofferError) -> String {
        func count(_ i: Int) throws(CofferError) -> Int {
            guard i < args.count, let n = Int(args[i]), n >= 0, n <= 1024 else {
                throw CofferError.invalid("username_template: \(name) needs a count from 0 to 1024")
            }
            return n
        }
        func arity(_ n: Int) throws(CofferError) {
            guard args.count == n else {
                throw CofferError.invalid("username_template: \(name) takes \(n) argument(s), got \(args.count)")
            }
        }
        switch name {
        case "random":
            try arity(1)
            return Random.base62(try count(0))
        case "unix_time":
            try arity(0)
            return String(values.now.seconds)
        case "unix_time_millis":
            try arity(0)
            return String(values.now.nanoseconds / 1_000_000)
        case "uuid":
            try arity(0)
            return Random.uuid()
        case "printf":
            guard let format = args.first else { throw CofferError.invalid("username_template: printf needs a format") }
            var out = ""
            var rest = args.dropFirst()
            var chars = Substring(format)
            while let c = chars.first {
                chars = chars.dropFirst()
                if c == "%", let verb = chars.first {
                    chars = chars.dropFirst()
                    if verb == "%" {
                        out.append("%")
                    } else {
                        guard let value = rest.first else {
                            throw CofferError.invalid("username_template: printf has more verbs than arguments")
                        }
                        rest = rest.dropFirst()
                        out += value
                    }
                } else {
                    out.append(c)
                }
            }
            return out
        case "truncate":
            try arity(2)
            return String(args[1].prefix(try count(0)))
        case "truncate_sha256":
            try arity(2)
            let n = try count(0)
            guard args[1].count > n else { return args[1] }
            let keep = max(0, n - 8)
            return String(args[1].prefix(keep))
                + String(Hex.encode(Digest.sha256(Array(args[1].utf8))).prefix(n - keep))
        case "lowercase":
            try arity(1)
            return args[0].lowercased()
        case "uppercase":
            try arity(1)
            return args[0].uppercased()
        case "replace":
            try arity(3)
            return args[2].split(separator: args[0], omittingEmptySubsequences: false).joined(separator: args[1])
        case "sha256":
            try arity(1)
            return Hex.encode(Digest.sha256(Array(args[0].utf8)))
        default:
            throw CofferError.invalid("username_template: unknown function \"\(name)\"")
        }
    }
}
