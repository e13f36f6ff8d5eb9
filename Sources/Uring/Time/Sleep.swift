import Glibc

extension Uring {
    /// Suspends the task for `duration`, with a timer on the ring (`IORING_OP_TIMEOUT`): no timer
    /// thread and no allocation.
    ///
    /// ```swift
    /// try await Uring.sleep(for: .milliseconds(10))
    /// ```
    ///
    /// - Throws: ``IOError/Code/cancelled`` (operation ``IOError/Operation/sleep``) if the task is
    ///   cancelled before the time is up; the timer is removed from the ring before this returns.
    public static func sleep(for duration: Duration) async throws(IOError) {
        let outcome = try await SleepOperation(duration: duration).outcome()
        switch outcome {
        case .failure(ETIME), .success:
            return  // -ETIME is the timer firing, the normal end of a sleep
        default:
            _ = try outcome.get(.sleep)
        }
    }
}
