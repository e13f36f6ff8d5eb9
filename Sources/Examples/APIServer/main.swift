// uring-api: a small JSON API on swift-uring's HTTP handler API, with static files beside it.
//
//   uring-api --root DIR [--host 127.0.0.1] [--port 8080] [--threads N] [--max-body BYTES]
//             [--request-timeout S]
//
//   GET  /plaintext   Hello, World! (text/plain)
//   GET  /json        {"message":"Hello, World!"} (application/json)
//   POST /json        {"name":"Ada"} in, {"message":"Hello, Ada!"} out (400 for bad JSON)
//   POST /echo        the request body back, streamed as it arrives (chunked)
//   GET  /files/...   the files under DIR (ranges, conditional requests, index.html)
//
// Routing is a `switch` on the path: the handler API leaves routing to you. --threads N runs N
// rings, each with its own listener on the port (SO_REUSEPORT). SIGINT or SIGTERM: stop
// accepting, finish the requests in flight, exit 0.
import Foundation
import HTTPTypes
import Logging
import SystemPackage
import Uring
import UringHTTP

let usageText = """
    usage: uring-api --root DIR [--host ADDR] [--port P] [--threads N] [--max-body BYTES]
                     [--request-timeout SECONDS]
    """

func usage(_ message: String) -> Never {
    FileHandle.standardError.write(Data("uring-api: \(message)\n\(usageText)\n".utf8))
    exit(64)
}

var host = "127.0.0.1"
var port = 8080
var threads = 1
var root: String?
var configuration = HTTPServer.Configuration(maximumBodyBytes: 64 << 20)
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
    if flag == "-h" || flag == "--help" {
        print(usageText)
        exit(0)
    }
    guard let value = args.popFirst() else { usage("\(flag) needs a value") }
    switch flag {
    case "--root": root = value
    case "--host": host = value
    case "--port":
        guard let p = Int(value), (0...65535).contains(p) else { usage("--port wants 0...65535, not '\(value)'") }
        port = p
    case "--threads":
        guard let n = Int(value), n >= 1, n <= 1024 else { usage("--threads wants 1...1024") }
        threads = n
    case "--max-body":
        guard let n = Int(value), n >= 0 else { usage("--max-body wants a number of bytes") }
        configuration.maximumBodyBytes = n
    case "--request-timeout":
        guard let s = Double(value), s > 0, s < 86400 * 365 else { usage("--request-timeout wants seconds") }
        configuration.requestTimeout = .milliseconds(Int64(s * 1000))
    default: usage("unknown option '\(flag)'")
    }
}
guard let root else { usage("--root DIR is required") }

/// `GET /json`'s object, and `POST /json`'s answer.
struct Message: Codable, Sendable {
    var message: String
}

/// `POST /json`'s input.
struct Greeting: Codable, Sendable {
    var name: String
}

let encoder = JSONEncoder()
let decoder = JSONDecoder()
let textPlain: HTTPFields = [.contentType: "text/plain"]
let applicationJSON: HTTPFields = [.contentType: "application/json"]
// Responses made once: an HTTPResponse boxes its status line, so making one per request costs
// an allocation (swift-http-types' own).
let plainOK = HTTPResponse(status: .ok, headerFields: textPlain)
let jsonOK = HTTPResponse(status: .ok, headerFields: applicationJSON)

/// The API: one handler, a switch on the path.
@Sendable func handle(
    _ request: HTTPRequest, _ body: HTTPRequestBody, _ responder: HTTPResponder, files: FileHandler
) async throws {
    // Routed on the path without its query (`/plaintext?x=1` is `/plaintext`), cut at the `?`
    // found in its UTF-8 (walking a string's characters costs grapheme breaking for each).
    let target = request.path ?? "/"
    let path = target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target[..<$0] } ?? target[...]
    switch (request.method, path) {
    case (.get, "/plaintext"), (.head, "/plaintext"):
        try await responder.respond(plainOK, body: "Hello, World!")
    case (.get, "/json"), (.head, "/json"):
        let json = try encoder.encode(Message(message: "Hello, World!"))
        try await responder.respond(jsonOK, body: json)
    case (.post, "/json"):
        let input = try await body.collect(upTo: 1 << 20)
        guard let greeting = try? decoder.decode(Greeting.self, from: Data(input)) else {
            try await responder.respond(
                HTTPResponse(status: .badRequest, headerFields: textPlain), body: "expected {\"name\": string}\n")
            return
        }
        let json = try encoder.encode(Message(message: "Hello, \(greeting.name)!"))
        try await responder.respond(jsonOK, body: json)
    case (.post, "/echo"):
        var fields: HTTPFields = [.contentType: request.headerFields[.contentType] ?? "application/octet-stream"]
        // A known length is kept (no chunking); otherwise the echo is chunked.
        if let length = request.headerFields[.contentLength] { fields[.contentLength] = length }
        let writer = try await responder.start(HTTPResponse(status: .ok, headerFields: fields))
        for try await chunk in body { try await writer.write(chunk) }
        try await writer.finish()
    case (_, "/plaintext"), (_, "/json"), (_, "/echo"):
        try await responder.respond(
            HTTPResponse(status: .methodNotAllowed, headerFields: textPlain), body: "method not allowed\n")
    case _ where files.matches(request):
        try await files.handle(request, responder: responder)
    default:
        try await responder.respond(HTTPResponse(status: .notFound, headerFields: textPlain), body: "not found\n")
    }
}

// Lets the server hold as many connections as the hard limit allows.
var limit = rlimit()
if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

LoggingSystem.bootstrap(StreamLogHandler.standardError)
let settings = configuration
let bindHost = host
let bindPort = port
let ringCount = threads
let rootPath = FilePath(root)
do {
    let shutdownSignals = Signals.stream([.interrupt, .terminate])
    try Uring.run(threads: ringCount) {
        let rings = Uring.group!
        let address = try SocketAddress(host: bindHost, port: bindPort)
        let first = try TCPListener.bind(to: address, reusePort: ringCount > 1)
        let bound = try first.localAddress
        var listeners = [first]
        for _ in 1..<ringCount {
            listeners.append(try TCPListener.bind(to: bound, reusePort: true))
        }
        let servers = listeners.map { _ in HTTPServer(configuration: settings) }
        let files = try await FileHandler(root: rootPath, prefix: "/files")
        Logger(label: "uring-api").info("backend=\(rings[0].backend)")
        print("uring-api listening on http://\(bound)/ serving \(rootPath) under /files/")
        fflush(nil)
        let signals = Task {
            for await signal in shutdownSignals {
                print("uring-api: signal \(signal.rawValue) (\(signal)), finishing requests in flight")
                fflush(nil)
                for server in servers { server.beginShutdown() }
                break
            }
        }
        try await withThrowingDiscardingTaskGroup { group in
            for index in 0..<ringCount {
                let server = servers[index]
                let listener = listeners[index]
                // On the only ring no preference: plain tasks run there anyway.
                group.addTask(executorPreference: ringCount == 1 ? nil : rings[index]) {
                    do {
                        try await server.run(on: listener) { request, body, responder in
                            try await handle(request, body, responder, files: files)
                        }
                    } catch {
                        for other in servers { other.beginShutdown() }
                        throw error
                    }
                }
            }
        }
        signals.cancel()
        try? await files.close()
    }
} catch {
    FileHandle.standardError.write(Data("uring-api: \(error)\n".utf8))
    exit(1)
}
exit(0)
