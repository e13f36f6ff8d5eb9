import Metrics
import Synchronization
import Uring

/// Publishes rings' counters (``RingStatistics``) through swift-metrics: whatever metrics backend
/// the process bootstrapped (Prometheus, StatsD, OpenTelemetry…) sees them.
///
/// ```swift
/// import Metrics
/// import Prometheus
/// import UringMetrics
///
/// MetricsSystem.bootstrap(PrometheusMetricsFactory())
/// let rings = try RingGroup()
/// let reporter = RingMetricsReporter(rings: rings.rings, interval: .seconds(10))
/// Task { try await reporter.run() }     // until the task is cancelled
/// ```
///
/// Every ring is one set of metrics with the dimension `ring` (the ring's name). Cumulative
/// counts are swift-metrics counters, incremented by what changed since the previous sample;
/// levels are gauges:
///
/// | Metric | Kind | From |
/// |---|---|---|
/// | `uring_operations_submitted_total` | counter | ``RingStatistics/submitted`` |
/// | `uring_completions_total` | counter | ``RingStatistics/completions`` |
/// | `uring_enter_calls_total` | counter | ``RingStatistics/enterCalls`` |
/// | `uring_jobs_total` | counter | ``RingStatistics/jobsRun`` |
/// | `uring_capacity_waits_total` | counter | ``RingStatistics/waitedForCapacity`` |
/// | `uring_cancels_total` | counter | ``RingStatistics/cancelsSubmitted`` |
/// | `uring_cq_overflows_total` | counter | ``RingStatistics/completionQueueOverflows`` |
/// | `uring_multishot_arms_total` | counter | ``RingStatistics/multishotArmed`` |
/// | `uring_receive_buffer_shortages_total` | counter | ``RingStatistics/receiveBufferShortages`` |
/// | `uring_stream_pauses_total` | counter | ``RingStatistics/streamPauses`` |
/// | `uring_messages_sent_total` | counter | ``RingStatistics/messagesSent`` |
/// | `uring_stalls_total` | counter | ``RingStatistics/stalls`` |
/// | `uring_retries_total` | counter | ``RingStatistics/retries`` |
/// | `uring_operations_in_flight` | gauge | ``RingStatistics/operationsInTable`` |
/// | `uring_receive_buffers_available` | gauge | ``RingStatistics/receiveBuffersAvailable`` |
/// | `uring_longest_stall_seconds` | gauge | ``RingStatistics/longestStall`` |
///
/// `run()` has the shape of swift-service-lifecycle's `Service.run()`, so a one-line conformance
/// puts the reporter in a `ServiceGroup`.
public struct RingMetricsReporter: Sendable {
    public let rings: [RingExecutor]
    public let interval: Duration
    private let state: [RingMetrics]

    /// - Parameters:
    ///   - rings: The rings to report (`RingGroup.rings`, or single rings).
    ///   - interval: Time between samples (each costs one hop to every ring).
    ///   - prefix: The metrics' name prefix.
    ///   - factory: Where the metrics go; by default the backend `MetricsSystem.bootstrap` set.
    public init(
        rings: [RingExecutor], interval: Duration = .seconds(10), prefix: String = "uring",
        factory: MetricsFactory = MetricsSystem.factory
    ) {
        precondition(interval > .zero, "the interval must be positive")
        self.rings = rings
        self.interval = interval
        state = rings.map { RingMetrics(prefix: prefix, ring: $0.name, factory: factory) }
    }

    /// Samples every ring and publishes the changes since the previous call.
    public func report() async {
        for (ring, metrics) in zip(rings, state) {
            metrics.publish(await ring.statistics())
        }
    }

    /// Reports every `interval` until the task is cancelled (then returns normally, after a last
    /// report).
    public func run() async throws {
        while !Task.isCancelled {
            await report()
            do {
                try await Task.sleep(for: interval)
            } catch {
                break
            }
        }
        await report()
    }
}

/// One ring's metrics, and the previous sample (counters are incremented by differences).
private final class RingMetrics: Sendable {
    /// The previous sample (`report()` may be called from several tasks at once).
    private let previous = Mutex<RingStatistics?>(nil)
    private let counters: [(KeyPath<RingStatistics, UInt64> & Sendable, Counter)]
    private let inFlight: Gauge
    private let buffersAvailable: Gauge
    private let longestStall: Gauge

    init(prefix: String, ring: String, factory: MetricsFactory) {
        let dimensions = [("ring", ring)]
        func counter(_ name: String) -> Counter {
            Counter(label: "\(prefix)_\(name)_total", dimensions: dimensions, factory: factory)
        }
        func gauge(_ name: String) -> Gauge {
            Gauge(label: "\(prefix)_\(name)", dimensions: dimensions, factory: factory)
        }
        counters = [
            (\.submitted, counter("operations_submitted")), (\.completions, counter("completions")),
            (\.enterCalls, counter("enter_calls")), (\.jobsRun, counter("jobs")),
            (\.waitedForCapacity, counter("capacity_waits")), (\.cancelsSubmitted, counter("cancels")),
            (\.completionQueueOverflows, counter("cq_overflows")), (\.multishotArmed, counter("multishot_arms")),
            (\.receiveBufferShortages, counter("receive_buffer_shortages")), (\.streamPauses, counter("stream_pauses")),
            (\.messagesSent, counter("messages_sent")), (\.stalls, counter("stalls")), (\.retries, counter("retries")),
        ]
        inFlight = gauge("operations_in_flight")
        buffersAvailable = gauge("receive_buffers_available")
        longestStall = gauge("longest_stall_seconds")
    }

    func publish(_ now: RingStatistics) {
        previous.withLock { previous in
            for (field, counter) in counters {
                // The first sample publishes everything since the ring started.
                let delta = now[keyPath: field] &- (previous?[keyPath: field] ?? 0)
                if delta > 0 && delta <= UInt64(Int64.max) { counter.increment(by: Int64(delta)) }
            }
            previous = now
        }
        inFlight.record(now.operationsInTable)
        buffersAvailable.record(now.receiveBuffersAvailable)
        let (seconds, attoseconds) = now.longestStall.components
        longestStall.record(Double(seconds) + Double(attoseconds) / 1e18)
    }
}
