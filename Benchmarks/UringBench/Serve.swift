import Glibc
import HTTPTypes
import Uring
import UringHTTP

// `uring-bench serve echo|http`: swift-uring's side of the echo and HTTP workloads alone, for any
// load generator (this target's `--target` mode, wrk, a user's own load test) and for the
// comparison suite, which runs every system's server in a process of its own.

/// Serves until SIGINT or SIGTERM. Prints `scenario=serve kind=… host=… port=… backend=…` once
/// listening (so `--port 0` can be used), and on the signal a last line with what was served:
/// `scenario=served kind=echo connections=… bytes=…` or `scenario=served kind=http requests=…`.
///
/// The echo server is the echo scenario's (multishot receive into the ring's buffer pool, each
/// chunk sent back from its buffer); the HTTP server is `HTTPServer`'s handler API answering
/// `GET /plaintext` with "Hello, World!" (text/plain) and anything else with 404, as uring-api does.
func runServe(kind: String, host: String, port: Int) async throws {
    let signals = Signals.stream([.interrupt, .terminate])
    let listener = try TCPListener.bind(to: SocketAddress(host: host, port: port), backlog: 4096)
    let bound = try listener.localAddress
    guard let ring = RingExecutor.current else { fatalError("serve runs under Uring.run") }
    emit("scenario=serve kind=\(kind) host=\(host) port=\(bound.port ?? port)")
    fflush(nil)
    switch kind {
    case "echo":
        let live = Gauge()
        let echoed = Gauge()
        let accepted = Gauge()
        let server = startEchoServer(listener, on: ring, live: live, acceptedCount: accepted, echoed: echoed)
        for await _ in signals { break }
        server.cancel()
        try? await listener.close()
        await server.value
        emit(
            "scenario=served kind=echo connections=\(accepted.value.load(ordering: .relaxed))"
                + " bytes=\(echoed.value.load(ordering: .relaxed))")
    default:
        let server = HTTPServer(configuration: .init())
        let served = Gauge()
        let textPlain: HTTPFields = [.contentType: "text/plain"]
        let task = Task {
            try await server.run(on: listener) { request, _, responder in
                served.value.add(1, ordering: .relaxed)
                if request.method == .get, request.path == "/plaintext" {
                    try await responder.respond(
                        HTTPResponse(status: .ok, headerFields: textPlain), body: "Hello, World!")
                } else {
                    try await responder.respond(HTTPResponse(status: .notFound))
                }
            }
        }
        for await _ in signals { break }
        server.beginShutdown()
        _ = try? await task.value
        emit("scenario=served kind=http requests=\(served.value.load(ordering: .relaxed))")
    }
    fflush(nil)
}
