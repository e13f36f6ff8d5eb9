import Glibc
import Uring

/// `uring-bench handoff`: the cost of moving a task from one ring to another. One task on ring A
/// hops to ring B and back (`withTaskExecutorPreference`) in a loop; each round trip is two
/// hand-offs, and half of it is recorded. Both rings are otherwise idle, so every hand-off
/// includes waking a sleeping ring: with `IORING_OP_MSG_RING` from the sending ring (default), or
/// through the target's eventfd (`SWIFT_URING_MSG_RING=0`).
func runHandoff(options: Options) async throws -> String {
    let group = try RingGroup(
        count: 2, name: "bench-handoff", spinBeforeSleep: .microseconds((options.spinMicroseconds ?? 0)))
    let a = group[0]
    let b = group[1]
    let seconds = options.seconds
    let warmup = options.warmup
    let (count, histogram) = await Task(executorPreference: a) { () async -> (Int, Histogram) in
        var histogram = Histogram()
        var count = 0
        let start = nowNanoseconds()
        let warmupEnd = start + UInt64(warmup * 1e9)
        let end = warmupEnd + UInt64(seconds * 1e9)
        while true {
            let t0 = nowNanoseconds()
            if t0 >= end { break }
            await withTaskExecutorPreference(b) {
                precondition(RingExecutor.current === b)
            }
            let t1 = nowNanoseconds()
            precondition(RingExecutor.current === a)
            if t0 >= warmupEnd {
                histogram.record((t1 - t0) / 2)
                count += 1
            }
        }
        return (count, histogram)
    }.value
    let stats = await group.statistics()
    let messages = stats.reduce(0) { $0 + $1.messagesSent }
    // Joining threads blocks: not on this ring.
    _ = try? await Uring.runBlocking { group.shutdown() }
    return [
        "scenario=handoff", "seconds=\(format(seconds, decimals: 3))", "round_trips=\(count)",
        "handoffs_per_sec=\(format(Double(count * 2) / seconds, decimals: 0))",
        "p50_us=\(format(histogram.quantile(0.50) / 1000, decimals: 3))",
        "p99_us=\(format(histogram.quantile(0.99) / 1000, decimals: 3))",
        "wake=" + (messages > 0 ? "msg_ring" : "eventfd"), "spin_us=\((options.spinMicroseconds ?? 0))",
    ].joined(separator: " ")
}
