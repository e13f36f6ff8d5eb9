internal import CLiburing
import Glibc

/// The owner of everything on a ring's thread that the kernel ring touches: the `Ring`, the
/// operation slots, the ring capacity, the waiting line, the provided-buffer pool, the multishot
/// streams and the descriptor bookkeeping of `close()`. It submits, dispatches completions,
/// cancels and re-arms; it is the only code that touches those. The ``RingExecutor`` keeps the
/// thread, the jobs, the inbox and the wake-ups, and awaits operations through this type
/// (`Operations/Perform.swift`).
///
/// Its methods are synchronous and run on the ring's thread only; none of them calls back into
/// the executor except to enqueue a resumed task (which touches the executor's job queue, never
/// the driver), so a mutating access never overlaps another.
///
/// The seam for a second driver: what the executor asks of it is `admit`, `start`, `finish`,
/// `cancel`, `cancelEverything`, `scheduleTimer`, `enter` and `reapCompletions`, and streams
/// through `arm`/`abandon`. A driver without a kernel ring (readiness plus a worker pool) can
/// answer the same calls for the same operation values (see Docs/DESIGN.md).
@safe struct RingDriver: ~Copyable {
    // SAFETY (@safe): every pointer field is allocated in init and freed in deinit; the driver is used on its ring's
    // thread only.
    static let completionBatch = 256

    var ring: Ring
    var table: OperationTable
    /// Operations waiting for ring capacity, oldest first.
    var waiters = FIFO<OperationID>(initialCapacity: 64)
    /// Operations submitted since the last reap (see `perform`'s two phases).
    var fresh = FIFO<OperationID>(initialCapacity: 256)
    var capacity: RingCapacity
    /// Set once shutdown has begun: new operations fail with `executorShutdown`.
    var stopping = false
    let completions: UnsafeMutablePointer<Completion>
    let cqeScratch: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    /// Jobs whose timers fired in the last reap; the executor moves them to its ready queue.
    var firedTimers = FIFO<ReadyJob>(initialCapacity: 16)
    /// The ring's process-unique number and its bit in `DescriptorUse` masks.
    let ringID: UInt32
    let useBit: UInt64
    /// Operations and streams in flight per descriptor (`DescriptorUse.bucketCount` counters), and
    /// the descriptors being closed on this ring: see RingDriver+Closing.swift.
    let descriptorUse: UnsafeMutablePointer<UInt32>
    var closing: [ClosingDescriptor] = []
    /// The receive and accept streams on each descriptor, for close().
    var streams: [Int32: [MultishotStream]] = [:]
    /// The provided buffers multishot receives fill; registered at the first one.
    var bufferPool: BufferPool?
    let receiveBufferCount: Int
    let receiveBufferSize: Int
    /// The eventfd other threads write to wake the ring, and the 8 bytes its read fills (owned
    /// by the executor, which outlives the ring).
    let wakeFD: Int32
    let wakeBuffer: UnsafeMutablePointer<UInt64>
    var statistics = RingStatistics()
    /// Per descriptor number, what ``mayTryWithoutWaiting(_:isRead:)`` learnt (``TryMode`` bits;
    /// 0: nothing yet).
    var readModes: [UInt8] = []
    #if DEBUG
    /// Test-only fault injection (see FaultInjection.swift).
    var faults: FaultInjector? = nil
    #endif

    init(
        ring: consuming Ring, ringID: UInt32, receiveBufferCount: Int, receiveBufferSize: Int, wakeFD: Int32,
        wakeBuffer: UnsafeMutablePointer<UInt64>
    ) {
        capacity = RingCapacity(limit: Int(ring.submissionEntries))
        table = OperationTable(initialCount: Int(ring.submissionEntries) * 2)
        statistics.submissionEntries = Int(ring.submissionEntries)
        statistics.completionEntries = Int(ring.completionEntries)
        statistics.setupMode = ring.setupMode
        statistics.backend = ring.backend
        self.ring = ring
        self.ringID = ringID
        useBit = 1 << UInt64(ringID & 63)
        self.receiveBufferCount = receiveBufferCount
        self.receiveBufferSize = receiveBufferSize
        self.wakeFD = wakeFD
        unsafe self.wakeBuffer = unsafe wakeBuffer
        unsafe completions = .allocate(capacity: RingDriver.completionBatch)
        unsafe cqeScratch = .allocate(capacity: RingDriver.completionBatch)
        unsafe cqeScratch.initialize(repeating: nil, count: RingDriver.completionBatch)
        // SAFETY: calloc's zero pages are only touched (and only then resident) for descriptor
        // numbers in use: 4 MiB of address space per ring, a few KiB of memory. Freed in deinit.
        unsafe descriptorUse = unsafe calloc(DescriptorUse.bucketCount, MemoryLayout<UInt32>.stride)!
            .bindMemory(to: UInt32.self, capacity: DescriptorUse.bucketCount)
    }

