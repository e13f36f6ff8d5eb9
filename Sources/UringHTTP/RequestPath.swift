/// Turns a request target into a path relative to the served root, refusing anything that could
/// name a file outside it before the file system is even asked (the open is confined to the root
/// by the kernel as well: see `File.open(_:beneath:)`).
public enum RequestPath {
    /// Decodes the path of `target` (query and fragment dropped): percent-decoding, segment by
    /// segment. Refused (`nil`): a malformed escape, a NUL, an encoded `/` or `\`, a `.` or `..`
    /// segment (after decoding), a backslash.
    ///
    /// - Returns: The relative path's bytes (no leading `/`; empty for the root) and whether the
    ///   target ended with `/`.
    public static func decode(_ target: UnsafeRawBufferPointer) -> (path: [UInt8], trailingSlash: Bool)? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, target.count), alignment: 1)
        defer { unsafe buffer.deallocate() }
        guard let (count, trailingSlash) = unsafe decode(target, into: buffer) else { return nil }
        return unsafe (Array(buffer[..<count]), trailingSlash)
    }

    /// ``decode(_:)`` into `buffer` (at least `target.count` bytes), allocating nothing.
    ///
    /// - Returns: How many bytes of `buffer` hold the relative path, and whether the target ended
    ///   with `/`; nil when refused (or `buffer` is too small).
    public static func decode(_ target: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer) -> (
        count: Int, trailingSlash: Bool
    )? {
        var end = target.count
        if let q = unsafe target.firstIndex(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) { end = q }
        guard end > 0, unsafe target[0] == UInt8(ascii: "/"), buffer.count >= end else { return nil }
        // Segments are written as they are decoded; a separator goes before every segment but the
        // first, and is taken back when the segment turns out empty ("//" collapses).
        var count = 0
        var segmentStart = 0
        var slashed = false
        func beginSegment() {
            slashed = count > 0
            if slashed {
                unsafe buffer[count] = UInt8(ascii: "/")
                count += 1
            }
            segmentStart = count
        }
        func finishSegment() -> Bool {
            let length = count - segmentStart
            if length == 0 {
                if slashed { count -= 1 }
                return true
            }
            // "." and ".."
            if unsafe buffer[segmentStart] == 46 && (length == 1 || (length == 2 && buffer[segmentStart + 1] == 46)) {
                return false
            }
            return true
        }
        var i = 1
        beginSegment()
        while i < end {
            var b = unsafe target[i]
            if b == UInt8(ascii: "/") {
                guard finishSegment() else { return nil }
                beginSegment()
                i += 1
                continue
            }
            if b == UInt8(ascii: "%") {
                guard i + 2 < end, let high = unsafe hexValue(target[i + 1]), let low = unsafe hexValue(target[i + 2])
                else {
                    return nil
                }
                b = high << 4 | low
                // An encoded separator would change the path's structure after our checks.
                if b == UInt8(ascii: "/") || b == UInt8(ascii: "\\") || b == 0 { return nil }
                i += 3
            } else {
                if b == UInt8(ascii: "\\") { return nil }
                i += 1
            }
            unsafe buffer[count] = b
            count += 1
        }
        guard finishSegment() else { return nil }
        return unsafe (count, end > 1 && target[end - 1] == UInt8(ascii: "/"))
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 48...57: b - 48
        case 65...70: b - 55
        case 97...102: b - 87
        default: nil
        }
    }
}
