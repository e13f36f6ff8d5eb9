import Glibc
import HTTPTypes
import SystemPackage
import Uring

/// What a request's ``HTTPRequestBody`` and ``HTTPResponder`` call on their connection. A
/// protocol, so those public types are not generic over the transport (TCP or TLS).
protocol HTTPExchange: AnyObject {
    func nextBodyChunk(_ request: UInt64, maximum: Int) async throws(HTTPServerError) -> [UInt8]?
    func requestTrailers(_ request: UInt64) -> HTTPFields?
    func respond<Body: Collection<UInt8>>(_ request: UInt64, _ response: HTTPResponse, body: Body)
        async throws(HTTPServerError)
    func startResponse(_ request: UInt64, _ response: HTTPResponse) async throws(HTTPServerError)
    func writeBody<Body: Collection<UInt8>>(_ request: UInt64, _ bytes: Body) async throws(HTTPServerError)
    func finishResponse(_ request: UInt64, trailers: HTTPFields?) async throws(HTTPServerError)
    func serveFile(_ request: UInt64, _ files: FileHandler, _ httpRequest: HTTPRequest) async throws(HTTPServerError)
}

/// One connection's request loop: read into a fixed buffer, answer every complete request in it
/// (pipelined responses go out together), keep the rest, repeat. A request is answered by the
/// server's mode: "hello", the static files, or the handler; a handler reads the body through
/// ``HTTPRequestBody`` (from the same input buffer) and answers through ``HTTPResponder`` (into
/// the same output buffer).
@safe final class Session<Connection: HTTPTransport>: HTTPExchange {
    // SAFETY (@safe): its input buffer is allocated when the session starts and freed when its
    // request loop ends; its response buffer is taken then too, given back (`ResponseBuffers`)
    // only while nothing is written in it and the session awaits the client or a file's open or
    // close, and taken again (with a fresh `out`) before anything is written (no body or
    // responder of the session can reach either buffer outside a request: they check the request
    // number); reads and writes stay within their counts.
    let server: HTTPServer
    let connection: Connection
    let slot: Int
    let mode: HTTPServer.Mode
    let parser: RequestHeadParser
    let input: UnsafeMutableRawBufferPointer
    /// The response buffer, from `ResponseBuffers`; given back while nothing is written in it and
    /// the session waits (for the client, or a file's open or close: `holdsOutput` false).
    private(set) var output: UnsafeMutableRawBufferPointer
    private var holdsOutput = true
    /// Input bytes held, and where the current request's head starts.
    var used = 0
    var consumed = 0
    var out: ResponseWriter

    // The current request.
    var requestNumber: UInt64 = 0
    var head = RequestHead()
    /// Whether the current request's head is still in `input` at `consumed` (until the body is
    /// read past the buffer: `fill` moves what is left to the start).
    var headInInput = true
    /// The first body byte not read yet (an index into `input`).
    var cursor = 0
    var body = BodyState.none
    var bodyBytes = 0
    var continueSent = false
    var response = ResponseState.notStarted
    /// Where the current response's head starts in `out`, until it is sent.
    var responseHeadAt: Int?
    var keepAlive = true
    var trailers: HTTPFields?
    /// The last request handed to a handler, once the handler is done with it: the next request
    /// is written into its storage (swift-http-types boxes a request's pseudo-header fields, a
    /// `malloc` per request otherwise). A handler that keeps its request keeps the box, and the
    /// next request gets one of its own (copy on write).
    private var recycledRequest: HTTPRequest?
    /// A scratch head for requests a handler hands to a ``FileHandler`` (allocated on first use).
    var fileHead: UnsafeMutableRawBufferPointer?
    /// Where a file request's path is decoded (allocated on first use).
    var decodedPath: UnsafeMutableRawBufferPointer?

    enum BodyState {
        case none
        case length(Int)
        case chunked(ChunkedBodyDecoder)
        case failed(HTTPServerError)
    }

