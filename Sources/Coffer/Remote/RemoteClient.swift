public import CofferCore
import CofferVault
import Engines
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One answer of the Vault v1 API, as ``RemoteClient/request(_:_:body:token:namespace:)`` returns it.
public struct RemoteResponse: Sendable {
    public var status: Int
    /// Header names lower-cased, in the order received.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }

    /// The body parsed as JSON; nil when it is empty or not JSON.
    public var json: JSONValue? { body.isEmpty ? nil : try? JSONValue.parse(body) }

    /// The server's `{"errors": [...]}` joined, or "HTTP <status>".
    public var errorText: String {
        let errors = json?["errors"]?.arrayValue?.compactMap(\.stringValue) ?? []
        return errors.isEmpty ? "HTTP \(status)" : errors.joined(separator: "; ")
    }

    /// The error a status of 400 or more stands for (the server's message, code by status: 403
    /// permission denied, 404 not found, 503 sealed or unavailable, …); nil below 400.
    public var error: CofferError? {
        guard status >= 400 else { return nil }
        let text = errorText
        if status == 503 && text.contains("sealed") { return CofferError(.sealed, text) }
        return RemoteClient.error(status: status, text)
    }
}

/// A secret as ``RemoteClient/read(_:)`` delivers it, with where it came from.
public struct SecretRead: Sendable, Equatable {
    public var fields: [String: JSONValue]
    /// The KV v2 version; nil for KV v1 and the env file and environment.
    public var version: Int?
    public var source: SecretSource
    /// True when the store could not be reached (the answer is stale or a fallback's).
    public var degraded: Bool
}

/// An event of the client: `client/degraded` (the store cannot be reached; reads are served by the
/// fallback chain), `client/recovered` (it answers again), and each `kv*` event the server sent
/// (`kv-v2/data-write`, …; data: the event's `metadata` and how many cache entries it `dropped`).
/// Never a token or secret.
public struct ClientEvent: Sendable, Equatable {
    public let id: UInt64
    public let type: String
    public let time: Timestamp
    public let data: [String: JSONValue]

    /// `{"id", "event_type", "timestamp", "data"}`.
    public var json: JSONValue {
        ["id": .int(id), "event_type": .string(type), "timestamp": .string(time.rfc3339), "data": .object(data)]
    }
}

