import Testing

@testable import Engines

/// The pieces of the LDAP client that see untrusted input: BER from the server, filters built from
/// the configuration and the username, DNs (the login itself runs against a real slapd in
/// Tests/compat/test_auth_ldap.py).
@Suite struct LDAPTests {
    static func hex(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8).filter { $0 != UInt8(ascii: " ") }
        return stride(from: 0, to: digits.count - 1, by: 2).map {
            (LDAPFilter.hexValue(digits[$0]) ?? 0) << 4 | (LDAPFilter.hexValue(digits[$0 + 1]) ?? 0)
        }
    }

    // MARK: BER

    @Test func anonymousBindEncodesAsRFC4511Shows() {
        let bind = BER.sequence([
            .integer(1), BER(tag: 0x60, children: [.integer(3), .octets(""), BER(tag: 0x80, bytes: [])]),
        ])
        #expect(bind.encoded == Self.hex("30 0c 02 01 01 60 07 02 01 03 04 00 80 00"))
    }

    @Test func integersRoundTripWithTheirSign() throws {
        for value: Int64 in [0, 1, 127, 128, 255, 256, -1, -128, -129, 65535, Int64(Int32.max), Int64.max, Int64.min] {
            let decoded = try BER.decode(BER.integer(value).encoded)
            #expect(decoded.integerValue == value)
        }
        #expect(BER.integer(128).encoded == [0x02, 0x02, 0x00, 0x80])
        #expect(BER.integer(-129).encoded == [0x02, 0x02, 0xFF, 0x7F])
        // Nine content bytes: not an integer we accept.
        #expect(try BER.decode([0x02, 0x09] + [UInt8](repeating: 1, count: 9)).integerValue == nil)
        #expect(try BER.decode([0x02, 0x00]).integerValue == nil)
    }

    @Test func longLengthsRoundTrip() throws {
        let big = BER.octets([UInt8](repeating: 0x41, count: 70_000))
        let bytes = big.encoded
        #expect(Array(bytes.prefix(5)) == [0x04, 0x83, 0x01, 0x11, 0x70])
        #expect(try BER.decode(bytes) == big)
        let nested = BER.sequence([.integer(7), BER(tag: 0x64, children: [.octets("cn=a"), .sequence([])])])
        #expect(try BER.decode(nested.encoded) == nested)
    }

    @Test func hostileBERIsRefusedWithoutTrapping() {
        // A length of 2 GiB with nothing behind it, the indefinite form, a 5-byte length, a
        // multi-byte tag, bytes after the element.
        for bytes: [UInt8] in [
            [0x30, 0x84, 0x7F, 0xFF, 0xFF, 0xFF], [0x30, 0x80, 0x00, 0x00], [0x04, 0x85, 1, 0, 0, 0, 0],
            [0x1F, 0x01, 0x00], [0x04, 0x01, 0x41, 0x00], [0x30], [], [0x30, 0x03, 0x04, 0x05, 0x41],
        ] {
            #expect(throws: BER.DecodeError.self) { try BER.decode(bytes) }
        }
        // Nesting deeper than the bound, every length right: refused for its depth.
        func nested(_ levels: Int) -> [UInt8] {
            var inner: [UInt8] = [0x05, 0x00]
            for _ in 0..<levels {
                var outer: [UInt8] = [0x30]
                BER.appendLength(inner.count, to: &outer)
                inner = outer + inner
            }
            return inner
        }
        #expect(throws: BER.DecodeError("BER nested too deeply")) { try BER.decode(nested(100)) }
        #expect(throws: BER.DecodeError("BER nested too deeply")) { try BER.decode(nested(BER.maximumDepth)) }
        #expect((try? BER.decode(nested(BER.maximumDepth - 1))) != nil)
        // Every truncation of a real message fails cleanly.
        let message = BER.sequence([
            .integer(2),
            BER(
                tag: 0x64,
                children: [
                    .octets("uid=alice,dc=x"), .sequence([.sequence([.octets("cn"), .set([.octets("alice")])])]),
                ]
            ),
        ]).encoded
        for cut in 0..<message.count {
            #expect(throws: BER.DecodeError.self) { try BER.decode(Array(message.prefix(cut))) }
        }
    }

    @Test func randomBytesNeverTrap() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let count = Int.random(in: 0..<24, using: &generator)
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if !bytes.isEmpty && Bool.random() { bytes[0] = 0x30 }
            _ = try? BER.decode(bytes)
            _ = try? BER.header(bytes[...])
        }
    }

    // MARK: Filters

    @Test func filtersEncodeAsRFC4511Says() throws {
        #expect(
            try LDAPFilter.parse("(cn=Babs Jensen)").encoded
                == Self.hex("a3 11 04 02 63 6e 04 0b 42 61 62 73 20 4a 65 6e 73 65 6e")
        )
        #expect(try LDAPFilter.parse("(objectClass=*)").encoded == [0x87, 0x0B] + Array("objectClass".utf8))
        let not = try LDAPFilter.parse("(!(cn=Tim Howes))")
        #expect(not.tag == 0xA2 && not.children.count == 1 && not.children[0].tag == 0xA3)
        let and = try LDAPFilter.parse("(&(objectClass=Person)(|(sn=Jensen)(cn=Babs J*)))")
        #expect(and.tag == 0xA0 && and.children.count == 2 && and.children[1].tag == 0xA1)
        #expect(try LDAPFilter.parse(" (uid>=b) ").tag == 0xA5)
        #expect(try LDAPFilter.parse("(uid<=b)").tag == 0xA6)
        #expect(try LDAPFilter.parse("(uid~=b)").tag == 0xA8)
    }

    @Test func substrings() throws {
        let f = try LDAPFilter.parse("(o=univ*of*mich*)")
        #expect(f.tag == 0xA4 && f.children[0].stringValue == "o")
        #expect(f.children[1].children.map(\.tag) == [0x80, 0x81, 0x81])
        #expect(f.children[1].children.map(\.stringValue) == ["univ", "of", "mich"])
        let g = try LDAPFilter.parse("(cn=*a\\2ab*end)")
        #expect(g.children[1].children.map(\.tag) == [0x81, 0x82])
        #expect(g.children[1].children.map(\.stringValue) == ["a*b", "end"])
    }

    @Test func extensibleMatchIncludingTheADChainRule() throws {
        let f = try LDAPFilter.parse("(member:1.2.840.113556.1.4.1941:=cn=admins,dc=example,dc=org)")
        #expect(f.tag == 0xA9)
        #expect(f.children.map(\.tag) == [0x81, 0x82, 0x83])
        #expect(f.children.map(\.stringValue) == ["1.2.840.113556.1.4.1941", "member", "cn=admins,dc=example,dc=org"])
        let g = try LDAPFilter.parse("(:dn:2.4.6.8.10:=Dino)")
        #expect(g.children.map(\.tag) == [0x81, 0x83, 0x84])
        #expect(g.children[2].booleanValue == true)
        let h = try LDAPFilter.parse("(cn:caseExactMatch:=Fred Flintstone)")
        #expect(h.children.map(\.stringValue) == ["caseExactMatch", "cn", "Fred Flintstone"])
    }

    @Test func escapedValuesDecode() throws {
        let f = try LDAPFilter.parse("(o=Parens R Us \\28for all your parenthetical needs\\29)")
        #expect(f.children[1].stringValue == "Parens R Us (for all your parenthetical needs)")
        let g = try LDAPFilter.parse("(bin=\\00\\00\\00\\04)")
        #expect(g.children[1].bytes == [0, 0, 0, 4])
    }

    @Test func malformedFiltersAreRefused() {
        // OpenBao shows Go's words for this one; Coffer's are the same.
        #expect(throws: LDAPFilter.ParseError("unexpected end of filter")) { try LDAPFilter.parse("(member=x") }
        let nested = String(repeating: "(!", count: 40) + "(a=b)" + String(repeating: ")", count: 40)
        for text in [
            "", "(cn=a", "cn=a", "(&)", "((cn=a))", "(cn=\\zz)", "(cn=\\4)", "(=a)", "(cn=a))", "(c n=a)", "(cn)",
            "(:=a)", "(cn:dn:x:y:=a)", nested,
        ] {
            #expect(throws: LDAPFilter.ParseError.self, "\(text)") { try LDAPFilter.parse(text) }
        }
    }

    // MARK: Escaping user input

    @Test func usernamesCannotChangeAFilter() throws {
        let hostile = "*)(|(uid=*"
        #expect(LDAPFilter.escape(hostile) == "\\2a\\29\\28|\\28uid=\\2a")
        for name in [hostile, "a*", "*", "x)(cn=*", "back\\slash", "nul\u{0}byte", "ünïcödé", "(", ")("] {
            let filter = try LDAPFilter.parse("(uid=\(LDAPFilter.escape(name)))")
            // Still one equality match, comparing the whole name as given.
            #expect(filter.tag == 0xA3)
            #expect(filter.children[1].bytes == Array(name.utf8))
        }
        // Through the configured template as the login renders it.
        var config = LDAPConfig()
        config.userAttr = "uid"
        let rendered = LDAPLogin(config: config).renderUserFilter(hostile)
        #expect(rendered == "(uid=\\2a\\29\\28|\\28uid=\\2a)")
        #expect(try LDAPFilter.parse(rendered).tag == 0xA3)
    }

    @Test func usernamesCannotChangeADN() {
        #expect(LDAPFilter.escapeDNValue("a,b+c") == "a\\,b\\+c")
        #expect(LDAPFilter.escapeDNValue("#lead") == "\\#lead")
        #expect(LDAPFilter.escapeDNValue(" both ") == "\\ both\\ ")
        #expect(LDAPFilter.escapeDNValue("x=y;z<>\"\\") == "x\\=y\\;z\\<\\>\\\"\\\\")
        for name in ["alice,ou=admins", "a+uid=root", " x ", "#1", "q\"uote"] {
            let dn = "uid=\(LDAPFilter.escapeDNValue(name)),ou=users,dc=example,dc=org"
            let rdns = LDAPDN.parse(dn)
            #expect(rdns?.count == 4, "\(dn)")
            #expect(rdns?.first?.count == 1)
            #expect(rdns?.first?.first?.value == name)
        }
    }

    // MARK: DNs and templates

    @Test func groupCNsComeFromTheDN() {
        let login = LDAPLogin(config: LDAPConfig())
        #expect(login.groupCN("cn=devs,ou=groups,dc=example,dc=org") == "devs")
        #expect(login.groupCN("CN=Domain Admins,CN=Users,DC=corp") == "Domain Admins")
        #expect(login.groupCN("ou=x,cn=inner\\2c comma,dc=y") == "inner, comma")
        #expect(login.groupCN("not a dn") == "not a dn")
        #expect(login.groupCN("uid=x,dc=y") == "uid=x,dc=y")
        #expect(LDAPDN.normalized("CN=Devs, OU=Groups,dc=Example") == "cn=devs,ou=groups,dc=example")
    }

    @Test func templatesFillOnlyKnownNames() {
        #expect(LDAPLogin.render("({{.UserAttr}}={{ .Username }})", ["UserAttr": "uid", "Username": "a"]) == "(uid=a)")
        #expect(LDAPLogin.render("(x={{.Other}})", ["Username": "a"]) == "(x={{.Other}})")
        #expect(LDAPLogin.render("(x={{.Username)", ["Username": "a"]) == "(x={{.Username)")
    }

    // MARK: The method's paths

    /// Every field of every ldap path, given values that do not fit it (FieldSweepTests' values):
    /// refused with 400 before the handler runs, so no config is written and no server is dialled.
    @Test func everyDeclaredFieldRefusesWhatDoesNotFit() throws {
        #expect(LDAPBackend.paths.validate() == [])
        let h = try Harness()
        #expect(h.wire("POST", "sys/auth/ldap", ["type": "ldap"]).status == 204)
        var cases = 0
        for path in LDAPBackend.paths.paths {
            let concrete = "auth/ldap/" + FieldSweepTests.instantiate(path.pattern)
            for operation in path.operations where operation != .read && operation != .list {
                for field in path.fields {
                    for value in FieldSweepTests.badValues(field.kind) {
                        cases += 1
                        let method = operation == .delete ? "DELETE" : "PUT"
                        let (status, bytes) = h.vault.core.handleWire(
                            method: method,
                            path: concrete,
                            token: "root",
                            body: JSONValue.object([field.name: value]).serialized()
                        )
                        let text = bytes.map { String(decoding: $0, as: UTF8.self) } ?? ""
                        #expect(status == 400, "\(method) \(concrete) \(field.name) answered \(status): \(text)")
                        #expect(!text.contains(FieldSweepTests.marker))
                    }
                }
            }
        }
        #expect(cases > 200)
        // Nothing reached storage: the config still reads as the defaults.
        let config = h.wire("GET", "auth/ldap/config")
        #expect(config.status == 200)
        #expect(config.json?["data"]?["url"]?.stringValue == "ldap://127.0.0.1")
    }

    @Test func ldapURLs() {
        #expect(LDAPConnection.URL("ldap://127.0.0.1")?.port == 389)
        #expect(LDAPConnection.URL("ldaps://ldap.example.org")?.port == 636)
        #expect(LDAPConnection.URL("LDAPS://[::1]:1636/")?.host == "::1")
        #expect(LDAPConnection.URL("ldap://h:0") == nil)
        #expect(LDAPConnection.URL("http://h") == nil)
        #expect(LDAPConnection.URL("ldap://user@h") == nil)
    }
}
