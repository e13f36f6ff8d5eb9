internal import CLiburing
import Glibc
import SystemPackage

/// The `~Copyable` owner of one io_uring instance. Only the ring thread that created it may use
/// it (the ring is set up with `IORING_SETUP_SINGLE_ISSUER`). Every `io_uring_*` call of the
/// project goes through here or through the operation encodings in `Operations/`.
@safe struct Ring: ~Copyable {
    // SAFETY (@safe): `raw` is set up in init and torn down in deinit, on the ring's thread (single issuer).
    /// The setup flag sets tried in order; the first the kernel accepts wins.
    static let setupFlagCandidates: [(flags: UInt32, name: String)] = [
        (
            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
            "single-issuer+defer-taskrun"
        ),
        (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL, "coop-taskrun"),
        (IORING_SETUP_SUBMIT_ALL, "plain"),
        (0, "plain-legacy"),
    ]

    let raw: UnsafeMutablePointer<io_uring>
    let submissionEntries: UInt32
    let completionEntries: UInt32
    let setupMode: String

    /// Sets up a ring with `entries` submission entries and twice as many completion entries.
    /// Must run on the thread that will submit (single issuer). When the kernel has not enough
    /// memory for that many (`ENOMEM`), smaller rings are tried, down to 16 entries: check
    /// `submissionEntries`. `injectedFailures` (tests) fail the first set-up attempts with those
    /// errnos.
    init(entries: UInt32, injectedFailures: [Int32] = []) throws(IOError) {
        guard entries >= 1, entries <= 32768 else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)
        }
        let raw = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        let setup: (params: io_uring_params, flags: UInt32, name: String)
        do throws(IOError) {
            setup = try unsafe Ring.setUp(raw, entries: entries, injectedFailures: injectedFailures)
        } catch {
            unsafe raw.deallocate()
            throw error
        }
        unsafe self.raw = unsafe raw
        submissionEntries = setup.params.sq_entries
        completionEntries = setup.params.cq_entries
        setupMode = setup.name
        // Saves an fd lookup per io_uring_enter; optional, so failure is ignored.
        _ = unsafe io_uring_register_ring_fd(raw)
    }

    private static func setUp(
        _ raw: UnsafeMutablePointer<io_uring>, entries requested: UInt32, injectedFailures: [Int32]
    ) throws(IOError) -> (params: io_uring_params, flags: UInt32, name: String) {
        var lastError: Int32 = EINVAL
        var injected = injectedFailures[...]
        var entries = requested
        while true {
            for candidate in Ring.setupFlagCandidates {
                var params = io_uring_params()
                params.flags = candidate.flags | IORING_SETUP_CQSIZE
                params.cq_entries = entries * 2
                let rc = unsafe (injected.popFirst().map { -$0 } ?? io_uring_queue_init_params(entries, raw, &params))
                if rc == 0 { return (params, candidate.flags, candidate.name) }
                lastError = -rc
                // Only "this flag is not supported" is worth another try with other flags.
                if lastError != EINVAL { break }
            }
            // Not enough kernel (or, before Linux 5.12, locked) memory: a smaller ring may fit.
            guard lastError == ENOMEM, entries > 16 else { break }
            entries = max(16, entries / 2)
        }
        throw IOError(.ringUnavailable, errno: Errno(rawValue: lastError), operation: .setup)
    }

    deinit {
        unsafe io_uring_queue_exit(raw)
        unsafe raw.deallocate()
    }

    /// A free submission entry, flushing the queue to the kernel first if it is full.
    @inline(__always)
    mutating func nextSubmission() -> UnsafeMutablePointer<io_uring_sqe> {
        if let sqe = unsafe io_uring_get_sqe(raw) { return unsafe sqe }
        return unsafe nextSubmissionSlow()
    }

    @inline(never)
    mutating func nextSubmissionSlow() -> UnsafeMutablePointer<io_uring_sqe> {
        while true {
            flushForSpace()
            if let sqe = unsafe io_uring_get_sqe(raw) { return unsafe sqe }
        }
    }

    /// Makes room for `count` consecutive submission entries (a linked pair must not be split
    /// across a flush).
    mutating func reserveSubmissions(_ count: UInt32) {
        while unsafe io_uring_sq_space_left(raw) < count { flushForSpace() }
    }

    /// Submits what is queued to free SQ entries. If the kernel refuses because completions are
    /// backed up (-EBUSY with a CQ overflow backlog), the CQ is emptied into `stashed`, to be
    /// dispatched by the loop, so submission can always make progress without re-entering it.
    private mutating func flushForSpace() {
        let rc = submit(wait: false)
        if rc == -EBUSY || rc == -EAGAIN {
            var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
            while unsafe io_uring_peek_cqe(raw, &cqe) == 0, let entry = unsafe cqe {
                unsafe stashed.append(
                    Completion(userData: entry.pointee.user_data, result: entry.pointee.res, flags: entry.pointee.flags)
                )
                unsafe io_uring_cqe_seen(raw, entry)
            }
        }
    }

    /// Registers a provided-buffer pool for multishot receives.
    func registerBufferPool(count: Int, bufferSize: Int) throws(IOError) -> BufferPool {
        try unsafe BufferPool(ring: raw, count: count, bufferSize: bufferSize)
    }

    /// Completions taken off the CQ while making room for submissions; dispatched first by the loop.
    var stashed: [Completion] = []

    /// The ring's own file descriptor (the target of another ring's `IORING_OP_MSG_RING`).
    var fileDescriptor: Int32 { unsafe raw.pointee.ring_fd }

    /// Entries queued but not yet submitted.
    var pendingSubmissions: UInt32 { unsafe io_uring_sq_ready(raw) }

    /// Completions posted and not yet reaped.
    var completionsReady: UInt32 { unsafe io_uring_cq_ready(raw) }

    /// Submits queued entries and, with `wait`, blocks until at least one completion is ready.
    /// Always collects completions (needed with deferred task running). Returns the kernel's
    /// result; `-EINTR` and `-EBUSY`/`-EAGAIN` are normal and the loop just goes round again.
    @discardableResult
    mutating func submit(wait: Bool) -> Int32 {
        if wait {
            return unsafe io_uring_submit_and_wait(raw, 1)
        }
        return unsafe io_uring_submit_and_get_events(raw)
    }

    /// True when the kernel has completions it could not post because the CQ ring was full.
    var completionQueueOverflowed: Bool {
        // SAFETY: kflags points into the ring's mapped SQ memory for the ring's lifetime.
        unsafe (raw.pointee.sq.kflags.pointee & IORING_SQ_CQ_OVERFLOW) != 0
    }

    /// Copies up to `capacity` ready completions into `batch` and advances the CQ once.
    /// `scratch` holds `capacity` CQE pointers. Returns how many were copied.
    @inline(__always)
    mutating func reap(
        into batch: UnsafeMutablePointer<Completion>,
        scratch: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>,
        capacity: Int
    ) -> Int {
        // io_uring_peek_batch_cqe loads the CQ tail with acquire ordering (and flushes a CQ
        // overflow backlog when the ring is empty), then fills `scratch` with pointers into the ring.
        let count = unsafe Int(io_uring_peek_batch_cqe(raw, scratch, UInt32(capacity)))
        guard count > 0 else { return 0 }
        for i in 0..<count {
            // SAFETY: the first `count` pointers point at CQEs we own until io_uring_cq_advance.
            let cqe = unsafe scratch[i].unsafelyUnwrapped
            unsafe batch[i] = unsafe Completion(
                userData: cqe.pointee.user_data, result: cqe.pointee.res, flags: cqe.pointee.flags)
        }
        unsafe io_uring_cq_advance(raw, UInt32(count))
        return count
    }
}

/// One completion copied out of the CQ ring.
struct Completion {
    var userData: UInt64
    var result: Int32
    var flags: UInt32
}
