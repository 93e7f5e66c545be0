public import CofferCore
import Engines

/// How a ``RemoteClient`` reaches a cofferd (or any Vault v1 API server), caches what it reads, retries
/// and falls back when the store cannot be reached. docs/delivery.md describes every setting; the C ABI
/// takes the same settings as `{"remote": {...}}` JSON (``init(json:)``).
public struct RemoteConfiguration: Sendable {
    /// How the client gets its token.
    public enum Auth: Sendable {
        /// A token given by the caller; never renewed by the client.
        case token(String)
        /// `auth/<mount>/login` with a role id and a secret id (mount "approle" by default).
        case appRole(roleID: String, secretID: String, mount: String = "approle")
        /// `auth/<mount>/login` with a role and a signed JWT (mount "jwt" by default).
        case jwt(role: String, jwt: String, mount: String = "jwt")
    }

    /// How long answers are cached, how many bytes at most.
    public struct CachePolicy: Sendable {
        /// Seconds an answer is served from the cache without asking the store; 0 caches nothing.
        public var defaultTTL: Double = 300
        /// TTLs by path prefix ("secret/data/app/" → 60); the longest matching prefix wins over
        /// everything else.
        public var ttlByPrefix: [String: Double] = [:]
        /// The environment this process runs in ("production", "staging", …): chooses the TTL from
        /// ``ttlByEnvironment`` when no prefix matches.
        public var environment: String? = nil
        public var ttlByEnvironment: [String: Double] = [:]
        /// Seconds past its TTL an entry may still answer, flagged degraded, while the store cannot
        /// be reached; 0 never serves an expired entry.
        public var maxStale: Double = 300
        /// The cache's bound: the entries' keys, field names and values, as JSON bytes. The entry
        /// closest to expiry is evicted first.
        public var maxBytes: Int = 1 << 20
        /// Subscribe to the server's `kv*` events and drop entries as they change (TTL only when
        /// the server refuses or does not offer events).
        public var invalidateOnEvents = true

        public init() {}

        /// The TTL for `path`: the longest matching prefix, then the environment's, then the default.
        public func ttl(for path: String) -> Double {
            var best: (length: Int, ttl: Double)? = nil
            for (prefix, ttl) in ttlByPrefix where path.hasPrefix(prefix) {
                if best == nil || prefix.utf8.count > best!.length { best = (prefix.utf8.count, ttl) }
            }
            if let best { return best.ttl }
            if let environment, let ttl = ttlByEnvironment[environment] { return ttl }
            return defaultTTL
        }
    }

    /// Retries of a store call that failed to connect or got a 5xx: capped exponential backoff.
    public struct RetryPolicy: Sendable {
        /// Attempts in all (1: no retry).
        public var attempts: Int = 3
        /// Seconds before the first retry (the cap of its random delay with jitter).
        public var initialBackoff: Double = 0.05
        public var maxBackoff: Double = 2
        /// Full jitter (AWS's): a uniformly random delay between 0 and the capped exponential one.
        public var jitter = true

        public init() {}

        /// The delay before retry number `retry` (0 for the first): `min(maxBackoff,
        /// initialBackoff * 2^retry)`, times a random fraction in [0, 1) with jitter.
        public func delay(beforeRetry retry: Int, random: Double = Double.random(in: 0..<1)) -> Double {
            let exponent = Double(min(max(retry, 0), 62))
            let capped = min(maxBackoff, initialBackoff * pow2(exponent))
            let bounded = max(0, capped.isFinite ? capped : maxBackoff)
            return jitter ? bounded * min(max(random, 0), 1) : bounded
        }

        private func pow2(_ exponent: Double) -> Double {
            var result = 1.0
            for _ in 0..<Int(exponent) { result *= 2 }
            return result
        }
    }

    /// Where answers come from when the store cannot be reached and no cache entry is left.
    public struct Fallback: Sendable {
        /// A `KEY=value` file (docs/delivery.md gives the syntax), read when the client opens.
        public var envFile: String? = nil
        /// Then the process environment.
        public var environment = true
        /// Explicit names: path → field → variable (`["secret/data/app": ["password": "DB_PASS"]]`).
        /// Paths without an entry use ``EnvFile/variablePrefix(for:)``.
        public var mapping: [String: [String: String]] = [:]

        public init() {}
    }

    /// `http://host:port` or `https://host:port`.
    public var address: String
    /// PEM certificates to trust for https (nil: the system's trust store).
    public var caPEM: String?
    /// Sent as `X-Vault-Namespace` when not empty.
    public var namespace: String = ""
    public var auth: Auth
    public var cache = CachePolicy()
    public var retry = RetryPolicy()
    public var fallback = Fallback()
    /// Seconds for one HTTP exchange (connect included).
    public var timeout: Double = 10

    public init(address: String, auth: Auth, caPEM: String? = nil, namespace: String = "") {
        self.address = address
        self.auth = auth
        self.caPEM = caPEM
        self.namespace = namespace
    }

    /// Checks every setting; the error names the one that is wrong (never a token or secret).
    public func validate() throws(CofferError) {
        guard HTTPClient.URL(address) != nil else {
            throw CofferError(
                .invalidArgument,
                "remote.address \"\(address.prefix(200))\" is not an http:// or https:// URL with a host"
            )
        }
        switch auth {
        case .token(let token):
            guard !token.isEmpty else { throw CofferError(.invalidArgument, "remote.auth.token is empty") }
        case .appRole(let roleID, _, let mount):
            guard !roleID.isEmpty else { throw CofferError(.invalidArgument, "remote.auth.approle.role_id is empty") }
            guard !mount.isEmpty else { throw CofferError(.invalidArgument, "remote.auth.approle.mount is empty") }
        case .jwt(let role, let jwt, let mount):
            guard !jwt.isEmpty else { throw CofferError(.invalidArgument, "remote.auth.jwt.jwt is empty") }
            guard !mount.isEmpty else { throw CofferError(.invalidArgument, "remote.auth.jwt.mount is empty") }
            _ = role
        }
        func seconds(_ value: Double, _ name: String, allowZero: Bool = true) throws(CofferError) {
            guard value.isFinite, value >= 0, allowZero || value > 0, value <= 10 * 365 * 86400 else {
                throw CofferError(.invalidArgument, "\(name) is \(value); use seconds from 0 to 10 years")
            }
        }
        try seconds(cache.defaultTTL, "remote.cache.ttl")
        try seconds(cache.maxStale, "remote.cache.max_stale")
        for (prefix, ttl) in cache.ttlByPrefix { try seconds(ttl, "remote.cache.prefixes[\"\(prefix)\"]") }
        for (name, ttl) in cache.ttlByEnvironment { try seconds(ttl, "remote.cache.environments[\"\(name)\"]") }
        guard cache.maxBytes >= 0 else {
            throw CofferError(.invalidArgument, "remote.cache.max_bytes is \(cache.maxBytes); use 0 or more")
        }
        guard (1...100).contains(retry.attempts) else {
            throw CofferError(.invalidArgument, "remote.retry.attempts is \(retry.attempts); use 1 to 100")
        }
        try seconds(retry.initialBackoff, "remote.retry.initial_backoff")
        try seconds(retry.maxBackoff, "remote.retry.max_backoff")
        guard retry.maxBackoff >= retry.initialBackoff else {
            throw CofferError(.invalidArgument, "remote.retry.max_backoff is less than remote.retry.initial_backoff")
        }
        try seconds(timeout, "remote.timeout", allowZero: false)
    }
}