    enum ResponseState: Equatable {
        case notStarted
        /// A streamed response: its head is written; `declared` is its `Content-Length` if it had one.
        case streaming(chunked: Bool, declared: Int?, sent: Int, bodyless: Bool)
        case finished
        /// The response cannot be completed: the connection closes after it.
        case failed
    }

    /// What to do after a request.
    enum Next {
        case `continue`
        case close
        /// Close after reading (and dropping) what the client still sends: see `lingeringClose`.
        case closeLingering
    }

    init(
        server: HTTPServer, connection: Connection, slot: Int, mode: HTTPServer.Mode, parser: RequestHeadParser,
        input: UnsafeMutableRawBufferPointer, output: UnsafeMutableRawBufferPointer
    ) {
        self.server = server
        self.connection = connection
        self.slot = slot
        self.mode = mode
        self.parser = parser
        unsafe self.input = unsafe input
        unsafe self.output = unsafe output
        out = unsafe ResponseWriter(output)
    }

    deinit {
        if let fileHead = unsafe fileHead { unsafe fileHead.deallocate() }
        if let decodedPath = unsafe decodedPath { unsafe decodedPath.deallocate() }
    }

    func run() async {
        server.setReadingHead(slot)  // the header timeout runs from the accept
        while true {
            if consumed < used {
                let view = unsafe UnsafeRawBufferPointer(rebasing: input[consumed..<used])
                let parsed: RequestHead?
                do throws(RequestHeadError) {
                    parsed = try unsafe parser.parse(view)
                } catch {
                    // After the responses already gathered for earlier pipelined requests.
                    await refuse(error.status)
                    return
                }
                if let parsed {
                    switch await handle(parsed) {
                    case .continue: continue
                    case .close:
                        _ = await flushLast()
                        return
                    case .closeLingering:
                        guard await flush() else { return }
                        await lingeringClose()
                        return
                    }
                }
            }
            // Everything complete is answered: send it, keep the partial rest, read more.
            guard await flush() else { return }
            if consumed > 0 {
                let rest = used - consumed
                if rest > 0 {
                    // SAFETY: both ranges lie in `input`; memmove handles the overlap.
                    unsafe memmove(input.baseAddress!, input.baseAddress! + consumed, rest)
                }
                used = rest
                consumed = 0
                if used > 0 { server.setReadingHead(slot) }
            }
            if used == 0 {
                if server.isDraining { return }
                server.setIdle(slot)
            }
            // Nothing to send while the client is awaited: the response buffer goes back to the
            // thread's cache, for the sessions answering meanwhile.
            giveBackOutput()
            guard
                let n = unsafe await connection.receiveOnce(
                    into: UnsafeMutableRawBufferPointer(rebasing: input[used...]), timeout: nil), n > 0
            else { return }
            takeOutput()
            if used == 0 { server.setReadingHead(slot) }
            used += n
        }
    }

    /// Gives the response buffer back to the thread's cache (once; nothing is written in it).
    func giveBackOutput() {
        guard holdsOutput else { return }
        holdsOutput = false
        unsafe ResponseBuffers.giveBack(output)
    }

    /// Takes a response buffer again after ``giveBackOutput()``.
    func takeOutput() {
        guard !holdsOutput else { return }
        unsafe output = ResponseBuffers.take()
        holdsOutput = true
        out = unsafe ResponseWriter(output)
    }

