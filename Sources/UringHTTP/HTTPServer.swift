import Glibc
import HTTPTypes
import Synchronization
import SystemPackage
import Uring
import UringTLS

/// An HTTP/1.1 server on swift-uring: one task per connection, sockets served by the ring's
/// socket API and files read with its file API, on the same ring. It runs request handlers on
/// swift-http-types' `HTTPRequest` and `HTTPResponse`, or serves static files (or "hello") alone.
///
/// A handler (see ``run(on:handler:)-(TCPListener,_)``):
///
/// ```swift
/// try Uring.run {
///     let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:8080"))
///     let server = HTTPServer(configuration: .init())
///     try await server.run(on: listener) { request, body, responder in
///         switch request.path {
///         case "/hello":
///             try await responder.respond(HTTPResponse(status: .ok), body: "Hello, World!")
///         default:
///             try await responder.respond(HTTPResponse(status: .notFound))
///         }
///     }
/// }
/// ```
///
/// Static files alone:
///
/// ```swift
/// try Uring.run {
///     let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:8080"))
///     let server = HTTPServer(configuration: .init(root: "/srv/www"))
///     try await server.run(on: listener)     // until server.beginShutdown()
/// }
/// ```
///
/// GET and HEAD; keep-alive and pipelining; `Content-Length`; `Content-Type` from the extension;
/// `index.html` for directories; one `Range` (206/416); `Last-Modified`/`If-Modified-Since` and a
/// strong `ETag`/`If-None-Match` (304); small-bodied 400, 403, 404, 405, 413, 414, 431, 501, 505.
/// Files are opened with `File.open(_:beneath:)`, so no request can name a file outside the root
/// (the kernel refuses `..`, absolute paths and symlinks that leave it), and large files are
/// streamed in 64 KiB reads.
///
/// All connections of one server run on one ring (the server's bookkeeping is not shared between
/// threads): run it under `Uring.run` or in a task that prefers a ring.
public final class HTTPServer: @unchecked Sendable {
    // @unchecked Sendable: `connections` and `date` are used only by this server's tasks, which
    // all run on the ring that runs `run(on:)`; `draining` is atomic.

    public struct Configuration: Sendable {
        /// The directory served; `nil` with `hello`.
        public var root: FilePath?
        /// Answer every request with `Hello, World!` (13 bytes, text/plain) instead of files.
        public var hello: Bool
        /// Connections beyond this get a 503 and are closed.
        public var maximumConnections: Int
        /// How long a client may take to send a whole request head, from its first byte.
        public var headerTimeout: Duration
        /// How long a keep-alive connection may stay silent between requests, and how long one
        /// send may wait for a client that does not read.
        public var idleTimeout: Duration
        /// The largest request body: a larger `Content-Length` is answered 413 before any handler
        /// runs, and a chunked body throws ``HTTPServerError/Code/bodyTooLarge`` when it grows past it.
        /// (Without a handler bodies are discarded: GET and HEAD have no use for one.)
        public var maximumBodyBytes: Int
        /// How long a handler may run, from its request's head to its return. Past it, its task is
        /// cancelled and the connection closed (a response in progress is cut short).
        public var requestTimeout: Duration
        /// Request-head limits (sizes and field count). Handlers' servers always read bodies
        /// (``RequestHeadParser/readsBodies``).
        public var parser: RequestHeadParser

        public init(
            root: FilePath? = nil, hello: Bool = false, maximumConnections: Int = 10_000,
            headerTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(60),
            maximumBodyBytes: Int = 1 << 20, requestTimeout: Duration = .seconds(60),
            parser: RequestHeadParser = RequestHeadParser()
        ) {
            self.root = root
            self.hello = hello
            self.maximumConnections = maximumConnections
            self.headerTimeout = headerTimeout
            self.idleTimeout = idleTimeout
            self.maximumBodyBytes = maximumBodyBytes
            self.requestTimeout = requestTimeout
            self.parser = parser
        }
    }

