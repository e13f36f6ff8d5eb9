import Glibc
import Synchronization
import SystemPackage
import Testing

@testable import Uring

/// The value of `task`, or `nil` if it has not finished within `limit` (the task is then
/// cancelled, so a hang fails the test instead of blocking the suite). Awaiting a task's value
/// ignores cancellation, so a watcher task awaits it and raises a flag that this polls.
func value<T: Sendable>(of task: Task<T, any Error>, within limit: Duration) async -> Result<T, any Error>? {
    let done = Mutex(false)
    Task {
        _ = await task.result
        done.withLock { $0 = true }
    }
    let deadline = ContinuousClock.now + limit
    while !done.withLock({ $0 }) {
        if ContinuousClock.now >= deadline {
            task.cancel()
            return nil
        }
        try? await Task.sleep(for: .microseconds(200))
    }
    return await task.result
}

/// Whether a TCP connection to `address` is refused (nothing listens there any more).
func connectionRefused(_ address: SocketAddress) async -> Bool {
    do {
        let connection = try await TCPConnection.connect(to: address, timeout: .seconds(2))
        try? await connection.close()
        return false
    } catch {
        return error.errno == .connectionRefused
    }
}

/// A connected TCP pair on loopback: the client end and the server's accepted end.
func connectedPair() async throws -> (client: TCPConnection, server: TCPConnection) {
    let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
    let address = try listener.localAddress
    async let accepted = listener.accept()
    let client = try await TCPConnection.connect(to: address, timeout: .seconds(5))
    let server = try await accepted
    try await listener.close()
    return (client, server)
}

extension IntegrationTests {
    /// Issue 11: closing a descriptor ends what is pending on it, whichever ring it waits on.
    @Suite("Close")
    struct Close {
        let ring: RingExecutor

        init() throws { ring = try RingExecutor(name: "close-test") }

        @Test func aConnectionsLoopEndsAndThePortRefuses() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            let served = Task(executorPreference: ring) { () async throws -> Int in
                var count = 0
                for try await connection in listener.connections {
                    count += 1
                    try await connection.close()
                }
                return count
            }
            // One connection served first, so the multishot accept is armed for sure.
            let first = try await TCPConnection.connect(to: address, timeout: .seconds(5))
            #expect(await eventually { (try? await first.receive(upTo: 1, timeout: .milliseconds(50))) == [] })
            try await first.close()
            try await listener.close()  // from another ring (the shared one)
            let result = await value(of: served, within: .seconds(1))
            #expect(try result?.get() == 1, "the loop ends (nil) within a second of close()")
            #expect(await connectionRefused(address), "a closed listener refuses connections at once")
            ring.shutdown()
        }

