internal import CLiburing
import Glibc

/// The builders for submission entries: the only `io_uring_prep_*` call sites in the project.
/// Each fills a free SQE; the caller sets `user_data` afterwards.
enum Prep {
    @inline(__always)
    static func nop(_ sqe: UnsafeMutablePointer<io_uring_sqe>) {
        io_uring_prep_nop(sqe)
    }

    /// `offset` is `UInt64.max` (-1) for "the file's current position".
    @inline(__always)
    static func read(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, buffer: UnsafeMutableRawPointer?, count: UInt32,
        offset: UInt64
    ) {
        io_uring_prep_read(sqe, fd, buffer, count, offset)
    }

    /// With `append`, the write goes to the end of the file whatever `offset` says (`RWF_APPEND`).
    @inline(__always)
    static func write(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, buffer: UnsafeRawPointer?, count: UInt32, offset: UInt64,
        append: Bool = false
    ) {
        io_uring_prep_write(sqe, fd, buffer, count, offset)
        if append { sqe.pointee.rw_flags = UInt32(bitPattern: RWF_APPEND) }
    }

    static func open(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, directory: Int32, path: UnsafePointer<CChar>, flags: Int32,
        mode: mode_t
    ) {
        io_uring_prep_openat(sqe, directory, path, flags, mode)
    }

    /// `openat2`: `how` (flags, mode, resolve restrictions) must stay valid until submission.
    static func open(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, directory: Int32, path: UnsafePointer<CChar>,
        how: UnsafeMutablePointer<open_how>
    ) {
        io_uring_prep_openat2(sqe, directory, path, how)
    }

    static func close(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32) {
        io_uring_prep_close(sqe, fd)
    }

    static func sync(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, dataOnly: Bool) {
        io_uring_prep_fsync(sqe, fd, dataOnly ? IORING_FSYNC_DATASYNC : 0)
    }

    static func stat(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, directory: Int32, path: UnsafePointer<CChar>, flags: Int32,
        mask: UInt32, buffer: UnsafeMutablePointer<statx>
    ) {
        io_uring_prep_statx(sqe, directory, path, flags, mask, buffer)
    }

    static func unlink(_ sqe: UnsafeMutablePointer<io_uring_sqe>, directory: Int32, path: UnsafePointer<CChar>, flags: Int32) {
        io_uring_prep_unlinkat(sqe, directory, path, flags)
    }

    static func rename(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, from: UnsafePointer<CChar>, to: UnsafePointer<CChar>, flags: UInt32
    ) {
        io_uring_prep_renameat(sqe, AT_FDCWD, from, AT_FDCWD, to, flags)
    }

    static func makeDirectory(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, directory: Int32, path: UnsafePointer<CChar>, mode: mode_t
    ) {
        io_uring_prep_mkdirat(sqe, directory, path, mode)
    }

    /// A relative timeout that completes with -ETIME when `timespec` has elapsed.
    @inline(__always)
    static func timeout(_ sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        io_uring_prep_timeout(sqe, timespec, 0, 0)
    }

    /// A timeout linked to the previous SQE (which must carry IOSQE_IO_LINK).
    @inline(__always)
    static func linkedTimeout(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>
    ) {
        io_uring_prep_link_timeout(sqe, timespec, 0)
    }

