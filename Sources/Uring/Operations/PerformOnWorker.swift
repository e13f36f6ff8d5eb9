internal import CLiburing
import Glibc

// Operations whose opcode the kernel ring lacks (an `IOOperation.optionalOpcode` that the ring's
// probe did not list): the same submission entry, made by the epoll driver's system-call code
// (`SoftRing.perform`) on a blocking-pool thread. The awaiting task suspends as for the ring, and
// its ring serves everything else meanwhile.

extension RingExecutor {
    /// Whether this ring's kernel lacks `operation`'s opcode (only asked of operations with an
    /// ``IOOperation/optionalOpcode``: the check costs an encoding).
    @inline(__always)
    func lacksOpcode<Operation: IOOperation>(of operation: Operation) -> Bool {
        var sqe = io_uring_sqe()
        var timespec = __kernel_timespec()
        unsafe operation.encode(into: &sqe, timespec: &timespec)
        let opcode = UInt64(sqe.opcode)
        return unsafe opcode >= 64 || driver.pointee.ring.supportedOpcodes & (1 << opcode) == 0
    }

    /// Makes `operation` on the blocking pool and returns its outcome. A cancelled task does not
    /// start it; once started it runs to the end and is waited for (the entry points into the
    /// caller's memory, which must outlive the call). The descriptor's use is published for the
    /// duration, so a `close()` waits for it, as for a queued operation.
    // SAFETY: `driver` is this ring's driver, used on the ring's thread only (the task runs on the
    // ring before and after the pool's work).
    @inline(never)
    func performOnWorker<Operation: IOOperation>(_ operation: Operation, cancellable: Bool) async -> OperationOutcome {
        if unsafe driver.pointee.stopping { return .shutdown }
        if cancellable && Task.isCancelled { return .cancelled }
        let fd = operation.descriptor
        if fd >= 0 {
            if DescriptorUse.isClosing(fd) { return .closed }
            unsafe driver.pointee.noteUse(fd)
        }
        defer { if fd >= 0 { unsafe driver.pointee.noteEnd(fd) } }
        let sqe = UnsafeMutablePointer<io_uring_sqe>.allocate(capacity: 1)
        defer { unsafe sqe.deallocate() }
        unsafe sqe.initialize(to: io_uring_sqe())
        var timespec = __kernel_timespec()
        unsafe operation.encode(into: sqe, timespec: &timespec)
        unsafe driver.pointee.statistics.operationsOnWorkers &+= 1
        // SAFETY: the entry (and the memory it points to, lent by the awaiting caller) stays
        // valid until `run` returns, which is after the worker made the call.
        let address = UInt(bitPattern: sqe)
        let result =
            (try? await BlockingPool.shared.run {
                unsafe SoftRing.perform(UnsafeMutablePointer<io_uring_sqe>(bitPattern: address)!)
            }) ?? -ECANCELED
        return result >= 0 ? .success(result) : .failure(-result)
    }
}