    deinit {
        unsafe free(descriptorUse)
        unsafe completions.deallocate()
        unsafe cqeScratch.deallocate()
    }

    // MARK: - Operations

    /// How a submission attempt went.
    enum Start {
        /// In the kernel: store the continuation in the slot.
        case submitted
        /// Not submitted: the task was cancelled, or the ring is stopping.
        case cancelled
        /// Not submitted: a close of its descriptor number is in progress.
        case deferredByClose
    }

    /// Takes a slot for a new operation needing `needed` completions (1, or 2 with a deadline)
    /// and admits it if the ring has room. Returns the slot and whether it was admitted (if not,
    /// the caller waits with ``startWaiting(_:_:)``).
    @inline(__always)
    mutating func admit(needed: UInt8) -> (OperationID, UnsafeMutablePointer<OperationSlot>, admitted: Bool) {
        let id = table.acquire()
        let slot = unsafe table.slot(id.index)
        let admitted = unsafe slot.pointee.admit(needed, capacity: &capacity, othersWaiting: !waiters.isEmpty)
        return unsafe (id, slot, admitted)
    }

    /// Queues an operation that found no room (its task suspends; ``admitWaiters()`` resumes it).
    mutating func startWaiting(_ id: OperationID, _ slot: UnsafeMutablePointer<OperationSlot>) {
        unsafe slot.pointee.startWaiting()
        waiters.append(id)
        statistics.waitedForCapacity &+= 1
    }

    /// Fills and queues the SQEs of `operation` (and of its deadline) for slot `id`, unless the
    /// task is cancelled (`cancelled`) or the ring is stopping.
    @inline(__always)
    mutating func start<Operation: IOOperation>(
        _ operation: Operation, _ id: OperationID, _ slot: UnsafeMutablePointer<OperationSlot>,
        timeout: Duration?, cancelled: Bool
    ) -> Start {
        if unsafe slot.pointee.cancelRequested || stopping || cancelled {
            // Cancelled before anything reached the kernel: nothing to wait for.
            unsafe slot.pointee.cancelledBeforeSubmission(capacity: &capacity)
            admitWaiters()
            return .cancelled
        }
        let needed: UInt8 = timeout == nil ? 1 : 2
        ring.reserveSubmissions(UInt32(needed))
        let sqe = unsafe ring.nextSubmission()
        // SAFETY: the slot (and so its timespecs) is ours until release, after the final CQE.
        unsafe operation.encode(into: sqe, timespec: &slot.pointee.operationTimespec)
        let fd = operation.descriptor
        if fd >= 0 {
            // Counted per descriptor until the slot is released, for close(); published before
            // the look at closes in progress (see RingDriver+Closing.swift).
            noteUse(fd)
            if DescriptorUse.isClosing(fd) {
                // A close of this descriptor number is in progress: nothing new may reach the
                // kernel for it until that is over (see performAfterClose). The SQE is already
                // taken: it becomes a no-op whose completion is ignored.
                noteEnd(fd)
                unsafe ControlEntry.nop(sqe)
                unsafe ControlEntry.setUserData(sqe, id.userData(.cancel))
                unsafe slot.pointee.deferredByClose(capacity: &capacity)
                admitWaiters()
                return .deferredByClose
            }
            unsafe slot.pointee.fd = fd
        }
        unsafe ControlEntry.setUserData(sqe, id.userData(.operation))
        #if DEBUG
        if let faults { unsafe faults.apply(to: sqe, operation: operation.name) }
        #endif
        if let timeout {
            unsafe slot.pointee.timespec = __kernel_timespec(timeout)
            // Room for both was reserved above: the pair is never split across a flush.
            let timeoutSQE = unsafe ring.nextSubmission()
            // SAFETY: as above; the kernel copies the timespec when the SQE is submitted.
            unsafe ControlEntry.deadline(
                after: sqe, timeoutSQE, timespec: &slot.pointee.timespec, userData: id.userData(.linkedTimeout))
        }
        unsafe slot.pointee.submitted(completions: needed)
        fresh.append(id)
        statistics.submitted &+= 1
        return .submitted
    }

