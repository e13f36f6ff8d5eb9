import CLiburing
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

    /// A slot taken from the free state and admitted with `needed` completions' capacity.
    private func admittedSlot(_ needed: UInt8 = 1, _ capacity: inout RingCapacity) -> OperationSlot {
        var slot = OperationSlot()
        slot.acquired()
        let admitted = slot.admit(needed, capacity: &capacity, othersWaiting: false)
        #expect(admitted)
        return slot
    }

    @Test func completionReturnsResultAndGivesCapacityBack() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(1, &capacity)
        #expect(capacity.inUse == 1 && slot.heldCapacity == 1)
        slot.submitted(completions: 1)
        let step1 = slot.complete(.operation, result: 42, capacity: &capacity)
        #expect(step1)
        #expect(slot.state == .completed)
        #expect(slot.outcome == .success(42))
        #expect(capacity.inUse == 0 && slot.heldCapacity == 0)
    }

    @Test func errorIsSurfacedWithErrno() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(1, &capacity)
        slot.submitted(completions: 1)
        _ = slot.complete(.operation, result: -EBADF, capacity: &capacity)
        #expect(slot.outcome == .failure(EBADF))
    }

    @Test func cancelInFlightSubmitsAsyncCancelOnce() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(1, &capacity)
        slot.submitted(completions: 1)
        let step1 = slot.cancel()
        #expect(step1 == .submitAsyncCancel)
        let step2 = slot.cancel()
        #expect(step2 == .none)
        #expect(slot.state == .inFlight)
        _ = slot.complete(.operation, result: -ECANCELED, capacity: &capacity)
        #expect(slot.outcome == .cancelled)
    }

    @Test func resultThatWinsTheRaceWithCancelIsKept() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(1, &capacity)
        slot.submitted(completions: 1)
        _ = slot.cancel()
        _ = slot.complete(.operation, result: 7, capacity: &capacity)
        #expect(slot.outcome == .success(7))
    }

    @Test func noRoomMeansWaitingThenAdmissionInTurn() {
        var capacity = RingCapacity(limit: 2)
        var first = admittedSlot(2, &capacity)
        var second = OperationSlot()
        second.acquired()
        let admitted = second.admit(1, capacity: &capacity, othersWaiting: false)
        #expect(!admitted)
        #expect(capacity.inUse == 2 && second.heldCapacity == 0)
        second.startWaiting()
        #expect(second.state == .waiting)
        let tooEarly = second.admitWaiting(capacity: &capacity)
        #expect(!tooEarly)
        first.submitted(completions: 2)
        _ = first.complete(.operation, result: 1, capacity: &capacity)
        #expect(capacity.inUse == 1)
        let inTurn = second.admitWaiting(capacity: &capacity)
        #expect(inTurn)
        #expect(second.state == .reserved && second.heldCapacity == 1 && capacity.inUse == 2)
    }

    @Test func aWaiterAheadKeepsNewcomersOut() {
        var capacity = RingCapacity(limit: 4)
        var slot = OperationSlot()
        slot.acquired()
        let admitted = slot.admit(1, capacity: &capacity, othersWaiting: true)
        #expect(!admitted)
        #expect(capacity.inUse == 0)
    }

    @Test func anOperationThatWaitsGivesItsCapacityBack() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(2, &capacity)
        slot.submitted(completions: 2)
        let gaveBack = slot.stillWaiting(capacity: &capacity)
        #expect(gaveBack)
        #expect(capacity.inUse == 0 && slot.heldCapacity == 0)
        let again = slot.stillWaiting(capacity: &capacity)
        #expect(!again)
        // Its completions arrive later and take nothing back twice.
        _ = slot.complete(.operation, result: 3, capacity: &capacity)
        _ = slot.complete(.linkedTimeout, result: -ECANCELED, capacity: &capacity)
        #expect(capacity.inUse == 0 && slot.outcome == .success(3))
    }

    @Test func zeroCopyNotificationIsOneMoreCompletion() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(1, &capacity)
        slot.submitted(completions: 1)
        let first = slot.complete(.operation, result: 100, flags: IORING_CQE_F_MORE, capacity: &capacity)
        #expect(!first && slot.state == .inFlight && capacity.inUse == 0)
        let notification = slot.complete(.operation, result: 0, flags: IORING_CQE_F_NOTIF, capacity: &capacity)
        #expect(notification && slot.outcome == .success(100))
    }

    @Test func cancelWhileWaitingForCapacityResumesWithoutSubmitting() {
        var capacity = RingCapacity(limit: 0)
        var slot = OperationSlot()
        slot.acquired()
        _ = slot.admit(1, capacity: &capacity, othersWaiting: false)
        slot.startWaiting()
        let step1 = slot.cancel()
        #expect(step1 == .resumeWaiter)
        #expect(slot.state == .completed)
        #expect(slot.outcome == .cancelled)
        #expect(capacity.inUse == 0)
    }

    @Test func cancelBeforeSubmissionIsAFlagThenACancelledOutcome() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(2, &capacity)
        let action = slot.cancel()
        #expect(action == .none)
        #expect(slot.cancelRequested && slot.state == .reserved)
        slot.cancelledBeforeSubmission(capacity: &capacity)
        #expect(slot.state == .completed)
        #expect(slot.outcome == .cancelled)
        #expect(capacity.inUse == 0)
    }

    @Test func deferredByACloseIsNotSubmittedAndHoldsNothing() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(1, &capacity)
        slot.deferredByClose(capacity: &capacity)
        #expect(slot.state == .completed && slot.outcome == .closing && capacity.inUse == 0)
    }

    @Test func closedUnderneathTurnsCancellationIntoClosed() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(1, &capacity)
        slot.submitted(completions: 1)
        slot.closedUnderneath()
        _ = slot.complete(.operation, result: -ECANCELED, capacity: &capacity)
        #expect(slot.outcome == .closed)
    }

    @Test func deadlineNeedsBothCompletions() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(2, &capacity)
        slot.submitted(completions: 2)
        let step1 = slot.complete(.linkedTimeout, result: -ETIME, capacity: &capacity)
        #expect(!step1)
        #expect(slot.state == .inFlight && capacity.inUse == 1)
        let step2 = slot.complete(.operation, result: -ECANCELED, capacity: &capacity)
        #expect(step2)
        #expect(slot.outcome == .timedOut)
    }

    @Test func deadlineThatLosesTheRaceKeepsTheResult() {
        var capacity = RingCapacity(limit: 4)
        var slot = admittedSlot(2, &capacity)
        slot.submitted(completions: 2)
        let step1 = slot.complete(.operation, result: 5, capacity: &capacity)
        #expect(!step1)
        let step2 = slot.complete(.linkedTimeout, result: -ECANCELED, capacity: &capacity)
        #expect(step2)
        #expect(slot.outcome == .success(5))
    }

    @Test func multishotRequestsEndUntracked() {
        var slot = OperationSlot()
        slot.acquired()
        slot.submitted(completions: 1)
        slot.completeUntracked(result: -ECANCELED)
        #expect(slot.state == .completed)
    }

    @Test func tableReusesSlotsWithNewGenerations() {
        var table = OperationTable(initialCount: 1)
        var capacity = RingCapacity(limit: .max)
        let first = table.acquire()
        table.slot(first.index).pointee.deferredByClose(capacity: &capacity)
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
        // Each test its own: the tests run in parallel (a shared static was a data race).
        var capacity = RingCapacity(limit: .max)
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
            table.slot(id.index).pointee.deferredByClose(capacity: &capacity)
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
