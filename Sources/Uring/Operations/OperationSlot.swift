internal import CLiburing
import Glibc

/// What a completion queue entry belongs to: the top byte of its `user_data`.
enum CompletionTag: UInt8 {
    /// The operation itself.
    case operation = 1
    /// The linked timeout that carries an operation's deadline.
    case linkedTimeout = 2
    /// An `IORING_OP_ASYNC_CANCEL` we submitted; its result is not needed.
    case cancel = 3
    /// The executor's wake-up read on its eventfd.
    case wake = 4
    /// A timer that enqueues a job when it fires (the scheduling-executor path).
    case timer = 5
    /// One completion of a multishot operation (accept, receive) that feeds a `MultishotStream`.
    case stream = 6
    /// Posted into this ring by another ring's `IORING_OP_MSG_RING`: a wake-up, nothing to do.
    case message = 7
    /// The sending side's completion of a `IORING_OP_MSG_RING`; the index field names the target
    /// ring (its `ringID`), to wake it through its eventfd if the message failed.
    case messageSent = 8
    /// The cancel-by-descriptor a `close()` submits (`IORING_ASYNC_CANCEL_FD`); the index field
    /// holds the descriptor (see `DescriptorClosing.swift`).
    case closeCancel = 9
}

/// The identity of one operation: its slot in the table and the slot's generation, so a late
/// completion or cancel request for an earlier user of the same slot is recognised and ignored.
struct OperationID: Hashable, Sendable {
    var index: UInt32
    var generation: UInt32

    /// Packs tag, generation (24 bits) and index (32 bits) into a CQE `user_data`.
    @inline(__always)
    func userData(_ tag: CompletionTag) -> UInt64 {
        UInt64(tag.rawValue) << 56 | UInt64(generation & 0xFF_FFFF) << 32 | UInt64(index)
    }

    @inline(__always)
    init(index: UInt32, generation: UInt32) {
        self.index = index
        self.generation = generation & 0xFF_FFFF
    }

    /// Unpacks a `user_data`; `nil` tag for values we never submitted.
    @inline(__always)
    static func decode(_ userData: UInt64) -> (tag: CompletionTag?, id: OperationID) {
        (
            CompletionTag(rawValue: UInt8(truncatingIfNeeded: userData >> 56)),
            OperationID(index: UInt32(truncatingIfNeeded: userData), generation: UInt32(truncatingIfNeeded: userData >> 32))
        )
    }
}

/// How an operation ended, as seen by the awaiting task.
enum OperationOutcome: Equatable, Sendable {
    case success(Int32)
    case failure(Int32)  // positive errno
    case cancelled
    case timedOut
    /// The ring was shutting down; nothing was submitted.
    case shutdown
    /// The descriptor was closed (by `close()` in another task) while the operation waited.
    case closed
    /// Not submitted: a close of the descriptor's number is in progress. `perform` waits for it
    /// to end and tries again (never seen outside `perform`).
    case closing
}

/// The state of one operation, and its lifecycle as a pure state machine: each transition
/// returns the action the executor must perform. The executor owns the slot and performs the
/// actions on its thread, so no transition needs a lock.
///
/// ```
/// free ─acquire→ reserved ─(no capacity)→ waiting ─(capacity freed)→ reserved
/// reserved ─submit→ inFlight ─(every CQE arrived)→ completed ─release→ free
/// waiting ─cancel→ completed(-ECANCELED)      inFlight ─cancel→ inFlight + ASYNC_CANCEL
/// reserved ─cancel→ reserved + flag (the task sees it and does not submit)
/// ```
struct OperationSlot {
    enum State: UInt8 { case free, reserved, waiting, inFlight, completed }

    enum CancelAction: Equatable {
        case none
        /// The task was waiting for capacity: resume it; nothing was submitted.
        case resumeWaiter
        /// The operation is in the kernel: submit an async cancel for it and keep waiting.
        case submitAsyncCancel
    }

    var generation: UInt32 = 0
    var state: State = .free
    var pendingCompletions: UInt8 = 0
    /// Ring capacity (CQE budget) this operation still holds: released per CQE, or all at once
    /// when the operation turns out to wait (see `RingExecutor.wakeOperationsStillInFlight`).
    var heldCapacity: UInt8 = 0
    var cancelRequested = false
    var timedOut = false
    /// The descriptor the operation uses (the SQE's `fd`), or -1: what `close()` looks for.
    var fd: Int32 = -1
    /// A `close()` of ``fd`` ended the operation (see `DescriptorClosing.swift`).
    var descriptorClosed = false
    /// Not submitted: a close of ``fd`` was in progress (see `deferredByClose`).
    var deferredByClosing = false
    var result: Int32 = 0
    var nextFree: UInt32 = 0
    var continuation: UnsafeContinuation<Void, Never>? = nil
    var job: ReadyJob? = nil
    /// For a multishot operation: the stream its completions feed (ring thread only).
    var stream: MultishotStream? = nil
    /// Storage for a linked deadline's duration: the kernel reads it when the SQE is submitted,
    /// which is after the task has suspended, so it must live in the slot (whose address never
    /// changes).
    var timespec = __kernel_timespec(tv_sec: 0, tv_nsec: 0)
    /// The same, for the operation itself (a sleep's duration).
    var operationTimespec = __kernel_timespec(tv_sec: 0, tv_nsec: 0)

