import Glibc
import Synchronization
import SystemPackage
import Testing

@testable import Uring

/// FNV-1a over a byte stream, to compare what was sent with what was received without keeping it.
struct Checksum {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for byte in bytes { value = (value ^ UInt64(byte)) &* 0x100_0000_01b3 }
    }
}

final class Gate: Sendable {
    private let flag = Atomic<Bool>(false)
    func open() { flag.store(true, ordering: .releasing) }
    var isOpen: Bool { flag.load(ordering: .acquiring) }
}

extension IntegrationTests {
    @Suite("Multishot accept and buffer-ring receive")
    struct Streams {
        /// The single-shot paths (`accept()`, `read(into:)`) still serve an echo correctly.
        @Test func singleShotEchoServer() async throws {
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"), mode: .singleShot)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<50 {
                    group.addTask {
                        var random = SeededRandom(seed: UInt64(i) + 100)
                        let data = random.bytes(256 * 1024)
                        let connection = try await TCPConnection.connect(to: server.address)
                        #expect(try await exchange(connection, data, seed: UInt64(i)) == data)
                        try await connection.close()
                    }
                }
                try await group.waitForAll()
            }
            await server.stop()
        }

        /// Dropping the `connections` iterator stops the multishot accept and closes every
        /// connection it accepted that nobody took: the clients see the close, no fd leaks and
        /// nothing stays in the operation table.
        @Test func droppedAcceptIteratorClosesWhatNobodyTook() async throws {
            let fdsBefore = openDescriptorCount()
            let ring = try RingExecutor(name: "accept-drop")
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            var clients: [TCPConnection] = []
            for _ in 0..<20 { clients.append(try await TCPConnection.connect(to: try listener.localAddress)) }
            let taken = try await Task(executorPreference: ring) { () async throws -> Int in
                var iterator = listener.connections.makeAsyncIterator()
                let first = try #require(try await iterator.next())
                try await first.close()
                try await Uring.sleep(for: .milliseconds(50))  // the other 19 are queued by now
                return 1
            }.value
            #expect(taken == 1)
            #expect(await eventually { await ring.statistics().operationsInTable == 0 })
            for client in clients {
                // End of stream or a reset: either way the server side is closed.
                let ended: Bool
                do { ended = try await client.receive(upTo: 16, timeout: .seconds(10)).isEmpty } catch {
                    ended = error.errno == .connectionReset
                }
                #expect(ended)
                try await client.close()
            }
            try await listener.close()
            ring.shutdown()
            #expect(openDescriptorCount() == fdsBefore)
        }

        /// Cancelling the task that consumes `connections` or `chunks` ends the sequence with a
        /// cancellation error and leaves nothing behind.
        @Test func cancellingStreamConsumersLeaksNothing() async throws {
            let fdsBefore = openDescriptorCount()
            let ring = try RingExecutor(name: "stream-cancel")
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let acceptor = Task(executorPreference: ring) {
                for try await connection in listener.connections { try await connection.close() }
            }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            acceptor.cancel()
            await #expect(throws: IOError(.cancelled, operation: .accept)) { try await acceptor.value }
            #expect(await eventually { await ring.statistics().operationsInTable == 0 })

            let client = try await TCPConnection.connect(to: try listener.localAddress)
            let server = try await listener.accept()
            let reader = Task(executorPreference: ring) { () async throws -> Int in
                var total = 0
                for try await chunk in server.chunks { total += chunk.count }
                return total
            }
            try await client.write(contentsOf: Array(repeating: 1, count: 1000))
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            reader.cancel()
            await #expect(throws: IOError(.cancelled, operation: .receive)) { _ = try await reader.value }
            #expect(
                await eventually {
                    let stats = await ring.statistics()
                    return stats.operationsInTable == 0 && stats.receiveBuffersAvailable == stats.receiveBufferCount
                })
            try await client.close()
            try await server.close()
            try await listener.close()
            ring.shutdown()
            #expect(openDescriptorCount() == fdsBefore)
        }

        /// A peer that sends much faster than our reader consumes: the reader's queue stays
        /// bounded (the multishot receive pauses, TCP flow control holds the peer back), other
        /// connections on the same ring keep being served meanwhile, and no byte is lost.
        @Test func slowReaderIsBoundedAndDoesNotStallOthers() async throws {
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"))
            let slowListener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let gate = Gate()
            let total = 16 << 20
            // The slow reader lives on the echo server's ring.
            let reader = Task(executorPreference: server.ring) { () async throws -> (Int, UInt64) in
                let connection = try await slowListener.accept()
                // Let the sender fill every socket buffer first: the worst case for a reader.
                try await Uring.sleep(for: .milliseconds(200))
                var received = 0
                var checksum = Checksum()
                for try await chunk in connection.chunks {
                    chunk.withUnsafeBytes { checksum.add($0) }
                    received += chunk.count
                    if !gate.isOpen { try await Uring.sleep(for: .milliseconds(5)) }
                }
                try await connection.close()
                return (received, checksum.value)
            }
            var random = SeededRandom(seed: 42)
            let data = random.bytes(total)
            var expected = Checksum()
            data.withUnsafeBytes { expected.add($0) }
            let sender = Task {
                let connection = try await TCPConnection.connect(to: try slowListener.localAddress)
                var offset = 0
                while offset < data.count {
                    try await connection.write(contentsOf: Array(data[offset..<min(offset + 65_536, data.count)]))
                    offset += 65_536
                }
                try await connection.shutdown(.write)
                return connection
            }
            // While the reader crawls: other connections on the same ring are served.
            var mostBuffersInUse = 0
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        let connection = try await TCPConnection.connect(to: server.address)
                        for round in 0..<100 {
                            let message = [UInt8](repeating: UInt8(truncatingIfNeeded: i &+ round), count: 1024)
                            try await connection.write(contentsOf: message)
                            var back: [UInt8] = []
                            while back.count < message.count {
                                let part = try await connection.receive(upTo: 4096, timeout: .seconds(10))
                                try #require(!part.isEmpty)
                                back += part
                            }
                            #expect(back == message)
                        }
                        try await connection.close()
                    }
                }
                for _ in 0..<40 {
                    let stats = await server.ring.statistics()
                    mostBuffersInUse = max(mostBuffersInUse, stats.receiveBufferCount - stats.receiveBuffersAvailable)
                    try await Task.sleep(for: .milliseconds(10))
                }
                try await group.waitForAll()
            }
            // The slow stream queues at most 16 chunks (+1 lent); the echo connections hold one
            // or two each. (Without metering, one kernel pass queued over 100.)
            #expect(mostBuffersInUse >= 16 && mostBuffersInUse <= 40, "\(mostBuffersInUse) buffers in use")
            gate.open()
            let (received, checksum) = try await reader.value
            #expect(received == total)
            #expect(checksum == expected.value)
            try await sender.value.close()
            try await slowListener.close()
            await server.stop()
        }

        /// With far fewer buffers than busy connections, receives that find the pool empty wait
        /// for a buffer and re-arm: every byte still arrives.
        @Test func receivesWaitForBuffersInsteadOfFailing() async throws {
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"), receiveBufferCount: 8)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<32 {
                    group.addTask {
                        var random = SeededRandom(seed: UInt64(i) + 7)
                        let data = random.bytes(512 * 1024)
                        let connection = try await TCPConnection.connect(to: server.address)
                        #expect(try await exchange(connection, data, seed: UInt64(i)) == data)
                        try await connection.close()
                    }
                }
                try await group.waitForAll()
            }
            let stats = await server.ring.statistics()
            #expect(stats.receiveBufferShortages > 0, "the pool never ran dry")
            #expect(stats.receiveBuffersAvailable == 8)
            await server.stop()
        }

        /// Streams consumed from a task that is not on a ring (here the test's own task, on the
        /// global executor) hop to the shared ring for each `next()` and work the same.
        @Test func streamsConsumedOffTheRing() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let client = try await TCPConnection.connect(to: try listener.localAddress)
            var connections = listener.connections.makeAsyncIterator()
            let server = try #require(try await connections.next())
            try await client.write(contentsOf: Array("hello, ring".utf8))
            try await client.shutdown(.write)
            var received: [UInt8] = []
            for try await chunk in server.chunks {
                received += chunk.bytes
                try await server.write(chunk)
            }
            #expect(String(decoding: received, as: UTF8.self) == "hello, ring")
            var back: [UInt8] = []
            while back.count < received.count {
                let part = try await client.receive(upTo: 64, timeout: .seconds(10))
                if part.isEmpty { break }
                back += part
            }
            #expect(back == received)
            try await server.close()
            try await client.close()
            try await listener.close()
        }

        /// Zero-copy sends deliver the same bytes (on TCP; a Unix socket falls back to a copy).
        @Test(arguments: [false, true])
        func zeroCopySend(unix: Bool) async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let address = unix ? try SocketAddress(unixPath: dir.path + "/zc.sock") : try SocketAddress("127.0.0.1:0")
            let server = try TestEchoServer(on: address)
            let connection = try await TCPConnection.connect(to: server.address)
            var random = SeededRandom(seed: 9)
            let data = random.bytes(4 << 20)
            async let back: [UInt8] = {
                var received: [UInt8] = []
                while received.count < data.count {
                    let part = try await connection.receive(upTo: 65_536, timeout: .seconds(20))
                    if part.isEmpty { break }
                    received += part
                }
                return received
            }()
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: data.count, alignment: 16)
            defer { copy.deallocate() }
            data.withUnsafeBytes { copy.copyMemory(from: $0) }
            try await connection.write(UnsafeRawBufferPointer(copy), zeroCopy: .always)
            #expect(try await back == data)
            try await connection.close()
            await server.stop()
        }

        /// Buffers are scarce (2): connection A holds both, C and then B queue for one (C idle, B
        /// with data waiting). A gives one buffer back. C's turn comes first and C, idle, takes no
        /// buffer; B must still get the free buffer, although no other buffer comes back. (Waking
        /// one starved stream per returned buffer left B waiting for good: the soak's stalls.)
        @Test func aStarvedReceiveIsServedWhileABufferIsFree() async throws {
            let ring = try RingExecutor(entries: 64, name: "starve-order", receiveBufferCount: 2)
            defer { ring.shutdown() }
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            var clients: [TCPConnection] = []
            var servers: [TCPConnection] = []
            for _ in 0..<3 {
                clients.append(try await TCPConnection.connect(to: address))
                servers.append(try await listener.accept())
            }
            let (clientA, clientB) = (clients[0], clients[2])
            let (serverA, serverC, serverB) = (servers[0], servers[1], servers[2])
            let giveBack = Gate()
            let finish = Gate()
            // A: one chunk lent to its consumer, one queued: both buffers.
            try await clientA.write(contentsOf: [1])
            let holder = Task(executorPreference: ring) { () async throws -> Void in
                var chunks = serverA.chunks.makeAsyncIterator()
                _ = try await chunks.next()
                while !giveBack.isOpen { try await Uring.sleep(for: .milliseconds(5)) }
                _ = try await chunks.next()  // hands the first buffer back, takes the queued chunk
                while !finish.isOpen { try await Uring.sleep(for: .milliseconds(5)) }
            }
            try await Uring.sleep(for: .milliseconds(100))
            try await clientA.write(contentsOf: [2])
            try await Uring.sleep(for: .milliseconds(100))
            #expect(await ring.statistics().receiveBuffersAvailable == 0)
            // C, then B, wait for a buffer.
            let idle = Task(executorPreference: ring) { () async throws -> Int in
                var total = 0
                for try await chunk in serverC.chunks { total += chunk.count }
                return total
            }
            try await Uring.sleep(for: .milliseconds(100))
            let served = Gate()
            let reader = Task(executorPreference: ring) { () async throws -> [UInt8] in
                var chunks = serverB.chunks.makeAsyncIterator()
                let bytes = try #require(try await chunks.next()).bytes
                served.open()
                return bytes
            }
            try await Uring.sleep(for: .milliseconds(100))
            try await clientB.write(contentsOf: Array("hello".utf8))
            try await Uring.sleep(for: .milliseconds(100))
            giveBack.open()
            // B is served while A still holds its other buffer (no second buffer comes back).
            #expect(await eventually(seconds: 10) { served.isOpen }, "B got the free buffer")
            finish.open()
            #expect(try await reader.value == Array("hello".utf8))
            try await holder.value
            for client in clients { try await client.close() }
            #expect(try await idle.value == 0)
            for server in servers { try await server.close() }
            try await listener.close()
        }
    }
}
