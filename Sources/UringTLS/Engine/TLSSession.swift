internal import COpenSSL
import Glibc
import Synchronization
import Uring

/// One connection's OpenSSL state: an `SSL` whose records go through a ``TLSTransport`` BIO, so
/// that every byte still moves through the ring: the connection receives straight into the
/// transport's input buffer and sends straight from its output buffer (no copy of ciphertext in
/// Swift), and the output buffer is lent per flight from the thread's cache.
///
/// Every OpenSSL call is made with `lock` held; the I/O is made without it. Tasks take the
/// input gate to receive and the output gate to send (a handshake takes both, input first), so
/// one task may read while another writes, as on a ``TCPConnection``.
@safe final class TLSSession: @unchecked Sendable {
    // SAFETY (@safe): `ssl` and `transport` are created in init and freed in deinit (the `SSL`, and its BIO, first);
    // the pointers handed out by `pendingOutput` and `inputSpace` point into the transport's buffers, which stay put
    // until the holder of the output or input gate, which alone consumes or commits them, does so.
    // @unchecked Sendable: OpenSSL and transport state is touched only with `lock` held; the gates order the I/O.

    private let ssl: OpaquePointer
    /// The ciphertext buffers (the BIO's data).
    private let transport: UnsafeMutablePointer<TLSTransport>
    let context: TLSContext
    /// Held for every OpenSSL call. (A byte of state, not `()`: ThreadSanitizer takes the accesses
    /// to an empty state for races on the lock object itself.)
    private let lock = Lock<UInt8>(0)
    let inputGate = AsyncGate()
    let outputGate = AsyncGate()

    enum Step {
        case done(Int)
        case wantRead
        case wantWrite
        case closed
        case failed(TLSError)
    }

    init(context: TLSContext, serverName: String?) throws(TLSError) {
        self.context = context
        guard let ssl = unsafe SSL_new(context.context) else {
            throw TLSEngine.error(.invalidConfiguration, "cannot create an SSL session")
        }
        guard let method = unsafe TLSTransport.method, let bio = unsafe BIO_new(method) else {
            unsafe SSL_free(ssl)
            throw TLSEngine.error(.invalidConfiguration, "cannot create the session's BIO")
        }
        guard let input = unsafe TLSMemory.allocateBlock(TLSTransport.inputCapacity) else {
            unsafe BIO_free(bio)
            unsafe SSL_free(ssl)
            throw TLSError(.invalidConfiguration, reason: "out of memory for a TLS session")
        }
        let transport = UnsafeMutablePointer<TLSTransport>.allocate(capacity: 1)
        unsafe transport.initialize(to: TLSTransport(input: input))
        // SAFETY: the transport outlives the BIO: deinit frees the SSL (and the BIO with it) first.
        unsafe BIO_set_data(bio, transport)
        unsafe SSL_set_bio(ssl, bio, bio)  // the session owns the BIO from here
        unsafe self.ssl = ssl
        unsafe self.transport = transport
        switch context.configuration.role {
        case .client:
            unsafe SSL_set_connect_state(ssl)
            if let serverName, !serverName.isEmpty {
                if Self.isIPAddress(serverName) {
                    // An IP address is checked against the certificate's IP entries; no SNI for it.
                    let param = unsafe SSL_get0_param(ssl)
                    guard unsafe X509_VERIFY_PARAM_set1_ip_asc(param, serverName) == 1 else {
                        throw TLSEngine.error(.invalidConfiguration, "cannot check the address \(serverName)")
                    }
                } else {
                    guard unsafe curing_tls_set_server_name(ssl, serverName) == 1,
                        unsafe SSL_set1_host(ssl, serverName) == 1
                    else {
                        throw TLSEngine.error(.invalidConfiguration, "invalid server name '\(serverName)'")
                    }
                }
            } else if context.configuration.verifiesPeer {
                throw TLSError(
                    .invalidConfiguration,
                    reason: "a client that verifies the server needs its name (serverName), to check the certificate")
            }
        case .server:
            unsafe SSL_set_accept_state(ssl)
        }
    }

    /// Whether `name` is an IPv4 or IPv6 address literal (checked against the certificate's IP
    /// entries, not its DNS names).
    static func isIPAddress(_ name: String) -> Bool {
        var storage = in6_addr()
        if unsafe inet_pton(AF_INET, name, &storage) == 1 { return true }
        return unsafe inet_pton(AF_INET6, name, &storage) == 1
    }

