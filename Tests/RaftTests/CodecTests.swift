import Testing

@testable import Raft

/// The wire form the transport will carry: it must round-trip every field, and a truncated, oversized or
/// garbage frame must be refused with an error, never a trap or a huge allocation.
@Suite struct CodecTests {
    static func randomMessage(_ random: inout SplitMix64) -> Message {
        func value() -> UInt64 {
            switch random.next() % 4 {
            case 0: 0
            case 1: random.next() % 300
            case 2: UInt64.max - random.next() % 3
            default: random.next()
            }
        }
        func bytes() -> [UInt8] {
            (0..<Int(random.next() % 40)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        }
        let kinds = MessageKind.allCases
        var m = Message(kind: kinds[Int(random.next() % UInt64(kinds.count))])
        m.to = value()
        m.from = value()
        m.term = value()
        m.logTerm = value()
        m.index = value()
        m.commit = value()
        m.rejectHint = value()
        m.reject = random.next() % 2 == 0
        m.context = bytes()
        m.entries = (0..<Int(random.next() % 5)).map { _ in
            Entry(term: value(), index: value(), kind: random.next() % 2 == 0 ? .normal : .confChange, data: bytes())
        }
        if random.next() % 3 == 0 {
            let conf = ConfState(voters: (0..<Int(random.next() % 6)).map { _ in value() }, learners: [value()])
            m.snapshot = Snapshot(
                metadata: SnapshotMetadata(index: value(), term: value(), confState: conf),
                data: bytes()
            )
        }
        return m
    }

    @Test func everyFieldOfEveryKindRoundTrips() throws {
        var random = SplitMix64(seed: 1)
        for _ in 0..<2000 {
            let m = Self.randomMessage(&random)
            let bytes = try MessageCodec.encode(m)
            #expect(bytes[0] == MessageCodec.magic && bytes[1] == MessageCodec.version)
            #expect(try MessageCodec.decode(bytes) == m)
        }
    }

    @Test func aTruncatedFrameIsIncompleteOnAStreamAndAnErrorOnItsOwn() throws {
        var random = SplitMix64(seed: 2)
        for _ in 0..<50 {
            let bytes = try MessageCodec.encode(Self.randomMessage(&random))
            for length in 0..<bytes.count {
                let prefix = Array(bytes.prefix(length))
                #expect(
                    try MessageCodec.decodeFrame(prefix[...]) == nil,
                    "a prefix of \(length) bytes is not a frame yet"
                )
                #expect(throws: RaftError.self) { try MessageCodec.decode(prefix) }
            }
        }
    }

    @Test func framesOnAStreamDecodeOneAfterTheOther() throws {
        let first = Message(kind: .heartbeat, to: 2, from: 1, term: 7, commit: 3, context: [1, 2])
        let second = Message(
            kind: .append,
            to: 2,
            from: 1,
            term: 7,
            logTerm: 7,
            index: 3,
            entries: [Entry(term: 7, index: 4, data: [9])]
        )
        let stream = try MessageCodec.encode(first) + MessageCodec.encode(second)
        let one = try #require(try MessageCodec.decodeFrame(stream[...]))
        #expect(one.message == first)
        let two = try #require(try MessageCodec.decodeFrame(stream[one.frameLength...]))
        #expect(two.message == second)
        #expect(one.frameLength + two.frameLength == stream.count)
        #expect(throws: RaftError.self) { try MessageCodec.decode(stream) }
    }

    @Test func hostileFramesAreRefusedWithTheReason() throws {
        func refuses(_ bytes: [UInt8], _ reason: String) {
            do {
                _ = try MessageCodec.decode(bytes)
                Issue.record("decoded \(bytes) although \(reason)")
            } catch {
                #expect(error.code == .malformedMessage)
                #expect(error.message.contains(reason), "\(error.message)")
            }
        }
        let valid = try MessageCodec.encode(Message(kind: .vote, to: 2, from: 1, term: 3))
        refuses([0x00] + valid.dropFirst(), "bad magic")
        refuses([valid[0], 2] + valid.dropFirst(2), "version 2")
        refuses(valid + [0], "trailing")
        // A body length of 4 GiB is refused before anything is read or allocated.
        refuses([0x52, 1, 0xFF, 0xFF, 0xFF, 0xFF], "exceeds the limit")
        func frame(_ body: [UInt8]) -> [UInt8] {
            [0x52, 1, 0, 0, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        }
        let header: [UInt8] = [4, 0]  // vote, no flags
        let zeros = [UInt8](repeating: 0, count: 7)  // seven zero varints
        refuses(frame([99, 0] + zeros + [0, 0]), "unknown message kind 99")
        refuses(frame([4, 0x80] + zeros + [0, 0]), "unknown flags")
        refuses(frame(header + [UInt8](repeating: 0x80, count: 10) + [0x00]), "longer than 10 bytes")
        refuses(frame(header + [UInt8](repeating: 0xFF, count: 9) + [0x02]), "overflows 64 bits")
        // A context or entry count far larger than the bytes that follow.
        refuses(frame(header + zeros + [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), "exceeds the remaining")
        refuses(frame(header + zeros + [0] + [0xFF, 0xFF, 0x03]), "exceeds the remaining")
        refuses(frame(header + zeros + [0, 1, 7, 1, 1, 0]), "unknown entry kind 7")
    }

    @Test func randomlyCorruptedFramesNeverTrap() throws {
        var random = SplitMix64(seed: 3)
        var refused = 0
        for _ in 0..<5000 {
            var bytes = try MessageCodec.encode(Self.randomMessage(&random))
            for _ in 0...(random.next() % 4) {
                let at = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 3 {
                case 0: bytes[at] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                case 1: bytes.remove(at: at)
                default: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: at)
                }
            }
            do {
                _ = try MessageCodec.decode(bytes)
            } catch {
                #expect(error.code == .malformedMessage)
                refused += 1
            }
        }
        // Most corruptions change the length or a structural byte; some land in a value and still decode.
        #expect(refused > 2500)
        for length in 0..<64 {
            let garbage = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            #expect(throws: RaftError.self) { try MessageCodec.decode(garbage) }
        }
    }

    @Test func membershipChangesRoundTripAndGarbageIsNotOne() {
        for change in [ConfChange(.addVoter, 1), ConfChange(.addLearner, 300), ConfChange(.removeNode, .max)] {
            #expect(ConfChange(encoded: change.encoded) == change)
        }
        #expect(ConfChange(encoded: []) == nil)
        #expect(ConfChange(encoded: [2, 0, 1]) == nil, "unknown version")
        #expect(ConfChange(encoded: [1, 9, 1]) == nil, "unknown kind")
        #expect(ConfChange(encoded: [1, 0, 1, 0]) == nil, "trailing byte")
        #expect(ConfChange(encoded: [1, 0, 0x80]) == nil, "truncated varint")
    }
}
