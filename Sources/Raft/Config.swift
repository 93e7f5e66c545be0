/// How a ``RawNode`` behaves. Times are in ticks: the caller decides how long a tick is (e.g. 100 ms).
public struct Config {
    /// This node's id; not 0.
    public var id: NodeID
    /// A follower that hears nothing from a leader for a random number of ticks in
    /// `electionTicks ..< 2 * electionTicks` starts an election. Must exceed `heartbeatTicks`.
    public var electionTicks: Int = 10
    /// The leader sends heartbeats every `heartbeatTicks` ticks.
    public var heartbeatTicks: Int = 1
    /// The index the application's state machine holds when the node (re)starts: at least the index of
    /// the snapshot it restored from. Committed entries after it are handed out again. 0 means "from the
    /// first index the log still holds", which is right only if the state machine is exactly at the last
    /// compaction point.
    public var applied: UInt64 = 0
    /// The most entry data bytes in one append message (at least one entry is always sent).
    public var maxBytesPerMessage: Int = 1 << 20
    /// The most unanswered appends to one follower in replicate state.
    public var maxInflightMessages: Int = 256
    /// Ask "could I win?" before starting an election, so a node that was partitioned away does not
    /// disrupt the cluster by bumping its term when it comes back.
    public var preVote: Bool = true
    /// A leader that has not heard from a quorum within an election timeout steps down, and a follower that
    /// has heard from a leader within an election timeout less a tick refuses to vote for anyone else (a
    /// tick less, so that survivors whose clocks are a tick apart do not refuse the first of them to time out).
    public var checkQuorum: Bool = true
    /// How ReadIndex requests are confirmed; `.leaseBased` requires `checkQuorum`.
    public var readOnly: ReadOnlyOption = .safe
    /// Seeds the randomized election timeout, so a run is reproducible from its seed.
    public var randomSeed: UInt64 = 0
    /// Receives the core's decisions (elections, step-downs, dropped messages) as text.
    public var logger: (any RaftLogger)?

    /// Defaults for a node `id`; the seed defaults to the id (distinct per node, reproducible per run).
    public init(id: NodeID, randomSeed: UInt64? = nil) {
        self.id = id
        self.randomSeed = randomSeed ?? id
    }

    func validate() throws(RaftError) {
        guard id != 0 else { throw RaftError(.invalidConfig, "node id 0 is reserved") }
        guard heartbeatTicks > 0 else { throw RaftError(.invalidConfig, "heartbeatTicks must be positive") }
        guard electionTicks > heartbeatTicks else {
            throw RaftError(
                .invalidConfig,
                "electionTicks (\(electionTicks)) must exceed heartbeatTicks (\(heartbeatTicks))"
            )
        }
        guard maxInflightMessages > 0 else { throw RaftError(.invalidConfig, "maxInflightMessages must be positive") }
        guard maxBytesPerMessage > 0 else { throw RaftError(.invalidConfig, "maxBytesPerMessage must be positive") }
        if readOnly == .leaseBased && !checkQuorum {
            throw RaftError(.invalidConfig, "lease-based reads need checkQuorum")
        }
    }
}

/// Severity of a core log line.
public enum RaftLogLevel: Int, Sendable, Comparable, CustomStringConvertible {
    case debug, info, warning

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .debug: "DEBUG"
        case .info: "INFO"
        case .warning: "WARN"
        }
    }
}

/// Where the core's log lines go. Called synchronously from inside ``RawNode`` methods.
public protocol RaftLogger: AnyObject {
    func log(_ level: RaftLogLevel, _ message: String)
}

/// SplitMix64: a small, fast, seedable generator, so elections are reproducible from a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
