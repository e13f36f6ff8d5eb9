import Uring

/// What a handler's request body or response calls throw.
///
/// A handler usually lets these propagate: the server then answers what it still can (a 413 for
/// a body over the limit, a 400 for a malformed one, a 500 otherwise, when no response has
/// started) and closes the connection when a response cannot be completed.
///
/// ```swift
/// do {
///     let bytes = try await body.collect(upTo: 64 * 1024)
/// } catch let error where error.code == .bodyTooLarge {
///     try await responder.respond(HTTPResponse(status: .contentTooLarge))
/// }
/// ```
public struct HTTPServerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Why a call failed.
    public enum Code: Sendable, Hashable {
        /// The request body is larger than the server's `maximumBodyBytes` (or the handler's
        /// `collect(upTo:)` limit). The server answers 413 if no response has started.
        case bodyTooLarge
        /// The chunked request body is malformed. The server answers 400 if no response has started.
        case malformedBody
        /// The client closed or reset the connection before the whole body came.
        case bodyTruncated
        /// A response was already sent (or started) for this request.
        case responseAlreadyStarted
        /// A streamed response was written to or finished before it was started, or after it was finished.
        case responseNotStarted
        /// More body bytes than the response's `Content-Length` were written, or fewer when it finished.
        case contentLengthMismatch
        /// The response head does not fit in the connection's response buffer (64 KiB).
        case responseHeadTooLarge
        /// A 1xx status, which the server sends itself (`100 Continue`) and a handler may not.
        case informationalStatus
        /// The request's body or responder was used after the handler returned.
        case requestEnded
        /// The connection failed (``HTTPServerError/underlying`` says how), or the server cut
        /// the request off (its request timeout, or a shutdown).
        case connection
    }

    /// Why the call failed.
    public var code: Code
    /// The socket error behind a ``Code/connection`` or ``Code/bodyTruncated`` failure (with its
    /// errno); nil when the client ended the stream cleanly, or TLS failed above the socket.
    public var underlying: IOError?

    public init(_ code: Code, underlying: IOError? = nil) {
        self.code = code
        self.underlying = underlying
    }

    public var description: String {
        let text =
            switch code {
            case .bodyTooLarge: "request body too large"
            case .malformedBody: "malformed chunked request body"
            case .bodyTruncated: "request body truncated"
            case .responseAlreadyStarted: "a response was already started for this request"
            case .responseNotStarted: "the response body is not open"
            case .contentLengthMismatch: "response body length differs from its Content-Length"
            case .responseHeadTooLarge: "response head too large"
            case .informationalStatus: "handlers may not send 1xx responses"
            case .requestEnded: "the request has ended"
            case .connection: "connection failed"
            }
        if let underlying { return "HTTPServerError(\(text): \(underlying))" }
        return "HTTPServerError(\(text))"
    }
}
