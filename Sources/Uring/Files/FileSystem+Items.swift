import Glibc
import SystemPackage

// Whole items: copy a file or a tree, remove a tree, a temporary directory for a scope.

extension FileSystem {
    /// Copies the file, symbolic link or directory tree at `source` to `destination`, which must
    /// not exist.
    ///
    /// ```swift
    /// try await FileSystem.copyItem(at: "/srv/templates/site", to: "/srv/sites/new-customer")
    /// ```
    ///
    /// - Regular files: the fastest way the file systems allow. A reflink (`FICLONE`: the copy
    ///   shares the source's blocks until either is written; btrfs, xfs) where possible, else
    ///   `copy_file_range` (the kernel copies, no bytes pass through user space; server-side on
    ///   NFS and SMB), 64 MiB per call on ``BlockingPool/shared``; across file systems that cannot,
    ///   1 MiB reads and writes on the ring. The copy gets the source's permission bits.
    /// - Symbolic links are copied as links (their target text), not followed.
    /// - Directories are copied recursively, each with its source's permission bits.
    /// - A copy that fails removes the partial destination file it was writing (the items of a
    ///   tree copied before the failure stay).
    ///
    /// - Throws: ``IOError``: `EEXIST` when `destination` exists; `.invalidArgument` when
    ///   `destination` is `source` or inside it; the errno of the step that failed (open, read,
    ///   write, copy, mkdir); ``IOError/Code/unsupported`` for a fifo, socket or device in the
    ///   tree; ``IOError/Code/cancelled``.
    public static func copyItem(at source: FilePath, to destination: FilePath) async throws(IOError) {
        // A tree copied into itself would copy its own copy, again and again.
        let from = source.lexicallyNormalized()
        let to = destination.lexicallyNormalized()
        if to == from || (to.starts(with: from) && !from.isEmpty) {
            var error = IOError(.invalidArgument, errno: .invalidArgument, operation: .copy)
            error.subject = .path(destination)
            throw error
        }
        let status = try await FileSystem.status(of: source, followSymbolicLinks: false)
        switch status.kind {
        case .regular:
            try await copyFile(at: source, to: destination, permissions: status.permissions, size: status.size)
        case .symbolicLink:
            try await symlink(try await readLink(at: source), at: destination)
        case .directory:
            // Writable while it is filled; its own permissions once it is complete.
            try await makeDirectory(destination, permissions: status.permissions.union(.ownerReadWriteExecute))
            for try await entry in contents(of: source) {
                try await copyItem(at: source.appending(entry.name), to: destination.appending(entry.name))
            }
            if !status.permissions.contains(.ownerReadWriteExecute) {
                try await WorkerCalls.changePermissions(of: destination, to: status.permissions)
            }
        default:
            var error = IOError(.unsupported, errno: .notSupported, operation: .copy)
            error.subject = .path(source)
            throw error
        }
    }

    /// The bytes of one regular file, into a new file.
    private static func copyFile(
        at source: FilePath, to destination: FilePath, permissions: FilePermissions, size: Int64
    ) async throws(IOError) {
        let input = try await File.open(source)
        let output: File
        do throws(IOError) {
            output = try await File.open(
                destination, .writeOnly, options: [.create, .exclusiveCreate], permissions: permissions)
        } catch {
            try? await input.close()
            throw error
        }
        do throws(IOError) {
            try await copyBytes(from: input, to: output, size: size)
            try await output.close()
            try await input.close()
        } catch {
            try? await output.close()
            try? await input.close()
            try? await remove(destination)
            throw error.operation == .copy ? error.about(.path(source)) : error
        }
    }

