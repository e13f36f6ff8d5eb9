internal import CLiburing
import Glibc
import SystemPackage

// The calls io_uring has no operation for (liburing issue 111: no getdents opcode is planned),
// made on the blocking pool on both drivers, so that no ring ever blocks on them.

enum WorkerCalls {
    /// `readlink(2)` of `path` on ``BlockingPool/shared``, growing the buffer until the content
    /// fits. The work is not interruptible; the awaiting task gets its result.
    static func readLink(_ path: FilePath) async throws(IOError) -> FilePath {
        let result: Result<FilePath, IOError>
        do {
            result = try await BlockingPool.shared.run { readLinkNow(path) }
        } catch {
            throw IOError(.cancelled, operation: .readLink)  // unreachable: the work does not throw
        }
        return try result.get()
    }

    static func readLinkNow(_ path: FilePath) -> Result<FilePath, IOError> {
        var capacity = 256
        while true {
            let outcome: Result<FilePath, IOError>? = unsafe path.withPlatformString { cPath in
                var buffer = [CChar](repeating: 0, count: capacity)
                let count = unsafe buffer.withUnsafeMutableBufferPointer {
                    // SAFETY: `readlink` writes at most `capacity` bytes into the array's storage.
                    unsafe readlink(cPath, $0.baseAddress!, capacity)
                }
                if count < 0 { return .failure(IOError.system(errno, .readLink)) }
                if count == capacity { return nil }  // may have been cut: again with more room
                return .success(
                    FilePath(String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)))
            }
            if let outcome { return outcome }
            capacity *= 4
        }
    }
}

/// The open directory behind a ``DirectoryContents`` iterator: its descriptor and two buffers
/// that `getdents64` fills on the blocking pool. While the iterator hands out the entries of one
/// buffer (parsed one at a time on its own thread, with no array in between), a pool thread
/// reads the next records into the other: a listing uses two cores where it can.
///
/// A pool job holds the reader, so neither a buffer nor the descriptor goes away while a worker
/// uses it; the descriptor is closed by deinit, after the last job. Jobs on the descriptor never
/// overlap: the next one starts when the iterator has taken the last one's result.
@usableFromInline @safe final class DirectoryReader: @unchecked Sendable {
    // SAFETY (@safe): the buffers are allocated in init and freed in deinit, which runs only after the last pool job
    // that reads into one has ended (each job holds the reader).
    // @unchecked Sendable: the iterator uses `filled`, `offset` and `current`; a pool job uses only the other buffer
    // and the descriptor, and hands its result over under `lock` (`ReadAhead`).
    /// Bytes read per `getdents64` call by default: thousands of entries per trip to the pool.
    static let defaultBufferSize = 256 * 1024

    let descriptor: Int32
    private let buffers: (UnsafeMutableRawPointer, UnsafeMutableRawPointer)
    private let bufferSize: Int
    /// The buffer being handed out (0 or 1), its bytes of records, and where the next one starts.
    private var current = 0
    private var filled = 0
    private var offset = 0
    /// The read into the other buffer, when one was started.
    private var readAhead: ReadAhead?

    init(descriptor: Int32, bufferSize: Int = DirectoryReader.defaultBufferSize) {
        self.descriptor = descriptor
        self.bufferSize = max(bufferSize, 1024)
        unsafe buffers = (
            UnsafeMutableRawPointer.allocate(byteCount: self.bufferSize, alignment: 8),
            UnsafeMutableRawPointer.allocate(byteCount: self.bufferSize, alignment: 8)
        )
    }

    deinit {
        _ = Glibc.close(descriptor)
        unsafe buffers.0.deallocate()
        unsafe buffers.1.deallocate()
    }

    @inline(__always)
    private func buffer(_ index: Int) -> UnsafeMutableRawPointer { unsafe index == 0 ? buffers.0 : buffers.1 }

    /// The next entry of the records read so far (never "." or ".."), or nil when they are used up.
    @usableFromInline
    func nextEntry() -> DirectoryEntry? {
        let base = unsafe buffer(current)
        while offset < filled {
            // SAFETY: the kernel wrote `filled` bytes of whole `linux_dirent64` records: a u64
            // inode, an s64 offset, a u16 record length, a u8 type, then the name, NUL-terminated
            // and padded to 8 bytes inside the record (5 name bytes at least).
            let record = unsafe base + offset
            let length = unsafe Int(record.loadUnaligned(fromByteOffset: 16, as: UInt16.self))
            offset += length
            let name = unsafe UnsafeRawBufferPointer(start: record + 19, count: length - 19)
            // The name ends at its NUL; the padding after it is whatever the buffer held before.
            let nameLength = unsafe name.firstIndex(of: 0) ?? name.count
            let first = unsafe name[0]
            let second = unsafe name[1]
            if first == UInt8(ascii: "."), nameLength == 1 || (nameLength == 2 && second == UInt8(ascii: ".")) {
                continue
            }
            let inode = unsafe record.loadUnaligned(as: UInt64.self)
            let type = unsafe record.load(fromByteOffset: 18, as: UInt8.self)
            let text = unsafe String(decoding: UnsafeRawBufferPointer(rebasing: name[..<nameLength]), as: UTF8.self)
            return DirectoryEntry(name: text, kind: FileStatus.Kind(directoryEntryType: type), inode: inode)
        }
        return nil
    }

    /// Moves to the next records: those read ahead, or (the first time) read now; then starts
    /// reading the ones after into the buffer just used up. False at the end.
    func refill() async throws(IOError) -> Bool {
        let next = 1 - current
        let job = readAhead ?? startRead(into: next)
        let count = await job.result()
        readAhead = nil
        if count < 0 { throw IOError.system(Int32(-count), .readDirectory) }
        current = next
        filled = count
        offset = 0
        if count > 0 { readAhead = startRead(into: 1 - next) }
        return count > 0
    }

