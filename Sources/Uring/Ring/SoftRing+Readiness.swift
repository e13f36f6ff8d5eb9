internal import CLiburing
import Glibc

// The epoll driver's readiness: each descriptor's waiting list, its one-shot epoll registration,
// and retrying the waiters when epoll reports the descriptor.

extension SoftRing {
    /// Puts request `index` at the end of its descriptor's waiting list and arms epoll.
    mutating func startWaiting(_ index: Int32, events: UInt32, linked: UnsafeMutablePointer<io_uring_sqe>?) {
        counters.waitedForReadiness &+= 1
        let request = unsafe requests[index]
        let fd = unsafe request.pointee.sqe.fd
        unsafe request.pointee.phase = .waiting
        unsafe request.pointee.events = events
        byUserData[unsafe request.pointee.sqe.user_data] = index
        unsafe attachLinkedTimeout(index, linked)
        guard fd >= 0 else { return finish(index, result: -EBADF) }
        let waiters = unsafe descriptors.entry(fd)
        #if DEBUG
        softRingTrace(epollFD, unsafe "wait op=\(request.pointee.sqe.opcode) fd=\(fd) events=\(events)")
        #endif
        unsafe request.pointee.previous = waiters.pointee.tail
        unsafe request.pointee.next = -1
        if unsafe waiters.pointee.tail >= 0 {
            unsafe requests[waiters.pointee.tail].pointee.next = index
        } else {
            unsafe waiters.pointee.head = index
        }
        let first = unsafe waiters.pointee.head == index
        unsafe waiters.pointee.tail = index
        // The first waiter always re-arms: whatever the entry says about an earlier registration
        // may be about a file that was closed elsewhere and whose number was reused.
        arm(fd, force: first)
    }