    /// A request handler: it reads the request (and its body, if it wants it) and answers through
    /// the responder. It runs in the connection's task, on the server's ring; requests of one
    /// connection are handled one after the other (pipelined ones too, in order).
    ///
    /// A handler that throws before answering gets a 500 (a 413 or 400 for a body too large or
    /// malformed) and its connection is closed; one that throws after starting a streamed
    /// response has the connection closed, cutting the response short.
    public typealias Handler = @Sendable (HTTPRequest, HTTPRequestBody, HTTPResponder) async throws -> Void

    /// How requests are answered.
    enum Mode: Sendable {
        case hello
        case files(FileHandler?)
        case handler(Handler)
    }

    public let configuration: Configuration
    private let draining = Atomic<Bool>(false)
    private let connections = ConnectionTable()
    private let date = DateCache()
    /// A response buffer: a 64 KiB body and its head (a few hundred bytes), so that a 64 KiB file
    /// leaves with one read and one send (over TLS: five records that fit the session's output
    /// buffer, one send). Lent to a connection while it answers (`ResponseBuffers`).
    static let bufferSize = 64 * 1024 + 1024

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Asks the server to stop: no new connections; idle connections are closed; requests in
    /// flight (a large download included) finish, then their connections close; `run(on:)`
    /// returns once every connection is gone. Safe from any thread.
    public func beginShutdown() {
        draining.store(true, ordering: .releasing)
    }

    /// Serves `listener` until ``beginShutdown()`` and every connection has closed. Closes the
    /// listener on return.
    ///
    /// - Throws: ``IOError`` when the root directory cannot be opened or accepting fails for
    ///   good (descriptor exhaustion is waited out, not thrown).
    public func run(on listener: TCPListener) async throws(IOError) {
        try await serve(listener, handler: nil)
    }

    /// Serves `listener` with `handler` until ``beginShutdown()`` and every connection has closed.
    /// Closes the listener on return. The configuration's `root` and `hello` are not used: compose
    /// a ``FileHandler`` for files.
    ///
    /// ```swift
    /// let files = try await FileHandler(root: "/srv/www", prefix: "/static")
    /// try await server.run(on: listener) { request, body, responder in
    ///     switch request.path {
    ///     case "/plaintext":
    ///         try await responder.respond(
    ///             HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"]), body: "Hello, World!")
    ///     case "/echo" where request.method == .post:
    ///         let writer = try await responder.start(HTTPResponse(status: .ok))
    ///         for try await chunk in body { try await writer.write(chunk) }
    ///         try await writer.finish()
    ///     case _ where files.matches(request):
    ///         try await files.handle(request, responder: responder)
    ///     default:
    ///         try await responder.respond(HTTPResponse(status: .notFound))
    ///     }
    /// }
    /// ```
    ///
    /// - Throws: ``IOError`` when accepting fails for good (descriptor exhaustion is waited out).
    public func run(on listener: TCPListener, handler: @escaping Handler) async throws(IOError) {
        try await serve(listener, handler: handler)
    }

    /// Serves HTTPS on `listener` with `handler`, as ``run(on:handler:)-(TCPListener,_)`` serves
    /// HTTP; requests carry the `https` scheme.
    public func run(on listener: TLSListener, handler: @escaping Handler) async throws(IOError) {
        try await serve(listener, handler: handler)
    }

    /// Serves HTTPS on `listener` as ``run(on:)-(TCPListener)`` serves HTTP: each connection
    /// shakes hands in its own task (within the TLS configuration's handshake timeout, so a slow
    /// or hostile client never holds up the others); a graceful shutdown ends each connection
    /// with a close_notify.
    ///
    /// ```swift
    /// let tls = TLSConfiguration.server(
    ///     certificateChain: .file("cert.pem"), privateKey: .file("key.pem"), applicationProtocols: ["http/1.1"])
    /// let listener = try TLSListener.bind(to: SocketAddress("0.0.0.0:8443"), configuration: tls)
    /// try await HTTPServer(configuration: .init(root: "/srv/www")).run(on: listener)
    /// ```
    public func run(on listener: TLSListener) async throws(IOError) {
        try await serve(listener, handler: nil)
    }

