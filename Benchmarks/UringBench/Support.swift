import Glibc
import MallocInterposerSwift
import Synchronization

/// Monotonic nanoseconds (vDSO clock_gettime: no syscall, no allocation).
@inline(__always)
func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Blocks the calling thread (the controller is not on a ring, and must not allocate while the
/// measurement runs, as Task.sleep could).
func sleepBlocking(_ seconds: Double) {
    var ts = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
    var remaining = timespec()
    while nanosleep(&ts, &remaining) != 0 { ts = remaining }
}

/// The phase the workers see: warming up, measuring, or stopping.
final class Phase: Sendable {
    static let warmup = 0
    static let measure = 1
    static let stop = 2
    let value = Atomic<Int>(Phase.warmup)

    @inline(__always) var current: Int { value.load(ordering: .relaxed) }
    func set(_ phase: Int) { value.store(phase, ordering: .relaxed) }
}

/// Counts heap allocations in a window, through the malloc interposer linked into this binary.
enum Allocations {
    /// Whether the interposer sees this process's mallocs (it must be loaded before libc's malloc
    /// is bound; `main` re-executes the binary with LD_PRELOAD when it is not).
    static let working: Bool = {
        MallocInterposerSwift.initialize()
        MallocInterposerSwift.hook()
        // Through the Swift runtime (swift_slowAlloc), which the optimizer cannot elide the way it
        // elides a plain malloc/free pair.
        let p = UnsafeMutableRawPointer.allocate(byteCount: 24, alignment: 8)
        p.storeBytes(of: 1, as: Int.self)
        p.deallocate()
        MallocInterposerSwift.unhook()
        let counted = MallocInterposerSwift.getStatistics().mallocCount
        MallocInterposerSwift.reset()
        return counted > 0
    }()

    static func start() {
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
    }

    /// Allocations since `start()`, or nil when the interposer is not active.
    static func stop() -> Int? {
        MallocInterposerSwift.unhook()
        guard working else { return nil }
        return MallocInterposerSwift.getStatistics().mallocCount
    }
}

/// What one measured run produced.
struct Measurement {
    var scenario: String
    var engine: String
    var fields: [(String, String)]
    var concurrency: Int
    var block: Int?
    var seconds: Double
    var ops: Int
    var histogram: Histogram
    var mallocs: Int?
    /// nop: the floor's ops/s at the same concurrency (see `runFloor`).
    var floorOpsPerSecond: Double? = nil
    /// This process's CPU time in the measured window, seconds (where the scenario measures it).
    var cpuSeconds: Double? = nil

    var opsPerSecond: Double { Double(ops) / seconds }
    var mebibytesPerSecond: Double? { block.map { Double($0) * opsPerSecond / 1_048_576 } }
    var mallocsPerOp: Double? { mallocs.map { ops > 0 ? Double($0) / Double(ops) : 0 } }
}

func format(_ value: Double, decimals: Int = 2) -> String {
    var text = String(Int(value.rounded(.down)))
    if decimals > 0 {
        let scale = pow(10.0, Double(decimals))
        let fraction = Int(((value - value.rounded(.down)) * scale).rounded())
        if fraction >= Int(scale) { return format(value.rounded(.up), decimals: decimals) }
        let digits = String(fraction)
        text += "." + String(repeating: "0", count: decimals - digits.count) + digits
    }
    return text
}
