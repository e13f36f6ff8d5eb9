import CLiburing
import Glibc
import Testing

@testable import Uring

/// The multishot stream lifecycle as a pure state machine: no kernel, no ring.
@Suite("Stream state machine")
struct StreamStateMachineTests {
    private let id = OperationID(index: 1, generation: 1)
    private let more = IORING_CQE_F_MORE

    /// Buffer flags for buffer `bufferID` (what a provided-buffer receive completion carries).
    private func buffer(_ bufferID: UInt16) -> UInt32 {
        IORING_CQE_F_BUFFER | UInt32(bufferID) << IORING_CQE_BUFFER_SHIFT
    }

    @Test func acceptQueuesConnectionsAndStaysArmed() {
        var machine = StreamStateMachine(kind: .accept, limit: 4)
        let value1 = machine.wantsToArm(turn: false)
        #expect(value1)
        let value2 = machine.requestMode(contended: false)
        #expect(value2 == .multishot)
        machine.armed(id, turn: false)
        let value3 = machine.wantsToArm(turn: false)
        #expect(!value3)
        let actions = machine.completion(result: 10, flags: more, final: false, stopping: false)
        #expect(actions == StreamStateMachine.CompletionActions())
        #expect(machine.state == .armed(id, turn: false))
        let value4 = machine.take(taskCancelled: false)
        #expect(value4 == .item(.init(result: 10, flags: more)))
        let value5 = machine.take(taskCancelled: false)
        #expect(value5 == .empty)
    }

    @Test func aFullQueuePausesTheRequestAndResumesWhenDrained() {
        var machine = StreamStateMachine(kind: .accept, limit: 2)
        machine.armed(id, turn: false)
        _ = machine.completion(result: 10, flags: more, final: false, stopping: false)
        let full = machine.completion(result: 11, flags: more, final: false, stopping: false)
        #expect(full.pause == id)
        #expect(machine.state == .pausing(id))
        // The cancel's final completion: no end, no item.
        let cancelled = machine.completion(result: -ECANCELED, flags: 0, final: true, stopping: false)
        #expect(cancelled.rearm && machine.state == .idle)
        let value6 = machine.wantsToArm(turn: false)
        #expect(!value6)  // still full
        _ = machine.take(taskCancelled: false)
        let value7 = machine.wantsToArm(turn: false)
        #expect(value7)
    }

    @Test func anAcceptErrorIsReportedThenAcceptingGoesOn() {
        var machine = StreamStateMachine(kind: .accept, limit: 4)
        machine.armed(id, turn: false)
        _ = machine.completion(result: -EMFILE, flags: 0, final: true, stopping: false)
        #expect(machine.state == .suspendedByError)
        let value8 = machine.wantsToArm(turn: false)
        #expect(!value8)  // not until the consumer has seen it
        let value9 = machine.take(taskCancelled: false)
        #expect(value9 == .item(.init(result: -EMFILE, flags: 0)))
        let value10 = machine.wantsToArm(turn: false)
        #expect(machine.state == .idle && value10)
    }

    @Test func abortedConnectionsAreSkipped() {
        var machine = StreamStateMachine(kind: .accept, limit: 4)
        machine.armed(id, turn: false)
        _ = machine.completion(result: -ECONNABORTED, flags: more, final: false, stopping: false)
        let value11 = machine.take(taskCancelled: false)
        #expect(value11 == .empty)
    }

    @Test func receiveIsMeteredUntilTheConsumerCatchesUp() {
        var machine = StreamStateMachine(kind: .receive, limit: 4)
        let value12 = machine.requestMode(contended: false)
        #expect(value12 == .metered)
        machine.armed(id, turn: false)
        let actions = machine.completion(result: 100, flags: buffer(3), final: true, stopping: false)
        #expect(actions.rearm)
        let value13 = machine.take(taskCancelled: false)
        #expect(value13 == .item(.init(result: 100, flags: buffer(3))))
        // The consumer comes back for more and finds nothing: from now on, multishot.
        let value14 = machine.returnLentBuffer()
        #expect(value14 == 3)
        #expect(machine.lease == 1)
        let value15 = machine.take(taskCancelled: false)
        #expect(value15 == .empty)
        let value16 = machine.requestMode(contended: false)
        #expect(value16 == .multishot)
        // Other streams waiting for buffers: one buffer at a time again.
        let value17 = machine.requestMode(contended: true)
        #expect(value17 == .metered)
    }

