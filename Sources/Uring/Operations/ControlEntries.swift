internal import CLiburing
import Glibc

/// The submission entries the driver makes for itself, not for an awaited operation: cancels,
/// linked deadlines, timers that enqueue jobs, wake-ups, and the multishot requests that feed
/// streams. With the operation definitions (`Definitions/`), the only `io_uring_prep_*` call
/// sites of the project. Each fills a free SQE; the caller sets `user_data` afterwards.
enum ControlEntry {
    /// A timeout linked to the previous SQE (which must carry `IOSQE_IO_LINK`): the deadline of
    /// one operation. `timespec` lives in the operation's slot.
    @inline(__always)
    static func linkedTimeout(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>
    ) {
        unsafe io_uring_prep_link_timeout(sqe, timespec, 0)
    }

    /// A relative timer that completes with -ETIME when `timespec` has elapsed (a job's delay).
    static func timer(_ sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_timeout(sqe, timespec, 0, 0)
    }

    /// Cancels the request whose `user_data` is `userData`.
    @inline(__always)
    static func cancel(_ sqe: UnsafeMutablePointer<io_uring_sqe>, target userData: UInt64) {
        unsafe io_uring_prep_cancel64(sqe, userData, 0)
    }

    /// Cancels every request on descriptor `fd` (`IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL`,
    /// kernel 5.19); the result is how many were found.
    static func cancelAll(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32) {
        unsafe io_uring_prep_cancel_fd(sqe, fd, UInt32(IORING_ASYNC_CANCEL_ALL))
    }

    /// A no-op: an entry already taken that must not do anything (its completion is ignored).
    @inline(__always)
    static func nop(_ sqe: UnsafeMutablePointer<io_uring_sqe>) {
        unsafe io_uring_prep_nop(sqe)
    }

    /// The read of the eventfd that other threads write to wake the ring.
    static func wakeRead(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, buffer: UnsafeMutablePointer<UInt64>) {
        unsafe io_uring_prep_read(sqe, fd, buffer, 8, 0)
    }

    /// Posts a CQE with `userData` (and result 0) into the ring whose file descriptor is `ringFD`.
    static func message(_ sqe: UnsafeMutablePointer<io_uring_sqe>, ringFD: Int32, userData: UInt64) {
        unsafe io_uring_prep_msg_ring(sqe, ringFD, 0, userData, 0)
    }

    /// Accepts connections until cancelled or failed: one CQE per connection, each with
    /// `IORING_CQE_F_MORE` while the request stays armed. New descriptors are close-on-exec.
    static func multishotAccept(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32) {
        unsafe io_uring_prep_multishot_accept(sqe, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
    }

    /// A multishot poll for `events`: one completion (the ready mask, with `IORING_CQE_F_MORE`)
    /// each time the descriptor is woken, until cancelled or failed.
    static func multishotPoll(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, events: UInt32) {
        unsafe io_uring_prep_poll_multishot(sqe, fd, events)
    }

    /// A receive into a buffer the kernel takes from buffer group `group` (its id comes back in
    /// the CQE's flags); with `multishot`, one completion per chunk until cancelled, failed or at
    /// end of stream.
    static func bufferedReceive(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, group: UInt16, multishot: Bool) {
        if multishot {
            unsafe io_uring_prep_recv_multishot(sqe, fd, nil, 0, 0)
        } else {
            unsafe io_uring_prep_recv(sqe, fd, nil, 0, 0)
        }
        unsafe sqe.pointee.flags |= cliburing_sqe_flag_buffer_select()
        unsafe sqe.pointee.buf_group = group
    }

    /// Gives the operation in `sqe` a deadline: links it to `timeoutSQE` (`IOSQE_IO_LINK`), a
    /// linked timeout of `timespec` tagged `userData`.
    @inline(__always)
    static func deadline(
        after sqe: UnsafeMutablePointer<io_uring_sqe>, _ timeoutSQE: UnsafeMutablePointer<io_uring_sqe>,
        timespec: UnsafeMutablePointer<__kernel_timespec>, userData: UInt64
    ) {
        unsafe linkNext(sqe)
        unsafe linkedTimeout(timeoutSQE, timespec: timespec)
        unsafe setUserData(timeoutSQE, userData)
    }

    /// Links the next SQE to this one (`IOSQE_IO_LINK`).
    @inline(__always)
    static func linkNext(_ sqe: UnsafeMutablePointer<io_uring_sqe>) {
        unsafe sqe.pointee.flags |= cliburing_sqe_flag_io_link()
    }

    @inline(__always)
    static func setUserData(_ sqe: UnsafeMutablePointer<io_uring_sqe>, _ userData: UInt64) {
        unsafe sqe.pointee.user_data = userData
    }
}

extension __kernel_timespec {
    /// `duration` (clamped at zero) as the kernel reads it.
    @inline(__always)
    init(_ duration: Duration) {
        let (seconds, nanoseconds) = duration.timespecComponents
        self.init(tv_sec: seconds, tv_nsec: nanoseconds)
    }
}
