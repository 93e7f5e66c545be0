// The in-process suite: each step of the request path on its own, KV v2 through the Swift API, and
// the physical floor of a read measured in the same run.
import Coffer
import CofferFramework
import Foundation

/// In a dev vault whose root token is "bench-root": the policy "reader" (read and write under
/// secret/data/app/), a token of it, and `payload` written at app/db with it. Returns the token.
func readerToken(_ vault: Vault, payload: [String: JSONValue]) throws -> String {
    _ = try vault.handle(
        Request(
            .update,
            "sys/policies/acl/reader",
            data: ["policy": #"path "secret/data/app/*" { capabilities = ["read", "create", "update"] }"#],
            token: "bench-root"
        )
    )
    let token = try vault.handle(
        Request(.update, "auth/token/create", data: ["policies": ["reader"], "ttl": "1h"], token: "bench-root")
    ).auth!.clientToken
    try vault.kv(token: token).put("app/db", payload)
    return token
}

/// Runs the suite against a dev vault on a SQLite file in `directory`; returns the summary figures.
func runInProcess(_ bench: Bench, directory: URL) throws -> [String: Any] {
    let databasePath = directory.appendingPathComponent("bench.db").path
    let (vault, _) = try Vault.openDev(storage: .sqlite(path: databasePath), rootTokenID: "bench-root")
    defer { vault.close() }
    let payload: [String: JSONValue] = [
        "username": "service-account", "password": .string(String(repeating: "p", count: 64)),
    ]
    let token = try readerToken(vault, payload: payload)
    let core = vault.core

    say("in-process: \(bench.iterations) iterations per operation, one thread")

    // The steps of the request path, alone.
    let (memoryVault, _) = try Vault.openDev()
    defer { memoryVault.close() }
    let entry = Array(JSONValue.object(["data": .object(payload)]).serialized())
    try memoryVault.core.barrier.put("bench/entry", entry)
    try bench.measure("barrier put (encrypt, memory storage)") {
        try memoryVault.core.barrier.put("bench/entry", entry)
    }
    try bench.measure("barrier get (decrypt, memory storage)") { _ = try memoryVault.core.barrier.get("bench/entry") }
    let readRequest = Request(.read, "secret/data/app/db", token: token)
    let now = core.clock.now()
    let caller = try core.authenticate(token, now: now)
    try bench.measure("token lookup (hash + cache)") { _ = try core.authenticate(token, now: now) }
    try bench.measure("policy check (ACL)") { try core.authorize(caller, readRequest) }

    // KV v2 through the Swift API, on SQLite.
    let kv = vault.kv(token: token)
    // A caller builds a new Request for each call (it draws a request id), so the timing does too.
    try bench.measure("kv read (Swift API, handle)") {
        _ = try vault.handle(Request(.read, "secret/data/app/db", token: token))
    }
    try bench.measure("kv read (KVClient.get)") { _ = try kv.get("app/db") }
    try bench.measure("kv read (wire JSON, handleWire)") {
        _ = vault.handleWire(method: "GET", path: "secret/data/app/db", token: token, body: [])
    }
    try bench.measure("token lookup-self (handle)") {
        _ = try vault.handle(Request(.read, "auth/token/lookup-self", token: token))
    }
    var n = 0
    // Each write is a SQLite transaction with synchronous=FULL: an fsync, so fewer iterations.
    try bench.measure("kv write (Swift API, fsync)", iterations: max(200, bench.iterations / 20)) {
        n += 1
        _ = try vault.handle(
            Request(.update, "secret/data/app/w\(n % 100)", data: ["data": .object(payload)], token: token)
        )
    }

    // The floor: the same row read with SQLite directly, and an AES-256-GCM open of its length.
    let physical = core.barrier.physical
    let rowKey = try physical.listRecursive(prefix: "logical/").first { $0.contains("/versions/app/db/") }!
    let row = try physical.get(rowKey)!
    let reader = RawSQLiteReader(path: databasePath, key: rowKey)
    let opener = RawAESGCMOpener(length: row.count, aad: Array(row[0..<5]) + Array(rowKey.utf8))
    try bench.measure("floor: sqlite point read (raw C)") { reader.read() }
    try bench.measure("floor: aes-256-gcm open (raw EVP)") { opener.open() }
    // The machine's tail: the read beside a CPU spin of its median (bench/InProcess/Floor.swift).
    try bench.measureBesideSpin(
        "kv read (Swift API, handle; beside a spin)",
        spinName: "floor: cpu spin of the kv read's p50 (the machine's tail)"
    ) { _ = try vault.handle(Request(.read, "secret/data/app/db", token: token)) }

    // Transit: 64 bytes through the in-process fast path (token and ACL checks, cached key,
    // AES-256-GCM, vault:v1: framing) and through the wire JSON, next to a raw EVP seal.
    try core.mount(MountEntry(path: "transit/", type: "transit"))
    _ = try vault.handle(Request(.update, "transit/keys/bench", token: "bench-root"))
    _ = try vault.handle(
        Request(
            .update,
            "sys/policies/acl/transit",
            data: [
                "policy":
                    #"path "transit/encrypt/bench" { capabilities = ["update"] } path "transit/decrypt/bench" { capabilities = ["update"] }"#
            ],
            token: "bench-root"
        )
    )
    let transitToken = try vault.handle(
        Request(.update, "auth/token/create", data: ["policies": ["transit"], "ttl": "1h"], token: "bench-root")
    ).auth!.clientToken
    let block = [UInt8](repeating: 0x5A, count: 64)
    let sealedBlock = try vault.transit(mount: "transit", token: transitToken).encrypt(key: "bench", plaintext: block)
    try bench.measure("transit encrypt 64 B (fast path)") {
        _ = try vault.transit(mount: "transit", token: transitToken).encrypt(key: "bench", plaintext: block)
    }
    try bench.measure("transit decrypt 64 B (fast path)") {
        _ = try vault.transit(mount: "transit", token: transitToken).decrypt(key: "bench", ciphertext: sealedBlock)
    }
    let encryptBody = Array(#"{"plaintext":"\#(Base64.encode(block))"}"#.utf8)
    try bench.measure("transit encrypt 64 B (wire JSON)") {
        _ = vault.handleWire(method: "POST", path: "transit/encrypt/bench", token: transitToken, body: encryptBody)
    }
    let sealer = RawAESGCMSealer(plaintext: block)
    try bench.measure("floor: aes-256-gcm seal 64 B (raw EVP, random nonce)") { sealer.seal() }

    // Issue 20: a cached read through the remote client (RemoteClient.swift).
    try measureRemoteCachedRead(bench, payload: payload)

    // The same read with one file audit device: the default (reads' records queued for the device's
    // writer thread) and sync=all (every record written before the call returns, as Vault does).
    // Each in its own vault, set up alike (the reference with no device), measured in alternating
    // rounds, so that the ratios compare like with like on a noisy machine.
    func auditedVault(_ name: String, options: [String: JSONValue]?) throws -> (Vault, String) {
        let (audited, _) = try Vault.openDev(
            storage: .sqlite(path: directory.appendingPathComponent("\(name).db").path),
            rootTokenID: "bench-root"
        )
        if let options {
            _ = try audited.handle(
                Request(
                    .update,
                    "sys/audit/file",
                    data: [
                        "type": "file",
                        "options": .object(
                            options.merging(["file_path": .string(directory.appendingPathComponent("\(name).log").path)]
                            ) { $1 }
                        ),
                    ],
                    token: "bench-root"
                )
            )
        }
        return (audited, try readerToken(audited, payload: payload))
    }
    let (plain, plainToken) = try auditedVault("audit-none", options: nil)
    defer { plain.close() }
    let (queued, queuedToken) = try auditedVault("audit-queued", options: [:])
    defer { queued.close() }
    let (synced, syncedToken) = try auditedVault("audit-sync-all", options: ["sync": "all"])
    defer { synced.close() }
    // The floor of the audit's work: one read's two records as the device wrote them, hashed and written
    // with the C libraries alone. The response's record holds the payload's values, `created_time` and
    // `deletion_time` (empty) as HMACs.
    _ = try queued.handle(Request(.read, "secret/data/app/db", token: queuedToken))
    try queued.core.flushAudit()
    let auditLog = try Data(contentsOf: directory.appendingPathComponent("audit-queued.log"))
    let auditFloor = RawAuditLines(
        lines: auditLog.split(separator: 0x0A).suffix(2).map { Array($0) + [0x0A] },
        valueLengths: payload.values.map { $0.stringValue?.utf8.count ?? 0 } + [30, 0],
        path: directory.appendingPathComponent("audit-floor.log").path
    )
    try bench.compare([
        (
            "kv read (audit reference: no device)",
            { _ = try plain.handle(Request(.read, "secret/data/app/db", token: plainToken)) }, nil
        ),
        (
            "kv read + file audit", { _ = try queued.handle(Request(.read, "secret/data/app/db", token: queuedToken)) },
            { try queued.core.flushAudit() }
        ),
        (
            "kv read + file audit, sync=all",
            { _ = try synced.handle(Request(.read, "secret/data/app/db", token: syncedToken)) }, nil
        ),
        ("floor: the two audit records of a kv read (raw C)", auditFloor.write, nil),
        // The same read answered in JSON (HTTP, `coffer_request`), whose values the audit fingerprints
        // as the stored bytes.
        (
            "kv read, wire JSON (audit reference: no device)",
            { _ = plain.handleWire(method: "GET", path: "secret/data/app/db", token: plainToken, body: []) }, nil
        ),
        (
            "kv read, wire JSON + file audit",
            { _ = queued.handleWire(method: "GET", path: "secret/data/app/db", token: queuedToken, body: []) },
            { try queued.core.flushAudit() }
        ),
    ])

    // The same read in a namespace (issue 19: within 1.1x of root), addressed by path prefix and by
    // header, with a token of the namespace, in alternating rounds with the root read.
    _ = try vault.handle(Request(.update, "sys/namespaces/tenant", token: "bench-root"))
    _ = try vault.handle(
        Request(
            .update,
            "tenant/sys/mounts/secret",
            data: ["type": "kv", "options": ["version": "2"]],
            token: "bench-root"
        )
    )
    _ = try vault.handle(
        Request(
            .update,
            "tenant/sys/policies/acl/reader",
            data: ["policy": #"path "secret/data/app/*" { capabilities = ["read"] }"#],
            token: "bench-root"
        )
    )
    let tenantToken = try vault.handle(
        Request(.update, "tenant/auth/token/create", data: ["policies": ["reader"], "ttl": "1h"], token: "bench-root")
    ).auth!.clientToken
    _ = try vault.handle(
        Request(.update, "tenant/secret/data/app/db", data: ["data": .object(payload)], token: "bench-root")
    )
    try bench.compare([
        ("kv read (root namespace)", { _ = try vault.handle(Request(.read, "secret/data/app/db", token: token)) }, nil),
        (
            "kv read (namespace, path prefix)",
            { _ = try vault.handle(Request(.read, "tenant/secret/data/app/db", token: tenantToken)) }, nil
        ),
        (
            "kv read (namespace, header)",
            { _ = try vault.handle(Request(.read, "secret/data/app/db", token: tenantToken, namespace: "tenant")) }, nil
        ),
    ])
    // Issue 19: a read under a rate-limit quota against the same read with none (Quota.swift).
    let quotaSummary = try measureQuotaCheck(bench, payload: payload)

    // Last, as its writer adds versions to the database: the same KV read alone and with a second
    // thread writing other secrets of the mount (an fsync each), unpinned and on CPUs of their own,
    // in alternating rounds.
    try measureReadsWithWriter(bench, vault: vault, token: token, payload: payload)

    var summary: [String: Any] = ["stored_row_bytes": row.count]
    summary.merge(quotaSummary) { $1 }
    if let scaling = try measureReadScaling(
        bench,
        vault: vault,
        token: token,
        payload: payload,
        directory: directory,
        threads: 2
    ) {
        summary.merge(scaling) { $1 }
    }
    if let read = bench.figure("kv read (Swift API, handle)"),
        let sqlite = bench.figure("floor: sqlite point read (raw C)"),
        let aes = bench.figure("floor: aes-256-gcm open (raw EVP)")
    {
        summary["floor_p50_us"] = sqlite.p50 + aes.p50
        summary["kv_read_over_floor_p50"] = read.p50 / (sqlite.p50 + aes.p50)
        summary["kv_read_over_floor_p99"] = read.p99 / (sqlite.p99 + aes.p99)
        if let beside = bench.figure("kv read (Swift API, handle; beside a spin)"),
            let spin = bench.figure("floor: cpu spin of the kv read's p50 (the machine's tail)")
        {
            summary["kv_read_p99_over_spin_p99"] = beside.p99 / spin.p99
        }
        if let encrypt = bench.figure("transit encrypt 64 B (fast path)"),
            let floor = bench.figure("floor: aes-256-gcm seal 64 B (raw EVP, random nonce)")
        {
            // Medians: a few preempted samples move the mean of a 2 µs operation a lot.
            summary["transit_encrypt_share_of_raw_evp_p50"] = floor.p50 / encrypt.p50
        }
    }
    if let alone = bench.figure("kv read (alone)"), let contended = bench.figure("kv read (one concurrent writer)") {
        summary["concurrent_write_read_p99_ratio"] = contended.p99 / alone.p99
        summary["concurrent_write_read_p50_ratio"] = contended.p50 / alone.p50
        if let pinned = bench.figure("kv read (one concurrent writer, other core)") {
            summary["concurrent_write_other_core_read_p99_ratio"] = pinned.p99 / alone.p99
        }
    }
    if let root = bench.figure("kv read (root namespace)"),
        let prefix = bench.figure("kv read (namespace, path prefix)"),
        let header = bench.figure("kv read (namespace, header)")
    {
        summary["namespace_read_prefix_p50_ratio"] = prefix.p50 / root.p50
        summary["namespace_read_header_p50_ratio"] = header.p50 / root.p50
    }
    let reference = "kv read (audit reference: no device)"
    if let cost = bench.medianRoundCost("kv read + file audit", reference: reference),
        let syncAll = bench.medianRoundCost("kv read + file audit, sync=all", reference: reference),
        let plain = bench.figure(reference)?.extra["cpu_us_per_op"] as? Double,
        let audited = bench.figure("kv read + file audit")?.extra["cpu_us_per_op"] as? Double
    {
        summary["audit_cost_fraction"] = cost
        summary["audit_cpu_cost_fraction"] = 1 - plain / audited
        summary["audit_sync_all_cost_fraction"] = syncAll
    }
    return summary
}
