import Glibc

// The driver's side of `close()` (see DescriptorUse.swift for the protocol, and
// Operations/Close.swift for the close itself): per-descriptor counts of what is in flight on
// this ring, and the descriptors being closed here.

extension RingDriver {
    /// An operation or stream on this ring started using `fd` (ring thread).
    @inline(__always)
    mutating func noteUse(_ fd: Int32) {
        let counts = unsafe descriptorUse
        let b = DescriptorUse.bucket(fd)
        unsafe counts[b] &+= 1
        if unsafe counts[b] == 1 { DescriptorUse.mark(fd, bit: useBit) }
    }

    /// An operation or stream on this ring stopped using `fd` (ring thread).
    @inline(__always)
    mutating func noteEnd(_ fd: Int32) {
        let counts = unsafe descriptorUse
        let b = DescriptorUse.bucket(fd)
        unsafe counts[b] &-= 1
        if unsafe counts[b] == 0 && !closing.isEmpty { closingMayBeDone(fd) }
    }

    /// Whether `fd` is being closed on this ring (ring thread; cheap when nothing is closing).
    @inline(__always)
    func isClosing(_ fd: Int32) -> Bool {
        if closing.isEmpty { return false }
        return closing.contains { $0.fd == fd }
    }

    /// A completion for an operation on `slot`: if its descriptor is closing and the kernel ended
    /// it (cancelled, interrupted, or the descriptor was already gone), mark it so its task sees
    /// ``IOError/Code/closed``.
    @inline(__always)
    mutating func noteCompletionWhileClosing(_ slot: UnsafeMutablePointer<OperationSlot>, result: Int32) {
        if result == -ECANCELED || result == -EINTR || result == -EBADF, unsafe isClosing(slot.pointee.fd) {
            unsafe slot.pointee.closedUnderneath()
        }
    }

    /// Starts closing `fd` on this ring: ends its streams, cancels its operations in the kernel,
    /// and resumes `waiter` once nothing on this ring uses it. Ring thread.
    mutating func beginClosing(_ fd: Int32, waiter: ClosingWaiter) {
        if let i = closing.firstIndex(where: { $0.fd == fd }) {
            closing[i].closers += 1
            closing[i].add(waiter)
        } else {
            closing.append(ClosingDescriptor(fd: fd, waiter: waiter))
        }
        ring.descriptorClosing(fd)
        forgetReadMode(fd)
        if let onDescriptor = streams.removeValue(forKey: fd) {
            for stream in onDescriptor {
                ownerClosed(stream)
                noteEnd(fd)  // the stream's registration
            }
        }
        if unsafe descriptorUse[DescriptorUse.bucket(fd)] > 0 && !stopping,
            let i = closing.firstIndex(where: { $0.fd == fd }), !closing[i].cancelPending
        {
            let sqe = unsafe ring.nextSubmission()
            unsafe ControlEntry.cancelAll(sqe, fd: fd)
            unsafe ControlEntry.setUserData(
                sqe, OperationID(index: UInt32(bitPattern: fd), generation: 0).userData(.closeCancel))
            statistics.cancelsSubmitted &+= 1
            closing[i].cancelPending = true
        }
        closingMayBeDone(fd)
    }

    /// The cancel-by-descriptor for `fd` completed (its result, the number cancelled, is not
    /// needed: the per-descriptor count says when they have all completed).
    mutating func closeCancelCompleted(_ fd: Int32) {
        guard let i = closing.firstIndex(where: { $0.fd == fd && $0.cancelPending }) else { return }
        closing[i].cancelPending = false
        closingMayBeDone(fd)
    }

    /// Resumes the closer of `fd` if nothing on this ring uses it any more.
    private mutating func closingMayBeDone(_ fd: Int32) {
        guard let i = closing.firstIndex(where: { $0.fd == fd }), !closing[i].cancelPending
        else { return }
        // Descriptors past the mask's range share counts with others: for them the cancel's
        // completion is the signal (the kernel cancels everything on the file at once).
        let b = DescriptorUse.bucket(fd)
        if unsafe Int(fd) < DescriptorUse.bucketCount && descriptorUse[b] > 0 && !stopping { return }
        if unsafe descriptorUse[b] == 0 { DescriptorUse.unmark(fd, bit: useBit) }
        closing[i].resumeWaiters(fromRing: ringID)
    }

    /// The descriptor is closed: forget it. Ring thread.
    mutating func endClosing(_ fd: Int32) {
        guard let i = closing.firstIndex(where: { $0.fd == fd }) else { return }
        closing[i].closers -= 1
        if closing[i].closers > 0 { return }
        var entry = closing.remove(at: i)
        entry.resumeWaiters(fromRing: ringID)  // waiters are left only when the ring stopped first
    }

    /// On loop exit: nobody will complete the closings still waiting.
    mutating func resumeClosersAtExit() {
        var entries = closing
        closing.removeAll()
        for index in entries.indices { entries[index].resumeWaiters(fromRing: ringID) }
    }
}
