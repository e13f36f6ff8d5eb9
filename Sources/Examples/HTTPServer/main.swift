// uring-http: a static-file HTTP/1.1 server on swift-uring.
//
//   uring-http --root DIR [--host 127.0.0.1] [--port 8080] [--hello] [--max-connections N]
//              [--header-timeout S] [--idle-timeout S] [--backlog N] [--threads N]
//              [--tls-certificate FILE --tls-key FILE]
//
// --tls-certificate and --tls-key (PEM: the chain, leaf first, and its key) serve HTTPS instead,
// with ALPN http/1.1, TLS 1.2 and 1.3; a graceful shutdown ends each connection with a close_notify.
//
// --threads N runs N rings, each with its own listener on the same port (SO_REUSEPORT) and its
// own HTTPServer; --max-connections applies per ring.
//
// Serves DIR (GET and HEAD, keep-alive, pipelining, ranges, conditional requests), or with
// --hello answers every request with "Hello, World!". SIGINT or SIGTERM: stop accepting, close
// idle connections, finish the requests in flight, exit 0.
import Glibc
import Logging
import SystemPackage
import Uring
import UringHTTP
import UringTLS

let usageText = """
    usage: uring-http --root DIR [--host ADDR] [--port P] [--hello] [--max-connections N]
                      [--header-timeout SECONDS] [--idle-timeout SECONDS] [--backlog N] [--threads N]
                      [--tls-certificate FILE --tls-key FILE]
    """

func usage(_ message: String) -> Never {
    let text = "uring-http: \(message)\n\(usageText)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(64)
}

var host = "127.0.0.1"
var port = 8080
var backlog = 1024
var threads = 1
var configuration = HTTPServer.Configuration()
var tlsCertificate: String?
var tlsKey: String?
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
    switch flag {
    case "-h", "--help":
        print(usageText)
        exit(0)
    case "--hello":
        configuration.hello = true
        continue
    default: break
    }
    guard let value = args.popFirst() else { usage("\(flag) needs a value") }
    func seconds() -> Duration {
        guard let s = Double(value), s > 0, s < 86400 * 365 else { usage("\(flag) wants a positive number of seconds") }
        return .milliseconds(Int64(s * 1000))
    }
    switch flag {
    case "--root": configuration.root = FilePath(value)
    case "--host": host = value
    case "--port":
        guard let p = Int(value), (0...65535).contains(p) else { usage("--port wants 0...65535, not '\(value)'") }
        port = p
    case "--backlog":
        guard let b = Int(value), b > 0 else { usage("--backlog wants a positive number") }
        backlog = b
    case "--max-connections":
        guard let n = Int(value), n > 0 else { usage("--max-connections wants a positive number") }
        configuration.maximumConnections = n
    case "--tls-certificate": tlsCertificate = value
    case "--tls-key": tlsKey = value
    case "--header-timeout": configuration.headerTimeout = seconds()
    case "--idle-timeout": configuration.idleTimeout = seconds()
    case "--threads":
        guard let n = Int(value), n >= 1, n <= 1024 else { usage("--threads wants 1...1024") }
        threads = n
    default: usage("unknown option '\(flag)'")
    }
}
if configuration.root == nil && !configuration.hello { usage("--root DIR or --hello is required") }
if (tlsCertificate == nil) != (tlsKey == nil) { usage("--tls-certificate and --tls-key go together") }
/// The TLS configuration, loaded (and checked) before anything listens.
let tls: TLSConfiguration? = tlsCertificate.map { certificate in
    var tls = TLSConfiguration.server(
        certificateChain: .file(FilePath(certificate)), privateKey: .file(FilePath(tlsKey!)),
        applicationProtocols: ["http/1.1"])
    tls.handshakeTimeout = configuration.headerTimeout
    return tls
}

// Lets the server hold as many connections as the hard limit allows.
var limit = rlimit()
if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

let settings = configuration
// Diagnostics (the stall detector's reports) go to standard error; standard output is the banner.
LoggingSystem.bootstrap(StreamLogHandler.standardError)
let bindHost = host
let bindPort = port
let bindBacklog = backlog
let ringCount = threads
do {
    // Subscribed before the rings start: a SIGTERM from then on is a graceful shutdown.
    let shutdownSignals = Signals.stream([.interrupt, .terminate])
    try Uring.run(threads: ringCount) {
        let rings = Uring.group!
        let address = try SocketAddress(host: bindHost, port: bindPort)
        let first = try TCPListener.bind(to: address, backlog: bindBacklog, reusePort: ringCount > 1)
        let bound = try first.localAddress
        var listeners = [first]
        for _ in 1..<ringCount {
            listeners.append(try TCPListener.bind(to: bound, backlog: bindBacklog, reusePort: true))
        }
        let servers = listeners.map { _ in HTTPServer(configuration: settings) }
        // Which driver runs (io_uring, or epoll where io_uring is denied), on standard error.
        Logger(label: "uring-http").info("backend=\(rings[0].backend)")
        let scheme = tls == nil ? "http" : "https"
        print(
            "uring-http listening on \(scheme)://\(bound)/"
                + (settings.hello ? " (hello)" : " serving \(settings.root!)"))
        fflush(nil)
        let signals = Task {
            for await signal in shutdownSignals {
                print("uring-http: signal \(signal.rawValue) (\(signal)), finishing requests in flight")
                fflush(nil)
                for server in servers { server.beginShutdown() }
                break
            }
        }
        // One server per ring, each on its own listener; the first error stops them all.
        try await withThrowingDiscardingTaskGroup { group in
            for index in 0..<ringCount {
                let server = servers[index]
                let listener = listeners[index]
                let secure = try tls.map { configuration throws(TLSError) in
                    try TLSListener(wrapping: listener, configuration: configuration)
                }
                // On the only ring, plain tasks run there anyway: no preference, which the
                // runtime would otherwise look up under the task's status lock after every await.
                group.addTask(executorPreference: ringCount == 1 ? nil : rings[index]) {
                    do {
                        if let secure {
                            try await server.run(on: secure)
                        } else {
                            try await server.run(on: listener)
                        }
                    } catch {
                        for other in servers { other.beginShutdown() }
                        throw error
                    }
                }
            }
        }
        signals.cancel()
    }
} catch {
    let text = "uring-http: \(error)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
exit(0)
