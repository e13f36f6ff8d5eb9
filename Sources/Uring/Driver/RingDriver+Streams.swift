internal import CLiburing
import Glibc

// The driver's side of multishot streams: it performs what `StreamStateMachine` decides (arm a
// request, cancel it, recycle a buffer, close a descriptor nobody took, wake the consumer).
//
// A receive that finds no free buffer (`-ENOBUFS`) waits in the pool's starved line: first
// come, first served. After each pass over the completions the loop re-arms starved streams,
// oldest first, one per free buffer. While the line is not empty no other receive arms ahead
// of it, and receives are armed single-shot (one buffer each), so a few greedy connections
// cannot keep the pool to themselves; a stream whose turn was taken by another receive
// (`-ENOBUFS` again) goes back to the front. Invariant: a consumer only waits while its request
// is armed or its stream is starved, and a starved stream is re-armed in the first iteration
// with a free buffer, so something always wakes it.

extension RingDriver {
    /// How an attempt to arm went.
    enum Arming: Equatable {
        /// Armed now, or not wanted (armed already, queue full, over, in the buffer line).
        case done
        /// A close of the descriptor's number is in progress: try again once it is over.
        case deferredByClose
    }

    /// Arms the stream's request if it wants items and has room.
    ///
    /// - Parameter turn: The stream is at the front of the buffer line (woken from it, or its
    ///   turn was taken): it may arm although others wait, and if it cannot, it queues at the
    ///   front again rather than at the back.
    @discardableResult
    mutating func arm(_ stream: MultishotStream, turn: Bool = false) -> Arming {
        guard stream.machine.wantsToArm(turn: turn) else { return .done }
        if stopping {
            stream.machine.finish(.shutdown)
            stream.resumeConsumer()
            return .done
        }
        var contended = false
        if stream.kind == .receive {
            let pool: BufferPool
            do throws(IOError) {
                pool = try receiveBufferPool()
            } catch {
                stream.machine.finish(.failure(error.errno?.rawValue ?? ENOMEM))
                stream.resumeConsumer()
                return .done
            }
            // No buffer free, or others are waiting for one: get in line.
            if pool.available == 0 || (!turn && !pool.starved.isEmpty) {
                if stream.machine.state != .starved {
                    stream.machine.starve()
                    if turn { pool.starved.prepend(stream) } else { pool.starved.append(stream) }
                }
                return .done
            }
            contended = !pool.starved.isEmpty
        }
        let fd = stream.fd
        noteUse(fd)  // until its final completion (streamCompleted); then the look at closes
        if DescriptorUse.isClosing(fd) {
            // A close of this descriptor number is in progress (perhaps of an earlier socket with
            // the same number): arm once it is over (the consumer's next() tries again).
            noteEnd(fd)
            stream.machine.leftBufferLine()
            stream.resumeConsumer()
            return .deferredByClose
        }
        let id = table.acquire()
        let slot = unsafe table.slot(id.index)
        unsafe slot.pointee.stream = stream
        unsafe slot.pointee.fd = fd
        let sqe = unsafe ring.nextSubmission()
        let mode = stream.machine.requestMode(contended: contended)
        switch stream.kind {
        case .accept: unsafe ControlEntry.multishotAccept(sqe, fd: fd)
        case .receive:
            unsafe ControlEntry.bufferedReceive(sqe, fd: fd, group: BufferPool.group, multishot: mode == .multishot)
        case .readiness(let events):
            unsafe ControlEntry.multishotPoll(sqe, fd: fd, events: events)
        }
        unsafe ControlEntry.setUserData(sqe, id.userData(.stream))
        #if DEBUG
        if let faults {
            let target: IOError.Operation =
                switch stream.kind {
                case .accept: .accept
                case .receive: .receive
                case .readiness: .poll
                }
            unsafe faults.apply(to: sqe, operation: target)
        }
        #endif
        unsafe slot.pointee.submitted(completions: 1)
        stream.machine.armed(id, turn: turn)
        statistics.submitted &+= 1
        statistics.multishotArmed &+= 1
        return .done
    }

