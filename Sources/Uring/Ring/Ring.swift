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
    /// The epoll driver's ring, when this ring is not a kernel ring (then `raw` describes its
    /// queues, and liburing's inline helpers work on them unchanged).
    let soft: UnsafeMutablePointer<SoftRing>?
    let submissionEntries: UInt32
    let completionEntries: UInt32
    let setupMode: String
    /// The opcodes below 64 that this ring executes, one bit each (`io_uring_get_probe_ring`;
    /// every bit for the epoll driver, which makes the system calls itself). An operation with an
    /// ``IOOperation/optionalOpcode`` that is missing here runs on the blocking pool instead.
    let supportedOpcodes: UInt64
    var backend: RingBackend { unsafe soft == nil ? .ioUring : .epoll }

    /// Sets up a ring with `entries` submission entries and twice as many completion entries, on
    /// the driver `preference` asks for (see ``RingBackendPreference``). Must run on the thread
    /// that will submit (single issuer). When the kernel has not enough memory for that many
    /// (`ENOMEM`), smaller rings are tried, down to 16 entries: check `submissionEntries`.
    /// `injectedFailures` (tests) fail the first io_uring set-up attempts with those errnos;
    /// `injectedMissingFeature` (tests) plays a kernel ring that lacks it.
    init(
        entries: UInt32, preference: RingBackendPreference = .automatic, injectedFailures: [Int32] = [],
        injectedMissingFeature: String? = nil, injectedLackingOpcodes: UInt64 = 0
    ) throws(IOError) {
        guard entries >= 1, entries <= 32768 else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)
        }
        let raw = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        if preference != .epoll {
            do throws(IOError) {
                let setup = try unsafe Ring.setUp(raw, entries: entries, injectedFailures: injectedFailures)
                if let missing = unsafe injectedMissingFeature ?? Ring.missingFeature(raw) {
                    unsafe io_uring_queue_exit(raw)
                    var error = IOError(.unsupported, errno: .notSupported, operation: .setup)
                    error.subject = .feature(missing)
                    throw error
                }
                unsafe self.raw = unsafe raw
                unsafe soft = nil
                submissionEntries = setup.params.sq_entries
                completionEntries = setup.params.cq_entries
                setupMode = setup.name
                supportedOpcodes = unsafe Ring.probeOpcodes(raw) & ~injectedLackingOpcodes
                // Saves an fd lookup per io_uring_enter; optional, so failure is ignored.
                _ = unsafe io_uring_register_ring_fd(raw)
                return
            } catch {
                guard preference == .automatic, Ring.fallsBack(error) else {
                    unsafe raw.deallocate()
                    throw error
                }
                RingBackend.announceFallback(reason: "\(error)")
            }
        }
        let soft = UnsafeMutablePointer<SoftRing>.allocate(capacity: 1)
        do throws(IOError) {
            unsafe soft.initialize(to: try SoftRing(raw: raw, entries: entries))
        } catch {
            unsafe soft.deallocate()
            unsafe raw.deallocate()
            throw error
        }
        unsafe self.raw = unsafe raw
        unsafe self.soft = unsafe soft
        submissionEntries = unsafe soft.pointee.submissionEntries
        completionEntries = unsafe soft.pointee.completionEntries
        setupMode = "epoll"
        supportedOpcodes = ~injectedLackingOpcodes
    }

    /// Whether an io_uring set-up failure sends an automatic ring to the epoll driver: io_uring
    /// denied (`EPERM`, `EACCES`: seccomp, sysctl), absent (`ENOSYS`), or lacking an operation
    /// the runtime uses.
    static func fallsBack(_ error: IOError) -> Bool {
        if error.code == .unsupported { return true }
        guard error.code == .ringUnavailable, let errno = error.errno else { return false }
        return errno == .notPermitted || errno == .permissionDenied || errno == .noFunction
    }

    /// The opcodes the operation definitions and the driver submit; a kernel ring must have
    /// them all (`io_uring_get_probe_ring`).
    static let requiredOpcodes: [(io_uring_op, String)] = [
        (IORING_OP_NOP, "NOP"), (IORING_OP_READ, "READ"), (IORING_OP_WRITE, "WRITE"),
        (IORING_OP_OPENAT, "OPENAT"), (IORING_OP_OPENAT2, "OPENAT2"), (IORING_OP_CLOSE, "CLOSE"),
        (IORING_OP_FSYNC, "FSYNC"), (IORING_OP_STATX, "STATX"), (IORING_OP_UNLINKAT, "UNLINKAT"),
        (IORING_OP_RENAMEAT, "RENAMEAT"), (IORING_OP_MKDIRAT, "MKDIRAT"), (IORING_OP_TIMEOUT, "TIMEOUT"),
        (IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"), (IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"),
        (IORING_OP_POLL_ADD, "POLL_ADD"), (IORING_OP_ACCEPT, "ACCEPT"), (IORING_OP_CONNECT, "CONNECT"),
        (IORING_OP_RECV, "RECV"), (IORING_OP_SEND, "SEND"), (IORING_OP_SENDMSG, "SENDMSG"),
        (IORING_OP_RECVMSG, "RECVMSG"), (IORING_OP_SHUTDOWN, "SHUTDOWN"), (IORING_OP_SEND_ZC, "SEND_ZC"),
    ]

    /// The first opcode or kernel feature the runtime needs that this kernel ring lacks, or nil.
    /// Flags that the probe cannot see (multishot receive, 6.0; multishot accept, cancel by
    /// descriptor and provided-buffer rings, 5.19) are covered by the kernel version.
    static func missingFeature(_ raw: UnsafeMutablePointer<io_uring>) -> String? {
        guard let probe = unsafe io_uring_get_probe_ring(raw) else {
            return "IORING_REGISTER_PROBE (Linux 5.6)"
        }
        defer { unsafe io_uring_free_probe(probe) }
        for (opcode, name) in requiredOpcodes where unsafe io_uring_opcode_supported(probe, Int32(opcode.rawValue)) == 0
        {
            return "IORING_OP_\(name)"
        }
        if let version = kernelVersion(), version < (6, 0) {
            return "multishot receive with provided buffers (Linux 6.0; this kernel is \(version.0).\(version.1))"
        }
        return nil
    }

    /// The opcodes below 64 that the kernel ring supports, as bits (0 when there is no probe).
    static func probeOpcodes(_ raw: UnsafeMutablePointer<io_uring>) -> UInt64 {
        guard let probe = unsafe io_uring_get_probe_ring(raw) else { return 0 }
        defer { unsafe io_uring_free_probe(probe) }
        var mask: UInt64 = 0
        for opcode in 0..<64 where unsafe io_uring_opcode_supported(probe, Int32(opcode)) != 0 {
            mask |= 1 << UInt64(opcode)
        }
        return mask
    }

    /// The running kernel's major and minor version (`uname`).
    static func kernelVersion() -> (Int, Int)? {
        var name = utsname()
        guard unsafe uname(&name) == 0 else { return nil }
        let release = unsafe withUnsafeBytes(of: &name.release) {
            unsafe String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
        }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
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
        if let soft = unsafe soft {
            unsafe soft.pointee.waitForPool()
            unsafe soft.deinitialize(count: 1)
            unsafe soft.deallocate()
        } else {
            unsafe io_uring_queue_exit(raw)
        }
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
        try unsafe BufferPool(count: count, bufferSize: bufferSize) { registration in
            if let soft = unsafe soft {
                // SAFETY: ring_addr is the pool's page-aligned mapping of ring_entries entries.
                unsafe soft.pointee.registerBuffers(
                    group: registration.pointee.bgid,
                    ring: UnsafeMutableRawPointer(bitPattern: UInt(registration.pointee.ring_addr))!,
                    entries: registration.pointee.ring_entries)
                return 0
            }
            return unsafe io_uring_register_buf_ring(raw, registration, 0)
        }
    }

    /// Completions taken off the CQ while making room for submissions; dispatched first by the loop.
    var stashed: [Completion] = []

    /// The ring's own file descriptor (the target of another ring's `IORING_OP_MSG_RING`).
    var fileDescriptor: Int32 { unsafe soft == nil ? unsafe raw.pointee.ring_fd : -1 }

    /// Entries queued but not yet submitted.
    var pendingSubmissions: UInt32 { unsafe io_uring_sq_ready(raw) }

    /// Completions posted and not yet reaped.
    var completionsReady: UInt32 { unsafe io_uring_cq_ready(raw) }

    /// Submits queued entries and, with `wait`, blocks until at least one completion is ready.
    /// Always collects completions (needed with deferred task running). Returns the kernel's
    /// result; `-EINTR` and `-EBUSY`/`-EAGAIN` are normal and the loop just goes round again.
    @discardableResult
    mutating func submit(wait: Bool) -> Int32 {
        if let soft = unsafe soft { return unsafe soft.pointee.enter(wait: wait) }
        if wait {
            return unsafe io_uring_submit_and_wait(raw, 1)
        }
        return unsafe io_uring_submit_and_get_events(raw)
    }

    /// `fd` is about to be closed: the epoll driver drops its registration now, if nothing waits
    /// on it (what waits is ended by the close's cancel, which drops it then). The kernel ring
    /// keeps no per-descriptor state.
    mutating func descriptorClosing(_ fd: Int32) {
        if let soft = unsafe soft { unsafe soft.pointee.forgetDescriptor(fd) }
    }

    /// True when the kernel has completions it could not post because the CQ ring was full.
    var completionQueueOverflowed: Bool {
        if let soft = unsafe soft { return unsafe soft.pointee.hasOverflow }
        // SAFETY: kflags points into the ring's mapped SQ memory for the ring's lifetime.
        return unsafe (raw.pointee.sq.kflags.pointee & IORING_SQ_CQ_OVERFLOW) != 0
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
