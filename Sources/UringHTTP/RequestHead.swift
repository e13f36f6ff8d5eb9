/// One parsed HTTP/1.x request head. It holds offsets into the buffer it was parsed from, not
/// copies, so parsing allocates nothing; read the parts with the `bytes(_:in:)` helpers while the
/// buffer is unchanged.
public struct RequestHead: Sendable, Equatable {
    public enum Method: Sendable, Equatable {
        case get, head
        /// Any other valid method token (answered with 405).
        case other
    }

    public var method: Method = .other
    /// The method token, as sent.
    public var methodBytes: Range<Int> = 0..<0
    /// The request target's path and optional query, as sent: the whole target in origin form
    /// (`/a/b?q`); in absolute form (`http://example.com/a/b?q`), the part after the authority;
    /// `*` in asterisk form (`OPTIONS *`).
    public var target: Range<Int> = 0..<0
    /// The authority of a target in absolute form (`example.com:8080`), which stands for the
    /// `Host` field (RFC 9112 §3.2.2); nil in origin and asterisk form.
    public var authority: Range<Int>?
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion = 1
    /// Whether the connection stays open after the response (version default, `Connection`).
    public var keepAlive = true
    /// The request body's length (`Content-Length`); 0 when absent or chunked.
    public var contentLength = 0
    /// The body comes in the chunked transfer coding (only with ``RequestHeadParser/readsBodies``).
    public var chunked = false
    /// `Expect: 100-continue` (only with ``RequestHeadParser/readsBodies``).
    public var expectsContinue = false
    public var hasHost = false
    public var range: Range<Int>?
    public var ifRange: Range<Int>?
    public var ifNoneMatch: Range<Int>?
    public var ifModifiedSince: Range<Int>?
    /// The bytes of the head, final empty line included.
    public var length = 0

    public init() {}
}

/// Why a request head was refused, as the response status to send (the connection is then
/// closed).
public enum RequestHeadError: Error, Sendable, Equatable {
    /// 400: malformed request line, header, `Content-Length`, a NUL or bare CR, obsolete line folding…
    case badRequest
    /// 414: the request line alone is longer than the limit.
    case uriTooLong
    /// 431: the head is longer than the limit, or has too many fields.
    case headerFieldsTooLarge
    /// 501: a `Transfer-Encoding` other than `chunked` (without ``RequestHeadParser/readsBodies``:
    /// any `Transfer-Encoding`).
    case notImplemented
    /// 417: an `Expect` other than `100-continue` (only with ``RequestHeadParser/readsBodies``).
    case expectationFailed
    /// 505: an HTTP version other than 1.0 and 1.1.
    case versionNotSupported

    public var status: Int {
        switch self {
        case .badRequest: 400
        case .uriTooLong: 414
        case .headerFieldsTooLarge: 431
        case .notImplemented: 501
        case .expectationFailed: 417
        case .versionNotSupported: 505
        }
    }
}

/// A strict, bounded HTTP/1.1 request-head parser (RFC 9112). It looks at most `maximumHeadBytes`
/// bytes, never allocates, and refuses what a lenient parser would guess at: bare LF or CR line
/// ends, whitespace before a colon, obsolete line folding, control bytes in values, conflicting or
/// malformed `Content-Length`, and (unless `readsBodies`) any `Transfer-Encoding`.
///
/// With `readsBodies` (the handler API's server), `Transfer-Encoding: chunked` is accepted, alone:
/// together with `Content-Length`, twice, or in an HTTP/1.0 request it is a 400 (the classic
/// request-smuggling vectors), and any other coding a 501; `Expect: 100-continue` is recorded, and
/// any other expectation is a 417.
public struct RequestHeadParser: Sendable {
    public var maximumHeadBytes: Int
    public var maximumRequestLineBytes: Int
    public var maximumFields: Int
    /// Whether request bodies are read (chunked accepted, `Expect` honoured), or only discarded.
    public var readsBodies: Bool

    public init(
        maximumHeadBytes: Int = 16 * 1024, maximumRequestLineBytes: Int = 8 * 1024, maximumFields: Int = 100,
        readsBodies: Bool = false
    ) {
        self.maximumHeadBytes = maximumHeadBytes
        self.maximumRequestLineBytes = maximumRequestLineBytes
        self.maximumFields = maximumFields
        self.readsBodies = readsBodies
    }

