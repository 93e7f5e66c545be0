package import CofferCore
package import CofferFramework
package import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Rotation of KV v2 secrets, a Coffer extension under the mount (docs/rotation.md):
///
/// | path | operations |
/// |---|---|
/// | `rotation/<path>` | write, read (policy and status), delete the policy |
/// | `rotate/<path>` | write: rotate now |
/// | `rotation-ack/<path>` | write `consumer`, `version`, `ok`: a consumer acknowledges (or rejects) a version |
/// | `rotation-rollback/<path>` | write: put the previous value back |
///
/// A run goes health check → generate → validate → write (check-and-set on the version read) →
/// post-write check → notify → wait for acks or the grace period → archive the old version, each
/// step recorded in `rotation/state/<path>` before it is taken, so a runner that stops mid-way is
/// resumed (or cleanly failed) by the next. The external steps run without any lock held.
extension KVv2Backend {
    /// Which secrets of which mount this process is rotating now (one runner at a time per secret),
    /// and which mounts' schedulers are running (one pass at a time per mount).
    static let rotationRunning = Mutex<Set<String>>([])
    /// A test seam: secret paths mapped to a point ("generating", "after-write", "waiting", ...) where
    /// the runner stops as if the process died there (its claim is left in storage).
    package static let stopForTests = Mutex<[String: String]>([:])
    static let stopMessage = "the runner stopped for a test at "

    static func stopIfAsked(_ key: String, _ point: String) throws(CofferError) {
        if stopForTests.withLock({ $0[key] == point }) { throw CofferError(.internal, stopMessage + point) }
    }

    /// Who this process is, in a persisted claim.
    static let runnerID = "pid \(getpid()) " + Hex.encode(Random.bytes(4))

    static func policyKey(_ key: String) -> String { "rotation/policy/" + escape(key) }
    static func stateKey(_ key: String) -> String { "rotation/state/" + escape(key) }

    /// One storage segment per secret path, so the scheduler lists them all with one list.
    static func escape(_ key: String) -> String {
        key.replacing("%", with: "%25").replacing("/", with: "%2F")
    }
    static func unescape(_ name: String) -> String {
        name.replacing("%2F", with: "/").replacing("%25", with: "%")
    }

    /// What a step needs besides the secret: where, who to tell, and when it is.
    struct RotationContext {
        var storage: StorageView
        var mount: MountEntry
        var system: (any SystemView)?
        var namespaceID: String
        var now: Timestamp

        var request: BackendRequest {
            var r = BackendRequest(
                operation: .update,
                path: "",
                fields: FieldData([:]),
                storage: storage,
                mount: mount,
                now: now
            )
            r.system = system
            r.namespaceID = namespaceID
            return r
        }
    }

    // MARK: paths

    func readRotation(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        guard let policy = try loadPolicy(request.storage, key) else { return .notFound }
        let state = try loadState(request.storage, key) ?? RotationState()
        var data = policy.json
        data["status"] = .object(state.status)
        return Response(data: data)
    }

