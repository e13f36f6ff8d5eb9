internal import CLiburing
import Glibc

/// How many completions the ring may owe to user operations at once: the bound that keeps a
/// burst of completions from overflowing the completion queue. Only ``OperationSlot``'s
/// transitions take and give back capacity (its mutators are private to this file).
struct RingCapacity {
    /// The most completions owed at once (the ring's submission entries).
    let limit: Int
    /// Completions owed now.
    private(set) var inUse = 0

    init(limit: Int) { self.limit = limit }

    /// Whether `count` more fit.
    @inline(__always)
    func hasRoom(for count: Int) -> Bool { inUse + count <= limit }

    @inline(__always)
    fileprivate mutating func take(_ count: Int) { inUse += count }

    @inline(__always)
    fileprivate mutating func giveBack(_ count: Int) {
        precondition(count <= inUse, "capacity given back twice")
        inUse -= count
    }
}

/// The state of one operation, and its lifecycle as a pure state machine: each transition
/// returns the action the executor must perform, and moves the ring capacity the operation
/// holds. The driver owns the slot and performs the actions on its thread, so no transition
/// needs a lock. Nothing outside this type assigns ``state`` or changes ``RingCapacity``.
///
/// ```
/// free ─acquire→ reserved ─admit(room)→ reserved+capacity ─submit→ inFlight
/// reserved ─admit(no room)→ waiting ─admitWaiting(room)→ reserved+capacity
/// inFlight ─(every CQE arrived)→ completed ─release→ free
/// inFlight ─stillWaiting→ inFlight (capacity given back: it waits on a peer, not a burst)
/// waiting ─cancel→ completed(-ECANCELED)      inFlight ─cancel→ inFlight + ASYNC_CANCEL
/// reserved ─cancel→ reserved + flag (the task sees it and does not submit)
/// reserved ─cancelledBeforeSubmission / deferredByClose→ completed (capacity given back)
/// ```
@safe struct OperationSlot {
    // SAFETY (@safe): the continuation is stored and taken on the ring thread only, and resumed exactly once (see the
    // transitions).
    enum State: UInt8 { case free, reserved, waiting, inFlight, completed }

    enum CancelAction: Equatable {
        case none
        /// The task was waiting for capacity: resume it; nothing was submitted.
        case resumeWaiter
        /// The operation is in the kernel: submit an async cancel for it and keep waiting.
        case submitAsyncCancel
    }

    var generation: UInt32 = 0
    private(set) var state: State = .free
    private(set) var pendingCompletions: UInt8 = 0
    /// Completions this operation needs in the ring (1, or 2 with a deadline).
    private(set) var neededCapacity: UInt8 = 0
    /// Ring capacity this operation holds: taken at admission, given back per CQE, or all at
    /// once when the operation turns out to wait (``stillWaiting(capacity:)``).
    private(set) var heldCapacity: UInt8 = 0
    private(set) var cancelRequested = false
    private(set) var timedOut = false
    /// The descriptor the operation uses (the SQE's `fd`), or -1: what `close()` looks for.
    var fd: Int32 = -1
    /// A `close()` of ``fd`` ended the operation (see `Operations/Close.swift`).
    private(set) var descriptorClosed = false
    /// Not submitted: a close of ``fd`` was in progress (see `deferredByClose`).
    private(set) var deferredByClosing = false
    private(set) var result: Int32 = 0
    var nextFree: UInt32 = 0
    var continuation: UnsafeContinuation<Void, Never>? = nil
    var job: ReadyJob? = nil
    /// For a multishot operation: the stream its completions feed (ring thread only).
    var stream: MultishotStream? = nil
    /// Storage for a linked deadline's duration: the kernel reads it when the SQE is submitted,
    /// which is after the task has suspended, so it must live in the slot (whose address never
    /// changes).
    var timespec = __kernel_timespec(tv_sec: 0, tv_nsec: 0)
    /// The same, for the operation itself (a sleep's duration, a timer's delay).
    var operationTimespec = __kernel_timespec(tv_sec: 0, tv_nsec: 0)

    /// A free slot, linked to the next free one.
    init(nextFree: UInt32 = 0) {
        self.nextFree = nextFree
    }

    // MARK: - Table transitions (OperationTable)

    /// free → reserved: the slot was taken for a new operation.
    mutating func acquired() {
        precondition(state == .free, "acquired in state \(state)")
        state = .reserved
        pendingCompletions = 0
        neededCapacity = 0
        heldCapacity = 0
        cancelRequested = false
        timedOut = false
        fd = -1
        descriptorClosed = false
        deferredByClosing = false
        result = 0
        // continuation, job and stream are already nil: a slot is cleared when it is released
        // (clearing `stream`, a class reference, again would cost a runtime release call).
    }

    /// → free: the operation is over and nothing in the kernel refers to the slot.
    mutating func released() {
        precondition(state != .free, "double release")
        precondition(state != .inFlight && state != .waiting, "released while the kernel owns it")
        precondition(heldCapacity == 0, "released holding ring capacity")
        state = .free
        unsafe continuation = nil
        job = nil
        if stream != nil { stream = nil }
        generation = (generation &+ 1) & 0xFF_FFFF
    }

    // MARK: - Admission

