// `cofferd agent`: a local caching proxy of the v1 API with auto-auth (docs/run-and-agent.md).
//
// Every request is forwarded to the upstream cofferd; a request without a token gets the agent's
// auto-auth token (OpenBao's `use_auto_auth_token`). GET answers that are static secrets (no lease,
// not under sys/, auth/ or identity/) are cached per token for `default_ttl`, and served up to
// `stale_if_error` longer while the upstream cannot be reached.
import Coffer
import CofferCore
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The agent's view of the upstream: a raw v1 call, and the auto-auth token.
protocol AgentUpstream: Sendable {
    /// Sends `method` to `/v1/<target>` (target: path and query) with `token`, or with the agent's
    /// auto-auth token when `token` is nil ("" sends none), in `namespace` (nil: the configured one);
    /// throws when the upstream cannot be reached.
    func forward(
        method: String,
        target: String,
        body: [UInt8],
        token: String?,
        namespace: String?
    ) throws -> (status: Int, body: [UInt8])
}

/// Cached GET answers, per token and target. Bounded: the oldest entry goes when it is full.
final class AgentCache: Sendable {
    struct Entry {
        var body: [UInt8]
        var stored: Double
        var ttl: Double
    }

    /// The TTLs: the library client's policy (a default, and the longest matching prefix).
    let policy: RemoteConfiguration.CachePolicy
    let staleIfError: Double
    let maxEntries: Int
    let entries = Mutex<[String: Entry]>([:])

    init(policy: RemoteConfiguration.CachePolicy, staleIfError: Double, maxEntries: Int) {
        self.policy = policy
        self.staleIfError = staleIfError
        self.maxEntries = maxEntries
    }

    static func key(token: String, target: String) -> String {
        // The token itself is not kept in the key: its SHA-256.
        Hex.encode(Digest.sha256(Array(token.utf8))) + " " + target
    }

    /// Whether a GET of `target` may be cached: not under sys/, auth/, identity/ or cubbyhole/, except
    /// sys/internal/ui/mounts/ (the CLI's `kv` commands ask it which KV version a mount is first).
    static func cacheable(_ target: String) -> Bool {
        let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        if path.hasPrefix("sys/internal/ui/mounts/") { return true }
        return
            !(path.hasPrefix("sys/") || path.hasPrefix("auth/") || path.hasPrefix("identity/")
            || path.hasPrefix("cubbyhole/"))
    }

    /// Whether the answer is a static secret: 200, JSON with `data`, no lease, not wrapped.
    static func isStaticSecret(_ status: Int, _ body: [UInt8]) -> Bool {
        guard status == 200, let json = try? JSONValue.parse(body), json["data"]?.objectValue != nil else {
            return false
        }
        return (json["lease_id"]?.stringValue ?? "").isEmpty && json["wrap_info"]?.objectValue == nil
    }

    func fresh(_ key: String, now: Double) -> [UInt8]? {
        entries.withLock { entries in
            guard let entry = entries[key], now - entry.stored < entry.ttl else { return nil }
            return entry.body
        }
    }

    func stale(_ key: String, now: Double) -> [UInt8]? {
        entries.withLock { entries in
            guard let entry = entries[key], now - entry.stored < entry.ttl + staleIfError else { return nil }
            return entry.body
        }
    }

    func store(_ key: String, path: String, _ body: [UInt8], now: Double) {
        let ttl = policy.ttl(for: path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path)
        entries.withLock { entries in
            if entries[key] == nil, entries.count >= maxEntries,
                let oldest = entries.min(by: { $0.value.stored < $1.value.stored })?.key
            {
                entries[oldest] = nil
            }
            entries[key] = Entry(body: body, stored: now, ttl: ttl)
        }
    }

    /// A write to `target` drops the cached reads of that path (and KV v2's data path for a
    /// metadata path), for every token.
    func invalidate(_ target: String) {
        var path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        var paths = [path]
        if let range = path.firstRange(of: "/metadata/") {
            path.replaceSubrange(range, with: "/data/")
            paths.append(path)
        }
        entries.withLock { entries in
            for key in entries.keys {
                let entryPath = key.split(separator: " ", maxSplits: 1).last.map {
                    $0.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
                }
                if let entryPath, paths.contains(entryPath) { entries[key] = nil }
            }
        }
    }
}

/// The agent's HTTP server.
final class AgentServer: Sendable {
    let config: AgentConfig
    let upstream: any AgentUpstream
    let cache: AgentCache
    let logger: Logger
    let maxRequestSize = 32 << 20
    static let tokenHeader = HTTPField.Name("X-Vault-Token")!
    static let cacheHeader = HTTPField.Name("X-Coffer-Cache")!
    static let namespaceHeader = HTTPField.Name("X-Vault-Namespace")!
    static let wrapTTLHeader = HTTPField.Name("X-Vault-Wrap-TTL")!