    /// Accepts one connection; the new descriptor is close-on-exec. The peer address is not
    /// collected (read it with getpeername when asked for).
    @inline(__always)
    static func accept(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32) {
        io_uring_prep_accept(sqe, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
    }

    /// Accepts connections until cancelled or failed: one CQE per connection, each with
    /// `IORING_CQE_F_MORE` while the operation stays armed.
    static func multishotAccept(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32) {
        io_uring_prep_multishot_accept(sqe, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
    }

    /// Receives until cancelled, failed or at end of stream, each time into a buffer the kernel
    /// takes from buffer group `group` (its id comes back in the CQE's flags).
    static func multishotReceive(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, group: UInt16) {
        io_uring_prep_recv_multishot(sqe, fd, nil, 0, 0)
        sqe.pointee.flags |= cliburing_sqe_flag_buffer_select()
        sqe.pointee.buf_group = group
    }

    /// One receive into a buffer the kernel takes from buffer group `group`.
    static func receive(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, group: UInt16) {
        io_uring_prep_recv(sqe, fd, nil, 0, 0)
        sqe.pointee.flags |= cliburing_sqe_flag_buffer_select()
        sqe.pointee.buf_group = group
    }

    /// A zero-copy send: the kernel pins `buffer` instead of copying it. Two CQEs: the result
    /// (with `IORING_CQE_F_MORE`), then a notification (`IORING_CQE_F_NOTIF`) once the kernel no
    /// longer reads the buffer. Never raises SIGPIPE.
    static func sendZeroCopy(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, buffer: UnsafeRawPointer?, count: Int) {
        io_uring_prep_send_zc(sqe, fd, buffer, count, Int32(MSG_NOSIGNAL), 0)
    }

    /// `address` must stay valid until the SQE is submitted (the kernel copies it then).
    static func connect(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, address: UnsafePointer<sockaddr>, length: socklen_t
    ) {
        io_uring_prep_connect(sqe, fd, address, length)
    }

    @inline(__always)
    static func receive(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, buffer: UnsafeMutableRawPointer?, count: Int) {
        io_uring_prep_recv(sqe, fd, buffer, count, 0)
    }

    /// A send that never raises SIGPIPE (a closed peer is an `EPIPE` error instead).
    @inline(__always)
    static func send(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, buffer: UnsafeRawPointer?, count: Int) {
        io_uring_prep_send(sqe, fd, buffer, count, Int32(MSG_NOSIGNAL))
    }

    /// `message` (and what it points to) must stay valid until the final completion.
    static func sendMessage(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, message: UnsafePointer<msghdr>) {
        io_uring_prep_sendmsg(sqe, fd, message, UInt32(MSG_NOSIGNAL))
    }

    /// `message` (and what it points to) must stay valid until the final completion.
    static func receiveMessage(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, message: UnsafeMutablePointer<msghdr>) {
        io_uring_prep_recvmsg(sqe, fd, message, 0)
    }

    static func shutdown(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, how: Int32) {
        io_uring_prep_shutdown(sqe, fd, how)
    }

    /// Posts a CQE with `userData` (and result 0) into the ring whose file descriptor is `ringFD`.
    static func message(_ sqe: UnsafeMutablePointer<io_uring_sqe>, ringFD: Int32, userData: UInt64) {
        io_uring_prep_msg_ring(sqe, ringFD, 0, userData, 0)
    }

    /// One-shot readiness poll (`events`: POLLIN, POLLOUT…).
    static func poll(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32, events: UInt32) {
        io_uring_prep_poll_add(sqe, fd, events)
    }

    @inline(__always)
    static func cancel(_ sqe: UnsafeMutablePointer<io_uring_sqe>, target userData: UInt64) {
        io_uring_prep_cancel64(sqe, userData, 0)
    }

    /// Cancels every request on descriptor `fd` (`IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL`,
    /// kernel 5.19); the result is how many were found.
    static func cancelAll(_ sqe: UnsafeMutablePointer<io_uring_sqe>, fd: Int32) {
        io_uring_prep_cancel_fd(sqe, fd, UInt32(IORING_ASYNC_CANCEL_ALL))
    }

    @inline(__always)
    static func linkNext(_ sqe: UnsafeMutablePointer<io_uring_sqe>) {
        sqe.pointee.flags |= cliburing_sqe_flag_io_link()
    }

    @inline(__always)
    static func setUserData(_ sqe: UnsafeMutablePointer<io_uring_sqe>, _ userData: UInt64) {
        sqe.pointee.user_data = userData
    }
}

extension Duration {
    /// The duration as a kernel timespec, clamped at zero.
    var kernelTimespec: __kernel_timespec {
        let (seconds, attoseconds) = components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return __kernel_timespec(tv_sec: 0, tv_nsec: 0) }
        return __kernel_timespec(tv_sec: seconds, tv_nsec: attoseconds / 1_000_000_000)
    }
}
