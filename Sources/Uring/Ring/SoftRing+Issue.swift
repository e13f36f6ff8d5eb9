internal import CLiburing
import Glibc
import Synchronization

// How the epoll driver runs each submission entry: at once, after readiness, on the pool, or
// when a timer expires; and how requests end (completion, cancel, deadline).

extension SoftRing {
    @inline(__always)
    static func op(_ code: io_uring_op) -> UInt32 { code.rawValue }

    /// Runs one consumed entry (and the `LINK_TIMEOUT` linked to it, if any).
    mutating func issue(_ sqe: UnsafeMutablePointer<io_uring_sqe>, linked: UnsafeMutablePointer<io_uring_sqe>?) {
        let userData = unsafe sqe.pointee.user_data
        #if DEBUG
        softRingTrace(
            epollFD,
            unsafe "issue op=\(sqe.pointee.opcode) fd=\(sqe.pointee.fd) ud=\(String(userData, radix: 16)) linked=\(linked != nil)"
        )
        #endif
        switch unsafe UInt32(sqe.pointee.opcode) {
        case Self.op(IORING_OP_NOP):
            unsafe complete(sqe, 0, linked: linked)
        case Self.op(IORING_OP_TIMEOUT):
            let index = unsafe requests.acquire(sqe, phase: .timer)
            byUserData[userData] = index
            unsafe startTimer(
                index, timespec: sqe.pointee.addr,
                absolute: sqe.pointee.timeout_flags & UInt32(IORING_TIMEOUT_ABS) != 0)
        case Self.op(IORING_OP_LINK_TIMEOUT):
            post(userData, -EINVAL)  // not linked to an operation
        case Self.op(IORING_OP_ASYNC_CANCEL):
            let result = unsafe cancel(sqe)
            unsafe complete(sqe, result, linked: linked)
        case Self.op(IORING_OP_MSG_RING):
            // Other rings wake an epoll-driven ring through its eventfd.
            unsafe complete(sqe, -EOPNOTSUPP, linked: linked)
        case Self.op(IORING_OP_CLOSE):
            let result = unsafe closeDescriptor(sqe.pointee.fd)
            unsafe complete(sqe, result, linked: linked)
        case Self.op(IORING_OP_SHUTDOWN):
            let rc = unsafe shutdown(sqe.pointee.fd, Int32(sqe.pointee.len))
            unsafe complete(sqe, rc < 0 ? -Glibc.errno : 0, linked: linked)
        case Self.op(IORING_OP_READ), Self.op(IORING_OP_WRITE):
            unsafe issueReadWrite(sqe, linked: linked)
        case Self.op(IORING_OP_CONNECT):
            unsafe issueConnect(sqe, linked: linked)
        case Self.op(IORING_OP_POLL_ADD) where unsafe sqe.pointee.len & IORING_POLL_ADD_MULTI != 0:
            unsafe issueMultishot(sqe, events: sqe.pointee.poll32_events)
        case Self.op(IORING_OP_POLL_ADD):
            let (result, _) = unsafe attempt(sqe, readiness: 0, request: nil)
            if result == -EAGAIN {
                unsafe wait(sqe, events: sqe.pointee.poll32_events, linked: linked)
            } else {
                unsafe complete(sqe, result, linked: linked)
            }
        case Self.op(IORING_OP_ACCEPT), Self.op(IORING_OP_RECV):
            let multishot =
                unsafe UInt32(sqe.pointee.opcode) == Self.op(IORING_OP_ACCEPT)
                ? sqe.pointee.ioprio & UInt16(IORING_ACCEPT_MULTISHOT) != 0
                : sqe.pointee.ioprio & UInt16(IORING_RECV_MULTISHOT) != 0
            if multishot {
                unsafe issueMultishot(sqe)
            } else {
                unsafe issueSocketCall(sqe, events: EPOLLIN.rawValue, linked: linked)
            }
        case Self.op(IORING_OP_RECVMSG):
            unsafe issueSocketCall(sqe, events: EPOLLIN.rawValue, linked: linked)
        case Self.op(IORING_OP_SEND), Self.op(IORING_OP_SEND_ZC), Self.op(IORING_OP_SENDMSG):
            unsafe issueSocketCall(sqe, events: EPOLLOUT.rawValue, linked: linked)
        case Self.op(IORING_OP_OPENAT), Self.op(IORING_OP_OPENAT2):
            unsafe issueOpen(sqe, linked: linked)
        case Self.op(IORING_OP_STATX),
            Self.op(IORING_OP_FSYNC), Self.op(IORING_OP_UNLINKAT), Self.op(IORING_OP_RENAMEAT),
            Self.op(IORING_OP_MKDIRAT), Self.op(IORING_OP_FALLOCATE), Self.op(IORING_OP_LINKAT),
            Self.op(IORING_OP_SYMLINKAT), UInt32(TruncateOperation.opcode):
            unsafe startOnPool(sqe, linked: linked)
        default:
            unsafe complete(sqe, -EINVAL, linked: linked)
        }
    }

