import Glibc
import Testing

@testable import Uring

/// A running `uring-http` on a temporary document root, for the tests below.
final class HTTPServerProcess {
    let child: SpawnedChild
    let port: Int
    let root: TemporaryDirectory
    let big: [UInt8]
    /// What the server logged before its banner (with a sandbox: standard error included).
    private(set) var startupLog: [String] = []

    /// Starts `uring-http`; with `sandboxed`, under a seccomp filter that denies io_uring (see
    /// ``IoUringDeniedSandbox``), so it runs on the epoll driver.
    init(extra: [String] = [], sandboxed: Bool = false) throws {
        root = TemporaryDirectory()
        try Self.write(root.path + "/index.html", Array("<h1>home</h1>\n".utf8))
        mkdir(root.path + "/sub", 0o755)
        try Self.write(root.path + "/sub/index.html", Array("sub home\n".utf8))
        var random = SeededRandom(seed: 64)
        try Self.write(root.path + "/4k.bin", random.bytes(4096))
        big = random.bytes(64 << 20)
        try Self.write(root.path + "/big.bin", big)
        symlink("/etc/passwd", root.path + "/escape")  // points outside the root
        symlink("index.html", root.path + "/inside.html")  // points inside: allowed
        let arguments = ["--root", root.path, "--host", "127.0.0.1", "--port", "0"] + extra
        if sandboxed {
            let sandbox = try IoUringDeniedSandbox(in: root.path)
            let (path, wrapped) = sandbox.command(executableNextToTests("uring-http"), arguments)
            child = try SpawnedChild(path, wrapped, includeStandardError: true)
        } else {
            child = try SpawnedChild(executableNextToTests("uring-http"), arguments)
        }
        var banner = child.readLine()
        while sandboxed && !banner.hasPrefix("uring-http listening") && !banner.isEmpty {
            startupLog.append(banner)
            banner = child.readLine()
        }
        guard
            banner.hasPrefix("uring-http listening on http://127.0.0.1:")
                || banner.hasPrefix("uring-http listening on https://127.0.0.1:"),
            let port = banner.split(separator: ":").last.flatMap({ Int($0.prefix { $0.isNumber }) })
        else {
            kill(child.pid, SIGKILL)
            _ = child.wait()
            throw ChildFailed(description: "unexpected banner: \(banner)")
        }
        self.port = port
    }

    static func write(_ path: String, _ bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ChildFailed(description: "cannot create \(path)") }
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw ChildFailed(description: "cannot write \(path)") }
            offset += n
        }
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Stops the server with SIGTERM; returns its exit status.
    func stop() -> Int32 {
        kill(child.pid, SIGTERM)
        let status = child.wait()
        root.cleanup()
        return status
    }

    /// Sends `request` on a new connection and returns everything until the server closes it.
    func raw(_ request: [UInt8]) async throws -> [UInt8] {
        try await rawHTTPExchange(port: port, request)
    }
}

/// Sends `request` to 127.0.0.1:`port` on a new connection and returns everything until the
/// server closes it (or `timeout` passes without a byte).
func rawHTTPExchange(port: Int, _ request: [UInt8], timeout: Duration = .seconds(10)) async throws -> [UInt8] {
    let connection = try await TCPConnection.connect(to: SocketAddress(host: "127.0.0.1", port: port))
    defer { Task { try? await connection.close() } }
    try await connection.write(contentsOf: request)
    var response: [UInt8] = []
    while true {
        guard let part = try? await connection.receive(upTo: 65536, timeout: timeout), !part.isEmpty else {
            break
        }
        response += part
    }
    return response
}

func shell(_ command: String) throws -> (Int32, String) {
    try runChild("/bin/sh", ["-c", command])
}

let curlAvailable = access("/usr/bin/curl", X_OK) == 0
let pythonAvailable = (try? shell("command -v python3 >/dev/null"))?.0 == 0

extension Array where Element == UInt8 {
    var text: String { String(decoding: self, as: UTF8.self) }
}

