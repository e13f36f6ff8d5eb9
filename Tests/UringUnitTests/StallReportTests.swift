import Testing

@testable import Uring

/// The stall detector's rate limit, without threads or rings.
@Suite("Stall reports")
struct StallReportTests {
    @Test func oneWarningPerIntervalAndASummaryOfTheRest() {
        var limiter = StallReportLimiter()
        let second: UInt64 = 1_000_000_000
        var lines: [String] = []
        // 100 stalls of 20 ms within 2 s, with a 10 s interval.
        for i in 0..<100 {
            let now = UInt64(i) * 20_000_000
            if let line = limiter.stall(at: now, interval: 10 * second, ring: "r", held: 15_000_000) {
                lines.append(line)
            }
            if let line = limiter.summary(at: now, interval: 10 * second) { lines.append(line) }
        }
        #expect(lines.count == 1, "only the first stall is logged at once")
        #expect(limiter.summary(at: 5 * second, interval: 10 * second) == nil, "nothing before the interval is over")
        let summary = limiter.summary(at: 11 * second, interval: 10 * second)
        #expect(summary?.hasPrefix("99 more stalls") == true, "\(summary ?? "nil")")
        #expect(limiter.summary(at: 30 * second, interval: 10 * second) == nil, "a summary is given once")
        // After a quiet interval the next stall is logged at once again.
        #expect(limiter.stall(at: 40 * second, interval: 10 * second, ring: "r", held: 15_000_000) != nil)
    }
}
