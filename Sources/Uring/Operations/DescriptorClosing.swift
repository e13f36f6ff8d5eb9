internal import CLiburing
import Glibc
import Synchronization

// Closing a descriptor ends what is pending on it, on every ring (issue 11).
//
// The kernel does not do this by itself: a pending io_uring operation holds its own reference to
// the file, so after close(2) a pending accept keeps the listening socket alive (and accepting),
// and a pending read on a pipe waits forever. So `close()`:
//
// 1. finds the rings that may have operations or streams on the descriptor (a process-wide mask
//    per descriptor, `DescriptorUse`, with one bit per ring; a ring sets its bit when it starts
//    using the descriptor and clears it lazily, when a close finds it idle);
// 2. on each of them (its own ring inline, others through their inbox), marks the descriptor
//    as closing, ends the receive and accept streams on it (their sequences finish), and cancels
//    every operation on it in the kernel with one `IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL`;
//    it then waits until every operation on the descriptor has completed (the ring counts them
//    per descriptor), so nothing the kernel holds still refers to the file;
// 3. closes the descriptor, then lets the rings forget it.
//
// While a close of a descriptor number is under way, an operation for it is not submitted on any
// ring: it waits until the close is over, then runs (on a new file that got the number) or fails
// with EBADF, reported as `IOError.Code.closed`; so nothing new can slip in between the cancel and
// the close. Operations ended by the cancel throw `IOError.Code.closed`; streams end (`nil`).

/// Which rings use which descriptors, and which descriptors are being closed, process-wide.
///
/// - `masks`: a bit per ring (its `ringID` modulo 64) for each descriptor number below
///   `bucketCount` (larger numbers share entries, which only costs a visit to a ring with nothing
///   to do). A ring sets its bit when its count for the descriptor goes from 0 to 1, and clears it
///   when a close finds the count at 0.
/// - `closings`: how many closes of each descriptor are in progress.
///
/// A submission publishes its use (the bit) and then reads `closings`; a close increments
/// `closings` and then reads the mask. Both sides are sequentially consistent, so at least one
/// sees the other: either the close visits the ring (and cancels the operation there), or the
/// operation sees the close and is not submitted. No operation can reach the kernel unseen
/// between a close's look at the mask and its close(2).
enum DescriptorUse {
    /// The default hard limit on descriptors per process (`fs.nr_open`): every descriptor a
    /// default system can hand out has an entry of its own.
    static let bucketCount = 1 << 20

    // SAFETY: zero-filled by calloc (pages are only touched where used), never freed (process
    // lifetime). `Atomic<UInt64>` and `Atomic<UInt32>` have the size and alignment of their
    // values, and all-zero bytes are the value 0; every access goes through the Atomic.
    nonisolated(unsafe) static let masks: UnsafeMutablePointer<Atomic<UInt64>> = {
        let raw = calloc(bucketCount, MemoryLayout<UInt64>.stride)!
        return raw.bindMemory(to: Atomic<UInt64>.self, capacity: bucketCount)
    }()
    nonisolated(unsafe) static let closings: UnsafeMutablePointer<Atomic<UInt32>> = {
        let raw = calloc(bucketCount, MemoryLayout<UInt32>.stride)!
        return raw.bindMemory(to: Atomic<UInt32>.self, capacity: bucketCount)
    }()

    @inline(__always)
    static func bucket(_ fd: Int32) -> Int { Int(UInt32(bitPattern: fd)) & (bucketCount - 1) }

    /// The rings (by bit) that may use `fd`.
    static func rings(using fd: Int32) -> UInt64 {
        masks[bucket(fd)].load(ordering: .sequentiallyConsistent)
    }

    @inline(__always)
    static func mark(_ fd: Int32, bit: UInt64) {
        let mask = masks + bucket(fd)
        if mask.pointee.load(ordering: .relaxed) & bit == 0 {
            mask.pointee.bitwiseOr(bit, ordering: .sequentiallyConsistent)
        }
    }

