internal import CLiburing
import Glibc
import Synchronization

/// A Swift executor that owns one io_uring ring and the one thread that drives it.
///
/// A `RingExecutor` is both a `SerialExecutor` (give an actor its `unownedExecutor`) and a
/// `TaskExecutor` (start tasks on it with `Task(executorPreference:)`). Every swift-uring
/// operation awaited from a task on the ring fills a submission entry directly, suspends the task,
/// and is resumed by the ring thread when the completion arrives: no locks, no hops, and no heap
/// allocation per operation.
///
/// ```swift
/// let ring = try RingExecutor()
/// let bytes = try await Task(executorPreference: ring) {
///     try await File.readAll(at: "/etc/hostname")
/// }.value
/// ```
///
/// The loop, per iteration: run up to ``jobBudget`` ready jobs, then one `io_uring_enter` that
/// submits everything those jobs queued and collects completions (waiting only when there is
/// nothing else to do), then copy a batch of completions, advance the CQ once, and resume their
/// tasks. Jobs enqueued from other threads go through a lock-free queue and wake the ring only
/// when it is asleep (another ring with `IORING_OP_MSG_RING`, other threads through an eventfd).
///
/// Call ``shutdown()`` to stop the thread and close the ring: it cancels whatever is still in
/// flight, waits for those completions, and joins the thread.
public final class RingExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: `core` is touched only by the ring thread (the loop and the jobs it
    // runs); everything other threads use is a Mutex or an Atomic.

    /// The most jobs run between two visits to the kernel, so completions are never starved.
    public let jobBudget: Int
    /// The name of the ring's thread.
    public let name: String
    /// How many buffers the ring's receive buffer pool has (shared by every multishot receive
    /// on the ring; allocated at the first one).
    public let receiveBufferCount: Int
    /// The size of each receive buffer: the most bytes one received chunk holds.
    public let receiveBufferSize: Int
    /// How long the ring spins, looking for work, before it sleeps in the kernel (zero: it
    /// sleeps at once).
    public let spinBeforeSleep: Duration
    private let spinNanoseconds: UInt64

    let core: UnsafeMutablePointer<RingCore>
    private let coreReady = Atomic<Bool>(false)
    let inbox = Lock(Inbox())
    /// Jobs from other threads, without a lock (the inbox takes the overflow).
    let jobQueue = JobQueue(capacity: 4096)
    let inboxPending = Atomic<Bool>(false)
    let sleeping = Atomic<Bool>(false)
    let wakeFD: Int32
    /// This ring's descriptor for other rings' wake messages; -1 when unset or torn down.
    let messageFD = Atomic<Int32>(-1)
    /// A process-unique number for this ring (see `registry`).
    let ringID: UInt32
    /// The 8 bytes the wake read fills. Owned by the executor, which outlives the ring, so the
    /// kernel can never write into freed memory.
    let wakeBuffer: UnsafeMutablePointer<UInt64>
    private let stopped = Atomic<Bool>(false)
    /// Bumped before and after each job (odd while one runs), for the stall detector.
    let jobClock = Atomic<UInt64>(0)
    /// Stalls the detector saw on this ring, and the longest (nanoseconds).
    let stallCount = Atomic<UInt64>(0)
    let longestStallNanoseconds = Atomic<UInt64>(0)
    private let abandon = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Serializes joining the thread (shutdown may be called from several threads).
    private let joinLock = Lock(())
    private let ownsThread: Bool

    /// Creates a ring with `entries` submission entries and starts its thread.
    ///
    /// - Parameters:
    ///   - entries: Submission queue size (rounded up to a power of two by the kernel). It is
    ///     also the number of operations in the kernel at once; more wait in user space.
    ///   - jobBudget: The most jobs run per loop iteration.
    ///   - name: The thread's name (truncated to 15 bytes by Linux).
    ///   - receiveBufferCount: Buffers in the pool that multishot receives (``TCPConnection/chunks``)
    ///     fill: a power of two, at most 32,768. Connections that find the pool empty wait for a
    ///     buffer to come back.
    ///   - receiveBufferSize: Bytes per receive buffer (the largest chunk), 1 to 1 MiB.
    ///   - spinBeforeSleep: When the ring runs out of work, how long it keeps looking (jobs from
    ///     other threads, completions) before it sleeps in `io_uring_enter`; 0 to 10 ms. Spinning
    ///     trades CPU time for latency: a task or job handed to a spinning ring starts within
    ///     a fraction of a microsecond instead of after a thread wake-up (several microseconds),
    ///     and a busy ring makes fewer sleeping system calls. Zero (the default) sleeps at once.
    /// - Throws: ``IOError`` with code ``IOError/Code/ringUnavailable`` when io_uring cannot be set
    ///   up; its description says why (sysctl, seccomp, memlock). ``IOError/Code/invalidArgument``
    ///   for a parameter out of range.
    public convenience init(
        entries: Int = 256, jobBudget: Int = 256, name: String = "swift-uring",
        receiveBufferCount: Int = 1024, receiveBufferSize: Int = 4096, spinBeforeSleep: Duration = .zero
    ) throws(IOError) {
        try self.init(
            entries: entries, jobBudget: jobBudget, name: name, receiveBufferCount: receiveBufferCount,
            receiveBufferSize: receiveBufferSize, spinBeforeSleep: spinBeforeSleep, donatingCurrentThread: false)
    }

    init(
        entries: Int, jobBudget: Int, name: String, receiveBufferCount: Int = 1024, receiveBufferSize: Int = 4096,
        spinBeforeSleep: Duration = .zero, donatingCurrentThread: Bool
    ) throws(IOError) {
        guard entries >= 1, entries <= 32768, jobBudget >= 1,
            receiveBufferCount >= 1, receiveBufferCount <= 32768, receiveBufferCount & (receiveBufferCount - 1) == 0,
            receiveBufferSize >= 1, receiveBufferSize <= 1 << 20,
            spinBeforeSleep >= .zero, spinBeforeSleep <= .milliseconds(10)
        else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)
        }
        self.spinBeforeSleep = spinBeforeSleep
        spinNanoseconds = nanoseconds(spinBeforeSleep)
        self.jobBudget = jobBudget
        self.name = name
        self.receiveBufferCount = receiveBufferCount
        self.receiveBufferSize = receiveBufferSize
        ringID = RingExecutor.nextRingID.add(1, ordering: .relaxed).oldValue
        self.ownsThread = !donatingCurrentThread
        isolation = RingIsolation()
        let fd = eventfd(0, Int32(EFD_CLOEXEC))
        guard fd >= 0 else { throw IOError.system(Glibc.errno, .setup) }
        wakeFD = fd
        inbox.withLock { $0.wakeFD = fd }
        wakeBuffer = .allocate(capacity: 1)

        wakeBuffer.initialize(to: 0)
        core = .allocate(capacity: 1)
        isolation.ring = self
        if donatingCurrentThread {
            // On failure deinit runs (every stored property is set) and closes the eventfd.
            try setUpOnCurrentThread(entries: UInt32(entries))
            return
        }
        let startup = StartupSignal()
        let context = Unmanaged.passRetained(ThreadContext(executor: self, entries: UInt32(entries), startup: startup))
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            let context = Unmanaged<ThreadContext>.fromOpaque(raw!).takeRetainedValue()
            context.executor.threadMain(entries: context.entries, startup: context.startup)
            return nil
        }, context.toOpaque())
        guard rc == 0 else {
            context.release()
            throw IOError.system(rc, .setup)
        }
        if let error = startup.wait() {
            pthread_join(tid, nil)
            throw error
        }
        thread = tid
    }

    deinit {
        if coreReady.load(ordering: .acquiring) {
            core.deinitialize(count: 1)
        }
        closeWakeDescriptor()
        core.deallocate()
        wakeBuffer.deallocate()
    }

    // MARK: - Thread

    private func setUpOnCurrentThread(entries: UInt32) throws(IOError) {
        #if DEBUG
        let ring = try Ring(entries: entries, injectedFailures: FaultInjector.takeSetupFailures(ofRingNamed: name))
        #else
        let ring = try Ring(entries: entries)
        #endif
        if ring.submissionEntries < entries {
            StallDetector.current.logger.warning(
                "io_uring_setup: not enough kernel memory for \(entries) entries; ring '\(name)' runs with \(ring.submissionEntries)")
        }
        core.initialize(to: RingCore(ring: ring))
        coreReady.store(true, ordering: .releasing)
        RingExecutor.setCurrent(self)
        armWake()
        RingExecutor.registry.withLock { $0[ringID] = Unmanaged.passUnretained(self) }
        messageFD.store(core.pointee.ring.fileDescriptor, ordering: .releasing)
    }

    private func threadMain(entries: UInt32, startup: StartupSignal) {
        Self.nameCurrentThread(name)
        do {
            try setUpOnCurrentThread(entries: entries)
        } catch {
            startup.signal(error)
            return
        }
        startup.signal(nil)
        runLoop()
        RingExecutor.setCurrent(nil)
    }

    /// Names the calling thread (visible in `top -H` and debuggers); best effort.
    static func nameCurrentThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Runs the loop on the calling thread until ``shutdown()``; for a ring that was created on the
    /// current thread (the main-executor path).
    func runOnCurrentThread() {
        precondition(!ownsThread && isCurrentRing, "runOnCurrentThread on a ring with its own thread")
        runLoop()
    }

    /// Stops the ring: cancels every operation still in flight, waits for their completions, runs
    /// the jobs that are left, closes the ring and joins its thread. Idempotent.
    ///
    /// ```swift
    /// let ring = try RingExecutor()
    /// defer { ring.shutdown() }
    /// try await Task(executorPreference: ring) { try await work() }.value
    /// ```
    ///
    /// Tasks awaiting an operation in the kernel resume with ``IOError/Code/cancelled`` (or with
    /// their result, if it arrived first); operations that had not reached the kernel (waiting for
    /// ring capacity, or started after the stop began) fail with
    /// ``IOError/Code/executorShutdown``. A `close()` that cannot reach the ring any more closes
    /// with `close(2)` instead. Jobs enqueued after the thread has exited never run, so
    /// stop the tasks that use the ring first.
    ///
    /// Call it from outside the ring. Called on the ring's own thread, it only requests the stop
    /// (the loop ends once the ring is idle).
    public func shutdown() {
        requestShutdown()
        joinLock.withLock { _ in
            if ownsThread, !isCurrentRing, let thread {
                pthread_join(thread, nil)
                self.thread = nil
            }
        }
    }

    /// Asks the loop to stop, without waiting for it (``shutdown()`` waits). Idempotent.
    func requestShutdown() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        inbox.withLock { $0.stopRequested = true }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        // Never by message: the caller may be a job on another ring that now blocks in
        // shutdown()'s join, and a message would wait for that ring's next io_uring_enter.
        wakeThroughEventFD()
    }

    /// Ends the loop as soon as the current job returns, without waiting for the tasks still
    /// running (the `Uring.run` exit path: those tasks are abandoned, as when `main` returns).
    /// Tearing the ring down cancels whatever is in the kernel.
    func stopAbandoningTasks() {
        abandon.store(true, ordering: .releasing)
        shutdown()
    }

    // MARK: - Identity

    /// The ring whose thread is the calling thread, if any.
    ///
    /// ```swift
    /// if let ring = RingExecutor.current { print("on \(ring.name)") }
    /// ```
    public static var current: RingExecutor? {
        guard let raw = pthread_getspecific(ringThreadKey) else { return nil }
        return Unmanaged<RingExecutor>.fromOpaque(raw).takeUnretainedValue()
    }

    /// True on this ring's own thread.
    @inline(__always)
    var isCurrentRing: Bool {
        pthread_getspecific(ringThreadKey) == Unmanaged.passUnretained(self).toOpaque()
    }

    static func setCurrent(_ executor: RingExecutor?) {
        pthread_setspecific(ringThreadKey, executor.map { Unmanaged.passUnretained($0).toOpaque() })
    }

    public func checkIsolated() {
        precondition(isCurrentRing, "expected to run on ring '\(name)'")
    }

    public func isIsolatingCurrentContext() -> Bool? {
        isCurrentRing
    }

    // MARK: - Enqueueing jobs

    /// Enqueues a task job: a task that prefers this ring (`Task(executorPreference:)`,
    /// `withTaskExecutorPreference`) running nonisolated code. Such jobs run with no serial
    /// isolation, so calling a nonisolated async function from them costs no executor hop.
    public func enqueue(_ job: consuming ExecutorJob) {
        enqueue(ReadyJob(job: UnownedJob(job), isolated: false))
    }

    /// The identity actors use to run on this ring (see ``asUnownedSerialExecutor()``). Jobs that
    /// arrive through it run isolated to it.
    let isolation: RingIsolation

    /// The default and main executor identities of the ring that `Uring.run` installs; written
    /// once, before that ring's loop starts, and only read by the loop afterwards.
    nonisolated(unsafe) var installedGlobalExecutor: UnownedTaskExecutor?
    nonisolated(unsafe) var installedMainExecutor: UnownedSerialExecutor?

    /// The serial executor identity of this ring, for actors:
    ///
    /// ```swift
    /// actor Connection {
    ///     let ring: RingExecutor
    ///     nonisolated var unownedExecutor: UnownedSerialExecutor { ring.asUnownedSerialExecutor() }
    /// }
    /// ```
    ///
    /// It is a companion object owned by the ring, not the ring itself: the runtime enqueues an
    /// actor's jobs through it, which is how the ring knows to run them isolated to the actor's
    /// executor, while task jobs run without serial isolation.
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: isolation)
    }

    @inline(__always)
    func enqueue(_ job: ReadyJob) {
        if isCurrentRing {
            core.pointee.ready.append(job)
            return
        }
        if !jobQueue.push(job) {
            inbox.withLock { $0.jobs.append(job) }  // the lock-free queue is full: never refuse
        }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        wakeIfSleeping()
    }

    @inline(__always)
    func wakeIfSleeping() {
        if sleeping.load(ordering: .sequentiallyConsistent), sleeping.exchange(false, ordering: .sequentiallyConsistent) {
            wake()
        }
    }

    func wake() {
        // From another ring's thread: post a message into this ring with IORING_OP_MSG_RING. It
        // rides along with that ring's next io_uring_enter instead of costing a write(2) now (so
        // a job that blocks after enqueueing delays the wake-up; the stall detector reports such
        // jobs).
        let target = messageFD.load(ordering: .acquiring)
        if target >= 0, RingExecutor.messagesWork.load(ordering: .relaxed), let source = RingExecutor.current, source !== self {
            source.sendWakeMessage(toFD: target, ringID: ringID)
            return
        }
        wakeThroughEventFD()
    }

    /// Whether IORING_OP_MSG_RING works here; turned off for good after the first failure, or
    /// from the start with the environment variable `SWIFT_URING_MSG_RING=0` (for comparisons).
    static let messagesWork = Atomic<Bool>(getenv("SWIFT_URING_MSG_RING").map { String(cString: $0) != "0" } ?? true)
    private static let nextRingID = Atomic<UInt32>(1)
    /// Live rings by ``ringID``, to wake the target of a failed message. Unmanaged, not weak (a
    /// weak reference would put every retain and release of the ring on the slow path): a ring is
    /// in it only while its loop runs, and leaves it (under the lock) before the loop ends.
    static let registry = Lock<[UInt32: Unmanaged<RingExecutor>]>([:])

    /// On this ring's thread: queue a message that wakes the ring `ringFD`.
    private func sendWakeMessage(toFD ringFD: Int32, ringID target: UInt32) {
        let sqe = core.pointee.ring.nextSubmission()
        Prep.message(sqe, ringFD: ringFD, userData: UInt64(CompletionTag.message.rawValue) << 56)
        Prep.setUserData(sqe, OperationID(index: target, generation: 0).userData(.messageSent))
        core.pointee.statistics.messagesSent &+= 1
    }

    func wakeThroughEventFD() {
        // Under the inbox lock, so that it can never race with closeWakeDescriptor() and write
        // into a descriptor number that has been reused.
        inbox.withLock { inbox in
            guard inbox.wakeFD >= 0 else { return }
            var one: UInt64 = 1
            _ = withUnsafeBytes(of: &one) { write(inbox.wakeFD, $0.baseAddress, 8) }
        }
    }

    /// Closes the eventfd once (after the ring is gone, so no read on it is pending).
    func closeWakeDescriptor() {
        inbox.withLock { inbox in
            if inbox.wakeFD >= 0 {
                close(inbox.wakeFD)
                inbox.wakeFD = -1
            }
        }
    }

    /// Re-arms the read on the eventfd that other threads write to wake the ring.
    func armWake() {
        let sqe = core.pointee.ring.nextSubmission()
        // SAFETY: wakeBuffer is owned by the executor and freed in its deinit, after the ring has
        // been torn down (io_uring_queue_exit cancels the read).
        Prep.read(sqe, fd: wakeFD, buffer: wakeBuffer, count: 8, offset: 0)
        Prep.setUserData(sqe, UInt64(CompletionTag.wake.rawValue) << 56)
    }

    // MARK: - The loop

    private func runLoop() {
        let core = self.core
        let serial = asUnownedSerialExecutor()
        let taskExecutor = asUnownedTaskExecutor()
        // Set (for the rings that Uring.run installs) before any .global or .main job can reach
        // this ring (for its extra rings, after their loops started): read when needed.
        var stopping = false
        var clock: UInt64 = 0
        StallWatch.shared.register(self)
        while true {
            if inboxPending.load(ordering: .acquiring) {
                if drainInbox() && !stopping {
                    stopping = true
                    core.pointee.stopping = true
                    cancelEverything()
                }
            }
            // Read per iteration, after the inbox: a .global or .main job in `ready` was enqueued
            // after these were set (Uring.run sets them before any such job can exist).
            let globalExecutor = installedGlobalExecutor
            let mainExecutor = installedMainExecutor
            var budget = jobBudget
            while budget > 0, let ready = core.pointee.ready.popFirst() {
                // Plain stores (only this thread writes): odd while a job runs.
                clock &+= 1
                jobClock.store(clock, ordering: .relaxed)
                switch ready.kind {
                case .task: ready.job.runSynchronously(on: taskExecutor)
                case .isolated: ready.job.runSynchronously(isolatedTo: serial, taskExecutor: taskExecutor)
                // SAFETY: .global and .main jobs exist only on the ring Uring.run installed, whose
                // executors were set before its loop started.
                case .global: ready.job.runSynchronously(on: globalExecutor.unsafelyUnwrapped)
                case .main: ready.job.runSynchronously(on: mainExecutor.unsafelyUnwrapped)
                }
                clock &+= 1
                jobClock.store(clock, ordering: .relaxed)
                budget -= 1
                core.pointee.statistics.jobsRun &+= 1
            }
            if stopping, core.pointee.ready.isEmpty, core.pointee.table.activeCount == 0,
                !inboxPending.load(ordering: .acquiring)
            {
                break
            }
            if stopping, abandon.load(ordering: .acquiring) { break }
            // Block only when nothing is ready and nothing was submitted since the last reap: a
            // fresh operation must first get the chance to complete (or have its task woken to
            // register for cancellation) before the loop may sleep.
            if core.pointee.ready.isEmpty && core.pointee.fresh.isEmpty && !starvedStreamsCanArm {
                if spinNanoseconds > 0 && !stopping && spinForWork() {
                    reapCompletions()
                    continue
                }
                sleeping.store(true, ordering: .sequentiallyConsistent)
                if inboxPending.load(ordering: .sequentiallyConsistent) {
                    sleeping.store(false, ordering: .relaxed)
                    enter(wait: false)
                } else {
                    enter(wait: true)
                    sleeping.store(false, ordering: .relaxed)
                }
            } else if core.pointee.ring.pendingSubmissions > 0 || core.pointee.table.activeCount > 0
                || !core.pointee.fresh.isEmpty
            {
                enter(wait: false)
            }
            reapCompletions()
        }
        // Tear the ring down on its own thread (io_uring_queue_exit cancels the wake read). The
        // buffer pool's memory outlives the ring: the kernel may write into it until the exit.
        messageFD.store(-1, ordering: .releasing)
        RingExecutor.registry.withLock { $0[ringID] = nil }
        StallWatch.shared.unregister(self)
        let pool = core.pointee.bufferPool.take()
        let (leftover, leftoverClosings) = inbox.withLock { inbox in
            inbox.loopExited = true
            return (inbox.streamRequests, inbox.closingRequests)
        }
        resumeClosersAtExit()
        for (fd, request) in leftoverClosings {
            switch request {
            case .begin(let waiter, let origin): ClosingWaiter(continuation: waiter, home: origin).resume(from: self, fd: fd)
            case .resumeCloser(let waiter): waiter.resume()  // this ring's own closer: nothing else will
            case .end: break
            }
        }
        coreReady.store(false, ordering: .releasing)
        core.deinitialize(count: 1)
        withExtendedLifetime(pool) {}
        for (stream, request) in leftover where request == .abandon { stream.abandonAfterRingExit() }
        closeWakeDescriptor()
    }

    /// Receive streams wait for a buffer while buffers are free (the streams armed in their turn
    /// took none: their connections are idle): the loop must go round again, not sleep, so the
    /// next ones in line get their turn (`BufferPool.wakeStarved`).
    private var starvedStreamsCanArm: Bool {
        guard let pool = core.pointee.bufferPool else { return false }
        return !pool.starved.isEmpty && pool.available > 0
    }

    /// Looks for work for up to `spinNanoseconds` instead of sleeping: jobs or requests from
    /// other threads, and completions (fetched from the kernel every few microseconds, which a
    /// ring with deferred task running needs). Returns true as soon as there is some.
    @inline(never)
    private func spinForWork() -> Bool {
        let core = self.core
        if core.pointee.ring.pendingSubmissions > 0 { enter(wait: false) }
        let start = monotonicNanoseconds()
        var lastFetch = start
        while true {
            if inboxPending.load(ordering: .acquiring) || core.pointee.ring.completionsReady > 0 { return true }
            let now = monotonicNanoseconds()
            if now &- start >= spinNanoseconds { return false }
            if now &- lastFetch >= 5_000 {
                enter(wait: false)  // runs deferred task work: posts completions that are due
                lastFetch = now
            }
        }
    }

    @inline(__always)
    private func enter(wait: Bool) {
        core.pointee.statistics.enterCalls &+= 1
        core.pointee.ring.submit(wait: wait)
    }

    /// Moves jobs and requests from other threads into the ring. Returns true if a stop was requested.
    private func drainInbox() -> Bool {
        inboxPending.store(false, ordering: .sequentiallyConsistent)
        let core = self.core
        var stop = false
        inbox.withLock { inbox in
            swap(&inbox.jobs, &core.pointee.inboxJobs)
            swap(&inbox.cancellations, &core.pointee.inboxCancellations)
            swap(&inbox.timers, &core.pointee.inboxTimers)
            swap(&inbox.streamRequests, &core.pointee.inboxStreamRequests)
            swap(&inbox.closingRequests, &core.pointee.inboxClosingRequests)
            stop = inbox.stopRequested
        }
        while let job = jobQueue.pop() { core.pointee.ready.append(job) }
        for (stream, request) in core.pointee.inboxStreamRequests { handleStreamRequest(stream, request) }
        core.pointee.inboxStreamRequests.removeAll(keepingCapacity: true)
        for (fd, request) in core.pointee.inboxClosingRequests { handleClosingRequest(fd, request) }
        core.pointee.inboxClosingRequests.removeAll(keepingCapacity: true)
        for job in core.pointee.inboxJobs { core.pointee.ready.append(job) }
        core.pointee.inboxJobs.removeAll(keepingCapacity: true)
        for id in core.pointee.inboxCancellations { cancelOnRing(id) }
        core.pointee.inboxCancellations.removeAll(keepingCapacity: true)
        for timer in core.pointee.inboxTimers { scheduleOnRing(timer.job, after: timer.delay) }
        core.pointee.inboxTimers.removeAll(keepingCapacity: true)
        return stop
    }

    private func reapCompletions() {
        let core = self.core
        let batchSize = RingCore.completionBatch
        if !core.pointee.ring.stashed.isEmpty {
            let stashed = core.pointee.ring.stashed
            core.pointee.ring.stashed.removeAll(keepingCapacity: true)
            for completion in stashed { dispatch(completion) }
            core.pointee.statistics.completions &+= UInt64(stashed.count)
        }
        while true {
            let count = core.pointee.ring.reap(into: core.pointee.completions, scratch: core.pointee.cqeScratch, capacity: batchSize)
            for i in 0..<count { dispatch(core.pointee.completions[i]) }
            core.pointee.statistics.completions &+= UInt64(count)
            if count < batchSize {
                if core.pointee.ring.completionQueueOverflowed {
                    // The kernel holds completions it could not post: flush them into the CQ.
                    core.pointee.statistics.completionQueueOverflows &+= 1
                    enter(wait: false)
                    continue
                }
                break
            }
        }
        admitWaiters()
        wakeOperationsStillInFlight()
        if let pool = core.pointee.bufferPool, !pool.starved.isEmpty, pool.available > 0 { pool.wakeStarved() }
    }

    /// Operations submitted in this iteration that did not complete in it: wake their tasks so
    /// they register for cancellation and wait again (phase 2 in `perform`), and give back the
    /// ring capacity they held. Capacity bounds bursts of operations that complete at once (the
    /// ones that can overflow the CQ); an operation that waits on a peer may wait forever, and
    /// must not keep others out: 1,000 connections each with a pending receive would otherwise
    /// fill the ring and starve the sends their peers wait for. If many waiting operations
    /// complete together, the CQ overflow is detected and drained like any other.
    @inline(__always)
    private func wakeOperationsStillInFlight() {
        let core = self.core
        var released = false
        while let id = core.pointee.fresh.popFirst() {
            guard let slot = core.pointee.table.slot(for: id), slot.pointee.state == .inFlight else { continue }
            if slot.pointee.heldCapacity > 0 {
                core.pointee.capacityInUse -= Int(slot.pointee.heldCapacity)
                slot.pointee.heldCapacity = 0
                released = true
            }
            slot.pointee.continuation.take()?.resume()
        }
        if released { admitWaiters() }
    }

    @inline(__always)
    private func dispatch(_ completion: Completion) {
        let core = self.core
        #if DEBUG
        var completion = completion
        if let faults = core.pointee.faults, let injected = faults.result(for: completion) {
            completion.result = injected
            completion.flags = 0
        }
        #endif
        let (tag, id) = OperationID.decode(completion.userData)
        switch tag {
        case .operation, .linkedTimeout:
            guard let slot = core.pointee.table.slot(for: id), slot.pointee.state == .inFlight else {
                core.pointee.statistics.strayCompletions &+= 1
                return
            }
            if slot.pointee.heldCapacity > 0 {
                slot.pointee.heldCapacity -= 1
                core.pointee.capacityInUse -= 1
            }
            if !core.pointee.closing.isEmpty && tag == .operation {
                noteCompletionWhileClosing(slot, result: completion.result)
            }
            if slot.pointee.complete(tag.unsafelyUnwrapped, result: completion.result, flags: completion.flags) {
                // No continuation means the task is between its two waits (see perform): it sees
                // the completed state when it re-suspends.
                slot.pointee.continuation.take()?.resume()
            }
        case .timer:
            guard let slot = core.pointee.table.slot(for: id), slot.pointee.state == .inFlight else {
                core.pointee.statistics.strayCompletions &+= 1
                return
            }
            _ = slot.pointee.complete(.operation, result: completion.result)
            // SAFETY: a timer slot gets its job in scheduleOnRing, before its SQE exists.
            let job = slot.pointee.job.take().unsafelyUnwrapped
            core.pointee.table.release(id)
            core.pointee.ready.append(job)
        case .stream:
            guard let slot = core.pointee.table.slot(for: id), slot.pointee.state == .inFlight else {
                core.pointee.statistics.strayCompletions &+= 1
                return
            }
            // SAFETY: a .stream slot gets its stream in armIfWanted, before its SQE exists.
            let stream = slot.pointee.stream.unsafelyUnwrapped
            let final = completion.flags & IORING_CQE_F_MORE == 0
            let fd = slot.pointee.fd
            if final {
                slot.pointee.state = .completed
                core.pointee.table.release(id)
            }
            stream.handle(result: completion.result, flags: completion.flags, final: final)
            if final && fd >= 0 { noteEnd(fd) }
        case .wake:
            armWake()
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
                RingExecutor.registry.withLock { $0[id.index]?.takeUnretainedValue().wakeThroughEventFD() }
            }
        case .cancel:
            break
        case .closeCancel:
            closeCancelCompleted(Int32(bitPattern: id.index))
        case nil:
            core.pointee.statistics.strayCompletions &+= 1
        }
    }
}

