/// The tamper-evident chain of an audit device's records.
///
/// Each record is one JSON line ending in `,"mac":"<64 hex>"}`. The MAC is HMAC-SHA256, under a key
/// derived from the device's salt, of the line before that suffix closed with `}`; the record's body
/// carries `seq` (1, 2, 3, ... per device) and `prev_mac` (the MAC of the record before it). Editing
/// a record breaks its MAC; removing one breaks `seq` and the next record's `prev_mac`; reordering
/// breaks `seq`. Removing records from the end is not detectable from the file alone.
package import CofferCore

package enum AuditChain {
    static let macPrefix = Array(#","mac":""#.utf8)
    static let macSuffixLength = macPrefix.count + 64 + 2

    static func chainKey(salt: SecureBytes) throws(CofferError) -> SecureBytes {
        try Digest.hkdfSHA256(key: salt, salt: [], info: Array("coffer audit chain v1".utf8), length: 32)
    }

    /// Seals the body that runs from `start` to the end of `out` (`{...}`) into a line: appends the
    /// MAC before the closing brace and a newline. Returns the MAC (64 hex digits). With `prefix` (the
    /// key's state after the body's first `prefix.length` bytes, which the caller vouches for), only
    /// the rest of the body is hashed.
    static func seal(lineFrom start: Int, of out: inout [UInt8], key: HMACKey, prefix: HMACPrefix? = nil) -> [UInt8] {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { d in
            let into = d.baseAddress!.assumingMemoryBound(to: UInt8.self)
            out.withUnsafeBytes {
                if let prefix {
                    key.mac(after: prefix, UnsafeRawBufferPointer(rebasing: $0[(start + prefix.length)...]), into: into)
                } else {
                    key.mac(UnsafeRawBufferPointer(rebasing: $0[start...]), into: into)
                }
            }
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
    package struct Verdict: Sendable, Equatable {
        package var records: Int
        /// The first problem found: the 1-based line number and what is wrong; nil if the chain is intact.
        package var problem: (line: Int, reason: String)?
        /// Lines that hold the start of a record a crash cut short, each vouched for by the `torn`
        /// record the device wrote on the line after it when it next opened the file.
        package var tornLines: [Int] = []
        /// The last line, when the file does not end in a newline and that line is not a whole record:
        /// a write in progress, or one cut short that no device has marked yet. It is not verified.
        package var incompleteLastLine: Int?

        package static func == (a: Verdict, b: Verdict) -> Bool {
            a.records == b.records && a.problem?.line == b.problem?.line && a.problem?.reason == b.problem?.reason
                && a.tornLines == b.tornLines && a.incompleteLastLine == b.incompleteLastLine
        }
    }

    /// Verifies an audit file's contents with the device's chain key (from `sys/audit-chain-key/<path>`).
    /// Unlike `verify(lines:key:)` it knows whether the last line ended in a newline, and so tells a
    /// write cut short at the end of the file from an edited last record.
    package static func verify(contents: [UInt8], key: SecureBytes) -> Verdict {
        var lines = contents.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        let unterminated = lines.last?.isEmpty == false
        if !unterminated { lines.removeLast() }
        return verify(lines: lines, key: key, lastLineUnterminated: unterminated)
    }

    /// Verifies the lines of an audit file (each of which ended in a newline) with the device's chain
    /// key (from `sys/audit-chain-key/<path>`).
    package static func verify(lines: [[UInt8]], key: SecureBytes) -> Verdict {
        verify(lines: lines, key: key, lastLineUnterminated: false)
    }

    static func verify(lines: [[UInt8]], key: SecureBytes, lastLineUnterminated: Bool) -> Verdict {
        let key = HMACKey(key)
        var verdict = Verdict(records: 0, problem: nil)
        var previous: (seq: Int, mac: String)?
        // A line that is not a record, waiting for the next record to say whether it is a torn one.
        var suspect: (number: Int, line: [UInt8], reason: String)?
        func fail(_ number: Int, _ reason: String) -> Verdict {
            verdict.problem = (number, reason)
            return verdict
        }
        for (index, line) in lines.enumerated() {
            let number = index + 1
            if isBlank(line) { continue }
            guard let (body, mac) = split(line) else {
                if let suspect { return fail(suspect.number, suspect.reason) }
                if lastLineUnterminated && index == lines.count - 1 {
                    verdict.incompleteLastLine = number
                    return verdict
                }
                suspect = (number, line, "line \(number) is not a Coffer audit record: it was edited or truncated")
                continue
            }
            let expected = Hex.encode(key.mac(body))
            guard ConstantTime.equals(Array(expected.utf8), Array(mac.utf8)) else {
                if let suspect { return fail(suspect.number, suspect.reason) }
                if lastLineUnterminated && index == lines.count - 1 {
                    verdict.incompleteLastLine = number
                    return verdict
                }
                suspect = (number, line, "line \(number) was edited: its MAC does not match its content")
                continue
            }
            guard let json = try? JSONValue.parse(body), let seq = json["seq"]?.intValue,
                let prev = json["prev_mac"]?.stringValue
            else {
                return fail(suspect?.number ?? number, suspect?.reason ?? "line \(number) has no seq or prev_mac")
            }
            // A `torn` record vouches for exactly the line before it: its length and SHA-256.
            let torn = json["type"]?.stringValue == "torn"
            if let current = suspect {
                guard torn, json["torn"]?["bytes"]?.intValue == current.line.count,
                    json["torn"]?["sha256"]?.stringValue == Hex.encode(Digest.sha256(current.line))
                else { return fail(current.number, current.reason) }
                verdict.tornLines.append(current.number)
                suspect = nil
            } else if torn {
                return fail(
                    number,
                    "line \(number) marks a torn record, but the line before it is not the one it describes: a line was removed or edited"
                )
            }
            if let previous {
                if seq <= previous.seq {
                    return fail(number, "line \(number) is out of order: seq \(seq) follows seq \(previous.seq)")
                }
                if seq > previous.seq + 1 {
                    let missing = seq - previous.seq - 1
                    return fail(
                        number,
                        "\(missing) record(s) removed before line \(number): seq jumps from \(previous.seq) to \(seq)"
                    )
                }
                if prev != previous.mac {
                    return fail(number, "line \(number) does not follow the record before it: the chain is broken")
                }
            }
            previous = (seq, mac)
            verdict.records += 1
        }
        if let suspect { return fail(suspect.number, suspect.reason) }
        return verdict
    }
}
