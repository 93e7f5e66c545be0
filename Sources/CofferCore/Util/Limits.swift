/// Limits that protect the core from oversized input. Documented in docs/limits.md.
public struct Limits: Sendable {
    /// The largest single stored entry (a KV version's data, a policy), in bytes. Default 1 MiB, as
    /// Vault's integrated storage.
    public var maxEntrySize: Int = 1 << 20

    public init(maxEntrySize: Int = 1 << 20) {
        self.maxEntrySize = maxEntrySize
    }
}
