/// Each namespace's own keyring (issue 19): every entry stored under `namespaces/<uuid>/` is encrypted
/// by the keys of that namespace, which no other namespace's entries use. The namespace keyring is
/// kept at `core/namespace-keyring/<uuid>`, encrypted by the vault's keyring (and seal-wrapped when
/// the seal wraps); deleting the namespace deletes it, after which the namespace's entries, wherever
/// copies of them went, open with no key the vault holds: a crypto-shred.
///
/// A namespace keyring is a ``Keyring`` like the vault's: numbered terms, new writes under the
/// active one. It rotates on its own when its active term has made as many encryptions as the
/// vault's rotation policy allows; its count is saved and reloaded as the vault's is.
extension Barrier {
    /// Where every namespace's entries live: `namespaces/<uuid>/...`.
    package static let namespacePrefix = "namespaces/"
    /// Where namespace keyrings are stored, encrypted by the vault's keyring.
    package static let namespaceKeyringPrefix = "core/namespace-keyring/"

    /// The `<uuid>` of `namespaces/<uuid>/...`.
    package static func namespaceUUID(of path: String) -> String? {
        withNamespaceUUID(of: path) { String(decoding: $0, as: UTF8.self) }
    }

    /// Calls `body` with the bytes of the `<uuid>` of `namespaces/<uuid>/...`: a UUID's 36 characters at
    /// a fixed offset, found without scanning (this runs on every read and write in a namespace). Nil
    /// when `path` holds none.
    static func withNamespaceUUID<R>(of path: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R? {
        let start = namespacePrefix.utf8.count
        var path = path
        return path.withUTF8 { bytes in
            guard bytes.count > start + 36, bytes[start + 36] == UInt8(ascii: "/") else { return nil }
            return body(UnsafeBufferPointer(rebasing: bytes[start..<(start + 36)]))
        }
    }

    /// The keyring that encrypts `path`: the namespace's for `namespaces/<uuid>/...`, else `root`.
    func keyring(for path: String, root: Keyring) throws(CofferError) -> Keyring {
        guard path.hasBytePrefix(Barrier.namespacePrefix) else { return root }
        switch Barrier.withNamespaceUUID(of: path, { uuid in namespaceRings.withLock { $0[uuidBytes: uuid] } }) {
        case .some(.some(let ring)):
            return ring
        case .some(.none):
            throw CofferError(
                .integrity,
                "the keyring of namespace \(Barrier.namespaceUUID(of: path) ?? "") is not loaded: the namespace was deleted, or its key destroyed"
            )
        case .none:
            throw CofferError(.integrity, "storage key '\(path)' names no namespace")
        }
    }

    /// Makes and stores a new keyring for the namespace `uuid`, and loads it.
    package func createNamespaceKeyring(_ uuid: String, now: Timestamp) throws(CofferError) {
        guard let root = currentRing() else { throw CofferError.sealedError }
        let ring = Keyring(
            rootKey: root.rootKey,
            terms: [1: .init(number: 1, key: SecureBytes(randomCount: AESGCM.keySize), installTime: now)],
            activeTerm: 1
        )
        try storeNamespaceKeyring(uuid, ring)
        namespaceRings.withLock { $0[uuid: uuid] = ring }
    }

    private func storeNamespaceKeyring(_ uuid: String, _ ring: Keyring) throws(CofferError) {
        let path = Barrier.namespaceKeyringPrefix + uuid
        try physical.put(path, try sealedEntry(path, secret: ring.serialized(), wrappingWith: currentSeal()))
    }

    /// Reads the namespace `uuid`'s keyring from storage and loads it. False when none is stored.
    @discardableResult
    package func loadNamespaceKeyring(_ uuid: String) throws(CofferError) -> Bool {
        guard let root = currentRing() else { throw CofferError.sealedError }
        let path = Barrier.namespaceKeyringPrefix + uuid
        guard let stored = try physical.get(path) else { return false }
        var blob = try openSealWrap(stored, path: path)
        defer { if SealWrap.isWrapped(stored) { blob.wipe() } }
        let term = try Envelope.term(of: blob, path: path)
        guard let key = root.terms[term]?.key else {
            throw CofferError(
                .integrity,
                "the keyring of namespace \(uuid) names key term \(term), which the keyring does not hold"
            )
        }
        let plain = try Envelope.openSecure(key: key, blob: blob, path: path)
        let ring: Keyring
        do {
            ring = try Keyring.deserialize(plain, rootKey: root.rootKey)
        } catch {
            throw CofferError(.integrity, "the stored keyring of namespace \(uuid) is malformed")
        }
        try loadNamespaceKeyUsage(uuid, ring)
        // A reload (the keyring changed beneath this barrier) never goes back to an older term.
        namespaceRings.withLock { rings in
            if let current = rings[uuid: uuid], current.activeTerm > ring.activeTerm { return }
            rings[uuid: uuid] = ring
        }
        return true
    }

    /// The namespace keyring at `key` changed beneath this barrier: read it again, or forget it if
    /// it was deleted. Only for namespaces loaded here.
    package func namespaceKeyringChanged(_ key: String) {
        let uuid = String(key.dropFirst(Barrier.namespaceKeyringPrefix.count))
        guard namespaceRings.withLock({ $0[uuid: uuid] }) != nil else { return }
        if (try? loadNamespaceKeyring(uuid)) == false { namespaceRings.withLock { $0.removeValue(forKey: uuid) } }
    }

    /// Deletes the namespace `uuid`'s keyring from storage and memory (its keys are zeroed once no
    /// request still holds them). Its entries cannot be decrypted afterwards.
    package func destroyNamespaceKeyring(_ uuid: String) throws(CofferError) {
        guard currentRing() != nil else { throw CofferError.sealedError }
        try physical.delete(Barrier.namespaceKeyringPrefix + uuid)
        namespaceRings.withLock { $0.removeValue(forKey: uuid) }
    }

    /// Adds a term to the namespace `uuid`'s keyring; new writes in the namespace use it.
    @discardableResult
    package func rotateNamespaceKeyring(_ uuid: String, now: Timestamp) throws(CofferError) -> UInt32 {
        try withKeyringWriteLock { () throws(CofferError) in try rotateNamespaceLocked(uuid, now: now) }
    }

    private func rotateNamespaceLocked(_ uuid: String, now: Timestamp) throws(CofferError) -> UInt32 {
        guard let ring = namespaceRings.withLock({ $0[uuid: uuid] }) else {
            throw CofferError(.notFound, "namespace \(uuid) has no keyring loaded")
        }
        let next = ring.rotated(now: now)
        try storeNamespaceKeyring(uuid, next)
        namespaceRings.withLock { $0[uuid: uuid] = next }
        return next.activeTerm
    }

    /// The active term of the namespace `uuid`'s keyring and its encryptions since it was loaded.
    package func namespaceKeyStatus(
        _ uuid: String
    ) throws(CofferError) -> (term: UInt32, installTime: Timestamp, encryptions: Int64) {
        guard let ring = namespaceRings.withLock({ $0[uuid: uuid] }) else {
            throw CofferError(.notFound, "namespace \(uuid) has no keyring loaded")
        }
        return (ring.active.number, ring.active.installTime, ring.encryptions.load(ordering: .relaxed))
    }

    /// Counts one encryption by a namespace keyring and rotates it when its active term is spent.
    func countedInNamespace(_ ring: Keyring, path: String) throws(CofferError) {
        let count = ring.encryptions.wrappingAdd(1, ordering: .relaxed).newValue
        let spent = count >= rotateAfterEncryptions.load(ordering: .relaxed)
        guard spent || count % KeyUsage.saveEvery == 0, let uuid = Barrier.namespaceUUID(of: path) else { return }
        guard spent else { return try saveNamespaceKeyUsage(uuid, ring) }
        try withKeyringWriteLockIfAvailable { () throws(CofferError) in
            guard let current = namespaceRings.withLock({ $0[uuid: uuid] }), current.activeTerm == ring.activeTerm
            else {
                return
            }
            _ = try rotateNamespaceLocked(uuid, now: clock.now())
        }
    }
}

/// A namespace keyring's encryption count, kept as the vault's is (KeyUsage.swift): saved every
/// ``KeyUsage/saveEvery`` encryptions at `namespaces/<uuid>/core/key-usage` under the namespace's
/// active term, and read at load with that many added for what a crash may have lost.
extension Barrier {
    static func namespaceKeyUsagePath(_ uuid: String) -> String { namespacePrefix + uuid + "/" + KeyUsage.path }

