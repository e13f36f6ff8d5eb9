internal import CLiburing
import Glibc

/// One kind of I/O request, as a value: what the public API builds and a driver executes.
///
/// Each conforming type is the one place that knows its operation (see `Definitions/`):
/// - how it is encoded into a submission entry (``encode(into:timespec:)``: the only
///   `io_uring_prep_*` call sites of the project, with the ring's own control entries in
///   `ControlEntries.swift`);
/// - what happens after `EINTR` or `EAGAIN` (``retry``): a requirement with no default, so the
///   compiler refuses an operation that does not say;
/// - its name in errors (``name``), which is also what fault injection targets in tests;
/// - the descriptor it uses (``descriptor``), which `close()` waits for.
///
/// The values hold plain data (descriptors, lengths, offsets, and pointers to memory that the
/// awaiting caller lends until the final completion), so a driver without a kernel ring (readiness
/// plus a worker pool) can execute the same values with system calls.
///
/// Adding an opcode: see Docs/DESIGN.md, "Adding an operation".
protocol IOOperation: Sendable {
    /// The operation's name in ``IOError`` and the target of injected faults.
    var name: IOError.Operation { get }
    /// What a transient failure (`EINTR`, `EAGAIN`) leads to.
    static var retry: RetryPolicy { get }
    /// The descriptor the operation acts on, which `close()` counts and waits for; -1 for none
    /// (paths relative to the working directory, no-ops, timers) and for `close` itself.
    var descriptor: Int32 { get }
    /// Whether a driver may try the operation on the caller's thread without blocking before it
    /// queues it (positioned reads: `preadv2` with `RWF_NOWAIT`, which answers from the page cache
    /// or says it would block). A default of false is provided.
    static var triesWithoutWaiting: Bool { get }
    /// Whether that try is made even when other work is ready on the ring (true for a status of
    /// a descriptor, which the kernel ring would hand to a worker thread, and for a large read:
    /// nothing is gained by batching either). False (the default): only when the ring is idle,
    /// so that busy rings submit their small reads together.
    var triesWithoutWaitingWhenBusy: Bool { get }
    /// Whether the operation's opcode is younger than the oldest kernel the runtime runs on
    /// (6.0), so that a kernel ring may lack it: then the same entry runs on the blocking pool
    /// (`RingExecutor.performOnWorker`), where the epoll driver's system-call code makes it.
    /// A default of false is provided.
    static var optionalOpcode: Bool { get }
    /// Fills a free submission entry (not its `user_data`, not its link flag). `timespec` is
    /// storage in the operation's slot, stable until the final completion, for operations that
    /// hand the kernel a duration.
    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>)
}

extension IOOperation {
    static var triesWithoutWaiting: Bool { false }
    var triesWithoutWaitingWhenBusy: Bool { false }
    static var optionalOpcode: Bool { false }
}

/// What a driver does when an attempt fails with `EINTR` or `EAGAIN`.
enum RetryPolicy: Equatable, Sendable {
    /// Never again: the first result is final (a close releases the descriptor whatever it
    /// returns, so repeating it could close a descriptor that reused the number).
    case never
    /// Submitted again at once (after `EINTR` or `EAGAIN`), up to the retry limit.
    case resubmit
    /// Submitted again at once after `EINTR`; after `EAGAIN`, once a poll for `events` says the
    /// descriptor is ready (a descriptor in non-blocking mode that was not ready).
    case whenReady(events: UInt32)

    static let readable = RetryPolicy.whenReady(events: UInt32(POLLIN))
    static let writable = RetryPolicy.whenReady(events: UInt32(POLLOUT))
}

extension IOOperation {
    /// Submits the operation on the caller's ring (or the shared one) and returns its result:
    /// a byte count, a descriptor, or 0.
    ///
    /// - Throws: ``IOError`` named ``name``: the kernel's errno, ``IOError/Code/cancelled``,
    ///   ``IOError/Code/timedOut``, ``IOError/Code/closed``, ``IOError/Code/executorShutdown``.
    @inline(__always)
    func run(
        timeout: Duration? = nil, fileID: StaticString = #fileID, line: UInt = #line
    ) async throws(IOError) -> Int32 {
        let outcome = try await RingExecutor.submit(self, timeout: timeout)
        return try outcome.get(name, fileID: fileID, line: line)
    }

    /// Submits the operation and returns how it ended, for callers that treat some failures
    /// themselves (a zero-copy send that falls back to a copy, a sleep's `ETIME`).
    @inline(__always)
    func outcome(timeout: Duration? = nil) async throws(IOError) -> OperationOutcome {
        try await RingExecutor.submit(self, timeout: timeout)
    }
}
