import Testing

@testable import CofferCore

/// Known-answer tests from published vectors.
@Suite struct CryptoTests {
    // The GCM specification (McGrew & Viega), test cases 13, 14 and 16 (AES-256).
    @Test(arguments: [
        (
            "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "", "", "",
            "530f8afbc74536b9a963b4f1c4cb738b"
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
            "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919"
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b"
        ),
    ])
    func aesGCMKnownAnswers(
        key: String,
        iv: String,
        plaintext: String,
        aad: String,
        ciphertext: String,
        tag: String
    ) throws {
        let k = SecureBytes(hex(key))
        let sealed = try AESGCM.seal(key: k, nonce: hex(iv), plaintext: hex(plaintext), aad: hex(aad))
        #expect(Hex.encode(sealed) == ciphertext + tag)
        #expect(AESGCM.open(key: k, nonce: hex(iv), sealed: sealed, aad: hex(aad)) == hex(plaintext))
        var tampered = sealed
        tampered[tampered.count - 1] ^= 1
        #expect(AESGCM.open(key: k, nonce: hex(iv), sealed: tampered, aad: hex(aad)) == nil)
        #expect(AESGCM.open(key: k, nonce: hex(iv), sealed: sealed, aad: hex(aad) + [1]) == nil)
        // The same through an opener that keeps its contexts: a refused open leaves a context that
        // still opens the next entry.
        let opener = GCMOpener(key: k)
        func open(_ sealed: [UInt8], _ aad: [UInt8]) -> [UInt8]? {
            var out = [UInt8](repeating: 0, count: sealed.count - AESGCM.tagSize)
            let ok = hex(iv).withUnsafeBytes { n in
                sealed.withUnsafeBytes { s in
                    aad.withUnsafeBytes { a in
                        out.withUnsafeMutableBytes { opener.open(nonce: n, sealed: s, aad: a, output: $0) }
                    }
                }
            }
            return ok ? out : nil
        }
        for _ in 0..<3 {
            #expect(open(sealed, hex(aad)) == hex(plaintext))
            #expect(open(tampered, hex(aad)) == nil)
        }
    }

    /// The opener takes Nettle up to `nettleLimit` bytes and OpenSSL beyond: both open what OpenSSL
    /// sealed, at every length around the switch, and both refuse a changed byte anywhere (ciphertext,
    /// tag, associated data, nonce), leaving the output zeroed.
    @Test func gcmOpenerOpensAndRefusesOnBothSidesOfItsLimit() throws {
        let key = SecureBytes(randomCount: 32)
        let opener = GCMOpener(key: key)
        let limit = AESGCMKey.nettleLimit
        let lengths = [0, 1, 15, 16, 17, 100, 1000, limit - 1, limit, limit + 1, limit + 16, 70_000]
        for (index, length) in lengths.enumerated() {
            let aad = Random.bytes([0, 1, 13, 40][index % 4])
            let plain = Random.bytes(length)
            let nonce = Random.bytes(12)
            let sealed = try AESGCM.seal(key: key, nonce: nonce, plaintext: plain, aad: aad)
            func open(_ nonce: [UInt8], _ sealed: [UInt8], _ aad: [UInt8]) -> (Bool, [UInt8]) {
                var out = [UInt8](repeating: 0xAA, count: sealed.count - AESGCM.tagSize)
                let ok = nonce.withUnsafeBytes { n in
                    sealed.withUnsafeBytes { s in
                        aad.withUnsafeBytes { a in
                            out.withUnsafeMutableBytes { opener.open(nonce: n, sealed: s, aad: a, output: $0) }
                        }
                    }
                }
                return (ok, out)
            }
            let (ok, out) = open(nonce, sealed, aad)
            #expect(ok && out == plain, "length \(length)")
            func flipped(_ bytes: [UInt8], at position: Int) -> [UInt8] {
                var copy = bytes
                copy[position] ^= 0x20
                return copy
            }
            var refusals = [
                open(nonce, flipped(sealed, at: sealed.count - 1), aad),
                open(flipped(nonce, at: 11), sealed, aad),
            ]
            if length > 0 { refusals.append(open(nonce, flipped(sealed, at: length / 2), aad)) }
            if !aad.isEmpty { refusals.append(open(nonce, sealed, flipped(aad, at: 0))) }
            refusals.append(open(nonce, sealed, aad + [0]))
            for (ok, out) in refusals {
                #expect(!ok, "length \(length)")
                #expect(out.allSatisfy { $0 == 0 }, "a refused open leaves no plaintext, length \(length)")
            }
        }
    }

