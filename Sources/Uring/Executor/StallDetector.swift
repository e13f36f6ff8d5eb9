import Glibc
import Logging
import Synchronization

/// Reports jobs that hold a ring too long: the event-loop rule is that nothing blocks a ring,
/// and this is how a violation shows up.
///
/// A watcher thread samples every ring's job counter (the ring only bumps a counter around each
/// job: two plain stores). When the same job is still running after ``threshold`` (default
/// 10 ms), the stall is counted on that ring (``RingStatistics/stalls``;
/// ``RingStatistics/longestStall`` keeps the longest) and logged.
///
/// Logging is rate-limited: one warning per stall at most once per ``reportInterval`` (default
/// 10 s); stalls in between are only counted, and summed up in one warning ("N more stalls in
/// the last 10 s, longest M ms") when the interval has passed. A program that stalls its ring
/// all the time gets a warning every 10 s, not one per job. The end of each stall, with its
/// duration, is logged at `.debug`. Durations are measured by sampling every half threshold, so
/// they are lower bounds, precise to that period.
///
/// ```swift
/// StallDetector.threshold = .milliseconds(5)     // or nil to turn it off
/// StallDetector.reportInterval = .seconds(60)    // at most one warning a minute
/// StallDetector.logger = Logger(label: "my-server.stalls")
/// ```
///
/// Move blocking work to ``BlockingPool`` (``Uring/runBlocking(_:)``).
public enum StallDetector {
    private static let settings = Lock<(threshold: Duration?, logger: Logger, interval: Duration)>(
        (.milliseconds(10), Logger(label: "swift-uring"), .seconds(10)))

    /// How long one job may hold a ring before it is reported; `nil` turns detection off.
    public static var threshold: Duration? {
        get { settings.withLock { $0.threshold } }
        set { settings.withLock { $0.threshold = newValue } }
    }

    /// Where stalls are logged (a warning when one is detected, a notice when it ends).
    public static var logger: Logger {
        get { settings.withLock { $0.logger } }
        set { settings.withLock { $0.logger = newValue } }
    }

    /// The shortest time between two stall warnings; stalls in between are counted and summed up
    /// in the next warning.
    public static var reportInterval: Duration {
        get { settings.withLock { $0.interval } }
        set { settings.withLock { $0.interval = max(.zero, newValue) } }
    }

    static var current: (threshold: Duration?, logger: Logger, interval: Duration) { settings.withLock { $0 } }
}

/// The watcher thread and the rings it watches.
final class StallWatch: @unchecked Sendable {
    // @unchecked Sendable: `rings` is guarded by its lock; `entries` is the watcher thread's own.
    static let shared = StallWatch()

    private struct Watched {
        // unowned(unsafe), not weak: a weak reference would give the ring a side table and send
        // every retain and release of it down the runtime's slow path. Safe because a ring
        // registers when its loop starts and unregisters (under the same lock) before it ends,
        // and the ring object outlives its loop.
        unowned(unsafe) let ring: RingExecutor
        var lastClock: UInt64 = 0
        var firstSeen: UInt64 = 0
        var reported = false
        var held: UInt64 = 0
    }

    private let rings = Lock<[Watched]>([])
    private let started = Atomic<Bool>(false)

    func register(_ ring: RingExecutor) {
        rings.withLock { $0.append(Watched(ring: ring)) }
        if !started.exchange(true, ordering: .acquiringAndReleasing) { start() }
    }

    func unregister(_ ring: RingExecutor) {
        rings.withLock { list in list.removeAll { unsafe $0.ring === ring } }
    }

    private func start() {
        var tid = pthread_t()
        let context = unsafe Unmanaged.passRetained(self)
        if unsafe pthread_create(
            &tid, nil,
            { raw in
                let watch = unsafe Unmanaged<StallWatch>.fromOpaque(raw!).takeRetainedValue()
                RingExecutor.nameCurrentThread("uring-stalls")
                watch.run()
                return nil
            }, unsafe context.toOpaque()) == 0
        {
            pthread_detach(tid)
        } else {
            unsafe context.release()
            started.store(false, ordering: .releasing)
        }
    }

