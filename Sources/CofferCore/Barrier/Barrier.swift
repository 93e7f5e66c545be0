import Synchronization

/// The stored form of every encrypted entry:
/// `term (u32, big-endian) | format version (u8) | nonce (12) | ciphertext | tag (16)`,
/// AES-256-GCM with the header and the entry's storage path as associated data, so an entry copied
/// to another path, truncated or altered by one bit fails to open.
package enum Envelope {
    static let formatVersion: UInt8 = 1
    static let headerSize = 5
    static let overhead = headerSize + AESGCM.nonceSize + AESGCM.tagSize

    static func seal(key: SecureBytes, term: UInt32, path: String, plaintext: [UInt8]) throws(CofferError) -> [UInt8] {
        guard let out = plaintext.withUnsafeBytes({ seal(key: key, term: term, path: path, plaintext: $0) }) else {
            throw CofferError(.internal, "AES-256-GCM encryption failed in OpenSSL for '\(path)'")
        }
        return out
    }

    static func seal(key: SecureBytes, term: UInt32, path: String, secret: SecureBytes) throws(CofferError) -> [UInt8] {
        guard let out = secret.withUnsafeBytes({ seal(key: key, term: term, path: path, plaintext: $0) }) else {
            throw CofferError(.internal, "AES-256-GCM encryption failed in OpenSSL for '\(path)'")
        }
        return out
    }

    /// The sealed entry, or nil if OpenSSL fails.
    static func seal(key: SecureBytes, term: UInt32, path: String, plaintext: UnsafeRawBufferPointer) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: overhead + plaintext.count)
        out[0] = UInt8(term >> 24)
        out[1] = UInt8(term >> 16 & 0xFF)
        out[2] = UInt8(term >> 8 & 0xFF)
        out[3] = UInt8(term & 0xFF)
        out[4] = formatVersion
        var aad = Array(out[0..<headerSize])
        aad.append(contentsOf: path.utf8)
        let ok = out.withUnsafeMutableBytes { buffer in
            let nonce = UnsafeMutableRawBufferPointer(rebasing: buffer[headerSize..<(headerSize + AESGCM.nonceSize)])
            Random.nonce(nonce)
            let body = UnsafeMutableRawBufferPointer(rebasing: buffer[(headerSize + AESGCM.nonceSize)...])
            return key.withUnsafeBytes { k in
                aad.withUnsafeBytes { a in
                    AESGCM.seal(
                        key: k,
                        nonce: UnsafeRawBufferPointer(nonce),
                        plaintext: plaintext,
                        aad: a,
                        output: body
                    )
                }
            }
        }
        return ok ? out : nil
    }

    /// The term recorded in a stored entry, after checking its length and format version.
    static func term(of blob: [UInt8], path: String) throws(CofferError) -> UInt32 {
        guard blob.count >= overhead else {
            throw CofferError(
                .integrity,
                "stored entry at '\(path)' is truncated (\(blob.count) bytes, at least \(overhead) expected)"
            )
        }
        guard blob[4] == formatVersion else {
            throw CofferError(.integrity, "stored entry at '\(path)' has unknown format version \(blob[4])")
        }
        return UInt32(blob[0]) << 24 | UInt32(blob[1]) << 16 | UInt32(blob[2]) << 8 | UInt32(blob[3])
    }

    /// Decrypts `blob` (already checked by `term(of:path:)`) into `output`; false if authentication fails.
    static func open(key: SecureBytes, blob: [UInt8], path: String, output: UnsafeMutableRawBufferPointer) -> Bool {
        open(blob: blob, path: path) { nonce, sealed, aad in
            key.withUnsafeBytes { AESGCM.open(key: $0, nonce: nonce, sealed: sealed, aad: aad, output: output) }
        }
    }

    /// The same with a term's opener (its key schedule kept).
    static func open(opener: GCMOpener, blob: [UInt8], path: String, output: UnsafeMutableRawBufferPointer) -> Bool {
        // Captured unretained (the caller holds the opener): a captured reference was retained.
        let opener = Unmanaged.passUnretained(opener)
        return open(blob: blob, path: path) { nonce, sealed, aad in
            opener._withUnsafeGuaranteedRef { $0.open(nonce: nonce, sealed: sealed, aad: aad, output: output) }
        }
    }

    /// Splits `blob` into nonce and sealed body and builds the associated data (header and path).
    private static func open(
        blob: [UInt8],
        path: String,
        _ decrypt: (UnsafeRawBufferPointer, UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Bool
    ) -> Bool {
        // The associated data (header, then path) on the stack, and no slice of `blob` (a slice
        // retains the array it views).
        var path = path
        return blob.withUnsafeBytes { b in
            path.withUTF8 { p in
                withUnsafeTemporaryAllocation(byteCount: headerSize + p.count, alignment: 1) { aad in
                    aad.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[0..<headerSize]))
                    UnsafeMutableRawBufferPointer(rebasing: aad[headerSize...]).copyMemory(
                        from: UnsafeRawBufferPointer(p)
                    )
                    return decrypt(
                        UnsafeRawBufferPointer(rebasing: b[headerSize..<(headerSize + AESGCM.nonceSize)]),
                        UnsafeRawBufferPointer(rebasing: b[(headerSize + AESGCM.nonceSize)...]),
                        UnsafeRawBufferPointer(aad)
                    )
                }
            }
        }
    }

    static func authenticationFailure(_ path: String) -> CofferError {
        CofferError(
            .integrity,
            "stored entry at '\(path)' failed authentication: it was modified, truncated or copied from another path"
        )
    }

    static func openBytes(opener: GCMOpener, blob: [UInt8], path: String) throws(CofferError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: blob.count - overhead)
        guard out.withUnsafeMutableBytes({ open(opener: opener, blob: blob, path: path, output: $0) }) else {
            throw authenticationFailure(path)
        }
        return out
    }

    static func openSecure(key: SecureBytes, blob: [UInt8], path: String) throws(CofferError) -> SecureBytes {
        try SecureBytes(count: blob.count - overhead) { (buffer) throws(CofferError) in
            guard open(key: key, blob: blob, path: path, output: buffer) else { throw authenticationFailure(path) }
        }
    }
}

