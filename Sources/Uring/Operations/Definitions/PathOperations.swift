internal import CLiburing
import Glibc

// The operations on names in the file system: remove, rename, make a directory.
// (See IOOperation.swift for what each definition owns.)

/// `unlinkat(2)` of a file, or with `directory` of an empty directory (`AT_REMOVEDIR`).
@safe struct RemoveOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `path` is owned by the awaiting caller until the final completion.
    var path: UnsafePointer<CChar>
    var directory: Bool

    var name: IOError.Operation { directory ? .removeDirectory : .remove }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { -1 }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_unlinkat(sqe, AT_FDCWD, path, directory ? AT_REMOVEDIR : 0)
    }
}

/// `renameat2(2)` of `source` to `destination`, replacing it.
@safe struct RenameOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: both paths are owned by the awaiting caller until the final completion.
    var source: UnsafePointer<CChar>
    var destination: UnsafePointer<CChar>

    var name: IOError.Operation { .rename }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { -1 }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_renameat(sqe, AT_FDCWD, source, AT_FDCWD, destination, 0)
    }
}

/// `mkdirat(2)` with permission bits `mode`.
@safe struct MakeDirectoryOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `path` is owned by the awaiting caller until the final completion.
    var path: UnsafePointer<CChar>
    var mode: mode_t

    var name: IOError.Operation { .makeDirectory }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { -1 }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_mkdirat(sqe, AT_FDCWD, path, mode)
    }
}

/// `linkat(2)`: a new name `newPath` for the file at `existing` (a hard link; a symbolic link
/// at `existing` is linked itself, not followed). `IORING_OP_LINKAT` is Linux 5.15.
@safe struct LinkOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: both paths are owned by the awaiting caller until the final completion.
    var existing: UnsafePointer<CChar>
    var newPath: UnsafePointer<CChar>

    var name: IOError.Operation { .link }
    static var retry: RetryPolicy { .resubmit }
    static var optionalOpcode: Bool { true }
    var descriptor: Int32 { -1 }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_linkat(sqe, AT_FDCWD, existing, AT_FDCWD, newPath, 0)
    }
}

/// `symlinkat(2)`: a symbolic link at `linkPath` whose content is `target` (not checked: a
/// link may dangle). `IORING_OP_SYMLINKAT` is Linux 5.15.
@safe struct SymbolicLinkOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: both paths are owned by the awaiting caller until the final completion.
    var target: UnsafePointer<CChar>
    var linkPath: UnsafePointer<CChar>

    var name: IOError.Operation { .symbolicLink }
    static var retry: RetryPolicy { .resubmit }
    static var optionalOpcode: Bool { true }
    var descriptor: Int32 { -1 }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_symlinkat(sqe, target, AT_FDCWD, linkPath)
    }
}
