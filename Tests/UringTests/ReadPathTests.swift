import CLiburing
import Glibc
import SystemPackage
import Testing

@testable import Uring

/// A file of random bytes written with `write(2)`, flushed and dropped from the page cache
/// (`posix_fadvise(DONTNEED)`), so reads of it must go to the disk.
private struct UncachedFile {
    let path: String
    let data: [UInt8]

    init(in dir: TemporaryDirectory, size: Int, seed: UInt64) {
        var random = SeededRandom(seed: seed)
        data = random.bytes(size)
        path = dir.path + "/uncached"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "open failed")
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        precondition(written == size && fsync(fd) == 0, "write failed")
        close(fd)
        drop()
    }

    /// Drops the file's pages from the page cache again.
    func drop() {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        precondition(fd >= 0)
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        close(fd)
    }

    /// How many of the file's pages in `range` (bytes) are in the page cache (`mincore`).
    func residentPages(in range: Range<Int>) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        precondition(fd >= 0)
        defer { close(fd) }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let map = mmap(nil, data.count, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return -1 }
        defer { munmap(map, data.count) }
        let first = range.lowerBound / page
        let count = (range.upperBound - range.lowerBound + page - 1) / page
        var vector = [UInt8](repeating: 0, count: count)
        guard mincore(map + first * page, count * page, &vector) == 0 else { return -1 }
        return vector.filter { $0 & 1 != 0 }.count
    }
}

extension IntegrationTests {
    /// Issue 14: a read is first tried without waiting (page-cache data, `RWF_NOWAIT`) when
    /// nothing else on the ring could be batched with it; what is not cached goes the
    /// asynchronous way. The ring's counters say which way each read went; both drivers (the
    /// ring here runs the suite's driver).
    @Suite("Read paths")
    struct ReadPaths {
        /// Reads of blocks that are not in the page cache take the asynchronous path and return
        /// the right bytes; the same reads again are answered from the page cache by the awaiting
        /// task itself, with nothing submitted. (A try without waiting still starts the kernel's
        /// read-ahead of the block, and when the device answers before the try looks again, the
        /// try succeeds: so the test reads 16 blocks 1 MiB apart, checks that the counters add
        /// up read by read, and drops the file and reads again, up to 8 rounds, until one round
        /// has gone the asynchronous way. A fast disk on a busy host once served all 16 tries.)
        @Test func uncachedReadsGoTheAsynchronousWayThenCachedOnesDoNot() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let file = UncachedFile(in: dir, size: 16 << 20, seed: 14)
            let blocks = (0..<16).map { i in (i << 20) + (512 << 10) }
            let ring = try RingExecutor(name: "read-path")
            defer { ring.shutdown() }
            let opened = try await Task(executorPreference: ring) { try await File.open(FilePath(file.path)) }.value

            func readAll() async throws -> (RingStatistics, RingStatistics) {
                let before = await ring.statistics()
                for at in blocks {
                    let bytes = try await Task(executorPreference: ring) {
                        try await opened.read(upTo: 4096, at: Int64(at))
                    }.value
                    #expect(bytes == Array(file.data[at..<at + 4096]), "block at \(at)")
                }
                return (before, await ring.statistics())
            }

