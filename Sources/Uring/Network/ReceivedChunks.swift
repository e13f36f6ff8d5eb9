import SystemPackage

extension TCPConnection {
    /// The bytes the peer sends, as an asynchronous sequence of chunks, driven by one multishot
    /// receive into the ring's pool of provided buffers: the kernel fills a buffer as data
    /// arrives and the chunk *is* that buffer, with no copy and no allocation.
    ///
    /// ```swift
    /// // An echo server's connection handler:
    /// for try await chunk in connection.chunks {
    ///     try await connection.write(chunk)
    /// }
    /// try await connection.close()
    /// ```
    ///
    /// - A chunk is valid until the next call to `next()` (the next loop iteration): its buffer
    ///   then goes back to the kernel. Copy what you keep (``ReceivedChunk/bytes``). Using a chunk
    ///   after that stops the program with a clear message instead of reading reused memory.
    /// - The sequence ends (`nil`) when the peer shuts down its sending side, and throws an
    ///   ``IOError`` for ``IOError/Operation/receive`` when the connection fails (`ECONNRESET`),
    ///   ``IOError/Code/cancelled`` when the consuming task is cancelled.
    /// - Flow control: at most 16 chunks (and at most 1/8 of the ring's
    ///   ``RingExecutor/receiveBufferCount``) wait for the consumer; then the receive pauses until
    ///   the consumer catches up, the socket's buffer fills, and TCP slows the peer down. Memory
    ///   stays bounded whatever the peer does, and a slow reader never holds more than its share
    ///   of the pool. When the pool is empty, receives wait for a buffer to come back instead of
    ///   failing.
    /// - Use one iterator per connection at a time; don't mix it with ``read(into:timeout:)`` on
    ///   the same connection.
    public var chunks: ReceivedChunks { ReceivedChunks(connection: self) }

    /// Sends all bytes of `chunk` (typically received on another or the same connection).
    ///
    /// ```swift
    /// for try await chunk in connection.chunks { try await connection.write(chunk) }
    /// ```
    public func write(_ chunk: ReceivedChunk, timeout: Duration? = nil) async throws(IOError) {
        try unsafe await write(chunk.validBytes, timeout: timeout)
    }
}

/// The chunks received on a connection (see ``TCPConnection/chunks``).
public struct ReceivedChunks: AsyncSequence, Sendable {
    public typealias Element = ReceivedChunk
    public typealias Failure = IOError
    let connection: TCPConnection

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(consumer: StreamConsumer(kind: .receive, fd: connection.descriptor.rawValue, limit: 16))
    }

    /// Takes received chunks off the multishot receive, one per `next()`; each call gives the
    /// previous chunk's buffer back to the ring.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: StreamConsumer

        public mutating func next() async throws(IOError) -> ReceivedChunk? {
            try await nextChunk()
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(IOError) -> ReceivedChunk? {
            try await nextChunk()
        }

        private func nextChunk() async throws(IOError) -> ReceivedChunk? {
            switch try await consumer.next() {
            case .item(let result, let flags):
                // SAFETY: `stream` exists once next() returned an item.
                let stream = unsafe consumer.stream.unsafelyUnwrapped
                return unsafe ReceivedChunk(
                    stream: stream, base: UnsafeRawPointer(stream.bufferAddress(flags: flags)), count: Int(result),
                    lease: stream.lease)
            case .end: return nil
            case .failure(let errno): throw IOError.system(errno, .receive)
            case .cancelled: throw IOError(.cancelled, operation: .receive)
            case .shutdown: throw IOError(.executorShutdown, operation: .receive)
            }
        }
    }
}

/// Bytes received into one of the ring's provided buffers (see ``TCPConnection/chunks``). Valid
/// until the iterator that produced it is advanced or dropped.
///
/// ```swift
/// for try await chunk in connection.chunks {
///     let text = chunk.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
///     print(chunk.count, text)
/// }
/// ```
@safe public struct ReceivedChunk: @unchecked Sendable {
    // SAFETY (@safe): every access checks the stream's lease first: the bytes are read only while the consumer still
    // holds the buffer.
    // @unchecked Sendable: a view of a buffer that only the stream's consumer hands back; its
    // validity is checked against the stream's lease on every access.
    let stream: MultishotStream
    let base: UnsafeRawPointer
    /// The number of bytes received (at least 1).
    public let count: Int
    let lease: UInt32

    /// The bytes, after checking that the buffer was not handed back yet.
    var validBytes: UnsafeRawBufferPointer {
        precondition(
            stream.lease == lease && !stream.abandoned,
            "ReceivedChunk used after its iterator moved on: copy the bytes (chunk.bytes) to keep them")
        return unsafe UnsafeRawBufferPointer(start: base, count: count)
    }

    /// Calls `body` with the bytes. Don't let the pointer escape.
    public func withUnsafeBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try unsafe body(validBytes)
    }

    /// A copy of the bytes, which stays valid.
    public var bytes: [UInt8] { unsafe Array(validBytes) }
}
