internal import CLiburing
import Glibc
import SystemPackage

/// File-system operations on paths, each one awaited on the ring.
///
/// ```swift
/// try await FileSystem.makeDirectory("/tmp/reports")
/// try await FileSystem.rename("/tmp/report.partial", to: "/tmp/reports/report.txt")
/// try await FileSystem.remove("/tmp/reports/report.txt")
/// try await FileSystem.removeDirectory("/tmp/reports")
/// ```
///
/// Every function throws ``IOError`` with the errno the kernel returned (`ENOENT`, `EEXIST`,
/// `ENOTEMPTY`, `EACCES`, …) or ``IOError/Code/cancelled``.
public enum FileSystem {
    /// Removes the file (or symbolic link, socket, fifo) at `path` (`unlink`).
    ///
    /// ```swift
    /// try await FileSystem.remove("/tmp/upload.partial")
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/remove`` (`ENOENT`, `EISDIR` for a directory,
    ///   `EACCES`, …) or ``IOError/Code/cancelled``.
    public static func remove(_ path: FilePath) async throws(IOError) {
        try await pathOperation(path, .remove) { sqe, p in Prep.unlink(sqe, directory: AT_FDCWD, path: p, flags: 0) }
    }

    /// Removes the empty directory at `path` (`rmdir`).
    ///
    /// ```swift
    /// try await FileSystem.removeDirectory("/tmp/job-42")
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/removeDirectory`` (`ENOTEMPTY`, `ENOENT`,
    ///   `ENOTDIR`, …) or ``IOError/Code/cancelled``.
    public static func removeDirectory(_ path: FilePath) async throws(IOError) {
        try await pathOperation(path, .removeDirectory) { sqe, p in
            Prep.unlink(sqe, directory: AT_FDCWD, path: p, flags: AT_REMOVEDIR)
        }
    }

    /// Creates a directory at `path` with `permissions` (default `0o755`, less the umask).
    ///
    /// ```swift
    /// try await FileSystem.makeDirectory("/tmp/job-42", permissions: .ownerReadWriteExecute)
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/makeDirectory`` (`EEXIST`, `ENOENT` for a
    ///   missing parent, …) or ``IOError/Code/cancelled``.
    public static func makeDirectory(
        _ path: FilePath, permissions: FilePermissions = [.ownerReadWriteExecute, .groupReadExecute, .otherReadExecute]
    ) async throws(IOError) {
        let mode = mode_t(permissions.rawValue)
        try await pathOperation(path, .makeDirectory) { sqe, p in
            Prep.makeDirectory(sqe, directory: AT_FDCWD, path: p, mode: mode)
        }
    }

    /// Renames (moves) `source` to `destination`, replacing `destination` if it exists, atomically
    /// (`renameat`). Both must be on the same file system (else `EXDEV`).
    ///
    /// ```swift
    /// try await file.sync()
    /// try await FileSystem.rename("/data/report.tmp", to: "/data/report.json")   // atomic publish
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/rename`` (`ENOENT`, `EXDEV`, `EISDIR`, …) or
    ///   ``IOError/Code/cancelled``.
    public static func rename(_ source: FilePath, to destination: FilePath) async throws(IOError) {
        do throws(IOError) {
            let from = try CPath(source, .rename)
            defer { from.free() }
            let to = try CPath(destination, .rename)
            defer { to.free() }
            let outcome = try await RingExecutor.submit(timeout: nil) { sqe, _ in
                Prep.rename(sqe, from: from.pointer, to: to.pointer, flags: 0)
            }
            _ = try outcome.get(.rename)
        } catch {
            throw error.about(.path(source))
        }
    }

    private static func pathOperation(
        _ path: FilePath, _ operation: IOError.Operation,
        _ prepare: @Sendable (UnsafeMutablePointer<io_uring_sqe>, UnsafePointer<CChar>) -> Void
    ) async throws(IOError) {
        do throws(IOError) {
            let cPath = try CPath(path, operation)
            defer { cPath.free() }
            // The path copy lives until submit returns, after the final CQE.
            let outcome = try await RingExecutor.submit { sqe, _ in prepare(sqe, cPath.pointer) }
            _ = try outcome.get(operation)
        } catch {
            throw error.about(.path(path))
        }
    }
}
