import Glibc
import Synchronization

// Closing a descriptor ends what is pending on it, on every ring (issue 11).
//
// The kernel does not do this by itself: a pending io_uring operation holds its own reference to
// the file, so after close(2) a pending accept keeps the listening socket alive (and accepting),
// and a pending read on a pipe waits forever. So `close()`:
//
// 1. finds the rings that may have operations or streams on the descriptor (a process-wide mask
//    per descriptor, `DescriptorUse`, with one bit per ring; a ring sets its bit when it starts
//    using the descriptor and clears it lazily, when a close finds it idle);
// 2. on each of them (its own ring inline, others through their inbox), marks the descriptor
//    as closing, ends the receive and accept streams on it (their sequences finish), and cancels
//    every operation on it in the kernel with one `IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL`;
//    it then waits until every operation on the descriptor has completed (the ring counts them
//    per descriptor), so nothing the kernel holds still refers to the file;
// 3. closes the descriptor, then lets the rings forget it.
//
// While a close of a descriptor number is under way, an operation for it is not submitted on any
// ring: it waits until the close is over, then runs (on a new file that got the number) or fails
// with EBADF, reported as `IOError.Code.closed`; so nothing new can slip in between the cancel and
// the close. Operations ended by the cancel throw `IOError.Code.closed`; streams end (`nil`).

/// Which rings use which descriptors, and which descriptors are being closed, process-wide.
///
/// - `masks`: a bit per ring (its `ringID` modulo 64) for each descriptor number below
///   `bucketCount` (larger numbers share entries, which only costs a visit to a ring with nothing
///   to do). A ring sets its bit when its count for the descriptor goes from 0 to 1, and clears it
///   when a close finds the count at 0.
/// - `closings`: how many closes of each descriptor are in progress.
///
/// A submission publishes its use (the bit) and then reads `closings`; a close increments
/// `closings` and then reads the mask. Both sides are sequentially consistent, so at least one
/// sees the other: either the close visits the ring (and cancels the operation there), or the
/// operation sees the close and is not submitted. No operation can reach the kernel unseen
/// between a close's look at the mask and its close(2).
enum DescriptorUse {
    /// The default hard limit on descriptors per process (`fs.nr_open`): every descriptor a
    /// default system can hand out has an entry of its own.
    static let bucketCount = 1 << 20

    // SAFETY: zero-filled by calloc (pages are only touched where used), never freed (process
    // lifetime). `Atomic<UInt64>` and `Atomic<UInt32>` have the size and alignment of their
    // values, and all-zero bytes are the value 0; every access goes through the Atomic.
    nonisolated(unsafe) static let masks: UnsafeMutablePointer<Atomic<UInt64>> = {
        let raw = unsafe calloc(bucketCount, MemoryLayout<UInt64>.stride)!
        return unsafe raw.bindMemory(to: Atomic<UInt64>.self, capacity: bucketCount)
    }()
    nonisolated(unsafe) static let closings: UnsafeMutablePointer<Atomic<UInt32>> = {
        let raw = unsafe calloc(bucketCount, MemoryLayout<UInt32>.stride)!
        return unsafe raw.bindMemory(to: Atomic<UInt32>.self, capacity: bucketCount)
    }()

    @inline(__always)
    static func bucket(_ fd: Int32) -> Int { Int(UInt32(bitPattern: fd)) & (bucketCount - 1) }

    /// The rings (by bit) that may use `fd`.
    static func rings(using fd: Int32) -> UInt64 {
        unsafe masks[bucket(fd)].load(ordering: .sequentiallyConsistent)
    }

    @inline(__always)
    static func mark(_ fd: Int32, bit: UInt64) {
        let mask = unsafe masks + bucket(fd)
        if unsafe mask.pointee.load(ordering: .relaxed) & bit == 0 {
            unsafe mask.pointee.bitwiseOr(bit, ordering: .sequentiallyConsistent)
        }
    }

    static func unmark(_ fd: Int32, bit: UInt64) {
        let mask = unsafe masks + bucket(fd)
        if unsafe mask.pointee.load(ordering: .relaxed) & bit != 0 {
            unsafe mask.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent)
        }
    }

    /// Whether a close of `fd` is in progress (after this ring published its use of `fd`).
    @inline(__always)
    static func isClosing(_ fd: Int32) -> Bool {
        unsafe closings[bucket(fd)].load(ordering: .sequentiallyConsistent) != 0
    }

    /// A close of `fd` starts. Returns false if another one is already in progress.
    static func beginClose(_ fd: Int32) -> Bool {
        let old = unsafe closings[bucket(fd)].wrappingAdd(1, ordering: .sequentiallyConsistent).oldValue
        if old != 0 {
            unsafe closings[bucket(fd)].wrappingSubtract(1, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    static func endClose(_ fd: Int32) {
        unsafe closings[bucket(fd)].wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }
}

/// A descriptor being closed, as one ring sees it.
struct ClosingDescriptor {
    var fd: Int32
    /// How many closes of `fd` this entry stands for: a close on another ring may start before
    /// this ring has heard that the previous close of the same number ended.
    var closers = 1
    /// The cancel-by-descriptor is in the kernel.
    var cancelPending = false
    /// Resumed once nothing on this ring uses the descriptor any more: the first inline (one
    /// close at a time is the common case, and then a close allocates nothing), others after it.
    private var firstWaiter: ClosingWaiter?
    private var moreWaiters: [ClosingWaiter] = []

    init(fd: Int32, waiter: ClosingWaiter) {
        self.fd = fd
        firstWaiter = waiter
    }

    mutating func add(_ waiter: ClosingWaiter) {
        if firstWaiter == nil { firstWaiter = waiter } else { moreWaiters.append(waiter) }
    }

    /// Resumes every waiter (from `ringID`'s thread) and forgets them.
    mutating func resumeWaiters(fromRing ringID: UInt32) {
        let first = firstWaiter
        let more = moreWaiters
        firstWaiter = nil
        moreWaiters = []
        first?.resume(fromRing: ringID, fd: fd)
        for waiter in more { waiter.resume(fromRing: ringID, fd: fd) }
    }
}

/// A close waiting for a ring to end what is pending on a descriptor: its continuation, and the
/// ring its task runs on when that is another ring. A continuation is resumed on its own ring's
/// thread (through that ring's inbox), never from another ring's thread: a task may not have
/// finished suspending when another thread resumes it, and what the runtime does then is not
/// visible to ThreadSanitizer.
@safe struct ClosingWaiter {
    // SAFETY (@safe): the continuation is resumed exactly once, by the ring that holds this waiter (or routed to its
    // home ring).
    let continuation: UnsafeContinuation<Void, Never>
    let home: RingExecutor?

    /// Resumes the close, from `ring`'s thread.
    func resume(fromRing ringID: UInt32, fd: Int32) {
        if let home, home.ringID != ringID {
            unsafe home.requestClosing(fd, .resumeCloser(continuation))
        } else {
            unsafe continuation.resume()
        }
    }
}