            var waited: UInt64 = 0
            var rounds = 0
            while waited == 0 && rounds < 8 {
                rounds += 1
                file.drop()
                for at in blocks { #expect(file.residentPages(in: at..<at + 4096) == 0, "block \(at) starts uncached") }
                let (before, after) = try await readAll()
                waited = after.readsThatWouldBlock - before.readsThatWouldBlock
                #expect(waited + after.readsWithoutWaiting - before.readsWithoutWaiting == 16, "every read was tried")
                switch ring.backend {
                case .epoll:
                    // Queued, the epoll driver tries `RWF_NOWAIT` once more before the pool: the
                    // read-ahead that the first try started may have brought the block in by then.
                    let pooled = after.epoll.ranOnPool - before.epoll.ranOnPool
                    let inline = after.epoll.completedInline - before.epoll.completedInline
                    #expect(pooled + inline == waited, "\(pooled) on the worker pool, \(inline) at the second try")
                case .ioUring: #expect(after.submitted - before.submitted == waited, "submitted to the kernel ring")
                }
            }
            #expect(waited >= 1, "no uncached block went the asynchronous way in \(rounds) rounds of 16")
            for at in blocks { #expect(file.residentPages(in: at..<at + 4096) == 1, "block \(at) is cached now") }

            let (beforeAgain, afterAgain) = try await readAll()
            #expect(afterAgain.readsWithoutWaiting - beforeAgain.readsWithoutWaiting == 16, "answered at once")
            #expect(afterAgain.readsThatWouldBlock == beforeAgain.readsThatWouldBlock)
            #expect(afterAgain.submitted == beforeAgain.submitted, "nothing submitted")
            try await Task(executorPreference: ring) { try await opened.close() }.value
        }

        /// A descriptor opened with `O_DIRECT` is never read on the ring's thread (its
        /// `RWF_NOWAIT` reads still wait for the device): its reads go the asynchronous way.
        @Test func directIOReadsAreNeverTriedOnTheRing() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let file = UncachedFile(in: dir, size: 1 << 20, seed: 16)
            #if arch(x86_64)
            let directFlag: Int32 = 0o40000
            #else
            let directFlag: Int32 = 0o200000
            #endif
            let fd = open(file.path, O_RDONLY | O_CLOEXEC | directFlag)
            try #require(fd >= 0, "O_DIRECT open failed (errno \(errno)); the test needs a disk file system")
            let direct = File(descriptor: FileDescriptor(rawValue: fd))
            let ring = try RingExecutor(name: "read-direct")
            defer { ring.shutdown() }
            let data = file.data
            let before = await ring.statistics()
            let matched = try await Task(executorPreference: ring) { () async throws -> Int in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                defer { buffer.deallocate() }
                var matched = 0
                for i in 0..<4 {
                    let n = try await direct.read(into: buffer, at: Int64(i * 65536))
                    if n == 4096 && buffer.elementsEqual(data[i * 65536..<i * 65536 + 4096]) { matched += 1 }
                }
                return matched
            }.value
            #expect(matched == 4, "the right bytes")
            let after = await ring.statistics()
            #expect(after.readsWithoutWaiting == before.readsWithoutWaiting, "never tried on the ring")
            #expect(after.readsThatWouldBlock == before.readsThatWouldBlock)
            switch ring.backend {
            case .epoll: #expect(after.epoll.ranOnPool - before.epoll.ranOnPool == 4, "on the worker pool")
            case .ioUring: #expect(after.submitted - before.submitted == 4, "submitted to the kernel ring")
            }
            try await Task(executorPreference: ring) { try await direct.close() }.value
        }

