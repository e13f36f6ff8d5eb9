import CLiburing
import Glibc
import Uring

/// `uring-bench echo --target … --engine uring` (the default where io_uring is allowed): the echo
/// load driven by one plain thread on an io_uring of its own, with no tasks. Each connection has
/// one multishot receive into a ring of provided buffers and at most one send in flight; a loop
/// turn is one `io_uring_enter` that submits the turn's sends and runs the receives that came in
/// (the ring is `DEFER_TASKRUN`: the receives' copies happen in that call, on this thread). So a
/// request costs the client no system call of its own, where the epoll engine makes a `send`, a
/// `recv` and a share of an `epoll_wait` (about 190 ns each on a VM with today's mitigations).
/// Same messages, checks, latency and drain as ``runEchoTargetEpoll(connections:size:pipeline:spin:phase:controller:)``:
/// each connection sends a batch of `pipeline` messages straight from its pattern, compares every
/// received byte with what it sent, and starts its next batch once the whole echo is back. With
/// `spin` it polls (`io_uring_enter` with no wait) instead of sleeping.
///
/// Returns nil, having touched no connection, when the ring or its buffers cannot be set up
/// (io_uring denied, or a kernel before 6.0, which has no multishot receive): the caller then
/// uses the epoll engine.
func runEchoTargetUring(
    connections: [TCPConnection], size: Int, pipeline: Int, spin: Bool, phase: Phase, controller: Controller
) -> [ClientTally]? {
    let batch = size * pipeline
    let count = connections.count
    guard count > 0 else { return [] }
    let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
    defer { ring.deallocate() }
    // Room for a send and a receive (or a cancel) per connection, at most the kernel's 32,768.
    let entries = UInt32(min(max(64, nextPowerOfTwo(2 * count)), 32768))
    guard setUpLoadRing(ring, entries: entries) else { return nil }
    var ringOpen = true
    defer { if ringOpen { io_uring_queue_exit(ring) } }

    // The provided buffers: a message or a whole batch per completion where it fits.
    let bufferSize = min(max(batch, 4096), 64 * 1024)
    let bufferCount = min(max(64, nextPowerOfTwo(2 * count)), 4096)
    let buffers = LoadBuffers(ring: ring, count: bufferCount, size: bufferSize)
    guard let buffers else { return nil }

    struct Connection {
        var fd: Int32
        var batch: EchoBatch
        var sending = false
        var receiving = false
    }
    let states = UnsafeMutablePointer<Connection>.allocate(capacity: count)
    for (index, connection) in connections.enumerated() {
        (states + index).initialize(
            to: Connection(
                fd: connection.descriptor.rawValue, batch: EchoBatch(seed: index, size: size, pipeline: pipeline)))
    }
    // Set when the kernel might still hold a request (it never should): then nothing is freed.
    var kernelMayHoldMemory = false
    defer {
        if !kernelMayHoldMemory {
            for index in 0..<count { states[index].batch.free() }
            states.deinitialize(count: count)
            states.deallocate()
        }
    }
    let sendTag: UInt64 = 0
    let receiveTag: UInt64 = 1
    let cancelTag: UInt64 = 2

    func submission() -> UnsafeMutablePointer<io_uring_sqe> {
        while true {
            if let sqe = io_uring_get_sqe(ring) { return sqe }
            _ = io_uring_submit(ring)
        }
    }
    func send(_ index: Int) {
        let sqe = submission()
        let state = states + index
        io_uring_prep_send(
            sqe, state.pointee.fd, state.pointee.batch.base + state.pointee.batch.sent,
            batch - state.pointee.batch.sent, Int32(MSG_NOSIGNAL))
        sqe.pointee.user_data = UInt64(index) << 2 | sendTag
        state.pointee.sending = true
    }
    func receive(_ index: Int) {
        let sqe = submission()
        io_uring_prep_recv_multishot(sqe, states[index].fd, nil, 0, 0)
        sqe.pointee.flags |= cliburing_sqe_flag_buffer_select()
        sqe.pointee.buf_group = LoadBuffers.group
        sqe.pointee.user_data = UInt64(index) << 2 | receiveTag
        states[index].receiving = true
    }
    /// Starts the connection's next batch, unless the run is over.
    func start(_ index: Int) {
        if states[index].batch.begin(phase) { send(index) }
    }
    /// The whole batch went out and came back: counted, and the next one started.
    func finishBatch(_ index: Int) {
        states[index].batch.complete()
        start(index)
    }
    /// One completion, of a send, a receive or a cancel.
    func complete(_ index: Int, tag: UInt64, result: Int32, flags: UInt32) {
        let state = states + index
        if tag == sendTag {
            state.pointee.sending = false
            guard state.pointee.batch.open else { return }
            if result <= 0 {
                state.pointee.batch.fail("send", errno: result == 0 ? EPIPE : -result)
                return
            }
            state.pointee.batch.sent += Int(result)
            if state.pointee.batch.sent < batch {
                send(index)  // a short send: the rest
            } else if state.pointee.batch.inFlight, state.pointee.batch.received == batch {
                finishBatch(index)  // the echo came back before the send's completion
            }
        } else if tag == receiveTag {
            if flags & IORING_CQE_F_MORE == 0 { state.pointee.receiving = false }
            if result > 0 {
                let id = UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT)
                if state.pointee.batch.open, state.pointee.batch.accept(buffers.address(of: id), Int(result)),
                    !state.pointee.sending
                {
                    finishBatch(index)
                }
                buffers.recycle(id)
            } else if result != -ENOBUFS && result != -ECANCELED {
                state.pointee.batch.fail("receive", errno: -result)
            }
            // Out of buffers (every one is back by the next submission) or cut short: armed again.
            if !state.pointee.receiving, state.pointee.batch.open, result != -ECANCELED { receive(index) }
        }
        // A cancel's own completion: the request it cancelled reports how it ended.
    }

    var outstanding = 0  // connections with a batch out
    var completions = [UnsafeMutablePointer<io_uring_cqe>?](repeating: nil, count: 256)
    /// Reaps every completion there is.
    func reap() {
        while true {
            let n = Int(
                completions.withUnsafeMutableBufferPointer {
                    io_uring_peek_batch_cqe(ring, $0.baseAddress!, UInt32($0.count))
                })
            if n == 0 { return }
            for k in 0..<n {
                let cqe = completions[k]!
                let index = Int(cqe.pointee.user_data >> 2)
                let wasOut = states[index].batch.inFlight
                complete(index, tag: cqe.pointee.user_data & 3, result: cqe.pointee.res, flags: cqe.pointee.flags)
                if wasOut && !states[index].batch.inFlight { outstanding -= 1 }
            }
            io_uring_cq_advance(ring, UInt32(n))
            buffers.publish()
        }
    }
    var wait = __kernel_timespec(tv_sec: 0, tv_nsec: 100_000_000)
    func submitAndWait() {
        var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
        _ = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &wait, nil)
    }

    for index in 0..<count { receive(index) }
    for index in 0..<count {
        start(index)
        if states[index].batch.inFlight { outstanding += 1 }
    }
    controller.start()
    var drainDeadline: UInt64 = 0
    while outstanding > 0 {
        if spin {
            _ = io_uring_submit_and_get_events(ring)
        } else {
            submitAndWait()
        }
        reap()
        if phase.current == Phase.stop {
            if drainDeadline == 0 { drainDeadline = nowNanoseconds() + 5_000_000_000 }
            if nowNanoseconds() > drainDeadline { break }  // a server that stopped answering
        }
    }
    for index in 0..<count { states[index].batch.endRun() }
    // Nothing may write into the buffers or read the patterns once they are freed: cancel what is
    // still in the kernel and wait for its last completion.
    for index in 0..<count where states[index].receiving || states[index].sending {
        states[index].batch.close()
        let sqe = submission()
        io_uring_prep_cancel_fd(sqe, states[index].fd, UInt32(IORING_ASYNC_CANCEL_ALL))
        sqe.pointee.user_data = UInt64(index) << 2 | cancelTag
    }
    let giveUp = nowNanoseconds() + 5_000_000_000
    while (0..<count).contains(where: { states[$0].receiving || states[$0].sending }) {
        if nowNanoseconds() > giveUp {
            kernelMayHoldMemory = true
            buffers.keepMemory()
            break
        }
        submitAndWait()
        reap()
    }
    let tallies = (0..<count).map { states[$0].batch.tally }
    withExtendedLifetime(buffers) {
        io_uring_queue_exit(ring)
        ringOpen = false
    }
    return tallies
}

