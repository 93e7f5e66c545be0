package import CofferCore
package import CofferVault

/// Events in process (docs/events.md): the same events `sys/events/subscribe` sends, to a callback.
extension Vault {
    /// Calls `callback` with the CloudEvents JSON of every event from now on whose type matches
    /// `pattern` in the namespace at `namespace`, that `token` may see (`subscribe` on
    /// `sys/events/subscribe/<type>` and `read` on the event's path). Returns the subscription's id.
    ///
    /// The callback runs on one of the vault's delivery threads, in order, one at a time per
    /// subscription; at most `capacity` events wait for it, newer ones are dropped and counted.
    /// See ``EventDelivery`` for the rules (the C ABI's `coffer_subscribe` is this).
    public func subscribeEvents(
        token: String?,
        pattern: String,
        namespace: String = "",
        capacity: Int = 1024,
        _ callback: @escaping @Sendable ([UInt8]) -> Void
    ) throws(CofferError) -> UInt64 {
        let delivery = core.events.delivery
        let subscription = try core.eventSubscription(
            token: token,
            pattern: pattern,
            namespace: namespace,
            capacity: capacity,
            overflow: .dropEvent,
            wake: delivery.wakeHandler
        )
        try delivery.start(subscription) { event in callback(event.cloudEvent().serialized()) }
        return subscription.id
    }

    /// Ends the subscription `id` (see ``EventDelivery/unsubscribe(_:)``); false if there is none.
    @discardableResult
    public func unsubscribeEvents(_ id: UInt64) -> Bool { core.events.delivery.unsubscribe(id) }

    /// A subscription for a network subscriber (cofferd's WebSocket): a full queue closes it.
    package func networkEventSubscription(
        token: String?,
        pattern: String,
        namespace: String,
        clientAddress: String,
        capacity: Int = 1024,
        wake: @escaping @Sendable (UInt64) -> Void
    ) throws(CofferError) -> EventSubscription {
        try core.eventSubscription(
            token: token,
            pattern: pattern,
            namespace: namespace,
            clientAddress: clientAddress,
            capacity: capacity,
            overflow: .closeSubscription,
            wake: wake
        )
    }

    package var eventBus: EventBus { core.events }
}
