// Installing a ring as the process's main and default executor, so that plain `Task {}`, the main
// actor and `Task.sleep` run on it. This needs Swift 6.3's experimental custom-executor SPI
// (`_createExecutors(factory:)`, `MainExecutor`, `SchedulingExecutor`), which is not stable API:
// every use of it is in this file, behind `#if compiler(>=6.3)`. The task-executor route
// (`Task(executorPreference: ring)`) does not depend on any of it.

#if compiler(>=6.3)
@_spi(ExperimentalCustomExecutors) @_spi(ExperimentalScheduling) import _Concurrency

extension Uring {
    /// Makes a new ring the process's main and default executor, runs `body` on it as the main
    /// task, and returns `body`'s result when it finishes.
    ///
    /// Call it once, from a synchronous `main`, before any task exists. The calling thread becomes
    /// the ring's thread: plain `Task {}`, the main actor and `Task.sleep` (a ring timer) all run
    /// there, and every swift-uring operation awaited from them takes the fast path, with no hop
    /// and no lock.
    ///
    /// ```swift
    /// @main struct Server {
    ///     static func main() throws {
    ///         try Uring.run {
    ///             let config = try await File.readAll(at: "config.json")
    ///             try await Task.sleep(for: .milliseconds(10))   // a timer on the ring
    ///             print(config.count)
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// With `threads` above 1, `threads - 1` more rings run on threads of their own, and plain
    /// `Task {}` spreads over all of them: each task is placed on a ring by a hash of its identity
    /// and stays there for its whole life (so every operation it awaits is submitted on its own
    /// ring, with no lock). The main actor stays on the calling thread's ring. ``Uring/group``
    /// gives the rings, for explicit placement (`Task(executorPreference: Uring.group!.next())`).
    ///
    /// When `body` returns, the rings stop: tasks still running are abandoned, as they are when
    /// `main` returns, and operations still in the kernel are cancelled by tearing the ring down.
    /// The executors stay installed, so nothing should create tasks after `run` returns.
    ///
    /// `backend` chooses the rings' driver (`nil`: `SWIFT_URING_BACKEND`, automatic by default:
    /// io_uring, or the epoll driver where io_uring is denied; see ``RingBackendPreference``).
    ///
    /// - Throws: ``IOError/Code/ringUnavailable`` (before anything is installed) if io_uring was
    ///   asked for and cannot be set up, or no driver can; otherwise whatever `body` throws.
    public static func run<Result: Sendable>(
        entries: Int = 256,
        threads: Int = 1,
        backend: RingBackendPreference? = nil,
        _ body: @escaping @Sendable () async throws -> Result
    ) throws -> Result {
        guard threads >= 1, threads <= 1024 else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)
        }
        let ring = try RingExecutor(
            entries: entries, jobBudget: 256, name: "uring-main", backend: backend, donatingCurrentThread: true)
        var rings = [ring]
        do throws(IOError) {
            for i in 1..<threads {
                rings.append(try RingExecutor(entries: entries, name: "uring-\(i)", backend: backend))
            }
        } catch {
            for other in rings.dropFirst() { other.shutdown() }
            throw error
        }
        precondition(
            RingExecutor.installShared(ring),
            "Uring.run must be called once, before anything used the shared ring")
        let main = RingMainExecutor(ring: ring)
        let global = RingGlobalExecutor(rings: rings)
        for r in rings { unsafe r.installedGlobalExecutor = unsafe global.asUnownedTaskExecutor() }
        unsafe ring.installedMainExecutor = unsafe main.asUnownedSerialExecutor()
        installedGroup.withLock { $0 = RingGroup(rings: rings) }
        UringExecutorFactory.installed.withLock { $0 = (main, global) }
        _createExecutors(factory: UringExecutorFactory.self)

        let outcome = Lock<Swift.Result<Result, any Error>?>(nil)
        let allRings = rings
        Task {
            let result: Swift.Result<Result, any Error>
            do {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            outcome.withLock { $0 = result }
            for other in allRings.dropFirst() { other.stopAbandoningTasks() }
            ring.stopAbandoningTasks()
        }
        ring.runOnCurrentThread()
        for other in allRings.dropFirst() { other.shutdown() }
        return try outcome.withLock { $0 }!.get()
    }
}

