import Glibc
import Uring

// `uring-bench echo --target HOST:PORT` and `uring-bench http --target URL`: the load generator
// aimed at any server. Its connections are tasks on this process's ring; every byte that comes
// back is checked.

/// Where the load goes, from `--target`.
struct Target {
    var host: String
    var port: Int
    /// http: the request target (path and query).
    var path = "/"

    /// `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
    static func parseEndpoint(_ text: String) -> Target? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : Target(host: host, port: port)
    }

    /// `http://HOST[:PORT][/PATH]`.
    static func parseURL(_ text: String) -> Target? {
        guard text.hasPrefix("http://") else { return nil }
        let rest = text.dropFirst("http://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = String(rest[..<slash])
        let path = slash == rest.endIndex ? "/" : String(rest[slash...])
        if authority.contains("@") { return nil }
        if var target = parseEndpoint(authority) {
            target.path = path
            return target
        }
        guard !authority.isEmpty, !authority.contains(":") || authority.hasPrefix("[") else { return nil }
        var host = authority
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return Target(host: host, port: 80, path: path)
    }

    /// What the Host field says.
    var authority: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? name : "\(name):\(port)"
    }
}

/// The load generator's result beyond a `Measurement`.
struct LoadResult {
    var measurement: Measurement
    /// Exchanges completed in all phases (warm-up too): what the server must have answered.
    var totalRequests = 0
    var verifyErrors = 0
    var connectionErrors = 0
    /// The server's CPU time per measured request (`--server-pid`), microseconds.
    var serverMicrosecondsPerRequest: Double?
    /// echo: the bytes the server sent on the connections, as the kernel counted them (TCP_INFO),
    /// and the bytes the completed exchanges account for; they agree unless bytes were lost or
    /// added.
    var serverSentBytes: UInt64?
    var expectedBytes: UInt64?
}

/// The bytes a TCP socket has received, as the kernel counts them (`tcpi_bytes_received` of
/// Linux's `struct tcp_info`, at offset 128 since Linux 4.1); nil where it is not reported.
func tcpBytesReceived(_ descriptor: Int32) -> UInt64? {
    var info = [UInt8](repeating: 0, count: 512)
    var length = socklen_t(info.count)
    // IPPROTO_TCP = 6, TCP_INFO = 11.
    guard getsockopt(descriptor, 6, 11, &info, &length) == 0, length >= 136 else { return nil }
    return info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 128, as: UInt64.self) }
}

/// Opens `count` connections to `target`, failing with the address in the message.
private func connectAll(_ target: Target, count: Int) async throws -> [TCPConnection] {
    var connections: [TCPConnection] = []
    for _ in 0..<count {
        do {
            let connection = try await TCPConnection.connect(
                host: target.host, port: target.port, timeout: .seconds(10))
            try connection.setNoDelay()
            connections.append(connection)
        } catch {
            for connection in connections { try? await connection.close() }
            abortRun("cannot connect to \(target.host):\(target.port): \(error)")
        }
    }
    return connections
}

/// The ring the load generator's connections run on: a thread of its own, which spins
/// `--spin-us` µs before it sleeps (busy-polling trades CPU for a load generator that answers a
/// completion at once; the C harness's echo-load has `--spin` for the same reason). By default
/// 50 µs on a machine with two CPUs or more (a load generator gets a core of its own), none on one
/// CPU (spinning there would take the server's time).
private func loadRing(_ options: Options) throws -> RingExecutor {
    try RingExecutor(
        entries: 4096, name: "uring-bench-load", spinBeforeSleep: .microseconds(spinMicroseconds(options)))
}

/// `--spin-us`, or 50 on a machine with two CPUs or more, else 0.
func spinMicroseconds(_ options: Options) -> Int {
    options.spinMicroseconds ?? (sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2 ? 50 : 0)
}

/// Per connection: requests completed in every phase, measured ones, their latencies, errors.
struct ClientTally: Sendable {
    var total = 0
    var measured = 0
    var histogram = Histogram()
    var verifyErrors = 0
    var connectionErrors = 0
    /// Why the connection failed (the operation and errno), when it did.
    var failure: String?
}