/// A job waiting to run on the ring, with how to run it.
struct ReadyJob {
    enum Kind: UInt8 {
        /// A task that prefers this ring: no serial isolation, task executor = the ring.
        case task
        /// An actor job: isolated to the ring's serial identity.
        case isolated
        /// A job given to the ring as the process's default executor (the `Uring.run` path).
        case global
        /// A main-actor job, when the ring is the process's main executor (the `Uring.run` path).
        case main
    }
    var job: UnownedJob
    var kind: Kind

    init(job: UnownedJob, isolated: Bool) {
        self.job = job
        self.kind = isolated ? .isolated : .task
    }

    init(job: UnownedJob, kind: Kind) {
        self.job = job
        self.kind = kind
    }
}

/// The serial-executor face of a ``RingExecutor``: actors whose `unownedExecutor` is
/// `ring.asUnownedSerialExecutor()` enqueue here, and their jobs run isolated on the ring.
final class RingIsolation: SerialExecutor, @unchecked Sendable {
    /// Set once, in the ring's initializer, before the ring's thread starts; never changed.
    unowned(unsafe) var ring: RingExecutor! = nil

    func enqueue(_ job: consuming ExecutorJob) {
        ring.enqueue(ReadyJob(job: UnownedJob(job), isolated: true))
    }