    /// Posts the completion of an entry that finished at once (and cancels its linked timeout).
    @inline(__always)
    mutating func complete(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, _ result: Int32, flags: UInt32 = 0,
        linked: UnsafeMutablePointer<io_uring_sqe>?
    ) {
        #if DEBUG
        softRingTrace(
            epollFD,
            unsafe "complete op=\(sqe.pointee.opcode) fd=\(sqe.pointee.fd) ud=\(String(sqe.pointee.user_data, radix: 16)) result=\(result)"
        )
        #endif
        // The ring's own wake-up read is not an operation of anyone's: not counted.
        if unsafe sqe.pointee.user_data >> 56 != UInt64(CompletionTag.wake.rawValue) { counters.completedInline &+= 1 }
        unsafe postResult(opcode: sqe.pointee.opcode, userData: sqe.pointee.user_data, result, flags: flags)
        if let linked = unsafe linked { unsafe post(linked.pointee.user_data, -ECANCELED) }
    }

    /// Posts an operation's result; a zero-copy send that sent something posts its result with
    /// `IORING_CQE_F_MORE` and then its notification (the copy is done: the buffer is free).
    @inline(__always)
    mutating func postResult(opcode: UInt8, userData: UInt64, _ result: Int32, flags: UInt32) {
        if UInt32(opcode) == Self.op(IORING_OP_SEND_ZC) && result >= 0 {
            post(userData, result, flags | UInt32(IORING_CQE_F_MORE))
            post(userData, 0, UInt32(IORING_CQE_F_NOTIF))
        } else {
            post(userData, result, flags)
        }
    }

    // MARK: - Routes

    /// A socket call: tried now without blocking; on `EAGAIN`, waits for `events`.
    mutating func issueSocketCall(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, events: UInt32, linked: UnsafeMutablePointer<io_uring_sqe>?
    ) {
        let fd = unsafe sqe.pointee.fd
        if events == EPOLLIN.rawValue, let waiters = unsafe descriptors.existing(fd), unsafe waiters.pointee.drained {
            return unsafe wait(sqe, events: events, linked: linked)  // drained: no receive just to see EAGAIN
        }
        shortRead = false
        let (result, flags) = unsafe attempt(sqe, readiness: 0, request: nil)
        if result == -EAGAIN || shortRead { noteDrained(fd, events) }
        if result == -EAGAIN {
            unsafe wait(sqe, events: events, linked: linked)
        } else {
            unsafe complete(sqe, result, flags: flags, linked: linked)
        }
    }

    /// A read or write: page-cache data (or room) now with `RWF_NOWAIT`; a seekable file that
    /// would block goes to the pool; a pipe, socket or eventfd waits for readiness.
    mutating func issueReadWrite(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, linked: UnsafeMutablePointer<io_uring_sqe>?
    ) {
        let reading = unsafe UInt32(sqe.pointee.opcode) == Self.op(IORING_OP_READ)
        let fd = unsafe sqe.pointee.fd
        let offset = unsafe sqe.pointee.off == UInt64.max ? -1 : Int64(bitPattern: sqe.pointee.off)
        let address = unsafe UnsafeMutableRawPointer(bitPattern: UInt(sqe.pointee.addr))
        let count = unsafe UInt(sqe.pointee.len)
        // O_DIRECT: RWF_NOWAIT still waits for the device, so never on the ring's thread.
        if fd >= 0 && isDirect(fd) { return unsafe startOnPool(sqe, linked: linked) }
        let result =
            reading
            ? unsafe cliburing_read_nowait(fd, address, count, offset)
            : unsafe cliburing_write_nowait(fd, address, count, offset)
        switch Int32(truncatingIfNeeded: result) {
        case -EAGAIN where offset >= 0:
            unsafe startOnPool(sqe, linked: linked)  // a seekable file, not in the page cache
        case -EAGAIN, -EOPNOTSUPP:
            if SoftRing.isRegularFile(fd) {
                unsafe startOnPool(sqe, linked: linked)
            } else {
                unsafe issueSocketCall(sqe, events: reading ? EPOLLIN.rawValue : EPOLLOUT.rawValue, linked: linked)
            }
        case -ESPIPE:
            // A pipe, socket or eventfd (the kernel ignores the offset of a stream).
            unsafe issueSocketCall(sqe, events: reading ? EPOLLIN.rawValue : EPOLLOUT.rawValue, linked: linked)
        default:
            unsafe complete(sqe, Int32(truncatingIfNeeded: result), linked: linked)
        }
    }