    /// Answers one parsed request, then reads past its body.
    private func handle(_ parsed: RequestHead) async -> Next {
        server.setBusy(slot)
        requestNumber &+= 1
        head = parsed
        headInInput = true
        cursor = consumed + parsed.length
        bodyBytes = 0
        continueSent = false
        response = .notStarted
        responseHeadAt = nil
        trailers = nil
        if parsed.chunked {
            body = .chunked(ChunkedBodyDecoder())
        } else {
            body = parsed.contentLength > 0 ? .length(parsed.contentLength) : .none
        }
        if parsed.contentLength > server.configuration.maximumBodyBytes {
            guard await reserve(512) else { return .close }
            simpleResponse(413, keepAlive: false)
            return .closeLingering
        }
        keepAlive = parsed.keepAlive && !server.isDraining

        let next: Next
        switch mode {
        case .hello:
            next = await hello()
        case .files(let files):
            guard let files else {
                guard await reserve(512) else { return .close }
                simpleResponse(404, keepAlive: keepAlive, head: parsed.method == .head)
                next = .continue
                break
            }
            let view = unsafe UnsafeRawBufferPointer(rebasing: input[consumed..<consumed + parsed.length])
            next = unsafe await serveFile(files, parsed, view, keepAlive: keepAlive) ? .continue : .close
        case .handler(let handler):
            next = await callHandler(handler)
        }
        requestNumber &+= 1  // the request's body and responder no longer reach this connection
        if case .continue = next {} else { return next }
        if !bodyFinished {
            guard await discardBody() else { return .close }
        }
        consumed = cursor
        return keepAlive ? .continue : .close
    }

    private var bodyFinished: Bool {
        if case .none = body { return true }
        return false
    }

    // MARK: - Hello

    private func hello() async -> Next {
        guard await reserve(1024) else { return .close }
        switch head.method {
        case .other:
            simpleResponse(405, keepAlive: keepAlive, extra: "Allow: GET, HEAD\r\n")
        case .get, .head:
            unsafe out.statusLine(200, date: server.now())
            out.append("Content-Type: text/plain\r\nContent-Length: 13\r\n")
            finishHead(keepAlive: keepAlive, minorVersion: head.minorVersion)
            if head.method == .get { out.append("Hello, World!") }
        }
        return .continue
    }

    // MARK: - Handlers

    private func callHandler(_ handler: HTTPServer.Handler) async -> Next {
        let request = makeRequest()
        let number = requestNumber
        server.setHandling(slot)
        var failure: (any Error)?
        do {
            try await handler(request, HTTPRequestBody(self, number), HTTPResponder(self, number))
        } catch {
            failure = error
        }
        recycledRequest = request
        // Cut off by the request timeout: the task is cancelled and the socket shut down.
        if server.endHandling(slot) { return .close }
        switch response {
        case .notStarted:
            let httpError = failure as? HTTPServerError
            if httpError?.code == .connection { return .close }
            let status =
                switch httpError?.code {
                case .bodyTooLarge?: 413
                case .malformedBody?: 400
                default: 500
                }
            keepAlive = false
            guard await reserve(512) else { return .close }
            simpleResponse(status, keepAlive: false, head: head.method == .head)
            return status == 500 && bodyFinished ? .close : .closeLingering
        case .streaming:
            if failure != nil { return .close }
            do throws(HTTPServerError) {
                try await finishResponse(number, trailers: nil)
            } catch {
                return .close
            }
            return .continue
        case .finished:
            if let failure = failure as? HTTPServerError, failure.code == .connection { return .close }
            return .continue
        case .failed:
            return .close
        }
    }

