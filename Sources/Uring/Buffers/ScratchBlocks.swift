import Glibc

/// Small blocks (4 KiB) that one operation borrows for what the kernel reads or fills while the
/// caller is suspended: a path's C string, an `open_how`, a `statx` buffer. A shared free list
/// (at most 64 blocks kept), so that a static-file request — an open, a status — allocates
/// nothing once the list is warm.
///
/// The lender's rule is the operations' rule: an operation's call returns only after its final
/// completion (cancelled or not), so a block is given back only when no kernel or worker can
/// still touch it.
@safe enum ScratchBlocks {
    /// The size of a block: a path up to `PATH_MAX` (4,096 bytes with its NUL) fits.
    static let size = 4096
    private static let kept = 64
    private static let free = unsafe Lock<[UnsafeMutableRawPointer]>(Self.emptyList())

    private static func emptyList() -> [UnsafeMutableRawPointer] {
        var list: [UnsafeMutableRawPointer] = unsafe []
        unsafe list.reserveCapacity(kept)
        return unsafe list
    }

    /// A block of ``size`` bytes (16-byte aligned), from the free list or newly allocated.
    static func take() -> UnsafeMutableRawPointer {
        if let block = unsafe free.withLock({ unsafe $0.popLast() }) { return unsafe block }
        return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
    }

    /// Gives `block` (from ``take()``) back. The caller must not touch it afterwards.
    static func give(_ block: UnsafeMutableRawPointer) {
        let keptIt = unsafe free.withLock { list in
            guard unsafe list.count < kept else { return false }
            unsafe list.append(block)
            return true
        }
        if !keptIt { unsafe block.deallocate() }
    }
}
