internal import CLiburing
import Glibc

/// What a stream's consumer gets from one `next()`.
enum StreamNext: Equatable {
    /// One completion: an accepted descriptor, a received byte count (the buffer id is in
    /// `flags`), or for accept an error (negative errno) that did not end the stream.
    case item(result: Int32, flags: UInt32)
    /// The stream is over (end of stream after a receive, or after an error was reported).
    case end
    /// The operation failed (positive errno); the stream is over.
    case failure(Int32)
    /// The consuming task was cancelled.
    case cancelled
    /// The ring is shutting down.
    case shutdown
}

/// The lifecycle of one multishot stream (accept, or receive into provided buffers) as a pure
/// state machine, in the manner of swift-async-algorithms: `MultishotStream` is the storage (the
/// consumer's continuation), this type decides, and the driver performs the actions it returns
/// (arm a request, cancel one, recycle a buffer, close a descriptor, wake the consumer). No
/// kernel, no ring: unit-tested on its own (`StreamStateMachineTests`).
///
/// ```
/// idle ─arm→ armed ─final CQE→ idle (re-armed if wanted) | finished(terminal) | suspendedByError
/// armed ─queue full→ pausing ─final CQE→ idle
/// idle ─no buffer free→ starved ─its turn→ idle → armed
/// suspendedByError ─consumer took the error→ idle
/// any ─consumer gone→ abandoned      any ─descriptor closed→ closed
/// ```
///
/// Flow control: a request is armed only while fewer than `limit` items are queued. When the
/// queue reaches the limit, a multishot request is cancelled (completions it posted meanwhile
/// are still kept), so the kernel stops taking data or connections. A receive stream is
/// *metered* (one single-shot receive per chunk) until its consumer has caught up (took a chunk,
/// then found nothing queued), and multishot from then on, until its queue fills again.
struct StreamStateMachine: ~Copyable {
    enum Kind: Equatable {
        case accept, receive
        /// Multishot poll for `events`: each item is a readiness mask.
        case readiness(events: UInt32)
    }

    enum State: Equatable {
        /// Nothing in the kernel; armed when the consumer wants items and the queue has room.
        case idle
        /// A request is in the kernel. `turn`: it was armed from the front of the buffer line.
        case armed(OperationID, turn: Bool)
        /// The armed request is being cancelled (the queue is full); its final CQE makes the
        /// stream idle again.
        case pausing(OperationID)
        /// Receive: waiting in the buffer pool's line for a free buffer.
        case starved
        /// Accept: an error was queued and ended the request; armed again once the consumer has
        /// seen it (so a lasting `EMFILE` does not spin).
        case suspendedByError
        /// Nothing more will come; `terminal` is reported once the queued items are taken.
        case finished(StreamNext)
        /// The consumer is gone; `pending` is the request still in the kernel, if any. Whatever
        /// arrives is released.
        case abandoned(pending: OperationID?)
        /// The descriptor was closed: the sequence ends (`.end`); completions still arriving
        /// from `pending` are released.
        case closed(pending: OperationID?)
    }

    /// One completion kept for the consumer.
    struct Item: Equatable {
        var result: Int32
        var flags: UInt32
    }

    /// How receives are asked for.
    enum Mode { case metered, multishot }

    /// What to do with a completion.
    struct CompletionActions: Equatable {
        /// Release the completion: close the accepted descriptor, recycle the buffer.
        var release = false
        /// Count a receive that found no buffer free.
        var bufferShortage = false
        /// Cancel this request: the queue is full.
        var pause: OperationID? = nil
        /// The request is over: arm again if wanted, with `turn` (it keeps its place in line).
        var rearm = false
        var turn = false
        /// Wake the consumer.
        var resumeConsumer = true
    }

    let kind: Kind
    let limit: Int
    private(set) var state: State = .idle
    private(set) var queue = FIFO<Item>(initialCapacity: 4)
    private(set) var mode: Mode = .metered
    /// Receive: the consumer has taken at least one chunk.
    private var delivered = false
    /// Receive: the buffer the consumer holds, handed back at its next `next()`.
    private var lent: UInt16?
    /// Bumped each time a lent buffer is handed back: a chunk from before is no longer valid.
    private(set) var lease: UInt32 = 0
    /// The consuming task was cancelled: its next wait ends with `.cancelled` (once).
    private var consumerCancelled = false

