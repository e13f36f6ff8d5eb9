internal import CLiburing
import Glibc

/// The epoll driver: a ring in user space that reads the same submission entries the operation
/// definitions encode and posts the same completions the kernel would, so everything above the
/// ``Ring`` (the ``RingDriver``'s slots, capacity, cancellation, deadlines, streams, close) runs
/// unchanged on it (Docs/DESIGN.md §3.2).
///
/// Its queues are laid out like a kernel ring's (an `io_uring` whose head, tail and entry
/// pointers point into memory this type owns), so liburing's inline helpers (`io_uring_get_sqe`,
/// `io_uring_peek_batch_cqe`, `io_uring_cq_advance`) work on it as they are; only entering the
/// kernel is replaced, by ``enter(wait:)``. Each entry then:
/// - completes at once when it can (a no-op, a cancel, a close, a socket call or page-cache
///   read that does not block: `MSG_DONTWAIT`, `RWF_NOWAIT`);
/// - or waits for readiness in epoll (level-triggered, registered once per descriptor) and is
///   retried;
/// - or runs on the ``FileWorkerPool`` (regular files and path operations), whose result comes
///   back through a ``PoolMailbox``;
/// - or waits for its deadline in a timer heap (`TIMEOUT`, `LINK_TIMEOUT`).
///
/// Ring thread only, like the `Ring` that owns it.
@safe struct SoftRing: ~Copyable {
    // SAFETY (@safe): the queue memory, the event array and `raw`'s fields are set up in init and freed in deinit;
    // request pointers come from `requests`, whose chunks never move; addresses in entries were lent by tasks that
    // stay suspended until the request's final completion.
    static let eventBatch = 256
    /// The epoll token of the mailbox's eventfd (descriptors use their number).
    static let mailboxToken = UInt64.max

    let submissionEntries: UInt32
    let completionEntries: UInt32
    private let sqMask: UInt32
    private let cqMask: UInt32
    /// sq head, sq tail, sq flags, sq dropped, sq mask, sq entries, cq head, cq tail, cq flags,
    /// cq overflow, cq mask, cq entries: the words a kernel ring shares with user space.
    private let words: UnsafeMutablePointer<UInt32>
    private let sqes: UnsafeMutablePointer<io_uring_sqe>
    private let cqes: UnsafeMutablePointer<io_uring_cqe>
    private let raw: UnsafeMutablePointer<io_uring>
    private let events: UnsafeMutablePointer<epoll_event>
    let epollFD: Int32
    let mailbox: PoolMailbox
    let pool: FileWorkerPool
    var requests = RequestSlab()
    /// Requests still held, by `user_data` (the target of a cancel).
    var byUserData: [UInt64: Int32] = [:]
    var descriptors = DescriptorTable()
    var timers = TimerHeap()
    /// Completions that found the completion queue full, posted first at the next enter.
    var overflow = FIFO<Completion>(initialCapacity: 64)
    var poolResults: [PoolMailbox.Result] = []
    /// Requests the pool has not handed back yet.
    var pooledCount = 0
    /// The provided-buffer ring of group `bufferGroup` (the runtime uses one group).
    var buffers: ProvidedBuffers? = nil
    var bufferGroup: UInt16 = 0
    var scratch: [Int32] = []
    /// Set by `attempt`: the last receive filled less than its buffer.
    var shortRead = false
    var hasWaitWithTimespec = true
    /// Counts ``enter(wait:)`` calls: the driver's clock for how long a registration went unused.
    var turn: UInt32 = 0
    /// After this many turns without a wait or report, a registration is confirmed before it is
    /// relied on again (see ``startWaiting(_:events:linked:)``).
    static let staleTurns: UInt32 = 4
    var counters = EpollDriverCounters()

