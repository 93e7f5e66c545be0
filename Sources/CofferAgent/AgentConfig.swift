// `cofferd agent`'s configuration: the subset of OpenBao agent's HCL that Coffer implements.
//
//   vault { address = "https://coffer.internal:8200"  ca_cert = "/etc/coffer/ca.pem" }
//   auto_auth {
//     method "approle" {
//       mount_path = "auth/approle"
//       config { role_id_file_path = "/etc/app/role-id"  secret_id_file_path = "/etc/app/secret-id" }
//     }
//     sink "file" { config { path = "/run/app/token"  mode = 0640 } }
//   }
//   api_proxy { use_auto_auth_token = true }
//   cache { default_ttl = "30s"  prefix_ttl = { "secret/data/app/" = "10s" }  stale_if_error = "24h" }
//   listener "tcp" { address = "127.0.0.1:8100"  tls_disable = true }
//
// `method "jwt"` takes `config { path = "/var/run/jwt"  role = "app" }`. Unknown blocks and keys are
// errors naming their line and what is known there.
import CofferCore
package import CofferServerCore

package struct AgentConfig: Sendable, Equatable {
    package enum AuthMethod: Sendable, Equatable {
        case appRole(mount: String, roleIDFile: String, secretIDFile: String, removeSecretIDFile: Bool)
        case jwt(mount: String, path: String, role: String)
    }

    package var upstream: String?
    package var caCertFile: String?
    package var namespace: String?
    package var autoAuth: AuthMethod?
    package var sinkFile: String?
    package var sinkMode: Int = 0o640
    package var useAutoAuthToken = true
    /// Seconds a cached KV read is served without asking the upstream.
    package var cacheTTL: Double = 30
    /// TTLs by path prefix (`secret/data/app/` → 10): the longest matching prefix wins, as in the
    /// library's ``RemoteConfiguration/CachePolicy``.
    package var prefixTTLs: [String: Double] = [:]
    /// Seconds a cached read may still be served while the upstream cannot be reached.
    package var staleIfError: Double = 86400
    package var maxEntries = 10000
    package var listenAddress = "127.0.0.1:8100"
    package var logLevel = "info"

    package init() {}

    /// A configuration error naming its line: the same type as cofferd's (`ConfigError`).
    package typealias Error = ConfigError

    package static func parse(_ text: String) throws(Error) -> AgentConfig {
        let items: [HCLItem]
        do {
            items = try HCLReader.parse(text)
        } catch {
            throw Error("\(error.message) (column \(error.column))", line: error.line)
        }
        var config = AgentConfig()
        var seen: [String: Int] = [:]
        for item in items {
            let (name, location) = item.keys[0]
            if let first = seen[name] {
                throw Error(
                    "\"\(name)\" is given twice (first at line \(first)); the agent takes one",
                    line: location.line
                )
            }
            seen[name] = location.line
            switch name {
            case "vault":
                for entry in try stanza(item) {
                    switch try key(entry) {
                    case "address": config.upstream = try string(entry)
                    case "ca_cert": config.caCertFile = try string(entry)
                    case "namespace": config.namespace = try string(entry)
                    default: throw unknown(entry, in: "vault", allowed: ["address", "ca_cert", "namespace"])
                    }
                }
            case "auto_auth":
                try autoAuth(try stanza(item), into: &config)
            case "api_proxy":
                for entry in try stanza(item) {
                    switch try key(entry) {
                    case "use_auto_auth_token": config.useAutoAuthToken = try autoAuthTokenSetting(entry)
                    default: throw unknown(entry, in: "api_proxy", allowed: ["use_auto_auth_token"])
                    }
                }
            case "cache":
                for entry in try stanza(item) {
                    switch try key(entry) {
                    case "use_auto_auth_token": config.useAutoAuthToken = try autoAuthTokenSetting(entry)
                    case "default_ttl": config.cacheTTL = try duration(entry, allowZero: true)
                    case "prefix_ttl":
                        guard case .object(let prefixes) = entry.value.kind else {
                            throw mistyped(entry, "an object such as { \"secret/data/app/\" = \"10s\" }")
                        }
                        for prefix in prefixes {
                            config.prefixTTLs[prefix.keys.map(\.name).joined(separator: " ")] = try duration(
                                prefix,
                                allowZero: true
                            )
                        }
                    case "stale_if_error": config.staleIfError = try duration(entry, allowZero: true)
                    case "max_entries": config.maxEntries = try positiveInt(entry, maximum: 1_000_000)
                    default:
                        throw unknown(
                            entry,
                            in: "cache",
                            allowed: [
                                "use_auto_auth_token", "default_ttl", "prefix_ttl", "stale_if_error", "max_entries",
                            ]
                        )
                    }
                }
            case "listener":
                guard item.keys.count == 2, case .object(let body) = item.value.kind else {
                    throw Error("\"listener\" is a block: write listener \"tcp\" { ... }", line: location.line)
                }
                guard item.keys[1].name == "tcp" else {
                    throw Error(
                        "unknown listener type \"\(item.keys[1].name)\"; the agent has \"tcp\"",
                        line: location.line
                    )
                }
                var tlsDisable = false
                for entry in body {
                    switch try key(entry) {
                    case "address": config.listenAddress = try string(entry)
                    case "tls_disable": tlsDisable = try bool(entry)
                    default: throw unknown(entry, in: "listener \"tcp\"", allowed: ["address", "tls_disable"])
                    }
                }
                guard tlsDisable else {
                    throw Error(
                        "the agent's listener is plain HTTP on loopback: set tls_disable = true (TLS on it is not implemented)",
                        line: location.line
                    )
                }
            case "log_level":
                config.logLevel = try string(item)
            case "pid_file", "exit_after_auth", "template", "template_config", "exec", "env_template":
                throw Error(
                    "\"\(name)\" is an OpenBao agent feature the Coffer agent does not have (use `coffer run` for templates and exec)",
                    line: location.line
                )
            default:
                throw unknown(
                    item,
                    in: "the agent configuration",
                    allowed: ["vault", "auto_auth", "api_proxy", "cache", "listener", "log_level"]
                )
            }
        }
        let (host, _) = try config.listenHostAndPort()
        guard ["127.0.0.1", "localhost", "::1"].contains(host) || host.hasPrefix("127.") else {
            throw Error(
                "the agent listens on loopback only (it lends its token to whoever connects): use 127.0.0.1:PORT, not \(host)"
            )
        }
        return config
    }

    package func listenHostAndPort() throws(Error) -> (String, Int) {
        var text = Substring(listenAddress)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { throw Error("listener address must be HOST:PORT, e.g. 127.0.0.1:8100") }
        text = text[..<colon]
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        return (String(text), port)
    }

    static func autoAuth(_ body: [HCLItem], into config: inout AgentConfig) throws(Error) {
        for entry in body {
            let (name, location) = entry.keys[0]
            switch name {
            case "method":
                guard config.autoAuth == nil else {
                    throw Error("auto_auth has one method in the Coffer agent", line: location.line)
                }
                guard entry.keys.count == 2, case .object(let methodBody) = entry.value.kind else {
                    throw Error("write method \"approle\" { ... } or method \"jwt\" { ... }", line: location.line)
                }
                let type = entry.keys[1].name
                guard type == "approle" || type == "jwt" else {
                    throw Error(
                        "unknown auto_auth method \"\(type)\"; the agent has \"approle\" and \"jwt\"",
                        line: location.line
                    )
                }
                var mount = "auth/\(type)"
                var settings: [String: String] = [:]
                var settingLines: [String: Int] = [:]
                let known =
                    type == "approle"
                    ? ["role_id_file_path", "secret_id_file_path", "remove_secret_id_file_after_reading"]
                    : ["path", "role"]
                for setting in methodBody {
                    switch try key(setting) {
                    case "mount_path": mount = try string(setting)
                    case "config":
                        guard case .object(let inner) = setting.value.kind else {
                            throw Error("\"config\" is a block: config { ... }", line: setting.keys[0].location.line)
                        }
                        for value in inner {
                            let valueName = try key(value)
                            guard known.contains(valueName) else {
                                throw unknown(value, in: "method \"\(type)\" config", allowed: known)
                            }
                            switch value.value.kind {
                            case .bool(let b): settings[valueName] = b ? "true" : "false"
                            default: settings[valueName] = try string(value)
                            }
                            settingLines[valueName] = value.keys[0].location.line
                        }
                    default: throw unknown(setting, in: "method \"\(type)\"", allowed: ["mount_path", "config"])
                    }
                }
                while mount.hasSuffix("/") { mount.removeLast() }
                if !mount.hasPrefix("auth/") { mount = "auth/" + mount }
                func require(_ key: String) throws(Error) -> String {
                    guard let value = settings[key], !value.isEmpty else {
                        throw Error("method \"\(type)\" needs config { \(key) = \"...\" }", line: location.line)
                    }
                    return value
                }
                if type == "approle" {
                    config.autoAuth = .appRole(
                        mount: mount,
                        roleIDFile: try require("role_id_file_path"),
                        secretIDFile: try require("secret_id_file_path"),
                        removeSecretIDFile: settings["remove_secret_id_file_after_reading"] == "true"
                    )
                } else {
                    config.autoAuth = .jwt(mount: mount, path: try require("path"), role: try require("role"))
                }
            case "sink":
                guard entry.keys.count == 2, entry.keys[1].name == "file", case .object(let sinkBody) = entry.value.kind
                else {
                    throw Error("the agent has sink \"file\" { config { path = \"...\" } }", line: location.line)
                }
                for setting in sinkBody {
                    switch try key(setting) {
                    case "config":
                        guard case .object(let inner) = setting.value.kind else {
                            throw Error("\"config\" is a block: config { ... }", line: setting.keys[0].location.line)
                        }
                        for value in inner {
                            switch try key(value) {
                            case "path": config.sinkFile = try string(value)
                            case "mode":
                                switch value.value.kind {
                                case .number(let n), .string(let n):
                                    // HCL numbers are decimal; Vault configs write 0640, meant as octal.
                                    guard let mode = Int(n, radix: 8), (0...0o777).contains(mode) else {
                                        throw Error(
                                            "sink mode must be octal such as 0640",
                                            line: value.keys[0].location.line
                                        )
                                    }
                                    config.sinkMode = mode
                                default: throw mistyped(value, "an octal mode such as 0640")
                                }
                            default: throw unknown(value, in: "sink \"file\" config", allowed: ["path", "mode"])
                            }
                        }
                    default: throw unknown(setting, in: "sink \"file\"", allowed: ["config"])
                    }
                }
                guard config.sinkFile?.isEmpty == false else {
                    throw Error("sink \"file\" needs config { path = \"...\" }", line: location.line)
                }
            default:
                throw unknown(entry, in: "auto_auth", allowed: ["method", "sink"])
            }
        }
        guard config.autoAuth != nil else { throw Error("auto_auth needs a method \"approle\" or \"jwt\"") }
    }

    // MARK: Reading items

    static func stanza(_ item: HCLItem) throws(Error) -> [HCLItem] {
        let (name, location) = item.keys[0]
        guard item.keys.count == 1, case .object(let body) = item.value.kind else {
            throw Error("\"\(name)\" is a block without labels: write \(name) { ... }", line: location.line)
        }
        return body
    }

    static func key(_ item: HCLItem) throws(Error) -> String {
        guard item.keys.count == 1 else {
            throw Error("\"\(item.keys[0].name)\" takes no labels here", line: item.keys[0].location.line)
        }
        return item.keys[0].name
    }

    static func unknown(_ item: HCLItem, in place: String, allowed: [String]) -> Error {
        Error(
            "unknown key \"\(item.keys[0].name)\" in \(place) (known: \(allowed.joined(separator: ", ")))",
            line: item.keys[0].location.line
        )
    }

    static func mistyped(_ item: HCLItem, _ expected: String) -> Error {
        Error(
            "\"\(item.keys[0].name)\" must be \(expected), not \(item.value.typeName)",
            line: item.value.location.line
        )
    }

    static func string(_ item: HCLItem) throws(Error) -> String {
        guard case .string(let s) = item.value.kind else { throw mistyped(item, "a string") }
        return s
    }

    static func bool(_ item: HCLItem) throws(Error) -> Bool {
        switch item.value.kind {
        case .bool(let b): return b
        case .string("true"), .string("1"), .number("1"): return true
        case .string("false"), .string("0"), .number("0"): return false
        default: throw mistyped(item, "true or false")
        }
    }

    /// OpenBao's `use_auto_auth_token`: true, false or "force" (which Coffer treats as true: the
    /// agent's token is used only when the client sends none).
    static func autoAuthTokenSetting(_ item: HCLItem) throws(Error) -> Bool {
        if case .string("force") = item.value.kind { return true }
        return try bool(item)
    }

    static func positiveInt(_ item: HCLItem, maximum: Int) throws(Error) -> Int {
        switch item.value.kind {
        case .number(let n), .string(let n):
            if let v = Int(n), v > 0, v <= maximum { return v }
        default: break
        }
        throw mistyped(item, "a whole number from 1 to \(maximum)")
    }

    /// "30s", "5m", "1h" or seconds; at most a year.
    static func duration(_ item: HCLItem, allowZero: Bool) throws(Error) -> Double {
        switch item.value.kind {
        case .number(let n), .string(let n):
            if let v = VaultDuration.parse(n), v >= (allowZero ? 0 : 1), v <= 365 * 86400 { return Double(v) }
        default: break
        }
        throw mistyped(item, "a duration such as \"30s\" or \"5m\" (at most a year)")
    }
}
