import MetricsTestKit
import Testing
import Uring
import UringMetrics

extension IntegrationTests {
    @Suite("swift-metrics export")
    struct Metrics {
        /// A ring's counters reach the metrics backend as counters (incremented by what changed
        /// between samples) and gauges, with the ring's name as a dimension.
        @Test func ringCountersReachTheBackend() async throws {
            let metrics = TestMetrics()
            let ring = try RingExecutor(entries: 64, name: "metrics-ring")
            defer { ring.shutdown() }
            let reporter = RingMetricsReporter(rings: [ring], interval: .milliseconds(20), factory: metrics)
            let dimensions = [("ring", "metrics-ring")]

            try await Task(executorPreference: ring) { for _ in 0..<100 { try await Uring.nop() } }.value
            await reporter.report()
            let submitted = try metrics.expectCounter("uring_operations_submitted_total", dimensions)
            let jobs = try metrics.expectCounter("uring_jobs_total", dimensions)
            let first = submitted.totalValue
            #expect(first >= 100)
            #expect(jobs.totalValue >= 1)

            try await Task(executorPreference: ring) { for _ in 0..<50 { try await Uring.nop() } }.value
            await reporter.report()
            let delta = submitted.totalValue - first
            #expect(delta >= 50 && delta < 60, "incremented by the difference, not the total (\(delta))")
            #expect(try metrics.expectGauge("uring_operations_in_flight", dimensions).lastValue == 0)
            #expect(try metrics.expectGauge("uring_longest_stall_seconds", dimensions).lastValue == 0)

            // run() reports on its interval and returns when cancelled.
            let before = submitted.values.count
            let running = Task { try await reporter.run() }
            try await Task.sleep(for: .milliseconds(200))
            running.cancel()
            try await running.value
            #expect(try metrics.expectGauge("uring_operations_in_flight", dimensions).values.count >= 3)
            #expect(submitted.values.count >= before)
        }
    }
}
