extension TCPConnection {
    /// The lines the peer sends, as an asynchronous sequence of strings, read from ``chunks``.
    ///
    /// ```swift
    /// for try await line in connection.lines() {
    ///     if line == "QUIT" { break }
    ///     try await connection.write(contentsOf: Array("echo: \(line)\r\n".utf8))
    /// }
    /// ```
    ///
    /// - A line ends with `\n`; a `\r` right before it is dropped too (CRLF). The line ending is
    ///   not part of the string. An empty line is `""`.
    /// - When the peer shuts down its side, a last line without a newline is still returned,
    ///   then the sequence ends (`nil`).
    /// - A line longer than `maximumLength` bytes throws ``IOError/Code/frameTooLong`` instead
    ///   of growing without bound; the sequence is over after that.
    /// - Bytes are decoded as UTF-8 (invalid sequences become U+FFFD).
    /// - The sequence reads ahead: bytes after the last line taken are lost when the iteration
    ///   stops. Use one line reader per connection; don't mix it with other reads.
    ///
    /// - Parameter maximumLength: The longest line accepted, in bytes, without its line ending.
    public func lines(maximumLength: Int = 64 * 1024) -> Lines {
        Lines(frames: frames(separatedBy: UInt8(ascii: "\n"), maximumLength: maximumLength, dropsCarriageReturn: true))
    }

    /// The lines the peer sends, at most 64 KiB each: ``lines(maximumLength:)`` with its default.
    ///
    /// ```swift
    /// for try await line in connection.lines { print(line) }
    /// ```
    public var lines: Lines { lines() }

    /// The messages the peer sends, each ending with `delimiter`, as an asynchronous sequence
    /// of byte arrays (without the delimiter): framing for protocols that separate messages with
    /// a byte (NUL-terminated, newline-delimited JSON).
    ///
    /// ```swift
    /// for try await message in connection.frames(separatedBy: 0, maximumLength: 4096) {
    ///     try await handle(message)
    /// }
    /// ```
    ///
    /// Same rules as ``lines(maximumLength:)``: a last frame without a delimiter is returned at
    /// end of stream; a frame longer than `maximumLength` throws ``IOError/Code/frameTooLong``.
    /// With `dropsCarriageReturn`, a `\r` right before the delimiter is dropped.
    public func frames(
        separatedBy delimiter: UInt8, maximumLength: Int, dropsCarriageReturn: Bool = false
    ) -> DelimitedFrames {
        DelimitedFrames(
            chunks: chunks,
            splitter: FrameSplitter(
                delimiter: delimiter, maximumLength: maximumLength, dropsCarriageReturn: dropsCarriageReturn))
    }
}

/// The frames of a connection, split at a delimiter byte (see
/// ``TCPConnection/frames(separatedBy:maximumLength:dropsCarriageReturn:)``).
public struct DelimitedFrames: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = IOError
    let chunks: ReceivedChunks
    let splitter: FrameSplitter

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(chunks: chunks.makeAsyncIterator(), splitter: splitter)
    }

    /// Returns one frame per `next()`, receiving chunks as needed.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var chunks: ReceivedChunks.AsyncIterator
        var splitter: FrameSplitter
        var finished = false

        public mutating func next() async throws(IOError) -> [UInt8]? {
            while !finished {
                do throws(IOError) {
                    if let frame = try splitter.nextFrame() { return frame }
                    guard let chunk = try await chunks.next() else {
                        finished = true
                        return try splitter.finish()
                    }
                    unsafe chunk.withUnsafeBytes { unsafe splitter.append($0) }
                } catch {
                    finished = true
                    throw error
                }
            }
            return nil
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(IOError) -> [UInt8]? {
            try await next()
        }
    }
}

/// The lines of a connection (see ``TCPConnection/lines(maximumLength:)``).
public struct Lines: AsyncSequence, Sendable {
    public typealias Element = String
    public typealias Failure = IOError
    let frames: DelimitedFrames

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(frames: frames.makeAsyncIterator())
    }

    /// Returns one line per `next()`.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var frames: DelimitedFrames.AsyncIterator

        public mutating func next() async throws(IOError) -> String? {
            guard let frame = try await frames.next() else { return nil }
            return String(decoding: frame, as: UTF8.self)
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(IOError) -> String? {
            try await next()
        }
    }
}