    /// The request as swift-http-types sees it: the method, `http`/`https`, the `Host` field (or
    /// the authority of a target in absolute form) as the authority, the target's path and query
    /// as the path, and every other field in order.
    private func makeRequest() -> HTTPRequest {
        let view = unsafe UnsafeRawBufferPointer(rebasing: input[consumed..<consumed + head.length])
        // GET and HEAD (what the parser recognised) without making and checking a string.
        let method: HTTPRequest.Method =
            switch head.method {
            case .get: .get
            case .head: .head
            case .other: unsafe HTTPRequest.Method(String(decoding: view[head.methodBytes], as: UTF8.self)) ?? .get
            }
        let path = unsafe String(decoding: view[head.target], as: UTF8.self)
        var request: HTTPRequest
        if var recycled = recycledRequest.take() {  // taken: `recycled` holds the only reference
            // (A setter makes and checks a field: the method is set only when it changed, the
            // authority once, below.)
            if recycled.method != method { recycled.method = method }
            recycled.path = path
            recycled.headerFields.removeAll(keepingCapacity: true)
            request = recycled
        } else {
            request = HTTPRequest(method: method, scheme: Connection.scheme, authority: nil, path: path)
        }
        var authority = head.authority.map { unsafe String(decoding: view[$0], as: UTF8.self) }
        // The head was validated by the parser: CRLF-ended lines of `name: value`.
        var lineStart = head.target.upperBound
        while lineStart + 1 < view.count, unsafe view[lineStart] != 13 || view[lineStart + 1] != 10 { lineStart += 1 }
        lineStart += 2
        while lineStart + 1 < view.count, unsafe view[lineStart] != 13 {
            var end = lineStart
            while unsafe view[end] != 13 { end += 1 }
            var colon = lineStart
            while unsafe view[colon] != 58 { colon += 1 }
            var valueStart = colon + 1
            while valueStart < end, unsafe view[valueStart] == 32 || view[valueStart] == 9 { valueStart += 1 }
            var valueEnd = end
            while valueEnd > valueStart, unsafe view[valueEnd - 1] == 32 || view[valueEnd - 1] == 9 { valueEnd -= 1 }
            let value = unsafe view[valueStart..<valueEnd]
            if colon - lineStart == 4, unsafe equalsLowercase(view, lineStart, "host") {
                // A target in absolute form names the authority instead (RFC 9112 §3.2.2).
                if head.authority == nil { authority = unsafe String(decoding: value, as: UTF8.self) }
            } else if let name = unsafe HTTPField.Name(String(decoding: view[lineStart..<colon], as: UTF8.self)) {
                unsafe request.headerFields.append(HTTPField(name: name, lenientValue: value))
            }
            lineStart = end + 2
        }
        if request.authority != authority { request.authority = authority }
        return request
    }

    // MARK: - Request bodies

    func nextBodyChunk(_ request: UInt64, maximum: Int) async throws(HTTPServerError) -> [UInt8]? {
        guard request == requestNumber else { throw HTTPServerError(.requestEnded) }
        // A long `Content-Length` body with nothing buffered: received straight into the chunk
        // handed out, in receives of up to 256 KiB (no copy, and a quarter of the receives of
        // the 16 KiB input buffer's).
        if case .length(let left) = body, cursor == used, unsafe left > input.count, unsafe maximum > input.count {
            return try await receiveBodyChunk(min(left, maximum, Self.largeBodyChunk))
        }
        guard let range = try await nextBodyRange(maximum: maximum) else { return nil }
        return unsafe Array(UnsafeRawBufferPointer(rebasing: input[range]))
    }

    /// The largest chunk of a long `Content-Length` body received at once.
    static var largeBodyChunk: Int { 256 * 1024 }

