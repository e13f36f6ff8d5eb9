import CLiburing
import Glibc
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    @Suite("Readiness")
    struct ReadinessWaits {
        @Test func aPipeBecomesReadableAfterADelayedWrite() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            let writer = Task {
                try await Task.sleep(for: .milliseconds(50))
                try await pipe.write.write(contentsOf: [1, 2, 3])
            }
            let started = ContinuousClock.now
            let ready = try await Readiness.wait(for: .readable, on: pipe.read.descriptor, timeout: .seconds(10))
            #expect(ready.contains(.readable))
            #expect(ContinuousClock.now - started >= .milliseconds(40), "it waited for the write")
            try await writer.value
            // Waiting read nothing: the bytes are still there for their owner.
            #expect(try await pipe.read.read(upTo: 3) == [1, 2, 3])
            // A pipe's write end has room at once.
            #expect(try await Readiness.wait(for: .writable, on: pipe.write.descriptor).contains(.writable))
            // The reading end reports a hang-up once the writer is gone.
            _ = Glibc.close(pipe.write.descriptor.rawValue)
            let hangUp = try await Readiness.wait(for: .readable, on: pipe.read.descriptor, timeout: .seconds(10))
            #expect(hangUp.contains(.hangUp))
        }

        @Test func aWaitOnANeverReadyDescriptorTimesOut() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            await #expect(throws: IOError(.timedOut, operation: .poll)) {
                _ = try await Readiness.wait(for: .readable, on: pipe.read.descriptor, timeout: .milliseconds(50))
            }
        }

        @Test func aCancelledWaitLeavesNoSlotBehind() async throws {
            let ring = try RingExecutor(name: "readiness-cancel")
            defer { ring.shutdown() }
            let pipe = Pipe()
            defer { pipe.close() }
            let waits = (0..<100).map { _ in
                Task(executorPreference: ring) {
                    try await Readiness.wait(for: .readable, on: pipe.read.descriptor)
                }
            }
            try await Task.sleep(for: .milliseconds(20))
            for wait in waits { wait.cancel() }
            for wait in waits {
                await #expect(throws: IOError(.cancelled, operation: .poll)) { _ = try await wait.value }
            }
            #expect(await ring.statistics().operationsInTable == 0)
        }

        @Test func badInputIsATypedError() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            await #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .poll)) {
                _ = try await Readiness.wait(for: [], on: pipe.read.descriptor)
            }
            await #expect(throws: IOError.system(EBADF, .poll)) {
                _ = try await Readiness.wait(for: .readable, on: closedDescriptor().descriptor, timeout: .seconds(5))
            }
        }

        @Test func anInotifyDescriptorReportsAFileCreation() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let inotify = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
            try #require(inotify >= 0)
            defer { Glibc.close(inotify) }
            #expect(inotify_add_watch(inotify, dir.path, UInt32(IN_CREATE)) >= 0)
            let creator = Task {
                try await Task.sleep(for: .milliseconds(30))
                try await File.open(dir.file("created.txt"), .writeOnly, options: [.create]).close()
            }
            let ready = try await Readiness.wait(
                for: .readable, on: FileDescriptor(rawValue: inotify), timeout: .seconds(10))
            #expect(ready.contains(.readable))
            try await creator.value
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
            defer { raw.deallocate() }
            let count = try await File(descriptor: FileDescriptor(rawValue: inotify)).read(into: raw)
            let event = Array(raw[..<count])
            try #require(count >= 16)
            // struct inotify_event: wd, mask, cookie, len, then the name.
            let mask = event[4..<8].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            #expect(mask & UInt32(IN_CREATE) != 0)
            #expect(String(decoding: event[16...].prefix { $0 != 0 }, as: UTF8.self) == "created.txt")
        }

        /// The escape hatch: entries the library does not wrap, awaited like any operation.
        @Test func customEntriesRunAndUnsafeOnesAreRefused() async throws {
            #expect(try await unsafe Uring.submit(SubmissionEntry(opcode: 0)) == 0)  // IORING_OP_NOP

            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let file = try await File.open(dir.file("data"), .readWrite, options: [.create])
            defer { Task { try? await file.close() } }
            try await file.write(contentsOf: Array("custom read".utf8), at: 0)
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 6, alignment: 1)
            defer { bytes.deallocate() }
            var entry = SubmissionEntry(opcode: 22)  // IORING_OP_READ
            entry.descriptor = file.descriptor.rawValue
            entry.address = UInt64(UInt(bitPattern: bytes.baseAddress))
            entry.length = UInt32(bytes.count)
            entry.offset = 7
            let count = try await unsafe Uring.submit(entry)
            let buffer = Array(bytes)
            #expect(count == 4 && Array(buffer[..<4]) == Array("read".utf8))

            // A poll that never fires, with a deadline: the usual time-out error.
            let pipe = Pipe()
            defer { pipe.close() }
            var poll = SubmissionEntry(opcode: 6)  // IORING_OP_POLL_ADD
            poll.descriptor = pipe.read.descriptor.rawValue
            poll.operationFlags = UInt32(POLLIN)
            await #expect(throws: IOError(.timedOut, operation: .custom)) {
                _ = try await unsafe Uring.submit(poll, timeout: .milliseconds(30))
            }
            // A failing entry carries its errno.
            var badRead = SubmissionEntry(opcode: 22)
            badRead.descriptor = closedDescriptor().descriptor.rawValue
            await #expect(throws: IOError.system(EBADF, .custom)) { _ = try await unsafe Uring.submit(badRead) }

            // Refused before submission: a link flag, a multishot poll, a cancel of other requests.
            var linked = SubmissionEntry(opcode: 0)
            linked.flags = 0x04  // IOSQE_IO_LINK
            var multishot = poll
            multishot.length = 1  // IORING_POLL_ADD_MULTI
            let cancel = SubmissionEntry(opcode: 14)  // IORING_OP_ASYNC_CANCEL
            for entry in [linked, multishot, cancel] {
                let error = await #expect(throws: IOError.self) { _ = try await unsafe Uring.submit(entry) }
                #expect(error?.code == .invalidArgument && error?.operation == .custom)
            }
        }

        /// 1,000 writes to an eventfd by another task: the consumer drains the counter at each
        /// report, and the reads add up to 1,000 (no write lost, whatever the reports' count).
        @Test func theReadinessSequenceSeesEveryWriteToAnEventfd() async throws {
            let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
            try #require(fd >= 0)
            let eventFD = File(descriptor: FileDescriptor(rawValue: fd))
            let writer = Task {
                for index in 0..<1_000 {
                    var one: UInt64 = 1
                    _ = write(fd, &one, 8)
                    if index % 50 == 0 { try await Task.sleep(for: .milliseconds(1)) }
                }
            }
            var total: UInt64 = 0
            var reports = 0
            for try await ready in Readiness.events(.readable, on: eventFD.descriptor) {
                #expect(ready.contains(.readable))
                reports += 1
                var value: UInt64 = 0
                if read(fd, &value, 8) == 8 { total += value }
                if total == 1_000 { break }
            }
            try await writer.value
            #expect(total == 1_000)
            #expect(reports >= 1 && reports <= 1_000)
            // Closing through the runtime ends a sequence that waits.
            let consumer = Task {
                var count = 0
                for try await _ in Readiness.events(.readable, on: eventFD.descriptor) { count += 1 }
                return count
            }
            try await Task.sleep(for: .milliseconds(30))
            try await eventFD.close()
            #expect(try await consumer.value == 0)
        }

        @Test func aReadinessSequenceIsCancelledWithItsTask() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            let consumer = Task {
                for try await _ in Readiness.events(.readable, on: pipe.read.descriptor) {}
            }
            try await Task.sleep(for: .milliseconds(30))
            consumer.cancel()
            await #expect(throws: IOError(.cancelled, operation: .poll)) { try await consumer.value }
            var empty = Readiness.events([], on: pipe.read.descriptor).makeAsyncIterator()
            await #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .poll)) {
                _ = try await empty.next()
            }
        }
    }
}