/// Sums the clients' tallies into a result; says why the first failed connection failed.
func collect(
    _ tallies: [ClientTally], scenario: String, fields: [(String, String)], connections: Int, controller: Controller
) -> LoadResult {
    var total = ClientTally()
    for tally in tallies {
        total.total += tally.total
        total.measured += tally.measured
        total.histogram.merge(tally.histogram)
        total.verifyErrors += tally.verifyErrors
        total.connectionErrors += tally.connectionErrors
        if total.failure == nil { total.failure = tally.failure }
    }
    if let failure = total.failure {
        var stderr = StandardError()
        print("uring-bench: \(total.connectionErrors) connection(s) failed; the first: \(failure)", to: &stderr)
    }
    let (elapsed, mallocs) = controller.join()
    var measurement = Measurement(
        scenario: scenario, engine: "target",
        fields: fields + [("errors", "\(total.verifyErrors + total.connectionErrors)")],
        concurrency: connections, block: nil, seconds: elapsed, ops: total.measured, histogram: total.histogram,
        mallocs: mallocs)
    measurement.cpuSeconds = controller.cpuSeconds
    return LoadResult(
        measurement: measurement, totalRequests: total.total, verifyErrors: total.verifyErrors,
        connectionErrors: total.connectionErrors,
        serverMicrosecondsPerRequest: controller.watchedCPUSeconds.map {
            $0 * 1e6 / Double(max(total.measured, 1))
        })
}

/// `uring-bench echo --target`: `connections` connections each send `pipeline` messages of `size`
/// bytes, wait for all of their echo, compare it byte for byte with what was sent, and repeat.
/// Every connection and every batch carries a different pattern (a window into the connection's
/// random bytes that moves by one byte per message), so a reordered, truncated, duplicated or
/// crossed echo is a verify error. A message's latency is from its batch's send to its last byte. The
/// connections are driven by `--engine` (``LoadEngine``); at the end, the bytes the server sent on
/// them, as the kernel counted them, must equal what the completed exchanges account for.
func runEchoTarget(_ target: Target, connections: Int, size: Int, pipeline: Int, options: Options) async throws
    -> LoadResult
{
    let clients = try await connectAll(target, count: connections)
    defer { for connection in clients { Task { try? await connection.close() } } }
    let phase = Phase()
    let controller = Controller(phase: phase, warmup: options.warmup, seconds: options.seconds)
    controller.watchedPID = options.serverPID
    let spin = spinMicroseconds(options) > 0
    var engine = options.loadEngine ?? (runningBackend == .epoll ? .epoll : .uring)
    let tallies: [ClientTally]
    switch engine {
    case .uring:
        if let done = runEchoTargetUring(
            connections: clients, size: size, pipeline: pipeline, spin: spin, phase: phase, controller: controller)
        {
            tallies = done
        } else if options.loadEngine == .uring {
            abortRun("--engine uring: io_uring cannot be set up here (denied, or a kernel before 6.0)")
        } else {
            engine = .epoll  // io_uring is denied here
            tallies = runEchoTargetEpoll(
                connections: clients, size: size, pipeline: pipeline, spin: spin, phase: phase, controller: controller)
        }
    case .epoll:
        tallies = runEchoTargetEpoll(
            connections: clients, size: size, pipeline: pipeline, spin: spin, phase: phase, controller: controller)
    case .ring:
        tallies = try await ringEchoLoad(
            clients, size: size, pipeline: pipeline, phase: phase, controller: controller, options)
    }
    var result = collect(
        tallies, scenario: "echo",
        fields: [
            ("target", "\(target.host):\(target.port)"), ("size", "\(size)"), ("pipeline", "\(pipeline)"),
            ("engine", engine.rawValue),
        ],
        connections: connections, controller: controller)
    // What the server sent, by the kernel's count, against what the exchanges account for.
    let received = clients.map { tcpBytesReceived($0.descriptor.rawValue) }
    if !received.contains(nil) {
        result.serverSentBytes = received.reduce(0) { $0 + $1! }
        result.expectedBytes = UInt64(result.totalRequests * size)
        if result.serverSentBytes != result.expectedBytes, result.connectionErrors == 0 {
            result.verifyErrors += 1
            result.measurement.fields = result.measurement.fields.map {
                $0.0 == "errors" ? ("errors", "\(result.verifyErrors + result.connectionErrors)") : $0
            }
        }
    }
    return result
}