    /// Receives up to `count` bytes of a `Content-Length` body into a new array (see `nextBodyChunk`).
    private func receiveBodyChunk(_ count: Int) async throws(HTTPServerError) -> [UInt8] {
        try await sendContinueIfExpected()
        guard case .length(let left) = body else { return [] }
        var chunk = unsafe [UInt8](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        // SAFETY: `chunk` is a local array, uniquely referenced and not touched until the receive
        // has returned, so its storage stays where the pointer says; its bytes are UInt8 (any
        // content is valid) and only the received ones are kept.
        let storage = unsafe chunk.withUnsafeMutableBytes { unsafe $0 }
        let received: Int
        do throws(TransportFailure) {
            received = try await unsafe connection.receive(into: storage, timeout: nil)
        } catch {
            try fail(.bodyTruncated, error.socketError)
        }
        guard received > 0 else { try fail(.bodyTruncated) }
        chunk.removeLast(count - received)
        bodyBytes += received
        body = received == left ? .none : .length(left - received)
        return chunk
    }

    func requestTrailers(_ request: UInt64) -> HTTPFields? {
        request == requestNumber ? trailers : nil
    }

    /// The next run of body bytes, as a range of `input` valid until the next call; nil at the end.
    private func nextBodyRange(maximum: Int) async throws(HTTPServerError) -> Range<Int>? {
        while true {
            switch body {
            case .none:
                return nil
            case .failed(let error):
                throw error
            case .length(let left):
                if cursor < used {
                    let n = min(left, used - cursor, maximum)
                    let range = cursor..<cursor + n
                    cursor += n
                    bodyBytes += n
                    body = n == left ? .none : .length(left - n)
                    return range
                }
            case .chunked(var decoder):
                if cursor < used {
                    let view = unsafe UnsafeRawBufferPointer(
                        rebasing: input[cursor..<cursor + min(used - cursor, maximum)])
                    let start = cursor
                    let found: (consumed: Int, output: ChunkedBodyDecoder.Output)
                    do throws(ChunkedBodyDecoder.Failure) {
                        found = try unsafe decoder.decode(view)
                    } catch {
                        try fail(.malformedBody)
                    }
                    cursor += found.consumed
                    switch found.output {
                    case .data(let range):
                        body = .chunked(decoder)
                        bodyBytes += range.count
                        if bodyBytes > server.configuration.maximumBodyBytes { try fail(.bodyTooLarge) }
                        return (start + range.lowerBound)..<(start + range.upperBound)
                    case .needMore:
                        body = .chunked(decoder)
                    case .end:
                        body = .none
                        guard let fields = Self.trailerFields(decoder.trailerBytes) else {
                            try fail(.malformedBody)
                        }
                        trailers = fields
                        return nil
                    }
                    continue
                }
            }
            try await fill()
        }
    }

    private func fail(_ code: HTTPServerError.Code, _ socketError: IOError? = nil) throws(HTTPServerError) -> Never {
        let error = HTTPServerError(code, underlying: socketError)
        body = .failed(error)
        throw error
    }

    /// Reads more of the body into `input` (all of it read so far: the head is gone after this).
    /// Answers `Expect: 100-continue` first.
    private func fill() async throws(HTTPServerError) {
        try await sendContinueIfExpected()
        let rest = used - cursor
        if rest > 0 {
            // SAFETY: both ranges lie in `input`; memmove handles the overlap.
            unsafe memmove(input.baseAddress!, input.baseAddress! + cursor, rest)
        }
        used = rest
        cursor = 0
        consumed = 0
        headInInput = false
        let n: Int
        do throws(TransportFailure) {
            n = try await unsafe connection.receive(
                into: UnsafeMutableRawBufferPointer(rebasing: input[used...]), timeout: nil)
        } catch {
            try fail(.bodyTruncated, error.socketError)
        }
        guard n > 0 else { try fail(.bodyTruncated) }
        used += n
    }

    /// Answers `Expect: 100-continue` before the body is first read from the connection.
    private func sendContinueIfExpected() async throws(HTTPServerError) {
        // Before the final response's head has gone out (a handler may have started a streamed
        // response and read the body next): the 100 goes before it.
        if head.expectsContinue && !continueSent && head.minorVersion == 1
            && (response == .notStarted || responseHeadAt != nil)
        {
            continueSent = true
            let line: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"
            if let at = responseHeadAt {
                // No room left to put it first (a nearly full batch): the client sends its body
                // after its own wait for the 100, as it must when none comes.
                _ = out.insert(line, at: at)
            } else {
                if out.remaining < 32 { try await flushOrFail() }
                out.append(line)
            }
            try await flushOrFail()
        }
        continueSent = true
    }

    /// Reads and drops what is left of the body after the response. False: close instead (the
    /// client was not told to send it, or it is malformed, too large or cut short).
    private func discardBody() async -> Bool {
        if head.expectsContinue && !continueSent {
            // The client waits for a 100 that will not come: it sends no body.
            keepAlive = false
            return true
        }
        server.setWriting(slot)
        while true {
            do throws(HTTPServerError) {
                guard try await nextBodyRange(maximum: .max) != nil else { return true }
            } catch {
                return false
            }
        }
    }

    /// A chunked body's trailer section as fields; nil when a line is not `name: value`.
    static func trailerFields(_ bytes: [UInt8]) -> HTTPFields? {
        var fields = HTTPFields()
        for line in bytes.split(separator: 10) {
            guard let colon = line.firstIndex(of: 58),
                let name = HTTPField.Name(String(decoding: line[..<colon], as: UTF8.self))
            else { return nil }
            var value = line[(colon + 1)...]
            while let first = value.first, first == 32 || first == 9 { value = value.dropFirst() }
            while let last = value.last, last == 32 || last == 9 { value = value.dropLast() }
            fields.append(HTTPField(name: name, lenientValue: value))
        }
        return fields
    }

    // MARK: - Responses from handlers

    func respond<Body: Collection<UInt8>>(_ request: UInt64, _ response: HTTPResponse, body: Body)
        async throws(HTTPServerError)
    {
        try check(request, expecting: .notStarted)
        let bodyless = Self.isBodyless(response.status.code)
        try await writeHead(response, length: bodyless ? nil : body.count, chunked: false)
        self.response = .finished
        guard !bodyless, head.method != .head, !body.isEmpty else { return }
        try await send(body)
    }

    func startResponse(_ request: UInt64, _ response: HTTPResponse) async throws(HTTPServerError) {
        try check(request, expecting: .notStarted)
        let bodyless = Self.isBodyless(response.status.code)
        let declared = response.headerFields[.contentLength].flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil }
        // Without a length: chunked for HTTP/1.1, the end of the connection for HTTP/1.0.
        let chunked = !bodyless && declared == nil && head.minorVersion == 1
        if !bodyless && declared == nil && !chunked { keepAlive = false }
        try await writeHead(response, length: bodyless ? nil : declared, chunked: chunked)
        self.response = .streaming(chunked: chunked, declared: bodyless ? 0 : declared, sent: 0, bodyless: bodyless)
    }

