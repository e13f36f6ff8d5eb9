import Glibc
import Testing

@testable import Uring

@Suite("Socket addresses")
struct SocketAddressTests {
    @Test(arguments: [
        "127.0.0.1:8080", "0.0.0.0:0", "[::1]:443", "[fe80::1%1]:22", "[2001:db8::42]:65535", "unix:/run/app.sock",
    ])
    func textRoundTrips(_ text: String) throws {
        let address = try SocketAddress(text)
        #expect(address.description == text)
        #expect(try SocketAddress(address.description) == address)
    }

    @Test func fieldsAreExposed() throws {
        let v4 = try SocketAddress("10.1.2.3:80")
        #expect(v4.family == .ipv4 && v4.host == "10.1.2.3" && v4.port == 80 && v4.path == nil)
        let v6 = try SocketAddress(host: "::1", port: 9)
        #expect(v6.family == .ipv6 && v6.host == "::1" && v6.port == 9)
        let unix = try SocketAddress("/tmp/x.sock")
        #expect(unix.family == .unix && unix.path == "/tmp/x.sock" && unix.port == nil && unix.host == nil)
    }

    @Test(arguments: [
        ("", SocketAddressError.Reason.empty), ("127.0.0.1", .missingPort), ("127.0.0.1:", .badPort),
        ("127.0.0.1:65536", .badPort), ("127.0.0.1:-1", .badPort), ("1.2.3.4:8x", .badPort),
        ("::1:80", .badHost), ("[::1]80", .missingPort), ("[::1:80", .badHost),
        ("999.1.1.1:1", .badHost), ("unix:", .empty), ("[fe80::1%nosuchif0]:1", .badHost),
        ("example.com:80", .badHost),
    ])
    func badTextIsRejected(_ text: String, _ reason: SocketAddressError.Reason) {
        #expect(throws: SocketAddressError(reason, text)) { try SocketAddress(text) }
    }

    @Test func localhostIsTheLoopbackAddress() throws {
        #expect(try SocketAddress("localhost:8080") == SocketAddress("127.0.0.1:8080"))
        #expect(try SocketAddress(host: "LocalHost", port: 1) == SocketAddress("127.0.0.1:1"))
    }

    @Test func happyEyeballsOrderInterleavesFamilies() throws {
        let v6a = try SocketAddress("[::1]:1")
        let v6b = try SocketAddress("[::2]:1")
        let v4a = try SocketAddress("127.0.0.1:1")
        let v4b = try SocketAddress("127.0.0.2:1")
        #expect(SocketAddress.interleavingFamilies([v6a, v6b, v4a, v4b]) == [v6a, v4a, v6b, v4b])
        #expect(SocketAddress.interleavingFamilies([v4a, v4b, v6a]) == [v4a, v6a, v4b])
    }

    @Test func unixPathLimits() throws {
        let longest = "/" + String(repeating: "a", count: SocketAddress.maximumUnixPathLength - 1)
        #expect(try SocketAddress(unixPath: longest).path == longest)
        #expect(throws: SocketAddressError(.pathTooLong, longest + "a")) { try SocketAddress(unixPath: longest + "a") }
        #expect(throws: SocketAddressError(.badPath, "a\0b")) { try SocketAddress(unixPath: "a\0b") }
    }

    @Test(arguments: ["192.168.7.9:1234", "[::ffff:1.2.3.4]:5", "[fe80::1%3]:7", "unix:/tmp/s"])
    func sockaddrRoundTrips(_ text: String) throws {
        let address = try SocketAddress(text)
        let back = try address.withSockAddr { pointer, length throws(IOError) in SocketAddress(pointer, length: length)
        }
        #expect(back == address)
    }

    @Test func loopbackAddresses() throws {
        for text in ["127.0.0.1:1", "127.9.8.7:2", "[::1]:3", "[::ffff:127.0.0.1]:4", "unix:/tmp/x"] {
            #expect(try SocketAddress(text).isLoopback, "\(text)")
        }
        for text in [
            "10.0.0.1:1", "128.0.0.1:1", "0.0.0.0:1", "[::]:3", "[::2]:3", "[::ffff:10.0.0.1]:4", "[fe80::1%1]:5",
        ] {
            #expect(try !SocketAddress(text).isLoopback, "\(text)")
        }
    }
}