    mutating func reset() {
        state = .reserved
        pendingCompletions = 0
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

    /// The operation's SQEs were queued; `completions` CQEs will arrive for it (2 with a deadline).
    mutating func submitted(completions: UInt8) {
        precondition(state == .reserved, "submitted from state \(state)")
        state = .inFlight
        pendingCompletions = completions
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

    /// The task was cancelled before its operation reached the kernel.
    mutating func cancelledBeforeSubmission() {
        cancelRequested = true
        state = .completed
        result = -ECANCELED
    }

    /// The operation was not submitted because a close of its descriptor is in progress.
    mutating func deferredByClose() {
        precondition(state == .reserved, "deferred by a close from state \(state)")
        deferredByClosing = true
        state = .completed
    }

    /// A CQE for this slot arrived. Returns `true` when it was the last one, so the awaiting task
    /// may resume: only then has the kernel finished with the operation's buffers.
    ///
    /// A zero-copy send posts its result with `IORING_CQE_F_MORE` and later a notification
    /// (`IORING_CQE_F_NOTIF`) when the kernel has let go of the buffer: the first one announces
    /// one more completion, the second one carries no result.
    mutating func complete(_ tag: CompletionTag, result res: Int32, flags: UInt32 = 0) -> Bool {
        precondition(state == .inFlight && pendingCompletions > 0, "completion in state \(state)")
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

/// The preallocated table of operation slots, keyed by `user_data`. Slots live in fixed chunks
/// that never move, so a pointer to a slot (a timeout's timespec) stays valid while the kernel may
/// read it. The table grows by whole chunks up to ``maximumCount`` and never shrinks: in steady
/// state acquiring and releasing a slot allocates nothing.
struct OperationTable: ~Copyable {
    static let chunkShift = 10
    static let chunkSize = 1 << chunkShift
    static let maximumCount = 1 << 22

    private var chunks: UnsafeMutablePointer<UnsafeMutablePointer<OperationSlot>>
    private var chunkCount = 0
    private let chunkCapacity = maximumCount / chunkSize
    private var freeHead: UInt32 = .max
    /// Slots currently acquired.
    private(set) var activeCount = 0
    private(set) var slotCount = 0

    init(initialCount: Int) {
        chunks = .allocate(capacity: chunkCapacity)
        while slotCount < max(initialCount, 1) { addChunk() }
    }

    deinit {
        for i in 0..<chunkCount {
            // SAFETY: every chunk was initialized with `chunkSize` slots in addChunk.
            chunks[i].deinitialize(count: Self.chunkSize)
            chunks[i].deallocate()
        }
        chunks.deallocate()
    }

    private mutating func addChunk() {
        precondition(chunkCount < chunkCapacity, "more than \(Self.maximumCount) operations at once")
        let chunk = UnsafeMutablePointer<OperationSlot>.allocate(capacity: Self.chunkSize)
        let base = UInt32(slotCount)
        for i in 0..<Self.chunkSize {
            // SAFETY: fresh allocation of chunkSize slots; each initialized once, chained into the free list.
            (chunk + i).initialize(to: OperationSlot(nextFree: i == Self.chunkSize - 1 ? freeHead : base + UInt32(i) + 1))
        }
        freeHead = base
        chunks[chunkCount] = chunk
        chunkCount += 1
        slotCount += Self.chunkSize
    }

    /// The slot for `index`. The pointer stays valid for the table's lifetime.
    @inline(__always)
    func slot(_ index: UInt32) -> UnsafeMutablePointer<OperationSlot> {
        // SAFETY: index < slotCount (callers hold an id from acquire(), or checked `contains`).
        chunks[Int(index) >> Self.chunkShift] + (Int(index) & (Self.chunkSize - 1))
    }

    /// The slot for `id` if it still belongs to that operation (same generation, not free).
    @inline(__always)
    func slot(for id: OperationID) -> UnsafeMutablePointer<OperationSlot>? {
        guard Int(id.index) < slotCount else { return nil }
        let slot = slot(id.index)
        guard slot.pointee.generation == id.generation, slot.pointee.state != .free else { return nil }
        return slot
    }

    mutating func acquire() -> OperationID {
        if freeHead == .max { addChunk() }
        let index = freeHead
        let slot = slot(index)
        freeHead = slot.pointee.nextFree
        slot.pointee.reset()
        activeCount += 1
        return OperationID(index: index, generation: slot.pointee.generation)
    }

    mutating func release(_ id: OperationID) {
        let slot = slot(id.index)
        precondition(slot.pointee.generation == id.generation && slot.pointee.state != .free, "double release")
        precondition(slot.pointee.state != .inFlight && slot.pointee.state != .waiting, "released while the kernel owns it")
        slot.pointee.state = .free
        slot.pointee.continuation = nil
        slot.pointee.job = nil
        if slot.pointee.stream != nil { slot.pointee.stream = nil }
        slot.pointee.generation = (slot.pointee.generation &+ 1) & 0xFF_FFFF
        slot.pointee.nextFree = freeHead
        freeHead = id.index
        activeCount -= 1
    }

    /// Calls `body` for every slot whose operation is in the kernel.
    func forEachInFlight(_ body: (OperationID, UnsafeMutablePointer<OperationSlot>) -> Void) {
        for index in 0..<UInt32(slotCount) {
            let slot = slot(index)
            if slot.pointee.state == .inFlight {
                body(OperationID(index: index, generation: slot.pointee.generation), slot)
            }
        }
    }
}
