import Glibc
import Synchronization
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    @Suite("File operations")
    struct FileOperations {
        /// Opening a FIFO for reading does not wait for a writer, on either driver (the kernel
        /// ring makes an open with `O_NONBLOCK` first, and so does the epoll driver on the ring's
        /// thread), and the descriptor is blocking, as asked. Should an open wait, writers come
        /// after 10 s, so the test fails instead of hanging.
        @Test func aFIFOOpensWithoutWaitingForAWriter() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let path = dir.path + "/fifo"
            try #require(mkfifo(path, 0o600) == 0)
            final class Progress: Sendable {
                let opened = Atomic<Int>(0)
                let writerCame = Atomic<Bool>(false)
            }
            let progress = Progress()
            let helper = Task.detached {
                // After 10 s without both opens, a writer comes every 10 ms (a non-blocking open,
                // which fails while no reader waits): a waiting open ends, and the test fails.
                var ticks = 0
                while progress.opened.load(ordering: .acquiring) < 2 && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(10))
                    ticks += 1
                    guard ticks >= 1000 else { continue }
                    progress.writerCame.store(true, ordering: .releasing)
                    let writer = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
                    if writer >= 0 { close(writer) }
                }
            }
            defer { helper.cancel() }  // (if an open throws, the helper stops too)
            let root = try await File.open(FilePath(dir.path), options: .directory)
            let byPath = try await File.open(FilePath(path))
            progress.opened.add(1, ordering: .releasing)
            let beneath = try await File.open("fifo", beneath: root)
            progress.opened.add(1, ordering: .releasing)
            await helper.value
            let writerCame = progress.writerCame.load(ordering: .acquiring)
            #expect(!writerCame, "opened without a writer")
            for fifo in [byPath, beneath] {
                #expect(fcntl(fifo.descriptor.rawValue, F_GETFL) & O_NONBLOCK == 0, "blocking, as asked")
                try await fifo.close()
            }
            try await root.close()
        }

        @Test func truncateShrinksAndGrowsWithZeros() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            var random = SeededRandom(seed: 21)
            let data = random.bytes(10_000)
            let file = try await File.open(dir.file("t"), .readWrite, options: [.create])
            try await file.write(contentsOf: data, at: 0)

            try await file.truncate(to: 100)
            #expect(try await file.status().size == 100)
            try await file.truncate(to: 8192)
            #expect(try await file.status().size == 8192)
            let back = try await file.read(upTo: 10_000, at: 0)
            #expect(back.count == 8192)
            #expect(Array(back[..<100]) == Array(data[..<100]))
            #expect(back[100...].allSatisfy { $0 == 0 })

            await #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .truncate)) {
                try await file.truncate(to: -1)
            }
            try await file.close()
            let readOnly = try await File.open(dir.file("t"))
            let error = await #expect(throws: IOError.self) { try await readOnly.truncate(to: 0) }
            #expect(error?.operation == .truncate && error?.code == .systemCall)
            try await readOnly.close()
            await #expect(throws: IOError.system(EBADF, .truncate)) { try await closedDescriptor().truncate(to: 0) }
        }

        @Test func allocateReservesPunchesAndZeroes() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let size = 1 << 20
            let file = try await File.open(dir.file("a"), .readWrite, options: [.create])
            defer { Task { try? await file.close() } }

            try await file.allocate(at: 0, count: Int64(size))
            var status = try await file.status()
            #expect(status.size == Int64(size))
            #expect(status.allocatedBlocks >= UInt64(size / 512))

            // Room past the end without growing the file.
            try await file.allocate(at: Int64(size), count: Int64(size), mode: .keepSize)
            status = try await file.status()
            #expect(status.size == Int64(size))
            #expect(status.allocatedBlocks >= UInt64(2 * size / 512))

            var random = SeededRandom(seed: 5)
            let data = random.bytes(size).map { $0 | 1 }  // no zero byte, so zeros below are the hole's
            try await file.write(contentsOf: data, at: 0)
            let before = try await file.status().allocatedBlocks
            let hole = 256 * 1024
            try await file.allocate(at: Int64(hole), count: Int64(hole), mode: .punchHole)
            status = try await file.status()
            #expect(status.size == Int64(size), "a punched hole keeps the size")
            #expect(status.allocatedBlocks <= before - UInt64(hole / 512))
            var back = try await file.read(upTo: size, at: 0)
            #expect(Array(back[..<hole]) == Array(data[..<hole]))
            #expect(back[hole..<(2 * hole)].allSatisfy { $0 == 0 })
            #expect(Array(back[(2 * hole)...]) == Array(data[(2 * hole)...]))

            try await file.allocate(at: 0, count: 4096, mode: .zeroRange)
            back = try await file.read(upTo: 8192, at: 0)
            #expect(back[..<4096].allSatisfy { $0 == 0 })
            #expect(Array(back[4096...]) == Array(data[4096..<8192]))

            for (offset, count) in [(Int64(-1), Int64(1)), (0, 0), (0, -5)] {
                await #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .allocate)) {
                    try await file.allocate(at: offset, count: count)
                }
            }
        }

        @Test func linksAndSymbolicLinksRoundTrip() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let original = dir.file("original")
            let writer = try await File.open(original, .writeOnly, options: [.create])
            try await writer.write(contentsOf: Array("hello".utf8), at: 0)
            try await writer.close()

            let second = dir.file("second")
            try await FileSystem.link(original, at: second)
            let a = try await FileSystem.status(of: original)
            let b = try await FileSystem.status(of: second)
            #expect(a.inode == b.inode && b.linkCount == 2)
            #expect(try await File.readAll(at: second) == Array("hello".utf8))
            await #expect(throws: IOError.system(EEXIST, .link)) { try await FileSystem.link(original, at: second) }
            await #expect(throws: IOError.system(ENOENT, .link)) {
                try await FileSystem.link(dir.file("missing"), at: dir.file("other"))
            }

            let link = dir.file("link")
            try await FileSystem.symlink("original", at: link)
            #expect(try await FileSystem.readLink(at: link) == "original")
            #expect(try await FileSystem.status(of: link, followSymbolicLinks: false).kind == .symbolicLink)
            #expect(try await File.readAll(at: link) == Array("hello".utf8))
            await #expect(throws: IOError.system(EEXIST, .symbolicLink)) {
                try await FileSystem.symlink("elsewhere", at: link)
            }
            // A dangling link is fine, and a long target comes back whole.
            let long = String(repeating: "d/", count: 600) + "target"
            try await FileSystem.symlink(FilePath(long), at: dir.file("dangling"))
            #expect(try await FileSystem.readLink(at: dir.file("dangling")) == FilePath(long))

            await #expect(throws: IOError.system(EINVAL, .readLink)) { _ = try await FileSystem.readLink(at: original) }
            await #expect(throws: IOError.system(ENOENT, .readLink)) {
                _ = try await FileSystem.readLink(at: dir.file("missing"))
            }
        }

        /// A kernel ring without the opcodes (before Linux 6.9 for `FTRUNCATE`, 5.15 for
        /// `LINKAT`/`SYMLINKAT`): the same operations run on the blocking pool, with the same
        /// results, and the counter says so. A cancelled task does not start one.
        @Test func operationsTheKernelLacksRunOnWorkers() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            FaultInjector.pretendLacking(
                // IORING_OP_FALLOCATE 17, IORING_OP_SYMLINKAT 38, IORING_OP_LINKAT 39.
                opcodes: [TruncateOperation.opcode, 17, 38, 39],
                inRingNamed: "old-kernel")
            let ring = try RingExecutor(name: "old-kernel")
            defer { ring.shutdown() }
            let path = dir.file("f")
            let counted = try await Task(executorPreference: ring) {
                let file = try await File.open(path, .readWrite, options: [.create])
                try await file.truncate(to: 4096)
                try await file.allocate(at: 0, count: 8192)
                #expect(try await file.status().size == 8192)
                try await FileSystem.link(path, at: dir.file("g"))
                try await FileSystem.symlink("f", at: dir.file("h"))
                #expect(try await FileSystem.readLink(at: dir.file("h")) == "f")
                let cancelled = Task {
                    withUnsafeCurrentTask { $0?.cancel() }
                    try await file.truncate(to: 0)
                }
                await #expect(throws: IOError(.cancelled, operation: .truncate)) { try await cancelled.value }
                try await file.close()
                return await ring.statistics().operationsOnWorkers
            }.value
            #expect(counted == 4)
            #expect(try await FileSystem.status(of: path).size == 8192, "the cancelled truncate did not run")
            #expect(try await FileSystem.status(of: dir.file("g")).linkCount == 2)
        }
    }
}