    /// Parses the head at the start of `bytes`.
    ///
    /// - Returns: The head, or `nil` when `bytes` does not hold a whole head yet (and is not
    ///   over a limit).
    /// - Throws: ``RequestHeadError`` for a request to refuse.
    public func parse(_ bytes: UnsafeRawBufferPointer) throws(RequestHeadError) -> RequestHead? {
        var head = RequestHead()
        let count = bytes.count
        // Leading empty lines before a request line are allowed (RFC 9112 §2.2); at most a few.
        var start = 0
        while start + 1 < count, start < 8, unsafe bytes[start] == 13, unsafe bytes[start + 1] == 10 { start += 2 }

        // Request line.
        guard let lineEnd = try unsafe findLineEnd(bytes, from: start, limit: start + maximumRequestLineBytes) else {
            if count - start >= maximumRequestLineBytes { throw .uriTooLong }
            // Refuse what can never become a request line now, instead of waiting for more.
            try unsafe checkPartialRequestLine(bytes, from: start)
            return nil
        }
        var i = start
        let methodStart = i
        while i < lineEnd, unsafe isTokenByte(bytes[i]) { i += 1 }
        guard i > methodStart, i < lineEnd, unsafe bytes[i] == 32 else { throw .badRequest }
        head.method = unsafe method(bytes, methodStart, i)
        head.methodBytes = methodStart..<i
        i += 1
        let targetStart = i
        while i < lineEnd, unsafe bytes[i] > 32, unsafe bytes[i] != 127 { i += 1 }
        guard i > targetStart, i < lineEnd, unsafe bytes[i] == 32 else { throw .badRequest }
        try unsafe parseTarget(bytes, targetStart..<i, into: &head)
        i += 1
        guard lineEnd - i == 8, unsafe bytes[i] == 72, unsafe bytes[i + 1] == 84, unsafe bytes[i + 2] == 84,
            unsafe bytes[i + 3] == 80,
            unsafe bytes[i + 4] == 47, unsafe isDigit(bytes[i + 5]), unsafe bytes[i + 6] == 46,
            unsafe isDigit(bytes[i + 7])
        else { throw .badRequest }
        guard unsafe bytes[i + 5] == 49, unsafe bytes[i + 7] == 48 || bytes[i + 7] == 49 else {
            throw .versionNotSupported
        }
        head.minorVersion = unsafe Int(bytes[i + 7] - 48)
        head.keepAlive = head.minorVersion == 1

        // Header fields.
        var lineStart = lineEnd + 2
        var fields = 0
        var sawContentLength = false
        var sawTransferEncoding = false
        var sawConnectionClose = false
        var sawConnectionKeepAlive = false
        while true {
            guard let end = try unsafe findLineEnd(bytes, from: lineStart, limit: maximumHeadBytes) else {
                if count >= maximumHeadBytes { throw .headerFieldsTooLarge }
                return nil
            }
            if end == lineStart {
                head.length = end + 2
                break
            }
            fields += 1
            if fields > maximumFields { throw .headerFieldsTooLarge }
            var j = lineStart
            while j < end, unsafe isTokenByte(bytes[j]) { j += 1 }
            // No empty name, no whitespace before the colon, no obsolete folding (a line that
            // starts with whitespace has an empty name here).
            guard j > lineStart, j < end, unsafe bytes[j] == 58 else { throw .badRequest }
            let nameStart = lineStart
            let nameEnd = j
            j += 1
            while j < end, unsafe bytes[j] == 32 || bytes[j] == 9 { j += 1 }
            var valueEnd = end
            while valueEnd > j, unsafe bytes[valueEnd - 1] == 32 || bytes[valueEnd - 1] == 9 { valueEnd -= 1 }
            for k in j..<valueEnd {
                let b = unsafe bytes[k]
                if (b < 32 && b != 9) || b == 127 { throw .badRequest }
            }
            let value = j..<valueEnd
            switch nameEnd - nameStart {
            case 4 where unsafe equalsLowercase(bytes, nameStart, "host"):
                if head.hasHost { throw .badRequest }
                head.hasHost = true
            case 5 where unsafe equalsLowercase(bytes, nameStart, "range"):
                head.range = value
            case 8 where unsafe equalsLowercase(bytes, nameStart, "if-range"):
                head.ifRange = value
            case 10 where unsafe equalsLowercase(bytes, nameStart, "connection"):
                // A comma-separated list of options; only two matter here.
                unsafe scanTokens(bytes, value) { token in
                    if unsafe token.count == 5 && equalsLowercase(bytes, token.lowerBound, "close") {
                        sawConnectionClose = true
                    }
                    if unsafe token.count == 10 && equalsLowercase(bytes, token.lowerBound, "keep-alive") {
                        sawConnectionKeepAlive = true
                    }
                }
            case 13 where unsafe equalsLowercase(bytes, nameStart, "if-none-match"):
                head.ifNoneMatch = value
            case 14 where unsafe equalsLowercase(bytes, nameStart, "content-length"):
                let length = try unsafe parseContentLength(bytes, value)
                if sawContentLength && length != head.contentLength { throw .badRequest }
                sawContentLength = true
                head.contentLength = length
            case 17 where unsafe equalsLowercase(bytes, nameStart, "transfer-encoding"):
                guard readsBodies else { throw .notImplemented }
                // Only `chunked`, alone and once: a second field or a list is a 400 when it
                // names chunked (chunked twice, or not last), a 501 otherwise (a coding we lack).
                var tokens = 0
                var chunked = false
                unsafe scanTokens(bytes, value) { token in
                    tokens += 1
                    if unsafe token.count == 7 && equalsLowercase(bytes, token.lowerBound, "chunked") { chunked = true }
                }
                if sawTransferEncoding || (chunked && tokens > 1) { throw .badRequest }
                guard chunked && tokens == 1 else { throw .notImplemented }
                sawTransferEncoding = true
                head.chunked = true
            case 6 where unsafe readsBodies && equalsLowercase(bytes, nameStart, "expect"):
                guard value.count == 12, unsafe equalsLowercase(bytes, value.lowerBound, "100-continue") else {
                    throw .expectationFailed
                }
                head.expectsContinue = true
            case 17 where unsafe equalsLowercase(bytes, nameStart, "if-modified-since"):
                head.ifModifiedSince = value
            default:
                break
            }
            lineStart = end + 2
        }
        if sawConnectionClose {
            head.keepAlive = false
        } else if sawConnectionKeepAlive {
            head.keepAlive = true
        }
        // Both framings, or chunked in HTTP/1.0: no reading of the body is safe (RFC 9112 §6.1).
        if sawTransferEncoding && (sawContentLength || head.minorVersion == 0) { throw .badRequest }
        // HTTP/1.1 requires exactly one Host field (RFC 9112 §3.2).
        if head.minorVersion == 1 && !head.hasHost { throw .badRequest }
        return head
    }

