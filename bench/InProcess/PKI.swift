// The PKI secrets engine against its physical floor, in one process and one run.
//
//   COFFER_PKI_FLOOR=.build/bench/libpkifloor.so \
//   coffer-bench pki [--iterations N] [--rounds R] [--runs RSA] [--secrets REVOKES] [--json PATH]
//
//   --iterations N   EC P-256 issues per operation, over R alternating rounds (default 2,000)
//   --runs RSA       RSA-2048 issues and as many RSA keygens of the floor, alternating over R rounds
//                    (0: none; an RSA-2048 keygen takes about 0.3 s here)
//   --secrets N      certificates issued, then revoked one by one with `GET pki/crl` after each
//
// 1. EC issue: `POST pki/issue/<role>` `{"common_name": "leaf.example.com"}` through `Vault.handle`,
//    role key_type=ec key_bits=256 under an EC P-256 root, with no_store (no per-certificate write)
//    and the default (each certificate stored) on a SQLite vault (every write durable), and stored on
//    a memory vault (the storage write without its fsync), in alternating rounds with the floor:
//    bench/c/pkifloor.c's pkifloor_issue_ec (EC P-256 keygen, the leaf's TBSCertificate with the same
//    extensions as DER, SHA-256 + ECDSA, the certificate and the SEC1 private key as DER), loaded
//    with dlopen from COFFER_PKI_FLOOR (bench.py passes .build/bench/libpkifloor.so; `make -C bench/c
//    pkifloor` builds it) and called in this process, so both see the same machine at the same
//    moment. Beside it: the floor of a stored certificate (the same, plus one durable commit of a
//    600-byte row to a SQLite file with the vault's settings: WAL, synchronous=FULL), and a
//    reference that is not a floor: the same leaf through OpenSSL's X509 API.
// 2. RSA issue: role key_type=rsa key_bits=2048 (default role, SQLite) against the floor's RSA-2048
//    key generation alone, in alternating rounds (Bench.compare's 100 per round minimum does not
//    suit 0.3 s operations, so this part has its own loop).
// 3. Revocation: N certificates issued through the default role into a SQLite vault (built through
//    BulkLoadBackend, outside the timings), the vault opened as any other, then each certificate
//    revoked (`POST pki/revoke` by serial) and the CRL fetched (`GET pki/crl`, no token, as a
//    relying party fetches it) after each: the first tenth against the last tenth, the CRL's size
//    and entry count at the end (every revoked serial must be in it).
import COpenSSL
import CSQLite
import Coffer
import CofferFramework
import CofferStorage
import Engines
import Foundation
import Synchronization

let pkiFloorName = "floor: EC P-256 keygen + leaf + sign + DER (C, OpenSSL)"
let pkiX509APIName = "reference: the same leaf through OpenSSL's X509 API (C)"
let pkiFloorStoredName = "floor + one durable SQLite write of the certificate (WAL, synchronous=FULL)"
let pkiNoStoreName = "issue EC P-256 (Swift API, handle; no_store role, SQLite)"
let pkiStoredName = "issue EC P-256 (Swift API, handle; default role, stored, SQLite)"
let pkiStoredMemoryName = "issue EC P-256 (Swift API, handle; default role, stored, memory storage)"
let pkiRSAFloorName = "floor: RSA-2048 keygen (C, OpenSSL)"
let pkiRSAName = "issue RSA-2048 (Swift API, handle; default role, stored, SQLite)"

/// bench/c/pkifloor.c, loaded with dlopen: the floor runs in this process.
final class PKIFloor {
    typealias Setup = @convention(c) () -> Int32
    typealias Issue = @convention(c) (UnsafePointer<CChar>) -> Int32
    typealias Keygen = @convention(c) () -> Int32
    let path: String
    let issueEC: Issue
    let issueECX509API: Issue
    let rsaKeygen: Keygen

