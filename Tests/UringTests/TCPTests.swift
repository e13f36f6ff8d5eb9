import Glibc
import SystemPackage
import Testing

@testable import Uring

/// A test echo server on its own ring: every connection is echoed until the peer closes.
/// `.streams` (the default) uses the multishot paths (`connections`, `chunks`); `.singleShot`
/// uses `accept()` and `read(into:)`.
final class TestEchoServer: Sendable {
    enum Mode { case streams, singleShot }
    let ring: RingExecutor
    let listener: TCPListener
    let address: SocketAddress
    let task: Task<Void, Never>

    init(on address: SocketAddress, mode: Mode = .streams, receiveBufferCount: Int = 1024) throws {
        ring = try RingExecutor(name: "echo-test", receiveBufferCount: receiveBufferCount)
        listener = try TCPListener.bind(to: address)
        self.address = try listener.localAddress
        let listener = self.listener
        task = Task(executorPreference: ring) {
            await withDiscardingTaskGroup { group in
                switch mode {
                case .streams:
                    do {
                        for try await connection in listener.connections {
                            group.addTask { await TestEchoServer.echoChunks(connection) }
                        }
                    } catch {}
                case .singleShot:
                    while let connection = try? await listener.accept() {
                        group.addTask { await TestEchoServer.echo(connection) }
                    }
                }
                group.cancelAll()
            }
        }
    }

    static func echoChunks(_ connection: TCPConnection) async {
        do {
            for try await chunk in connection.chunks {
                try await connection.write(chunk)
            }
        } catch {}
        try? await connection.close()
    }

    static func echo(_ connection: TCPConnection) async {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            guard let n = try? await connection.read(into: buffer), n > 0 else { break }
            guard (try? await connection.write(UnsafeRawBufferPointer(rebasing: buffer[..<n]))) != nil else { break }
        }
        try? await connection.close()
    }

    func stop() async {
        task.cancel()
        await task.value
        try? await listener.close()
        ring.shutdown()
    }
}

/// Sends `data` in random-sized writes while reading the echo back; returns what came back.
func exchange(_ connection: TCPConnection, _ data: [UInt8], seed: UInt64) async throws -> [UInt8] {
    async let sent: Void = {
        var random = SeededRandom(seed: seed)
        var offset = 0
        while offset < data.count {
            let size = min(Int(random.next() % 65_536) + 1, data.count - offset)
            try await connection.write(contentsOf: Array(data[offset..<offset + size]))
            offset += size
        }
    }()
    var received: [UInt8] = []
    received.reserveCapacity(data.count)
    while received.count < data.count {
        let chunk = try await connection.receive(upTo: 65_536)
        if chunk.isEmpty { break }
        received += chunk
    }
    try await sent
    return received
}

extension IntegrationTests {
    @Suite("TCP and Unix sockets")
    struct TCP {
        /// 1,000 concurrent loopback connections each send 1 MiB of random data in random-sized
        /// writes and read back identical bytes through the echo server.
        @Test func thousandConnectionsEchoAMebibyteEach() async throws {
            let limit = raiseDescriptorLimit()
            try #require(limit >= 2_200, "needs about 2,100 descriptors; RLIMIT_NOFILE is \(limit)")
            let fdsBefore = openDescriptorCount()
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"))
            let connections = 1000
            let size = 1 << 20
            let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<connections {
                    group.addTask {
                        var random = SeededRandom(seed: UInt64(i) + 1)
                        let data = random.bytes(size)
                        let connection = try await TCPConnection.connect(to: server.address)
                        let back = try await exchange(connection, data, seed: UInt64(i) * 7 + 3)
                        try await connection.close()
                        return back == data ? 0 : 1
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(mismatches == 0)
            await server.stop()
            #expect(openDescriptorCount() == fdsBefore)
        }

        @Test func halfCloseStillDeliversTheEcho() async throws {
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"))
            let connection = try await TCPConnection.connect(to: server.address)
            let message = Array(repeating: UInt8(ascii: "x"), count: 100_000)
            try await connection.write(contentsOf: message)
            try await connection.shutdown(.write)
            var received: [UInt8] = []
            while true {
                let chunk = try await connection.receive(upTo: 65_536)
                if chunk.isEmpty { break }  // end of stream: the server closed after echoing all
                received += chunk
            }
            #expect(received == message)
            try await connection.close()
            await server.stop()
        }

        @Test func aResetConnectionFailsAloneWhileOthersKeepGoing() async throws {
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"))
            let healthy = try await TCPConnection.connect(to: server.address)
            // A raw listener of our own, whose peer resets mid-stream.
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let victim = try await TCPConnection.connect(to: try listener.localAddress)
            let accepted = try await listener.accept()
            try await victim.write(contentsOf: [1, 2, 3])
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(victim.descriptor.rawValue, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            try await victim.close()  // RST
            _ = try await accepted.receive(upTo: 3)
            await #expect(throws: IOError.system(ECONNRESET, .receive)) { _ = try await accepted.receive(upTo: 10) }
            try await accepted.close()
            try await listener.close()
            // The echo server never noticed.
            #expect(try await exchange(healthy, Array(0..<200), seed: 1) == Array(0..<200))
            try await healthy.close()
            await server.stop()
        }

        @Test func connectingToAClosedPortIsRefused() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            try await listener.close()
            await #expect(throws: IOError.system(ECONNREFUSED, .connect)) {
                _ = try await TCPConnection.connect(to: address, timeout: .seconds(5))
            }
        }

        @Test func bindingAPortInUseFails() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            #expect(throws: IOError.system(EADDRINUSE, .bind)) { _ = try TCPListener.bind(to: address) }
            try await listener.close()
        }