        @Test func aPendingAcceptThrowsClosed() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            let accepting = Task(executorPreference: ring) { try await listener.accept() }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            try await listener.close()
            #expect(await ring.statistics().operationsInTable == 0, "close() returns after what was pending ended")
            let result = await value(of: accepting, within: .seconds(1))
            #expect(throws: IOError(.closed, errno: .badFileDescriptor, operation: .accept)) { try result?.get() }
            #expect(await connectionRefused(address))
            #expect(await eventually { await ring.statistics().operationsInTable == 0 })
            ring.shutdown()
        }

        @Test func aPendingReadOnAConnectionThrowsClosed() async throws {
            let (client, server) = try await connectedPair()
            let reading = Task(executorPreference: ring) { () async throws -> Int in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
                defer { buffer.deallocate() }
                return try await server.read(into: buffer)
            }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            try await server.close()
            #expect(await ring.statistics().operationsInTable == 0, "close() returns after what was pending ended")
            let result = await value(of: reading, within: .seconds(1))
            #expect(throws: IOError(.closed, errno: .badFileDescriptor, operation: .receive)) { try result?.get() }
            // The peer sees the connection end.
            #expect(try await client.receive(upTo: 16, timeout: .seconds(2)) == [])
            try await client.close()
            ring.shutdown()
        }

        @Test func aChunksLoopEnds() async throws {
            let (client, server) = try await connectedPair()
            let reading = Task(executorPreference: ring) { () async throws -> Int in
                var bytes = 0
                for try await chunk in server.chunks { bytes += chunk.count }
                return bytes
            }
            try await client.write(contentsOf: [1, 2, 3])
            #expect(await eventually { await ring.statistics().multishotArmed >= 2 })
            try await server.close()
            let result = await value(of: reading, within: .seconds(1))
            #expect(try result?.get() == 3, "the chunks sequence ends (nil) after what arrived before")
            try await client.close()
            #expect(await eventually { await ring.statistics().operationsInTable == 0 })
            ring.shutdown()
        }

        @Test func aPendingUDPReceiveThrowsClosed() async throws {
            let socket = try UDPSocket.bind(to: SocketAddress("127.0.0.1:0"))
            let receiving = Task(executorPreference: ring) { try await socket.receive(upTo: 64) }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            try await socket.close()
            #expect(await ring.statistics().operationsInTable == 0, "close() returns after what was pending ended")
            let result = await value(of: receiving, within: .seconds(1))
            #expect(throws: IOError(.closed, errno: .badFileDescriptor, operation: .receive)) { try result?.get() }
            ring.shutdown()
        }

        @Test func aPendingPipeReadThrowsClosed() async throws {
            let pipe = Pipe()
            let reading = Task(executorPreference: ring) { try await pipe.read.read(upTo: 16) }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            try await pipe.read.close()
            #expect(await ring.statistics().operationsInTable == 0, "close() returns after what was pending ended")
            let result = await value(of: reading, within: .seconds(1))
            #expect(throws: IOError(.closed, errno: .badFileDescriptor, operation: .read)) { try result?.get() }
            _ = Glibc.close(pipe.write.descriptor.rawValue)
            ring.shutdown()
        }

        @Test func closingTwiceIsDefined() async throws {
            let pipe = Pipe()
            // Two closes at once (both queued on one ring, so the second starts while the first is
            // under way): one closes, the other throws `closed` and closes nothing (it never closes
            // a number someone else may have been handed meanwhile).
            // (Two child tasks of one task on the ring: both are queued before either runs.)
            let failures = await Task(executorPreference: ring) { () async -> [IOError] in
                @Sendable func close() async -> IOError? {
                    do throws(IOError) {
                        try await pipe.read.close()
                        return nil
                    } catch {
                        return error
                    }
                }
                async let a = close()
                async let b = close()
                return [await a, await b].compactMap { $0 }
            }.value
            #expect(failures == [IOError(.closed, errno: .badFileDescriptor, operation: .close)])
            _ = Glibc.close(pipe.write.descriptor.rawValue)
            ring.shutdown()
        }

        /// 1,000 rounds of a read racing a close, with random timing, readers and closers on two
        /// rings: every read ends (closed; EBADF when it started after the close), and descriptors
        /// and slots come back to where they were.
        @Test func raceAThousandTimes() async throws {
            let other = try RingExecutor(name: "close-other")
            defer { other.shutdown() }
            try await Task.sleep(for: .milliseconds(1))  // the global pool's timer descriptor exists
            let descriptorsBefore = openDescriptorCount()
            let before = openDescriptors()
            var random = SeededRandom(seed: 11)
            var ended = 0
            for round in 0..<1000 {
                let pipe = Pipe()
                let readerRing = round % 2 == 0 ? ring : other
                let closerRing = round % 3 == 0 ? ring : other
                let readDelay = Int(random.next() % 200)
                let closeDelay = Int(random.next() % 200)
                let reading = Task(executorPreference: readerRing) { () async throws -> [UInt8] in
                    if readDelay > 100 { try await Task.sleep(for: .microseconds(readDelay)) }
                    return try await pipe.read.read(upTo: 16)
                }
                let closing = Task(executorPreference: closerRing) {
                    if closeDelay > 50 { try await Task.sleep(for: .microseconds(closeDelay)) }
                    try await pipe.read.close()
                }
                try await closing.value
                guard let result = await value(of: reading, within: .seconds(1)) else {
                    Issue.record("round \(round): the read did not end within a second of close()")
                    break
                }
                switch result {
                case .success(let bytes): Issue.record("round \(round): read \(bytes) from a pipe nobody wrote")
                case .failure(let error as IOError) where error.code == .closed || error.errno == .badFileDescriptor:
                    ended += 1
                case .failure(let error): Issue.record("round \(round): \(error)")
                }
                _ = Glibc.close(pipe.write.descriptor.rawValue)
            }
            #expect(ended == 1000)
            #expect(openDescriptorCount() == descriptorsBefore, "\(openDescriptors().filter { before[$0.key] == nil })")
            #expect(await eventually { await ring.statistics().operationsInTable == 0 })
            #expect(await eventually { await other.statistics().operationsInTable == 0 })
            ring.shutdown()
        }
    }
}
