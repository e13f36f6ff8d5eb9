/// The continuation of a task suspended until another task hands it a value: an
/// `UnsafeContinuation` for the public API's own state machines (``ConcurrentMap``), which keep
/// it in lock-protected state and take it out before resuming it.
///
/// A `CheckedContinuation` allocates an object per suspension to detect a second resume; at one
/// suspension per element that was a third of `mapConcurrently`'s overhead over a hand-written task
/// group (Docs/Benchmarks.md, issue 15).
@safe @usableFromInline struct Resumption<Value: Sendable>: Sendable {
    // SAFETY (@safe): resumed exactly once. Every owner stores it in an optional inside its
    // lock-protected state and resumes only what it took out of that optional under the lock
    // (`take()`), or what it never stored; nothing else holds a copy.
    @usableFromInline let continuation: UnsafeContinuation<Value, Never>

    @inlinable init(_ continuation: UnsafeContinuation<Value, Never>) {
        unsafe self.continuation = continuation
    }

    /// Suspends the calling task and gives its resumption to `body`, which must store it (to be
    /// resumed once, later) or resume it at once.
    @inlinable static func suspend(_ body: (Resumption<Value>) -> Void) async -> Value {
        await unsafe withUnsafeContinuation { continuation in body(unsafe Resumption(continuation)) }
    }

    /// Resumes the suspended task with `value`.
    @inlinable func resume(returning value: sending Value) {
        unsafe continuation.resume(returning: value)
    }
}
