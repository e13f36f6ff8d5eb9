import Glibc

/// The fields of one io_uring submission entry (`struct io_uring_sqe`), for submitting an
/// operation swift-uring does not wrap with ``Uring/submit(_:timeout:)``. Field names follow
/// `io_uring_sqe`; see `io_uring_enter(2)` for what each opcode reads.
///
/// The runtime sets `user_data` and owns linking, buffer selection and registered files, so
/// those flags are refused.
public struct SubmissionEntry: Sendable, Hashable {
    /// `opcode`: the `IORING_OP_*` number.
    public var opcode: UInt8
    /// `flags`: `IOSQE_IO_DRAIN` (0x02) and `IOSQE_ASYNC` (0x10) are accepted; the others are refused.
    public var flags: UInt8 = 0
    /// `ioprio`.
    public var ioPriority: UInt16 = 0
    /// `fd`: the descriptor the operation acts on (-1 for none). A ``File/close()`` of it waits
    /// for the operation, as for every other operation.
    public var descriptor: Int32 = -1
    /// `off` (also `addr2`).
    public var offset: UInt64 = 0
    /// `addr`: a pointer or value, as the opcode says.
    public var address: UInt64 = 0
    /// `len`.
    public var length: UInt32 = 0
    /// The 32-bit opcode-specific flags word (`rw_flags`, `poll32_events`, `msg_flags`,
    /// `timeout_flags`, `open_flags`, …).
    public var operationFlags: UInt32 = 0
    /// `buf_index`.
    public var bufferIndex: UInt16 = 0
    /// `personality`.
    public var personality: UInt16 = 0
    /// `file_index` (also `splice_fd_in`).
    public var fileIndex: UInt32 = 0
    /// `addr3`.
    public var address3: UInt64 = 0

    public init(opcode: UInt8) {
        self.opcode = opcode
    }
}

extension Uring {
    /// Submits `entry` and suspends until its completion: the escape hatch for an io_uring
    /// operation the library does not wrap (a newer opcode, an unusual flag). Returns the
    /// completion's result (`cqe->res`) when it is not negative.
    ///
    /// ```swift
    /// // IORING_OP_FADVISE (24): tell the kernel a file will be read sequentially.
    /// var entry = SubmissionEntry(opcode: 24)
    /// entry.descriptor = file.descriptor.rawValue
    /// entry.length = 0                                   // the whole file
    /// entry.operationFlags = UInt32(POSIX_FADV_SEQUENTIAL)
    /// _ = try await unsafe Uring.submit(entry)
    /// ```
    ///
    /// The same rules as every operation hold: the call returns only after the final completion
    /// (cancelled and timed out included), so memory the entry points to may be reused as soon as
    /// it returns; cancelling the task submits an `ASYNC_CANCEL` for it; `timeout` becomes a linked
    /// timeout.
    ///
    /// **Safety contract** (why the function is `@unsafe`): every address in the entry must
    /// point to memory that is valid, of the size the opcode reads or writes, and not used by
    /// anyone else until this call returns; the operation must post exactly one completion.
    /// Entries that are known to post more (multishot accept, receive, poll, timeout or read,
    /// zero-copy sends), that would act on the ring's own requests (cancel, poll or timeout
    /// removal, `MSG_RING`, provided buffers, registered files) or that carry link, fixed-file,
    /// buffer-select or skip-success flags are refused before submission.
    ///
    /// On the epoll driver the entry is executed by the driver's own system calls: the opcodes
    /// swift-uring itself uses work (read, write, send, receive, accept, connect, poll, open,
    /// statx, fsync, fallocate, ftruncate, unlink, rename, mkdir, link, symlink, close, shutdown,
    /// timeout, nop); any other ends with `EINVAL`.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/custom``: `.invalidArgument` for a refused
    ///   entry; `.systemCall` with the errno for a negative result; ``IOError/Code/cancelled``,
    ///   ``IOError/Code/timedOut``, ``IOError/Code/closed``.
    @unsafe
    public static func submit(_ entry: SubmissionEntry, timeout: Duration? = nil) async throws(IOError) -> Int32 {
        let operation = CustomOperation(entry: entry)
        if let problem = operation.problem {
            var error = IOError(.invalidArgument, errno: .invalidArgument, operation: .custom)
            error.subject = .feature(problem)
            throw error
        }
        return try await operation.run(timeout: timeout)
    }
}
