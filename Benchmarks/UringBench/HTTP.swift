import Glibc
import HTTPTypes
import SystemPackage
import Uring
import UringHTTP
import UringTLS

/// What answers `uring-bench http`'s requests.
enum HTTPBenchMode: String {
    /// `HTTPServer(configuration: .init(hello: true))`: "Hello, World!" written by the server itself.
    case hello
    /// The same response from a handler (`run(on:handler:)`): the handler API's cost.
    case handler
    /// A 4 KiB file from `HTTPServer(configuration: .init(root:))` (its FileHandler).
    case files
    /// The same file from a handler that hands the request to a `FileHandler`.
    case handlerFiles = "handler-files"
}

/// `uring-bench http`: `HTTPServer` on one ring and keep-alive clients on another, in one process
/// over loopback TCP. Each of `connections` clients sends a GET and reads the whole response (its
/// length is learned from the first one), then repeats: a request is one round trip. Counts every
/// malloc in the process during the window, so `mallocs_per_request` covers the server and the
/// clients. `--mode` says what answers (see ``HTTPBenchMode``). With `--tls` (`options.tls`),
/// HTTPS over TLS 1.3 with a self-signed P-256 certificate made at start; the handshakes happen
/// before the window.
func runHTTP(connections: Int, options: Options) async throws -> Measurement {
    let serverRing = try RingExecutor(entries: 1024, name: "bench-http-srv")
    defer { serverRing.shutdown() }
    let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"), backlog: 4096)
    let address = try listener.localAddress
    let mode = options.httpMode
    // A 4 KiB file for the file modes, in a directory of its own.
    var template = Array("/tmp/uring-bench-http-XXXXXX".utf8CString)
    let root = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    defer {
        unlink(root + "/4k.bin")
        rmdir(root)
    }
    let fd = open(root + "/4k.bin", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var bytes = [UInt8](repeating: 0, count: 4096)
    for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 131 &+ 7) }
    bytes[4095] = UInt8(ascii: "!")  // the clients' check of the last byte
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    let server = HTTPServer(
        configuration: mode == .hello ? .init(hello: true) : .init(root: FilePath(root)))
    let textPlain: HTTPFields = [.contentType: "text/plain"]
    // Built once, as uring-api does: an `HTTPResponse` made per request is a `malloc`
    // (swift-http-types boxes its pseudo-header fields).
    let ok = HTTPResponse(status: .ok, headerFields: textPlain)
    let files = mode == .handlerFiles ? try await FileHandler(root: FilePath(root)) : nil
    let handler: HTTPServer.Handler = { request, _, responder in
        if let files {
            try await files.handle(request, responder: responder)
        } else {
            try await responder.respond(ok, body: "Hello, World!")
        }
    }
    func serve(_ listener: TCPListener) async throws {
        switch mode {
        case .hello, .files: try await server.run(on: listener)
        case .handler, .handlerFiles: try await server.run(on: listener, handler: handler)
        }
    }
    func serve(_ listener: TLSListener) async throws {
        switch mode {
        case .hello, .files: try await server.run(on: listener)
        case .handler, .handlerFiles: try await server.run(on: listener, handler: handler)
        }
    }
    defer { if let files { Task { try? await files.close() } } }
    let path = mode == .files || mode == .handlerFiles ? "/4k.bin" : "/plaintext"
    guard options.tls else {
        let serverTask = Task(executorPreference: serverRing) { try await serve(listener) }
        var clients: [TCPConnection] = []
        for _ in 0..<connections { clients.append(try await TCPConnection.connect(to: address)) }
        let measurement = try await loadHTTP(clients, path: path, connections: connections, options: options)
        for connection in clients { try? await connection.close() }
        server.beginShutdown()
        _ = try? await serverTask.value
        return measurement
    }
    let identity = try TLSConfiguration.selfSignedIdentity(names: ["localhost"])
    let secure = try TLSListener(
        wrapping: listener,
        configuration: .server(certificateChain: identity.certificate, privateKey: identity.privateKey))
    let serverTask = Task(executorPreference: serverRing) { try await serve(secure) }
    let client = TLSConfiguration.client(trustRoots: .certificates(identity.certificate))
    var clients: [TLSConnection] = []
    for _ in 0..<connections {
        clients.append(try await TLSConnection.connect(to: address, serverName: "localhost", configuration: client))
    }
    var measurement = try await loadHTTP(clients, path: path, connections: connections, options: options)
    measurement.fields.append(("tls", "TLSv1.3"))
    for connection in clients { try? await connection.close() }
    server.beginShutdown()
    _ = try? await serverTask.value
    return measurement
}

