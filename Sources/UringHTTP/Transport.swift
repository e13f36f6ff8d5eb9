import Glibc
import SystemPackage
import Uring
import UringTLS

/// A receive or send that failed: the socket's error, when the socket failed (a TLS protocol
/// failure has none).
struct TransportFailure: Error {
    var socketError: IOError?
}

/// What the server needs of a connection: plain TCP, or TLS over it. `Session` is generic over
/// it, so each kind is specialized and neither pays for the other.
protocol HTTPTransport: Sendable {
    /// The TCP descriptor (the server's watchdog shuts it down on timeouts and shutdown).
    var rawDescriptor: Int32 { get }
    /// `http` or `https`, for handlers' requests.
    static var scheme: String { get }
    /// Reads at least one byte into `buffer`: the count, 0 at the end of the stream.
    func receive(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(TransportFailure) -> Int
    /// Sends all of `bytes`.
    func send(_ bytes: UnsafeRawBufferPointer, timeout: Duration?) async throws(TransportFailure)
    /// Whether ``sendCachedFile(_:at:count:)`` can send anything (plain TCP; TLS encrypts every
    /// byte in user space).
    static var sendsFromPageCache: Bool { get }
    /// Sends bytes of `file` from `offset` straight from the page cache (`sendfile(2)`) while
    /// they are cached: how many went (fewer than `count`, maybe 0, when the rest is not cached
    /// or the transport cannot; the caller then copies the rest).
    func sendCachedFile(_ file: File, at offset: Int64, count: Int) async throws(TransportFailure) -> Int
    /// Sends what of `bytes` the socket takes now without waiting (a file's head: `more`
    /// follows): how many bytes went, maybe 0.
    func sendWithoutWaiting(_ bytes: UnsafeRawBufferPointer, more: Bool) -> Int
    /// Sends all of `bytes`, the last the server sends before it closes the connection (for TLS,
    /// the close_notify goes in the same send).
    func sendLast(_ bytes: UnsafeRawBufferPointer) async throws(TransportFailure)
    /// Ends the sending side (for TLS, a close_notify first).
    func endSending() async
    /// Closes (for TLS, with a close_notify when the handshake was done).
    func closeQuietly() async
}

extension HTTPTransport {
    /// ``receive(into:timeout:)`` where the reason of a failure does not matter: nil.
    func receiveOnce(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async -> Int? {
        try? await unsafe receive(into: buffer, timeout: timeout)
    }

    /// ``send(_:timeout:)`` where the reason of a failure does not matter: false.
    func sendAll(_ bytes: UnsafeRawBufferPointer, timeout: Duration?) async -> Bool {
        (try? await unsafe send(bytes, timeout: timeout)) != nil
    }
}

extension TCPConnection: HTTPTransport {
    var rawDescriptor: Int32 { descriptor.rawValue }
    static var scheme: String { "http" }
    static var sendsFromPageCache: Bool { true }

    func receive(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(TransportFailure) -> Int {
        do throws(IOError) {
            return try await unsafe read(into: buffer, timeout: timeout)
        } catch {
            throw TransportFailure(socketError: error)
        }
    }

    func send(_ bytes: UnsafeRawBufferPointer, timeout: Duration?) async throws(TransportFailure) {
        do throws(IOError) {
            try await unsafe write(bytes, timeout: timeout)
        } catch {
            throw TransportFailure(socketError: error)
        }
    }

    func sendCachedFile(_ file: File, at offset: Int64, count: Int) async throws(TransportFailure) -> Int {
        do throws(IOError) {
            return try await writeCached(file, at: offset, count: count, timeout: nil)
        } catch {
            throw TransportFailure(socketError: error)
        }
    }

    func sendWithoutWaiting(_ bytes: UnsafeRawBufferPointer, more: Bool) -> Int {
        unsafe writeWithoutWaiting(bytes, more: more)
    }

    func sendLast(_ bytes: UnsafeRawBufferPointer) async throws(TransportFailure) {
        try await unsafe send(bytes, timeout: nil)
    }

    func endSending() async { try? await shutdown(.write) }

    func closeQuietly() async { try? await close() }
}

extension TLSConnection: HTTPTransport {
    var rawDescriptor: Int32 { tcp.descriptor.rawValue }
    static var scheme: String { "https" }
    static var sendsFromPageCache: Bool { false }

    func receive(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(TransportFailure) -> Int {
        do throws(TLSError) {
            return try await unsafe read(into: buffer, timeout: timeout)
        } catch {
            throw TransportFailure(socketError: error.transport)
        }
    }

    func send(_ bytes: UnsafeRawBufferPointer, timeout: Duration?) async throws(TransportFailure) {
        do throws(TLSError) {
            try await unsafe write(bytes, timeout: timeout)
        } catch {
            throw TransportFailure(socketError: error.transport)
        }
    }

    /// TLS encrypts every byte in user space: nothing to send from the page cache.
    func sendCachedFile(_ file: File, at offset: Int64, count: Int) async throws(TransportFailure) -> Int { 0 }

    func sendWithoutWaiting(_ bytes: UnsafeRawBufferPointer, more: Bool) -> Int { 0 }

    func sendLast(_ bytes: UnsafeRawBufferPointer) async throws(TransportFailure) {
        do throws(TLSError) {
            try await unsafe writeLast(bytes)
        } catch {
            throw TransportFailure(socketError: error.transport)
        }
    }

    func endSending() async { try? await shutdownWriting() }

    func closeQuietly() async { try? await close() }
}

/// What the server accepts connections from: a TCP or a TLS listener.
protocol HTTPAcceptor: Sendable {
    associatedtype Connection: HTTPTransport
    associatedtype Accepting: HTTPAccepting where Accepting.Connection == Connection
    /// The listening descriptor (shut down to end the accept loop).
    var rawDescriptor: Int32 { get }
    func accepting() -> Accepting
    func closeQuietly() async
}

protocol HTTPAccepting {
    associatedtype Connection
    /// The next connection, nil when the listener is shut down; the transport's error otherwise.
    mutating func nextConnection() async throws(IOError) -> Connection?
}

extension TCPListener: HTTPAcceptor {
    var rawDescriptor: Int32 { descriptor.rawValue }
    func accepting() -> TCPListener.Connections.AsyncIterator { connections.makeAsyncIterator() }
    func closeQuietly() async { try? await close() }
}

extension TCPListener.Connections.AsyncIterator: HTTPAccepting {
    mutating func nextConnection() async throws(IOError) -> TCPConnection? { try await next() }
}

extension TLSListener: HTTPAcceptor {
    var rawDescriptor: Int32 { tcp.descriptor.rawValue }
    func accepting() -> TLSListener.Connections.AsyncIterator { connections.makeAsyncIterator() }
    func closeQuietly() async { try? await close() }
}

extension TLSListener.Connections.AsyncIterator: HTTPAccepting {
    mutating func nextConnection() async throws(IOError) -> TLSConnection? {
        do throws(TLSError) {
            return try await next()
        } catch {
            // Accepting fails only in the transport (or when OpenSSL is out of memory for a session).
            throw error.transport ?? IOError(.systemCall, errno: .noMemory, operation: .accept)
        }
    }
}