    init() throws {
        let path = ProcessInfo.processInfo.environment["COFFER_PKI_FLOOR"] ?? ".build/bench/libpkifloor.so"
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "?"
            throw BenchError("cannot load the PKI floor \(path) (\(reason)); `make -C bench/c pkifloor` builds it")
        }
        func symbol<T>(_ name: String, _: T.Type) throws -> T {
            guard let pointer = dlsym(handle, name) else { throw BenchError("\(path) has no \(name)") }
            return unsafeBitCast(pointer, to: T.self)
        }
        self.path = path
        issueEC = try symbol("pkifloor_issue_ec", Issue.self)
        issueECX509API = try symbol("pkifloor_issue_ec_x509api", Issue.self)
        rsaKeygen = try symbol("pkifloor_rsa_keygen", Keygen.self)
        guard try symbol("pkifloor_setup", Setup.self)() == 1 else { throw BenchError("pkifloor_setup failed") }
    }
}

/// One durable SQLite commit per call, as the vault's SQLite storage makes one (WAL,
/// synchronous=FULL, a WITHOUT ROWID table of key and value): the floor of a stored certificate adds
/// it to the issue's floor.
final class RawSQLiteWriter {
    private var db: OpaquePointer?
    private var statement: OpaquePointer?
    private var counter = 0
    private let value = (0..<600).map { _ in UInt8.random(in: 0...255) }  // a leaf's DER, about

    init(path: String) throws {
        guard
            sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
                == SQLITE_OK,
            sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", nil, nil, nil) == SQLITE_OK,
            sqlite3_exec(
                db,
                "CREATE TABLE entries(key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
                nil,
                nil,
                nil
            ) == SQLITE_OK,
            sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO entries(key, value) VALUES (?1, ?2)", -1, &statement, nil)
                == SQLITE_OK
        else { throw BenchError("cannot set up the SQLite floor at \(path)") }
    }

    deinit {
        sqlite3_finalize(statement)
        sqlite3_close_v2(db)
    }

    func write() throws {
        counter += 1
        let key = Array("pki/certs/\(counter)".utf8)
        let done = key.withUnsafeBufferPointer { k in
            value.withUnsafeBufferPointer { v in
                sqlite3_bind_text(
                    statement,
                    1,
                    UnsafeRawPointer(k.baseAddress!).assumingMemoryBound(to: CChar.self),
                    Int32(k.count),
                    nil
                )
                    == SQLITE_OK
                    && sqlite3_bind_blob(statement, 2, v.baseAddress, Int32(v.count), nil) == SQLITE_OK
                    && sqlite3_step(statement) == SQLITE_DONE
            }
        }
        sqlite3_reset(statement)
        guard done else { throw BenchError("the SQLite floor's write failed") }
    }
}

let pkiCommonName = "leaf.example.com"
let pkiRole: [String: JSONValue] = [
    "allowed_domains": ["example.com"], "allow_subdomains": true, "key_type": "ec", "key_bits": 256, "ttl": "72h",
    "max_ttl": "720h",
]

/// The mount, an EC P-256 root and the roles `bench` (stored), `bench-nostore` and `bench-rsa`
/// (stored), as bench.py sets them up over HTTP on cofferd and OpenBao.
func setUpPKI(token: String, handle: (Request) throws -> Response) throws {
    func call(_ path: String, _ data: [String: JSONValue]) throws {
        let response = try handle(Request(.update, path, data: data, token: token))
        guard response.status < 300 else {
            throw BenchError("\(path) answered \(response.status): \(response.data ?? [:])")
        }
    }
    try call("sys/mounts/pki", ["type": "pki", "config": ["max_lease_ttl": "87600h"]])
    try call(
        "pki/root/generate/internal",
        ["common_name": "Coffer Bench Root", "key_type": "ec", "key_bits": 256, "ttl": "87600h"]
    )
    try call("pki/roles/bench", pkiRole)
    var noStore = pkiRole
    noStore["no_store"] = true
    try call("pki/roles/bench-nostore", noStore)
    var rsa = pkiRole
    rsa["key_type"] = "rsa"
    rsa["key_bits"] = 2048
    try call("pki/roles/bench-rsa", rsa)
}

