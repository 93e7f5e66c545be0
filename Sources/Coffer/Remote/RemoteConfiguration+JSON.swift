public import CofferCore

#if canImport(Glibc)
import Glibc
#endif

extension RemoteConfiguration {
    /// True when `json` is an object with a `"remote"` key: what `coffer_open` opens as a remote handle.
    public static func isRemote(json bytes: some Collection<UInt8>) -> Bool {
        guard case .object(let root)? = try? JSONValue.parse(bytes) else { return false }
        return root["remote"] != nil
    }

    /// Reads `{"remote": {...}}` (docs/delivery.md and include/coffer.h list every key):
    ///
    ///     {"remote": {"address": "https://coffer.internal:8200", "ca_file": "/etc/coffer/ca.pem",
    ///                 "namespace": "team", "timeout": 10,
    ///                 "auth": {"token": "..."} | {"approle": {"role_id", "secret_id", "mount"}}
    ///                       | {"jwt": {"role", "jwt", "mount"}},
    ///                 "cache": {"ttl": 300, "max_stale": 300, "max_bytes": 1048576, "events": true,
    ///                           "prefixes": {"secret/data/app/": 60}, "environment": "production",
    ///                           "environments": {"production": 300, "dev": 0}},
    ///                 "retry": {"attempts": 3, "initial_backoff": 0.05, "max_backoff": 2, "jitter": true},
    ///                 "fallback": {"env_file": ".env.production", "environment": true,
    ///                              "mapping": {"secret/data/app": {"password": "DB_PASSWORD"}}}}}
    ///
    /// Durations are seconds (a number) or a string with a unit ("250ms", "30s", "5m", "1h"). An
    /// unknown key, a wrong type or a bad value is an error naming the key, never a value.
    public init(json bytes: some Collection<UInt8>) throws(CofferError) {
        let parsed: JSONValue
        do {
            parsed = try JSONValue.parse(bytes)
        } catch {
            throw CofferError(.invalidArgument, "the configuration is not valid JSON: \(error)")
        }
        let root = try Keys(parsed, at: "")
        try root.allowOnly(["remote"])
        guard let remoteValue = root.fields["remote"] else {
            throw CofferError(.invalidArgument, "configuration key 'remote' is missing")
        }
        let remote = try Keys(remoteValue, at: "remote")
        try remote.allowOnly([
            "address", "ca_pem", "ca_file", "namespace", "timeout", "auth", "cache", "retry", "fallback",
        ])
        guard let address = try remote.string("address"), !address.isEmpty else {
            throw CofferError(.invalidArgument, "configuration key 'remote.address' is missing")
        }
        var caPEM = try remote.string("ca_pem")
        if let file = try remote.string("ca_file") {
            guard caPEM == nil else {
                throw CofferError(.invalidArgument, "configuration keys 'remote.ca_pem' and 'remote.ca_file': give one")
            }
            caPEM = try Keys.readText(file, key: "remote.ca_file")
        }
        guard let authValue = remote.fields["auth"] else {
            throw CofferError(
                .invalidArgument,
                "configuration key 'remote.auth' is missing; give {\"token\": ...}, {\"approle\": {...}} or {\"jwt\": {...}}"
            )
        }
        let authKeys = try Keys(authValue, at: "remote.auth")
        try authKeys.allowOnly(["token", "approle", "jwt"])
        guard authKeys.fields.count == 1 else {
            throw CofferError(
                .invalidArgument,
                "configuration key 'remote.auth' must have exactly one of token, approle, jwt"
            )
        }
        let auth: Auth
        if let token = try authKeys.string("token") {
            auth = .token(token)
        } else if let value = authKeys.fields["approle"] {
            let keys = try Keys(value, at: "remote.auth.approle")
            try keys.allowOnly(["role_id", "secret_id", "mount"])
            guard let roleID = try keys.string("role_id") else {
                throw CofferError(.invalidArgument, "configuration key 'remote.auth.approle.role_id' is missing")
            }
            auth = .appRole(
                roleID: roleID,
                secretID: try keys.string("secret_id") ?? "",
                mount: try keys.string("mount") ?? "approle"
            )
        } else {
            let keys = try Keys(authKeys.fields["jwt"] ?? .null, at: "remote.auth.jwt")
            try keys.allowOnly(["role", "jwt", "mount"])
            guard let jwt = try keys.string("jwt") else {
                throw CofferError(.invalidArgument, "configuration key 'remote.auth.jwt.jwt' is missing")
            }
            auth = .jwt(role: try keys.string("role") ?? "", jwt: jwt, mount: try keys.string("mount") ?? "jwt")
        }
        self.init(address: address, auth: auth, caPEM: caPEM, namespace: try remote.string("namespace") ?? "")
        if let timeout = try remote.seconds("timeout") { self.timeout = timeout }
        if let value = remote.fields["cache"] {
            let keys = try Keys(value, at: "remote.cache")
            try keys.allowOnly(["ttl", "max_stale", "max_bytes", "events", "prefixes", "environment", "environments"])
            if let ttl = try keys.seconds("ttl") { cache.defaultTTL = ttl }
            if let stale = try keys.seconds("max_stale") { cache.maxStale = stale }
            if let bytes = try keys.int("max_bytes") { cache.maxBytes = bytes }
            if let events = try keys.bool("events") { cache.invalidateOnEvents = events }
            cache.environment = try keys.string("environment")
            if let value = keys.fields["prefixes"] {
                let prefixes = try Keys(value, at: "remote.cache.prefixes")
                for name in prefixes.fields.keys { cache.ttlByPrefix[name] = try prefixes.seconds(name) }
            }
            if let value = keys.fields["environments"] {
                let environments = try Keys(value, at: "remote.cache.environments")
                for name in environments.fields.keys { cache.ttlByEnvironment[name] = try environments.seconds(name) }
            }
        }
        if let value = remote.fields["retry"] {
            let keys = try Keys(value, at: "remote.retry")
            try keys.allowOnly(["attempts", "initial_backoff", "max_backoff", "jitter"])
            if let attempts = try keys.int("attempts") { retry.attempts = attempts }
            if let initial = try keys.seconds("initial_backoff") { retry.initialBackoff = initial }
            if let maximum = try keys.seconds("max_backoff") { retry.maxBackoff = maximum }
            if let jitter = try keys.bool("jitter") { retry.jitter = jitter }
        }
        if let value = remote.fields["fallback"] {
            let keys = try Keys(value, at: "remote.fallback")
            try keys.allowOnly(["env_file", "environment", "mapping"])
            fallback.envFile = try keys.string("env_file")
            if let environment = try keys.bool("environment") { fallback.environment = environment }
            if let value = keys.fields["mapping"] {
                let mapping = try Keys(value, at: "remote.fallback.mapping")
                for (path, fieldsValue) in mapping.fields {
                    let fields = try Keys(fieldsValue, at: "remote.fallback.mapping.\(path)")
                    var names: [String: String] = [:]
                    for field in fields.fields.keys { names[field] = try fields.string(field) }
                    fallback.mapping[path] = names
                }
            }
        }
        try validate()
    }
}

