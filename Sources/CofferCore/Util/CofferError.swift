/// The one error type Coffer's core throws.
///
/// A `code` says what kind of failure it is (stable: it maps 1:1 to a C status and an HTTP status, see
/// ``CofferError/Code``); the message says what was wrong and what to do. Messages never contain a secret
/// value, token or key: callers build them from paths, names and counts only.
public struct CofferError: Error, Sendable, CustomStringConvertible, Equatable {
    public let code: Code
    public let message: String
    /// For ``Code/rateLimited``: whole seconds to wait before retrying (a quota's `Retry-After`);
    /// nil otherwise.
    public var retryAfter: Int?

    public init(_ code: Code, _ message: String, retryAfter: Int? = nil) {
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    public var description: String { message }

    /// The kind of failure. A struct over a private enum so that new codes can be added without
    /// breaking exhaustive `switch`es in callers.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Kind: Sendable, Hashable, CaseIterable {
            case invalidArgument, sealed, permissionDenied, notFound, conflict, unavailable, io
            case outOfMemory, `internal`, unsupportedOperation, integrity, notInitialized, alreadyInitialized
            case rateLimited, corruptDatabase, auditFailed
        }
        fileprivate let kind: Kind

        /// The request was malformed: a bad path, a missing or mistyped field, an unparsable policy.
        public static let invalidArgument = Code(kind: .invalidArgument)
        /// The vault is sealed; only seal-status, init and unseal work.
        public static let sealed = Code(kind: .sealed)
        /// The token is missing, unknown, expired, or its policies do not allow the operation.
        public static let permissionDenied = Code(kind: .permissionDenied)
        /// Nothing is stored at the path, or no handler serves it.
        public static let notFound = Code(kind: .notFound)
        /// A check-and-set or other precondition did not hold.
        public static let conflict = Code(kind: .conflict)
        /// A dependency (the HSM, an audit device) could not be reached; retrying later may work.
        public static let unavailable = Code(kind: .unavailable)
        /// The storage backend failed to read or write.
        public static let io = Code(kind: .io)
        public static let outOfMemory = Code(kind: .outOfMemory)
        /// A bug or an unexpected state; the message says where.
        public static let `internal` = Code(kind: .internal)
        /// The path exists but does not support the operation.
        public static let unsupportedOperation = Code(kind: .unsupportedOperation)
        /// Stored data failed authentication: flipped, truncated or moved between paths.
        public static let integrity = Code(kind: .integrity)
        public static let notInitialized = Code(kind: .notInitialized)
        public static let alreadyInitialized = Code(kind: .alreadyInitialized)
        /// A rate-limit or lease-count quota refused the request (HTTP 429); `retryAfter` says when to retry.
        public static let rateLimited = Code(kind: .rateLimited)
        /// The storage file is not a Coffer database, or is damaged.
        public static let corruptDatabase = Code(kind: .corruptDatabase)
        /// No enabled audit device could record the request, so it was refused (fail closed).
        public static let auditFailed = Code(kind: .auditFailed)

        /// Every code, for tests and documentation tables.
        public static var all: [Code] { Kind.allCases.map { Code(kind: $0) } }

        /// The stable C status (`COFFER_E*` in include/coffer.h). Never renumbered.
        public var cStatus: Int32 {
            switch kind {
            case .invalidArgument: -1
            case .sealed: -2
            case .permissionDenied: -3
            case .notFound: -4
            case .conflict: -5
            case .unavailable: -6
            case .io: -7
            case .outOfMemory: -8
            case .internal: -9
            case .unsupportedOperation: -10
            case .integrity: -11
            case .notInitialized: -12
            case .alreadyInitialized: -13
            case .rateLimited: -14
            case .corruptDatabase: -15
            case .auditFailed: -16
            }
        }

        /// The HTTP status the Vault/OpenBao wire protocol uses for this failure.
        public var httpStatus: Int {
            switch kind {
            case .invalidArgument, .conflict, .notInitialized, .alreadyInitialized: 400
            case .permissionDenied: 403
            case .notFound: 404
            case .unsupportedOperation: 405
            case .rateLimited: 429
            case .sealed, .unavailable: 503
            case .io, .outOfMemory, .internal, .integrity, .corruptDatabase, .auditFailed: 500
            }
        }

        public var description: String {
            switch kind {
            case .invalidArgument: "invalid argument"
            case .sealed: "sealed"
            case .permissionDenied: "permission denied"
            case .notFound: "not found"
            case .conflict: "conflict"
            case .unavailable: "unavailable"
            case .io: "I/O error"
            case .outOfMemory: "out of memory"
            case .internal: "internal error"
            case .unsupportedOperation: "unsupported operation"
            case .integrity: "integrity check failed"
            case .notInitialized: "not initialized"
            case .alreadyInitialized: "already initialized"
            case .rateLimited: "rate limited"
            case .corruptDatabase: "corrupt database"
            case .auditFailed: "audit failed"
            }
        }
    }
}

extension CofferError {
    /// The error every sealed request gets. The text is wire protocol: the `bao`/`vault` CLI matches it.
    public static let sealedError = CofferError(.sealed, "Vault is sealed")
    /// The error for a missing, unknown or under-privileged token. Vault's exact text.
    public static let permissionDeniedError = CofferError(.permissionDenied, "permission denied")

    /// An invalid-argument error (HTTP 400) with `message`.
    public static func invalid(_ message: String) -> CofferError { CofferError(.invalidArgument, message) }
}
