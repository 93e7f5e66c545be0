public import Logging
public import CofferCore

/// What `cofferd` runs with: read from an HCL file like Vault's (see docs/server.md), then
/// overridden by environment variables and command-line flags.
///
/// ```hcl
/// storage "sqlite" { path = "/var/lib/coffer/coffer.db" }
/// listener "tcp" {
///   address       = "127.0.0.1:8200"
///   tls_cert_file = "/etc/coffer/tls.crt"
///   tls_key_file  = "/etc/coffer/tls.key"
/// }
/// seal "shamir" {}
/// api_addr  = "https://coffer.example.com:8200"
/// log_level = "info"
/// ```
public struct ServerConfig: Sendable, Equatable {
    public enum Storage: Sendable, Equatable {
        case sqlite(path: String)
        case memory
    }

    public enum LogFormat: String, Sendable, Equatable {
        case text, json
    }

    /// The one TCP listener.
    public struct Listener: Sendable, Equatable {
        /// `host:port`; the host is an IP address or `localhost`.
        public var address = "127.0.0.1:8200"
        public var tlsDisable = false
        public var tlsCertFile: String?
        public var tlsKeyFile: String?
        /// Largest request body in bytes; larger requests get 413. Vault's default, 32 MiB.
        public var maxRequestSize = 32 << 20
        /// Seconds a client has to send a complete request head (Vault's default, 10 s).
        public var readHeaderTimeout: Int64 = 10
        /// Seconds an idle keep-alive connection stays open (Vault's default, 5 min).
        public var idleTimeout: Int64 = 300
        /// Connections served at once; further clients wait in the accept backlog. A Coffer extension.
        public var maxConnections = 1024

        public init() {}

        /// The host and port of `address`.
        public func hostAndPort() throws(ConfigError) -> (host: String, port: Int) {
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
                (0...65535).contains(port)
            else {
                throw ConfigError("listener address \"\(address)\" must be host:port, such as 127.0.0.1:8200")
            }
            var host = String(address[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            if host.isEmpty { host = "0.0.0.0" }
            return (host, port)
        }
    }

    public var storage: Storage = .memory
    public var listener = Listener()
    /// The seal type; only "shamir" is built in so far.
    public var seal = "shamir"
    /// The `seal "pkcs11" { ... }` block's fields with Vault's names (lib, token_label, key_label,
    /// ...), as `PKCS11Configuration(json:)` reads them, all but `pin`; nil for the Shamir seal.
    public var pkcs11Seal: JSONValue?
    /// The stanza's `pin`, kept apart from `pkcs11Seal` in memory zeroed on release, so that no
    /// String of the PIN lives as long as the configuration (the process).
    public var pkcs11PIN: SecureBytes?
    /// The address clients are told to use (`VAULT_API_ADDR` / `BAO_API_ADDR`). Informational.
    public var apiAddr: String?
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .text

    public init() {}
}

/// A configuration mistake, with the line where it is when it comes from the file.
public struct ConfigError: Error, Sendable, CustomStringConvertible, Equatable {
    public let message: String
    public let line: Int?

    public init(_ message: String, line: Int? = nil) {
        self.message = message
        self.line = line
    }

