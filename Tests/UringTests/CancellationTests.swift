import Glibc
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    @Suite("Cancellation and deadlines")
    struct Cancellation {
        /// 10,000 reads on empty pipes, cancelled: each throws the cancellation error, the ring keeps
        /// working, no descriptor leaks, no operation is left in the table.
        @Test func tenThousandPipeReadsCancelled() async throws {
            let fdsBefore = openDescriptorCount()
            let ring = try RingExecutor(entries: 256, name: "cancel-test")
            defer { ring.shutdown() }
            let pipes = (0..<100).map { _ in Pipe() }
            let readers = 10_000

            let errors = try await withThrowingTaskGroup(of: IOError?.self) { group in
                for i in 0..<readers {
                    let pipe = pipes[i % pipes.count]
                    group.addTask(executorPreference: ring) {
                        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
                        defer { buffer.deallocate() }
                        do throws(IOError) {
                            _ = try await pipe.read.read(into: buffer)
                            return nil
                        } catch {
                            return error
                        }
                    }
                }
                // Wait until every read holds a slot (256 in the kernel, the rest queued), then cancel.
                let allWaiting = await eventually { await ring.statistics().operationsInTable == readers }
                #expect(allWaiting)
                group.cancelAll()
                var collected: [IOError?] = []
                for try await result in group { collected.append(result) }
                return collected
            }
            #expect(errors.count == readers)
            #expect(errors.allSatisfy { $0?.code == .cancelled && $0?.operation == .read })

            // The ring still works: a pipe with data is read normally.
            let pipe = pipes[0]
            let message: [UInt8] = Array("still alive".utf8)
            let echoed = try await Task(executorPreference: ring) {
                try await pipe.write.write(contentsOf: message, at: 0).self
                return try await pipe.read.read(upTo: message.count, at: 0)
            }.value
            #expect(echoed == message)

            let stats = await ring.statistics()
            #expect(stats.operationsInTable == 0)
            #expect(stats.strayCompletions == 0)
            for pipe in pipes { pipe.close() }
            ring.shutdown()
            #expect(openDescriptorCount() == fdsBefore)
        }

        /// A deadline of 50 ms on a read that never becomes ready throws the time-out error, and the
        /// ring keeps working.
        @Test func deadlineOnAReadThatNeverCompletes() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
            defer { buffer.deallocate() }
            let clock = ContinuousClock()
            let started = clock.now
            await #expect(throws: IOError(.timedOut, operation: .read)) {
                _ = try await pipe.read.read(into: buffer, timeout: .milliseconds(50))
            }
            #expect(clock.now - started >= .milliseconds(45))
            // Still working: data that is there arrives well within its deadline.
            try await pipe.write.write(contentsOf: Array("ok".utf8), at: 0)
            let n = try await pipe.read.read(into: buffer, timeout: .seconds(5))
            #expect(n == 2)
            let stats = await (try RingExecutor.shared()).statistics()
            #expect(stats.operationsInTable == 0)
        }

        /// Data that arrives before the deadline is returned, not turned into a time-out.
        @Test func readyDataBeatsTheDeadline() async throws {
            let pipe = Pipe()
            defer { pipe.close() }
            try await pipe.write.write(contentsOf: [1, 2, 3], at: 0)
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 3, alignment: 1)
            defer { bytes.deallocate() }
            let n = try await pipe.read.read(into: bytes, timeout: .milliseconds(1))
            #expect(n == 3)
            #expect(Array(bytes) == [1, 2, 3])
        }

        /// A task that is already cancelled never submits: it throws at once.
        @Test func alreadyCancelledTaskThrowsWithoutSubmitting() async throws {
            let ring = try RingExecutor.shared()
            let before = await ring.statistics().submitted
            let task = Task(executorPreference: ring) { () async throws -> Void in
                withUnsafeCurrentTask { $0?.cancel() }
                try await Uring.nop()
            }
            await #expect(throws: IOError(.cancelled, operation: .nop)) { try await task.value }
            #expect(await ring.statistics().submitted == before)
        }

        /// Cancelling a sleep ends it early with the cancellation error.
        @Test func sleepIsCancellable() async throws {
            let task = Task { try await Uring.sleep(for: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(20))
            task.cancel()
            await #expect(throws: IOError(.cancelled, operation: .sleep)) { try await task.value }
        }

        @Test func sleepSleeps() async throws {
            let clock = ContinuousClock()
            let started = clock.now
            try await Uring.sleep(for: .milliseconds(30))
            #expect(clock.now - started >= .milliseconds(29))
        }

        /// A task that goes on submitting while its ring shuts down gets a clear error, not a hang.
        @Test func operationsAfterShutdownBeganFail() async throws {
            let ring = try RingExecutor(entries: 8, name: "late-test")
            let pipe = Pipe()
            defer { pipe.close() }
            let task = Task(executorPreference: ring) { () async -> IOError? in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
                defer { buffer.deallocate() }
                _ = try? await pipe.read.read(into: buffer)  // cancelled by the shutdown
                do throws(IOError) {
                    try await Uring.nop()
                    return nil
                } catch {
                    return error
                }
            }
            #expect(await eventually { await ring.statistics().operationsInTable == 1 })
            ring.shutdown()
            #expect(await task.value == IOError(.executorShutdown, operation: .nop))
        }

        /// Shutting a ring down with reads in flight resumes every task: those in the kernel with
        /// the cancellation error, those still waiting for ring capacity (40 reads, 16 entries)
        /// with the shutdown error, since they never reached the kernel.
        @Test func shutdownCancelsWhatIsInFlight() async throws {
            let fdsBefore = openDescriptorCount()
            let ring = try RingExecutor(entries: 16, name: "shutdown-test")
            let pipe = Pipe()
            let tasks = (0..<40).map { _ in
                Task(executorPreference: ring) { () async throws -> Int in
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
                    defer { buffer.deallocate() }
                    return try await pipe.read.read(into: buffer)
                }
            }
            #expect(await eventually { await ring.statistics().operationsInTable == 40 })
            ring.shutdown()
            for task in tasks {
                do {
                    _ = try await task.value
                    Issue.record("a read on an empty pipe returned")
                } catch let error as IOError {
                    #expect(
                        error == IOError(.cancelled, operation: .read)
                            || error == IOError(.executorShutdown, operation: .read), "\(error)")
                }
            }

            pipe.close()
            #expect(openDescriptorCount() == fdsBefore)
        }

        /// Cleanup code often runs in a cancelled task: a close there must still close (before,
        /// the operation was skipped as cancelled and the descriptor leaked; the leak checker of
        /// the integration suite found it).
        @Test func closeInACancelledTaskStillCloses() async throws {
            let ring = try RingExecutor(name: "close-cancelled")
            defer { ring.shutdown() }
            for onRing in [true, false] {
                let pipe = Pipe()
                let readFD = pipe.read.descriptor.rawValue
                let body: @Sendable () async throws -> Void = {
                    withUnsafeCurrentTask { $0?.cancel() }
                    #expect(Task.isCancelled)
                    try await pipe.read.close()
                }
                if onRing {
                    try await Task(executorPreference: ring, operation: body).value
                } else {
                    try await Task.detached(operation: body).value
                }
                #expect(fcntl(readFD, F_GETFD) == -1, "the descriptor is still open (on ring: \(onRing))")
                _ = Glibc.close(pipe.write.descriptor.rawValue)
            }
        }
    }
}