    /// The whole content of `input` into `output`: a reflink, or `copy_file_range` in 64 MiB
    /// calls, or 1 MiB reads and writes on the ring.
    private static func copyBytes(from input: File, to output: File, size: Int64) async throws(IOError) {
        let from = input.descriptor.rawValue
        let to = output.descriptor.rawValue
        if size > 0, await WorkerCalls.cloneFile(from: from, to: to) { return }
        var offset: Int64 = 0
        while true {
            if Task.isCancelled { throw IOError(.cancelled, operation: .copy) }
            switch await WorkerCalls.copyFileRange(from: from, to: to, at: offset, count: 64 << 20) {
            case .copied(0):
                return
            case .copied(let count):
                offset += Int64(count)
            case .failed(let errno):
                throw IOError.system(errno, .copy)
            case .unsupported:
                // Through memory, from where the kernel stopped.
                while true {
                    let chunk = try await input.read(upTo: 1 << 20, at: offset)
                    if chunk.isEmpty { return }
                    try await output.write(contentsOf: chunk, at: offset)
                    offset += Int64(chunk.count)
                }
            }
        }
    }

    /// Removes the item at `path`: a file or symbolic link (not what it points to), or a
    /// directory, which must be empty unless `recursively` is true.
    ///
    /// ```swift
    /// try await FileSystem.removeItem(at: "/tmp/build-cache", recursively: true)
    /// ```
    ///
    /// A recursive removal lists each directory, removes its entries (descending into
    /// subdirectories, never following links), then the directory itself. Items that vanish
    /// meanwhile are fine; it stops at the first other error.
    ///
    /// - Throws: ``IOError``: `ENOENT` when `path` does not exist; `ENOTEMPTY` for a directory
    ///   that is not empty without `recursively`; the errno of the step that failed (`EACCES`,
    ///   `EBUSY`, …); ``IOError/Code/cancelled``.
    public static func removeItem(at path: FilePath, recursively: Bool = false) async throws(IOError) {
        let status = try await FileSystem.status(of: path, followSymbolicLinks: false)
        guard status.kind == .directory else { return try await remove(path) }
        if recursively {
            // The names first: removing entries while the directory is read may make some file
            // systems skip others.
            var names: [String] = []
            for try await entry in contents(of: path) { names.append(entry.name) }
            for name in names {
                do throws(IOError) {
                    try await removeItem(at: path.appending(name), recursively: true)
                } catch  where error.errno == .noSuchFileOrDirectory {
                    continue  // removed by someone else meanwhile
                }
            }
        }
        try await removeDirectory(path)
    }

    /// Creates a new, private (`0o700`) directory, passes its path to `body`, and removes it with
    /// everything in it when `body` returns or throws.
    ///
    /// ```swift
    /// let digest = try await FileSystem.withTemporaryDirectory { directory in
    ///     let archive = directory.appending("download.tar")
    ///     try await download(to: archive)
    ///     return try await checksum(of: archive)
    /// }
    /// ```
    ///
    /// The directory is made in `$TMPDIR` (else `/tmp`), named `prefix` and 12 random hex digits.
    ///
    /// - Throws: what `body` throws (the directory is removed first); ``IOError`` when the
    ///   directory cannot be created, or, after a `body` that succeeded, cannot be removed.
    public static func withTemporaryDirectory<Result>(
        prefix: String = "swift-uring-",
        isolation: isolated (any Actor)? = #isolation,
        _ body: (FilePath) async throws -> Result
    ) async throws -> Result {
        let directory = try await makeTemporaryDirectory(prefix: prefix)
        let result: Result
        do {
            result = try await body(directory)
        } catch {
            try? await removeItem(at: directory, recursively: true)
            throw error
        }
        try await removeItem(at: directory, recursively: true)
        return result
    }

    private static func makeTemporaryDirectory(prefix: String) async throws(IOError) -> FilePath {
        let base = WorkerCalls.temporaryDirectoryBase
        var generator = SystemRandomNumberGenerator()
        var lastError = IOError.system(EEXIST, .makeDirectory)
        for _ in 0..<100 {
            let suffix = String(generator.next() & 0xffff_ffff_ffff, radix: 16)
            let path = FilePath(base).appending(prefix + String(repeating: "0", count: 12 - suffix.count) + suffix)
            do throws(IOError) {
                try await makeDirectory(path, permissions: .ownerReadWriteExecute)
                return path
            } catch  where error.errno == .fileExists {
                lastError = error
            }
        }
        throw lastError
    }
}
