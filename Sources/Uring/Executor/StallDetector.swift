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
/// they are lower bounds, precise to that period. While every ring sleeps (no job for 100 ms),
/// the watcher sleeps too, until a ring wakes up: an idle process is not woken by it.
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
///
/// It samples every half threshold while any ring works, and sleeps when all are idle: once every
/// ring has been asleep in the kernel with no job run for ``samplesBeforeParking`` samples in a
/// row, it parks until a ring wakes up (``ringWoke()``) or registers. An idle process then
/// makes no wake-ups of its own (it made 200 a second, about 1 % of a CPU on a VM).
@safe final class StallWatch: @unchecked Sendable {
    // SAFETY (@safe): `mutex` and `condition` are allocated and initialized in init and never freed (the watcher is
    // process-wide and lives as long as the process); they are only used through pthread calls.
    // @unchecked Sendable: `rings` is guarded by its lock; `parked` is atomic; the rest is the watcher thread's own.
    static let shared = StallWatch()

    /// Idle samples in a row (every ring asleep, no job run) before the watcher parks.
    static let samplesBeforeParking = 20

    /// Set while the watcher is parked (or about to be); a ring that wakes up clears it.
    let parked = Atomic<Bool>(false)
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    private init() {
        unsafe mutex = .allocate(capacity: 1)
        unsafe condition = .allocate(capacity: 1)
        // SAFETY: fresh allocations, initialized once here.
        unsafe pthread_mutex_init(mutex, nil)
        unsafe pthread_cond_init(condition, nil)
    }

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
        ringWoke()
    }

    /// Called by a ring that stopped sleeping (after storing `sleeping = false`, sequentially
    /// consistent): wakes the watcher if it is parked. Pairs with the watcher's store of `parked`
    /// and its look at `sleeping` (``park()``): at least one of the two sees the other's store,
    /// so a ring never works unwatched while the watcher sleeps.
    @inline(__always)
    func ringWoke() {
        if parked.load(ordering: .sequentiallyConsistent) { unpark() }
    }

    @inline(never)
    private func unpark() {
        unsafe pthread_mutex_lock(mutex)
        parked.store(false, ordering: .sequentiallyConsistent)
        unsafe pthread_cond_signal(condition)
        unsafe pthread_mutex_unlock(mutex)
    }

    /// Sleeps until a ring wakes up or registers, unless one already did since the last sample.
    private func park() {
        unsafe pthread_mutex_lock(mutex)
        parked.store(true, ordering: .sequentiallyConsistent)
        let stillIdle = rings.withLock { list in
            list.allSatisfy { entry in
                let ring = unsafe entry.ring
                return ring.sleeping.load(ordering: .sequentiallyConsistent)
                    && ring.jobClock.load(ordering: .relaxed) == entry.lastClock
            }
        }
        if stillIdle {
            while parked.load(ordering: .sequentiallyConsistent) { unsafe pthread_cond_wait(condition, mutex) }
        } else {
            parked.store(false, ordering: .sequentiallyConsistent)
        }
        unsafe pthread_mutex_unlock(mutex)
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
        var idleSamples = 0
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
            var allIdle = true
            rings.withLock { list in
                for i in list.indices {
                    let ring = unsafe list[i].ring
                    let clock = ring.jobClock.load(ordering: .relaxed)
                    if clock & 1 == 1 || clock != list[i].lastClock || !ring.sleeping.load(ordering: .relaxed) {
                        allIdle = false
                    }
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
            idleSamples = allIdle ? idleSamples + 1 : 0
            if idleSamples >= Self.samplesBeforeParking, limiter.suppressed == 0 {
                park()
                idleSamples = 0
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
