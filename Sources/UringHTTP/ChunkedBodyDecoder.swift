/// Decodes a request body sent with the chunked transfer coding (RFC 9112 §7.1), incrementally:
/// feed it whatever bytes arrived, take the data runs it finds, and feed it the rest when more
/// comes. A pure state machine: no I/O, and no allocation except for a trailer section (whose
/// bytes it keeps, up to `maximumTrailerBytes`).
///
/// ```swift
/// var decoder = ChunkedBodyDecoder()
/// let (consumed, output) = try unsafe decoder.decode(bytes)
/// switch output {
/// case .data(let range): body.append(contentsOf: unsafe bytes[range])   // then decode bytes[consumed...]
/// case .needMore: break                                                 // all of `bytes` was framing
/// case .end: break                                                      // bytes[consumed...] is the next request
/// }
/// ```
///
/// Strict where leniency would let two parsers read one stream differently (request smuggling):
/// a chunk size is 1 to 15 hexadecimal digits (larger is ``Failure/chunkSizeTooLarge``), optionally
/// followed by whitespace and `;` extensions (ignored, at most `maximumLineBytes` in all), and every
/// line ends with CRLF: a bare LF or CR is an error.
public struct ChunkedBodyDecoder: Sendable, Equatable {
    /// What one call of ``decode(_:)`` found.
    public enum Output: Sendable, Equatable {
        /// Body data at this range of the input; the input is consumed up to the range's end.
        case data(Range<Int>)
        /// The input was all framing, consumed; more is needed.
        case needMore
        /// The body ended (last chunk and trailer section); the input is consumed up to there, and
        /// the rest belongs to the next request.
        case end
    }

    /// Why the body is malformed (the server answers 400 and closes the connection).
    public enum Failure: Error, Sendable, Equatable {
        /// A chunk size that is not hexadecimal, or junk after it.
        case badChunkSize
        /// A chunk size of 16 or more hexadecimal digits (over 2⁶⁰ bytes).
        case chunkSizeTooLarge
        /// A line that does not end with CRLF, or chunk data not followed by CRLF.
        case badLineEnding
        /// A chunk-size line (extensions included) longer than `maximumLineBytes`.
        case lineTooLong
        /// A trailer line with a control byte, or a trailer section over `maximumTrailerBytes`.
        case badTrailer
    }

    private enum State: Sendable, Equatable {
        case size, sizeWhitespace, sizeExtension, sizeLF
        case data, dataCR, dataLF
        case trailerLineStart, trailerLine, trailerLF, endLF
        case done
    }

    private var state = State.size
    /// While in `size`: the size read so far; in `data`: the bytes of the chunk still to come.
    private var remaining: UInt64 = 0
    private var digits = 0
    private var lineBytes = 0
    /// The trailer section's field lines, each ended by a LF (empty when there is none).
    public private(set) var trailerBytes: [UInt8] = []
    /// The longest chunk-size line, extensions included.
    public var maximumLineBytes: Int
    /// The largest trailer section.
    public var maximumTrailerBytes: Int

    public init(maximumLineBytes: Int = 4096, maximumTrailerBytes: Int = 16 * 1024) {
        self.maximumLineBytes = maximumLineBytes
        self.maximumTrailerBytes = maximumTrailerBytes
    }

    /// Whether the body has ended.
    public var isFinished: Bool { state == .done }

    /// Decodes from the start of `bytes` up to the first run of data, the end of the body, or the
    /// end of `bytes`.
    ///
    /// - Returns: How many bytes of `bytes` were consumed (for `.data`, the end of its range), and
    ///   what was found.
    /// - Throws: ``Failure`` for a malformed body; the decoder must not be used again.
    public mutating func decode(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> (consumed: Int, output: Output) {
        var i = 0
        let count = bytes.count
        while i < count {
            let b = unsafe bytes[i]
            switch state {
            case .size:
                if let v = hexValue(b) {
                    guard digits < 15 else { throw .chunkSizeTooLarge }
                    remaining = remaining << 4 | UInt64(v)
                    digits += 1
                } else {
                    guard digits > 0 else { throw .badChunkSize }
                    switch b {
                    case 32, 9: state = .sizeWhitespace
                    case 59: state = .sizeExtension
                    case 13: state = .sizeLF
                    case 10: throw .badLineEnding
                    default: throw .badChunkSize
                    }
                    lineBytes = digits + 1
                }
                i += 1
            case .sizeWhitespace:
                switch b {
                case 32, 9: break
                case 59: state = .sizeExtension
                case 13: state = .sizeLF
                case 10: throw .badLineEnding
                default: throw .badChunkSize
                }
                lineBytes += 1
                guard lineBytes <= maximumLineBytes else { throw .lineTooLong }
                i += 1
            case .sizeExtension:
                if b == 13 {
                    state = .sizeLF
                } else if b == 10 {
                    throw .badLineEnding
                } else if (b < 32 && b != 9) || b == 127 {
                    throw .badChunkSize
                }
                lineBytes += 1
                guard lineBytes <= maximumLineBytes else { throw .lineTooLong }
                i += 1
            case .sizeLF:
                guard b == 10 else { throw .badLineEnding }
                i += 1
                digits = 0
                state = remaining == 0 ? .trailerLineStart : .data
            case .data:
                let n = Int(min(UInt64(count - i), remaining))
                remaining -= UInt64(n)
                if remaining == 0 { state = .dataCR }
                return (i + n, .data(i..<i + n))
            case .dataCR:
                guard b == 13 else { throw .badLineEnding }
                state = .dataLF
                i += 1
            case .dataLF:
                guard b == 10 else { throw .badLineEnding }
                state = .size
                i += 1
            case .trailerLineStart:
                if b == 13 {
                    state = .endLF
                    i += 1
                } else {
                    state = .trailerLine
                }
            case .trailerLine:
                if b == 13 {
                    state = .trailerLF
                } else if b == 10 {
                    throw .badLineEnding
                } else if (b < 32 && b != 9) || b == 127 {
                    throw .badTrailer
                } else {
                    guard trailerBytes.count < maximumTrailerBytes else { throw .badTrailer }
                    trailerBytes.append(b)
                }
                i += 1
            case .trailerLF:
                guard b == 10 else { throw .badLineEnding }
                guard trailerBytes.count < maximumTrailerBytes else { throw .badTrailer }
                trailerBytes.append(10)
                state = .trailerLineStart
                i += 1
            case .endLF:
                guard b == 10 else { throw .badLineEnding }
                state = .done
                return (i + 1, .end)
            case .done:
                return (i, .end)
            }
        }
        return state == .done ? (i, .end) : (i, .needMore)
    }

    private func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 48...57: b - 48
        case 65...70: b - 55
        case 97...102: b - 87
        default: nil
        }
    }
}
