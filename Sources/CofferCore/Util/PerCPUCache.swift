public import Synchronization

/// How many copies a per-CPU structure keeps: one per CPU, at most 8 (CPUs beyond that share one:
/// CPU `c` uses copy `c mod copies`), which bounds the memory to that many times one copy. A power
/// of two.
package enum PerCPU {
    package static let copies = min(MeterShards.count, 8)
}

/// A read-mostly cache kept once per CPU: a lookup locks and reads only the copy of the CPU its
/// thread runs on, so threads reading the same hot key on two cores touch no cache line in common.
///
/// Why copies, not one locked dictionary: on the read path of a shared token or secret, what two
/// cores lost was not waiting (the locks were rarely held at once) but cache-line traffic: each
/// lock, and each retain of the cached value's storage, is an atomic write to a line the other core
/// then has to fetch back (docs/benchmarks.md, "Caches kept once per CPU"). Each copy is filled by
/// its own reads from storage, so its values share no storage with another copy's either.
///
/// Changes go to every copy: ``update(_:to:)`` drops the key everywhere and stores the new value in
/// the calling CPU's copy only (the others read it from storage when they next need it), and moves
/// every copy's epoch, so a fill of what storage held before the change (``fill(_:_:_:)`` with the
/// ``Ticket`` its lookup returned) is refused.
///
/// `PerCPU.copies` copies. `limit` bounds the entries of each copy: a full copy is emptied before its
/// next insertion.
///
/// `public`, not `package`, for one reason: the compiler serializes the `@inlinable` bodies of public
/// declarations only, and a lookup that is not specialized for its key and value types goes through
/// generic metadata on every call (a KV read's p50 went 3.2 → 4.5 µs when it did). Not part of any
/// API promise.
public final class PerCPUCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    /// Where a lookup looked and what its copy's epoch was: what a fill after it must match.
    public struct Ticket: Sendable {
        @usableFromInline let slot: Int
        @usableFromInline let epoch: UInt64
        @usableFromInline init(slot: Int, epoch: UInt64) {
            self.slot = slot
            self.epoch = epoch
        }
    }

    @usableFromInline struct Slot {
        @usableFromInline var epoch: UInt64 = 0
        @usableFromInline var entries: [Key: Value] = [:]
        @usableFromInline init() {}

        /// Stores `value`, emptying the copy first when it is full and `key` is new to it.
        @inlinable
        mutating func insert(_ key: Key, _ value: Value, limit: Int) {
            if entries.count >= limit, entries[key] == nil { entries.removeAll(keepingCapacity: true) }
            entries[key] = value
        }
    }

    /// The copies' memory, as an address (Sendable without an unchecked claim): `count` locked slots,
    /// `stride` bytes apart (a multiple of 128, so no two share a cache line or its prefetch pair).
    @usableFromInline let memory: UInt
    @usableFromInline let mask: Int
    @usableFromInline let stride: Int
    @usableFromInline let limit: Int

    /// `limit`: the entries one copy holds at most.
    public init(limit: Int = .max) {
        precondition(limit > 0)
        let count = PerCPU.copies
        mask = count - 1
        stride = (MemoryLayout<Mutex<Slot>>.size + 127) / 128 * 128
        self.limit = limit
        let memory = UnsafeMutableRawPointer.allocate(byteCount: count * stride, alignment: 128)
        for index in 0..<count {
            (memory + index * stride).bindMemory(to: Mutex<Slot>.self, capacity: 1).initialize(to: Mutex(Slot()))
        }
        self.memory = UInt(bitPattern: memory)
    }

    deinit {
        for index in 0...mask { slot(index).deinitialize(count: 1) }
        UnsafeMutableRawPointer(bitPattern: memory)!.deallocate()
    }

    /// The CPU the calling thread runs on.
    @usableFromInline static func cpu() -> Int { currentCPU() }

    @inlinable @inline(__always)
    func slot(_ index: Int) -> UnsafeMutablePointer<Mutex<Slot>> {
        UnsafeMutableRawPointer(bitPattern: memory &+ UInt(index &* stride))!.assumingMemoryBound(to: Mutex<Slot>.self)
    }

    /// The calling CPU's copy of `key`'s value, and the ticket a fill of what storage holds must
    /// bring back (read before storage is, so a change made in between is not undone).
    @inlinable @inline(__always)
    public func lookup(_ key: Key) -> (value: Value?, ticket: Ticket) { lookup(key, copy: PerCPUCache.cpu() & mask) }

    /// The same in copy `copy` (`0..<copies`), whichever CPU the caller is on: for tests.
    @inlinable @inline(__always)
    public func lookup(_ key: Key, copy: Int) -> (value: Value?, ticket: Ticket) {
        slot(copy).pointee.withLock { s in (s.entries[key], Ticket(slot: copy, epoch: s.epoch)) }
    }

    /// Caches `value`, read from storage after the lookup that returned `ticket`, in that lookup's
    /// copy, unless the copy changed since: then it is left out, and the next lookup reads storage.
    @inlinable @inline(__always)
    public func fill(_ key: Key, _ value: Value, _ ticket: Ticket) {
        slot(ticket.slot).pointee.withLock { s in
            if s.epoch == ticket.epoch { s.insert(key, value, limit: limit) }
        }
    }

    /// `key` changed in storage (nil: it is gone): every copy drops it, and the calling CPU's copy
    /// keeps `value`.
    public func update(_ key: Key, to value: Value?) {
        let mine = currentCPU() & mask
        for index in 0...mask {
            slot(index).pointee.withLock { s in
                s.epoch &+= 1
                if index == mine, let value {
                    s.insert(key, value, limit: limit)
                } else {
                    s.entries.removeValue(forKey: key)
                }
            }
        }
    }

    /// Empties every copy.
    public func removeAll() {
        for index in 0...mask {
            slot(index).pointee.withLock { s in
                s.epoch &+= 1
                s.entries = [:]
            }
        }
    }

    /// How many copies there are (`PerCPU.copies`).
    public var copies: Int { mask + 1 }

    /// How many entries the copies hold together (for tests).
    public var count: Int { (0...mask).reduce(0) { n, index in n + slot(index).pointee.withLock { $0.entries.count } } }
}

