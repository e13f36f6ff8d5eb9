internal import CLiburing

/// The namespace of swift-uring's free functions: the default ring, the no-op, and the
/// entry point that makes a ring the process's main and default executor (see `Uring.run`).
public enum Uring {
    /// Submits a no-op to the ring and awaits its completion: the cost of one round trip
    /// through the kernel, and nothing else.
    ///
    /// ```swift
    /// try await Uring.nop()
    /// ```
    ///
    /// - Throws: ``IOError/Code/cancelled`` if the task is cancelled;
    ///   ``IOError/Code/ringUnavailable`` when no ring can be set up.
    public static func nop() async throws(IOError) {
        let outcome = try await RingExecutor.submit { sqe, _ in Prep.nop(sqe) }
        _ = try outcome.get(.nop)
    }
}

extension RingExecutor {
    private static let sharedRing = Lock<Result<RingExecutor, IOError>?>(nil)

    /// The process-wide default ring, created on first use with default settings.
    ///
    /// Operations awaited from a task that is not running on a ring (the main actor, the global
    /// concurrent pool) run here: the task hops onto this ring for the operation and back.
    /// ``Uring/run(entries:threads:_:)`` installs its first ring here too.
    ///
    /// ```swift
    /// let ring = try RingExecutor.shared()
    /// let stats = await ring.statistics()
    /// ```
    ///
    /// - Throws: ``IOError/Code/ringUnavailable`` if io_uring cannot be set up. The failure is
    ///   remembered: later calls throw the same error without trying again.
    public static func shared() throws(IOError) -> RingExecutor {
        let result = sharedRing.withLock { state -> Result<RingExecutor, IOError> in
            if let state { return state }
            let made: Result<RingExecutor, IOError>
            do throws(IOError) {
                made = .success(try RingExecutor(name: "uring-default"))
            } catch {
                made = .failure(error)
            }
            state = made
            return made
        }
        return try result.get()
    }

    /// Makes `ring` the default ring, if none was created yet. Returns false otherwise.
    static func installShared(_ ring: RingExecutor) -> Bool {
        sharedRing.withLock { state in
            if state != nil { return false }
            state = .success(ring)
            return true
        }
    }

    /// Submits one operation and awaits its final completion: on the current ring when called
    /// on one (no hop: this runs on the caller's executor), otherwise on the shared ring (the task
    /// hops there with a task-executor preference, and back to its own executor afterwards).
    ///
    /// `prepare` is `@Sendable` because on the slow path it runs on the ring's thread; what it
    /// captures must stay valid until this returns, which it does (the caller is suspended here).
    ///
    /// With `cancellable: false` the operation is submitted and awaited even if the task is (or
    /// becomes) cancelled: for closes, which must never be skipped.
    @inline(__always)
    static func submit(
        timeout: Duration? = nil,
        cancellable: Bool = true,
        _ prepare: @Sendable (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<__kernel_timespec>) -> Void
    ) async throws(IOError) -> OperationOutcome {
        // Fast path: nonisolated code on a ring's thread, so this ring is the task's executor (by
        // preference, or as the process's default executor). Actor-isolated callers, even actors
        // that live on a ring, take the slow path: the standard library would run the
        // cancellation handler's operation on the generic executor, which for them is elsewhere.
        let callerIsolation: (any Actor)? = #isolation
        if callerIsolation == nil, let ring = RingExecutor.current {
            return await ring.perform(timeout: timeout, cancellable: cancellable, prepare)
        }
        return try await submitOnSharedRing(timeout: timeout, cancellable: cancellable, prepare)
    }

    /// The slow path: leave the caller's executor (the main actor, the global pool, an actor)
    /// for a ring, submit there, and come back. An actor that lives on a ring keeps its ring;
    /// everyone else uses the shared ring.
    @concurrent @inline(never)
    static func submitOnSharedRing(
        timeout: Duration?,
        cancellable: Bool,
        _ prepare: @Sendable (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<__kernel_timespec>) -> Void
    ) async throws(IOError) -> OperationOutcome {
        // (A @concurrent function runs on the generic executor: RingExecutor.current here is the
        // ring of the task's executor preference, if any.)
        let ring: RingExecutor
        if let current = RingExecutor.current { ring = current } else { ring = try RingExecutor.shared() }
        return await withTaskExecutorPreference(ring) {
            precondition(ring.isCurrentRing, "task-executor preference did not move the task to the ring")
            return await ring.perform(timeout: timeout, cancellable: cancellable, prepare)
        }
    }
}

extension OperationOutcome {
    /// The result, or the typed error for `operation`.
    @inline(__always)
    func get(_ operation: IOError.Operation, fileID: StaticString = #fileID, line: UInt = #line) throws(IOError) -> Int32 {
        switch self {
        case .success(let value): return value
        case .failure(let errno): throw IOError.system(errno, operation, fileID: fileID, line: line)
        case .cancelled: throw IOError(.cancelled, operation: operation, fileID: fileID, line: line)
        case .timedOut: throw IOError(.timedOut, operation: operation, fileID: fileID, line: line)
        case .shutdown: throw IOError(.executorShutdown, operation: operation, fileID: fileID, line: line)
        case .closed, .closing: throw IOError(.closed, errno: .badFileDescriptor, operation: operation, fileID: fileID, line: line)
        }
    }
}
