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
        try unsafe await pathOperation(path, .remove) { unsafe RemoveOperation(path: $0, directory: false) }
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
        try unsafe await pathOperation(path, .removeDirectory) { unsafe RemoveOperation(path: $0, directory: true) }
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
        try unsafe await pathOperation(path, .makeDirectory) { unsafe MakeDirectoryOperation(path: $0, mode: mode) }
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
            _ = try unsafe await RenameOperation(source: from.pointer, destination: to.pointer).run()
        } catch {
            throw error.about(.path(source))
        }
    }

    private static func pathOperation<Operation: IOOperation>(
        _ path: FilePath, _ name: IOError.Operation, _ make: (UnsafePointer<CChar>) -> Operation
    ) async throws(IOError) {
        do throws(IOError) {
            let cPath = try CPath(path, name)
            defer { cPath.free() }
            // The path copy lives until the operation returns, after the final completion.
            _ = try unsafe await make(cPath.pointer).run()
        } catch {
            throw error.about(.path(path))
        }
    }
}