/// One JSON object of a remote configuration, with its dotted path for errors.
private struct Keys {
    let fields: [String: JSONValue]
    let path: String

    init(_ value: JSONValue, at path: String) throws(CofferError) {
        guard case .object(let fields) = value else {
            let what = path.isEmpty ? "the configuration" : "configuration key '\(path)'"
            throw CofferError(.invalidArgument, "\(what) must be a JSON object, not \(value.typeName)")
        }
        self.fields = fields
        self.path = path
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func allowOnly(_ known: [String]) throws(CofferError) {
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw CofferError(
                .invalidArgument,
                "unknown configuration key '\(name(unknown))'; known keys here: \(known.joined(separator: ", "))"
            )
        }
    }

    func string(_ key: String) throws(CofferError) -> String? {
        guard let value = fields[key] else { return nil }
        guard case .string(let text) = value else {
            throw CofferError(
                .invalidArgument,
                "configuration key '\(name(key))' must be a string, not \(value.typeName)"
            )
        }
        return text
    }

    func bool(_ key: String) throws(CofferError) -> Bool? {
        guard let value = fields[key] else { return nil }
        guard case .bool(let flag) = value else {
            throw CofferError(
                .invalidArgument,
                "configuration key '\(name(key))' must be true or false, not \(value.typeName)"
            )
        }
        return flag
    }

    func int(_ key: String) throws(CofferError) -> Int? {
        guard let value = fields[key] else { return nil }
        guard let number = value.intValue else {
            throw CofferError(
                .invalidArgument,
                "configuration key '\(name(key))' must be an integer, not \(value.typeName)"
            )
        }
        return number
    }

    /// Seconds: a number, or a string with a unit (ms, s, m, h).
    func seconds(_ key: String) throws(CofferError) -> Double? {
        guard let value = fields[key] else { return nil }
        let bad = CofferError(
            .invalidArgument,
            "configuration key '\(name(key))' must be seconds (a number, or a string such as \"250ms\", \"30s\", \"5m\", \"1h\")"
        )
        var result: Double
        switch value {
        case .number:
            guard let number = value.doubleValue else { throw bad }
            result = number
        case .string(let text):
            let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
            guard let unit = units.first(where: { text.hasSuffix($0.0) }),
                let number = Double(text.dropLast(unit.0.count))
            else { throw bad }
            result = number * unit.1
        default: throw bad
        }
        guard result.isFinite, result >= 0 else { throw bad }
        return result
    }

    /// A small text file (a CA bundle).
    static func readText(_ path: String, key: String) throws(CofferError) -> String {
        guard let file = fopen(path, "rb") else {
            throw CofferError(.invalidArgument, "configuration key '\(key)': \(path) cannot be opened")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            guard bytes.count <= 1 << 20 else {
                throw CofferError(.invalidArgument, "configuration key '\(key)': \(path) is larger than 1 MiB")
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
