import Testing

@testable import CofferCore

@Suite struct BarrierTests {
    func unsealedBarrier() throws -> (Barrier, InMemoryBackend) {
        let physical = InMemoryBackend()
        let barrier = Barrier(physical: physical)
        try barrier.initialize(rootKey: SecureBytes(randomCount: 32), now: Timestamp(seconds: 1))
        return (barrier, physical)
    }

    @Test func entriesAreEncryptedWithTheLayoutTheDesignNames() throws {
        let (barrier, physical) = try unsealedBarrier()
        let secret = Array("top secret value".utf8)
        try barrier.put("logical/x/secret", secret)
        let stored = try #require(try physical.get("logical/x/secret"))
        #expect(stored.count == 5 + 12 + secret.count + 16)
        #expect(Array(stored[0..<4]) == [0, 0, 0, 1], "term 1, big-endian")
        #expect(stored[4] == 1, "format version 1")
        #expect(!stored.windows(ofCount: secret.count).contains { Array($0) == secret })
        #expect(try barrier.get("logical/x/secret") == secret)
    }

    /// Entries under `namespaces/<uuid>/` use that namespace's keyring, found from the key's bytes;
    /// a key whose uuid has no keyring loaded, or that names no uuid, is refused saying which.
    @Test func namespaceEntriesFindTheirKeyringFromTheStorageKey() throws {
        let (barrier, physical) = try unsealedBarrier()
        let (a, b) = (Random.uuid(), Random.uuid())
        try barrier.createNamespaceKeyring(a, now: Timestamp(seconds: 2))
        try barrier.createNamespaceKeyring(b, now: Timestamp(seconds: 2))
        try barrier.put("namespaces/\(a)/logical/x", Array("in a".utf8))
        try barrier.put("namespaces/\(b)/logical/x", Array("in b".utf8))
        #expect(try barrier.get("namespaces/\(a)/logical/x") == Array("in a".utf8))
        #expect(try barrier.get("namespaces/\(b)/logical/x") == Array("in b".utf8))
        // An entry moved to the other namespace does not open with that namespace's keys.
        try physical.put("namespaces/\(b)/logical/y", try #require(try physical.get("namespaces/\(a)/logical/x")))
        #expect(throws: CofferError.self) { try barrier.get("namespaces/\(b)/logical/y") }
        try barrier.destroyNamespaceKeyring(a)
        #expect {
            try barrier.get("namespaces/\(a)/logical/x")
        } throws: { ($0 as? CofferError)?.message.contains("keyring of namespace \(a) is not loaded") == true }
        try physical.put("namespaces/not-a-uuid/logical/x", try #require(try physical.get("namespaces/\(b)/logical/x")))
        #expect {
            try barrier.get("namespaces/not-a-uuid/logical/x")
        } throws: { ($0 as? CofferError)?.message.contains("names no namespace") == true }
        #expect(try barrier.get("namespaces/\(b)/logical/x") == Array("in b".utf8))
    }

    @Test func aFlippedBitATruncationOrAMovedEntryFailsNamingThePath() throws {
        let (barrier, physical) = try unsealedBarrier()
        try barrier.put("a", Array("alpha".utf8))
        try barrier.put("b", Array("bravo".utf8))
        let a = try #require(try physical.get("a"))

        for index in [0, 4, 8, 20, a.count - 1] {
            var flipped = a
            flipped[index] ^= 0x01
            try physical.put("a", flipped)
            expectError(.integrity, containing: "'a'") { _ = try barrier.get("a") }
        }
        try physical.put("a", Array(a.prefix(20)))
        expectError(.integrity, containing: "truncated") { _ = try barrier.get("a") }
        try physical.put("a", Array(a.dropLast(1)))
        expectError(.integrity, containing: "'a' failed authentication") { _ = try barrier.get("a") }
        // Copying b's ciphertext over a must not return b's plaintext.
        try physical.put("a", try #require(try physical.get("b")))
        expectError(.integrity, containing: "'a'") { _ = try barrier.get("a") }
        #expect(try barrier.get("b") == Array("bravo".utf8), "the untouched entry still reads")
    }

    @Test func rotationAddsATermAndOldTermsStillDecrypt() throws {
        let (barrier, physical) = try unsealedBarrier()
        try barrier.put("old", [1])
        #expect(try barrier.rotate(now: Timestamp(seconds: 2)) == 2)
        try barrier.put("new", [2])
        #expect(try physical.get("new")?[3] == 2)
        #expect(try barrier.get("old") == [1])
        #expect(try barrier.keyStatus().term == 2)
    }

    @Test func sealedBarrierRefusesEverythingAndUnsealRestores() throws {
        let physical = InMemoryBackend()
        let barrier = Barrier(physical: physical)
        let root = SecureBytes(randomCount: 32)
        try barrier.initialize(rootKey: root, now: Timestamp(seconds: 1))
        try barrier.rotate(now: Timestamp(seconds: 2))
        try barrier.put("x", [42])
        barrier.seal()
        #expect(barrier.isSealed)
        expectError(.sealed, containing: "Vault is sealed") { _ = try barrier.get("x") }
        expectError(.sealed) { try barrier.put("x", [1]) }
        expectError(.integrity) { try barrier.unseal(rootKey: SecureBytes(randomCount: 32)) }
        #expect(barrier.isSealed)
        try barrier.unseal(rootKey: root)
        #expect(try barrier.get("x") == [42])
        #expect(try barrier.keyStatus().term == 2)
    }

    @Test func oversizedValuesAreRefused() throws {
        let barrier = Barrier(physical: InMemoryBackend(), maxEntrySize: 1024)
        try barrier.initialize(rootKey: SecureBytes(randomCount: 32), now: .zero)
        expectError(.invalidArgument, containing: "limit of 1024 bytes") {
            try barrier.put("big", [UInt8](repeating: 0, count: 1025))
        }
        #expect(try barrier.get("big") == nil)
    }
}

extension Array {
    func windows(ofCount n: Int) -> [ArraySlice<Element>] {
        guard n > 0, count >= n else { return [] }
        return (0...(count - n)).map { self[$0..<($0 + n)] }
    }
}
