import Glibc

/// One multishot stream (accept, or receive into provided buffers): the storage part of the
/// storage / state machine / actions split. It holds the state machine (`StreamStateMachine`,
/// which decides) and the consumer's continuation; the ring's driver performs the actions
/// (`Driver/RingDriver+Streams.swift`).
///
/// Ring thread only, like the operation table: the consumer's `next()` runs on the ring (it hops
/// there), completions are handled by the loop, and requests from other threads (a cancelled
/// consumer, an iterator dropped elsewhere) go through the ring's inbox.
@safe final class MultishotStream: @unchecked Sendable {
    // SAFETY (@safe): the consumer's continuation is touched on the stream's ring thread only and resumed exactly once.
    // @unchecked Sendable: every mutable field is touched only on `ring`'s thread.
    typealias Kind = StreamStateMachine.Kind

    let ring: RingExecutor
    let fd: Int32
    var kind: Kind { machine.kind }
    var machine: StreamStateMachine
    private var consumer: UnsafeContinuation<Void, Never>?

    init(ring: RingExecutor, kind: Kind, fd: Int32, limit: Int) {
        self.ring = ring
        self.fd = fd
        machine = StreamStateMachine(kind: kind, limit: limit)
    }

    /// Bumped each time a lent buffer is handed back: a chunk from before is no longer valid.
    var lease: UInt32 { machine.lease }
    /// The consumer is gone: chunks it still holds are no longer valid.
    var abandoned: Bool { machine.isAbandoned }

    /// Wakes the consumer if it waits.
    @inline(__always)
    func resumeConsumer() {
        unsafe consumer.take()?.resume()
    }

    /// The next item, waiting for one if needed. Hands back the buffer lent by the previous call.
    /// Ring thread, from the consuming task.
    func next() async -> StreamNext {
        let driver = unsafe ring.driver
        unsafe driver.pointee.returnLentBuffer(of: self)
        while true {
            switch machine.take(taskCancelled: Task.isCancelled) {
            case .item(let item):
                unsafe driver.pointee.arm(self)
                return .item(result: item.result, flags: item.flags)
            case .terminal(let terminal):
                return terminal
            case .cancelled:
                return .cancelled
            case .empty:
                break
            }
            if unsafe driver.pointee.stopping { return .shutdown }
            if unsafe driver.pointee.arm(self) == .deferredByClose {
                await Task.yield()  // a close of this number is under way: it takes microseconds
                continue
            }
            await withTaskCancellationHandler {
                unsafe await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                    precondition(ring.isCurrentRing, "stream consumed off its ring's thread")
                    if machine.consumerShouldWake(taskCancelled: Task.isCancelled) {
                        unsafe continuation.resume()
                    } else {
                        unsafe consumer = unsafe continuation
                    }
                }
            } onCancel: {
                ring.requestStream(self, .cancelConsumer)
            }
        }
    }

    /// Receive: the address of the bytes of a completion's buffer.
    func bufferAddress(flags: UInt32) -> UnsafeMutableRawPointer {
        unsafe ring.driver.pointee.bufferAddress(flags: flags)
    }

    /// The consuming task was cancelled (ring thread): wake it; it sees the flag.
    func consumerWasCancelled() {
        machine.consumerWasCancelled()
        resumeConsumer()
    }

    /// Abandoned after the ring's loop ended (the ring and its buffer pool are gone, and the kernel
    /// has let go of everything): close the descriptors nobody took.
    func abandonAfterRingExit() {
        guard !machine.isAbandoned else { return }
        _ = machine.abandon()
        for item in machine.drainQueue() where kind == .accept && item.result >= 0 {
            Glibc.close(item.result)
        }
    }
}

/// The consumer's handle on a stream: owned by one iterator (and its copies), used by one task
/// at a time. The stream is created on the ring of the first `next()` and stays there; later
/// calls from elsewhere hop to that ring. Dropping the last copy abandons the stream, which
/// closes accepted descriptors nobody took and gives buffers back.
final class StreamConsumer: @unchecked Sendable {
    // @unchecked Sendable: an async iterator is used by one task at a time; `stream` is written
    // once, on the ring, by the first next().
    let kind: MultishotStream.Kind
    let fd: Int32
    let limit: Int
    private(set) var stream: MultishotStream?

    init(kind: MultishotStream.Kind, fd: Int32, limit: Int) {
        self.kind = kind
        self.fd = fd
        self.limit = limit
    }

    deinit {
        if let stream { stream.ring.requestStream(stream, .abandon) }
    }

    /// The next item, from the stream's ring.
    @inline(__always)
    func next() async throws(IOError) -> StreamNext {
        let callerIsolation: (any Actor)? = #isolation
        if callerIsolation == nil, let ring = RingExecutor.current, stream == nil || stream!.ring === ring {
            return await nextOnRing(ring)
        }
        return try await nextFromElsewhere()
    }

    @concurrent @inline(never)
    private func nextFromElsewhere() async throws(IOError) -> StreamNext {
        let ring: RingExecutor
        if let stream {
            ring = stream.ring
        } else if let current = RingExecutor.current {
            ring = current
        } else {
            ring = try RingExecutor.shared()
        }
        return await withTaskExecutorPreference(ring) {
            precondition(ring.isCurrentRing, "task-executor preference did not move the task to the ring")
            return await self.nextOnRing(ring)
        }
    }

    private func nextOnRing(_ ring: RingExecutor) async -> StreamNext {
        if stream == nil {
            // A receive stream queues at most 1/8 of the ring's buffers (16 at most), so a
            // reader that falls behind cannot take the pool from the other connections.
            let limit = kind == .receive ? min(self.limit, max(1, ring.receiveBufferCount / 8)) : self.limit
            let made = MultishotStream(ring: ring, kind: kind, fd: fd, limit: limit)
            // While a close of this descriptor number is under way (an earlier socket's), wait.
            while unsafe !ring.driver.pointee.registerStream(made) { await Task.yield() }
            stream = made
        }
        // SAFETY: `stream` was set just above, or by an earlier call; it is never cleared.
        return unsafe await stream.unsafelyUnwrapped.next()
    }
}

extension RingExecutor {
    enum StreamRequest { case cancelConsumer, abandon }

    /// Passes a request about `stream` to its ring. Any thread.
    func requestStream(_ stream: MultishotStream, _ request: StreamRequest) {
        if isCurrentRing {
            handleStreamRequest(stream, request)
            return
        }
        let delivered = inbox.withLock { inbox -> Bool in
            guard !inbox.loopExited else { return false }
            inbox.streamRequests.append((stream, request))
            return true
        }
        if delivered {
            inboxPending.store(true, ordering: .sequentiallyConsistent)
            wakeIfSleeping()
        } else if request == .abandon {
            // The ring's thread is gone and nothing else touches the stream: release here.
            stream.abandonAfterRingExit()
        }
    }

    func handleStreamRequest(_ stream: MultishotStream, _ request: StreamRequest) {
        switch request {
        case .cancelConsumer: stream.consumerWasCancelled()
        case .abandon: unsafe driver.pointee.abandon(stream)
        }
    }
}
