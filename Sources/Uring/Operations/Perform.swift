import Glibc

// How a task awaits one operation: admit, submit, suspend until the final completion, cancel,
// retry. This is the executor's side (suspensions, continuations, the cancellation handler),
// the same whatever the driver; every state change is the driver's (`Driver/RingDriver.swift`).
// Everything here runs on the ring's own thread except `requestCancel`, which may run anywhere.

extension RingExecutor {
    /// Submits `operation` and suspends until its final completion.
    ///
    /// Must be called on this ring's thread. The awaiting task never resumes before the kernel has
    /// posted every CQE of the operation, so memory that the operation lends to the kernel may be
    /// reused as soon as this returns, whatever the outcome (cancelled and timed out included).
    ///
    /// Transient failures are not returned: the operation's ``IOOperation/retry`` policy says
    /// what follows `EINTR` and `EAGAIN` (submitted again, at once or once a poll says the
    /// descriptor is ready; a close never).
    ///
    /// - Parameters:
    ///   - timeout: A deadline for this operation alone, as a linked timeout (a retry gets what
    ///     is left of it).
    ///   - cancellable: False for operations that must run even in a cancelled task (closes):
    ///     neither a cancelled task nor a later cancellation stops them (a shutdown still does).
    ///   - triedWithoutWaiting: The caller has made ``tryWithoutSuspending(_:cancellable:)``
    ///     already, and it returned nil: it is not made again.
    @inline(__always)
    func perform<Operation: IOOperation>(
        _ operation: Operation, timeout: Duration?, cancellable: Bool = true, triedWithoutWaiting: Bool = false
    ) async -> OperationOutcome {
        // Alone on the ring (nothing else ready to run, nothing queued to batch with): a read
        // that the page cache can answer is made right here, with no suspension and no loop turn.
        // With other work around, reads go to the ring together, one system call for all.
        if Operation.optionalOpcode, lacksOpcode(of: operation) {
            return await performOnWorker(operation, cancellable: cancellable)
        }
        if !triedWithoutWaiting, let outcome = tryWithoutSuspending(operation, cancellable: cancellable) {
            return outcome
        }
        return await performSuspending(operation, timeout: timeout, cancellable: cancellable)
    }

    /// The first step of `perform` for an operation that can be tried without waiting: made
    /// right here when the ring is idle (nothing ready to run, nothing queued to batch with), or
    /// at any time for one that gains nothing from batching
    /// (``IOOperation/triesWithoutWaitingWhenBusy``); else nil. Synchronous, so
    /// `RingExecutor.submit` can call it without retaining the ring.
    @inline(__always)
    func tryWithoutSuspending<Operation: IOOperation>(_ operation: Operation, cancellable: Bool) -> OperationOutcome? {
        guard Operation.triesWithoutWaiting,
            unsafe operation.triesWithoutWaitingWhenBusy || local.pointee.ready.isEmpty && driver.pointee.fresh.isEmpty,
            !(cancellable && Task.isCancelled)
        else { return nil }
        return unsafe driver.pointee.tryWithoutWaiting(operation)
    }

