import Glibc

// The kernel side of the driver: entering the kernel, reaping a batch of completions, and
// handing each to what it belongs to.

extension RingDriver {
    /// Submits what is queued and, with `wait`, sleeps until a completion arrives.
    @inline(__always)
    mutating func enter(wait: Bool) {
        statistics.enterCalls &+= 1
        ring.submit(wait: wait)
    }

    /// Copies every ready completion out of the CQ (a batch at a time, advancing the CQ once per
    /// batch), dispatches each, then admits waiting operations, wakes the tasks whose operations
    /// outlived this iteration, and re-arms streams that wait for a buffer.
    mutating func reapCompletions() {
        let batchSize = RingDriver.completionBatch
        if !ring.stashed.isEmpty {
            let stashed = ring.stashed
            ring.stashed.removeAll(keepingCapacity: true)
            for completion in stashed { dispatch(completion) }
            statistics.completions &+= UInt64(stashed.count)
        }
        while true {
            let count = unsafe ring.reap(into: completions, scratch: cqeScratch, capacity: batchSize)
            for i in 0..<count { unsafe dispatch(completions[i]) }
            statistics.completions &+= UInt64(count)
            if count < batchSize {
                if ring.completionQueueOverflowed {
                    // The kernel holds completions it could not post: flush them into the CQ.
                    statistics.completionQueueOverflows &+= 1
                    enter(wait: false)
                    continue
                }
                break
            }
        }
        admitWaiters()
        wakeOperationsStillInFlight()
        if let pool = bufferPool, !pool.starved.isEmpty, pool.available > 0 { wakeStarvedStreams(pool) }
    }

    /// Operations submitted in this iteration that did not complete in it: wake their tasks so
    /// they register for cancellation and wait again (phase 2 in `perform`), and give back the
    /// ring capacity they held. Capacity bounds bursts of operations that complete at once (the
    /// ones that can overflow the CQ); an operation that waits on a peer may wait forever, and
    /// must not keep others out: 1,000 connections each with a pending receive would otherwise
    /// fill the ring and starve the sends their peers wait for. If many waiting operations
    /// complete together, the CQ overflow is detected and drained like any other.
    @inline(__always)
    mutating func wakeOperationsStillInFlight() {
        var released = false
        while let id = fresh.popFirst() {
            guard let slot = unsafe table.slot(for: id), unsafe slot.pointee.state == .inFlight else { continue }
            if unsafe slot.pointee.stillWaiting(capacity: &capacity) { released = true }
            unsafe slot.pointee.continuation.take()?.resume()
        }
        if released { admitWaiters() }
    }

    @inline(__always)
    mutating func dispatch(_ completion: Completion) {
        #if DEBUG
        var completion = completion
        if let faults, let injected = faults.result(for: completion) {
            completion.result = injected
            completion.flags = 0
        }
        #endif
        let (tag, id) = OperationID.decode(completion.userData)
        switch tag {
        case .operation, .linkedTimeout:
            guard let slot = unsafe table.slot(for: id), unsafe slot.pointee.state == .inFlight else {
                statistics.strayCompletions &+= 1
                return
            }
            if !closing.isEmpty && tag == .operation {
                unsafe noteCompletionWhileClosing(slot, result: completion.result)
            }
            // SAFETY: `tag` is .operation or .linkedTimeout in this branch.
            if unsafe slot.pointee.complete(
                tag.unsafelyUnwrapped, result: completion.result, flags: completion.flags, capacity: &capacity)
            {
                // No continuation means the task is between its two waits (see perform): it sees
                // the completed state when it re-suspends.
                unsafe slot.pointee.continuation.take()?.resume()
            }
        case .timer:
            guard let slot = unsafe table.slot(for: id), unsafe slot.pointee.state == .inFlight else {
                statistics.strayCompletions &+= 1
                return
            }
            unsafe slot.pointee.completeUntracked(result: completion.result)
            // SAFETY: a timer slot gets its job in scheduleTimer, before its SQE exists.
            let job = unsafe slot.pointee.job.take().unsafelyUnwrapped
            table.release(id)
            firedTimers.append(job)
        case .stream:
            guard let slot = unsafe table.slot(for: id), unsafe slot.pointee.state == .inFlight else {
                statistics.strayCompletions &+= 1
                return
            }
            unsafe streamCompleted(slot, id, completion)
        case .wake:
            armWakeRead()
        case .message:
            break  // another ring woke us: the loop drains the inbox next
        case .messageSent:
            if completion.result < 0 {
                // No IORING_OP_MSG_RING on this kernel (EINVAL: unknown opcode): eventfd from now
                // on. Any other failure is this message's alone (the target ring was ending and
                // its descriptor gone, its completion queue full): messages still work. Either
                // way, make sure this wake-up is not lost.
                if completion.result == -EINVAL || completion.result == -EOPNOTSUPP {
                    RingExecutor.messagesWork.store(false, ordering: .relaxed)
                }
                // Under the registry lock: the target cannot finish its loop meanwhile.
                unsafe RingExecutor.registry.withLock {
                    unsafe $0[id.index]?.takeUnretainedValue().wakeThroughEventFD()
                }
            }
        case .cancel:
            break
        case .closeCancel:
            closeCancelCompleted(Int32(bitPattern: id.index))
        case nil:
            statistics.strayCompletions &+= 1
        }
    }
}
