/// A growable first-in, first-out ring buffer for the ring thread's queues (ready jobs, tasks
/// waiting for capacity). Grows by doubling and never shrinks, so a queue that has reached its
/// working size allocates nothing more. Not thread-safe: owned by one ring thread.
@safe struct FIFO<Element>: ~Copyable {
    // SAFETY (@safe): the storage is owned by the FIFO (allocated, grown and freed only by it) and indexed only within
    // `count`.
    private var storage: UnsafeMutablePointer<Element>
    private var capacity: Int
    private var head = 0
    private(set) var count = 0

    init(initialCapacity: Int = 64) {
        precondition(initialCapacity > 0 && initialCapacity & (initialCapacity - 1) == 0, "power of two")
        capacity = initialCapacity
        unsafe storage = .allocate(capacity: initialCapacity)
    }

    deinit {
        // SAFETY: elements head..<head+count (mod capacity) are initialized; the rest are not.
        for i in 0..<count { unsafe (storage + ((head + i) & (capacity - 1))).deinitialize(count: 1) }
        unsafe storage.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    /// The oldest element, left in place.
    var first: Element? {
        guard count > 0 else { return nil }
        // SAFETY: the head slot is initialized because count > 0.
        return unsafe storage[head]
    }

    mutating func append(_ element: consuming Element) {
        if count == capacity { grow() }
        // SAFETY: count < capacity, so the slot after the last element is uninitialized.
        unsafe (storage + ((head + count) & (capacity - 1))).initialize(to: element)
        count += 1
    }

    /// Puts `element` before the oldest element: it is popped next.
    mutating func prepend(_ element: consuming Element) {
        if count == capacity { grow() }
        head = (head - 1) & (capacity - 1)
        // SAFETY: count < capacity, so the slot before the head is uninitialized.
        unsafe (storage + head).initialize(to: element)
        count += 1
    }

    mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        // SAFETY: the head slot is initialized because count > 0; it is left uninitialized.
        let element = unsafe (storage + head).move()
        head = (head + 1) & (capacity - 1)
        count -= 1
        return element
    }

    private mutating func grow() {
        let newCapacity = capacity * 2
        let newStorage = UnsafeMutablePointer<Element>.allocate(capacity: newCapacity)
        // SAFETY: moves the `count` initialized elements, in order, to the front of the new storage.
        for i in 0..<count {
            unsafe (newStorage + i).moveInitialize(from: storage + ((head + i) & (capacity - 1)), count: 1)
        }
        unsafe storage.deallocate()
        unsafe storage = unsafe newStorage
        capacity = newCapacity
        head = 0
    }
}