    init(kind: Kind, limit: Int) {
        self.kind = kind
        self.limit = max(1, limit)
    }

    /// The request in the kernel, if any.
    var pendingRequest: OperationID? {
        switch state {
        case .armed(let id, _), .pausing(let id): id
        case .abandoned(let pending), .closed(let pending): pending
        default: nil
        }
    }

    var isAbandoned: Bool {
        if case .abandoned = state { return true }
        return false
    }

    // MARK: - Consumer side

    /// What `next()` finds before it waits.
    enum Take: Equatable {
        /// An item; the stream may arm again (it has room now).
        case item(Item)
        /// The stream is over: report this.
        case terminal(StreamNext)
        /// The consumer was cancelled.
        case cancelled
        /// Nothing queued: arm if wanted, then wait.
        case empty
    }

    /// The buffer the consumer held, to recycle, if any (called at the start of each `next()`).
    mutating func returnLentBuffer() -> UInt16? {
        guard let id = lent else { return nil }
        lent = nil
        lease &+= 1
        return id
    }

    /// Takes the next item or the end. `taskCancelled`: the consuming task is cancelled.
    mutating func take(taskCancelled: Bool) -> Take {
        if let item = queue.popFirst() {
            if kind == .receive {
                delivered = true
                lent = UInt16(truncatingIfNeeded: item.flags >> IORING_CQE_BUFFER_SHIFT)
            } else if item.result < 0, state == .suspendedByError {
                state = .idle
            }
            return .item(item)
        }
        switch state {
        case .finished(let terminal):
            // Reported once; for a receive stream everything after a failure is the end.
            switch terminal {
            case .failure, .cancelled: if kind != .accept { state = .finished(.end) }
            default: break
            }
            return .terminal(terminal)
        case .closed:
            return .terminal(.end)
        default:
            break
        }
        if consumerCancelled || taskCancelled {
            consumerCancelled = false
            return .cancelled
        }
        // The consumer has caught up (it took chunks and found nothing more): let the kernel
        // deliver without a new request per chunk.
        if kind == .receive && delivered { mode = .multishot }
        return .empty
    }

    /// Whether the consumer, about to wait, should not: something arrived meanwhile.
    func consumerShouldWake(taskCancelled: Bool) -> Bool {
        if !queue.isEmpty || consumerCancelled || taskCancelled { return true }
        switch state {
        case .finished, .closed: return true
        default: return false
        }
    }

    /// The consuming task was cancelled (its cancellation handler ran): wake it.
    mutating func consumerWasCancelled() {
        consumerCancelled = true
    }

    // MARK: - Arming

    /// Whether a request should be armed now. `turn`: the stream is at the front of the buffer
    /// line (woken from it, or its turn was taken).
    func wantsToArm(turn: Bool) -> Bool {
        switch state {
        case .idle: break
        case .starved where turn: break
        default: return false
        }
        return queue.count < limit
    }

    /// The stream cannot arm and never will: the ring is stopping, or it has no buffer pool.
    mutating func finish(_ terminal: StreamNext) {
        state = .finished(terminal)
    }

    /// Receive: no buffer is free, or others wait for one: into the line.
    mutating func starve() {
        state = .starved
    }

    /// Receive: its turn in the buffer line came (or the line was dropped): it may arm.
    mutating func leftBufferLine() {
        if state == .starved { state = .idle }
    }

    /// The request the driver is about to arm: multishot or one at a time. `contended`: other
    /// streams wait for buffers (then each receive takes one buffer at a time).
    mutating func requestMode(contended: Bool) -> Mode {
        if kind != .receive { return .multishot }
        if contended { mode = .metered }
        return mode
    }

    /// The driver armed request `id`.
    mutating func armed(_ id: OperationID, turn: Bool) {
        state = .armed(id, turn: turn)
    }

    // MARK: - Completions

