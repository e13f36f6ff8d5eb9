import HTTPTypes

/// A request's body, as it arrives: an `AsyncSequence` of byte chunks, with `Content-Length` and
/// the chunked transfer coding already decoded.
///
/// ```swift
/// try await server.run(on: listener) { request, body, responder in
///     var total = 0
///     for try await chunk in body { total += chunk.count }
///     try await responder.respond(HTTPResponse(status: .ok), body: "\(total) bytes\n")
/// }
/// ```
///
/// - Reading it answers `Expect: 100-continue` (with a `100 Continue`) first.
/// - A body over the server's `maximumBodyBytes` throws ``HTTPServerError/Code/bodyTooLarge``
///   (with `Content-Length`, the server answers 413 before the handler runs); a malformed chunked
///   body ``HTTPServerError/Code/malformedBody``; a client that stops mid-body
///   ``HTTPServerError/Code/bodyTruncated``.
/// - What the handler leaves unread is read and dropped after its response (or, when the client
///   still waits for its `100 Continue`, the connection is closed instead).
/// - Chunks are at most the connection's input buffer (16 KiB by default); reading stops at the
///   body's end, so pipelined requests after it are kept.
/// - It is valid while the handler runs: afterwards every call throws
///   ``HTTPServerError/Code/requestEnded``. It is not `Sendable`: read it in the handler's task.
public struct HTTPRequestBody: AsyncSequence {
    public typealias Element = [UInt8]
    public typealias Failure = HTTPServerError

    let exchange: any HTTPExchange
    let request: UInt64

    init(_ exchange: any HTTPExchange, _ request: UInt64) {
        self.exchange = exchange
        self.request = request
    }

    public func makeAsyncIterator() -> Iterator { Iterator(body: self) }

    public struct Iterator: AsyncIteratorProtocol {
        let body: HTTPRequestBody

        public mutating func next() async throws(HTTPServerError) -> [UInt8]? {
            try await body.exchange.nextBodyChunk(body.request, maximum: .max)
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(HTTPServerError) -> [UInt8]? {
            try await body.exchange.nextBodyChunk(body.request, maximum: .max)
        }
    }

    /// The whole body (what is left of it), up to `limit` bytes.
    ///
    /// - Throws: ``HTTPServerError/Code/bodyTooLarge`` when it is longer than `limit`.
    public func collect(upTo limit: Int) async throws(HTTPServerError) -> [UInt8] {
        var bytes: [UInt8] = []
        while let chunk = try await exchange.nextBodyChunk(request, maximum: .max) {
            guard bytes.count + chunk.count <= limit else { throw HTTPServerError(.bodyTooLarge) }
            if bytes.isEmpty { bytes = chunk } else { bytes += chunk }
        }
        return bytes
    }

    /// The trailer fields of a chunked body, once it has been read to its end; nil before, and
    /// for bodies without a trailer section.
    public var trailers: HTTPFields? {
        guard let fields = exchange.requestTrailers(request), !fields.isEmpty else { return nil }
        return fields
    }
}
