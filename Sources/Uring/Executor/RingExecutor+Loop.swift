import Glibc
import Synchronization

// The ring thread's loop: run ready jobs (with a budget), enter the kernel once (submitting and,
// when idle, sleeping), reap completions; and the inbox other threads leave work in.

extension RingExecutor {
    func runLoop() {
        let driver = unsafe self.driver
        let local = unsafe self.local
        let serial = unsafe asUnownedSerialExecutor()
        let taskExecutor = unsafe asUnownedTaskExecutor()
        // Set (for the rings that Uring.run installs) before any .global or .main job can reach
        // this ring (for its extra rings, after their loops started): read when needed.
        var stopping = false
        var clock: UInt64 = 0
        StallWatch.shared.register(self)
        while true {
            if inboxPending.load(ordering: .acquiring) {
                if drainInbox() && !stopping {
                    stopping = true
                    unsafe driver.pointee.cancelEverything()
                }
            }
            // Read per iteration, after the inbox: a .global or .main job in `ready` was enqueued
            // after these were set (Uring.run sets them before any such job can exist).
            let globalExecutor = unsafe installedGlobalExecutor
            let mainExecutor = unsafe installedMainExecutor
            var budget = jobBudget
            while budget > 0, let ready = unsafe local.pointee.ready.popFirst() {
                // Plain stores (only this thread writes): odd while a job runs.
                clock &+= 1
                jobClock.store(clock, ordering: .relaxed)
                switch ready.kind {
                case .task: unsafe ready.job.runSynchronously(on: taskExecutor)
                case .isolated: unsafe ready.job.runSynchronously(isolatedTo: serial, taskExecutor: taskExecutor)
                // SAFETY: .global and .main jobs exist only on the ring Uring.run installed, whose
                // executors were set before its loop started.
                case .global: unsafe ready.job.runSynchronously(on: globalExecutor.unsafelyUnwrapped)
                case .main: unsafe ready.job.runSynchronously(on: mainExecutor.unsafelyUnwrapped)
                }
                clock &+= 1
                jobClock.store(clock, ordering: .relaxed)
                budget -= 1
                unsafe driver.pointee.statistics.jobsRun &+= 1
            }
            if unsafe !local.pointee.parked.isEmpty { resumeParked() }
            if stopping, unsafe local.pointee.ready.isEmpty, unsafe driver.pointee.table.activeCount == 0,
                !inboxPending.load(ordering: .acquiring)
            {
                break
            }
            if stopping, abandon.load(ordering: .acquiring) { break }
            // Block only when nothing is ready and nothing was submitted since the last reap: a
            // fresh operation must first get the chance to complete (or have its task woken to
            // register for cancellation) before the loop may sleep.
            if unsafe local.pointee.ready.isEmpty && driver.pointee.fresh.isEmpty && !starvedStreamsCanArm {
                if spinNanoseconds > 0 && !stopping && spinForWork() {
                    reapCompletions()
                    continue
                }
                sleeping.store(true, ordering: .sequentiallyConsistent)
                if inboxPending.load(ordering: .sequentiallyConsistent) {
                    sleeping.store(false, ordering: .sequentiallyConsistent)
                    StallWatch.shared.ringWoke()
                    enter(wait: false)
                } else {
                    enter(wait: true)
                    // Sequentially consistent, then a look at the stall watcher: it may have
                    // parked while this ring slept (see `StallWatch.ringWoke`).
                    sleeping.store(false, ordering: .sequentiallyConsistent)
                    StallWatch.shared.ringWoke()
                }
            } else if unsafe driver.pointee.ring.pendingSubmissions > 0 || driver.pointee.table.activeCount > 0
                || !driver.pointee.fresh.isEmpty
            {
                enter(wait: false)
            }
            reapCompletions()
        }
        // Tear the ring down on its own thread (io_uring_queue_exit cancels the wake read). The
        // buffer pool's memory outlives the ring: the kernel may write into it until the exit.
        messageFD.store(-1, ordering: .releasing)
        unsafe RingExecutor.registry.withLock { unsafe $0[ringID] = nil }
        StallWatch.shared.unregister(self)
        let pool = unsafe driver.pointee.bufferPool.take()
        let (leftover, leftoverClosings, leftoverResumptions) = unsafe inbox.withLock { inbox in
            inbox.loopExited = true
            return unsafe (inbox.streamRequests, inbox.closingRequests, inbox.resumptions)
        }
        // Tasks whose pool work ended as the ring stopped: resumed (their ring is gone, like
        // every task left on it; nothing waits for the work any more).
        for index in unsafe leftoverResumptions.indices { unsafe leftoverResumptions[index].resume() }
        unsafe driver.pointee.resumeClosersAtExit()
        for (fd, request) in leftoverClosings {
            switch request {
            case .begin(let waiter, let origin):
                unsafe ClosingWaiter(continuation: waiter, home: origin).resume(fromRing: ringID, fd: fd)
            case .resumeCloser(let waiter): unsafe waiter.resume()  // this ring's own closer: nothing else will
            case .end: break
            }
        }
        driverReady.store(false, ordering: .releasing)
        unsafe driver.deinitialize(count: 1)
        withExtendedLifetime(pool) {}
        for (stream, request) in leftover where request == .abandon { stream.abandonAfterRingExit() }
        closeWakeDescriptor()
    }

