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
@safe public final class RingExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    // SAFETY (@safe): `driver`, `local` and `wakeBuffer` are allocated in init and freed in deinit, after the ring's
    // thread has ended; only that thread touches `driver` and `local`.
    // @unchecked Sendable: `driver` and `local` are touched only by the ring thread (the loop and the jobs it
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
    let spinNanoseconds: UInt64

    /// The ring, its operations and streams (ring thread only; set up on that thread).
    let driver: UnsafeMutablePointer<RingDriver>
    let driverReady = Atomic<Bool>(false)
    /// The jobs ready to run and the loop's scratch buffers (ring thread only).
    let local: UnsafeMutablePointer<LoopState>
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
    let abandon = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Serializes joining the thread (shutdown may be called from several threads).
    private let joinLock = Lock(())
    private let ownsThread: Bool
    /// The driver asked for, and the one that runs (set on the ring's thread before `init`
    /// returns).
    let preference: RingBackendPreference
    private let runningBackend = Atomic<UInt8>(0)

    /// The driver this ring runs on: ``RingBackend/ioUring``, or ``RingBackend/epoll`` where
    /// io_uring is denied or was not asked for.
    public var backend: RingBackend {
        runningBackend.load(ordering: .acquiring) == 1 ? .epoll : .ioUring
    }

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
    ///   - backend: The driver (see ``RingBackendPreference``); `nil` (the default) reads
    ///     `SWIFT_URING_BACKEND`, automatic when unset: io_uring, or the epoll driver where
    ///     io_uring is denied. ``backend`` says which one runs.
    /// - Throws: ``IOError`` with code ``IOError/Code/ringUnavailable`` when io_uring was asked
    ///   for and cannot be set up (with `.automatic`, only when the epoll driver cannot be set up
    ///   either); its description says why (sysctl, seccomp, memlock).
    ///   ``IOError/Code/unsupported`` when io_uring was asked for and the kernel lacks an
    ///   operation the runtime uses. ``IOError/Code/invalidArgument`` for a parameter out of
    ///   range, or a `SWIFT_URING_BACKEND` that names no driver.
    public convenience init(
        entries: Int = 256, jobBudget: Int = 256, name: String = "swift-uring",
        receiveBufferCount: Int = 1024, receiveBufferSize: Int = 4096, spinBeforeSleep: Duration = .zero,
        backend: RingBackendPreference? = nil
    ) throws(IOError) {
        try self.init(
            entries: entries, jobBudget: jobBudget, name: name, receiveBufferCount: receiveBufferCount,
            receiveBufferSize: receiveBufferSize, spinBeforeSleep: spinBeforeSleep, backend: backend,
            donatingCurrentThread: false)
    }

    init(
        entries: Int, jobBudget: Int, name: String, receiveBufferCount: Int = 1024, receiveBufferSize: Int = 4096,
        spinBeforeSleep: Duration = .zero, backend: RingBackendPreference? = nil, donatingCurrentThread: Bool
    ) throws(IOError) {
        guard entries >= 1, entries <= 32768, jobBudget >= 1,
            receiveBufferCount >= 1, receiveBufferCount <= 32768, receiveBufferCount & (receiveBufferCount - 1) == 0,
            receiveBufferSize >= 1, receiveBufferSize <= 1 << 20,
            spinBeforeSleep >= .zero, spinBeforeSleep <= .milliseconds(10)
        else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)
        }
        let preference: RingBackendPreference
        if let backend { preference = backend } else { preference = try RingBackendPreference.fromEnvironment() }
        self.preference = preference
        self.spinBeforeSleep = spinBeforeSleep
        spinNanoseconds = nanoseconds(spinBeforeSleep)
        self.jobBudget = jobBudget
        self.name = name
        self.receiveBufferCount = receiveBufferCount
        self.receiveBufferSize = receiveBufferSize
        ringID = RingExecutor.nextRingID.add(1, ordering: .relaxed).oldValue
        self.ownsThread = !donatingCurrentThread
        isolation = RingIsolation()
        let fd = RingDriver.makeWakeDescriptor()
        guard fd >= 0 else { throw IOError.system(Glibc.errno, .setup) }
        wakeFD = fd
        inbox.withLock { $0.wakeFD = fd }
        unsafe wakeBuffer = .allocate(capacity: 1)

        unsafe wakeBuffer.initialize(to: 0)
        unsafe driver = .allocate(capacity: 1)
        unsafe local = .allocate(capacity: 1)
        unsafe local.initialize(to: LoopState())
        unsafe isolation.ring = self
        if donatingCurrentThread {
            // On failure deinit runs (every stored property is set) and closes the eventfd.
            try setUpOnCurrentThread(entries: UInt32(entries))
            return
        }
        let startup = StartupSignal()
        let context = unsafe Unmanaged.passRetained(
            ThreadContext(executor: self, entries: UInt32(entries), startup: startup))
        var tid = pthread_t()
        let rc = unsafe pthread_create(
            &tid, nil,
            { raw in
                let context = unsafe Unmanaged<ThreadContext>.fromOpaque(raw!).takeRetainedValue()
                context.executor.threadMain(entries: context.entries, startup: context.startup)
                return nil
            }, unsafe context.toOpaque())
        guard rc == 0 else {
            unsafe context.release()
            throw IOError.system(rc, .setup)
        }
        if let error = startup.wait() {
            pthread_join(tid, nil)
            throw error
        }
        thread = tid
    }

    deinit {
        if driverReady.load(ordering: .acquiring) {
            unsafe driver.deinitialize(count: 1)
        }
        closeWakeDescriptor()
        unsafe driver.deallocate()
        unsafe local.deinitialize(count: 1)
        unsafe local.deallocate()
        unsafe wakeBuffer.deallocate()
    }

    // MARK: - Thread

    private func setUpOnCurrentThread(entries: UInt32) throws(IOError) {
        #if DEBUG
        let ring = try Ring(
            entries: entries, preference: preference,
            injectedFailures: FaultInjector.takeSetupFailures(ofRingNamed: name),
            injectedMissingFeature: FaultInjector.takeMissingFeature(ofRingNamed: name),
            injectedLackingOpcodes: FaultInjector.takeLackingOpcodes(ofRingNamed: name))
        #else
        let ring = try Ring(entries: entries, preference: preference)
        #endif
        runningBackend.store(ring.backend == .epoll ? 1 : 0, ordering: .releasing)
        if ring.submissionEntries < entries {
            StallDetector.current.logger.warning(
                "io_uring_setup: not enough kernel memory for \(entries) entries; ring '\(name)' runs with \(ring.submissionEntries)"
            )
        }
        unsafe driver.initialize(
            to: RingDriver(
                ring: ring, ringID: ringID, receiveBufferCount: receiveBufferCount,
                receiveBufferSize: receiveBufferSize, wakeFD: wakeFD, wakeBuffer: wakeBuffer))
        driverReady.store(true, ordering: .releasing)
        RingExecutor.setCurrent(self)
        unsafe driver.pointee.armWakeRead()
        unsafe RingExecutor.registry.withLock { unsafe $0[ringID] = unsafe Unmanaged.passUnretained(self) }
        unsafe messageFD.store(driver.pointee.ring.fileDescriptor, ordering: .releasing)
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
        let fd = unsafe open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = unsafe bytes.withUnsafeBytes { unsafe write(fd, $0.baseAddress, $0.count) }
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
        guard let raw = unsafe pthread_getspecific(ringThreadKey) else { return nil }
        return unsafe Unmanaged<RingExecutor>.fromOpaque(raw).takeUnretainedValue()
    }

    /// The ring whose thread is the calling thread, unretained (no reference count traffic on
    /// the hot path: a ring outlives its thread's loop).
    @inline(__always)
    static var currentUnretained: Unmanaged<RingExecutor>? {
        guard let raw = unsafe pthread_getspecific(ringThreadKey) else { return nil }
        return unsafe Unmanaged<RingExecutor>.fromOpaque(raw)
    }

    /// This ring's bit in the process-wide descriptor masks (see DescriptorUse.swift).
    var useBit: UInt64 { 1 << UInt64(ringID & 63) }

    /// True on this ring's own thread.
    @inline(__always)
    var isCurrentRing: Bool {
        unsafe pthread_getspecific(ringThreadKey) == Unmanaged.passUnretained(self).toOpaque()
    }

    static func setCurrent(_ executor: RingExecutor?) {
        unsafe pthread_setspecific(ringThreadKey, executor.map { unsafe Unmanaged.passUnretained($0).toOpaque() })
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
        unsafe UnownedSerialExecutor(ordinary: isolation)
    }

    @inline(__always)
    func enqueue(_ job: ReadyJob) {
        if isCurrentRing {
            unsafe local.pointee.ready.append(job)
            return
        }
        if !jobQueue.push(job) {
            inbox.withLock { $0.jobs.append(job) }  // the lock-free queue is full: never refuse
        }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        wakeIfSleeping()
    }
}

/// Hands the ring set-up result from the new thread back to the initializer.
private final class StartupSignal: @unchecked Sendable {
    private var semaphore = sem_t()
    private var error: IOError?
    init() { unsafe sem_init(&semaphore, 0, 0) }
    deinit { unsafe sem_destroy(&semaphore) }
    func signal(_ error: IOError?) {
        self.error = error
        unsafe sem_post(&semaphore)
    }
    func wait() -> IOError? {
        while unsafe sem_wait(&semaphore) != 0 {}
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
    unsafe precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
    return key
}()
