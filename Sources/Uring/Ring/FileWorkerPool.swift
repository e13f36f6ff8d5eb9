import Glibc
import Synchronization

/// The threads that run the epoll driver's regular-file and path operations (`pread`, `pwrite`,
/// `openat`, `statx`, `fsync`, `rename`, `unlink`, `mkdir`): those cannot wait for readiness, and
/// would block a ring. One pool serves every ring in the process; each result goes back to the
/// ring that asked, through its ``PoolMailbox``, and wakes it.
///
/// Jobs are plain values in a growable queue (no allocation per job once it has grown). A job
/// that has not started when it is cancelled is skipped; one that has started is waited for: the
/// ring frees the request, and lets its task return, only after the worker has handed it back, so
/// nothing writes into a caller's buffer after its call returned.
///
/// The number of threads is `SWIFT_URING_WORKERS` when set (1 to 256), else the number of CPUs
/// (at least 2, at most 16). Threads start on demand and stay.
@safe final class FileWorkerPool: @unchecked Sendable {
    // SAFETY (@safe): the mutex and condition are allocated and initialized once and never freed (the pool lives for
    // the process); job pointers name requests that their ring keeps alive until the worker posts them back.
    // @unchecked Sendable: `queue`, `threads` and `idle` are only touched with `mutex` held.

    /// One unit of work: a request of a ring's userspace ring, and where its result goes.
    @safe struct Job {
        // SAFETY (@safe): `request` points into its ring's request slab, which neither moves nor frees it until the
        // worker has posted the job back to `mailbox`.
        var request: UnsafeMutablePointer<SoftRequest>
        var index: Int32
        var mailbox: Unmanaged<PoolMailbox>
    }

    static let shared = FileWorkerPool(maximumThreads: FileWorkerPool.configuredThreads())

    let maximumThreads: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue = FIFO<Job>(initialCapacity: 256)
    private var threads = 0
    private var idle = 0

    init(maximumThreads: Int) {
        self.maximumThreads = maximumThreads
        unsafe pthread_mutex_init(mutex, nil)
        unsafe pthread_cond_init(condition, nil)
    }

    static func configuredThreads() -> Int {
        if let raw = unsafe getenv("SWIFT_URING_WORKERS"), let value = unsafe Int(String(cString: raw)),
            (1...256).contains(value)
        {
            return value
        }
        return min(16, max(2, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
    }

    /// Runs `body` with the pool's lock held: the only way to read or change a request's
    /// ``SoftRequest/poolState``.
    @inline(__always)
    func withLock<Result>(_ body: () -> Result) -> Result {
        unsafe pthread_mutex_lock(mutex)
        defer { unsafe pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Queues `job` (its request's state must be `.queued`, set under the lock by the caller).
    /// If the pool has no thread and cannot start one (`pthread_create` fails: out of memory
    /// or a thread limit), the job fails at once with that error (`EAGAIN`), posted like any
    /// result, rather than waiting for a thread that will never come.
    func enqueueLocked(_ job: Job) {
        if idle > 0 {
            queue.append(job)
            unsafe pthread_cond_signal(condition)
            return
        }
        if threads < maximumThreads {
            let rc = startThread()
            if rc != 0 && threads == 0 {
                unsafe job.request.pointee.poolState = .running
                unsafe job.mailbox.takeUnretainedValue().post(index: job.index, result: -rc, skipped: false)
                return
            }
        }
        queue.append(job)
    }

    /// Starts a worker; returns pthread_create's result (0 on success).
    private func startThread() -> Int32 {
        let context = unsafe Unmanaged.passRetained(self).toOpaque()
        var attributes = pthread_attr_t()
        unsafe pthread_attr_init(&attributes)
        unsafe pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let rc = unsafe pthread_create(
            &thread, &attributes,
            { raw in
                let pool = unsafe Unmanaged<FileWorkerPool>.fromOpaque(raw!).takeRetainedValue()
                RingExecutor.nameCurrentThread("uring-file")
                pool.work()
                return nil
            }, context)
        unsafe pthread_attr_destroy(&attributes)
        if rc == 0 {
            threads += 1
        } else {
            // The jobs wait for a thread that exists (a later job tries to start one again).
            unsafe Unmanaged<FileWorkerPool>.fromOpaque(context).release()
        }
        return rc
    }

    private func work() {
        unsafe pthread_mutex_lock(mutex)
        while true {
            guard let job = queue.popFirst() else {
                idle += 1
                unsafe pthread_cond_wait(condition, mutex)
                idle -= 1
                continue
            }
            // SAFETY: the request stays allocated until its ring receives it back from the mailbox.
            let cancelled = unsafe job.request.pointee.poolState == .cancelled
            unsafe job.request.pointee.poolState = cancelled ? .idle : .running
            unsafe pthread_mutex_unlock(mutex)
            let result: Int32
            if cancelled {
                result = -ECANCELED
            } else {
                // SAFETY: a running request's entry is only read, by this thread, until it is posted.
                result = unsafe SoftRing.perform(&job.request.pointee.sqe)
            }
            unsafe job.mailbox.takeUnretainedValue().post(index: job.index, result: result, skipped: cancelled)
            unsafe pthread_mutex_lock(mutex)
        }
    }
}

/// Where the worker pool leaves one ring's results: a locked list, and an eventfd in the ring's
/// epoll set that wakes it when the list stops being empty.
final class PoolMailbox: @unchecked Sendable {
    // @unchecked Sendable: `results` is only touched with `lock` held; `eventFD` is immutable.
    struct Result {
        var index: Int32
        var result: Int32
        /// The job was cancelled before it started: nothing ran, the request just comes back.
        var skipped: Bool
    }

    let eventFD: Int32
    private let results = Lock<[Result]>([])

    init(eventFD: Int32) {
        self.eventFD = eventFD
        results.withLock { $0.reserveCapacity(256) }
    }

    deinit {
        close(eventFD)
    }

    /// Leaves a result, and wakes the ring if the list was empty. The eventfd is written with
    /// the lock held: once the ring has taken the last result, no worker touches the mailbox.
    func post(index: Int32, result: Int32, skipped: Bool) {
        results.withLock { results in
            results.append(Result(index: index, result: result, skipped: skipped))
            if results.count == 1 {
                var one: UInt64 = 1
                _ = unsafe write(eventFD, &one, 8)
            }
        }
    }

    /// Moves every posted result into `into` (emptied first); the two arrays trade storage, so
    /// neither allocates once both have grown.
    func take(into: inout [Result]) {
        into.removeAll(keepingCapacity: true)
        results.withLock { swap(&$0, &into) }
    }
}