/// The keep-alive clients' loops on `clients`, measured.
private func loadHTTP<Connection: BenchConnection>(
    _ clients: [Connection], path: String, connections: Int, options: Options
) async throws -> Measurement {
    let request = Array("GET \(path) HTTP/1.1\r\nHost: bench\r\n\r\n".utf8)
    let requestBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: request.count, alignment: 16)
    requestBuffer.copyBytes(from: request)
    defer { requestBuffer.deallocate() }
    // The response's length (constant, the Date being fixed-width).
    let probe = try await exchangeOnce(clients[0], UnsafeRawBufferPointer(requestBuffer))
    let phase = Phase()
    let controller = Controller(phase: phase, warmup: options.warmup, seconds: options.seconds)
    nonisolated(unsafe) let send = UnsafeRawBufferPointer(requestBuffer)
    let connectionsCopy = clients
    let (requests, histogram, errors) = try await runClients(count: connectionsCopy.count, controller: controller) {
        index in
        let connection = connectionsCopy[index]
        let receive = UnsafeMutableRawBufferPointer.allocate(byteCount: probe, alignment: 16)
        defer { receive.deallocate() }
        // "HTTP/1.1 200" and the body, checked without allocating.
        return await requestLoop(
            phase: phase, connection: connection, request: send, response: receive, responseSize: probe
        ) { $0[9] == UInt8(ascii: "2") && $0[probe - 1] == UInt8(ascii: "!") }
    }
    let (elapsed, mallocs) = controller.join()
    return Measurement(
        scenario: "http", engine: "swift-uring",
        fields: [("connections", "\(connections)"), ("errors", "\(errors)"), ("mode", options.httpMode.rawValue)],
        concurrency: connections, block: nil, seconds: elapsed, ops: requests, histogram: histogram, mallocs: mallocs)
}

/// One request and its whole response (head and body by `Content-Length`); returns its length.
private func exchangeOnce<Connection: BenchConnection>(_ connection: Connection, _ request: UnsafeRawBufferPointer)
    async throws -> Int
{
    try await connection.benchWrite(request, zeroCopy: .never)
    var response: [UInt8] = []
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    defer { chunk.deallocate() }
    while true {
        let count = try await connection.benchRead(into: chunk)
        if count == 0 { throw IOError(.systemCall, errno: .connectionReset, operation: .receive) }
        response += UnsafeRawBufferPointer(rebasing: chunk[..<count])
        let text = String(decoding: response, as: UTF8.self)
        if let end = text.utf8.firstRange(of: Array("\r\n\r\n".utf8)) {
            let head = text[..<end.lowerBound].lowercased()
            guard let field = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
                let length = Int(field.dropFirst("content-length:".count).trimmingCharacters())
            else { throw IOError(.invalidArgument, operation: .receive) }
            let total = text.utf8.distance(from: text.utf8.startIndex, to: end.upperBound) + length
            if response.count >= total { return total }
        }
    }
}

/// `scenario=http connections=… seconds=… requests=… requests_per_sec=… p50_us=… p99_us=… mallocs_per_request=… errors=…`
func httpLine(_ m: Measurement) -> String {
    let tls = m.fields.first { $0.0 == "tls" }.map { ["tls=\($0.1)"] } ?? []
    let mode = m.fields.first { $0.0 == "mode" }?.1 ?? "hello"
    return requestsLine(["scenario=http", "mode=\(mode)"] + tls + ["connections=\(m.concurrency)"], m)
}
