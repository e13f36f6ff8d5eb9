import Testing

@testable import Uring

/// Counts transforms running at once, and the most seen. (The runtime's pthread `Lock`, which
/// ThreadSanitizer understands; it does not see the futex inside `Synchronization.Mutex`.)
final class Gauge: Sendable {
    private let state = Lock((running: 0, most: 0, cancelled: 0))
    func enter() {
        state.withLock {
            $0.running += 1
            $0.most = max($0.most, $0.running)
        }
    }
    func leave(cancelled: Bool = false) {
        state.withLock {
            $0.running -= 1
            if cancelled { $0.cancelled += 1 }
        }
    }
    var running: Int { state.withLock { $0.running } }
    var most: Int { state.withLock { $0.most } }
    var cancelled: Int { state.withLock { $0.cancelled } }
}

extension IntegrationTests {
    @Suite("Concurrent maps")
    struct ConcurrentMaps {
        @Test func neverMoreThanTheLimitAtOnce() async throws {
            let gauge = Gauge()
            var results: [Int] = []
            for try await value in (0..<400).mapConcurrently(
                limit: 8,
                { (i: Int) -> Int in
                    gauge.enter()
                    defer { gauge.leave() }
                    try await Task.sleep(for: .microseconds(100 * (i % 7)))
                    return i * 2
                })
            {
                results.append(value)
            }
            #expect(results == (0..<400).map { $0 * 2 })
            #expect(gauge.most <= 8)
            #expect(gauge.most == 8, "the limit was reached, so work did overlap")
            #expect(gauge.running == 0)
        }

        @Test func orderedResultsComeInInputOrderWhileCompletionsAreShuffled() async throws {
            // Later elements finish first.
            let delay: @Sendable (Int) -> Duration = { .milliseconds(2 * (16 - $0)) }
            var ordered: [Int] = []
            for try await value in (0..<16).mapConcurrently(
                limit: 16, ordered: true,
                { (i: Int) -> Int in
                    try await Task.sleep(for: delay(i))
                    return i
                })
            {
                ordered.append(value)
            }
            #expect(ordered == Array(0..<16))
            var completed: [Int] = []
            for try await value in (0..<16).mapConcurrently(
                limit: 16, ordered: false,
                { (i: Int) -> Int in
                    try await Task.sleep(for: delay(i))
                    return i
                })
            {
                completed.append(value)
            }
            #expect(completed.sorted() == Array(0..<16))
            #expect(completed != Array(0..<16), "completion order: \(completed)")
        }

        @Test func aSlowElementTimesOutAtItsTurnAndIsCancelled() async throws {
            let gauge = Gauge()
            var results: [Int] = []
            let error = await #expect(throws: ConcurrentMapTimeout.self) {
                for try await value in (0..<6).mapConcurrently(
                    limit: 4, timeout: .milliseconds(100),
                    { (i: Int) -> Int in
                        gauge.enter()
                        do {
                            try await Task.sleep(for: i == 3 ? .seconds(30) : .milliseconds(5))
                        } catch {
                            gauge.leave(cancelled: true)
                            throw error
                        }
                        gauge.leave()
                        return i
                    })
                {
                    results.append(value)
                }
            }
            #expect(error == ConcurrentMapTimeout(index: 3, timeout: .milliseconds(100)))
            #expect(results == [0, 1, 2])
            #expect(await eventually(seconds: 5) { gauge.running == 0 })
            #expect(gauge.cancelled >= 1, "the slow transform was cancelled")
        }

        @Test func aFailingTransformIsThrownAtItsTurn() async throws {
            struct Boom: Error, Equatable {}
            var results: [Int] = []
            await #expect(throws: Boom.self) {
                for try await value in (0..<20).mapConcurrently(
                    limit: 5,
                    { (i: Int) -> Int in
                        if i == 7 { throw Boom() }
                        return i
                    })
                {
                    results.append(value)
                }
            }
            #expect(results == Array(0..<7))
        }

        @Test func cancellingTheConsumerCancelsTheWorkInFlight() async throws {
            let gauge = Gauge()
            let consumer = Task {
                var count = 0
                for try await _ in (0..<1_000_000).mapConcurrently(
                    limit: 16,
                    { (i: Int) -> Int in
                        gauge.enter()
                        do {
                            try await Task.sleep(for: i < 4 ? .milliseconds(1) : .seconds(60))
                        } catch {
                            gauge.leave(cancelled: true)
                            throw error
                        }
                        gauge.leave()
                        return i
                    })
                {
                    count += 1
                }
                return count
            }
            #expect(await eventually(seconds: 10) { gauge.running == 16 - 4 || gauge.running == 16 })
            consumer.cancel()
            await #expect(throws: CancellationError.self) { _ = try await consumer.value }
            #expect(await eventually(seconds: 5) { gauge.running == 0 }, "no transform is left running")
            #expect(gauge.cancelled >= 12)
        }

        @Test func anAsyncSequenceInputAndAnEarlyExit() async throws {
            let (stream, input) = AsyncStream.makeStream(of: Int.self)
            for i in 0..<50 { input.yield(i) }
            input.finish()
            var sum = 0
            for try await value in stream.mapConcurrently(limit: 4, ordered: false, { $0 + 1 }) { sum += value }
            #expect(sum == (1...50).reduce(0, +))
            // Leaving the loop early cancels the rest.
            let gauge = Gauge()
            for try await value in (0..<100).mapConcurrently(
                limit: 8,
                { (i: Int) -> Int in
                    gauge.enter()
                    defer { gauge.leave() }
                    try await Task.sleep(for: i == 0 ? .zero : .seconds(60))
                    return i
                })
            {
                #expect(value == 0)
                break
            }
            #expect(await eventually(seconds: 5) { gauge.running == 0 })
        }

        @Test func onARingTheTransformsStayOnIt() async throws {
            let ring = try RingExecutor(name: "map-ring")
            defer { ring.shutdown() }
            let stayed = try await Task(executorPreference: ring) {
                var all = true
                for try await here in (0..<64).mapConcurrently(
                    limit: 8,
                    { _ in
                        try await Uring.nop()
                        return RingExecutor.current === ring
                    })
                {
                    all = all && here
                }
                return all
            }.value
            #expect(stayed)
        }
    }
}
