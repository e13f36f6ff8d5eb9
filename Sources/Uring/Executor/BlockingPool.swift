import Glibc

/// A small pool of ordinary threads for work that would block a ring: a C library call that
/// blocks, `getaddrinfo`, a CPU-heavy computation. The awaiting task suspends (its ring goes on
/// serving everything else) and resumes on its own executor with the result.
///
/// ```swift
/// let digest = try await Uring.runBlocking { try expensiveHash(of: bytes) }
/// let addresses = try await BlockingPool.shared.run { try resolve("example.com") }
/// ```
///
/// Threads are started on demand, up to `maximumThreads`, and stay for later work. Work cannot be
/// interrupted: cancelling the awaiting task does not stop it, and its result is still returned.
@safe public final class BlockingPool: @unchecked Sendable {
    // SAFETY (@safe): the pthread handles and semaphores are created in init and destroyed only after every worker
    // joined.
    // @unchecked Sendable: all mutable state is guarded by `mutex`.

    /// The process-wide pool (up to 8 threads), used by ``Uring/runBlocking(_:)``.
    public static let shared = BlockingPool(maximumThreads: 8, name: "uring-blocking")

    public let maximumThreads: Int
    private let name: String
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [@Sendable () -> Void] = []
    private var threads = 0
    private var idle = 0

    /// A pool of at most `maximumThreads` threads named `name`.
    public init(maximumThreads: Int = 8, name: String = "uring-blocking") {
        precondition(maximumThreads >= 1, "a pool needs at least one thread")
        self.maximumThreads = maximumThreads
        self.name = name
        // SAFETY: fresh allocations, initialized once here; the pool is never destroyed while its
        // threads run (they keep it alive), so they are never freed under a waiter.
        unsafe pthread_mutex_init(mutex, nil)
        unsafe pthread_cond_init(condition, nil)
    }

    /// Runs `work` on one of the pool's threads and returns its result (or rethrows its error).
    public func run<Result: Sendable>(_ work: @escaping @Sendable () throws -> Result) async throws -> Result {
        // The worker leaves the result under `outcome`'s lock, which the awaiting task takes to read it. From a
        // ring, the task is resumed by the ring's own thread (the worker leaves a note in the ring's inbox): see
        // `RingExecutor.resumeOnRing`. Elsewhere the worker resumes it, with the lock held: the task may be resumed
        // before it has suspended, a hand-over the concurrency runtime does not annotate for ThreadSanitizer, and
        // the lock makes it one ThreadSanitizer sees (the resume happens before the task reads the result).
        let ring = RingExecutor.current
        let outcome = Lock<Swift.Result<Result, any Error>?>(nil)
        await unsafe withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            submit {
                let result = Swift.Result { try work() }
                if let ring {
                    outcome.withLock { $0 = result }
                    unsafe ring.resumeOnRing(continuation)
                } else {
                    outcome.withLock {
                        $0 = result
                        unsafe continuation.resume()
                    }
                }
            }
        }
        return try outcome.withLock { $0! }.get()
    }

    /// Queues `item` without waiting for it (the runtime's own read-ahead jobs).
    func submit(_ item: @escaping @Sendable () -> Void) {
        unsafe pthread_mutex_lock(mutex)
        queue.append(item)
        let start = idle == 0 && threads < maximumThreads
        if start { threads += 1 }
        unsafe pthread_cond_signal(condition)
        unsafe pthread_mutex_unlock(mutex)
        if start { startThread() }
    }

    private func startThread() {
        let context = unsafe Unmanaged.passRetained(self)
        var tid = pthread_t()
        let rc = unsafe pthread_create(
            &tid, nil,
            { raw in
                let pool = unsafe Unmanaged<BlockingPool>.fromOpaque(raw!).takeRetainedValue()
                RingExecutor.nameCurrentThread(pool.name)
                pool.workLoop()
                return nil
            }, unsafe context.toOpaque())
        if rc == 0 {
            pthread_detach(tid)
        } else {
            unsafe context.release()
            unsafe pthread_mutex_lock(mutex)
            threads -= 1
            // No thread could start: run what is queued on the threads that exist, or here.
            let orphaned = threads == 0 ? queue : []
            if threads == 0 { queue.removeAll() }
            unsafe pthread_mutex_unlock(mutex)
            for item in orphaned { item() }
        }
    }

    private func workLoop() {
        while true {
            unsafe pthread_mutex_lock(mutex)
            while queue.isEmpty {
                idle += 1
                unsafe pthread_cond_wait(condition, mutex)
                idle -= 1
            }
            let item = queue.removeFirst()
            unsafe pthread_mutex_unlock(mutex)
            item()
        }
    }
}

extension Uring {
    /// Runs blocking `work` on ``BlockingPool/shared`` and awaits its result, so the ring is not
    /// held while it runs.
    ///
    /// ```swift
    /// let entries = try await Uring.runBlocking { try legacyLibraryCall() }
    /// ```
    public static func runBlocking<Result: Sendable>(_ work: @escaping @Sendable () throws -> Result) async throws
        -> Result
    {
        try await BlockingPool.shared.run(work)
    }
}