    private func serve<Listener: HTTPAcceptor>(_ listener: Listener, handler: Handler?) async throws(IOError) {
        let mode: Mode
        var files: FileHandler?
        // Handlers read bodies (chunked, Expect); the static server only discards them.
        var reading = configuration.parser
        reading.readsBodies = handler != nil
        let parser = reading
        if let handler {
            mode = .handler(handler)
        } else if configuration.hello {
            mode = .hello
        } else {
            if let path = configuration.root {
                do throws(IOError) {
                    files = try await FileHandler(root: path)
                } catch {
                    await listener.closeQuietly()
                    throw error
                }
            }
            mode = .files(files)
        }
        var failure: IOError?
        await withDiscardingTaskGroup { group in
            // The watchdog: timeouts and shutdown, checked ten times a second.
            group.addTask { await self.watch(listenerDescriptor: listener.rawDescriptor) }
            var accepted = listener.accepting()
            while !draining.load(ordering: .acquiring) {
                let connection: Listener.Connection
                do throws(IOError) {
                    guard let next = try await accepted.nextConnection() else { break }
                    connection = next
                } catch  where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem {
                    try? await Uring.sleep(for: .milliseconds(10))
                    continue
                } catch {
                    // The watchdog shut the listener down (shutdown), or the listener failed:
                    // either way, stop and let the open connections finish.
                    if !draining.load(ordering: .acquiring) { failure = error }
                    draining.store(true, ordering: .releasing)
                    break
                }
                guard let slot = connections.add(connection.rawDescriptor, limit: configuration.maximumConnections)
                else {
                    group.addTask { await self.refuse(connection) }
                    continue
                }
                group.addTask { await self.serve(connection, slot: slot, mode: mode, parser: parser) }
            }
            connections.stopWatching()
        }
        await listener.closeQuietly()
        if let files { try? await files.close() }
        if let failure { throw failure }
    }

    // MARK: - Watchdog

    private func watch(listenerDescriptor: Int32) async {
        var listenerShut = false
        while true {
            if draining.load(ordering: .acquiring) {
                if !listenerShut {
                    // Ends the multishot accept (EINVAL), so the accept loop stops.
                    Glibc.shutdown(listenerDescriptor, Int32(SHUT_RD))
                    listenerShut = true
                }
                connections.closeIdle()
            }
            connections.expire(now: coarseMonotonicNanoseconds())
            if connections.watchingStopped && connections.count == 0 { return }
            try? await Uring.sleep(for: .milliseconds(100))
        }
    }

    // MARK: - A connection

    private func refuse<Connection: HTTPTransport>(_ connection: Connection) async {
        let body: StaticString = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        _ = unsafe await connection.sendAll(
            UnsafeRawBufferPointer(start: body.utf8Start, count: body.utf8CodeUnitCount), timeout: .seconds(1))
        await connection.closeQuietly()
    }

