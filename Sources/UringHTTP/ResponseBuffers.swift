import Glibc

/// Response buffers lent to sessions while they answer, from a cache per thread.
///
/// A session needs its response buffer (``HTTPServer/bufferSize``: a 64 KiB body and its head)
/// from its first request's answer until that answer is sent, not while it waits for the next
/// request. So it gives the buffer back each time it has sent everything and waits for the client,
/// and takes one again when bytes arrive. The last buffer given back on a thread is the next one
/// taken there: a ring's sessions answer through the same few buffers, warm in the core's cache,
/// instead of one each, cold by the time its turn comes (64 connections × 65 KiB is twice a 2 MiB
/// L2), and an idle connection holds no response buffer at all.
///
/// A thread keeps at most ``cacheLimit`` buffers; more are freed. A thread's buffers are freed when
/// it ends (a thread-specific key's destructor). When no key can be made, every take allocates and
/// every give-back frees.
enum ResponseBuffers {
    static let size = HTTPServer.bufferSize
    /// Page-aligned, as a read with `O_DIRECT` into the buffer needs.
    static let alignment = 4096
    static let cacheLimit = 128

    /// A buffer of ``size`` bytes (its contents undefined).
    static func take() -> UnsafeMutableRawBufferPointer {
        // SAFETY: a cached block is a whole buffer of `size` bytes that nobody holds; its first word links the list.
        if let cache = unsafe currentCache(), let head = unsafe cache.pointee.head {
            unsafe cache.pointee.head = head.load(as: UnsafeMutableRawPointer?.self)
            unsafe cache.pointee.count -= 1
            return unsafe UnsafeMutableRawBufferPointer(start: head, count: size)
        }
        return UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: alignment)
    }

    /// Gives back a buffer of ``take()``: nothing may use it afterwards.
    static func giveBack(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        // SAFETY: the caller gives up the buffer; it joins this thread's list (its first word links the next).
        if let cache = unsafe currentCache(), unsafe cache.pointee.count < cacheLimit {
            unsafe base.storeBytes(of: cache.pointee.head, as: UnsafeMutableRawPointer?.self)
            unsafe cache.pointee.head = base
            unsafe cache.pointee.count += 1
            return
        }
        unsafe buffer.deallocate()
    }
}

/// One thread's cached buffers.
@safe private struct BufferCache {
    // SAFETY (@safe): `head` is nil or the first of `count` cached buffers that no one else holds, each linking
    // the next through its first word; only the owning thread touches it.
    var head: UnsafeMutableRawPointer?
    var count = 0
}

/// The key of the per-thread caches (nil when none could be made).
private let cacheKey: pthread_key_t? = {
    var key = pthread_key_t()
    return unsafe pthread_key_create(&key, freeCache) == 0 ? key : nil
}()

/// This thread's cache, made on first use.
@unsafe private func currentCache() -> UnsafeMutablePointer<BufferCache>? {
    guard let key = cacheKey else { return nil }
    if let value = unsafe pthread_getspecific(key) { return unsafe value.assumingMemoryBound(to: BufferCache.self) }
    let cache = UnsafeMutablePointer<BufferCache>.allocate(capacity: 1)
    unsafe cache.initialize(to: BufferCache())
    guard unsafe pthread_setspecific(key, cache) == 0 else {
        unsafe cache.deallocate()
        return nil
    }
    return unsafe cache
}

/// A thread's end: its buffers and its cache are freed.
private func freeCache(_ value: UnsafeMutableRawPointer?) {
    guard let value = unsafe value else { return }
    // SAFETY: `value` is this ending thread's cache; nothing else reaches it or its buffers.
    let cache = unsafe value.assumingMemoryBound(to: BufferCache.self)
    var next = unsafe cache.pointee.head
    while let buffer = unsafe next {
        unsafe next = buffer.load(as: UnsafeMutableRawPointer?.self)
        unsafe UnsafeMutableRawBufferPointer(start: buffer, count: ResponseBuffers.size).deallocate()
    }
    unsafe cache.deallocate()
}
