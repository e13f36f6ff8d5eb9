import Uring

extension TLSConnection {
    /// The decrypted bytes as they arrive, one array per read (up to `maximumChunkSize` bytes,
    /// one TLS record by default), until the peer's close_notify.
    ///
    /// ```swift
    /// for try await chunk in connection.chunks() {
    ///     try await connection.write(contentsOf: chunk)  // an echo
    /// }
    /// ```
    ///
    /// Back-pressure: nothing is read until the consumer asks for the next chunk, so a slow
    /// consumer leaves the bytes in the kernel's receive buffer and TCP slows the sender, as
    /// ``TCPConnection/chunks`` does. Each chunk is a new array; a loop that must not allocate
    /// reads into its own buffer with ``read(into:timeout:)``.
    ///
    /// - Throws: from `next()`, as ``read(into:timeout:)``: ``TLSError/Code/truncated`` when the
    ///   connection ends without a close_notify.
    public func chunks(maximumChunkSize: Int = 16_384) -> Chunks {
        Chunks(connection: self, maximumChunkSize: max(1, maximumChunkSize))
    }

    /// See ``TLSConnection/chunks(maximumChunkSize:)``.
    public struct Chunks: AsyncSequence, Sendable {
        public typealias Element = [UInt8]
        public typealias Failure = TLSError
        let connection: TLSConnection
        let maximumChunkSize: Int

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(connection: connection, maximumChunkSize: maximumChunkSize)
        }

        public struct AsyncIterator: AsyncIteratorProtocol {
            let connection: TLSConnection
            let maximumChunkSize: Int
            var ended = false

            public mutating func next() async throws(TLSError) -> [UInt8]? {
                if ended { return nil }
                do throws(TLSError) {
                    let chunk = try await connection.receive(upTo: maximumChunkSize)
                    if chunk.isEmpty {
                        ended = true
                        return nil
                    }
                    return chunk
                } catch {
                    ended = true
                    throw error
                }
            }
        }
    }
}
