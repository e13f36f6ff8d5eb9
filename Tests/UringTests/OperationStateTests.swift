import Glibc
import Testing
@testable import Uring

/// The operation lifecycle as a pure state machine: no kernel involved.
@Suite("Operation state machine")
struct OperationStateTests {
    @Test func userDataRoundTrips() {
        let id = OperationID(index: 123_456, generation: 0xAB_CDEF)
        for tag in [CompletionTag.operation, .linkedTimeout, .cancel, .timer] {
            let decoded = OperationID.decode(id.userData(tag))
            #expect(decoded.tag == tag)
            #expect(decoded.id == id)
        }
        #expect(OperationID.decode(0).tag == nil)
    }

    @Test func completionReturnsResult() {
        var slot = OperationSlot()
        slot.reset()
        slot.submitted(completions: 1)
        let step1 = slot.complete(.operation, result: 42)
        #expect(step1)
        #expect(slot.state == .completed)
        #expect(slot.outcome == .success(42))
    }

    @Test func errorIsSurfacedWithErrno() {
        var slot = OperationSlot()
        slot.reset()
        slot.submitted(completions: 1)
        _ = slot.complete(.operation, result: -EBADF)
        #expect(slot.outcome == .failure(EBADF))
    }

    @Test func cancelInFlightSubmitsAsyncCancelOnce() {
        var slot = OperationSlot()
        slot.reset()
        slot.submitted(completions: 1)
        let step1 = slot.cancel()
        #expect(step1 == .submitAsyncCancel)
        let step2 = slot.cancel()
        #expect(step2 == .none)
        #expect(slot.state == .inFlight)
        _ = slot.complete(.operation, result: -ECANCELED)
        #expect(slot.outcome == .cancelled)
    }

    @Test func resultThatWinsTheRaceWithCancelIsKept() {
        var slot = OperationSlot()
        slot.reset()
        slot.submitted(completions: 1)
        _ = slot.cancel()
        _ = slot.complete(.operation, result: 7)
        #expect(slot.outcome == .success(7))
    }

    @Test func cancelWhileWaitingForCapacityResumesWithoutSubmitting() {
        var slot = OperationSlot()
        slot.reset()
        slot.state = .waiting
        let step1 = slot.cancel()
        #expect(step1 == .resumeWaiter)
        #expect(slot.state == .completed)
        #expect(slot.outcome == .cancelled)
    }

    @Test func cancelBeforeSubmissionIsAFlagThenACancelledOutcome() {
        var slot = OperationSlot()
        slot.reset()
        let action = slot.cancel()
        #expect(action == .none)
        #expect(slot.cancelRequested && slot.state == .reserved)
        slot.cancelledBeforeSubmission()
        #expect(slot.state == .completed)
        #expect(slot.outcome == .cancelled)
    }

    @Test func deadlineNeedsBothCompletions() {
        var slot = OperationSlot()
        slot.reset()
        slot.submitted(completions: 2)
        let step1 = slot.complete(.linkedTimeout, result: -ETIME)
        #expect(!step1)
        #expect(slot.state == .inFlight)
        let step2 = slot.complete(.operation, result: -ECANCELED)
        #expect(step2)
        #expect(slot.outcome == .timedOut)
    }

    @Test func deadlineThatLosesTheRaceKeepsTheResult() {
        var slot = OperationSlot()
        slot.reset()
        slot.submitted(completions: 2)
        let step1 = slot.complete(.operation, result: 5)
        #expect(!step1)
        let step2 = slot.complete(.linkedTimeout, result: -ECANCELED)
        #expect(step2)
        #expect(slot.outcome == .success(5))
    }

    @Test func tableReusesSlotsWithNewGenerations() {
        var table = OperationTable(initialCount: 1)
        let first = table.acquire()
        table.slot(first.index).pointee.state = .completed
        table.release(first)
        let second = table.acquire()
        let stale = table.slot(for: first)
        let live = table.slot(for: second)
        let active = table.activeCount
        #expect(second.index == first.index)
        #expect(second.generation != first.generation)
        #expect(stale == nil)
        #expect(live != nil)
        #expect(active == 1)
    }

    @Test func tableGrowsByChunksAndKeepsAddressesStable() {
        var table = OperationTable(initialCount: 1)
        let first = table.acquire()
        let address = table.slot(first.index)
        var ids = [first]
        for _ in 0..<(OperationTable.chunkSize * 2) { ids.append(table.acquire()) }
        let slotCount = table.slotCount
        let sameAddress = table.slot(first.index) == address
        #expect(slotCount >= OperationTable.chunkSize * 3)
        #expect(sameAddress)
        #expect(Set(ids.map(\.index)).count == ids.count)
        for id in ids {
            table.slot(id.index).pointee.state = .completed
            table.release(id)
        }
        let active = table.activeCount
        #expect(active == 0)
    }

    @Test func fifoKeepsOrderAcrossGrowth() {
        var fifo = FIFO<Int>(initialCapacity: 2)
        for i in 0..<3 { fifo.append(i) }
        let first = fifo.popFirst()
        #expect(first == 0)
        for i in 3..<10 { fifo.append(i) }
        var out: [Int] = []
        while let x = fifo.popFirst() { out.append(x) }
        let empty = fifo.isEmpty
        #expect(out == Array(1..<10))
        #expect(empty)
    }

    @Test func errorsDescribeThemselves() {
        let error = IOError.system(ENOENT, .open)
        #expect(error.code == .systemCall)
        #expect(error.errno == .noSuchFileOrDirectory)
        #expect("\(error)".contains("open"))
        let unavailable = IOError(.ringUnavailable, errno: .notPermitted, operation: .setup)
        #expect("\(unavailable)".contains("seccomp"))
    }
}
