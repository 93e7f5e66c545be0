import Coffer
import Glibc
import Synchronization
import Testing

/// Events (issue 20 item 1, docs/events.md): globs, the CloudEvents shape, the ACL rule, namespaces,
/// bounded queues and the delivery threads' rules.
@Suite struct EventsTests {
    /// Waits (up to 10 s, polling the condition, not sleeping for a guess) until `condition` holds.
    static func eventually(_ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            usleep(1000)
        }
        return condition()
    }

    /// Collects the events a subscription's callback gets, parsed.
    final class Seen: Sendable {
        let events = Mutex<[JSONValue]>([])
        /// The threads the callback ran on.
        let threads = Mutex<Set<UInt>>([])
        func add(_ json: [UInt8]) {
            let value = try? JSONValue.parse(json)
            events.withLock { $0.append(value ?? .null) }
            threads.withLock { _ = $0.insert(UInt(pthread_self())) }
        }
        var all: [JSONValue] { events.withLock { $0 } }
        var count: Int { events.withLock { $0.count } }
    }

    @Test func globsMatchAsVaultsDo() throws {
        let cases: [(String, String, Bool)] = [
            ("*", "kv-v2/data-write", true), ("kv*", "kv-v2/data-write", true), ("kv*", "kv-v1/write", true),
            ("kv-v2/*", "kv-v1/write", false), ("kv-v2/data-write", "kv-v2/data-write", true),
            ("kv-v2/data-write", "kv-v2/data-writer", false), ("*write", "kv-v1/write", true),
            ("kv*-write", "kv-v2/metadata-write", true), ("kv*-write", "kv-v2/metadata-delete", false),
            ("a*b*c", "abc", true), ("a*b*c", "acb", false), ("**", "", true), ("x", "", false),
        ]
        for (pattern, type, expected) in cases {
            #expect(try EventGlob(pattern).matches(type) == expected, "\(pattern) vs \(type)")
        }
        #expect(throws: CofferError.self) { try EventGlob("") }
        #expect(throws: CofferError.self) { try EventGlob(String(repeating: "a", count: 513)) }
    }

    @Test func kvWritesPublishVaultsMetadataAndNeverTheValue() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        let seen = Seen()
        let id = try vault.subscribeEvents(token: "root", pattern: "kv*") { seen.add($0) }
        let kv = vault.kv(token: "root")
        _ = try kv.put("app", ["password": "swift-secret-value"])
        _ = try vault.handle(Request(.patch, "secret/data/app", data: ["data": ["user": "u"]], token: "root"))
        _ = try vault.handle(Request(.update, "secret/destroy/app", data: ["versions": [1]], token: "root"))
        _ = try vault.handle(Request(.update, "secret/metadata/app", data: ["max_versions": 5], token: "root"))
        _ = try vault.handle(Request(.delete, "secret/metadata/app", token: "root"))
        #expect(Self.eventually { seen.count == 5 })
        #expect(!seen.threads.withLock { $0 }.contains(UInt(pthread_self())), "callbacks run on delivery threads")
        vault.unsubscribeEvents(id)
        let all = seen.all
        #expect(
            all.map { $0["data"]?["event_type"]?.stringValue ?? "" } == [
                "kv-v2/data-write", "kv-v2/data-patch", "kv-v2/destroy", "kv-v2/metadata-write",
                "kv-v2/metadata-delete",
            ]
        )
        let first = try #require(all.first)
        #expect(first["specversion"] == "1.0" && first["type"] == "*")
        #expect(first["datacontentype"] == "application/cloudevents")
        #expect(first["id"] == first["data"]?["event"]?["id"])
        #expect(
            first["data"]?["event"]?["metadata"]
                == [
                    "current_version": "1", "oldest_version": "0", "data_path": "secret/data/app", "modified": "true",
                    "operation": "data-write", "path": "secret/data/app",
                ]
        )
        #expect(first["data"]?["plugin_info"]?["mount_path"] == "secret/")
        #expect(first["data"]?["plugin_info"]?["mount_class"] == "secret")
        #expect(all[1]["data"]?["event"]?["metadata"]?["current_version"] == "2")
        for event in all {
            #expect(!String(decoding: event.serialized(), as: UTF8.self).contains("swift-secret-value"))
        }
    }

    @Test func aSubscriberNeedsSubscribeOnTheTypeAndReadOnThePath() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        func token(_ policy: String) throws -> String {
            let name = "p\(policy.hashValue & 0xFFFF)"
            _ = try vault.handle(
                Request(.update, "sys/policies/acl/" + name, data: ["policy": .string(policy)], token: "root")
            )
            let r = try vault.handle(
                Request(.update, "auth/token/create", data: ["policies": [.string(name)]], token: "root")
            )
            return r.auth!.clientToken
        }
        let readOnly = try token(#"path "secret/data/*" { capabilities = ["read"] }"#)
        let subscribeOnly = try token(#"path "sys/events/subscribe/*" { capabilities = ["subscribe"] }"#)
        let both = try token(
            """
            path "sys/events/subscribe/kv-v2/data-*" { capabilities = ["subscribe"] }
            path "secret/data/team/*" { capabilities = ["read"] }
            """
        )
        // An exact type is checked at once; an invalid token always.
        #expect(throws: CofferError.self) {
            try vault.subscribeEvents(token: readOnly, pattern: "kv-v2/data-write") { _ in }
        }
        #expect(throws: CofferError.self) { try vault.subscribeEvents(token: "nope", pattern: "*") { _ in } }

        let (a, b, c, root) = (Seen(), Seen(), Seen(), Seen())
        _ = try vault.subscribeEvents(token: readOnly, pattern: "*") { a.add($0) }
        _ = try vault.subscribeEvents(token: subscribeOnly, pattern: "*") { b.add($0) }
        // (b's pattern also matches the kv writes below, which it may not read.)
        _ = try vault.subscribeEvents(token: both, pattern: "kv*") { c.add($0) }
        _ = try vault.subscribeEvents(token: "root", pattern: "kv*") { root.add($0) }
        let kv = vault.kv(token: "root")
        _ = try kv.put("other", ["k": "v"])
        _ = try kv.put("team/app", ["k": "v"])
        _ = try vault.handle(Request(.delete, "secret/metadata/team/app", token: "root"))
        #expect(Self.eventually { root.count == 3 })
        // Each subscription's events are in order: once c saw a later event, it was shown everything
        // before it that it may see.
        #expect(Self.eventually { c.count == 1 })
        #expect(c.all.first?["data"]?["event"]?["metadata"]?["path"] == "secret/data/team/app")
        // b (subscribe, no read) sees nothing about paths; an event about no path comes through, and,
        // events being in order, once it did, the three writes before it were looked at and dropped.
        vault.core.events.publish("test/marker", data: ["operation": "mark"], time: .zero)
        #expect(Self.eventually { b.count == 1 })
        #expect(b.all.first?["data"]?["event_type"] == "test/marker")
        // a has no subscribe: it sees nothing at all (not even the marker).
        #expect(a.count == 0)
    }

    @Test func namespacesKeepTheirEventsToThemselves() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        _ = try vault.handle(Request(.update, "sys/namespaces/ns1", token: "root"))
        _ = try vault.handle(
            Request(
                .update,
                "sys/mounts/secret",
                data: ["type": "kv", "options": ["version": "2"]],
                token: "root",
                namespace: "ns1"
            )
        )
        let (inRoot, inNS) = (Seen(), Seen())
        _ = try vault.subscribeEvents(token: "root", pattern: "kv*") { inRoot.add($0) }
        _ = try vault.subscribeEvents(token: "root", pattern: "kv*", namespace: "ns1") { inNS.add($0) }
        _ = try vault.handle(
            Request(.update, "secret/data/x", data: ["data": ["k": "v"]], token: "root", namespace: "ns1")
        )
        _ = try vault.kv(token: "root").put("y", ["k": "v"])
        #expect(Self.eventually { inRoot.count == 1 && inNS.count == 1 })
        #expect(inNS.all[0]["data"]?["event"]?["metadata"]?["path"] == "secret/data/x")
        #expect(inNS.all[0]["data"]?["namespace"] == "ns1/")
        #expect(inRoot.all[0]["data"]?["event"]?["metadata"]?["path"] == "secret/data/y")
    }

    @Test func aSubscriberThatNeverReadsIsDroppedAndWritersGoOn() throws {
        let bus = EventBus()
        let wakes = Atomic<Int>(0)
        let subscription = EventSubscription(
            pattern: try EventGlob("kv*"),
            namespacePath: "",
            capacity: 8,
            overflow: .closeSubscription,
            filter: { _ in true },
            wake: { _ in wakes.add(1, ordering: .relaxed) }
        )
        bus.add(subscription)
        let other = Seen()
        let watcher = bus.subscribe { event in
            if event.type == "events/subscriber-dropped" { other.add(event.json.serialized()) }
        }
        defer { bus.unsubscribe(watcher) }
        let started = ContinuousClock.now
        for i in 0..<10_000 {
            bus.publish("kv-v2/data-write", data: ["metadata": ["i": .int(i)]], time: .zero)
        }
        // 10,000 writes to a queue of 8 that nobody drains: they went on, quickly.
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(subscription.closedReason?.contains("subscriber too slow") == true)
        #expect(bus.subscriptionCount == 0)
        #expect(bus.dropCounts.subscribers == 1)
        #expect(other.count == 1, "one events/subscriber-dropped event")
        #expect(subscription.take().isEmpty)
        #expect(wakes.load(ordering: .relaxed) == 2, "one wake for the first event, one for the close")
    }

    /// Past `inlineFanOutLimit` subscriptions a thread of the bus offers each event to them: every one
    /// still gets every event, in order, and one that never reads is still dropped and announced.
    @Test func manySubscriptionsGetEveryEventInOrderFromTheFanOutThread() throws {
        let bus = EventBus()
        let count = EventBus.inlineFanOutLimit * 4
        var subscriptions: [EventSubscription] = []
        for i in 0..<count {
            let subscription = EventSubscription(
                pattern: try EventGlob("kv*"),
                namespacePath: "",
                capacity: i == 0 ? 8 : 1024,
                overflow: .closeSubscription,
                filter: { _ in true },
                wake: { _ in }
            )
            subscriptions.append(subscription)
            bus.add(subscription)
        }
        let dropped = Seen()
        let watcher = bus.subscribe { event in
            if event.type == "events/subscriber-dropped" { dropped.add(event.json.serialized()) }
        }
        defer { bus.unsubscribe(watcher) }
        for i in 0..<100 {
            bus.publish("kv-v2/data-write", data: ["metadata": ["i": .int(i)]], time: .zero)
        }
        // Subscription 0 (a queue of 8 that nobody drains) is dropped; the others get all 100.
        #expect(Self.eventually { dropped.count == 1 })
        #expect(subscriptions[0].closedReason?.contains("subscriber too slow") == true)
        var received = Array(repeating: [VaultEvent](), count: count)
        #expect(
            Self.eventually {
                for i in 1..<count { received[i] += subscriptions[i].take() }
                return received[1...].allSatisfy { $0.count == 100 }
            }
        )
        let expected: [JSONValue?] = (0..<100).map { JSONValue.int($0) }
        for i in 1..<count {
            let order: [JSONValue?] = received[i].map { event in event.data["metadata"]?["i"] }
            #expect(order == expected)
        }
        #expect(bus.subscriptionCount == count - 1)
    }

    @Test func aSlowCallbackLosesEventsButNeverBlocksTheWriter() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        let release = Atomic<Bool>(false)
        let seen = Seen()
        let id = try vault.subscribeEvents(token: "root", pattern: "kv*", capacity: 4) { json in
            while !release.load(ordering: .acquiring) { usleep(100) }
            seen.add(json)
        }
        let kv = vault.kv(token: "root")
        for i in 0..<50 { _ = try kv.put("slow", ["i": .string(String(i))]) }
        #expect(vault.core.events.dropCounts.events >= 42, "50 writes, at most 8 queued or in flight")
        release.store(true, ordering: .releasing)
        #expect(Self.eventually { seen.count >= 1 })
        #expect(vault.unsubscribeEvents(id))
        #expect(!vault.unsubscribeEvents(id), "a second unsubscribe finds nothing")
        let count = seen.count
        _ = try kv.put("slow", ["i": "after"])
        #expect(seen.count == count, "nothing is delivered after unsubscribe returned")
        #expect(count <= 8, "at most two queues' worth (4 taken, 4 queued)")
    }

    @Test func unsubscribeFromInsideTheCallbackIsDeferredNotDeadlocked() throws {
        let (vault, _) = try Vault.openDev(storage: .memory, rootTokenID: "root")
        defer { vault.close() }
        let id = Mutex<UInt64>(0)
        let calls = Atomic<Int>(0)
        let unsubscribed = Atomic<Bool>(false)
        let subscriptionID = try vault.subscribeEvents(token: "root", pattern: "kv*") { _ in
            calls.add(1, ordering: .relaxed)
            unsubscribed.store(vault.unsubscribeEvents(id.withLock { $0 }), ordering: .releasing)
        }
        id.withLock { $0 = subscriptionID }
        let kv = vault.kv(token: "root")
        _ = try kv.put("a", ["k": "v"])
        _ = try kv.put("b", ["k": "v"])
        #expect(Self.eventually { unsubscribed.load(ordering: .acquiring) })
        _ = try kv.put("c", ["k": "v"])
        #expect(calls.load(ordering: .relaxed) == 1, "no callback after the one that unsubscribed")
    }

    @Test func aRevokedLeaseIsPublishedWithItsIDAndPathOnly() throws {
        var registry = testRegistry()
        let ledger = LedgerBackend()
        registry.register("ledger") { _ in ledger }
        let core = try Core(storage: InMemoryBackend(), engines: registry, clock: ManualClock())
        let root = try core.initialize(shares: 1, threshold: 1).rootToken
        try core.mount(MountEntry(path: "ledger/", type: "ledger"))
        let issued = try core.call(.read, "ledger/creds/app", token: root)
        let user = try #require(issued.data?["username"]?.stringValue)
        try core.call(.update, "sys/leases/revoke", ["lease_id": .string(issued.leaseID)], token: root)
        let revoked = core.events.recent(typePrefix: "lease/")
        #expect(revoked.map(\.type) == ["lease/revoked"])
        #expect(
            revoked.first?.metadata
                == ["lease_id": .string(issued.leaseID), "path": "ledger/creds/app", "operation": "revoke"]
        )
        let text = String(decoding: revoked.first?.cloudEvent().serialized() ?? [], as: UTF8.self)
        #expect(!text.isEmpty && !text.contains(user))
    }

    @Test func sealAndUnsealArePublished() throws {
        let (core, result) = try makeCore()
        core.sealVault()
        core.sealVault()  // already sealed: no second event
        try core.unseal(key: result.keys[0].unsafeCopy)
        #expect(core.events.recent(typePrefix: "vault/").map(\.type) == ["vault/sealed", "vault/unsealed"])
    }

    @Test func recentKeepsItsShapeAndCloudEventsCarryTheNamespace() {
        let bus = EventBus(capacity: 2)
        let event = bus.publish("x/y", namespace: "ns1/", data: ["operation": "z"], time: Timestamp(seconds: 1))
        #expect(event.json["namespace"] == "ns1/" && event.json["event_type"] == "x/y")
        let cloud = event.cloudEvent(hostname: "h")
        #expect(cloud["source"] == "vault://h" && cloud["data"]?["namespace"] == "ns1/")
        #expect(cloud["data"]?["event"]?["metadata"] == ["operation": "z"])
        #expect(bus.publish("x/y", data: [:], time: .zero).json["namespace"] == "root")
    }
}
