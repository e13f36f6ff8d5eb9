import UringHTTP

/// Reads HTTP/1.1 responses from a byte stream, incrementally, for the load generator's
/// `http --target`: the head (status, `Content-Length` or chunked, `Connection: close`), then the
/// body, which is compared byte for byte with `expectedBody` (or collected, for the first
/// response, which sets what the others must be). A pure state machine: no I/O, and no
/// allocation once its buffers have grown to a response's size.
struct ResponseReader {
    enum Failure: Error, Equatable {
        /// Not `HTTP/1.x NNN …`, a bad length, a head over 64 KiB, or a malformed chunked body.
        case malformed(String)
        /// Neither `Content-Length` nor chunked: the body would end only at close.
        case noLength
    }

    static let maximumHead = 64 * 1024

    /// The body every response must carry; nil: collect it into `body`.
    var expectedBody: [UInt8]?
    private(set) var body: [UInt8] = []
    private(set) var status = 0
    private(set) var closes = false
    /// Whether this response's body differed from `expectedBody` (length or bytes).
    private(set) var mismatched = false

    private enum State {
        case head
        case length(remaining: Int)
        case chunked(ChunkedBodyDecoder)
    }
    private var state = State.head
    private var head: [UInt8] = []
    private var bodyOffset = 0

    init(expectedBody: [UInt8]? = nil) {
        self.expectedBody = expectedBody
        head.reserveCapacity(1024)
    }

    /// Consumes a prefix of `bytes`; `complete` when a whole response ended there (the rest of
    /// `bytes` belongs to the next one: call ``reset()`` and feed it).
    mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> (consumed: Int, complete: Bool) {
        var consumed = 0
        while consumed < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[consumed...])
            switch state {
            case .head:
                // The head ends at the first CRLF CRLF; scan the new bytes only.
                var index = 0
                var ended = false
                while index < rest.count {
                    let byte = rest[index]
                    head.append(byte)
                    index += 1
                    if byte == 10, head.count >= 4, head[head.count - 2] == 13, head[head.count - 3] == 10,
                        head[head.count - 4] == 13
                    {
                        ended = true
                        break
                    }
                }
                consumed += index
                if head.count > ResponseReader.maximumHead { throw .malformed("a response head over 64 KiB") }
                if ended {
                    try parseHead()
                    if case .length(0) = state { return (consumed, finishBody()) }
                }
            case .length(let remaining):
                let count = min(remaining, rest.count)
                take(UnsafeRawBufferPointer(rebasing: rest[..<count]))
                consumed += count
                state = .length(remaining: remaining - count)
                if remaining == count { return (consumed, finishBody()) }
            case .chunked(var decoder):
                let (used, output): (Int, ChunkedBodyDecoder.Output)
                do { (used, output) = try decoder.decode(rest) } catch { throw .malformed("chunked body: \(error)") }
                state = .chunked(decoder)
                consumed += used
                switch output {
                case .data(let range): take(UnsafeRawBufferPointer(rebasing: rest[range]))
                case .needMore: break
                case .end: return (consumed, finishBody())
                }
            }
        }
        return (consumed, false)
    }

    /// Ready for the next response on the connection.
    mutating func reset() {
        state = .head
        head.removeAll(keepingCapacity: true)
        bodyOffset = 0
        status = 0
        closes = false
        mismatched = false
    }

    private mutating func take(_ bytes: UnsafeRawBufferPointer) {
        if let expectedBody {
            if bodyOffset + bytes.count > expectedBody.count
                || !expectedBody[bodyOffset..<bodyOffset + bytes.count].elementsEqual(bytes)
            {
                mismatched = true
            }
        } else {
            body.append(contentsOf: bytes)
        }
        bodyOffset += bytes.count
    }

    private mutating func finishBody() -> Bool {
        if let expectedBody, bodyOffset != expectedBody.count { mismatched = true }
        return true
    }

    /// The status line and the framing fields, read from the bytes (no strings: this runs once
    /// per response).
    private mutating func parseHead() throws(Failure) {
        // "HTTP/1.x NNN"
        guard head.count >= 12, head[0] == 72, head[1] == 84, head[2] == 84, head[3] == 80, head[4] == 47,
            head[5] == 49, head[6] == 46, head[8] == 32
        else { throw .malformed("not an HTTP/1.x status line") }
        var code = 0
        for byte in head[9..<12] {
            guard (48...57).contains(byte) else { throw .malformed("not an HTTP/1.x status line") }
            code = code * 10 + Int(byte - 48)
        }
        status = code
        var length: Int?
        var chunked = false
        var lineStart = 0
        for index in head.indices where head[index] == 10 {
            let line = head[lineStart..<index]
            lineStart = index + 1
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            var valueStart = colon + 1
            var valueEnd = line.endIndex
            while valueStart < valueEnd, head[valueStart] == 32 || head[valueStart] == 9 { valueStart += 1 }
            while valueEnd > valueStart, head[valueEnd - 1] == 32 || head[valueEnd - 1] == 9 || head[valueEnd - 1] == 13
            {
                valueEnd -= 1
            }
            let name = line[..<colon]
            let value = head[valueStart..<valueEnd]
            if ResponseReader.equalsIgnoringCase(name, "content-length") {
                var parsed = 0
                guard !value.isEmpty, value.count <= 18 else { throw .malformed("a Content-Length") }
                for byte in value {
                    guard (48...57).contains(byte) else { throw .malformed("a Content-Length") }
                    parsed = parsed * 10 + Int(byte - 48)
                }
                guard length == nil || length == parsed else { throw .malformed("two Content-Lengths") }
                length = parsed
            } else if ResponseReader.equalsIgnoringCase(name, "transfer-encoding") {
                chunked = value.count >= 7 && ResponseReader.equalsIgnoringCase(value.suffix(7), "chunked")
            } else if ResponseReader.equalsIgnoringCase(name, "connection") {
                closes = ResponseReader.equalsIgnoringCase(value, "close")
            }
        }
        if code == 204 || code == 304 || (100..<200).contains(code) {
            state = .length(remaining: 0)
        } else if chunked {
            state = .chunked(ChunkedBodyDecoder())
        } else if let length {
            state = .length(remaining: length)
        } else {
            throw .noLength
        }
    }

    /// Whether `bytes` spell `lowercase` in any case (ASCII).
    static func equalsIgnoringCase(_ bytes: ArraySlice<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            var index = 0
            for byte in bytes {
                let folded = (65...90).contains(byte) ? byte | 0x20 : byte
                if folded != expected[index] { return false }
                index += 1
            }
            return true
        }
    }
}
