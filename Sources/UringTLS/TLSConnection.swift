import Synchronization
import Uring

/// A TLS connection over a ``TCPConnection``: the same verbs (read, write, half-close, close),
/// with every byte still moving through the ring. OpenSSL 3 does the cryptography.
///
/// ```swift
/// let connection = try await TLSConnection.connect(
///     to: SocketAddress("93.184.215.14:443"), serverName: "example.com",
///     configuration: .client(applicationProtocols: ["http/1.1"]))
/// try await connection.write(contentsOf: Array("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".utf8))
/// let response = try await connection.receive(upTo: 65_536)
/// try await connection.close()
/// ```
///
/// A server's connections (from ``TLSListener``) shake hands at their first read or write, or
/// at ``handshake()``, in the task that serves them, within
/// ``TLSConfiguration/handshakeTimeout``. One task may read while another writes.
///
/// The end of the stream: a read returns 0 after the peer's close_notify; a peer that closes the
/// TCP connection without one gets ``TLSError/Code/truncated``, since the data may have been cut.
public final class TLSConnection: Sendable {
    /// The TCP connection underneath.
    public let tcp: TCPConnection
    let session: TLSSession
    private let handshakeState = Lock(HandshakeState.pending)
    /// Set (once) with `handshakeState` becoming `.done`: reads and writes check it without the lock.
    private let shookHands = Atomic<Bool>(false)
    /// Whether this side has ended sending (close_notify queued or sent).
    private let closing = Atomic<Bool>(false)

    enum HandshakeState {
        case pending
        case done
        case failed(TLSError)
    }

    init(tcp: TCPConnection, context: TLSContext, serverName: String?) throws(TLSError) {
        self.tcp = tcp
        session = try TLSSession(context: context, serverName: serverName)
    }

    /// Connects to `address` and shakes hands, verifying that the server's certificate is valid
    /// for `serverName` (a DNS name, sent as SNI, or an IP address), unless the configuration
    /// turns verification off.
    ///
    /// - Parameters:
    ///   - timeout: For the TCP connect; the handshake has ``TLSConfiguration/handshakeTimeout``.
    /// - Throws: ``TLSError``: ``TLSError/Code/certificateVerificationFailed`` for an untrusted
    ///   server or a name mismatch, ``TLSError/Code/handshakeFailed``, …; the connection is closed.
    public static func connect(
        to address: SocketAddress, serverName: String?, configuration: TLSConfiguration = .client(),
        timeout: Duration? = nil
    ) async throws(TLSError) -> TLSConnection {
        guard configuration.role == .client else {
            throw TLSError(.invalidConfiguration, reason: "connect needs a client configuration")
        }
        let context = try TLSContextCache.shared.context(for: configuration)
        let tcp: TCPConnection
        do {
            tcp = try await TCPConnection.connect(to: address, timeout: timeout)
        } catch {
            throw TLSError(.transport, reason: "cannot connect to \(address)", transport: error)
        }
        do throws(TLSError) {
            let connection = try TLSConnection(tcp: tcp, context: context, serverName: serverName)
            try await connection.handshake()
            return connection
        } catch {
            try? await tcp.close()
            throw error
        }
    }

    /// Shakes hands now (a no-op once done); reads and writes do it themselves when needed. Fails
    /// with ``TLSError/Code/handshakeTimedOut`` after ``TLSConfiguration/handshakeTimeout``.
    /// A failed handshake fails every later call the same way.
    public func handshake() async throws(TLSError) {
        if try handshakeDone() { return }
        await session.inputGate.acquire()
        await session.outputGate.acquire()
        defer {
            session.outputGate.release()
            session.inputGate.release()
        }
        if try handshakeDone() { return }  // another task finished it while this one waited
        let deadline = ContinuousClock.now + session.context.configuration.handshakeTimeout
        do throws(TLSError) {
            while true {
                let step = session.handshake()
                if case .done = step, session.completedFlightCanWait {
                    // A TLS 1.3 server's session tickets: they go out with the first response (or
                    // before a read that has to wait), not in a send of their own.
                    markHandshakeDone()
                    return
                }
                // Whatever the step produced goes out first (an alert too, when it failed).
                try await session.flush(on: tcp, deadline: deadline, handshaking: true)
                switch step {
                case .done:
                    markHandshakeDone()
                    return
                case .wantRead:
                    guard try await session.fill(from: tcp, deadline: deadline, handshaking: true) else {
                        throw TLSError(.handshakeFailed, reason: "the peer closed the connection during the handshake")
                    }
                case .wantWrite:
                    continue  // the output buffer was full: flushed above
                case .closed:
                    throw TLSError(.handshakeFailed, reason: "the peer sent close_notify during the handshake")
                case .failed(let error):
                    throw error
                }
            }
        } catch {
            handshakeState.withLock { $0 = .failed(error) }
            throw error
        }
    }

