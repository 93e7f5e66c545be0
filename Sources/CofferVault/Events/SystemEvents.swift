package import CofferCore
package import CofferFramework

/// `sys/events/recent`: the events kept in the bus's ring (sudo). A first, polling view of the
/// event bus; issue 20 adds `sys/events/subscribe` over websockets on the same bus.
extension SystemBackend {
    static let eventPaths: [Path<SystemBackend>] = [
        Path(
            "events/recent",
            fields: [.int("after", 0...Int(Int64.max)), .string("type"), .int("limit", 1...10_000)],
            read: SystemBackend.recentEvents
        )
    ]

    /// `{"events": [...]}`, oldest first: those after the id `after`, whose type starts with `type`,
    /// the newest `limit` of them.
    func recentEvents(_ request: BackendRequest) throws(CofferError) -> Response {
        let f = request.fields
        let events = core.events.recent(
            after: UInt64(f.int("after") ?? 0),
            typePrefix: f.string("type") ?? "",
            limit: f.int("limit") ?? core.events.capacity
        )
        return Response(data: ["events": .array(events.map(\.json))])
    }
}
