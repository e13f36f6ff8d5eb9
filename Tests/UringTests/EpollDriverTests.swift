import Glibc
import Synchronization
import Testing

@testable import Uring

extension IntegrationTests {
    /// The epoll driver's own guarantees, on a ring that asks for it (so they run in both CI
    /// passes): cancellation leaves nothing behind, a started pool job is waited for, a deadline
    /// ends a read that never becomes ready. Everything else runs on it through the whole suite
    /// (`SWIFT_URING_BACKEND=epoll swift test`).
    @Suite("The epoll driver")
    struct EpollDriver {
        /// 10,000 reads of an empty pipe, each waiting in epoll, cancelled: every one throws
        /// `cancelled`, and no slot, request or descriptor is left.
        @Test func tenThousandCancelledPipeReadsLeaveNothingBehind() async throws {
            let ring = try RingExecutor(name: "epoll-cancel", backend: .epoll)
            defer { ring.shutdown() }
            #expect(ring.backend == .epoll)
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let reader = File(descriptor: FileDescriptor(rawValue: fds[0]))
            let cancelled = try await Task(executorPreference: ring) { () async throws -> Int in
                var cancelled = 0
                for _ in 0..<100 {
                    cancelled += try await withThrowingTaskGroup(of: Bool.self) { group in
                        for _ in 0..<100 {
                            group.addTask(executorPreference: ring) {
                                do throws(IOError) {
                                    _ = try await reader.read(upTo: 16)
                                    return false
                                } catch {
                                    return error.code == .cancelled
                                }
                            }
                        }
                        try await Uring.sleep(for: .milliseconds(1))  // they wait in epoll now
                        group.cancelAll()
                        var count = 0
                        for try await ok in group where ok { count += 1 }
                        return count
                    }
                }
                return cancelled
            }.value
            #expect(cancelled == 10_000)
            let stats = await ring.statistics()
            #expect(stats.operationsInTable == 0)
            #expect(stats.epoll.requestsHeld == 0)
            #expect(stats.epoll.waitedForReadiness >= 10_000)
            try await Task(executorPreference: ring) { try await reader.close() }.value
            close(fds[1])
        }

        /// Opens whose path is in the kernel's lookup cache are made on the ring's thread (with
        /// `RESOLVE_CACHED`), as the kernel ring makes them, not on the worker pool: 8 opens by
        /// path and 8 beneath a directory, each read and closed, and 4 opens of a directory, and
        /// nothing runs on the pool; a
        /// creating open still goes there. The files' bytes are right, and a path that does not
        /// exist or leaves the directory fails as before.
        @Test func cachedOpensAreMadeOnTheRingThread() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let path = dir.path + "/cached"
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            try #require(fd >= 0)
            try #require(write(fd, "cached", 6) == 6)
            close(fd)
            let ring = try RingExecutor(name: "epoll-open", backend: .epoll)
            defer { ring.shutdown() }
            let (contents, missing, escape, pooled, created) = try await Task(executorPreference: ring) {
                () async throws -> ([String], IOError?, IOError?, UInt64, UInt64) in
                let root = try await File.open(FilePath(dir.path), options: .directory)
                let before = await ring.statistics().epoll.ranOnPool
                var contents: [String] = []
                for index in 0..<16 {
                    let file =
                        index % 2 == 0
                        ? try await File.open(FilePath(path)) : try await File.open("cached", beneath: root)
                    contents.append(String(decoding: try await file.read(upTo: 64, at: 0), as: UTF8.self))
                    try await file.close()
                }
                for _ in 0..<4 {  // directories too (`O_DIRECTORY` is a bit of `O_TMPFILE`, not one)
                    let directory = try await File.open(FilePath(dir.path), options: .directory)
                    try await directory.close()
                }
                let pooled = await ring.statistics().epoll.ranOnPool - before
                // (A name never looked up is not in the lookup cache: these may take the pool.)
                var missing: IOError?
                do throws(IOError) { _ = try await File.open(FilePath(dir.path + "/absent")) } catch { missing = error }
                var escape: IOError?
                do throws(IOError) { _ = try await File.open("../", beneath: root) } catch { escape = error }
                let beforeCreate = await ring.statistics().epoll.ranOnPool
                let made = try await File.open(FilePath(dir.path + "/made"), .writeOnly, options: .create)
                try await made.close()
                let created = await ring.statistics().epoll.ranOnPool - beforeCreate
                try await root.close()
                return (contents, missing, escape, pooled, created)
            }.value
            #expect(contents == Array(repeating: "cached", count: 16))
            #expect(missing?.errno == .noSuchFileOrDirectory)
            #expect(escape?.errno == .improperLink)
            #expect(pooled == 0, "cached opens, reads and closes: nothing on the pool")
            #expect(created == 1, "a creating open on the pool")
        }

