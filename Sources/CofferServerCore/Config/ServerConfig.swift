public import CofferCore
public import Logging

/// What `cofferd` runs with: read from an HCL file like Vault's (see docs/server.md), then
/// overridden by environment variables and command-line flags.
///
/// ```hcl
/// storage "sqlite" { path = "/var/lib/coffer/coffer.db" }
/// listener "tcp" {
///   address         = "127.0.0.1:8200"
///   tls_cert_file   = "/etc/coffer/tls.crt"
///   tls_key_file    = "/etc/coffer/tls.key"
///   tls_min_version = "tls12"
/// }
/// seal "shamir" {}
/// api_addr  = "https://coffer.example.com:8200"
/// log_level = "info"
/// ```
public struct ServerConfig: Sendable, Equatable {
    public enum Storage: Sendable, Equatable {
        case sqlite(path: String)
        case memory
        /// `storage "raft" { path, node_id, retry_join { leader_api_addr } }`: a node of a cluster.
        case raft(Raft)
    }

    /// `storage "raft"`: a node of a replicated cluster (docs/raft.md).
    public struct Raft: Sendable, Equatable {
        /// The node's directory (its replica and Raft log).
        public var path: String
        public var nodeID: String
        /// `retry_join { leader_api_addr = "..." }` blocks, in order.
        public var retryJoin: [String] = []
        /// `retry_join { ... non_voter = true }` or the top-level `non_voter`: a learner that never votes.
        public var nonVoter = false
        /// `tls_cert_file`, `tls_key_file`, `tls_ca_file`: mutual TLS between the nodes' Raft ports.
        public var tlsCertFile: String?
        public var tlsKeyFile: String?
        public var tlsCAFile: String?
        /// `retry_join { leader_ca_cert_file }`: the CA of the other nodes' `https://` API certificates, for
        /// joining and for the requests a standby sends on to the active node.
        public var leaderCACertFile: String?
        /// `retry_join { leader_client_cert_file, leader_client_key_file }`: the certificate and key this
        /// node presents to the others' APIs when they ask for one (mutual TLS), for the same requests.
        public var leaderClientCertFile: String?
        public var leaderClientKeyFile: String?

        public init(path: String, nodeID: String) {
            self.path = path
            self.nodeID = nodeID
        }
    }

    public enum LogFormat: String, Sendable, Equatable {
        case text, json
    }

    /// The one TCP listener.
    public struct Listener: Sendable, Equatable {
        /// `host:port`; the host is an IP address or `localhost`.
        public var address = "127.0.0.1:8200"
        /// Where the Raft transport listens (`cluster_address`, as in OpenBao); nil: the host and port of
        /// `cluster_addr`, which is what the other nodes are told to dial.
        public var clusterAddress: String?
        public var tlsDisable = false
        public var tlsCertFile: String?
        public var tlsKeyFile: String?
        /// Largest request body in bytes; larger requests get 413. Vault's default, 32 MiB.
        public var maxRequestSize = 32 << 20
        /// Seconds a client has to send a complete request head (Vault's default, 10 s).
        public var readHeaderTimeout: Int64 = 10
        /// Seconds a client has to send a whole request, body included (Vault's `http_read_timeout`, 30 s).
        public var readTimeout: Int64 = 30
        /// Seconds an idle keep-alive connection stays open (Vault's default, 5 min).
        public var idleTimeout: Int64 = 300
        /// Connections served at once; further clients wait in the accept backlog. A Coffer extension.
        public var maxConnections = 1024
        /// Connections one client IP address may hold open; one more is closed at once. A Coffer extension.
        public var maxConnectionsPerAddress = 128
        /// The oldest and newest TLS versions accepted (Vault's defaults: TLS 1.2 and TLS 1.3).
        public var tlsMinVersion = TLSVersion.tls12
        public var tlsMaxVersion = TLSVersion.tls13
        /// IANA code points of the TLS 1.2 (and older) cipher suites offered, in order; nil: the TLS
        /// library's default list (AEAD and CBC suites with ECDHE first). TLS 1.3 suites are always all on.
        public var tlsCipherSuites: [UInt16]?
        /// Require a client certificate signed by a CA in ``tlsClientCAFile`` in the TLS handshake.
        public var tlsRequireAndVerifyClientCert = false
        /// PEM file of the CA certificates that client certificates must chain to.
        public var tlsClientCAFile: String?
        /// Vault's switch to stop asking clients for certificates; Coffer asks only when it requires them.
        public var tlsDisableClientCerts = false
        /// `telemetry { unauthenticated_metrics_access = true }`: `GET /v1/sys/metrics` answers without a
        /// token on this listener, as in OpenBao (docs/metrics.md). `cofferd -dev` turns it on.
        public var unauthenticatedMetricsAccess = false

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

