/// `Content-Type` from a file name's extension (lowercased); `application/octet-stream` otherwise.
enum MediaTypes {
    static func forPath(_ path: some Collection<UInt8>) -> StaticString {
        // The extension: after the last dot of the last segment, lowercased, at most 15 bytes
        // (a small string: no allocation).
        var ext: (UInt64, UInt64) = (0, 0)
        var length = 0
        var sawDot = false
        var tooLong = false
        for b in path {
            if b == UInt8(ascii: "/") {
                length = 0
                sawDot = false
                tooLong = false
            } else if b == UInt8(ascii: ".") {
                length = 0
                sawDot = true
                tooLong = false
            } else if sawDot && !tooLong {
                if length == 15 {
                    tooLong = true
                    continue
                }
                let lower = b >= 65 && b <= 90 ? b + 32 : b
                unsafe withUnsafeMutableBytes(of: &ext) { unsafe $0[length] = lower }
                length += 1
            }
        }
        guard sawDot && !tooLong else { return "application/octet-stream" }
        let name = unsafe withUnsafeBytes(of: &ext) { unsafe String(decoding: $0[..<length], as: UTF8.self) }
        switch name {
        case "html", "htm": return "text/html; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "json": return "application/json"
        case "txt", "text", "log": return "text/plain; charset=utf-8"
        case "md": return "text/markdown; charset=utf-8"
        case "csv": return "text/csv; charset=utf-8"
        case "xml": return "application/xml"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "avif": return "image/avif"
        case "ico": return "image/x-icon"
        case "pdf": return "application/pdf"
        case "wasm": return "application/wasm"
        case "woff": return "font/woff"
        case "woff2": return "font/woff2"
        case "mp4": return "video/mp4"
        case "webm": return "video/webm"
        case "mp3": return "audio/mpeg"
        case "ogg": return "audio/ogg"
        case "zip": return "application/zip"
        case "gz": return "application/gzip"
        case "tar": return "application/x-tar"
        default: return "application/octet-stream"
        }
    }
}