    /// The secrets under the folder that have a policy, by their whole path below the folder (not one
    /// level at a time as `metadata/` lists), sorted.
    func listRotation(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = request.capture("path")
        let folder = key.isEmpty || key.hasSuffix("/") ? key : key + "/"
        let keys = try request.storage.list("rotation/policy/").filter { !$0.hasSuffix("/") }.map(Self.unescape)
            .filter { $0.hasPrefix(folder) }.map { String($0.dropFirst(folder.count)) }.sorted()
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func writeRotation(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        let policy = try RotationPolicy.from(request.fields, namespaceID: request.namespaceID)
        if case .cron(let cron)? = policy.schedule, cron.next(after: request.now) == nil {
            throw CofferError.invalid("schedule \"\(cron.text)\" matches no time in the next five years")
        }
        try request.storage.putJSON(Self.policyKey(key), .object(policy.stored))
        let ctx = context(request)
        _ = try updateState(ctx, key, create: true) { s in
            s.nextRun = policy.schedule?.next(after: request.now)
        }
        return .noContent
    }

    /// Removes the policy and its state; a run in progress stops where it is (versions are kept).
    func deleteRotation(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        try withKeyLock(Self.stateKey(key)) { () throws(CofferError) in
            try request.storage.batch([.delete(key: Self.policyKey(key)), .delete(key: Self.stateKey(key))])
        }
        return .noContent
    }

    func rotateNow(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        guard try loadPolicy(request.storage, key) != nil else {
            throw CofferError.invalid(
                "no rotation policy for \(request.mount.path)\(key); write \(request.mount.path)rotation/\(key) first"
            )
        }
        let state = try runRotation(context(request), key, start: "manual")
        return statusResponse(state)
    }

    func ackRotation(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        let f = request.fields
        guard let consumer = f.string("consumer"), !consumer.isEmpty, consumer.utf8.count <= 128 else {
            throw CofferError.invalid("consumer is required: the name of the consumer acknowledging (1 to 128 bytes)")
        }
        guard let version = f.int("version") else {
            throw CofferError.invalid("version is required: the version the consumer switched to")
        }
        let ok = f.bool("ok") ?? true
        guard let policy = try loadPolicy(request.storage, key) else {
            throw CofferError.invalid("no rotation policy for \(request.mount.path)\(key)")
        }
        if !policy.requiredAcks.isEmpty && !policy.requiredAcks.contains(consumer) {
            throw CofferError.invalid(
                "consumer \"\(consumer)\" is not in required_acks [\(policy.requiredAcks.joined(separator: ", "))]"
            )
        }
        let ctx = context(request)
        _ = try updateState(ctx, key) { (s) throws(CofferError) in
            guard s.phase == .waiting, s.newVersion == version else {
                let awaiting = s.phase == .waiting ? "version \(s.newVersion) is" : "no version is"
                throw CofferError.invalid(
                    "version \(version) of \(request.mount.path)\(key) is not awaiting acknowledgement (\(awaiting) awaiting it; the rotation is \(s.phase.rawValue))"
                )
            }
            s.acks[consumer] = ok
            if !ok && s.rollbackReason.isEmpty { s.rollbackReason = "consumer \"\(consumer)\" reported failure" }
        }
        return try runRecorded(ctx, key)
    }

    func rollbackRotation(_ request: BackendRequest) throws(CofferError) -> Response {
        let key = try Self.secretKey(request)
        guard try loadPolicy(request.storage, key) != nil else {
            throw CofferError.invalid("no rotation policy for \(request.mount.path)\(key)")
        }
        let ctx = context(request)
        _ = try updateState(ctx, key) { (s) throws(CofferError) in
            switch s.phase {
            case .waiting:
                s.rollbackReason = "manual rollback"
            case .idle:
                guard s.lastRun["outcome"]?.stringValue == "succeeded", let old = s.lastRun["old_version"]?.intValue,
                    let new = s.lastRun["new_version"]?.intValue
                else {
                    throw CofferError.invalid(
                        "nothing to roll back: the last rotation of \(request.mount.path)\(key) did not succeed"
                    )
                }
                s.phase = .rollingBack
                s.runID = s.lastRun["run_id"]?.stringValue ?? ""
                s.reason = "manual"
                s.started = ctx.now
                s.oldVersion = old
                s.newVersion = new
                s.acks = [:]
                s.graceUntil = nil
                s.rollbackReason = "manual rollback"
            default:
                throw CofferError(
                    .conflict,
                    "the rotation of \(request.mount.path)\(key) is \(s.phase.rawValue); roll back once it waits for acknowledgements or is done"
                )
            }
        }
        return try runRecorded(ctx, key)
    }

    /// Acts on what an ack or a rollback request recorded; if another runner holds the secret now,
    /// the request is answered with the status and that runner (or the scheduler) acts on it.
    func runRecorded(_ ctx: RotationContext, _ key: String) throws(CofferError) -> Response {
        do {
            return statusResponse(try runRotation(ctx, key, start: nil))
        } catch  where error.code == .conflict {
            var response = statusResponse(try loadState(ctx.storage, key) ?? RotationState())
            response.warnings.append("recorded; the rotation is running elsewhere and will act on it: \(error.message)")
            return response
        }
    }

    func context(_ request: BackendRequest) -> RotationContext {
        RotationContext(
            storage: request.storage,
            mount: request.mount,
            system: request.system,
            namespaceID: request.namespaceID,
            now: request.now
        )
    }

    func statusResponse(_ state: RotationState) -> Response {
        var response = Response(data: state.status)
        if state.phase == .idle, let outcome = state.lastRun["outcome"]?.stringValue, outcome != "succeeded" {
            response.warnings.append("rotation \(outcome): \(state.lastRun["error"]?.stringValue ?? "")")
        }
        return response
    }

    // MARK: storage

    func loadPolicy(_ storage: StorageView, _ key: String) throws(CofferError) -> RotationPolicy? {
        guard let json = try storage.getJSON(Self.policyKey(key)) else { return nil }
        return try RotationPolicy(stored: json.objectValue ?? [:])
    }

    func loadState(_ storage: StorageView, _ key: String) throws(CofferError) -> RotationState? {
        try storage.getJSON(Self.stateKey(key)).map(RotationState.init(json:))
    }

    /// Reads, changes and writes the state under its lock (never held across anything slow); a
    /// state that is gone (the policy was deleted) ends the run unless `create`.
    @discardableResult
    func updateState(
        _ ctx: RotationContext,
        _ key: String,
        create: Bool = false,
        _ change: (inout RotationState) throws(CofferError) -> Void
    ) throws(CofferError) -> RotationState {
        try withKeyLock(Self.stateKey(key)) { () throws(CofferError) -> RotationState in
            var state: RotationState
            if let loaded = try loadState(ctx.storage, key) {
                state = loaded
            } else if create {
                state = RotationState()
            } else {
                throw CofferError(
                    .notFound,
                    "the rotation policy of \(ctx.mount.path)\(key) was deleted; the run stopped"
                )
            }
            try change(&state)
            try ctx.storage.putJSON(Self.stateKey(key), state.stored)
            return state
        }
    }

    // MARK: the scheduler

    /// Rotates what is due on this mount: called about once a second by the lease runner's tick.
    /// One pass at a time per mount in this process; each secret is claimed in storage first.
    package func periodic(storage: StorageView, mount: MountEntry, system: any SystemView, now: Timestamp) {
        let lock = "mount " + mount.uuid
        guard Self.rotationRunning.withLock({ $0.insert(lock).inserted }) else { return }
        defer { _ = Self.rotationRunning.withLock { $0.remove(lock) } }
        guard let names = try? storage.list("rotation/state/") else { return }
        for name in names where !name.hasSuffix("/") {
            let key = Self.unescape(name)
            guard let state = try? loadState(storage, key), isDue(state, now: now) else { continue }
            guard let policy = try? loadPolicy(storage, key) else { continue }
            let ctx = RotationContext(
                storage: storage,
                mount: mount,
                system: system,
                namespaceID: policy.namespaceID,
                now: now
            )
            _ = try? runRotation(ctx, key, start: state.phase == .idle ? "schedule" : nil)
        }
    }

    /// Whether the scheduler has something to do for this secret now.
    func isDue(_ s: RotationState, now: Timestamp) -> Bool {
        if !s.claimBy.isEmpty, let until = s.claimUntil, until > now { return false }
        switch s.phase {
        case .idle: return s.nextRun.map { $0 <= now } ?? false
        case .waiting: return !s.rollbackReason.isEmpty || s.graceUntil.map { $0 <= now } ?? true
        default: return true
        }
    }

    // MARK: the runner

    /// Runs what can be done now for `key`: starts a run if `start` names a reason (and none is in
    /// progress), then advances the run until it waits or ends. Returns the state it left.
    func runRotation(_ ctx: RotationContext, _ key: String, start: String?) throws(CofferError) -> RotationState {
        let lock = ctx.mount.uuid + "\u{0}" + key
        guard Self.rotationRunning.withLock({ $0.insert(lock).inserted }) else {
            throw CofferError(.conflict, "a rotation of \(ctx.mount.path)\(key) is running in this process")
        }
        defer { _ = Self.rotationRunning.withLock { $0.remove(lock) } }
        guard let policy = try loadPolicy(ctx.storage, key) else {
            throw CofferError.invalid("no rotation policy for \(ctx.mount.path)\(key)")
        }
        // Claim it in storage: another process (or a runner of this one that died) may hold it.
        let state = try updateState(ctx, key) { (s) throws(CofferError) in
            if !s.claimBy.isEmpty, s.claimBy != Self.runnerID, let until = s.claimUntil, until > ctx.now {
                throw CofferError(
                    .conflict,
                    "a rotation of \(ctx.mount.path)\(key) is running (claimed by \(s.claimBy) until \(until.rfc3339))"
                )
            }
            if let start {
                if start == "schedule", s.nextRun.map({ $0 > ctx.now }) ?? true {
                    throw CofferError(.conflict, "the rotation of \(ctx.mount.path)\(key) is not due")
                }
                guard s.phase == .idle else {
                    throw CofferError(
                        .conflict,
                        "a rotation of \(ctx.mount.path)\(key) is in progress (\(s.phase.rawValue), run \(s.runID))"
                    )
                }
                s.phase = .generating
                s.runID = Random.uuid()
                s.reason = start
                s.started = ctx.now
                s.oldVersion = 0
                s.newVersion = 0
                s.digest = ""
                s.salt = ""
                s.acks = [:]
                s.graceUntil = nil
                s.rollbackReason = ""
            }
            s.claimBy = Self.runnerID
            s.claimUntil = ctx.now.adding(seconds: policy.claimSeconds)
        }
        var released = false
        defer {
            if !released {
                _ = try? updateState(ctx, key) { s in
                    if s.claimBy == Self.runnerID {
                        s.claimBy = ""
                        s.claimUntil = nil
                    }
                }
            }
        }
        do {
            return try advance(ctx, key, policy, state, start: start)
        } catch  where error.message.hasPrefix(Self.stopMessage) {
            released = true
            throw error
        }
    }

    /// Takes the steps of the run that can be taken now, each recorded before it is taken.
    func advance(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ initial: RotationState,
        start: String?
    ) throws(CofferError) -> RotationState {
        var state = initial
        while true {
            try Self.stopIfAsked(key, state.phase.rawValue)
            let before = state.phase
            switch state.phase {
            case .idle:
                return state
            case .generating:
                if start == nil {
                    state = try finish(
                        ctx,
                        key,
                        policy,
                        state,
                        outcome: "failed",
                        error: "the runner stopped before the write (a restart); nothing was written"
                    )
                } else {
                    state = try generateAndWrite(ctx, key, policy, state)
                }
            case .writing:
                state = try recoverWrite(ctx, key, policy, state)
            case .written:
                state = try postWrite(ctx, key, policy, state)
            case .waiting:
                if !state.rollbackReason.isEmpty {
                    state = try updateState(ctx, key) { s in s.phase = .rollingBack }
                } else if acksComplete(policy, state) || state.graceUntil.map({ $0 <= ctx.now }) ?? true {
                    state = try archive(ctx, key, policy, state)
                } else {
                    return state
                }
            case .rollingBack:
                state = try rollBack(ctx, key, policy, state)
            }
            if state.phase == before && state.phase != .waiting { return state }
        }
    }

    func acksComplete(_ policy: RotationPolicy, _ state: RotationState) -> Bool {
        !policy.requiredAcks.isEmpty && policy.requiredAcks.allSatisfy { state.acks[$0] == true }
    }

    /// The secret's current version and its data, for the health check and the write.
    func readCurrent(_ ctx: RotationContext, _ key: String) throws(CofferError) -> (Int, [String: JSONValue]) {
        _ = try loadConfig(ctx.storage)
        guard let meta = try loadMetadata(ctx.storage, key), meta.currentVersion > 0,
            let current = meta.versions[meta.currentVersion]
        else { throw CofferError.invalid("the secret has no version to rotate; write its first version") }
        guard !current.destroyed, !current.isDeleted(now: ctx.now) else {
            throw CofferError.invalid("the current version \(meta.currentVersion) is deleted or destroyed")
        }
        guard case .object(let data)? = try ctx.storage.getJSON(Self.versionKey(key, meta.currentVersion))?["data"]
        else {
            throw CofferError(.integrity, "the data of version \(meta.currentVersion) is missing")
        }
        return (meta.currentVersion, data)
    }

    func versionData(_ ctx: RotationContext, _ key: String, _ n: Int) throws(CofferError) -> [String: JSONValue]? {
        guard case .object(let data)? = try ctx.storage.getJSON(Self.versionKey(key, n))?["data"] else { return nil }
        return data
    }

    static func digest(_ value: String, salt: String) -> String {
        Hex.encode(Digest.sha256(Array((salt + "\u{0}" + value).utf8)))
    }

    /// Health check, generate, validate (no lock held for the last two), then the check-and-set write.
    func generateAndWrite(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ state: RotationState
    ) throws(CofferError) -> RotationState {
        let old: Int
        let oldData: [String: JSONValue]
        do {
            (old, oldData) = try readCurrent(ctx, key)
        } catch {
            return try finish(ctx, key, policy, state, outcome: "failed", error: "health check: \(error.message)")
        }
        var s = try updateState(ctx, key) { s in s.oldVersion = old }
        publish(
            ctx,
            key,
            "kv-v2/rotation-started",
            ["old_version": .string(String(old)), "run_id": .string(s.runID), "reason": .string(s.reason)]
        )
        let candidate: String
        do {
            candidate = try generate(ctx, key, policy)
            try validate(ctx, key, policy, candidate, version: old + 1, step: "validation")
        } catch {
            return try finish(ctx, key, policy, s, outcome: "failed", error: error.message)
        }
        let salt = Hex.encode(Random.bytes(16))
        s = try updateState(ctx, key) { s in
            s.phase = .writing
            s.salt = salt
            s.digest = Self.digest(candidate, salt: salt)
            s.newVersion = old + 1
        }
        var data = oldData
        data[policy.field] = .string(candidate)
        var request = ctx.request
        request.path = "data/" + key
        do {
            _ = try withKeyLock(key) { () throws(CofferError) in try store(request, key, data: data, cas: old) }
        } catch  where error.code == .conflict {
            return try finish(
                ctx,
                key,
                policy,
                s,
                outcome: "failed",
                error:
                    "the secret was written during the rotation (it is no longer version \(old)); that write is kept and nothing was rotated"
            )
        } catch {
            return try finish(ctx, key, policy, s, outcome: "failed", error: "write: \(error.message)")
        }
        try Self.stopIfAsked(key, "after-write")
        return try updateState(ctx, key) { s in s.phase = .written }
    }

    /// A runner stopped between recording `writing` and recording `written`: was the version ours?
    func recoverWrite(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ state: RotationState
    ) throws(CofferError) -> RotationState {
        let meta = try loadMetadata(ctx.storage, key)
        if let meta, meta.versions[state.newVersion] != nil,
            let value = try versionData(ctx, key, state.newVersion)?[policy.field]?.stringValue,
            Self.digest(value, salt: state.salt) == state.digest
        {
            return try updateState(ctx, key) { s in s.phase = .written }
        }
        if meta?.versions[state.newVersion] == nil {
            return try finish(
                ctx,
                key,
                policy,
                state,
                outcome: "failed",
                error: "the runner stopped before the write (a restart); nothing was written"
            )
        }
        return try finish(
            ctx,
            key,
            policy,
            state,
            outcome: "failed",
            error:
                "the secret was written during the rotation (version \(state.newVersion) is not the rotation's); that write is kept"
        )
    }

    /// Validates the stored value again; on failure the previous value goes back. Then notifies.
    func postWrite(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ state: RotationState
    ) throws(CofferError) -> RotationState {
        if policy.postWriteCheck, policy.validator != nil {
            let stored = try versionData(ctx, key, state.newVersion)?[policy.field]?.stringValue
            do throws(CofferError) {
                guard let stored else {
                    throw CofferError(.integrity, "post-write check: the new version is not readable")
                }
                try validate(ctx, key, policy, stored, version: state.newVersion, step: "post-write check")
            } catch {
                return try updateState(ctx, key) { s in
                    s.phase = .rollingBack
                    s.rollbackReason = error.message
                }
            }
        }
        let graceUntil = ctx.now.adding(seconds: policy.gracePeriod)
        let s = try updateState(ctx, key) { s in
            s.phase = .waiting
            s.graceUntil = graceUntil
        }
        publish(
            ctx,
            key,
            "kv-v2/rotation-succeeded",
            [
                "old_version": .string(String(s.oldVersion)), "new_version": .string(String(s.newVersion)),
                "current_version": .string(String(s.newVersion)), "run_id": .string(s.runID),
                "grace_until": .string(graceUntil.rfc3339),
                "required_acks": .array(policy.requiredAcks.map { .string($0) }),
            ]
        )
        return s
    }

    /// Soft-deletes the old version (KV v2 delete of that version) and ends the run.
    func archive(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ state: RotationState
    ) throws(CofferError) -> RotationState {
        _ = try changeVersions(ctx.request, key, action: .delete, versions: [state.oldVersion])
        publish(
            ctx,
            key,
            "kv-v2/rotation-archived",
            [
                "archived_version": .string(String(state.oldVersion)),
                "current_version": .string(String(state.newVersion)), "run_id": .string(state.runID),
            ]
        )
        return try finish(
            ctx,
            key,
            policy,
            state,
            outcome: "succeeded",
            error: nil,
            extra: ["archived_version": .int(state.oldVersion)]
        )
    }

    /// Writes the previous value back as the new current version (check-and-set on the rotated
    /// version: a write made since is not overwritten) and soft-deletes the rejected version.
    func rollBack(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ state: RotationState
    ) throws(CofferError) -> RotationState {
        guard let meta = try loadMetadata(ctx.storage, key) else {
            return try finish(ctx, key, policy, state, outcome: "failed", error: "rollback: the secret is gone")
        }
        guard let oldData = try versionData(ctx, key, state.oldVersion) else {
            return try finish(
                ctx,
                key,
                policy,
                state,
                outcome: "failed",
                error: "rollback: version \(state.oldVersion) is destroyed; nothing was changed"
            )
        }
        var restored = meta.currentVersion
        if meta.currentVersion == state.newVersion + 1, try versionData(ctx, key, meta.currentVersion) == oldData {
            // Written already by a runner that stopped before recording it.
        } else if meta.currentVersion != state.newVersion {
            return try finish(
                ctx,
                key,
                policy,
                state,
                outcome: "failed",
                error:
                    "rollback: the secret was written after the rotation (now version \(meta.currentVersion)); that write is kept and nothing was rolled back"
            )
        } else {
            var request = ctx.request
            request.path = "data/" + key
            do {
                _ = try withKeyLock(key) { () throws(CofferError) in
                    try store(request, key, data: oldData, cas: state.newVersion)
                }
            } catch {
                return try finish(ctx, key, policy, state, outcome: "failed", error: "rollback: \(error.message)")
            }
            restored = state.newVersion + 1
        }
        _ = try changeVersions(ctx.request, key, action: .delete, versions: [state.newVersion])
        publish(
            ctx,
            key,
            "kv-v2/rotation-rolled-back",
            [
                "old_version": .string(String(state.oldVersion)), "new_version": .string(String(state.newVersion)),
                "current_version": .string(String(restored)), "run_id": .string(state.runID),
                "reason": .string(state.rollbackReason),
            ]
        )
        return try finish(
            ctx,
            key,
            policy,
            state,
            outcome: "rolled-back",
            error: state.rollbackReason,
            extra: ["restored_version": .int(restored)]
        )
    }

    /// Ends the run: records its outcome, schedules the next, publishes a failure.
    func finish(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ state: RotationState,
        outcome: String,
        error: String?,
        extra: [String: JSONValue] = [:]
    ) throws(CofferError) -> RotationState {
        var last: [String: JSONValue] = [
            "run_id": .string(state.runID), "reason": .string(state.reason), "outcome": .string(outcome),
            "started": .string((state.started ?? ctx.now).rfc3339), "finished": .string(ctx.now.rfc3339),
            "old_version": .int(state.oldVersion),
            "new_version": state.newVersion > 0 && outcome != "failed" ? .int(state.newVersion) : .null,
            "error": error.map { .string($0) } ?? .null,
        ]
        for (k, v) in extra { last[k] = v }
        let failedPhase = state.phase
        let s = try updateState(ctx, key) { s in
            s.phase = .idle
            s.lastRun = last
            s.digest = ""
            s.salt = ""
            s.rollbackReason = ""
            s.nextRun = policy.schedule?.next(after: ctx.now)
        }
        if outcome == "failed" {
            publish(
                ctx,
                key,
                "kv-v2/rotation-failed",
                [
                    "old_version": .string(String(state.oldVersion)), "run_id": .string(state.runID),
                    "phase": .string(failedPhase.rawValue), "reason": .string(error ?? ""),
                ]
            )
        }
        return s
    }

    func publish(_ ctx: RotationContext, _ key: String, _ type: String, _ extra: [String: JSONValue]) {
        var metadata: [String: JSONValue] = [
            "path": .string(ctx.mount.path + "data/" + key), "data_path": .string(ctx.mount.path + "data/" + key),
            "operation": .string(String(type.dropFirst("kv-v2/".count))), "modified": "true",
        ]
        for (k, v) in extra { metadata[k] = v }
        ctx.system?.publishEvent(type, mount: ctx.mount, namespaceID: ctx.namespaceID, metadata: metadata, now: ctx.now)
    }

    // MARK: generate and validate

    func generate(_ ctx: RotationContext, _ key: String, _ policy: RotationPolicy) throws(CofferError) -> String {
        switch policy.generator {
        case .password(let name?, _, _):
            guard let system = ctx.system, let p = try system.passwordPolicy(name) else {
                throw CofferError.invalid("generator: password policy \"\(name)\" does not exist")
            }
            return try p.generate()
        case .password(nil, let length, let charset):
            var out: [Character] = []
            out.reserveCapacity(length)
            let limit = 256 - 256 % charset.count
            while out.count < length {
                for byte in Random.bytes(length * 2) where Int(byte) < limit && out.count < length {
                    out.append(charset[Int(byte) % charset.count])
                }
            }
            return String(out)
        case .bytes(let length, let hex):
            let bytes = Random.bytes(length)
            return hex ? Hex.encode(bytes) : Base64.encode(bytes)
        case .command(let argv, let timeout):
            let result: (status: Int32, output: [UInt8])
            do {
                result = try RotationExternal.run(argv, input: [], timeout: timeout)
            } catch {
                throw CofferError(.internal, "generator: \(error.message)")
            }
            guard result.status == 0 else {
                throw CofferError(.internal, "generator: \(argv[0]) exited with status \(result.status)")
            }
            var output = result.output[...]
            if output.last == UInt8(ascii: "\n") { output = output.dropLast() }
            if output.last == UInt8(ascii: "\r") { output = output.dropLast() }
            guard !output.isEmpty else { throw CofferError(.internal, "generator: \(argv[0]) printed nothing") }
            guard let text = String(validating: output, as: UTF8.self) else {
                throw CofferError(.internal, "generator: \(argv[0]) printed something that is not UTF-8 text")
            }
            return text
        case .webhook(let url, let timeout):
            let answer: (status: Int, body: [UInt8])
            do {
                answer = try RotationExternal.post(
                    url,
                    body: ["path": .string(ctx.mount.path + "data/" + key), "field": .string(policy.field)],
                    timeout: timeout
                )
            } catch {
                throw CofferError(.internal, "generator: \(error.message)")
            }
            guard (200..<300).contains(answer.status) else {
                throw CofferError(.internal, "generator: the webhook answered HTTP status \(answer.status)")
            }
            guard let json = try? JSONValue.parse(answer.body), let value = json["value"]?.stringValue, !value.isEmpty
            else {
                throw CofferError(
                    .internal,
                    "generator: the webhook's answer is not a JSON object with a non-empty string \"value\""
                )
            }
            return value
        }
    }

    /// Runs the validator on `candidate` (on its standard input, or in the webhook's body).
    func validate(
        _ ctx: RotationContext,
        _ key: String,
        _ policy: RotationPolicy,
        _ candidate: String,
        version: Int,
        step: String
    ) throws(CofferError) {
        switch policy.validator {
        case nil:
            return
        case .command(let argv, let timeout)?:
            let result: (status: Int32, output: [UInt8])
            do {
                result = try RotationExternal.run(argv, input: Array(candidate.utf8), timeout: timeout)
            } catch {
                throw CofferError(.invalidArgument, "\(step): \(error.message)")
            }
            guard result.status == 0 else {
                throw CofferError(.invalidArgument, "\(step): \(argv[0]) exited with status \(result.status)")
            }
        case .webhook(let url, let timeout)?:
            let answer: (status: Int, body: [UInt8])
            do {
                answer = try RotationExternal.post(
                    url,
                    body: [
                        "path": .string(ctx.mount.path + "data/" + key), "field": .string(policy.field),
                        "version": .int(version), "value": .string(candidate),
                    ],
                    timeout: timeout
                )
            } catch {
                throw CofferError(.invalidArgument, "\(step): \(error.message)")
            }
            guard (200..<300).contains(answer.status) else {
                throw CofferError(.invalidArgument, "\(step): the webhook answered HTTP status \(answer.status)")
            }
        }
    }
}