/// One value that changes rarely and is read on every request (the keyring, the token salt, a route
/// table), held behind a lock, with what readers use kept once per CPU (``local()``): a reader
/// retains its CPU's ``Local``, not the value every core's readers share.
///
/// `localize` makes a CPU's local form of the value: the value itself, for an object that readers
/// only read (the local then is a handle: the object is not copied, and its memory goes when the last
/// handle does); a copy, for one whose parts readers retain (a route table's mounts).
///
/// The value is private: every change goes through ``set(_:)`` or ``update(_:)``, which drop every
/// CPU's local before they return, so no reader on any CPU uses the old value after a change (a
/// reader that took its local before still finishes with it, as it would with a value read under
/// the lock).
public final class PerCPUValue<Value: Sendable>: Sendable {
    /// A CPU's form of the value.
    public final class Local: Sendable {
        public let value: Value
        @usableFromInline init(_ value: Value) { self.value = value }
    }

    @usableFromInline let current: Mutex<Value?>
    @usableFromInline let locals = PerCPUCache<Int, Local>(limit: 1)
    @usableFromInline let localize: @Sendable (Value) -> Value

    public init(_ value: Value? = nil, localize: @escaping @Sendable (Value) -> Value = { $0 }) {
        current = Mutex(value)
        self.localize = localize
    }

    /// The value itself (nil: none), for what is not on the request path.
    public var value: Value? { current.withLock { $0 } }

    /// The calling CPU's local form of the value; nil when there is none.
    @inlinable
    public func local() -> Local? {
        let (local, ticket) = locals.lookup(0)
        if let local { return local }
        guard let value = current.withLock({ $0 }) else { return nil }
        // Refused if the value changed since the lookup: a local of the older one would outlive it.
        let made = Local(localize(value))
        locals.fill(0, made, ticket)
        return made
    }

    /// Replaces the value (nil: none); returns the one it replaced.
    @discardableResult
    public func set(_ value: Value?) -> Value? {
        update { current in
            defer { current = value }
            return current
        }
    }

    /// Runs `body` on the value under its lock, then drops every CPU's local.
    public func update<R>(_ body: (inout Value?) -> R) -> R {
        let result = current.withLock { body(&$0) }
        locals.removeAll()
        return result
    }
}
