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
        /// A read of a block that is not in the page cache takes the asynchronous path and
        /// returns the right bytes; the same read again is answered from the page cache by the
        /// awaiting task itself.
        @Test func anUncachedReadGoesTheAsynchronousWayThenACachedOneDoesNot() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let file = UncachedFile(in: dir, size: 4 << 20, seed: 14)
            let block = (2 << 20)..<(2 << 20) + 4096
            #expect(file.residentPages(in: block) == 0, "the block must start out of the page cache")
            let ring = try RingExecutor(name: "read-path")
            defer { ring.shutdown() }
            let opened = try await Task(executorPreference: ring) { try await File.open(FilePath(file.path)) }.value

            let before = await ring.statistics()
            let first = try await Task(executorPreference: ring) {
                try await opened.read(upTo: 4096, at: Int64(block.lowerBound))
            }.value
            let afterFirst = await ring.statistics()
            #expect(first == Array(file.data[block]))
            #expect(afterFirst.readsThatWouldBlock - before.readsThatWouldBlock == 1, "tried, not cached")
            #expect(afterFirst.readsWithoutWaiting == before.readsWithoutWaiting)
            switch ring.backend {
            case .epoll: #expect(afterFirst.epoll.ranOnPool - before.epoll.ranOnPool == 1, "read on the worker pool")
            case .ioUring: #expect(afterFirst.submitted - before.submitted == 1, "read submitted to the kernel ring")
            }
            #expect(file.residentPages(in: block) == 1, "the read brought the block into the page cache")

            let second = try await Task(executorPreference: ring) {
                try await opened.read(upTo: 4096, at: Int64(block.lowerBound))
            }.value
            let afterSecond = await ring.statistics()
            #expect(second == first)
            #expect(afterSecond.readsWithoutWaiting - afterFirst.readsWithoutWaiting == 1, "answered at once")
            #expect(afterSecond.readsThatWouldBlock == afterFirst.readsThatWouldBlock)
            #expect(afterSecond.submitted == afterFirst.submitted, "nothing submitted for it")
            try await Task(executorPreference: ring) { try await opened.close() }.value
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
