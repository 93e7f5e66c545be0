/// A finished mount move, as `sys/remount/status/<migration_id>` reports it.
struct RemountMigration: Sendable {
    let id: String
    let source: String
    let target: String
}

extension Core {
    /// How many finished moves `sys/remount/status/` remembers (in memory, as OpenBao does).
    static let remountHistoryLimit = 256

    /// `sys/remount` (POST `{from, to}`, sudo) and `sys/remount/status/<migration_id>`, with OpenBao's
    /// shapes. OpenBao queues the move and answers at once; Coffer's move is one write of the mount
    /// table, so it has finished when the answer comes and its status is always "success".
    func remountPath(_ request: Request) throws(CofferError) -> Response {
        if request.path == "sys/remount" {
            guard request.operation == .update || request.operation == .create else { throw unsupported(request) }
            let from = try request.data.string("from") ?? ""
            let to = try request.data.string("to") ?? ""
            guard !from.isEmpty, !to.isEmpty else {
                throw CofferError.invalid("both 'from' and 'to' path must be specified as a string")
            }
            let migration = try remount(from: from, to: to)
            var response = Response(data: ["migration_id": .string(migration.id)])
            response.repeatDataAtTopLevel = true
            response.warnings = [
                "Mount move has finished: \(migration.source) is now \(migration.target); "
                    + "sys/remount/status/\(migration.id) reports it"
            ]
            return response
        }
        if let id = request.path.dropPrefix("sys/remount/status/"), !id.isEmpty, !id.contains("/") {
            guard request.operation == .read else { throw unsupported(request) }
            guard let migration = remountMigrations.withLock({ $0.last { $0.id == id } }) else {
                throw CofferError(.notFound, "no mount move has this migration_id")
            }
            return Response(data: [
                "migration_id": .string(migration.id),
                "migration_info": [
                    "source_mount": .string(migration.source), "target_mount": .string(migration.target), "status": "success",
                ],
            ])
        }
        throw CofferError(.notFound, "unsupported path")
    }

    /// Moves the mount at `from` to `to`. It keeps its uuid, accessor, configuration and engine
    /// instance; its data lives under `logical/<uuid>/`, so nothing moves in storage and the move is
    /// one atomic write of the mount table. Policies naming the old path are not rewritten (as in
    /// Vault).
    func remount(from: String, to: String) throws(CofferError) -> RemountMigration {
        let source = try Core.mountPoint(from)
        let target = try Core.mountPoint(to)
        guard !RouteTable.reserved.contains(where: { source.hasPrefix($0) }) else {
            throw CofferError.invalid("cannot remount \"\(source)\"")
        }
        guard !RouteTable.reserved.contains(where: { target.hasPrefix($0) }) else {
            throw CofferError.invalid("cannot remount to destination \(target)")
        }
        let migration = RemountMigration(id: Random.uuid(), source: source, target: target)
        try lifecycle.withLock { (_) throws(CofferError) in
            var current = try mounts()
            guard let index = current.firstIndex(where: { $0.path == source }) else {
                throw CofferError.invalid("no matching mount at \"\(source)\"")
            }
            // The source counts too: a mount cannot move onto itself or inside itself.
            if let clash = current.first(where: { target.hasPrefix($0.path) || $0.path.hasPrefix(target) }) {
                throw CofferError.invalid("path already in use at \"\(clash.path)\"")
            }
            current[index].path = target
            let table = try buildTable(current)
            try persistMounts(current)
            routes.withLock { $0 = table }
        }
        remountMigrations.withLock { history in
            history.append(migration)
            if history.count > Core.remountHistoryLimit { history.removeFirst(history.count - Core.remountHistoryLimit) }
        }
        return migration
    }
}
