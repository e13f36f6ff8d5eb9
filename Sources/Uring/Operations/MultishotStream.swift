internal import CLiburing
import Glibc

/// What a stream's consumer gets from one `next()`.
enum StreamNext {
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

/// The ring-side state of one multishot operation (accept, or receive into provided buffers)
/// and the items it produced that the consumer has not taken yet.
///
/// Ring thread only, like the operation table: the consumer's `next()` runs on the ring (it hops
/// there), completions are handled by the loop, and requests from other threads (a cancelled
/// consumer, an iterator dropped elsewhere) go through the ring's inbox.
///
/// Flow control: the operation is armed only while fewer than `limit` items are queued. When
/// the queue reaches the limit, a multishot operation is cancelled (completions it posted
/// meanwhile are still kept), so the kernel stops taking data or connections: a fast peer then
/// meets TCP flow control, and a listen backlog fills up. When the consumer drains the queue
/// below the limit the operation is armed again.
///
/// A multishot receive drains a socket greedily: one kernel pass can post dozens of chunks
/// before a cancel lands. So a receive stream is *metered* (one single-shot receive per chunk,
/// each armed only while the queue has room: at most `limit` queued, exactly) until its consumer
/// has caught up (took a chunk, then called `next()` with nothing queued), and multishot from
/// then on, until its queue fills again. A fast consumer gets multishot; a slow one holds at most `limit` buffers (plus
/// one burst, when a fast consumer turns slow).
///
/// A receive that finds no free buffer (`-ENOBUFS`) waits in the pool's starved list: first come,
/// first served. After each pass over the completions the loop re-arms starved streams, oldest
/// first, one per free buffer (`BufferPool.wakeStarved`). While the line is not empty no other
/// receive arms ahead of it, and receives are armed single-shot (one buffer each), so a few
/// greedy connections cannot keep the pool to themselves; a stream whose turn was taken by
/// another receive (`-ENOBUFS` again) goes back to the front. Invariant: a consumer only waits
/// while the operation is armed or starved, and a starved stream is re-armed in the first
/// iteration with a free buffer, so something always wakes it.
final class MultishotStream: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is touched only on `ring`'s thread.
    enum Kind { case accept, receive }

    let ring: RingExecutor
    let kind: Kind
    let fd: Int32
    let limit: Int
    /// The armed multishot operation, if any.
    private var operation: OperationID?
    /// The armed operation is being cancelled because the queue is full (or was abandoned).
    private var pausing = false
    /// Accept only: an error was queued and ended the multishot; armed again once the consumer
    /// has seen it (so a lasting `EMFILE` does not spin).
    private var suspendedByError = false
    /// Set when the stream can produce nothing more; reported after the queued items.
    private var terminal: StreamNext?
    private(set) var abandoned = false
    /// Its descriptor was closed (`close()` on the listener or connection): the stream is over;
    /// its sequence ends (`nil`) once the consumer has the chunk it holds back.
    private(set) var closedByOwner = false
    /// Arming waits for a close of the descriptor's number to end (see armIfWanted).
    private var deferredByClose = false
    /// In the buffer pool's starved list.
    var starved = false
    /// Receive: the armed receive was armed from the front of the starved list.
    private var hasTurn = false
    private var consumerCancelled = false
    private var consumer: UnsafeContinuation<Void, Never>?
    private var queue = FIFO<(result: Int32, flags: UInt32)>(initialCapacity: 4)
    /// Receive: the buffer the consumer holds (handed back at its next `next()`).
    private var lent: UInt16?
    /// Bumped each time a lent buffer is handed back: a chunk from before is no longer valid.
    private(set) var lease: UInt32 = 0
    /// Receive: arm a multishot receive (true) or one receive per chunk (false, "metered").
    /// A stream starts metered and goes multishot once its consumer has caught up (found the
    /// queue empty); it goes back to metered when the queue fills. See `armIfWanted`.
    private var multishot = false
    /// Receive: the consumer has taken at least one chunk.
    private var delivered = false

    init(ring: RingExecutor, kind: Kind, fd: Int32, limit: Int) {
        self.ring = ring
        self.kind = kind
        self.fd = fd
        self.limit = max(1, limit)
    }

    private var core: UnsafeMutablePointer<RingCore> { ring.core }

    // MARK: Consumer side (ring thread, from the consuming task)

