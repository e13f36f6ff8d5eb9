// What the loop runs and what other threads hand it: jobs, the serial identity for actors, the
// inbox, and the loop's own state.

/// A job waiting to run on the ring, with how to run it.
struct ReadyJob {
    enum Kind: UInt8 {
        /// A task that prefers this ring: no serial isolation, task executor = the ring.
        case task
        /// An actor job: isolated to the ring's serial identity.
        case isolated
        /// A job given to the ring as the process's default executor (the `Uring.run` path).
        case global
        /// A main-actor job, when the ring is the process's main executor (the `Uring.run` path).
        case main
    }
    var job: UnownedJob
    var kind: Kind

    init(job: UnownedJob, isolated: Bool) {
        self.job = job
        self.kind = isolated ? .isolated : .task
    }

    init(job: UnownedJob, kind: Kind) {
        self.job = job
        self.kind = kind
    }
}

/// The serial-executor face of a ``RingExecutor``: actors whose `unownedExecutor` is
/// `ring.asUnownedSerialExecutor()` enqueue here, and their jobs run isolated on the ring.
final class RingIsolation: SerialExecutor, @unchecked Sendable {
    /// Set once, in the ring's initializer, before the ring's thread starts; never changed.
    unowned(unsafe) var ring: RingExecutor! = nil

    func enqueue(_ job: consuming ExecutorJob) {
        unsafe ring.enqueue(ReadyJob(job: UnownedJob(job), isolated: true))
    }

    func checkIsolated() {
        unsafe precondition(ring.isCurrentRing, unsafe "expected to run on ring '\(ring.name)'")
    }

    func isIsolatingCurrentContext() -> Bool? {
        unsafe ring.isCurrentRing
    }
}

/// Requests other threads leave for the ring (jobs go through `jobQueue` first).
@safe struct Inbox {
    // SAFETY (@safe): each continuation in `resumptions` is resumed exactly once, by the ring's loop (or at its exit).
    var jobs: [ReadyJob] = []
    var cancellations: [OperationID] = []
    var timers: [(job: ReadyJob, delay: Duration)] = []
    var streamRequests: [(MultishotStream, RingExecutor.StreamRequest)] = []
    var closingRequests: [(Int32, RingExecutor.ClosingRequest)] = []
    /// Tasks of this ring whose work finished on another thread (`RingExecutor.resumeOnRing`).
    var resumptions: [UnsafeContinuation<Void, Never>] = unsafe []
    var stopRequested = false
    /// Set when the ring's loop has ended: nobody will drain requests any more.
    var loopExited = false
    /// The eventfd that wakes the ring; -1 once closed.
    var wakeFD: Int32 = -1
}

/// The executor's own ring-thread state: the jobs ready to run, and the buffers the inbox is
/// swapped into (kept to reuse their storage).
@safe struct LoopState: ~Copyable {
    // SAFETY (@safe): `parked` holds continuations resumed exactly once, by the loop (ring thread only).
    var ready = FIFO<ReadyJob>(initialCapacity: 256)
    /// Tasks suspended by `continuationRoundTrip()`, resumed by the loop's next iteration.
    var parked = unsafe FIFO<UnsafeContinuation<Void, Never>>(initialCapacity: 64)
    var inboxJobs: [ReadyJob] = []
    var inboxCancellations: [OperationID] = []
    var inboxTimers: [(job: ReadyJob, delay: Duration)] = []
    var inboxStreamRequests: [(MultishotStream, RingExecutor.StreamRequest)] = []
    var inboxClosingRequests: [(Int32, RingExecutor.ClosingRequest)] = []
    var inboxResumptions: [UnsafeContinuation<Void, Never>] = unsafe []
}
