/// The leader's view of one follower's log, and the flow control of what it sends there.
///
/// - `probe`: the leader does not know where the follower's log matches; it sends one append at a time
///   (then waits for an answer or a heartbeat response) and backs off on each rejection, using the
///   follower's conflict hint to skip whole terms.
/// - `replicate`: the match is known; appends are streamed optimistically, at most `maxInflight` unanswered.
/// - `snapshot`: the entries the follower needs are compacted; a snapshot is on its way and nothing else is
///   sent until the follower answers or the transport reports the snapshot's fate.
struct Progress: Hashable {
    enum State: Hashable, CustomStringConvertible {
        case probe, replicate, snapshot

        var description: String {
            switch self {
            case .probe: "probe"
            case .replicate: "replicate"
            case .snapshot: "snapshot"
            }
        }
    }

    var match: UInt64 = 0
    var next: UInt64
    var state: State = .probe
    /// In `snapshot` state: the index of the snapshot sent.
    var pendingSnapshot: UInt64 = 0
    /// Whether the follower was heard from since the last check-quorum round.
    var recentActive = false
    /// The send tick of the latest heartbeat the follower acknowledged in this term (lease-based reads).
    var leaseSentAt: UInt64?
    /// In `probe` state: an append was sent and not yet answered.
    var probeSent = false
    /// In `replicate` state: the last index of each unanswered append, oldest first.
    var inflight: [UInt64] = []
    var isLearner: Bool

    init(next: UInt64, isLearner: Bool) {
        self.next = next
        self.isLearner = isLearner
    }

    mutating func becomeProbe() {
        if state == .snapshot {
            next = max(match + 1, pendingSnapshot + 1)
        } else {
            next = match + 1
        }
        state = .probe
        pendingSnapshot = 0
        probeSent = false
        inflight = []
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        pendingSnapshot = 0
        probeSent = false
        inflight = []
    }

    mutating func becomeSnapshot(_ index: UInt64) {
        state = .snapshot
        pendingSnapshot = index
        probeSent = false
        inflight = []
    }

    /// The follower acknowledged entries through `index`. Returns whether `match` moved.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }

    /// The follower rejected an append after `rejected`; `hint` is the index the leader should try next
    /// (already lowered by the conflict hint). Returns false for a stale rejection.
    mutating func maybeDecrease(rejected: UInt64, hint: UInt64) -> Bool {
        if state == .replicate {
            // Only a rejection of an index beyond the match is news; back off to just after the match.
            guard rejected > match else { return false }
            next = match + 1
            return true
        }
        // In probe state only the answer to the probe just sent (at next - 1) counts.
        guard next >= 1, next - 1 == rejected else { return false }
        next = max(min(rejected, hint + 1), match + 1, 1)
        probeSent = false
        return true
    }

    func isPaused(maxInflight: Int) -> Bool {
        switch state {
        case .probe: probeSent
        case .replicate: inflight.count >= maxInflight
        case .snapshot: true
        }
    }

    /// Records an append of `count` entries ending at `lastIndex`.
    mutating func sentEntries(count: Int, lastIndex: UInt64) {
        switch state {
        case .replicate:
            if count > 0 {
                next = lastIndex + 1
                inflight.append(lastIndex)
            }
        case .probe:
            probeSent = true
        case .snapshot:
            break
        }
    }

    /// Frees the in-flight slots of appends through `index`.
    mutating func acknowledgeInflight(through index: UInt64) {
        inflight.removeAll { $0 <= index }
    }
}
