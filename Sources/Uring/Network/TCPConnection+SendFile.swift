import Glibc

extension TCPConnection {
    /// Sends `count` bytes of `file`, starting at `offset`, as `sendfile(2)` does: bytes that are
    /// in the page cache go from there into the socket without a copy through user space; the
    /// rest are read and written through a buffer, so the ring never waits for the disk.
    ///
    /// ```swift
    /// // An HTTP response: the head, then the file's bytes straight from the page cache.
    /// try await connection.write(contentsOf: head)
    /// try await connection.write(file, at: 0, count: Int(try await file.status().size))
    /// ```
    ///
    /// Each step sends what the socket takes without waiting, then waits until it is writable
    /// again; `timeout` bounds each wait (and each read and write of the copying path). The
    /// bytes are read when they are sent: a file changed meanwhile sends what it then holds, as
    /// with `sendfile(2)`. `sendfile` is made on the ring's thread, so it needs nonisolated code
    /// running on a ring (a task started there, as servers' connection tasks are); called from
    /// an actor or the main actor, every byte is copied.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/send`` when the socket fails, or
    ///   ``IOError/Operation/read`` when the file does (``IOError/Code/unexpectedEndOfFile``
    ///   when it ends before `offset + count`); ``IOError/Code/invalidArgument`` for a negative
    ///   offset or count; ``IOError/Code/timedOut`` and ``IOError/Code/cancelled`` as usual.
    public func write(_ file: File, at offset: Int64, count: Int, timeout: Duration? = nil) async throws(IOError) {
        guard offset >= 0, count >= 0, offset <= Int64.max - Int64(count) else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .send)
        }
        var position = offset
        var left = count
        while left > 0 {
            let sent = try await writeCached(file, at: position, count: left, timeout: timeout)
            position += Int64(sent)
            left -= sent
            if left == 0 { break }
            // Not in the page cache (or no sendfile here): up to 256 KiB copied, which also
            // brings those pages into the cache for the next step.
            let bytes = try await file.read(upTo: min(left, 256 * 1024), at: position, timeout: timeout)
            if bytes.isEmpty { throw IOError(.unexpectedEndOfFile, operation: .read) }
            try await write(contentsOf: bytes, timeout: timeout)
            let read = bytes.count
            position += Int64(read)
            left -= read
        }
    }

    /// The page-cache part of ``write(_:at:count:timeout:)``: sends from `offset` with
    /// `sendfile(2)` while the range ahead is in the page cache (checked 1 MiB at a time),
    /// waiting for the socket when it is full; returns how many bytes went, which is less than
    /// `count` when the next range is not cached, the file ends, or sendfile cannot be used
    /// (then the caller copies the rest its own way).
    package func writeCached(_ file: File, at offset: Int64, count: Int, timeout: Duration?) async throws(IOError)
        -> Int
    {
        let socket = descriptor.rawValue
        var sent = 0
        while sent < count {
            let step = min(count - sent, 1 << 20)
            switch RingExecutor.sendFileWithoutWaiting(
                socket: socket, file: file.descriptor.rawValue, offset: offset + Int64(sent), count: step)
            {
            case .sent(let n):
                if n == 0 { return sent }  // the file ends: the caller's read says so
                sent += n
            case .socketFull:
                _ = try await Readiness.wait(for: .writable, on: descriptor, timeout: timeout)
            case .declined:
                return sent
            case .failed(let errno):
                throw errno == EBADF
                    ? IOError(.closed, errno: .badFileDescriptor, operation: .send) : .system(errno, .send)
            }
        }
        return sent
    }

    /// Sends what of `bytes` the socket takes now, without waiting (`more`: more follows at
    /// once, so the kernel may hold a partial segment for it): how many bytes went (0 also when
    /// the call failed, or the caller is not on a ring's thread). The caller sends the rest with
    /// ``write(_:timeout:zeroCopy:)``, which waits and reports errors.
    package func writeWithoutWaiting(_ bytes: UnsafeRawBufferPointer, more: Bool) -> Int {
        unsafe RingExecutor.sendWithoutWaiting(socket: descriptor.rawValue, bytes, more: more)
    }
}