    deinit {
        unsafe SSL_free(ssl)
        unsafe transport.pointee.releaseOutput()
        unsafe TLSMemory.releaseBlock(transport.pointee.input)
        unsafe transport.deinitialize(count: 1)
        unsafe transport.deallocate()
    }

    // MARK: - OpenSSL calls (each under the lock)

    /// One handshake step: `.done(0)` once complete.
    func handshake() -> Step {
        lock.withLock { _ in
            ERR_clear_error()  // SSL_get_error reads the queue: nothing stale may be in it
            let rc = unsafe SSL_do_handshake(ssl)
            return rc == 1 ? .done(0) : classify(rc, handshaking: true)
        }
    }

    /// Decrypts into `buffer`: `.done(n)`, `.closed` after the peer's close_notify, or a want.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Step {
        lock.withLock { _ in
            ERR_clear_error()  // SSL_get_error reads the queue: nothing stale may be in it
            var count = 0
            let rc = unsafe SSL_read_ex(ssl, buffer.baseAddress, buffer.count, &count)
            return rc == 1 ? .done(count) : classify(rc, handshaking: false)
        }
    }

    /// Encrypts from `bytes` into the output buffer: `.done(n)` for the bytes taken (possibly
    /// fewer than given), `.wantWrite` when the buffer is full.
    func write(_ bytes: UnsafeRawBufferPointer) -> Step {
        lock.withLock { _ in
            ERR_clear_error()  // SSL_get_error reads the queue: nothing stale may be in it
            var count = 0
            let rc = unsafe SSL_write_ex(ssl, bytes.baseAddress, bytes.count, &count)
            return rc == 1 ? .done(count) : classify(rc, handshaking: false)
        }
    }

    /// Queues a close_notify (once).
    func queueCloseNotify() {
        lock.withLock { _ in
            if unsafe SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN == 0 { _ = unsafe SSL_shutdown(ssl) }
            _ = TLSEngine.takeError()
        }
    }

    /// Queues a close_notify after what waits to be sent, if the output buffer has room for the
    /// whole alert record (a partly written alert would stay half in OpenSSL): false, and nothing
    /// queued, when it has not (send what waits first, then ``queueCloseNotify()``).
    func queueCloseNotifyIfRoom() -> Bool {
        lock.withLock { _ in
            guard unsafe transport.pointee.outputRoom >= TLSTransport.alertRoom else { return false }
            if unsafe SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN == 0 { _ = unsafe SSL_shutdown(ssl) }
            _ = TLSEngine.takeError()
            return true
        }
    }

    /// Whether what a completed handshake leaves to send may wait for the next write, or for a
    /// read that has to wait for the peer: true on a TLS 1.3 server, where that is only its
    /// session tickets, which the client does not wait for. (A TLS 1.2 server's last flight and a
    /// client's Finished complete the peer's handshake: they go at once.)
    var completedFlightCanWait: Bool {
        guard case .server = context.configuration.role else { return false }
        return version == .tlsv13
    }

    /// Whether the peer's close_notify has arrived.
    var receivedCloseNotify: Bool {
        lock.withLock { _ in unsafe SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN != 0 }
    }

    /// What a failed call means (the error queue is read and cleared here, on the calling thread).
    private func classify(_ rc: Int32, handshaking: Bool) -> Step {
        let code = unsafe SSL_get_error(ssl, rc)
        switch code {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN: return .closed
        default:
            let (packed, reason) = TLSEngine.takeError()
            let verify = unsafe SSL_get_verify_result(ssl)
            if (packed != 0 && curing_tls_is_verify_failure(packed) != 0) || (handshaking && verify != X509_V_OK) {
                let text = unsafe X509_verify_cert_error_string(verify).map { unsafe String(cString: $0) }
                return .failed(
                    TLSError(
                        .certificateVerificationFailed, reason: reason.isEmpty ? "certificate verify failed" : reason,
                        verification: text))
            }
            let fallback = code == SSL_ERROR_SYSCALL ? "the connection ended unexpectedly" : "TLS error \(code)"
            return .failed(
                TLSError(handshaking ? .handshakeFailed : .protocolError, reason: reason.isEmpty ? fallback : reason))
        }
    }

    // MARK: - The transport's buffers

    /// Ciphertext waiting to be sent, or nil when there is none.
    func pendingOutput() -> UnsafeRawBufferPointer? {
        unsafe lock.withLock { _ in unsafe transport.pointee.pendingOutput() }
    }

    /// Whether ciphertext waits to be sent.
    var hasPendingOutput: Bool {
        lock.withLock { _ in unsafe transport.pointee.pendingOutput() != nil }
    }

    /// Marks `count` bytes of ``pendingOutput()`` as sent: what still waits, or nil.
    @discardableResult
    func consumeOutput(_ count: Int) -> UnsafeRawBufferPointer? {
        unsafe lock.withLock { _ in
            unsafe transport.pointee.consumeOutput(count)
            return unsafe transport.pointee.pendingOutput()
        }
    }

    /// Free room for received ciphertext, or nil when the buffer is full.
    func inputSpace() -> UnsafeMutableRawBufferPointer? {
        unsafe lock.withLock { _ in unsafe transport.pointee.inputSpace() }
    }

    /// Hands `count` received bytes written into ``inputSpace()`` to OpenSSL.
    func commitInput(_ count: Int) {
        lock.withLock { _ in unsafe transport.pointee.commitInput(count) }
    }

    // MARK: - What was negotiated

    var applicationProtocol: String? {
        lock.withLock { _ in
            var data: UnsafePointer<UInt8>?
            var length: UInt32 = 0
            unsafe SSL_get0_alpn_selected(ssl, &data, &length)
            guard let data = unsafe data, length > 0 else { return nil }
            return unsafe String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
        }
    }

    var version: TLSVersion? {
        lock.withLock { _ in
            TLSVersion(rawValue: Int(unsafe SSL_version(ssl)))
        }
    }

    var peerCertificate: [UInt8]? {
        lock.withLock { _ in
            var der: UnsafeMutablePointer<UInt8>?
            let length = unsafe curing_tls_peer_certificate(ssl, &der)
            guard length > 0, let der = unsafe der else { return nil }
            defer { unsafe curing_tls_free(der) }
            return unsafe Array(UnsafeBufferPointer(start: der, count: Int(length)))
        }
    }
}

