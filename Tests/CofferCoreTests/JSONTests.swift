import Testing

@testable import CofferCore

@Suite struct JSONTests {
    @Test func roundTripKeepsNumbersExactlyAndSortsKeys() throws {
        let text =
            #"{"b":[1,2.50,-0.0,1e400,12345678901234567890],"a":{"x":null,"y":true},"s":"q\"\\\n\u00e9\ud83d\ude00"}"#
        let value = try JSONValue.parse(text)
        #expect(value["b"]?.arrayValue?[1] == .number("2.50"))
        #expect(value["b"]?.arrayValue?[4] == .number("12345678901234567890"))
        #expect(value["s"]?.stringValue == "q\"\\\né😀")
        #expect(
            value.jsonString
                == #"{"a":{"x":null,"y":true},"b":[1,2.50,-0.0,1e400,12345678901234567890],"s":"q\"\\\né😀"}"#
        )
        #expect(try JSONValue.parse(value.serialized()) == value)
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "expected a string key"), (#"{"a":1,}"#, "expected a string key"),
        ("[1 2]", "expected ','"),
        ("01", "unexpected data"), (#""\x""#, "invalid escape"), ("nul", "unexpected end"),
        (#"{"a":1} x"#, "unexpected data"),
        (#""\ud800""#, "surrogate"), ("1.", "digit expected"),
    ])
    func malformedDocumentsSayWhatIsWrong(text: String, reason: String) {
        #expect {
            _ = try JSONValue.parse(text)
        } throws: { error in
            (error as? JSONParseError)?.reason.contains(reason) ?? false
        }
    }

    /// `parseMember` reads a lone member without the outer object, and gives what a whole parse gives
    /// for every other document (more members, another shape, blanks, broken JSON).
    @Test(arguments: [
        #"{"data":{"a":"b","n":[1,2]}}"#, #"{"data":null}"#, #"{"data":"x"}"#, #"{"data":1,"more":2}"#,
        #"{"more":2,"data":1}"#, #"{ "data" : 1 }"#, #"{"dat":1}"#, #"{"data":}"#, #"{"data":1}}"#,
        #"{"data":{"a":1}"#, #"["data"]"#, #"{"data":{}} "#, "{}",
        // At the nesting limit and one past it: the outer object counts as a level either way.
        #"{"data":"# + String(repeating: "[", count: 255) + String(repeating: "]", count: 255) + "}",
        #"{"data":"# + String(repeating: "[", count: 256) + String(repeating: "]", count: 256) + "}",
    ])
    func aLoneMemberParsesAsTheWholeDocumentWould(text: String) {
        let bytes = Array(text.utf8)
        let whole = Result { () throws(JSONParseError) in try JSONValue.parse(bytes)["data"] }
        let member = Result { () throws(JSONParseError) in try JSONValue.parseMember("data", of: bytes) }
        switch (whole, member) {
        case (.success(let a), .success(let b)): #expect(a == b, "\(text)")
        case (.failure, .failure): break
        default: Issue.record("\(text): whole parse \(whole), member \(member)")
        }
    }

    /// `soleMember` gives the bytes of a lone object or array member exactly, and nothing for a document
    /// where anything follows the value: strings holding brackets, quotes or escapes do not mislead it.
    @Test func aSoleMemberIsTheValueAndNothingAfterIt() {
        func sole(_ text: String) -> String? {
            JSONValue.soleMember("data", of: Array(text.utf8)).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(sole(#"{"data":{"a":"b","n":[1,2]}}"#) == #"{"a":"b","n":[1,2]}"#)
        #expect(sole(#"{"data":[]}"#) == "[]")
        #expect(sole(#"{"data":{"a}":"{[\"]","b\\":"\\"}}"#) == #"{"a}":"{[\"]","b\\":"\\"}"#)
        for other in [
            #"{"data":{"a":1},"more":2}"#, #"{"data":{"a":1}}}"#, #"{"data":"x"}"#, #"{"data":1}"#, #"{"data":null}"#,
            #"{"data":{"a":1}"#, #"{ "data":{}}"#, #"{"dat":{}}"#, #"{"data":{"a":"}"}"#, #"{"data":{}} "#, "{}",
        ] {
            #expect(sole(other) == nil, "\(other)")
        }
    }

    /// `writeObject(_:with:)` writes what serialising the object with the member added would: the member
    /// in its key order (first, between, last), in place of a member of the same name, or alone.
    @Test func anObjectWithAWrittenMemberIsTheObjectWithThatMember() {
        let object: [String: JSONValue] = ["b": 1, "d": ["x": "y"]]
        for name in ["a", "b", "c", "d", "e", "B", "bb"] {
            for base in [object, [:]] {
                var out: [UInt8] = []
                JSONValue.writeObject(base, with: (name, Array(#"{"k":[true,"\""]}"#.utf8)[...]), to: &out)
                var merged = base
                merged[name] = ["k": [true, "\""]]
                #expect(out == JSONValue.object(merged).serialized(), "\(name)")
            }
        }
    }

    @Test func invalidUTF8AndDeepNestingAreRejected() throws {
        #expect(throws: JSONParseError.self) { _ = try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]) }
        #expect(throws: JSONParseError.self) { _ = try JSONValue.parse([0x22, 0x61, 0x62, 0xC3, 0x22]) }  // cut-off é
        #expect(try JSONValue.parse([0x22, 0x61, 0xC3, 0xA9, 0x22]) == .string("aé"))
        let deep = String(repeating: "[", count: 300) + String(repeating: "]", count: 300)
        #expect(throws: JSONParseError.self) { _ = try JSONValue.parse(deep) }
        let ok = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(throws: Never.self) { _ = try JSONValue.parse(ok) }
    }

    /// Strings are scanned eight bytes at a time: a byte that ends the scan (a quote, an escape, a
    /// control character, a byte of a multi-byte character or an invalid one) is found at every offset.
    @Test func everyByteThatMattersIsFoundAtEveryOffset() throws {
        for length in 0..<40 {
            for position in 0..<max(length, 1) {
                let plain = Array(repeating: UInt8(ascii: "a"), count: length)
                func parse(_ body: [UInt8]) throws -> JSONValue { try JSONValue.parse([0x22] + body + [0x22]) }
                func with(_ bytes: [UInt8]) -> [UInt8] {
                    guard length > 0 else { return bytes }
                    var body = plain
                    body.replaceSubrange(position...position, with: bytes)
                    return body
                }
                func text(_ s: String) -> String {
                    length > 0
                        ? String(repeating: "a", count: position) + s
                            + String(repeating: "a", count: length - position - 1) : s
                }
                #expect(try parse(plain) == .string(String(repeating: "a", count: length)))
                #expect(
                    try parse(with(Array(#"\""#.utf8))) == .string(text("\"")),
                    "escaped quote at \(position) of \(length)"
                )
                #expect(
                    try parse(with(Array(#"\n"#.utf8))) == .string(text("\n")),
                    "escape at \(position) of \(length)"
                )
                #expect(try parse(with([0xC3, 0xA9])) == .string(text("é")), "é at \(position) of \(length)")
                #expect(throws: JSONParseError.self, "control at \(position) of \(length)") { try parse(with([0x1F])) }
                #expect(throws: JSONParseError.self, "0xFF at \(position) of \(length)") { try parse(with([0xFF])) }
                // A quote ends the string where it is: what follows is data after the document.
                if length > 0, position < length - 1 {
                    #expect(throws: JSONParseError.self, "quote at \(position) of \(length)") {
                        try parse(with([0x22]))
                    }
                }
            }
        }
    }
}

@Suite struct TimeTests {
    @Test func rfc3339MatchesGo() {
        #expect(Timestamp(seconds: 0).rfc3339 == "1970-01-01T00:00:00Z")
        #expect(Timestamp(nanoseconds: 1_700_000_000_123_456_780).rfc3339 == "2023-11-14T22:13:20.12345678Z")
        #expect(Timestamp(seconds: 951_782_400).rfc3339 == "2000-02-29T00:00:00Z")
        let t = Timestamp(nanoseconds: 1_795_000_000_000_000_001)
        #expect(Timestamp(rfc3339: t.rfc3339) == t)
    }

    @Test func durationsParseAndFormatAsVault() {
        // Go's time.Duration.String(), as OpenBao prints durations.
        #expect(VaultDuration.goString(seconds: 86_400) == "24h0m0s")
        #expect(VaultDuration.goString(seconds: 90) == "1m30s")
        #expect(VaultDuration.goString(seconds: 0) == "0s")
        #expect(VaultDuration.goString(nanoseconds: 4_275_791_945) == "4.275791945s")
        #expect(VaultDuration.goString(nanoseconds: 250_000_000) == "250ms")
        #expect(VaultDuration.goString(nanoseconds: 1_500) == "1.5µs")
        #expect(VaultDuration.goString(nanoseconds: 7) == "7ns")
        #expect(VaultDuration.goString(nanoseconds: 3_723_500_000_000) == "1h2m3.5s")
        #expect(VaultDuration.goString(nanoseconds: .max) == "5124095h34m33.709551615s")
        #expect(VaultDuration.parse("1h30m") == 5400)
        #expect(VaultDuration.parse("45") == 45)
        #expect(VaultDuration.parse("768h") == 2_764_800)
        #expect(VaultDuration.parse("bogus") == nil)
        // Under a second is a second, not 0 (which would mean "the default TTL"); Go's leading "+".
        #expect(VaultDuration.parse("1ms") == 1 && VaultDuration.parse("10ns") == 1 && VaultDuration.parse("0.5s") == 1)
        #expect(VaultDuration.parse("1500ms") == 1 && VaultDuration.parse("0s") == 0 && VaultDuration.parse("0ms") == 0)
        #expect(
            VaultDuration.parse("+1h") == 3600 && VaultDuration.parse("+") == nil && VaultDuration.parse("-1h") == nil
        )
        #expect((try? VaultDuration.seconds(.number("0.25"), field: "ttl")) == 1)
        #expect(VaultDuration.format(0) == "0s")
        #expect(VaultDuration.format(3600) == "1h0m0s")
        #expect(VaultDuration.format(90) == "1m30s")
    }

    /// The wire body is written field by field; it must say what the envelope (`body(requestID:)`)
    /// says, with the envelope's keys in Go's struct order.
    @Test func wireBodyIsTheEnvelopeInOpenBaosOrder() throws {
        var plain = Response(data: ["b": .int(2), "a": .string("x\"y")])
        #expect(
            plain.wireBody(requestID: "r1").map { String(decoding: $0, as: UTF8.self) }
                == #"{"request_id":"r1","lease_id":"","renewable":false,"lease_duration":0,"data":{"a":"x\"y","b":2},"#
                + #""wrap_info":null,"warnings":null,"auth":null}"#
        )
        plain.leaseID = "db/creds/x/1"
        plain.leaseDuration = 3600
        plain.renewable = true
        plain.warnings = ["one", "two"]
        var auth = Response(
            auth: AuthInfo(
                clientToken: "s.t",
                accessor: "acc",
                policies: ["default"],
                tokenPolicies: ["default"],
                metadata: ["role": "r"],
                leaseDuration: 60,
                renewable: true,
                orphan: false,
                numUses: 0
            )
        )
        auth.warnings = ["w"]
        var repeated = Response(data: ["sealed": .bool(false), "data": .string("collides with the envelope")])
        repeated.repeatDataAtTopLevel = true
        var wrapped = Response(data: [:])
        wrapped.wrapInfo = WrapInfo(
            token: "s.w",
            accessor: "wa",
            ttl: 60,
            creationTime: Timestamp(seconds: 1_700_000_000),
            creationPath: "secret/data/a",
            wrappedAccessor: nil
        )
        let order = ["request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"]
        for response in [plain, auth, repeated, wrapped] {
            let bytes = try #require(response.wireBody(requestID: "r2"))
            #expect(try JSONValue.parse(bytes) == response.body(requestID: "r2"))
            let text = String(decoding: bytes, as: UTF8.self)
            let offsets = order.compactMap { text.range(of: "\"\($0)\":")?.lowerBound }
            #expect(offsets.count == order.count && offsets == offsets.sorted(), "\(text)")
        }
        #expect(
            String(decoding: repeated.wireBody(requestID: "r")!, as: UTF8.self).hasPrefix(
                #"{"sealed":false,"request_id""#
            )
        )
        #expect(Response.noContent.wireBody(requestID: "r") == nil && Response.notFound.wireBody(requestID: "r") == nil)
    }

    /// Storage keys and paths are matched as bytes: a prefix in another Unicode form is no prefix.
    @Test func aBytePrefixIsTheSameBytes() {
        #expect("logical/abc/metadata/x".hasBytePrefix("logical/abc/"))
        #expect("logical/abc/".hasBytePrefix("logical/abc/") && "x".hasBytePrefix(""))
        #expect(!"logical/ab".hasBytePrefix("logical/abc/") && !"sys/token".hasBytePrefix("sys/tokens"))
        #expect("caf\u{E9}/x".hasBytePrefix("caf\u{E9}") && !"cafe\u{301}/x".hasBytePrefix("caf\u{E9}"))
        #expect("caf\u{E9}/x".hasPrefix("caf\u{E9}") && String("cafe\u{301}").hasPrefix("caf\u{E9}"))
    }
}
