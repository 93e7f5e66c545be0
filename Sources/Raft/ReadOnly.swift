/// The leader's queue of ReadIndex requests waiting for a quorum to confirm, by heartbeat, that it is
/// still the leader. Each request is remembered with the commit index at the time it arrived; once a
/// quorum acknowledges a heartbeat carrying its context, it and every request queued before it are served
/// at their recorded index.
struct ReadOnlyQueue {
    struct Request {
        var index: UInt64
        var message: Message
        var acks: Set<NodeID> = []
    }

    private var pending: [[UInt8]: Request] = [:]
    private var order: [[UInt8]] = []

    /// Queues a request; false if one with the same context is already queued (it is ignored).
    mutating func add(index: UInt64, message: Message) -> Bool {
        guard pending[message.context] == nil else { return false }
        pending[message.context] = Request(index: index, message: message)
        order.append(message.context)
        return true
    }

    /// Records that `voter` acknowledged the heartbeat for `context`; returns how many voters have.
    mutating func acknowledge(_ context: [UInt8], from voter: NodeID, voters conf: ConfState) -> Int {
        guard conf.isVoter(voter), var request = pending[context] else { return 0 }
        request.acks.insert(voter)
        pending[context] = request
        return request.acks.count
    }

    /// Dequeues the request for `context` and every request queued before it, oldest first.
    mutating func advance(through context: [UInt8]) -> [Request] {
        guard let position = order.firstIndex(of: context) else { return [] }
        let done = order[...position]
        order.removeFirst(position + 1)
        return done.compactMap { pending.removeValue(forKey: $0) }
    }
}
