import Glibc

// The close itself, on the executor's side: a close ends what is pending on its descriptor on
// every ring (see Driver/DescriptorUse.swift), then closes it. The driver keeps the counts and
// the closing entries (Driver/RingDriver+Closing.swift); this file waits for the rings.

extension RingExecutor {
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

    // MARK: Requests from other rings

    @safe enum ClosingRequest {
        // SAFETY (@safe): a request's continuation is resumed exactly once, by the ring that handles it.
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
            case .begin(let waiter, _): unsafe waiter.resume()  // on the closer's own thread
            // This ring's loop is over: nothing runs the closer's task any more.
            case .resumeCloser(let waiter): unsafe waiter.resume()
            case .end: break
            }
        }
    }

    func handleClosingRequest(_ fd: Int32, _ request: ClosingRequest) {
        switch request {
        case .begin(let waiter, let origin):
            unsafe driver.pointee.beginClosing(fd, waiter: ClosingWaiter(continuation: waiter, home: origin))
        case .end: unsafe driver.pointee.endClosing(fd)
        case .resumeCloser(let waiter): unsafe waiter.resume()
        }
    }

    // MARK: The close itself

    /// Ends every operation and stream on `fd`, on every ring, then closes it. Runs on this ring.
    ///
    /// - Returns: The close's outcome; `.closed` if another close of `fd` is in progress, on any
    ///   ring (that one closes it).
    func closeEndingOperations(_ fd: Int32) async -> OperationOutcome {
        precondition(isCurrentRing)
        if unsafe driver.pointee.stopping { return .shutdown }
        if unsafe !driver.pointee.closing.isEmpty { drainClosingRequests() }
        // Another task is closing this descriptor: that close closes it.
        guard DescriptorUse.beginClose(fd) else { return .closed }
        // Other rings that may use the descriptor. Strong references, taken under the registry's
        // lock (a ring leaves it, under the lock, before its loop ends).
        let others = unsafe DescriptorUse.rings(using: fd) & ~driver.pointee.useBit
        var remote: [RingExecutor] = []
        if others != 0 {
            remote = unsafe RingExecutor.registry.withLock { rings in
                unsafe rings.values.compactMap { entry -> RingExecutor? in
                    let ring = unsafe entry.takeUnretainedValue()
                    return ring !== self && others & ring.useBit != 0 ? ring : nil
                }
            }
        }
        unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            unsafe driver.pointee.beginClosing(fd, waiter: ClosingWaiter(continuation: continuation, home: nil))
        }
        for ring in remote {
            unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                unsafe ring.requestClosing(fd, .begin(continuation, from: self))
            }
        }
        let outcome = await perform(CloseOperation(fd: fd), timeout: nil, cancellable: false)
        DescriptorUse.endClose(fd)
        unsafe driver.pointee.endClosing(fd)
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