    func writeBody<Body: Collection<UInt8>>(_ request: UInt64, _ bytes: Body) async throws(HTTPServerError) {
        guard request == requestNumber else { throw HTTPServerError(.requestEnded) }
        guard case .streaming(let chunked, let declared, let sent, let bodyless) = response else {
            throw HTTPServerError(response == .notStarted ? .responseNotStarted : .responseAlreadyStarted)
        }
        if let declared, sent + bytes.count > declared, !bodyless {
            response = .failed
            throw HTTPServerError(.contentLengthMismatch)
        }
        response = .streaming(chunked: chunked, declared: declared, sent: sent + bytes.count, bodyless: bodyless)
        guard !bodyless, head.method != .head, !bytes.isEmpty else { return }
        if chunked {
            if out.remaining < 24 { try await flushOrFail() }
            out.append(hex: UInt64(bytes.count))
            out.append("\r\n")
            try await send(bytes)
            if out.remaining < 2 { try await flushOrFail() }
            out.append("\r\n")
        } else {
            try await send(bytes)
        }
        // A streamed body goes out as it is written.
        try await flushOrFail()
    }

    func finishResponse(_ request: UInt64, trailers: HTTPFields?) async throws(HTTPServerError) {
        guard request == requestNumber else { throw HTTPServerError(.requestEnded) }
        guard case .streaming(let chunked, let declared, let sent, let bodyless) = response else {
            throw HTTPServerError(response == .notStarted ? .responseNotStarted : .responseAlreadyStarted)
        }
        if let declared, sent != declared, !bodyless, head.method != .head {
            response = .failed
            throw HTTPServerError(.contentLengthMismatch)
        }
        response = .finished
        guard chunked, head.method != .head else { return }
        let mark = out.count
        out.append("0\r\n")
        if let trailers { appendFields(trailers, skippingFraming: true) }
        out.append("\r\n")
        if out.overflowed {
            out = unsafe ResponseWriter(output, count: mark)
            try await flushOrFail()
            out.append("0\r\n")
            if let trailers { appendFields(trailers, skippingFraming: true) }
            out.append("\r\n")
            if out.overflowed {
                response = .failed
                throw HTTPServerError(.responseHeadTooLarge)
            }
        }
    }

    func check(_ request: UInt64, expecting state: ResponseState) throws(HTTPServerError) {
        guard request == requestNumber else { throw HTTPServerError(.requestEnded) }
        guard response == state else { throw HTTPServerError(.responseAlreadyStarted) }
    }