    static func unmark(_ fd: Int32, bit: UInt64) {
        let mask = masks + bucket(fd)
        if mask.pointee.load(ordering: .relaxed) & bit != 0 {
            mask.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent)
        }
    }

    /// Whether a close of `fd` is in progress (after this ring published its use of `fd`).
    @inline(__always)
    static func isClosing(_ fd: Int32) -> Bool {
        closings[bucket(fd)].load(ordering: .sequentiallyConsistent) != 0
    }

    /// A close of `fd` starts. Returns false if another one is already in progress.
    static func beginClose(_ fd: Int32) -> Bool {
        let old = closings[bucket(fd)].wrappingAdd(1, ordering: .sequentiallyConsistent).oldValue
        if old != 0 {
            closings[bucket(fd)].wrappingSubtract(1, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    static func endClose(_ fd: Int32) {
        closings[bucket(fd)].wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }
}

/// A descriptor being closed, as one ring sees it.
struct ClosingDescriptor {
    var fd: Int32
    /// How many closes of `fd` this entry stands for: a close on another ring may start before
    /// this ring has heard that the previous close of the same number ended.
    var closers = 1
    /// The cancel-by-descriptor is in the kernel.
    var cancelPending = false
    /// Resumed once nothing on this ring uses the descriptor any more.
    var waiters: [ClosingWaiter] = []
}

/// A close waiting for a ring to end what is pending on a descriptor: its continuation, and the
/// ring its task runs on when that is another ring. A continuation is resumed on its own ring's
/// thread (through that ring's inbox), never from another ring's thread: a task may not have
/// finished suspending when another thread resumes it, and what the runtime does then is not
/// visible to ThreadSanitizer.
struct ClosingWaiter {
    let continuation: UnsafeContinuation<Void, Never>
    let home: RingExecutor?

    /// Resumes the close, from `ring`'s thread.
    func resume(from ring: RingExecutor, fd: Int32) {
        if let home, home !== ring {
            home.requestClosing(fd, .resumeCloser(continuation))
        } else {
            continuation.resume()
        }
    }
}

extension RingExecutor {
    @inline(__always)
    var useBit: UInt64 { 1 << UInt64(ringID & 63) }

    /// An operation or stream on this ring started using `fd` (ring thread).
    @inline(__always)
    func noteUse(_ fd: Int32) {
        let counts = core.pointee.descriptorUse
        let b = DescriptorUse.bucket(fd)
        counts[b] &+= 1
        if counts[b] == 1 { DescriptorUse.mark(fd, bit: useBit) }
    }

    /// An operation or stream on this ring stopped using `fd` (ring thread).
    @inline(__always)
    func noteEnd(_ fd: Int32) {
        let counts = core.pointee.descriptorUse
        let b = DescriptorUse.bucket(fd)
        counts[b] &-= 1
        if counts[b] == 0 && !core.pointee.closing.isEmpty { closingMayBeDone(fd) }
    }

    /// Whether `fd` is being closed on this ring (ring thread; cheap when nothing is closing).
    @inline(__always)
    func isClosing(_ fd: Int32) -> Bool {
        if core.pointee.closing.isEmpty { return false }
        return core.pointee.closing.contains { $0.fd == fd }
    }

    /// A completion for an operation on `slot`: if its descriptor is closing and the kernel ended
    /// it (cancelled, interrupted, or the descriptor was already gone), mark it so its task sees
    /// ``IOError/Code/closed``.
    @inline(__always)
    func noteCompletionWhileClosing(_ slot: UnsafeMutablePointer<OperationSlot>, result: Int32) {
        if result == -ECANCELED || result == -EINTR || result == -EBADF, isClosing(slot.pointee.fd) {
            slot.pointee.descriptorClosed = true
        }
    }

    /// Starts closing `fd` on this ring: ends its streams, cancels its operations in the kernel,
    /// and resumes `waiter` once nothing on this ring uses it. Ring thread.
    func beginClosing(_ fd: Int32, waiter: ClosingWaiter) {
        let core = self.core
        if let i = core.pointee.closing.firstIndex(where: { $0.fd == fd }) {
            core.pointee.closing[i].closers += 1
            core.pointee.closing[i].waiters.append(waiter)
        } else {
            core.pointee.closing.append(ClosingDescriptor(fd: fd, waiters: [waiter]))
        }
        if let streams = core.pointee.streams.removeValue(forKey: fd) {
            for stream in streams {
                stream.ownerClosed()
                noteEnd(fd)  // the stream's registration
            }
        }
        if core.pointee.descriptorUse[DescriptorUse.bucket(fd)] > 0 && !core.pointee.stopping,
            let i = core.pointee.closing.firstIndex(where: { $0.fd == fd }), !core.pointee.closing[i].cancelPending
        {
            let sqe = core.pointee.ring.nextSubmission()
            Prep.cancelAll(sqe, fd: fd)
            Prep.setUserData(sqe, OperationID(index: UInt32(bitPattern: fd), generation: 0).userData(.closeCancel))
            core.pointee.statistics.cancelsSubmitted &+= 1
            core.pointee.closing[i].cancelPending = true
        }
        closingMayBeDone(fd)
    }

    /// The cancel-by-descriptor for `fd` completed (its result, the number cancelled, is not
    /// needed: the per-descriptor count says when they have all completed).
    func closeCancelCompleted(_ fd: Int32) {
        guard let i = core.pointee.closing.firstIndex(where: { $0.fd == fd && $0.cancelPending }) else { return }
        core.pointee.closing[i].cancelPending = false
        closingMayBeDone(fd)
    }

    /// Resumes the closer of `fd` if nothing on this ring uses it any more.
    private func closingMayBeDone(_ fd: Int32) {
        let core = self.core
        guard let i = core.pointee.closing.firstIndex(where: { $0.fd == fd }), !core.pointee.closing[i].cancelPending
        else { return }
        // Descriptors past the mask's range share counts with others: for them the cancel's
        // completion is the signal (the kernel cancels everything on the file at once).
        let b = DescriptorUse.bucket(fd)
        if Int(fd) < DescriptorUse.bucketCount && core.pointee.descriptorUse[b] > 0 && !core.pointee.stopping { return }
        if core.pointee.descriptorUse[b] == 0 { DescriptorUse.unmark(fd, bit: useBit) }
        let waiters = core.pointee.closing[i].waiters
        core.pointee.closing[i].waiters.removeAll()
        for waiter in waiters { waiter.resume(from: self, fd: fd) }
    }

    /// The descriptor is closed: forget it. Ring thread.
    func endClosing(_ fd: Int32) {
        let core = self.core
        guard let i = core.pointee.closing.firstIndex(where: { $0.fd == fd }) else { return }
        core.pointee.closing[i].closers -= 1
        if core.pointee.closing[i].closers > 0 { return }
        let entry = core.pointee.closing.remove(at: i)
        for waiter in entry.waiters { waiter.resume(from: self, fd: fd) }  // only when the ring stopped first
    }

    /// Handles the closing requests other rings left in the inbox now, so that a close which has
    /// ended elsewhere is not mistaken for one in progress. Ring thread.
    func drainClosingRequests() {
        let requests = inbox.withLock { inbox -> [(Int32, ClosingRequest)] in
            if inbox.closingRequests.isEmpty { return [] }
            var taken: [(Int32, ClosingRequest)] = []
            swap(&taken, &inbox.closingRequests)
            return taken
        }
        for (fd, request) in requests { handleClosingRequest(fd, request) }
    }

    /// On loop exit: nobody will complete the closings still waiting.
    func resumeClosersAtExit() {
        let entries = core.pointee.closing
        core.pointee.closing.removeAll()
        for entry in entries { for waiter in entry.waiters { waiter.resume(from: self, fd: entry.fd) } }
    }

    /// Registers a stream on `fd`, so a close finds it (ring thread). Returns false if `fd` is
    /// being closed: the stream must end at once.
    func registerStream(_ stream: MultishotStream) -> Bool {
        noteUse(stream.fd)  // published before the look at `closings` (see DescriptorUse)
        if DescriptorUse.isClosing(stream.fd) {
            noteEnd(stream.fd)
            return false
        }
        core.pointee.streams[stream.fd, default: []].append(stream)
        return true
    }

    func unregisterStream(_ stream: MultishotStream) {
        guard var streams = core.pointee.streams[stream.fd],
            let i = streams.firstIndex(where: { $0 === stream })
        else { return }
        streams.remove(at: i)
        core.pointee.streams[stream.fd] = streams.isEmpty ? nil : streams
        noteEnd(stream.fd)
    }

    // MARK: Requests from other rings

    enum ClosingRequest {
        /// End what is pending on the descriptor here, then resume the closer (which runs on the
        /// ring that sent this).
        case begin(UnsafeContinuation<Void, Never>, from: RingExecutor)
        /// The descriptor is closed: forget it.
        case end
        /// Another ring has ended what was pending there: resume this ring's closer.
        case resumeCloser(UnsafeContinuation<Void, Never>)
    }

    /// Passes a closing request for `fd` to this ring. Any thread. A ring whose loop has ended
    /// has nothing in flight: `begin` resumes at once.
    func requestClosing(_ fd: Int32, _ request: ClosingRequest) {
        if isCurrentRing {
            handleClosingRequest(fd, request)
            return
        }
        let delivered = inbox.withLock { inbox -> Bool in
            guard !inbox.loopExited else { return false }
            inbox.closingRequests.append((fd, request))
            return true
        }
        if delivered {
            inboxPending.store(true, ordering: .sequentiallyConsistent)
            wakeIfSleeping()
        } else {
            switch request {
            case .begin(let waiter, _): waiter.resume()  // on the closer's own thread
            // This ring's loop is over: nothing runs the closer's task any more.
            case .resumeCloser(let waiter): waiter.resume()
            case .end: break
            }
        }
    }

    func handleClosingRequest(_ fd: Int32, _ request: ClosingRequest) {
        switch request {
        case .begin(let waiter, let origin): beginClosing(fd, waiter: ClosingWaiter(continuation: waiter, home: origin))
        case .end: endClosing(fd)
        case .resumeCloser(let waiter): waiter.resume()
        }
    }

    // MARK: The close itself

    /// Ends every operation and stream on `fd`, on every ring, then closes it. Runs on this ring.
    ///
    /// - Returns: The close's outcome; `.closed` if another close of `fd` is in progress, on any
    ///   ring (that one closes it).
    func closeEndingOperations(_ fd: Int32) async -> OperationOutcome {
        precondition(isCurrentRing)
        if core.pointee.stopping { return .shutdown }
        if !core.pointee.closing.isEmpty { drainClosingRequests() }
        // Another task is closing this descriptor: that close closes it.
        guard DescriptorUse.beginClose(fd) else { return .closed }
        // Other rings that may use the descriptor. Strong references, taken under the registry's
        // lock (a ring leaves it, under the lock, before its loop ends).
        let others = DescriptorUse.rings(using: fd) & ~useBit
        var remote: [RingExecutor] = []
        if others != 0 {
            remote = RingExecutor.registry.withLock { rings in
                rings.values.compactMap { entry -> RingExecutor? in
                    let ring = entry.takeUnretainedValue()
                    return ring !== self && others & ring.useBit != 0 ? ring : nil
                }
            }
        }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            beginClosing(fd, waiter: ClosingWaiter(continuation: continuation, home: nil))
        }
        for ring in remote {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                ring.requestClosing(fd, .begin(continuation, from: self))
            }
        }
        let outcome = await perform(timeout: nil, cancellable: false) { sqe, _ in Prep.close(sqe, fd: fd) }
        DescriptorUse.endClose(fd)
        endClosing(fd)
        for ring in remote { ring.requestClosing(fd, .end) }
        return outcome
    }

    /// Closes `fd` after ending what is pending on it (see ``closeEndingOperations(_:)``), on the
    /// caller's ring or the shared one; with `close(2)` on the calling thread when no ring can
    /// take it (shutting down, or none can be set up).
    static func closeDescriptor(_ fd: Int32, operation: IOError.Operation) async throws(IOError) {
        let outcome: OperationOutcome
        let callerIsolation: (any Actor)? = #isolation
        if callerIsolation == nil, let ring = RingExecutor.current {
            outcome = await ring.closeEndingOperations(fd)
        } else {
            do throws(IOError) {
                outcome = try await closeOnSharedRing(fd)
            } catch {
                outcome = .shutdown  // no ring at all
            }
        }
        switch outcome {
        case .shutdown:
            guard Glibc.close(fd) == 0 else { throw IOError.system(Glibc.errno, operation) }
        case .closed:
            throw IOError(.closed, errno: .badFileDescriptor, operation: operation)
        default:
            _ = try outcome.get(operation)
        }
    }

    @concurrent @inline(never)
    private static func closeOnSharedRing(_ fd: Int32) async throws(IOError) -> OperationOutcome {
        let ring: RingExecutor
        if let current = RingExecutor.current { ring = current } else { ring = try RingExecutor.shared() }
        return await withTaskExecutorPreference(ring) {
            precondition(ring.isCurrentRing, "task-executor preference did not move the task to the ring")
            return await ring.closeEndingOperations(fd)
        }
    }
}