/// The echo load as tasks on a ring of its own (`--engine ring`): a task per connection writes its
/// batch and reads the echo through the connection's multishot receive.
private func ringEchoLoad(
    _ clients: [TCPConnection], size: Int, pipeline: Int, phase: Phase, controller: Controller, _ options: Options
) async throws -> [ClientTally] {
    let ring = try loadRing(options)
    defer { ring.shutdown() }
    let batch = size * pipeline
    return try await withThrowingTaskGroup(of: ClientTally.self) { group in
        for (index, connection) in clients.enumerated() {
            group.addTask(executorPreference: ring) {
                let pattern = UnsafeMutableRawBufferPointer.allocate(byteCount: batch + 256, alignment: 16)
                defer { pattern.deallocate() }
                fillPattern(pattern.baseAddress!, count: pattern.count, seed: index)
                var chunks = connection.chunks.makeAsyncIterator()
                var mismatched = false
                var tally = ClientTally()
                var sequence = 0
                while true {
                    let current = phase.current
                    if current == Phase.stop { break }
                    let send = UnsafeRawBufferPointer(
                        rebasing: pattern[(sequence & 255)..<((sequence & 255) + batch)])
                    sequence += pipeline
                    let started = nowNanoseconds()
                    // The echo arrives through the connection's multishot receive (no receive
                    // submitted per message); each chunk is compared where it lands in the batch.
                    do {
                        try await connection.write(send)
                        var got = 0
                        var message = 0
                        while got < batch {
                            guard let chunk = try await chunks.next() else {
                                throw IOError(.unexpectedEndOfFile, operation: .receive)
                            }
                            let fits = got + chunk.count <= batch
                            let same = chunk.withUnsafeBytes { bytes in
                                fits && memcmp(bytes.baseAddress!, send.baseAddress! + got, bytes.count) == 0
                            }
                            if !same { mismatched = true }
                            got += chunk.count
                            let now = nowNanoseconds()
                            while message < pipeline, got >= (message + 1) * size {
                                if current == Phase.measure { tally.histogram.record(now - started) }
                                message += 1
                            }
                        }
                    } catch {
                        tally.connectionErrors += 1
                        tally.failure = "\(error)"
                        break
                    }
                    if mismatched {
                        tally.verifyErrors += 1
                        mismatched = false
                    }
                    tally.total += pipeline
                    if current == Phase.measure { tally.measured += pipeline }
                }
                return tally
            }
        }
        controller.start()
        var all: [ClientTally] = []
        for try await tally in group { all.append(tally) }
        return all
    }
}