    /// The next item, waiting for one if needed. Hands back the buffer lent by the previous call.
    func next() async -> StreamNext {
        returnLentBuffer()
        while true {
            if let item = queue.popFirst() {
                if kind == .receive {
                    delivered = true
                    lent = UInt16(truncatingIfNeeded: item.flags >> IORING_CQE_BUFFER_SHIFT)
                } else if item.result < 0 {
                    suspendedByError = false
                }
                armIfWanted()
                return .item(result: item.result, flags: item.flags)
            }
            if let terminal {
                // Reported once; for a receive stream everything after it is the end.
                switch terminal {
                case .failure, .cancelled: if kind == .receive { self.terminal = .end }
                default: break
                }
                return terminal
            }
            if consumerCancelled || Task.isCancelled {
                consumerCancelled = false
                return .cancelled
            }
            if core.pointee.stopping { return .shutdown }
            // The consumer has caught up (it took chunks and found nothing more): let the kernel
            // deliver without a new request per chunk.
            if kind == .receive && delivered { multishot = true }
            deferredByClose = false
            armIfWanted()
            if deferredByClose {
                await Task.yield()  // a close of this number is under way: it takes microseconds
                continue
            }
            await withTaskCancellationHandler {
                await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                    precondition(ring.isCurrentRing, "stream consumed off its ring's thread")
                    if !queue.isEmpty || terminal != nil || consumerCancelled || deferredByClose || Task.isCancelled {
                        continuation.resume()
                    } else {
                        consumer = continuation
                    }
                }
            } onCancel: {
                ring.requestStream(self, .cancelConsumer)
            }
        }
    }

    /// Receive: the address of the bytes of a completion's buffer.
    func bufferAddress(flags: UInt32) -> UnsafeMutableRawPointer {
        // SAFETY (caller): only for the item just returned by next(), whose buffer is lent.
        core.pointee.bufferPool.unsafelyUnwrapped.address(of: UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT))
    }

    private func returnLentBuffer() {
        guard let id = lent else { return }
        lent = nil
        lease &+= 1
        core.pointee.bufferPool.unsafelyUnwrapped.recycle(id)
    }

    /// The consuming task was cancelled (ring thread): wake it; it sees the flag.
    func consumerWasCancelled() {
        consumerCancelled = true
        consumer.take()?.resume()
    }

    /// The consumer is gone (its iterator was dropped): stop the operation and release what the
    /// queue holds. Completions still arriving are released as they come.
    func abandon() {
        guard !abandoned else { return }
        abandoned = true
        ring.unregisterStream(self)
        returnLentBuffer()
        while let item = queue.popFirst() { dispose(item.result, item.flags) }
        if let operation, !pausing {
            pausing = true
            submitCancel(operation)
        }
        consumer.take()?.resume()
    }

    /// Its descriptor is being closed (ring thread): release what the queue holds (accepted
    /// descriptors are closed, buffers recycled), end the sequence, and wake the consumer. An
    /// armed operation is cancelled by the close's cancel-by-descriptor; its last completions are
    /// released as they come.
    func ownerClosed() {
        guard !closedByOwner else { return }
        closedByOwner = true
        while let item = queue.popFirst() { dispose(item.result, item.flags) }
        terminal = .end
        consumer.take()?.resume()
    }

    /// Abandoned after the ring's loop ended (the ring and its buffer pool are gone, and the kernel
    /// has let go of everything): close the descriptors nobody took.
    func abandonAfterRingExit() {
        guard !abandoned else { return }
        abandoned = true
        while let item = queue.popFirst() {
            if kind == .accept && item.result >= 0 { Glibc.close(item.result) }
        }
    }

    /// The ring is shutting down and this stream is not armed: wake its consumer.
    func ringStopping() {
        if operation == nil && terminal == nil { terminal = .shutdown }
        consumer.take()?.resume()
    }

    // MARK: Kernel side (ring thread, from the loop)

    /// Arms the operation if the stream wants items and has room. Returns true if it armed it
    /// now (false if it was armed already, or does not want to be).
    ///
    /// - Parameter turn: The stream is at the front of the starved line (woken from it, or its
    ///   turn was taken): it may arm although others wait, and if it cannot, it queues at the
    ///   front again rather than at the back.
    @discardableResult
    func armIfWanted(turn: Bool = false) -> Bool {
        if operation != nil { return false }
        guard !abandoned, !closedByOwner, terminal == nil, !suspendedByError, queue.count < limit else { return false }
        if core.pointee.stopping {
            terminal = .shutdown
            return false
        }
        if kind == .receive {
            let pool: BufferPool
            do throws(IOError) {
                pool = try ring.receiveBufferPool()
            } catch {
                terminal = .failure(error.errno?.rawValue ?? ENOMEM)
                consumer.take()?.resume()
                return false
            }
            // No buffer free, or others are waiting for one: get in line.
            if pool.available == 0 || (!turn && !pool.starved.isEmpty) {
                if !starved {
                    starved = true
                    if turn { pool.starved.prepend(self) } else { pool.starved.append(self) }
                }
                return false
            }
            // While streams wait for buffers, each receive takes one buffer at a time.
            if !pool.starved.isEmpty { multishot = false }
            hasTurn = turn
        }
        let id = core.pointee.table.acquire()
        let slot = core.pointee.table.slot(id.index)
        ring.noteUse(fd)  // until its final completion (the loop's dispatch); then the look at closes
        if DescriptorUse.isClosing(fd) {
            // A close of this descriptor number is in progress (perhaps of an earlier socket with
            // the same number): arm once it is over (the consumer's next() tries again).
            ring.noteEnd(fd)
            core.pointee.table.release(id)
            deferredByClose = true
            consumer.take()?.resume()
            return false
        }
        slot.pointee.stream = self
        slot.pointee.fd = fd
        let sqe = core.pointee.ring.nextSubmission()
        switch kind {
        case .accept: Prep.multishotAccept(sqe, fd: fd)
        case .receive where multishot: Prep.multishotReceive(sqe, fd: fd, group: BufferPool.group)
        case .receive: Prep.receive(sqe, fd: fd, group: BufferPool.group)
        }
        Prep.setUserData(sqe, id.userData(.stream))
        #if DEBUG
        if let faults = core.pointee.faults { faults.apply(to: sqe) }
        #endif
        slot.pointee.submitted(completions: 1)
        operation = id
        pausing = false
        core.pointee.statistics.submitted &+= 1
        core.pointee.statistics.multishotArmed &+= 1
        return true
    }

    /// One completion of the armed operation. `final` (no `IORING_CQE_F_MORE`): the operation is
    /// over and its slot already released.
    func handle(result: Int32, flags: UInt32, final: Bool) {
        if kind == .receive && flags & IORING_CQE_F_BUFFER != 0 {
            core.pointee.bufferPool.unsafelyUnwrapped.took()
        }
        let wasPausing = pausing
        // A receive armed from the front of the line that found no buffer: another receive took
        // it, so this one keeps its place at the front.
        let lostTurn = kind == .receive && result == -ENOBUFS && hasTurn
        if final {
            operation = nil
            pausing = false
        }
        if abandoned || closedByOwner {
            dispose(result, flags)
            if closedByOwner { consumer.take()?.resume() }
            return
        }
        switch kind {
        case .accept:
            switch result {
            case 0...:
                queue.append((result, flags))
            case -ECANCELED where wasPausing:
                break
            case -ECANCELED:
                terminal = core.pointee.stopping ? .shutdown : .cancelled
            case -ECONNABORTED, -EINTR, -EAGAIN:
                break  // that connection is gone; keep accepting
            default:
                // EMFILE, ENFILE, ENOMEM, ENOBUFS, EBADF…: the consumer sees the error; the
                // stream is armed again after that.
                queue.append((result, flags))
                suspendedByError = true
            }
        case .receive:
            switch result {
            case 1...:
                queue.append((result, flags))
            case 0:
                if flags & IORING_CQE_F_BUFFER != 0 { recycle(flags) }
                if final { terminal = .end }
            case -ENOBUFS:
                // No buffer was free when the data came: armed again below if one is free and
                // nobody waits for one, else in its turn (the starved list).
                core.pointee.statistics.receiveBufferShortages &+= 1
            case -EINTR, -EAGAIN:
                break  // transient: armed again below
            case -ECANCELED where wasPausing:
                break
            case -ECANCELED:
                terminal = core.pointee.stopping ? .shutdown : .cancelled
            default:
                terminal = .failure(-result)
            }
        }
        if final {
            armIfWanted(turn: lostTurn)
        } else if queue.count >= limit, let operation, !pausing {
            // Flow control: stop taking items until the consumer catches up, and from then on
            // ask for one chunk at a time (see below).
            pausing = true
            core.pointee.statistics.streamPauses &+= 1
            submitCancel(operation)
        }
        if queue.count >= limit { multishot = false }
        consumer.take()?.resume()
    }

    private func submitCancel(_ id: OperationID) {
        let sqe = core.pointee.ring.nextSubmission()
        Prep.cancel(sqe, target: id.userData(.stream))
        Prep.setUserData(sqe, id.userData(.cancel))
        core.pointee.statistics.cancelsSubmitted &+= 1
    }

    private func recycle(_ flags: UInt32) {
        core.pointee.bufferPool.unsafelyUnwrapped.recycle(UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT))
    }

    /// Releases an item nobody will consume: closes an accepted descriptor, recycles a buffer.
    private func dispose(_ result: Int32, _ flags: UInt32) {
        switch kind {
        case .accept:
            if result >= 0 { Glibc.close(result) }
        case .receive:
            if flags & IORING_CQE_F_BUFFER != 0 { recycle(flags) }
        }
    }
}

