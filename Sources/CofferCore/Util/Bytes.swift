#if canImport(Glibc)
import Glibc
#endif

/// Writing text straight into byte buffers (audit lines, timestamps), without building Strings.
extension Array where Element == UInt8 {
    /// Appends a literal's UTF-8 bytes in one copy.
    @inline(__always)
    package mutating func appendLiteral(_ literal: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }
}

/// Appends the decimal digits of `value`, zero-padded to `width`, in one copy.
package func appendDecimal(_ value: Int, width: Int = 1, to out: inout [UInt8]) {
    if value < 0 { out.append(UInt8(ascii: "-")) }
    var v = value.magnitude
    var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for 20 digits
    withUnsafeMutableBytes(of: &digits) { b in
        var n = 0
        repeat {
            b[23 - n] = UInt8(48 + v % 10)
            v /= 10
            n += 1
        } while v > 0 || n < Swift.min(width, 24)
        out.append(contentsOf: b[(24 - n)...])
    }
}

extension String {
    /// Whether this string's UTF-8 bytes begin with `prefix`'s: a byte comparison (no Unicode
    /// equivalence: storage keys and paths are matched as bytes), in one `memcmp` rather than the
    /// element-by-element walk of `utf8.starts(with:)`, which showed in every write's profile.
    package func hasBytePrefix(_ prefix: String) -> Bool {
        let compared = utf8.withContiguousStorageIfAvailable { key in
            prefix.utf8.withContiguousStorageIfAvailable { p in
                p.count <= key.count && (p.isEmpty || memcmp(key.baseAddress!, p.baseAddress!, p.count) == 0)
            }
        }
        if let compared, let result = compared { return result }
        return utf8.starts(with: prefix.utf8)
    }
}
