import Glibc

/// IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`: always 29 bytes.
public enum HTTPDate {
    public static let length = 29
    private static let days: StaticString = "ThuFriSatSunMonTueWed"  // 1970-01-01 was a Thursday
    private static let months: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"

    /// Writes the date for `seconds` since the epoch into `out` (29 bytes).
    public static func format(_ seconds: Int, into out: UnsafeMutableRawPointer) {
        let day = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secondOfDay = seconds - day * 86400
        let (y, m, d) = civil(fromDays: day)
        let weekday = ((day % 7) + 7) % 7
        var i = 0
        func put(_ b: UInt8) {
            unsafe out.storeBytes(of: b, toByteOffset: i, as: UInt8.self)
            i += 1
        }
        func two(_ n: Int) {
            put(UInt8(48 + n / 10))
            put(UInt8(48 + n % 10))
        }
        let dayNames = unsafe days.utf8Start
        for k in 0..<3 { unsafe put(dayNames[weekday * 3 + k]) }
        put(44)
        put(32)
        two(d)
        put(32)
        let monthNames = unsafe months.utf8Start
        for k in 0..<3 { unsafe put(monthNames[(m - 1) * 3 + k]) }
        put(32)
        two(y / 100 % 100)
        two(y % 100)
        put(32)
        two(secondOfDay / 3600)
        put(58)
        two(secondOfDay / 60 % 60)
        put(58)
        two(secondOfDay % 60)
        for b: UInt8 in [32, 71, 77, 84] { put(b) }
    }

    /// Parses an IMF-fixdate; nil for anything else (the obsolete formats are not accepted).
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count == length, unsafe bytes[3] == 44, unsafe bytes[4] == 32, unsafe bytes[7] == 32,
            unsafe bytes[11] == 32,
            unsafe bytes[16] == 32, unsafe bytes[19] == 58, unsafe bytes[22] == 58, unsafe bytes[25] == 32,
            unsafe bytes[26] == 71, unsafe bytes[27] == 77,
            unsafe bytes[28] == 84
        else { return nil }
        func number(_ at: Int, _ digits: Int) -> Int? {
            var n = 0
            for k in at..<at + digits {
                guard unsafe isDigit(bytes[k]) else { return nil }
                n = unsafe n * 10 + Int(bytes[k] - 48)
            }
            return n
        }
        guard let d = number(5, 2), let y = number(12, 4), let hh = number(17, 2), let mm = number(20, 2),
            let ss = number(23, 2), hh < 24, mm < 60, ss < 61, d >= 1, d <= 31
        else { return nil }
        let monthNames = unsafe months.utf8Start
        var month = 0
        for m in 0..<12
        where unsafe bytes[8] == monthNames[m * 3] && bytes[9] == monthNames[m * 3 + 1]
            && bytes[10] == monthNames[m * 3 + 2]
        {
            month = m + 1
        }
        guard month > 0 else { return nil }
        return days(fromCivil: y, month, d) * 86400 + hh * 3600 + mm * 60 + ss
    }

    // Howard Hinnant's civil-from-days and days-from-civil.
    static func civil(fromDays z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    static func days(fromCivil y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

/// The current date in IMF-fixdate, formatted at most once per second (per instance: one per
/// ring).
@safe final class DateCache: @unchecked Sendable {
    // SAFETY (@safe): its buffer is allocated in init, freed in deinit, and written only within its fixed size.
    // @unchecked Sendable: used only by the tasks of one ring, which run on its one thread.
    private var second = -1
    let bytes = UnsafeMutableRawPointer.allocate(byteCount: HTTPDate.length, alignment: 8)

    deinit { unsafe bytes.deallocate() }

    /// The current date's 29 bytes.
    func now() -> UnsafeRawBufferPointer {
        var ts = timespec()
        unsafe clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        if ts.tv_sec != second {
            second = ts.tv_sec
            unsafe HTTPDate.format(second, into: bytes)
        }
        return unsafe UnsafeRawBufferPointer(start: bytes, count: HTTPDate.length)
    }
}