    /// An open: made at once on the ring's thread when it cannot wait, as the kernel ring makes
    /// it before it hands an open to a worker (`cliburing_open_cached`: every path component
    /// from the kernel's lookup cache, `O_NONBLOCK` for the call so that a FIFO or device open
    /// does not wait); otherwise (something to read from the disk, a creating open, a kernel
    /// before 5.12 without `RESOLVE_CACHED`) on the pool, where it may wait.
    mutating func issueOpen(_ sqe: UnsafeMutablePointer<io_uring_sqe>, linked: UnsafeMutablePointer<io_uring_sqe>?) {
        guard Self.cachedOpensWork.load(ordering: .relaxed) else { return unsafe startOnPool(sqe, linked: linked) }
        let flags: UInt64
        let resolve: UInt64
        if unsafe UInt32(sqe.pointee.opcode) == Self.op(IORING_OP_OPENAT) {
            flags = unsafe UInt64(sqe.pointee.open_flags)
            resolve = 0
        } else {
            // SAFETY: an OPENAT2 entry's `off` is the address of its `open_how`, which the
            // submitting task keeps valid until the final completion (it is suspended).
            guard unsafe sqe.pointee.len == UInt32(MemoryLayout<open_how>.size),
                let how = unsafe UnsafePointer<open_how>(bitPattern: UInt(sqe.pointee.off))
            else { return unsafe startOnPool(sqe, linked: linked) }
            flags = unsafe how.pointee.flags
            resolve = unsafe how.pointee.resolve
        }
        let path = unsafe UnsafePointer<CChar>(bitPattern: UInt(sqe.pointee.addr))
        let result = unsafe cliburing_open_cached(sqe.pointee.fd, path, flags, resolve)
        switch result {
        case -EAGAIN, -EINTR, -ECHILD:
            unsafe startOnPool(sqe, linked: linked)  // it would wait: the pool makes it
        case -EINVAL, -ENOSYS, -E2BIG:
            // A kernel without `openat2` or `RESOLVE_CACHED` (or flags it refuses there): the
            // pool answers, with the call the entry names; no more tries without `openat2`.
            if result == -ENOSYS { Self.cachedOpensWork.store(false, ordering: .relaxed) }
            unsafe startOnPool(sqe, linked: linked)
        default:
            unsafe complete(sqe, result, linked: linked)  // the descriptor, or the open's own error
        }
    }

    /// Whether `openat2` exists here (Linux 5.6; a seccomp filter may refuse it): cleared by
    /// the first `ENOSYS`.
    static let cachedOpensWork = Atomic<Bool>(true)

    /// Whether `fd` was opened with `O_DIRECT`: one `fcntl` per descriptor, remembered in its
    /// entry until it is closed or forgotten.
    mutating func isDirect(_ fd: Int32) -> Bool {
        let entry = unsafe descriptors.entry(fd)
        if unsafe entry.pointee.direct == 0 {
            unsafe entry.pointee.direct = cliburing_is_direct(fd) == 1 ? 2 : 1
        }
        return unsafe entry.pointee.direct == 2
    }