    /// The requests waiting for readiness on one descriptor, oldest first, and its epoll state:
    /// a persistent level-triggered registration that covers at least what the list waits for
    /// (widened when a waiter needs more, narrowed or parked when a report finds nobody waiting
    /// for it). A close through the runtime forgets it on every ring that used the descriptor
    /// (``forgetDescriptor(_:)``), before the number can be reused.
    struct Waiters {
        var head: Int32 = -1
        var tail: Int32 = -1
        /// In the epoll set.
        var registered = false
        /// The events it is registered for (0: parked).
        var interest: UInt32 = 0
        /// The ``SoftRing/turn`` of its last wait or report.
        var lastTurn: UInt32 = 0
        /// Whether its receives report TCP_INQ (see ``SoftRing/receive(_:_:_:_:)``).
        var inq = InqState.unknown
        /// Its last receive filled the buffer: the next asks TCP_INQ whether more is queued.
        var filled = false
        /// 0 unknown, 1 buffered, 2 opened with `O_DIRECT` (reads and writes go to the pool).
        var direct: UInt8 = 0
        /// Set by this driver (a listening socket): accept never blocks.
        var nonblocking = false
        /// The last receive came back short or would have blocked, and no event said input
        /// came since: the next receive waits without trying first. Only a hint: a wrong one
        /// costs an event (the level-triggered registration fires at once when data is there).
        var drained = false
    }

    enum InqState: UInt8 { case unknown, on, off }

    /// A provided-buffer ring (`io_uring_buf_ring` layout) that buffered receives take from.
    ///
    /// Buffers are handed out last returned, first used: every entry the pool has returned is
    /// moved onto `free`, a stack, and receives take its top. The kernel's order (first returned,
    /// first used) cycles through every buffer of the pool (4 MiB by default), so each receive
    /// writes memory that left the cache long ago; a stack keeps reusing the few buffers in
    /// flight, hot in the cache.
    @safe struct ProvidedBuffers {
        // SAFETY (@safe): `ring` is the BufferPool's mapping, which outlives the ring (the driver drops the pool
        // after the ring's teardown); `free` holds `mask + 1` entries, allocated with this value and freed in
        // the ring's deinit.
        var ring: UnsafeMutablePointer<io_uring_buf>
        var mask: UInt16
        var head: UInt16
        var free: UnsafeMutablePointer<io_uring_buf>
        var freeCount = 0
    }