/// A first-come, first-served async lock: the holder of a connection's input or output side.
/// Waiters are not cancellable: the holder's I/O is, and it lets go when it ends.
///
/// Taking a free gate and giving back one nobody waits for are one atomic compare-and-swap each
/// (a read and a write per request take and give back two gates); only a gate with waiters takes
/// the lock of their queue.
final class AsyncGate: Sendable {
    /// 0: free; 1: held; 2: held, and waiters queued. It becomes 2 only in the same critical
    /// section that queues a waiter, and leaves 2 only in the one that takes the last waiter out,
    /// so a holder that fails to swap 1 for 0 always finds a waiter to hand the gate to.
    private let word = Atomic<Int>(0)
    private struct Queue {
        var waiters: [CheckedContinuation<Void, Never>] = []
        var head = 0
    }
    private let queue = Lock(Queue())

    func acquire() async {
        if tryAcquire() { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = queue.withLock { queue -> Bool in
                while true {
                    switch word.load(ordering: .relaxed) {
                    case 0:
                        if word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return true }
                    case 1:
                        if word.compareExchange(expected: 1, desired: 2, ordering: .relaxed).exchanged {
                            queue.waiters.append(continuation)
                            return false
                        }
                    default:
                        queue.waiters.append(continuation)
                        return false
                    }
                }
            }
            if now { continuation.resume() }
        }
        // Handed the gate by `release`, which resumed this task with the queue's lock held: taking
        // it here orders what the releaser did before what this task does next, for
        // ThreadSanitizer too (a task resumed from another thread before it had suspended is a
        // hand-over the Concurrency runtime does not annotate).
        queue.withLock { _ in }
    }

    /// How many tasks wait for the gate now.
    var waiterCount: Int { queue.withLock { $0.waiters.count - $0.head } }

    /// Takes the gate if it is free; false (and nothing taken) when another task holds it.
    func tryAcquire() -> Bool {
        word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
    }

    /// Hands the gate to the next waiter (it stays held), or frees it.
    func release() {
        if word.compareExchange(expected: 1, desired: 0, ordering: .releasing).exchanged { return }
        queue.withLock { queue in
            guard queue.head < queue.waiters.count else {
                // Only a gate that is not held gets here (a release without an acquire).
                word.store(0, ordering: .releasing)
                return
            }
            let next = queue.waiters[queue.head]
            queue.head += 1
            if queue.head == queue.waiters.count {
                queue.waiters.removeAll(keepingCapacity: true)
                queue.head = 0
                word.store(1, ordering: .releasing)  // held by `next`; nobody else waits
            }
            next.resume()  // with the lock held: see `acquire`
        }
    }
}