    /// Arms the one-shot, level-triggered registration of `fd` for what its waiters want
    /// (`force`: even if the entry says it is armed so already).
    mutating func arm(_ fd: Int32, force: Bool = false) {
        guard let waiters = unsafe descriptors.existing(fd), unsafe waiters.pointee.head >= 0 else { return }
        var wanted: UInt32 = 0
        var index = unsafe waiters.pointee.head
        while index >= 0 {
            wanted |= unsafe requests[index].pointee.events
            index = unsafe requests[index].pointee.next
        }
        let mask = wanted | EPOLLONESHOT.rawValue
        if unsafe !force && waiters.pointee.armed == mask { return }
        var event = unsafe epoll_event()
        unsafe event.events = mask
        unsafe event.data.u64 = UInt64(UInt32(bitPattern: fd))
        var rc = unsafe epoll_ctl(epollFD, waiters.pointee.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event)
        if rc < 0 && Glibc.errno == ENOENT {
            // Closed and reopened behind our back (epoll forgets a closed file): add it again.
            rc = unsafe epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event)
        } else if rc < 0 && Glibc.errno == EEXIST {
            rc = unsafe epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event)
        }
        let error = rc == 0 ? 0 : Glibc.errno  // before anything else can overwrite it
        #if DEBUG
        softRingTrace(epollFD, "arm fd=\(fd) mask=\(String(mask, radix: 16)) rc=\(rc)")
        #endif
        guard rc == 0 else { return failWaiters(fd, error: error) }
        unsafe waiters.pointee.registered = true
        unsafe waiters.pointee.armed = mask
    }

    /// epoll refused `fd`: a regular file or directory (always ready, as the kernel's poll
    /// says) or a bad descriptor.
    mutating func failWaiters(_ fd: Int32, error: Int32) {
        guard let waiters = unsafe descriptors.existing(fd) else { return }
        var index = unsafe waiters.pointee.head
        while index >= 0 {
            let next = unsafe requests[index].pointee.next
            unlink(index)
            if error == EPERM, unsafe UInt32(requests[index].pointee.sqe.opcode) == Self.op(IORING_OP_POLL_ADD) {
                let ready = unsafe requests[index].pointee.events & (EPOLLIN.rawValue | EPOLLOUT.rawValue)
                finish(index, result: Int32(bitPattern: ready))
            } else {
                finish(index, result: -error)
            }
            index = next
        }
    }

    /// epoll reported `fd`: retries its waiters (oldest first) that the events concern, then
    /// re-arms for those still waiting.
    mutating func descriptorReady(_ fd: Int32, events revents: UInt32) {
        guard let waiters = unsafe descriptors.existing(fd) else { return }
        #if DEBUG
        softRingTrace(
            epollFD, unsafe "ready fd=\(fd) events=\(String(revents, radix: 16)) head=\(waiters.pointee.head)")
        #endif
        unsafe waiters.pointee.armed = 0  // a one-shot registration fired
        if revents & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue | EPOLLRDHUP.rawValue) != 0 {
            unsafe waiters.pointee.drained = false
        }
        let always = EPOLLERR.rawValue | EPOLLHUP.rawValue
        var index = unsafe waiters.pointee.head
        while index >= 0 {
            let next = unsafe requests[index].pointee.next
            if revents & (unsafe requests[index].pointee.events | always) != 0 {
                retry(index, readiness: revents)
            }
            index = next
        }
        arm(fd)
    }

    /// Tries waiting request `index` again. A single-shot request that completes is finished;
    /// a multishot one posts each result with `IORING_CQE_F_MORE` until it would block, a
    /// stream's receive comes back short (drained, most likely), or a burst of 32 (the
    /// level-triggered registration reports the rest at once). Returns true when it is over.
    @discardableResult
    mutating func retry(_ index: Int32, readiness: UInt32) -> Bool {
        let request = unsafe requests[index]
        var burst = 0
        while true {
            shortRead = false
            let (result, flags) = unsafe attempt(&request.pointee.sqe, readiness: readiness, request: request)
            if result == -EAGAIN || shortRead { unsafe noteDrained(request.pointee.sqe.fd, request.pointee.events) }
            if result == -EAGAIN { return false }
            if unsafe request.pointee.multishot {
                let accepting = unsafe UInt32(request.pointee.sqe.opcode) == Self.op(IORING_OP_ACCEPT)
                let goesOn = accepting ? result >= 0 : result > 0
                if goesOn {
                    unsafe post(request.pointee.sqe.user_data, result, flags | UInt32(IORING_CQE_F_MORE))
                    burst += 1
                    // Saves the receive that would only say EAGAIN; if more came meanwhile,
                    // the re-armed registration fires at once.
                    if shortRead || burst == 32 { return false }
                    continue
                }
            }
            if unsafe request.pointee.next >= 0 || request.pointee.previous >= 0 || isHead(index) {
                unlink(index)
            }
            finish(index, result: result, flags: flags)
            return true
        }
    }

    /// A receive on `fd` came back short or would block: the next one waits without trying.
    @inline(__always)
    func noteDrained(_ fd: Int32, _ events: UInt32) {
        guard events == EPOLLIN.rawValue, let waiters = unsafe descriptors.existing(fd) else { return }
        unsafe waiters.pointee.drained = true
    }

    func isHead(_ index: Int32) -> Bool {
        let fd = unsafe requests[index].pointee.sqe.fd
        return unsafe descriptors.existing(fd)?.pointee.head == index
    }

    /// Takes waiting request `index` out of its descriptor's list.
    mutating func unlink(_ index: Int32) {
        let request = unsafe requests[index]
        let fd = unsafe request.pointee.sqe.fd
        guard let waiters = unsafe descriptors.existing(fd) else { return }
        let previous = unsafe request.pointee.previous
        let next = unsafe request.pointee.next
        if previous >= 0 {
            unsafe requests[previous].pointee.next = next
        } else if unsafe waiters.pointee.head == index {
            unsafe waiters.pointee.head = next
        }
        if next >= 0 {
            unsafe requests[next].pointee.previous = previous
        } else if unsafe waiters.pointee.tail == index {
            unsafe waiters.pointee.tail = previous
        }
        unsafe request.pointee.next = -1
        unsafe request.pointee.previous = -1
    }
}
