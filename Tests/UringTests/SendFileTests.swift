import Glibc
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    /// `TCPConnection.write(_:at:count:timeout:)`: a file's bytes into a socket, from the page cache
    /// with `sendfile(2)` where they are cached, copied where they are not; on both drivers (and
    /// checked for leaked descriptors, like every suite here).
    @Suite("Sending files")
    struct SendFile {
        /// A file of `size` random bytes; with `cached: false` it is flushed and dropped from the
        /// page cache, so its first send cannot come from there.
        static func makeFile(_ dir: TemporaryDirectory, size: Int, seed: UInt64, cached: Bool) -> (String, [UInt8]) {
            var random = SeededRandom(seed: seed)
            let data = random.bytes(size)
            let path = dir.path + "/data-\(seed)"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            precondition(fd >= 0)
            data.withUnsafeBytes { precondition(write(fd, $0.baseAddress, $0.count) == $0.count) }
            fsync(fd)
            if !cached { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) }
            close(fd)
            return (path, data)
        }

        /// Sends `count` bytes of the file at `path` from `offset` over a loopback connection, from
        /// a task on a ring of its own (where `sendfile` is made), and returns what the peer read
        /// and the ring's count of `sendfile` calls.
        static func send(path: String, offset: Int64, count: Int) async throws -> (received: [UInt8], sendfiles: UInt64)
        {
            let ring = try RingExecutor(name: "sendfile-test")
            defer { ring.shutdown() }
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let client = try await TCPConnection.connect(to: try listener.localAddress)
            let server = try await listener.accept()
            let sender = Task(executorPreference: ring) { () async -> IOError? in
                do throws(IOError) {
                    let file = try await File.open(FilePath(path))
                    do throws(IOError) {
                        try await server.write(file, at: offset, count: count)
                    } catch {
                        try? await file.close()
                        try? await server.shutdown(.write)
                        return error
                    }
                    try await file.close()
                    try await server.shutdown(.write)
                    return nil
                } catch {
                    return error
                }
            }
            var received: [UInt8] = []
            while let chunk = try? await client.receive(upTo: 256 * 1024), !chunk.isEmpty {
                received += chunk
            }
            let failure = await sender.value
            try await server.close()
            try await client.close()
            try await listener.close()
            if let failure { throw failure }
            return (received, await ring.statistics().filesSentWithoutCopy)
        }

        @Test func aCachedFileGoesFromThePageCache() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let (path, data) = Self.makeFile(dir, size: 3 << 20, seed: 1, cached: true)
            let (received, sendfiles) = try await Self.send(path: path, offset: 12_345, count: 2_500_000)
            #expect(received == Array(data[12_345..<(12_345 + 2_500_000)]))
            // cachestat(2) came with Linux 6.5; before it, every byte is copied (checked above).
            if RingDriver.cacheStatusWorks.load(ordering: .relaxed) { #expect(sendfiles > 0) }
        }

        @Test func anUncachedFileIsCopiedAndArrivesWhole() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let (path, data) = Self.makeFile(dir, size: 5 << 20, seed: 2, cached: false)
            let (received, _) = try await Self.send(path: path, offset: 0, count: data.count)
            #expect(received == data)
        }

        @Test func aFileShorterThanTheCountIsAnError() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let (path, _) = Self.makeFile(dir, size: 100_000, seed: 3, cached: true)
            await #expect(throws: IOError(.unexpectedEndOfFile, operation: .read)) {
                _ = try await Self.send(path: path, offset: 50_000, count: 60_000)
            }
        }

        @Test func badOffsetsAndCountsAreRefused() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let (path, _) = Self.makeFile(dir, size: 1000, seed: 4, cached: true)
            let invalid = IOError(.invalidArgument, errno: .invalidArgument, operation: .send)
            await #expect(throws: invalid) { _ = try await Self.send(path: path, offset: -1, count: 10) }
            await #expect(throws: invalid) { _ = try await Self.send(path: path, offset: .max, count: 10) }
            await #expect(throws: invalid) { _ = try await Self.send(path: path, offset: 0, count: -1) }
        }

        /// `sendfile` has no `MSG_NOSIGNAL`: a peer that has gone must be an error, not a SIGPIPE
        /// that ends the process.
        @Test func aPeerThatHasGoneIsAnErrorNotASignal() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let (path, _) = Self.makeFile(dir, size: 16 << 20, seed: 5, cached: true)
            let ring = try RingExecutor(name: "sendfile-test")
            defer { ring.shutdown() }
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let client = try await TCPConnection.connect(to: try listener.localAddress)
            let server = try await listener.accept()
            try await client.close()
            let outcome = await Task(executorPreference: ring) { () async -> IOError? in
                guard let file = try? await File.open(FilePath(path)) else { return nil }
                defer { Task { try? await file.close() } }
                do throws(IOError) {
                    // Several times: the first send may still be taken by the socket's buffer.
                    for _ in 0..<8 { try await server.write(file, at: 0, count: 16 << 20) }
                    return nil
                } catch {
                    return error
                }
            }.value
            let error = try #require(outcome)
            #expect(error.operation == .send)
            #expect(error.errno == .brokenPipe || error.errno == .connectionReset)
            try await server.close()
            try await listener.close()
        }
    }
}
