import Glibc
import SystemPackage
import Testing

@testable import Uring

/// Writes `bytes` to a new file at `path` (test setup).
func writeFile(_ path: FilePath, _ bytes: [UInt8], permissions: FilePermissions = [.ownerReadWrite]) async throws {
    let file = try await File.open(path, .writeOnly, options: [.create, .exclusiveCreate], permissions: permissions)
    try await file.write(contentsOf: bytes, at: 0)
    try await file.close()
}

extension IntegrationTests {
    @Suite("Copy, remove, temporary directories")
    struct FileItems {
        @Test func copyingA64MiBRandomFileGivesIdenticalBytes() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            var random = SeededRandom(seed: 64)
            let data = random.bytes(64 << 20)
            try await writeFile(dir.file("source"), data, permissions: [.ownerReadWrite, .groupRead])
            try await FileSystem.copyItem(at: dir.file("source"), to: dir.file("copy"))
            #expect(try await File.readAll(at: dir.file("copy")) == data)
            let status = try await FileSystem.status(of: dir.file("copy"))
            #expect(status.permissions == [.ownerReadWrite, .groupRead])
            #expect(status.inode != (try await FileSystem.status(of: dir.file("source"))).inode)
            await #expect(throws: IOError.system(EEXIST, .open)) {
                try await FileSystem.copyItem(at: dir.file("source"), to: dir.file("copy"))
            }
            // An empty file copies too.
            try await writeFile(dir.file("empty"), [])
            try await FileSystem.copyItem(at: dir.file("empty"), to: dir.file("empty-copy"))
            #expect(try await FileSystem.status(of: dir.file("empty-copy")).size == 0)
        }

        /// Across file systems the kernel will not copy (`EXDEV`): the bytes go through memory.
        @Test(.enabled(if: access("/dev/shm", W_OK) == 0, "needs a writable /dev/shm (tmpfs)"))
        func copyingAcrossFileSystemsGoesThroughMemory() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            var random = SeededRandom(seed: 9)
            let data = random.bytes(3 << 20 + 12_345)
            try await writeFile(dir.file("source"), data)
            let target = FilePath("/dev/shm/uring-copy-\(getpid())")
            defer { unlink(target.string) }
            try await FileSystem.copyItem(at: dir.file("source"), to: target)
            #expect(try await File.readAll(at: target) == data)
        }

        @Test func aThreeLevelTreeCopiesAndRemovesRecursively() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let root = dir.file("tree")
            try await FileSystem.makeDirectory(root)
            try await writeFile(root.appending("one.txt"), Array("one".utf8))
            try await FileSystem.makeDirectory(root.appending("b"), permissions: [.ownerReadWriteExecute, .groupRead])
            try await writeFile(root.appending("b/two.txt"), Array("two".utf8), permissions: [.ownerRead])
            try await FileSystem.symlink("two.txt", at: root.appending("b/link"))
            try await FileSystem.makeDirectory(root.appending("b/c"))
            try await writeFile(root.appending("b/c/three.bin"), [0, 1, 2, 3])
            try await FileSystem.makeDirectory(root.appending("b/c/empty"))

            // Into itself: refused before anything is made.
            for inside in [root, root.appending("b/inner"), FilePath(root.string + "/./b/../nested")] {
                await #expect(throws: IOError(.invalidArgument, errno: .invalidArgument, operation: .copy)) {
                    try await FileSystem.copyItem(at: root, to: inside)
                }
            }
            await #expect(throws: IOError.system(ENOENT, .stat)) {
                _ = try await FileSystem.status(of: root.appending("b/inner"))
            }
            let copy = dir.file("copy")
            try await FileSystem.copyItem(at: root, to: copy)
            #expect(try await File.readAll(at: copy.appending("one.txt")) == Array("one".utf8))
            #expect(try await File.readAll(at: copy.appending("b/two.txt")) == Array("two".utf8))
            #expect(try await FileSystem.status(of: copy.appending("b/two.txt")).permissions == [.ownerRead])
            #expect(
                try await FileSystem.status(of: copy.appending("b")).permissions == [
                    .ownerReadWriteExecute, .groupRead,
                ])
            #expect(try await FileSystem.readLink(at: copy.appending("b/link")) == "two.txt")
            #expect(try await File.readAll(at: copy.appending("b/c/three.bin")) == [0, 1, 2, 3])
            #expect(try await FileSystem.status(of: copy.appending("b/c/empty")).kind == .directory)
            var names: [String] = []
            for try await entry in FileSystem.contents(of: copy.appending("b")) { names.append(entry.name) }
            #expect(names.sorted() == ["c", "link", "two.txt"])

            await #expect(throws: IOError.system(ENOTEMPTY, .removeDirectory)) {
                try await FileSystem.removeItem(at: copy)
            }
            try await FileSystem.removeItem(at: copy, recursively: true)
            await #expect(throws: IOError.system(ENOENT, .stat)) { _ = try await FileSystem.status(of: copy) }
            // The source is untouched, and its link was not followed when removed.
            try await FileSystem.removeItem(at: root.appending("b/link"))
            #expect(try await File.readAll(at: root.appending("b/two.txt")) == Array("two".utf8))
            try await FileSystem.removeItem(at: root.appending("b/c/empty"))
            await #expect(throws: IOError.system(ENOENT, .stat)) {
                try await FileSystem.removeItem(at: dir.file("missing"), recursively: true)
            }
            // A fifo cannot be copied: a typed error, not a hang.
            #expect(mkfifo(dir.path + "/fifo", 0o600) == 0)
            let error = await #expect(throws: IOError.self) {
                try await FileSystem.copyItem(at: dir.file("fifo"), to: dir.file("fifo-copy"))
            }
            #expect(error?.code == .unsupported && error?.operation == .copy)
        }

        @Test func aTemporaryDirectoryIsGoneAfterTheClosureEvenWhenItThrows() async throws {
            struct Failure: Error {}
            var seen: FilePath?
            let value = try await FileSystem.withTemporaryDirectory { directory in
                seen = directory
                let status = try await FileSystem.status(of: directory)
                #expect(status.kind == .directory && status.permissions == .ownerReadWriteExecute)
                try await FileSystem.makeDirectory(directory.appending("sub"))
                try await writeFile(directory.appending("sub/file"), [1, 2, 3])
                return 42
            }
            #expect(value == 42)
            let first = try #require(seen)
            await #expect(throws: IOError.system(ENOENT, .stat)) { _ = try await FileSystem.status(of: first) }

            var thrownFrom: FilePath?
            await #expect(throws: Failure.self) {
                try await FileSystem.withTemporaryDirectory(prefix: "uring-test-") { directory in
                    thrownFrom = directory
                    #expect(directory.lastComponent!.string.hasPrefix("uring-test-"))
                    try await writeFile(directory.appending("partial"), [9])
                    throw Failure()
                }
            }
            let second = try #require(thrownFrom)
            #expect(second != first)
            await #expect(throws: IOError.system(ENOENT, .stat)) { _ = try await FileSystem.status(of: second) }
        }
    }
}
