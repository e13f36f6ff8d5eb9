extension TCPConnection {
    /// Connects to `host` (a name or a numeric address) on `port`: resolves it off the ring, then
    /// connects, racing IPv6 and IPv4 addresses by Happy Eyeballs (RFC 8305) when the name has
    /// several: the next address is tried 250 ms after the previous one started (or as soon as it
    /// failed), the first connection wins, and the others are cancelled and closed.
    ///
    /// ```swift
    /// let connection = try await TCPConnection.connect(host: "localhost", port: 8080, timeout: .seconds(5))
    /// try await connection.write(contentsOf: Array("PING\r\n".utf8))
    /// ```
    ///
    /// - Parameters:
    ///   - timeout: A deadline for the whole call, look-up included.
    /// - Throws: ``IOError``: ``IOError/Code/nameResolution`` when the name does not resolve
    ///   (see ``SocketAddress/resolve(host:port:)``); for ``IOError/Operation/connect`` the last
    ///   attempt's error when none connects (`ECONNREFUSED`, …), ``IOError/Code/timedOut``,
    ///   ``IOError/Code/cancelled``. ``IOError/subject`` names the host.
    public static func connect(host: String, port: Int, timeout: Duration? = nil) async throws(IOError) -> TCPConnection
    {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let addresses: [SocketAddress]
        if let deadline {
            addresses = try await withDeadline(deadline, operation: .resolve) { () async throws(IOError) in
                try await SocketAddress.resolve(host: host, port: port)
            }
        } else {
            addresses = try await SocketAddress.resolve(host: host, port: port)
        }
        @Sendable func remaining() -> Duration? { deadline.map { max(.zero, $0 - ContinuousClock.now) } }
        do throws(IOError) {
            if addresses.count == 1 { return try await connect(to: addresses[0], timeout: remaining()) }
            return try await HappyEyeballs.race(addresses) { address throws(IOError) in
                try await TCPConnection.connect(to: address, timeout: remaining())
            } discard: { connection in
                try? await connection.close()
            }
        } catch {
            throw error.subject == nil ? error.about(.host(host, port: port)) : error
        }
    }

    /// Connects to `address`, runs `body` with the connection, and closes it whether `body`
    /// returns or throws.
    ///
    /// ```swift
    /// let reply = try await TCPConnection.withConnection(to: SocketAddress("127.0.0.1:7")) { connection in
    ///     try await connection.write(contentsOf: Array("ping\n".utf8))
    ///     return try await connection.receive(upTo: 64, timeout: .seconds(2))
    /// }
    /// ```
    public static func withConnection<Result>(
        to address: SocketAddress, timeout: Duration? = nil, _ body: (TCPConnection) async throws -> Result
    ) async throws -> Result {
        try await TCPConnection.connect(to: address, timeout: timeout).closing(after: body)
    }

    /// Connects to `host` on `port` (see ``connect(host:port:timeout:)``), runs `body`, and closes
    /// the connection whether `body` returns or throws.
    public static func withConnection<Result>(
        host: String, port: Int, timeout: Duration? = nil, _ body: (TCPConnection) async throws -> Result
    ) async throws -> Result {
        try await TCPConnection.connect(host: host, port: port, timeout: timeout).closing(after: body)
    }

    /// Runs `body` with this connection and closes it afterwards, whether `body` returns or
    /// throws (a close error is thrown only when `body` succeeded).
    ///
    /// ```swift
    /// for try await connection in listener.connections {
    ///     group.addTask { try await connection.closing { try await serve($0) } }
    /// }
    /// ```
    public func closing<Result>(after body: (TCPConnection) async throws -> Result) async throws -> Result {
        try await runClosing(after: { try await body(self) }, close)
    }
}

extension TCPListener {
    /// Binds a listener to `address`, runs `body` with it, and closes it whether `body` returns or
    /// throws. Closing ends a `connections` loop still running in `body`'s child tasks.
    ///
    /// ```swift
    /// try await TCPListener.withListener(boundTo: SocketAddress("127.0.0.1:8080")) { listener in
    ///     for try await connection in listener.connections { ... }
    /// }
    /// ```
    public static func withListener<Result>(
        boundTo address: SocketAddress, backlog: Int = 1024, reusePort: Bool = false,
        _ body: (TCPListener) async throws -> Result
    ) async throws -> Result {
        let listener = try TCPListener.bind(to: address, backlog: backlog, reusePort: reusePort)
        return try await runClosing(after: { try await body(listener) }, listener.close)
    }
}
