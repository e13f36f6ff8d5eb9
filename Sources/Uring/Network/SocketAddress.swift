import Glibc

/// A socket address: an IPv4 or IPv6 address with a port, or a Unix-domain socket path.
///
/// Parsed from and printed to text, with no C type in sight:
///
/// ```swift
/// let a = try SocketAddress("127.0.0.1:8080")
/// let b = try SocketAddress("[::1]:8080")
/// let c = try SocketAddress("unix:/run/app.sock")     // or just "/run/app.sock"
/// let d = try SocketAddress(host: "10.0.0.7", port: 443)
/// print(a, b.port!, c.path!)                          // 127.0.0.1:8080 8080 /run/app.sock
/// ```
///
/// Hosts are numeric addresses, or `localhost` (the IPv4 loopback address, 127.0.0.1, as RFC
/// 6761 reserves it). Other names are resolved with ``resolve(host:port:)`` (off the ring: a
/// look-up may block), or connected to with ``TCPConnection/connect(host:port:timeout:)``.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address family.
    public enum Family: Sendable, Hashable {
        case ipv4, ipv6, unix
    }

    enum Storage: Sendable, Hashable {
        /// Address in network byte order as 4 bytes, port in host order.
        case ipv4(UInt32, port: UInt16)
        /// Address as 16 bytes, port in host order, scope id (interface) for link-local.
        case ipv6(high: UInt64, low: UInt64, port: UInt16, scope: UInt32)
        case unix(path: [UInt8])
    }

    let storage: Storage

    /// The longest Unix-domain socket path (`sun_path` less its terminating NUL).
    public static let maximumUnixPathLength = 107

    // MARK: - Creating addresses

    /// Parses `"a.b.c.d:port"`, `"[ipv6]:port"`, `"unix:/path"` or an absolute or `./` path.
    ///
    /// - Throws: ``SocketAddressError`` saying what is wrong (an empty string, a missing or
    ///   out-of-range port, a host that is not a numeric address, a path that is too long).
    public init(_ text: String) throws(SocketAddressError) {
        // Byte-wise on the UTF-8 view: Character comparisons would let a combining mark after
        // "unix:" or before a ':' change what the prefix or the separator is.
        let utf8 = text.utf8
        if utf8.isEmpty { throw SocketAddressError(.empty, text) }
        if utf8.starts(with: "unix:".utf8) {
            do throws(SocketAddressError) {
                self = try SocketAddress(unixPath: String(decoding: utf8.dropFirst(5), as: UTF8.self))
            } catch {
                throw SocketAddressError(error.reason, text)  // report what the caller wrote
            }
            return
        }
        if utf8.starts(with: "/".utf8) || utf8.starts(with: "./".utf8) || utf8.starts(with: "../".utf8) {
            self = try SocketAddress(unixPath: text)
            return
        }
        let colon = UInt8(ascii: ":")
        let host: Substring.UTF8View
        let portText: Substring.UTF8View
        if utf8.first == UInt8(ascii: "[") {
            guard let close = utf8.firstIndex(of: UInt8(ascii: "]")) else { throw SocketAddressError(.badHost, text) }
            host = utf8[utf8.index(after: utf8.startIndex)..<close]
            let rest = utf8[utf8.index(after: close)...]
            guard rest.first == colon else { throw SocketAddressError(.missingPort, text) }
            portText = rest.dropFirst()
        } else {
            guard let last = utf8.lastIndex(of: colon) else { throw SocketAddressError(.missingPort, text) }
            host = utf8[..<last]
            if host.contains(colon) { throw SocketAddressError(.badHost, text) }  // IPv6 needs brackets
            portText = utf8[utf8.index(after: last)...]
        }
        guard !portText.isEmpty, portText.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let port = Int(Substring(portText)), (0...65535).contains(port)
        else { throw SocketAddressError(.badPort, text) }
        guard let hostText = String(host) else { throw SocketAddressError(.badHost, text) }
        self = try SocketAddress(host: hostText, port: port, original: text)
    }

    /// An IPv4 or IPv6 address (numeric, no name lookup) and a port.
    ///
    /// ```swift
    /// let any = try SocketAddress(host: "0.0.0.0", port: 0)   // port 0: any free port on bind
    /// ```
    public init(host: String, port: Int) throws(SocketAddressError) {
        try self.init(host: host, port: port, original: host)
    }

    private init(host: String, port: Int, original: String) throws(SocketAddressError) {
        guard (0...65535).contains(port) else { throw SocketAddressError(.badPort, original) }
        guard !host.isEmpty, !host.utf8.contains(0) else { throw SocketAddressError(.badHost, original) }
        if host.utf8.elementsEqual("localhost".utf8) || host.lowercased() == "localhost" {
            // RFC 6761 §6.3: "localhost" is the loopback address, without asking a resolver.
            storage = .ipv4(UInt32(0x7f00_0001).bigEndian, port: UInt16(port))
            return
        }
        var v4 = in_addr()
        if unsafe inet_pton(AF_INET, host, &v4) == 1 {
            storage = .ipv4(v4.s_addr, port: UInt16(port))
            return
        }
        // An IPv6 address may carry a zone: "fe80::1%eth0" or "fe80::1%2".
        var address = host
        var scope: UInt32 = 0
        if let percent = host.utf8.firstIndex(of: UInt8(ascii: "%")) {
            address = String(decoding: host.utf8[..<percent], as: UTF8.self)
            let zone = String(decoding: host.utf8[host.utf8.index(after: percent)...], as: UTF8.self)
            if let number = UInt32(zone) {
                scope = number
            } else {
                scope = unsafe if_nametoindex(zone)
                if scope == 0 { throw SocketAddressError(.badHost, original) }
            }
        }
        var v6 = in6_addr()
        guard unsafe inet_pton(AF_INET6, address, &v6) == 1 else { throw SocketAddressError(.badHost, original) }
        // SAFETY: in6_addr is exactly 16 bytes; both loads are in bounds and unaligned-safe.
        let (high, low) = unsafe withUnsafeBytes(of: &v6) { raw in
            unsafe (
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            )
        }
        storage = .ipv6(high: high, low: low, port: UInt16(port), scope: scope)
    }

    /// A Unix-domain socket path (at most ``maximumUnixPathLength`` bytes, no NUL).
    ///
    /// ```swift
    /// let address = try SocketAddress(unixPath: "/run/app.sock")
    /// ```
    public init(unixPath path: String) throws(SocketAddressError) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty else { throw SocketAddressError(.empty, path) }
        guard !bytes.contains(0) else { throw SocketAddressError(.badPath, path) }
        guard bytes.count <= SocketAddress.maximumUnixPathLength else { throw SocketAddressError(.pathTooLong, path) }
        storage = .unix(path: bytes)
    }

    // MARK: - Reading addresses

    public var family: Family {
        switch storage {
        case .ipv4: .ipv4
        case .ipv6: .ipv6
        case .unix: .unix
        }
    }

    /// True for an address on this host's loopback interface (`127.0.0.0/8`, `::1`, and
    /// IPv4-mapped `::ffff:127.x.x.x`) and for Unix-domain paths.
    public var isLoopback: Bool {
        switch storage {
        case .ipv4(let raw, _):
            return UInt32(bigEndian: raw) >> 24 == 127
        case .ipv6(let high, let low, _, _):
            // Stored as the address's bytes loaded in memory order: read them big-endian.
            let (h, l) = (UInt64(bigEndian: high), UInt64(bigEndian: low))
            if h == 0 && l == 1 { return true }
            return h == 0 && l >> 32 == 0xFFFF && (l >> 24) & 0xFF == 127
        case .unix:
            return true
        }
    }

    /// The port, for IP addresses.
    public var port: Int? {
        switch storage {
        case .ipv4(_, let port): Int(port)
        case .ipv6(_, _, let port, _): Int(port)
        case .unix: nil
        }
    }

    /// The numeric host, for IP addresses (`"127.0.0.1"`, `"::1"`, `"fe80::1%2"`).
    public var host: String? {
        switch storage {
        case .ipv4(let raw, _):
            var addr = in_addr(s_addr: raw)
            return Self.presentation(AF_INET, &addr)
        case .ipv6(let high, let low, _, let scope):
            var addr = in6_addr()
            // SAFETY: 16 bytes written into a 16-byte in6_addr.
            unsafe withUnsafeMutableBytes(of: &addr) { raw in
                unsafe raw.storeBytes(of: high, toByteOffset: 0, as: UInt64.self)
                unsafe raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
            }
            let text = Self.presentation(AF_INET6, &addr)
            return scope == 0 ? text : "\(text)%\(scope)"
        case .unix:
            return nil
        }
    }

    /// The path, for Unix-domain addresses.
    public var path: String? {
        if case .unix(let bytes) = storage { return String(decoding: bytes, as: UTF8.self) }
        return nil
    }

    /// `"127.0.0.1:8080"`, `"[::1]:8080"`, or `"unix:/run/app.sock"`; ``init(_:)`` parses it back.
    public var description: String {
        switch storage {
        case .ipv4: "\(host!):\(port!)"
        case .ipv6: "[\(host!)]:\(port!)"
        case .unix: "unix:\(path!)"
        }
    }

    private static func presentation<T>(_ family: Int32, _ address: inout T) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        // SAFETY: `address` is an in_addr or in6_addr matching `family`; the buffer holds the
        // longest presentation form and its NUL.
        let ok =
            unsafe withUnsafePointer(to: &address) { unsafe inet_ntop(family, $0, &buffer, socklen_t(buffer.count)) }
            != nil
        guard ok else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Why a text or a host could not be made into a ``SocketAddress``.
