// In-process benchmark: KV v2 through the Swift API against its physical floor (one SQLite point
// read and one AES-256-GCM open of the same size), with and without an audit device.
//
//   swift run -c release coffer-bench [--iterations N] [--json PATH]
//
// Reports distributions (p50, p90, p99, max) and single-thread operations per second. Machines are
// shared and noisy: compare medians and ratios measured in the same run, not absolute numbers.
import COpenSSL
import Coffer
import Engines
import Foundation

var iterations = 20_000
var jsonPath: String?
var only: String?
var args = CommandLine.arguments.dropFirst()
while let arg = args.popFirst() {
    switch arg {
    case "--iterations": iterations = Int(args.popFirst() ?? "") ?? iterations
    case "--json": jsonPath = args.popFirst()
    case "--only": only = args.popFirst()
    default:
        print("usage: coffer-bench [--iterations N] [--json PATH]")
        exit(2)
    }
}

func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

struct Result {
    let name: String
    let samples: [UInt64]
    func percentile(_ p: Double) -> Double {
        Double(samples[min(samples.count - 1, Int(Double(samples.count) * p))]) / 1000
    }
    var p50: Double { percentile(0.50) }
    var p90: Double { percentile(0.90) }
    var p99: Double { percentile(0.99) }
    var max: Double { Double(samples.last!) / 1000 }
    var opsPerSecond: Double { Double(samples.count) / (Double(samples.reduce(0, +)) / 1e9) }
    var json: [String: Any] {
        ["name": name, "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max, "ops_per_s": opsPerSecond, "n": samples.count]
    }
}

var results: [Result] = []

@MainActor func measure(_ name: String, _ body: () throws -> Void) rethrows {
    if let only, !name.hasPrefix(only) { return }
    for _ in 0..<min(2000, iterations / 10) { try body() }  // warm up
    var samples = [UInt64](repeating: 0, count: iterations)
    for i in 0..<iterations {
        let start = nowNanos()
        try body()
        samples[i] = nowNanos() - start
    }
    samples.sort()
    let r = Result(name: name, samples: samples)
    results.append(r)
    print(String(format: "  %-28@ p50 %8.2f µs  p99 %8.2f µs  %10.0f ops/s", name as NSString, r.p50, r.p99, r.opsPerSecond))
}

let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-bench-\(UUID().uuidString)")
try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: dir) }