    @Test func endOfStreamRecyclesTheEmptyBufferAndEnds() {
        var machine = StreamStateMachine(kind: .receive, limit: 4)
        machine.armed(id, turn: false)
        let actions = machine.completion(result: 0, flags: buffer(1), final: true, stopping: false)
        #expect(actions.release)
        let value18 = machine.take(taskCancelled: false)
        #expect(value18 == .terminal(.end))
        let value19 = machine.take(taskCancelled: false)
        #expect(value19 == .terminal(.end))
    }

    @Test func aReceiveFailureIsReportedOnceThenTheEnd() {
        var machine = StreamStateMachine(kind: .receive, limit: 4)
        machine.armed(id, turn: false)
        _ = machine.completion(result: 50, flags: buffer(2), final: false, stopping: false)
        _ = machine.completion(result: -ECONNRESET, flags: 0, final: true, stopping: false)
        let value20 = machine.take(taskCancelled: false)
        #expect(value20 == .item(.init(result: 50, flags: buffer(2))))
        let value21 = machine.take(taskCancelled: false)
        #expect(value21 == .terminal(.failure(ECONNRESET)))
        let value22 = machine.take(taskCancelled: false)
        #expect(value22 == .terminal(.end))
    }

    @Test func noBufferFreeIsAShortageThatKeepsTheTurn() {
        var machine = StreamStateMachine(kind: .receive, limit: 4)
        machine.starve()
        let value23 = machine.wantsToArm(turn: false)
        #expect(!value23)
        let value24 = machine.wantsToArm(turn: true)
        #expect(value24)
        machine.leftBufferLine()
        machine.armed(id, turn: true)
        let actions = machine.completion(result: -ENOBUFS, flags: 0, final: true, stopping: false)
        #expect(actions.bufferShortage && actions.rearm && actions.turn)
        #expect(machine.state == .idle)
    }

    @Test func cancellationAndShutdownEndTheStream() {
        var cancelled = StreamStateMachine(kind: .accept, limit: 4)
        cancelled.armed(id, turn: false)
        _ = cancelled.completion(result: -ECANCELED, flags: 0, final: true, stopping: false)
        let value25 = cancelled.take(taskCancelled: false)
        #expect(value25 == .terminal(.cancelled))

        var stopping = StreamStateMachine(kind: .receive, limit: 4)
        stopping.armed(id, turn: false)
        _ = stopping.completion(result: -ECANCELED, flags: 0, final: true, stopping: true)
        let value26 = stopping.take(taskCancelled: false)
        #expect(value26 == .terminal(.shutdown))

        var idle = StreamStateMachine(kind: .receive, limit: 4)
        idle.ringStopping()
        let value27 = idle.take(taskCancelled: false)
        #expect(value27 == .terminal(.shutdown))
    }

    @Test func aCancelledConsumerIsToldOnce() {
        var machine = StreamStateMachine(kind: .accept, limit: 4)
        machine.consumerWasCancelled()
        let value28 = machine.consumerShouldWake(taskCancelled: false)
        #expect(value28)
        let value29 = machine.take(taskCancelled: false)
        #expect(value29 == .cancelled)
        let value30 = machine.take(taskCancelled: false)
        #expect(value30 == .empty)
        let value31 = machine.take(taskCancelled: true)
        #expect(value31 == .cancelled)
    }

