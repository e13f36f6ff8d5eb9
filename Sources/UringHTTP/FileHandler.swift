import HTTPTypes
import SystemPackage
import Uring

/// Static files as a handler: everything `HTTPServer(configuration: .init(root:))` serves, for a
/// part of a handler's URL space.
///
/// GET and HEAD (others get a 405); `Content-Type` from the extension; `index.html` for
/// directories (and a redirect to the slash-ended URL); one `Range` (206/416);
/// `Last-Modified`/`If-Modified-Since` and a strong `ETag`/`If-None-Match` (304). Files are opened
/// with `File.open(_:beneath:)` (`RESOLVE_BENEATH`): no request names a file outside the root.
///
/// ```swift
/// let files = try await FileHandler(root: "/srv/www", prefix: "/static")
/// try await server.run(on: listener) { request, body, responder in
///     if files.matches(request) {
///         try await files.handle(request, responder: responder)   // /static/app.js → /srv/www/app.js
///     } else {
///         try await responder.respond(HTTPResponse(status: .notFound))
///     }
/// }
/// ```
///
/// The handler keeps the root directory open until ``close()``.
public struct FileHandler: Sendable {
    /// The directory served.
    public let root: FilePath
    /// The URL path the files are served under: `/` (every path), or `/static` for
    /// `/static/...`.
    public let prefix: String
    let directory: File
    private let prefixBytes: [UInt8]

    /// Opens `root` to serve it under `prefix`.
    ///
    /// - Throws: ``IOError`` when the root cannot be opened as a directory.
    public init(root: FilePath, prefix: String = "/") async throws(IOError) {
        var trimmed = Array(prefix.utf8)
        while trimmed.last == UInt8(ascii: "/") { trimmed.removeLast() }
        if trimmed.first != UInt8(ascii: "/") { trimmed.insert(UInt8(ascii: "/"), at: 0) }
        self.root = root
        self.prefix = trimmed.count == 1 ? "/" : String(decoding: trimmed, as: UTF8.self)
        prefixBytes = trimmed.count == 1 ? [] : trimmed
        directory = try await File.open(root, options: .directory)
    }

    /// Closes the root directory.
    public func close() async throws(IOError) {
        try await directory.close()
    }

    /// Whether `request`'s path lies under ``prefix`` (`/static`, `/static/` or `/static/...`).
    public func matches(_ request: HTTPRequest) -> Bool {
        guard let path = request.path else { return false }
        // A native string's UTF-8 is contiguous: no copy.
        if let matched = unsafe path.utf8.withContiguousStorageIfAvailable({
            unsafe relativeTarget(UnsafeRawBufferPointer($0)) != nil
        }) {
            return matched
        }
        let utf8 = Array(path.utf8)
        return unsafe utf8.withUnsafeBytes { unsafe relativeTarget($0) != nil }
    }

    /// Answers `request` with a file under the root (or a 404, 405, 304, 206, 416…). The request's
    /// body, if any, is left to the server (which drops it).
    ///
    /// - Throws: ``HTTPServerError`` when a response was already started, or the connection failed.
    public func handle(_ request: HTTPRequest, responder: HTTPResponder) async throws(HTTPServerError) {
        try await responder.exchange.serveFile(responder.request, self, request)
    }

    /// The range of `target` after the prefix (starting with `/`, or empty for the prefix alone,
    /// with or without a query); nil when `target` is not under the prefix.
    func relativeTarget(_ target: UnsafeRawBufferPointer) -> Range<Int>? {
        let n = prefixBytes.count
        guard n > 0 else { return 0..<target.count }
        guard target.count >= n, unsafe target[..<n].elementsEqual(prefixBytes) else { return nil }
        if unsafe target.count == n || target[n] == UInt8(ascii: "?") { return n..<n }
        guard unsafe target[n] == UInt8(ascii: "/") else { return nil }
        return n..<target.count
    }
}