    /// Makes the operation's call on the ring's thread, without blocking, before anything is
    /// queued (positioned reads of page-cached data: see Docs/DESIGN.md, "Reads without
    /// waiting"): its outcome, or nil when it would block (or cannot be tried now: the ring is
    /// stopping, the descriptor is being closed, faults are injected), and then it is queued as
    /// usual. The descriptor's use is published around the call exactly as for a queued
    /// operation, so a close on another ring waits for it.
    @inline(__always)
    mutating func tryWithoutWaiting<Operation: IOOperation>(_ operation: Operation) -> OperationOutcome? {
        if stopping { return nil }
        #if DEBUG
        if faults != nil { return nil }
        #endif
        let fd = operation.descriptor
        guard fd >= 0 else { return nil }
        var sqe = io_uring_sqe()
        var timespec = __kernel_timespec()
        unsafe operation.encode(into: &sqe, timespec: &timespec)
        // Reads at the file position are not tried (nothing is counted or published for them).
        guard unsafe SoftRing.canTryWithoutWaiting(&sqe) else { return nil }
        let isRead = unsafe SoftRing.isPositionedRead(&sqe)
        noteUse(fd)
        defer { noteEnd(fd) }
        if DescriptorUse.isClosing(fd) { return nil }
        if !mayTryWithoutWaiting(fd, isRead: isRead) { return nil }
        let result = unsafe SoftRing.tryWithoutWaiting(&sqe)
        guard isRead else {
            // A status: the call's answer, whatever it is (`statx` of a descriptor does not wait).
            if result == -EINTR { return nil }
            statistics.statusesWithoutWaiting &+= 1
            return result >= 0 ? .success(result) : .failure(-result)
        }
        // A pipe or socket read with an offset (the kernel ring ignores the offset of a stream,
        // `preadv2` refuses it), or a file without `RWF_NOWAIT` support: queued, not counted.
        if result == -ESPIPE || result == -EOPNOTSUPP { return nil }
        if result == -EAGAIN || result == -EINTR {
            statistics.readsThatWouldBlock &+= 1
            return nil
        }
        statistics.readsWithoutWaiting &+= 1
        return result >= 0 ? .success(result) : .failure(-result)
    }

    /// What is learnt about a descriptor before a call is tried on the ring's thread.
    enum TryMode {
        /// `O_DIRECT` was checked (one `fcntl`).
        static let directKnown: UInt8 = 1
        /// Opened with `O_DIRECT`: its `RWF_NOWAIT` reads still wait for the device.
        static let direct: UInt8 = 2
        /// The file system was checked (one `fstatfs`).
        static let localKnown: UInt8 = 4
        /// On a local file system, where `statx` of the descriptor reads the inode in memory (a
        /// network or FUSE file system may ask its server).
        static let local: UInt8 = 8
    }

    /// Whether a read (`isRead`) or a status of `fd` may be tried on the ring's thread. A read:
    /// not when `fd` was opened with `O_DIRECT`. A status: only on a local file system. Learnt
    /// with one `fcntl` or `fstatfs` per descriptor and remembered until a close of it visits
    /// this ring (`forgetReadMode`).
    @inline(__always)
    mutating func mayTryWithoutWaiting(_ fd: Int32, isRead: Bool) -> Bool {
        let index = Int(fd)
        if index >= readModes.count {
            readModes.append(contentsOf: repeatElement(0, count: max(index + 1, readModes.count * 2) - readModes.count))
        }
        var mode = readModes[index]
        if isRead {
            if mode & TryMode.directKnown == 0 {
                let direct = cliburing_is_direct(fd)
                statistics.descriptorChecks &+= 1
                if direct < 0 { return false }  // not open (EBADF): queued, and nothing remembered
                mode |= TryMode.directKnown | (direct == 0 ? 0 : TryMode.direct)
                readModes[index] = mode
            }
            return mode & TryMode.direct == 0
        }
        if mode & TryMode.localKnown == 0 {
            guard let learnt = learnFileSystem(fd) else { return false }
            mode = learnt
        }
        return mode & TryMode.local != 0
    }

