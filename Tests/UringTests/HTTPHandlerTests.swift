import Glibc
import HTTPTypes
import Synchronization
import SystemPackage
import Testing
import UringHTTP
import UringTLS

@testable import Uring

/// An `HTTPServer` with a handler, on a ring of its own (the driver the suite runs on).
final class HandlerTestServer: Sendable {
    let ring: RingExecutor
    let server: HTTPServer
    let port: Int
    let task: Task<Void, Never>

    init(
        configuration: HTTPServer.Configuration = .init(),
        handler: @escaping HTTPServer.Handler
    ) throws {
        ring = try RingExecutor(name: "http-handler-test")
        let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
        port = try listener.localAddress.port!
        let server = HTTPServer(configuration: configuration)
        self.server = server
        task = Task(executorPreference: ring) { try? await server.run(on: listener, handler: handler) }
    }

    var url: String { "http://127.0.0.1:\(port)" }

    func stop() async {
        server.beginShutdown()
        await task.value
        ring.shutdown()
    }

    /// Sends `request` on a new connection and returns everything until the server closes it
    /// (or `timeout` passes without a byte).
    func raw(_ request: [UInt8], timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        try await rawHTTPExchange(port: port, request, timeout: timeout)
    }
}

/// A running `uring-api` (the handler API's example) on a temporary root.
final class APIServerProcess {
    let child: SpawnedChild
    let port: Int
    let root: TemporaryDirectory

    init(extra: [String] = []) throws {
        root = TemporaryDirectory()
        try HTTPServerProcess.write(root.path + "/index.html", Array("<h1>home</h1>\n".utf8))
        var random = SeededRandom(seed: 17)
        try HTTPServerProcess.write(root.path + "/4k.bin", random.bytes(4096))
        child = try SpawnedChild(
            executableNextToTests("uring-api"), ["--root", root.path, "--host", "127.0.0.1", "--port", "0"] + extra)
        let banner = child.readLine()
        guard banner.hasPrefix("uring-api listening on http://127.0.0.1:"),
            let port = banner.split(separator: ":").dropFirst(2).first.flatMap({ Int($0.prefix { $0.isNumber }) })
        else {
            kill(child.pid, SIGKILL)
            _ = child.wait()
            throw ChildFailed(description: "unexpected banner: \(banner)")
        }
        self.port = port
    }

    var url: String { "http://127.0.0.1:\(port)" }

    func stop() -> Int32 {
        kill(child.pid, SIGTERM)
        let status = child.wait()
        root.cleanup()
        return status
    }
}

/// The bytes of a response's body after its head (no decoding).
private func bodyOf(_ response: [UInt8]) -> [UInt8] {
    guard let end = response.firstRange(of: Array("\r\n\r\n".utf8)) else { return [] }
    return Array(response[end.upperBound...])
}