    @Test func abandoningCancelsTheRequestAndReleasesEverything() {
        var machine = StreamStateMachine(kind: .accept, limit: 4)
        machine.armed(id, turn: false)
        _ = machine.completion(result: 20, flags: more, final: false, stopping: false)
        let value32 = machine.abandon()
        #expect(value32 == id)
        let value33 = machine.abandon()
        #expect(value33 == nil)
        let value34 = machine.drainQueue()
        #expect(value34 == [.init(result: 20, flags: more)])
        let late = machine.completion(result: 21, flags: more, final: false, stopping: false)
        #expect(late.release && !late.resumeConsumer && !late.rearm)
        let last = machine.completion(result: -ECANCELED, flags: 0, final: true, stopping: false)
        #expect(last.release)
        #expect(machine.state == .abandoned(pending: nil))
    }

    @Test func aPausingStreamThatIsAbandonedIsNotCancelledTwice() {
        var machine = StreamStateMachine(kind: .accept, limit: 1)
        machine.armed(id, turn: false)
        _ = machine.completion(result: 20, flags: more, final: false, stopping: false)
        #expect(machine.state == .pausing(id))
        let value35 = machine.abandon()
        #expect(value35 == nil)
        #expect(machine.pendingRequest == id)
    }

    @Test func closingTheDescriptorEndsTheSequence() {
        var machine = StreamStateMachine(kind: .receive, limit: 4)
        machine.armed(id, turn: false)
        _ = machine.completion(result: 30, flags: buffer(5) | more, final: false, stopping: false)
        let value36 = machine.ownerClosed()
        #expect(value36)
        let value37 = machine.ownerClosed()
        #expect(!value37)
        let value38 = machine.drainQueue()
        #expect(value38.count == 1)
        let value39 = machine.take(taskCancelled: false)
        #expect(value39 == .terminal(.end))
        let value40 = machine.wantsToArm(turn: false)
        #expect(!value40)
        let cancelled = machine.completion(result: -ECANCELED, flags: 0, final: true, stopping: false)
        #expect(cancelled.release && cancelled.resumeConsumer)
        #expect(machine.state == .closed(pending: nil))
    }

    @Test func readinessQueuesMasksPausesWhenFullAndEndsAfterAFailure() {
        var machine = StreamStateMachine(kind: .readiness(events: UInt32(POLLIN)), limit: 2)
        let mode = machine.requestMode(contended: true)
        #expect(mode == .multishot, "a poll is multishot whatever the buffer line says")
        machine.armed(id, turn: false)
        _ = machine.completion(result: Int32(POLLIN), flags: more, final: false, stopping: false)
        let full = machine.completion(result: Int32(POLLIN), flags: more, final: false, stopping: false)
        #expect(full.pause == id && !full.release)
        // The cancel of the paused poll ends it quietly; the queue keeps both reports.
        let cancelled = machine.completion(result: -ECANCELED, flags: 0, final: true, stopping: false)
        #expect(cancelled.rearm && machine.state == .idle)
        let first = machine.take(taskCancelled: false)
        #expect(first == .item(.init(result: Int32(POLLIN), flags: more)))
        // Room again: it wants to arm.
        let wants = machine.wantsToArm(turn: false)
        #expect(wants)
        _ = machine.take(taskCancelled: false)
        // A poll the kernel ended with a report (no MORE flag) is armed again.
        machine.armed(id, turn: false)
        let ended = machine.completion(result: Int32(POLLIN | POLLHUP), flags: 0, final: true, stopping: false)
        #expect(ended.rearm && machine.state == .idle)
        _ = machine.take(taskCancelled: false)
        // A failure is reported once, then the end.
        machine.armed(id, turn: false)
        _ = machine.completion(result: -EBADF, flags: 0, final: true, stopping: false)
        let failure = machine.take(taskCancelled: false)
        #expect(failure == .terminal(.failure(EBADF)))
        let end = machine.take(taskCancelled: false)
        #expect(end == .terminal(.end))
    }
}
