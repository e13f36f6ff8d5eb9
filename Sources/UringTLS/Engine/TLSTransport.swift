internal import COpenSSL
import Glibc

/// The ciphertext between one `SSL` and its TCP connection: a BIO of the engine's own whose
/// buffers the ring reads into and sends from.
///
/// OpenSSL writes each record into the *output* buffer (the BIO's write), and the connection
/// sends straight from it; the connection receives straight into the *input* buffer, and
/// OpenSSL reads records from it (the BIO's read). The output buffer is taken from
/// ``TLSMemory``'s per-thread cache when the first byte of ciphertext is written and given back
/// as soon as the last byte is sent, so a ring's sessions share a few buffers that stay in the
/// core's cache (a 64 KiB HTTPS response is copied through it twice), instead of each holding
/// its own, cold by the time its turn comes. The input buffer stays with the session: an idle
/// connection's receive is lent it while it waits.
///
/// Every call (OpenSSL's, through the BIO, and the session's) is made under the session's lock.
/// Only the holder of the output gate sends and consumes output, and only the holder of the
/// input gate receives, commits input and makes OpenSSL read, so the regions handed out stay
/// valid until they are consumed or committed: OpenSSL only appends output and only takes input
/// from the front, and neither buffer moves or is given back while such a region is out.
@safe struct TLSTransport {
    // SAFETY (@safe): `input` is a block of `inputCapacity` bytes and `output` (when set) one of `outputCapacity`,
    // both owned by the session; every offset stays within 0...capacity, and every copy within the counts.
    /// Room for four full records and their overhead, so that a 64 KiB write leaves in one send.
    static let outputCapacity = 4 * (16_384 + 256)
    /// Room for a receive of up to 32 KiB (two records).
    static let inputCapacity = 32_768

    /// The output buffer while ciphertext waits in it (nil when there is none); bytes
    /// `outputStart..<outputEnd` are waiting.
    var output: UnsafeMutableRawPointer?
    var outputStart = 0
    var outputEnd = 0
    /// The input buffer (for the session's life); bytes `inputStart..<inputEnd` wait for OpenSSL.
    let input: UnsafeMutableRawPointer
    var inputStart = 0
    var inputEnd = 0

    init(input: UnsafeMutableRawPointer) {
        unsafe self.input = input
    }

    /// OpenSSL's method for the BIO (made once; never freed). Nil when OpenSSL cannot make one.
    // SAFETY: set once by its initializer and only read afterwards (OpenSSL reads a method without changing it).
    nonisolated(unsafe) static let method: OpaquePointer? = unsafe makeMethod()

    @unsafe private static func makeMethod() -> OpaquePointer? {
        let index = BIO_get_new_index()
        guard index > 0, let method = unsafe BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "swift-uring ring") else {
            return nil
        }
        guard unsafe BIO_meth_set_write_ex(method, transportWrite) == 1,
            unsafe BIO_meth_set_read_ex(method, transportRead) == 1,
            unsafe BIO_meth_set_ctrl(method, transportControl) == 1,
            unsafe BIO_meth_set_create(method, transportCreate) == 1
        else {
            unsafe BIO_meth_free(method)
            return nil
        }
        return unsafe method
    }

    // MARK: - The session's side (under its lock)

    /// Ciphertext waiting to be sent, or nil when there is none.
    func pendingOutput() -> UnsafeRawBufferPointer? {
        guard let output = unsafe output, outputEnd > outputStart else { return nil }
        return unsafe UnsafeRawBufferPointer(start: output + outputStart, count: outputEnd - outputStart)
    }

    /// Room left in the output buffer (all of it while none is lent).
    var outputRoom: Int { Self.outputCapacity - outputEnd }

    /// Room for a whole alert record at any version and cipher (TLS 1.2 CBC with SHA-384 is the
    /// largest: a 5-byte header, an explicit IV, a MAC and padding around 2 bytes).
    static let alertRoom = 96

    /// Marks `count` bytes of ``pendingOutput()`` as sent; the buffer goes back to the cache when
    /// nothing is left in it.
    mutating func consumeOutput(_ count: Int) {
        outputStart = min(outputStart + count, outputEnd)
        if outputStart == outputEnd { releaseOutput() }
    }

    /// Gives the output buffer back (what it held is dropped).
    mutating func releaseOutput() {
        if let output = unsafe output { unsafe TLSMemory.releaseBlock(output) }
        unsafe output = nil
        outputStart = 0
        outputEnd = 0
    }

    /// Free room for received ciphertext, or nil when the buffer is full. Bytes OpenSSL has not
    /// read yet move to the front first when the free room is at the end only.
    mutating func inputSpace() -> UnsafeMutableRawBufferPointer? {
        if inputStart == inputEnd {
            inputStart = 0
            inputEnd = 0
        } else if inputEnd == Self.inputCapacity && inputStart > 0 {
            // SAFETY: both ranges lie in the buffer (memmove: they may overlap); no receive is in flight (the caller
            // holds the input gate).
            unsafe memmove(input, input + inputStart, inputEnd - inputStart)
            inputEnd -= inputStart
            inputStart = 0
        }
        guard inputEnd < Self.inputCapacity else { return nil }
        return unsafe UnsafeMutableRawBufferPointer(start: input + inputEnd, count: Self.inputCapacity - inputEnd)
    }

    /// Hands `count` received bytes, written into ``inputSpace()``, to OpenSSL.
    mutating func commitInput(_ count: Int) {
        inputEnd = min(inputEnd + count, Self.inputCapacity)
    }

    // MARK: - OpenSSL's side (called from inside SSL_* calls)

    /// Copies what fits of a record into the output buffer: the count, 0 when it is full.
    /// Nil when no buffer could be allocated.
    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int? {
        if unsafe bytes.isEmpty { return 0 }  // no buffer for nothing (it would wait, unsent, for the next flight)
        if unsafe output == nil {
            guard let block = unsafe TLSMemory.allocateBlock(Self.outputCapacity) else { return nil }
            unsafe output = block
        }
        guard let output = unsafe output else { return nil }
        let count = min(bytes.count, Self.outputCapacity - outputEnd)
        if count > 0, let base = bytes.baseAddress {
            unsafe (output + outputEnd).copyMemory(from: base, byteCount: count)
            outputEnd += count
        }
        return count
    }

    /// Copies waiting ciphertext into `buffer`: the count, 0 when none waits.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let count = min(buffer.count, inputEnd - inputStart)
        if count > 0, let base = buffer.baseAddress {
            unsafe base.copyMemory(from: input + inputStart, byteCount: count)
            inputStart += count
        }
        return count
    }
}

