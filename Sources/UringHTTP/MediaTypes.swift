/// `Content-Type` from a file name's extension (lowercased); `application/octet-stream` otherwise.
enum MediaTypes {
    /// The known extensions, each packed into an integer as `key(_:)` packs it, with its type.
    /// (Compared as integers: a `switch` over strings made a string and up to 35 string
    /// comparisons per response.)
    private static let table: [(key: UInt64, type: StaticString)] = [
        ("html", "text/html; charset=utf-8"), ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("js", "text/javascript; charset=utf-8"), ("mjs", "text/javascript; charset=utf-8"),
        ("json", "application/json"),
        ("txt", "text/plain; charset=utf-8"), ("text", "text/plain; charset=utf-8"),
        ("log", "text/plain; charset=utf-8"),
        ("md", "text/markdown; charset=utf-8"), ("csv", "text/csv; charset=utf-8"),
        ("xml", "application/xml"), ("svg", "image/svg+xml"),
        ("png", "image/png"), ("jpg", "image/jpeg"), ("jpeg", "image/jpeg"), ("gif", "image/gif"),
        ("webp", "image/webp"), ("avif", "image/avif"), ("ico", "image/x-icon"),
        ("pdf", "application/pdf"), ("wasm", "application/wasm"),
        ("woff", "font/woff"), ("woff2", "font/woff2"),
        ("mp4", "video/mp4"), ("webm", "video/webm"), ("mp3", "audio/mpeg"), ("ogg", "audio/ogg"),
        ("zip", "application/zip"), ("gz", "application/gzip"), ("tar", "application/x-tar"),
    ].map { (key(Array($0.0.utf8)), $0.1) }

    /// The longest extension in the table fits in one integer.
    private static let longestExtension = 8

    /// `bytes` (at most 8, already lowercased) packed into an integer, the first byte lowest.
    static func key(_ bytes: some Collection<UInt8>) -> UInt64 {
        var key: UInt64 = 0
        for (index, byte) in bytes.enumerated() { key |= UInt64(byte) << (8 * UInt64(index)) }
        return key
    }

    static func forPath(_ path: some Collection<UInt8>) -> StaticString {
        // The extension: after the last dot of the last segment, lowercased and packed as the
        // table's keys are (no string, no allocation); longer than any known one: unknown.
        var key: UInt64 = 0
        var length = 0
        var sawDot = false
        for b in path {
            if b == UInt8(ascii: "/") {
                key = 0
                length = 0
                sawDot = false
            } else if b == UInt8(ascii: ".") {
                key = 0
                length = 0
                sawDot = true
            } else if sawDot {
                if length < longestExtension {
                    let lower = b >= 65 && b <= 90 ? b + 32 : b
                    key |= UInt64(lower) << (8 * UInt64(length))
                }
                length += 1
            }
        }
        guard sawDot, length > 0, length <= longestExtension else { return "application/octet-stream" }
        for entry in table where entry.key == key { return entry.type }
        return "application/octet-stream"
    }
}
