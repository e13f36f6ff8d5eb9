/// Splits a byte stream into frames that end with a delimiter byte (lines, for `\n`), with a
/// maximum frame length. A pure state machine: bytes go in with ``append(_:)``, frames come out
/// of ``nextFrame()``; no I/O, so it is unit-tested without a kernel.
///
/// - A frame is the bytes before a delimiter (the delimiter is dropped). With
///   `dropsCarriageReturn`, one `\r` right before the delimiter is dropped too (CRLF lines).
/// - At end of stream, ``finish()`` returns the last frame if bytes are left without a delimiter.
/// - A frame longer than `maximumLength` (delimiter not counted) throws
///   ``IOError/Code/frameTooLong`` as soon as it is known to be too long: the buffer never grows
///   past `maximumLength + 1` bytes plus one received chunk.
struct FrameSplitter {
    let delimiter: UInt8
    let maximumLength: Int
    let dropsCarriageReturn: Bool
    private var buffer: [UInt8] = []
    /// Where the next frame starts in `buffer`.
    private var start = 0
    /// How far `buffer` has been searched for a delimiter (from `start`).
    private var searched = 0

    init(delimiter: UInt8, maximumLength: Int, dropsCarriageReturn: Bool) {
        self.delimiter = delimiter
        self.maximumLength = max(0, maximumLength)
        self.dropsCarriageReturn = dropsCarriageReturn
    }

    /// Bytes not yet returned as a frame.
    var pendingCount: Int { buffer.count - start }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeSubrange(..<start)
            searched -= start
            start = 0
        }
        unsafe buffer.append(contentsOf: bytes)
    }

    mutating func append(_ bytes: [UInt8]) {
        unsafe bytes.withUnsafeBytes { unsafe append($0) }
    }

    /// The next complete frame, or `nil` if no delimiter has arrived yet.
    mutating func nextFrame() throws(IOError) -> [UInt8]? {
        var i = max(searched, start)
        while i < buffer.count {
            if buffer[i] == delimiter {
                var end = i
                if dropsCarriageReturn && end > start && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                if end - start > maximumLength { throw IOError(.frameTooLong, operation: .receive) }
                let frame = Array(buffer[start..<end])
                start = i + 1
                searched = start
                return frame
            }
            i += 1
        }
        searched = i
        // No delimiter yet. Too long already? (A trailing \r may still be dropped.)
        let pending = buffer.count - start
        let endsWithCR = dropsCarriageReturn && pending > 0 && buffer[buffer.count - 1] == UInt8(ascii: "\r")
        if pending > maximumLength + (endsWithCR ? 1 : 0) { throw IOError(.frameTooLong, operation: .receive) }
        return nil
    }

    /// At end of stream: the last frame, if bytes are left after the last delimiter.
    mutating func finish() throws(IOError) -> [UInt8]? {
        guard start < buffer.count else { return nil }
        var end = buffer.count
        if dropsCarriageReturn && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        if end - start > maximumLength { throw IOError(.frameTooLong, operation: .receive) }
        let frame = Array(buffer[start..<end])
        start = buffer.count
        searched = start
        return frame
    }
}
