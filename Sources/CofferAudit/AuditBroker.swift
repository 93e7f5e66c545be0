public import CofferCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

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
            path: path,
            type: type,
            description: json["description"]?.stringValue ?? "",
            options: (json["options"]?.objectValue ?? [:]).compactMapValues(\.stringValue),
            local: json["local"]?.boolValue ?? false
        )
    }

    /// The options each type accepts; anything else is an error naming the option.
    static let knownOptions: [String: Set<String>] = [
        "file": ["file_path", "path", "log_raw", "hmac_accessor", "mode", "format", "prefix", "sync"],
        "socket": ["address", "socket_type", "log_raw", "hmac_accessor", "format", "prefix", "sync"],
        "syslog": ["facility", "tag", "socket_path", "log_raw", "hmac_accessor", "format", "prefix", "sync"],
    ]

    func makeSink() throws(CofferError) -> any AuditSink {
        guard let known = AuditDeviceConfig.knownOptions[type] else {
            throw CofferError.invalid("unknown audit device type; use file, socket or syslog")
        }
        if let unknown = options.keys.sorted().first(where: { !known.contains($0) }) {
            throw CofferError.invalid("unknown option \"\(unknown)\" for a \(type) audit device")
        }
        if options["prefix"] != nil {
            // Vault's CVE-2025-6000 (HCSEC-2025-14): a prefix lets an API caller choose the first bytes
            // of every line, and so write a script into a file (docs/threat-model.md).
            throw CofferError.invalid(
                "audit option prefix is not supported: it would let the caller choose the first bytes of every line"
            )
        }
        if let sync = options["sync"], AuditSync(rawValue: sync) == nil {
            throw CofferError.invalid("audit option sync must be \"writes\" or \"all\"")
        }
        if let format = options["format"], format != "json" {
            throw CofferError.invalid("audit option format must be \"json\" (the only format)")
        }
        switch type {
        case "file":
            guard let file = options["file_path"] ?? options["path"], !file.isEmpty else {
                throw CofferError.invalid("file_path is required for a file audit device")
            }
            let mode = try AuditFileMode(option: options["mode"])
            // As in Vault, these two names are not files, in any case.
            switch file.lowercased() {
            case "stdout": return StdoutAuditSink()
            case "discard": return DiscardAuditSink()
            default: return try FileAuditSink(path: file, mode: mode)
            }
        case "socket":
            return try SocketAuditSink(address: options["address"] ?? "", kind: options["socket_type"] ?? "tcp")
        default:
            return try SyslogAuditSink(
                socketPath: options["socket_path"] ?? "/dev/log",
                facility: options["facility"] ?? "AUTH",
                tag: options["tag"] ?? "coffer"
            )
        }
    }
}