    /// Learns (one `fstatfs`) whether `fd` is on a local file system, remembers it with the
    /// rest of `fd`'s mode and returns that mode; nil when `fd` is not open (nothing remembered).
    /// `readModes` already has room for `fd`.
    @inline(never)
    mutating func learnFileSystem(_ fd: Int32) -> UInt8? {
        let local = cliburing_is_local_file_system(fd)
        statistics.descriptorChecks &+= 1
        if local < 0 { return nil }
        let mode = readModes[Int(fd)] | TryMode.localKnown | (local == 0 ? 0 : TryMode.local)
        readModes[Int(fd)] = mode
        return mode
    }

    /// `opened` was just opened with `flags`: whether it is `O_DIRECT` is known without an
    /// `fcntl`. With `directory`, it was opened beneath that directory without crossing a mount
    /// point (`RESOLVE_NO_XDEV`), so it is on the directory's file system: what is known about
    /// that (learnt once per directory, and remembered until the directory is closed) holds for
    /// it too, and its first status needs no `fstatfs` of its own. What was remembered about an
    /// earlier descriptor with the same number is replaced.
    mutating func noteOpened(_ opened: Int32, flags: Int32, onFileSystemOf directory: Int32?) {
        guard opened >= 0 else { return }
        let needed = Int(max(directory ?? 0, opened))
        if needed >= readModes.count {
            readModes.append(
                contentsOf: repeatElement(0, count: max(needed + 1, readModes.count * 2) - readModes.count))
        }
        var mode = TryMode.directKnown | (cliburing_flags_have_direct(flags) == 0 ? 0 : TryMode.direct)
        if let directory, directory >= 0 {
            var directoryMode = readModes[Int(directory)]
            if directoryMode & TryMode.localKnown == 0 {
                // The directory's number is published as in use for the check, so a close of it
                // on another ring cannot free the number (and let it be reused) under the `fstatfs`.
                noteUse(directory)
                defer { noteEnd(directory) }
                if !DescriptorUse.isClosing(directory), let learnt = learnFileSystem(directory) {
                    directoryMode = learnt
                }
            }
            mode |= directoryMode & (TryMode.localKnown | TryMode.local)
        }
        readModes[Int(opened)] = mode
    }

    /// `fd` is being closed: what ``mayTryWithoutWaiting(_:isRead:)`` learnt about it no longer holds.
    @inline(__always)
    mutating func forgetReadMode(_ fd: Int32) {
        if Int(fd) < readModes.count { readModes[Int(fd)] = 0 }
    }

    /// The operation's task has its outcome: the slot goes back to the table.
    @inline(__always)
    mutating func finish(_ id: OperationID, _ slot: UnsafeMutablePointer<OperationSlot>) {
        if unsafe slot.pointee.fd >= 0 { unsafe noteEnd(slot.pointee.fd) }
        table.release(id)
    }

    /// Lets waiting operations in, oldest first, while capacity lasts. Each admitted operation has
    /// its capacity reserved before its task resumes, so nobody can overtake it.
    mutating func admitWaiters() {
        while let id = waiters.first {
            guard let slot = unsafe table.slot(for: id), unsafe slot.pointee.state == .waiting else {
                _ = waiters.popFirst()  // cancelled while waiting
                continue
            }
            guard unsafe slot.pointee.admitWaiting(capacity: &capacity) else { return }
            _ = waiters.popFirst()
            // SAFETY: a `.waiting` slot holds its continuation (stored with startWaiting).
            unsafe slot.pointee.continuation.take().unsafelyUnwrapped.resume()
        }
    }