    public var description: String { line.map { "line \($0): \(message)" } ?? message }
}

extension ServerConfig {
    /// Reads the configuration file `text`. Unknown blocks and keys are errors naming their line.
    public static func parse(_ text: String) throws(ConfigError) -> ServerConfig {
        let items: [HCLItem]
        do {
            items = try HCLReader.parse(text)
        } catch {
            throw ConfigError("\(error.message) (column \(error.column))", line: error.line)
        }
        var config = ServerConfig()
        var seen: [String: Int] = [:]
        for item in items {
            let (name, location) = item.keys[0]
            if let first = seen[name] {
                throw ConfigError("\"\(name)\" is given twice (first at line \(first)); Coffer supports one", line: location.line)
            }
            seen[name] = location.line
            switch name {
            case "storage":
                let (type, body) = try block(item, labels: 1)
                switch type {
                case "sqlite":
                    var path: String?
                    for entry in body {
                        switch try key(entry) {
                        case "path": path = try string(entry)
                        default: throw unknown(entry, in: "storage \"sqlite\"", allowed: ["path"])
                        }
                    }
                    guard let path, !path.isEmpty else {
                        throw ConfigError("storage \"sqlite\" needs path = \"/path/to/coffer.db\"", line: location.line)
                    }
                    config.storage = .sqlite(path: path)
                case "memory", "inmem":
                    if let entry = body.first { throw unknown(entry, in: "storage \"\(type)\"", allowed: []) }
                    config.storage = .memory
                default:
                    throw ConfigError("unknown storage type \"\(type)\"; Coffer has \"sqlite\" and \"memory\"", line: location.line)
                }
            case "listener":
                let (type, body) = try block(item, labels: 1)
                guard type == "tcp" else {
                    throw ConfigError("unknown listener type \"\(type)\"; Coffer has \"tcp\"", line: location.line)
                }
                config.listener = try listener(body)
            case "seal":
                let (type, body) = try block(item, labels: 1)
                switch type {
                case "shamir":
                    if let entry = body.first { throw unknown(entry, in: "seal \"shamir\"", allowed: []) }
                    config.seal = "shamir"
                case "pkcs11":
                    var fields: [String: JSONValue] = [:]
                    for entry in body {
                        let name = try key(entry)
                        switch entry.value.kind {
                        case .string(let s) where name == "pin": config.pkcs11PIN = SecureBytes(s.utf8)
                        case .string(let s): fields[name] = .string(s)
                        case .number(let n): fields[name] = .number(n)
                        case .bool(let b): fields[name] = .bool(b)
                        default: throw mistyped(entry, "a string, number or boolean")
                        }
                    }
                    config.seal = "pkcs11"
                    config.pkcs11Seal = .object(fields)
                default:
                    throw ConfigError("unknown seal type \"\(type)\"; Coffer has \"shamir\" and \"pkcs11\"", line: location.line)
                }
            case "api_addr":
                config.apiAddr = try string(item)
            case "log_level":
                config.logLevel = try logLevel(try string(item), line: item.value.location.line)
            case "log_format":
                config.logFormat = try logFormat(try string(item), line: item.value.location.line)
            case "disable_mlock":
                _ = try bool(item)  // accepted for Vault configs; Coffer never swaps secrets out (see docs/server.md)
            default:
                throw unknown(
                    item, in: "the configuration",
                    allowed: ["storage", "listener", "seal", "api_addr", "log_level", "log_format", "disable_mlock"])
            }
        }
        return config
    }

    static func listener(_ body: [HCLItem]) throws(ConfigError) -> Listener {
        var l = Listener()
        let allowed = [
            "address", "tls_disable", "tls_cert_file", "tls_key_file", "max_request_size", "http_read_header_timeout",
            "http_idle_timeout", "max_connections",
        ]
        for entry in body {
            switch try key(entry) {
            case "address": l.address = try string(entry)
            case "tls_disable": l.tlsDisable = try bool(entry)
            case "tls_cert_file": l.tlsCertFile = try string(entry)
            case "tls_key_file": l.tlsKeyFile = try string(entry)
            case "max_request_size": l.maxRequestSize = try positiveInt(entry)
            case "max_connections": l.maxConnections = try positiveInt(entry)
            case "http_read_header_timeout": l.readHeaderTimeout = try duration(entry)
            case "http_idle_timeout": l.idleTimeout = try duration(entry)
            default: throw unknown(entry, in: "listener \"tcp\"", allowed: allowed)
            }
        }
        return l
    }

    /// Applies Vault's and OpenBao's server environment variables (`BAO_*` wins over `VAULT_*`).
    public mutating func applyEnvironment(_ environment: [String: String]) throws(ConfigError) {
        func value(_ name: String) -> String? {
            (environment["BAO_" + name] ?? environment["VAULT_" + name]).flatMap { $0.isEmpty ? nil : $0 }
        }
        if let v = value("API_ADDR") { apiAddr = v }
        if let v = value("LOG_LEVEL") { logLevel = try Self.logLevel(v, line: nil) }
        if let v = value("LOG_FORMAT") { logFormat = try Self.logFormat(v, line: nil) }
    }