        /// The status of an open file on a local file system is made on the ring's thread, even
        /// while other tasks are ready there (no submission, no worker); a pipe's (pipefs is not
        /// on the list of local file systems) goes the asynchronous way. Both give the right
        /// answer.
        @Test func statusesOfOpenFilesAreMadeOnTheRingThread() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let path = dir.path + "/status"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            try #require(fd >= 0)
            try #require(ftruncate(fd, 12345) == 0)
            var pipeEnds: [Int32] = [0, 0]
            try #require(pipe(&pipeEnds) == 0)
            defer { close(pipeEnds[1]) }
            let file = File(descriptor: FileDescriptor(rawValue: fd))
            let pipeRead = File(descriptor: FileDescriptor(rawValue: pipeEnds[0]))
            let ring = try RingExecutor(name: "status-direct")
            defer { ring.shutdown() }
            let before = await ring.statistics()
            let (sizes, pipeKind) = try await Task(executorPreference: ring) {
                () async throws -> ([Int64], FileStatus.Kind) in
                // Busy: other tasks are ready on the ring while the statuses are made.
                try await withThrowingTaskGroup(of: Int64.self) { group in
                    for _ in 0..<8 {
                        group.addTask {
                            await Task.yield()
                            return try await file.status().size
                        }
                    }
                    var sizes: [Int64] = []
                    for try await size in group { sizes.append(size) }
                    return (sizes, try await pipeRead.status().kind)
                }
            }.value
            #expect(sizes == Array(repeating: 12345, count: 8), "the right size every time")
            #expect(pipeKind == .fifo)
            let after = await ring.statistics()
            // (On a file system the runtime does not know as local, e.g. NFS, they go the
            // asynchronous way too.)
            #expect(
                after.statusesWithoutWaiting - before.statusesWithoutWaiting == (Self.isLocal(dir.path) ? 8 : 0),
                "the file's, on the ring's thread")
            #expect(
                after.submitted - before.submitted + after.epoll.ranOnPool - before.epoll.ranOnPool >= 1,
                "the pipe's, the asynchronous way")
            try await Task(executorPreference: ring) { try await file.close() }.value
            close(pipeEnds[0])
        }

        /// On a busy ring (other tasks ready, reads queued in this turn) a large read of cached
        /// data is still made at once by the awaiting task (its copy dwarfs a system call of its
        /// own, and the bytes land warm in the buffer the caller uses next), while small reads
        /// wait to be submitted together. Every read returns the right bytes.
        @Test func largeReadsAreMadeAtOnceEvenOnABusyRing() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            var random = SeededRandom(seed: 32)
            let data = random.bytes(1 << 20)
            let path = dir.path + "/cached"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            try #require(fd >= 0)
            try #require(data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == data.count)
            let file = File(descriptor: FileDescriptor(rawValue: fd))
            let ring = try RingExecutor(name: "large-reads")
            defer { ring.shutdown() }
            // 8 tasks that become ready together, each reading `size` bytes at its own offset.
            func readTogether(size: Int) async throws -> (tried: UInt64, right: Bool) {
                let before = await ring.statistics()
                let right = try await Task(executorPreference: ring) { () async throws -> Bool in
                    try await withThrowingTaskGroup(of: Bool.self) { group in
                        for index in 0..<8 {
                            group.addTask {
                                await Task.yield()
                                let offset = index * 100_000
                                let bytes = try await file.read(upTo: size, at: Int64(offset))
                                return bytes[...] == data[offset..<offset + size]
                            }
                        }
                        var all = true
                        for try await right in group { all = all && right }
                        return all
                    }
                }.value
                let after = await ring.statistics()
                return (after.readsWithoutWaiting - before.readsWithoutWaiting, right)
            }
            let large = try await readTogether(size: Int(ReadOperation.largeRead))
            #expect(large.right, "the right bytes")
            #expect(large.tried == 8, "each large read made at once, busy or not")
            let small = try await readTogether(size: 4096)
            #expect(small.right, "the right bytes")
            #expect(small.tried <= 1, "small reads on a busy ring wait for the batch")
            try await Task(executorPreference: ring) { try await file.close() }.value
        }

        /// Files opened beneath a directory take the directory's file system: 16 files opened
        /// there, asked for their status and read cost one `fstatfs` (the directory's, on its
        /// first use) and no `fcntl` (their flags are known), not one of each per file; their
        /// statuses are still right and made the way the file system allows. A path that climbs out is still refused (`EXDEV`), and a subdirectory
        /// works as well.
        @Test func filesOpenedBeneathADirectoryShareItsFileSystemCheck() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            #expect(mkdir(dir.path + "/sub", 0o700) == 0)
            for index in 0..<16 {
                let path = dir.path + (index % 2 == 0 ? "/f\(index)" : "/sub/f\(index)")
                let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
                try #require(fd >= 0)
                try #require(ftruncate(fd, off_t(100 + index)) == 0)
                close(fd)
            }
            let ring = try RingExecutor(name: "beneath-fs")
            defer { ring.shutdown() }
            let local = Self.isLocal(dir.path)
            let (sizes, escape, checks, withoutWaiting) = try await Task(executorPreference: ring) {
                () async throws -> ([Int64], IOError?, UInt64, UInt64) in
                let root = try await File.open(FilePath(dir.path), options: .directory)
                let before = await ring.statistics()
                var sizes: [Int64] = []
                for index in 0..<16 {
                    let name = index % 2 == 0 ? "f\(index)" : "sub/f\(index)"
                    let file = try await File.open(FilePath(name), beneath: root)
                    sizes.append(try await file.status().size)
                    #expect(try await file.read(upTo: 1, at: 0) == [0])
                    try await file.close()
                }
                var escape: IOError?
                do throws(IOError) {
                    let outside = try await File.open("../", beneath: root)
                    try await outside.close()
                } catch {
                    escape = error
                }
                let after = await ring.statistics()
                try await root.close()
                return (
                    sizes, escape, after.descriptorChecks - before.descriptorChecks,
                    after.statusesWithoutWaiting - before.statusesWithoutWaiting
                )
            }.value
            #expect(sizes == (0..<16).map { Int64(100 + $0) }, "each file's own size")
            #expect(escape?.errno == .improperLink, "a path out of the directory is refused")
            #expect(checks == 1, "one fstatfs for the directory, nothing per file")
            #expect(withoutWaiting == (local ? 16 : 0), "statuses on the ring's thread where the file system allows")
        }

        /// A path beneath a directory that crosses a mount point (`/` to `/proc`) still opens (the
        /// first attempt, confined to the directory's mount, says `EXDEV`; the second is not), and
        /// the file is known by its own file system, not the directory's (one `fstatfs` for its
        /// status; its read needs no `fcntl`).
        @Test func aPathAcrossAMountPointStillOpensBeneathItsDirectory() async throws {
            let ring = try RingExecutor(name: "beneath-mount")
            defer { ring.shutdown() }
            let (text, checks) = try await Task(executorPreference: ring) { () async throws -> (String, UInt64) in
                let root = try await File.open("/", options: .directory)
                let before = await ring.statistics()
                let file = try await File.open("proc/version", beneath: root)
                _ = try await file.status()
                let bytes = try await file.read(upTo: 256, at: 0)
                try await file.close()
                let after = await ring.statistics()
                try await root.close()
                return (String(decoding: bytes, as: UTF8.self), after.descriptorChecks - before.descriptorChecks)
            }.value
            #expect(text.hasPrefix("Linux"), "the file's own bytes")
            #expect(checks == 1, "its own file system checked, once")
        }

        /// Whether `path` is on a file system the runtime treats as local (its own check).
        static func isLocal(_ path: String) -> Bool {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return cliburing_is_local_file_system(fd) == 1
        }

        /// Cancellation and deadlines on the asynchronous path: 64 reads of uncached blocks,
        /// cancelled at once, and 64 more with a deadline of a microsecond. Each ends with the
        /// right bytes or with `cancelled` / `timedOut` (never wrong data), and nothing is left in
        /// the ring.
        @Test func cancelledAndTimedOutUncachedReadsLeaveNothingBehind() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let file = UncachedFile(in: dir, size: 8 << 20, seed: 15)
            let ring = try RingExecutor(name: "read-cancel")
            defer { ring.shutdown() }
            let opened = try await Task(executorPreference: ring) { try await File.open(FilePath(file.path)) }.value
            let data = file.data
            for round in 0..<2 {
                file.drop()
                let outcomes = await Task(executorPreference: ring) { () async -> [String] in
                    await withTaskGroup(of: String.self) { group in
                        for i in 0..<64 {
                            group.addTask(executorPreference: ring) {
                                let at = i * 128 << 10
                                do throws(IOError) {
                                    let bytes =
                                        round == 0
                                        ? try await opened.read(upTo: 4096, at: Int64(at))
                                        : try await opened.read(upTo: 4096, at: Int64(at), timeout: .microseconds(1))
                                    return bytes == Array(data[at..<at + 4096]) ? "read" : "wrong bytes at \(at)"
                                } catch {
                                    return error.code == .cancelled
                                        ? "cancelled" : error.code == .timedOut ? "timedOut" : "\(error)"
                                }
                            }
                        }
                        if round == 0 { group.cancelAll() }
                        var outcomes: [String] = []
                        for await outcome in group { outcomes.append(outcome) }
                        return outcomes
                    }
                }.value
                let allowed: Set<String> = round == 0 ? ["read", "cancelled"] : ["read", "timedOut"]
                #expect(outcomes.count == 64)
                #expect(outcomes.allSatisfy { allowed.contains($0) }, "\(Set(outcomes))")
                let stats = await ring.statistics()
                #expect(stats.operationsInTable == 0)
                #expect(stats.epoll.requestsHeld == 0)
            }
            try await Task(executorPreference: ring) { try await opened.close() }.value
        }
    }
}