/// The consumer's handle on a stream: owned by one iterator (and its copies), used by one task
/// at a time. The stream is created on the ring of the first `next()` and stays there; later
/// calls from elsewhere hop to that ring. Dropping the last copy abandons the stream, which
/// closes accepted descriptors nobody took and gives buffers back.
final class StreamConsumer: @unchecked Sendable {
    // @unchecked Sendable: an async iterator is used by one task at a time; `stream` is written
    // once, on the ring, by the first next().
    let kind: MultishotStream.Kind
    let fd: Int32
    let limit: Int
    private(set) var stream: MultishotStream?

    init(kind: MultishotStream.Kind, fd: Int32, limit: Int) {
        self.kind = kind
        self.fd = fd
        self.limit = limit
    }

    deinit {
        if let stream { stream.ring.requestStream(stream, .abandon) }
    }

    /// The next item, from the stream's ring.
    @inline(__always)
    func next() async throws(IOError) -> StreamNext {
        let callerIsolation: (any Actor)? = #isolation
        if callerIsolation == nil, let ring = RingExecutor.current, stream == nil || stream!.ring === ring {
            return await nextOnRing(ring)
        }
        return try await nextFromElsewhere()
    }

    @concurrent @inline(never)
    private func nextFromElsewhere() async throws(IOError) -> StreamNext {
        let ring: RingExecutor
        if let stream {
            ring = stream.ring
        } else if let current = RingExecutor.current {
            ring = current
        } else {
            ring = try RingExecutor.shared()
        }
        return await withTaskExecutorPreference(ring) {
            precondition(ring.isCurrentRing, "task-executor preference did not move the task to the ring")
            return await self.nextOnRing(ring)
        }
    }

