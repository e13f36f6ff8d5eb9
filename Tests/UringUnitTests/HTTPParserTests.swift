import Testing

@testable import UringHTTP

func parseHead(_ text: String, _ parser: RequestHeadParser = RequestHeadParser()) throws(RequestHeadError)
    -> RequestHead?
{
    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: text.utf8.count, alignment: 1)
    defer { bytes.deallocate() }
    bytes.copyBytes(from: text.utf8)
    return try parser.parse(UnsafeRawBufferPointer(bytes))
}

@Suite("HTTP request heads, paths, dates and ranges")
struct HTTPParserTests {
    @Test func aSimpleGet() throws {
        let head = try #require(try parseHead("GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=1-2\r\n\r\nrest"))
        #expect(head.method == .get)
        #expect(head.minorVersion == 1 && head.keepAlive && head.hasHost)
        #expect(head.target == 4..<12)
        #expect(head.length == "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=1-2\r\n\r\n".utf8.count)
        #expect(head.range != nil)
    }

    /// RFC 9112 §3.2: a server must accept a target in absolute form (its authority stands for
    /// `Host`), and `OPTIONS *`.
    @Test func absoluteAndAsteriskTargets() throws {
        let text = "GET HTTP://Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"
        let head = try #require(try parseHead(text))
        let bytes = Array(text.utf8)
        #expect(String(decoding: bytes[head.target], as: UTF8.self) == "/a/b?x=1")
        #expect(head.authority.map { String(decoding: bytes[$0], as: UTF8.self) } == "Example.com:8080")
        #expect(head.method == .get && head.hasHost)
        let secure = try #require(try parseHead("HEAD https://h/ HTTP/1.0\r\n\r\n"))
        #expect(secure.target.count == 1 && secure.authority?.count == 1 && secure.method == .head)
        let options = try #require(try parseHead("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"))
        #expect(options.target == 8..<9 && options.authority == nil && options.method == .other)
        #expect(try parseHead("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")?.authority == nil)
    }

    @Test func keepAliveRules() throws {
        #expect(try parseHead("GET / HTTP/1.0\r\n\r\n")?.keepAlive == false)
        #expect(try parseHead("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")?.keepAlive == true)
        #expect(try parseHead("HEAD / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n")?.keepAlive == false)
        #expect(try parseHead("POST / HTTP/1.1\r\nHost: h\r\n\r\n")?.method == .other)
    }

    @Test func incompleteHeadsWait() throws {
        for text in ["", "GET", "GET / HTTP/1.1\r", "GET / HTTP/1.1\r\nHost: h\r\n", "GET / HTTP/1.1\r\nHost: h\r\n\r"]
        {
            #expect(try parseHead(text) == nil, "\(text.debugDescription)")
        }
    }