    func checkIsolated() {
        precondition(ring.isCurrentRing, "expected to run on ring '\(ring.name)'")
    }

    func isIsolatingCurrentContext() -> Bool? {
        ring.isCurrentRing
    }
}

/// Requests other threads leave for the ring (jobs go through `jobQueue` first).
struct Inbox {
    var jobs: [ReadyJob] = []
    var cancellations: [OperationID] = []
    var timers: [(job: ReadyJob, delay: Duration)] = []
    var streamRequests: [(MultishotStream, RingExecutor.StreamRequest)] = []
    var closingRequests: [(Int32, RingExecutor.ClosingRequest)] = []
    var stopRequested = false
    /// Set when the ring's loop has ended: nobody will drain requests any more.
    var loopExited = false
    /// The eventfd that wakes the ring; -1 once closed.
    var wakeFD: Int32 = -1
}

/// Everything only the ring thread touches.
struct RingCore: ~Copyable {
    static let completionBatch = 256

    var ring: Ring
    var table: OperationTable
    var ready = FIFO<ReadyJob>(initialCapacity: 256)
    var waiters = FIFO<OperationID>(initialCapacity: 64)
    /// Operations submitted since the last reap (see `perform`'s two phases).
    var fresh = FIFO<OperationID>(initialCapacity: 256)
    /// CQEs owed to user operations now in the kernel; at most `capacityLimit`.
    var capacityInUse = 0
    let capacityLimit: Int
    /// Set once shutdown has begun: new operations fail with `executorShutdown`.
    var stopping = false
    let completions: UnsafeMutablePointer<Completion>
    let cqeScratch: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    var inboxJobs: [ReadyJob] = []
    var inboxCancellations: [OperationID] = []
    var inboxTimers: [(job: ReadyJob, delay: Duration)] = []
    var inboxStreamRequests: [(MultishotStream, RingExecutor.StreamRequest)] = []
    var inboxClosingRequests: [(Int32, RingExecutor.ClosingRequest)] = []
    /// Operations and streams in flight per descriptor (`DescriptorUse.bucketCount` counters), and
    /// the descriptors being closed on this ring: see DescriptorClosing.swift.
    let descriptorUse: UnsafeMutablePointer<UInt32>
    var closing: [ClosingDescriptor] = []
    /// The receive and accept streams on each descriptor, for close().
    var streams: [Int32: [MultishotStream]] = [:]
    /// The provided buffers multishot receives fill; registered at the first one.
    var bufferPool: BufferPool?
    var statistics = RingStatistics()
    #if DEBUG
    /// Test-only fault injection (see FaultInjection.swift).
    var faults: FaultInjector? = nil
    #endif

