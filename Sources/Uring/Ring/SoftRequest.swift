internal import CLiburing
import Glibc

/// A request the epoll driver's ring holds after its submission entry was consumed: one that
/// waits for readiness, a timer, or a job on the worker pool. It keeps a copy of its entry (the
/// submission slot is reused at once).
struct SoftRequest {
    enum Phase: UInt8 {
        case free
        /// In its descriptor's waiting list, for `events`.
        case waiting
        /// On the worker pool (see ``poolState``).
        case pooled
        /// Cancelled while queued on the pool: its completion is posted, and the request comes
        /// back from the pool (skipped) before it is freed.
        case abandonedOnPool
        /// A `IORING_OP_TIMEOUT`.
        case timer
        /// A `IORING_OP_LINK_TIMEOUT` guarding ``link``.
        case linkTimeout
    }

    var sqe = io_uring_sqe()
    var phase = Phase.free
    /// The epoll events it waits for.
    var events: UInt32 = 0
    /// The waiting list of its descriptor.
    var next: Int32 = -1
    var previous: Int32 = -1
    /// For an operation: its linked timeout (-1: none). For a linked timeout: its operation.
    var link: Int32 = -1
    /// Bumped each time the request is freed, so stale timer-heap entries are recognized.
    var generation: UInt32 = 0
    /// A multishot accept or receive: stays after each completion.
    var multishot = false
    /// A non-blocking connect in progress: the descriptor's flags before it, to restore.
    var connectFlags: Int32 = -1
    /// Guarded by ``FileWorkerPool``'s lock.
    var poolState = PoolState.idle

    enum PoolState: UInt8 {
        case idle, queued, running, cancelled
    }
}

/// Stable storage for ``SoftRequest``s: chunks that never move (a worker holds a pointer into
/// one while it runs a job), and a free list.
@safe struct RequestSlab: ~Copyable {
    // SAFETY (@safe): chunks are allocated here, never moved, and freed only in deinit; indexes come from `acquire`.
    static let chunkSize = 256
    private var chunks: [UnsafeMutablePointer<SoftRequest>] = unsafe []
    private var free: [Int32] = []
    private(set) var inUse = 0

    init() {
        free.reserveCapacity(Self.chunkSize)
        grow()
    }

    deinit {
        for i in 0..<(unsafe chunks.count) {
            unsafe chunks[i].deinitialize(count: Self.chunkSize)
            unsafe chunks[i].deallocate()
        }
    }

    private mutating func grow() {
        let chunk = UnsafeMutablePointer<SoftRequest>.allocate(capacity: Self.chunkSize)
        unsafe chunk.initialize(repeating: SoftRequest(), count: Self.chunkSize)
        let base = unsafe Int32(chunks.count * Self.chunkSize)
        unsafe chunks.append(chunk)
        for i in (0..<Int32(Self.chunkSize)).reversed() { free.append(base + i) }
    }

    /// A free request, initialized from `sqe` in `phase`.
    mutating func acquire(_ sqe: UnsafePointer<io_uring_sqe>, phase: SoftRequest.Phase) -> Int32 {
        if free.isEmpty { grow() }
        let index = free.removeLast()
        let request = unsafe self[index]
        unsafe request.pointee.sqe = sqe.pointee
        unsafe request.pointee.phase = phase
        unsafe request.pointee.link = -1
        unsafe request.pointee.next = -1
        unsafe request.pointee.previous = -1
        unsafe request.pointee.multishot = false
        unsafe request.pointee.connectFlags = -1
        inUse += 1
        return index
    }

    mutating func release(_ index: Int32) {
        let request = unsafe self[index]
        unsafe request.pointee.phase = .free
        unsafe request.pointee.generation &+= 1
        free.append(index)
        inUse -= 1
    }

    subscript(index: Int32) -> UnsafeMutablePointer<SoftRequest> {
        @inline(__always) get {
            let i = Int(index)
            return unsafe chunks[i / Self.chunkSize] + (i % Self.chunkSize)
        }
    }
}

/// A min-heap of deadlines for the epoll driver's timers. Entries are not removed when their
/// timer is cancelled: a popped entry whose request has moved on (another generation, another
/// phase) is skipped.
struct TimerHeap {
    struct Entry: Equatable {
        var deadline: UInt64
        var request: Int32
        var generation: UInt32
    }

    private(set) var entries: [Entry] = []

    var isEmpty: Bool { entries.isEmpty }
    var first: Entry? { entries.first }

    mutating func push(_ entry: Entry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popFirst() -> Entry? {
        guard !entries.isEmpty else { return nil }
        let top = entries[0]
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < entries.count && entries[left].deadline < entries[smallest].deadline { smallest = left }
                if right < entries.count && entries[right].deadline < entries[smallest].deadline { smallest = right }
                if smallest == parent { break }
                entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}

/// The epoll driver's per-descriptor state, indexed by descriptor number (a flat table that grows
/// to the largest number seen: no hashing, no allocation once grown).
@safe struct DescriptorTable: ~Copyable {
    // SAFETY (@safe): `storage` holds `capacity` initialized entries, owned here; pointers handed out are used before
    // the next call that may grow the table.
    private var storage: UnsafeMutablePointer<SoftRing.Waiters>
    private var capacity: Int

    init() {
        capacity = 256
        unsafe storage = .allocate(capacity: capacity)
        unsafe storage.initialize(repeating: SoftRing.Waiters(), count: capacity)
    }

    deinit {
        unsafe storage.deinitialize(count: capacity)
        unsafe storage.deallocate()
    }

    /// The entry of `fd` (not negative), growing the table if needed.
    mutating func entry(_ fd: Int32) -> UnsafeMutablePointer<SoftRing.Waiters> {
        let index = Int(fd)
        if index >= capacity {
            var grown = capacity
            while grown <= index { grown *= 2 }
            let bigger = UnsafeMutablePointer<SoftRing.Waiters>.allocate(capacity: grown)
            unsafe bigger.moveInitialize(from: storage, count: capacity)
            unsafe (bigger + capacity).initialize(repeating: SoftRing.Waiters(), count: grown - capacity)
            unsafe storage.deallocate()
            unsafe storage = unsafe bigger
            capacity = grown
        }
        return unsafe storage + index
    }

    /// The entry of `fd` if the table reaches it (an entry never touched is empty).
    func existing(_ fd: Int32) -> UnsafeMutablePointer<SoftRing.Waiters>? {
        guard fd >= 0, Int(fd) < capacity else { return nil }
        return unsafe storage + Int(fd)
    }
}
