import Glibc
import Synchronization

// Waking a sleeping ring from another thread: another ring posts a message into it
// (`IORING_OP_MSG_RING`, riding on that ring's next system call); anyone else writes its eventfd.

extension RingExecutor {
    @inline(__always)
    func wakeIfSleeping() {
        if sleeping.load(ordering: .sequentiallyConsistent), sleeping.exchange(false, ordering: .sequentiallyConsistent)
        {
            wake()
        }
    }

    func wake() {
        // From another ring's thread: post a message into this ring with IORING_OP_MSG_RING. It
        // rides along with that ring's next io_uring_enter instead of costing a write(2) now (so
        // a job that blocks after enqueueing delays the wake-up; the stall detector reports such
        // jobs).
        let target = messageFD.load(ordering: .acquiring)
        // Only between kernel rings: an epoll-driven ring has no ring descriptor to post into
        // (messageFD -1) and cannot send (its own messageFD is -1 too).
        if target >= 0, RingExecutor.messagesWork.load(ordering: .relaxed), let source = RingExecutor.current,
            source !== self, source.messageFD.load(ordering: .relaxed) >= 0
        {
            unsafe source.driver.pointee.sendWakeMessage(toFD: target, ringID: ringID)
            return
        }
        wakeThroughEventFD()
    }

    /// Whether IORING_OP_MSG_RING works here; turned off for good after the first failure, or
    /// from the start with the environment variable `SWIFT_URING_MSG_RING=0` (for comparisons).
    static let messagesWork = unsafe Atomic<Bool>(
        getenv("SWIFT_URING_MSG_RING").map { unsafe String(cString: $0) != "0" } ?? true)
    static let nextRingID = Atomic<UInt32>(1)
    /// Live rings by ``ringID``, to wake the target of a failed message. Unmanaged, not weak (a
    /// weak reference would put every retain and release of the ring on the slow path): a ring is
    /// in it only while its loop runs, and leaves it (under the lock) before the loop ends.
    static let registry = unsafe Lock<[UInt32: Unmanaged<RingExecutor>]>([:])

    func wakeThroughEventFD() {
        // Under the inbox lock, so that it can never race with closeWakeDescriptor() and write
        // into a descriptor number that has been reused.
        inbox.withLock { inbox in
            guard inbox.wakeFD >= 0 else { return }
            var one: UInt64 = 1
            _ = unsafe withUnsafeBytes(of: &one) { unsafe write(inbox.wakeFD, $0.baseAddress, 8) }
        }
    }

    /// Closes the eventfd once (after the ring is gone, so no read on it is pending).
    func closeWakeDescriptor() {
        inbox.withLock { inbox in
            if inbox.wakeFD >= 0 {
                close(inbox.wakeFD)
                inbox.wakeFD = -1
            }
        }
    }
}

extension RingExecutor {
    /// Resumes `continuation`, a task of this ring suspended while another thread worked for it,
    /// on this ring's thread: the other thread only leaves it in the inbox. So the task's memory
    /// (its async frame) is touched by one thread only, and a resumption can never overtake the
    /// task's own suspension (which ThreadSanitizer cannot tell from a race). After the loop
    /// ended it is resumed at once.
    func resumeOnRing(_ continuation: UnsafeContinuation<Void, Never>) {
        let delivered = inbox.withLock { inbox -> Bool in
            guard !inbox.loopExited else { return false }
            unsafe inbox.resumptions.append(continuation)
            return true
        }
        if delivered {
            inboxPending.store(true, ordering: .sequentiallyConsistent)
            wakeIfSleeping()
        } else {
            unsafe continuation.resume()
        }
    }
}
