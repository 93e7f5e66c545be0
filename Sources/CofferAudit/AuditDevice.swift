package import CofferCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// When a device's records reach its file or socket (the `sync` option; docs/audit.md).
package enum AuditSync: String, Sendable {
    /// Records of requests that can change state are written before the request is handled (its
    /// request record) and before its answer is returned (its response record). Records of reads
    /// and lists are queued and written by the device's writer thread, many per write(2), within
    /// about a millisecond. The default.
    case writes
    /// Every record is written before the request goes on, as Vault does.
    case all
}

/// One live device: its sink, its keys, its hash chain and its queue of records waiting to be written.
package final class AuditDevice: Sendable {
    package let config: AuditDeviceConfig
    package let sink: any AuditSink
    /// Keys the `hmac-sha256:` hashes of strings (the device's salt).
    let hashKey: HMACKey
    /// Keys the MAC that chains records together (derived from the salt).
    package let chainKey: SecureBytes
    let chainMAC: HMACKey
    let logRaw: Bool

    private struct State: ~Copyable {
        var chain = AuditChainState()
        /// Bytes that go out before the next records: the end of a line a crash cut short and the
        /// record that marks it (see `init`). `chain` already counts them.
        var pending: [UInt8] = []
        /// The buffer the last batch was built in, emptied, kept for the next: a new one of a busy
        /// batch's size (about 1 MB) came from fresh pages each time, a page fault per 4 KiB.
        var buffer: [UInt8] = []
        var failures = 0
        var lastFailure = ""
        var closed = false
    }
    /// Held while lines are built and written, so that the chain advances in file order. A pthread
    /// mutex rather than `Mutex` (a priority-inheritance futex on Linux, whose waiters spin in the
    /// kernel for as long as the holder runs): the holder may be building and writing thousands of
    /// queued records, and a request or flush waiting for it should sleep, not burn a core.
    private let stateLock = Monitor()
    private nonisolated(unsafe) var stateStorage = State()

    private func withState<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        try stateLock.withLock { () throws(E) -> R in try body(&stateStorage) }
    }
    /// Set while the last write failed: reads are then written synchronously (which retries the
    /// sink) instead of queued behind a device that cannot take them.
    private let failing = Atomic<Bool>(false)
    private let queue: AuditQueue?
    /// The hashed token and accessor and the serialised `auth` block of recent callers, by accessor:
    /// all three are fixed for a token's life, so a caller's records after the first skip two HMACs
    /// and the block's serialisation. Only hashes and what the record prints are kept, never a token.
    let authBlocks = Mutex<[String: AuthBlock]>([:])
    static let authBlockLimit = 1024
    /// The hashed JSON of the bodies of recent read responses, by `fingerprint`: a secret read again
    /// prints the same HMACs, so its record copies them instead of hashing each value again. Only what
    /// the record prints is kept (HMACs, keys, numbers), never a value; bounded like `authBlocks`.
    let hashedBodies = Mutex<[Int: [UInt8]]>([:])
    static let hashedBodyLimit = 1024
    /// The most a kept hashed body holds: a big one (a LIST of many keys) is seldom read twice unchanged.
    static let hashedBodyBytes = 4096
    /// Mixed into every fingerprint, so that no one can compute one without this device's memory.
    let fingerprintKey = (UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max))

    struct AuthBlock: Sendable {
        let token: [UInt8]
        let accessor: [UInt8]
        let auth: [UInt8]
        /// The chain MAC's state after `{"auth":` and `auth`: derived from the chain key, zeroed when dropped.
        let chainPrefix: HMACPrefix
    }

    init(config: AuditDeviceConfig, sink: any AuditSink, salt: SecureBytes) throws(CofferError) {
        self.config = config
        self.sink = sink
        self.hashKey = HMACKey(salt)
        self.chainKey = try AuditChain.chainKey(salt: salt)
        self.chainMAC = HMACKey(chainKey)
        self.logRaw = ["true", "1"].contains(config.options["log_raw"]?.lowercased() ?? "")
        // makeSink refused any other value before the device got this far.
        self.queue = config.options["sync"] == AuditSync.all.rawValue ? nil : AuditQueue()
        if let tail = sink.openingTail() {
            let (chain, pending) = AuditDevice.continuation(of: tail, key: chainMAC)
            withState { s in
                s.chain = chain
                s.pending = pending
            }
        }
        AuditDevice.live.withLock { $0[ObjectIdentifier(self)] = WeakDevice(device: self) }
        _ = AuditDevice.processHooks
        // End a torn line at once rather than with the next request (if this fails, the next write retries).
        try? flush()
    }

    deinit {
        // A vault dropped without being closed still writes what it queued; a retired device closes
        // its file when the last request that was using it is done.
        queue?.stop()
        try? flush()
        sink.close()
        AuditDevice.live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
    }

    /// Where the chain goes on in a file whose end is `tail`, and what to write before the next record.
    ///
    /// The chain continues from the last whole record (its `seq` and MAC). If the file ends in the
    /// middle of a line (a write cut short by a crash or a power loss), that line is ended with a
    /// newline, and, unless it is a whole record that lacks only its newline, followed by a `torn`
    /// record of the device's own: the next `seq`, chained to the last whole record, with the length
    /// and SHA-256 of the torn line. `coffer audit verify` accepts a line that is not a record only
    /// when such a record vouches for it, and so tells a crash from an edit.
    static func continuation(of tail: AuditFileTail, key: HMACKey) -> (chain: AuditChainState, pending: [UInt8]) {
        func position(after line: [UInt8]) -> AuditChainState? {
            guard let record = AuditChain.split(line), let seq = (try? JSONValue.parse(record.body))?["seq"]?.intValue
            else { return nil }
            return AuditChainState(seq: seq, prev: Array(record.mac.utf8))
        }
        var chain = tail.lastLine.flatMap(position(after:)) ?? AuditChainState()
        guard !tail.fragment.isEmpty else { return (chain, []) }
        let pending: [UInt8] = [0x0A]
        // A blank fragment (a stray space or carriage return) needs only its newline: verify skips it.
        if AuditChain.isBlank(tail.fragment) { return (chain, pending) }
        if let record = AuditChain.split(tail.fragment),
            ConstantTime.equals(Array(Hex.encode(key.mac(record.body)).utf8), Array(record.mac.utf8)),
            let whole = position(after: tail.fragment)
        {
            return (whole, pending)
        }
        var marked = pending
        AuditDevice.appendTornRecord(
            fragment: tail.fragment,
            time: SystemClock().now(),
            chain: &chain,
            key: key,
            to: &marked
        )
        return (chain, marked)
    }

    package var failures: (count: Int, last: String) { withState { ($0.failures, $0.lastFailure) } }

    /// Whether a read's request record may be deferred to go out with its response record: the
    /// device queues (`sync` "writes") and its last write succeeded. (`enqueue` may still refuse
    /// them, in a forked child or with the queue full; they are then written at once.)
    var queuesReads: Bool { queue != nil && !failing.load(ordering: .relaxed) }

    /// Queues `phases` of `record` for the writer thread. False if it cannot take them (the device
    /// does not queue, is failing, is full, or this is a forked child): write them with `write` then.
    func enqueue(_ record: AuditRecord, _ phases: AuditPhases) -> Bool {
        guard let queue, !failing.load(ordering: .relaxed) else { return false }
        switch queue.push((record, phases)) {
        case .queued: return true
        case .refused: return false
        case .queuedNeedsWriter:
            startWriter(queue)
            return true
        }
    }

    /// Writes everything queued, then `phases` of `record`, in one write, before returning.
    func write(_ record: AuditRecord, _ phases: AuditPhases) throws(CofferError) {
        try withState { (s) throws(CofferError) in try commit(&s, extra: (record, phases)) }
    }

    /// Writes every queued record now.
    package func flush() throws(CofferError) {
        try withState { (s) throws(CofferError) in try commit(&s, extra: nil) }
    }

    /// Takes the device out of service: writes what is queued and stops the writer, but keeps the
    /// file or socket open for the requests already under way, whose response records still come here
    /// (so a device records the request that disabled it, and the devices of a sealed vault record
    /// the seal's answer). It closes when the last of them is done (`deinit`).
    func retire() {
        queue?.stop()
        try? flush()
    }

    /// Writes what is queued, stops the writer and closes the sink. Later records are refused.
    func close() {
        queue?.stop()
        withState { s in
            try? commit(&s, extra: nil)
            s.closed = true
        }
        sink.close()
        AuditDevice.live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
    }

    /// Builds the queued records and `extra` into lines and writes them, at most `batchRecords` records
    /// to a call to the sink. The chain advances past each write that succeeds; if one fails, its
    /// records and those after it go back to the front of the queue (to be written, in order, when the
    /// device works again), and `extra` is not written.
    private func commit(_ s: inout State, extra: (AuditRecord, AuditPhases)?) throws(CofferError) {
        guard !s.closed else { throw CofferError(.auditFailed, "the audit device \(config.path) was disabled") }
        let queued = queue?.takeAll() ?? []
        defer { queue?.recycle(queued) }
        guard !queued.isEmpty || extra != nil || !s.pending.isEmpty else { return }
        var start = 0
        repeat {
            let end = min(queued.count, start + AuditDevice.batchRecords)
            do {
                try write(&s, queued[start..<end], extra: end == queued.count ? extra : nil)
            } catch {
                queue?.putBack(Array(queued[start...]))
                throw error
            }
            start = end
        } while start < queued.count
    }

    /// The most records one write carries: a full queue's 4,096 read records are about 10 MB of lines,
    /// and a buffer that size would not be kept (`keptBuffer`).
    static let batchRecords = 1024
    /// The largest batch buffer kept from one write to the next.
    static let keptBuffer = 4 << 20

    private func write(
        _ s: inout State,
        _ records: ArraySlice<AuditQueue.Item>,
        extra: (AuditRecord, AuditPhases)?
    ) throws(CofferError) {
        var chain = s.chain
        var out = s.buffer
        s.buffer = []
        defer {
            out.removeAll(keepingCapacity: true)
            if out.capacity <= AuditDevice.keptBuffer { s.buffer = out }
        }
        // A KV read's two lines are about 2.4 KB (936 + 1,434 bytes for `bao kv get` with a policy
        // token); reserving less made a busy batch's buffer grow, and be copied, twice or three times.
        out.reserveCapacity(s.pending.count + (records.count + 1) * 3072)
        out.append(contentsOf: s.pending)
        for (record, phases) in records { appendLines(record, phases, chain: &chain, to: &out) }
        if let (record, phases) = extra { appendLines(record, phases, chain: &chain, to: &out) }
        do {
            try sink.write(out)
        } catch {
            s.failures += 1
            s.lastFailure = error.message
            failing.store(true, ordering: .relaxed)
            throw error
        }
        s.chain = chain
        s.pending = []
        failing.store(false, ordering: .relaxed)
    }

    // MARK: Hashing

    /// `hmac-sha256:<hex>` of a string under this device's salt.
    package func hash(_ value: String) -> String {
        var out: [UInt8] = []
        appendHash(value, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `hmac-sha256:<64 hex digits>`.
    private func appendHash(_ value: String, to out: inout [UInt8]) {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { d in
            let into = d.baseAddress!.assumingMemoryBound(to: UInt8.self)
            if value.utf8.withContiguousStorageIfAvailable({ hashKey.mac(UnsafeRawBufferPointer($0), into: into) })
                == nil
            {
                Array(value.utf8).withUnsafeBytes { hashKey.mac($0, into: into) }
            }
        }
        out.appendLiteral("hmac-sha256:")
        withUnsafeBytes(of: &digest) { Hex.append($0, to: &out) }
    }

    /// Writes `value` as JSON with every string (recursively) replaced by its hash, unless `log_raw`.
    func writeHashed(_ value: JSONValue, to out: inout [UInt8]) {
        if logRaw {
            value.write(to: &out)
            return
        }
        switch value {
        case .string(let s):
            out.append(UInt8(ascii: "\""))
            appendHash(s, to: &out)
            out.append(UInt8(ascii: "\""))
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeHashed(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            for (i, (key, item)) in object.sorted(by: { $0.key < $1.key }).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                writeHashed(item, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        default:
            value.write(to: &out)
        }
    }

    /// A token or accessor as it appears in a record: hashed, or "" when absent.
    func writeHashed(_ value: String?, to out: inout [UInt8]) {
        guard let value, !value.isEmpty else {
            out.appendLiteral(#""""#)
            return
        }
        writeHashed(.string(value), to: &out)
    }

    // MARK: The writer thread

    /// How long the writer lets records gather before it writes them: the most a read's records
    /// wait, and the batch that one write(2) carries.
    static let gatherMicroseconds: UInt32 = 1000

    private struct WeakDevice: @unchecked Sendable {
        weak var device: AuditDevice?
    }

    /// Every open device, so that a process that exits without closing its vault still writes what
    /// it queued (atexit).
    private static let live = Mutex<[ObjectIdentifier: WeakDevice]>([:])

    /// Bumped in a forked child: the writer threads did not survive the fork, so queues made before
    /// it refuse records there (they are written synchronously instead).
    static let forkGeneration = Atomic<Int>(0)

    /// Held by a writer thread while it writes and by `fork()` while it copies the process, so that a
    /// child never inherits a device lock held by a writer thread it does not have.
    nonisolated(unsafe) fileprivate static let forkGuard: UnsafeMutablePointer<pthread_mutex_t> = {
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        return mutex
    }()

    private static let processHooks: Void = {
        _ = forkGuard
        pthread_atfork(
            { pthread_mutex_lock(AuditDevice.forkGuard) },
            { pthread_mutex_unlock(AuditDevice.forkGuard) },
            {
                pthread_mutex_unlock(AuditDevice.forkGuard)
                AuditDevice.forkGeneration.add(1, ordering: .relaxed)
            }
        )
        atexit {
            let devices = AuditDevice.live.withLock { $0.values.compactMap(\.device) }
            for device in devices { try? device.flush() }
        }
    }()

    private func startWriter(_ queue: AuditQueue) {
        let context = WriterContext(queue: queue, device: WeakDevice(device: self))
        if startThread({ context.run() }) == nil {
            queue.writerFailedToStart()
        }
    }

    private final class WriterContext: @unchecked Sendable {
        let queue: AuditQueue
        let device: WeakDevice

        init(queue: AuditQueue, device: WeakDevice) {
            self.queue = queue
            self.device = device
        }

        /// Waits for records, lets more gather, writes them all; after a failed write, tries again
        /// each second (requests meanwhile write synchronously, which also retries).
        func run() {
            var failed = false
            while queue.waitForWork(backOff: failed) {
                usleep(AuditDevice.gatherMicroseconds)
                guard let device = device.device else { return }
                pthread_mutex_lock(AuditDevice.forkGuard)
                do {
                    try device.flush()
                    failed = false
                } catch {
                    failed = true
                }
                pthread_mutex_unlock(AuditDevice.forkGuard)
            }
        }
    }
}

/// The records a device has accepted but not written yet, and the writer thread's wake-up. A plain
/// pthread mutex and condition: the writer sleeps on the condition only when the queue is empty, so
/// a request signals (a futex call) only on the first record after a quiet spell.
package final class AuditQueue: @unchecked Sendable {
    typealias Item = (record: AuditRecord, phases: AuditPhases)

    /// Past this many queued records a request writes synchronously: the writer is not keeping up
    /// (or cannot write), and memory must not grow without bound.
    static let limit = 4096

    enum PushResult { case queued, queuedNeedsWriter, refused }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Guarded by `mutex`.
    private var items: [Item] = []
    /// An empty array with room, to queue into once `items` is taken (`recycle`).
    private var spare: [Item] = []
    private var writerIdle = false
    private var writerStarted = false
    private var stopped = false
    private let generation = AuditDevice.forkGeneration.load(ordering: .relaxed)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    func push(_ item: Item) -> PushResult {
        guard AuditDevice.forkGeneration.load(ordering: .relaxed) == generation else { return .refused }
        var wake = false
        let result: PushResult = locked {
            guard !stopped, items.count < AuditQueue.limit else { return .refused }
            items.append(item)
            wake = writerIdle
            if writerStarted { return .queued }
            writerStarted = true
            return .queuedNeedsWriter
        }
        if wake { pthread_cond_signal(condition) }
        return result
    }

    func takeAll() -> [Item] {
        locked {
            let all = items
            items = spare
            spare = []
            return all
        }
    }

    /// Takes back an array `takeAll` returned, emptied, for records to be queued into: a new one
    /// grows through fresh pages as a busy millisecond's records arrive, a page fault per 4 KiB.
    func recycle(_ used: consuming [Item]) {
        used.removeAll(keepingCapacity: true)
        locked { if used.capacity > spare.capacity { spare = used } }
    }

    /// Puts records that could not be written back in front of any queued since.
    func putBack(_ failed: [Item]) {
        guard !failed.isEmpty else { return }
        locked { items = failed + items }
    }

    /// Blocks until there is something to write (true) or the queue is stopped (false). With
    /// `backOff`, waits a second first, unless stopped meanwhile.
    func waitForWork(backOff: Bool) -> Bool {
        locked {
            if backOff && !stopped {
                var deadline = timespec()
                clock_gettime(CLOCK_REALTIME, &deadline)
                deadline.tv_sec += 1
                writerIdle = true
                _ = pthread_cond_timedwait(condition, mutex, &deadline)
                writerIdle = false
            }
            while items.isEmpty && !stopped {
                writerIdle = true
                pthread_cond_wait(condition, mutex)
                writerIdle = false
            }
            return !stopped
        }
    }

    /// No writer could be started: later records are refused (and written synchronously).
    func writerFailedToStart() {
        locked { stopped = true }
    }

    /// Refuses further records and lets the writer thread end.
    func stop() {
        locked { stopped = true }
        pthread_cond_broadcast(condition)
    }
}
