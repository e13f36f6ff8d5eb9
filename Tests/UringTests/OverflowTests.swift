import Glibc
import Testing

@testable import Uring

extension IntegrationTests {
    @Suite("Completion queue overflow")
    struct Overflow {
        /// More completions than the CQ ring holds: the overflow is detected and drained, and every
        /// awaited operation still completes exactly once.
        @Test func overflowIsDetectedAndDrained() async throws {
            let ring = try RingExecutor(entries: 8, name: "overflow-test")
            defer { ring.shutdown() }
            let before = await ring.statistics()
            #expect(before.completionEntries == 16)
            let results = try await Task(executorPreference: ring) {
                // 200 completions land at once in a CQ of 16 entries...
                ring.submitUntrackedNopsForTesting(200)
                // ...while real operations keep going through the same ring.
                var completed = 0
                for _ in 0..<100 {
                    try await Uring.nop()
                    completed += 1
                }
                return completed
            }.value
            #expect(results == 100)
            let after = await ring.statistics()
            #expect(after.completionQueueOverflows > before.completionQueueOverflows, "the overflow was seen")
            #expect(after.completions - before.completions >= 300, "every completion was drained")
            #expect(after.strayCompletions == 0)
            #expect(after.operationsInTable == 0)
        }
    }
}