    /// reserved: takes `needed` capacity if there is room and nobody waits ahead (`othersWaiting`).
    /// Returns false when the operation must wait (``startWaiting(_:)``).
    @inline(__always)
    mutating func admit(_ needed: UInt8, capacity: inout RingCapacity, othersWaiting: Bool) -> Bool {
        precondition(state == .reserved, "admitted in state \(state)")
        neededCapacity = needed
        guard !othersWaiting && capacity.hasRoom(for: Int(needed)) else { return false }
        capacity.take(Int(needed))
        heldCapacity = needed
        return true
    }

    /// reserved → waiting: queued for capacity (the driver keeps the queue).
    mutating func startWaiting() {
        precondition(state == .reserved && heldCapacity == 0, "waits for capacity in state \(state)")
        state = .waiting
    }

    /// waiting → reserved, taking its capacity, if there is room. False: it keeps waiting.
    mutating func admitWaiting(capacity: inout RingCapacity) -> Bool {
        precondition(state == .waiting, "admitted from the queue in state \(state)")
        guard capacity.hasRoom(for: Int(neededCapacity)) else { return false }
        capacity.take(Int(neededCapacity))
        heldCapacity = neededCapacity
        state = .reserved
        return true
    }

    // MARK: - Submission

    /// reserved → inFlight: the operation's SQEs were queued; `completions` CQEs will arrive for
    /// it (2 with a deadline).
    @inline(__always)
    mutating func submitted(completions: UInt8) {
        precondition(state == .reserved, "submitted from state \(state)")
        state = .inFlight
        pendingCompletions = completions
    }

    /// reserved/waiting → completed: the task was cancelled (or the ring began to stop) before its
    /// operation reached the kernel.
    mutating func cancelledBeforeSubmission(capacity: inout RingCapacity) {
        precondition(state == .reserved || state == .waiting, "cancelled before submission in state \(state)")
        giveBackHeld(&capacity)
        cancelRequested = true
        state = .completed
        result = -ECANCELED
    }

    /// reserved → completed: not submitted because a close of its descriptor is in progress.
    mutating func deferredByClose(capacity: inout RingCapacity) {
        precondition(state == .reserved, "deferred by a close from state \(state)")
        giveBackHeld(&capacity)
        deferredByClosing = true
        state = .completed
    }

    // MARK: - In flight

    /// inFlight: the operation outlived the loop iteration that submitted it (it waits on a
    /// peer, a timer, the disk): it gives back the capacity it holds, so waiting operations do
    /// not keep others out. Returns true if it held any.
    mutating func stillWaiting(capacity: inout RingCapacity) -> Bool {
        guard state == .inFlight, heldCapacity > 0 else { return false }
        giveBackHeld(&capacity)
        return true
    }

    /// The awaiting task asked to be cancelled.
    mutating func cancel() -> CancelAction {
        switch state {
        case .waiting:
            state = .completed
            cancelRequested = true
            result = -ECANCELED
            return .resumeWaiter
        case .inFlight where !cancelRequested:
            cancelRequested = true
            return .submitAsyncCancel
        case .reserved:
            // Not submitted yet (the task is between admission and its submission): it checks
            // this flag right before submitting and does not submit.
            cancelRequested = true
            return .none
        default:
            return .none
        }
    }

    /// A close of ``fd`` cancelled or failed the operation: its outcome is ``OperationOutcome/closed``.
    mutating func closedUnderneath() {
        descriptorClosed = true
    }

    /// A CQE for this slot arrived; one unit of capacity (if still held) is given back. Returns
    /// `true` when it was the last one, so the awaiting task may resume: only then has the kernel
    /// finished with the operation's buffers.
    ///
    /// A zero-copy send posts its result with `IORING_CQE_F_MORE` and later a notification
    /// (`IORING_CQE_F_NOTIF`) when the kernel has let go of the buffer: the first one announces
    /// one more completion, the second one carries no result.
    @inline(__always)
    mutating func complete(
        _ tag: CompletionTag, result res: Int32, flags: UInt32 = 0, capacity: inout RingCapacity
    ) -> Bool {
        precondition(state == .inFlight && pendingCompletions > 0, "completion in state \(state)")
        if heldCapacity > 0 {
            heldCapacity -= 1
            capacity.giveBack(1)
        }
        switch tag {
        case .linkedTimeout:
            if res == -ETIME { timedOut = true }
        default:
            if flags & IORING_CQE_F_NOTIF == 0 {
                result = res
                if flags & IORING_CQE_F_MORE != 0 { pendingCompletions += 1 }
            }
        }
        pendingCompletions -= 1
        if pendingCompletions == 0 {
            state = .completed
            return true
        }
        return false
    }

    /// inFlight → completed: the final completion of a multishot request (a stream's, which
    /// holds no capacity) or of a timer.
    mutating func completeUntracked(result res: Int32) {
        precondition(state == .inFlight, "untracked completion in state \(state)")
        result = res
        pendingCompletions = 0
        state = .completed
    }

    private mutating func giveBackHeld(_ capacity: inout RingCapacity) {
        if heldCapacity > 0 {
            capacity.giveBack(Int(heldCapacity))
            heldCapacity = 0
        }
    }

    /// The result the awaiting task sees. A result that won the race with a cancel or a deadline
    /// is returned, never dropped.
    var outcome: OperationOutcome {
        if deferredByClosing { return .closing }
        if result >= 0 { return .success(result) }
        if result == -ECANCELED || ((cancelRequested || timedOut || descriptorClosed) && result == -EINTR) {
            if cancelRequested { return .cancelled }
            if timedOut { return .timedOut }
            if descriptorClosed { return .closed }
        }
        if descriptorClosed && result == -EBADF { return .closed }
        return .failure(-result)
    }
}