extension IntegrationTests {
    /// `uring-api`, the handler API's example, with real clients (a process of its own: left out
    /// of the sanitizer passes, like the other server processes).
    @Suite("uring-api")
    struct APIExampleProcess {
        @Test(.enabled(if: curlAvailable, "curl is not installed"))
        func curlGetHeadPostEchoJSONAndFiles() throws {
            let server = try APIServerProcess()
            defer { #expect(server.stop() == 0) }
            let url = server.url
            #expect(try shell("curl -s \(url)/plaintext").1 == "Hello, World!")
            #expect(try shell("curl -s '\(url)/plaintext?cache=no'").1 == "Hello, World!")
            let head = try shell("curl -sI \(url)/plaintext").1
            #expect(head.hasPrefix("HTTP/1.1 200 OK"), "\(head)")
            #expect(head.contains("Content-Length: 13") && head.contains("Content-Type: text/plain"), "\(head)")
            #expect(try shell("curl -s \(url)/json").1 == #"{"message":"Hello, World!"}"#)
            #expect(
                try shell(#"curl -s -H 'Content-Type: application/json' -d '{"name":"Ada"}' \#(url)/json"#).1
                    == #"{"message":"Hello, Ada!"}"#)
            #expect(try shell("curl -s -o /dev/null -w '%{http_code}' -d 'nope' \(url)/json").1 == "400")
            // POST with Content-Length, and chunked.
            #expect(try shell("curl -s --data-binary 'some bytes' \(url)/echo").1 == "some bytes")
            #expect(
                try shell(
                    "printf 'abc%.0s' $(seq 1 5000) | curl -s -H 'Transfer-Encoding: chunked' --data-binary @- \(url)/echo"
                ).1
                    == String(repeating: "abc", count: 5000))
            // Expect: 100-continue is answered before the body is sent.
            let expect = try shell(
                "head -c 300000 /dev/zero | curl -sv -H 'Expect: 100-continue' --data-binary @- -o /dev/null -w 'got=%{size_download}' \(url)/echo 2>&1"
            ).1
            #expect(expect.contains("HTTP/1.1 100 Continue") && expect.contains("got=300000"), "\(expect.suffix(600))")
            // Files under /files/, through the file handler.
            #expect(try shell("curl -s \(url)/files/").1 == "<h1>home</h1>\n")
            #expect(try shell("curl -s -r 100-199 \(url)/files/4k.bin | wc -c").1.trimmingSpaces == "100")
            // Conditional requests through the handler: the ETag it sent gets a 304.
            let etag = try shell("curl -sI \(url)/files/4k.bin | tr -d '\\r' | sed -n 's/^ETag: //p'").1.trimmingSpaces
            #expect(etag.hasPrefix("\""), "\(etag)")
            #expect(
                try shell("curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: \(etag)' \(url)/files/4k.bin").1
                    == "304")
            let redirect = try shell("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' \(url)/files").1
            #expect(redirect == "301 \(url)/files/", "\(redirect)")
            #expect(try shell("curl -s -o /dev/null -w '%{http_code}' \(url)/files/../../etc/passwd").1 != "200")
            #expect(try shell("curl -s -o /dev/null -w '%{http_code}' \(url)/nothing").1 == "404")
            #expect(try shell("curl -s -o /dev/null -w '%{http_code}' -X DELETE \(url)/plaintext").1 == "405")
        }