    /// One completion of a stream's request.
    mutating func streamCompleted(
        _ slot: UnsafeMutablePointer<OperationSlot>, _ id: OperationID, _ completion: Completion
    ) {
        // SAFETY: a .stream slot gets its stream in arm(), before its SQE exists.
        let stream = unsafe slot.pointee.stream.unsafelyUnwrapped
        let flags = completion.flags
        let final = flags & IORING_CQE_F_MORE == 0
        let fd = unsafe slot.pointee.fd
        if final {
            unsafe slot.pointee.completeUntracked(result: completion.result)
            table.release(id)
        }
        if stream.kind == .receive && flags & IORING_CQE_F_BUFFER != 0 {
            // SAFETY: a buffer id in a CQE means the pool exists (a receive armed with it).
            unsafe bufferPool.unsafelyUnwrapped.took()
        }
        let actions = stream.machine.completion(
            result: completion.result, flags: flags, final: final, stopping: stopping)
        if actions.release { release(completion.result, flags, of: stream.kind) }
        if actions.bufferShortage { statistics.receiveBufferShortages &+= 1 }
        if actions.rearm {
            arm(stream, turn: actions.turn)
        } else if let pausing = actions.pause {
            statistics.streamPauses &+= 1
            submitCancel(pausing, .stream)
        }
        if actions.resumeConsumer { stream.resumeConsumer() }
        if final && fd >= 0 { noteEnd(fd) }
    }

    /// Re-arms starved streams, oldest first, one per free buffer.
    mutating func wakeStarvedStreams(_ pool: BufferPool) {
        var turns = pool.available
        while turns > 0, let stream = pool.starved.popFirst() {
            stream.machine.leftBufferLine()
            let armedBefore = stream.machine.pendingRequest
            arm(stream, turn: true)
            if stream.machine.pendingRequest != armedBefore { turns -= 1 }
        }
    }

    /// The consumer is gone (its iterator was dropped): stop the request and release what the
    /// queue holds. Completions still arriving are released as they come.
    mutating func abandon(_ stream: MultishotStream) {
        guard !stream.machine.isAbandoned else { return }
        unregisterStream(stream)
        if let lent = stream.machine.returnLentBuffer() { recycle(lent) }
        let cancel = stream.machine.abandon()
        for item in stream.machine.drainQueue() { release(item.result, item.flags, of: stream.kind) }
        if let cancel { submitCancel(cancel, .stream) }
        stream.resumeConsumer()
    }

    /// Its descriptor is being closed: release what the queue holds, end the sequence, wake the
    /// consumer. The close's cancel-by-descriptor ends an armed request; its last completions
    /// are released as they come.
    mutating func ownerClosed(_ stream: MultishotStream) {
        guard stream.machine.ownerClosed() else { return }
        for item in stream.machine.drainQueue() { release(item.result, item.flags, of: stream.kind) }
        stream.resumeConsumer()
    }

    /// The buffer a consumer held, back to the pool.
    mutating func returnLentBuffer(of stream: MultishotStream) {
        if let id = stream.machine.returnLentBuffer() { recycle(id) }
    }

    /// Releases an item nobody will consume: closes an accepted descriptor, recycles a buffer.
    private mutating func release(_ result: Int32, _ flags: UInt32, of kind: StreamStateMachine.Kind) {
        switch kind {
        case .accept:
            if result >= 0 { Glibc.close(result) }
        case .receive:
            if flags & IORING_CQE_F_BUFFER != 0 {
                recycle(UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT))
            }
        case .readiness:
            break  // a mask holds nothing
        }
    }

    private mutating func recycle(_ id: UInt16) {
        // SAFETY: buffer ids come from CQEs of this ring's pool, which exists from then on.
        unsafe bufferPool.unsafelyUnwrapped.recycle(id)
    }

    /// The bytes of the buffer a receive completion names (valid while the consumer holds it).
    func bufferAddress(flags: UInt32) -> UnsafeMutableRawPointer {
        // SAFETY (caller): only for the item just returned by next(), whose buffer is lent.
        unsafe bufferPool.unsafelyUnwrapped.address(of: UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT))
    }

    /// The ring's buffer pool for multishot receives, registered on first use.
    mutating func receiveBufferPool() throws(IOError) -> BufferPool {
        if let pool = bufferPool { return pool }
        let pool = try ring.registerBufferPool(count: receiveBufferCount, bufferSize: receiveBufferSize)
        bufferPool = pool
        return pool
    }

    /// Registers a stream on its descriptor (for close()). False while a close of the number is
    /// in progress: the caller tries again once it is over.
    mutating func registerStream(_ stream: MultishotStream) -> Bool {
        noteUse(stream.fd)  // published before the look at `closings` (see DescriptorUse)
        if DescriptorUse.isClosing(stream.fd) {
            noteEnd(stream.fd)
            return false
        }
        streams[stream.fd, default: []].append(stream)
        return true
    }

    mutating func unregisterStream(_ stream: MultishotStream) {
        guard var list = streams[stream.fd], let i = list.firstIndex(where: { $0 === stream }) else { return }
        list.remove(at: i)
        streams[stream.fd] = list.isEmpty ? nil : list
        noteEnd(stream.fd)
    }
}
