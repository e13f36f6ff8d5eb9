/// The continuation of a task suspended until another task or thread wakes it: an
/// `UnsafeContinuation` for the public API's own state machines (``ConcurrentMap``), which keep
/// it in lock-protected state and take it out before resuming it.
///
/// It carries no value. The waker leaves what it hands over in the owner's lock-protected state
/// and resumes the task *while holding that lock*; the woken task takes the same lock to read it.
/// A task can be resumed from another thread before it has finished suspending, and the
/// Concurrency runtime's path for that case has no ThreadSanitizer annotation: a value passed
/// through the continuation, or anything the task does next, is then reported as a race with the
/// waker. The lock makes the hand-over one that ThreadSanitizer sees (and it is one anyway).
///
/// A `CheckedContinuation` allocates an object per suspension to detect a second resume; at one
/// suspension per element that was a third of `mapConcurrently`'s overhead over a hand-written task
/// group (Docs/Benchmarks.md, issue 15).
@safe @usableFromInline struct Resumption: Sendable {
    // SAFETY (@safe): resumed exactly once. Every owner stores it in an optional inside its
    // lock-protected state and resumes only what it took out of that optional under the lock
    // (`take()`), or what it never stored; nothing else holds a copy.
    @usableFromInline let continuation: UnsafeContinuation<Void, Never>

    @inlinable init(_ continuation: UnsafeContinuation<Void, Never>) {
        unsafe self.continuation = continuation
    }

    /// Suspends the calling task and gives its resumption to `body`, which must store it (to be
    /// resumed once, later) or resume it at once.
    @inlinable static func suspend(_ body: (Resumption) -> Void) async {
        await unsafe withUnsafeContinuation { continuation in body(unsafe Resumption(continuation)) }
    }

    /// Resumes the suspended task. Call it with the lock held that the task takes when it wakes.
    @inlinable func resume() {
        unsafe continuation.resume()
    }
}