    private func nextOnRing(_ ring: RingExecutor) async -> StreamNext {
        if stream == nil {
            // A receive stream queues at most 1/8 of the ring's buffers (16 at most), so a
            // reader that falls behind cannot take the pool from the other connections.
            let limit = kind == .receive ? min(self.limit, max(1, ring.receiveBufferCount / 8)) : self.limit
            let made = MultishotStream(ring: ring, kind: kind, fd: fd, limit: limit)
            // While a close of this descriptor number is under way (an earlier socket's), wait.
            while !ring.registerStream(made) { await Task.yield() }
            stream = made
        }
        return await stream.unsafelyUnwrapped.next()
    }
}

extension RingExecutor {
    enum StreamRequest { case cancelConsumer, abandon }

    /// Passes a request about `stream` to its ring. Any thread.
    func requestStream(_ stream: MultishotStream, _ request: StreamRequest) {
        if isCurrentRing {
            handleStreamRequest(stream, request)
            return
        }
        let delivered = inbox.withLock { inbox -> Bool in
            guard !inbox.loopExited else { return false }
            inbox.streamRequests.append((stream, request))
            return true
        }
        if delivered {
            inboxPending.store(true, ordering: .sequentiallyConsistent)
            wakeIfSleeping()
        } else if request == .abandon {
            // The ring's thread is gone and nothing else touches the stream: release here.
            stream.abandonAfterRingExit()
        }
    }

    func handleStreamRequest(_ stream: MultishotStream, _ request: StreamRequest) {
        switch request {
        case .cancelConsumer: stream.consumerWasCancelled()
        case .abandon: stream.abandon()
        }
    }

    /// The ring's buffer pool for multishot receives, registered on first use. Ring thread.
    func receiveBufferPool() throws(IOError) -> BufferPool {
        if let pool = core.pointee.bufferPool { return pool }
        let pool = try core.pointee.ring.registerBufferPool(count: receiveBufferCount, bufferSize: receiveBufferSize)
        core.pointee.bufferPool = pool
        return pool
    }
}