    /// The expanded key (Nettle) seals exactly what OpenSSL seals for the same key, nonce and associated
    /// data, at every length up to its limit, and opens it again.
    @Test func expandedKeySealsAsOpenSSLDoes() throws {
        let key = SecureBytes(randomCount: 32)
        let expanded = key.withUnsafeBytes { AESGCMKey(key: $0) }
        for length in [0, 1, 15, 16, 17, 64, 1000, AESGCMKey.nettleLimit] {
            let aad = Random.bytes(length % 3 == 0 ? 0 : 20)
            let plain = Random.bytes(length)
            let nonce = Random.bytes(12)
            let reference = try AESGCM.seal(key: key, nonce: nonce, plaintext: plain, aad: aad)
            var sealed = [UInt8](repeating: 0, count: length + AESGCM.tagSize)
            var opened = [UInt8](repeating: 0xAA, count: length)
            let ok = nonce.withUnsafeBytes { n in
                plain.withUnsafeBytes { p in
                    aad.withUnsafeBytes { a in
                        sealed.withUnsafeMutableBytes { expanded.seal(nonce: n, plaintext: p, aad: a, output: $0) }
                        return sealed.withUnsafeBytes { s in
                            opened.withUnsafeMutableBytes { expanded.open(nonce: n, sealed: s, aad: a, output: $0) }
                        }
                    }
                }
            }
            #expect(sealed == reference, "length \(length)")
            #expect(ok && opened == plain, "length \(length)")
        }
    }

