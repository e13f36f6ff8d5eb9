internal import CLiburing
import Glibc

// The operations on sockets: accept, connect, send, receive, shut down.
// (See IOOperation.swift for what each definition owns.)

/// Accepts one connection; the new descriptor is close-on-exec. The peer address is not
/// collected (`TCPConnection.peerAddress` asks for it).
struct AcceptOperation: IOOperation {
    var fd: Int32

    var name: IOError.Operation { .accept }
    static var retry: RetryPolicy { .readable }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_accept(sqe, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
    }
}

/// `connect(2)` to the address in `storage` (the kernel copies it when the entry is submitted).
@safe struct ConnectOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `address` is owned by the awaiting caller until the final completion.
    var fd: Int32
    var address: UnsafePointer<sockaddr>
    var length: socklen_t

    var name: IOError.Operation { .connect }
    static var retry: RetryPolicy { .writable }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_connect(sqe, fd, address, length)
    }
}

/// One `recv(2)` of up to `count` bytes into `buffer`.
@safe struct ReceiveOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `buffer` is lent by the awaiting caller until the final completion.
    var fd: Int32
    var buffer: UnsafeMutableRawPointer?
    var count: Int

    var name: IOError.Operation { .receive }
    static var retry: RetryPolicy { .readable }
    var descriptor: Int32 { fd }

    @inline(__always)
    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_recv(sqe, fd, buffer, count, 0)
    }
}

/// One `send(2)` of up to `count` bytes, which never raises `SIGPIPE` (a closed peer is `EPIPE`).
/// `MSG_WAITALL`: on a stream socket io_uring sends the rest of a partial send itself (it waits
/// for room and goes on) and completes once with the total, instead of handing every partial
/// count back for another entry; the epoll driver's `send` ignores the flag and returns partial
/// counts, which the caller's loop sends on from. (A write cancelled or timed out part-way has
/// sent an unknown part of its bytes, with or without the flag: the connection's stream is then
/// only fit for closing.)
/// With `zeroCopy` the kernel pins the pages instead of copying them: two completions, the
/// result (with `IORING_CQE_F_MORE`), then a notification once the kernel has let go of the
/// buffer.
@safe struct SendOperation: IOOperation, @unchecked Sendable {
    // SAFETY (@safe): the pointers are lent by the awaiting caller, which stays suspended until the final completion
    // (`IOOperation.run`), so they are valid whenever a driver encodes or executes the value.
    // @unchecked Sendable: `buffer` is lent by the awaiting caller until the final completion.
    var fd: Int32
    var buffer: UnsafeRawPointer?
    var count: Int
    var zeroCopy = false

    var name: IOError.Operation { .send }
    static var retry: RetryPolicy { .writable }
    var descriptor: Int32 { fd }

    @inline(__always)
    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        if zeroCopy {
            unsafe io_uring_prep_send_zc(sqe, fd, buffer, count, Int32(MSG_NOSIGNAL), 0)
        } else {
            unsafe io_uring_prep_send(sqe, fd, buffer, count, Int32(MSG_NOSIGNAL) | Int32(MSG_WAITALL))
        }
    }
}

/// `sendmsg(2)` of one datagram (with its destination when the socket is not connected), which
/// never raises `SIGPIPE`. Everything the header points to is ``MessageStorage``, owned by the
/// caller until the final completion.
struct SendMessageOperation: IOOperation, @unchecked Sendable {
    // @unchecked Sendable: the message is owned by the awaiting caller until the final completion.
    var fd: Int32
    var message: MessageStorage

    var name: IOError.Operation { .send }
    static var retry: RetryPolicy { .writable }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_sendmsg(sqe, fd, message.header, UInt32(MSG_NOSIGNAL))
    }
}

/// `recvmsg(2)` of one datagram and its sender's address, into ``MessageStorage`` owned by the
/// caller until the final completion.
struct ReceiveMessageOperation: IOOperation, @unchecked Sendable {
    // @unchecked Sendable: the message is owned by the awaiting caller until the final completion.
    var fd: Int32
    var message: MessageStorage

    var name: IOError.Operation { .receive }
    static var retry: RetryPolicy { .readable }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_recvmsg(sqe, fd, message.header, 0)
    }
}

/// `shutdown(2)` of one or both directions (`how`: `SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`).
struct ShutdownOperation: IOOperation {
    var fd: Int32
    var how: Int32

    var name: IOError.Operation { .shutdown }
    static var retry: RetryPolicy { .resubmit }
    var descriptor: Int32 { fd }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        unsafe io_uring_prep_shutdown(sqe, fd, how)
    }
}
