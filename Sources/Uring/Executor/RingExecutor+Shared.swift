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
}
