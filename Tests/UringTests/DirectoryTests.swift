import Glibc
import SystemPackage
import Testing

@testable import Uring

/// Creates `count` empty files named `prefix0`, `prefix1`, … in `directory` (synchronously: the
/// setup of the listing tests, not what they check).
func createFiles(_ count: Int, prefix: String, in directory: String) {
    for index in 0..<count {
        let fd = open(directory + "/" + prefix + String(index), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        precondition(fd >= 0, "open failed")
        close(fd)
    }
}

extension IntegrationTests {
    @Suite("Directories")
    struct Directories {
        @Test func listsTenThousandEntriesEachOnceWithTheirKinds() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            createFiles(9_990, prefix: "f", in: dir.path)
            for index in 0..<5 {
                #expect(mkdir(dir.path + "/d\(index)", 0o755) == 0)
                #expect(symlink("f\(index)", dir.path + "/l\(index)") == 0)
            }
            var names: [String: FileStatus.Kind] = [:]
            var duplicates = 0
            for try await entry in FileSystem.contents(of: FilePath(dir.path)) {
                if names.updateValue(entry.kind, forKey: entry.name) != nil { duplicates += 1 }
                #expect(entry.inode != 0)
                #expect(entry.status == nil)
            }
            #expect(duplicates == 0)
            #expect(names.count == 10_000)
            #expect((0..<9_990).allSatisfy { names["f\($0)"] == .regular })
            #expect((0..<5).allSatisfy { names["d\($0)"] == .directory && names["l\($0)"] == .symbolicLink })
            #expect(names["."] == nil && names[".."] == nil)
        }

        @Test func statusPerEntryComesFromTheRing() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let file = try await File.open(dir.file("data"), .writeOnly, options: [.create])
            try await file.write(contentsOf: Array(repeating: 7, count: 1234), at: 0)
            try await file.close()
            #expect(mkdir(dir.path + "/sub", 0o700) == 0)
            #expect(symlink("data", dir.path + "/link") == 0)
            var seen: [String: FileStatus] = [:]
            for try await entry in FileSystem.contents(of: FilePath(dir.path), includingStatus: true) {
                let status = try #require(entry.status)
                #expect(status.kind == entry.kind)
                #expect(status.inode == entry.inode)
                seen[entry.name] = status
            }
            #expect(seen.count == 3)
            #expect(seen["data"]?.size == 1234)
            #expect(seen["sub"]?.kind == .directory && seen["sub"]?.permissions == [.ownerReadWriteExecute])
            #expect(seen["link"]?.kind == .symbolicLink, "a link is described itself")
        }

        /// Entries removed by another task while the listing runs: no crash, no loop, no entry
        /// twice; every entry that was never removed is listed.
        @Test func listingWhileEntriesAreRemovedEnds() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            createFiles(5_000, prefix: "r", in: dir.path)
            createFiles(100, prefix: "keep", in: dir.path)
            var names = Set<String>()
            var duplicates = 0
            var remover: Task<Int, Never>?
            // Small batches (about 100 records each), so that removals land between reads.
            var listing = FileSystem.contents(of: FilePath(dir.path), includingStatus: true)
            listing.batchBytes = 4096
            for try await entry in listing {
                if !names.insert(entry.name).inserted { duplicates += 1 }
                if remover == nil {
                    remover = Task {
                        var removed = 0
                        for index in 0..<5_000 {
                            if (try? await FileSystem.remove(dir.file("r\(index)"))) != nil { removed += 1 }
                        }
                        return removed
                    }
                }
            }
            #expect(await remover?.value == 5_000)
            #expect(duplicates == 0)
            #expect((0..<100).allSatisfy { names.contains("keep\($0)") })
            #expect(names.count <= 5_100)
        }

        @Test func listingAFileOrAMissingPathIsATypedError() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            createFiles(1, prefix: "plain", in: dir.path)
            for (path, errno) in [(dir.file("plain0"), ENOTDIR), (dir.file("missing"), ENOENT)] {
                var iterator = FileSystem.contents(of: path).makeAsyncIterator()
                let error = await #expect(throws: IOError.self) { _ = try await iterator.next() }
                #expect(error?.code == .systemCall && error?.errno?.rawValue == errno)
                #expect(error?.operation == .readDirectory)
                #expect(error?.subject == .path(path))
                #expect(try await iterator.next() == nil, "a failed listing stays ended")
            }
            // An empty directory is an empty sequence.
            #expect(mkdir(dir.path + "/empty", 0o755) == 0)
            var count = 0
            for try await _ in FileSystem.contents(of: dir.file("empty")) { count += 1 }
            #expect(count == 0)
        }

        /// A directory the user may not read: `EACCES`, typed. Root reads any directory, so the
        /// listing runs in a child process as `nobody` (`setpriv`).
        @Test(.enabled(if: access("/usr/bin/setpriv", X_OK) == 0, "needs setpriv (util-linux)"))
        func listingADirectoryWithoutPermissionIsATypedError() throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            #expect(chmod(dir.path, 0o755) == 0)
            #expect(mkdir(dir.path + "/private", 0o700) == 0)
            #expect(chown(dir.path + "/private", 0, 0) == 0 || geteuid() != 0)
            createFiles(3, prefix: "p", in: dir.path + "/private")
            let program = executableNextToTests("uring-run-check")
            let (status, output) = try runChild(
                "/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", program, "--list", dir.path + "/private"])
            #expect(status == 0, "output:\n\(output)")
            #expect(output.contains("error operation=getdents64 errno=\(EACCES) code="), "output:\n\(output)")
            // The same program lists what it may read.
            #expect(chmod(dir.path + "/private", 0o755) == 0)
            let (_, allowed) = try runChild(
                "/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", program, "--list", dir.path + "/private"])
            #expect(allowed.contains("entries=3"), "output:\n\(allowed)")
        }

        @Test func cancellingTheConsumerEndsTheListing() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            createFiles(10, prefix: "c", in: dir.path)
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                var iterator = FileSystem.contents(of: FilePath(dir.path)).makeAsyncIterator()
                return try await iterator.next()
            }
            await #expect(throws: IOError(.cancelled, operation: .readDirectory)) { _ = try await task.value }
        }
    }
}
