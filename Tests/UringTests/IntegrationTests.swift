import Testing

@testable import Uring

/// The parent of every suite that uses the kernel. Serialized, because several tests count the
/// process's open descriptors and operation-table entries before and after; and every test in it
/// is checked for leaks by ``ResourceAccounting``.
@Suite(.serialized, .enabled(if: ringAvailable, "io_uring is unavailable on this machine"), ResourceAccounting())
struct IntegrationTests {}

/// Around every test case: the process's open descriptors, and the shared ring's operation table
/// and receive buffers, must be back where they were once the test is over (cancellations and
/// closes complete asynchronously, so it waits up to ten seconds for them to settle).
struct ResourceAccounting: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        guard testCase != nil else {
            try await function()
            return
        }
        // Dispatch makes its timer descriptors at the first plain Task.sleep of the process (a
        // timerfd, and a pipe under ThreadSanitizer): the runtime's, made before the baseline.
        try? await Task.sleep(for: .nanoseconds(1))
        let before = openDescriptors()
        try await function()
        // Dispatch creates a timerfd the first time a plain Task.sleep runs: the runtime's, once.
        // The signal pipe is created at the first `Signals.stream` and lives for the process.
        let signalPipe = SignalHub.shared.pipeDescriptors
        let settled = await eventually(seconds: 10) {
            openDescriptors().filter {
                before[$0.key] != $0.value && $0.value != "anon_inode:[timerfd]" && !signalPipe.contains($0.key)
            }.isEmpty
        }
        if !settled {
            let leaked = openDescriptors().filter { before[$0.key] != $0.value }.sorted { $0.key < $1.key }
            Issue.record("\(test.name): descriptor(s) leaked: \(leaked.map { "\($0.key) -> \($0.value)" })")
        }
        if let shared = try? RingExecutor.shared() {
            let clean = await eventually(seconds: 10) {
                let stats = await shared.statistics()
                return stats.operationsInTable == 0 && stats.receiveBuffersAvailable == stats.receiveBufferCount
            }
            let stats = await shared.statistics()
            #expect(
                clean,
                "\(test.name): \(stats.operationsInTable) operation(s) left in the shared ring's table, \(stats.receiveBufferCount - stats.receiveBuffersAvailable) receive buffer(s) not returned"
            )
        }
    }
}
