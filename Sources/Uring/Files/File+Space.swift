import Glibc

// The size of a file and the space behind it: truncate and allocate.

extension File {
    /// How ``allocate(at:count:mode:)`` changes the file's space (`fallocate` mode flags).
    public struct AllocationMode: OptionSet, Sendable, Hashable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// Allocate blocks without changing the file's size, even past its end
        /// (`FALLOC_FL_KEEP_SIZE`): room reserved for appends to come.
        public static let keepSize = AllocationMode(rawValue: 0x01)
        /// Free the blocks of the range, which then reads as zeros; the size stays
        /// (`FALLOC_FL_PUNCH_HOLE`, which implies ``keepSize``, added for you).
        public static let punchHole = AllocationMode(rawValue: 0x02)
        /// Make the range read as zeros, keeping (or allocating) its blocks
        /// (`FALLOC_FL_ZERO_RANGE`); the size grows to cover it unless ``keepSize`` is given.
        public static let zeroRange = AllocationMode(rawValue: 0x10)
    }

    /// Sets the file's size to `size` bytes (`ftruncate`): bytes past it are dropped; a file
    /// that grows reads as zeros in the new part (a hole, no blocks allocated).
    ///
    /// ```swift
    /// try await log.truncate(to: 0)            // empty it, keeping the descriptor
    /// try await sparse.truncate(to: 1 << 30)   // a 1 GiB file of zeros, no blocks used
    /// ```
    ///
    /// On the kernel ring with `IORING_OP_FTRUNCATE` (Linux 6.9); on older kernels and on the epoll
    /// driver the same call runs on a worker thread. The ring is never blocked.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/truncate``: `.invalidArgument` for a
    ///   negative size; `EINVAL` for a descriptor not open for writing or not a regular file,
    ///   `EFBIG`, `EBADF`, ``IOError/Code/cancelled``.
    public func truncate(to size: Int64) async throws(IOError) {
        guard size >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .truncate) }
        _ = try await TruncateOperation(fd: descriptor.rawValue, length: size).run()
    }

    /// Allocates (or, with ``AllocationMode/punchHole``, frees) the space of `count` bytes from
    /// `offset` (`fallocate`). With the default mode the blocks are reserved and the file grows to
    /// cover the range, so later writes there cannot fail with `ENOSPC`.
    ///
    /// ```swift
    /// try await file.allocate(at: 0, count: 64 << 20)                     // reserve 64 MiB
    /// try await file.allocate(at: 0, count: 4096, mode: .punchHole)       // give a block back
    /// ```
    ///
    /// On the kernel ring (`IORING_OP_FALLOCATE`, Linux 5.6), or on a worker thread for the epoll
    /// driver.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/allocate``: `.invalidArgument` for a negative
    ///   offset or a count below 1; `EOPNOTSUPP` when the file system does not support the mode
    ///   (tmpfs, ext4 and xfs support all three), `ENOSPC`, `EBADF`, ``IOError/Code/cancelled``.
    public func allocate(at offset: Int64, count: Int64, mode: AllocationMode = []) async throws(IOError) {
        guard offset >= 0, count >= 1 else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .allocate)
        }
        let flags = mode.contains(.punchHole) ? mode.union(.keepSize) : mode
        _ = try await AllocateOperation(fd: descriptor.rawValue, mode: flags.rawValue, offset: offset, length: count)
            .run()
    }
}
