import Foundation
import Synchronization

// What every measuring peer shares: the clock, the phases of a run, a latency histogram and the
// process's CPU time.

func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

func nowNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}

/// The CPU time of every thread of this process, in seconds.
func processCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Warming up (0), measuring (1) or stopping (2): what the workers see.
final class Phase: Sendable {
    let value = Atomic<Int>(0)
    var current: Int { value.load(ordering: .acquiring) }
    /// Releasing: what the setter wrote before is seen by whoever sees the new phase.
    func set(_ phase: Int) { value.store(phase, ordering: .releasing) }
}

/// A log-linear latency histogram (16 sub-buckets per power of two, about 6 % resolution), the
/// same scheme as uring-bench's.
struct Histogram: Sendable {
    static let subBits = 4
    var counts = [UInt64](repeating: 0, count: 64 << 4)
    var total: UInt64 = 0

    static func index(_ value: UInt64) -> Int {
        let v = max(value, 1)
        let exponent = 63 - v.leadingZeroBitCount
        if exponent < subBits { return Int(v) }
        return ((exponent - subBits + 1) << subBits) + Int((v >> UInt64(exponent - subBits)) & 15)
    }

    static func value(_ index: Int) -> UInt64 {
        if index < 16 { return UInt64(index) }
        let exponent = (index >> subBits) + subBits - 1
        return (UInt64(1) << UInt64(exponent)) | (UInt64(index & 15) << UInt64(exponent - subBits))
    }

    mutating func record(_ nanoseconds: UInt64) {
        counts[Histogram.index(nanoseconds)] &+= 1
        total &+= 1
    }

    mutating func merge(_ other: Histogram) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
        total &+= other.total
    }

    /// The value at quantile `q`, in microseconds (the middle of its bucket).
    func quantileMicroseconds(_ q: Double) -> Double {
        guard total > 0 else { return 0 }
        let rank = max(UInt64((Double(total) * q).rounded(.up)), 1)
        var seen: UInt64 = 0
        for i in counts.indices {
            seen &+= counts[i]
            if seen >= rank { return Double(Histogram.value(i) + Histogram.value(i + 1)) / 2000 }
        }
        return 0
    }
}
