internal import CLiburing
import Glibc

// The operations on an open file descriptor: read, write, open, close, sync, stat.
// (See IOOperation.swift for what each definition owns.)

/// `read(2)` / `pread(2)` of up to `count` bytes into `buffer`.
@safe struct ReadOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `buffer` is lent by the awaiting caller until the final completion.
    var fd: Int32
    var buffer: UnsafeMutableRawPointer?
    var count: UInt32
    /// `UInt64.max` (-1) reads at the file's current position.
    var offset: UInt64

    var name: IOError.Operation { .read }
    static var retry: RetryPolicy { .readable }
    static var triesWithoutWaiting: Bool { true }
    /// A read of at least ``largeRead`` bytes is tried at once even on a busy ring: its copy
    /// costs far more than a system call of its own, and made right away it lands in a buffer
    /// the caller is about to use, warm in the core's cache. Smaller reads wait for the turn's
    /// batch.
    var triesWithoutWaitingWhenBusy: Bool { count >= Self.largeRead }
    static let largeRead: UInt32 = 32 * 1024
    var descriptor: Int32 { fd }

    @inline(__always)
    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_read(sqe, fd, buffer, count, offset)
    }
}

/// `write(2)` / `pwrite(2)` of up to `count` bytes from `buffer`; with `append`, at the end of the
/// file whatever `offset` says (`RWF_APPEND`).
@safe struct WriteOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `buffer` is lent by the awaiting caller until the final completion.
    var fd: Int32
    var buffer: UnsafeRawPointer?
    var count: UInt32
    /// `UInt64.max` (-1) writes at the file's current position.
    var offset: UInt64
    var append = false

    var name: IOError.Operation { .write }
    static var retry: RetryPolicy { .writable }
    var descriptor: Int32 { fd }

    @inline(__always)
    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_write(sqe, fd, buffer, count, offset)
        if append { unsafe sqe.pointee.rw_flags = UInt32(bitPattern: RWF_APPEND) }
    }
}

/// `openat(2)`: `path` relative to `directory` (`AT_FDCWD`: the working directory).
@safe struct OpenOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `path` is owned by the awaiting caller until the final completion.
    var directory: Int32 = AT_FDCWD
    var path: UnsafePointer<CChar>
    var flags: Int32
    var mode: mode_t

    var name: IOError.Operation { .open }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { directory }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_openat(sqe, directory, path, flags, mode)
    }

    /// `opened` was just opened with `flags` (and with `directory`, beneath it without crossing
    /// a mount point): the current ring remembers what that says about it
    /// (``RingDriver/noteOpened(_:flags:onFileSystemOf:)``), so its first read or status asks
    /// the kernel less. Nothing when the caller is not nonisolated code on a ring's thread (the
    /// first read or status then learns it).
    static func noteOpened(
        _ opened: Int32, flags: Int32, onFileSystemOf directory: Int32? = nil,
        isolation: isolated (any Actor)? = #isolation
    ) {
        guard isolation == nil, let unretained = unsafe RingExecutor.currentUnretained else { return }
        // SAFETY: this is the ring's own thread, and a ring outlives its thread's loop, so the reference is valid for
        // this synchronous call without a retain; the driver is only touched on this thread.
        unsafe unretained._withUnsafeGuaranteedRef {
            unsafe $0.driver.pointee.noteOpened(opened, flags: flags, onFileSystemOf: directory)
        }
    }
}

/// `openat2(2)` for reading, confined beneath `directory` (`RESOLVE_BENEATH`,
/// `RESOLVE_NO_MAGICLINKS`). `how` is ``ResolveStorage``, owned by the caller.
@safe struct OpenBeneathOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `path` and `how` are owned by the awaiting caller until the final
    // completion (the kernel copies `how` when the entry is submitted, after the task suspended).
    var directory: Int32
    var path: UnsafePointer<CChar>
    var how: ResolveStorage

    /// The `open_how` of one call, taken by the caller and given back after the call returns.
    @safe struct ResolveStorage: @unchecked Sendable {
        // SAFETY (@safe): `pointer` is allocated in init and freed (once) by its owner after the call that lends it
        // returns.
        // @unchecked Sendable: owned by one call; see OpenBeneathOperation.
        fileprivate let pointer: UnsafeMutablePointer<open_how>

        /// Read-only opening with `options` (raw `O_*` flags), confined beneath the directory;
        /// with `sameMount`, also without crossing a mount point (`RESOLVE_NO_XDEV`: `EXDEV`
        /// if the path does).
        init(options: Int32, sameMount: Bool) {
            // A scratch block (an open_how is 24 bytes): no allocation once the free list is warm.
            unsafe pointer = unsafe ScratchBlocks.take().bindMemory(to: open_how.self, capacity: 1)
            unsafe pointer.initialize(
                to: open_how(
                    flags: UInt64(UInt32(bitPattern: O_RDONLY | options | O_CLOEXEC)), mode: 0,
                    resolve: UInt64(
                        RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | (sameMount ? RESOLVE_NO_XDEV : 0))))
        }

        func free() {
            unsafe pointer.deinitialize(count: 1)
            unsafe ScratchBlocks.give(UnsafeMutableRawPointer(pointer))
        }
    }

    var name: IOError.Operation { .open }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { directory }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_openat2(sqe, directory, path, how.pointer)
    }
}

/// `close(2)`. Never retried: the descriptor is released whatever close returns.
struct CloseOperation: IOOperation {
    var fd: Int32

    var name: IOError.Operation { .close }
    static var retry: RetryPolicy { .never }
    /// Not counted: a close is what the other operations on the descriptor are waited for.
    var descriptor: Int32 { -1 }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_close(sqe, fd)
    }
}

/// `fsync(2)`, or `fdatasync(2)` with `dataOnly`.
struct SyncOperation: IOOperation {
    var fd: Int32
    var dataOnly: Bool

    var name: IOError.Operation { .sync }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_fsync(sqe, fd, dataOnly ? IORING_FSYNC_DATASYNC : 0)
    }
}

/// `ftruncate(2)` to `length` bytes. `IORING_OP_FTRUNCATE` is Linux 6.9: an older kernel ring
/// runs the same entry on the blocking pool (``IOOperation/optionalOpcode``).
struct TruncateOperation: IOOperation {
    /// The kernel's number for `IORING_OP_FTRUNCATE` (liburing 2.3's headers predate it).
    static let opcode: UInt8 = 55

    var fd: Int32
    var length: Int64

    var name: IOError.Operation { .truncate }
    static var retry: RetryPolicy { .resubmit }
    static var optionalOpcode: Bool { true }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_rw(Int32(Self.opcode), sqe, fd, nil, 0, UInt64(bitPattern: length))
    }
}

/// `fallocate(2)` of `length` bytes from `offset` with `mode` (`FALLOC_FL_KEEP_SIZE`,
/// `FALLOC_FL_PUNCH_HOLE`, `FALLOC_FL_ZERO_RANGE`). `IORING_OP_FALLOCATE` is Linux 5.6.
struct AllocateOperation: IOOperation {
    var fd: Int32
    var mode: Int32
    var offset: Int64
    var length: Int64

    var name: IOError.Operation { .allocate }
    static var retry: RetryPolicy { .resubmit }
    static var optionalOpcode: Bool { true }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_fallocate(sqe, fd, mode, off_t(offset), off_t(length))
    }
}