        /// The driver chosen in code, for a whole group: every ring runs it, and says so.
        @Test func aGroupAskedForEpollRunsOnIt() async throws {
            let group = try RingGroup(count: 2, name: "epoll-group", backend: .epoll)
            defer { group.shutdown() }
            for index in 0..<group.count {
                #expect(group[index].backend == .epoll)
                try await Task(executorPreference: group[index]) { try await Uring.nop() }.value
            }
            #expect(await group.statistics().allSatisfy { $0.backend == .epoll && $0.epoll.completedInline > 0 })
        }

        /// A read of a pipe that never becomes ready, with a deadline: `timedOut`.
        @Test func aDeadlineEndsAReadThatNeverBecomesReady() async throws {
            let ring = try RingExecutor(name: "epoll-deadline", backend: .epoll)
            defer { ring.shutdown() }
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let reader = File(descriptor: FileDescriptor(rawValue: fds[0]))
            let code = await Task(executorPreference: ring) { () async -> IOError.Code? in
                do throws(IOError) {
                    _ = try await reader.read(upTo: 16, timeout: .milliseconds(20))
                    return nil
                } catch {
                    return error.code
                }
            }.value
            #expect(code == .timedOut)
            #expect(await ring.statistics().epoll.requestsHeld == 0)
            try await Task(executorPreference: ring) { try await reader.close() }.value
            close(fds[1])
        }

        /// A worker-pool job that has started cannot be interrupted: cancelling its task makes
        /// the task wait for the worker, and the result it completed with is returned (a
        /// descriptor is never dropped). The job here is a creating open(2) of an existing FIFO
        /// (a creating open always runs on the pool; `O_CREAT` opens the FIFO that is there), which
        /// blocks in the worker until a writer opens it. If the cancel came while the job was
        /// still queued, the job never runs.
        @Test func aStartedPoolJobIsWaitedFor() async throws {
            let ring = try RingExecutor(name: "epoll-pool-cancel", backend: .epoll)
            defer { ring.shutdown() }
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let fifo = dir.path + "/fifo"
            #expect(mkfifo(fifo, 0o600) == 0)
            let returned = Atomic<Bool>(false)
            let task = Task(executorPreference: ring) { () async -> Result<File, IOError> in
                defer { returned.store(true, ordering: .releasing) }
                do throws(IOError) {
                    return .success(try await File.open(FilePath(fifo), .readOnly, options: .create))
                } catch {
                    return .failure(error)
                }
            }
            try await Task.sleep(for: .milliseconds(100))  // a worker is in open(2) by now, unless all are busy
            task.cancel()
            try await Task.sleep(for: .milliseconds(100))
            if returned.load(ordering: .acquiring) {
                // The cancel found the job queued: it was cancelled, and never opened the FIFO.
                guard case .failure(let error) = await task.value else {
                    Issue.record("a queued job was cancelled, yet its open succeeded")
                    return
                }
                #expect(error.code == .cancelled)
                let writer = open(fifo, O_WRONLY | O_NONBLOCK)
                #expect(writer == -1 && errno == ENXIO, "nobody has the FIFO open for reading")
            } else {
                // A worker is inside open(2): the task waits for it. A writer unblocks the open.
                let writer = open(fifo, O_WRONLY | O_NONBLOCK)
                #expect(writer >= 0)
                switch await task.value {
                case .success(let file):
                    try await Task(executorPreference: ring) { try await file.close() }.value
                case .failure(let error):
                    Issue.record("the open completed in the worker but the task got \(error)")
                }
                close(writer)
            }
            #expect(await ring.statistics().epoll.requestsHeld == 0)
        }