    /// "trace", "debug", "info", "warn"/"warning", "error" (Vault's names).
    public static func logLevel(_ text: String, line: Int?) throws(ConfigError) -> Logger.Level {
        switch text.lowercased() {
        case "trace": .trace
        case "debug": .debug
        case "info", "": .info
        case "warn", "warning": .warning
        case "err", "error": .error
        default: throw ConfigError("log_level \"\(text)\" is not one of trace, debug, info, warn, error", line: line)
        }
    }

    /// "text" (also Vault's "standard") or "json".
    public static func logFormat(_ text: String, line: Int?) throws(ConfigError) -> LogFormat {
        switch text.lowercased() {
        case "text", "standard", "": .text
        case "json": .json
        default: throw ConfigError("log_format \"\(text)\" is not one of text, standard, json", line: line)
        }
    }

    /// Checks what only makes sense together: TLS files, the address.
    public func validate() throws(ConfigError) {
        _ = try listener.hostAndPort()
        if !listener.tlsDisable && (listener.tlsCertFile == nil || listener.tlsKeyFile == nil) {
            throw ConfigError(
                "listener \"tcp\" serves TLS unless tls_disable = true, so it needs tls_cert_file and tls_key_file")
        }
    }

    // MARK: Reading items

    static func block(_ item: HCLItem, labels: Int) throws(ConfigError) -> (label: String, body: [HCLItem]) {
        let (name, location) = item.keys[0]
        guard item.keys.count == labels + 1, case .object(let body) = item.value.kind else {
            throw ConfigError("\"\(name)\" is a block: write \(name) \"type\" { ... }", line: location.line)
        }
        return (item.keys[1].name, body)
    }

    static func key(_ item: HCLItem) throws(ConfigError) -> String {
        guard item.keys.count == 1 else {
            throw ConfigError("\"\(item.keys[0].name)\" takes no labels here", line: item.keys[0].location.line)
        }
        return item.keys[0].name
    }

    static func unknown(_ item: HCLItem, in place: String, allowed: [String]) -> ConfigError {
        let list = allowed.isEmpty ? "it takes no settings" : "known: " + allowed.joined(separator: ", ")
        return ConfigError("unknown key \"\(item.keys[0].name)\" in \(place) (\(list))", line: item.keys[0].location.line)
    }

    static func mistyped(_ item: HCLItem, _ expected: String) -> ConfigError {
        ConfigError(
            "\"\(item.keys[0].name)\" must be \(expected), not \(item.value.typeName)", line: item.value.location.line)
    }

    static func string(_ item: HCLItem) throws(ConfigError) -> String {
        guard item.keys.count == 1, case .string(let s) = item.value.kind else { throw mistyped(item, "a string") }
        return s
    }

    /// Vault accepts `true`, `"true"` and `1` alike.
    static func bool(_ item: HCLItem) throws(ConfigError) -> Bool {
        switch item.value.kind {
        case .bool(let b): return b
        case .string("true"), .string("1"), .number("1"): return true
        case .string("false"), .string("0"), .number("0"): return false
        default: throw mistyped(item, "true or false")
        }
    }

    static func positiveInt(_ item: HCLItem) throws(ConfigError) -> Int {
        switch item.value.kind {
        case .number(let n), .string(let n):
            if let v = Int(n), v > 0 { return v }
        default: break
        }
        throw mistyped(item, "a positive whole number")
    }

    /// `"10s"`, `"5m"` or a number of seconds.
    static func duration(_ item: HCLItem) throws(ConfigError) -> Int64 {
        switch item.value.kind {
        case .number(let n), .string(let n):
            if let v = Duration.parse(n), v > 0 { return v }
        default: break
        }
        throw mistyped(item, "a duration such as \"10s\" or \"5m\"")
    }
}
