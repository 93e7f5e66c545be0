#if canImport(Glibc)
import Glibc
#endif

/// A point in time as nanoseconds since the Unix epoch. Formats as RFC 3339 with nanoseconds, the
/// form Vault's JSON uses ("2026-11-23T06:01:50.123456789Z").
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// `seconds` since the epoch; saturates at the representable range (about the years 1677 to 2262)
    /// instead of trapping, since stored and imported values can be anything.
    public init(seconds: Int64) { self.nanoseconds = Timestamp.saturatingNanoseconds(seconds) }

    public static let zero = Timestamp(nanoseconds: 0)

    public var seconds: Int64 { nanoseconds / 1_000_000_000 }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.nanoseconds < b.nanoseconds }

    /// This time plus `seconds`, saturating at the representable range: time arithmetic never traps,
    /// whatever a stored or requested duration holds. Request fields are bounded before they get
    /// here (``VaultDuration/maximumSeconds``); saturation keeps values stored by older versions harmless.
    public func adding(seconds: Int64) -> Timestamp {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(Timestamp.saturatingNanoseconds(seconds))
        if overflow { return Timestamp(nanoseconds: seconds < 0 ? .min : .max) }
        return Timestamp(nanoseconds: sum)
    }

    /// Whole seconds from this time to `later` (negative if `later` is earlier), without overflow.
    public func seconds(until later: Timestamp) -> Int64 {
        let (difference, overflow) = later.nanoseconds.subtractingReportingOverflow(nanoseconds)
        if overflow { return later.nanoseconds < nanoseconds ? .min / 1_000_000_000 : .max / 1_000_000_000 }
        return difference / 1_000_000_000
    }

    static func saturatingNanoseconds(_ seconds: Int64) -> Int64 {
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (seconds < 0 ? .min : .max) : product
    }

    /// RFC 3339 in UTC with nanoseconds, trailing zeros trimmed as Go's `RFC3339Nano` does.
    public var rfc3339: String {
        var out: [UInt8] = []
        appendRFC3339(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends ``rfc3339``'s text to `out` (no allocation beyond `out`'s growth: the audit log and KV
    /// responses write one per record).
    public func appendRFC3339(to out: inout [UInt8]) {
        let secs = nanoseconds >= 0 ? nanoseconds / 1_000_000_000 : (nanoseconds - 999_999_999) / 1_000_000_000
        var frac = nanoseconds - secs * 1_000_000_000
        let days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400
        let secOfDay = secs - days * 86400
        // Civil-from-days (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func digits(_ value: Int64, _ width: Int) { appendDecimal(Int(value), width: width, to: &out) }
        digits(year, 4)
        out.append(UInt8(ascii: "-"))
        digits(month, 2)
        out.append(UInt8(ascii: "-"))
        digits(day, 2)
        out.append(UInt8(ascii: "T"))
        digits(secOfDay / 3600, 2)
        out.append(UInt8(ascii: ":"))
        digits(secOfDay % 3600 / 60, 2)
        out.append(UInt8(ascii: ":"))
        digits(secOfDay % 60, 2)
        if frac > 0 {
            var width = 9
            while frac % 10 == 0 {
                frac /= 10
                width -= 1
            }
            out.append(UInt8(ascii: "."))
            digits(frac, width)
        }
        out.append(UInt8(ascii: "Z"))
    }

    /// Parses what ``rfc3339`` writes (UTC, optional fraction). Returns nil for anything else.
    public init?(rfc3339 text: String) {
        let c = Array(text.utf8)
        func num(_ r: Range<Int>) -> Int64? {
            guard r.upperBound <= c.count else { return nil }
            var v: Int64 = 0
            for i in r {
                guard c[i] >= 48, c[i] <= 57 else { return nil }
                v = v * 10 + Int64(c[i] - 48)
            }
            return v
        }
        guard c.count >= 20, let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13),
            let mi = num(14..<16), let s = num(17..<19), c.last == UInt8(ascii: "Z")
        else { return nil }
        var frac: Int64 = 0
        if c[19] == UInt8(ascii: ".") {
            let digits = c.count - 21
            guard digits >= 1, digits <= 9, let f = num(20..<(c.count - 1)) else { return nil }
            frac = f
            for _ in digits..<9 { frac *= 10 }
        }
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let mp = mo > 2 ? mo - 3 : mo + 9
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        // Four-digit years reach past what nanoseconds in an Int64 hold (2262): such a time is nil.
        let (secondsOfDays, o1) = days.multipliedReportingOverflow(by: 86400)
        let (total, o2) = secondsOfDays.addingReportingOverflow(h * 3600 + mi * 60 + s)
        let (scaled, o3) = total.multipliedReportingOverflow(by: 1_000_000_000)
        let (result, o4) = scaled.addingReportingOverflow(frac)
        guard !(o1 || o2 || o3 || o4) else { return nil }
        nanoseconds = result
    }

    public var description: String { rfc3339 }
}

/// Where Coffer reads the time. Tests inject a manual clock so nothing sleeps.
public protocol WallClock: Sendable {
    func now() -> Timestamp
}

public struct SystemClock: WallClock {
    public init() {}
    public func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }
}

