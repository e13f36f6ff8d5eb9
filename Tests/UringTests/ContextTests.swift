import Glibc
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    /// The same API from the main actor, a detached task, a task on a ring, and an actor on a ring.
    @Suite("Calling contexts")
    struct Contexts {
        static let expected = Array("hello from the ring\n".utf8)

        static func makeFile() async throws -> (TemporaryDirectory, FilePath) {
            let dir = TemporaryDirectory()
            let path = dir.file("hello")
            let file = try await File.open(path, .writeOnly, options: [.create, .truncate])
            try await file.write(contentsOf: expected, at: 0)
            try await file.close()
            return (dir, path)
        }

        @MainActor
        @Test func fromTheMainActor() async throws {
            let (dir, path) = try await Self.makeFile()
            defer { dir.cleanup() }
            let bytes = try await File.readAll(at: path)
            MainActor.assertIsolated()  // and we are back on the main actor afterwards
            #expect(bytes == Self.expected)
        }

        @Test func fromADetachedTask() async throws {
            let (dir, path) = try await Self.makeFile()
            defer { dir.cleanup() }
            let bytes = try await Task.detached { try await File.readAll(at: path) }.value
            #expect(bytes == Self.expected)
        }

        @Test func fromATaskOnARing() async throws {
            let (dir, path) = try await Self.makeFile()
            defer { dir.cleanup() }
            let ring = try RingExecutor(name: "context-test")
            defer { ring.shutdown() }
            let (bytes, onRing) = try await Task(executorPreference: ring) {
                let bytes = try await File.readAll(at: path)
                return (bytes, RingExecutor.current === ring)
            }.value
            #expect(bytes == Self.expected)
            #expect(onRing, "the task stays on its ring across the awaits")
            let stats = await ring.statistics()
            // The read may have been answered from the page cache, and the status of the open
            // file made on the ring's thread, without a submission.
            #expect(
                stats.submitted + stats.readsWithoutWaiting + stats.statusesWithoutWaiting >= 4,
                "open, statx, read, close went through this ring")
        }

        actor Counter {
            let ring: RingExecutor
            var reads = 0
            nonisolated var unownedExecutor: UnownedSerialExecutor { ring.asUnownedSerialExecutor() }
            init(ring: RingExecutor) { self.ring = ring }

            func readAndCount(_ path: FilePath) async throws -> [UInt8] {
                preconditionIsolated()
                let bytes = try await File.readAll(at: path)
                reads += 1
                return bytes
            }
        }

        @Test func fromAnActorOnARing() async throws {
            let (dir, path) = try await Self.makeFile()
            defer { dir.cleanup() }
            let ring = try RingExecutor(name: "actor-test")
            defer { ring.shutdown() }
            let counter = Counter(ring: ring)
            let bytes = try await counter.readAndCount(path)
            #expect(bytes == Self.expected)
            #expect(await counter.reads == 1)
        }

        @Test func withFileClosesTheFile() async throws {
            let (dir, path) = try await Self.makeFile()
            defer { dir.cleanup() }
            let before = openDescriptorCount()
            let first = try await File.withFile(at: path) { file in try await file.read(upTo: 5, at: 0) }
            #expect(first == Array("hello".utf8))
            struct Oops: Error {}
            await #expect(throws: Oops.self) {
                try await File.withFile(at: path) { _ in throw Oops() }
            }
            #expect(openDescriptorCount() == before)
        }
    }
}