    /// A connect: the socket is made non-blocking for the call (its flags are restored when it
    /// completes), and an `EINPROGRESS` waits for writability, then reads `SO_ERROR`.
    mutating func issueConnect(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, linked: UnsafeMutablePointer<io_uring_sqe>?
    ) {
        let fd = unsafe sqe.pointee.fd
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { return unsafe complete(sqe, -Glibc.errno, linked: linked) }
        if flags & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        let address = unsafe UnsafePointer<sockaddr>(bitPattern: UInt(sqe.pointee.addr))
        let rc = unsafe Glibc.connect(fd, address, socklen_t(truncatingIfNeeded: sqe.pointee.off))
        let error = rc == 0 ? 0 : Glibc.errno
        if error == EINPROGRESS {
            let index = unsafe requests.acquire(sqe, phase: .waiting)
            unsafe requests[index].pointee.connectFlags = flags
            unsafe startWaiting(index, events: EPOLLOUT.rawValue, linked: linked)
            return
        }
        if flags & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, flags) }
        unsafe complete(sqe, -error, linked: linked)
    }

    /// A multishot accept or buffered receive: as many completions as there are connections or
    /// chunks now, then it waits for readiness and goes on, until it fails, ends or is cancelled.
    mutating func issueMultishot(_ sqe: UnsafeMutablePointer<io_uring_sqe>, events: UInt32 = EPOLLIN.rawValue) {
        let index = unsafe requests.acquire(sqe, phase: .waiting)
        unsafe requests[index].pointee.multishot = true
        byUserData[unsafe sqe.pointee.user_data] = index
        if !retry(index, readiness: 0) {
            unsafe startWaiting(index, events: events, linked: nil)
        }
    }

    /// Holds `sqe` until its descriptor is ready for `events`.
    mutating func wait(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, events: UInt32, linked: UnsafeMutablePointer<io_uring_sqe>?
    ) {
        let index = unsafe requests.acquire(sqe, phase: .waiting)
        unsafe startWaiting(index, events: events, linked: linked)
    }

    /// Sends `sqe` to the worker pool.
    mutating func startOnPool(
        _ sqe: UnsafeMutablePointer<io_uring_sqe>, linked: UnsafeMutablePointer<io_uring_sqe>?
    ) {
        counters.ranOnPool &+= 1
        let index = unsafe requests.acquire(sqe, phase: .pooled)
        byUserData[unsafe sqe.pointee.user_data] = index
        unsafe attachLinkedTimeout(index, linked)
        pooledCount += 1
        let request = unsafe requests[index]
        let job = unsafe FileWorkerPool.Job(request: request, index: index, mailbox: Unmanaged.passUnretained(mailbox))
        pool.withLock {
            unsafe request.pointee.poolState = .queued
            pool.enqueueLocked(job)
        }
    }

    mutating func attachLinkedTimeout(_ index: Int32, _ linked: UnsafeMutablePointer<io_uring_sqe>?) {
        guard let linked = unsafe linked else { return }
        let timeout = unsafe requests.acquire(linked, phase: .linkTimeout)
        unsafe requests[timeout].pointee.link = index
        unsafe requests[index].pointee.link = timeout
        byUserData[unsafe linked.pointee.user_data] = timeout
        unsafe startTimer(timeout, timespec: linked.pointee.addr, absolute: false)
    }

    // MARK: - Endings

    /// Request `index` is over with `result`: posts its completion, ends its linked timeout,
    /// and frees it.
    mutating func finish(_ index: Int32, result: Int32, flags: UInt32 = 0) {
        let request = unsafe requests[index]
        #if DEBUG
        softRingTrace(
            epollFD,
            unsafe "finish op=\(request.pointee.sqe.opcode) fd=\(request.pointee.sqe.fd) ud=\(String(request.pointee.sqe.user_data, radix: 16)) result=\(result)"
        )
        #endif
        let userData = unsafe request.pointee.sqe.user_data
        if unsafe request.pointee.connectFlags >= 0 {
            if unsafe request.pointee.connectFlags & O_NONBLOCK == 0 {
                _ = unsafe fcntl(request.pointee.sqe.fd, F_SETFL, request.pointee.connectFlags)
            }
            unsafe request.pointee.connectFlags = -1
        }
        unsafe postResult(opcode: request.pointee.sqe.opcode, userData: userData, result, flags: flags)
        let timeout = unsafe request.pointee.link
        if timeout >= 0 {
            unsafe post(requests[timeout].pointee.sqe.user_data, -ECANCELED)
            unsafe byUserData.removeValue(forKey: requests[timeout].pointee.sqe.user_data)
            requests.release(timeout)
        }
        byUserData.removeValue(forKey: userData)
        requests.release(index)
    }

    /// The linked timeout `timeout` expired: its operation is cancelled (`-ETIME`), unless a
    /// worker already runs it (`-EALREADY`: the operation's own result follows).
    mutating func linkTimeoutFired(_ timeout: Int32) {
        let target = unsafe requests[timeout].pointee.link
        unsafe requests[target].pointee.link = -1
        var result = -ETIME
        switch unsafe requests[target].pointee.phase {
        case .waiting:
            unlink(target)
            finish(target, result: -ECANCELED)
        case .pooled:
            if !abandonIfQueued(target) { result = -EALREADY }
        default:
            result = -ENOENT
        }
        let userData = unsafe requests[timeout].pointee.sqe.user_data
        post(userData, result)
        byUserData.removeValue(forKey: userData)
        requests.release(timeout)
    }

    /// If pool request `index` has not started, cancels it: its completion (`-ECANCELED`) is
    /// posted now, and its memory waits for the pool to hand it back. False when it runs.
    mutating func abandonIfQueued(_ index: Int32) -> Bool {
        let request = unsafe requests[index]
        let queued = pool.withLock {
            guard unsafe request.pointee.poolState == .queued else { return false }
            unsafe request.pointee.poolState = .cancelled
            return true
        }
        guard queued else { return false }
        let userData = unsafe request.pointee.sqe.user_data
        unsafe postResult(opcode: request.pointee.sqe.opcode, userData: userData, -ECANCELED, flags: 0)
        let timeout = unsafe request.pointee.link
        if timeout >= 0 {
            unsafe post(requests[timeout].pointee.sqe.user_data, -ECANCELED)
            unsafe byUserData.removeValue(forKey: requests[timeout].pointee.sqe.user_data)
            requests.release(timeout)
            unsafe request.pointee.link = -1
        }
        byUserData.removeValue(forKey: userData)
        unsafe request.pointee.phase = .abandonedOnPool
        return true
    }

    /// `IORING_OP_ASYNC_CANCEL`: by `user_data`, or every request on a descriptor
    /// (`IORING_ASYNC_CANCEL_FD`). 0 (or how many, by descriptor) when cancelled, `-EALREADY`
    /// when a worker already runs it, `-ENOENT` when there is nothing to cancel.
    mutating func cancel(_ sqe: UnsafeMutablePointer<io_uring_sqe>) -> Int32 {
        if unsafe sqe.pointee.cancel_flags & UInt32(IORING_ASYNC_CANCEL_FD) != 0 {
            let fd = unsafe sqe.pointee.fd
            scratch.removeAll(keepingCapacity: true)
            for index in byUserData.values {
                let request = unsafe requests[index]
                let phase = unsafe request.pointee.phase
                if unsafe request.pointee.sqe.fd == fd && (phase == .waiting || phase == .pooled) {
                    scratch.append(index)
                }
            }
            var found: Int32 = 0
            for i in 0..<scratch.count where cancelRequest(scratch[i]) != -ENOENT { found += 1 }
            // A close's cancel (the runtime cancels by descriptor only to close it): nothing on
            // this ring may keep a registration for a number that is about to be reused.
            forgetDescriptor(fd)
            return found > 0 ? found : -ENOENT
        }
        guard let index = byUserData[unsafe sqe.pointee.addr] else { return -ENOENT }
        return cancelRequest(index)
    }

    mutating func cancelRequest(_ index: Int32) -> Int32 {
        let request = unsafe requests[index]
        switch unsafe request.pointee.phase {
        case .waiting:
            unlink(index)
            finish(index, result: -ECANCELED)
            return 0
        case .timer:
            finish(index, result: -ECANCELED)
            return 0
        case .linkTimeout:
            let target = unsafe request.pointee.link
            unsafe requests[target].pointee.link = -1
            let userData = unsafe request.pointee.sqe.user_data
            post(userData, -ECANCELED)
            byUserData.removeValue(forKey: userData)
            requests.release(index)
            return 0
        case .pooled:
            return abandonIfQueued(index) ? 0 : -EALREADY
        case .free, .abandonedOnPool:
            return -ENOENT
        }
    }

    /// `IORING_OP_CLOSE`: forgets the descriptor's epoll state first. Requests still waiting on
    /// it (the runtime cancels them before it closes) end with `-ECANCELED`.
    mutating func closeDescriptor(_ fd: Int32) -> Int32 {
        if let waiters = unsafe descriptors.existing(fd) {
            if unsafe waiters.pointee.head >= 0 {
                var index = unsafe waiters.pointee.head
                while index >= 0 {
                    let next = unsafe requests[index].pointee.next
                    unlink(index)
                    finish(index, result: -ECANCELED)
                    index = next
                }
            }
            if unsafe waiters.pointee.registered { _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil) }
            unsafe waiters.pointee = Waiters()
        }
        return close(fd) == 0 ? 0 : -Glibc.errno
    }
}
