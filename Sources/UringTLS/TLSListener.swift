import Uring

/// A TCP listener whose connections speak TLS.
///
/// ```swift
/// let configuration = TLSConfiguration.server(
///     certificateChain: .file("server.pem"), privateKey: .file("server.key"), applicationProtocols: ["http/1.1"])
/// let listener = try TLSListener.bind(to: SocketAddress("0.0.0.0:8443"), configuration: configuration)
/// try await withThrowingDiscardingTaskGroup { group in
///     for try await connection in listener.connections {
///         group.addTask {
///             // The handshake happens here, in the connection's own task, within the
///             // configuration's handshakeTimeout: a slow client never holds up the accept loop.
///             let request = try await connection.receive(upTo: 16_384)
///             try await connection.write(contentsOf: request)
///             try await connection.close()
///         }
///     }
/// }
/// ```
public struct TLSListener: Sendable {
    /// The TCP listener underneath.
    public let tcp: TCPListener
    let context: TLSContext

    /// Wraps `listener`; the configuration's certificate and key are loaded now.
    /// - Throws: ``TLSError/Code/invalidConfiguration`` when they do not load or do not match.
    public init(wrapping listener: TCPListener, configuration: TLSConfiguration) throws(TLSError) {
        guard configuration.role == .server else {
            throw TLSError(.invalidConfiguration, reason: "a listener needs a server configuration")
        }
        tcp = listener
        context = try TLSContext(configuration)
    }

    /// Binds a TCP listener to `address` and wraps it.
    public static func bind(to address: SocketAddress, configuration: TLSConfiguration) throws(TLSError) -> TLSListener
    {
        let context = try TLSContext(configuration)
        let listener: TCPListener
        do {
            listener = try TCPListener.bind(to: address)
        } catch {
            throw TLSError(.transport, reason: "cannot listen on \(address)", transport: error)
        }
        return TLSListener(tcp: listener, context: context)
    }

    private init(tcp: TCPListener, context: TLSContext) {
        self.tcp = tcp
        self.context = context
    }

    /// The address the listener is bound to.
    public var localAddress: SocketAddress {
        get throws(IOError) { try tcp.localAddress }
    }

    /// Accepts one connection; its handshake happens at its first read or write (or
    /// ``TLSConnection/handshake()``).
    public func accept() async throws(TLSError) -> TLSConnection {
        let connection: TCPConnection
        do {
            connection = try await tcp.accept()
        } catch {
            throw TLSError(.transport, reason: "accept failed", transport: error)
        }
        do {
            return try TLSConnection(tcp: connection, context: context, serverName: nil)
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// The accepted connections, not yet past their handshakes; ends when the listener is closed.
    public var connections: Connections { Connections(listener: self) }

    /// Closes the listening socket.
    public func close() async throws(IOError) { try await tcp.close() }

    public struct Connections: AsyncSequence, Sendable {
        public typealias Element = TLSConnection
        public typealias Failure = TLSError
        let listener: TLSListener

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(listener: listener, inner: nil) }

        public struct AsyncIterator: AsyncIteratorProtocol {
            let listener: TLSListener
            var inner: TCPListener.Connections.AsyncIterator?

            public mutating func next() async throws(TLSError) -> TLSConnection? {
                if inner == nil { inner = listener.tcp.connections.makeAsyncIterator() }
                let connection: TCPConnection?
                do {
                    connection = try await inner!.next()
                } catch {
                    throw TLSError(.transport, reason: "accept failed", transport: error)
                }
                guard let connection else { return nil }
                do {
                    return try TLSConnection(tcp: connection, context: listener.context, serverName: nil)
                } catch {
                    try? await connection.close()
                    throw error
                }
            }
        }
    }
}

/// The client contexts made so far, by configuration: a context loads the trust store (hundreds
/// of certificates) once, not per connection. Files named by a configuration are read when its
/// context is first made; the cache keeps the last 16 configurations.
final class TLSContextCache: Sendable {
    static let shared = TLSContextCache()
    private let contexts = Lock<[(TLSConfiguration, TLSContext)]>([])

    func context(for configuration: TLSConfiguration) throws(TLSError) -> TLSContext {
        if let found = contexts.withLock({ list in list.first { $0.0 == configuration }?.1 }) { return found }
        let context = try TLSContext(configuration)
        contexts.withLock { list in
            list.append((configuration, context))
            if list.count > 16 { list.removeFirst() }
        }
        return context
    }
}
