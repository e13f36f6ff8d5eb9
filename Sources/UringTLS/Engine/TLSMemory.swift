internal import COpenSSL
import Glibc
import Synchronization

/// OpenSSL's memory functions: small blocks and record buffers recycled per thread.
///
/// OpenSSL 3.0 allocates and frees small blocks for every TLS record it writes or reads: the
/// `WPACKET` sub-packet (40 bytes) it builds each record header and its additional data with,
/// eight allocations per HTTPS request in all. The engine hands OpenSSL its own memory functions
/// (`CRYPTO_set_mem_functions`) before OpenSSL's first allocation: a freed block of up to
/// 512 bytes goes to a cache of the freeing thread (at most 256 blocks per size class) and the
/// next allocation of its class on that thread takes it back, so in a steady state OpenSSL no
/// longer calls `malloc`. Two more classes hold buffers: OpenSSL's record buffers (more than
/// 16 KiB, up to 32 KiB; released whenever a session is idle, `SSL_MODE_RELEASE_BUFFERS`) and
/// the ciphertext buffers of ``TLSTransport`` (up to ``bufferClassCapacity``); a thread keeps
/// at most ``bufferCacheLimit`` of each, so the sessions of one ring share a few buffers that
/// stay in the core's cache instead of a cold set per connection. Other sizes go straight to
/// `malloc`, `realloc` and `free`.
///
/// Each block carries a 16-byte header: its size class (or "large") and the size asked for.
/// A thread's cache is freed block by block when the thread ends (a thread-specific key's
/// destructor); the cache's own record stays on a global list, for the next thread to reuse, so
/// every cached block stays reachable (LeakSanitizer) and nothing is freed under another thread.
///
/// OpenSSL accepts memory functions only before its first allocation: when the application (or
/// another library) has used OpenSSL already, or installed functions of its own, installation
/// fails and OpenSSL keeps its own (``installed`` is false); nothing else changes. The environment
/// variable `SWIFT_URING_TLS_MEMORY=system` leaves OpenSSL's own functions in place.
enum TLSMemory {
    /// Whether OpenSSL allocates through these functions. Evaluated once, before the engine's
    /// first call into OpenSSL (every entry point of the engine reads it).
    static let installed: Bool = unsafe install()

    /// Size classes: blocks of 64, 128, 256 and 512 bytes, then buffers of 32 KiB (record
    /// buffers) and of ``bufferClassCapacity`` (the transport's output).
    static let classCount = 6
    /// The most small blocks a thread keeps per class.
    static let cacheLimit = 256
    /// The most buffers a thread keeps per buffer class (4 MiB and 8.5 MiB at most): as many as
    /// its sessions hold at once under load, so a steady state allocates none.
    static let bufferCacheLimit = 128
    /// The largest block of the last class: four TLS records and their overhead, rounded up.
    static let bufferClassCapacity = 69_632
    /// The header's class value for a block that is not cached.
    static let large = 0xFF

    #if DEBUG
    /// Blocks OpenSSL holds now (debug builds: the tests check that bad clients leave none behind).
    static var liveBlocks: Int { liveBlockCount.load(ordering: .relaxed) }
    #endif

    /// The class of a block of `size` bytes, or -1 (no class: `malloc` and `free`). Only sizes
    /// close to a buffer class's capacity fall into it, so no block wastes more than half of it.
    static func sizeClass(_ size: Int) -> Int {
        if size <= 512 { return size <= 64 ? 0 : size <= 128 ? 1 : size <= 256 ? 2 : 3 }
        if size > 16_384 && size <= 32_768 { return 4 }
        if size > 65_536 && size <= bufferClassCapacity { return 5 }
        return -1
    }

    static func capacity(ofClass sizeClass: Int) -> Int {
        sizeClass < 4 ? 64 << sizeClass : sizeClass == 4 ? 32_768 : bufferClassCapacity
    }

    static func cacheLimit(ofClass sizeClass: Int) -> Int { sizeClass < 4 ? cacheLimit : bufferCacheLimit }

    /// A block of `size` bytes from this thread's cache (or `malloc`), for the engine's own
    /// buffers: freed with ``releaseBlock(_:)``, on any thread. Nil when memory is exhausted.
    static func allocateBlock(_ size: Int) -> UnsafeMutableRawPointer? { unsafe allocate(size, nil, 0) }

    /// Gives back a block of ``allocateBlock(_:)``.
    static func releaseBlock(_ block: UnsafeMutableRawPointer) { unsafe release(block, nil, 0) }