    /// Sets up the queues in `raw` (allocated by the caller, not yet initialized) for `entries`
    /// submission entries, rounded up to a power of two, and twice as many completions.
    init(raw: UnsafeMutablePointer<io_uring>, entries requested: UInt32) throws(IOError) {
        var entries: UInt32 = 1
        while entries < requested { entries <<= 1 }
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw IOError.system(Glibc.errno, .setup) }
        let notify = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard notify >= 0 else {
            let error = Glibc.errno
            close(epoll)
            throw IOError.system(error, .setup)
        }
        var event = unsafe epoll_event()
        unsafe event.events = EPOLLIN.rawValue
        unsafe event.data.u64 = Self.mailboxToken
        guard unsafe epoll_ctl(epoll, EPOLL_CTL_ADD, notify, &event) == 0 else {
            let error = Glibc.errno
            close(epoll)
            close(notify)
            throw IOError.system(error, .setup)
        }
        epollFD = epoll
        mailbox = PoolMailbox(eventFD: notify)
        pool = FileWorkerPool.shared
        submissionEntries = entries
        completionEntries = entries * 2
        sqMask = entries - 1
        cqMask = entries * 2 - 1
        unsafe words = .allocate(capacity: 12)
        unsafe words.initialize(repeating: 0, count: 12)
        unsafe words[4] = sqMask
        unsafe words[5] = entries
        unsafe words[10] = cqMask
        unsafe words[11] = entries * 2
        unsafe sqes = .allocate(capacity: Int(entries))
        unsafe sqes.initialize(repeating: io_uring_sqe(), count: Int(entries))
        unsafe cqes = .allocate(capacity: Int(entries * 2))
        unsafe cqes.initialize(repeating: io_uring_cqe(), count: Int(entries * 2))
        unsafe events = .allocate(capacity: Self.eventBatch)
        unsafe events.initialize(repeating: epoll_event(), count: Self.eventBatch)
        unsafe self.raw = unsafe raw
        // SAFETY: the pointers below stay valid until deinit; liburing's inline helpers read the
        // same fields of a kernel ring (flags 0: no SQPOLL, 64-byte entries, 16-byte completions).
        var ring = unsafe io_uring()
        unsafe ring.sq.khead = unsafe words
        unsafe ring.sq.ktail = unsafe words + 1
        unsafe ring.sq.kflags = unsafe words + 2
        unsafe ring.sq.kdropped = unsafe words + 3
        unsafe ring.sq.kring_mask = unsafe words + 4
        unsafe ring.sq.kring_entries = unsafe words + 5
        unsafe ring.sq.sqes = unsafe sqes
        unsafe ring.sq.ring_mask = sqMask
        unsafe ring.sq.ring_entries = entries
        unsafe ring.cq.khead = unsafe words + 6
        unsafe ring.cq.ktail = unsafe words + 7
        unsafe ring.cq.kflags = unsafe words + 8
        unsafe ring.cq.koverflow = unsafe words + 9
        unsafe ring.cq.kring_mask = unsafe words + 10
        unsafe ring.cq.kring_entries = unsafe words + 11
        unsafe ring.cq.cqes = unsafe cqes
        unsafe ring.cq.ring_mask = cqMask
        unsafe ring.cq.ring_entries = entries * 2
        unsafe ring.ring_fd = -1
        unsafe ring.enter_ring_fd = -1
        unsafe raw.initialize(to: ring)
        byUserData.reserveCapacity(Int(entries) * 2)
        scratch.reserveCapacity(64)
        poolResults.reserveCapacity(256)
    }

    /// Waits until the pool has handed back every request (those cancelled while queued come
    /// back too) before the ring's memory may go. Called by the owning `Ring` before deinit.
    mutating func waitForPool() {
        while pooledCount > 0 {
            var waiter = pollfd(fd: mailbox.eventFD, events: Int16(POLLIN), revents: 0)
            _ = unsafe poll(&waiter, 1, 100)
            drainEventFD(mailbox.eventFD)
            drainMailbox()
        }
    }

    deinit {
        close(epollFD)
        unsafe raw.deinitialize(count: 1)
        unsafe words.deallocate()
        unsafe sqes.deallocate()
        unsafe cqes.deallocate()
        unsafe events.deallocate()
        if let pool = buffers { unsafe pool.free.deallocate() }
    }

    // MARK: - Entering

    /// Consumes every queued submission entry, collects what completed meanwhile (worker
    /// results, expired timers, ready descriptors) and, with `wait`, sleeps in `epoll_wait`
    /// until something completes when nothing has. Returns the number of entries consumed, or
    /// `-EINTR`.
    mutating func enter(wait: Bool) -> Int32 {
        turn &+= 1
        if !overflow.isEmpty { flushOverflow() }
        let consumed = consumeSubmissions()
        if pooledCount > 0 { drainMailbox() }
        var now: UInt64 = 0
        if !timers.isEmpty {
            now = monotonicClockNanoseconds()
            expireTimers(now)
        }
        var timeout: Int64 = 0
        if wait && completionsReady == 0 {
            timeout = nextTimerDelay(now)
        }
        let rc = waitForReadiness(timeout: timeout)
        if !timers.isEmpty { expireTimers(monotonicClockNanoseconds()) }
        return rc < 0 ? rc : Int32(consumed)
    }

    /// Completions posted and not yet reaped.
    var completionsReady: UInt32 {
        unsafe words[7] &- words[6]
    }

    /// True when completions wait for room in the completion queue.
    var hasOverflow: Bool { !overflow.isEmpty }

    /// The pending-submission count, as `io_uring_sq_ready` computes it.
    var pendingSubmissions: UInt32 {
        unsafe raw.pointee.sq.sqe_tail &- words[0]
    }

    private mutating func consumeSubmissions() -> Int {
        var head = unsafe words[0]
        let tail = unsafe raw.pointee.sq.sqe_tail
        var consumed = 0
        while head != tail {
            let sqe = unsafe sqes + Int(head & sqMask)
            head &+= 1
            consumed += 1
            var linked: UnsafeMutablePointer<io_uring_sqe>? = nil
            if unsafe sqe.pointee.flags & cliburing_sqe_flag_io_link() != 0, head != tail {
                let next = unsafe sqes + Int(head & sqMask)
                if unsafe UInt32(next.pointee.opcode) == IORING_OP_LINK_TIMEOUT.rawValue {
                    unsafe linked = unsafe next
                    head &+= 1
                    consumed += 1
                }
            }
            unsafe issue(sqe, linked: linked)
        }
        // Publishes the space (io_uring_get_sqe reads the head).
        unsafe words[0] = head
        unsafe words[1] = head
        return consumed
    }

    /// Posts one completion (into the overflow list when the queue is full).
    @inline(__always)
    mutating func post(_ userData: UInt64, _ result: Int32, _ flags: UInt32 = 0) {
        if !overflow.isEmpty || !write(Completion(userData: userData, result: result, flags: flags)) {
            overflow.append(Completion(userData: userData, result: result, flags: flags))
        }
    }

    /// Writes one completion at the CQ's tail; false when the queue is full.
    @inline(__always)
    private mutating func write(_ completion: Completion) -> Bool {
        let tail = unsafe words[7]
        guard tail &- (unsafe words[6]) < completionEntries else { return false }
        let cqe = unsafe cqes + Int(tail & cqMask)
        unsafe cqe.pointee.user_data = completion.userData
        unsafe cqe.pointee.res = completion.result
        unsafe cqe.pointee.flags = completion.flags
        unsafe words[7] = tail &+ 1
        return true
    }

    private mutating func flushOverflow() {
        while let completion = overflow.first, write(completion) { _ = overflow.popFirst() }
    }

    /// One `epoll_wait` (`timeout`: nanoseconds, 0 to poll, -1 to sleep until an event), then
    /// the ready descriptors' requests are retried.
    private mutating func waitForReadiness(timeout: Int64) -> Int32 {
        var count: Int32 = -ENOSYS
        if hasWaitWithTimespec {
            count = unsafe cliburing_epoll_wait(epollFD, events, Int32(Self.eventBatch), timeout)
            if count == -ENOSYS { hasWaitWithTimespec = false }
        }
        if !hasWaitWithTimespec {
            // Before Linux 5.11: milliseconds, rounded up.
            let milliseconds =
                timeout <= 0 ? Int32(timeout) : Int32(min(Int64(Int32.max), (timeout + 999_999) / 1_000_000))
            count = unsafe epoll_wait(epollFD, events, Int32(Self.eventBatch), milliseconds)
            if count < 0 { count = -Glibc.errno }
        }
        if count < 0 { return count }
        counters.epollWaits &+= 1
        for i in 0..<Int(count) {
            let event = unsafe events[i]
            if unsafe event.data.u64 == Self.mailboxToken {
                drainEventFD(mailbox.eventFD)
                drainMailbox()
            } else {
                unsafe descriptorReady(Int32(truncatingIfNeeded: event.data.u64), events: event.events)
            }
        }
        return 0
    }

    private func drainEventFD(_ fd: Int32) {
        var value: UInt64 = 0
        _ = unsafe read(fd, &value, 8)
    }

    /// Finishes the requests whose pool jobs came back.
    mutating func drainMailbox() {
        mailbox.take(into: &poolResults)
        for i in 0..<poolResults.count {
            let posted = poolResults[i]
            pooledCount -= 1
            let request = unsafe requests[posted.index]
            if unsafe request.pointee.phase == .abandonedOnPool {
                // Its completion was posted when it was cancelled; only the memory was left.
                requests.release(posted.index)
                continue
            }
            finish(posted.index, result: posted.result)
        }
        poolResults.removeAll(keepingCapacity: true)
    }

    // MARK: - Timers

    private mutating func expireTimers(_ now: UInt64) {
        while let top = timers.first, top.deadline <= now {
            _ = timers.popFirst()
            let request = unsafe requests[top.request]
            guard unsafe request.pointee.generation == top.generation else { continue }
            switch unsafe request.pointee.phase {
            case .timer: finish(top.request, result: -ETIME)
            case .linkTimeout: linkTimeoutFired(top.request)
            default: continue
            }
        }
    }

    /// Nanoseconds until the earliest live timer, or -1 when there is none.
    private mutating func nextTimerDelay(_ now: UInt64) -> Int64 {
        while let top = timers.first {
            let request = unsafe requests[top.request]
            let live =
                unsafe request.pointee.generation == top.generation
                && (request.pointee.phase == .timer || request.pointee.phase == .linkTimeout)
            if !live {
                _ = timers.popFirst()
                continue
            }
            let current = now == 0 ? monotonicClockNanoseconds() : now
            return top.deadline > current ? Int64(top.deadline - current) : 0
        }
        return -1
    }

    /// Arms a timer for request `index` that expires `timespec` from now (or at it, `absolute`).
    mutating func startTimer(_ index: Int32, timespec address: UInt64, absolute: Bool) {
        let request = unsafe requests[index]
        var nanoseconds: UInt64 = 0
        if let timespec = unsafe UnsafePointer<__kernel_timespec>(bitPattern: UInt(address)) {
            let seconds = unsafe max(0, timespec.pointee.tv_sec)
            let fraction = unsafe max(0, timespec.pointee.tv_nsec)
            nanoseconds =
                UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ UInt64(fraction)
        }
        let deadline = absolute ? nanoseconds : monotonicClockNanoseconds() &+ nanoseconds
        unsafe timers.push(.init(deadline: deadline, request: index, generation: request.pointee.generation))
    }

    // MARK: - Provided buffers

    /// Registers a provided-buffer ring (what `io_uring_register_buf_ring` does for the kernel).
    mutating func registerBuffers(group: UInt16, ring: UnsafeMutableRawPointer, entries: UInt32) {
        if let old = buffers { unsafe old.free.deallocate() }
        bufferGroup = group
        unsafe buffers = ProvidedBuffers(
            ring: ring.bindMemory(to: io_uring_buf.self, capacity: Int(entries)), mask: UInt16(entries - 1), head: 0,
            free: .allocate(capacity: Int(entries)))
    }

    /// The free buffer of `group` that the next receive takes (the last one returned), or nil.
    mutating func peekBuffer(_ group: UInt16) -> (address: UnsafeMutableRawPointer, length: Int, id: UInt16)? {
        guard group == bufferGroup, var pool = buffers else { return nil }
        // The tail overlays the first entry's `resv` field (struct io_uring_buf_ring). Entries
        // between our head and it were returned since the last look, oldest first: onto the
        // stack, so the newest ends on top. (At most `mask + 1` buffers exist, so it never
        // overflows.)
        let tail = unsafe pool.ring.pointee.resv
        if tail != pool.head {
            while pool.head != tail {
                unsafe pool.free[pool.freeCount] = unsafe pool.ring[Int(pool.head & pool.mask)]
                pool.freeCount += 1
                pool.head &+= 1
            }
            buffers = pool
        }
        guard pool.freeCount > 0 else { return nil }
        let entry = unsafe pool.free[pool.freeCount - 1]
        guard let address = unsafe UnsafeMutableRawPointer(bitPattern: UInt(entry.addr)) else { return nil }
        return unsafe (address, Int(entry.len), entry.bid)
    }

    /// The buffer ``peekBuffer(_:)`` returned is taken.
    mutating func consumeBuffer(_ group: UInt16) {
        if group == bufferGroup, let count = buffers?.freeCount, count > 0 { buffers?.freeCount = count - 1 }
    }
}

