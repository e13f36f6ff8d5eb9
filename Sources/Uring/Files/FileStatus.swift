import Glibc
import SystemPackage

/// What `statx` says about a file: its size, kind, permissions and times.
///
/// ```swift
/// let status = try await FileSystem.status(of: "/etc/hosts")
/// if status.kind == .regular { print(status.size, status.permissions) }
/// ```
public struct FileStatus: Sendable, Hashable {
    /// The kind of file.
    public enum Kind: Sendable, Hashable {
        case regular, directory, symbolicLink, fifo, socket, characterDevice, blockDevice, unknown
    }

    /// A point in time as seconds and nanoseconds since 1970-01-01 00:00:00 UTC.
    public struct Timestamp: Sendable, Hashable, Comparable {
        public var seconds: Int64
        public var nanoseconds: UInt32
        public init(seconds: Int64, nanoseconds: UInt32) {
            self.seconds = seconds
            self.nanoseconds = nanoseconds
        }
        public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
            (lhs.seconds, lhs.nanoseconds) < (rhs.seconds, rhs.nanoseconds)
        }
    }

    /// Size in bytes.
    public var size: Int64
    public var kind: Kind
    /// Permission bits (and set-uid, set-gid, sticky).
    public var permissions: FilePermissions
    public var linkCount: UInt32
    public var userID: UInt32
    public var groupID: UInt32
    public var inode: UInt64
    /// The device the file lives on, as `major << 32 | minor`.
    public var device: UInt64
    /// The preferred I/O block size.
    public var blockSize: UInt32
    /// Space allocated, in 512-byte blocks.
    public var allocatedBlocks: UInt64
    public var accessTime: Timestamp
    public var modificationTime: Timestamp
    public var statusChangeTime: Timestamp
    /// Creation time, when the file system records one.
    public var creationTime: Timestamp?
}

extension File {
    /// The open file's status (`statx` on the descriptor).
    ///
    /// ```swift
    /// let size = try await file.status().size
    /// ```
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/stat`` (`EBADF` for a closed descriptor).
    public func status() async throws(IOError) -> FileStatus {
        // 0x1000: AT_EMPTY_PATH, hidden by glibc without _GNU_SOURCE.
        try await StatOperation.status(directory: descriptor.rawValue, path: nil, flags: 0x1000)
    }
}

extension FileSystem {
    /// The status of the file at `path`.
    ///
    /// ```swift
    /// let status = try await FileSystem.status(of: "/tmp")
    /// assert(status.kind == .directory)
    /// ```
    ///
    /// - Parameters:
    ///   - path: The file to describe.
    ///   - followSymbolicLinks: With `false`, a symbolic link is described itself (`lstat`), not
    ///     its target.
    /// - Throws: ``IOError`` for ``IOError/Operation/stat`` (`ENOENT`, `EACCES`, `ENOTDIR`, …).
    public static func status(of path: FilePath, followSymbolicLinks: Bool = true) async throws(IOError) -> FileStatus {
        do throws(IOError) {
            let cPath = try CPath(path, .stat)
            defer { cPath.free() }
            return try await StatOperation.status(
                directory: AT_FDCWD, path: cPath, flags: followSymbolicLinks ? 0 : AT_SYMLINK_NOFOLLOW)
        } catch {
            throw error.about(.path(path))
        }
    }
}
