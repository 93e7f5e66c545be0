import CofferCore
import Testing

@testable import CofferAudit

/// A device keeps the hashed body of a read's response by a fingerprint, and copies it when a read
/// prints the same body again. A KV read answered in JSON carries its values as the stored bytes
/// (`Response.verbatimMember`), which the fingerprint covers, so the device parses them only to hash
/// a body it has not kept.
@Suite struct AuditKeptBodyTests {
    /// Reads whose `data` is the same dictionary (the version's metadata) and whose stored values
    /// differ: each record hashes its own values, though the other's body is kept, and prints what
    /// the parsed answer's record prints.
    @Test func aReadAnsweredInJSONIsKeptByTheBytesOfItsValues() throws {
        let sink = AuditBatchTests.GatedSink()
        sink.release.signal()  // the first write does not wait
        let config = AuditDeviceConfig(path: "kept", type: "file", options: [:])
        let device = try AuditDevice(config: config, sink: sink, salt: SecureBytes(randomCount: 32))
        defer { device.close() }
        let metadata: [String: JSONValue] = ["metadata": ["version": 1, "created_time": "2026-12-05T00:00:00Z"]]
        func read(_ response: Response) throws {
            var record = AuditRecord(request: Request(.read, "secret/data/x"), caller: nil, time: SystemClock().now())
            record.response = response
            try device.write(record, .response)
        }
        func verbatim(_ json: String) -> Response {
            var response = Response(data: metadata)
            response.verbatimMember = ("data", Array(json.utf8)[...])
            return response
        }
        try read(verbatim(#"{"v":"one"}"#))
        try read(verbatim(#"{"v":"two"}"#))
        try read(verbatim(#"{"v":"one"}"#))
        try read(Response(data: metadata.merging(["data": ["v": "two"]]) { $1 }))

        let printed = try sink.taken.withLock { $0 }.flatMap { $0.split(separator: 0x0A) }.map {
            try JSONValue.parse(Array($0))["response"]?["data"]
        }
        #expect(printed.map { $0?["data"]?["v"]?.stringValue } == ["one", "two", "one", "two"].map(device.hash))
        #expect(printed.allSatisfy { $0?["metadata"] == printed.first??["metadata"] })
        #expect(printed.first??["metadata"]?["version"] == 1)
    }
}