    private func run() {
        var limiter = StallReportLimiter()
        while true {
            let (threshold, logger, interval) = StallDetector.current
            guard let threshold else {
                sleep(nanoseconds: 100_000_000)
                continue
            }
            let limit = UInt64(max(1_000_000, nanoseconds(threshold)))
            sleep(nanoseconds: max(500_000, limit / 2))
            let now = monotonicClockNanoseconds()
            var events: [(String, UInt64, Bool)] = []  // ring name, held, started (else ended)
            rings.withLock { list in
                for i in list.indices {
                    let ring = unsafe list[i].ring
                    let clock = ring.jobClock.load(ordering: .relaxed)
                    if clock & 1 == 1 && clock == list[i].lastClock {
                        list[i].held = now - list[i].firstSeen
                        if !list[i].reported && list[i].held >= limit {
                            list[i].reported = true
                            ring.stallCount.add(1, ordering: .relaxed)
                            events.append((ring.name, list[i].held, true))
                        }
                        ring.recordStall(list[i].held)
                    } else {
                        if list[i].reported { events.append((ring.name, list[i].held, false)) }
                        list[i].lastClock = clock
                        list[i].firstSeen = now
                        list[i].reported = false
                        list[i].held = 0
                    }
                }
            }
            for (ringName, held, began) in events {
                let milliseconds = Double(held) / 1e6
                if began {
                    if let report = limiter.stall(at: now, interval: nanoseconds(interval), ring: ringName, held: held)
                    {
                        logger.warning("\(report)", metadata: ["ring": "\(ringName)", "held_ms": "\(milliseconds)"])
                    }
                } else {
                    limiter.ended(held: held)
                    logger.debug(
                        "ring '\(ringName)' was held by one job for at least \(milliseconds) ms",
                        metadata: ["ring": "\(ringName)", "held_ms": "\(milliseconds)"])
                }
            }
            if let summary = limiter.summary(at: now, interval: nanoseconds(interval)) {
                logger.warning("\(summary)")
            }
        }
    }

    private func sleep(nanoseconds: UInt64) {
        var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while unsafe nanosleep(&ts, &remaining) != 0 { ts = remaining }
    }

}

extension RingExecutor {
    func recordStall(_ held: UInt64) {
        var longest = longestStallNanoseconds.load(ordering: .relaxed)
        while held > longest {
            let (exchanged, original) = longestStallNanoseconds.compareExchange(
                expected: longest, desired: held, ordering: .relaxed)
            if exchanged { break }
            longest = original
        }
    }
}

/// The stall detector's rate limit, as a pure state machine (unit-tested without threads): at
/// most one warning per interval; stalls in between are counted and summed up once the interval
/// has passed.
struct StallReportLimiter {
    private var lastReport: UInt64?
    private(set) var suppressed = 0
    private var suppressedLongest: UInt64 = 0

    /// A stall began on `ring`: the warning to log now, or nil when it is only counted.
    mutating func stall(at now: UInt64, interval: UInt64, ring: String, held: UInt64) -> String? {
        if let lastReport, now &- lastReport < interval {
            suppressed += 1
            suppressedLongest = max(suppressedLongest, held)
            return nil
        }
        lastReport = now
        return "a job has held ring '\(ring)' for \(Double(held) / 1e6) ms: move blocking work to BlockingPool"
            + " (further stalls are summed up at most once every \(Double(interval) / 1e9) s)"
    }

    /// A stall ended after `held` nanoseconds (a suppressed one may have grown meanwhile).
    mutating func ended(held: UInt64) {
        if suppressed > 0 { suppressedLongest = max(suppressedLongest, held) }
    }

    /// The summary of the stalls counted since the last warning, once the interval has passed.
    mutating func summary(at now: UInt64, interval: UInt64) -> String? {
        guard suppressed > 0, let lastReport, now &- lastReport >= interval else { return nil }
        let text =
            "\(suppressed) more stall\(suppressed == 1 ? "" : "s") of a ring in the last"
            + " \(Double(now &- lastReport) / 1e9) s, the longest \(Double(suppressedLongest) / 1e6) ms"
        self.lastReport = now
        suppressed = 0
        suppressedLongest = 0
        return text
    }
}
