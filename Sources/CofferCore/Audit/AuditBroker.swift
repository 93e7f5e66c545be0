import Synchronization

/// An enabled audit device as stored in `core/audit` (its salt is kept apart, at `core/audit-salt/<path>`).
public struct AuditDeviceConfig: Sendable, Equatable {
    /// The device's path with a trailing slash, e.g. "file/".
    public var path: String
    /// "file", "socket" or "syslog".
    public var type: String
    public var description: String
    public var options: [String: String]
    public var local: Bool

    var json: JSONValue {
        [
            "path": .string(path), "type": .string(type), "description": .string(description),
            "options": .object(options.mapValues { .string($0) }), "local": .bool(local),
        ]
    }

    init(path: String, type: String, description: String, options: [String: String], local: Bool) {
        self.path = path
        self.type = type
        self.description = description
        self.options = options
        self.local = local
    }

    init(json: JSONValue) throws(CofferError) {
        guard let path = json["path"]?.stringValue, let type = json["type"]?.stringValue else {
            throw CofferError(.integrity, "the stored audit table (core/audit) is malformed")
        }
        self.init(
            path: path, type: type, description: json["description"]?.stringValue ?? "",
            options: (json["options"]?.objectValue ?? [:]).compactMapValues(\.stringValue), local: json["local"]?.boolValue ?? false)
    }

    /// The options each type accepts; anything else is an error naming the option.
    static let knownOptions: [String: Set<String>] = [
        "file": ["file_path", "path", "log_raw", "hmac_accessor", "mode", "format", "prefix"],
        "socket": ["address", "socket_type", "log_raw", "hmac_accessor", "format", "prefix"],
        "syslog": ["facility", "tag", "socket_path", "log_raw", "hmac_accessor", "format", "prefix"],
    ]

    func makeSink() throws(CofferError) -> any AuditSink {
        guard let known = AuditDeviceConfig.knownOptions[type] else {
            throw CofferError.invalid("unknown audit device type \"\(type)\"; use file, socket or syslog")
        }
        if let unknown = options.keys.sorted().first(where: { !known.contains($0) }) {
            throw CofferError.invalid("unknown option \"\(unknown)\" for a \(type) audit device")
        }
        if let format = options["format"], format != "json" {
            throw CofferError.invalid("audit format \"\(format)\" is not supported; only json")
        }
        switch type {
        case "file":
            guard let file = options["file_path"] ?? options["path"], !file.isEmpty else {
                throw CofferError.invalid("file_path is required for a file audit device")
            }
            return try FileAuditSink(path: file)
        case "socket":
            return try SocketAuditSink(address: options["address"] ?? "", kind: options["socket_type"] ?? "tcp")
        default:
            return try SyslogAuditSink(
                socketPath: options["socket_path"] ?? "/dev/log", facility: options["facility"] ?? "AUTH",
                tag: options["tag"] ?? "coffer")
        }
    }
}

/// One live device: its sink, its keys and the state of its hash chain.
final class AuditDevice: Sendable {
    let config: AuditDeviceConfig
    let sink: any AuditSink
    /// Keys the `hmac-sha256:` hashes of strings (the device's salt).
    let hashKey: HMACKey
    /// Keys the MAC that chains records together (derived from the salt).
    let chainKey: SecureBytes
    let chainMAC: HMACKey
    let logRaw: Bool
    private let chain = Mutex<(seq: Int, prev: String)>((0, ""))
    private let failureCount = Mutex(0)

    init(config: AuditDeviceConfig, sink: any AuditSink, salt: SecureBytes) throws(CofferError) {
        self.config = config
        self.sink = sink
        self.hashKey = HMACKey(salt)
        self.chainKey = try AuditChain.chainKey(salt: salt)
        self.chainMAC = HMACKey(chainKey)
        self.logRaw = ["true", "1"].contains(config.options["log_raw"]?.lowercased() ?? "")
        if let line = sink.lastLine(), let record = AuditChain.split(line),
            let seq = (try? JSONValue.parse(record.body))?["seq"]?.intValue
        {
            chain.withLock { $0 = (seq, record.mac) }
        }
    }

    var failures: Int { failureCount.withLock { $0 } }

    /// `hmac-sha256:<hex>` of a string under this device's salt.
    func hash(_ value: String) -> String {
        "hmac-sha256:" + Hex.encode(hashKey.mac(value))
    }

    /// Every string in `value`, recursively, replaced by its hash (unless `log_raw`).
    func hashStrings(_ value: JSONValue) -> JSONValue {
        if logRaw { return value }
        switch value {
        case .string(let s): return .string(hash(s))
        case .array(let items): return .array(items.map(hashStrings))
        case .object(let object): return .object(object.mapValues(hashStrings))
        default: return value
        }
    }

