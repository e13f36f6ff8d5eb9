import Glibc
import SystemPackage
import Testing

@testable import Uring

extension IntegrationTests {
    @Suite("File API")
    struct FileAPI {
        @Test func appendSyncAndStatus() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let path = dir.file("log")
            let file = try await File.open(
                path, .writeOnly, options: [.create, .exclusiveCreate], permissions: [.ownerReadWrite])
            try await file.append(contentsOf: Array("one\n".utf8))
            try await file.append(contentsOf: Array("two\n".utf8))
            try await file.write(contentsOf: Array("O".utf8), at: 0)
            try await file.sync()
            try await file.sync(dataOnly: true)
            let status = try await file.status()
            try await file.close()

            #expect(status.size == 8)
            #expect(status.kind == .regular)
            #expect(status.permissions == [.ownerReadWrite])
            #expect(status.linkCount == 1)
            #expect(status.modificationTime.seconds > 1_600_000_000)
            #expect(try await File.readAll(at: path) == Array("One\ntwo\n".utf8))

            await #expect(throws: IOError.system(EEXIST, .open)) {
                _ = try await File.open(path, .writeOnly, options: [.create, .exclusiveCreate])
            }
        }

        @Test func directoriesRenameAndRemove() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let sub = dir.file("sub")
            try await FileSystem.makeDirectory(sub)
            #expect(try await FileSystem.status(of: sub).kind == .directory)
            await #expect(throws: IOError.system(EEXIST, .makeDirectory)) { try await FileSystem.makeDirectory(sub) }

            let a = FilePath(sub.string + "/a")
            let b = FilePath(sub.string + "/b")
            try await File.open(a, .writeOnly, options: [.create]).close()
            await #expect(throws: IOError.system(ENOTEMPTY, .removeDirectory)) {
                try await FileSystem.removeDirectory(sub)
            }
            try await FileSystem.rename(a, to: b)
            await #expect(throws: IOError.system(ENOENT, .stat)) { _ = try await FileSystem.status(of: a) }
            #expect(try await FileSystem.status(of: b).size == 0)
            try await FileSystem.remove(b)
            try await FileSystem.removeDirectory(sub)
            await #expect(throws: IOError.system(ENOENT, .stat)) { _ = try await FileSystem.status(of: sub) }
        }

        @Test func symbolicLinksCanBeDescribedThemselves() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let link = dir.file("link")
            #expect(symlink("/etc/hostname", link.string) == 0)
            #expect(try await FileSystem.status(of: link).kind == .regular)
            #expect(try await FileSystem.status(of: link, followSymbolicLinks: false).kind == .symbolicLink)
        }

        @Test func chunksStreamTheWholeFileInOrder() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            var random = SeededRandom(seed: 7)
            let data = random.bytes(1_000_003)
            let path = dir.file("stream")
            let file = try await File.open(path, .readWrite, options: [.create])
            try await file.write(contentsOf: data, at: 0)

            var collected: [UInt8] = []
            var sizes: [Int] = []
            for try await chunk in file.chunks(ofSize: 65_536) {
                collected += chunk
                sizes.append(chunk.count)
            }
            #expect(collected == data)
            #expect(sizes.dropLast().allSatisfy { $0 == 65_536 }, "only the last chunk is short")
            #expect(sizes.last == 1_000_003 % 65_536)

            var tail: [UInt8] = []
            for try await chunk in file.chunks(ofSize: 100, from: 1_000_000) { tail += chunk }
            #expect(tail == Array(data[1_000_000...]))
            var none = 0
            for try await _ in file.chunks(from: 5_000_000) { none += 1 }
            #expect(none == 0, "no chunk past end of file")
            #expect(try await file.readAll() == data)
            try await file.close()
        }

        @Test func chunksSurfaceErrors() async throws {
            let closed = closedDescriptor()
            await #expect(throws: IOError.system(EBADF, .read)) {
                for try await _ in closed.chunks() {}
            }
        }

        @Test func readAllOfAnEmptyFile() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let path = dir.file("empty")
            try await File.open(path, .writeOnly, options: [.create]).close()
            #expect(try await File.readAll(at: path) == [])
        }
    }
}