    /// No body for these (RFC 9110 §6.4.1; 1xx are refused before).
    private static func isBodyless(_ status: Int) -> Bool { status == 204 || status == 304 }

    /// Writes a handler's response head: status line, its fields (but the framing ones, which the
    /// server writes), `Server` and `Date` unless it has them, the framing, `Connection`.
    private func writeHead(_ response: HTTPResponse, length: Int?, chunked: Bool) async throws(HTTPServerError) {
        let status = response.status
        guard status.code >= 200 else { throw HTTPServerError(.informationalStatus) }
        if server.isDraining { keepAlive = false }
        var flushed = false
        while true {
            let mark = out.count
            out.append("HTTP/1.1 ")
            out.append(decimal: status.code)
            out.append(32)
            out.append(string: status.reasonPhrase)
            out.append("\r\n")
            // One pass over the handler's fields: written (but the framing ones), and what the
            // server must add or honour noted on the way.
            let seen = appendFields(response.headerFields, skippingFraming: true)
            if seen.connectionClose { keepAlive = false }
            if !seen.server { out.append("Server: swift-uring\r\n") }
            if !seen.date {
                out.append("Date: ")
                unsafe out.append(server.now())
                out.append("\r\n")
            }
            if chunked {
                out.append("Transfer-Encoding: chunked\r\n")
            } else if let length {
                out.append("Content-Length: ")
                out.append(decimal: length)
                out.append("\r\n")
            }
            finishHead(keepAlive: keepAlive, minorVersion: head.minorVersion)
            guard out.overflowed else {
                responseHeadAt = mark
                return
            }
            out = unsafe ResponseWriter(output, count: mark)
            guard !flushed, mark > 0 else {
                self.response = .failed
                throw HTTPServerError(.responseHeadTooLarge)
            }
            try await flushOrFail()
            flushed = true
        }
    }

    /// Writes `fields` (without `Content-Length`, `Transfer-Encoding` and `Connection` when
    /// `skippingFraming`); says whether they had `Server`, `Date`, and a `Connection` with `close`.
    @discardableResult
    private func appendFields(_ fields: HTTPFields, skippingFraming: Bool) -> (
        server: Bool, date: Bool, connectionClose: Bool
    ) {
        var seen = (server: false, date: false, connectionClose: false)
        for field in fields {
            let name = field.name
            if name == .server { seen.server = true }
            if name == .date { seen.date = true }
            if name == .connection, field.value.lowercased().contains("close") { seen.connectionClose = true }
            if skippingFraming {
                if name == .contentLength || name == .transferEncoding || name == .connection { continue }
            }
            out.append(string: field.name.rawName)
            out.append(": ")
            unsafe field.withUnsafeBytesOfValue { unsafe out.append(contentsOf: $0) }
            out.append("\r\n")
        }
        return seen
    }

    /// Puts `bytes` after what the writer holds: copied when they fit, else sent from an array
    /// of them (the array itself when they are one).
    private func send<Body: Collection<UInt8>>(_ bytes: Body) async throws(HTTPServerError) {
        let count = bytes.count
        if count <= out.remaining {
            out.append(contentsOf: bytes)
            return
        }
        try await flushOrFail()
        if count <= out.remaining / 2 {
            out.append(contentsOf: bytes)
            return
        }
        let array = Array(bytes)
        server.setWriting(slot)
        // SAFETY: `array` is immutable and kept alive until the send has returned (the
        // `withExtendedLifetime` below), so its storage stays where the pointer says.
        var failure: TransportFailure?
        do throws(TransportFailure) {
            try await unsafe connection.send(unsafe array.withUnsafeBytes { unsafe $0 }, timeout: nil)
        } catch {
            failure = error
        }
        withExtendedLifetime(array) {}
        if let failure {
            response = .failed
            throw HTTPServerError(.connection, underlying: failure.socketError)
        }
    }

    private func flushOrFail() async throws(HTTPServerError) {
        do throws(TransportFailure) {
            try await flushThrowing()
        } catch {
            response = .failed
            throw HTTPServerError(.connection, underlying: error.socketError)
        }
    }