/// The keyring: the root key and the barrier's data keys by term. Immutable; rotation makes a new one.
package final class Keyring: Sendable {
    struct Term: Sendable {
        let number: UInt32
        let key: SecureBytes
        let installTime: Timestamp
        /// Decrypts under `key` with its key schedule kept (per-thread-ish contexts, freed with the term).
        let opener: GCMOpener

        init(number: UInt32, key: SecureBytes, installTime: Timestamp) {
            self.number = number
            self.key = key
            self.installTime = installTime
            opener = GCMOpener(key: key)
        }
    }

    let rootKey: SecureBytes
    let terms: [UInt32: Term]
    let activeTerm: UInt32
    /// The active term's opener, reached without a dictionary lookup (whose copy of the term would
    /// retain it) by reads of entries written under the active term: most of them.
    let activeOpener: GCMOpener
    /// Encryptions made under the active term (loaded at unseal with a margin for what a crash may
    /// have lost; see KeyUsage.swift). Random 96-bit nonces are safe for about 2^32 of them.
    let encryptions: Atomic<Int64>

    init(rootKey: SecureBytes, terms: [UInt32: Term], activeTerm: UInt32, encryptions: Int64 = 0) {
        self.rootKey = rootKey
        self.terms = terms
        self.activeTerm = activeTerm
        self.activeOpener = terms[activeTerm]!.opener
        self.encryptions = Atomic(encryptions)
    }

    var active: Term { terms[activeTerm]! }

    func rotated(now: Timestamp) -> Keyring {
        let next = activeTerm + 1
        var terms = self.terms
        terms[next] = Term(number: next, key: SecureBytes(randomCount: AESGCM.keySize), installTime: now)
        return Keyring(rootKey: rootKey, terms: terms, activeTerm: next)
    }

    /// Binary form, kept in secure memory: active (u32) | count (u32) | { term (u32) | install time (i64) | key (32) }.
    func serialized() -> SecureBytes {
        let sorted = terms.values.sorted { $0.number < $1.number }
        return SecureBytes(count: 8 + sorted.count * 44) { out in
            var offset = 0
            func put<T: FixedWidthInteger>(_ v: T) {
                withUnsafeBytes(of: v.bigEndian) { bytes in
                    UnsafeMutableRawBufferPointer(rebasing: out[offset..<(offset + bytes.count)]).copyMemory(
                        from: bytes
                    )
                }
                offset += MemoryLayout<T>.size
            }
            put(activeTerm)
            put(UInt32(sorted.count))
            for term in sorted {
                put(term.number)
                put(term.installTime.nanoseconds)
                term.key.withUnsafeBytes { k in
                    UnsafeMutableRawBufferPointer(rebasing: out[offset..<(offset + 32)]).copyMemory(from: k)
                }
                offset += 32
            }
        }
    }

    static func deserialize(_ bytes: SecureBytes, rootKey: SecureBytes) throws(CofferError) -> Keyring {
        let bad = CofferError(.integrity, "the stored keyring (core/keyring) is malformed")
        return try bytes.withUnsafeBytes { (b) throws(CofferError) -> Keyring in
            func read<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
                var v: T = 0
                withUnsafeMutableBytes(of: &v) {
                    $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[offset..<(offset + MemoryLayout<T>.size)]))
                }
                return T(bigEndian: v)
            }
            guard b.count >= 8 else { throw bad }
            let active = read(0, UInt32.self)
            let count = Int(read(4, UInt32.self))
            guard b.count == 8 + count * 44 else { throw bad }
            var terms: [UInt32: Term] = [:]
            for i in 0..<count {
                let base = 8 + i * 44
                let number = read(base, UInt32.self)
                let installed = Timestamp(nanoseconds: read(base + 4, Int64.self))
                let key = SecureBytes(UnsafeRawBufferPointer(rebasing: b[(base + 12)..<(base + 44)]))
                terms[number] = Term(number: number, key: key, installTime: installed)
            }
            guard terms[active] != nil else { throw bad }
            return Keyring(rootKey: rootKey, terms: terms, activeTerm: active)
        }
    }
}

