import Testing

@testable import UringHTTP

@Suite("Media types")
struct MediaTypesTests {
    private func type(_ path: String) -> String { MediaTypes.forPath(Array(path.utf8)).description }

    /// The extension of the last segment decides, in any case; a dot in a directory's name, no
    /// extension, an empty one, an unknown or an overlong one give `application/octet-stream`.
    @Test func theLastSegmentsExtensionDecides() {
        #expect(type("/index.html") == "text/html; charset=utf-8")
        #expect(type("/a/b/PAGE.HTM") == "text/html; charset=utf-8")
        #expect(type("/app.min.js") == "text/javascript; charset=utf-8")
        #expect(type("/font.woff2") == "font/woff2")
        #expect(type("/font.woff") == "font/woff")
        #expect(type("/photo.JpEg") == "image/jpeg")
        #expect(type("/archive.tar.gz") == "application/gzip")
        #expect(type("/data.json") == "application/json")
        #expect(type("/notes.txt") == "text/plain; charset=utf-8")
        #expect(type("/v1.2/readme") == "application/octet-stream")
        #expect(type("/trailing.") == "application/octet-stream")
        #expect(type("/blob.bin") == "application/octet-stream")
        #expect(type("/x.htmlx") == "application/octet-stream")
        #expect(type("/x.aaaaaaaaahtml") == "application/octet-stream")
        #expect(type("/x.html/") == "application/octet-stream")
        #expect(type("") == "application/octet-stream")
    }

    /// Every extension the table knows comes back with its own type (the keys are distinct).
    @Test func everyKnownExtensionIsFound() {
        let known = [
            "html", "htm", "css", "js", "mjs", "json", "txt", "text", "log", "md", "csv", "xml", "svg", "png", "jpg",
            "jpeg", "gif", "webp", "avif", "ico", "pdf", "wasm", "woff", "woff2", "mp4", "webm", "mp3", "ogg", "zip",
            "gz", "tar",
        ]
        for ext in known {
            #expect(type("/f." + ext) != "application/octet-stream", "\(ext)")
            #expect(type("/F." + ext.uppercased()) == type("/f." + ext), "\(ext)")
        }
        #expect(Set(known.map { MediaTypes.key(Array($0.utf8)) }).count == known.count)
    }
}
