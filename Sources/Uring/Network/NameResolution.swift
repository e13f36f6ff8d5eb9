import Glibc

extension SocketAddress {
    /// Resolves `host` (a name such as `"example.com"` or `"localhost"`, or a numeric address)
    /// to the addresses to connect to on `port`, with `getaddrinfo` on ``BlockingPool/shared``:
    /// a look-up may block for seconds, and never blocks a ring.
    ///
    /// ```swift
    /// let addresses = try await SocketAddress.resolve(host: "localhost", port: 8080)
    /// let connection = try await TCPConnection.connect(to: addresses[0])
    /// ```
    ///
    /// The result is in the order RFC 8305 (Happy Eyeballs) connects in: the resolver's first
    /// address, then alternating between IPv6 and IPv4. A numeric host is parsed without a
    /// look-up. Names under `.invalid` never resolve (RFC 6761), without asking anyone.
    ///
    /// - Throws: ``IOError`` with code ``IOError/Code/nameResolution`` (operation
    ///   ``IOError/Operation/resolve``, ``IOError/resolverStatus`` = `EAI_NONAME`, `EAI_AGAIN`, …;
    ///   ``IOError/subject`` names the host) when the name does not resolve;
    ///   ``IOError/Code/invalidArgument`` for a port outside 0...65535 or an empty host.
    public static func resolve(host: String, port: Int) async throws(IOError) -> [SocketAddress] {
        guard (0...65535).contains(port), !host.isEmpty, !host.utf8.contains(0) else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .resolve).about(.host(host, port: port))
        }
        if let numeric = try? SocketAddress(host: host, port: port) { return [numeric] }
        let lowercased = host.lowercased()
        if lowercased.hasSuffix(".invalid") || lowercased == "invalid" || lowercased.hasSuffix(".invalid.") {
            throw IOError.resolution(EAI_NONAME, host: host, port: port)
        }
        let result: Result<[SocketAddress], IOError>
        do {
            result = try await BlockingPool.shared.run { lookUp(host: host, port: port) }
        } catch {
            throw IOError(.executorShutdown, operation: .resolve).about(.host(host, port: port))
        }
        return try result.get()
    }

    /// The blocking look-up (on a pool thread).
    private static func lookUp(host: String, port: Int) -> Result<[SocketAddress], IOError> {
        var hints = unsafe addrinfo()
        unsafe hints.ai_family = AF_UNSPEC
        unsafe hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = unsafe getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else {
            if status == EAI_SYSTEM {
                return .failure(IOError.system(errno, .resolve).about(.host(host, port: port)))
            }
            return .failure(IOError.resolution(status, host: host, port: port))
        }
        defer { unsafe freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var entry = unsafe list
        while let current = unsafe entry {
            // SAFETY: getaddrinfo's entries hold `ai_addrlen` valid bytes at `ai_addr`.
            if let raw = unsafe current.pointee.ai_addr,
                let address = unsafe SocketAddress(raw, length: current.pointee.ai_addrlen),
                !addresses.contains(address)
            {
                addresses.append(address)
            }
            unsafe entry = unsafe current.pointee.ai_next
        }
        guard !addresses.isEmpty else { return .failure(IOError.resolution(EAI_NONAME, host: host, port: port)) }
        return .success(interleavingFamilies(addresses))
    }

    /// RFC 8305 §4: the first address's family first, then alternating families.
    static func interleavingFamilies(_ addresses: [SocketAddress]) -> [SocketAddress] {
        guard let first = addresses.first else { return [] }
        var same = addresses.filter { $0.family == first.family }
        var other = addresses.filter { $0.family != first.family }
        var result: [SocketAddress] = []
        while !same.isEmpty || !other.isEmpty {
            if !same.isEmpty { result.append(same.removeFirst()) }
            if !other.isEmpty { result.append(other.removeFirst()) }
        }
        return result
    }
}

extension IOError {
    /// A failed look-up: `status` is `getaddrinfo`'s (`EAI_*`).
    static func resolution(_ status: Int32, host: String, port: Int) -> IOError {
        var error = IOError(.nameResolution, operation: .resolve).about(.host(host, port: port))
        error.resolverStatus = status
        return error
    }
}