// The BIO's functions. The BIO's data is the session's `TLSTransport` (set right after the BIO is
// made, before it is given to the `SSL`), which outlives the BIO: the session frees the `SSL`,
// and with it the BIO, before the transport.

private let retryFlags = BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY

@unsafe private func transport(of bio: OpaquePointer?) -> UnsafeMutablePointer<TLSTransport>? {
    unsafe BIO_get_data(bio)?.assumingMemoryBound(to: TLSTransport.self)
}

private func transportCreate(_ bio: OpaquePointer?) -> Int32 {
    // SAFETY: OpenSSL passes the BIO it is making.
    unsafe BIO_set_init(bio, 1)
    return 1
}

private func transportWrite(
    _ bio: OpaquePointer?, _ data: UnsafePointer<CChar>?, _ length: Int, _ written: UnsafeMutablePointer<Int>?
) -> Int32 {
    // SAFETY: OpenSSL passes its BIO (whose data is a live transport, see above), `length` readable
    // bytes at `data`, and where to store the count; the session's lock is held.
    unsafe BIO_clear_flags(bio, retryFlags)
    guard let state = unsafe transport(of: bio), let written = unsafe written else { return 0 }
    guard let count = unsafe state.pointee.write(UnsafeRawBufferPointer(start: data, count: length)) else {
        return 0  // no memory: an error, not a retry
    }
    if count == 0 && length > 0 {
        unsafe BIO_set_flags(bio, BIO_FLAGS_WRITE | BIO_FLAGS_SHOULD_RETRY)  // full: sent, then again
        return 0
    }
    unsafe written.pointee = count
    return 1
}

private func transportRead(
    _ bio: OpaquePointer?, _ data: UnsafeMutablePointer<CChar>?, _ length: Int, _ read: UnsafeMutablePointer<Int>?
) -> Int32 {
    // SAFETY: as in `transportWrite`, with `length` writable bytes at `data`.
    unsafe BIO_clear_flags(bio, retryFlags)
    guard let state = unsafe transport(of: bio), let read = unsafe read else { return 0 }
    let count = unsafe state.pointee.read(into: UnsafeMutableRawBufferPointer(start: data, count: length))
    if count == 0 && length > 0 {
        // Nothing received yet: a retry (the end of the stream is the session's to tell, not OpenSSL's).
        unsafe BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY)
        return 0
    }
    unsafe read.pointee = count
    return 1
}

private func transportControl(
    _ bio: OpaquePointer?, _ command: Int32, _ argument: Int, _ pointer: UnsafeMutableRawPointer?
) -> Int {
    // SAFETY: as in `transportWrite`.
    guard let state = unsafe transport(of: bio) else { return 0 }
    switch command {
    case BIO_CTRL_FLUSH: return 1  // the session sends what waits; nothing is buffered here beyond it
    case BIO_CTRL_PENDING: return unsafe state.pointee.inputEnd - state.pointee.inputStart
    case BIO_CTRL_WPENDING: return unsafe state.pointee.outputEnd - state.pointee.outputStart
    default: return 0  // no kTLS, no close flag, nothing else
    }
}