    /// The class a live block of these functions was given (its header), or ``large``.
    static func sizeClass(ofBlock block: UnsafeMutableRawPointer) -> Int {
        // SAFETY: the caller passes a live block of `allocate`, which a header precedes.
        unsafe (block - headerSize).load(as: Int.self)
    }
}

/// The thread-specific key of the caches, and the lock of the list of every cache record: set
/// once by `install()` before OpenSSL can call the functions, read-only afterwards (other
/// threads see them through `installed`, which every entry point of the engine reads first). Plain
/// statically initialized storage, not a lazy global, so each allocation reads them directly
/// (no `swift_once`). `sharedLock` stays nil when no key was left (`PTHREAD_KEYS_MAX`): then
/// nothing is installed.
private nonisolated(unsafe) var sharedKey: pthread_key_t = 0
private nonisolated(unsafe) var sharedLock: UnsafeMutablePointer<pthread_mutex_t>? = nil

/// Creates the key and the lock (`install()`, once); false when no key is left.
@unsafe private func makeShared() -> Bool {
    var key = pthread_key_t()
    guard unsafe pthread_key_create(&key, releaseCache) == 0 else { return false }
    let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    // SAFETY: `lock` is allocated above and never freed (it lives as long as the process).
    unsafe lock.initialize(to: pthread_mutex_t())
    unsafe pthread_mutex_init(lock, nil)
    unsafe sharedKey = key
    unsafe sharedLock = lock
    return true
}
#if DEBUG
private let liveBlockCount = Atomic<Int>(0)
#endif

/// Counts a block handed to OpenSSL (+1) or given back (-1), in debug builds.
@inline(__always)
private func count(_ change: Int) {
    #if DEBUG
    liveBlockCount.add(change, ordering: .relaxed)
    #endif
}

/// The first cache record (under the lock); records are never freed.
private nonisolated(unsafe) var registry: UnsafeMutablePointer<Int>? = nil

// A cache record is `2 + 2 * classCount` words: [0] the next record, [1] 1 while a thread owns
// it, then per class its free list's head (a block address; 0 for none) and its length. A free
// block's first word links to the next free block.
private let recordWords = 2 + 2 * TLSMemory.classCount
private let headerSize = 16

extension TLSMemory {
    @unsafe static func install() -> Bool {
        // SAFETY: runs once (a static let's initializer), before the engine's first OpenSSL call;
        // the key and the lock are set up before OpenSSL can call the functions.
        if let choice = unsafe getenv("SWIFT_URING_TLS_MEMORY"), unsafe String(cString: choice) == "system" {
            return false
        }
        guard unsafe makeShared() else { return false }
        return unsafe CRYPTO_set_mem_functions(allocate, reallocate, release) == 1
    }
}

/// This thread's cache record; with `create`, claimed (a free record, or a new one) when the
/// thread has none.
@unsafe private func currentCache(create: Bool) -> UnsafeMutablePointer<Int>? {
    // SAFETY: the key's value is only ever a record of the registry, owned by this thread.
    guard let lock = unsafe sharedLock else { return nil }
    let key = unsafe sharedKey
    if let value = unsafe pthread_getspecific(key) { return unsafe value.assumingMemoryBound(to: Int.self) }
    guard create else { return nil }
    unsafe pthread_mutex_lock(lock)
    defer { unsafe pthread_mutex_unlock(lock) }
    var record = unsafe registry
    while let candidate = unsafe record, unsafe candidate[1] != 0 {
        unsafe record = UnsafeMutablePointer(bitPattern: candidate[0])
    }
    if unsafe record == nil {
        guard let raw = unsafe malloc(recordWords * MemoryLayout<Int>.stride) else { return nil }
        let fresh = unsafe raw.bindMemory(to: Int.self, capacity: recordWords)
        unsafe fresh.initialize(repeating: 0, count: recordWords)
        unsafe fresh[0] = Int(bitPattern: registry)
        unsafe registry = fresh
        unsafe record = fresh
    }
    guard let owned = unsafe record else { return nil }
    unsafe owned[1] = 1
    guard unsafe pthread_setspecific(key, owned) == 0 else {
        unsafe owned[1] = 0
        return nil
    }
    return unsafe owned
}