/// The cryptographic barrier: everything above it sees plaintext, everything below it (storage) sees
/// only ciphertext. Sealed, it holds no key and refuses every read and write.
package final class Barrier: Sendable {
    /// Where the keyring is kept, encrypted by the root key (under term 0).
    package static let keyringPath = "core/keyring"

    package let physical: any PhysicalBackend
    /// The largest plaintext one entry may hold (``Limits/maxEntrySize``).
    package let maxEntrySize: Int
    let clock: any WallClock
    /// The keyring (nil: sealed). Reads reach it through their CPU's handle (`keyring.local()`), so
    /// that a read retains the handle, not the keyring every core's reads share.
    private let keyring = PerCPUValue<Keyring>()
    /// Held by everything that writes the keyring (rotation, rekey, seal migration and rewrap), so
    /// that two of them never build different keyrings from the same one: the last save would win
    /// and entries written under the losing keyring's new term could never be decrypted again.
    private let keyringWrites = Mutex(())
    /// Held by every seal-wrapped write from reading the seal to storing the entry, and by rewrap and
    /// seal migration from reading the wrapped entries to installing the new seal. Without it a
    /// rewrap could put back an entry it read just before a transit key rotation wrote a newer one
    /// (losing that key version and everything encrypted under it), and a write could wrap with a
    /// seal being replaced. Taken before `keyringWrites`, never while holding it.
    private let sealWrapWrites = Mutex(())
    /// The seal that opens seal-wrapped entries and, when it seal-wraps, wraps critical ones.
    private let wrapSeal = Mutex<(any Seal)?>(nil)
    /// `sys/rotate/config`, and the two numbers the write path checks without a lock.
    let rotation = Mutex(RotationPolicy())
    let rotateAfterEncryptions = Atomic<Int64>(RotationPolicy.defaultMaxOperations)
    let rotateAfterSeconds = Atomic<Int64>(0)
    /// Serialises saves of the encryption count, so a lower count never overwrites a higher one.
    let usageWrites = Mutex(())
    /// This vault's meters (Metrics/VaultMeters.swift): the barrier times its own operations.
    package let meters = VaultMeters()
    /// The keyrings of namespaces, by namespace uuid (NamespaceKeys.swift).
    let namespaceRings = Mutex(NamespaceRings())

    package init(
        physical: any PhysicalBackend,
        maxEntrySize: Int = Limits().maxEntrySize,
        clock: any WallClock = SystemClock()
    ) {
        self.physical = physical
        self.maxEntrySize = maxEntrySize
        self.clock = clock
    }

    package var isSealed: Bool { keyring.value == nil }

    private func current() throws(CofferError) -> Keyring {
        guard let ring = currentRing() else { throw CofferError.sealedError }
        return ring
    }

    func currentRing() -> Keyring? { keyring.value }

    func currentSeal() -> (any Seal)? { wrapSeal.withLock { $0 } }

    /// Creates a fresh keyring under `rootKey`, stores it, and leaves the barrier unsealed.
    package func initialize(rootKey: SecureBytes, now: Timestamp) throws(CofferError) {
        let ring = Keyring(
            rootKey: rootKey,
            terms: [1: .init(number: 1, key: SecureBytes(randomCount: AESGCM.keySize), installTime: now)],
            activeTerm: 1
        )
        try persist(ring)
        keyring.set(ring)
    }

    /// Sets the seal used for seal wrap (the core's seal).
    package func setSeal(_ seal: (any Seal)?) {
        wrapSeal.withLock { $0 = seal }
    }

    /// Opens the stored keyring with `rootKey` (and the seal, when the keyring is seal-wrapped). A
    /// wrong root key fails with an integrity error.
    package func unseal(rootKey: SecureBytes) throws(CofferError) {
        guard let stored = try physical.get(Barrier.keyringPath) else {
            throw CofferError(.corruptDatabase, "the keyring (core/keyring) is missing from storage")
        }
        var blob = try SealWrap.open(stored, path: Barrier.keyringPath, seal: wrapSeal.withLock { $0 })
        // The keyring as only the root key protects it: not left behind once opened.
        defer { if SealWrap.isWrapped(stored) { blob.wipe() } }
        _ = try Envelope.term(of: blob, path: Barrier.keyringPath)
        let plain = try Envelope.openSecure(key: rootKey, blob: blob, path: Barrier.keyringPath)
        let ring = try Keyring.deserialize(plain, rootKey: rootKey)
        keyring.set(ring)
        do throws(CofferError) {
            try loadKeyUsage(ring)
        } catch {
            keyring.set(nil)
            throw error
        }
    }

    /// Reads the stored keyring again (it changed beneath this barrier: another process rotated, a
    /// replica applied a rotation). Keeps the current keyring when the stored one cannot be opened
    /// with this root key; a reload never loses a term this barrier can read. Returns false when the
    /// stored keyring is there but does not open with this root key: the data is another vault's (a
    /// snapshot restored by force), and this barrier can no longer read it.
    @discardableResult
    package func reloadKeyring() -> Bool {
        guard let ring = currentRing(), let stored = try? physical.get(Barrier.keyringPath),
            // Not readable now (a seal migration wrapping it with a seal this barrier does not use yet):
            // keep the current keyring.
            let blob = try? SealWrap.open(stored, path: Barrier.keyringPath, seal: wrapSeal.withLock({ $0 })),
            (try? Envelope.term(of: blob, path: Barrier.keyringPath)) != nil
        else { return true }
        // Readable but not under this root key: another vault's keyring.
        guard let plain = try? Envelope.openSecure(key: ring.rootKey, blob: blob, path: Barrier.keyringPath) else {
            return false
        }
        guard let loaded = try? Keyring.deserialize(plain, rootKey: ring.rootKey) else { return true }
        guard loaded.activeTerm >= ring.activeTerm, ring.terms.keys.allSatisfy({ loaded.terms[$0] != nil }) else {
            return true
        }
        keyring.update { current in
            guard let current, current.activeTerm <= loaded.activeTerm else { return }
            if current.activeTerm == loaded.activeTerm {
                loaded.encryptions.store(current.encryptions.load(ordering: .relaxed), ordering: .relaxed)
            }
        }
        keyring.update { current in
            if let existing = current, existing.activeTerm <= loaded.activeTerm { current = loaded }
        }
        return true
    }

    /// Forgets every key. The keys' memory is zeroed once no request still uses them. The active
    /// term's encryption count is saved first (best effort: a crash instead is covered by the
    /// margin added at unseal).
    package func seal(saveKeyUsage save: Bool = true) {
        if save, let ring = keyring.value { try? saveKeyUsage(ring) }
        keyring.set(nil)
        namespaceRings.withLock { $0 = NamespaceRings() }
    }

    /// The root key, for re-wrapping by the seal (rekey, migration).
    package func rootKey() throws(CofferError) -> SecureBytes { try current().rootKey }

    private func persist(_ ring: Keyring) throws(CofferError) {
        try physical.put(Barrier.keyringPath, try sealedKeyring(ring, wrappingWith: wrapSeal.withLock { $0 }))
    }

    /// The stored form of the keyring: encrypted by the root key, then seal-wrapped if `seal` does that.
    package func sealedKeyring(_ given: Keyring? = nil, wrappingWith seal: (any Seal)?) throws(CofferError) -> [UInt8] {
        let ring: Keyring
        if let given { ring = given } else { ring = try current() }
        let blob = try Envelope.seal(key: ring.rootKey, term: 0, path: Barrier.keyringPath, secret: ring.serialized())
        return try SealWrap.wrapIfEnabled(blob, seal: seal)
    }

    /// The stored form of a secret entry: encrypted by the active term, then seal-wrapped if `seal`
    /// does that.
    package func sealedEntry(
        _ path: String,
        secret: SecureBytes,
        wrappingWith seal: (any Seal)?
    ) throws(CofferError) -> [UInt8] {
        let ring = try current()
        let blob = try Envelope.seal(key: ring.active.key, term: ring.active.number, path: path, secret: secret)
        try counted(ring)
        return try SealWrap.wrapIfEnabled(blob, seal: seal)
    }

    /// Stores `plaintext` encrypted by the barrier and, when the seal seal-wraps, by the HSM key
    /// too. For key material that must stay safe even if the root key leaks; `get` opens it.
    package func putSealWrapped(_ path: String, _ plaintext: [UInt8]) throws(CofferError) {
        try withSealWrapWriteLock { () throws(CofferError) in
            let blob = try seal(plaintext, path: path, ring: try current())
            try physical.put(path, try SealWrap.wrapIfEnabled(blob, seal: wrapSeal.withLock { $0 }))
        }
    }

    /// Runs `body` holding the lock seal-wrapped writes take (see `sealWrapWrites`): rewrap and seal
    /// migration run in it, so no seal-wrapped entry changes between their reading it and writing it.
    package func withSealWrapWriteLock<R>(_ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        let result: Result<R, CofferError> = sealWrapWrites.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Opens a seal-wrapped entry's outer layer with the current seal (for rewrap and migration).
    package func openSealWrap(_ stored: [UInt8], path: String) throws(CofferError) -> [UInt8] {
        try SealWrap.open(stored, path: path, seal: wrapSeal.withLock { $0 })
    }

    /// Adds a new term and makes it the one new writes use. Old terms stay for reading. Safe to call
    /// from any number of threads: each call adds exactly one term.
    @discardableResult
    package func rotate(now: Timestamp) throws(CofferError) -> UInt32 {
        try withKeyringWriteLock { () throws(CofferError) in try rotateLocked(now: now) }
    }

    /// Rotates; the caller holds `keyringWrites`.
    func rotateLocked(now: Timestamp) throws(CofferError) -> UInt32 {
        let ring = try current()
        let next = ring.rotated(now: now)
        try persist(next)
        keyring.set(next)
        return next.activeTerm
    }

    /// Runs `body` holding the lock every keyring write takes (rotation, rekey, seal migration,
    /// rewrap), so that what `body` reads of the keyring is still current when it writes.
    package func withKeyringWriteLock<R>(_ body: () throws(CofferError) -> R) throws(CofferError) -> R {
        let result: Result<R, CofferError> = keyringWrites.withLock { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Runs `body` holding the keyring write lock if no one holds it; otherwise does nothing.
    func withKeyringWriteLockIfAvailable(_ body: () throws(CofferError) -> Void) throws(CofferError) {
        let result: Result<Void, CofferError>? = keyringWrites.withLockIfAvailable { _ in
            do throws(CofferError) { return .success(try body()) } catch { return .failure(error) }
        }
        try result?.get()
    }

    /// The active term, when it was installed, and how many encryptions it has made.
    package func keyStatus() throws(CofferError) -> (term: UInt32, installTime: Timestamp, encryptions: Int64) {
        let ring = try current()
        return (ring.active.number, ring.active.installTime, ring.encryptions.load(ordering: .relaxed))
    }

    // MARK: Entries

    /// The decrypted entry at `path`, or nil if none is stored.
    package func get(_ path: String) throws(CofferError) -> [UInt8]? {
        // Unretained: the barrier's meters live as long as it, and a retain here is an atomic write to
        // a line every core's reads share (docs/benchmarks.md, "Two threads on one vault").
        let summary = Unmanaged.passUnretained(meters.barrierGet)
        let timing = summary._withUnsafeGuaranteedRef { $0.begin() }
        defer { summary._withUnsafeGuaranteedRef { $0.end(timing) } }
        guard let local = keyring.local() else { throw CofferError.sealedError }
        guard let stored = try physical.get(path) else { return nil }
        guard SealWrap.isWrapped(stored) else { return try open(stored, path: path, ring: local.value) }
        // The inner entry, which the HSM alone should open: not left behind once opened.
        var inner = try SealWrap.open(stored, path: path, seal: wrapSeal.withLock { $0 })
        defer { inner.wipe() }
        return try open(inner, path: path, ring: local.value)
    }

    func open(_ blob: [UInt8], path: String, ring: Keyring) throws(CofferError) -> [UInt8] {
        // Outside a namespace the root keyring is used as passed: `keyring(for:root:)` would hand back
        // a copy of it, a retain (an atomic write to a line every core's reads share).
        guard path.hasBytePrefix(Barrier.namespacePrefix) else { return try open(blob, path: path, under: ring) }
        return try open(blob, path: path, under: try keyring(for: path, root: ring))
    }

    private func open(_ blob: [UInt8], path: String, under ring: Keyring) throws(CofferError) -> [UInt8] {
        let term = try Envelope.term(of: blob, path: path)
        if term == ring.activeTerm { return try Envelope.openBytes(opener: ring.activeOpener, blob: blob, path: path) }
        guard term != 0, let opener = ring.terms[term]?.opener else {
            throw CofferError(
                .integrity,
                "stored entry at '\(path)' names key term \(term), which the keyring does not hold"
            )
        }
        return try Envelope.openBytes(opener: opener, blob: blob, path: path)
    }

    package func put(_ path: String, _ plaintext: [UInt8]) throws(CofferError) {
        let timing = meters.barrierPut.begin()
        defer { meters.barrierPut.end(timing) }
        try physical.put(path, try seal(plaintext, path: path, ring: try current()))
    }

    func seal(_ plaintext: [UInt8], path: String, ring: Keyring) throws(CofferError) -> [UInt8] {
        guard plaintext.count <= maxEntrySize else {
            throw CofferError.invalid(
                "value is \(plaintext.count) bytes, more than the limit of \(maxEntrySize) bytes per entry"
            )
        }
        let owner = try keyring(for: path, root: ring)
        let active = owner.active
        let sealed = try Envelope.seal(key: active.key, term: active.number, path: path, plaintext: plaintext)
        if owner === ring { try counted(ring) } else { try countedInNamespace(owner, path: path) }
        return sealed
    }

    package func delete(_ path: String) throws(CofferError) {
        let timing = meters.barrierDelete.begin()
        defer { meters.barrierDelete.end(timing) }
        _ = try current()
        try physical.delete(path)
    }

    package func list(_ prefix: String) throws(CofferError) -> [String] {
        let timing = meters.barrierList.begin()
        defer { meters.barrierList.end(timing) }
        _ = try current()
        return try physical.list(prefix: prefix)
    }

    /// The first `limit` children of `prefix`.
    package func list(_ prefix: String, limit: Int) throws(CofferError) -> [String] {
        let timing = meters.barrierList.begin()
        defer { meters.barrierList.end(timing) }
        _ = try current()
        return try physical.list(prefix: prefix, limit: limit)
    }

    /// Encrypts every put (seal-wrapping the keys `sealWrapped` picks) and applies all operations atomically.
    package func batch(_ operations: [StorageOperation], sealWrapped: ((String) -> Bool)? = nil) throws(CofferError) {
        let timing = meters.barrierBatch.begin()
        defer { meters.barrierBatch.end(timing) }
        if let sealWrapped,
            operations.contains(where: { if case .put(let key, _) = $0 { sealWrapped(key) } else { false } })
        {
            try withSealWrapWriteLock { () throws(CofferError) in try batchLocked(operations, sealWrapped: sealWrapped)
            }
        } else {
            try batchLocked(operations, sealWrapped: nil)
        }
    }

    private func batchLocked(_ operations: [StorageOperation], sealWrapped: ((String) -> Bool)?) throws(CofferError) {
        let ring = try current()
        let wrapper = sealWrapped == nil ? nil : wrapSeal.withLock { $0 }
        var sealed: [StorageOperation] = []
        sealed.reserveCapacity(operations.count)
        for op in operations {
            switch op {
            case .put(let key, let value):
                var blob = try seal(value, path: key, ring: ring)
                if let sealWrapped, sealWrapped(key) { blob = try SealWrap.wrapIfEnabled(blob, seal: wrapper) }
                sealed.append(.put(key: key, value: blob))
            case .delete: sealed.append(op)
            }
        }
        try physical.batch(sealed)
    }
}

/// Seal wrap: a barrier entry encrypted once more by an auto-unseal seal (the HSM key). Stored as
/// `FF FF FF FF 53 | seal blob`; the first four bytes are a term no keyring reaches and the fifth
/// is not a barrier format version, so an unaware reader fails with "unknown format version"
/// instead of misreading it.
package enum SealWrap {
    package static let marker: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0x53]

    package static func isWrapped(_ blob: [UInt8]) -> Bool {
        blob.count > marker.count && blob[0] == 0xFF && blob[1] == 0xFF && blob[2] == 0xFF && blob[3] == 0xFF
            && blob[4] == 0x53
    }

    /// `blob` wrapped by `seal` when it is an auto-unseal seal with seal wrap on; else `blob`.
    package static func wrapIfEnabled(_ blob: [UInt8], seal: (any Seal)?) throws(CofferError) -> [UInt8] {
        guard let seal, seal.isAutoUnseal, seal.sealWrap else { return blob }
        return marker + (try seal.wrap(SecureBytes(blob), unsealKey: nil))
    }

    /// The barrier entry inside a seal-wrapped `blob`; `blob` itself when it is not seal-wrapped.
    static func open(_ blob: [UInt8], path: String, seal: (any Seal)?) throws(CofferError) -> [UInt8] {
        guard isWrapped(blob) else { return blob }
        guard let seal, seal.isAutoUnseal else {
            throw CofferError.invalid(
                "the entry at '\(path)' is seal-wrapped by an HSM key, but this Coffer is opened with a \(seal?.type ?? "no") seal; "
                    + "open it with the pkcs11 seal that wrapped it"
            )
        }
        return try seal.unwrap(Array(blob[marker.count...]), unsealKey: nil).unsafeCopy
    }
}