    /// Receive streams wait for a buffer while buffers are free (the streams armed in their turn
    /// took none: their connections are idle): the loop must go round again, not sleep, so the
    /// next ones in line get their turn (`BufferPool.wakeStarved`).
    private var starvedStreamsCanArm: Bool {
        guard let pool = unsafe driver.pointee.bufferPool else { return false }
        return !pool.starved.isEmpty && pool.available > 0
    }

    /// Looks for work for up to `spinNanoseconds` instead of sleeping: jobs or requests from
    /// other threads, and completions (fetched from the kernel every microsecond, which a ring
    /// with deferred task running needs: a completion that arrives while the ring spins waits for
    /// the next fetch, so the interval is added to a request/response round trip's latency; with
    /// 5 µs, single runs of a one-connection echo client were about a tenth slower, an indication
    /// and not a measurement). Returns true as soon as there is some.
    @inline(never)
    private func spinForWork() -> Bool {
        let driver = unsafe self.driver
        if unsafe driver.pointee.ring.pendingSubmissions > 0 { enter(wait: false) }
        let start = monotonicClockNanoseconds()
        var lastFetch = start
        while true {
            if unsafe inboxPending.load(ordering: .acquiring) || driver.pointee.ring.completionsReady > 0 {
                return true
            }
            let now = monotonicClockNanoseconds()
            if now &- start >= spinNanoseconds { return false }
            if now &- lastFetch >= 1_000 {
                enter(wait: false)  // runs deferred task work: posts completions that are due
                lastFetch = now
            }
        }
    }

    @inline(__always)
    private func enter(wait: Bool) {
        unsafe driver.pointee.enter(wait: wait)
    }

    /// Moves jobs and requests from other threads into the ring. Returns true if a stop was requested.
    private func drainInbox() -> Bool {
        inboxPending.store(false, ordering: .sequentiallyConsistent)
        let local = unsafe self.local
        var stop = false
        inbox.withLock { inbox in
            unsafe swap(&inbox.jobs, &local.pointee.inboxJobs)
            unsafe swap(&inbox.cancellations, &local.pointee.inboxCancellations)
            unsafe swap(&inbox.timers, &local.pointee.inboxTimers)
            unsafe swap(&inbox.streamRequests, &local.pointee.inboxStreamRequests)
            unsafe swap(&inbox.closingRequests, &local.pointee.inboxClosingRequests)
            unsafe swap(&inbox.resumptions, &local.pointee.inboxResumptions)
            stop = inbox.stopRequested
        }
        while let job = jobQueue.pop() { unsafe local.pointee.ready.append(job) }
        for (stream, request) in unsafe local.pointee.inboxStreamRequests { handleStreamRequest(stream, request) }
        unsafe local.pointee.inboxStreamRequests.removeAll(keepingCapacity: true)
        for (fd, request) in unsafe local.pointee.inboxClosingRequests { handleClosingRequest(fd, request) }
        unsafe local.pointee.inboxClosingRequests.removeAll(keepingCapacity: true)
        for index in unsafe local.pointee.inboxResumptions.indices {
            unsafe local.pointee.inboxResumptions[index].resume()
        }
        unsafe local.pointee.inboxResumptions.removeAll(keepingCapacity: true)
        for job in unsafe local.pointee.inboxJobs { unsafe local.pointee.ready.append(job) }
        unsafe local.pointee.inboxJobs.removeAll(keepingCapacity: true)
        for id in unsafe local.pointee.inboxCancellations { unsafe driver.pointee.cancel(id) }
        unsafe local.pointee.inboxCancellations.removeAll(keepingCapacity: true)
        for timer in unsafe local.pointee.inboxTimers {
            unsafe driver.pointee.scheduleTimer(timer.job, after: timer.delay)
        }
        unsafe local.pointee.inboxTimers.removeAll(keepingCapacity: true)
        return stop
    }

    /// Hands completions to the driver, then queues the jobs whose timers fired.
    @inline(__always)
    private func reapCompletions() {
        unsafe driver.pointee.reapCompletions()
        while let job = unsafe driver.pointee.firedTimers.popFirst() { unsafe local.pointee.ready.append(job) }
    }

    /// Resumes the tasks parked by ``continuationRoundTrip()`` (as the loop resumes tasks whose
    /// completions arrived).
    @inline(never)
    private func resumeParked() {
        while let continuation = unsafe local.pointee.parked.popFirst() { unsafe continuation.resume() }
    }

    /// The floor under every awaited operation: the task suspends on a continuation, the loop
    /// resumes it in its next iteration, and the task runs again, with no system call and no
    /// kernel. What `uring-bench floor` measures (the cost any Swift completion runtime pays per
    /// awaited operation). Must run on this ring's thread.
    package func continuationRoundTrip() async {
        unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            precondition(isCurrentRing, "round trip off the ring's thread")
            unsafe local.pointee.parked.append(continuation)
        }
    }
}
