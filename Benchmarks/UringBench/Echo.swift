import Glibc
import Uring
import UringTLS

/// The benchmarks' echo server: on `ring`, one task per connection from `listener.connections`,
/// each sending every chunk of `connection.chunks` straight back. Cancel the task to stop it.
/// `live`, if given, counts the connections accepted and not yet closed; `acceptedCount`, all
/// accepted; `echoed`, the bytes sent back.
func startEchoServer(
    _ listener: TCPListener, on ring: RingExecutor, live: Gauge? = nil, acceptedCount: Gauge? = nil,
    echoed: Gauge? = nil
) -> Task<Void, Never> {
    Task(executorPreference: ring) {
        await withDiscardingTaskGroup { group in
            var accepted = listener.connections.makeAsyncIterator()
            while true {
                let connection: TCPConnection
                do throws(IOError) {
                    guard let next = try await accepted.next() else { break }
                    connection = next
                } catch  where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem {
                    try? await Uring.sleep(for: .milliseconds(10))  // out of descriptors: back off, keep serving
                    continue
                } catch {
                    break  // cancelled: the benchmark is over
                }
                live?.value.add(1, ordering: .relaxed)
                acceptedCount?.value.add(1, ordering: .relaxed)
                group.addTask(executorPreference: ring) {
                    do {
                        for try await chunk in connection.chunks {
                            try await connection.write(chunk)
                            echoed?.value.add(chunk.count, ordering: .relaxed)
                        }
                    } catch {}
                    try? await connection.close()
                    live?.value.subtract(1, ordering: .relaxed)
                }
            }
        }
    }
}

/// Runs the clients' tasks (one per index, each returning its requests, histogram and errors),
/// opens the measured window once they are all started, and sums what they return.
func runClients(
    count: Int, controller: Controller, _ client: @escaping @Sendable (Int) async throws -> (Int, Histogram, Int)
) async throws -> (requests: Int, histogram: Histogram, errors: Int) {
    try await withThrowingTaskGroup(of: (Int, Histogram, Int).self) { group in
        for index in 0..<count { group.addTask { try await client(index) } }
        controller.start()
        var requests = 0
        var histogram = Histogram()
        var errors = 0
        for try await (r, h, e) in group {
            requests += r
            histogram.merge(h)
            errors += e
        }
        return (requests, histogram, errors)
    }
}

/// The TLS echo server of `uring-bench echo --tls`: one task per connection, each reading into
/// its own buffer and writing back what it read, until the peer's close_notify.
func startTLSEchoServer(_ listener: TLSListener, on ring: RingExecutor) -> Task<Void, Never> {
    Task(executorPreference: ring) {
        await withDiscardingTaskGroup { group in
            var accepted = listener.connections.makeAsyncIterator()
            while let connection = try? await accepted.next() {
                try? connection.tcp.setNoDelay()
                group.addTask(executorPreference: ring) {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
                    defer { buffer.deallocate() }
                    while let count = try? await connection.read(into: buffer), count > 0 {
                        guard (try? await connection.write(UnsafeRawBufferPointer(rebasing: buffer[..<count]))) != nil
                        else { break }
                    }
                    try? await connection.close()
                }
            }
        }
    }
}