    @Test func gcmOpenerOnManyThreadsAtOnce() async throws {
        let key = SecureBytes(randomCount: 32)
        let opener = GCMOpener(key: key)
        let entries = try (0..<64).map { i in
            let nonce = Random.bytes(12)
            let plain = Array("entry \(i)".utf8)
            return (nonce, plain, try AESGCM.seal(key: key, nonce: nonce, plaintext: plain, aad: [UInt8(i)]))
        }
        let wrong = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var wrong = 0
                    for round in 0..<200 {
                        let (i, (nonce, plain, sealed)) = (round % 64, entries[round % 64])
                        var out = [UInt8](repeating: 0, count: plain.count)
                        let ok = nonce.withUnsafeBytes { n in
                            sealed.withUnsafeBytes { s in
                                [UInt8(i)].withUnsafeBytes { a in
                                    out.withUnsafeMutableBytes { opener.open(nonce: n, sealed: s, aad: a, output: $0) }
                                }
                            }
                        }
                        if !ok || out != plain { wrong += 1 }
                    }
                    return wrong
                }
            }
            return await group.reduce(0, +)
        }
        #expect(wrong == 0)
    }

    // RFC 4231 test cases 1 and 2.
    /// Request and mount ids are version-4 UUIDs in the 8-4-4-4-12 lowercase form Vault shows.
    @Test func uuidsAreVersion4AndDistinct() async {
        // Request ids come from per-thread generators: draw them on several threads at once.
        let requestIDs = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<4 { group.addTask { (0..<5000).map { _ in Random.requestID() } } }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(Set(requestIDs).count == 20_000)
        let ids = (0..<200).map { _ in Random.uuid() } + requestIDs.prefix(200)
        #expect(Set(ids).count == ids.count)
        for id in ids {
            let bytes = Array(id.utf8)
            #expect(bytes.count == 36)
            #expect([8, 13, 18, 23].allSatisfy { bytes[$0] == UInt8(ascii: "-") })
            #expect(
                bytes.enumerated().allSatisfy {
                    [8, 13, 18, 23].contains($0.offset) || "0123456789abcdef".utf8.contains($0.element)
                }
            )
            #expect(bytes[14] == UInt8(ascii: "4"))
            #expect("89ab".utf8.contains(bytes[19]))
        }
        // The digits are the bytes' (with the version and variant bits set), grouped 8-4-4-4-12.
        for _ in 0..<1000 {
            var words = (UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max))
            let id = Random.uuidString(&words)
            var hex = withUnsafeBytes(of: words) { Hex.encode($0) }
            for dash in [8, 13, 18, 23] { hex.insert("-", at: hex.index(hex.startIndex, offsetBy: dash)) }
            #expect(id == hex)
        }
    }

    @Test func hmacSHA256KnownAnswers() {
        #expect(
            Hex.encode(Digest.hmacSHA256(key: [UInt8](repeating: 0x0b, count: 20), data: Array("Hi There".utf8)))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        )
        #expect(
            Hex.encode(Digest.hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        )
    }

    // FIPS 180-2 appendix B.1.
    /// A MAC continued from a prefix state equals the MAC of the whole message, for prefixes that end
    /// inside, at the end of and past SHA-256's 64-byte blocks.
    @Test func hmacFromAPrefixStateEqualsTheWholeMessagesMAC() throws {
        let key = HMACKey(SecureBytes(Random.bytes(32)))
        let message = Random.bytes(300)
        for split in [0, 1, 8, 63, 64, 65, 127, 128, 200, 300] {
            let prefix = message.prefix(split).withUnsafeBytes { key.prefix($0) }
            #expect(prefix.length == split)
            let continued = [UInt8](unsafeUninitializedCapacity: 32) { out, count in
                message[split...].withUnsafeBytes { key.mac(after: prefix, $0, into: out.baseAddress!) }
                count = 32
            }
            #expect(continued == key.mac(message), "prefix of \(split) bytes")
        }
    }

    @Test func sha256KnownAnswer() {
        #expect(
            Hex.encode(Digest.sha256(Array("abc".utf8)))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
    }

    // RFC 5869 test case 1.
    @Test func hkdfKnownAnswer() throws {
        let okm = try Digest.hkdfSHA256(
            key: SecureBytes([UInt8](repeating: 0x0b, count: 22)),
            salt: hex("000102030405060708090a0b0c"),
            info: hex("f0f1f2f3f4f5f6f7f8f9"),
            length: 42
        )
        #expect(
            Hex.encode(okm.unsafeCopy)
                == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        )
    }

    @Test func constantTimeCompareAndSecretDescription() {
        #expect(ConstantTime.equals([1, 2, 3], [1, 2, 3]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2, 4]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2]))
        let secret = SecureBytes(Array("hunter2".utf8))
        #expect("\(secret)" == "SecureBytes(7 bytes)")
        #expect(secret.constantTimeEquals(SecureBytes(Array("hunter2".utf8))))
        #expect(!secret.constantTimeEquals(SecureBytes(Array("hunter3".utf8))))
    }

    @Test func randomnessAndEncodings() {
        #expect(Random.bytes(32) != Random.bytes(32))
        let token = Random.base62(24)
        #expect(token.count == 24 && token.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.decode("Zm8=") == Array("fo".utf8))
        #expect(Base64.decode("Zm9v!") == nil)
        #expect(Hex.decode("zz") == nil)
    }

    /// Hex digits of every byte value, at every offset of the four-byte steps and in the tail.
    @Test func hexOfEveryByteAtEveryPosition() {
        func naive(_ bytes: [UInt8]) -> String {
            bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }
        let all = (0...255).map(UInt8.init)
        for length in 0...9 {
            for start in stride(from: 0, to: 256, by: 1) {
                let bytes = (0..<length).map { all[(start + $0 * 37) % 256] }
                #expect(Hex.encode(bytes) == naive(bytes))
                var appended: [UInt8] = [0x2A]
                bytes.withUnsafeBytes { Hex.append($0, to: &appended) }
                #expect(appended == [0x2A] + Array(naive(bytes).utf8))
            }
        }
        #expect(Hex.encode(all) == naive(all))
        #expect(Hex.decode(Hex.encode(all)) == all)
    }
}
