import CofferCore
import Foundation
import Synchronization
import Testing

@testable import CofferAudit

/// How a device writes a queue that filled up while it was busy: in writes of at most
/// `AuditDevice.batchRecords` records, each advancing the chain, and, when one write fails, with the
/// records it and the later writes held going back to the queue in order.
@Suite struct AuditBatchTests {
    /// Keeps every write it takes. Its first write waits until `release` (the device's lock held
    /// meanwhile, so records pile up in the queue); the write numbered `failing` (0-based) throws once.
    final class GatedSink: AuditSink {
        let taken = Mutex<[[UInt8]]>([])
        let attempts = Mutex(0)
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let failing: Int?

        init(failing: Int? = nil) { self.failing = failing }

        func write(_ lines: [UInt8]) throws(CofferError) {
            let attempt = attempts.withLock { n in
                defer { n += 1 }
                return n
            }
            if attempt == 0 {
                entered.signal()
                release.wait()
            }
            if attempt == failing { throw CofferError(.auditFailed, "the disk is full (a test's)") }
            taken.withLock { $0.append(lines) }
        }

        func reopen() throws(CofferError) {}
        func close() {}
        func openingTail() -> AuditFileTail? { nil }
    }

    func record(_ i: Int) -> AuditRecord {
        var record = AuditRecord(request: Request(.read, "secret/data/k\(i)"), caller: nil, time: SystemClock().now())
        record.response = Response(data: ["v": .string("value \(i)")])
        return record
    }

    /// Queues one read, waits until the writer thread is inside the sink with it, queues `count` more.
    func fill(_ device: AuditDevice, _ sink: GatedSink, count: Int) throws {
        try #require(device.enqueue(record(0), .both))
        sink.entered.wait()
        for i in 1...count { try #require(device.enqueue(record(i), .both)) }
        sink.release.signal()
    }

    /// The read paths the writes hold, in file order.
    func paths(_ writes: [[UInt8]]) throws -> [String] {
        try writes.flatMap { $0.split(separator: 0x0A) }.map { try JSONValue.parse(Array($0)) }
            .filter { $0["type"] == "response" }.compactMap { $0["request"]?["path"]?.stringValue }
    }

    @Test func aFullQueueGoesOutInBoundedWritesWithTheChainWhole() throws {
        let sink = GatedSink()
        let config = AuditDeviceConfig(path: "gated", type: "file", options: [:])
        let device = try AuditDevice(config: config, sink: sink, salt: SecureBytes(randomCount: 32))
        let count = 3000
        try fill(device, sink, count: count)
        try device.flush()
        device.close()

        let writes = sink.taken.withLock { $0 }
        let lines = writes.map { $0.split(separator: 0x0A).count }
        #expect(lines.reduce(0, +) == 2 * (count + 1))
        #expect(lines.max() ?? 0 <= 2 * AuditDevice.batchRecords, "\(lines)")
        #expect(lines.count >= 2 + count / AuditDevice.batchRecords, "\(lines)")
        #expect(try paths(writes) == (0...count).map { "secret/data/k\($0)" })
        let verdict = AuditChain.verify(contents: writes.flatMap { $0 }, key: device.chainKey)
        #expect(verdict.problem == nil && verdict.records == 2 * (count + 1))
    }

    /// The second write of the big batch fails: the first stays written, and the records of the failed
    /// write and of those after it are written by the next flush, once each, in order.
    @Test func aWriteThatFailsInTheMiddleOfAFullQueueLosesAndRepeatsNothing() throws {
        let sink = GatedSink(failing: 2)
        let config = AuditDeviceConfig(path: "gated", type: "file", options: [:])
        let device = try AuditDevice(config: config, sink: sink, salt: SecureBytes(randomCount: 32))
        let count = 3000
        try fill(device, sink, count: count)
        // The writer thread or this flush meets the failure; either way the device then reports it.
        try? device.flush()
        #expect(device.failures.count == 1)
        try device.flush()
        device.close()

        let writes = sink.taken.withLock { $0 }
        #expect(try paths(writes) == (0...count).map { "secret/data/k\($0)" })
        let verdict = AuditChain.verify(contents: writes.flatMap { $0 }, key: device.chainKey)
        #expect(verdict.problem == nil && verdict.records == 2 * (count + 1))
    }
}
