package import CofferCore

/// The container of an operator's snapshot file: a gzip'd tar, the shape OpenBao's clients expect
/// (the Go client checks that `SHA256SUMS.sealed` is present and not empty before it keeps a
/// snapshot). Coffer writes the deflate stream as stored blocks (no compression: the data is
/// ciphertext, which does not compress), so neither direction needs zlib, and it reads back only
/// files written that way; anything else is refused with a message saying so.
package enum SnapshotArchive {
    // MARK: Writing

    /// `files` as a gzip'd POSIX tar, in order.
    package static func pack(_ files: [(name: String, data: [UInt8])]) -> [UInt8] {
        var tar: [UInt8] = []
        for file in files {
            tar += header(name: file.name, size: file.data.count)
            tar += file.data
            tar += [UInt8](repeating: 0, count: (512 - file.data.count % 512) % 512)
        }
        tar += [UInt8](repeating: 0, count: 1024)
        return gzipStored(tar)
    }

    private static func header(name: String, size: Int) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) {
            for (i, byte) in text.utf8.enumerated() { h[offset + i] = byte }
        }
        func octal(_ value: Int, width: Int) -> String {
            let digits = String(value, radix: 8)
            return String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
        }
        put(String(name.prefix(99)), at: 0)
        put(octal(0o600, width: 8), at: 100)
        put(octal(0, width: 8), at: 108)
        put(octal(0, width: 8), at: 116)
        put(octal(size, width: 12), at: 124)
        put(octal(0, width: 12), at: 136)
        put("        ", at: 148)
        h[156] = UInt8(ascii: "0")
        put("ustar", at: 257)
        put("00", at: 263)
        let sum = h.reduce(0) { $0 + Int($1) }
        put(octal(sum, width: 7), at: 148)
        h[155] = UInt8(ascii: " ")
        return h
    }

    private static func gzipStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF]
        var offset = 0
        repeat {
            let count = min(65535, data.count - offset)
            let final = offset + count == data.count
            out.append(final ? 1 : 0)
            out += [UInt8(count & 0xFF), UInt8(count >> 8), UInt8(~count & 0xFF), UInt8((~count >> 8) & 0xFF)]
            out += data[offset..<offset + count]
            offset += count
        } while offset < data.count
        out += littleEndian(crc32(data))
        out += littleEndian(UInt32(truncatingIfNeeded: data.count))
        return out
    }

    // MARK: Reading

    /// The files of an archive from ``pack(_:)``, by name. Throws `invalidArgument` saying what is
    /// wrong: not gzip, compressed by another tool, cut short, a checksum that does not match.
    package static func unpack(_ file: [UInt8]) throws(CofferError) -> [String: [UInt8]] {
        let tar = try gunzipStored(file)
        var files: [String: [UInt8]] = [:]
        var offset = 0
        while offset + 512 <= tar.count {
            let h = Array(tar[offset..<offset + 512])
            if h.allSatisfy({ $0 == 0 }) { return files }
            let stored = Int(octalField(h[148..<156]) ?? -1)
            var blank = h
            for i in 148..<156 { blank[i] = UInt8(ascii: " ") }
            guard stored == blank.reduce(0, { $0 + Int($1) }), let size = octalField(h[124..<136]) else {
                throw bad("a tar header's checksum does not match")
            }
            let name = String(decoding: h[0..<100].prefix { $0 != 0 }, as: UTF8.self)
            offset += 512
            guard size <= tar.count - offset else { throw bad("the archive is cut short in \(name)") }
            files[name] = Array(tar[offset..<offset + size])
            offset += (size + 511) / 512 * 512
        }
        throw bad("the archive is cut short (no end-of-archive blocks)")
    }

    private static func octalField(_ bytes: ArraySlice<UInt8>) -> Int? {
        var value = 0
        var seen = false
        for byte in bytes {
            if byte == 0 || byte == UInt8(ascii: " ") {
                if seen { break } else { continue }
            }
            guard (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(byte), value < (Int.max >> 3) else { return nil }
            value = value << 3 | Int(byte - UInt8(ascii: "0"))
            seen = true
        }
        return seen ? value : nil
    }

    private static func gunzipStored(_ file: [UInt8]) throws(CofferError) -> [UInt8] {
        guard file.count >= 18, file[0] == 0x1F, file[1] == 0x8B, file[2] == 8 else {
            throw bad("it is not a gzip file")
        }
        guard file[3] == 0 else { throw bad("its gzip header has options Coffer does not write") }
        var out: [UInt8] = []
        var offset = 10
        while true {
            guard offset + 5 <= file.count - 8 else { throw bad("it is cut short") }
            let flags = file[offset]
            guard flags & 0b110 == 0 else {
                throw bad("it was compressed by another tool; Coffer reads the snapshot files it writes, as written")
            }
            let count = Int(file[offset + 1]) | Int(file[offset + 2]) << 8
            let check = Int(file[offset + 3]) | Int(file[offset + 4]) << 8
            guard count == ~check & 0xFFFF else { throw bad("a block length is damaged") }
            offset += 5
            guard count <= file.count - 8 - offset else { throw bad("it is cut short") }
            out += file[offset..<offset + count]
            offset += count
            if flags & 1 == 1 { break }
        }
        guard offset + 8 == file.count else { throw bad("bytes follow its end") }
        guard Array(file[offset..<offset + 4]) == littleEndian(crc32(out)),
            Array(file[offset + 4..<offset + 8]) == littleEndian(UInt32(truncatingIfNeeded: out.count))
        else { throw bad("its CRC does not match: it is damaged") }
        return out
    }

    private static func bad(_ why: String) -> CofferError {
        CofferError(.invalidArgument, "not a Coffer snapshot file: \(why)")
    }

    // MARK: CRC-32 (IEEE, as gzip uses)

    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ data: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in data { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    private static func littleEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)]
    }
}
