import Glibc

// Time in the units the kernel and the loop use.

/// CLOCK_MONOTONIC in nanoseconds (vDSO: no system call).
@inline(__always)
func monotonicClockNanoseconds() -> UInt64 {
    var ts = timespec()
    unsafe clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// A non-negative duration in nanoseconds (negative ones count as zero). Shared with the
/// package's other modules (the HTTP server's deadlines).
package func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
}

extension Duration {
    /// The duration as the seconds and nanoseconds of a kernel timespec (what io_uring timeouts
    /// read), clamped at zero. (The C struct itself is made in Operations/, the only layer that
    /// names C types: `__kernel_timespec(duration)`.)
    var timespecComponents: (seconds: Int64, nanoseconds: Int64) {
        let (seconds, attoseconds) = components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return (0, 0) }
        return (seconds, attoseconds / 1_000_000_000)
    }
}
