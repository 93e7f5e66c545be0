import Foundation
import Synchronization
import Testing

@testable import CofferCore

/// glibc's sched_setaffinity(2) (pid 0: the calling thread), which Swift's Glibc module leaves out
/// (a GNU extension).
private let setAffinity = unsafeBitCast(
    dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity"),
    to: (@convention(c) (pid_t, Int, UnsafeMutablePointer<cpu_set_t>) -> Int32).self
)

/// Runs `body` on a thread pinned to `cpu`, and returns what it returned.
private func onCPU<T: Sendable>(_ cpu: Int, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let thread = try #require(
        startThread(detached: false) {
            var set = cpu_set_t()
            withUnsafeMutableBytes(of: &set) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            withUnsafeMutableBytes(of: &set) { bytes in bytes[cpu / 8] |= UInt8(1) << UInt8(cpu % 8) }
            let pinned = setAffinity(0, MemoryLayout<cpu_set_t>.size, &set)
            let outcome: Result<T, any Error> =
                pinned == 0 ? Result { try body() } : .failure(CofferError(.internal, "could not pin to CPU \(cpu)"))
            result.withLock { $0 = outcome }
        }
    )
    pthread_join(thread, nil)
    return try result.withLock { $0! }.get()
}

/// The CPUs a test runs its pinned readers on: one for each copy a per-CPU cache keeps here.
private var pinnedCPUs: [Int] {
    Array(0..<min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), PerCPU.copies))
}

