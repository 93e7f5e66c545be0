package import CofferAudit
package import CofferCore
package import CofferFramework

/// `sys/audit`, `sys/audit/<path>`, `sys/audit-hash/<path>`, `sys/audit-chain-key/<path>` and
/// `sys/audit-reload`.
extension SystemBackend {
    static let auditPaths: [Path<SystemBackend>] = [
        Path("audit", read: SystemBackend.listAuditDevices),
        Path("audit-reload", write: SystemBackend.reloadAuditDevices),
        Path("audit-hash/{path}", fields: [.string("input")], write: SystemBackend.auditHash),
        Path("audit-chain-key/{path}", read: SystemBackend.auditChainKey),
        Path(
            "audit/{path}",
            fields: [.string("type"), .string("description"), .object("options"), .bool("local")],
            write: SystemBackend.enableAuditDevice,
            delete: SystemBackend.disableAuditDevice
        ),
    ]

    func listAuditDevices(_ request: BackendRequest) throws(CofferError) -> Response {
        var listing: [String: JSONValue] = [:]
        for device in core.audit.current {
            listing[device.config.path] = [
                "type": .string(device.config.type), "description": .string(device.config.description),
                "options": .object(device.config.options.mapValues { .string($0) }),
                "local": .bool(device.config.local),
                "path": .string(device.config.path), "failures": .int(device.failures.count),
                "last_failure": .string(device.failures.last),
            ]
        }
        var r = Response(data: listing)
        r.repeatDataAtTopLevel = true
        return r
    }

    func reloadAuditDevices(_ request: BackendRequest) throws(CofferError) -> Response {
        try core.reopenAuditDevices()
        return .noContent
    }

    func auditHash(_ request: BackendRequest) throws(CofferError) -> Response {
        // OpenBao's words, which clients match.
        guard let input = request.fields.string("input"), !input.isEmpty else {
            throw CofferError.invalid(#"the "input" parameter is empty"#)
        }
        let device = try core.audit.device(try Core.devicePath(request.capture("path")))
        return Response(data: ["hash": .string(device.hash(input))])
    }

    func auditChainKey(_ request: BackendRequest) throws(CofferError) -> Response {
        let device = try core.audit.device(try Core.devicePath(request.capture("path")))
        return Response(data: ["key": .string(device.chainKey.withUnsafeBytes { Hex.encode($0) })])
    }

    func enableAuditDevice(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let name = try Core.devicePath(request.capture("path"))
        guard let type = f.string("type"), !type.isEmpty else {
            throw CofferError.invalid("type is required to enable an audit device")
        }
        var options: [String: String] = [:]
        for (key, value) in f.object("options") ?? [:] {
            guard
                let text = value.stringValue ?? (value.boolValue.map { $0 ? "true" : "false" })
                    ?? value.intValue.map({ String($0) })
            else { throw CofferError.invalid("audit option \(key) must be a string") }
            options[key] = text
        }
        try core.lifecycle.withLock { (_) throws(CofferError) in
            try core.audit.enable(
                AuditDeviceConfig(
                    path: name,
                    type: type,
                    description: f.string("description") ?? "",
                    options: options,
                    local: f.bool("local") ?? false
                )
            )
        }
        return .noContent
    }

    func disableAuditDevice(_ request: BackendRequest) throws(CofferError) -> Response {
        let name = try Core.devicePath(request.capture("path"))
        try core.lifecycle.withLock { (_) throws(CofferError) in try core.audit.disable(name) }
        return .noContent
    }
}

extension Core {
    static func devicePath(_ raw: String) throws(CofferError) -> String {
        let trimmed = raw.hasSuffix("/") ? String(raw.dropLast()) : raw
        guard !trimmed.isEmpty, !trimmed.contains("/") else {
            throw CofferError.invalid("an audit device path is one segment, like \"file\"")
        }
        return trimmed + "/"
    }

    /// Writes every queued audit record now (reads' records otherwise wait up to about a millisecond
    /// for the device's writer thread; docs/audit.md). Throws if a device cannot write.
    package func flushAudit() throws(CofferError) {
        for device in audit.current { try device.flush() }
    }

    /// Reopens every audit device's file or socket: call on SIGHUP after logrotate moved the files.
    package func reopenAuditDevices() throws(CofferError) {
        let failed = audit.reopen()
        guard failed.isEmpty else {
            throw CofferError(.auditFailed, "could not reopen audit devices: \(failed.joined(separator: "; "))")
        }
    }
}
