import Glibc

/// Appends a response head (and small bodies) into a fixed buffer, allocating nothing. Every
/// append reports overflow by leaving `overflowed` set; callers size the buffer so that a head
/// always fits.
@safe struct ResponseWriter {
    // SAFETY (@safe): every append checks the room left in `buffer` first (owned by the session, which outlives the
    // writer).
    let buffer: UnsafeMutableRawBufferPointer
    private(set) var count = 0
    private(set) var overflowed = false

    init(_ buffer: UnsafeMutableRawBufferPointer, count: Int = 0) {
        unsafe self.buffer = unsafe buffer
        self.count = count
    }

    var remaining: Int { unsafe buffer.count - count }
    var written: UnsafeRawBufferPointer { unsafe UnsafeRawBufferPointer(rebasing: buffer[..<count]) }

    mutating func append(_ text: StaticString) {
        unsafe append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count <= remaining else {
            overflowed = true
            return
        }
        if unsafe !bytes.isEmpty {
            // SAFETY: count + bytes.count <= buffer.count, checked above.
            unsafe (buffer.baseAddress! + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
        count += bytes.count
    }

    /// Appends `bytes` (through their contiguous storage when they have one: a native string's
    /// UTF-8 view, an array), or sets `overflowed` when they do not fit.
    mutating func append<Bytes: Collection<UInt8>>(contentsOf bytes: Bytes) {
        let n = bytes.count
        guard n <= remaining else {
            overflowed = true
            return
        }
        let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
            unsafe append(UnsafeRawBufferPointer(source))
        }
        if copied == nil {
            for byte in bytes {
                unsafe buffer[count] = byte
                count += 1
            }
        }
    }

    /// Inserts `text` at `offset` (moving what follows); false when it does not fit.
    mutating func insert(_ text: StaticString, at offset: Int) -> Bool {
        let n = text.utf8CodeUnitCount
        guard n <= remaining, offset >= 0, offset <= count else { return false }
        // SAFETY: offset + n + (count - offset) = count + n <= buffer.count, checked above;
        // memmove handles the overlap.
        unsafe memmove(buffer.baseAddress! + offset + n, buffer.baseAddress! + offset, count - offset)
        unsafe (buffer.baseAddress! + offset).copyMemory(from: text.utf8Start, byteCount: n)
        count += n
        return true
    }

    /// Appends `text`'s UTF-8 bytes.
    mutating func append(string text: String) {
        append(contentsOf: text.utf8)
    }

    mutating func append(_ byte: UInt8) {
        guard remaining >= 1 else {
            overflowed = true
            return
        }
        unsafe buffer[count] = byte
        count += 1
    }

    mutating func append(decimal value: Int) {
        precondition(value >= 0)
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, no allocation
        unsafe withUnsafeMutableBytes(of: &digits) { scratch in
            var n = value
            var i = scratch.count
            repeat {
                i -= 1
                unsafe scratch[i] = UInt8(48 + n % 10)
                n /= 10
            } while n > 0
            unsafe append(UnsafeRawBufferPointer(rebasing: scratch[i...]))
        }
    }

    mutating func append(hex value: UInt64) {
        var digits: (UInt64, UInt64) = (0, 0)
        unsafe withUnsafeMutableBytes(of: &digits) { scratch in
            var n = value
            var i = scratch.count
            repeat {
                i -= 1
                let d = UInt8(n & 15)
                unsafe scratch[i] = d < 10 ? 48 + d : 87 + d
                n >>= 4
            } while n > 0
            unsafe append(UnsafeRawBufferPointer(rebasing: scratch[i...]))
        }
    }

    /// An IMF-fixdate, formatted straight into the buffer.
    mutating func append(httpDate seconds: Int) {
        guard remaining >= HTTPDate.length else {
            overflowed = true
            return
        }
        // SAFETY: HTTPDate.length bytes are free after `count`, checked above.
        unsafe HTTPDate.format(seconds, into: buffer.baseAddress! + count)
        count += HTTPDate.length
    }

    /// The status line, `Server` and `Date`.
    mutating func statusLine(_ status: Int, date: UnsafeRawBufferPointer) {
        append("HTTP/1.1 ")
        append(decimal: status)
        append(32)
        append(reasonPhrase(status))
        append("\r\nServer: swift-uring\r\nDate: ")
        unsafe append(date)
        append("\r\n")
    }
}

func reasonPhrase(_ status: Int) -> StaticString {
    switch status {
    case 100: "Continue"
    case 200: "OK"
    case 206: "Partial Content"
    case 301: "Moved Permanently"
    case 304: "Not Modified"
    case 400: "Bad Request"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
    case 413: "Content Too Large"
    case 414: "URI Too Long"
    case 416: "Range Not Satisfiable"
    case 417: "Expectation Failed"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 503: "Service Unavailable"
    case 505: "HTTP Version Not Supported"
    default: "Unknown"
    }
}
