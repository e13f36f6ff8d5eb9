import Synchronization

/// The lock-free way into a ring for jobs from other threads (other rings handing over tasks,
/// continuations resumed elsewhere): a bounded multi-producer, single-consumer queue after
/// Dmitry Vyukov's bounded queue, with a sequence number per cell. A producer claims a cell with
/// one compare-and-swap on the tail and publishes it with a release store; the ring thread takes
/// cells in order. No lock, no allocation after `init`. When it is full, producers fall back to
/// the ring's mutex-guarded inbox, so nothing is ever refused.
@safe final class JobQueue: @unchecked Sendable {
    // SAFETY (@safe): the cell buffer is owned by the queue, sized once, and every access goes through a cell's
    // sequence number.
    // @unchecked Sendable: `cells[i]` is written by the producer that claimed cell i and read by
    // the consumer only after that cell's sequence number (release/acquire) says it is complete;
    // `head` belongs to the consumer.
    private let mask: Int
    private let capacity: Int
    private let sequences: UnsafeMutablePointer<Atomic<Int>>
    private let cells: UnsafeMutablePointer<ReadyJob>
    private let tail = Atomic<Int>(0)
    private var head = 0

    /// `capacity` must be a power of two.
    init(capacity: Int) {
        precondition(capacity >= 2 && capacity & (capacity - 1) == 0, "power of two")
        self.capacity = capacity
        mask = capacity - 1
        unsafe sequences = .allocate(capacity: capacity)
        unsafe cells = .allocate(capacity: capacity)
        for i in 0..<capacity {
            // SAFETY: fresh allocations; each sequence is initialized once here and deinitialized
            // once in deinit. Cells hold a trivial type and are written before they are read.
            unsafe (sequences + i).initialize(to: Atomic(i))
        }
    }

    deinit {
        unsafe sequences.deinitialize(count: capacity)
        unsafe sequences.deallocate()
        unsafe cells.deallocate()
    }

    /// Adds `job` (any thread). False when the queue is full.
    func push(_ job: ReadyJob) -> Bool {
        var position = tail.load(ordering: .relaxed)
        while true {
            let cell = position & mask
            let sequence = unsafe sequences[cell].load(ordering: .acquiring)
            let difference = sequence - position
            if difference == 0 {
                let (claimed, current) = tail.compareExchange(
                    expected: position, desired: position + 1, ordering: .relaxed)
                if claimed {
                    // SAFETY: this producer alone owns the cell until it publishes it below.
                    unsafe (cells + cell).initialize(to: job)
                    unsafe sequences[cell].store(position + 1, ordering: .releasing)
                    return true
                }
                position = current
            } else if difference < 0 {
                return false  // full: the consumer has not taken this cell's previous job yet
            } else {
                position = tail.load(ordering: .relaxed)
            }
        }
    }

    /// Takes the oldest published job (the ring thread only).
    func pop() -> ReadyJob? {
        let cell = head & mask
        let sequence = unsafe sequences[cell].load(ordering: .acquiring)
        guard sequence == head + 1 else { return nil }  // empty, or the next one is not published yet
        // SAFETY: the acquire load above saw the producer's release store after it wrote the cell.
        let job = unsafe cells[cell]
        unsafe sequences[cell].store(head + capacity, ordering: .releasing)
        head += 1
        return job
    }
}
