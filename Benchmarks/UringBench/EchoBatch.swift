import Glibc

/// One echo connection's batches, as the uring and epoll engines keep them: each batch of
/// `pipeline` messages of `size` bytes is sent straight from the window of the connection's
/// random pattern at ``base`` (the window moves by one byte per message, so no two consecutive
/// batches are alike); what comes back is compared with it byte for byte, each message's latency
/// is recorded when its last byte is in, and the tally is kept.
struct EchoBatch {
    let size: Int
    let pipeline: Int
    /// Bytes per batch.
    let count: Int
    /// The connection's random bytes (`count + 256`), freed by ``free()``.
    let pattern: UnsafeMutableRawPointer
    /// Where the current batch starts in ``pattern``.
    private(set) var base: UnsafeMutableRawPointer
    /// Bytes of the current batch the server has taken.
    var sent = 0
    /// Bytes of the current batch that came back.
    private(set) var received = 0
    /// The connection is still in the run (it has not failed).
    private(set) var open = true
    /// A batch is out whose echo is not all back.
    private(set) var inFlight = false
    private(set) var tally = ClientTally()
    private var sequence = 0
    private var message = 0
    private var started: UInt64 = 0
    private var measured = false

    init(seed index: Int, size: Int, pipeline: Int) {
        self.size = size
        self.pipeline = pipeline
        count = size * pipeline
        pattern = .allocate(byteCount: count + 256, alignment: 16)
        base = pattern
        fillPattern(pattern, count: count + 256, seed: index)
    }

    func free() { pattern.deallocate() }

    /// Starts the next batch; false when the run is over or the connection failed.
    mutating func begin(_ phase: Phase) -> Bool {
        let current = phase.current
        guard current != Phase.stop, open else { return false }
        base = pattern + (sequence & 255)
        sequence += pipeline
        sent = 0
        received = 0
        message = 0
        measured = current == Phase.measure
        started = nowNanoseconds()
        inFlight = true
        return true
    }

    /// `n` bytes of the echo in `bytes`: compared with what was sent (bytes beyond the batch are
    /// an error too) and counted; true when the whole batch is back.
    mutating func accept(_ bytes: UnsafeRawPointer, _ n: Int) -> Bool {
        let expected = count - received
        let fits = min(n, expected)
        if n > expected || memcmp(bytes, base + received, fits) != 0 { tally.verifyErrors += 1 }
        received += fits
        let now = nowNanoseconds()
        while message < pipeline, received >= (message + 1) * size {
            if measured { tally.histogram.record(now - started) }
            message += 1
        }
        return received == count
    }

    /// The whole batch went out and came back: counted.
    mutating func complete() {
        inFlight = false
        tally.total += pipeline
        if measured { tally.measured += pipeline }
    }

    /// The connection failed in `operation` (errno, or 0: the peer closed): counted, with why,
    /// and left out from now on.
    mutating func fail(_ operation: String, errno code: Int32) {
        guard open else { return }
        tally.connectionErrors += 1
        tally.failure =
            code == 0
            ? "\(operation): the server closed the connection"
            : "\(operation): \(String(cString: strerror(code))) (errno \(code))"
        open = false
        inFlight = false
    }

    /// The load generator stopped waiting: a batch still out is an error (its echo never came).
    mutating func endRun() {
        guard open, inFlight else { return }
        tally.connectionErrors += 1
        tally.failure = "no echo within 5 s of the end"
    }

    /// Taken out of the run without an error (the end of the run).
    mutating func close() { open = false }
}

/// The connection's random bytes (xorshift from its index), as every engine makes them.
func fillPattern(_ pattern: UnsafeMutableRawPointer, count: Int, seed index: Int) {
    var random = UInt64(truncatingIfNeeded: index &* 7919 &+ 17) &* 0x9E37_79B9_7F4A_7C15
    for i in 0..<count {
        random ^= random << 13
        random ^= random >> 7
        random ^= random << 17
        pattern.storeBytes(of: UInt8(truncatingIfNeeded: random), toByteOffset: i, as: UInt8.self)
    }
}