        /// A receive that exactly fills its buffer cannot tell from its count whether more is
        /// queued: the next receive of that socket asks `TCP_INQ`, so that 200 round trips of
        /// 4 KiB messages into 4 KiB receives do not each make a receive that only says `EAGAIN`.
        /// Messages with room to spare (64 bytes into 1 KiB) say "drained" by coming back short.
        /// Every byte arrives in order either way.
        @Test(arguments: [(64, 1024), (4096, 4096)])
        func receivesThatFillTheirBufferDoNotEachTryAgain(size: Int, bufferSize: Int) async throws {
            let ring = try RingExecutor(name: "epoll-inq", backend: .epoll)
            defer { ring.shutdown() }
            let (client, server) = try await Task(executorPreference: ring) { try await connectedPair() }.value
            @Sendable func message(from connection: TCPConnection) async throws(IOError) -> [UInt8] {
                var bytes: [UInt8] = []
                while bytes.count < size {
                    let chunk = try await connection.receive(upTo: bufferSize, timeout: .seconds(5))
                    if chunk.isEmpty { break }
                    bytes += chunk
                }
                return bytes
            }
            let before = await ring.statistics().epoll
            let echoed = try await Task(executorPreference: ring) { () async throws -> Int in
                async let served: Void = {
                    for _ in 0..<200 { try await server.write(contentsOf: try await message(from: server)) }
                }()
                var echoed = 0
                for round in 0..<200 {
                    let sent = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ round) }
                    try await client.write(contentsOf: sent)
                    if try await message(from: client) == sent { echoed += 1 }
                }
                try await served
                return echoed
            }.value
            #expect(echoed == 200)
            let after = await ring.statistics().epoll
            let wasted = after.receivesThatWouldBlock - before.receivesThatWouldBlock
            #expect(
                wasted <= 20, "\(wasted) of 400 receives of \(size)-byte messages into \(bufferSize) bytes said EAGAIN")
            try await Task(executorPreference: ring) {
                try await client.close()
                try await server.close()
            }.value
        }

        /// A connection waited on again and again keeps one registration: 200 round trips in
        /// which each receive waits cost a handful of `epoll_ctl` calls, not one per wait. After both ends are closed (through the
        /// runtime, on the other ring of a group) new connections, which get the same numbers,
        /// are served at once on the ring that had the old ones registered.
        @Test func aConnectionWaitedOnAgainAndAgainKeepsOneRegistration() async throws {
            let group = try RingGroup(count: 2, name: "epoll-reg", backend: .epoll)
            defer { group.shutdown() }
            let ring = group[0]
            for pairNumber in 0..<3 {
                let (client, server, numbers) = try await Task(executorPreference: ring) {
                    let (client, server) = try await connectedPair()
                    return (client, server, [client.descriptor.rawValue, server.descriptor.rawValue])
                }.value
                let before = await ring.statistics().epoll
                let echoed = try await Task(executorPreference: ring) { () async throws -> Int in
                    async let served: Void = {
                        for _ in 0..<200 {
                            let message = try await server.receive(upTo: 16, timeout: .seconds(5))
                            try await server.write(contentsOf: message)
                        }
                    }()
                    var echoed = 0
                    for round in 0..<200 {
                        try await client.write(contentsOf: [UInt8(truncatingIfNeeded: round)])
                        let reply = try await client.receive(upTo: 16, timeout: .seconds(5))
                        if reply == [UInt8(truncatingIfNeeded: round)] { echoed += 1 }
                    }
                    try await served
                    return echoed
                }.value
                #expect(echoed == 200, "pair \(pairNumber) (descriptors \(numbers))")
                let after = await ring.statistics().epoll
                #expect(after.waitedForReadiness - before.waitedForReadiness >= 200, "receives that waited")
                #expect(
                    after.registrationChanges - before.registrationChanges <= 8,
                    "\(after.registrationChanges - before.registrationChanges) epoll_ctl calls")
                // Closed from the other ring: this ring must drop both registrations before the
                // numbers come back for the next pair.
                try await Task(executorPreference: group[1]) {
                    try await client.close()
                    try await server.close()
                }.value
            }
            #expect(await ring.statistics().epoll.requestsHeld == 0)
        }
    }
}