extension IntegrationTests {
    @Suite("uring-http")
    struct HTTPServerProcessTests {
        /// Also run under a seccomp filter that denies io_uring: the server falls back to the
        /// epoll driver and serves the same.
        @Test(.enabled(if: curlAvailable, "curl is not installed"), arguments: sandboxModes)
        func curlKeepAliveHeadRangeAndConditional(sandboxed: Bool) throws {
            let server = try HTTPServerProcess(sandboxed: sandboxed)
            defer { #expect(server.stop() == 0) }
            if sandboxed {
                #expect(server.startupLog.contains { $0.contains("backend=epoll") }, "\(server.startupLog)")
            }
            // Keep-alive: curl reuses its connection for the second and third URL.
            let (rc, verbose) = try shell(
                "curl -sv -o /dev/null -o /dev/null -o /dev/null \(server.url)/ \(server.url)/4k.bin \(server.url)/sub/ 2>&1"
            )
            #expect(rc == 0)
            #expect(Array(verbose.utf8).ranges(of: Array("Re-using existing connection".utf8)).count == 2, "\(verbose)")
            #expect(try shell("curl -s \(server.url)/sub/").1 == "sub home\n")
            #expect(try shell("curl -s \(server.url)/inside.html").1 == "<h1>home</h1>\n")
            // HEAD: the headers of a GET, no body.
            let head = try shell("curl -sI \(server.url)/4k.bin").1
            #expect(head.hasPrefix("HTTP/1.1 200 OK"))
            #expect(head.contains("Content-Length: 4096"))
            #expect(head.contains("Accept-Ranges: bytes"))
            // A range.
            let range = try shell("curl -s -r 100-199 -D - -o /dev/null \(server.url)/4k.bin").1
            #expect(range.hasPrefix("HTTP/1.1 206"))
            #expect(range.contains("Content-Range: bytes 100-199/4096"))
            #expect(try shell("curl -s -r 100-199 \(server.url)/4k.bin | wc -c").1.trimmingCharacters() == "100")
            #expect(try shell("curl -s -o /dev/null -w '%{http_code}' -r 5000- \(server.url)/4k.bin").1 == "416")
            // 304 on a second request with the ETag, and with the date.
            let etag = try shell("curl -sI \(server.url)/4k.bin | grep -i '^etag:' | cut -d' ' -f2 | tr -d '\\r'").1
                .trimmingCharacters()
            #expect(etag.hasPrefix("\""))
            #expect(
                try shell("curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: \(etag)' \(server.url)/4k.bin").1
                    == "304")
            #expect(
                try shell("curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: \"other\"' \(server.url)/4k.bin").1
                    == "200")
            let modified = try shell(
                "curl -sI \(server.url)/4k.bin | grep -i '^last-modified:' | cut -d' ' -f2- | tr -d '\\r'"
            ).1
                .trimmingCharacters()
            #expect(
                try shell(
                    "curl -s -o /dev/null -w '%{http_code}' -H 'If-Modified-Since: \(modified)' \(server.url)/4k.bin"
                ).1 == "304")
            // Content types and errors.
            #expect(
                try shell("curl -s -o /dev/null -w '%{content_type}' \(server.url)/").1 == "text/html; charset=utf-8")
            #expect(try shell("curl -s -o /dev/null -w '%{http_code}' \(server.url)/missing").1 == "404")
            #expect(try shell("curl -s -o /dev/null -w '%{http_code}' -X POST \(server.url)/").1 == "405")
            #expect(
                try shell("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' \(server.url)/sub").1
                    == "301 \(server.url)/sub/")
        }

        @Test(.enabled(if: curlAvailable, "curl is not installed"))
        func aLargeFileDownloadsWhole() throws {
            let server = try HTTPServerProcess()
            defer { #expect(server.stop() == 0) }
            let served = try shell("curl -s \(server.url)/big.bin | sha256sum").1
            let onDisk = try shell("sha256sum < \(server.root.path)/big.bin").1
            #expect(served.count > 64 && served == onDisk)
        }

        @Test(.enabled(if: pythonAvailable, "python3 is not installed"))
        func aThousandPipelinedRequestsWithPythonsHTTPClient() throws {
            let server = try HTTPServerProcess()
            defer { #expect(server.stop() == 0) }
            let script = """
                import http.client, socket, sys
                port = int(sys.argv[1])
                paths = ["/", "/4k.bin", "/sub/", "/missing", "/inside.html"]
                expected = {"/": (200, 14), "/4k.bin": (200, 4096), "/sub/": (200, 9), "/missing": (404, None), "/inside.html": (200, 14)}
                sock = socket.create_connection(("127.0.0.1", port))
                # One buffered reader for the whole connection: http.client would otherwise make a
                # new one per response and lose what it read ahead.
                shared = sock.makefile("rb")
                class Reader:
                    def __getattr__(self, name): return getattr(shared, name)
                    def close(self): pass
                class Connection:
                    def makefile(self, *args, **kwargs): return Reader()
                order = [paths[i % len(paths)] for i in range(1000)]
                sock.sendall(b"".join(b"GET %s HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n" % p.encode() for p in order))
                for i, p in enumerate(order):
                    r = http.client.HTTPResponse(Connection(), method="GET")
                    r.begin()
                    body = r.read()
                    status, length = expected[p]
                    if r.status != status or (length is not None and len(body) != length):
                        print("mismatch at", i, p, r.status, len(body)); sys.exit(1)
                    if r.will_close:
                        print("closed early at", i); sys.exit(1)
                print("ok", len(order))
                """
            try HTTPServerProcess.write(server.root.path + "/pipeline.py", Array(script.utf8))
            let (rc, output) = try shell("python3 \(server.root.path)/pipeline.py \(server.port) 2>&1")
            #expect(rc == 0 && output == "ok 1000\n", "\(output)")
        }

        @Test(arguments: sandboxModes)
        func traversalNeverLeavesTheRoot(sandboxed: Bool) async throws {
            let server = try HTTPServerProcess(sandboxed: sandboxed)
            defer { #expect(server.stop() == 0) }
            for target in [
                "/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/a/..%2f..%2f", "/escape", "/..", "//etc/passwd",
                "/%2Fetc%2Fpasswd", "/sub/../../etc/passwd", "/a%00.html",
            ] {
                let response = try await server.raw(
                    Array("GET \(target) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
                let status = response.text.prefix(12)
                #expect(
                    status == "HTTP/1.1 400" || status == "HTTP/1.1 403" || status == "HTTP/1.1 404",
                    "\(target): \(status)")
                #expect(!response.text.contains("root:"), "\(target) leaked a file outside the root")
            }
        }

        @Test func malformedRequestsGetAnErrorAndOthersAreStillServed() async throws {
            let server = try HTTPServerProcess()
            defer { #expect(server.stop() == 0) }
            let bad: [[UInt8]] = [
                Array("garbage\r\n\r\n".utf8),
                Array("GET / HTTP/1.1\r\nHost: t\r\nX: ".utf8) + [UInt8](repeating: 97, count: 20_000)
                    + Array("\r\n\r\n".utf8),
                Array("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 12abc\r\n\r\n".utf8),
                Array("GET / HTTP/1.1\r\nHost: t\u{0}\r\n\r\n".utf8),
                Array("GET /\u{0} HTTP/1.1\r\nHost: t\r\n\r\n".utf8),
                Array("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n".utf8),
                Array("GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".utf8),
                [UInt8](repeating: 0xFF, count: 5000),
            ]
            for request in bad {
                let response = try await server.raw(request)
                // A 4xx/5xx (the server reads what the client still sends before closing, so the
                // answer is not lost to a reset), never a crash.
                #expect(
                    response.text.hasPrefix("HTTP/1.1 4") || response.text.hasPrefix("HTTP/1.1 5"),
                    "\(response.text.prefix(40))")
                #expect(response.text.contains("Connection: close"))
            }
            // Pipelined good requests, then garbage: every good response arrives whole, then the 400
            // (whatever the fill of the response buffer when the garbage is met).
            let one = Array("GET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n".utf8)
            for count in stride(from: 230, through: 290, by: 4) {
                let request = Array(repeating: one, count: count).flatMap { $0 } + Array("garbage\r\n\r\n".utf8)
                let response = try await server.raw(request).text
                let answered = Array(response.utf8).ranges(of: Array("HTTP/1.1 200 OK".utf8)).count
                let bodies = Array(response.utf8).ranges(of: Array("\r\n\r\nsub home\n".utf8)).count
                #expect(
                    answered == count && bodies == count, "\(count) pipelined: \(answered) answers, \(bodies) bodies")
                #expect(response.hasSuffix("400 Bad Request\n"))
            }
            let good = try await server.raw(Array("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
            #expect(good.text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(good.text.hasSuffix("<h1>home</h1>\n"))
        }

        @Test func aSilentClientIsDisconnectedAfterTheHeaderTimeout() async throws {
            let server = try HTTPServerProcess(extra: ["--header-timeout", "1"])
            defer { #expect(server.stop() == 0) }
            let connection = try await TCPConnection.connect(to: SocketAddress(host: "127.0.0.1", port: server.port))
            try await connection.write(contentsOf: Array("GET / HTTP/1.1\r\nHo".utf8))
            let started = ContinuousClock.now
            // The server closes; a generous bound, since only "it does close" matters here.
            let rest = try? await connection.receive(upTo: 100, timeout: .seconds(20))
            #expect(rest == nil || rest == [])
            #expect(ContinuousClock.now - started < .seconds(15))
            try await connection.close()
        }

        @Test func anIdleKeepAliveConnectionIsClosedAfterTheIdleTimeout() async throws {
            let server = try HTTPServerProcess(extra: ["--idle-timeout", "1"])
            defer { #expect(server.stop() == 0) }
            let connection = try await TCPConnection.connect(to: SocketAddress(host: "127.0.0.1", port: server.port))
            try await connection.write(contentsOf: Array("GET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            var response: [UInt8] = []
            while !response.text.hasSuffix("sub home\n") {
                let part = try await connection.receive(upTo: 4096, timeout: .seconds(10))
                try #require(!part.isEmpty)
                response += part
            }
            // Then silence: the server closes the connection after about a second.
            let rest = try? await connection.receive(upTo: 100, timeout: .seconds(20))
            #expect(rest == nil || rest == [])
            try await connection.close()
        }

        /// A client that asks for a large file and stops reading: once a send has waited the
        /// idle timeout, the server cuts the connection off (its watchdog), so the client gets
        /// the end of the stream long before the whole file.
        @Test func aClientThatStopsReadingIsCutOffAfterTheIdleTimeout() async throws {
            let server = try HTTPServerProcess(extra: ["--idle-timeout", "1"])
            defer { #expect(server.stop() == 0) }
            let connection = try await TCPConnection.connect(to: SocketAddress(host: "127.0.0.1", port: server.port))
            try await connection.write(contentsOf: Array("GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            // Not reading while the server's send waits for room: well past the timeout.
            try await Task.sleep(for: .seconds(3))
            let started = ContinuousClock.now
            var received = 0
            var ended = false
            while ContinuousClock.now - started < .seconds(20) {
                guard let part = try? await connection.receive(upTo: 1 << 20, timeout: .seconds(20)), !part.isEmpty
                else {
                    ended = true  // the end of the stream, or a reset
                    break
                }
                received += part.count
            }
            #expect(ended, "the server kept the connection")
            #expect(received < server.big.count, "\(received) bytes of \(server.big.count) arrived before the end")
            try await connection.close()
        }

        @Test func connectionsBeyondTheLimitGetA503() async throws {
            let server = try HTTPServerProcess(extra: ["--max-connections", "2"])
            defer { #expect(server.stop() == 0) }
            let address = try SocketAddress(host: "127.0.0.1", port: server.port)
            let first = try await TCPConnection.connect(to: address)
            let second = try await TCPConnection.connect(to: address)
            // Both are accepted and held (a request each proves the server has them).
            for connection in [first, second] {
                try await connection.write(contentsOf: Array("GET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
                var response: [UInt8] = []
                while !response.text.hasSuffix("sub home\n") {
                    let part = try await connection.receive(upTo: 4096, timeout: .seconds(10))
                    try #require(!part.isEmpty)
                    response += part
                }
            }
            let third = try await server.raw(Array("GET / HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            #expect(third.text.hasPrefix("HTTP/1.1 503"))
            try await first.close()
            try await second.close()
            // Once they are gone, new connections are served again.
            #expect(
                await eventually {
                    (try? await server.raw(Array("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8)))?.text
                        .hasPrefix("HTTP/1.1 200") == true
                })
        }

        @Test func sigtermLetsARunningDownloadFinishThenExitsZero() async throws {
            let server = try HTTPServerProcess()
            let connection = try await TCPConnection.connect(to: SocketAddress(host: "127.0.0.1", port: server.port))
            try await connection.write(contentsOf: Array("GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            var received: [UInt8] = []
            while received.count < 1 << 20 {
                let part = try await connection.receive(upTo: 65536, timeout: .seconds(10))
                try #require(!part.isEmpty)
                received += part
            }
            kill(server.child.pid, SIGTERM)  // mid-download: the response goes on to its end, then the server closes
            while true {
                guard let part = try? await connection.receive(upTo: 1 << 20, timeout: .seconds(20)), !part.isEmpty
                else { break }
                received += part
            }
            let separator = try #require(received.firstRange(of: Array("\r\n\r\n".utf8)))
            let head = Array(received[..<separator.lowerBound]).text
            #expect(head.hasPrefix("HTTP/1.1 200 OK"))
            let body = Array(received[separator.upperBound...])
            #expect(body.count == server.big.count)
            let same =
                body.count == server.big.count
                && body.withUnsafeBytes { a in
                    server.big.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 }
                }
            #expect(same, "the body differs from the file")
            try await connection.close()
            #expect(server.child.wait() == 0)
            server.root.cleanup()
        }
    }
}

extension String {
    func trimmingCharacters() -> String {
        String(
            String(drop { $0 == " " || $0 == "\n" }.reversed().drop { $0 == " " || $0 == "\n" || $0 == "\r" })
                .reversed())
    }
}
