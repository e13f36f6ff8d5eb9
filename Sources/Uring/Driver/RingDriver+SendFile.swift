internal import CLiburing
import Glibc
import Synchronization

// Sending a file's page-cached bytes straight from the page cache into a socket (`sendfile(2)`),
// made on the ring's thread without waiting, on either driver (Docs/DESIGN.md §8.2).

/// What one attempt of ``RingDriver/sendFileWithoutWaiting(socket:file:offset:count:)`` did.
enum SendFileAttempt: Equatable {
    /// This many bytes went into the socket (0: the file ends before `offset`).
    case sent(Int)
    /// The socket's send buffer is full: wait until it is writable, then try again.
    case socketFull
    /// Not made: a page of the range is not in the page cache (the call would wait for the
    /// disk), the kernel has no `cachestat` or `sendfile` for these descriptors, or one of them
    /// is being closed. The caller copies the bytes instead.
    case declined
    /// The call failed with this errno.
    case failed(Int32)
}

extension RingDriver {
    /// Whether the kernel answers `cachestat(2)` (Linux 6.5; a seccomp filter may refuse it).
    static let cacheStatusWorks = Atomic<Bool>(true)
    static let pageSize = Int64(max(4096, sysconf(Int32(_SC_PAGESIZE))))

    /// `sendfile(2)` of up to `count` bytes of `file` from `offset` into `socket`, made only when
    /// it cannot block: every page of the range is in the page cache (`cachestat(2)`), and the
    /// socket is non-blocking for the call (its flags are restored after). The descriptors' use
    /// is published around the call as for a queued operation, so a close on another ring waits.
    ///
    /// A page evicted between the check and the call would be read from the disk by the call:
    /// the one window in which this can wait, and only under memory pressure.
    mutating func sendFileWithoutWaiting(socket: Int32, file: Int32, offset: Int64, count: Int) -> SendFileAttempt {
        guard !stopping, count > 0, offset >= 0, Self.cacheStatusWorks.load(ordering: .relaxed) else {
            return .declined
        }
        noteUse(socket)
        noteUse(file)
        defer {
            noteEnd(file)
            noteEnd(socket)
        }
        if DescriptorUse.isClosing(socket) || DescriptorUse.isClosing(file) { return .declined }
        let length = Int64(count)
        let cached = cliburing_cached_pages(file, offset, length)
        if cached < 0 {
            let error = Int32(truncatingIfNeeded: -cached)
            if error == ENOSYS || error == EPERM || error == EOPNOTSUPP {
                Self.cacheStatusWorks.store(false, ordering: .relaxed)
                return .declined
            }
            return error == EBADF ? .failed(EBADF) : .declined
        }
        let pages = (offset + length - 1) / Self.pageSize - offset / Self.pageSize + 1
        guard cached >= pages else { return .declined }
        let flags = fcntl(socket, F_GETFL)
        guard flags >= 0 else { return .failed(Glibc.errno) }
        // A socket that cannot be made non-blocking would let sendfile wait: not made then.
        if flags & O_NONBLOCK == 0, fcntl(socket, F_SETFL, flags | O_NONBLOCK) != 0 { return .failed(Glibc.errno) }
        var result = cliburing_sendfile(socket, file, offset, UInt(count))
        if result == -Int(EINTR) { result = cliburing_sendfile(socket, file, offset, UInt(count)) }
        if flags & O_NONBLOCK == 0 { _ = fcntl(socket, F_SETFL, flags) }
        statistics.filesSentWithoutCopy &+= 1
        switch result {
        case 0...: return .sent(result)
        case -Int(EAGAIN), -Int(EINTR): return .socketFull
        case -Int(EINVAL), -Int(ENOSYS), -Int(EOPNOTSUPP): return .declined  // not a file or socket it can send
        default: return .failed(Int32(truncatingIfNeeded: -result))
        }
    }

    /// A `send(2)` of `bytes` on the ring's thread that does not wait (`MSG_DONTWAIT`, and
    /// `MSG_MORE` with `more`: more follows at once, such as a file after its head): how many
    /// bytes went, 0 when none could or the call failed (the caller then sends the rest the
    /// awaited way, which reports the error).
    mutating func sendWithoutWaiting(socket: Int32, _ bytes: UnsafeRawBufferPointer, more: Bool) -> Int {
        guard !stopping, unsafe !bytes.isEmpty else { return 0 }
        noteUse(socket)
        defer { noteEnd(socket) }
        if DescriptorUse.isClosing(socket) { return 0 }
        let flags = Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
        let sent = unsafe cliburing_send(socket, bytes.baseAddress, UInt(bytes.count), flags)
        return max(0, sent)
    }
}
