import Glibc
import SystemPackage

// Hard links, symbolic links, and what a symbolic link says.

extension FileSystem {
    /// Gives the file at `existing` a second name, `newPath` (a hard link, `link`): both names
    /// then reach the same file, which lives until the last name is removed. A symbolic link at
    /// `existing` is linked itself, not followed.
    ///
    /// ```swift
    /// try await FileSystem.link("/data/report.json", at: "/backup/report.json")
    /// ```
    ///
    /// On the kernel ring (`IORING_OP_LINKAT`, Linux 5.15), or on a worker thread for the epoll
    /// driver and older kernels.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/link`` (`EEXIST` when `newPath` exists,
    ///   `EXDEV` across file systems, `EPERM` for a directory, `ENOENT`, …) or
    ///   ``IOError/Code/cancelled``.
    public static func link(_ existing: FilePath, at newPath: FilePath) async throws(IOError) {
        do throws(IOError) {
            let from = try CPath(existing, .link)
            defer { from.free() }
            let to = try CPath(newPath, .link)
            defer { to.free() }
            _ = try unsafe await LinkOperation(existing: from.pointer, newPath: to.pointer).run()
        } catch {
            throw error.about(.path(newPath))
        }
    }

    /// Creates a symbolic link at `linkPath` whose content is `target` (`symlink`). `target` is
    /// stored as given, relative or absolute, and need not exist.
    ///
    /// ```swift
    /// try await FileSystem.symlink("releases/2026-12-02", at: "/srv/app/current")
    /// ```
    ///
    /// On the kernel ring (`IORING_OP_SYMLINKAT`, Linux 5.15), or on a worker thread for the epoll
    /// driver and older kernels.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/symbolicLink`` (`EEXIST`, `ENOENT` for a
    ///   missing parent directory, `EACCES`, …) or ``IOError/Code/cancelled``.
    public static func symlink(_ target: FilePath, at linkPath: FilePath) async throws(IOError) {
        do throws(IOError) {
            let content = try CPath(target, .symbolicLink)
            defer { content.free() }
            let path = try CPath(linkPath, .symbolicLink)
            defer { path.free() }
            _ = try unsafe await SymbolicLinkOperation(target: content.pointer, linkPath: path.pointer).run()
        } catch {
            throw error.about(.path(linkPath))
        }
    }

    /// What the symbolic link at `path` points to, as stored (`readlink`): not resolved, and
    /// possibly relative to the link's directory.
    ///
    /// ```swift
    /// let release = try await FileSystem.readLink(at: "/srv/app/current")   // "releases/2026-12-02"
    /// ```
    ///
    /// io_uring has no readlink operation: the call runs on ``BlockingPool/shared`` (both drivers),
    /// so the ring is never blocked.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/readLink`` (`EINVAL` when `path` is not a
    ///   symbolic link, `ENOENT`, `EACCES`, …).
    public static func readLink(at path: FilePath) async throws(IOError) -> FilePath {
        do throws(IOError) {
            return try await WorkerCalls.readLink(path)
        } catch {
            throw error.about(.path(path))
        }
    }
}