    /// The index of the CR of the first CRLF at or after `from` (searching below `limit`), nil if
    /// none yet. A NUL, a bare CR or a bare LF is an error.
    @inline(__always)
    private func findLineEnd(_ bytes: UnsafeRawBufferPointer, from: Int, limit: Int) throws(RequestHeadError) -> Int? {
        var i = from
        let end = min(bytes.count, limit)
        while i < end {
            let b = unsafe bytes[i]
            if b == 13 {
                if i + 1 >= bytes.count { return nil }
                guard unsafe bytes[i + 1] == 10 else { throw .badRequest }
                return i
            }
            if b == 10 || b == 0 { throw .badRequest }
            i += 1
        }
        return nil
    }

    /// A request line still without its CRLF: its method must be a token followed by a space,
    /// and its target printable.
    private func checkPartialRequestLine(_ bytes: UnsafeRawBufferPointer, from start: Int) throws(RequestHeadError) {
        var i = start
        while i < bytes.count, unsafe isTokenByte(bytes[i]) { i += 1 }
        guard i < bytes.count else { return }
        guard i > start, unsafe bytes[i] == 32 else { throw .badRequest }
        i += 1
        while i < bytes.count {
            let b = unsafe bytes[i]
            if b == 32 { return }
            if b < 32 || b == 127 { throw .badRequest }
            i += 1
        }
    }

