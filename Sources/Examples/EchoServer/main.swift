// uring-echo: a TCP echo server on swift-uring.
//
//   uring-echo [--host 127.0.0.1] [--port 9000] [--backlog 1024] [--api streams|calls]
//              [--threads N] [--distribute reuseport|accept]
//
// With --threads N (default 1) the server runs N rings, one thread each. `--distribute reuseport`
// (the default) binds one listener per ring with SO_REUSEPORT, so the kernel spreads the
// connections; `--distribute accept` accepts on ring 0 and hands each connection to the next
// ring in turn.
//
// Serves every connection until the peer closes it. `--api streams` (the default) accepts with
// `listener.connections` (multishot accept) and receives with `connection.chunks` (multishot
// receive into the ring's buffer pool); `--api calls` uses one `accept()` / `read(into:)` per
// connection / chunk, for comparison. SIGINT or SIGTERM stops accepting, closes the
// open connections and exits 0.
import Glibc
import Logging
import Uring

struct Options {
    var host = "127.0.0.1"
    var port = 9000
    var backlog = 1024
    var streams = true
    var threads = 1
    var reusePort = true
}

func usage(_ message: String) -> Never {
    let text =
        "uring-echo: \(message)\nusage: uring-echo [--host ADDR] [--port P] [--backlog N] [--api streams|calls] [--threads N] [--distribute reuseport|accept]\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(64)
}

func parse() -> Options {
    var options = Options()
    var args = CommandLine.arguments.dropFirst()
    while let flag = args.popFirst() {
        guard flag != "-h", flag != "--help" else {
            print(
                "usage: uring-echo [--host ADDR] [--port P] [--backlog N] [--api streams|calls] [--threads N] [--distribute reuseport|accept]"
            )
            exit(0)
        }
        guard let value = args.popFirst() else { usage("\(flag) needs a value") }
        switch flag {
        case "--host": options.host = value
        case "--port":
            guard let p = Int(value), (0...65535).contains(p) else { usage("--port wants 0...65535, not '\(value)'") }
            options.port = p
        case "--backlog":
            guard let b = Int(value), b > 0 else { usage("--backlog wants a positive number") }
            options.backlog = b
        case "--threads":
            guard let n = Int(value), n >= 1, n <= 1024 else { usage("--threads wants 1...1024") }
            options.threads = n
        case "--distribute":
            guard value == "reuseport" || value == "accept" else {
                usage("--distribute wants reuseport or accept, not '\(value)'")
            }
            options.reusePort = value == "reuseport"
        case "--api":
            guard value == "streams" || value == "calls" else { usage("--api wants streams or calls, not '\(value)'") }
            options.streams = value == "streams"
        default: usage("unknown option '\(flag)'")
        }
    }
    return options
}

/// Echoes one connection until the peer closes it (or it fails): each chunk the kernel received
/// into the ring's buffer pool is sent straight back from that buffer, then recycled.
func echoChunks(_ connection: TCPConnection) async {
    do throws(IOError) {
        for try await chunk in connection.chunks {
            try await connection.write(chunk)
        }
    } catch {
        // reset, cancelled by shutdown, …: this connection is done; the others go on
    }
    try? await connection.close()
}

/// The same with one receive call per chunk, into one 64 KiB buffer per connection.
func echoCalls(_ connection: TCPConnection) async {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    defer { buffer.deallocate() }
    while true {
        do throws(IOError) {
            let n = try await connection.read(into: buffer)
            if n == 0 { break }
            try await connection.write(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
        } catch {
            break
        }
    }
    try? await connection.close()
}

/// Lets the server hold as many connections as the hard limit allows (the soft default is often 1,024).
func raiseDescriptorLimit() {
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Accepts on `listener` until cancelled; each connection is served by a child task, on `rings`
/// in turn when given (the hand-off mode), else on the accepting ring.
func acceptLoop(_ listener: TCPListener, streams: Bool, handOffTo rings: RingGroup?) async {
    await withDiscardingTaskGroup { group in
        var connections = listener.connections.makeAsyncIterator()
        while true {
            do throws(IOError) {
                let connection: TCPConnection
                if streams {
                    guard let next = try await connections.next() else { break }
                    connection = next
                } else {
                    connection = try await listener.accept()
                }
                let serve: @Sendable @concurrent () async -> Void = {
                    streams ? await echoChunks(connection) : await echoCalls(connection)
                }
                if let rings {
                    group.addTask(executorPreference: rings.next(), operation: serve)
                } else {
                    group.addTask(operation: serve)
                }
            } catch  where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem {
                try? await Uring.sleep(for: .milliseconds(10))  // out of descriptors: back off, keep serving
            } catch  where error.errno?.rawValue == ECONNABORTED {
                continue  // the peer gave up before we accepted
            } catch {
                break  // cancelled (shutdown) or the listener failed
            }
        }
    }
}

let options = parse()
raiseDescriptorLimit()
// Diagnostics (the stall detector's reports) go to standard error; standard output is the banner.
LoggingSystem.bootstrap(StreamLogHandler.standardError)
do {
    // Subscribed before the rings start: a SIGTERM from then on is a clean shutdown.
    let shutdownSignals = Signals.stream([.interrupt, .terminate])
    try Uring.run(threads: options.threads) {
        let address = try SocketAddress(host: options.host, port: options.port)
        let rings = Uring.group!
        // One listener, or one per ring on the same port with SO_REUSEPORT.
        let first = try TCPListener.bind(
            to: address, backlog: options.backlog, reusePort: options.threads > 1 && options.reusePort)
        let bound = try first.localAddress
        var listeners = [first]
        if options.threads > 1 && options.reusePort {
            for _ in 1..<options.threads {
                listeners.append(try TCPListener.bind(to: bound, backlog: options.backlog, reusePort: true))
            }
        }
        // Which driver runs (io_uring, or epoll where io_uring is denied), on standard error.
        Logger(label: "uring-echo").info("backend=\(rings[0].backend)")
        print("uring-echo listening on \(bound)")
        fflush(nil)  // all streams: the line above must reach a pipe at once
        // Each accept loop and its connections are one task tree: cancelling its root cancels the
        // pending accept (an async cancel on the ring; closing the socket would not) and every
        // connection's pending receive.
        let streams = options.streams
        let handOff = options.threads > 1 && !options.reusePort ? rings : nil
        var servers: [Task<Void, Never>] = []
        for (index, listener) in listeners.enumerated() {
            // On the only ring, plain tasks run there anyway: no preference, which the runtime
            // would otherwise look up under the task's status lock after every await.
            let preference: RingExecutor? = rings.count == 1 ? nil : rings[index]
            servers.append(
                Task(executorPreference: preference) {
                    await acceptLoop(listener, streams: streams, handOffTo: handOff)
                })
        }
        for await signal in shutdownSignals {
            print("uring-echo: signal \(signal.rawValue) (\(signal)), shutting down")
            break
        }
        for server in servers { server.cancel() }
        for server in servers { await server.value }
        for listener in listeners { try? await listener.close() }
    }
} catch {
    let text = "uring-echo: \(error)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
exit(0)
