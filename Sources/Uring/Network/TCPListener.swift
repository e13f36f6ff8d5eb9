import Glibc
import SystemPackage

/// A listening stream socket (TCP over IPv4 or IPv6, or a Unix-domain path) that accepts
/// connections on a ring.
///
/// ```swift
/// let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))   // port 0: any free port
/// print("listening on", try listener.localAddress)
/// for try await connection in listener.connections {
///     Task { try await serve(connection) }
/// }
/// ```
public struct TCPListener: Sendable, Hashable {
    /// The listening socket.
    public let descriptor: FileDescriptor

    /// Binds a new socket to `address` and starts listening.
    ///
    /// ```swift
    /// let listener = try TCPListener.bind(to: SocketAddress("0.0.0.0:8080"), backlog: 4096, reusePort: true)
    /// ```
    ///
    /// - Parameters:
    ///   - address: Where to listen; port 0 picks any free port (see ``localAddress``). A Unix path
    ///     must not exist yet.
    ///   - backlog: The kernel's queue of connections not yet accepted.
    ///   - reuseAddress: `SO_REUSEADDR` (IP only): rebind a port whose old connections linger in
    ///     TIME_WAIT.
    ///   - reusePort: `SO_REUSEPORT` (IP only): several listeners, one per ring, on one port.
    /// - Throws: ``IOError`` for ``IOError/Operation/bind`` (`EADDRINUSE`, `EACCES` for a
    ///   privileged port, `EADDRNOTAVAIL`), ``IOError/Operation/listen`` or
    ///   ``IOError/Operation/socket``. The socket is closed on failure.
    public static func bind(
        to address: SocketAddress, backlog: Int = 1024, reuseAddress: Bool = true, reusePort: Bool = false
    ) throws(IOError) -> TCPListener {
        let fd = try SocketCalls.makeSocket(address.family)
        do throws(IOError) {
            if address.family != .unix {
                if reuseAddress { try SocketCalls.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
                if reusePort { try SocketCalls.setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1) }
                // Accepted sockets inherit TCP_NODELAY: an echo or request/response server wants it.
                try SocketCalls.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            }
            try SocketCalls.bind(fd, address)
            try SocketCalls.listen(fd, backlog: backlog)
        } catch {
            Glibc.close(fd)
            throw error.about(.address(address))
        }
        return TCPListener(descriptor: FileDescriptor(rawValue: fd))
    }

    /// Wraps a socket that is already listening (closed by ``close()``).
    public init(descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// The address the listener is bound to (with the real port when bound to port 0).
    public var localAddress: SocketAddress {
        get throws(IOError) { try SocketCalls.address(descriptor.rawValue, peer: false) }
    }

    /// Waits for the next connection.
    ///
    /// ```swift
    /// let connection = try await listener.accept()
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/accept`` (`EMFILE` when out of descriptors,
    ///   `EBADF` for a listener already closed, …), ``IOError/Code/closed`` when another task closes
    ///   the listener while this waits, or ``IOError/Code/cancelled``. A connection accepted
    ///   just as the task was cancelled is returned, not leaked.
    public func accept() async throws(IOError) -> TCPConnection {
        let fd = descriptor.rawValue
        return TCPConnection(descriptor: FileDescriptor(rawValue: try await AcceptOperation(fd: fd).run()))
    }

    /// The accepted connections, as an asynchronous sequence driven by one multishot accept: the
    /// kernel keeps accepting while the consumer handles connections, and each `next()` takes
    /// the next one without a system call when it is already there.
    ///
    /// ```swift
    /// for try await connection in listener.connections {
    ///     Task { try await serve(connection) }
    /// }
    /// ```
    ///
    /// - At most 64 accepted connections wait for the consumer; beyond that the multishot accept
    ///   is paused and further connections wait in the kernel's listen backlog.
    /// - An error (`EMFILE` when out of descriptors, `ENFILE`, `ENOMEM`) is thrown by `next()`;
    ///   the sequence stays usable: calling `next()` again resumes accepting, so a server can
    ///   log, wait and go on. Cancelling the consuming task makes `next()` throw
    ///   ``IOError/Code/cancelled``. Closing the listener (from any task) ends the sequence: `next()`
    ///   returns `nil`, and connections accepted but not yet taken are closed.
    /// - Dropping the iterator stops the multishot accept and closes the connections it had
    ///   accepted that nobody took: no descriptor leaks.
    /// - Use one iterator per listener at a time (with several rings, bind one listener per
    ///   ring with `reusePort`).
    public var connections: Connections { Connections(listener: self) }

    /// Stops accepting and closes the listening socket.
    ///
    /// ```swift
    /// try await listener.close()   // a `for try await … in listener.connections` loop elsewhere ends
    /// ```
    ///
    /// Everything pending on the listener ends first, whichever task or ring waits on it: a
    /// ``connections`` loop ends (`nil`), a pending ``accept()`` throws ``IOError/Code/closed``.
    /// When `close()` returns, the port refuses new connections. Closing a listener that another
    /// task is closing throws ``IOError/Code/closed``; one already closed, `EBADF`.
    public func close() async throws(IOError) {
        try await File(descriptor: descriptor).close()
    }

    /// The connections a listener accepts (see ``TCPListener/connections``).
    public struct Connections: AsyncSequence, Sendable {
        public typealias Element = TCPConnection
        public typealias Failure = IOError
        let listener: TCPListener

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(consumer: StreamConsumer(kind: .accept, fd: listener.descriptor.rawValue, limit: 64))
        }

        /// Takes accepted connections off the multishot accept, one per `next()`.
        public struct AsyncIterator: AsyncIteratorProtocol {
            let consumer: StreamConsumer

            public mutating func next() async throws(IOError) -> TCPConnection? {
                try await nextConnection()
            }

            public mutating func next(isolation actor: isolated (any Actor)?) async throws(IOError) -> TCPConnection? {
                try await nextConnection()
            }

            private func nextConnection() async throws(IOError) -> TCPConnection? {
                switch try await consumer.next() {
                case .item(let result, _):
                    if result < 0 { throw IOError.system(-result, .accept) }
                    return TCPConnection(descriptor: FileDescriptor(rawValue: result))
                case .end: return nil
                case .failure(let errno): throw IOError.system(errno, .accept)
                case .cancelled: throw IOError(.cancelled, operation: .accept)
                case .shutdown: throw IOError(.executorShutdown, operation: .accept)
                }
            }
        }
    }
}

/// A listening Unix-domain stream socket: the same type as ``TCPListener`` (bind it to a
/// ``SocketAddress`` made with ``SocketAddress/init(unixPath:)``).
public typealias UnixListener = TCPListener

/// A connected Unix-domain stream socket: the same type as ``TCPConnection``.
public typealias UnixConnection = TCPConnection
