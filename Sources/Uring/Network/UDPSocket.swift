import Glibc
import SystemPackage

/// A UDP socket (IPv4 or IPv6) whose sends and receives run on a ring.
///
/// ```swift
/// let server = try UDPSocket.bind(to: SocketAddress("127.0.0.1:0"))
/// let client = try UDPSocket.bind(to: SocketAddress("127.0.0.1:0"))
/// try await client.send(contentsOf: Array("ping".utf8), to: try server.localAddress)
/// let (datagram, sender) = try await server.receive(upTo: 1500)
/// try await server.send(contentsOf: datagram, to: sender)      // echo it back
/// ```
///
/// A datagram is sent whole or not at all; a receive returns one datagram (truncated to the
/// buffer if it is larger). Buffers are lent to the kernel until the call returns; cancellation
/// and deadlines work as for every other operation.
public struct UDPSocket: Sendable, Hashable {
    /// The socket.
    public let descriptor: FileDescriptor

    /// Wraps a datagram socket (closed by ``close()``).
    public init(descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// A new socket bound to `address` (port 0: any free port).
    ///
    /// ```swift
    /// let socket = try UDPSocket.bind(to: SocketAddress("0.0.0.0:5353"), reuseAddress: true)
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/bind`` (`EADDRINUSE`, …) or
    ///   ``IOError/Operation/socket``; the socket is closed on failure.
    public static func bind(
        to address: SocketAddress, reuseAddress: Bool = false, reusePort: Bool = false
    ) throws(IOError) -> UDPSocket {
        guard address.family != .unix else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .bind)
        }
        let fd = try SocketCalls.makeSocket(address.family, datagram: true)
        do throws(IOError) {
            if reuseAddress { try SocketCalls.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
            if reusePort { try SocketCalls.setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1) }
            try SocketCalls.bind(fd, address)
        } catch {
            Glibc.close(fd)
            throw error.about(.address(address))
        }
        return UDPSocket(descriptor: FileDescriptor(rawValue: fd))
    }

    /// Fixes the peer: afterwards a ``send(_:to:timeout:)`` without an address goes there and only
    /// its datagrams are received (connected mode). No packet is sent.
    ///
    /// ```swift
    /// try socket.connect(to: SocketAddress("127.0.0.1:9999"))
    /// try await socket.send(contentsOf: [1, 2, 3])
    /// ```
    public func connect(to address: SocketAddress) throws(IOError) {
        try SocketCalls.connect(descriptor.rawValue, address)
    }

    /// The address the socket is bound to.
    public var localAddress: SocketAddress {
        get throws(IOError) { try SocketCalls.address(descriptor.rawValue, peer: false) }
    }

    /// Sends one datagram to `address` (or, with `address` nil, to the connected peer).
    ///
    /// ```swift
    /// let sent = try await socket.send(UnsafeRawBufferPointer(packet), to: destination)
    /// ```
    ///
    /// - Parameters:
    ///   - bytes: The datagram, lent to the kernel until the call returns.
    ///   - address: The destination; nil on a connected socket.
    ///   - timeout: A deadline for the send.
    /// - Returns: The bytes sent (the whole datagram).
    /// - Throws: ``IOError`` for ``IOError/Operation/send`` (`EMSGSIZE` for a datagram too large,
    ///   `ECONNREFUSED` on a connected socket whose peer is gone, `EDESTADDRREQ` without an
    ///   address on an unconnected socket, …), ``IOError/Code/timedOut``, ``IOError/Code/cancelled``.
    @discardableResult
    public func send(
        _ bytes: UnsafeRawBufferPointer, to address: SocketAddress? = nil, timeout: Duration? = nil
    ) async throws(IOError) -> Int {
        let message = unsafe MessageStorage(buffer: UnsafeMutableRawBufferPointer(mutating: bytes), address: address)
        defer { message.free() }
        let fd = descriptor.rawValue
        // The message, its iovec and address live until the send returns, after the final completion.
        return Int(try await SendMessageOperation(fd: fd, message: message).run(timeout: timeout))
    }

    /// Sends one datagram (copied first).
    ///
    /// ```swift
    /// try await socket.send(contentsOf: Array("hello".utf8), to: destination)
    /// ```
    @discardableResult
    public func send(contentsOf bytes: [UInt8], to address: SocketAddress? = nil, timeout: Duration? = nil)
        async throws(IOError) -> Int
    {
        let copy = unsafe File.copy(bytes)
        defer { unsafe copy.deallocate() }
        return try unsafe await send(UnsafeRawBufferPointer(copy), to: address, timeout: timeout)
    }

    /// Receives one datagram into `buffer`, with its sender.
    ///
    /// ```swift
    /// let (count, sender) = try await socket.receive(into: buffer)
    /// ```
    ///
    /// - Returns: The datagram's length (at most `buffer.count`; a longer datagram is truncated)
    ///   and the sender's address.
    public func receive(
        into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil
    ) async throws(IOError) -> (count: Int, sender: SocketAddress) {
        let message = unsafe MessageStorage(buffer: buffer, address: nil, receiving: true)
        defer { message.free() }
        let fd = descriptor.rawValue
        // As in send: everything the header points to lives until the final completion.
        let count = Int(try await ReceiveMessageOperation(fd: fd, message: message).run(timeout: timeout))
        guard let sender = message.receivedAddress() else { throw IOError.system(EAFNOSUPPORT, .receive) }
        return (count, sender)
    }

    /// Receives one datagram of at most `maximumCount` bytes into a new array, with its sender.
    ///
    /// ```swift
    /// let (bytes, sender) = try await socket.receive(upTo: 65_507)
    /// ```
    public func receive(upTo maximumCount: Int, timeout: Duration? = nil) async throws(IOError) -> (
        bytes: [UInt8], sender: SocketAddress
    ) {
        guard maximumCount >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .receive) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maximumCount, 1), alignment: 16)
        defer { unsafe buffer.deallocate() }
        let (count, sender) = unsafe try await receive(
            into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<maximumCount]), timeout: timeout)
        return unsafe (Array(UnsafeRawBufferPointer(rebasing: buffer[..<count])), sender)
    }

    /// Closes the socket. A receive or send pending on it (in any task) ends first, with
    /// ``IOError/Code/closed``.
    ///
    /// ```swift
    /// try await socket.close()
    /// ```
    public func close() async throws(IOError) {
        try await File(descriptor: descriptor).close()
    }
}