    // MARK: - Shared response pieces

    /// After refusing a request the client may still be sending it: closing with unread data
    /// would reset the connection and could destroy the error response before the client reads
    /// it. So: end our side, then read and drop what comes for up to a second (or 1 MiB).
    private func lingeringClose() async {
        await connection.endSending()
        var dropped = 0
        let deadline = ContinuousClock.now + .seconds(1)
        while dropped < 1 << 20 {
            let left = deadline - ContinuousClock.now
            guard left > .zero,
                let n = unsafe await connection.receiveOnce(into: input, timeout: left), n > 0
            else { return }
            dropped += n
        }
    }

    /// A refused request head: its error status after the responses gathered so far, then close.
    private func refuse(_ status: Int) async {
        guard await reserve(512) else { return }
        simpleResponse(status, keepAlive: false)
        guard await flush() else { return }
        await lingeringClose()
    }

    /// Sends what the writer holds. False if the connection failed. A client that stops reading
    /// is cut off by the watchdog once the send has waited the idle timeout (`setWriting`), not
    /// by a timeout of the send's own: that would cost a linked timeout, a kernel timer armed and
    /// cancelled, for every send.
    func flush() async -> Bool {
        (try? await flushThrowing()) != nil
    }

    /// ``flush()`` of the connection's last response: the server closes the connection next
    /// (over TLS, its close_notify goes in the same send).
    func flushLast() async -> Bool {
        guard out.count > 0 else { return true }
        responseHeadAt = nil
        let bytes = unsafe out.written
        out = unsafe ResponseWriter(output)
        server.setWriting(slot)
        return (try? await unsafe connection.sendLast(bytes)) != nil
    }

    /// ``flush()`` made first without waiting (`more`: a body follows at once): what the socket
    /// takes now goes in one system call, and only a rest is sent the awaited way.
    func flushWithoutWaiting(more: Bool) async -> Bool {
        guard out.count > 0 else { return true }
        let bytes = unsafe out.written
        let went = unsafe connection.sendWithoutWaiting(bytes, more: more)
        responseHeadAt = nil
        out = unsafe ResponseWriter(output)
        if went == bytes.count { return true }
        server.setWriting(slot)
        return (try? await unsafe connection.send(UnsafeRawBufferPointer(rebasing: bytes[went...]), timeout: nil))
            != nil
    }

    /// ``flush()``, with the transport's failure.
    private func flushThrowing() async throws(TransportFailure) {
        guard out.count > 0 else { return }
        responseHeadAt = nil
        let bytes = unsafe out.written
        out = unsafe ResponseWriter(output)
        server.setWriting(slot)
        try await unsafe connection.send(bytes, timeout: nil)
    }

    /// Makes room for a response head (flushing earlier pipelined responses if needed).
    func reserve(_ bytes: Int) async -> Bool {
        if out.remaining >= bytes { return true }
        return await flush()
    }

    func finishHead(keepAlive: Bool, minorVersion: Int = 1) {
        if !keepAlive {
            out.append("Connection: close\r\n")
        } else if minorVersion == 0 {
            out.append("Connection: keep-alive\r\n")
        }
        out.append("\r\n")
    }

    /// A status with a one-line text body (headers only for HEAD is the caller's business: error
    /// bodies are always sent, since the request may not have been understood).
    /// The caller has reserved room (512 bytes is plenty).
    func simpleResponse(_ status: Int, keepAlive: Bool, extra: StaticString? = nil, head: Bool = false) {
        let reason = reasonPhrase(status)
        unsafe out.statusLine(status, date: server.now())
        if let extra { out.append(extra) }
        out.append("Content-Type: text/plain; charset=utf-8\r\nContent-Length: ")
        out.append(decimal: 4 + reason.utf8CodeUnitCount + 1)
        out.append("\r\n")
        finishHead(keepAlive: keepAlive)
        if !head {
            out.append(decimal: status)
            out.append(32)
            out.append(reason)
            out.append(10)
        }
    }
}
