/// The preallocated table of operation slots, keyed by `user_data`. Slots live in fixed chunks
/// that never move, so a pointer to a slot (a timeout's timespec) stays valid while the kernel may
/// read it. The table grows by whole chunks up to ``maximumCount`` and never shrinks: in steady
/// state acquiring and releasing a slot allocates nothing.
@safe struct OperationTable: ~Copyable {
    // SAFETY (@safe): chunks are allocated by addChunk, never move or shrink, and are freed in deinit; slot(_:) is
    // only given indices below slotCount.
    static let chunkShift = 10
    static let chunkSize = 1 << chunkShift
    static let maximumCount = 1 << 22

    private var chunks: UnsafeMutablePointer<UnsafeMutablePointer<OperationSlot>>
    private var chunkCount = 0
    private let chunkCapacity = maximumCount / chunkSize
    private var freeHead: UInt32 = .max
    /// Slots currently acquired.
    private(set) var activeCount = 0
    private(set) var slotCount = 0

    init(initialCount: Int) {
        unsafe chunks = .allocate(capacity: chunkCapacity)
        while slotCount < max(initialCount, 1) { addChunk() }
    }

    deinit {
        for i in 0..<chunkCount {
            // SAFETY: every chunk was initialized with `chunkSize` slots in addChunk.
            unsafe chunks[i].deinitialize(count: Self.chunkSize)
            unsafe chunks[i].deallocate()
        }
        unsafe chunks.deallocate()
    }

    private mutating func addChunk() {
        precondition(chunkCount < chunkCapacity, "more than \(Self.maximumCount) operations at once")
        let chunk = UnsafeMutablePointer<OperationSlot>.allocate(capacity: Self.chunkSize)
        let base = UInt32(slotCount)
        for i in 0..<Self.chunkSize {
            // SAFETY: fresh allocation of chunkSize slots; each initialized once, chained into the free list.
            unsafe (chunk + i).initialize(
                to: OperationSlot(nextFree: i == Self.chunkSize - 1 ? freeHead : base + UInt32(i) + 1))
        }
        freeHead = base
        unsafe chunks[chunkCount] = unsafe chunk
        chunkCount += 1
        slotCount += Self.chunkSize
    }

    /// The slot for `index`. The pointer stays valid for the table's lifetime.
    @inline(__always)
    func slot(_ index: UInt32) -> UnsafeMutablePointer<OperationSlot> {
        // SAFETY: index < slotCount (callers hold an id from acquire(), or checked `contains`).
        unsafe chunks[Int(index) >> Self.chunkShift] + (Int(index) & (Self.chunkSize - 1))
    }

    /// The slot for `id` if it still belongs to that operation (same generation, not free).
    @inline(__always)
    func slot(for id: OperationID) -> UnsafeMutablePointer<OperationSlot>? {
        guard Int(id.index) < slotCount else { return nil }
        let slot = unsafe slot(id.index)
        guard unsafe slot.pointee.generation == id.generation, unsafe slot.pointee.state != .free else { return nil }
        return unsafe slot
    }

    mutating func acquire() -> OperationID {
        if freeHead == .max { addChunk() }
        let index = freeHead
        let slot = unsafe slot(index)
        freeHead = unsafe slot.pointee.nextFree
        unsafe slot.pointee.acquired()
        activeCount += 1
        return unsafe OperationID(index: index, generation: slot.pointee.generation)
    }

    mutating func release(_ id: OperationID) {
        let slot = unsafe slot(id.index)
        unsafe precondition(slot.pointee.generation == id.generation, "released by an earlier operation")
        unsafe slot.pointee.released()
        unsafe slot.pointee.nextFree = freeHead
        freeHead = id.index
        activeCount -= 1
    }

    /// Calls `body` for every slot whose operation is in the kernel.
    func forEachInFlight(_ body: (OperationID, UnsafeMutablePointer<OperationSlot>) -> Void) {
        for index in 0..<UInt32(slotCount) {
            let slot = unsafe slot(index)
            if unsafe slot.pointee.state == .inFlight {
                unsafe body(OperationID(index: index, generation: slot.pointee.generation), slot)
            }
        }
    }
}
