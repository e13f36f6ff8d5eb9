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
        _ = try await NopOperation().run()
    }
}