/// Durations as Vault accepts them: an integer number of seconds, or Go duration text ("1h30m", "768h", "90s").
public enum VaultDuration {
    /// The longest duration any field accepts: 100 years. Every duration a request gives passes
    /// through ``seconds(_:field:)`` or ``parse(_:)``, so no time computed from one (now plus a TTL,
    /// a deletion time) can leave what a ``Timestamp`` holds.
    public static let maximumSeconds: Int64 = 100 * 365 * 86400

    /// Parses a JSON value into whole seconds; throws an invalid-argument error naming `field`, the
    /// accepted forms and the limit (never the value, which could be anything the caller pasted).
    public static func seconds(_ value: JSONValue, field: String) throws(CofferError) -> Int64 {
        switch value {
        case .number(let n):
            if let v = Int64(n), v >= 0, v <= maximumSeconds { return v }
            if Int64(n) == nil, let d = Double(n), d.isFinite, d >= 0, d <= Double(maximumSeconds) {
                return d > 0 && d < 1 ? 1 : Int64(d)
            }
        case .string(let s):
            if let v = parse(s) { return v }
        default: break
        }
        throw CofferError.invalid(
            "\(field) must be a duration from 0 to \(maximumSeconds) seconds (100 years): a number of seconds or text such as \"90s\" or \"1h30m\""
        )
    }

    /// Go's `time.Duration.String()`: "24h0m0s", "1m30s", "4.2758s", "250ms", "0s", as OpenBao prints
    /// durations.
    public static func goString(nanoseconds: UInt64) -> String {
        /// `value / scale` with its fraction, trailing zeros dropped: (1_500, 1_000) → "1.5".
        func decimal(_ value: UInt64, _ scale: UInt64) -> String {
            guard value % scale != 0 else { return String(value / scale) }
            var digits = String(value % scale)
            digits = String(repeating: "0", count: String(scale).count - 1 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            return "\(value / scale).\(digits)"
        }
        switch nanoseconds {
        case 0: return "0s"
        case ..<1_000: return "\(nanoseconds)ns"
        case ..<1_000_000: return decimal(nanoseconds, 1_000) + "µs"
        case ..<1_000_000_000: return decimal(nanoseconds, 1_000_000) + "ms"
        default:
            let seconds = nanoseconds / 1_000_000_000
            let rest = decimal(nanoseconds % 60_000_000_000, 1_000_000_000) + "s"
            if seconds >= 3600 { return "\(seconds / 3600)h\(seconds % 3600 / 60)m" + rest }
            if seconds >= 60 { return "\(seconds / 60)m" + rest }
            return rest
        }
    }

    /// ``goString(nanoseconds:)`` of whole seconds.
    public static func goString(seconds: Int64) -> String {
        goString(nanoseconds: UInt64(clamping: seconds) &* 1_000_000_000)
    }

    /// "1h30m" → 5400; "45" → 45; "+2m" → 120; "" → 0. Fractions round down to whole seconds, but a
    /// duration between zero and one second is one second: "1ms" asks for a very short TTL, and 0
    /// would mean the default one. nil for text that is not a duration, a negative one, or one longer
    /// than ``maximumSeconds``.
    public static func parse(_ text: String) -> Int64? {
        if text.isEmpty { return 0 }
        if let v = Int64(text) { return v >= 0 && v <= maximumSeconds ? v : nil }
        guard text.utf8.count <= 256 else { return nil }
        var total: Double = 0
        var chars = Substring(text)
        if chars.first == "+" { chars = chars.dropFirst() }  // as Go's time.ParseDuration
        guard !chars.isEmpty else { return nil }
        while !chars.isEmpty {
            let numberPart = chars.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !numberPart.isEmpty, let value = Double(numberPart), value.isFinite else { return nil }
            chars = chars.dropFirst(numberPart.count)
            let unitPart = chars.prefix { !($0.isASCII && ($0.isNumber || $0 == ".")) }
            chars = chars.dropFirst(unitPart.count)
            let scale: Double
            switch unitPart {
            case "ns": scale = 1e-9
            case "us", "µs": scale = 1e-6
            case "ms": scale = 1e-3
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            case "d": scale = 86400
            default: return nil
            }
            total += value * scale
        }
        // Compared as a Double before converting: Int64(x) traps for x past Int64's range.
        guard total.isFinite, total <= Double(maximumSeconds) else { return nil }
        return total > 0 && total < 1 ? 1 : Int64(total)
    }
}

extension VaultDuration {
    /// Go's `time.Duration.String()` for whole seconds: 0 → "0s", 90 → "1m30s", 3600 → "1h0m0s".
    public static func format(_ seconds: Int64) -> String {
        if seconds == 0 { return "0s" }
        let h = seconds / 3600
        let m = seconds % 3600 / 60
        let s = seconds % 60
        if h > 0 { return "\(h)h\(m)m\(s)s" }
        if m > 0 { return "\(m)m\(s)s" }
        return "\(s)s"
    }

    /// As OpenBao's `humanDuration` prints a TTL in warnings: Go's form without zero minutes and
    /// seconds ("100h", "1h30m", "1h30s", "23h59m52s").
    public static func formatShort(_ seconds: Int64) -> String {
        let h = seconds / 3600
        let m = seconds % 3600 / 60
        let s = seconds % 60
        guard h > 0 else { return m > 0 && s == 0 ? "\(m)m" : format(seconds) }
        return "\(h)h" + (m > 0 ? "\(m)m" : "") + (s > 0 ? "\(s)s" : "")
    }
}