    /// The request target's form (RFC 9112 §3.2): origin form (`/path?query`); absolute form
    /// (`http://authority/path?query`, which a server must accept), its path and its authority
    /// recorded apart; asterisk form (`*`), for OPTIONS only. An absolute target without a path,
    /// with user information (`user@host`), or with another scheme is refused (400).
    private func parseTarget(
        _ bytes: UnsafeRawBufferPointer, _ target: Range<Int>, into head: inout RequestHead
    ) throws(RequestHeadError) {
        // SAFETY: `target` is a non-empty range of the request line inside `bytes`, and every
        // index read below is inside it (the prefix checks compare only when the target is longer
        // than the prefix); `methodBytes` lies inside `bytes` too.
        let first = unsafe bytes[target.lowerBound]
        if first == UInt8(ascii: "/") {
            head.target = target
            return
        }
        if first == UInt8(ascii: "*") {
            // Methods are case-sensitive: `OPTIONS` exactly.
            let options: StaticString = "OPTIONS"
            guard target.count == 1, head.methodBytes.count == options.utf8CodeUnitCount,
                (0..<options.utf8CodeUnitCount).allSatisfy({ k in
                    unsafe bytes[head.methodBytes.lowerBound + k] == options.utf8Start[k]
                })
            else { throw .badRequest }
            head.target = target
            return
        }
        var authorityStart = target.lowerBound
        if target.count > 7, unsafe equalsLowercase(bytes, target.lowerBound, "http://") {
            authorityStart += 7
        } else if target.count > 8, unsafe equalsLowercase(bytes, target.lowerBound, "https://") {
            authorityStart += 8
        } else {
            throw .badRequest
        }
        var pathStart = authorityStart
        while pathStart < target.upperBound, unsafe bytes[pathStart] != UInt8(ascii: "/") {
            let b = unsafe bytes[pathStart]
            if b == UInt8(ascii: "?") || b == UInt8(ascii: "#") || b == UInt8(ascii: "@") { throw .badRequest }
            pathStart += 1
        }
        guard pathStart > authorityStart, pathStart < target.upperBound else { throw .badRequest }
        head.authority = authorityStart..<pathStart
        head.target = pathStart..<target.upperBound
    }

    private func parseContentLength(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>) throws(RequestHeadError)
        -> Int
    {
        guard !value.isEmpty, value.count <= 15 else { throw .badRequest }
        var n = 0
        for k in value {
            guard unsafe isDigit(bytes[k]) else { throw .badRequest }
            n = unsafe n * 10 + Int(bytes[k] - 48)
        }
        return n
    }

    private func method(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> RequestHead.Method {
        if end - start == 3, unsafe bytes[start] == 71, unsafe bytes[start + 1] == 69, unsafe bytes[start + 2] == 84 {
            return .get
        }
        if end - start == 4, unsafe bytes[start] == 72, unsafe bytes[start + 1] == 69, unsafe bytes[start + 2] == 65,
            unsafe bytes[start + 3] == 68
        {
            return .head
        }
        return .other
    }
}

// MARK: - Byte helpers

@inline(__always)
func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }

/// RFC 9110 tchar.
@inline(__always)
func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case 48...57, 65...90, 97...122: true
    case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: true
    default: false
    }
}

/// Compares bytes at `start` with the lowercase ASCII `text`, case-insensitively.
@inline(__always)
func equalsLowercase(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ text: StaticString) -> Bool {
    let count = text.utf8CodeUnitCount
    guard start + count <= bytes.count else { return false }
    let p = unsafe text.utf8Start
    for k in 0..<count {
        var b = unsafe bytes[start + k]
        if b >= 65 && b <= 90 { b += 32 }
        if unsafe b != p[k] { return false }
    }
    return true
}

/// Calls `body` with each comma-separated, whitespace-trimmed, non-empty element of `value`.
func scanTokens(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>, _ body: (Range<Int>) -> Void) {
    var i = value.lowerBound
    while i < value.upperBound {
        while i < value.upperBound, unsafe bytes[i] == 32 || bytes[i] == 9 || bytes[i] == 44 { i += 1 }
        let start = i
        while i < value.upperBound, unsafe bytes[i] != 44 { i += 1 }
        var end = i
        while end > start, unsafe bytes[end - 1] == 32 || bytes[end - 1] == 9 { end -= 1 }
        if end > start { body(start..<end) }
    }
}