/// One `pki/issue/<role>`; returns the serial number.
@discardableResult
func issueCertificate(_ handle: (Request) throws -> Response, role: String, token: String) throws -> String {
    let response = try handle(
        Request(.update, "pki/issue/\(role)", data: ["common_name": .string(pkiCommonName)], token: token)
    )
    guard response.data?["certificate"]?.stringValue != nil, response.data?["private_key"]?.stringValue != nil,
        let serial = response.data?["serial_number"]?.stringValue
    else {
        throw BenchError("pki/issue/\(role) answered \(response.status) without a certificate: \(response.data ?? [:])")
    }
    return serial
}

/// Per-round timings of the operations of one `Bench.compare`, taken in the operations' own bodies
/// (two clock reads more inside the timed span, ~50 ns against operations of 80 µs and more), so
/// that each round's p50 can be compared with the floor's p50 of the same round.
final class RoundRecorder {
    private var rounds: [String: [[UInt64]]] = [:]

    func begin(_ name: String) { rounds[name, default: []].append([]) }

    func time(_ name: String, _ body: () throws -> Void) rethrows {
        let start = nowNanos()
        try body()
        let elapsed = nowNanos() - start
        rounds[name]![rounds[name]!.count - 1].append(elapsed)
    }

    /// Each timed round's p50 (the first `begin` is the warm-up's).
    func roundMedians(_ name: String, rounds count: Int) -> [Double] {
        (rounds[name] ?? []).dropFirst().prefix(count).map { round in
            let sorted = round.sorted()
            return sorted.isEmpty ? 0 : Double(sorted[sorted.count / 2]) / 1000
        }
    }
}

