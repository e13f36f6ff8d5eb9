import Glibc

/// Small blocks (4 KiB) that one operation borrows for what the kernel reads or fills while the
/// caller is suspended: a path's C string, an `open_how`, a `statx` buffer. A shared free list,
/// so that a static-file request — an open, a status — allocates nothing once the list is warm.
///
/// The list keeps as many blocks as were ever lent at once (at least ``minimumKept``, at most
/// ``maximumKept``: 4 MiB), so a steady state allocates none at any concurrency up to that bound:
/// 64 connections opening files at once borrow two blocks each, more than a fixed 64 would keep
/// (each overflow freed a block the next burst allocated again).
///
/// The lender's rule is the operations' rule: an operation's call returns only after its final
/// completion (cancelled or not), so a block is given back only when no kernel or worker can
/// still touch it.
@safe enum ScratchBlocks {
    /// The size of a block: a path up to `PATH_MAX` (4,096 bytes with its NUL) fits.
    static let size = 4096
    /// The fewest blocks the list keeps, however few were lent at once.
    static let minimumKept = 64
    /// The most blocks the list keeps, however many were lent at once.
    static let maximumKept = 1024

    @safe struct State {
        // SAFETY (@safe): `free` holds blocks of `size` bytes that nobody else holds; only `take` and `give` move
        // them, under the lock.
        var free: [UnsafeMutableRawPointer] = unsafe []
        /// Blocks taken and not given back.
        var lent = 0
        /// The most blocks lent at once so far.
        var peak = 0

        /// How many free blocks the list keeps now.
        var limit: Int { min(ScratchBlocks.maximumKept, max(ScratchBlocks.minimumKept, peak)) }
    }

    private static let state = Lock(Self.emptyState())

    private static func emptyState() -> State {
        var state = State()
        unsafe state.free.reserveCapacity(minimumKept)
        return state
    }

    /// A block of ``size`` bytes (16-byte aligned), from the free list or newly allocated.
    static func take() -> UnsafeMutableRawPointer {
        let reused = unsafe state.withLock { state -> UnsafeMutableRawPointer? in
            state.lent += 1
            state.peak = max(state.peak, state.lent)
            return unsafe state.free.popLast()
        }
        if let block = unsafe reused { return unsafe block }
        return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
    }

    /// Gives `block` (from ``take()``) back. The caller must not touch it afterwards.
    static func give(_ block: UnsafeMutableRawPointer) {
        let keptIt = state.withLock { state in
            state.lent -= 1
            guard unsafe state.free.count < state.limit else { return false }
            unsafe state.free.append(block)
            return true
        }
        if !keptIt { unsafe block.deallocate() }
    }

    /// The list's counts now (for tests).
    static var snapshot: (free: Int, lent: Int, peak: Int, limit: Int) {
        state.withLock { state in (unsafe state.free.count, state.lent, state.peak, state.limit) }
    }
}
