internal import CLiburing
import Glibc

// The epoll driver's readiness: each descriptor's waiting list, its level-triggered epoll
// registration (persistent, narrowed lazily), and retrying the waiters when epoll reports the
// descriptor.

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
        unsafe waiters.pointee.tail = index
        // A registration nobody waited on for a while is confirmed with one `epoll_ctl`: the
        // descriptor may have been closed outside the runtime (epoll then forgets it) and its
        // number reused. One waited on again within a few turns (a connection's next receive)
        // costs nothing.
        let stale = unsafe waiters.pointee.head == index && turn &- waiters.pointee.lastTurn > Self.staleTurns
        unsafe waiters.pointee.lastTurn = turn
        if stale, unsafe waiters.pointee.registered {
            unsafe register(fd, waiters, mask: wantedEvents(waiters) | waiters.pointee.interest)
        } else {
            arm(fd)
        }
    }

    /// Makes `fd`'s registration cover what its waiters want. The registration is persistent and
    /// level-triggered, and it is narrowed lazily (see ``descriptorReady(_:events:)``): in the
    /// common cycle (wait, ready, complete, wait again before the next `epoll_wait`) it costs no
    /// `epoll_ctl` at all.
    mutating func arm(_ fd: Int32) {
        guard let waiters = unsafe descriptors.existing(fd), unsafe waiters.pointee.head >= 0 else { return }
        let wanted = unsafe wantedEvents(waiters)
        if unsafe waiters.pointee.registered && waiters.pointee.interest & wanted == wanted { return }
        unsafe register(fd, waiters, mask: wanted | waiters.pointee.interest)
    }

    /// The union of the events `fd`'s waiters wait for.
    func wantedEvents(_ waiters: UnsafeMutablePointer<Waiters>) -> UInt32 {
        var wanted: UInt32 = 0
        var index = unsafe waiters.pointee.head
        while index >= 0 {
            wanted |= unsafe requests[index].pointee.events
            index = unsafe requests[index].pointee.next
        }
        return wanted
    }

    /// Sets `fd`'s registration to `mask`, level-triggered; 0 parks it (one-shot with no events:
    /// at most one error or hang-up report, then silent until armed again).
    mutating func register(_ fd: Int32, _ waiters: UnsafeMutablePointer<Waiters>, mask: UInt32) {
        var event = unsafe epoll_event()
        unsafe event.events = mask == 0 ? EPOLLONESHOT.rawValue : mask
        unsafe event.data.u64 = UInt64(UInt32(bitPattern: fd))
        var rc = unsafe epoll_ctl(epollFD, waiters.pointee.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event)
        if rc < 0 && Glibc.errno == ENOENT {
            // Closed and reopened behind the runtime's back (epoll forgets a closed file).
            rc = unsafe epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event)
        } else if rc < 0 && Glibc.errno == EEXIST {
            rc = unsafe epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event)
        }
        let error = rc == 0 ? 0 : Glibc.errno  // before anything else can overwrite it
        counters.registrationChanges &+= 1
        #if DEBUG
        softRingTrace(epollFD, "register fd=\(fd) mask=\(String(mask, radix: 16)) rc=\(rc)")
        #endif
        guard rc == 0 else {
            unsafe waiters.pointee.registered = false
            unsafe waiters.pointee.interest = 0
            return failWaiters(fd, error: error)
        }
        unsafe waiters.pointee.registered = true
        unsafe waiters.pointee.interest = mask
    }

    /// Takes `fd` out of the epoll set and forgets what this ring knew about it: it is about to
    /// be closed (here or on another ring), and its number may come back as another file. Its
    /// waiters, if any, are ended by the close's cancel first.
    mutating func forgetDescriptor(_ fd: Int32) {
        guard let waiters = unsafe descriptors.existing(fd), unsafe waiters.pointee.head < 0 else { return }
        if unsafe waiters.pointee.registered { _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil) }
        unsafe waiters.pointee = Waiters()
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
        unsafe waiters.pointee.lastTurn = turn
        if revents & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue | EPOLLRDHUP.rawValue) != 0 {
            unsafe waiters.pointee.drained = false
        }
        let always = EPOLLERR.rawValue | EPOLLHUP.rawValue
        var retried = false
        var index = unsafe waiters.pointee.head
        while index >= 0 {
            let next = unsafe requests[index].pointee.next
            if revents & (unsafe requests[index].pointee.events | always) != 0 {
                retried = true
                retry(index, readiness: revents)
            }
            index = next
        }
        // A report nobody waited for (the registration is level-triggered and narrowed lazily):
        // narrow it to what is wanted now, or park it, so it does not fire again and again.
        // Reports that found a waiter leave it as it is: the next wait usually comes before
        // the next `epoll_wait`, and then needs no `epoll_ctl`.
        if !retried, unsafe waiters.pointee.registered {
            let wanted = unsafe wantedEvents(waiters)
            if unsafe waiters.pointee.interest != wanted { unsafe register(fd, waiters, mask: wanted) }
        }
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
                    // A multishot poll reports once per readiness report, then waits again (the
                    // descriptor stays ready until its owner reads: asking again now would spin).
                    if unsafe UInt32(request.pointee.sqe.opcode) == Self.op(IORING_OP_POLL_ADD) { return false }
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