    /// Cancels operation `id`: a no-op if it has completed or its slot has moved on.
    mutating func cancel(_ id: OperationID) {
        guard let slot = unsafe table.slot(for: id) else { return }
        switch unsafe slot.pointee.cancel() {
        case .none:
            break
        case .resumeWaiter:
            // SAFETY: only a `.waiting` slot yields this action, and it holds its continuation.
            unsafe slot.pointee.continuation.take().unsafelyUnwrapped.resume()
        case .submitAsyncCancel:
            let target: CompletionTag =
                unsafe slot.pointee.stream != nil ? .stream : slot.pointee.job != nil ? .timer : .operation
            submitCancel(id, target)
        }
    }

    /// Submits an async cancel of the request `id` tagged `tag`; its own completion is ignored.
    mutating func submitCancel(_ id: OperationID, _ tag: CompletionTag) {
        let sqe = unsafe ring.nextSubmission()
        unsafe ControlEntry.cancel(sqe, target: id.userData(tag))
        unsafe ControlEntry.setUserData(sqe, id.userData(.cancel))
        statistics.cancelsSubmitted &+= 1
    }

    /// On shutdown: stop admitting, cancel every operation in the kernel and every waiter, and
    /// end the streams that wait for a buffer.
    mutating func cancelEverything() {
        stopping = true
        var ids: [OperationID] = []
        unsafe table.forEachInFlight { id, _ in ids.append(id) }
        for id in ids { cancel(id) }
        while let id = waiters.popFirst() { cancel(id) }
        // Receive streams waiting for a buffer have nothing in the kernel to cancel.
        if let pool = bufferPool {
            while let stream = pool.starved.popFirst() {
                stream.machine.ringStopping()
                stream.resumeConsumer()
            }
        }
    }

    /// Enqueues `job` (into ``firedTimers``) after `delay`, with a kernel timeout.
    mutating func scheduleTimer(_ job: ReadyJob, after delay: Duration) {
        let id = table.acquire()
        let slot = unsafe table.slot(id.index)
        unsafe slot.pointee.job = job
        unsafe slot.pointee.operationTimespec = __kernel_timespec(delay)
        let sqe = unsafe ring.nextSubmission()
        // SAFETY: the slot's timespec is stable and the slot is held until the timer's CQE.
        unsafe ControlEntry.timer(sqe, timespec: &slot.pointee.operationTimespec)
        unsafe ControlEntry.setUserData(sqe, id.userData(.timer))
        unsafe slot.pointee.submitted(completions: 1)
    }

    // MARK: - Wake-ups

    /// A new eventfd for other threads to wake the ring with (close-on-exec), or -1 with `errno`.
    static func makeWakeDescriptor() -> Int32 {
        eventfd(0, Int32(EFD_CLOEXEC))
    }

    /// Re-arms the read on the eventfd that other threads write to wake the ring.
    mutating func armWakeRead() {
        let sqe = unsafe ring.nextSubmission()
        // SAFETY: wakeBuffer is owned by the executor and freed in its deinit, after the ring has
        // been torn down (io_uring_queue_exit cancels the read).
        unsafe ControlEntry.wakeRead(sqe, fd: wakeFD, buffer: wakeBuffer)
        unsafe ControlEntry.setUserData(sqe, UInt64(CompletionTag.wake.rawValue) << 56)
    }

    /// Queues a message that wakes the ring whose descriptor is `ringFD` (number `target`).
    mutating func sendWakeMessage(toFD ringFD: Int32, ringID target: UInt32) {
        let sqe = unsafe ring.nextSubmission()
        unsafe ControlEntry.message(sqe, ringFD: ringFD, userData: UInt64(CompletionTag.message.rawValue) << 56)
        unsafe ControlEntry.setUserData(sqe, OperationID(index: target, generation: 0).userData(.messageSent))
        statistics.messagesSent &+= 1
    }

    /// Test support: queues `count` no-ops whose completions nobody awaits (tagged like async
    /// cancels, so the loop drops them) and flushes them at once, so that more completions arrive
    /// than the CQ ring holds.
    mutating func submitUntrackedNops(_ count: Int) {
        for _ in 0..<count {
            let sqe = unsafe ring.nextSubmission()
            unsafe ControlEntry.nop(sqe)
            unsafe ControlEntry.setUserData(sqe, OperationID(index: 0, generation: 0).userData(.cancel))
        }
        ring.submit(wait: false)
    }
}