/// `uring-bench echo`: an echo server on one ring (multishot accept, multishot receive into the
/// ring's buffer pool, each chunk sent back from its buffer) and its clients on another, in one
/// process, over loopback TCP. Each of `connections` clients sends `size` bytes, waits for the whole echo,
/// and repeats; a request is one such round trip. With `--tls`, the same over TLS 1.3 (a
/// self-signed P-256 certificate made at start; handshakes before the window).
func runEcho(connections: Int, size: Int, options: Options) async throws -> Measurement {
    let serverRing = try RingExecutor(entries: 1024, name: "bench-echo-srv")
    defer { serverRing.shutdown() }
    let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"), backlog: 4096)
    let address = try listener.localAddress
    guard options.tls else {
        let server = startEchoServer(listener, on: serverRing)
        // Clients: plain tasks on the main ring (Uring.run); connections are made before the window.
        var clients: [TCPConnection] = []
        for _ in 0..<connections {
            let connection = try await TCPConnection.connect(to: address)
            try connection.setNoDelay()
            clients.append(connection)
        }
        let measurement = try await loadEcho(clients, size: size, options: options)
        for connection in clients { try? await connection.close() }
        server.cancel()
        await server.value
        try? await listener.close()
        return measurement
    }
    let identity = try TLSConfiguration.selfSignedIdentity(names: ["localhost"])
    let secure = try TLSListener(
        wrapping: listener,
        configuration: .server(certificateChain: identity.certificate, privateKey: identity.privateKey))
    let server = startTLSEchoServer(secure, on: serverRing)
    let configuration = TLSConfiguration.client(trustRoots: .certificates(identity.certificate))
    var clients: [TLSConnection] = []
    for _ in 0..<connections {
        let connection = try await TLSConnection.connect(
            to: address, serverName: "localhost", configuration: configuration)
        try connection.tcp.setNoDelay()
        clients.append(connection)
    }
    var measurement = try await loadEcho(clients, size: size, options: options)
    measurement.fields.append(("tls", "TLSv1.3"))
    for connection in clients { try? await connection.close() }
    server.cancel()
    try? await listener.close()
    await server.value
    return measurement
}

/// The echo clients' loops on `clients`, measured.
private func loadEcho<Connection: BenchConnection>(_ clients: [Connection], size: Int, options: Options)
    async throws -> Measurement
{
    let connections = clients.count
    let phase = Phase()
    let controller = Controller(phase: phase, warmup: options.warmup, seconds: options.seconds)
    let sendBuffers = clients.indices.map { i -> UnsafeMutableRawBufferPointer in
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        for j in 0..<size { b[j] = UInt8(truncatingIfNeeded: i &* 131 &+ j) }
        return b
    }
    let receiveBuffers = clients.indices.map { _ in
        UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    }
    defer {
        for b in sendBuffers { b.deallocate() }
        for b in receiveBuffers { b.deallocate() }
    }
    nonisolated(unsafe) let sends = sendBuffers
    nonisolated(unsafe) let receives = receiveBuffers
    let connectionsCopy = clients
    let zeroCopy = options.zeroCopy
    let (requests, histogram, errors) = try await runClients(count: connectionsCopy.count, controller: controller) {
        index in
        let connection = connectionsCopy[index]
        let send = UnsafeRawBufferPointer(sends[index])
        let receive = receives[index]
        var (requests, histogram, errors) = await requestLoop(
            phase: phase, connection: connection, request: send, response: receive, responseSize: size,
            zeroCopy: zeroCopy)
        if !receive.elementsEqual(send) { errors += 1 }
        return (requests, histogram, errors)
    }
    let (elapsed, mallocs) = controller.join()
    if errors > 0 {
        var stderr = StandardError()
        print("uring-bench: echo: \(errors) connection(s) failed or returned wrong bytes", to: &stderr)
    }
    return Measurement(
        scenario: "echo", engine: "swift-uring",
        fields: [
            ("connections", "\(connections)"), ("size", "\(size)"), ("errors", "\(errors)"),
            ("zero_copy", "\(options.zeroCopy)"),
            ("cpu_us_per_request", format(controller.cpuSeconds * 1e6 / Double(max(requests, 1)), decimals: 2)),
        ],
        concurrency: connections, block: nil, seconds: elapsed, ops: requests, histogram: histogram, mallocs: mallocs)
}

/// `scenario=echo connections=… size=… seconds=… requests=… requests_per_sec=… p50_us=… p99_us=… mallocs_per_request=…`
func echoLine(_ m: Measurement, size: Int) -> String {
    let tls = m.fields.first { $0.0 == "tls" }.map { ["tls=\($0.1)"] } ?? []
    let cpu = m.fields.first { $0.0 == "cpu_us_per_request" }.map { ["cpu_us_per_request=\($0.1)"] } ?? []
    return requestsLine(["scenario=echo"] + tls + ["connections=\(m.concurrency)", "size=\(size)"], m) + " "
        + cpu.joined()
}

