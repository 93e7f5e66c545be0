/// The tamper-evident chain of an audit device's records.
///
/// Each record is one JSON line ending in `,"mac":"<64 hex>"}`. The MAC is HMAC-SHA256, under a key
/// derived from the device's salt, of the line before that suffix closed with `}`; the record's body
/// carries `seq` (1, 2, 3, ... per device) and `prev_mac` (the MAC of the record before it). Editing
/// a record breaks its MAC; removing one breaks `seq` and the next record's `prev_mac`; reordering
/// breaks `seq`. Removing records from the end is not detectable from the file alone.
public enum AuditChain {
    static let macPrefix = Array(#","mac":""#.utf8)
    static let macSuffixLength = macPrefix.count + 64 + 2

    static func chainKey(salt: SecureBytes) throws(CofferError) -> SecureBytes {
        try Digest.hkdfSHA256(key: salt, salt: [], info: Array("coffer audit chain v1".utf8), length: 32)
    }

    /// Seals the body that runs from `start` to the end of `out` (`{...}`) into a line: appends the
    /// MAC before the closing brace and a newline. Returns the MAC (64 hex digits).
    static func seal(lineFrom start: Int, of out: inout [UInt8], key: HMACKey) -> [UInt8] {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { d in
            out.withUnsafeBytes { key.mac(UnsafeRawBufferPointer(rebasing: $0[start...]), into: d.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        }
        out.removeLast()  // "}"
        out.append(contentsOf: macPrefix)
        let macStart = out.count
        withUnsafeBytes(of: &digest) { Hex.append($0, to: &out) }
        let mac = Array(out[macStart...])
        out.appendLiteral("\"}\n")
        return mac
    }

    /// Whether a line holds only spaces and line ends: verify skips such lines.
    static func isBlank(_ line: some Collection<UInt8>) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D }
    }

    /// Splits a line into the body the MAC covers and the MAC; nil if the line does not end in a MAC.
    static func split(_ line: [UInt8]) -> (body: [UInt8], mac: String)? {
        var line = line[...]
        while line.last == 0x0A || line.last == 0x0D { line = line.dropLast() }
        guard line.count > macSuffixLength else { return nil }
        let suffix = Array(line.suffix(macSuffixLength))
        guard suffix.starts(with: macPrefix), suffix.suffix(2) == [0x22, 0x7D] else { return nil }
        let mac = String(decoding: suffix.dropFirst(macPrefix.count).prefix(64), as: UTF8.self)
        guard Hex.decode(mac)?.count == 32 else { return nil }
        var body = Array(line.dropLast(macSuffixLength))
        body.append(0x7D)
        return (body, mac)
    }

    /// The outcome of verifying a file.
    public struct Verdict: Sendable, Equatable {
        public var records: Int
        /// The first problem found: the 1-based line number and what is wrong; nil if the chain is intact.
        public var problem: (line: Int, reason: String)?

        public static func == (a: Verdict, b: Verdict) -> Bool {
            a.records == b.records && a.problem?.line == b.problem?.line && a.problem?.reason == b.problem?.reason
        }
    }

    /// Verifies the lines of an audit file with the device's chain key (from `sys/audit-chain-key/<path>`).
    public static func verify(lines: [[UInt8]], key: SecureBytes) -> Verdict {
        let key = HMACKey(key)
        var previous: (seq: Int, mac: String)?
        var count = 0
        for (index, line) in lines.enumerated() {
            let number = index + 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D }) { continue }
            guard let (body, mac) = split(line) else {
                return Verdict(records: count, problem: (number, "line \(number) is not a Coffer audit record: it was edited or truncated"))
            }
            let expected = Hex.encode(key.mac(body))
            guard ConstantTime.equals(Array(expected.utf8), Array(mac.utf8)) else {
                return Verdict(records: count, problem: (number, "line \(number) was edited: its MAC does not match its content"))
            }
            guard let json = try? JSONValue.parse(body), let seq = json["seq"]?.intValue,
                let prev = json["prev_mac"]?.stringValue
            else {
                return Verdict(records: count, problem: (number, "line \(number) has no seq or prev_mac"))
            }
            if let previous {
                if seq <= previous.seq {
                    return Verdict(records: count, problem: (number, "line \(number) is out of order: seq \(seq) follows seq \(previous.seq)"))
                }
                if seq > previous.seq + 1 {
                    let missing = seq - previous.seq - 1
                    return Verdict(records: count, problem: (number, "\(missing) record(s) removed before line \(number): seq jumps from \(previous.seq) to \(seq)"))
                }
                if prev != previous.mac {
                    return Verdict(records: count, problem: (number, "line \(number) does not follow line \(number - 1): the chain is broken"))
                }
            }
            previous = (seq, mac)
            count += 1
        }
        return Verdict(records: count, problem: nil)
    }
}
