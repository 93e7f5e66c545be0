import Synchronization

/// Every meter of one vault. The barrier keeps it (``Barrier/meters``), so each layer that records
/// (the barrier itself, the token store, the audit broker, the request pipeline, the routes) reaches
/// it without a global; `sys/metrics` and `coffer_metrics` read it. docs/metrics.md lists each one.
///
/// The names are OpenBao's where OpenBao has the metric, `coffer.` ones where it does not.
package final class VaultMeters: Sendable {
    // Requests (every one timed: two monotonic clock reads a request, the only ones the pipeline adds).
    package let handleRequest = Summary()
    package let handleLoginRequest = Summary()

    // Barrier operations (sampled).
    package let barrierGet = Summary(sampleEvery: Summary.defaultSampling)
    package let barrierPut = Summary(sampleEvery: Summary.defaultSampling)
    package let barrierDelete = Summary(sampleEvery: Summary.defaultSampling)
    package let barrierList = Summary(sampleEvery: Summary.defaultSampling)
    /// Atomic batches (several puts and deletes in one storage transaction): a Coffer metric.
    package let barrierBatch = Summary(sampleEvery: Summary.defaultSampling)

    // Token store.
    package let tokenLookup = Summary(sampleEvery: Summary.defaultSampling)
    package let tokenCreate = Summary()
    package let tokenCacheHit = Counter()
    package let tokenCacheMiss = Counter()

    // Audit: requests that no enabled device could record (the request was refused, fail closed),
    // and responses that none could record.
    package let auditRequestFailure = Counter()
    package let auditResponseFailure = Counter()

    /// When the meters started (the monotonic clock): Rate in the JSON form is per second since then.
    package let started = MonotonicClock.now()

    /// Route meters by the mount's full path ("secret/", "auth/approle/"); a mount keeps its meters
    /// when the route table is rebuilt (another mount added), and finds them again if remounted.
    private let routes = Mutex<[String: RouteMeters]>([:])

    package init() {}

    /// The meters of the mount at `prefix`, made on first use. Called when a route table is built,
    /// never per request.
    package func routes(for prefix: String) -> RouteMeters {
        routes.withLock { table in
            if let meters = table[prefix] { return meters }
            let meters = RouteMeters(prefix: prefix)
            table[prefix] = meters
            return meters
        }
    }

    /// Drops the meters of every mount under `prefix`: a deleted namespace's mounts.
    package func forgetRoutes(under prefix: String) {
        routes.withLock { table in table = table.filter { !$0.key.hasPrefix(prefix) } }
    }

    /// Every mount that has had route meters, by path.
    package func allRoutes() -> [RouteMeters] {
        routes.withLock { Array($0.values) }.sorted { $0.prefix < $1.prefix }
    }

    // MARK: The request timer

    /// Starts timing a request: one monotonic clock read.
    @inline(__always)
    package static func startRequest() -> RequestTimer { RequestTimer(started: MonotonicClock.now()) }

    /// Ends it: the second read, and the request counted as a login or another request.
    @inline(__always)
    package func finish(_ timer: RequestTimer) {
        let now = MonotonicClock.now()
        // Each summary called where it is named: a summary chosen into a local first is retained and released.
        if timer.login {
            handleLoginRequest.record(nanoseconds: now &- timer.started, now: now)
        } else {
            handleRequest.record(nanoseconds: now &- timer.started, now: now)
        }
    }
}

/// A request being timed. `login` marks a login (an unauthenticated path of an auth method), which
/// OpenBao times as `vault.core.handle_login_request` instead of `vault.core.handle_request`.
package struct RequestTimer: Sendable {
    let started: UInt64
    package var login = false
}

/// A mount's meters: one summary per operation, `vault.route.<operation>.<mount>`.
package final class RouteMeters: Sendable {
    /// The mount's full path, "secret/".
    package let prefix: String
    // One stored property each, not an array: an array element read out to call a method is retained
    // (an atomic write every core's requests to the mount share), a stored property is not.
    private let create = Summary(sampleEvery: Summary.defaultSampling)
    private let read = Summary(sampleEvery: Summary.defaultSampling)
    private let update = Summary(sampleEvery: Summary.defaultSampling)
    private let delete = Summary(sampleEvery: Summary.defaultSampling)
    private let list = Summary(sampleEvery: Summary.defaultSampling)
    private let patch = Summary(sampleEvery: Summary.defaultSampling)

    init(prefix: String) {
        self.prefix = prefix
    }

    /// Starts timing `operation` (`Summary.begin`).
    @inline(__always)
    package func begin(_ operation: Request.Operation) -> UInt64 {
        switch operation {
        case .create: create.begin()
        case .read: read.begin()
        case .update: update.begin()
        case .delete: delete.begin()
        case .list: list.begin()
        case .patch: patch.begin()
        }
    }

    /// Records the call `begin(operation)` started (`Summary.end`).
    @inline(__always)
    package func end(_ operation: Request.Operation, _ started: UInt64) {
        switch operation {
        case .create: create.end(started)
        case .read: read.end(started)
        case .update: update.end(started)
        case .delete: delete.end(started)
        case .list: list.end(started)
        case .patch: patch.end(started)
        }
    }

    /// Each operation with its summary, in a fixed order.
    package var all: [(Request.Operation, Summary)] {
        [(.create, create), (.read, read), (.update, update), (.delete, delete), (.list, list), (.patch, patch)]
    }
}

extension Request.Operation {
    /// The word OpenBao's route metric names use ("read", "create", ...).
    package var metricName: String {
        switch self {
        case .create: "create"
        case .read: "read"
        case .update: "update"
        case .delete: "delete"
        case .list: "list"
        case .patch: "patch"
        }
    }
}