        @Test(.enabled(if: curlAvailable, "curl is not installed"))
        func aTenMebibyteStreamedUploadComesBackIdentical() throws {
            let server = try APIServerProcess()
            defer { #expect(server.stop() == 0) }
            let file = server.root.path + "/upload.bin"
            var random = SeededRandom(seed: 99)
            try HTTPServerProcess.write(file, random.bytes(10 << 20))
            for framing in ["", "-H 'Transfer-Encoding: chunked'"] {
                let (status, output) = try shell(
                    "curl -s \(framing) --data-binary @\(file) \(server.url)/echo | cmp - \(file) && echo same")
                #expect(status == 0 && output == "same\n", "\(framing): \(output)")
            }
        }

        @Test(.enabled(if: pythonAvailable, "python3 is not installed"))
        func pythonHTTPClientKeepAliveChunkedUploadAndHead() throws {
            let server = try APIServerProcess()
            defer { #expect(server.stop() == 0) }
            let script = """
                import http.client, json, os, sys
                c = http.client.HTTPConnection("127.0.0.1", \(server.port), timeout=20)
                data = os.urandom(3 * 1024 * 1024 + 17)
                def pieces():
                    for i in range(0, len(data), 65536):
                        yield data[i:i + 65536]
                c.request("POST", "/echo", body=pieces())  # chunked: no length is known
                r = c.getresponse(); body = r.read()
                assert r.status == 200 and body == data, (r.status, len(body))
                assert r.getheader("Transfer-Encoding") == "chunked"
                c.request("POST", "/echo", body=data[:1000])  # Content-Length
                r = c.getresponse(); assert r.read() == data[:1000]
                c.request("GET", "/plaintext"); r = c.getresponse()
                assert r.read() == b"Hello, World!" and r.getheader("Content-Type") == "text/plain"
                c.request("HEAD", "/plaintext"); r = c.getresponse()
                assert r.getheader("Content-Length") == "13" and r.read() == b""
                c.request("GET", "/json"); r = c.getresponse()
                assert json.loads(r.read()) == {"message": "Hello, World!"}
                c.request("POST", "/json", body=json.dumps({"name": "Bo"}), headers={"Content-Type": "application/json"})
                r = c.getresponse(); assert json.loads(r.read()) == {"message": "Hello, Bo!"}
                c.request("GET", "/files/4k.bin"); r = c.getresponse(); assert len(r.read()) == 4096
                print("python-ok")
                """
            let (status, output) = try runChild("/usr/bin/env", ["python3", "-c", script])
            #expect(status == 0 && output.contains("python-ok"), "\(output)")
        }

    }

    /// Handlers of the tests' own, on a ring in this process.
    @Suite("HTTP handlers")
    struct HTTPHandlers {
        // MARK: - Handlers of the tests' own

        @Test func streamedChunkedResponseWithTrailersAndRequestTrailers() async throws {
            let server = try HandlerTestServer { request, body, responder in
                var total = 0
                for try await chunk in body { total += chunk.count }
                let checksum = body.trailers?[HTTPField.Name("X-Checksum")!] ?? "none"
                let writer = try await responder.start(HTTPResponse(status: .ok))
                for index in 0..<3 { try await writer.write("part \(index);") }
                try await writer.finish(trailers: [HTTPField.Name("X-Seen")!: "\(total) \(checksum)"])
            }
            let request = Array(
                "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
                    .utf8)
            let response = try await server.raw(request).text
            #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n") && response.contains("Transfer-Encoding: chunked\r\n"))
            if curlAvailable {
                // curl sends the chunked upload with its trailer and prints the raw chunked answer.
                let (status, text) = try shell(
                    "printf 'hello world' | curl -s --raw -H 'Transfer-Encoding: chunked' -H 'Trailer: X-Checksum' --data-binary @- \(server.url)/up"
                )
                #expect(status == 0 && text.hasSuffix("0\r\nX-Seen: 11 none\r\n\r\n"), "\(text)")
            }
            #expect(!response.contains("Content-Length"))
            #expect(
                response.hasSuffix(
                    "\r\n\r\n7\r\npart 0;\r\n7\r\npart 1;\r\n7\r\npart 2;\r\n0\r\nX-Seen: 11 abc\r\n\r\n"),
                "\(response)")
            await server.stop()
        }

        @Test(.enabled(if: curlAvailable, "curl is not installed"))
        func curlReadsAStreamedResponseOfUnknownLength() async throws {
            let server = try HandlerTestServer { _, _, responder in
                let writer = try await responder.start(
                    HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"]))
                for index in 0..<1000 { try await writer.write("line \(index)\n") }
                try await writer.finish()
            }
            let expected = (0..<1000).map { "line \($0)\n" }.joined()
            #expect(try shell("curl -s \(server.url)/").1 == expected)
            // HTTP/1.0 has no chunked coding: the body ends with the connection.
            let old = try await server.raw(Array("GET / HTTP/1.0\r\n\r\n".utf8)).text
            #expect(old.hasPrefix("HTTP/1.1 200 OK") && old.contains("Connection: close") && !old.contains("chunked"))
            #expect(old.hasSuffix(expected))
            await server.stop()
        }

        @Test func aThousandPipelinedRequestsAreAnsweredInOrder() async throws {
            let server = try HandlerTestServer { request, body, responder in
                let sent = try await body.collect(upTo: 1024)
                try await responder.respond(
                    HTTPResponse(status: .ok), body: Array((request.path ?? "").utf8) + [58] + sent)
            }
            var pipeline: [UInt8] = []
            for index in 0..<1000 {
                if index % 3 == 0 {
                    pipeline += Array("POST /\(index) HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc".utf8)
                } else if index % 3 == 1 {
                    pipeline += Array(
                        "POST /\(index) HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
                            .utf8)
                } else {
                    pipeline += Array("GET /\(index) HTTP/1.1\r\nHost: t\r\n\r\n".utf8)
                }
            }
            pipeline += Array("GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8)
            let response = try await server.raw(pipeline).text
            var bodies: [String] = []
            for part in response.split(separator: "HTTP/1.1 200 OK", omittingEmptySubsequences: false).dropFirst() {
                bodies.append(String(part[part.firstRange(of: "\r\n\r\n")!.upperBound...]))
            }
            let expected =
                (0..<1000).map { index in "/\(index):" + (index % 3 == 0 ? "abc" : index % 3 == 1 ? "xy" : "") }
                + ["/last:"]
            #expect(bodies == expected)
            await server.stop()
        }

        /// Requests on one connection reuse the storage of the one before (no allocation per
        /// request): nothing of a request shows in the next (its method, authority, path and
        /// fields are each the new request's), and a request a handler kept stays as it was.
        @Test func eachRequestIsItsOwnThoughTheyShareStorage() async throws {
            let kept = Lock<[HTTPRequest]>([])
            let server = try HandlerTestServer { request, body, responder in
                _ = try await body.collect(upTo: 1024)
                if request.path == "/keep" { kept.withLock { $0.append(request) } }
                let fields = request.headerFields.map { "\($0.name.canonicalName)=\($0.value)" }.joined(separator: ",")
                let line = "\(request.method.rawValue) \(request.authority ?? "-") \(request.path ?? "-") [\(fields)]"
                try await responder.respond(HTTPResponse(status: .ok), body: Array(line.utf8))
            }
            let requests = [
                "POST /keep HTTP/1.1\r\nHost: first\r\nX-One: 1\r\nX-Two: 2\r\nContent-Length: 1\r\n\r\na",
                "GET /second HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",  // no Host (1.0 needs none)
                "DELETE /third HTTP/1.1\r\nHost: third\r\nX-Three: 3\r\n\r\n",
                // Absolute form: its authority, not Host (RFC 9112 §3.2.2); then asterisk form.
                "GET http://target.example:8080/abs?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
                "OPTIONS * HTTP/1.1\r\nHost: star\r\n\r\n",
                "GET /last HTTP/1.1\r\nHost: last\r\nConnection: close\r\n\r\n",
            ]
            let response = try await server.raw(Array(requests.joined().utf8)).text
            var bodies: [String] = []
            for part in response.split(separator: "HTTP/1.1 200 OK", omittingEmptySubsequences: false).dropFirst() {
                bodies.append(String(part[part.firstRange(of: "\r\n\r\n")!.upperBound...]))
            }
            #expect(
                bodies == [
                    "POST first /keep [x-one=1,x-two=2,content-length=1]",
                    "GET - /second [connection=keep-alive]",
                    "DELETE third /third [x-three=3]",
                    "GET target.example:8080 /abs?x=1 []",
                    "OPTIONS star * []",
                    "GET last /last [connection=close]",
                ])
            let first = kept.withLock { $0.first }
            #expect(first?.method == .post && first?.authority == "first" && first?.path == "/keep")
            #expect(first?.headerFields[HTTPField.Name("X-One")!] == "1" && first?.headerFields.count == 3)
            await server.stop()
        }

        /// A file handler serves what the handler hands it: the request as it came (served from
        /// the head the connection parsed), or one the handler changed (a new path, a `Range`
        /// added or taken away), or one whose head is gone from the input buffer because the
        /// handler read a long body first.
        @Test func aFileHandlerServesTheRequestItIsHanded() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            #expect(system("printf 0123456789 > '\(dir.path)/a.txt' && printf bbbb > '\(dir.path)/b.txt'") == 0)
            let files = try await FileHandler(root: FilePath(dir.path))
            let server = try HandlerTestServer(configuration: .init(maximumBodyBytes: 1 << 20)) {
                request, body, responder in
                var request = request
                switch request.path {
                case "/alias": request.path = "/b.txt"
                case "/ranged":
                    request.path = "/a.txt"
                    request.headerFields[.range] = "bytes=2-4"
                case "/whole":
                    request.path = "/a.txt"
                    request.headerFields[.range] = nil
                case "/after-body":
                    _ = try await body.collect(upTo: 1 << 20)
                    request.path = "/a.txt"
                default: break
                }
                try await files.handle(request, responder: responder)
            }
            let longBody = String(repeating: "x", count: 100_000)
            let requests = [
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n",
                "GET /alias HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /ranged HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /whole HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n",
                "GET /after-body HTTP/1.1\r\nHost: t\r\nContent-Length: \(longBody.utf8.count)\r\n\r\n\(longBody)",
                "HEAD /b.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "DELETE /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            ]
            let response = try await server.raw(Array(requests.joined().utf8)).text
            var answers: [String] = []
            for part in response.split(separator: "HTTP/1.1 ", omittingEmptySubsequences: false).dropFirst() {
                let status = part.prefix(3)
                let body = part[part.firstRange(of: "\r\n\r\n")!.upperBound...]
                answers.append("\(status) \(body)")
            }
            #expect(
                answers == [
                    "200 0123456789", "206 01", "200 bbbb", "206 234", "200 0123456789", "200 0123456789", "200 ",
                    "405 405 Method Not Allowed\n",
                ], "\(response)")
            await server.stop()
            try await files.close()
        }