        @Test func cancellingAPendingAcceptLeaksNothing() async throws {
            let fdsBefore = openDescriptorCount()
            let ring = try RingExecutor(name: "accept-cancel")
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let task = Task(executorPreference: ring) { try await listener.accept() }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            task.cancel()
            await #expect(throws: IOError(.cancelled, operation: .accept)) { _ = try await task.value }
            #expect(await ring.statistics().operationsInTable == 0)
            // A cancelled receive, too.
            let client = try await TCPConnection.connect(to: try listener.localAddress)
            let server = try await listener.accept()
            let read = Task(executorPreference: ring) { try await server.receive(upTo: 16) }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            read.cancel()
            await #expect(throws: IOError(.cancelled, operation: .receive)) { _ = try await read.value }
            try await client.close()
            try await server.close()
            try await listener.close()
            ring.shutdown()
            #expect(openDescriptorCount() == fdsBefore)
        }

        @Test func socketBufferSizesReachTheKernel() async throws {
            let (client, server) = try await connectedPair()
            func option(_ name: Int32) -> Int32 {
                var value: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(client.descriptor.rawValue, SOL_SOCKET, name, &value, &length)
                return value
            }
            try client.setReceiveBufferSize(96 * 1024)
            try client.setSendBufferSize(80 * 1024)
            // Linux doubles the value asked for (room for its own bookkeeping).
            #expect(option(SO_RCVBUF) == 2 * 96 * 1024)
            #expect(option(SO_SNDBUF) == 2 * 80 * 1024)
            // Bytes still flow both ways.
            try await client.write(contentsOf: [1, 2, 3])
            #expect(try await server.read(upTo: 3, timeout: .seconds(5)) == [1, 2, 3])
            try await client.close()
            try await server.close()
            // On a descriptor that is not open: a typed error naming the option call.
            let closed = TCPConnection(descriptor: closedDescriptor().descriptor)
            #expect(throws: IOError.self) { try closed.setReceiveBufferSize(4096) }
            do {
                try closed.setSendBufferSize(4096)
                Issue.record("no error for a closed descriptor")
            } catch {
                #expect(error.operation == .setOption && error.errno == .badFileDescriptor)
            }
        }

        @Test func unixDomainRoundTrip() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let server = try TestEchoServer(on: SocketAddress(unixPath: dir.path + "/echo.sock"))
            #expect(server.address.family == .unix)
            let connection = try await UnixConnection.connect(to: server.address)
            #expect(
                try await exchange(connection, Array(repeating: 7, count: 300_000), seed: 2)
                    == Array(repeating: 7, count: 300_000))
            try await connection.close()
            await server.stop()
        }

        @Test func ipv6LoopbackRoundTrip() async throws {
            let server = try TestEchoServer(on: SocketAddress("[::1]:0"))
            let connection = try await TCPConnection.connect(to: server.address)
            #expect(try connection.peerAddress == server.address)
            #expect(try connection.localAddress.family == .ipv6)
            try connection.setNoDelay()
            try connection.setKeepAlive()
            #expect(try await exchange(connection, Array(0..<255), seed: 3) == Array(0..<255))
            try await connection.close()
            await server.stop()
        }
    }
}