    func hashed(_ value: String?) -> JSONValue {
        guard let value, !value.isEmpty else { return "" }
        return logRaw ? .string(value) : .string(hash(value))
    }

    /// Appends `record` to the chain and writes it. The chain advances only when the write succeeds.
    func write(_ record: [String: JSONValue]) throws(CofferError) {
        do {
            try chain.withLock { (state) throws(CofferError) in
                var body = record
                body["seq"] = .int(state.seq + 1)
                body["prev_mac"] = .string(state.prev)
                let line = AuditChain.seal(body: JSONValue.object(body).serialized(), key: chainMAC)
                try sink.write(line.bytes)
                state = (state.seq + 1, line.mac)
            }
        } catch {
            failureCount.withLock { $0 += 1 }
            throw error
        }
    }
}

/// Records every request before it is handled and its response after, to every enabled device.
///
/// Fail closed: if devices are enabled and none records a request, the request is refused before
/// anything is done. One device failing while another records is counted (see `sys/audit`), not fatal.
final class AuditBroker: Sendable {
    static let tablePath = "core/audit"
    static let saltPrefix = "core/audit-salt/"

    private let barrier: Barrier
    private let devices = Mutex<[AuditDevice]>([])

    init(barrier: Barrier) {
        self.barrier = barrier
    }

    var current: [AuditDevice] { devices.withLock { $0 } }

    /// Opens every stored device. A device that cannot open is kept out and its error returned, so
    /// unsealing still succeeds and requests fail closed only if no device is left.
    @discardableResult
    func load() throws(CofferError) -> [String] {
        var loaded: [AuditDevice] = []
        var problems: [String] = []
        for config in try storedConfigs() {
            guard let salt = try barrier.get(AuditBroker.saltPrefix + config.path) else {
                problems.append("audit device \(config.path) has no salt in storage")
                continue
            }
            let sink: any AuditSink
            do {
                sink = try config.makeSink()
            } catch {
                problems.append("audit device \(config.path) could not be opened: \(error.message)")
                sink = BrokenSink(config: config, error: error)
            }
            loaded.append(try AuditDevice(config: config, sink: sink, salt: SecureBytes(salt)))
        }
        let result = loaded
        devices.withLock { $0 = result }
        return problems
    }

    func unload() {
        let old = devices.withLock { d in
            let old = d
            d = []
            return old
        }
        for device in old { device.sink.close() }
    }

    func storedConfigs() throws(CofferError) -> [AuditDeviceConfig] {
        guard let bytes = try barrier.get(AuditBroker.tablePath) else { return [] }
        guard let array = (try? JSONValue.parse(bytes))?.arrayValue else {
            throw CofferError(.integrity, "the stored audit table (core/audit) is malformed")
        }
        var out: [AuditDeviceConfig] = []
        for item in array { out.append(try AuditDeviceConfig(json: item)) }
        return out
    }

    func enable(_ config: AuditDeviceConfig) throws(CofferError) {
        let existing = try storedConfigs()
        guard !existing.contains(where: { $0.path == config.path }) else {
            throw CofferError.invalid("path already in use: an audit device is enabled at \(config.path)")
        }
        let salt = SecureBytes(randomCount: 32)
        // Opening the device first: a device that cannot write is refused, not enabled.
        let device = try AuditDevice(config: config, sink: try config.makeSink(), salt: salt)
        do {
            try barrier.batch([
                .put(key: AuditBroker.tablePath, value: JSONValue.array((existing + [config]).map(\.json)).serialized()),
                .put(key: AuditBroker.saltPrefix + config.path, value: salt.unsafeCopy),
            ])
        } catch {
            device.sink.close()
            throw error
        }
        devices.withLock { $0.append(device) }
    }

    func disable(_ path: String) throws(CofferError) {
        let existing = try storedConfigs()
        guard existing.contains(where: { $0.path == path }) else { return }
        try barrier.batch([
            .put(key: AuditBroker.tablePath, value: JSONValue.array(existing.filter { $0.path != path }.map(\.json)).serialized()),
            .delete(key: AuditBroker.saltPrefix + path),
        ])
        let removed = devices.withLock { d in
            let removed = d.filter { $0.config.path == path }
            d.removeAll { $0.config.path == path }
            return removed
        }
        for device in removed { device.sink.close() }
    }

    /// Reopens every device's file or socket (logrotate, SIGHUP). Returns the devices that failed.
    @discardableResult
    func reopen() -> [String] {
        var failed: [String] = []
        for device in current {
            do { try device.sink.reopen() } catch { failed.append("\(device.config.path): \(error.message)") }
        }
        return failed
    }

