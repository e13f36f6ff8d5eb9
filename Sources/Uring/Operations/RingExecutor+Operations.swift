internal import CLiburing
import Glibc

// The operation lifecycle on the ring thread: admit, submit, await the final completion, cancel.
// Everything here runs on the ring's own thread except `requestCancel`, which may run anywhere.

extension RingExecutor {
    /// Submits one operation built by `prepare` and suspends until its final completion.
    ///
    /// Must be called on this ring's thread. The awaiting task never resumes before the kernel has
    /// posted every CQE of the operation, so memory that `prepare` lent to the kernel may be reused
    /// as soon as this returns, whatever the outcome (cancelled and timed out included).
    ///
    /// Transient failures are not returned: an operation that fails with `EINTR` is submitted
    /// again, and one that fails with `EAGAIN` (a descriptor in non-blocking mode that was not
    /// ready) is submitted again once a poll says the descriptor is ready. A close is never
    /// retried (the descriptor is released whatever close returns).
    ///
    /// - Parameters:
    ///   - timeout: A deadline for this operation alone, as a linked timeout (a retry gets what
    ///     is left of it).
    ///   - prepare: Fills the SQE (but not its `user_data`), on the ring thread: once per attempt
    ///     (not at all when the task is already cancelled), plus once on a scratch SQE before a
    ///     retry, so it must only fill the SQE. Its second argument is a timespec in the
    ///     operation's slot, stable until the operation completes, for operations that need one.
    ///   - cancellable: False for operations that must run even in a cancelled task (closes):
    ///     neither a cancelled task nor a later cancellation stops them (a shutdown still does).
    @inline(__always)
    func perform(
        timeout: Duration?,
        cancellable: Bool = true,
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<__kernel_timespec>) -> Void
    ) async -> OperationOutcome {
        let outcome = await performOnce(timeout: timeout, cancellable: cancellable, prepare)
        if case .failure(let errno) = outcome, errno == EINTR || errno == EAGAIN {
            let retried = await retry(after: errno, timeout: timeout, cancellable: cancellable, prepare)
            if case .closing = retried { return .closed }  // closed between two attempts
            return retried
        }
        if case .closing = outcome {
            return await performAfterClose(timeout: timeout, cancellable: cancellable, prepare)
        }
        return outcome
    }

    /// The operation's descriptor number is being closed (by another task, maybe on another
    /// ring): wait until that close is over, then submit. The operation started while the close
    /// was under way, so it may not touch the old file: it then fails with `EBADF`, reported as
    /// ``IOError/Code/closed``, or, if the number was reused by a new socket or file meanwhile,
    /// it runs on that one (the case that makes waiting necessary: a descriptor accepted or
    /// opened just as its number was freed must work).
    @inline(never)
    private func performAfterClose(
        timeout: Duration?, cancellable: Bool,
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<__kernel_timespec>) -> Void
    ) async -> OperationOutcome {
        var outcome: OperationOutcome
        repeat {
            await Task.yield()  // closes take microseconds; the ring goes on meanwhile
            outcome = await performOnce(timeout: timeout, cancellable: cancellable, prepare)
        } while outcome == .closing
        if case .failure(let errno) = outcome, errno == EINTR || errno == EAGAIN {
            outcome = await retry(after: errno, timeout: timeout, cancellable: cancellable, prepare)
            if outcome == .closing { return .closed }  // closed again between two attempts
        }
        if outcome == .failure(EBADF) { return .closed }
        return outcome
    }

    /// The most consecutive transient failures of one operation before the last is returned.
    static let retryLimit = 1000

    /// The slow path of `perform`: submits the operation again after `EINTR`, or after `EAGAIN`
    /// once the descriptor is ready, until it ends otherwise (or `retryLimit` times).
    @inline(never)
    private func retry(
        after first: Int32, timeout: Duration?, cancellable: Bool,
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<__kernel_timespec>) -> Void
    ) async -> OperationOutcome {
        // What the operation is and which descriptor it uses, from a scratch copy of its SQE.
        var probe = io_uring_sqe()
        var scratchTime = __kernel_timespec()
        // SAFETY: both pointers are to locals that outlive the call; `prepare` only fills them
        // (the probe is never submitted, so nothing it points to is lent to the kernel).
        prepare(&probe, &scratchTime)
        let opcode = UInt32(probe.opcode)
        if opcode == IORING_OP_CLOSE.rawValue { return .failure(first) }
        let fd = probe.fd
        let readiness: UInt32? =
            switch io_uring_op(rawValue: opcode) {
            case IORING_OP_READ, IORING_OP_READV, IORING_OP_READ_FIXED, IORING_OP_RECV, IORING_OP_RECVMSG, IORING_OP_ACCEPT:
                UInt32(POLLIN)
            case IORING_OP_WRITE, IORING_OP_WRITEV, IORING_OP_WRITE_FIXED, IORING_OP_SEND, IORING_OP_SEND_ZC, IORING_OP_SENDMSG,
                IORING_OP_CONNECT:
                UInt32(POLLOUT)
            default:
                nil
            }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        // What is left of the deadline (nil when there is none), and whether it has passed.
        func remaining() -> (left: Duration?, expired: Bool) {
            guard let deadline else { return (nil, false) }
            let left = deadline - ContinuousClock.now
            return (left, left <= .zero)
        }
        var errno = first
        for _ in 0..<Self.retryLimit {
            if errno == EAGAIN, let readiness {
                let (left, expired) = remaining()
                if expired { return .timedOut }
                let polled = await performOnce(timeout: left, cancellable: cancellable) { sqe, _ in
                    Prep.poll(sqe, fd: fd, events: readiness)
                }
                switch polled {
                case .success, .failure(EINTR):
                    break  // ready (or interrupted: the operation itself will tell)
                default:
                    return polled  // cancelled, timed out, shut down, or the poll failed (EBADF…)
                }
            }
            let (left, expired) = remaining()
            if expired { return .timedOut }
            core.pointee.statistics.retries &+= 1
            let outcome = await performOnce(timeout: left, cancellable: cancellable, prepare)
            guard case .failure(let next) = outcome, next == EINTR || next == EAGAIN else { return outcome }
            errno = next
        }
        return .failure(errno)
    }

    /// One attempt of `perform`.
    @inline(__always)
    func performOnce(
        timeout: Duration?,
        cancellable: Bool = true,
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<__kernel_timespec>) -> Void
    ) async -> OperationOutcome {
        let core = self.core
        if core.pointee.stopping { return .shutdown }
        let id = core.pointee.table.acquire()
        let slot = core.pointee.table.slot(id.index)
        defer {
            if slot.pointee.fd >= 0 { noteEnd(slot.pointee.fd) }
            core.pointee.table.release(id)
        }
        let needed = timeout == nil ? 1 : 2

        if core.pointee.waiters.isEmpty && core.pointee.capacityInUse + needed <= core.pointee.capacityLimit {
            core.pointee.capacityInUse += needed
        } else {
            // More operations than the ring holds: wait in user space, in order.
            slot.pointee.pendingCompletions = UInt8(needed)
            await waitForCapacity(id, slot, cancellable: cancellable)
            if slot.pointee.state == .completed { return core.pointee.stopping ? .shutdown : .cancelled }
        }

        // Phase 1: submit and suspend, with no cancellation handler. The SQEs are filled inside
        // the continuation's closure, which runs on this thread right before the task suspends:
        // whatever executor hops happen before it, the continuation is stored before the kernel
        // can complete anything, so the completion always finds it.
        var reachedKernel = false
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            precondition(self.isCurrentRing, "operation submitted off its ring's thread")
            // A shutdown that began while this task waited to run also means "do not submit".
            if slot.pointee.cancelRequested || core.pointee.stopping || (cancellable && Task.isCancelled) {
                // Cancelled before anything reached the kernel: nothing to wait for.
                core.pointee.capacityInUse -= needed
                slot.pointee.cancelledBeforeSubmission()
                continuation.resume()
                self.admitWaiters()
                return
            }
            core.pointee.ring.reserveSubmissions(UInt32(needed))
            let sqe = core.pointee.ring.nextSubmission()
            // SAFETY: the slot (and so its timespecs) is ours until release, after the final CQE.
            prepare(sqe, &slot.pointee.operationTimespec)
            let fd = sqe.pointee.fd
            if fd >= 0 && UInt32(sqe.pointee.opcode) != IORING_OP_CLOSE.rawValue {
                // Counted per descriptor until the slot is released, for close(); published
                // before the look at closes in progress (see DescriptorClosing.swift). The close
                // itself is not counted: it is what the others wait for.
                self.noteUse(fd)
                if DescriptorUse.isClosing(fd) {
                    // A close of this descriptor number is in progress: nothing new may reach
                    // the kernel for it until that is over (see performAfterClose). The SQE is
                    // already taken: it becomes a no-op whose completion is ignored.
                    self.noteEnd(fd)
                    Prep.nop(sqe)
                    Prep.setUserData(sqe, id.userData(.cancel))
                    core.pointee.capacityInUse -= needed
                    slot.pointee.deferredByClose()
                    continuation.resume()
                    self.admitWaiters()
                    return
                }
                slot.pointee.fd = fd
            }
            Prep.setUserData(sqe, id.userData(.operation))
            #if DEBUG
            if let faults = core.pointee.faults { faults.apply(to: sqe) }
            #endif
            if let timeout {
                Prep.linkNext(sqe)
                slot.pointee.timespec = timeout.kernelTimespec
                let timeoutSQE = core.pointee.ring.nextSubmission()
                // SAFETY: as above; the kernel copies the timespec when the SQE is submitted.
                Prep.linkedTimeout(timeoutSQE, timespec: &slot.pointee.timespec)
                Prep.setUserData(timeoutSQE, id.userData(.linkedTimeout))
            }
            slot.pointee.continuation = continuation
            slot.pointee.submitted(completions: UInt8(needed))
            reachedKernel = true
            slot.pointee.heldCapacity = UInt8(needed)
            core.pointee.fresh.append(id)
            core.pointee.statistics.submitted &+= 1
        }
        if slot.pointee.state == .completed {
            // Not submitted because the ring is stopping: say so (a close then falls back to
            // close(2)); otherwise the common case for no-ops and page-cache I/O: the kernel
            // completed the operation during the same io_uring_enter that submitted it.
            if !reachedKernel && core.pointee.stopping { return .shutdown }
            return slot.pointee.outcome
        }

        // Phase 2: the operation outlived its first loop iteration (it waits on a pipe, a socket,
        // a timer, the disk), and the loop woke the task to say so. Now register for cancellation
        // (a task cancelled meanwhile is seen at once) and wait for the final completion. The
        // cancellation record costs two status-record locks, so only operations that wait pay it.
        core.pointee.statistics.waitedBeyondOneIteration &+= 1
        if !cancellable {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                precondition(self.isCurrentRing, "operation awaited off its ring's thread")
                if slot.pointee.state == .completed {
                    continuation.resume()
                } else {
                    slot.pointee.continuation = continuation
                }
            }
            return slot.pointee.outcome
        }
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                // The fast path is taken only from nonisolated code on this ring's thread, whose
                // generic executor is this ring, so the handler's operation closure runs here too.
                precondition(self.isCurrentRing, "operation awaited off its ring's thread")
                if slot.pointee.state == .completed {
                    continuation.resume()  // completed while the task was re-suspending
                } else {
                    slot.pointee.continuation = continuation
                }
            }
        } onCancel: {
            self.requestCancel(id)
        }
        return slot.pointee.outcome
    }

    @inline(never)
    private func waitForCapacity(_ id: OperationID, _ slot: UnsafeMutablePointer<OperationSlot>, cancellable: Bool) async {
        let core = self.core
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                precondition(self.isCurrentRing, "operation queued off its ring's thread")
                if slot.pointee.cancelRequested || core.pointee.stopping || (cancellable && Task.isCancelled) {
                    slot.pointee.cancelledBeforeSubmission()
                    continuation.resume()
                    return
                }
                // Queued and stored together, in the closure that runs right before suspension.
                slot.pointee.state = .waiting
                slot.pointee.continuation = continuation
                core.pointee.waiters.append(id)
                core.pointee.statistics.waitedForCapacity &+= 1
            }
        } onCancel: {
            if cancellable { self.requestCancel(id) }
        }
    }

    /// Lets waiting operations in, oldest first, while capacity lasts. Each admitted operation has
    /// its capacity reserved before its task resumes, so nobody can overtake it.
    func admitWaiters() {
        let core = self.core
        while let id = core.pointee.waiters.first {
            guard let slot = core.pointee.table.slot(for: id), slot.pointee.state == .waiting else {
                _ = core.pointee.waiters.popFirst()  // cancelled while waiting
                continue
            }
            // pendingCompletions holds what the waiter needs (1, or 2 with a deadline).
            let needed = Int(slot.pointee.pendingCompletions)
            guard core.pointee.capacityInUse + needed <= core.pointee.capacityLimit else { return }
            _ = core.pointee.waiters.popFirst()
            core.pointee.capacityInUse += needed
            slot.pointee.state = .reserved
            // SAFETY: `.waiting` is set together with the continuation (waitForCapacity's closure).
            slot.pointee.continuation.take().unsafelyUnwrapped.resume()
        }
    }

    /// Asks the ring to cancel operation `id`. Safe from any thread; a no-op if the operation has
    /// already completed or the slot has moved on to another operation.
    func requestCancel(_ id: OperationID) {
        if isCurrentRing {
            cancelOnRing(id)
            return
        }
        inbox.withLock { $0.cancellations.append(id) }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        wakeIfSleeping()
    }

    func cancelOnRing(_ id: OperationID) {
        let core = self.core
        guard let slot = core.pointee.table.slot(for: id) else { return }
        switch slot.pointee.cancel() {
        case .none:
            break
        case .resumeWaiter:
            // SAFETY: only a `.waiting` slot yields this action, and it holds its continuation.
            slot.pointee.continuation.take().unsafelyUnwrapped.resume()
        case .submitAsyncCancel:
            let sqe = core.pointee.ring.nextSubmission()
            let target: CompletionTag = slot.pointee.stream != nil ? .stream : slot.pointee.job != nil ? .timer : .operation
            Prep.cancel(sqe, target: id.userData(target))
            Prep.setUserData(sqe, id.userData(.cancel))
            core.pointee.statistics.cancelsSubmitted &+= 1
        }
    }

    /// On shutdown: cancel every operation in the kernel and every waiter.
    func cancelEverything() {
        let core = self.core
        var ids: [OperationID] = []
        core.pointee.table.forEachInFlight { id, _ in ids.append(id) }
        for id in ids { cancelOnRing(id) }
        while let id = core.pointee.waiters.popFirst() { cancelOnRing(id) }
        // Receive streams waiting for a buffer have nothing in the kernel to cancel.
        if let pool = core.pointee.bufferPool {
            while let stream = pool.starved.popFirst() {
                stream.starved = false
                stream.ringStopping()
            }
        }
    }

    /// Schedules `job` to be enqueued on this ring after `delay`, with a kernel timeout. Any thread.
    func schedule(_ job: ReadyJob, after delay: Duration) {
        if isCurrentRing {
            scheduleOnRing(job, after: delay)
            return
        }
        inbox.withLock { $0.timers.append((job, delay)) }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        wakeIfSleeping()
    }

    func scheduleOnRing(_ job: ReadyJob, after delay: Duration) {
        let core = self.core
        let id = core.pointee.table.acquire()
        let slot = core.pointee.table.slot(id.index)
        slot.pointee.job = job
        slot.pointee.operationTimespec = delay.kernelTimespec
        let sqe = core.pointee.ring.nextSubmission()
        // SAFETY: the slot's timespec is stable and the slot is held until the timer's CQE.
        Prep.timeout(sqe, timespec: &slot.pointee.operationTimespec)
        Prep.setUserData(sqe, id.userData(.timer))
        slot.pointee.submitted(completions: 1)
    }
}

extension RingExecutor {
    /// Test support: queues `count` no-ops whose completions nobody awaits (tagged like async
    /// cancels, so the loop drops them) and flushes them at once, so that more completions arrive
    /// than the CQ ring holds. Must run on this ring's thread.
    func submitUntrackedNopsForTesting(_ count: Int) {
        precondition(isCurrentRing)
        for _ in 0..<count {
            let sqe = core.pointee.ring.nextSubmission()
            Prep.nop(sqe)
            Prep.setUserData(sqe, OperationID(index: 0, generation: 0).userData(.cancel))
        }
        core.pointee.ring.submit(wait: false)
    }
}
