internal import CLiburing
import Glibc

/// A ring's provided-buffer pool for multishot receives: one kernel buffer ring
/// (`io_uring_register_buf_ring`) of `count` buffers of `bufferSize` bytes, shared by every
/// receive stream on the ring. The kernel takes a buffer for each receive completion and names
/// it in the CQE; the consumer hands it back (``recycle(_:)``) when done with the bytes.
///
/// Ring thread only. Created on the first multishot receive; its memory is freed after the ring
/// is torn down (the loop keeps the pool alive until then), so the kernel never writes into
/// freed memory.
@safe final class BufferPool {
    // SAFETY (@safe): the buffer ring and storage are mapped/allocated in init and released in deinit, after the ring
    // that reads them is gone (the driver drops the pool after the ring's exit); buffer ids come from this pool's
    // CQEs.
    /// The buffer group id receives select from.
    static let group: UInt16 = 0

    let count: Int
    let bufferSize: Int
    private let mask: Int32
    private let ringBytes: Int
    private let bufferRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let storage: UnsafeMutableRawPointer
    /// Buffers the kernel can fill right now.
    private(set) var available: Int
    /// Receive streams that ran out of buffers (`-ENOBUFS`) and wait for one to come back.
    var starved = FIFO<MultishotStream>(initialCapacity: 16)

    /// Registers the pool through `register` (`io_uring_register_buf_ring` on a kernel ring, or
    /// the epoll driver's equivalent), which returns 0 or -errno. `count` must be a power of
    /// two, at most 32,768.
    init(
        count: Int, bufferSize: Int, register: (UnsafeMutablePointer<io_uring_buf_reg>) -> Int32
    ) throws(IOError) {
        precondition(count > 0 && count <= 32768 && count & (count - 1) == 0 && bufferSize > 0)
        self.count = count
        self.bufferSize = bufferSize
        mask = io_uring_buf_ring_mask(UInt32(count))
        ringBytes = count * MemoryLayout<io_uring_buf>.stride
        // The kernel requires the buffer ring to be page aligned: an anonymous mapping is.
        let mapped = unsafe mmap(nil, ringBytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0)
        guard let mapped = unsafe mapped, unsafe mapped != MAP_FAILED else {
            throw IOError.system(Glibc.errno, .receive)
        }
        unsafe bufferRing = unsafe mapped.bindMemory(to: io_uring_buf_ring.self, capacity: 1)
        unsafe storage = .allocate(byteCount: count * bufferSize, alignment: 4096)
        var registration = io_uring_buf_reg()
        registration.ring_addr = UInt64(UInt(bitPattern: mapped))
        registration.ring_entries = UInt32(count)
        registration.bgid = Self.group
        let rc = unsafe register(&registration)
        guard rc == 0 else {
            unsafe munmap(mapped, ringBytes)
            unsafe storage.deallocate()
            throw IOError.system(-rc, .receive)
        }
        // SAFETY: bufferRing is the registered, page-aligned ring of `count` entries; every
        // buffer id < count names a distinct `bufferSize` slice of `storage`.
        unsafe io_uring_buf_ring_init(bufferRing)
        for id in 0..<count {
            unsafe io_uring_buf_ring_add(
                bufferRing, storage + id * bufferSize, UInt32(bufferSize), UInt16(id), mask, Int32(id))
        }
        unsafe io_uring_buf_ring_advance(bufferRing, Int32(count))
        available = count
    }

    deinit {
        unsafe munmap(bufferRing, ringBytes)
        unsafe storage.deallocate()
    }

    /// The start of buffer `id`.
    @inline(__always)
    func address(of id: UInt16) -> UnsafeMutableRawPointer {
        unsafe storage + Int(id) * bufferSize
    }

    /// A completion told us the kernel filled buffer `id`: it is ours until recycled.
    @inline(__always)
    func took() {
        available -= 1
    }

    /// Gives buffer `id` back to the kernel. Starved streams are re-armed by `wakeStarved`, once
    /// per loop iteration.
    func recycle(_ id: UInt16) {
        // SAFETY: `id` came from a CQE of this pool and was not recycled since (the streams
        // hand each buffer back exactly once); the store-release in advance publishes the entry.
        unsafe io_uring_buf_ring_add(bufferRing, address(of: id), UInt32(bufferSize), id, mask, 0)
        unsafe io_uring_buf_ring_advance(bufferRing, 1)
        available += 1
    }
}