    func device(_ path: String) throws(CofferError) -> AuditDevice {
        guard let device = current.first(where: { $0.config.path == path }) else {
            throw CofferError.invalid("no audit device is enabled at \(path)")
        }
        return device
    }

    // MARK: Records

    /// Writes the request record; throws if devices are enabled and none recorded it.
    func logRequest(_ entry: AuditEntry) throws(CofferError) {
        try log(entry, response: nil, phase: "request")
    }

    func logResponse(_ entry: AuditEntry, response: Response?) throws(CofferError) {
        try log(entry, response: response, phase: "response")
    }

    private func log(_ entry: AuditEntry, response: Response?, phase: String) throws(CofferError) {
        let devices = current
        guard !devices.isEmpty else { return }
        var recorded = 0
        var lastError: CofferError?
        for device in devices {
            do {
                try device.write(entry.record(type: phase, response: response, device: device))
                recorded += 1
            } catch {
                lastError = error
            }
        }
        if recorded == 0 {
            let reason = lastError.map { ": \($0.message)" } ?? ""
            throw CofferError(
                .auditFailed,
                phase == "request"
                    ? "no audit device could record the request, so it was not processed\(reason)"
                    : "the request was processed but no audit device could record the response\(reason)")
        }
    }
}

/// Stands in for a device that could not open at unseal: kept in the table (so `sys/audit` shows it
/// and a reload can revive it), but every write fails until it opens for real on `reopen`.
final class BrokenSink: AuditSink {
    let config: AuditDeviceConfig
    let error: CofferError
    private let revived = Mutex<(any AuditSink)?>(nil)

    init(config: AuditDeviceConfig, error: CofferError) {
        self.config = config
        self.error = error
    }

    func write(_ line: [UInt8]) throws(CofferError) {
        guard let sink = revived.withLock({ $0 }) else { throw error }
        try sink.write(line)
    }

    func reopen() throws(CofferError) {
        let sink = try config.makeSink()
        revived.withLock { $0 = sink }
    }

    func close() { revived.withLock { $0?.close() } }
    func lastLine() -> [UInt8]? { nil }
}

/// What one request contributes to its audit records.
struct AuditEntry {
    let request: Request
    let caller: TokenEntry?
    let time: Timestamp
    var error: CofferError?
    var mountType: String = ""

    /// The record in the shape of Vault's audit log, hashed with `device`'s salt.
    func record(type: String, response: Response?, device: AuditDevice) -> [String: JSONValue] {
        var auth: [String: JSONValue] = [:]
        if let caller {
            auth = [
                "client_token": device.hashed(request.token), "accessor": device.hashed(caller.accessor),
                "display_name": .string(caller.displayName), "policies": .array(caller.policies.map { .string($0) }),
                "token_policies": .array(caller.policies.map { .string($0) }),
                "metadata": caller.meta.isEmpty ? .null : .object(caller.meta.mapValues { .string($0) }),
                "entity_id": "", "token_type": "service",
            ]
        }
        var requestBlock: [String: JSONValue] = [
            "id": .string(request.id), "operation": .string(request.operation.rawValue), "path": .string(request.path),
            "data": request.data.isEmpty ? .null : device.hashStrings(.object(request.data)),
            "remote_address": .string(request.clientAddress), "namespace": ["id": "root"],
            "client_token": device.hashed(request.token), "client_token_accessor": device.hashed(caller?.accessor),
            "mount_type": .string(mountType),
        ]
        if request.token == nil { requestBlock["client_token"] = "" }
        var record: [String: JSONValue] = [
            "type": .string(type), "time": .string(time.rfc3339), "auth": .object(auth), "request": .object(requestBlock),
            "error": .string(error?.message ?? ""),
        ]
        if type == "response" {
            var block: [String: JSONValue] = ["mount_type": .string(mountType)]
            if let response {
                if let raw = response.raw {
                    block["data"] = device.hashStrings(raw)
                } else if let data = response.data {
                    block["data"] = device.hashStrings(.object(data))
                }
                if let a = response.auth {
                    block["auth"] = [
                        "client_token": device.hashed(a.clientToken), "accessor": device.hashed(a.accessor),
                        "policies": .array(a.policies.map { .string($0) }), "token_policies": .array(a.tokenPolicies.map { .string($0) }),
                        "metadata": a.metadata.isEmpty ? .null : .object(a.metadata.mapValues { .string($0) }),
                        "lease_duration": .int(a.leaseDuration), "renewable": .bool(a.renewable), "num_uses": .int(a.numUses),
                        "token_type": "service",
                    ]
                }
                if !response.warnings.isEmpty { block["warnings"] = .array(response.warnings.map { .string($0) }) }
                block["status"] = .int(response.status)
            }
            record["response"] = .object(block)
        }
        return record
    }
}