/// The factory `_createExecutors` asks for the executors.
struct UringExecutorFactory: ExecutorFactory {
    static let installed = Lock<(main: RingMainExecutor, global: RingGlobalExecutor)?>(nil)

    static var mainExecutor: any MainExecutor {
        installed.withLock { $0! }.main
    }

    static var defaultExecutor: any TaskExecutor {
        installed.withLock { $0! }.global
    }
}

/// The main-actor face of the ring installed by `Uring.run`.
final class RingMainExecutor: MainExecutor, @unchecked Sendable {
    let ring: RingExecutor
    init(ring: RingExecutor) { self.ring = ring }

    func enqueue(_ job: consuming ExecutorJob) {
        ring.enqueue(ReadyJob(job: UnownedJob(job), kind: .main))
    }

    func run() throws { ring.runOnCurrentThread() }
    func stop() { ring.stopAbandoningTasks() }

    func checkIsolated() {
        precondition(ring.isCurrentRing, "expected to run on the main ring")
    }

    func isIsolatingCurrentContext() -> Bool? { ring.isCurrentRing }
}

/// The default (global) executor face of the rings installed by `Uring.run`; also serves
/// `Task.sleep` with ring timers. With several rings, a job goes to the ring chosen by a hash of
/// its address: a task is the job the runtime enqueues each time it resumes, so a task always
/// lands on the same ring, and different tasks spread evenly.
final class RingGlobalExecutor: TaskExecutor, SchedulingExecutor, @unchecked Sendable {
    let rings: [RingExecutor]
    /// The only ring, when there is one (the common case, without an array access per job).
    private let single: RingExecutor?
    init(rings: [RingExecutor]) {
        self.rings = rings
        single = rings.count == 1 ? rings[0] : nil
    }

    @inline(__always)
    private func ring(for job: UnownedJob) -> RingExecutor {
        if let single { return single }
        let address = unsafe UInt64(UInt(bitPattern: unsafeBitCast(job, to: UnsafeRawPointer.self)))
        // Fibonacci hashing: the high bits of the product mix every address bit.
        let hash = (address &* 0x9E37_79B9_7F4A_7C15) >> 32
        return rings[Int(hash % UInt64(rings.count))]
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        ring(for: unowned).enqueue(ReadyJob(job: unowned, kind: .global))
    }

    func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        // Task.sleep uses ContinuousClock or SuspendingClock, whose Duration is Swift.Duration.
        // A clock with another duration type cannot be interpreted here: its job runs at once
        // (a sleep that ends early is correct for a sleep that cannot be timed, and never hangs).
        let unowned = UnownedJob(job)
        ring(for: unowned).schedule(ReadyJob(job: unowned, kind: .global), after: (delay as? Swift.Duration) ?? .zero)
    }
}

/// The rings `Uring.run` installed.
let installedGroup = Lock<RingGroup?>(nil)

extension RingExecutor {
    /// The executor preference that keeps a new task on the calling thread's ring: nil off a ring,
    /// and nil on the only ring that `Uring.run` installed (the default executor runs every task
    /// there already; a preference would cost each task, and each child it makes, a status record).
    @usableFromInline static var preferenceForNewTasks: RingExecutor? {
        guard let ring = current else { return nil }
        let soleDefault = installedGroup.withLock { group in group.map { $0.count == 1 && $0[0] === ring } ?? false }
        return soleDefault ? nil : ring
    }
}

extension Uring {
    /// The rings that ``Uring/run(entries:threads:_:)`` installed (nil outside it), for placing
    /// tasks explicitly:
    ///
    /// ```swift
    /// try Uring.run(threads: 4) {
    ///     let group = Uring.group!
    ///     for i in 0..<group.count { Task(executorPreference: group[i]) { try await serveShard(i) } }
    /// }
    /// ```
    public static var group: RingGroup? { installedGroup.withLock { $0 } }
}
#endif
