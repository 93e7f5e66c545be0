/// `sys/audit`, `sys/audit/<path>`, `sys/audit-hash/<path>`, `sys/audit-chain-key/<path>` and
/// `sys/audit-reload`.
extension Core {
    func auditPath(_ request: Request) throws(CofferError) -> Response {
        let path = request.path
        let op = request.operation
        if path == "sys/audit" {
            guard op == .read else { throw unsupported(request) }
            var listing: [String: JSONValue] = [:]
            for device in audit.current {
                listing[device.config.path] = [
                    "type": .string(device.config.type), "description": .string(device.config.description),
                    "options": .object(device.config.options.mapValues { .string($0) }), "local": .bool(device.config.local),
                    "path": .string(device.config.path), "failures": .int(device.failures.count),
                    "last_failure": .string(device.failures.last),
                ]
            }
            var r = Response(data: listing)
            r.repeatDataAtTopLevel = true
            return r
        }
        if path == "sys/audit-reload" {
            guard op == .update || op == .create else { throw unsupported(request) }
            let failed = audit.reopen()
            guard failed.isEmpty else {
                throw CofferError(.auditFailed, "could not reopen audit devices: \(failed.joined(separator: "; "))")
            }
            return .noContent
        }
        if let name = path.dropPrefix("sys/audit-hash/") {
            guard op == .update || op == .create else { throw unsupported(request) }
            // OpenBao's words, which clients match.
            guard let input = try request.data.string("input"), !input.isEmpty else {
                throw CofferError.invalid(#"the "input" parameter is empty"#)
            }
            let device = try audit.device(try Core.devicePath(name))
            return Response(data: ["hash": .string(device.hash(input))])
        }
        if let name = path.dropPrefix("sys/audit-chain-key/") {
            guard op == .read else { throw unsupported(request) }
            let device = try audit.device(try Core.devicePath(name))
            return Response(data: ["key": .string(device.chainKey.withUnsafeBytes { Hex.encode($0) })])
        }
        let name = try Core.devicePath(path.dropPrefix("sys/audit/") ?? "")
        switch op {
        case .create, .update:
            guard let type = try request.data.string("type"), !type.isEmpty else {
                throw CofferError.invalid("type is required to enable an audit device")
            }
            var options: [String: String] = [:]
            for (key, value) in try request.data.object("options") ?? [:] {
                guard let text = value.stringValue ?? (value.boolValue.map { $0 ? "true" : "false" }) ?? value.intValue.map({ String($0) })
                else { throw CofferError.invalid("audit option \(key) must be a string") }
                options[key] = text
            }
            try lifecycle.withLock { (_) throws(CofferError) in
                try audit.enable(
                    AuditDeviceConfig(
                        path: name, type: type, description: try request.data.string("description") ?? "", options: options,
                        local: try request.data.bool("local") ?? false))
            }
            return .noContent
        case .delete:
            try lifecycle.withLock { (_) throws(CofferError) in try audit.disable(name) }
            return .noContent
        default:
            throw unsupported(request)
        }
    }

    static func devicePath(_ raw: String) throws(CofferError) -> String {
        let trimmed = raw.hasSuffix("/") ? String(raw.dropLast()) : raw
        guard !trimmed.isEmpty, !trimmed.contains("/") else {
            throw CofferError.invalid("an audit device path is one segment, like \"file\"")
        }
        return trimmed + "/"
    }

    /// Writes every queued audit record now (reads' records otherwise wait up to about a millisecond
    /// for the device's writer thread; docs/audit.md). Throws if a device cannot write.
    public func flushAudit() throws(CofferError) {
        for device in audit.current { try device.flush() }
    }

    /// Reopens every audit device's file or socket: call on SIGHUP after logrotate moved the files.
    public func reopenAuditDevices() throws(CofferError) {
        let failed = audit.reopen()
        guard failed.isEmpty else {
            throw CofferError(.auditFailed, "could not reopen audit devices: \(failed.joined(separator: "; "))")
        }
    }
}
