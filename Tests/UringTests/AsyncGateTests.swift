import Testing

@testable import Uring
@testable import UringTLS

/// The gate a TLS connection's readers (and writers) take turns through: pure, no kernel.
@Suite("Async gate")
struct AsyncGateTests {
    /// Many tasks on the global executor's threads: never two holders at once, no turn lost
    /// (every waiter is handed the gate), and a held gate refuses `tryAcquire`.
    @Test func oneHolderAtATimeAndNoWaiterIsLost() async {
        let gate = AsyncGate()
        let holders = Lock(0)
        let most = Lock(0)
        let turns = Lock(0)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<500 {
                        await gate.acquire()
                        let now = holders.withLock { count -> Int in
                            count += 1
                            return count
                        }
                        most.withLock { $0 = max($0, now) }
                        await Task.yield()  // others queue behind the holder meanwhile
                        holders.withLock { $0 -= 1 }
                        turns.withLock { $0 += 1 }
                        gate.release()
                    }
                }
            }
        }
        #expect(most.withLock { $0 } == 1)
        #expect(turns.withLock { $0 } == 4000)
        #expect(gate.tryAcquire(), "free at the end")
        #expect(!gate.tryAcquire(), "held now")
        gate.release()
    }

    /// Waiters are served in the order they came.
    @Test func waitersAreServedInArrivalOrder() async {
        let gate = AsyncGate()
        let order = Lock<[Int]>([])
        await gate.acquire()
        var waiters: [Task<Void, Never>] = []
        for index in 0..<5 {
            waiters.append(
                Task {
                    await gate.acquire()
                    order.withLock { $0.append(index) }
                    gate.release()
                })
            // This waiter is in the queue before the next one starts.
            while gate.waiterCount < index + 1 { await Task.yield() }
        }
        gate.release()
        for waiter in waiters { await waiter.value }
        #expect(order.withLock { $0 } == [0, 1, 2, 3, 4])
    }
}
