internal import CLiburing
import Glibc

// The system calls behind each opcode, read from the submission entry's fields exactly as the
// kernel reads them (liburing's io_uring_prep_* encodings): the non-blocking attempts the ring
// thread makes, and the blocking calls the worker pool makes.

extension SoftRing {
    /// Tries the call of a socket, pipe or poll entry without blocking: its result and
    /// completion flags, or `-EAGAIN` when it must wait for readiness. `readiness` is the epoll
    /// events that woke it (0 on the first try).
    mutating func attempt(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, readiness: UInt32, request: UnsafeMutablePointer<SoftRequest>?
    ) -> (result: Int32, flags: UInt32) {
        let fd = unsafe sqe.pointee.fd
        let address = unsafe UnsafeMutableRawPointer(bitPattern: UInt(sqe.pointee.addr))
        let length = unsafe Int(sqe.pointee.len)
        let flags = unsafe Int32(bitPattern: sqe.pointee.msg_flags) | Int32(MSG_DONTWAIT)
        let rc: Int
        switch unsafe UInt32(sqe.pointee.opcode) {
        case Self.op(IORING_OP_RECV):
            if unsafe sqe.pointee.flags & cliburing_sqe_flag_buffer_select() != 0 {
                let group = unsafe sqe.pointee.buf_group
                guard let buffer = unsafe peekBuffer(group) else {
                    // Like the kernel: a receive that finds data but no buffer fails with
                    // ENOBUFS; without data it waits. (A peek tells which: the readiness that
                    // woke it may be stale, and an edge-triggered socket gives no second edge.)
                    var byte: UInt8 = 0
                    let peeked = unsafe recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
                    if peeked > 0 { return (-ENOBUFS, 0) }
                    if peeked == 0 { return (0, 0) }  // end of stream: no buffer needed
                    let error = Glibc.errno
                    return (error == EWOULDBLOCK ? -EAGAIN : -error, 0)
                }
                let received = unsafe receive(fd, buffer.address, buffer.length, flags)
                if received > 0 {
                    consumeBuffer(group)
                    return unsafe (
                        Int32(received),
                        UInt32(IORING_CQE_F_BUFFER) | UInt32(buffer.id) << UInt32(IORING_CQE_BUFFER_SHIFT)
                    )
                }
                return (received == -Int(EWOULDBLOCK) ? -EAGAIN : Int32(truncatingIfNeeded: received), 0)
            }
            let received = unsafe receive(fd, address, length, flags)
            return (received == -Int(EWOULDBLOCK) ? -EAGAIN : Int32(truncatingIfNeeded: received), 0)
        case Self.op(IORING_OP_SEND), Self.op(IORING_OP_SEND_ZC):
            let sent = unsafe cliburing_send(fd, address, UInt(length), flags)
            return (sent == -Int(EWOULDBLOCK) ? -EAGAIN : Int32(truncatingIfNeeded: sent), 0)
        case Self.op(IORING_OP_SENDMSG):
            rc = unsafe sendmsg(fd, address?.assumingMemoryBound(to: msghdr.self), flags)
        case Self.op(IORING_OP_RECVMSG):
            rc = unsafe recvmsg(fd, address?.assumingMemoryBound(to: msghdr.self), flags)
        case Self.op(IORING_OP_ACCEPT):
            let state = unsafe descriptors.entry(max(fd, 0))
            if unsafe !state.pointee.nonblocking {
                // accept4 has no per-call MSG_DONTWAIT: the listening socket itself must not block.
                let current = fcntl(fd, F_GETFL)
                if current >= 0 && current & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, current | O_NONBLOCK) }
                unsafe state.pointee.nonblocking = true
                // Accepted TCP connections inherit TCP_INQ (see `receive`): no call per connection.
                if cliburing_enable_inq(fd) == 0 { unsafe state.pointee.inq = .on }
            }
            let lengthPointer = unsafe UnsafeMutablePointer<socklen_t>(bitPattern: UInt(sqe.pointee.off))
            let accepted = unsafe cliburing_accept4(
                fd, address?.assumingMemoryBound(to: sockaddr.self), lengthPointer,
                Int32(bitPattern: sqe.pointee.accept_flags))
            return (accepted == -EWOULDBLOCK ? -EAGAIN : accepted, 0)
        case Self.op(IORING_OP_CONNECT):
            // Woken for writability: the connect is over; SO_ERROR says how.
            var error: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard unsafe getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 else { return (-Glibc.errno, 0) }
            return (-error, 0)
        case Self.op(IORING_OP_POLL_ADD):
            let wanted = unsafe sqe.pointee.poll32_events
            if readiness == 0 {
                // First look: the descriptor's state now (edges only tell what changes later).
                var waiter = pollfd(fd: fd, events: Int16(truncatingIfNeeded: wanted), revents: 0)
                let ready = unsafe poll(&waiter, 1, 0)
                if ready < 0 { return (-Glibc.errno, 0) }
                if waiter.revents & Int16(POLLNVAL) != 0 { return (-EBADF, 0) }  // as the kernel ring says
                return (ready == 0 ? -EAGAIN : Int32(UInt16(bitPattern: waiter.revents)), 0)
            }
            let ready = readiness & (wanted | EPOLLERR.rawValue | EPOLLHUP.rawValue)
            return (ready == 0 ? -EAGAIN : Int32(bitPattern: ready), 0)
        case Self.op(IORING_OP_READ):
            return unsafe (SoftRing.streamCall(fd, address, length, reading: true), 0)
        case Self.op(IORING_OP_WRITE):
            return unsafe (SoftRing.streamCall(fd, address, length, reading: false), 0)
        default:
            return (-EINVAL, 0)
        }
        if rc >= 0 { return (Int32(truncatingIfNeeded: rc), 0) }
        let error = Glibc.errno
        return (error == EWOULDBLOCK ? -EAGAIN : -error, 0)
    }

    /// One receive without blocking: the byte count or -errno. Sets `shortRead` when the socket
    /// is drained. A receive that leaves room in its buffer took everything queued (a stream
    /// socket's receive copies until its queue is empty or the buffer full), so a plain `recv`
    /// says so: no message header or control data to copy (`recvmsg` for them cost about 2 % of an
    /// epoll echo server's CPU at 64-byte messages). A receive that exactly fills its buffer (a
    /// 4 KiB message into a 4 KiB buffer) cannot tell; the next receive of that descriptor is then
    /// made with TCP_INQ (the bytes still queued, which the kernel reports with the receive), so
    /// that a run of full buffers does not each pay the receive that would only say EAGAIN; it
    /// goes back to `recv` after the first one with room. Accepted sockets inherit the
    /// listener's TCP_INQ; others get it turned on at their first such receive.
    mutating func receive(_ fd: Int32, _ address: UnsafeMutableRawPointer?, _ length: Int, _ flags: Int32) -> Int {
        guard fd >= 0 else { return -Int(EBADF) }  // no entry for a negative number
        let entry = unsafe descriptors.entry(fd)
        if unsafe entry.pointee.inq == .off || !entry.pointee.filled {
            let received = unsafe recv(fd, address, length, flags)
            guard received >= 0 else { return receiveFailed() }
            shortRead = received < length
            unsafe entry.pointee.filled = received == length && length > 0
            return received
        }
        var remaining: Int32 = -1
        let received = unsafe cliburing_recv_inq(fd, address, UInt(length), flags, &remaining)
        guard received >= 0 else {
            if received == -Int(EAGAIN) { counters.receivesThatWouldBlock &+= 1 }
            return received
        }
        unsafe entry.pointee.filled = received == length && length > 0
        if remaining >= 0 {
            unsafe entry.pointee.inq = .on
            shortRead = remaining == 0
        } else {
            if unsafe entry.pointee.inq == .unknown {
                unsafe entry.pointee.inq = cliburing_enable_inq(fd) == 0 ? .on : .off
            }
            shortRead = received < length
        }
        return received
    }

    /// The -errno of a `recv` that failed, counting one that would have blocked.
    private mutating func receiveFailed() -> Int {
        let error = Glibc.errno
        if error == EAGAIN { counters.receivesThatWouldBlock &+= 1 }
        return -Int(error)
    }

    /// Whether `sqe` is an entry ``tryWithoutWaiting(_:)`` can make: a positioned read, or the
    /// status of an open descriptor (`statx` with `AT_EMPTY_PATH` and an empty path).
    static func canTryWithoutWaiting(_ sqe: UnsafeMutablePointer<io_uring_sqe>) -> Bool {
        unsafe isPositionedRead(sqe) || isDescriptorStatus(sqe)
    }

    /// Whether `sqe` is a read at an offset (not at the file position).
    static func isPositionedRead(_ sqe: UnsafeMutablePointer<io_uring_sqe>) -> Bool {
        unsafe UInt32(sqe.pointee.opcode) == op(IORING_OP_READ) && sqe.pointee.off != UInt64.max
    }

    /// Whether `sqe` is a `statx` of the descriptor itself (no path to resolve).
    static func isDescriptorStatus(_ sqe: UnsafeMutablePointer<io_uring_sqe>) -> Bool {
        guard unsafe UInt32(sqe.pointee.opcode) == op(IORING_OP_STATX), unsafe sqe.pointee.fd >= 0,
            unsafe sqe.pointee.statx_flags & UInt32(Self.emptyPath) != 0,
            let path = unsafe UnsafePointer<CChar>(bitPattern: UInt(sqe.pointee.addr))
        else { return false }
        return unsafe path.pointee == 0
    }

    /// `AT_EMPTY_PATH` (hidden by glibc without `_GNU_SOURCE`).
    static let emptyPath: Int32 = 0x1000
    /// `AT_STATX_DONT_SYNC`: a network file system answers from its cached attributes.
    static let statusWithoutSync: Int32 = 0x4000

    /// The call of `sqe` made without blocking, on either driver (see
    /// `RingDriver.tryWithoutWaiting`): a positioned read with `RWF_NOWAIT`, or a `statx` of a
    /// descriptor (with `AT_STATX_DONT_SYNC`; made only on local file systems, where it reads the
    /// inode in memory). Its result, or -errno (`-EAGAIN` when a read would block).
    static func tryWithoutWaiting(_ sqe: UnsafeMutablePointer<io_uring_sqe>) -> Int32 {
        let address = unsafe UnsafeMutableRawPointer(bitPattern: UInt(sqe.pointee.addr))
        if unsafe UInt32(sqe.pointee.opcode) == op(IORING_OP_STATX) {
            let buffer = unsafe UnsafeMutableRawPointer(bitPattern: UInt(sqe.pointee.off))
            let flags = unsafe Int32(bitPattern: sqe.pointee.statx_flags) | statusWithoutSync
            return unsafe cliburing_statx(
                sqe.pointee.fd, address?.assumingMemoryBound(to: CChar.self), flags, sqe.pointee.len, buffer)
        }
        return unsafe Int32(
            truncatingIfNeeded: cliburing_read_nowait(
                sqe.pointee.fd, address, UInt(sqe.pointee.len), Int64(bitPattern: sqe.pointee.off)))
    }

    /// A read or write of a stream (pipe, socket, eventfd, terminal) without blocking:
    /// `RWF_NOWAIT` where the kernel supports it for that file, else a zero-timeout poll first.
    static func streamCall(_ fd: Int32, _ address: UnsafeMutableRawPointer?, _ length: Int, reading: Bool) -> Int32 {
        let result =
            reading
            ? unsafe cliburing_read_nowait(fd, address, UInt(length), -1)
            : unsafe cliburing_write_nowait(fd, address, UInt(length), -1)
        guard result == -Int(EOPNOTSUPP) else { return Int32(truncatingIfNeeded: result) }
        var waiter = pollfd(fd: fd, events: Int16(reading ? POLLIN : POLLOUT), revents: 0)
        let ready = unsafe poll(&waiter, 1, 0)
        if ready == 0 { return -EAGAIN }
        if ready < 0 { return -Glibc.errno }
        let rc = reading ? unsafe read(fd, address, length) : unsafe write(fd, address, length)
        return rc < 0 ? -Glibc.errno : Int32(truncatingIfNeeded: rc)
    }

    /// True for a descriptor epoll cannot wait on: a regular file, directory or block device.
    static func isRegularFile(_ fd: Int32) -> Bool {
        var status = stat()
        guard unsafe fstat(fd, &status) == 0 else { return false }
        let kind = status.st_mode & S_IFMT
        return kind == S_IFREG || kind == S_IFDIR || kind == S_IFBLK
    }

    /// Runs a file or path entry to completion, blocking (on a worker thread). Returns the
    /// result as the kernel's completion would carry it.
    static func perform(_ sqe: UnsafeMutablePointer<io_uring_sqe>) -> Int32 {
        let fd = unsafe sqe.pointee.fd
        let address = unsafe UnsafeMutableRawPointer(bitPattern: UInt(sqe.pointee.addr))
        let path = unsafe UnsafePointer<CChar>(bitPattern: UInt(sqe.pointee.addr))
        let length = unsafe Int(sqe.pointee.len)
        let offset = unsafe sqe.pointee.off
        while true {
            let rc: Int
            switch unsafe UInt32(sqe.pointee.opcode) {
            case Self.op(IORING_OP_READ):
                rc =
                    offset == UInt64.max
                    ? unsafe read(fd, address, length)
                    : unsafe pread(fd, address, length, off_t(Int64(bitPattern: offset)))
            case Self.op(IORING_OP_WRITE):
                rc =
                    offset == UInt64.max
                    ? unsafe write(fd, address, length)
                    : unsafe pwrite(fd, address, length, off_t(Int64(bitPattern: offset)))
            case Self.op(IORING_OP_OPENAT):
                guard let path = unsafe path else { return -EFAULT }
                rc = unsafe Int(openat(fd, path, Int32(bitPattern: sqe.pointee.open_flags), mode_t(length)))
            case Self.op(IORING_OP_OPENAT2):
                let how = unsafe UnsafeMutableRawPointer(bitPattern: UInt(offset))
                let result = unsafe cliburing_openat2(fd, path, how, UInt(length))
                if result == -EINTR { continue }
                return result
            case Self.op(IORING_OP_FSYNC):
                let dataOnly = unsafe sqe.pointee.fsync_flags & UInt32(IORING_FSYNC_DATASYNC) != 0
                rc = Int(dataOnly ? fdatasync(fd) : fsync(fd))
            case Self.op(IORING_OP_STATX):
                let buffer = unsafe UnsafeMutableRawPointer(bitPattern: UInt(offset))
                let result = unsafe cliburing_statx(
                    fd, path, Int32(bitPattern: sqe.pointee.statx_flags), UInt32(length), buffer)
                if result == -EINTR { continue }
                return result
            case Self.op(IORING_OP_UNLINKAT):
                guard let path = unsafe path else { return -EFAULT }
                rc = unsafe Int(unlinkat(fd, path, Int32(bitPattern: sqe.pointee.unlink_flags)))
            case Self.op(IORING_OP_RENAMEAT):
                let target = unsafe UnsafePointer<CChar>(bitPattern: UInt(offset))
                let result = unsafe cliburing_renameat2(
                    fd, path, Int32(bitPattern: sqe.pointee.len), target, sqe.pointee.rename_flags)
                if result == -EINTR { continue }
                return result
            case Self.op(IORING_OP_MKDIRAT):
                guard let path = unsafe path else { return -EFAULT }
                rc = unsafe Int(mkdirat(fd, path, mode_t(length)))
            case Self.op(IORING_OP_FALLOCATE):
                let result = unsafe cliburing_fallocate(
                    fd, Int32(truncatingIfNeeded: length), Int64(bitPattern: offset),
                    Int64(bitPattern: sqe.pointee.addr))
                if result == -EINTR { continue }
                return result
            case UInt32(TruncateOperation.opcode):
                rc = Int(ftruncate(fd, off_t(Int64(bitPattern: offset))))
            case Self.op(IORING_OP_LINKAT):
                guard let path = unsafe path,
                    let target = unsafe UnsafePointer<CChar>(bitPattern: UInt(offset))
                else { return -EFAULT }
                rc = unsafe Int(
                    linkat(
                        fd, path, Int32(bitPattern: sqe.pointee.len), target,
                        Int32(bitPattern: sqe.pointee.hardlink_flags)))
            case Self.op(IORING_OP_SYMLINKAT):
                guard let path = unsafe path,
                    let linkPath = unsafe UnsafePointer<CChar>(bitPattern: UInt(offset))
                else { return -EFAULT }
                rc = unsafe Int(symlinkat(path, fd, linkPath))
            default:
                return -EINVAL
            }
            if rc >= 0 { return Int32(truncatingIfNeeded: rc) }
            let error = Glibc.errno
            if error == EINTR { continue }
            return -error
        }
    }
}