#if DEBUG
/// Debug builds: `SWIFT_URING_TRACE_EPOLL=1` prints what the epoll driver does, to standard error.
let softRingTracing = unsafe getenv("SWIFT_URING_TRACE_EPOLL") != nil

func softRingTrace(_ epoll: Int32, _ message: @autoclosure () -> String) {
    guard softRingTracing else { return }
    var line = "[epoll \(epoll)] " + message() + "\n"
    line.withUTF8 { _ = unsafe write(2, $0.baseAddress, $0.count) }
}
#endif

/// What the epoll driver did with the entries it consumed (in ``RingStatistics``).
public struct EpollDriverCounters: Sendable, Hashable {
    /// Entries that completed at once, without waiting (a socket call or page-cache read that
    /// did not block, a no-op, a cancel, a close); the ring's own wake-up read is not counted.
    public var completedInline: UInt64 = 0
    /// Entries that waited for readiness in epoll.
    public var waitedForReadiness: UInt64 = 0
    /// Entries that ran on the worker pool (regular files that would block, path operations).
    public var ranOnPool: UInt64 = 0
    /// Socket receives made that found nothing and said `EAGAIN`: each a system call that did
    /// nothing (a receive waits without trying when the last one drained the socket).
    public var receivesThatWouldBlock: UInt64 = 0
    /// `epoll_wait` calls.
    public var epollWaits: UInt64 = 0
    /// `epoll_ctl` calls that added, widened, narrowed or parked a registration (a descriptor
    /// that is waited on again and again costs one, not one per wait).
    public var registrationChanges: UInt64 = 0
    /// Requests the driver holds now (waiting for readiness, on the pool, timers), not counting
    /// the ring's own wake-up read: 0 when the ring is idle.
    public var requestsHeld = 0

    public init() {}
}
