package import CofferCore

/// Where and as whom to connect: Vault's `connection_url` (with its `{{username}}` and `{{password}}`
/// templates) and the `username` and `password` given beside it.
///
/// The password is never written into a connection string. For PostgreSQL it goes to libpq as its
/// own `password` parameter (overriding the placeholder the template leaves in the URL); for MySQL the
/// URL is parsed with the templates still in it and the password handed to `mysql_real_connect`.
/// So no parser's or server's message can quote it back. As a second line of defence, ``redact(_:)``
/// (applied to every message the driver throws) replaces the password where it occurs, but only a
/// password of at least ``redactionMinimumLength`` bytes that is not part of the username: a short
/// password ("p") occurs by chance in ordinary text ("postgres"), and replacing it there (as OpenBao
/// does: `database=[password]ostgres`) mangles the message and points at the password's letters.
package struct DatabaseConnectionSettings: Sendable, CustomStringConvertible {
    package let plugin: DatabasePlugin
    package let username: String
    private let password: String
    /// Seconds a connection attempt may take (PostgreSQL `connect_timeout` when the URL has none; MySQL
    /// `timeout` when the URL has none).
    package let connectTimeoutSeconds: Int
    /// What ``connect()`` hands the client library (for tests; it holds the password).
    package let target: Target

    package enum Target: Sendable {
        /// libpq's PQconnectdbParams arguments (the connection string is the expanded `dbname`).
        case postgres(keywords: [String], values: [String])
        case mysql(MySQLDSN)
    }

    package static let redactionMinimumLength = 8

    /// Parses `connectionURL` for `plugin`; throws an invalid-argument error saying what is wrong with
    /// it (never quoting the password or the URL's credentials).
    package init(
        plugin: DatabasePlugin,
        connectionURL: String,
        username: String = "",
        password: String = "",
        connectTimeoutSeconds: Int = 5
    ) throws(CofferError) {
        self.plugin = plugin
        self.username = username
        self.password = password
        self.connectTimeoutSeconds = max(1, connectTimeoutSeconds)
        guard !connectionURL.isEmpty else { throw CofferError.invalid("connection_url is required") }
        guard !connectionURL.utf8.contains(0), !username.utf8.contains(0), !password.utf8.contains(0) else {
            throw CofferError.invalid("connection_url, username and password must not contain a NUL byte")
        }
        switch plugin {
        case .postgresql:
            target = DatabaseConnectionSettings.postgresTarget(
                connectionURL,
                username: username,
                password: password,
                timeout: self.connectTimeoutSeconds
            )
        case .mysql:
            var dsn = try MySQLDSN.parse(connectionURL)
            dsn.user = dsn.user.replacing("{{username}}", with: username)
            if dsn.password.contains("{{password}}") {
                dsn.password = dsn.password.replacing("{{password}}", with: password)
            }
            if dsn.connectTimeoutSeconds == nil { dsn.connectTimeoutSeconds = self.connectTimeoutSeconds }
            target = .mysql(dsn)
        }
    }

    /// Opens a connection (``DatabaseConnection``); throws `unavailable` with the server's or the
    /// library's reason when it cannot.
    package func connect() throws(CofferError) -> any DatabaseConnection {
        switch target {
        case .postgres(let keywords, let values):
            try PostgresConnection(keywords: keywords, values: values, settings: self)
        case .mysql(let dsn):
            try MySQLConnection(dsn: dsn, settings: self)
        }
    }

    /// `text` with the password replaced by `[redacted]` where it occurs (see the type's notes on
    /// short passwords).
    package func redact(_ text: String) -> String {
        guard password.utf8.count >= DatabaseConnectionSettings.redactionMinimumLength,
            !username.contains(password), text.contains(password)
        else { return text }
        return text.replacing(password, with: "[redacted]")
    }

    package var description: String {
        switch target {
        case .postgres: "\(plugin.name) connection as \"\(username)\""
        case .mysql(let dsn): "\(plugin.name) connection to \(dsn.addressDescription) as \"\(dsn.user)\""
        }
    }

    // MARK: PostgreSQL

    /// The connection string with `{{username}}` substituted (percent-encoded in a URI, quoted in a
    /// keyword string) and `{{password}}` replaced by a placeholder, and the real password as a later
    /// `password` parameter, which overrides the placeholder.
    static func postgresTarget(
        _ url: String,
        username: String,
        password: String,
        timeout: Int
    ) -> Target {
        let isURI = url.hasPrefix("postgresql://") || url.hasPrefix("postgres://")
        var conninfo = ""
        var rest = Substring(url)
        while let range = rest.firstRange(of: "{{username}}") {
            let before = rest[..<range.lowerBound]
            conninfo += before
            if isURI {
                conninfo += percentEncode(username)
            } else if before.last == "'" {
                conninfo += username.replacing("\\", with: "\\\\").replacing("'", with: "\\'")
            } else {
                conninfo += "'" + username.replacing("\\", with: "\\\\").replacing("'", with: "\\'") + "'"
            }
            rest = rest[range.upperBound...]
        }
        conninfo += rest
        let templated = conninfo.contains("{{password}}")
        conninfo = conninfo.replacing("{{password}}", with: "password-given-separately")
        var keywords: [String] = []
        var values: [String] = []
        if !conninfo.contains("connect_timeout") {
            keywords.append("connect_timeout")
            values.append(String(timeout))
        }
        keywords.append("dbname")
        values.append(conninfo)
        if templated {
            keywords.append("password")
            values.append(password)
        }
        return .postgres(keywords: keywords, values: values)
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters.
    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }
}

