// Where an awaited operation goes: the caller's ring when it runs on one (no hop), otherwise the
// shared ring (a hop there and back).

extension RingExecutor {
    /// Submits one operation and awaits its final completion: on the current ring when called
    /// on one (no hop: this runs on the caller's executor), otherwise on the shared ring (the task
    /// hops there with a task-executor preference, and back to its own executor afterwards).
    ///
    /// On the slow path `operation` is executed on the ring's thread; the memory it points to
    /// stays valid until this returns, which it does (the caller is suspended here).
    ///
    /// With `cancellable: false` the operation is submitted and awaited even if the task is (or
    /// becomes) cancelled: for closes, which must never be skipped.
    @inline(__always)
    static func submit<Operation: IOOperation>(
        _ operation: Operation, timeout: Duration? = nil, cancellable: Bool = true
    ) async throws(IOError) -> OperationOutcome {
        // Fast path: nonisolated code on a ring's thread, so this ring is the task's executor (by
        // preference, or as the process's default executor). Actor-isolated callers, even actors
        // that live on a ring, take the slow path: the standard library would run the
        // cancellation handler's operation on the generic executor, which for them is elsewhere.
        let callerIsolation: (any Actor)? = #isolation
        if callerIsolation == nil, let unretained = unsafe RingExecutor.currentUnretained {
            // An operation whose opcode may be missing is checked first, by `perform`.
            let tries = Operation.triesWithoutWaiting && !Operation.optionalOpcode
            // SAFETY: this is the ring's own thread, and a ring outlives its thread's loop, so the
            // reference is valid for this synchronous attempt without a retain.
            if tries,
                let outcome = unsafe unretained._withUnsafeGuaranteedRef({
                    $0.tryWithoutSuspending(operation, cancellable: cancellable)
                })
            {
                return outcome
            }
            return await unsafe unretained.takeUnretainedValue().perform(
                operation, timeout: timeout, cancellable: cancellable, triedWithoutWaiting: tries)
        }
        return try await submitOnSharedRing(operation, timeout: timeout, cancellable: cancellable)
    }

    /// The slow path: leave the caller's executor (the main actor, the global pool, an actor)
    /// for a ring, submit there, and come back. An actor that lives on a ring keeps its ring;
    /// everyone else uses the shared ring.
    @concurrent @inline(never)
    static func submitOnSharedRing<Operation: IOOperation>(
        _ operation: Operation, timeout: Duration?, cancellable: Bool
    ) async throws(IOError) -> OperationOutcome {
        // (A @concurrent function runs on the generic executor: RingExecutor.current here is the
        // ring of the task's executor preference, if any.)
        let ring: RingExecutor
        if let current = RingExecutor.current { ring = current } else { ring = try RingExecutor.shared() }
        return await withTaskExecutorPreference(ring) {
            precondition(ring.isCurrentRing, "task-executor preference did not move the task to the ring")
            return await ring.perform(operation, timeout: timeout, cancellable: cancellable)
        }
    }
}