/// A client of a remote cofferd (any Vault v1 API server): authentication with renewal, a read cache
/// invalidated by the server's events, retries with capped exponential backoff and full jitter, and
/// a fallback chain (store → stale cache → env file → process environment) that says which source
/// answered and raises a degraded flag and event. docs/delivery.md. Thread-safe.
public final class RemoteClient: Sendable {
    public let configuration: RemoteConfiguration
    private let baseURL: String
    private let options: HTTPClient.Options
    /// Connections kept between requests to the store (no connect or TLS handshake per request).
    private let connections = HTTPClient.ConnectionPool()
    private let cache: SecretCache
    private let meters = RemoteMeters()
    private let bus = EventBus(capacity: 256)
    private let envFileVariables: [String: String]
    private let degradedFlag = Atomic<Bool>(false)
    private let lastSourceCode = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)

    private struct TokenState {
        var token: String?
        /// Monotonic seconds: renew from `renewAt`, log in again after `expiresAt`.
        var renewAt = Double.infinity
        var expiresAt = Double.infinity
        var renewable = false
    }
    private let tokenState = Mutex(TokenState())
    /// Held while logging in or renewing, so that threads do not log in at once.
    private let loginLock = Mutex(())

    private struct Subscription {
        var socket: WebSocketClient?
        var thread: pthread_t?
    }
    private let subscription = Mutex(Subscription())

    /// Checks the configuration, reads the env file, logs in (AppRole/JWT; a failure to reach the
    /// store is not an error here: the client starts degraded and logs in when it answers) and
    /// starts the event subscription.
    public init(_ configuration: RemoteConfiguration) throws(CofferError) {
        try configuration.validate()
        self.configuration = configuration
        var base = configuration.address
        while base.hasSuffix("/") { base.removeLast() }
        baseURL = base
        var options = HTTPClient.Options(caPEM: configuration.caPEM)
        options.connectTimeout = min(configuration.timeout, 5)
        options.ioTimeout = configuration.timeout
        options.deadline = configuration.timeout
        options.maximumBodyBytes = 32 << 20
        self.options = options
        cache = SecretCache(maximumBytes: configuration.cache.maxBytes)
        if let path = configuration.fallback.envFile {
            envFileVariables = try EnvFile.load(path)
        } else {
            envFileVariables = [:]
        }
        if case .token(let token) = configuration.auth {
            tokenState.withLock { $0.token = token }
        } else {
            do {
                _ = try currentToken()
            } catch  where error.code == .unavailable {
                // Started degraded; the next store call logs in.
            }
        }
        if configuration.cache.invalidateOnEvents && configuration.cache.maxBytes > 0 {
            startSubscription()
        }
    }

    deinit { close() }

    /// Stops the event subscription (waiting for its thread) and drops the cache. Later reads still
    /// work (without invalidation); idempotent. Call it when done: the subscription's thread keeps
    /// the client alive until then (a C handle's coffer_close calls it).
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let (socket, thread) = subscription.withLock { ($0.socket, $0.thread) }
        socket?.shutdown()
        if let thread, pthread_equal(thread, pthread_self()) == 0 { pthread_join(thread, nil) }
        subscription.withLock { $0 = Subscription() }
        cache.removeAll()
    }

    // MARK: State

    /// True while the store cannot be reached (set when a store call fails after its retries,
    /// cleared when one succeeds).
    public var isDegraded: Bool { degradedFlag.load(ordering: .acquiring) }

    /// The source of the last successful ``read(_:)`` on this client (any thread); nil before one.
    public var lastSource: SecretSource? {
        let code = lastSourceCode.load(ordering: .relaxed)
        return code == 0 ? nil : SecretSource.allCases[code - 1]
    }

    /// The token the client uses now (logging in first if it has none). Never logged.
    public var token: String {
        get throws(CofferError) { try currentToken() }
    }

    public var metrics: RemoteMetrics {
        var snapshot = meters.snapshot
        snapshot.degraded = isDegraded
        snapshot.cacheEntries = cache.count
        snapshot.cacheBytes = cache.bytes
        return snapshot
    }

    /// Calls `handler` with every client event from now on (on the thread that caused it; return
    /// quickly). Returns the id for ``unsubscribe(_:)``.
    @discardableResult
    public func subscribe(_ handler: @escaping @Sendable (ClientEvent) -> Void) -> Int {
        bus.subscribe { handler(ClientEvent($0)) }
    }

    public func unsubscribe(_ id: Int) { bus.unsubscribe(id) }

    /// The last 256 client events with an id above `after`, oldest first.
    public func recentEvents(after: UInt64 = 0) -> [ClientEvent] {
        bus.recent(after: after).map(ClientEvent.init)
    }

    /// ``metrics`` as text: OpenBao's sys/metrics JSON shape or the Prometheus exposition.
    public func metricsText(_ format: MetricsFormat) -> String {
        format == .json ? metrics.json() : metrics.prometheus()
    }

    /// Drops every cached answer; how many there were.
    @discardableResult
    public func invalidateAll() -> Int { cache.removeAll() }

    // MARK: Requests

    /// One Vault v1 call (`path` without `/v1/`, a query allowed) with the client's token unless
    /// `token` is given; retried on a connection failure or a 5xx (not 501) with capped exponential
    /// backoff and full jitter. A 4xx is returned as it is. With the client's own (AppRole/JWT)
    /// token a 403 logs in again once, unless the token is still valid (then the policy denied it). Throws `.unavailable` when no attempt reached the store.
    /// `namespace` overrides the configuration's; `wrapTTL` is sent as `X-Vault-Wrap-TTL`.
    public func request(
        _ method: String,
        _ path: String,
        body: [UInt8] = [],
        token: String? = nil,
        namespace: String? = nil,
        wrapTTL: String? = nil
    ) throws(CofferError) -> RemoteResponse {
        let own = token == nil
        let used: String
        if let token { used = token } else { used = try currentToken() }
        let response = try send(method, path, body: body, token: used, namespace: namespace, wrapTTL: wrapTTL)
        // A 403 is either a token that is no longer valid (log in again) or a policy that denies the
        // path (logging in again would only mint tokens): ask the server which.
        if own && response.status == 403, isLoginAuth,
            (try? send("GET", "auth/token/lookup-self", body: [], token: used, namespace: namespace, wrapTTL: nil))?
                .status != 200
        {
            tokenState.withLock { $0 = TokenState() }
            let fresh = try currentToken()
            return try send(method, path, body: body, token: fresh, namespace: namespace, wrapTTL: wrapTTL)
        }
        return response
    }

    /// A secret through the cache and the fallback chain. `path` is the API path of a KV read:
    /// `secret/data/app` (KV v2; `?version=N` allowed) or `kv/app` (KV v1). A fresh cache entry
    /// answers without a call; otherwise the store; when the store cannot be reached (after the
    /// retries): a stale cache entry (within max stale), the env file, the environment, in that
    /// order. A 404 or 403 from the store is an error, not a reason to fall back.
    public func read(_ path: String) throws(CofferError) -> SecretRead {
        let start = TCP.monotonicSeconds()
        let key = RemoteClient.normalize(path)
        var stale: SecretCache.Entry? = nil
        switch cache.lookup(key, now: start) {
        case .fresh(let entry):
            lastSourceCode.store(2, ordering: .relaxed)
            let read = SecretRead(fields: entry.fields, version: entry.version, source: .cache, degraded: isDegraded)
            meters.recordRead(seconds: TCP.monotonicSeconds() - start, hit: true, fallback: nil, failed: false)
            return read
        case .stale(let entry): stale = entry
        case .missing: break
        }
        do {
            let result = try readFromStore(key)
            meters.recordRead(seconds: TCP.monotonicSeconds() - start, hit: false, fallback: nil, failed: false)
            lastSourceCode.store(1, ordering: .relaxed)
            return result
        } catch let error where error.code == .unavailable {
            do {
                let result = try fallback(key, stale: stale, storeError: error)
                meters.recordRead(
                    seconds: TCP.monotonicSeconds() - start,
                    hit: false,
                    fallback: result.source,
                    failed: false
                )
                lastSourceCode.store((SecretSource.allCases.firstIndex(of: result.source) ?? 0) + 1, ordering: .relaxed)
                return result
            } catch {
                meters.recordRead(seconds: TCP.monotonicSeconds() - start, hit: false, fallback: nil, failed: true)
                throw error
            }
        } catch {
            meters.recordRead(seconds: TCP.monotonicSeconds() - start, hit: false, fallback: nil, failed: true)
            throw error
        }
    }

    /// `secret` + `app` → `secret/data/app` (KV v2), with `?version=N` when `version` is given.
    public func readKV(mount: String, path: String, version: Int? = nil) throws(CofferError) -> SecretRead {
        var trimmedMount = Substring(mount)
        while trimmedMount.hasSuffix("/") { trimmedMount = trimmedMount.dropLast() }
        var trimmedPath = Substring(path)
        while trimmedPath.hasPrefix("/") { trimmedPath = trimmedPath.dropFirst() }
        let full = "\(trimmedMount)/data/\(trimmedPath)" + (version.map { "?version=\($0)" } ?? "")
        return try read(full)
    }

    // MARK: - Store reads

    private func readFromStore(_ key: String) throws(CofferError) -> SecretRead {
        let response = try request("GET", key)
        switch response.status {
        case 200:
            guard let data = response.json?["data"]?.objectValue else {
                throw CofferError(.internal, "the store's answer for \(key) has no data object")
            }
            var fields = data
            var version: Int? = nil
            if let inner = data["data"]?.objectValue, let metadata = data["metadata"]?.objectValue {
                fields = inner
                version = metadata["version"]?.intValue
            }
            let policy = configuration.cache
            let ttl = policy.ttl(for: key)
            cache.store(
                key,
                fields: fields,
                version: version,
                ttl: ttl,
                maxStale: policy.maxStale,
                now: TCP.monotonicSeconds()
            )
            return SecretRead(fields: fields, version: version, source: .store, degraded: false)
        case 404:
            cache.remove(key)
            throw CofferError(.notFound, "no secret at \(key) (never written, deleted or destroyed)")
        case let status where status >= 500 && status != 501:
            throw CofferError(.unavailable, "the store answered \(key) with \(response.errorText)")
        default:
            throw RemoteClient.error(status: response.status, "reading \(key): \(response.errorText)")
        }
    }

    private func fallback(
        _ key: String,
        stale: SecretCache.Entry?,
        storeError: CofferError
    ) throws(CofferError)
        -> SecretRead
    {
        if let stale {
            return SecretRead(fields: stale.fields, version: stale.version, source: .cache, degraded: true)
        }
        var plainPath = Substring(key)
        if let query = plainPath.firstIndex(of: "?") { plainPath = plainPath[..<query] }
        let path = String(plainPath)
        let mapping = configuration.fallback.mapping[path]
        let fromFile = EnvFile.fields(for: path, in: envFileVariables, mapping: mapping)
        if !fromFile.isEmpty {
            return SecretRead(
                fields: fromFile.mapValues { .string($0) },
                version: nil,
                source: .envFile,
                degraded: true
            )
        }
        if configuration.fallback.environment {
            let fromEnvironment = EnvFile.fields(for: path, in: RemoteClient.processEnvironment(), mapping: mapping)
            if !fromEnvironment.isEmpty {
                return SecretRead(
                    fields: fromEnvironment.mapValues { .string($0) },
                    version: nil,
                    source: .environment,
                    degraded: true
                )
            }
        }
        let names =
            mapping.map { $0.values.sorted().joined(separator: ", ") } ?? "\(EnvFile.variablePrefix(for: path))*"
        throw CofferError(
            .unavailable,
            "\(storeError.message); no fallback has \(path) (no cache entry; no \(names) in "
                + (configuration.fallback.envFile == nil ? "" : "the env file or ")
                + (configuration.fallback.environment ? "the environment)" : "any enabled source)")
        )
    }

    // MARK: - HTTP with retries

    private func send(
        _ method: String,
        _ path: String,
        body: [UInt8],
        token: String,
        namespace: String?,
        wrapTTL: String? = nil
    ) throws(CofferError) -> RemoteResponse {
        var trimmed = Substring(path)
        while trimmed.hasPrefix("/") { trimmed = trimmed.dropFirst() }
        if trimmed.hasPrefix("v1/") { trimmed = trimmed.dropFirst(3) }
        let url = "\(baseURL)/v1/\(trimmed)"
        var headers: [(String, String)] = [("Accept", "application/json")]
        if !token.isEmpty { headers.append(("X-Vault-Token", token)) }
        let ns = namespace ?? configuration.namespace
        if !ns.isEmpty { headers.append(("X-Vault-Namespace", ns)) }
        if let wrapTTL, !wrapTTL.isEmpty { headers.append(("X-Vault-Wrap-TTL", wrapTTL)) }
        if !body.isEmpty { headers.append(("Content-Type", "application/json")) }
        let verb = method.uppercased()
        let policy = configuration.retry
        var lastReason = ""
        var last: RemoteResponse? = nil
        for attempt in 0..<policy.attempts {
            if attempt > 0 {
                meters.update { $0.retries &+= 1 }
                sleepSeconds(policy.delay(beforeRetry: attempt - 1))
            }
            do throws(HTTPClient.Failure) {
                let answer = try HTTPClient.send(
                    verb,
                    url,
                    headers: headers,
                    body: body,
                    options: options,
                    pool: connections
                )
                let response = RemoteResponse(status: answer.status, headers: answer.headers, body: answer.body)
                if response.status >= 500 && response.status != 501 {
                    lastReason = "HTTP \(response.status)"
                    last = response
                    continue
                }
                markRecovered()
                return response
            } catch {
                lastReason = error.message
                last = nil
            }
        }
        meters.update { $0.storeFailures &+= 1 }
        markDegraded(reason: lastReason)
        if let last { return last }
        throw CofferError(
            .unavailable,
            "the store cannot be reached after \(policy.attempts) attempt\(policy.attempts == 1 ? "" : "s"): \(lastReason)"
        )
    }

    private func sleepSeconds(_ seconds: Double) {
        guard seconds > 0 else { return }
        var ts = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
        var left = timespec()
        while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
    }

    private func markDegraded(reason: String) {
        guard !degradedFlag.exchange(true, ordering: .acquiringAndReleasing) else { return }
        bus.publish(
            "client/degraded",
            data: ["address": .string(baseURL), "reason": .string(String(reason.prefix(300)))],
            time: SystemClock().now()
        )
    }

    private func markRecovered() {
        guard degradedFlag.exchange(false, ordering: .acquiringAndReleasing) else { return }
        bus.publish("client/recovered", data: ["address": .string(baseURL)], time: SystemClock().now())
    }

    // MARK: - Auth

    private var isLoginAuth: Bool {
        if case .token = configuration.auth { return false }
        return true
    }

    private func currentToken() throws(CofferError) -> String {
        if case .token(let token) = configuration.auth { return token }
        let now = TCP.monotonicSeconds()
        let state = tokenState.withLock { $0 }
        if let token = state.token, now < state.renewAt { return token }
        return try loginLock.withLock { (_: inout ()) throws(CofferError) -> String in
            let state = tokenState.withLock { $0 }
            let now = TCP.monotonicSeconds()
            if let token = state.token, now < state.renewAt { return token }
            if let token = state.token, state.renewable, now < state.expiresAt, let renewed = renew(token) {
                return renewed
            }
            return try login()
        }
    }

    /// `auth/token/renew-self`; nil when it failed or the lease it gives is under 2 s (then the
    /// caller logs in again).
    private func renew(_ token: String) -> String? {
        guard
            let response = try? send(
                "POST",
                "auth/token/renew-self",
                body: Array("{}".utf8),
                token: token,
                namespace: nil
            ),
            response.status == 200, let auth = response.json?["auth"],
            let lease = auth["lease_duration"]?.intValue, lease >= 2
        else { return nil }
        let now = TCP.monotonicSeconds()
        tokenState.withLock {
            $0.renewAt = now + Double(lease) * 2 / 3
            $0.expiresAt = now + Double(lease)
            $0.renewable = auth["renewable"]?.boolValue ?? false
        }
        meters.update { $0.renewals &+= 1 }
        return token
    }

    private func login() throws(CofferError) -> String {
        let mount: String
        var body: [String: JSONValue]
        switch configuration.auth {
        case .token(let token): return token
        case .appRole(let roleID, let secretID, let m):
            mount = m
            body = ["role_id": .string(roleID)]
            if !secretID.isEmpty { body["secret_id"] = .string(secretID) }
        case .jwt(let role, let jwt, let m):
            mount = m
            body = ["jwt": .string(jwt)]
            if !role.isEmpty { body["role"] = .string(role) }
        }
        var payload = JSONValue.object(body).serialized()
        defer { payload.wipe() }
        let path = "auth/\(mount)/login"
        let response = try send("POST", path, body: payload, token: "", namespace: nil)
        guard response.status == 200 else {
            let message = "login at \(path) refused: \(response.errorText)"
            // Credentials refused (Vault answers 400 or 403): permission denied; a 5xx as it is.
            if response.status >= 500 { throw RemoteClient.error(status: response.status, message) }
            throw CofferError(.permissionDenied, message)
        }
        guard let auth = response.json?["auth"], let token = auth["client_token"]?.stringValue, !token.isEmpty else {
            throw CofferError(.internal, "login at \(path): the answer has no auth.client_token")
        }
        let lease = auth["lease_duration"]?.intValue ?? 0
        let now = TCP.monotonicSeconds()
        tokenState.withLock {
            $0.token = token
            $0.renewAt = lease > 0 ? now + Double(lease) * 2 / 3 : .infinity
            $0.expiresAt = lease > 0 ? now + Double(lease) : .infinity
            $0.renewable = auth["renewable"]?.boolValue ?? false
        }
        meters.update { $0.logins &+= 1 }
        return token
    }

    // MARK: - Events

    private func startSubscription() {
        if let thread = startThread(detached: false, { [self] in subscriptionLoop() }) {
            subscription.withLock { $0.thread = thread }
        } else {
            meters.update { $0.subscription = "off" }
        }
    }

    private var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// Sleeps up to `seconds` in short slices; false when the client closed meanwhile.
    private func wait(_ seconds: Double) -> Bool {
        var left = seconds
        while left > 0 {
            if isClosed { return false }
            sleepSeconds(min(left, 0.05))
            left -= 0.05
        }
        return !isClosed
    }

    private func subscriptionLoop() {
        var failures = 0
        var connectedBefore = false
        let policy = configuration.retry
        while !isClosed {
            let token: String
            do {
                token = try currentToken()
            } catch {
                failures += 1
                guard wait(max(0.1, policy.delay(beforeRetry: min(failures, 10)))) else { return }
                continue
            }
            var headers: [(String, String)] = [("X-Vault-Token", token)]
            if !configuration.namespace.isEmpty { headers.append(("X-Vault-Namespace", configuration.namespace)) }
            let socket: WebSocketClient
            do throws(WebSocketClient.Failure) {
                socket = try WebSocketClient.connect(
                    "\(baseURL)/v1/sys/events/subscribe/kv*?json=true",
                    headers: headers,
                    options: options
                )
            } catch {
                switch error {
                case .refused(let status) where status < 500:
                    // No events here (or not for this token): TTL only; look again in a minute.
                    meters.update { $0.subscription = "refused" }
                    guard wait(60) else { return }
                case .refused, .failed:
                    meters.update { $0.subscription = "disconnected" }
                    failures += 1
                    guard wait(max(0.1, policy.delay(beforeRetry: min(failures, 10)))) else { return }
                }
                continue
            }
            let stillOpen = subscription.withLock { state -> Bool in
                state.socket = socket
                return !isClosed
            }
            guard stillOpen else {
                socket.shutdown()
                return
            }
            failures = 0
            if connectedBefore {
                // Events may have been missed while disconnected.
                let dropped = cache.removeAll()
                meters.update { $0.invalidations &+= UInt64(dropped) }
            }
            connectedBefore = true
            meters.update { $0.subscription = "connected" }
            while let text = socket.nextText() { handleEvent(text) }
            subscription.withLock { $0.socket = nil }
            meters.update { $0.subscription = "disconnected" }
            guard wait(0.1) else { return }
        }
    }

    /// Drops the cache entries an event's `data_path` and `path` name (KV v2 metadata paths also
    /// drop their data path).
    func handleEvent(_ text: String) {
        guard let event = try? JSONValue.parse(text) else { return }
        let inner = event["data"]?["event"]?["metadata"] ?? event["data"]?["metadata"] ?? event["metadata"]
        var paths: [String] = []
        for name in ["data_path", "path"] {
            if let value = inner?[name]?.stringValue { paths.append(value) }
        }
        var dropped = 0
        for path in paths {
            let key = RemoteClient.normalize(path)
            dropped += cache.remove(key)
            if key.contains("/metadata/") {
                dropped += cache.remove(key.replacing("/metadata/", with: "/data/", maxReplacements: 1))
            }
        }
        if dropped > 0 { meters.update { $0.invalidations &+= UInt64(dropped) } }
        // Republished on the client's bus (type and metadata only: the server's events carry no
        // values), so that a program can react to a change: `coffer run` restarts its child.
        if let metadata = inner?.objectValue, let type = event["data"]?["event_type"]?.stringValue {
            bus.publish(
                type,
                data: ["metadata": .object(metadata), "dropped": .int(dropped)],
                time: SystemClock().now()
            )
        }
    }

    // MARK: - Helpers

    static func normalize(_ path: String) -> String {
        guard path.hasPrefix("/") || path.hasPrefix("v1/") else { return path }
        var trimmed = Substring(path)
        while trimmed.hasPrefix("/") { trimmed = trimmed.dropFirst() }
        if trimmed.hasPrefix("v1/") { trimmed = trimmed.dropFirst(3) }
        return String(trimmed)
    }

    static func processEnvironment() -> [String: String] {
        var out: [String: String] = [:]
        var entry: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                out[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        return out
    }

    /// A CofferError for an HTTP status from the store.
    static func error(status: Int, _ message: String) -> CofferError {
        let code: CofferError.Code
        switch status {
        case 400: code = .invalidArgument
        case 403, 401: code = .permissionDenied
        case 404: code = .notFound
        case 405: code = .unsupportedOperation
        case 412: code = .conflict
        case 429: code = .rateLimited
        case 503: code = .unavailable
        default: code = status >= 500 ? .internal : .invalidArgument
        }
        return CofferError(code, message)
    }
}

extension ClientEvent {
    init(_ event: VaultEvent) {
        self.init(id: event.id, type: event.type, time: event.time, data: event.data)
    }
}