        /// A conflict between TLS settings, with the keys involved (the error is reported at the last of them).
        struct TLSConflict: Error {
            let message: String
            let keys: [String]
        }

        func validateTLS() throws(TLSConflict) {
            if tlsMinVersion > tlsMaxVersion {
                throw TLSConflict(
                    message:
                        "tls_min_version \"\(tlsMinVersion.rawValue)\" is newer than tls_max_version \"\(tlsMaxVersion.rawValue)\"",
                    keys: ["tls_min_version", "tls_max_version"]
                )
            }
            if let suites = tlsCipherSuites, suites.isEmpty, tlsMinVersion < .tls13 {
                throw TLSConflict(
                    message: "tls_cipher_suites names only TLS 1.3 suites, so no TLS 1.2 client could connect; "
                        + "name TLS 1.2 suites too, or set tls_min_version = \"tls13\"",
                    keys: ["tls_cipher_suites", "tls_min_version"]
                )
            }
            if tlsRequireAndVerifyClientCert && tlsDisableClientCerts {
                throw TLSConflict(
                    message: "tls_require_and_verify_client_cert and tls_disable_client_certs cannot both be true",
                    keys: ["tls_require_and_verify_client_cert", "tls_disable_client_certs"]
                )
            }
            if tlsRequireAndVerifyClientCert && (tlsClientCAFile ?? "").isEmpty {
                throw TLSConflict(
                    message: "tls_require_and_verify_client_cert = true needs tls_client_ca_file, the CA certificates "
                        + "that client certificates must chain to",
                    keys: ["tls_require_and_verify_client_cert", "tls_client_ca_file"]
                )
            }
            if tlsClientCAFile != nil && !tlsRequireAndVerifyClientCert {
                throw TLSConflict(
                    message: "tls_client_ca_file is used only with tls_require_and_verify_client_cert = true "
                        + "(Coffer has no cert auth method that would read client certificates otherwise)",
                    keys: ["tls_client_ca_file", "tls_require_and_verify_client_cert"]
                )
            }
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
    /// Where the other nodes of a cluster reach this one's Raft transport (`cluster_addr`, as in
    /// OpenBao; a scheme is allowed and ignored: Coffer's cluster transport is plain TCP for now).
    public var clusterAddr: String?
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .text
    /// `disable_cache = true`: no read cache in front of the storage file (Vault's key).
    public var disableCache = false
    /// The top-level `telemetry { ... }` stanza.
    public var telemetry = Telemetry()

    /// `telemetry { prometheus_retention_time = "24h"  disable_hostname = true }`: accepted so that
    /// OpenBao configurations start unchanged. Coffer always serves `sys/metrics?format=prometheus` and
    /// keeps every series for the life of the process, and never puts the host name into metric names
    /// (OpenBao 2.7.2 did not either, with or without disable_hostname), so neither changes what is
    /// served; docs/metrics.md says so.
    public struct Telemetry: Sendable, Equatable {
        /// Seconds; 0 when not given.
        public var prometheusRetentionTime: Int64 = 0
        public var disableHostname = false

        public init() {}
    }

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
                throw ConfigError(
                    "\"\(name)\" is given twice (first at line \(first)); Coffer supports one",
                    line: location.line
                )
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
                case "raft":
                    config.storage = .raft(try raft(body, line: location.line))
                case "memory", "inmem":
                    if let entry = body.first { throw unknown(entry, in: "storage \"\(type)\"", allowed: []) }
                    config.storage = .memory
                default:
                    throw ConfigError(
                        "unknown storage type \"\(type)\"; Coffer has \"sqlite\", \"raft\" and \"memory\"",
                        line: location.line
                    )
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
                    throw ConfigError(
                        "unknown seal type \"\(type)\"; Coffer has \"shamir\" and \"pkcs11\"",
                        line: location.line
                    )
                }
            case "api_addr":
                config.apiAddr = try string(item)
            case "cluster_addr":
                config.clusterAddr = try string(item)
            case "log_level":
                config.logLevel = try logLevel(try string(item), line: item.value.location.line)
            case "log_format":
                config.logFormat = try logFormat(try string(item), line: item.value.location.line)
            case "disable_mlock":
                _ = try bool(item)  // accepted for Vault configs; Coffer never swaps secrets out (see docs/server.md)
            case "disable_cache":
                config.disableCache = try bool(item)
            case "telemetry":
                config.telemetry = try telemetry(try stanza(item))
            default:
                throw unknown(
                    item,
                    in: "the configuration",
                    allowed: [
                        "storage", "listener", "seal", "api_addr", "cluster_addr", "log_level", "log_format",
                        "disable_mlock",
                        "disable_cache", "telemetry",
                    ]
                )
            }
        }
        return config
    }

    /// ``clusterAddr`` as host:port (without a scheme or path).
    public var clusterListenAddress: String? {
        guard var text = clusterAddr else { return nil }
        for scheme in ["http://", "https://", "tcp://"] where text.hasPrefix(scheme) {
            text = String(text.dropFirst(scheme.count))
        }
        return String(text.prefix { $0 != "/" })
    }

    static func raft(_ body: [HCLItem], line: Int) throws(ConfigError) -> Raft {
        var path: String?
        var nodeID: String?
        var joins: [String] = []
        var nonVoter = false
        var tls: (cert: String?, key: String?, ca: String?) = (nil, nil, nil)
        var leaderCA: String?
        var leaderClient: (cert: String?, key: String?) = (nil, nil)
        /// The same file in every retry_join, as for leader_ca_cert_file: one identity to reach any node.
        func sameInEvery(_ name: String, _ earlier: String?, _ field: HCLItem) throws(ConfigError) -> String {
            let file = try string(field)
            if let earlier, earlier != file {
                throw ConfigError(
                    "every retry_join names the same \(name); this one names \"\(file)\", an earlier one \"\(earlier)\"",
                    line: field.keys[0].location.line
                )
            }
            return file
        }
        for entry in body {
            switch try key(entry) {
            case "path": path = try string(entry)
            case "node_id": nodeID = try string(entry)
            case "retry_join":
                var leader: String?
                for field in try stanza(entry) {
                    switch try key(field) {
                    case "leader_api_addr": leader = try string(field)
                    case "non_voter": nonVoter = try bool(field)
                    case "leader_ca_cert_file": leaderCA = try sameInEvery("leader_ca_cert_file", leaderCA, field)
                    case "leader_client_cert_file":
                        leaderClient.cert = try sameInEvery("leader_client_cert_file", leaderClient.cert, field)
                    case "leader_client_key_file":
                        leaderClient.key = try sameInEvery("leader_client_key_file", leaderClient.key, field)
                    default:
                        throw unknown(
                            field,
                            in: "retry_join",
                            allowed: [
                                "leader_api_addr", "non_voter", "leader_ca_cert_file", "leader_client_cert_file",
                                "leader_client_key_file",
                            ]
                        )
                    }
                }
                if (leaderClient.cert == nil) != (leaderClient.key == nil) {
                    throw ConfigError(
                        "leader_client_cert_file and leader_client_key_file go together: the certificate this node "
                            + "presents to the others' APIs, and its private key",
                        line: entry.keys[0].location.line
                    )
                }
                guard let leader, leader.hasPrefix("http://") || leader.hasPrefix("https://") else {
                    throw ConfigError(
                        "retry_join needs leader_api_addr = \"http://host:port\" (another node's api_addr)",
                        line: entry.keys[0].location.line
                    )
                }
                joins.append(leader)
            case "non_voter": nonVoter = try bool(entry)
            case "tls_cert_file": tls.cert = try string(entry)
            case "tls_key_file": tls.key = try string(entry)
            case "tls_ca_file": tls.ca = try string(entry)
            default:
                throw unknown(
                    entry,
                    in: "storage \"raft\"",
                    allowed: [
                        "path", "node_id", "retry_join", "non_voter", "tls_cert_file", "tls_key_file", "tls_ca_file",
                    ]
                )
            }
        }
        guard let path, !path.isEmpty, let nodeID, !nodeID.isEmpty else {
            throw ConfigError(
                "storage \"raft\" needs path = \"/var/lib/coffer\" and node_id = \"<this node's name>\"",
                line: line
            )
        }
        var raft = Raft(path: path, nodeID: nodeID)
        raft.retryJoin = joins
        raft.nonVoter = nonVoter
        (raft.tlsCertFile, raft.tlsKeyFile, raft.tlsCAFile) = tls
        raft.leaderCACertFile = leaderCA
        raft.leaderClientCertFile = leaderClient.cert
        raft.leaderClientKeyFile = leaderClient.key
        return raft
    }

    static func listener(_ body: [HCLItem]) throws(ConfigError) -> Listener {
        var l = Listener()
        let allowed = [
            "address", "cluster_address", "tls_disable", "tls_cert_file", "tls_key_file", "tls_min_version",
            "tls_max_version",
            "tls_cipher_suites", "tls_require_and_verify_client_cert", "tls_client_ca_file", "tls_disable_client_certs",
            "max_request_size", "http_read_header_timeout", "http_read_timeout", "http_idle_timeout", "max_connections",
            "max_connections_per_address", "telemetry",
        ]
        var lines: [String: Int] = [:]
        for entry in body {
            let name = try key(entry)
            if let first = lines[name] {
                throw ConfigError(
                    "\"\(name)\" is given twice in listener \"tcp\" (first at line \(first))",
                    line: entry.keys[0].location.line
                )
            }
            lines[name] = entry.keys[0].location.line
            switch name {
            case "address": l.address = try string(entry)
            case "cluster_address": l.clusterAddress = try string(entry)
            case "tls_disable": l.tlsDisable = try bool(entry)
            case "tls_cert_file": l.tlsCertFile = try string(entry)
            case "tls_key_file": l.tlsKeyFile = try string(entry)
            case "tls_min_version": l.tlsMinVersion = try tlsVersion(entry)
            case "tls_max_version": l.tlsMaxVersion = try tlsVersion(entry)
            case "tls_cipher_suites":
                switch TLSCipherSuites.parse(try string(entry)) {
                case .success(let codes): l.tlsCipherSuites = codes
                case .failure(let error): throw ConfigError(error.message, line: entry.value.location.line)
                }
            case "tls_require_and_verify_client_cert": l.tlsRequireAndVerifyClientCert = try bool(entry)
            case "tls_client_ca_file": l.tlsClientCAFile = try string(entry)
            case "tls_disable_client_certs": l.tlsDisableClientCerts = try bool(entry)
            case "max_request_size": l.maxRequestSize = try positiveInt(entry)
            case "max_connections": l.maxConnections = try positiveInt(entry)
            case "max_connections_per_address": l.maxConnectionsPerAddress = try positiveInt(entry)
            case "http_read_header_timeout": l.readHeaderTimeout = try duration(entry)
            case "http_read_timeout": l.readTimeout = try duration(entry)
            case "http_idle_timeout": l.idleTimeout = try duration(entry)
            case "telemetry":
                for setting in try stanza(entry) {
                    switch try key(setting) {
                    case "unauthenticated_metrics_access": l.unauthenticatedMetricsAccess = try bool(setting)
                    default:
                        throw unknown(
                            setting,
                            in: "listener \"tcp\" telemetry",
                            allowed: ["unauthenticated_metrics_access"]
                        )
                    }
                }
            default: throw unknown(entry, in: "listener \"tcp\"", allowed: allowed)
            }
        }
        // Settings that only make sense together, reported at the line of the one that conflicts.
        do {
            try l.validateTLS()
        } catch {
            throw ConfigError(error.message, line: error.keys.compactMap { lines[$0] }.max())
        }
        return l
    }

    /// The top-level `telemetry` stanza's settings.
    static func telemetry(_ body: [HCLItem]) throws(ConfigError) -> Telemetry {
        var t = Telemetry()
        for entry in body {
            switch try key(entry) {
            case "prometheus_retention_time":
                var seconds: Int64?
                switch entry.value.kind {
                case .number(let n), .string(let n): seconds = VaultDuration.parse(n)
                default: seconds = nil
                }
                guard let seconds, seconds >= 0 else { throw mistyped(entry, "a duration such as \"24h\" or \"0\"") }
                t.prometheusRetentionTime = seconds
            case "disable_hostname": t.disableHostname = try bool(entry)
            default:
                throw unknown(entry, in: "telemetry", allowed: ["prometheus_retention_time", "disable_hostname"])
            }
        }
        return t
    }

    /// `"tls10"` ... `"tls13"`, Vault's spellings.
    static func tlsVersion(_ item: HCLItem) throws(ConfigError) -> TLSVersion {
        guard case .string(let text) = item.value.kind, let version = TLSVersion(rawValue: text) else {
            throw ConfigError(
                "\"\(item.keys[0].name)\" must be one of \"tls10\", \"tls11\", \"tls12\", \"tls13\"",
                line: item.value.location.line
            )
        }
        return version
    }

    /// Applies Vault's and OpenBao's server environment variables (`BAO_*` wins over `VAULT_*`).
    public mutating func applyEnvironment(_ environment: [String: String]) throws(ConfigError) {
        func value(_ name: String) -> String? {
            (environment["BAO_" + name] ?? environment["VAULT_" + name]).flatMap { $0.isEmpty ? nil : $0 }
        }
        if let v = value("API_ADDR") { apiAddr = v }
        if let v = value("CLUSTER_ADDR") { clusterAddr = v }
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

    /// Checks what only makes sense together: TLS files and settings, the address.
    public func validate() throws(ConfigError) {
        _ = try listener.hostAndPort()
        if case .raft = storage {
            guard apiAddr != nil, let cluster = clusterListenAddress, cluster.contains(":") else {
                throw ConfigError(
                    "storage \"raft\" needs api_addr = \"http://<this node>:8200\" (where other nodes send "
                        + "requests) and cluster_addr = \"<this node>:8201\" (its Raft port)"
                )
            }
        }
        if !listener.tlsDisable && (listener.tlsCertFile == nil || listener.tlsKeyFile == nil) {
            throw ConfigError(
                "listener \"tcp\" serves TLS unless tls_disable = true, so it needs tls_cert_file and tls_key_file"
            )
        }
        do {
            try listener.validateTLS()
        } catch {
            throw ConfigError(error.message)
        }
        // What the file parser already checks, again for configurations built in code.
        let timeouts = [
            ("http_read_header_timeout", listener.readHeaderTimeout), ("http_read_timeout", listener.readTimeout),
            ("http_idle_timeout", listener.idleTimeout),
        ]
        for (name, seconds) in timeouts where !(1...Self.maxTimeoutSeconds).contains(seconds) {
            throw ConfigError("\(name) must be from 1s to 8760h (a year)")
        }
        let counts = [
            ("max_request_size", listener.maxRequestSize), ("max_connections", listener.maxConnections),
            ("max_connections_per_address", listener.maxConnectionsPerAddress),
        ]
        for (name, value) in counts where value < 1 {
            throw ConfigError("\(name) must be a positive whole number")
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

    /// The body of a block without labels: `telemetry { ... }`.
    static func stanza(_ item: HCLItem) throws(ConfigError) -> [HCLItem] {
        let (name, location) = item.keys[0]
        guard item.keys.count == 1, case .object(let body) = item.value.kind else {
            throw ConfigError("\"\(name)\" is a block without labels: write \(name) { ... }", line: location.line)
        }
        return body
    }

    static func key(_ item: HCLItem) throws(ConfigError) -> String {
        guard item.keys.count == 1 else {
            throw ConfigError("\"\(item.keys[0].name)\" takes no labels here", line: item.keys[0].location.line)
        }
        return item.keys[0].name
    }

    static func unknown(_ item: HCLItem, in place: String, allowed: [String]) -> ConfigError {
        let list = allowed.isEmpty ? "it takes no settings" : "known: " + allowed.joined(separator: ", ")
        return ConfigError(
            "unknown key \"\(item.keys[0].name)\" in \(place) (\(list))",
            line: item.keys[0].location.line
        )
    }

    static func mistyped(_ item: HCLItem, _ expected: String) -> ConfigError {
        ConfigError(
            "\"\(item.keys[0].name)\" must be \(expected), not \(item.value.typeName)",
            line: item.value.location.line
        )
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

    /// The longest listener timeout: a year (longer ones would overflow NIO's nanosecond timers).
    static let maxTimeoutSeconds: Int64 = 365 * 24 * 3600

    /// `"10s"`, `"5m"` or a number of seconds, from 1 s to a year.
    static func duration(_ item: HCLItem) throws(ConfigError) -> Int64 {
        switch item.value.kind {
        case .number(let n), .string(let n):
            if let v = VaultDuration.parse(n), v > 0 {
                guard v <= maxTimeoutSeconds else {
                    throw ConfigError(
                        "\"\(item.keys[0].name)\" must be at most 8760h (a year)",
                        line: item.value.location.line
                    )
                }
                return v
            }
        default: break
        }
        throw mistyped(item, "a duration such as \"10s\" or \"5m\"")
    }
}