    init(config: AgentConfig, upstream: any AgentUpstream, logger: Logger) {
        self.config = config
        self.upstream = upstream
        var policy = RemoteConfiguration.CachePolicy()
        policy.defaultTTL = config.cacheTTL
        policy.ttlByPrefix = config.prefixTTLs
        self.cache = AgentCache(policy: policy, staleIfError: config.staleIfError, maxEntries: config.maxEntries)
        self.logger = logger
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// Status, body and the cache header's value (nil: not from or into the cache).
    func answer(
        method: String,
        target: String,
        body: [UInt8],
        clientToken: String?,
        namespace: String? = nil
    ) async -> (Int, [UInt8], String?) {
        guard target.hasPrefix("/v1/") else { return (404, Array(#"{"errors":[]}"#.utf8), nil) }
        let apiTarget = String(target.dropFirst(4))
        // nil: the agent's own token (use_auto_auth_token); "": none.
        let token: String? =
            (clientToken ?? "").isEmpty ? (config.useAutoAuthToken && config.autoAuth != nil ? nil : "") : clientToken
        let cacheKey =
            (method == "GET" && AgentCache.cacheable(apiTarget))
            ? AgentCache.key(token: token ?? "\u{0}agent", target: (namespace.map { $0 + "\u{0}" } ?? "") + apiTarget)
            : nil
        if let cacheKey, let cached = cache.fresh(cacheKey, now: Self.now()) { return (200, cached, "hit") }
        do {
            let (status, answer) = try await offload {
                try self.upstream.forward(
                    method: method,
                    target: apiTarget,
                    body: body,
                    token: token,
                    namespace: namespace
                )
            }
            if let cacheKey {
                if AgentCache.isStaticSecret(status, answer) {
                    cache.store(cacheKey, path: apiTarget, answer, now: Self.now())
                    return (status, answer, "miss")
                }
                if status >= 500, let stale = cache.stale(cacheKey, now: Self.now()) {
                    return (200, stale, "stale")
                }
            } else if method != "GET" && method != "HEAD" && status < 400 {
                cache.invalidate(apiTarget)
            }
            return (status, answer, nil)
        } catch {
            if let cacheKey, let stale = cache.stale(cacheKey, now: Self.now()) {
                logger.warning("upstream unreachable; serving a cached answer", metadata: ["error": "\(error)"])
                return (200, stale, "stale")
            }
            logger.warning("upstream unreachable", metadata: ["error": "\(error)"])
            return Self.error(502, "the agent could not reach the upstream: \(error)")
        }
    }

    static func error(_ status: Int, _ message: String) -> (Int, [UInt8], String?) {
        (status, JSONValue.object(["errors": .array([.string(message)])]).serialized(), nil)
    }

    func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive { try work() }
    }

    func respond(
        _ request: HummingbirdCore.Request,
        _ writer: consuming ResponseWriter,
        _ channel: any Channel
    ) async throws {
        var body: [UInt8] = []
        var tooLarge = false
        for try await chunk in request.body {
            if body.count + chunk.readableBytes > maxRequestSize {
                tooLarge = true
                break
            }
            body.append(contentsOf: chunk.readableBytesView)
        }
        var token = request.headers[Self.tokenHeader]
        if token == nil, let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer ") {
            token = String(authorization.dropFirst("Bearer ".count))
        }
        let (status, out, cacheState): (Int, [UInt8], String?)
        if tooLarge {
            (status, out, cacheState) = Self.error(413, "http: request body too large")
        } else if request.headers[Self.wrapTTLHeader] != nil {
            // Forwarded without the header, the answer would come back unwrapped.
            (status, out, cacheState) = Self.error(
                400,
                "the agent does not forward X-Vault-Wrap-TTL: send wrapping requests to the server itself"
            )
        } else {
            (status, out, cacheState) = await answer(
                method: request.method.rawValue,
                target: request.head.path ?? "/",
                body: body,
                clientToken: token,
                namespace: request.headers[Self.namespaceHeader].flatMap { $0.isEmpty ? nil : $0 }
            )
        }
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        if let cacheState { headers[Self.cacheHeader] = cacheState }
        headers[.contentLength] = String(out.count)
        if tooLarge { headers[.connection] = "close" }
        var buffer = channel.allocator.buffer(capacity: out.count)
        buffer.writeBytes(out)
        try await writer.write(
            response: HTTPResponse(status: .init(code: status), headerFields: headers),
            body: ResponseBody(byteBuffer: buffer)
        )
        if tooLarge { try? await channel.close(mode: .input) }
    }

    /// Serves until SIGTERM or SIGINT.
    func run() async throws {
        let (host, port) = try config.listenHostAndPort()
        let server = Server(
            childChannelSetup: HTTP1Channel(
                responder: { request, writer, channel in try await self.respond(request, writer, channel) },
                configuration: .init(idleTimeout: .seconds(300))
            ),
            configuration: ServerConfiguration(address: .hostname(host, port: port), reuseAddress: true),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        logger.info("agent listening", metadata: ["address": "\(host):\(port)"])
        try await group.run()
    }
}