    init(ring: consuming Ring) {
        capacityLimit = Int(ring.submissionEntries)
        table = OperationTable(initialCount: Int(ring.submissionEntries) * 2)
        statistics.submissionEntries = Int(ring.submissionEntries)
        statistics.completionEntries = Int(ring.completionEntries)
        statistics.setupMode = ring.setupMode
        self.ring = ring
        completions = .allocate(capacity: RingCore.completionBatch)
        cqeScratch = .allocate(capacity: RingCore.completionBatch)
        cqeScratch.initialize(repeating: nil, count: RingCore.completionBatch)
        // SAFETY: calloc's zero pages are only touched (and only then resident) for descriptor
        // numbers in use: 4 MiB of address space per ring, a few KiB of memory. Freed in deinit.
        descriptorUse = calloc(DescriptorUse.bucketCount, MemoryLayout<UInt32>.stride)!
            .bindMemory(to: UInt32.self, capacity: DescriptorUse.bucketCount)
        inboxJobs.reserveCapacity(64)
    }

    deinit {
        free(descriptorUse)
        completions.deallocate()
        cqeScratch.deallocate()
    }
}

/// Hands the ring set-up result from the new thread back to the initializer.
private final class StartupSignal: @unchecked Sendable {
    private var semaphore = sem_t()
    private var error: IOError?
    init() { sem_init(&semaphore, 0, 0) }
    deinit { sem_destroy(&semaphore) }
    func signal(_ error: IOError?) {
        self.error = error
        sem_post(&semaphore)
    }
    func wait() -> IOError? {
        while sem_wait(&semaphore) != 0 {}
        return error
    }
}

private final class ThreadContext {
    let executor: RingExecutor
    let entries: UInt32
    let startup: StartupSignal
    init(executor: RingExecutor, entries: UInt32, startup: StartupSignal) {
        self.executor = executor
        self.entries = entries
        self.startup = startup
    }
}

/// The thread-local marker of the ring thread (`pthread_self()` is declared const in glibc and
/// can be hoisted across an `await` under -O, so it is not used for this).
let ringThreadKey: pthread_key_t = {
    var key = pthread_key_t()
    precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
    return key
}()
