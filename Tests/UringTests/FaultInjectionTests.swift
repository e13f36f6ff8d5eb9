import Glibc
import SystemPackage
import Testing

@testable import Uring

// Fault injection (issue 6): completion results and syscall failures injected into one ring's
// dispatch (FaultInjection.swift, debug builds), and the behaviour each one must show: retried,
// surfaced as a typed error, or degraded gracefully, with no lost or duplicated bytes and no
// stuck task. Every test runs its work on a ring of its own, so injected faults touch nothing else.

/// Runs `body` as a task on a fresh ring, and shuts the ring down afterwards.
func onFaultyRing<T: Sendable>(
    _ name: String, entries: Int = 64, _ body: @escaping @Sendable (RingExecutor) async throws -> T
) async throws -> T {
    let ring = try RingExecutor(entries: entries, name: name)
    defer { ring.shutdown() }
    return try await Task(executorPreference: ring) { try await body(ring) }.value
}

/// A file of `count` bytes of `random` data in `directory`; returns its path and the bytes.
func makeDataFile(_ directory: TemporaryDirectory, _ name: String, count: Int, seed: UInt64) throws -> (
    FilePath, [UInt8]
) {
    var random = SeededRandom(seed: seed)
    let data = random.bytes(count)
    let path = directory.file(name)
    let fd = open(path.string, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
    #expect(fd >= 0)
    #expect(data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == count)
    close(fd)
    return (path, data)
}

extension IntegrationTests {
    @Suite("Fault injection", .timeLimit(.minutes(2)))
    struct Faults {
        /// EINTR is not the caller's business: the operation is submitted again and the data is
        /// right (the injected failures had no effect, so nothing is skipped or read twice).
        @Test func interruptedOperationsAreRetried() async throws {
            let directory = TemporaryDirectory()
            defer { directory.cleanup() }
            let (path, data) = try makeDataFile(directory, "data", count: 100_000, seed: 1)
            let (bytes, injected, retries) = try await onFaultyRing("faults-eintr") { ring in
                ring.injectFault(.fail(EINTR), on: .open)
                ring.injectFault(.fail(EINTR), on: .read, times: 3)
                let file = try await File.open(path)
                let bytes = try await file.readAll()
                try await file.close()
                return (bytes, ring.faultsInjected, await ring.statistics().retries)
            }
            #expect(injected == 4)
            #expect(retries >= 4)
            #expect(bytes == data)
        }

        /// EAGAIN (what a descriptor in non-blocking mode answers when it is not ready) means
        /// "wait until it is ready": the read polls the still empty pipe, waits for the writer,
        /// and then gets its bytes.
        @Test func wouldBlockWaitsForReadiness() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            let (got, retries) = try await onFaultyRing("faults-eagain") { ring in
                ring.injectFault(.fail(EAGAIN), on: .read)
                async let reader: [UInt8] = {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
                    defer { buffer.deallocate() }
                    let n = try await pipe.read.read(into: buffer, timeout: .seconds(20))
                    return Array(buffer[..<n])
                }()
                try await Uring.sleep(for: .milliseconds(100))  // the read has met EAGAIN and polls
                #expect(await ring.statistics().retries == 0, "nothing retried before the pipe is ready")
                let message = Array("ready now".utf8)
                #expect(
                    message.withUnsafeBytes { Glibc.write(pipe.write.descriptor.rawValue, $0.baseAddress, $0.count) }
                        == message.count)
                return (try await reader, await ring.statistics().retries)
            }
            #expect(retries == 1)
            #expect(got == Array("ready now".utf8))
        }

        /// The deadline of an operation covers its retries: a read that met EAGAIN and waits for a
        /// pipe nobody writes to times out, and a cancelled one ends as cancelled.
        @Test func wouldBlockKeepsTheDeadlineAndCancellation() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            try await onFaultyRing("faults-eagain-deadline") { ring in
                ring.injectFault(.fail(EAGAIN), on: .read, times: 2)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
                defer { buffer.deallocate() }
                do {
                    _ = try await pipe.read.read(into: buffer, timeout: .milliseconds(100))
                    Issue.record("the read returned")
                } catch let error as IOError {
                    #expect(error.code == .timedOut)
                }
                nonisolated(unsafe) let scratch = buffer
                let reader = Task(executorPreference: ring) { try await pipe.read.read(into: scratch) }
                try await Uring.sleep(for: .milliseconds(50))
                reader.cancel()
                do {
                    _ = try await reader.value
                    Issue.record("the read returned")
                } catch let error as IOError {
                    #expect(error.code == .cancelled)
                }
                #expect(ring.faultsInjected == 2)
            }
        }

        /// Injected EAGAIN on sends and receives of a TCP echo: every byte arrives once, in order.
        @Test func wouldBlockOnSocketsLosesNothing() async throws {
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"), mode: .singleShot)
            var random = SeededRandom(seed: 7)
            let data = random.bytes(512 * 1024)
            let echoed = try await onFaultyRing("faults-eagain-tcp") { ring in
                let connection = try await TCPConnection.connect(to: server.address)
                ring.injectFault(.fail(EAGAIN), on: .send, times: 5, after: 1)
                ring.injectFault(.fail(EAGAIN), on: .receive, times: 5, after: 2)
                let echoed = try await exchange(connection, data, seed: 8)
                #expect(ring.faultsInjected == 10)
                try await connection.close()
                return echoed
            }
            #expect(echoed == data)
            await server.stop()
        }

        /// ECANCELED that nobody asked for (the kernel gave up on the operation) is an error the
        /// caller sees, with the errno and the operation, not a silent cancellation; the next
        /// operation works.
        @Test func unexpectedCancellationIsATypedError() async throws {
            let directory = TemporaryDirectory()
            defer { directory.cleanup() }
            let (path, data) = try makeDataFile(directory, "data", count: 4096, seed: 2)
            try await onFaultyRing("faults-ecanceled") { ring in
                let file = try await File.open(path)
                ring.injectFault(.fail(ECANCELED), on: .read)
                await #expect(throws: IOError.self) {
                    do {
                        _ = try await file.read(upTo: 4096, at: 0)
                    } catch let error as IOError {
                        #expect(error.code == .systemCall && error.errno == .canceled && error.operation == .read)
                        throw error
                    }
                }
                #expect(try await file.read(upTo: 4096, at: 0) == data)
                try await file.close()
            }
        }

        /// Short reads and writes (the kernel moving at most 7, 1,000 or 100 bytes per call) are
        /// looped over by every "whole buffer" API: files and sockets come out byte-exact.
        @Test func shortTransfersAreCompleted() async throws {
            let directory = TemporaryDirectory()
            defer { directory.cleanup() }
            let (path, data) = try makeDataFile(directory, "data", count: 50_000, seed: 3)
            let server = try TestEchoServer(on: SocketAddress("127.0.0.1:0"), mode: .singleShot)
            var random = SeededRandom(seed: 4)
            let message = random.bytes(64 * 1024)
            try await onFaultyRing("faults-short") { ring in
                ring.injectFault(.limit(7), on: .read, times: 100_000)
                ring.injectFault(.limit(1000), on: .write, times: 100_000)
                let file = try await File.open(path)
                #expect(try await file.readAll() == data)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 10_000, alignment: 16)
                defer { buffer.deallocate() }
                try await file.read(exactlyInto: buffer, at: 20_000)
                #expect(Array(buffer) == Array(data[20_000..<30_000]))
                try await file.close()

                let copy = try await File.open(directory.file("copy"), .writeOnly, options: [.create, .truncate])
                try await copy.write(contentsOf: data, at: 0)
                try await copy.close()
                #expect(ring.faultsInjected > 100)

                ring.injectFault(.limit(100), on: .send, times: 100_000)
                let connection = try await TCPConnection.connect(to: server.address)
                #expect(try await exchange(connection, message, seed: 5) == message)
                try await connection.close()
            }
            #expect(try await File.readAll(at: directory.file("copy")) == data)
            await server.stop()
        }

        /// ENOSPC on a write is a typed error carrying the errno; what was written before it is
        /// intact, and writing goes on once there is space again.
        @Test func noSpaceIsATypedError() async throws {
            let directory = TemporaryDirectory()
            defer { directory.cleanup() }
            let chunk = [UInt8](repeating: 0xAB, count: 64 * 1024)
            try await onFaultyRing("faults-enospc") { ring in
                let file = try await File.open(directory.file("out"), .writeOnly, options: [.create, .truncate])
                ring.injectFault(.fail(ENOSPC), on: .write, after: 2)
                try await file.write(contentsOf: chunk, at: 0)
                try await file.write(contentsOf: chunk, at: 65_536)
                do {
                    try await file.write(contentsOf: chunk, at: 131_072)
                    Issue.record("the injected ENOSPC was not reported")
                } catch let error as IOError {
                    #expect(error.code == .systemCall && error.errno == .noSpace && error.operation == .write)
                }
                try await file.write(contentsOf: chunk, at: 131_072)  // space again
                try await file.close()
            }
            #expect(try await File.readAll(at: directory.file("out")) == chunk + chunk + chunk)
        }

        /// EMFILE on a multishot accept reaches the accept loop as an error; the connection that
        /// could not be accepted waits in the backlog and is served once the loop goes on.
        @Test func acceptFailuresLeaveTheStreamUsable() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            let (errors, echoed) = try await onFaultyRing("faults-emfile") { ring in
                ring.injectFault(.fail(EMFILE), on: .accept, times: 2)
                ring.injectFault(.fail(ENFILE), on: .accept, after: 2)  // a later one fails too
                let client = try await TCPConnection.connect(to: address)
                try await client.write(contentsOf: Array("hello".utf8))
                var accepted = listener.connections.makeAsyncIterator()
                var errors: [Errno] = []
                var connection: TCPConnection?
                while connection == nil {
                    do {
                        connection = try await accepted.next()
                    } catch let error as IOError {
                        #expect(error.operation == .accept)
                        if let errno = error.errno { errors.append(errno) }
                    }
                }
                let server = connection!
                let got = try await server.receive(upTo: 5, timeout: .seconds(20))
                try await server.write(contentsOf: got)
                let echoed = try await client.receive(upTo: 5, timeout: .seconds(20))
                try await server.close()
                try await client.close()
                return (errors, echoed)
            }
            #expect(errors == [.tooManyOpenFiles, .tooManyOpenFiles])
            #expect(echoed == Array("hello".utf8))
            try await listener.close()
        }

        /// ENOBUFS on a buffer-ring receive (no provided buffer was free) re-arms the receive:
        /// the stream goes on and every byte arrives once, in order.
        @Test func receiveBufferShortagesRearm() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            var random = SeededRandom(seed: 9)
            let data = random.bytes(256 * 1024)
            let (received, shortages) = try await onFaultyRing("faults-enobufs") { ring in
                async let sender: Void = {
                    let client = try await TCPConnection.connect(to: address)
                    try await client.write(contentsOf: data)
                    try await client.close()
                }()
                var accepted = listener.connections.makeAsyncIterator()
                let connection = try #require(try await accepted.next())
                ring.injectFault(.fail(ENOBUFS), on: .receive, times: 4)
                var received: [UInt8] = []
                for try await chunk in connection.chunks { received += chunk.bytes }
                try await sender
                try await connection.close()
                return (received, await ring.statistics().receiveBufferShortages)
            }
            #expect(shortages >= 4)
            #expect(received == data)
            try await listener.close()
        }

        /// A CQ overflow while file reads are in flight: the reads still complete once each, with
        /// the right bytes.
        @Test func completionQueueOverflowLosesNothing() async throws {
            let directory = TemporaryDirectory()
            defer { directory.cleanup() }
            let (path, data) = try makeDataFile(directory, "data", count: 64 * 4096, seed: 10)
            let (blocks, overflows) = try await onFaultyRing("faults-overflow", entries: 8) { ring in
                let file = try await File.open(path)
                ring.submitUntrackedNopsForTesting(100)  // 100 completions for a 16-entry CQ
                let blocks = try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
                    for block in 0..<64 {
                        group.addTask(executorPreference: ring) {
                            (block, try await file.read(upTo: 4096, at: Int64(block * 4096)))
                        }
                    }
                    var blocks: [Int: [UInt8]] = [:]
                    for try await (block, bytes) in group { blocks[block] = bytes }
                    return blocks
                }
                try await file.close()
                return (blocks, await ring.statistics().completionQueueOverflows)
            }
            #expect(overflows >= 1)
            for block in 0..<64 { #expect(blocks[block] == Array(data[(block * 4096)..<((block + 1) * 4096)])) }
        }

        /// ENOMEM at io_uring set-up: smaller rings are tried, and the ring runs with fewer
        /// entries; if even the smallest fails, the error says why. Other set-up errors are not
        /// retried: EPERM (what a seccomp profile answers) fails a ring that asked for io_uring,
        /// and sends an automatic one to the epoll driver.
        @Test(.enabled(if: ioUringAvailable, "io_uring is denied here"))
        func ringSetUpDegradesOnOutOfMemory() async throws {
            FaultInjector.failSetUp(ofRingNamed: "setup-enomem", with: [ENOMEM, ENOMEM])
            let smaller = try RingExecutor(entries: 256, name: "setup-enomem", backend: .ioUring)
            #expect(await smaller.statistics().submissionEntries == 64)
            #expect(
                try await Task(executorPreference: smaller) { try await File.readAll(at: "/proc/self/stat").count > 0 }
                    .value)
            smaller.shutdown()

            FaultInjector.failSetUp(ofRingNamed: "setup-enomem-always", with: Array(repeating: ENOMEM, count: 20))
            do {
                _ = try RingExecutor(entries: 256, name: "setup-enomem-always", backend: .ioUring)
                Issue.record("set-up did not fail")
            } catch {
                #expect(error.code == .ringUnavailable && error.errno == .noMemory && error.operation == .setup)
                #expect("\(error)".contains("memory"))
            }

            FaultInjector.failSetUp(ofRingNamed: "setup-eperm", with: [EPERM])
            do {
                _ = try RingExecutor(entries: 256, name: "setup-eperm", backend: .ioUring)
                Issue.record("set-up did not fail")
            } catch {
                #expect(error.code == .ringUnavailable && error.errno == .notPermitted)
            }

            for errno in [EPERM, EACCES, ENOSYS] {
                FaultInjector.failSetUp(ofRingNamed: "setup-fallback", with: [errno])
                let fallback = try RingExecutor(entries: 256, name: "setup-fallback", backend: .automatic)
                #expect(fallback.backend == .epoll, "errno \(errno)")
                #expect(await fallback.statistics().backend == .epoll)
                #expect(
                    try await Task(executorPreference: fallback) { try await File.readAll(at: "/proc/self/stat").count }
                        .value > 0)
                fallback.shutdown()
            }
            // A kernel ring without an opcode the runtime uses: io_uring only is a typed error
            // naming it; automatic runs on the epoll driver.
            FaultInjector.pretendMissing("IORING_OP_SEND_ZC", inRingNamed: "setup-old-kernel")
            do {
                _ = try RingExecutor(name: "setup-old-kernel", backend: .ioUring)
                Issue.record("set-up did not fail")
            } catch {
                #expect(error.code == .unsupported && error.errno == .notSupported && error.operation == .setup)
                #expect(error.subject == .feature("IORING_OP_SEND_ZC"))
                #expect("\(error)".contains("IORING_OP_SEND_ZC"))
            }
            FaultInjector.pretendMissing("IORING_OP_SEND_ZC", inRingNamed: "setup-old-kernel-auto")
            let older = try RingExecutor(name: "setup-old-kernel-auto", backend: .automatic)
            #expect(older.backend == .epoll)
            older.shutdown()
            // ENOMEM to the end is not a denial: no fallback.
            FaultInjector.failSetUp(ofRingNamed: "setup-nofallback", with: Array(repeating: ENOMEM, count: 20))
            #expect(throws: IOError.self) { _ = try RingExecutor(name: "setup-nofallback", backend: .automatic) }
        }
    }
}
