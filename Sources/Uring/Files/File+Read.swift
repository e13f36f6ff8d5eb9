import Glibc
import SystemPackage

extension File {
    /// Reads once into `buffer` at `offset`, without moving the file position.
    ///
    /// ```swift
    /// let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    /// defer { buffer.deallocate() }
    /// let n = try await file.read(into: buffer, at: 8192)   // 0 means end of file
    /// ```
    ///
    /// - Parameters:
    ///   - buffer: Lent to the kernel until the call returns (whatever the outcome).
    ///   - offset: Byte offset in the file; must not be negative.
    ///   - timeout: A deadline for this read alone (a linked timeout in the ring).
    /// - Returns: The number of bytes read: fewer than `buffer.count` on a short read, 0 at end of
    ///   file (or for an empty buffer).
    /// - Throws: ``IOError`` for ``IOError/Operation/read``: `.invalidArgument` for a negative
    ///   offset; `.systemCall` with `EBADF` (closed descriptor), `EISDIR` (a directory), `EINVAL`,
    ///   …; `.timedOut` when `timeout` passed; `.cancelled` when the task was cancelled. Data that
    ///   arrived before the cancel or deadline took effect is returned, not dropped.
    public func read(
        into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, timeout: Duration? = nil
    ) async throws(IOError) -> Int {
        guard offset >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .read) }
        return try unsafe await readOnce(into: buffer, offset: UInt64(offset), timeout: timeout)
    }

    /// Reads once into `buffer` from the descriptor's current position (advancing it): the read
    /// for pipes, character devices and other streams.
    ///
    /// ```swift
    /// let pipe = File(descriptor: readEnd)
    /// let n = try await pipe.read(into: buffer, timeout: .seconds(1))
    /// ```
    ///
    /// Same semantics as ``read(into:at:timeout:)``.
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(IOError) -> Int
    {
        try unsafe await readOnce(into: buffer, offset: .max, timeout: timeout)
    }

    @inline(__always)
    func readOnce(into buffer: UnsafeMutableRawBufferPointer, offset: UInt64, timeout: Duration?) async throws(IOError)
        -> Int
    {
        let fd = descriptor.rawValue
        let count = UInt32(min(buffer.count, File.maximumTransfer))
        // The buffer is lent to the ring for this call only: it returns after the final completion.
        let read = unsafe ReadOperation(fd: fd, buffer: buffer.baseAddress, count: count, offset: offset)
        return Int(try await read.run(timeout: timeout))
    }

    /// Fills `buffer` completely from `offset`, looping over short reads.
    ///
    /// ```swift
    /// try await file.read(exactlyInto: header, at: 0)
    /// ```
    ///
    /// - Throws: ``IOError/Code/unexpectedEndOfFile`` if the file ends first (the bytes before end
    ///   of file are in `buffer`); otherwise as ``read(into:at:timeout:)``.
    public func read(exactlyInto buffer: UnsafeMutableRawBufferPointer, at offset: Int64) async throws(IOError) {
        let filled = try unsafe await fill(buffer, at: offset)
        if filled < buffer.count { throw IOError(.unexpectedEndOfFile, operation: .read) }
    }

    /// Reads up to `count` bytes from `offset` into a new array, looping over short reads. The
    /// result is shorter than `count` only when the file ends first (empty at or past end of
    /// file), or when `timeout` passes after some bytes were read.
    ///
    /// ```swift
    /// let bytes = try await file.read(upTo: 64 * 1024, at: 0)
    /// ```
    ///
    /// - Parameters:
    ///   - count: The most bytes to read.
    ///   - offset: Byte offset in the file; must not be negative.
    ///   - timeout: A deadline for the whole call. If it passes before any byte was read the call
    ///     throws ``IOError/Code/timedOut``; bytes read before it are returned, never dropped.
    /// - Throws: ``IOError``: `.invalidArgument` for a negative `count` or `offset`; otherwise as
    ///   ``read(into:at:timeout:)``.
    public func read(upTo count: Int, at offset: Int64, timeout: Duration? = nil) async throws(IOError) -> [UInt8] {
        guard count >= 0, offset >= 0 else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .read)
        }
        return try await read(upTo: count, offset: UInt64(offset), timeout: timeout)
    }

    /// Reads up to `count` bytes from the descriptor's current position (advancing it) into a new
    /// array, looping until `count` bytes came or the stream ended: the owned-bytes read for
    /// pipes, terminals and other streams. Same semantics as ``read(upTo:at:timeout:)``; for
    /// "whatever is there now" use ``read(into:timeout:)``.
    ///
    /// ```swift
    /// let input = File(descriptor: .standardInput)
    /// let header = try await input.read(upTo: 16, timeout: .seconds(5))   // throws .timedOut if nothing comes
    /// ```
    public func read(upTo count: Int, timeout: Duration? = nil) async throws(IOError) -> [UInt8] {
        guard count >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .read) }
        return try await read(upTo: count, offset: .max, timeout: timeout)
    }

    private func read(upTo count: Int, offset: UInt64, timeout: Duration?) async throws(IOError) -> [UInt8] {
        if count == 0 { return [] }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        defer { unsafe buffer.deallocate() }
        let filled = try unsafe await fill(buffer, offset: offset, deadline: timeout.map { ContinuousClock.now + $0 })
        return unsafe Array(UnsafeRawBufferPointer(rebasing: buffer[..<filled]))
    }

    /// Reads the whole file into an array: its size from `statx`, then reads until end of file (so
    /// a file that grows or shrinks meanwhile is still read to its actual end).
    ///
    /// ```swift
    /// let config = try await File.withFile(at: "config.json") { try await $0.readAll() }
    /// ```
    public func readAll() async throws(IOError) -> [UInt8] {
        let size = try await status().size
        var result: [UInt8] = []
        var capacity = Int(clamping: max(size, 0)) + 1  // +1 to see end of file in the same pass
        var offset: Int64 = 0
        while true {
            let chunk = try await read(upTo: capacity, at: offset)
            result += chunk
            offset += Int64(chunk.count)
            if chunk.count < capacity { return result }
            capacity = max(capacity, 64 * 1024)
        }
    }

    /// Reads the whole file at `path`.
    ///
    /// ```swift
    /// let hostname = try await File.readAll(at: "/etc/hostname")
    /// ```
    public static func readAll(at path: FilePath) async throws(IOError) -> [UInt8] {
        let file = try await File.open(path)
        do {
            let bytes = try await file.readAll()
            try await file.close()
            return bytes
        } catch {
            try? await file.close()
            throw error
        }
    }

    /// Reads from `offset` until `buffer` is full or the file ends; returns the bytes read.
    func fill(_ buffer: UnsafeMutableRawBufferPointer, at offset: Int64) async throws(IOError) -> Int {
        guard offset >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .read) }
        return try unsafe await fill(buffer, offset: UInt64(offset), deadline: nil)
    }

    /// Reads from `offset` (`.max`: the current position) until `buffer` is full, the file ends,
    /// or `deadline` passes after at least one byte arrived; returns the bytes read.
    func fill(_ buffer: UnsafeMutableRawBufferPointer, offset: UInt64, deadline: ContinuousClock.Instant?)
        async throws(IOError) -> Int
    {
        try unsafe await fillUntilDeadline(buffer, deadline: deadline, operation: .read) {
            rest, filled, left throws(IOError) in
            try unsafe await readOnce(
                into: rest, offset: offset == .max ? .max : offset + UInt64(filled), timeout: left)
        }
    }

    /// The file's contents as an asynchronous sequence of chunks of at most `chunkSize` bytes,
    /// from `offset` to end of file. Each chunk is read when the consumer asks for it, so a large
    /// file streams in constant memory.
    ///
    /// ```swift
    /// var hasher = SHA256()
    /// for try await chunk in file.chunks(ofSize: 256 * 1024) {
    ///     hasher.update(data: chunk)
    /// }
    /// ```
    ///
    /// A chunk is shorter than `chunkSize` only at end of file. A `chunkSize` below 1 is treated
    /// as 1.
    public func chunks(ofSize chunkSize: Int = 64 * 1024, from offset: Int64 = 0) -> FileChunks {
        FileChunks(file: self, chunkSize: max(chunkSize, 1), offset: offset)
    }
}

/// The chunks of a file, read one at a time as they are consumed. See ``File/chunks(ofSize:from:)``.
public struct FileChunks: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = IOError

    let file: File
    let chunkSize: Int
    let offset: Int64

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(file: file, chunkSize: chunkSize, offset: offset)
    }

    /// Reads the next chunk on each call to `next()`.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let file: File
        let chunkSize: Int
        var offset: Int64
        var finished = false

        public mutating func next() async throws(IOError) -> [UInt8]? {
            guard !finished else { return nil }
            let chunk: [UInt8]
            do {
                chunk = try await file.read(upTo: chunkSize, at: offset)
            } catch {
                finished = true
                throw error
            }
            offset += Int64(chunk.count)
            if chunk.count < chunkSize { finished = true }
            return chunk.isEmpty ? nil : chunk
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(IOError) -> [UInt8]? {
            try await next()
        }
    }
}