/// A MySQL connection URL in the Go driver's DSN form Vault uses:
/// `[user[:password]@][net[(address)]]/dbname[?param=value&...]`, e.g.
/// `{{username}}:{{password}}@tcp(127.0.0.1:3306)/` or `root:pw@unix(/run/mysqld/mysqld.sock)/app`.
package struct MySQLDSN: Sendable, Equatable {
    package enum Address: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    package var user: String
    package var password: String
    package var address: Address
    /// Empty for none.
    package var database: String
    package var connectTimeoutSeconds: Int?
    package var readTimeoutSeconds: Int?
    package var writeTimeoutSeconds: Int?
    /// The `charset` parameter's first name; utf8mb4 when absent.
    package var charset: String
    /// Parameters the Go driver sends as `SET name=value` after connecting (any it does not know).
    package var sessionVariables: [SessionVariable]

    package struct SessionVariable: Sendable, Equatable {
        package var name: String
        package var value: String
        package init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The parameters the Go driver knows and Coffer accepts without effect: they configure the Go
    /// side of the connection (time parsing, packet sizes, ...), which has no counterpart here.
    static let ignoredParameters: Set<String> = [
        "allowAllFiles", "allowCleartextPasswords", "allowFallbackToPlaintext", "allowNativePasswords",
        "allowOldPasswords", "checkConnLiveness", "clientFoundRows", "collation", "columnsWithAlias",
        "interpolateParams", "loc", "maxAllowedPacket", "multiStatements", "parseTime", "rejectReadOnly",
        "serverPubKey", "timeTruncate", "connectionAttributes",
    ]

    var addressDescription: String {
        switch address {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): path
        }
    }

    static func malformed(_ what: String) -> CofferError {
        CofferError.invalid(
            "connection_url is not a valid MySQL DSN: \(what) (the form is "
                + "{{username}}:{{password}}@tcp(host:port)/dbname?param=value)"
        )
    }

    /// Parses `dsn` as the Go MySQL driver does (the last `/` ends the address; the last `@` before it
    /// ends the credentials; the first `:` in those separates the password). Messages never quote the
    /// DSN's credentials.
    package static func parse(_ dsn: String) throws(CofferError) -> MySQLDSN {
        let bytes = Array(dsn.utf8)
        func text(_ from: Int, _ to: Int) -> String { String(decoding: bytes[from..<to], as: UTF8.self) }
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else {
            throw malformed("missing the slash separating the database name")
        }
        var user = ""
        var password = ""
        var net = ""
        var addressText = ""
        // [user[:password]@][net[(address)]]
        var netStart = 0
        if let at = bytes[..<slash].lastIndex(of: UInt8(ascii: "@")) {
            if let colon = bytes[..<at].firstIndex(of: UInt8(ascii: ":")) {
                user = text(0, colon)
                password = text(colon + 1, at)
            } else {
                user = text(0, at)
            }
            netStart = at + 1
        }
        if let open = bytes[netStart..<slash].firstIndex(of: UInt8(ascii: "(")) {
            guard slash > open + 1, bytes[slash - 1] == UInt8(ascii: ")") else {
                if bytes[(open + 1)..<slash].contains(UInt8(ascii: ")")) {
                    throw malformed("a parameter value has an unescaped slash (write it as %2F)")
                }
                throw malformed("the network address is not terminated (missing closing parenthesis)")
            }
            net = text(netStart, open)
            addressText = text(open + 1, slash - 1)
        } else {
            net = text(netStart, slash)
        }
        // dbname[?params]
        let query = bytes[(slash + 1)...].firstIndex(of: UInt8(ascii: "?"))
        let databaseText = text(slash + 1, query ?? bytes.count)
        guard let database = percentDecode(databaseText) else {
            throw malformed("the database name has an invalid percent-escape")
        }
        var result = MySQLDSN(
            user: user,
            password: password,
            address: .tcp(host: "127.0.0.1", port: 3306),
            database: database,
            connectTimeoutSeconds: nil,
            readTimeoutSeconds: nil,
            writeTimeoutSeconds: nil,
            charset: "utf8mb4",
            sessionVariables: []
        )
        switch net {
        case "", "tcp", "tcp4", "tcp6":
            result.address = try tcpAddress(addressText)
        case "unix":
            result.address = .unix(path: addressText.isEmpty ? "/tmp/mysql.sock" : addressText)
        default:
            throw malformed("unknown network \"\(net)\" (use tcp or unix)")
        }
        if let query { try result.apply(parameters: text(query + 1, bytes.count)) }
        return result
    }

    static func tcpAddress(_ text: String) throws(CofferError) -> Address {
        if text.isEmpty { return .tcp(host: "127.0.0.1", port: 3306) }
        var host = Substring(text)
        var portText: Substring? = nil
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                throw malformed("an IPv6 address in brackets is missing its closing bracket")
            }
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw malformed("unexpected text after the IPv6 address")
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard host.firstIndex(of: ":") == colon else {
                throw malformed("an IPv6 address must be in brackets: tcp([::1]:3306)")
            }
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        var port = 3306
        if let portText {
            guard let value = Int(portText), value > 0, value < 65536 else {
                throw malformed("the port must be a number from 1 to 65535")
            }
            port = value
        }
        guard !host.isEmpty else { throw malformed("the host is empty") }
        return .tcp(host: String(host), port: port)
    }

    mutating func apply(parameters: String) throws(CofferError) {
        for pair in parameters.split(separator: "&", omittingEmptySubsequences: true) {
            guard let equals = pair.firstIndex(of: "=") else {
                throw MySQLDSN.malformed("a parameter has no '=' (write param=value)")
            }
            let name = String(pair[..<equals])
            guard let value = MySQLDSN.percentDecode(String(pair[pair.index(after: equals)...])) else {
                throw MySQLDSN.malformed("the value of parameter \(name) has an invalid percent-escape")
            }
            switch name {
            case "timeout": connectTimeoutSeconds = try MySQLDSN.seconds(value, name)
            case "readTimeout": readTimeoutSeconds = try MySQLDSN.seconds(value, name)
            case "writeTimeout": writeTimeoutSeconds = try MySQLDSN.seconds(value, name)
            case "charset":
                let first = value.split(separator: ",").first.map(String.init) ?? ""
                guard !first.isEmpty, first.utf8.allSatisfy(MySQLDSN.isNameByte) else {
                    throw MySQLDSN.malformed("charset must name a character set")
                }
                charset = first
            case "tls":
                guard value == "false" else {
                    throw CofferError.invalid(
                        "connection_url parameter tls=\(value) is not supported: Coffer's MySQL connections do "
                            + "not use TLS yet; remove the parameter or set tls=false"
                    )
                }
            default:
                if MySQLDSN.ignoredParameters.contains(name) { continue }
                guard !name.isEmpty, name.utf8.allSatisfy(MySQLDSN.isNameByte) else {
                    throw MySQLDSN.malformed("a parameter name may hold only letters, digits and _")
                }
                sessionVariables.append(SessionVariable(name: name, value: value))
            }
        }
    }

    static func isNameByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F
    }

    static func seconds(_ value: String, _ name: String) throws(CofferError) -> Int {
        guard let seconds = VaultDuration.parse(value), !value.isEmpty else {
            throw malformed("\(name) must be a duration such as 5s or 1m")
        }
        return Int(max(1, seconds))
    }

    /// Percent-decoding (`+` is kept); nil for a malformed escape.
    static func percentDecode(_ text: String) -> String? {
        guard text.contains("%") else { return text }
        var out: [UInt8] = []
        var bytes = text.utf8.makeIterator()
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while let b = bytes.next() {
            if b == UInt8(ascii: "%") {
                guard let h = bytes.next().flatMap(hex), let l = bytes.next().flatMap(hex) else { return nil }
                out.append(h << 4 | l)
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }
}

extension MySQLDSN: CustomStringConvertible {
    /// The DSN without its password.
    package var description: String {
        let credentials = password.isEmpty ? user : user + ":[redacted]"
        let net =
            switch address {
            case .tcp: "tcp(\(addressDescription))"
            case .unix(let path): "unix(\(path))"
            }
        return "\(credentials)@\(net)/\(database)"
    }
}
