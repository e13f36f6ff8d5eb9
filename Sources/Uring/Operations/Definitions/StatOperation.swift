internal import CLiburing
import Glibc

/// `statx(2)` of `path` relative to `directory` (an empty path with `AT_EMPTY_PATH`: the
/// directory descriptor itself) into `buffer`.
@safe struct StatOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `path` and `buffer` are lent by the caller until the final completion.
    var directory: Int32
    var path: UnsafePointer<CChar>
    var flags: Int32
    var mask: UInt32
    var buffer: UnsafeMutablePointer<statx>

    var name: IOError.Operation { .stat }
    static var retry: RetryPolicy { .resubmit }
    /// The status of an open descriptor is made on the ring's thread (see
    /// `RingDriver.tryWithoutWaiting`); a path is resolved on the kernel ring's workers.
    static var triesWithoutWaiting: Bool { true }
    var triesWithoutWaitingWhenBusy: Bool { true }
    var descriptor: Int32 { directory }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_statx(sqe, directory, path, flags, mask, buffer)
    }
}

extension StatOperation {
    /// Runs a `statx` of `path` (relative to `directory`; nil: the descriptor itself, with
    /// `AT_EMPTY_PATH` in `flags`) and describes the result.
    static func status(directory: Int32, path: CPath?, flags: Int32) async throws(IOError) -> FileStatus {
        // Lent to the ring for this call only: it returns after the final completion. A scratch
        // block (a statx is 256 bytes): no allocation once the free list is warm.
        let buffer = unsafe ScratchBlocks.take().bindMemory(to: statx.self, capacity: 1)
        defer { unsafe ScratchBlocks.give(UnsafeMutableRawPointer(buffer)) }
        let empty: StaticString = ""
        let pathPointer =
            unsafe (path.map { unsafe UnsafePointer($0.pointer) }
            ?? UnsafeRawPointer(empty.utf8Start).assumingMemoryBound(to: CChar.self))
        let mask = UInt32(STATX_BASIC_STATS) | UInt32(STATX_BTIME)
        let stat = unsafe StatOperation(
            directory: directory, path: pathPointer, flags: flags, mask: mask, buffer: buffer)
        _ = try await stat.run()
        return unsafe FileStatus(buffer.pointee)
    }
}

extension FileStatus {
    /// The status the kernel filled in.
    init(_ raw: statx) {
        size = Int64(bitPattern: raw.stx_size)
        let mode = UInt32(raw.stx_mode)
        switch mode & UInt32(Glibc.S_IFMT) {
        case UInt32(Glibc.S_IFREG): kind = .regular
        case UInt32(Glibc.S_IFDIR): kind = .directory
        case UInt32(Glibc.S_IFLNK): kind = .symbolicLink
        case UInt32(Glibc.S_IFIFO): kind = .fifo
        case UInt32(Glibc.S_IFSOCK): kind = .socket
        case UInt32(Glibc.S_IFCHR): kind = .characterDevice
        case UInt32(Glibc.S_IFBLK): kind = .blockDevice
        default: kind = .unknown
        }
        permissions = FilePermissions(rawValue: mode_t(mode & 0o7777))
        linkCount = raw.stx_nlink
        userID = raw.stx_uid
        groupID = raw.stx_gid
        inode = raw.stx_ino
        device = UInt64(raw.stx_dev_major) << 32 | UInt64(raw.stx_dev_minor)
        blockSize = raw.stx_blksize
        allocatedBlocks = raw.stx_blocks
        func time(_ t: statx_timestamp) -> Timestamp { Timestamp(seconds: t.tv_sec, nanoseconds: t.tv_nsec) }
        accessTime = time(raw.stx_atime)
        modificationTime = time(raw.stx_mtime)
        statusChangeTime = time(raw.stx_ctime)
        creationTime = raw.stx_mask & UInt32(STATX_BTIME) != 0 ? time(raw.stx_btime) : nil
    }
}