    func saveNamespaceKeyUsage(_ uuid: String, _ ring: Keyring) throws(CofferError) {
        let path = Barrier.namespaceKeyUsagePath(uuid)
        let result: Result<Void, CofferError> = usageWrites.withLock { _ in
            let entry: JSONValue = [
                "term": .int(ring.activeTerm), "encryptions": .int(ring.encryptions.load(ordering: .relaxed)),
            ]
            do throws(CofferError) {
                // Sealed directly (not through `put`), so that this write does not count itself.
                let blob = try Envelope.seal(
                    key: ring.active.key,
                    term: ring.activeTerm,
                    path: path,
                    plaintext: entry.serialized()
                )
                try physical.put(path, blob)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    private func loadNamespaceKeyUsage(_ uuid: String, _ ring: Keyring) throws(CofferError) {
        let path = Barrier.namespaceKeyUsagePath(uuid)
        var count: Int64 = 0
        if let blob = try physical.get(path) {
            let term = try Envelope.term(of: blob, path: path)
            guard let opener = ring.terms[term]?.opener,
                let json = try? JSONValue.parse(try Envelope.openBytes(opener: opener, blob: blob, path: path)),
                let stored = json["encryptions"]?.intValue, let storedTerm = json["term"]?.intValue
            else {
                throw CofferError(.integrity, "the stored encryption count of namespace \(uuid) is malformed")
            }
            if storedTerm == Int(ring.activeTerm) { count = Int64(stored) }
        }
        ring.encryptions.store(count.addingSaturating(KeyUsage.saveEvery), ordering: .relaxed)
    }
}

extension Barrier {
    /// Opens a stored entry with the vault's own keyring, whatever its path: what someone holding
    /// the vault's keys (and not the namespace's) could read of a namespace's entry. For checking
    /// crypto-shredding; the request path never calls it.
    package func openWithVaultKeyring(_ stored: [UInt8], path: String) throws(CofferError) -> [UInt8] {
        guard let root = currentRing() else { throw CofferError.sealedError }
        let blob = try openSealWrap(stored, path: path)
        _ = try Envelope.term(of: blob, path: path)
        // Every term of the vault's keyring, not only the one the entry names.
        for candidate in root.terms.values {
            if let plain = try? Envelope.openBytes(opener: candidate.opener, blob: blob, path: path) { return plain }
        }
        throw Envelope.authenticationFailure(path)
    }
}

/// The keyrings of namespaces, by namespace uuid. A lookup by a storage key's bytes (every read and
/// write in a namespace) makes no String: a uuid's 36 bytes are five words, and its first word is
/// random enough to be its hash.
struct NamespaceRings {
    private enum Key: Hashable {
        case uuid(UInt64, UInt64, UInt64, UInt64, UInt32)
        /// Anything but 36 bytes: not a uuid Coffer makes, kept exactly as given.
        case other(String)

        init(_ bytes: UnsafeBufferPointer<UInt8>) {
            guard bytes.count == 36 else {
                self = .other(String(decoding: bytes, as: UTF8.self))
                return
            }
            let raw = UnsafeRawBufferPointer(bytes)
            self = .uuid(
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 32, as: UInt32.self)
            )
        }

        init(_ uuid: String) {
            var uuid = uuid
            self = uuid.withUTF8 { Key($0) }
        }

        func hash(into hasher: inout Hasher) {
            switch self {
            case .uuid(let first, _, _, _, _): hasher.combine(first)
            case .other(let text): hasher.combine(text)
            }
        }
    }

    private var rings: [Key: Keyring] = [:]

    subscript(uuid uuid: String) -> Keyring? {
        get { rings[Key(uuid)] }
        set { rings[Key(uuid)] = newValue }
    }

    subscript(uuidBytes uuid: UnsafeBufferPointer<UInt8>) -> Keyring? { rings[Key(uuid)] }

    mutating func removeValue(forKey uuid: String) { rings[Key(uuid)] = nil }
}