/// Sets up the load generator's ring: single issuer with deferred task work where the kernel has
/// them (6.1), plain otherwise; false when io_uring is unavailable or the kernel is older than
/// 6.0 (multishot receive is a flag, which no probe lists: a 5.19 ring would set up and then
/// fail every receive).
private func setUpLoadRing(_ ring: UnsafeMutablePointer<io_uring>, entries: UInt32) -> Bool {
    guard let (major, _) = kernelRelease(), major >= 6 else { return false }
    for flags in [UInt32(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN), 0] {
        var params = io_uring_params()
        params.flags = flags | UInt32(IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP)  // clamp: at most the kernel's limits
        params.cq_entries = entries * 4
        let rc = io_uring_queue_init_params(entries, ring, &params)
        if rc == 0 { return true }
        if rc != -EINVAL { return false }
    }
    return false
}

/// The load ring's provided buffers: `count` buffers of `size` bytes in a registered buffer ring.
private final class LoadBuffers {
    static let group: UInt16 = 0
    let size: Int
    private let mask: Int32
    private let ringBytes: Int
    private let bufferRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let storage: UnsafeMutableRawPointer
    private var added: Int32 = 0
    private var kept = false

    init?(ring: UnsafeMutablePointer<io_uring>, count: Int, size: Int) {
        self.size = size
        mask = io_uring_buf_ring_mask(UInt32(count))
        ringBytes = count * MemoryLayout<io_uring_buf>.stride
        let mapped = mmap(nil, ringBytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else { return nil }
        bufferRing = mapped.bindMemory(to: io_uring_buf_ring.self, capacity: 1)
        storage = .allocate(byteCount: count * size, alignment: 4096)
        var registration = io_uring_buf_reg()
        registration.ring_addr = UInt64(UInt(bitPattern: mapped))
        registration.ring_entries = UInt32(count)
        registration.bgid = Self.group
        guard io_uring_register_buf_ring(ring, &registration, 0) == 0 else {
            munmap(mapped, ringBytes)
            storage.deallocate()
            return nil
        }
        io_uring_buf_ring_init(bufferRing)
        for id in 0..<count {
            io_uring_buf_ring_add(bufferRing, storage + id * size, UInt32(size), UInt16(id), mask, Int32(id))
        }
        io_uring_buf_ring_advance(bufferRing, Int32(count))
    }

    deinit {
        guard !kept else { return }
        munmap(bufferRing, ringBytes)
        storage.deallocate()
    }

    @inline(__always)
    func address(of id: UInt16) -> UnsafeMutableRawPointer { storage + Int(id) * size }

    /// Hands buffer `id` back; ``publish()`` makes the returns visible to the kernel.
    @inline(__always)
    func recycle(_ id: UInt16) {
        io_uring_buf_ring_add(bufferRing, address(of: id), UInt32(size), id, mask, added)
        added += 1
    }

    func publish() {
        guard added > 0 else { return }
        io_uring_buf_ring_advance(bufferRing, added)
        added = 0
    }

    /// The kernel may still hold a buffer: never free them.
    func keepMemory() { kept = true }
}

/// The smallest power of two ≥ `n` (n ≥ 1).
private func nextPowerOfTwo(_ n: Int) -> Int {
    n <= 1 ? 1 : 1 << (Int.bitWidth - (n - 1).leadingZeroBitCount)
}

/// The running kernel's major and minor version (`uname`), if its release string starts with them.
func kernelRelease() -> (major: Int, minor: Int)? {
    var uts = utsname()
    guard uname(&uts) == 0 else { return nil }
    let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
    return parts.count == 2 ? (parts[0], parts[1]) : nil
}
