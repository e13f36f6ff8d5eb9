import Glibc
import Uring

/// `uring-bench echo`: an echo server on one ring and its clients on another, in one process,
/// over loopback TCP. Each of `connections` clients sends `size` bytes, waits for the whole echo,
/// and repeats; a request is one such round trip.
func runEcho(connections: Int, size: Int, options: Options) async throws -> Measurement {
    let serverRing = try RingExecutor(entries: 1024, name: "bench-echo-srv")
    defer { serverRing.shutdown() }
    let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"), backlog: 4096)
    let address = try listener.localAddress
    let server = Task(executorPreference: serverRing) {
        await withDiscardingTaskGroup { group in
            while let connection = try? await listener.accept() {
                group.addTask(executorPreference: serverRing) {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
                    defer { buffer.deallocate() }
                    while true {
                        guard let n = try? await connection.read(into: buffer), n > 0 else { break }
                        guard (try? await connection.write(UnsafeRawBufferPointer(rebasing: buffer[..<n]))) != nil else { break }
                    }
                    try? await connection.close()
                }
            }
        }
    }

    // Clients: plain tasks on the main ring (Uring.run); connections are made before the window.
    var clients: [TCPConnection] = []
    for _ in 0..<connections {
        let connection = try await TCPConnection.connect(to: address)
        try connection.setNoDelay()
        clients.append(connection)
    }
    let phase = Phase()
    let controller = Controller(phase: phase, warmup: options.warmup, seconds: options.seconds)
    let sendBuffers = clients.indices.map { i -> UnsafeMutableRawBufferPointer in
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        for j in 0..<size { b[j] = UInt8(truncatingIfNeeded: i &* 131 &+ j) }
        return b
    }
    let receiveBuffers = clients.indices.map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16) }
    defer {
        for b in sendBuffers { b.deallocate() }
        for b in receiveBuffers { b.deallocate() }
    }
    nonisolated(unsafe) let sends = sendBuffers
    nonisolated(unsafe) let receives = receiveBuffers
    let connectionsCopy = clients
    let (requests, histogram, errors) = try await withThrowingTaskGroup(of: (Int, Histogram, Int).self) { group in
        for index in connectionsCopy.indices {
            group.addTask {
                let connection = connectionsCopy[index]
                let send = UnsafeRawBufferPointer(sends[index])
                let receive = receives[index]
                var histogram = Histogram()
                var requests = 0
                var errors = 0
                while true {
                    let current = phase.current
                    if current == Phase.stop { break }
                    let started = nowNanoseconds()
                    do throws(IOError) {
                        try await connection.write(send)
                        var got = 0
                        while got < size {
                            let n = try await connection.read(into: UnsafeMutableRawBufferPointer(rebasing: receive[got...]))
                            if n == 0 { throw IOError.init(.systemCall, errno: .connectionReset, operation: .receive) }
                            got += n
                        }
                    } catch {
                        errors += 1
                        break
                    }
                    if current == Phase.measure {
                        requests += 1
                        histogram.record(nowNanoseconds() - started)
                    }
                }
                if !receive.elementsEqual(send) { errors += 1 }
                return (requests, histogram, errors)
            }
        }
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
    let (elapsed, mallocs) = controller.join()
    for connection in clients { try? await connection.close() }
    server.cancel()
    await server.value
    try? await listener.close()
    if errors > 0 {
        var stderr = StandardError()
        print("uring-bench: echo: \(errors) connection(s) failed or returned wrong bytes", to: &stderr)
    }
    return Measurement(
        scenario: "echo", engine: "swift-uring",
        fields: [("connections", "\(connections)"), ("size", "\(size)"), ("errors", "\(errors)")],
        concurrency: connections, block: nil, seconds: elapsed, ops: requests, histogram: histogram, mallocs: mallocs)
}

/// `scenario=echo connections=… size=… seconds=… requests=… requests_per_sec=… p50_us=… p99_us=… mallocs_per_request=…`
func echoLine(_ m: Measurement, size: Int) -> String {
    let errors = m.fields.first { $0.0 == "errors" }?.1 ?? "0"
    return [
        "scenario=echo", "connections=\(m.concurrency)", "size=\(size)", "seconds=\(format(m.seconds, decimals: 3))",
        "requests=\(m.ops)", "requests_per_sec=\(format(m.opsPerSecond, decimals: 0))",
        "p50_us=\(format(m.histogram.quantile(0.50) / 1000, decimals: 3))",
        "p99_us=\(format(m.histogram.quantile(0.99) / 1000, decimals: 3))",
        "mallocs_per_request=" + (m.mallocsPerOp.map { format($0, decimals: 4) } ?? "unknown"),
        "errors=\(errors)",
    ].joined(separator: " ")
}