    private func markHandshakeDone() {
        handshakeState.withLock { $0 = .done }
        shookHands.store(true, ordering: .releasing)
    }

    private func handshakeDone() throws(TLSError) -> Bool {
        if shookHands.load(ordering: .acquiring) { return true }
        switch handshakeState.withLock({ $0 }) {
        case .done: return true
        case .pending: return false
        case .failed(let error): throw error
        }
    }

    /// Reads decrypted bytes into `buffer`: at least one, or 0 at the end of the stream (the
    /// peer's close_notify).
    ///
    /// - Throws: ``TLSError/Code/truncated`` when the TCP connection ends without a close_notify;
    ///   ``TLSError/Code/protocolError`` for a record that does not decrypt;
    ///   ``TLSError/Code/transport`` (with `timeout`'s ``IOError/Code/timedOut`` inside) when the
    ///   connection fails.
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(TLSError) -> Int
    {
        if try !handshakeDone() { try await handshake() }  // no async call once done
        if buffer.count == 0 { return 0 }
        await session.inputGate.acquire()
        defer { session.inputGate.release() }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            let step = unsafe session.read(into: buffer)
            if case .done(let count) = step {
                // Ciphertext waiting to be sent (a TLS 1.3 server's session tickets, a key
                // update's reply) goes with the next write, or below before a read that waits.
                return count
            }
            if session.hasPendingOutput {
                await session.outputGate.acquire()
                defer { session.outputGate.release() }
                try await session.flush(on: tcp, deadline: nil)
            }
            switch step {
            case .done(let count): return count
            case .closed: return 0
            case .wantWrite:
                continue  // OpenSSL's reply filled the output buffer: sent above, again
            case .wantRead:
                let more = try await session.fill(from: tcp, deadline: deadline)
                if !more {
                    if session.receivedCloseNotify { return 0 }
                    throw TLSError(.truncated, reason: "the peer closed the connection without a TLS close_notify")
                }
            case .failed(let error):
                throw error
            }
        }
    }

    /// Reads once, up to `maximumCount` decrypted bytes, into a new array: returns as soon as some
    /// bytes arrived (empty at the end of the stream), as ``TCPConnection/receive(upTo:timeout:)``.
    public func receive(upTo maximumCount: Int, timeout: Duration? = nil) async throws(TLSError) -> [UInt8] {
        guard maximumCount > 0 else { return [] }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: maximumCount, alignment: 16)
        defer { unsafe buffer.deallocate() }
        // SAFETY: the buffer is freed after the read returns, and only OpenSSL's SSL_read writes into it (synchronously).
        let count = try await unsafe read(into: buffer, timeout: timeout)
        return unsafe Array(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
    }

    /// Encrypts and sends every byte of `bytes`; returns once all of it is handed to the kernel.
    public func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(TLSError) {
        if try !handshakeDone() { try await handshake() }  // no async call once done
        await session.outputGate.acquire()
        defer { session.outputGate.release() }
        try await unsafe send(bytes, timeout: timeout, ending: false)
    }

    /// Encrypts and sends `bytes`, the last this side sends: the close_notify goes in the same
    /// send as their last record when it fits (a server's final response and its close_notify in
    /// one segment). Later writes fail with ``TLSError/Code/closed``; ``close()`` then only
    /// closes the descriptor. Unlike ``shutdownWriting()``, the TCP connection is not shut down:
    /// the caller closes it next.
    package func writeLast(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(TLSError) {
        if try !handshakeDone() { try await handshake() }  // no async call once done
        await session.outputGate.acquire()
        defer { session.outputGate.release() }
        try await unsafe send(bytes, timeout: timeout, ending: true)
        try await endSending(shutdownTCP: false)  // queued above unless it did not fit: then now
    }

    /// ``write(_:timeout:)``'s records; `ending`: the close_notify after the last one, when the
    /// output buffer has room for it. The caller holds the output gate.
    private func send(_ bytes: UnsafeRawBufferPointer, timeout: Duration?, ending: Bool) async throws(TLSError) {
        if closing.load(ordering: .relaxed) {
            throw TLSError(.closed, reason: "the connection was shut down for writing")
        }
        var offset = 0
        while offset < bytes.count {
            var step = unsafe session.write(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            // A partial write ends after each record: more records go into the output buffer
            // (room for four) until it is full or all is written, and one send takes them all.
            while case .done(let count) = step, count > 0 {
                offset += count
                if offset == bytes.count { break }
                step = unsafe session.write(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            }
            if ending, offset == bytes.count, case .done = step, session.queueCloseNotifyIfRoom() {
                closing.store(true, ordering: .relaxed)
            }
            try await session.flush(on: tcp, deadline: timeout.map { ContinuousClock.now + $0 })
            switch step {
            case .done: continue  // counted above
            case .wantWrite: continue  // the output buffer was full: flushed, again
            case .wantRead:
                // Only a renegotiation makes a write read, and renegotiation is off: reported,
                // not retried (it would spin).
                throw TLSError(.protocolError, reason: "the peer asked for a renegotiation")
            case .closed: throw TLSError(.closed, reason: "the peer closed the TLS session")
            case .failed(let error): throw error
            }
        }
    }

    /// Encrypts and sends `bytes`.
    public func write(contentsOf bytes: [UInt8], timeout: Duration? = nil) async throws(TLSError) {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        defer { unsafe copy.deallocate() }
        unsafe copy.copyBytes(from: bytes)
        // SAFETY: the copy is freed after the write returns; OpenSSL reads it synchronously in SSL_write.
        try await unsafe write(UnsafeRawBufferPointer(rebasing: copy[..<bytes.count]), timeout: timeout)
    }

    /// How long sending the close_notify may take (a peer that stopped reading cannot hold a
    /// close longer).
    static let closeNotifyTimeout: Duration = .seconds(2)

    /// Half-close: sends a TLS close_notify, then shuts the TCP connection down for writing.
    /// Reading goes on until the peer's own close_notify.
    public func shutdownWriting() async throws(TLSError) {
        await session.outputGate.acquire()
        defer { session.outputGate.release() }
        try await endSending(shutdownTCP: true)
    }

    /// The close_notify (once the handshake is done) and, with `shutdownTCP`, the TCP shutdown,
    /// once; the caller holds the output gate. (Before a close, no shutdown: the close ends the
    /// stream as well, and saves a system call per connection.)
    private func endSending(shutdownTCP: Bool) async throws(TLSError) {
        if closing.exchange(true, ordering: .relaxed) { return }
        if shookHands.load(ordering: .acquiring) {
            if !session.queueCloseNotifyIfRoom() {
                // What waits fills the output buffer: it goes first, then the close_notify.
                try await session.flush(on: tcp, deadline: .now + Self.closeNotifyTimeout)
                session.queueCloseNotify()
            }
            // Bounded: a peer that reads nothing must not hold a close forever.
            try await session.flush(on: tcp, deadline: .now + Self.closeNotifyTimeout)
        }
        guard shutdownTCP else { return }
        do {
            try await tcp.shutdown(.write)
        } catch {
            throw TLSError(.transport, reason: "cannot shut the connection down", transport: error)
        }
    }

    /// Sends a close_notify (if the handshake was done and none was sent) and closes the
    /// descriptor. Safe to call after a failure; call it once. Never waits for another task's
    /// I/O: while a write is in progress, the close_notify is skipped and the TCP close ends
    /// that write (and any read) with an error, as on a ``TCPConnection``.
    public func close() async throws(TLSError) {
        if shookHands.load(ordering: .acquiring), session.outputGate.tryAcquire() {
            try? await endSending(shutdownTCP: false)
            session.outputGate.release()
        }
        do {
            try await tcp.close()
        } catch {
            throw TLSError(.transport, reason: "close failed", transport: error)
        }
    }

    /// The ALPN protocol the handshake settled on, if any.
    public var applicationProtocol: String? { session.applicationProtocol }
    /// The negotiated version (nil before the handshake).
    public var version: TLSVersion? {
        if shookHands.load(ordering: .acquiring) { return session.version }
        return nil
    }
    /// The peer's certificate (DER), when it sent one.
    public var peerCertificate: [UInt8]? { session.peerCertificate }
}
