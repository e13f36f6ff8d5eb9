internal import CLiburing
import Glibc

// The operations that move no data: the no-op, the timer, the readiness poll.
// (See IOOperation.swift for what each definition owns.)

/// A request that does nothing: one round trip through the driver.
struct NopOperation: IOOperation {
    var name: IOError.Operation { .nop }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { -1 }

    @inline(__always)
    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_nop(sqe)
    }
}

/// A relative timer: completes with `-ETIME` once `duration` has elapsed.
struct SleepOperation: IOOperation {
    var duration: Duration

    var name: IOError.Operation { .sleep }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { -1 }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        // SAFETY: `timespec` lives in the operation's slot until the final completion.
        unsafe timespec.pointee = __kernel_timespec(duration)
        unsafe io_uring_prep_timeout(sqe, timespec, 0, 0)
    }
}

/// A one-shot readiness poll for `events` (`POLLIN`, `POLLOUT`): what the retry of an operation
/// that met `EAGAIN` waits on.
struct PollOperation: IOOperation {
    var fd: Int32
    var events: UInt32

    var name: IOError.Operation { .poll }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_poll_add(sqe, fd, events)
    }
}
