import Glibc

/// The synchronous socket calls that never block and have no ring opcode in liburing 2.3
/// (socket, bind, listen, setsockopt, getsockname): each failure is a typed ``IOError``.
enum SocketCalls {
    static func makeSocket(_ family: SocketAddress.Family, datagram: Bool = false) throws(IOError) -> Int32 {
        let domain: Int32 =
            switch family {
            case .ipv4: AF_INET
            case .ipv6: AF_INET6
            case .unix: AF_UNIX
            }
        let type = datagram ? Int32(SOCK_DGRAM.rawValue) : Int32(SOCK_STREAM.rawValue)
        let fd = socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError.system(errno, .socket) }
        return fd
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(IOError) {
        var value = value
        guard unsafe setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw IOError.system(errno, .setOption)
        }
    }

    static func option(_ fd: Int32, _ level: Int32, _ name: Int32) throws(IOError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard unsafe getsockopt(fd, level, name, &value, &length) == 0 else { throw IOError.system(errno, .getOption) }
        return value
    }

    static func bind(_ fd: Int32, _ address: SocketAddress) throws(IOError) {
        try unsafe address.withSockAddr { pointer, length throws(IOError) in
            guard unsafe Glibc.bind(fd, pointer, length) == 0 else { throw IOError.system(errno, .bind) }
        }
    }

    static func connect(_ fd: Int32, _ address: SocketAddress) throws(IOError) {
        try unsafe address.withSockAddr { pointer, length throws(IOError) in
            guard unsafe Glibc.connect(fd, pointer, length) == 0 else { throw IOError.system(errno, .connect) }
        }
    }

    static func listen(_ fd: Int32, backlog: Int) throws(IOError) {
        guard Glibc.listen(fd, Int32(clamping: backlog)) == 0 else { throw IOError.system(errno, .listen) }
    }

    /// The local (`peer: false`) or remote address of a socket.
    static func address(_ fd: Int32, peer: Bool) throws(IOError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        // SAFETY: the kernel writes at most `length` bytes into the storage, and reports the size.
        let rc = unsafe withUnsafeMutablePointer(to: &storage) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                unsafe peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length)
            }
        }
        guard rc == 0 else { throw IOError.system(errno, .address) }
        let address = unsafe withUnsafePointer(to: &storage) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe SocketAddress($0, length: length) }
        }
        guard let address else { throw IOError.system(EAFNOSUPPORT, .address) }
        return address
    }
}