/// The common tail of the request/response scenarios' lines: `seconds=… requests=…
/// requests_per_sec=… p50_us=… p99_us=… mallocs_per_request=… errors=…` after `head`.
func requestsLine(_ head: [String], _ m: Measurement) -> String {
    let errors = m.fields.first { $0.0 == "errors" }?.1 ?? "0"
    return
        (head + [
            "seconds=\(format(m.seconds, decimals: 3))",
            "requests=\(m.ops)", "requests_per_sec=\(format(m.opsPerSecond, decimals: 0))",
            "p50_us=\(format(m.histogram.quantile(0.50) / 1000, decimals: 3))",
            "p99_us=\(format(m.histogram.quantile(0.99) / 1000, decimals: 3))",
            "mallocs_per_request=" + (m.mallocsPerOp.map { format($0, decimals: 4) } ?? "unknown"),
            "errors=\(errors)",
        ]).joined(separator: " ")
}

/// `uring-bench idle`: the memory an idle connection costs the echo server. Opens `connections`
/// loopback connections to a server like the echo scenario's (one task per connection iterating
/// `connection.chunks`), exchanges one message on each so that every server task is parked on its
/// armed receive, and reports the growth of the process's resident set per connection. The buffer pool and tables are warmed first with 64
/// connections, so what is left is the per-connection cost: the task, its stream and its slot.
/// Kernel socket memory is not in it.
func runIdle(connections: Int) async throws -> String {
    let serverRing = try RingExecutor(entries: 1024, name: "bench-idle-srv")
    defer { serverRing.shutdown() }
    let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"), backlog: 4096)
    let address = try listener.localAddress
    let server = startEchoServer(listener, on: serverRing)
    let message = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 16)
    defer { message.deallocate() }
    message.initializeMemory(as: UInt8.self, repeating: 7)
    nonisolated(unsafe) let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 16)
    defer { reply.deallocate() }
    func open(_ count: Int, into clients: inout [TCPConnection]) async throws {
        for _ in 0..<count {
            let connection = try await TCPConnection.connect(to: address)
            try await connection.write(UnsafeRawBufferPointer(message))
            var got = 0
            while got < 16 {
                let n = try await connection.read(into: UnsafeMutableRawBufferPointer(rebasing: reply[got...]))
                if n == 0 { throw IOError(.unexpectedEndOfFile, operation: .receive) }
                got += n
            }
            clients.append(connection)
        }
    }
    var clients: [TCPConnection] = []
    clients.reserveCapacity(connections + 64)
    try await open(64, into: &clients)
    try await Task.sleep(for: .milliseconds(200))
    let rssBefore = residentKiB()
    try await open(connections, into: &clients)
    try await Task.sleep(for: .milliseconds(200))
    let rssAfter = residentKiB()
    for connection in clients { try? await connection.close() }
    server.cancel()
    await server.value
    try? await listener.close()
    let rssPer = Double(rssAfter - rssBefore) * 1024 / Double(connections)
    return [
        "scenario=idle", "connections=\(connections)", "rss_bytes_per_connection=\(format(rssPer, decimals: 0))",
        "rss_before_kib=\(rssBefore)",
        "rss_after_kib=\(rssAfter)",
    ].joined(separator: " ")
}

/// The process's resident set, from /proc/self/statm.
func residentKiB() -> Int { residentKiBOf("/proc/self/statm") }

/// A process's resident set, from its `statm` file.
func residentKiBOf(_ statm: String) -> Int {
    guard let file = fopen(statm, "r") else { return 0 }
    defer { fclose(file) }
    var size = 0
    var resident = 0
    guard readStatm(file, &size, &resident) else { return 0 }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
}

private func readStatm(_ file: UnsafeMutablePointer<FILE>, _ size: inout Int, _ resident: inout Int) -> Bool {
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, 256, file) != nil else { return false }
    let text = line.withUnsafeBufferPointer {
        String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self)
    }
    let fields = text.split(separator: " ")
    guard fields.count >= 2, let s = Int(fields[0]), let r = Int(fields[1]) else { return false }
    size = s
    resident = r
    return true
}
