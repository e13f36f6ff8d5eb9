import Glibc
import Testing

// `uring-bench`'s load generator (issue 18), as users run it: `uring-bench serve echo|http` in one
// process, `uring-bench echo|http --target` in another; every byte checked, and the requests the
// load generator counts agree with what the server counts.

/// `key=value` pairs of a result line.
private func pairs(_ line: some StringProtocol) -> [String: String] {
    var result: [String: String] = [:]
    for pair in line.split(separator: " ") {
        guard let equals = pair.firstIndex(of: "=") else { continue }
        result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    return result
}

/// The last line of `output` that starts with `prefix`, as pairs.
private func resultLine(_ output: String, _ prefix: String) -> [String: String] {
    pairs(output.split(separator: "\n").last { $0.hasPrefix(prefix) } ?? "")
}

private var bench: String { executableNextToTests("uring-bench") }

/// `uring-bench serve KIND --port 0`, up and listening.
private final class BenchServer {
    let child: SpawnedChild
    let port: Int

    init(_ kind: String) throws {
        child = try SpawnedChild(bench, ["serve", kind, "--port", "0"])
        let banner = pairs(child.readLine(within: 30) ?? "")
        guard banner["scenario"] == "serve", let port = banner["port"].flatMap({ Int($0) }) else {
            kill(child.pid, SIGKILL)
            _ = child.wait()
            throw ChildFailed(description: "uring-bench serve \(kind) printed no banner: \(banner)")
        }
        self.port = port
    }

    /// SIGTERM; the server's last line (what it served) and its exit status.
    func stop() -> ([String: String], Int32) {
        kill(child.pid, SIGTERM)
        let served = pairs(child.readLine(within: 30) ?? "")
        return (served, child.wait())
    }
}

/// The harness's C reference echo server (`../shared/bench/ref-echo-uring.c`, or
/// `$SWIFT_URING_SHARED_BENCH/ref-echo-uring.c`), if this checkout has it beside it.
private let referenceEchoSource: String? = {
    var candidates: [String] = []
    if let shared = getenv("SWIFT_URING_SHARED_BENCH") { candidates.append(String(cString: shared)) }
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/UringTests/LoadGeneratorTests.swift
    candidates.append(parts.joined(separator: "/") + "/../shared/bench")
    return candidates.map { $0 + "/ref-echo-uring.c" }.first { access($0, R_OK) == 0 }
}()

private let compilerAvailable = access("/usr/bin/cc", X_OK) == 0

extension IntegrationTests {
    @Suite("uring-bench load generator")
    struct LoadGenerator {
        @Test(arguments: ["uring", "epoll", "ring"])
        func echoTargetChecksEveryByteAndAgreesWithTheServersCount(engine: String) throws {
            let server = try BenchServer("echo")
            let (status, output) = try runChild(
                bench,
                [
                    "echo", "--target", "127.0.0.1:\(server.port)", "--connections", "8", "--size", "100",
                    "--pipeline", "4", "--seconds", "1", "--warmup", "0.2", "--server-pid", "\(server.child.pid)",
                    "--engine", engine,
                ])
            let (served, serverStatus) = server.stop()
            let line = resultLine(output, "scenario=echo")
            if engine == "uring" && !ioUringAvailable {
                // Asked for by name where io_uring is denied: a clear error, not a fallback.
                #expect(status == 1 && output.contains("io_uring cannot be set up"), "\(output)")
                return
            }
            #expect(status == 0, "\(output)")
            #expect(serverStatus == 0)
            #expect(line["errors"] == "0" && line["verify_errors"] == "0", "\(output)")
            #expect((Int(line["requests"] ?? "") ?? 0) > 0, "\(output)")
            let total = Int(line["total_requests"] ?? "") ?? -1
            // Every exchange the load generator completed, the server echoed, and nothing else.
            #expect(served["kind"] == "echo" && served["connections"] == "8", "\(served)")
            #expect(Int(served["bytes"] ?? "") == total * 100, "server \(served), load generator \(line)")
            #expect(line["server_sent_bytes"] == line["expected_bytes"], "\(line)")
            #expect(line["engine"] == engine, "\(line)")
            for key in ["p50_us", "p90_us", "p99_us", "p999_us", "server_cpu_us_per_request", "requests_per_sec"] {
                #expect(line[key].flatMap(Double.init) != nil, "\(key) in \(line)")
            }
        }

        /// Without `--engine`, the load generator drives its connections with io_uring where its
        /// ring runs io_uring, and with epoll where the ring runs epoll (SWIFT_URING_BACKEND=epoll,
        /// or io_uring denied: checked under the seccomp filter, where naming `--engine uring`
        /// is a clear error).
        @Test func theDefaultEngineFollowsTheDriver() throws {
            let server = try BenchServer("echo")
            defer { _ = server.stop() }
            let arguments = [
                "echo", "--target", "127.0.0.1:\(server.port)", "--connections", "4", "--size", "64",
                "--seconds", "0.3", "--warmup", "0.1",
            ]
            let (status, output) = try runChild(bench, arguments)
            let line = resultLine(output, "scenario=echo")
            #expect(status == 0 && line["errors"] == "0", "\(output)")
            #expect(line["engine"] == (line["backend"] == "io_uring" ? "uring" : "epoll"), "\(line)")
            guard seccompTestPossible else { return }
            let directory = TemporaryDirectory()
            defer { directory.cleanup() }
            let sandbox = try IoUringDeniedSandbox(in: directory.path)
            let (path, sandboxed) = sandbox.command(bench, arguments)
            let (deniedStatus, deniedOutput) = try runChild(path, sandboxed)
            let denied = resultLine(deniedOutput, "scenario=echo")
            #expect(deniedStatus == 0 && denied["errors"] == "0", "\(deniedOutput)")
            #expect(denied["engine"] == "epoll" && denied["backend"] == "epoll", "\(denied)")
            let (namedPath, named) = sandbox.command(bench, arguments + ["--engine", "uring"])
            let (namedStatus, namedOutput) = try runChild(namedPath, named)
            #expect(namedStatus == 1 && namedOutput.contains("io_uring cannot be set up"), "\(namedOutput)")
        }

        @Test func httpTargetChecksEveryResponseAndAgreesWithTheServersCount() throws {
            let server = try BenchServer("http")
            let (status, output) = try runChild(
                bench,
                [
                    "http", "--target", "http://127.0.0.1:\(server.port)/plaintext", "--connections", "4",
                    "--pipeline", "8", "--seconds", "1", "--warmup", "0.2",
                ])
            let (served, serverStatus) = server.stop()
            let line = resultLine(output, "scenario=http")
            #expect(status == 0, "\(output)")
            #expect(serverStatus == 0)
            #expect(line["errors"] == "0" && line["verify_errors"] == "0", "\(output)")
            #expect(line["body_bytes"] == "13" && line["pipeline"] == "8", "\(line)")
            // The requests the load generator had answered, and its probe.
            let total = Int(line["total_requests"] ?? "") ?? -1
            #expect(total > 0)
            #expect(Int(served["requests"] ?? "") == total + 1, "server \(served), load generator \(line)")
        }

        @Test(
            .enabled(if: referenceEchoSource != nil, "the harness's ref-echo-uring.c is not beside this checkout"),
            .enabled(if: compilerAvailable, "no C compiler"))
        func echoTargetAgainstTheCReferenceServer() throws {
            let directory = TemporaryDirectory()
            defer { directory.cleanup() }
            let binary = directory.path + "/ref-echo-uring"
            let (built, log) = try shell("cc -O2 -o \(binary) \(referenceEchoSource!) -luring 2>&1")
            try #require(built == 0, "\(log)")
            let port = try unusedPort()
            let server = try SpawnedChild(binary, ["--port", "\(port)"], includeStandardError: true)
            defer {
                kill(server.pid, SIGTERM)
                _ = server.wait()
            }
            try waitUntilAccepting(port)
            for (connections, size, pipeline, engine) in [
                (1, 64, 1, "uring"), (16, 4096, 2, "uring"), (4, 100_000, 3, "uring"), (1, 64, 1, "epoll"),
                (16, 4096, 2, "epoll"), (16, 4096, 2, "ring"),
            ] {
                let (status, output) = try runChild(
                    bench,
                    [
                        "echo", "--target", "127.0.0.1:\(port)", "--connections", "\(connections)", "--size",
                        "\(size)", "--pipeline", "\(pipeline)", "--seconds", "0.5", "--warmup", "0.1", "--engine",
                        engine,
                    ])
                let line = resultLine(output, "scenario=echo")
                #expect(status == 0, "\(output)")
                #expect(line["verify_errors"] == "0" && line["connection_errors"] == "0", "\(output)")
                // The server's count: the bytes it sent, as the kernel counted them.
                let expected = (Int(line["total_requests"] ?? "") ?? -1) * size
                #expect(Int(line["server_sent_bytes"] ?? "") == expected, "\(line)")
            }
        }

        @Test(.enabled(if: pythonAvailable, "python3 is not installed"))
        func httpTargetReadsChunkedBodiesAndCatchesOnesThatChange() throws {
            let script = """
                import http.server, sys
                class H(http.server.BaseHTTPRequestHandler):
                    protocol_version = "HTTP/1.1"
                    count = 0
                    def log_message(self, *a): pass
                    def do_GET(self):
                        H.count += 1
                        self.send_response(200)
                        if self.path == "/chunked":
                            self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
                            self.wfile.write(b"5;ext=1\\r\\nhello\\r\\n6\\r\\n world\\r\\n0\\r\\nX-Trailer: t\\r\\n\\r\\n")
                        else:
                            body = b"response %d" % (H.count if self.path == "/changing" else 0)
                            self.send_header("Content-Length", str(len(body))); self.end_headers()
                            self.wfile.write(body)
                s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
                print(s.server_address[1], flush=True)
                s.serve_forever()
                """
            let server = try SpawnedChild("/usr/bin/env", ["python3", "-c", script])
            defer {
                kill(server.pid, SIGTERM)
                _ = server.wait()
            }
            let port = try #require(server.readLine(within: 30).flatMap { Int($0) })
            func load(_ path: String) throws -> (Int32, [String: String], String) {
                let (status, output) = try runChild(
                    bench,
                    [
                        "http", "--target", "http://127.0.0.1:\(port)\(path)", "--connections", "2", "--pipeline", "2",
                        "--seconds", "0.3", "--warmup", "0",
                    ])
                return (status, resultLine(output, "scenario=http"), output)
            }
            let (chunkedStatus, chunked, chunkedOutput) = try load("/chunked")
            #expect(chunkedStatus == 0 && chunked["verify_errors"] == "0", "\(chunkedOutput)")
            #expect(chunked["body_bytes"] == "11" && (Int(chunked["total_requests"] ?? "") ?? 0) > 0, "\(chunked)")
            let (changingStatus, changing, changingOutput) = try load("/changing")
            #expect(changingStatus == 1, "\(changingOutput)")
            #expect((Int(changing["verify_errors"] ?? "") ?? 0) > 0, "\(changingOutput)")
        }

        @Test func badTargetsGetClearErrors() throws {
            let (badEndpoint, endpointOutput) = try runChild(bench, ["echo", "--target", "no-port-here"])
            #expect(badEndpoint == 64 && endpointOutput.contains("--target wants HOST:PORT"), "\(endpointOutput)")
            let (https, httpsOutput) = try runChild(bench, ["http", "--target", "https://127.0.0.1:1/"])
            #expect(https == 64 && httpsOutput.contains("https:// targets are not supported"), "\(httpsOutput)")
            let port = try unusedPort()
            let (refused, refusedOutput) = try runChild(
                bench, ["echo", "--target", "127.0.0.1:\(port)", "--seconds", "0.2"])
            #expect(refused == 1 && refusedOutput.contains("cannot connect to 127.0.0.1:\(port)"), "\(refusedOutput)")
            #expect(!refusedOutput.contains("usage:"), "\(refusedOutput)")
        }
    }
}

/// A loopback port nobody listens on (bound and released).
private func unusedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 ? getsockname(fd, $0, &length) : -1
        }
    }
    guard rc == 0 else { throw ChildFailed(description: "cannot bind a loopback port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Waits (up to 10 s) until something accepts connections on 127.0.0.1:`port`.
private func waitUntilAccepting(_ port: Int) throws {
    for _ in 0..<1000 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        close(fd)
        if connected { return }
        usleep(10_000)
    }
    throw ChildFailed(description: "nothing accepts on port \(port)")
}
