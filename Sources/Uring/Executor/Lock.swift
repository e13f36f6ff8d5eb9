import Glibc

/// A value guarded by a `pthread_mutex_t`.
///
/// Used instead of `Synchronization.Mutex`, whose Linux implementation is a bare futex that
/// ThreadSanitizer cannot see: every access under it was reported as a race, hiding real ones.
@usableFromInline @safe package final class Lock<State>: @unchecked Sendable {
    // SAFETY (@safe): the mutex is allocated and initialized in init, destroyed in deinit, and only reached through
    // withLock.
    // @unchecked Sendable: `state` is only touched with `mutex` held.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline var state: State

    @usableFromInline package init(_ state: State) {
        unsafe mutex = .allocate(capacity: 1)
        // SAFETY: a fresh allocation, initialized once here and destroyed once in deinit.
        unsafe pthread_mutex_init(mutex, nil)
        self.state = state
    }

    deinit {
        unsafe pthread_mutex_destroy(mutex)
        unsafe mutex.deallocate()
    }

    @inlinable
    package func withLock<Result>(_ body: (inout State) -> Result) -> Result {
        unsafe pthread_mutex_lock(mutex)
        defer { unsafe pthread_mutex_unlock(mutex) }
        return body(&state)
    }
}
