import Glibc
import SystemPackage

/// A connected stream socket (TCP over IPv4 or IPv6, or a Unix-domain stream socket) whose I/O
/// runs on a ring.
///
/// ```swift
/// let connection = try await TCPConnection.connect(to: SocketAddress("127.0.0.1:8080"), timeout: .seconds(2))
/// try await connection.write(contentsOf: Array("ping\n".utf8))
/// let reply = try await connection.read(upTo: 4096)
/// try await connection.close()
/// ```
///
/// Like ``File``, a connection is a small `Sendable` value around its descriptor: one task may
/// read while another writes. Close it explicitly. Buffers passed as pointers are lent to the
/// kernel until the call returns, whatever the outcome; cancellation and deadlines work as for
/// files (``IOError/Code/cancelled``, ``IOError/Code/timedOut``), and data that arrived before
/// a cancel took effect is returned.
public struct TCPConnection: Sendable, Hashable {
    /// The connected socket.
    public let descriptor: FileDescriptor

    /// Wraps a connected stream socket (closed by ``close()``).
    public init(descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// Connects to `address` (IPv4, IPv6 or a Unix-domain path).
    ///
    /// ```swift
    /// let c = try await TCPConnection.connect(to: SocketAddress("[::1]:9000"))
    /// ```
    ///
    /// - Parameters:
    ///   - address: Where to connect.
    ///   - timeout: A deadline for the connection attempt.
    /// - Throws: ``IOError`` for ``IOError/Operation/connect``: `ECONNREFUSED` (nothing listens),
    ///   `ENETUNREACH`, `ENOENT` (no such Unix socket), …; ``IOError/Code/timedOut``;
    ///   ``IOError/Code/cancelled``. The socket is closed on every failure.
    public static func connect(to address: SocketAddress, timeout: Duration? = nil) async throws(IOError)
        -> TCPConnection
    {
        let fd = try SocketCalls.makeSocket(address.family)
        // The kernel copies the address when the SQE is submitted, after the task suspended.
        nonisolated(unsafe) let storage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
        defer { unsafe storage.deallocate() }
        let length = unsafe address.write(to: &storage.pointee)
        let raw = unsafe UnsafeRawPointer(storage).assumingMemoryBound(to: sockaddr.self)
        do throws(IOError) {
            // `storage` lives until the operation returns, after the final completion.
            _ = try unsafe await ConnectOperation(fd: fd, address: raw, length: length).run(timeout: timeout)
        } catch {
            // Through the runtime, like every descriptor an operation has used: the epoll driver
            // must forget its registration before the number can be reused.
            try? await RingExecutor.closeDescriptor(fd, operation: .close)
            throw error.about(.address(address))
        }
        return TCPConnection(descriptor: FileDescriptor(rawValue: fd))
    }

    /// Receives once into `buffer`: returns as soon as some bytes arrived.
    ///
    /// ```swift
    /// let n = try await connection.read(into: buffer)
    /// if n == 0 { /* the peer closed its side */ }
    /// ```
    ///
    /// - Returns: The number of bytes received; 0 when the peer has shut down its sending side
    ///   (or `buffer` is empty).
    /// - Throws: ``IOError`` for ``IOError/Operation/receive`` (`ECONNRESET` when the peer reset
    ///   the connection, `EBADF`, …), ``IOError/Code/timedOut``, ``IOError/Code/cancelled``.
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(IOError) -> Int
    {
        let fd = descriptor.rawValue
        // The buffer is lent to the ring for this call only: it returns after the final completion.
        let receive = unsafe ReceiveOperation(fd: fd, buffer: buffer.baseAddress, count: buffer.count)
        do throws(IOError) {
            return Int(try await receive.run(timeout: timeout))
        } catch {
            throw naming(error)
        }
    }

    /// Receives once, up to `maximumCount` bytes, into a new array: returns as soon as some bytes
    /// arrived (empty when the peer has shut down its sending side).
    ///
    /// ```swift
    /// let bytes = try await connection.receive(upTo: 64 * 1024, timeout: .seconds(30))
    /// if bytes.isEmpty { /* the peer closed its side */ }
    /// ```
    ///
    /// - Throws: as ``read(into:timeout:)``.
    public func receive(upTo maximumCount: Int, timeout: Duration? = nil) async throws(IOError) -> [UInt8] {
        guard maximumCount >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .receive) }
        if maximumCount == 0 { return [] }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: maximumCount, alignment: 16)
        defer { unsafe buffer.deallocate() }
        let n = try unsafe await read(into: buffer, timeout: timeout)
        return unsafe Array(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
    }

    /// Reads `count` bytes into a new array, receiving as often as needed: shorter only when the
    /// peer shut down its sending side first, or when `timeout` passes after some bytes arrived.
    /// The same semantics as ``File/read(upTo:at:timeout:)``; ``receive(upTo:timeout:)`` returns
    /// after one receive instead.
    ///
    /// ```swift
    /// let header = try await connection.read(upTo: 8, timeout: .seconds(5))
    /// guard header.count == 8 else { /* the peer closed early */ }
    /// ```
    ///
    /// - Parameter timeout: A deadline for the whole call. If it passes before any byte came the
    ///   call throws ``IOError/Code/timedOut``; bytes received before it are returned.
    /// - Throws: as ``read(into:timeout:)``.
    public func read(upTo count: Int, timeout: Duration? = nil) async throws(IOError) -> [UInt8] {
        guard count >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .receive) }
        if count == 0 { return [] }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        defer { unsafe buffer.deallocate() }
        let filled = try unsafe await fillUntilDeadline(
            buffer, deadline: timeout.map { ContinuousClock.now + $0 }, operation: .receive
        ) {
            rest, _, left throws(IOError) in try unsafe await read(into: rest, timeout: left)
        }
        return unsafe Array(UnsafeRawBufferPointer(rebasing: buffer[..<filled]))
    }

    /// Whether a send lets the kernel read the caller's memory directly (`IORING_OP_SEND_ZC`)
    /// instead of copying it into the socket buffer.
    public enum ZeroCopy: Sendable, Hashable {
        /// Zero-copy for payloads of at least 64 KiB to a peer that is not on this host, where
        /// saving the copy outweighs pinning the pages and the extra completion; a copy otherwise.
        case automatic
        /// Always zero-copy (falls back to a copy where the kernel or the socket type cannot).
        case always
        /// Always copy.
        case never
    }

    /// Sends all of `bytes`, looping over short sends.
    ///
    /// ```swift
    /// try await connection.write(UnsafeRawBufferPointer(reply))
    /// try await connection.write(bigFileRegion, zeroCopy: .always)
    /// ```
    ///
    /// - Parameters:
    ///   - bytes: Lent to the kernel until the call returns (with zero-copy, until the kernel has
    ///     posted the notification that it no longer reads them).
    ///   - timeout: A deadline for each underlying send.
    ///   - zeroCopy: See ``ZeroCopy``. On loopback the kernel copies anyway, so `.automatic`
    ///     copies there.
    /// - Throws: ``IOError`` for ``IOError/Operation/send`` (`EPIPE` after the peer closed,
    ///   `ECONNRESET`, …; never a SIGPIPE), ``IOError/Code/timedOut``, ``IOError/Code/cancelled``.
    ///   After an error, some prefix of `bytes` may have been sent.
    public func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil, zeroCopy: ZeroCopy = .automatic)
        async throws(IOError)
    {
        let fd = descriptor.rawValue
        var useZeroCopy: Bool
        switch zeroCopy {
        case .never: useZeroCopy = false
        case .always: useZeroCopy = true
        case .automatic: useZeroCopy = bytes.count >= 64 * 1024 && !((try? peerAddress)?.isLoopback ?? true)
        }
        var sent = 0
        repeat {
            // `bytes` is lent for the whole call; the send returns after the final completion (for
            // a zero-copy send, the notification that the kernel let go of the pages).
            let rest = unsafe UnsafeRawBufferPointer(rebasing: bytes[sent...])
            let zc = useZeroCopy
            let send = unsafe SendOperation(fd: fd, buffer: rest.baseAddress, count: rest.count, zeroCopy: zc)
            let outcome = try await send.outcome(timeout: timeout)
            if zc, case .failure(let errno) = outcome, errno == EOPNOTSUPP || errno == EINVAL {
                // This kernel or socket type has no zero-copy send (Unix sockets, kernels before
                // 6.0): copy instead.
                useZeroCopy = false
                continue
            }
            let n: Int
            do throws(IOError) {
                n = Int(try outcome.get(.send))
            } catch {
                throw naming(error)
            }
            if unsafe n == 0 && !rest.isEmpty { throw naming(IOError.system(EPIPE, .send)) }
            sent += n
        } while sent < bytes.count
    }

    /// Sends all of `bytes` (copied first, so the array may be shared).
    ///
    /// ```swift
    /// try await connection.write(contentsOf: Array("hello\n".utf8))
    /// ```
    public func write(contentsOf bytes: [UInt8], timeout: Duration? = nil) async throws(IOError) {
        let copy = unsafe File.copy(bytes)
        defer { unsafe copy.deallocate() }
        try unsafe await write(UnsafeRawBufferPointer(copy), timeout: timeout)
    }

    /// Which direction ``shutdown(_:)`` closes.
    public enum Direction: Sendable {
        /// No more sends: the peer reads end of stream after what was already sent.
        case write
        /// No more receives.
        case read
        case both
    }

    /// Shuts down one or both directions, leaving the descriptor open (half-close).
    ///
    /// ```swift
    /// try await connection.write(contentsOf: request)
    /// try await connection.shutdown(.write)           // the peer sees end of stream
    /// let response = try await connection.read(upTo: 65536)
    /// ```
    public func shutdown(_ direction: Direction) async throws(IOError) {
        let fd = descriptor.rawValue
        let how: Int32 =
            switch direction {
            case .write: Int32(SHUT_WR)
            case .read: Int32(SHUT_RD)
            case .both: Int32(SHUT_RDWR)
            }
        _ = try await ShutdownOperation(fd: fd, how: how).run()
    }

    /// Closes the socket.
    ///
    /// ```swift
    /// try await connection.close()
    /// ```
    ///
    /// Everything pending on the connection ends first, whichever task or ring waits on it: a
    /// ``chunks`` or ``lines(maximumLength:)`` loop ends (`nil`), a pending read or write throws
    /// ``IOError/Code/closed``; the kernel has let go of their buffers before `close()` returns.
    /// Closing a connection that another task is closing throws ``IOError/Code/closed``; one
    /// already closed, `EBADF`.
    public func close() async throws(IOError) {
        try await File(descriptor: descriptor).close()
    }

    /// `error`, naming the peer when the socket still knows it (failure path only).
    func naming(_ error: IOError) -> IOError {
        guard error.subject == nil, error.code == .systemCall, let peer = try? peerAddress else { return error }
        return error.about(.address(peer))
    }

    /// The local address.
    public var localAddress: SocketAddress {
        get throws(IOError) { try SocketCalls.address(descriptor.rawValue, peer: false) }
    }

    /// The peer's address.
    public var peerAddress: SocketAddress {
        get throws(IOError) { try SocketCalls.address(descriptor.rawValue, peer: true) }
    }

    /// Disables (or re-enables) Nagle's algorithm (`TCP_NODELAY`): small writes leave at once.
    public func setNoDelay(_ enabled: Bool = true) throws(IOError) {
        try SocketCalls.setOption(descriptor.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, enabled ? 1 : 0)
    }

    /// Enables TCP keep-alive probes (`SO_KEEPALIVE`).
    public func setKeepAlive(_ enabled: Bool = true) throws(IOError) {
        try SocketCalls.setOption(descriptor.rawValue, SOL_SOCKET, SO_KEEPALIVE, enabled ? 1 : 0)
    }

    /// Sets the kernel's receive buffer size (`SO_RCVBUF`; the kernel doubles it).
    public func setReceiveBufferSize(_ byteCount: Int) throws(IOError) {
        try SocketCalls.setOption(descriptor.rawValue, SOL_SOCKET, SO_RCVBUF, Int32(clamping: byteCount))
    }

    /// Sets the kernel's send buffer size (`SO_SNDBUF`; the kernel doubles it).
    public func setSendBufferSize(_ byteCount: Int) throws(IOError) {
        try SocketCalls.setOption(descriptor.rawValue, SOL_SOCKET, SO_SNDBUF, Int32(clamping: byteCount))
    }
}