let (vault, _) = try Vault.openDev(storage: .sqlite(path: dir.appendingPathComponent("bench.db").path), rootTokenID: "bench-root")
let token = try vault.handle(Request(.update, "auth/token/create", data: ["policies": ["reader"], "ttl": "1h"], token: "bench-root")).auth!.clientToken
_ = try vault.handle(Request(.update, "sys/policies/acl/reader", data: ["policy": #"path "secret/data/app/*" { capabilities = ["read", "create", "update"] }"#], token: "bench-root"))
let payload: [String: JSONValue] = ["username": "service-account", "password": .string(String(repeating: "p", count: 64))]
let kv = vault.kv(token: token)
try kv.put("app/db", payload)

print("coffer-bench: \(iterations) iterations per operation, one thread")
let readRequest = Request(.read, "secret/data/app/db", token: token)
try measure("kv_read (Swift API)") { _ = try vault.handle(readRequest) }
try measure("kv_read (wire JSON)") { _ = vault.core.handleWire(method: "GET", path: "secret/data/app/db", token: token, body: []) }
try measure("token lookup-self") { _ = try vault.handle(Request(.read, "auth/token/lookup-self", token: token)) }
var n = 0
try measure("kv_write") {
    n += 1
    _ = try vault.handle(Request(.update, "secret/data/app/w\(n % 100)", data: ["data": .object(payload)], token: token))
}

// The floor: one SQLite point read of the stored version row, and one AES-256-GCM open of the same size.
let physical = vault.core.barrier.physical
let rowKey = try physical.listRecursive(prefix: "logical/").first { $0.contains("/versions/") }!
let row = try physical.get(rowKey)!
try measure("floor: sqlite point read") { _ = try physical.get(rowKey) }
let key = SecureBytes(randomCount: 32)
let nonce = Random.bytes(12)
let sealed = try AESGCM.seal(key: key, nonce: nonce, plaintext: [UInt8](repeating: 7, count: row.count - 33), aad: Array(rowKey.utf8))
let aad = Array(rowKey.utf8)
measure("floor: aes-256-gcm open") { _ = AESGCM.open(key: key, nonce: nonce, sealed: sealed, aad: aad) }

// Transit: encrypt and decrypt of 64 bytes through the in-process fast path (token and ACL checks,
// cached key, AES-256-GCM, vault:v1: framing), next to raw OpenSSL EVP AES-256-GCM of 64 bytes in the
// same run: a fresh EVP_CIPHER_CTX and a random nonce per call, as a caller of OpenSSL needs.
try vault.core.mount(MountEntry(path: "transit/", type: "transit"))
_ = try vault.handle(Request(.update, "transit/keys/bench", token: "bench-root"))
_ = try vault.handle(Request(.update, "sys/policies/acl/transit", data: ["policy": #"path "transit/encrypt/bench" { capabilities = ["update"] } path "transit/decrypt/bench" { capabilities = ["update"] }"#], token: "bench-root"))
let transitToken = try vault.handle(Request(.update, "auth/token/create", data: ["policies": ["transit"], "ttl": "1h"], token: "bench-root")).auth!.clientToken
let block = [UInt8](repeating: 0x5A, count: 64)
let sealedBlock = try TransitEngine.encrypt(core: vault.core, token: transitToken, mount: "transit", key: "bench", plaintext: block)
try measure("transit encrypt 64 B") {
    _ = try TransitEngine.encrypt(core: vault.core, token: transitToken, mount: "transit", key: "bench", plaintext: block)
}
try measure("transit decrypt 64 B") {
    _ = try TransitEngine.decrypt(core: vault.core, token: transitToken, mount: "transit", key: "bench", ciphertext: sealedBlock)
}
let encryptBody = Array(#"{"plaintext":"\#(Data(block).base64EncodedString())"}"#.utf8)
try measure("transit encrypt (wire JSON)") {
    _ = vault.core.handleWire(method: "POST", path: "transit/encrypt/bench", token: transitToken, body: encryptBody)
}
let rawKey = SecureBytes(randomCount: 32)
var rawOut = [UInt8](repeating: 0, count: 64 + 16)
var rawNonce = [UInt8](repeating: 0, count: 12)
measure("raw EVP aes-256-gcm 64 B") {
    rawKey.withUnsafeBytes { k in
        rawNonce.withUnsafeMutableBytes { n in
            _ = RAND_bytes(n.baseAddress!.assumingMemoryBound(to: UInt8.self), 12)
            block.withUnsafeBytes { p in
                rawOut.withUnsafeMutableBytes { o in
                    _ = AESGCM.seal(key: k, nonce: UnsafeRawBufferPointer(n), plaintext: p, aad: UnsafeRawBufferPointer(start: nil, count: 0), output: o)
                }
            }
        }
    }
}

// The same read with one file audit device.
_ = try vault.handle(Request(.update, "sys/audit/file", data: ["type": "file", "options": ["file_path": .string(dir.appendingPathComponent("audit.log").path)]], token: "bench-root"))
try measure("kv_read + file audit") { _ = try vault.handle(readRequest) }

guard only == nil else { exit(0) }
let read = results[0]
let floor = results.first { $0.name == "floor: sqlite point read" }!.p50 + results.first { $0.name == "floor: aes-256-gcm open" }!.p50
let audited = results.first { $0.name == "kv_read + file audit" }!
print("")
print("| operation | p50 µs | p90 µs | p99 µs | max µs | ops/s |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for r in results {
    print(String(format: "| %@ | %.2f | %.2f | %.2f | %.1f | %.0f |", r.name as NSString, r.p50, r.p90, r.p99, r.max, r.opsPerSecond))
}
print("")
print(String(format: "KV read p50 / floor p50 (one sqlite read + one AES-GCM open): %.1fx (a KV v2 read is two barrier reads: metadata and version)", read.p50 / floor))
print(String(format: "file audit cost on KV read throughput: %.0f%%", (1 - audited.opsPerSecond / read.opsPerSecond) * 100))
let transitEncrypt = results.first { $0.name == "transit encrypt 64 B" }!
let transitDecrypt = results.first { $0.name == "transit decrypt 64 B" }!
let rawEVP = results.first { $0.name == "raw EVP aes-256-gcm 64 B" }!
// Medians, not means: on a shared machine a few preempted samples move the mean of a 2 µs operation a lot.
let transitRatio = rawEVP.p50 / transitEncrypt.p50
print(String(format: "transit throughput at the median, as a share of raw EVP AES-256-GCM: encrypt %.0f%%, decrypt %.0f%% (goal >= 30%%)", transitRatio * 100, rawEVP.p50 / transitDecrypt.p50 * 100))

if let jsonPath {
    var uts = utsname()
    uname(&uts)
    let machine = withUnsafeBytes(of: &uts.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let document: [String: Any] = [
        "command": CommandLine.arguments.joined(separator: " "), "iterations": iterations, "cores": ProcessInfo.processInfo.activeProcessorCount,
        "machine": machine, "coffer_version": CofferVersion.versionString, "date": ISO8601DateFormatter().string(from: Date()),
        "results": results.map(\.json), "kv_read_over_floor": read.p50 / floor,
        "audit_cost_fraction": 1 - audited.opsPerSecond / read.opsPerSecond, "transit_encrypt_over_raw_evp": transitRatio,
    ]
    try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: jsonPath))
    print("wrote \(jsonPath)")
}
vault.close()