/// Records every request to every enabled device: a request that can change state before it is
/// handled and its response before the answer is returned; a read's two records queued for the
/// device's writer thread unless the device's `sync` is "all" (docs/audit.md).
///
/// Fail closed: if devices are enabled and none records a request, the request is refused before
/// anything is done. One device failing while another records is counted (see `sys/audit`), not fatal.
package final class AuditBroker: Sendable {
    static let tablePath = "core/audit"
    static let saltPrefix = "core/audit-salt/"

    private let barrier: Barrier
    private let devices = Mutex<[AuditDevice]>([])
    /// Whether `devices` has any, readable without its lock: a request with no device to record it
    /// checks this, a load of a line no request writes, instead of taking the lock every core's requests
    /// would share. Set under the lock by every change (``change(_:)``).
    private let any = Atomic<Bool>(false)
    /// Devices taken out of service (sealing, disabling) that requests under way may still be writing
    /// their response records to; `load` lets them finish before it opens the same files again.
    private let retired = Mutex<[WeakAuditDevice]>([])

    private struct WeakAuditDevice: @unchecked Sendable {  // a weak reference is read and cleared atomically
        weak var device: AuditDevice?
    }

    package init(barrier: Barrier) {
        self.barrier = barrier
    }

    package var current: [AuditDevice] { devices.withLock { $0 } }

    /// No device is enabled (a request then has nothing to record).
    package var isEmpty: Bool { !any.load(ordering: .acquiring) }

    private func change<R>(_ body: (inout [AuditDevice]) -> R) -> R {
        devices.withLock { d in
            defer { any.store(!d.isEmpty, ordering: .releasing) }
            return body(&d)
        }
    }

    /// Opens every stored device. A device that cannot open is kept out and its error returned, so
    /// unsealing still succeeds and requests fail closed only if no device is left.
    @discardableResult
    package func load() throws(CofferError) -> [String] {
        waitForRetiredDevices()
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
                let problem = CofferError(
                    .auditFailed,
                    "audit device \(config.path) could not be opened: \(error.message)"
                )
                problems.append(problem.message)
                sink = BrokenSink(config: config, error: problem)
            }
            loaded.append(try AuditDevice(config: config, sink: sink, salt: SecureBytes(salt)))
        }
        let result = loaded
        change { $0 = result }
        return problems
    }

    /// Takes every device out of service (sealing, closing). Each closes its file once the requests
    /// under way have written their response records (`AuditDevice.retire`).
    package func unload() {
        let old = change { d in
            let old = d
            d = []
            return old
        }
        retire(old)
    }

    private func retire(_ old: [AuditDevice]) {
        for device in old { device.retire() }
        retired.withLock { r in
            r.removeAll { $0.device == nil }
            r.append(contentsOf: old.map { WeakAuditDevice(device: $0) })
        }
    }

    /// Waits (at most two seconds) until no retired device is still in use: a request that was under
    /// way when the vault sealed writes its response record to the old device, and a new device over
    /// the same file must read the file's end after that, or the two would fork the chain.
    private func waitForRetiredDevices() {
        for _ in 0..<2000 {
            let inUse = retired.withLock { r in
                r.removeAll { $0.device == nil }
                return !r.isEmpty
            }
            guard inUse else { return }
            usleep(1000)
        }
    }

    package func storedConfigs() throws(CofferError) -> [AuditDeviceConfig] {
        guard let bytes = try barrier.get(AuditBroker.tablePath) else { return [] }
        guard let array = (try? JSONValue.parse(bytes))?.arrayValue else {
            throw CofferError(.integrity, "the stored audit table (core/audit) is malformed")
        }
        var out: [AuditDeviceConfig] = []
        for item in array { out.append(try AuditDeviceConfig(json: item)) }
        return out
    }

    package func enable(_ config: AuditDeviceConfig) throws(CofferError) {
        let existing = try storedConfigs()
        guard !existing.contains(where: { $0.path == config.path }) else {
            throw CofferError.invalid("path already in use: an audit device is enabled at \(config.path)")
        }
        let salt = SecureBytes(randomCount: 32)
        // Opening the device first: a device that cannot write is refused, not enabled.
        let device = try AuditDevice(config: config, sink: try config.makeSink(), salt: salt)
        do {
            try barrier.batch([
                .put(
                    key: AuditBroker.tablePath,
                    value: JSONValue.array((existing + [config]).map(\.json)).serialized()
                ),
                .put(key: AuditBroker.saltPrefix + config.path, value: salt.unsafeCopy),
            ])
        } catch {
            device.close()
            throw error
        }
        change { $0.append(device) }
    }

    package func disable(_ path: String) throws(CofferError) {
        let existing = try storedConfigs()
        guard existing.contains(where: { $0.path == path }) else { return }
        try barrier.batch([
            .put(
                key: AuditBroker.tablePath,
                value: JSONValue.array(existing.filter { $0.path != path }.map(\.json)).serialized()
            ),
            .delete(key: AuditBroker.saltPrefix + path),
        ])
        let removed = change { d in
            let removed = d.filter { $0.config.path == path }
            d.removeAll { $0.config.path == path }
            return removed
        }
        // Not closed yet: the request that disabled it (and any other under way) still writes its
        // response record to it, and then it closes.
        retire(removed)
    }

    /// Reopens every device's file or socket (logrotate, SIGHUP). Returns the devices that failed.
    @discardableResult
    package func reopen() -> [String] {
        var failed: [String] = []
        for device in current {
            do { try device.sink.reopen() } catch { failed.append("\(device.config.path): \(error.message)") }
        }
        return failed
    }

    package func device(_ path: String) throws(CofferError) -> AuditDevice {
        guard let device = current.first(where: { $0.config.path == path }) else {
            // OpenBao's words, which clients match.
            throw CofferError.invalid("unknown audit backend \"\(path)\"")
        }
        return device
    }

    // MARK: Records

    /// Records `record`'s request before it is handled; throws if devices are enabled and none took
    /// it. A read on a device that queues reads is not written yet: its request record goes out with
    /// the response record. The ticket says where the response record goes (the same devices).
    package func logRequest(_ record: AuditRecord, devices: [AuditDevice]) throws(CofferError) -> AuditTicket {
        var ticket = AuditTicket(devices: devices)
        var recorded = 0
        var lastError: CofferError?
        for (index, device) in devices.enumerated() {
            if !record.changesState && index < 64 && device.queuesReads {
                ticket.deferred |= 1 << index
                recorded += 1
                continue
            }
            do {
                try device.write(record, .request)
                recorded += 1
            } catch {
                lastError = error
            }
        }
        if recorded == 0, !devices.isEmpty { barrier.meters.auditRequestFailure.increment() }
        try AuditBroker.check(
            recorded: recorded,
            of: devices,
            lastError,
            "no audit device could record the request, so it was not processed"
        )
        return ticket
    }

    /// Records `record`'s response (and its request, where that was deferred) before the answer is
    /// returned; a read's records are queued where the device allows it.
    package func logResponse(_ record: AuditRecord, _ ticket: AuditTicket) throws(CofferError) {
        var recorded = 0
        var lastError: CofferError?
        for (index, device) in ticket.devices.enumerated() {
            let phases = index < 64 && ticket.deferred & (1 << index) != 0 ? AuditPhases.both : .response
            if !record.changesState, device.enqueue(record, phases) {
                recorded += 1
                continue
            }
            do {
                try device.write(record, phases)
                recorded += 1
            } catch {
                lastError = error
            }
        }
        if recorded == 0, !ticket.devices.isEmpty { barrier.meters.auditResponseFailure.increment() }
        try AuditBroker.check(
            recorded: recorded,
            of: ticket.devices,
            lastError,
            "the request was processed but no audit device could record the response"
        )
    }

    /// Records a request refused before it was routed (a bad token): both lines, best effort.
    package func logRefused(_ record: AuditRecord) {
        let devices = current
        try? logResponse(record, AuditTicket(devices: devices, deferred: ~0))
    }

    /// Records what no request carries (a break-glass token's expiry, noticed by the expiration
    /// manager): both lines, best effort, as ``logRefused(_:)``.
    package func logInternal(_ record: AuditRecord) {
        try? logResponse(record, AuditTicket(devices: current, deferred: ~0))
    }

    /// Fail closed: with devices enabled, not one of them taking a record is an error.
    private static func check(
        recorded: Int,
        of devices: [AuditDevice],
        _ lastError: CofferError?,
        _ what: String
    ) throws(CofferError) {
        guard recorded == 0, !devices.isEmpty else { return }
        throw CofferError(.auditFailed, what + (lastError.map { ": \($0.message)" } ?? ""))
    }
}

/// The devices a request's records go to, taken once per request, and those that deferred its
/// request record to go out with the response record (a bit per device).
package struct AuditTicket {
    let devices: [AuditDevice]
    var deferred: UInt64 = 0
}

/// Stands in for a device that could not open at unseal: kept in the table (so `sys/audit` shows it
/// and a reload can revive it), but every write fails until it opens for real on `reopen`.
package final class BrokenSink: AuditSink {
    let config: AuditDeviceConfig
    let error: CofferError
    private let revived = Mutex<(any AuditSink)?>(nil)

    init(config: AuditDeviceConfig, error: CofferError) {
        self.config = config
        self.error = error
    }

    package func write(_ lines: [UInt8]) throws(CofferError) {
        guard let sink = revived.withLock({ $0 }) else { throw error }
        try sink.write(lines)
    }

    package func reopen() throws(CofferError) {
        let sink = try config.makeSink()
        revived.withLock { $0 = sink }
    }

    package func close() { revived.withLock { $0?.close() } }
    package func openingTail() -> AuditFileTail? { nil }
}