func pkiMedian(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

func pkiPercentile(_ samples: [UInt64], _ p: Double) -> Double {
    let sorted = samples.sorted()
    return sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
}

/// Part 1: EC P-256 issue against the floor.
func runPKIIssue(_ bench: Bench, floor: PKIFloor, directory: URL, issues: Int, rounds: Int) throws -> [String: Any] {
    let (sqliteVault, _) = try Vault.openDev(
        storage: .sqlite(path: directory.appendingPathComponent("pki.db").path),
        rootTokenID: "bench-root"
    )
    defer { sqliteVault.close() }
    try setUpPKI(token: "bench-root") { try sqliteVault.handle($0) }
    let (memoryVault, _) = try Vault.openDev(storage: .memory, rootTokenID: "bench-root")
    defer { memoryVault.close() }
    try setUpPKI(token: "bench-root") { try memoryVault.handle($0) }
    let writer = try RawSQLiteWriter(path: directory.appendingPathComponent("pki-floor.db").path)

    say(
        "pki issue: \(issues) EC P-256 issues per operation in \(rounds) alternating rounds; floor \(floor.path) in-process"
    )
    let recorder = RoundRecorder()
    func operation(_ name: String, _ body: @escaping () throws -> Void) -> Compared {
        Compared(name: name, body: { try recorder.time(name, body) }, begin: { recorder.begin(name) })
    }
    try pkiCommonName.withCString { commonName in
        try bench.compare(
            [
                operation(pkiFloorName) {
                    guard floor.issueEC(commonName) == 1 else { throw BenchError("pkifloor_issue_ec failed") }
                },
                operation(pkiFloorStoredName) {
                    guard floor.issueEC(commonName) == 1 else { throw BenchError("pkifloor_issue_ec failed") }
                    try writer.write()
                },
                operation(pkiX509APIName) {
                    guard floor.issueECX509API(commonName) == 1 else {
                        throw BenchError("pkifloor_issue_ec_x509api failed")
                    }
                },
                operation(pkiNoStoreName) {
                    try issueCertificate({ try sqliteVault.handle($0) }, role: "bench-nostore", token: "bench-root")
                },
                operation(pkiStoredName) {
                    try issueCertificate({ try sqliteVault.handle($0) }, role: "bench", token: "bench-root")
                },
                operation(pkiStoredMemoryName) {
                    try issueCertificate({ try memoryVault.handle($0) }, role: "bench", token: "bench-root")
                },
            ],
            rounds: rounds,
            count: issues
        )
    }
    var summary: [String: Any] = [:]
    let floorRounds = recorder.roundMedians(pkiFloorName, rounds: rounds)
    for name in [pkiFloorStoredName, pkiX509APIName, pkiNoStoreName, pkiStoredName, pkiStoredMemoryName] {
        let ratios = zip(recorder.roundMedians(name, rounds: rounds), floorRounds).map { $0 / $1 }
        summary[name + " / floor, median round"] = pkiMedian(ratios)
        summary[name + " / floor, rounds"] = ratios
        if name == pkiStoredName {
            let stored = zip(
                recorder.roundMedians(name, rounds: rounds),
                recorder.roundMedians(pkiFloorStoredName, rounds: rounds)
            )
            summary[name + " / floor + durable write, median round"] = pkiMedian(stored.map { $0 / $1 })
        }
        if let figure = bench.figure(name), let floorFigure = bench.figure(pkiFloorName) {
            say(
                String(
                    format: "  %@: p50 %.2fx the floor's (median of the rounds' ratios %.2fx)",
                    name as NSString,
                    figure.p50 / floorFigure.p50,
                    pkiMedian(ratios)
                )
            )
        }
    }
    return summary
}

/// Part 2: RSA-2048 issue against the floor's RSA-2048 keygen alone, alternating rounds.
func runPKIRSA(_ bench: Bench, floor: PKIFloor, directory: URL, count: Int, rounds: Int) throws -> [String: Any] {
    let (vault, _) = try Vault.openDev(
        storage: .sqlite(path: directory.appendingPathComponent("pki-rsa.db").path),
        rootTokenID: "bench-root"
    )
    defer { vault.close() }
    try setUpPKI(token: "bench-root") { try vault.handle($0) }
    let rounds = max(1, min(rounds, count))
    let perRound = max(1, count / rounds)
    say(
        "pki RSA: \(perRound * rounds) RSA-2048 issues and as many keygens of the floor in \(rounds) alternating rounds"
    )
    // One of each first, outside the timings.
    guard floor.rsaKeygen() == 1 else { throw BenchError("pkifloor_rsa_keygen failed") }
    try issueCertificate({ try vault.handle($0) }, role: "bench-rsa", token: "bench-root")
    var samples: [String: [UInt64]] = [pkiRSAFloorName: [], pkiRSAName: []]
    var cpu: [String: UInt64] = [pkiRSAFloorName: 0, pkiRSAName: 0]
    var roundMedians: [String: [Double]] = [pkiRSAFloorName: [], pkiRSAName: []]
    let bodies: [(String, () throws -> Void)] = [
        (pkiRSAFloorName, { guard floor.rsaKeygen() == 1 else { throw BenchError("pkifloor_rsa_keygen failed") } }),
        (pkiRSAName, { try issueCertificate({ try vault.handle($0) }, role: "bench-rsa", token: "bench-root") }),
    ]
    for round in 0..<rounds {
        for (name, body) in round % 2 == 0 ? bodies : bodies.reversed() {
            var got: [UInt64] = []
            let cpuStart = cpuNanos()
            for _ in 0..<perRound {
                let start = nowNanos()
                try body()
                got.append(nowNanos() - start)
            }
            cpu[name]! += cpuNanos() - cpuStart
            samples[name]! += got
            roundMedians[name]!.append(pkiPercentile(got, 0.5))
        }
    }
    for (name, _) in bodies {
        var figure = Figure(name: name, samples: samples[name]!.sorted(), allocationsPerOp: nil)
        figure.extra["cpu_us_per_op"] = Double(cpu[name]!) / Double(samples[name]!.count) / 1000
        figure.extra["round_p50_us"] = roundMedians[name]!
        bench.record(figure)
        say(
            String(
                format: "  %-44@ p50 %9.0f µs  p99 %9.0f µs  max %9.0f µs",
                name as NSString,
                figure.p50,
                figure.p99,
                figure.max
            )
        )
    }
    let ratios = zip(roundMedians[pkiRSAName]!, roundMedians[pkiRSAFloorName]!).map { $0 / $1 }
    let ratio = bench.figure(pkiRSAName)!.p50 / bench.figure(pkiRSAFloorName)!.p50
    say(
        String(
            format: "  RSA issue p50 / RSA-2048 keygen p50: %.2fx (median of the rounds' ratios %.2fx)",
            ratio,
            pkiMedian(ratios)
        )
    )
    return [pkiRSAName + " / floor, median round": pkiMedian(ratios), pkiRSAName + " / floor, rounds": ratios]
}

/// The number of revoked entries in a DER CRL (nil if it does not parse).
func crlEntries(_ der: [UInt8]) -> Int? {
    der.withUnsafeBufferPointer { buffer -> Int? in
        var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
        guard let crl = d2i_X509_CRL(nil, &cursor, buffer.count) else { return nil }
        defer { X509_CRL_free(crl) }
        guard let revoked = X509_CRL_get_REVOKED(crl) else { return 0 }
        return Int(OPENSSL_sk_num(revoked))
    }
}

/// Part 3: revoke `count` certificates one by one, fetching the CRL after each.
func runPKIRevoke(directory: URL, count: Int) throws -> [String: Any] {
    let path = directory.appendingPathComponent("pki-revoke.db").path
    let storage = try BulkLoadBackend(path: path)
    let core = try Core(storage: storage, engines: BuiltinEngines.registry, clock: SystemClock())
    let initResult = try core.initialize(shares: 1, threshold: 1)
    let root = initResult.rootToken
    try setUpPKI(token: root) { try core.handle($0) }
    say("pki revoke: issuing \(count) certificates (default role, stored; built without per-write fsync)")
    let buildStart = nowNanos()
    var serials: [String] = []
    serials.reserveCapacity(count)
    for _ in 0..<count { serials.append(try issueCertificate({ try core.handle($0) }, role: "bench", token: root)) }
    let buildSeconds = Double(nowNanos() - buildStart) / 1e9
    core.sealVault()
    storage.close()

    let vault = try Vault.open(VaultConfiguration(storage: .sqlite(path: path)))
    defer { vault.close() }
    _ = try vault.unseal(key: initResult.hexKeys[0])
    guard !vault.core.isSealed else { throw BenchError("the vault did not unseal") }
    say(String(format: "  issued in %.1f s; revoking each, then GET pki/crl", buildSeconds))
    var revokeTimes: [UInt64] = []
    var crlTimes: [UInt64] = []
    revokeTimes.reserveCapacity(count)
    crlTimes.reserveCapacity(count)
    var crl: [UInt8] = []
    for (index, serial) in serials.enumerated() {
        let start = nowNanos()
        let revoked = try vault.handle(
            Request(.update, "pki/revoke", data: ["serial_number": .string(serial)], token: root)
        )
        let middle = nowNanos()
        let fetched = try vault.handle(Request(.read, "pki/crl"))
        let end = nowNanos()
        guard revoked.status == 200, revoked.data?["revocation_time"] != nil else {
            throw BenchError("pki/revoke \(serial) answered \(revoked.status): \(revoked.data ?? [:])")
        }
        guard fetched.status == 200, let body = fetched.body, !body.bytes.isEmpty else {
            throw BenchError("GET pki/crl answered \(fetched.status) without a body")
        }
        crl = body.bytes
        revokeTimes.append(middle - start)
        crlTimes.append(end - middle)
        if (index + 1) % max(1, count / 10) == 0 {
            let from = max(0, index + 1 - count / 10)
            say(
                String(
                    format: "  %6d revoked: this tenth revoke + CRL p50 %.0f µs (revoke %.0f, CRL %.0f), CRL %d bytes",
                    index + 1,
                    pkiPercentile(zip(revokeTimes[from...], crlTimes[from...]).map { $0 + $1 }, 0.5),
                    pkiPercentile(Array(revokeTimes[from...]), 0.5),
                    pkiPercentile(Array(crlTimes[from...]), 0.5),
                    crl.count
                )
            )
        }
    }
    let entries = crlEntries(crl)
    guard entries == count else {
        throw BenchError("the last CRL has \(entries.map(String.init) ?? "no") entries, not \(count)")
    }
    let edge = max(1, count / 10)
    let both = zip(revokeTimes, crlTimes).map { $0 + $1 }
    func part(_ range: Range<Int>) -> [String: Any] {
        let total = Array(both[range])
        return [
            "n": total.count, "p50_us": pkiPercentile(total, 0.5), "p90_us": pkiPercentile(total, 0.9),
            "p99_us": pkiPercentile(total, 0.99), "max_us": pkiPercentile(total, 1),
            "revoke_p50_us": pkiPercentile(Array(revokeTimes[range]), 0.5),
            "revoke_p99_us": pkiPercentile(Array(revokeTimes[range]), 0.99),
            "crl_p50_us": pkiPercentile(Array(crlTimes[range]), 0.5),
            "crl_p99_us": pkiPercentile(Array(crlTimes[range]), 0.99),
        ]
    }
    let first = part(0..<edge)
    let last = part((count - edge)..<count)
    let tenths = stride(from: 0, to: count, by: edge).map {
        pkiPercentile(Array(both[$0..<min(count, $0 + edge)]), 0.5)
    }
    let p50Ratio = (last["p50_us"] as! Double) / (first["p50_us"] as! Double)
    let p99Ratio = (last["p99_us"] as! Double) / (first["p99_us"] as! Double)
    say(
        String(
            format:
                "  revoke + CRL: first %d p50 %.0f µs p99 %.0f µs; last %d p50 %.0f µs p99 %.0f µs: %.2fx (p99 %.2fx); "
                + "CRL %d bytes, %d entries",
            edge,
            first["p50_us"] as! Double,
            first["p99_us"] as! Double,
            edge,
            last["p50_us"] as! Double,
            last["p99_us"] as! Double,
            p50Ratio,
            p99Ratio,
            crl.count,
            entries ?? 0
        )
    )
    return [
        "revokes": count, "edge": edge, "first": first, "last": last, "p50_ratio": p50Ratio, "p99_ratio": p99Ratio,
        "crl_bytes": crl.count, "crl_entries": entries ?? 0, "tenths_p50_us": tenths, "issue_seconds": buildSeconds,
    ]
}

/// The `pki` mode (main.swift): `rsa` RSA issues (0: none), `revokes` certificates revoked (0: none).
func runPKI(
    _ bench: Bench,
    _ directory: URL,
    _ issues: Int,
    rounds: Int,
    rsa rsaIssues: Int,
    revokes: Int
) throws
    -> [String: Any]
{
    let floor = try PKIFloor()
    var summary: [String: Any] = [
        "floor_mode": "in-process: bench/c/pkifloor.c built as \(floor.path), loaded with dlopen",
        "rounds": rounds, "common_name": pkiCommonName,
    ]
    summary.merge(try runPKIIssue(bench, floor: floor, directory: directory, issues: issues, rounds: rounds)) { $1 }
    if rsaIssues > 0 {
        summary.merge(try runPKIRSA(bench, floor: floor, directory: directory, count: rsaIssues, rounds: rounds)) { $1 }
    }
    if revokes > 0 { summary["revoke"] = try runPKIRevoke(directory: directory, count: revokes) }
    return summary
}