    /// `perform` after the attempt without waiting (or without one): submit, suspend, retry.
    @inline(__always)
    func performSuspending<Operation: IOOperation>(
        _ operation: Operation, timeout: Duration?, cancellable: Bool
    ) async -> OperationOutcome {
        let outcome = await performOnce(operation, timeout: timeout, cancellable: cancellable)
        if case .failure(let errno) = outcome, errno == EINTR || errno == EAGAIN {
            let retried = await retry(operation, after: errno, timeout: timeout, cancellable: cancellable)
            if case .closing = retried { return .closed }  // closed between two attempts
            return retried
        }
        if case .closing = outcome {
            return await performAfterClose(operation, timeout: timeout, cancellable: cancellable)
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
    private func performAfterClose<Operation: IOOperation>(
        _ operation: Operation, timeout: Duration?, cancellable: Bool
    ) async -> OperationOutcome {
        var outcome: OperationOutcome
        repeat {
            await Task.yield()  // closes take microseconds; the ring goes on meanwhile
            outcome = await performOnce(operation, timeout: timeout, cancellable: cancellable)
        } while outcome == .closing
        if case .failure(let errno) = outcome, errno == EINTR || errno == EAGAIN {
            outcome = await retry(operation, after: errno, timeout: timeout, cancellable: cancellable)
            if outcome == .closing { return .closed }  // closed again between two attempts
        }
        if outcome == .failure(EBADF) { return .closed }
        return outcome
    }

    /// The most consecutive transient failures of one operation before the last is returned.
    static let retryLimit = 1000

    /// The slow path of `perform`: submits the operation again after `EINTR`, or after `EAGAIN`
    /// as its retry policy says, until it ends otherwise (or `retryLimit` times).
    @inline(never)
    private func retry<Operation: IOOperation>(
        _ operation: Operation, after first: Int32, timeout: Duration?, cancellable: Bool
    ) async -> OperationOutcome {
        let readiness: UInt32?
        switch Operation.retry {
        case .never: return .failure(first)
        case .resubmit: readiness = nil
        case .whenReady(let events): readiness = events
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
                let poll = PollOperation(fd: operation.descriptor, events: readiness)
                let polled = await performOnce(poll, timeout: left, cancellable: cancellable)
                switch polled {
                case .success, .failure(EINTR):
                    break  // ready (or interrupted: the operation itself will tell)
                default:
                    return polled  // cancelled, timed out, shut down, or the poll failed (EBADF…)
                }
            }
            let (left, expired) = remaining()
            if expired { return .timedOut }
            unsafe driver.pointee.statistics.retries &+= 1
            let outcome = await performOnce(operation, timeout: left, cancellable: cancellable)
            guard case .failure(let next) = outcome, next == EINTR || next == EAGAIN else { return outcome }
            errno = next
        }
        return .failure(errno)
    }

    /// One attempt of `perform`.
    @inline(__always)
    func performOnce<Operation: IOOperation>(
        _ operation: Operation, timeout: Duration?, cancellable: Bool = true
    ) async -> OperationOutcome {
        let driver = unsafe self.driver
        if unsafe driver.pointee.stopping { return .shutdown }
        let (id, slot, admitted) = unsafe driver.pointee.admit(needed: timeout == nil ? 1 : 2)
        defer { unsafe driver.pointee.finish(id, slot) }

        if !admitted {
            // More operations than the ring holds: wait in user space, in order.
            unsafe await waitForCapacity(id, slot, cancellable: cancellable)
            if unsafe slot.pointee.state == .completed {
                return unsafe driver.pointee.stopping ? .shutdown : .cancelled
            }
        }

        // Phase 1: submit and suspend, with no cancellation handler. The SQEs are filled inside
        // the continuation's closure, which runs on this thread right before the task suspends:
        // whatever executor hops happen before it, the continuation is stored before the kernel
        // can complete anything, so the completion always finds it.
        var start = RingDriver.Start.cancelled
        unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            precondition(self.isCurrentRing, "operation submitted off its ring's thread")
            // A shutdown that began while this task waited to run also means "do not submit".
            start = unsafe driver.pointee.start(
                operation, id, slot, timeout: timeout, cancelled: cancellable && Task.isCancelled)
            if start == .submitted {
                unsafe slot.pointee.continuation = unsafe continuation
            } else {
                unsafe continuation.resume()
            }
        }
        if unsafe slot.pointee.state == .completed {
            // Not submitted because the ring is stopping: say so (a close then falls back to
            // close(2)); otherwise the common case for no-ops and page-cache I/O: the kernel
            // completed the operation during the same io_uring_enter that submitted it.
            if unsafe start == .cancelled && driver.pointee.stopping { return .shutdown }
            return unsafe slot.pointee.outcome
        }

        // Phase 2: the operation outlived its first loop iteration (it waits on a pipe, a socket,
        // a timer, the disk), and the loop woke the task to say so. Now register for cancellation
        // (a task cancelled meanwhile is seen at once) and wait for the final completion. The
        // cancellation record costs two status-record locks, so only operations that wait pay it.
        unsafe driver.pointee.statistics.waitedBeyondOneIteration &+= 1
        if !cancellable {
            unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                precondition(self.isCurrentRing, "operation awaited off its ring's thread")
                if unsafe slot.pointee.state == .completed {
                    unsafe continuation.resume()
                } else {
                    unsafe slot.pointee.continuation = unsafe continuation
                }
            }
            return unsafe slot.pointee.outcome
        }
        await withTaskCancellationHandler {
            unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                // The fast path is taken only from nonisolated code on this ring's thread, whose
                // generic executor is this ring, so the handler's operation closure runs here too.
                precondition(self.isCurrentRing, "operation awaited off its ring's thread")
                if unsafe slot.pointee.state == .completed {
                    unsafe continuation.resume()  // completed while the task was re-suspending
                } else {
                    unsafe slot.pointee.continuation = unsafe continuation
                }
            }
        } onCancel: {
            self.requestCancel(id)
        }
        return unsafe slot.pointee.outcome
    }

    @inline(never)
    private func waitForCapacity(_ id: OperationID, _ slot: UnsafeMutablePointer<OperationSlot>, cancellable: Bool)
        async
    {
        let driver = unsafe self.driver
        await withTaskCancellationHandler {
            unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                precondition(self.isCurrentRing, "operation queued off its ring's thread")
                if unsafe slot.pointee.cancelRequested || driver.pointee.stopping || (cancellable && Task.isCancelled) {
                    unsafe slot.pointee.cancelledBeforeSubmission(capacity: &driver.pointee.capacity)
                    unsafe continuation.resume()
                    return
                }
                // Queued and stored together, in the closure that runs right before suspension.
                unsafe slot.pointee.continuation = unsafe continuation
                unsafe driver.pointee.startWaiting(id, slot)
            }
        } onCancel: {
            if cancellable { self.requestCancel(id) }
        }
    }

    /// Asks the ring to cancel operation `id`. Safe from any thread; a no-op if the operation has
    /// already completed or the slot has moved on to another operation.
    func requestCancel(_ id: OperationID) {
        if isCurrentRing {
            unsafe driver.pointee.cancel(id)
            return
        }
        inbox.withLock { $0.cancellations.append(id) }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        wakeIfSleeping()
    }

    /// Schedules `job` to be enqueued on this ring after `delay`, with a kernel timeout. Any thread.
    func schedule(_ job: ReadyJob, after delay: Duration) {
        if isCurrentRing {
            unsafe driver.pointee.scheduleTimer(job, after: delay)
            return
        }
        inbox.withLock { $0.timers.append((job, delay)) }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        wakeIfSleeping()
    }

    /// Test support: more completions at once than the CQ ring holds (see
    /// `RingDriver.submitUntrackedNops`). Must run on this ring's thread.
    func submitUntrackedNopsForTesting(_ count: Int) {
        precondition(isCurrentRing)
        unsafe driver.pointee.submitUntrackedNops(count)
    }
}