/// A `msghdr`, its one `iovec` and an address, in one block that outlives the operation.
/// Blocks are reused through a small process-wide cache, so sending and receiving datagrams
/// allocates nothing in steady state.
@safe struct MessageStorage: @unchecked Sendable {
    // SAFETY (@safe): the header, iovec and address are allocated together in init and freed (once) after the
    // operation's final completion.
    // @unchecked Sendable: lent to the ring thread for one operation, recycled by its creator after.
    // Layout of a block: msghdr | iovec | sockaddr_storage, each at an offset aligned for it
    // (all three need 8-byte alignment and have sizes that are multiples of 8).
    private static let iovOffset = unsafe MemoryLayout<msghdr>.stride
    private static let addressOffset = unsafe iovOffset + MemoryLayout<iovec>.stride
    private static let blockSize = addressOffset + MemoryLayout<sockaddr_storage>.stride

    private static let cache = unsafe Lock<[UnsafeMutableRawPointer]>([])
    private static let cacheLimit = 256

    private let block: UnsafeMutableRawPointer
    let header: UnsafeMutablePointer<msghdr>
    private let address: UnsafeMutablePointer<sockaddr_storage>

    init(buffer: UnsafeMutableRawBufferPointer, address: SocketAddress?, receiving: Bool = false) {
        unsafe block =
            unsafe Self.cache.withLock { unsafe $0.popLast() } ?? .allocate(byteCount: Self.blockSize, alignment: 16)
        // SAFETY: the block is ours until free(); each part is (re)initialized here, at its
        // aligned offset, before the kernel sees it. All three types are trivial.
        unsafe header = unsafe block.bindMemory(to: msghdr.self, capacity: 1)
        let iov = unsafe (block + Self.iovOffset).bindMemory(to: iovec.self, capacity: 1)
        unsafe self.address = unsafe (block + Self.addressOffset).bindMemory(to: sockaddr_storage.self, capacity: 1)
        unsafe iov.initialize(to: iovec(iov_base: buffer.baseAddress, iov_len: buffer.count))
        unsafe self.address.initialize(to: sockaddr_storage())
        var length: socklen_t = 0
        if let address {
            length = unsafe address.write(to: &self.address.pointee)
        } else if receiving {
            length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        }
        var message = unsafe msghdr()
        unsafe message.msg_name = unsafe length > 0 ? UnsafeMutableRawPointer(self.address) : nil
        unsafe message.msg_namelen = length
        unsafe message.msg_iov = unsafe iov
        unsafe message.msg_iovlen = 1
        unsafe header.initialize(to: message)
    }

    /// The sender the kernel wrote (after a receive).
    func receivedAddress() -> SocketAddress? {
        // SAFETY: msg_namelen is what the kernel wrote, at most sizeof(sockaddr_storage).
        unsafe UnsafeRawPointer(address).withMemoryRebound(to: sockaddr.self, capacity: 1) {
            unsafe SocketAddress($0, length: header.pointee.msg_namelen)
        }
    }

    /// Returns the block to the cache (after the operation's final completion).
    func free() {
        let kept = unsafe Self.cache.withLock { cache -> Bool in
            guard unsafe cache.count < Self.cacheLimit else { return false }
            unsafe cache.append(block)
            return true
        }
        if !kept { unsafe block.deallocate() }
    }
}