/// `uring-bench http --target`: `connections` keep-alive connections each send `pipeline` GET
/// requests for the target's path in one write, read the responses, and repeat. The first
/// response (on a connection of its own) sets the body every later one must carry byte for byte,
/// with the same status; `Content-Length` and chunked bodies are read. A response that differs, or
/// a connection the server closes, is an error.
func runHTTPTarget(_ target: Target, connections: Int, pipeline: Int, options: Options) async throws -> LoadResult {
    let request = Array(
        "GET \(target.path) HTTP/1.1\r\nHost: \(target.authority)\r\nUser-Agent: uring-bench\r\n\r\n".utf8)
    let requests = UnsafeMutableRawBufferPointer.allocate(byteCount: request.count * pipeline, alignment: 16)
    defer { requests.deallocate() }
    for k in 0..<pipeline {
        UnsafeMutableRawBufferPointer(rebasing: requests[(k * request.count)...]).copyBytes(from: request)
    }
    // The probe: the body and status every response must have.
    let probeConnection = try await connectAll(target, count: 1)[0]
    var probe = ResponseReader()
    do {
        try await probeConnection.write(contentsOf: request)
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { chunk.deallocate() }
        var complete = false
        while !complete {
            let n = try await probeConnection.read(into: chunk)
            if n == 0 { abortRun("\(target.host):\(target.port) closed the connection before answering") }
            complete = try probe.feed(UnsafeRawBufferPointer(rebasing: chunk[..<n])).complete
        }
    } catch let error as ResponseReader.Failure {
        abortRun("the response to GET \(target.path) is not one the load generator can check: \(error)")
    }
    try? await probeConnection.close()
    guard (200..<400).contains(probe.status) else {
        abortRun("GET \(target.path) answered \(probe.status); aim at a URL that answers 2xx or 3xx")
    }
    let expectedStatus = probe.status
    let expectedBody = probe.body
    let clients = try await connectAll(target, count: connections)
    defer { for connection in clients { Task { try? await connection.close() } } }
    let ring = try loadRing(options)
    defer { ring.shutdown() }
    let phase = Phase()
    let controller = Controller(phase: phase, warmup: options.warmup, seconds: options.seconds)
    controller.watchedPID = options.serverPID
    nonisolated(unsafe) let send = UnsafeRawBufferPointer(requests)
    let tallies = try await withThrowingTaskGroup(of: ClientTally.self) { group in
        for connection in clients {
            group.addTask(executorPreference: ring) {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
                defer { buffer.deallocate() }
                var reader = ResponseReader(expectedBody: expectedBody)
                var tally = ClientTally()
                exchanges: while true {
                    let current = phase.current
                    if current == Phase.stop { break }
                    let started = nowNanoseconds()
                    do {
                        try await connection.write(send)
                        var answered = 0
                        var start = 0
                        var end = 0
                        while answered < pipeline {
                            if start == end {
                                start = 0
                                end = try await connection.read(into: buffer)
                                if end == 0 { throw IOError(.unexpectedEndOfFile, operation: .receive) }
                            }
                            let (consumed, complete) = try reader.feed(
                                UnsafeRawBufferPointer(rebasing: buffer[start..<end]))
                            start += consumed
                            guard complete else { continue }
                            if reader.mismatched || reader.status != expectedStatus { tally.verifyErrors += 1 }
                            let closes = reader.closes
                            reader.reset()
                            answered += 1
                            tally.total += 1
                            if current == Phase.measure {
                                tally.measured += 1
                                tally.histogram.record(nowNanoseconds() - started)
                            }
                            if closes { throw IOError(.unexpectedEndOfFile, operation: .receive) }
                        }
                        if start != end { tally.verifyErrors += 1 }  // bytes nobody asked for
                    } catch {
                        tally.connectionErrors += 1
                        tally.failure = "\(error)"
                        break exchanges
                    }
                }
                return tally
            }
        }
        controller.start()
        var all: [ClientTally] = []
        for try await tally in group { all.append(tally) }
        return all
    }
    return collect(
        tallies, scenario: "http",
        fields: [
            ("target", "http://\(target.authority)\(target.path)"), ("pipeline", "\(pipeline)"),
            ("body_bytes", "\(expectedBody.count)"),
        ],
        connections: connections, controller: controller)
}

/// The line of a `--target` run: the contracted keys of the in-process scenario, then the load
/// generator's own (`p90_us`, `p999_us`, `verify_errors`, `connection_errors`, `total_requests`,
/// `cpu_us_per_request` of the load generator, `server_cpu_us_per_request` with `--server-pid`).
func targetLine(_ result: LoadResult) -> String {
    let m = result.measurement
    let field = { (key: String) in m.fields.first { $0.0 == key }?.1 ?? "" }
    var head = ["scenario=\(m.scenario)", "target=\(field("target"))", "connections=\(m.concurrency)"]
    if m.scenario == "echo" { head.append("size=\(field("size"))") }
    head.append("pipeline=\(field("pipeline"))")
    var parts = [requestsLine(head, m)]
    parts.append("p90_us=\(format(m.histogram.quantile(0.90) / 1000, decimals: 3))")
    parts.append("p999_us=\(format(m.histogram.quantile(0.999) / 1000, decimals: 3))")
    parts.append("verify_errors=\(result.verifyErrors)")
    parts.append("connection_errors=\(result.connectionErrors)")
    parts.append("total_requests=\(result.totalRequests)")
    if m.scenario == "http" { parts.append("body_bytes=\(field("body_bytes"))") }
    if m.scenario == "echo" { parts.append("engine=\(field("engine"))") }
    if let sent = result.serverSentBytes, let expected = result.expectedBytes {
        parts.append("server_sent_bytes=\(sent)")
        parts.append("expected_bytes=\(expected)")
    }
    parts.append("cpu_us_per_request=\(format((m.cpuSeconds ?? 0) * 1e6 / Double(max(m.ops, 1)), decimals: 3))")
    if let server = result.serverMicrosecondsPerRequest {
        parts.append("server_cpu_us_per_request=\(format(server, decimals: 3))")
    }
    return parts.joined(separator: " ")
}
