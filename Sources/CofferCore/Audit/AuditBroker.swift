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

    /// A device to enable; `path` is one segment ("file" or "file/").
    public init(path: String, type: String, description: String = "", options: [String: String], local: Bool = false) {
        self.path = path.hasSuffix("/") ? path : path + "/"
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
    /// Failed writes so far, and the last failure's message (no secrets: paths and errno texts).
    private let failureState = Mutex((count: 0, last: ""))

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

    var failures: (count: Int, last: String) { failureState.withLock { $0 } }

    /// `hmac-sha256:<hex>` of a string under this device's salt.
    func hash(_ value: String) -> String {
        var out: [UInt8] = []
        appendHash(value, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private func appendHash(_ value: String, to out: inout [UInt8]) {
        out.append(contentsOf: "hmac-sha256:".utf8)
        let mac = hashKey.mac(value)
        let digits: StaticString = "0123456789abcdef"
        for b in mac {
            out.append(digits.utf8Start[Int(b >> 4)])
            out.append(digits.utf8Start[Int(b & 0x0F)])
        }
    }

    /// Writes `value` as JSON with every string (recursively) replaced by its hash, unless `log_raw`.
    /// Written straight into the line: no intermediate values.
    func writeHashed(_ value: JSONValue, to out: inout [UInt8]) {
        if logRaw {
            value.write(to: &out)
            return
        }
        switch value {
        case .string(let s):
            out.append(UInt8(ascii: "\""))
            appendHash(s, to: &out)
            out.append(UInt8(ascii: "\""))
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeHashed(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            for (i, key) in object.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                writeHashed(object[key]!, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        default:
            value.write(to: &out)
        }
    }

    /// A token or accessor as it appears in a record: hashed, or "" when absent.
    func writeHashed(_ value: String?, to out: inout [UInt8]) {
        guard let value, !value.isEmpty else {
            out.append(contentsOf: #""""#.utf8)
            return
        }
        writeHashed(.string(value), to: &out)
    }

    /// Appends a record to the chain and writes it. `head` is the record's JSON from `{` up to the
    /// keys that sort before "prev_mac"; `middle` runs from "request" to before "seq"; `tail` from
    /// "time" to the closing `}`. The chain advances only when the write succeeds.
    func write(head: [UInt8], middle: [UInt8], tail: [UInt8]) throws(CofferError) {
        do {
            try chain.withLock { (state) throws(CofferError) in
                var body = head
                body.reserveCapacity(head.count + middle.count + tail.count + 160)
                body.append(contentsOf: #","prev_mac":""#.utf8)
                body.append(contentsOf: state.prev.utf8)
                body.append(UInt8(ascii: "\""))
                body.append(contentsOf: middle)
                body.append(contentsOf: #","seq":"#.utf8)
                body.append(contentsOf: String(state.seq + 1).utf8)
                body.append(contentsOf: tail)
                let line = AuditChain.seal(body: body, key: chainMAC)
                try sink.write(line.bytes)
                state = (state.seq + 1, line.mac)
            }
        } catch {
            failureState.withLock { $0 = ($0.count + 1, error.message) }
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
                try entry.write(phase: phase, response: response, device: device)
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

/// What one request contributes to its audit records, in the shape of Vault's audit log:
/// `{auth, error, prev_mac, request, response?, seq, time, type}` (keys in sorted order). A class so
/// that the hashed `auth` and `request` blocks written for the request record are reused, per
/// device, by the response record.
final class AuditEntry {
    let request: Request
    let caller: TokenEntry?
    let time: Timestamp
    var error: CofferError?
    var mountType: String = ""
    private var blocks: [ObjectIdentifier: (auth: [UInt8], request: [UInt8])] = [:]

    init(request: Request, caller: TokenEntry?, time: Timestamp) {
        self.request = request
        self.caller = caller
        self.time = time
    }

    private func hashedBlocks(_ device: AuditDevice) -> (auth: [UInt8], request: [UInt8]) {
        if let cached = blocks[ObjectIdentifier(device)] { return cached }
        var auth: [UInt8] = []
        auth.reserveCapacity(512)
        if let caller {
            auth.append(contentsOf: #"{"accessor":"#.utf8)
            device.writeHashed(caller.accessor, to: &auth)
            auth.append(contentsOf: #","client_token":"#.utf8)
            device.writeHashed(request.token, to: &auth)
            auth.append(contentsOf: #","display_name":"#.utf8)
            JSONValue.writeString(caller.displayName, to: &auth)
            auth.append(contentsOf: #","entity_id":"","metadata":"#.utf8)
            (caller.meta.isEmpty ? JSONValue.null : .object(caller.meta.mapValues { .string($0) })).write(to: &auth)
            let policies = JSONValue.array(caller.policies.map { .string($0) })
            auth.append(contentsOf: #","policies":"#.utf8)
            policies.write(to: &auth)
            auth.append(contentsOf: #","token_policies":"#.utf8)
            policies.write(to: &auth)
            auth.append(contentsOf: #","token_type":"service"}"#.utf8)
        } else {
            auth.append(contentsOf: "{}".utf8)
        }
        var block: [UInt8] = []
        block.reserveCapacity(512)
        block.append(contentsOf: #"{"client_token":"#.utf8)
        device.writeHashed(request.token, to: &block)
        block.append(contentsOf: #","client_token_accessor":"#.utf8)
        device.writeHashed(caller?.accessor, to: &block)
        block.append(contentsOf: #","data":"#.utf8)
        if request.data.isEmpty { block.append(contentsOf: "null".utf8) } else { device.writeHashed(.object(request.data), to: &block) }
        block.append(contentsOf: #","id":"#.utf8)
        JSONValue.writeString(request.id, to: &block)
        block.append(contentsOf: #","namespace":{"id":"root"},"operation":"#.utf8)
        JSONValue.writeString(request.operation.rawValue, to: &block)
        block.append(contentsOf: #","path":"#.utf8)
        JSONValue.writeString(request.path, to: &block)
        block.append(contentsOf: #","remote_address":"#.utf8)
        JSONValue.writeString(request.clientAddress, to: &block)
        block.append(UInt8(ascii: "}"))
        let result = (auth, block)
        blocks[ObjectIdentifier(device)] = result
        return result
    }

    /// Writes the `phase` ("request" or "response") record to `device`.
    func write(phase: String, response: Response?, device: AuditDevice) throws(CofferError) {
        let (auth, requestBlock) = hashedBlocks(device)
        var head = Array(#"{"auth":"#.utf8)
        head.append(contentsOf: auth)
        head.append(contentsOf: #","error":"#.utf8)
        JSONValue.writeString(error?.message ?? "", to: &head)

        var middle = Array(#","request":"#.utf8)
        middle.reserveCapacity(requestBlock.count + 512)
        middle.append(contentsOf: requestBlock)
        if phase == "response" {
            middle.append(contentsOf: #","response":{"#.utf8)
            if let response {
                if let a = response.auth {
                    middle.append(contentsOf: #""auth":{"accessor":"#.utf8)
                    device.writeHashed(a.accessor, to: &middle)
                    middle.append(contentsOf: #","client_token":"#.utf8)
                    device.writeHashed(a.clientToken, to: &middle)
                    middle.append(contentsOf: #","lease_duration":"#.utf8)
                    middle.append(contentsOf: String(a.leaseDuration).utf8)
                    middle.append(contentsOf: #","metadata":"#.utf8)
                    (a.metadata.isEmpty ? JSONValue.null : .object(a.metadata.mapValues { .string($0) })).write(to: &middle)
                    middle.append(contentsOf: #","num_uses":"#.utf8)
                    middle.append(contentsOf: String(a.numUses).utf8)
                    middle.append(contentsOf: #","policies":"#.utf8)
                    JSONValue.array(a.policies.map { .string($0) }).write(to: &middle)
                    middle.append(contentsOf: #","renewable":"#.utf8)
                    middle.append(contentsOf: (a.renewable ? "true" : "false").utf8)
                    middle.append(contentsOf: #","token_policies":"#.utf8)
                    JSONValue.array(a.tokenPolicies.map { .string($0) }).write(to: &middle)
                    middle.append(contentsOf: #","token_type":"service"},"#.utf8)
                }
                if let body = response.raw ?? response.data.map({ JSONValue.object($0) }) {
                    middle.append(contentsOf: #""data":"#.utf8)
                    device.writeHashed(body, to: &middle)
                    middle.append(UInt8(ascii: ","))
                }
            }
            middle.append(contentsOf: #""mount_type":"#.utf8)
            JSONValue.writeString(mountType, to: &middle)
            if let response {
                middle.append(contentsOf: #","status":"#.utf8)
                middle.append(contentsOf: String(response.status).utf8)
                if !response.warnings.isEmpty {
                    middle.append(contentsOf: #","warnings":"#.utf8)
                    JSONValue.array(response.warnings.map { .string($0) }).write(to: &middle)
                }
            }
            middle.append(UInt8(ascii: "}"))
        }

        var tail = Array(#","time":""#.utf8)
        tail.append(contentsOf: time.rfc3339.utf8)
        tail.append(contentsOf: #"","type":""#.utf8)
        tail.append(contentsOf: phase.utf8)
        tail.append(contentsOf: #""}"#.utf8)
        try device.write(head: head, middle: middle, tail: tail)
    }
}