    private func serve<Connection: HTTPTransport>(
        _ connection: Connection, slot: Int, mode: Mode, parser: RequestHeadParser
    ) async {
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: parser.maximumHeadBytes, alignment: 16)
        defer { unsafe input.deallocate() }
        let output = unsafe ResponseBuffers.take()  // the session gives it back (and may swap it) as it goes
        if case .handler = mode {
            // SAFETY: the table drops the task before this task ends (`remove` below, on the same
            // ring as the watchdog that cancels through it).
            unsafe withUnsafeCurrentTask { task in unsafe connections.setTask(slot, task) }
        }
        let session = unsafe Session(
            server: self, connection: connection, slot: slot, mode: mode, parser: parser, input: input, output: output)
        await session.run()
        session.giveBackOutput()
        connections.remove(slot)
        await connection.closeQuietly()
    }

    var isDraining: Bool { draining.load(ordering: .acquiring) }

    // MARK: - Shared pieces for Session

    func now() -> UnsafeRawBufferPointer { unsafe date.now() }
    func setIdle(_ slot: Int) {
        connections.set(
            slot, deadline: coarseMonotonicNanoseconds() + nanoseconds(configuration.idleTimeout), idle: true)
    }
    func setReadingHead(_ slot: Int) {
        connections.set(
            slot, deadline: coarseMonotonicNanoseconds() + nanoseconds(configuration.headerTimeout), idle: false)
    }
    func setBusy(_ slot: Int) { connections.set(slot, deadline: 0, idle: false) }
    /// A handler starts: it has the request timeout, after which its task is cancelled.
    func setHandling(_ slot: Int) {
        connections.set(
            slot, deadline: coarseMonotonicNanoseconds() + nanoseconds(configuration.requestTimeout), idle: false,
            cancels: true)
    }
    /// A handler returned: whether the request timeout had cut it off.
    func endHandling(_ slot: Int) -> Bool {
        let timedOut = connections.timedOut(slot)
        setBusy(slot)
        return timedOut
    }
    /// A send starts: the client has the idle timeout to take it (the watchdog shuts the
    /// connection down after that; the send fails and the session ends).
    func setWriting(_ slot: Int) {
        connections.set(
            slot, deadline: coarseMonotonicNanoseconds() + nanoseconds(configuration.idleTimeout), idle: false)
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a tick-resolution clock (a few ms), cheaper than
/// the precise one, which is all idle and header deadlines need.
func coarseMonotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    unsafe clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Open connections, their deadlines and whether they wait between requests. Touched only by
/// the server's tasks, on its ring; the slots are reused, so steady state allocates nothing.
final class ConnectionTable: @unchecked Sendable {
    // @unchecked Sendable: one ring's tasks only (see HTTPServer).
    @safe private struct Entry {
        // SAFETY (@safe): `task` is only used (cancelled) while its connection's entry is in the
        // table, and the connection's task removes the entry before it ends.
        var fd: Int32 = -1
        var deadline: UInt64 = 0
        var idle = false
        var shut = false
        /// The deadline is a handler's: expiring cancels `task` too.
        var cancels = false
        var timedOut = false
        /// The connection's task (handler servers only), valid until `remove`.
        var task: UnsafeCurrentTask?

        init(fd: Int32 = -1) { self.fd = fd }
    }

    private var entries: [Entry] = []
    private var free: [Int] = []
    private(set) var count = 0
    private(set) var watchingStopped = false

    func add(_ fd: Int32, limit: Int) -> Int? {
        guard count < limit else { return nil }
        count += 1
        if let slot = free.popLast() {
            entries[slot] = Entry(fd: fd)
            return slot
        }
        entries.append(Entry(fd: fd))
        return entries.count - 1
    }

    func remove(_ slot: Int) {
        entries[slot] = Entry()
        free.append(slot)
        count -= 1
    }

    func set(_ slot: Int, deadline: UInt64, idle: Bool, cancels: Bool = false) {
        entries[slot].deadline = deadline
        entries[slot].idle = idle
        entries[slot].cancels = cancels
    }

    func setTask(_ slot: Int, _ task: UnsafeCurrentTask?) {
        unsafe entries[slot].task = unsafe task
    }

    func timedOut(_ slot: Int) -> Bool { entries[slot].timedOut }

    func stopWatching() { watchingStopped = true }

    /// Shuts down (both ways) every connection whose deadline passed: its pending receive ends,
    /// and its task closes it.
    func expire(now: UInt64) {
        for i in entries.indices
        where entries[i].fd >= 0 && !entries[i].shut && entries[i].deadline != 0 && entries[i].deadline < now {
            Glibc.shutdown(entries[i].fd, Int32(SHUT_RDWR))
            entries[i].shut = true
            if entries[i].cancels {
                entries[i].timedOut = true
                // SAFETY: the task is the connection's, alive until it removes its entry (on this ring).
                unsafe entries[i].task?.cancel()
            }
        }
    }

    /// Ends the receive of every connection that waits between requests (shutdown).
    func closeIdle() {
        for i in entries.indices where entries[i].fd >= 0 && !entries[i].shut && entries[i].idle {
            Glibc.shutdown(entries[i].fd, Int32(SHUT_RD))
            entries[i].shut = true
        }
    }
}
