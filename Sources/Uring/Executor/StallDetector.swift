import Glibc
import Logging
import Synchronization

/// Reports jobs that hold a ring too long: the event-loop rule is that nothing blocks a ring,
/// and this is how a violation shows up.
///
/// A watcher thread samples every ring's job counter (the ring only bumps a counter around each
/// job: two plain stores). When the same job is still running after ``threshold`` (default
/// 10 ms), the stall is counted on that ring (``RingStatistics/stalls``), logged as a warning with
/// the ring's name, and logged again with its duration when the job ends
/// (``RingStatistics/longestStall`` keeps the longest). Durations are measured by sampling every
/// half threshold, so they are lower bounds, precise to that period.
///
/// ```swift
/// StallDetector.threshold = .milliseconds(5)     // or nil to turn it off
/// StallDetector.logger = Logger(label: "my-server.stalls")
/// ```
///
/// Move blocking work to ``BlockingPool`` (``Uring/runBlocking(_:)``).
public enum StallDetector {
    private static let settings = Lock<(threshold: Duration?, logger: Logger)>((.milliseconds(10), Logger(label: "swift-uring")))

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

    static var current: (threshold: Duration?, logger: Logger) { settings.withLock { $0 } }
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
        rings.withLock { list in list.removeAll { $0.ring === ring } }
    }

    private func start() {
        var tid = pthread_t()
        let context = Unmanaged.passRetained(self)
        if pthread_create(&tid, nil, { raw in
            let watch = Unmanaged<StallWatch>.fromOpaque(raw!).takeRetainedValue()
            RingExecutor.nameCurrentThread("uring-stalls")
            watch.run()
            return nil
        }, context.toOpaque()) == 0 {
            pthread_detach(tid)
        } else {
            context.release()
            started.store(false, ordering: .releasing)
        }
    }

    private func run() {
        while true {
            let (threshold, logger) = StallDetector.current
            guard let threshold else {
                sleep(nanoseconds: 100_000_000)
                continue
            }
            let limit = UInt64(max(1_000_000, nanoseconds(threshold)))
            sleep(nanoseconds: max(500_000, limit / 2))
            let now = monotonicNanoseconds()
            var events: [(String, UInt64, Bool)] = []  // ring name, held, started (else ended)
            rings.withLock { list in
                for i in list.indices {
                    let ring = list[i].ring
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
                    logger.warning(
                        "a job has held ring '\(ringName)' for \(milliseconds) ms (threshold \(threshold)): move blocking work to BlockingPool",
                        metadata: ["ring": "\(ringName)", "held_ms": "\(milliseconds)"])
                } else {
                    logger.notice(
                        "ring '\(ringName)' was held by one job for at least \(milliseconds) ms",
                        metadata: ["ring": "\(ringName)", "held_ms": "\(milliseconds)"])
                }
            }
        }
    }

    private func sleep(nanoseconds: UInt64) {
        var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&ts, &remaining) != 0 { ts = remaining }
    }

}

/// CLOCK_MONOTONIC in nanoseconds (vDSO: no system call).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// A non-negative duration in nanoseconds (negative ones count as zero). Shared with the
/// package's other modules (the HTTP server's deadlines).
package func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
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