public struct SocketAddressError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        case empty, missingPort, badPort, badHost, badPath, pathTooLong
    }

    /// What is wrong.
    public var reason: Reason
    /// The text that was being parsed.
    public var input: String

    init(_ reason: Reason, _ input: String) {
        self.reason = reason
        self.input = input
    }

    public var description: String {
        let what: String =
            switch reason {
            case .empty: "empty address"
            case .missingPort: "no port (write host:port, or [ipv6]:port)"
            case .badPort: "the port is not a number from 0 to 65535"
            case .badHost: "the host is not a numeric IPv4 or IPv6 address"
            case .badPath: "the path contains a NUL byte"
            case .pathTooLong: "the path is longer than \(SocketAddress.maximumUnixPathLength) bytes"
            }
        return "invalid socket address '\(input)': \(what)"
    }
}

extension SocketAddress {
    /// Calls `body` with this address as a `sockaddr` and its length.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(IOError) -> R) throws(IOError) -> R {
        var storage = sockaddr_storage()
        let length = write(to: &storage)
        // SAFETY: sockaddr_storage is large and aligned enough for every sockaddr type, and the
        // pointer does not escape `body`.
        return try unsafe withUnsafePointer(to: &storage) { pointer throws(IOError) -> R in
            try unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address throws(IOError) -> R in
                try unsafe body(address, length)
            }
        }
    }

    /// Writes this address as a `sockaddr` into `storage`; returns its length.
    func write(to storage: inout sockaddr_storage) -> socklen_t {
        // SAFETY: every store below stays within sockaddr_storage (128 bytes): sockaddr_in and
        // sockaddr_in6 are smaller, and a Unix path is at most 107 bytes after a 2-byte family.
        storage = sockaddr_storage()
        let length: socklen_t
        switch self.storage {
        case .ipv4(let raw, let port):
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            unsafe withUnsafeMutableBytes(of: &storage) { bytes in
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = port.bigEndian
                sin.sin_addr = in_addr(s_addr: raw)
                unsafe bytes.storeBytes(of: sin, as: sockaddr_in.self)
            }
        case .ipv6(let high, let low, let port, let scope):
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            unsafe withUnsafeMutableBytes(of: &storage) { bytes in
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = port.bigEndian
                sin6.sin6_scope_id = scope
                unsafe withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                    unsafe raw.storeBytes(of: high, toByteOffset: 0, as: UInt64.self)
                    unsafe raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
                }
                unsafe bytes.storeBytes(of: sin6, as: sockaddr_in6.self)
            }
        case .unix(let path):
            // sun_family, then the path and its NUL.
            length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + 1)
            unsafe withUnsafeMutableBytes(of: &storage) { bytes in
                unsafe bytes.storeBytes(of: sa_family_t(AF_UNIX), as: sa_family_t.self)
                let offset = MemoryLayout<sa_family_t>.size
                for (i, byte) in path.enumerated() { unsafe bytes[offset + i] = byte }
                unsafe bytes[offset + path.count] = 0
            }
        }
        return length
    }

    /// The address a kernel filled in, or nil for a family we do not represent.
    // SAFETY: `address` points at `length` valid bytes (a kernel-filled sockaddr); each case reads
    // only after checking the length, with unaligned loads.
    init?(_ address: UnsafePointer<sockaddr>, length: socklen_t) {
        switch unsafe Int32(address.pointee.sa_family) {
        case AF_INET where length >= socklen_t(MemoryLayout<sockaddr_in>.size):
            let sin = unsafe UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in.self)
            storage = .ipv4(sin.sin_addr.s_addr, port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6 where length >= socklen_t(MemoryLayout<sockaddr_in6>.size):
            let sin6 = unsafe UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in6.self)
            var addr = sin6.sin6_addr
            let (high, low) = unsafe withUnsafeBytes(of: &addr) { raw in
                unsafe (
                    raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                    raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                )
            }
            storage = .ipv6(high: high, low: low, port: UInt16(bigEndian: sin6.sin6_port), scope: sin6.sin6_scope_id)
        case AF_UNIX:
            let offset = MemoryLayout<sa_family_t>.size
            let count = max(0, Int(length) - offset)
            let raw = unsafe UnsafeRawBufferPointer(start: UnsafeRawPointer(address) + offset, count: count)
            storage = unsafe .unix(path: Array(raw.prefix { $0 != 0 }))
        default:
            return nil
        }
    }
}
