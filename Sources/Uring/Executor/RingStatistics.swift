/// Counters of one ring, read with ``RingExecutor/statistics()``.
public struct RingStatistics: Sendable, Hashable {
    /// The driver the ring runs on (see ``RingBackend``).
    public var backend: RingBackend = .ioUring
    /// What the epoll driver did with the operations (all zero on io_uring): how many completed
    /// at once, waited for readiness, or ran on the worker pool.
    public var epoll = EpollDriverCounters()
    /// Submission queue entries the kernel gave the ring.
    public var submissionEntries = 0
    /// Completion queue entries the kernel gave the ring.
    public var completionEntries = 0
    /// Which set-up flags the kernel accepted ("single-issuer+defer-taskrun" is the best).
    public var setupMode = ""
    /// Operations submitted to the kernel.
    public var submitted: UInt64 = 0
    /// Page-cache reads the awaiting task completed itself, without a submission or a
    /// suspension (`preadv2` with `RWF_NOWAIT`, tried when nothing else on the ring was ready to
    /// batch with); see Docs/DESIGN.md, "Reads without waiting".
    public var readsWithoutWaiting: UInt64 = 0
    /// Such tries that found the data not in the page cache: the read then went the
    /// asynchronous way (the kernel ring, or the epoll driver's worker pool).
    public var readsThatWouldBlock: UInt64 = 0
    /// Statuses of open descriptors (``File/status()``) made at once on the ring's thread: on a
    /// local file system `statx` of a descriptor reads the inode in memory, while the kernel
    /// ring would hand it to a worker thread (Docs/DESIGN.md, "Reads without waiting").
    public var statusesWithoutWaiting: UInt64 = 0
    /// System calls made to learn how a descriptor may be used on the ring's thread: an `fcntl`
    /// before its first read (`O_DIRECT`?), an `fstatfs` before its first status (a local file
    /// system?). None for files opened by ``File/open(_:_:options:permissions:)`` (their flags
    /// are known) and no `fstatfs` for files opened beneath a directory
    /// (``File/open(_:beneath:options:)``: the directory's answer, learnt once, holds for them).
    public var descriptorChecks: UInt64 = 0
    /// `sendfile(2)` calls made on the ring's thread for page-cached file ranges (bytes sent
    /// from the page cache into a socket without a copy through user space).
    public var filesSentWithoutCopy: UInt64 = 0
    /// Operations whose opcode this kernel ring lacks (its opcode probe did not list it),
    /// made on the blocking pool instead: `ftruncate` before Linux 6.9, for example.
    public var operationsOnWorkers: UInt64 = 0
    /// Completion queue entries processed (operations, deadlines, cancels, wake-ups).
    public var completions: UInt64 = 0
    /// `io_uring_enter` calls made by the loop.
    public var enterCalls: UInt64 = 0
    /// Jobs (task slices) run on the ring.
    public var jobsRun: UInt64 = 0
    /// Operations that had to wait in user space because the ring was full.
    public var waitedForCapacity: UInt64 = 0
    /// Operations still in the kernel after the loop iteration that submitted them (they then
    /// register for task cancellation; the others complete without that cost).
    public var waitedBeyondOneIteration: UInt64 = 0
    /// Async cancels submitted for cancelled tasks.
    public var cancelsSubmitted: UInt64 = 0
    /// Times the kernel reported CQ overflow (completions it held back until drained).
    public var completionQueueOverflows: UInt64 = 0
    /// Multishot operations (accept, receive) armed, re-arms included.
    public var multishotArmed: UInt64 = 0
    /// Times a multishot receive found no free buffer (`ENOBUFS`) and waited for one.
    public var receiveBufferShortages: UInt64 = 0
    /// Times a stream's queue was full and its multishot operation was paused (flow control).
    public var streamPauses: UInt64 = 0
    /// Wake-up messages this ring sent to other rings (`IORING_OP_MSG_RING`).
    public var messagesSent: UInt64 = 0
    /// Jobs that held the ring longer than ``StallDetector/threshold``.
    public var stalls: UInt64 = 0
    /// The longest time one job held the ring, as far as the stall detector saw (it samples every
    /// half threshold; zero until a job outlasts a sampling period).
    public var longestStall: Duration = .zero
    /// Completions that matched no live operation (should stay 0).
    public var strayCompletions: UInt64 = 0
    /// Operations submitted again after a transient failure (`EINTR`, or `EAGAIN` once the
    /// descriptor was ready).
    public var retries: UInt64 = 0
    /// Operations now holding a slot in the operation table (in the kernel, waiting, or resuming).
    public var operationsInTable = 0
    /// Slots the operation table has allocated (it grows by chunks and never shrinks).
    public var tableCapacity = 0
    /// Buffers in the ring's receive buffer pool (0 until the first multishot receive).
    public var receiveBufferCount = 0
    /// Of those, the ones the kernel can fill now (the others hold data not yet consumed).
    public var receiveBuffersAvailable = 0
}

extension RingExecutor {
    /// A snapshot of this ring's counters, taken on the ring thread.
    ///
    /// ```swift
    /// let stats = await ring.statistics()
    /// print(stats.operationsInTable, stats.enterCalls)
    /// ```
    @concurrent
    public func statistics() async -> RingStatistics {
        await withTaskExecutorPreference(self) {
            precondition(isCurrentRing)
            var snapshot = unsafe driver.pointee.statistics
            snapshot.backend = unsafe driver.pointee.ring.backend
            if let soft = unsafe driver.pointee.ring.soft {
                snapshot.epoll = unsafe soft.pointee.counters
                // Not counting the ring's own wake-up read, which is always there.
                let wakeRead = UInt64(CompletionTag.wake.rawValue) << 56
                snapshot.epoll.requestsHeld =
                    unsafe soft.pointee.requests.inUse - (soft.pointee.byUserData[wakeRead] == nil ? 0 : 1)
            }
            snapshot.operationsInTable = unsafe driver.pointee.table.activeCount
            snapshot.tableCapacity = unsafe driver.pointee.table.slotCount
            snapshot.stalls = stallCount.load(ordering: .relaxed)
            snapshot.longestStall = .nanoseconds(Int64(longestStallNanoseconds.load(ordering: .relaxed)))
            if let pool = unsafe driver.pointee.bufferPool {
                snapshot.receiveBufferCount = pool.count
                snapshot.receiveBuffersAvailable = pool.available
            }
            return snapshot
        }
    }
}