        @Test func aThrowingHandlerAnswers500AndTheNextConnectionIsServed() async throws {
            struct Failure: Error {}
            let server = try HandlerTestServer { request, _, responder in
                if request.path == "/throw" { throw Failure() }
                try await responder.respond(HTTPResponse(status: .ok), body: "fine")
            }
            let failed = try await server.raw(Array("GET /throw HTTP/1.1\r\nHost: t\r\n\r\n".utf8)).text
            #expect(failed.hasPrefix("HTTP/1.1 500 Internal Server Error") && failed.contains("Connection: close"))
            if curlAvailable {
                #expect(try shell("curl -s -o /dev/null -w '%{http_code}' \(server.url)/throw").1 == "500")
            }
            let next = try await server.raw(Array("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
            #expect(bodyOf(next).text == "fine")
            await server.stop()
        }

        @Test func aHandlerThatNeverReturnsIsCutOffByTheRequestTimeout() async throws {
            let cancelled = Atomic<Int>(0)
            let server = try HandlerTestServer(configuration: .init(requestTimeout: .milliseconds(300))) {
                request, _, responder in
                if request.path == "/sleep" {
                    do {
                        try await Task.sleep(for: .seconds(3600))
                    } catch {
                        cancelled.add(1, ordering: .relaxed)
                        throw error
                    }
                }
                try await responder.respond(HTTPResponse(status: .ok), body: "awake")
            }
            try await Task.sleep(for: .milliseconds(1))  // the test's own timers exist before counting
            let descriptors = openDescriptorCount()
            let before = openDescriptors()
            let start = ContinuousClock.now
            let cut = try await server.raw(Array("GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n".utf8), timeout: .seconds(20))
            let waited = ContinuousClock.now - start
            #expect(!cut.text.hasPrefix("HTTP/1.1 200"), "\(cut.text)")
            #expect(waited < .seconds(10), "the connection stayed open \(waited)")
            #expect(await eventually { cancelled.load(ordering: .relaxed) == 1 })
            if curlAvailable {
                // curl sees the connection end without a response ("Empty reply from server": 52).
                #expect(try shell("curl -s -o /dev/null \(server.url)/sleep; echo $?").1 == "52\n")
                #expect(await eventually { cancelled.load(ordering: .relaxed) == 2 })
            }
            let next = try await server.raw(Array("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
            #expect(bodyOf(next).text == "awake")
            #expect(
                await eventually { openDescriptorCount() <= descriptors },
                "\(openDescriptors().filter { before[$0.key] == nil })")
            await server.stop()
        }

        @Test func respondingTwiceIsRefused() async throws {
            let errors = Lock<[HTTPServerError.Code]>([])
            let server = try HandlerTestServer { _, _, responder in
                try await responder.respond(HTTPResponse(status: .ok), body: "first")
                do throws(HTTPServerError) {
                    try await responder.respond(HTTPResponse(status: .ok), body: "second")
                } catch {
                    errors.withLock { $0.append(error.code) }
                }
                do throws(HTTPServerError) {
                    _ = try await responder.start(HTTPResponse(status: .ok))
                } catch {
                    errors.withLock { $0.append(error.code) }
                }
            }
            let response = try await server.raw(
                Array("GET /keep HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
            #expect(bodyOf(response).text == "first")
            #expect(errors.withLock { $0 } == [.responseAlreadyStarted, .responseAlreadyStarted])
            await server.stop()
        }

        @Test func handlersServeHTTPSWithTheHTTPSScheme() async throws {
            let ring = try RingExecutor(name: "https-handler-test")
            let tls = try TLSListener.bind(
                to: SocketAddress("127.0.0.1:0"), configuration: TestCertificates.shared.server)
            let address = try tls.localAddress
            let server = HTTPServer(configuration: .init())
            let task = Task(executorPreference: ring) {
                try? await server.run(on: tls) { request, body, responder in
                    let sent = try await body.collect(upTo: 1 << 20)
                    try await responder.respond(
                        HTTPResponse(status: .ok),
                        body: Array("\(request.scheme ?? "-") \(request.authority ?? "-") ".utf8) + sent)
                }
            }
            let connection = try await TLSConnection.connect(
                to: address, serverName: "localhost", configuration: TestCertificates.shared.client)
            try await connection.write(
                contentsOf: Array(
                    "POST /x HTTP/1.1\r\nHost: secure\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\ntext\r\n0\r\n\r\n"
                        .utf8))
            var response: [UInt8] = []
            while true {
                let part = try await connection.receive(upTo: 65536)
                if part.isEmpty { break }
                response += part
            }
            try? await connection.close()
            #expect(response.text.hasPrefix("HTTP/1.1 200 OK"), "\(response.text)")
            #expect(bodyOf(response).text == "https secure text")
            server.beginShutdown()
            await task.value
            ring.shutdown()
        }

        // MARK: - Bad input

        @Test func smugglingVectorsOversizeAndMalformedBodiesGetTheirStatus() async throws {
            let reached = Atomic<Int>(0)
            let server = try HandlerTestServer(
                configuration: .init(
                    maximumBodyBytes: 1000,
                    parser: RequestHeadParser(maximumHeadBytes: 4096, maximumRequestLineBytes: 1024))
            ) { _, body, responder in
                reached.add(1, ordering: .relaxed)
                let bytes = try await body.collect(upTo: 1 << 20)
                try await responder.respond(HTTPResponse(status: .ok), body: "\(bytes.count)")
            }
            let descriptors = openDescriptorCount()
            let cases: [(String, String)] = [
                ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
                (
                    "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    "400"
                ),
                (
                    "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
                    "400"
                ),
                (
                    "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    "400"
                ),
                ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", "400"),
                ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
                ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
                ("POST / HTTP/1.1\r\nHost: t\r\nExpect: something\r\n\r\n", "417"),
                ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", "400"),
                ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
                ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", "400"),
                ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n", "413"),
                (
                    "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + String(repeating: "64\r\n" + String(repeating: "x", count: 100) + "\r\n", count: 11), "413"
                ),
                ("GET /" + String(repeating: "a", count: 2000) + " HTTP/1.1\r\nHost: t\r\n\r\n", "414"),
                ("GET / HTTP/1.1\r\nHost: t\r\nX: " + String(repeating: "b", count: 5000) + "\r\n\r\n", "431"),
            ]
            for (request, status) in cases {
                let response = try await server.raw(Array(request.utf8)).text
                #expect(response.hasPrefix("HTTP/1.1 \(status) "), "\(request.prefix(80)): \(response.prefix(60))")
                #expect(response.contains("Connection: close"), "\(request.prefix(80))")
            }
            // Only the bodies that reached a handler: the malformed and oversize chunked ones.
            #expect(reached.load(ordering: .relaxed) == 4)
            // A well-formed request still works, and nothing was left open.
            let good = try await server.raw(
                Array("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".utf8))
            #expect(bodyOf(good).text == "5")
            #expect(await eventually { openDescriptorCount() <= descriptors })
            await server.stop()
        }

        @Test func aClientThatStopsMidBodyLeavesNothingBehind() async throws {
            let outcomes = Lock<[HTTPServerError.Code]>([])
            let socketErrors = Lock<[Errno?]>([])
            let server = try HandlerTestServer { _, body, responder in
                do throws(HTTPServerError) {
                    _ = try await body.collect(upTo: 1 << 20)
                } catch {
                    outcomes.withLock { $0.append(error.code) }
                    socketErrors.withLock { $0.append(error.underlying?.errno) }
                    throw error
                }
                try await responder.respond(HTTPResponse(status: .ok))
            }
            try await Task.sleep(for: .milliseconds(1))  // the test's own timers exist before counting
            let descriptors = openDescriptorCount()
            for framing in ["Content-Length: 100000", "Transfer-Encoding: chunked"] {
                let connection = try await TCPConnection.connect(
                    to: SocketAddress(host: "127.0.0.1", port: server.port))
                let partial = framing.hasPrefix("Content") ? "some of it" : "1000\r\nsome of it"
                try await connection.write(
                    contentsOf: Array("POST / HTTP/1.1\r\nHost: t\r\n\(framing)\r\n\r\n\(partial)".utf8))
                try await Task.sleep(for: .milliseconds(50))
                try await connection.close()
            }
            #expect(await eventually { outcomes.withLock { $0 } == [.bodyTruncated, .bodyTruncated] })
            // A client that resets mid-body: the error carries the socket's errno.
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(server.port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            #expect(connected == 0)
            let partial = Array("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nsome".utf8)
            _ = partial.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
            try await Task.sleep(for: .milliseconds(50))
            var reset = linger(l_onoff: 1, l_linger: 0)  // close with a RST
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size))
            Glibc.close(fd)
            #expect(await eventually { outcomes.withLock { $0.count } == 3 })
            #expect(outcomes.withLock { $0.last } == .bodyTruncated)
            #expect(socketErrors.withLock { $0 } == [nil, nil, .connectionReset], "clean ends have no socket error")
            #expect(await eventually { openDescriptorCount() <= descriptors })
            let good = try await server.raw(Array("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
            #expect(good.text.hasPrefix("HTTP/1.1 200 OK"))
            await server.stop()
        }
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        String(self.drop { $0 == " " || $0 == "\n" }.reversed().drop { $0 == " " || $0 == "\n" }.reversed())
    }
}