    /// Waits for a read started ahead, if any (so that the descriptor is idle when the iterator
    /// lets the reader go after an error or a cancellation).
    func settle() async {
        if let readAhead { _ = await readAhead.result() }
        readAhead = nil
    }

    private func startRead(into index: Int) -> ReadAhead {
        let job = ReadAhead()
        BlockingPool.shared.submit { [self] in
            var count: Int
            repeat {
                count = unsafe cliburing_getdents64(descriptor, buffer(index), UInt(bufferSize))
            } while count == -Int(EINTR)
            job.finish(count)
        }
        return job
    }
}

/// One `getdents64` on the pool: its result (bytes, 0 at the end, or -errno), and the task
/// waiting for it.
@safe final class ReadAhead: @unchecked Sendable {
    // SAFETY (@safe): the continuation is resumed exactly once: by `finish` when the waiter came first (on the
    // waiter's ring when it has one, see `RingExecutor.resumeOnRing`), else by `result()` itself, both decided under
    // `lock`.
    // @unchecked Sendable: the fields are touched only with `lock` held.
    @safe private struct State {
        // SAFETY (@safe): `waiter` is resumed once (see the class).
        var count: Int?
        var waiter: UnsafeContinuation<Void, Never>?
        var waiterRing: RingExecutor?
    }

    private let lock = Lock(State())

    func finish(_ count: Int) {
        // A waiter off any ring is resumed with the lock held, which it takes to read the count: it may be resumed
        // before it has suspended, a hand-over ThreadSanitizer cannot see without the lock (see `BlockingPool.run`).
        let onRing = unsafe lock.withLock { state -> (UnsafeContinuation<Void, Never>, RingExecutor)? in
            state.count = count
            guard let waiter = unsafe state.waiter else { return nil }
            if let ring = state.waiterRing { return unsafe (waiter, ring) }
            unsafe waiter.resume()
            return nil
        }
        if let (waiter, ring) = unsafe onRing { unsafe ring.resumeOnRing(waiter) }
    }

    func result() async -> Int {
        let ring = RingExecutor.current
        await unsafe withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let ready = lock.withLock { state -> Bool in
                if state.count != nil { return true }
                unsafe state.waiter = unsafe continuation
                state.waiterRing = ring
                return false
            }
            if ready { unsafe continuation.resume() }
        }
        return lock.withLock { $0.count! }
    }
}

extension FileStatus.Kind {
    /// The kind a directory record's `d_type` says (`DT_UNKNOWN` on file systems that do not say).
    init(directoryEntryType type: UInt8) {
        switch type {
        case 8: self = .regular  // DT_REG
        case 4: self = .directory  // DT_DIR
        case 10: self = .symbolicLink  // DT_LNK
        case 1: self = .fifo  // DT_FIFO
        case 12: self = .socket  // DT_SOCK
        case 2: self = .characterDevice  // DT_CHR
        case 6: self = .blockDevice  // DT_BLK
        default: self = .unknown
        }
    }
}

extension WorkerCalls {
    /// How ``copyFileRange(from:to:at:count:)`` ended.
    enum CopyOutcome: Sendable {
        /// Bytes copied (0: the source ended).
        case copied(Int)
        /// The file systems cannot copy in the kernel (`EXDEV`, `EOPNOTSUPP`, `ENOSYS`, `EINVAL`):
        /// copy through memory instead.
        case unsupported
        case failed(Int32)
    }

    /// One `copy_file_range(2)` of up to `count` bytes at `offset` in both files, on
    /// ``BlockingPool/shared`` (it copies in the kernel, which may take a while and may block).
    static func copyFileRange(from source: Int32, to destination: Int32, at offset: Int64, count: Int) async
        -> CopyOutcome
    {
        let result =
            (try? await BlockingPool.shared.run {
                cliburing_copy_file_range(source, offset, destination, offset, UInt(count))
            }) ?? -Int(ECANCELED)
        if result >= 0 { return .copied(result) }
        switch Int32(-result) {
        case EXDEV, EOPNOTSUPP, ENOSYS, EINVAL: return .unsupported
        case let errno: return .failed(errno)
        }
    }

    /// `ioctl(FICLONE)`: the destination shares the source's blocks (btrfs, xfs, bcachefs); false
    /// where the file system cannot (ext4, tmpfs) or across file systems. On the blocking pool.
    static func cloneFile(from source: Int32, to destination: Int32) async -> Bool {
        (try? await BlockingPool.shared.run { cliburing_clone_file(destination, source) == 0 }) ?? false
    }
}

extension WorkerCalls {
    /// `chmod(2)` of `path` to `permissions` on ``BlockingPool/shared`` (io_uring has no chmod).
    static func changePermissions(of path: FilePath, to permissions: FilePermissions) async throws(IOError) {
        let result =
            (try? await BlockingPool.shared.run {
                unsafe path.withPlatformString { unsafe chmod($0, mode_t(permissions.rawValue)) } == 0 ? 0 : errno
            }) ?? ECANCELED
        if result != 0 { throw IOError.system(result, .makeDirectory).about(.path(path)) }
    }
}

extension WorkerCalls {
    /// `$TMPDIR` when set and not empty, else `/tmp`.
    static var temporaryDirectoryBase: String {
        guard let raw = unsafe getenv("TMPDIR") else { return "/tmp" }
        let value = unsafe String(cString: raw)
        return value.isEmpty ? "/tmp" : value
    }
}
