/// The one error type the Raft core throws.
///
/// `code` says what kind of failure it is; the message says what was wrong. Raft does not depend on
/// CofferCore, so the cluster integration maps these codes to `CofferError` (a dropped proposal is
/// `unavailable`: retry on the leader; a malformed message is dropped and logged, never surfaced to a client).
public struct RaftError: Error, Sendable, Hashable, CustomStringConvertible {
    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// A struct over a private enum so that new codes can be added without breaking callers' `switch`es.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Kind: String, Sendable, Hashable {
            case proposalDropped, confChangeRejected, invalidConfig, compacted, unavailable
            case snapshotOutOfDate, snapshotTemporarilyUnavailable, malformedMessage, invalidMessage
        }
        fileprivate let kind: Kind

        /// The proposal was not appended: there is no known leader, this node is not a member, or a
        /// leadership transfer is under way. Nothing was written; the caller may retry.
        public static let proposalDropped = Code(kind: .proposalDropped)
        /// The membership change is a no-op, would leave no voter, or another change is still unapplied.
        public static let confChangeRejected = Code(kind: .confChangeRejected)
        /// The ``Config`` is unusable (node id 0, heartbeat not shorter than the election timeout, …).
        public static let invalidConfig = Code(kind: .invalidConfig)
        /// Storage: the requested index is below the first index (compacted into a snapshot).
        public static let compacted = Code(kind: .compacted)
        /// Storage: the requested index is beyond the last index.
        public static let unavailable = Code(kind: .unavailable)
        /// Storage: the snapshot is older than the one already held.
        public static let snapshotOutOfDate = Code(kind: .snapshotOutOfDate)
        /// Storage: no snapshot can be produced right now; the leader will retry later.
        public static let snapshotTemporarilyUnavailable = Code(kind: .snapshotTemporarilyUnavailable)
        /// The bytes are not a message of a version this code reads: truncated, garbage or trailing bytes.
        public static let malformedMessage = Code(kind: .malformedMessage)
        /// The message decoded but breaks an invariant (addressed elsewhere, terms or indexes out of range,
        /// non-contiguous entries); ``RawNode/step(_:)`` drops it.
        public static let invalidMessage = Code(kind: .invalidMessage)

        public var description: String { kind.rawValue }
    }
}