@Suite struct PerCPUCacheTests {
    @Test func aChangeReachesEveryCopyAndRefusesOlderFills() {
        let cache = PerCPUCache<String, Int>()
        // Every copy holds the old value, filled by a lookup there.
        for copy in 0..<cache.copies {
            let (value, ticket) = cache.lookup("k", copy: copy)
            #expect(value == nil)
            cache.fill("k", 1, ticket)
            #expect(cache.lookup("k", copy: copy).value == 1)
        }
        // Tickets taken before the change: what their readers got from storage is older than it.
        let stale = (0..<cache.copies).map { cache.lookup("other", copy: $0).ticket }
        cache.update("k", to: 2)
        let holding = (0..<cache.copies).filter { cache.lookup("k", copy: $0).value != nil }
        #expect(holding.count <= 1, "only the writer's copy keeps the new value")
        for copy in holding { #expect(cache.lookup("k", copy: copy).value == 2) }
        for ticket in stale { cache.fill("other", 9, ticket) }
        for copy in 0..<cache.copies { #expect(cache.lookup("other", copy: copy).value == nil) }
        // A fill after the change is kept; removing everything reaches every copy too.
        for copy in 0..<cache.copies { cache.fill("k", 3, cache.lookup("k", copy: copy).ticket) }
        #expect(cache.count == cache.copies)
        cache.removeAll()
        #expect(cache.count == 0)
        cache.update("gone", to: nil)
        for copy in 0..<cache.copies { #expect(cache.lookup("gone", copy: copy).value == nil) }
    }

    @Test func aFullCopyIsEmptiedBeforeItTakesMore() {
        let cache = PerCPUCache<Int, Int>(limit: 3)
        for key in 0..<3 { cache.fill(key, key, cache.lookup(key, copy: 0).ticket) }
        #expect(cache.count == 3)
        cache.fill(0, 10, cache.lookup(0, copy: 0).ticket)  // a key it holds: replaced, nothing dropped
        #expect(cache.count == 3 && cache.lookup(0, copy: 0).value == 10)
        cache.fill(3, 3, cache.lookup(3, copy: 0).ticket)
        #expect(cache.count == 1 && cache.lookup(3, copy: 0).value == 3)
    }

    /// The barrier's per-CPU handles on the keyring: a rotation's new term is readable on every CPU,
    /// and once sealed no CPU reads, though each had read before.
    @Test func everyCPUFollowsTheKeyring() throws {
        let barrier = Barrier(physical: InMemoryBackend())
        let root = SecureBytes(randomCount: 32)
        try barrier.initialize(rootKey: root, now: Timestamp(seconds: 1))
        try barrier.put("x", [1])
        for cpu in pinnedCPUs { #expect(try onCPU(cpu) { try barrier.get("x") } == [1], "CPU \(cpu)") }
        try barrier.rotate(now: Timestamp(seconds: 2))
        try barrier.put("x", [2])
        for cpu in pinnedCPUs { #expect(try onCPU(cpu) { try barrier.get("x") } == [2], "CPU \(cpu) after a rotation") }
        barrier.seal()
        for cpu in pinnedCPUs {
            let error = #expect(throws: CofferError.self, "CPU \(cpu) once sealed") {
                try onCPU(cpu) { try barrier.get("x") }
            }
            #expect(error?.code == .sealed, "CPU \(cpu): \(String(describing: error))")
        }
        try barrier.unseal(rootKey: root)
        for cpu in pinnedCPUs { #expect(try onCPU(cpu) { try barrier.get("x") } == [2], "CPU \(cpu) unsealed again") }
    }

    /// The token store's per-CPU handles on its salt: once sealed, no CPU hashes a token, though each
    /// had before; unsealed, every CPU hashes as before.
    @Test func everyCPUFollowsTheTokenSalt() throws {
        let (core, result) = try makeCore()
        let before = try core.tokens.hash("a token")
        for cpu in pinnedCPUs { #expect(try onCPU(cpu) { try core.tokens.hash("a token") } == before, "CPU \(cpu)") }
        core.sealVault()
        for cpu in pinnedCPUs {
            let error = #expect(throws: CofferError.self, "CPU \(cpu) once sealed") {
                try onCPU(cpu) { try core.tokens.hash("a token") }
            }
            #expect(error?.code == .sealed, "CPU \(cpu): \(String(describing: error))")
        }
        _ = try core.unseal(key: result.keys[0].unsafeCopy)
        for cpu in pinnedCPUs {
            #expect(try onCPU(cpu) { try core.tokens.hash("a token") } == before, "CPU \(cpu) unsealed again")
        }
    }

    /// A revoked token, a narrowed policy, a new secret version and a seal are seen by readers on
    /// every CPU, each of which had cached the old state in its own copy (token, compiled ACL, KV
    /// metadata, the read cache's ciphertext, the route table).
    @Test func readersOnEveryCPUSeeAChangeMadeOnAnother() throws {
        let dir = TemporaryDirectory()
        let (vault, _) = try Vault.openDev(storage: .sqlite(path: dir.file("v.db")), rootTokenID: "root")
        defer { vault.close() }
        let root = vault.kv(token: "root")
        try root.put("app/db", ["password": "v1"])
        // The reader policy, allowing reads under `glob`.
        func allowReads(_ glob: String) throws {
            let policy = #"path "\#(glob)" { capabilities = ["read"] }"#
            _ = try vault.handle(
                Request(.update, "sys/policies/acl/reader", data: ["policy": .string(policy)], token: "root")
            )
        }
        try allowReads("secret/data/app/*")
        let created = try vault.handle(
            Request(.update, "auth/token/create", data: ["policies": ["reader"]], token: "root")
        )
        let token = try #require(created.auth?.clientToken)
        @Sendable func read() throws -> String? {
            try vault.kv(token: token).get("app/db")?.data["password"]?.stringValue
        }
        for cpu in pinnedCPUs { #expect(try onCPU(cpu, read) == "v1", "CPU \(cpu)") }

        try root.put("app/db", ["password": "v2"])
        for cpu in pinnedCPUs { #expect(try onCPU(cpu, read) == "v2", "CPU \(cpu) after a new version") }

        try allowReads("secret/data/other/*")
        for cpu in pinnedCPUs {
            #expect(throws: CofferError.self, "CPU \(cpu) after the policy changed") { try onCPU(cpu, read) }
        }
        try allowReads("secret/data/app/*")
        for cpu in pinnedCPUs { #expect(try onCPU(cpu, read) == "v2", "CPU \(cpu) with the policy back") }

        _ = try vault.handle(Request(.update, "auth/token/revoke", data: ["token": .string(token)], token: "root"))
        for cpu in pinnedCPUs {
            #expect(throws: CofferError.self, "CPU \(cpu) after the token was revoked") { try onCPU(cpu, read) }
        }

        // Every CPU has read; sealed, none can (the core refuses first: the barrier's own handles are
        // checked in everyCPUFollowsTheKeyring).
        @Sendable func rootRead() throws -> String? { try root.get("app/db")?.data["password"]?.stringValue }
        for cpu in pinnedCPUs { #expect(try onCPU(cpu, rootRead) == "v2", "CPU \(cpu) before sealing") }
        _ = try vault.handle(Request(.update, "sys/seal", token: "root"))
        for cpu in pinnedCPUs {
            let sealed = #expect(throws: CofferError.self, "CPU \(cpu) once sealed") { try onCPU(cpu, rootRead) }
            #expect(sealed?.code == .sealed, "CPU \(cpu): \(String(describing: sealed))")
        }
    }
}
