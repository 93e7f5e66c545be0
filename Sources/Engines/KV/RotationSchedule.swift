package import CofferCore

/// When a rotation runs: every `period` seconds after the last run, or at the times a cron-like
/// schedule names (UTC). Shared by KV rotation policies and database static roles.
package enum RotationSchedule: Sendable, Equatable {
    case period(Int64)
    case cron(CronSchedule)

    /// The first run time strictly after `after` (for a period: `after` + period); nil if a cron
    /// schedule never matches within five years (such as "0 0 31 2 *").
    package func next(after: Timestamp) -> Timestamp? {
        switch self {
        case .period(let seconds): return after.adding(seconds: max(1, seconds))
        case .cron(let cron): return cron.next(after: after)
        }
    }

    package var json: [String: JSONValue] {
        switch self {
        case .period(let s): ["period": .int(Int(s))]
        case .cron(let c): ["schedule": .string(c.text)]
        }
    }
}

/// A cron expression of five fields, `minute hour day-of-month month day-of-week`, in UTC. Each field
/// is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n` or `a/n`, or a comma-separated list of
/// these. Day of week is 0-7 (0 and 7 are Sunday). As in Vixie cron, when both day fields are
/// restricted a day matching either runs. Month and day names are not accepted.
package struct CronSchedule: Sendable, Equatable {
    package let text: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let days: Set<Int>
    let months: Set<Int>
    let weekdays: Set<Int>
    let daysRestricted: Bool
    let weekdaysRestricted: Bool

    /// Parses `text`; the error names the field and what is wrong with it.
    package init(_ text: String) throws(CofferError) {
        let trimmed = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard trimmed.count == 5 else {
            throw CofferError.invalid(
                "schedule must have five fields (minute hour day-of-month month day-of-week), such as \"0 3 * * 1\"; got \(trimmed.count)"
            )
        }
        self.text = trimmed.joined(separator: " ")
        minutes = try Self.field(trimmed[0], name: "minute", range: 0...59)
        hours = try Self.field(trimmed[1], name: "hour", range: 0...23)
        days = try Self.field(trimmed[2], name: "day-of-month", range: 1...31)
        months = try Self.field(trimmed[3], name: "month", range: 1...12)
        var dow = try Self.field(trimmed[4], name: "day-of-week", range: 0...7)
        if dow.contains(7) {
            dow.remove(7)
            dow.insert(0)
        }
        weekdays = dow
        daysRestricted = !trimmed[2].hasPrefix("*")
        weekdaysRestricted = !trimmed[4].hasPrefix("*")
    }

    static func field(_ text: String, name: String, range: ClosedRange<Int>) throws(CofferError) -> Set<Int> {
        func bad(_ why: String) -> CofferError {
            CofferError.invalid("schedule's \(name) field \"\(text)\": \(why)")
        }
        func number(_ s: Substring) throws(CofferError) -> Int {
            guard !s.isEmpty, s.count <= 4, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(s) else {
                throw bad("\"\(s)\" is not a number")
            }
            guard range.contains(n) else {
                throw bad("\(n) is outside \(range.lowerBound)-\(range.upperBound)")
            }
            return n
        }
        var out = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw bad("an empty list item") }
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw bad("more than one '/' in \"\(item)\"") }
            var step = 1
            if parts.count == 2 {
                guard parts[1].count <= 4, parts[1].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let s = Int(parts[1]),
                    s >= 1,
                    s <= range.upperBound + 1
                else {
                    throw bad("the step \"\(parts[1])\" must be a number from 1 to \(range.upperBound + 1)")
                }
                step = s
            }
            let base = parts[0]
            var low: Int
            var high: Int
            if base == "*" {
                low = range.lowerBound
                high = range.upperBound
            } else if let dash = base.firstIndex(of: "-") {
                low = try number(base[..<dash])
                high = try number(base[base.index(after: dash)...])
                guard low <= high else { throw bad("the range \(low)-\(high) runs backwards") }
            } else {
                low = try number(base)
                high = parts.count == 2 ? range.upperBound : low
            }
            var n = low
            while n <= high {
                out.insert(n)
                n += step
            }
        }
        return out
    }

    /// The first minute strictly after `after` that the schedule matches; nil if none within five years.
    package func next(after: Timestamp) -> Timestamp? {
        var minute = after.nanoseconds >= 0 ? after.nanoseconds / 60_000_000_000 + 1 : 0
        let limit = minute + 5 * 366 * 24 * 60
        while minute < limit {
            let day = minute / 1440
            let (_, month, dayOfMonth) = Civil.date(days: day)
            if !months.contains(month) {
                // The first minute of the next month.
                minute = (day - Int64(dayOfMonth) + 1 + Int64(Civil.daysIn(date: day))) * 1440
                continue
            }
            let weekday = Int((day % 7 + 11) % 7)  // 1970-01-01 was a Thursday (4).
            let domMatch = days.contains(dayOfMonth)
            let dowMatch = weekdays.contains(weekday)
            let dayMatches =
                daysRestricted && weekdaysRestricted ? (domMatch || dowMatch) : (domMatch && dowMatch)
            if !dayMatches {
                minute = (day + 1) * 1440
                continue
            }
            let hour = Int(minute % 1440 / 60)
            if !hours.contains(hour) {
                minute = minute - minute % 60 + 60
                continue
            }
            if !minutes.contains(Int(minute % 60)) {
                minute += 1
                continue
            }
            return Timestamp(seconds: minute * 60)
        }
        return nil
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
enum Civil {
    static func date(days: Int64) -> (year: Int64, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = Int(doy - (153 * mp + 2) / 5 + 1)
        let m = Int(mp < 10 ? mp + 3 : mp - 9)
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    /// The number of days in the month of the day `days` since 1970-01-01.
    static func daysIn(date days: Int64) -> Int {
        let (year, month, _) = date(days: days)
        switch month {
        case 2:
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
            return leap ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}
