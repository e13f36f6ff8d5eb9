import HTTPTypes

/// How a handler answers its request: once, with ``respond(_:body:)-(HTTPResponse,Collection<UInt8>)``
/// and a whole body, or streamed, with ``start(_:)`` and the writer it returns.
///
/// ```swift
/// // A whole body: Content-Length is set for you.
/// try await responder.respond(HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"]), body: "Hello")
///
/// // A streamed body of unknown length: chunked (HTTP/1.1), with trailers if you like.
/// var writer = try await responder.start(HTTPResponse(status: .ok))
/// for try await chunk in body { try await writer.write(chunk) }
/// try await writer.finish(trailers: [.init("X-Checksum")!: "abc"])
/// ```
///
/// The server writes `Content-Length`, `Transfer-Encoding` and `Connection` itself (a handler's
/// own are dropped, but `Connection: close` is honoured), and `Server` and `Date` unless the
/// response has them. Answering a HEAD request sends the head alone. A response with a
/// `Content-Length` field streams exactly that many bytes, unchunked. 1xx statuses are refused
/// (the server answers `Expect: 100-continue` itself); 204 and 304 have no body.
///
/// A handler that returns without answering gets a 500 sent for it; one whose streamed response
/// is not finished has it finished. Like the body, a responder is valid only while its handler runs.
public struct HTTPResponder {
    let exchange: any HTTPExchange
    let request: UInt64

    init(_ exchange: any HTTPExchange, _ request: UInt64) {
        self.exchange = exchange
        self.request = request
    }

    /// Sends `response` with `body` (none by default). The bytes are copied into the connection's
    /// response buffer when they fit (and sent with the next batch of pipelined responses), or
    /// sent from where they are.
    ///
    /// - Throws: ``HTTPServerError``: ``HTTPServerError/Code/responseAlreadyStarted`` for a second
    ///   response, ``HTTPServerError/Code/connection`` when the client is gone.
    public func respond(_ response: HTTPResponse, body: some Collection<UInt8> = EmptyCollection())
        async throws(HTTPServerError)
    {
        try await exchange.respond(request, response, body: body)
    }

    /// Sends `response` with `body`'s UTF-8 bytes.
    public func respond(_ response: HTTPResponse, body: String) async throws(HTTPServerError) {
        try await respond(response, body: body.utf8)
    }

    /// Starts a streamed response: its head goes out with the first write (or at ``HTTPResponseWriter/finish(trailers:)``).
    /// Without a `Content-Length` field the body is sent chunked (HTTP/1.1), or until the
    /// connection closes (HTTP/1.0).
    public func start(_ response: HTTPResponse) async throws(HTTPServerError) -> HTTPResponseWriter {
        try await exchange.startResponse(request, response)
        return HTTPResponseWriter(exchange: exchange, request: request)
    }
}

/// The body of a streamed response (see ``HTTPResponder/start(_:)``). Each write is sent before
/// it returns, so a slow reader holds the handler back (back-pressure) and a stream of events
/// reaches the client as it is written.
public struct HTTPResponseWriter {
    let exchange: any HTTPExchange
    let request: UInt64

    /// Sends `bytes` (as one chunk when the body is chunked).
    ///
    /// - Throws: ``HTTPServerError/Code/contentLengthMismatch`` past a declared `Content-Length`;
    ///   ``HTTPServerError/Code/connection`` when the client is gone.
    public func write(_ bytes: some Collection<UInt8>) async throws(HTTPServerError) {
        try await exchange.writeBody(request, bytes)
    }

    /// Sends `text`'s UTF-8 bytes.
    public func write(_ text: String) async throws(HTTPServerError) {
        try await write(text.utf8)
    }

    /// Ends the body: the last chunk and `trailers` when chunked (trailers are dropped otherwise:
    /// HTTP/1.1 has no place for them outside the chunked coding).
    ///
    /// - Throws: ``HTTPServerError/Code/contentLengthMismatch`` when fewer bytes than a declared
    ///   `Content-Length` were written (the connection is then closed).
    public func finish(trailers: HTTPFields? = nil) async throws(HTTPServerError) {
        try await exchange.finishResponse(request, trailers: trailers)
    }
}