    @Test(arguments: [
        ("garbage\r\n\r\n", RequestHeadError.badRequest),
        ("GET / HTTP/1.1\r\n\r\n", .badRequest),  // no Host
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .badRequest),
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),
        ("GET ftp://x/ HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),  // not http(s)
        ("GET http://x HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),  // absolute form without a path
        ("GET http://x?q HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),
        ("GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),  // no authority
        ("GET http://user@x/ HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),  // user information
        ("GET http://x/ HTTP/1.1\r\n\r\n", .badRequest),  // absolute form still needs Host in HTTP/1.1
        ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),  // asterisk form is for OPTIONS only
        ("options * HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),
        ("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),
        ("GET x HTTP/1.1\r\nHost: h\r\n\r\n", .badRequest),
        ("GET / HTTP/1.1\nHost: h\n\n", .badRequest),  // bare LF
        ("GET / HTTP/1.1\r\nHost : h\r\n\r\n", .badRequest),  // space before colon
        ("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", .badRequest),
        ("GET / HTTP/1.1\r\nHost: h\u{0}x\r\n\r\n", .badRequest),
        ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", .badRequest),
        ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", .badRequest),
        ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", .badRequest),
        ("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", .notImplemented),
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", .versionNotSupported),
        ("GET / HTTX/1.1\r\nHost: h\r\n\r\n", .badRequest),
    ])
    func malformedHeadsAreRefused(_ text: String, _ expected: RequestHeadError) {
        #expect(throws: expected) { _ = try parseHead(text) }
    }

    @Test func bodiesForHandlersChunkedAndExpect() throws {
        let reading = RequestHeadParser(readsBodies: true)
        let chunked = try #require(
            try parseHead("POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", reading))
        #expect(chunked.chunked && chunked.contentLength == 0 && !chunked.expectsContinue)
        #expect(chunked.methodBytes == 0..<4)
        let expect = try #require(
            try parseHead("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n", reading))
        #expect(expect.expectsContinue && expect.contentLength == 5 && !expect.chunked)
        // Without readsBodies, Expect is not looked at.
        #expect(try parseHead("GET / HTTP/1.1\r\nHost: h\r\nExpect: nonsense\r\n\r\n")?.expectsContinue == false)
    }

    @Test(arguments: [
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            RequestHeadError.badRequest
        ),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", .badRequest),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .badRequest),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .badRequest),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", .notImplemented),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .badRequest),
        ("POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", .expectationFailed),
    ])
    func bodyFramingThatCouldBeReadTwoWaysIsRefused(_ text: String, _ expected: RequestHeadError) {
        #expect(throws: expected) { _ = try parseHead(text, RequestHeadParser(readsBodies: true)) }
    }

    @Test func aRequestLineThatCannotBecomeValidIsRefusedAtOnce() throws {
        #expect(throws: RequestHeadError.badRequest) { _ = try parseHead(String(repeating: "\u{7F}", count: 50)) }
        #expect(throws: RequestHeadError.badRequest) { _ = try parseHead("GET /a\u{1}b") }
        #expect(throws: RequestHeadError.badRequest) { _ = try parseHead("(GET) /") }
        #expect(try parseHead("GET /abc") == nil)
    }

    @Test func limitsAreEnforced() {
        let parser = RequestHeadParser(maximumHeadBytes: 1024, maximumRequestLineBytes: 256, maximumFields: 4)
        #expect(throws: RequestHeadError.uriTooLong) {
            _ = try parseHead("GET /" + String(repeating: "a", count: 300), parser)
        }
        #expect(throws: RequestHeadError.headerFieldsTooLarge) {
            _ = try parseHead("GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "a", count: 1100), parser)
        }
        #expect(throws: RequestHeadError.headerFieldsTooLarge) {
            _ = try parseHead("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n", parser)
        }
    }

    @Test(arguments: [
        ("/", "", false), ("/a/b.txt", "a/b.txt", false), ("/dir/", "dir", true), ("/a//b", "a/b", false),
        ("/%41%62c?q=1", "Abc", false), ("/caf%C3%A9", "café", false),
    ])
    func pathsDecode(_ target: String, _ path: String, _ slash: Bool) throws {
        let decoded = try #require(Array(target.utf8).withUnsafeBytes { RequestPath.decode($0) })
        #expect(String(decoding: decoded.path, as: UTF8.self) == path)
        #expect(decoded.trailingSlash == slash)
    }

    @Test(arguments: [
        "/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/a/..%2f..%2f", "/a/%2F", "/./x", "/a/%00", "/%zz", "/%4",
        "/a\\..\\b", "x",
    ])
    func dangerousPathsAreRefused(_ target: String) {
        #expect(Array(target.utf8).withUnsafeBytes { RequestPath.decode($0) } == nil)
    }

    @Test func datesRoundTrip() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 29, alignment: 1)
        defer { buffer.deallocate() }
        HTTPDate.format(784_111_777, into: buffer)
        let text = String(decoding: UnsafeRawBufferPointer(start: buffer, count: 29), as: UTF8.self)
        #expect(text == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.parse(UnsafeRawBufferPointer(start: buffer, count: 29)) == 784_111_777)
        for seconds in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            HTTPDate.format(seconds, into: buffer)
            #expect(HTTPDate.parse(UnsafeRawBufferPointer(start: buffer, count: 29)) == seconds)
        }
        #expect(Array("Sunday, 06-Nov-94 08:49:37 GMT".utf8).withUnsafeBytes { HTTPDate.parse($0) } == nil)
    }

    @Test(arguments: [
        ("bytes=0-9", RangeResult.range(start: 0, length: 10)), ("bytes=90-", .range(start: 90, length: 10)),
        ("bytes=-5", .range(start: 95, length: 5)), ("bytes=50-1000", .range(start: 50, length: 50)),
        ("bytes=100-", .unsatisfiable), ("bytes=-0", .unsatisfiable), ("bytes=0-1,3-4", .ignore),
        ("items=0-1", .ignore), ("bytes=5-2", .ignore), ("bytes=a-b", .ignore),
    ])
    func ranges(_ text: String, _ expected: RangeResult) {
        #expect(Array(text.utf8).withUnsafeBytes { parseRange($0, size: 100) } == expected)
    }
}
