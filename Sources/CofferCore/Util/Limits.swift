/// Limits that protect the core from oversized input. Documented in docs/limits.md.
public struct Limits: Sendable {
    /// The largest single stored entry (a KV version's data, a policy), in bytes. Default 1 MiB, as
    /// Vault's integrated storage.
    public var maxEntrySize: Int = 1 << 20
    /// The most a SQLite vault's read cache holds, in bytes: entries as stored (ciphertext), so a hot
    /// secret is read without touching the file; 0 turns the cache off. Default 32 MiB.
    /// docs/threat-model.md says what the cache changes.
    public var readCacheBytes: Int = 32 << 20

    public init(maxEntrySize: Int = 1 << 20, readCacheBytes: Int = 32 << 20) {
        self.maxEntrySize = maxEntrySize
        self.readCacheBytes = readCacheBytes
    }
}