/// The thread's end: its cached blocks are freed and its record is free for another thread.
private func releaseCache(_ value: UnsafeMutableRawPointer?) {
    guard let value = unsafe value else { return }
    // SAFETY: `value` is this thread's record (the key's value); only this thread touches its
    // lists, and it gives the record up last, under the lock.
    let record = unsafe value.assumingMemoryBound(to: Int.self)
    for sizeClass in 0..<TLSMemory.classCount {
        var block = unsafe UnsafeMutableRawPointer(bitPattern: record[2 + 2 * sizeClass])
        while let current = unsafe block {
            unsafe block = UnsafeMutableRawPointer(bitPattern: current.load(as: Int.self))
            unsafe free(current - headerSize)
        }
        unsafe record[2 + 2 * sizeClass] = 0
        unsafe record[3 + 2 * sizeClass] = 0
    }
    guard let lock = unsafe sharedLock else { return }
    unsafe pthread_mutex_lock(lock)
    unsafe record[1] = 0
    unsafe pthread_mutex_unlock(lock)
}

/// OpenSSL's `malloc`.
private func allocate(_ size: Int, _ file: UnsafePointer<CChar>?, _ line: Int32) -> UnsafeMutableRawPointer? {
    guard size > 0 else { return nil }
    let sizeClass = TLSMemory.sizeClass(size)
    // SAFETY: a cached block is a whole block of its class (header included), owned by no one.
    if sizeClass >= 0, let record = unsafe currentCache(create: true),
        let block = unsafe UnsafeMutableRawPointer(bitPattern: record[2 + 2 * sizeClass])
    {
        unsafe record[2 + 2 * sizeClass] = block.load(as: Int.self)
        unsafe record[3 + 2 * sizeClass] -= 1
        unsafe (block - headerSize).storeBytes(of: size, toByteOffset: 8, as: Int.self)
        count(1)
        return unsafe block
    }
    let capacity = sizeClass >= 0 ? TLSMemory.capacity(ofClass: sizeClass) : size
    guard let raw = unsafe malloc(headerSize + capacity) else { return nil }
    // SAFETY: `raw` has `headerSize + capacity` bytes: the header, then the caller's block.
    unsafe raw.storeBytes(of: sizeClass >= 0 ? sizeClass : TLSMemory.large, as: Int.self)
    unsafe raw.storeBytes(of: size, toByteOffset: 8, as: Int.self)
    count(1)
    return unsafe raw + headerSize
}

/// OpenSSL's `free`.
private func release(_ pointer: UnsafeMutableRawPointer?, _ file: UnsafePointer<CChar>?, _ line: Int32) {
    guard let pointer = unsafe pointer else { return }
    count(-1)
    // SAFETY: `pointer` came from `allocate` or `reallocate` (OpenSSL frees only what it got
    // from these functions, installed before its first allocation): a header precedes it.
    let raw = unsafe pointer - headerSize
    let sizeClass = unsafe raw.load(as: Int.self)
    if sizeClass < TLSMemory.classCount, let record = unsafe currentCache(create: false),
        unsafe record[3 + 2 * sizeClass] < TLSMemory.cacheLimit(ofClass: sizeClass)
    {
        unsafe pointer.storeBytes(of: record[2 + 2 * sizeClass], as: Int.self)
        unsafe record[2 + 2 * sizeClass] = Int(bitPattern: pointer)
        unsafe record[3 + 2 * sizeClass] += 1
        return
    }
    unsafe free(raw)
}

/// OpenSSL's `realloc`.
private func reallocate(
    _ pointer: UnsafeMutableRawPointer?, _ size: Int, _ file: UnsafePointer<CChar>?, _ line: Int32
) -> UnsafeMutableRawPointer? {
    guard let pointer = unsafe pointer else { return unsafe allocate(size, file, line) }
    guard size > 0 else {
        unsafe release(pointer, file, line)
        return nil
    }
    // SAFETY: as in `release`, a header precedes `pointer`; its recorded size is how many of its
    // bytes the caller may have written.
    let raw = unsafe pointer - headerSize
    let sizeClass = unsafe raw.load(as: Int.self)
    if sizeClass < TLSMemory.classCount, size <= TLSMemory.capacity(ofClass: sizeClass) {
        unsafe raw.storeBytes(of: size, toByteOffset: 8, as: Int.self)
        return unsafe pointer
    }
    if sizeClass == TLSMemory.large {
        guard let moved = unsafe realloc(raw, headerSize + size) else { return nil }
        unsafe moved.storeBytes(of: size, toByteOffset: 8, as: Int.self)
        return unsafe moved + headerSize
    }
    let old = unsafe raw.load(fromByteOffset: 8, as: Int.self)
    guard let fresh = unsafe allocate(size, file, line) else { return nil }
    unsafe fresh.copyMemory(from: pointer, byteCount: min(old, size))
    unsafe release(pointer, file, line)
    return unsafe fresh
}