    /// One completion of the armed request. `final` (no `IORING_CQE_F_MORE`): the request is
    /// over. `stopping`: the ring is shutting down.
    mutating func completion(result: Int32, flags: UInt32, final: Bool, stopping: Bool) -> CompletionActions {
        var actions = CompletionActions()
        let wasPausing: Bool
        let turn: Bool
        switch state {
        case .armed(_, let t):
            wasPausing = false
            turn = t
        case .pausing:
            wasPausing = true
            turn = false
        case .abandoned:
            if final { state = .abandoned(pending: nil) }
            actions.release = true
            actions.resumeConsumer = false
            return actions
        case .closed:
            if final { state = .closed(pending: nil) }
            actions.release = true
            return actions
        default:
            preconditionFailure("stream completion in state \(state)")
        }
        if final { state = .idle }
        switch kind {
        case .accept:
            switch result {
            case 0...:
                queue.append(Item(result: result, flags: flags))
            case -ECANCELED where wasPausing:
                break
            case -ECANCELED:
                state = .finished(stopping ? .shutdown : .cancelled)
            case -ECONNABORTED, -EINTR, -EAGAIN:
                break  // that connection is gone; keep accepting
            default:
                // EMFILE, ENFILE, ENOMEM, ENOBUFS, EBADF…: the consumer sees the error; the
                // stream is armed again after that.
                queue.append(Item(result: result, flags: flags))
                if final { state = .suspendedByError }
            }
        case .receive:
            switch result {
            case 1...:
                queue.append(Item(result: result, flags: flags))
            case 0:
                actions.release = flags & IORING_CQE_F_BUFFER != 0
                if final { state = .finished(.end) }
            case -ENOBUFS:
                // No buffer was free when the data came: armed again if one is free and nobody
                // waits for one, else in its turn (a receive armed from the front of the line
                // keeps its place there: another receive took its buffer).
                actions.bufferShortage = true
                actions.turn = turn
            case -EINTR, -EAGAIN:
                break  // transient: armed again
            case -ECANCELED where wasPausing:
                break
            case -ECANCELED:
                if final { state = .finished(stopping ? .shutdown : .cancelled) }
            default:
                if final { state = .finished(.failure(-result)) }
            }
        case .readiness:
            switch result {
            case 1...:
                queue.append(Item(result: result, flags: flags))
            case 0, -EINTR, -EAGAIN:
                break  // nothing ready after all: armed again
            case -ECANCELED where wasPausing:
                break
            case -ECANCELED:
                if final { state = .finished(stopping ? .shutdown : .cancelled) }
            default:
                if final { state = .finished(.failure(-result)) }
            }
        }
        if final {
            actions.rearm = true
        } else if queue.count >= limit, case .armed(let id, _) = state {
            // Flow control: stop taking items until the consumer catches up.
            state = .pausing(id)
            actions.pause = id
        }
        if queue.count >= limit { mode = .metered }
        return actions
    }

    // MARK: - Endings

    /// The consumer is gone. Returns the request to cancel, if one is armed and not already
    /// being cancelled; the caller releases what ``drainQueue()`` returns.
    mutating func abandon() -> OperationID? {
        switch state {
        case .abandoned:
            return nil
        case .armed(let id, _):
            state = .abandoned(pending: id)
            return id
        case .pausing(let id):
            state = .abandoned(pending: id)
            return nil
        case .closed(let pending):
            state = .abandoned(pending: pending)
            return nil
        default:
            state = .abandoned(pending: nil)
            return nil
        }
    }

    /// The descriptor was closed: the sequence ends once the consumer has the chunk it holds.
    /// Returns false if it was closed (or abandoned) already. The close cancels the request
    /// itself (by descriptor); the caller releases what ``drainQueue()`` returns.
    mutating func ownerClosed() -> Bool {
        switch state {
        case .closed, .abandoned:
            return false
        default:
            state = .closed(pending: pendingRequest)
            return true
        }
    }

    /// The ring is stopping and no request of this stream is in the kernel: it ends.
    mutating func ringStopping() {
        switch state {
        case .idle, .starved, .suspendedByError: state = .finished(.shutdown)
        default: break
        }
    }

    /// Removes and returns everything queued (for release).
    mutating func drainQueue() -> [Item] {
        var items: [Item] = []
        while let item = queue.popFirst() { items.append(item) }
        return items
    }
}
