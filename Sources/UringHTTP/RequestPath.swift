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
        var end = target.count
        if let q = unsafe target.firstIndex(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) { end = q }
        guard end > 0, unsafe target[0] == UInt8(ascii: "/") else { return nil }
        var path: [UInt8] = []
        path.reserveCapacity(end)
        var segment: [UInt8] = []
        var i = 1
        var first = true
        func finishSegment() -> Bool {
            if segment == [46] || segment == [46, 46] { return false }  // "." and ".."
            if segment.isEmpty { return true }  // "//" collapses
            if !first { path.append(UInt8(ascii: "/")) }
            path += segment
            first = false
            segment.removeAll(keepingCapacity: true)
            return true
        }
        while i < end {
            var b = unsafe target[i]
            if b == UInt8(ascii: "/") {
                guard finishSegment() else { return nil }
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
            segment.append(b)
        }
        guard finishSegment() else { return nil }
        return unsafe (path, end > 1 && target[end - 1] == UInt8(ascii: "/"))
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
