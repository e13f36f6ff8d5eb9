import Glibc
import Uring

// The command line: usage, options and their parsing.

let usage = """
    usage: uring-bench [nop|floor|read|list|copy|map|echo|idle|http|handoff|soak|serve|core] [options]
      (no scenario)               the comparison: swift-uring against blocking pread, Foundation's
                                  FileHandle and NIOFileSystem (4 KiB random reads, 1 and 32 in
                                  flight; 128 KiB sequential), SwiftNIO echo servers (a
                                  ChannelHandler, NIOAsyncChannel; 1 x 64 B, 64 x 64 B, 64 x 4 KiB)
                                  and Hummingbird 2 (HTTP GET /plaintext, 64 connections); each
                                  system in a process of its own on one CPU, this target's load
                                  generator on another; interleaved rounds, medians and min-max,
                                  ratios to swift-uring, CPU per request, noise warnings. The
                                  peers (Benchmarks/Peers) are built on first use.
                                  --report DIR: also an HTML page with SVG charts and the JSON of
                                  every figure; --rounds R (default 3); --seconds S per run
                                  (default 2); --systems a,b (swift-uring is always in);
                                  --workloads a,b; --no-peers (swift-uring and pread only)
      core                        swift-uring alone in this process: no-op, read and echo rates
                                  against blocking pread, as one table (under two minutes)
      nop  --concurrency N        awaited no-ops from N tasks on one ring (default 64); the line
                                  also gives the floor at the same concurrency (floor_ops_per_sec,
                                  ratio_to_floor)
      floor --concurrency N       the floor under every awaited operation: a continuation round
                                  trip through the ring's loop, no system call (default 64)
      read --pattern random|sequential --block B --concurrency N --path P
                                  reads of a file (default: a 1 GiB file in /tmp/uring-bench, created once)
      list --entries N            list a directory of N empty files (default 100,000; created
                                  once under /tmp/uring-bench, or --path DIR) again and again,
                                  against a synchronous readdir loop on one plain thread;
                                  --status: fetch each entry's status too; --rounds R: R
                                  alternated rounds (default 1), medians; --peers: also
                                  Foundation's FileManager and NIOFileSystem, each in its own
                                  process (the Benchmarks/Peers package, built on first use)
      copy --size-mib N --rounds R
                                  FileSystem.copyItem of a page-cached file (default the 1 GiB
                                  read file; --path P) against /bin/cp, alternated R times
                                  (default 5); medians
      map --entries N --concurrency L --rounds R
                                  mapConcurrently over N no-op transforms (default 100,000) at
                                  L at once (default 64), in order, against a hand-written task
                                  group; alternated R times (default 5); medians per element
      echo --target HOST:PORT     the load generator against any echo server: --connections N
                                  (default 64), --size B (default 64), --pipeline D messages in
                                  flight per connection (default 1), --seconds S; every byte
                                  checked; p50/p90/p99/p99.9 latency; --server-pid PID adds the
                                  server's CPU time per request; --engine uring (the default where
                                  io_uring is allowed: one thread on an io_uring of its own, a
                                  multishot receive per connection, no system call per request),
                                  epoll (one thread, epoll, non-blocking send/recv; the default
                                  where io_uring is denied or SWIFT_URING_BACKEND=epoll) or ring (a
                                  task per connection on a swift-uring ring); --spin-us N: busy-poll
                                  (uring, epoll) or spin N µs before sleeping (ring); default 50
                                  with two CPUs or more, else 0
      http --target URL           the load generator against any HTTP/1.1 server (http://HOST:PORT/PATH):
                                  keep-alive GETs, --connections N, --pipeline D, --seconds S;
                                  every response's status and body checked against the first
      serve echo|http --port P    swift-uring's side alone (--host H, default 127.0.0.1; --port 0
                                  picks one), until SIGINT/SIGTERM: the echo server, or the HTTP
                                  handler API answering GET /plaintext; for wrk or a user's own
                                  load test
      echo --connections N --size B
                                  loopback TCP echo: a server ring and a client ring in this
                                  process; N connections (default 64) each send B bytes (default
                                  64) and wait for the echo; --zero-copy automatic|always|never
                                  for the clients' sends (default automatic); --tls: over TLS 1.3
                                  (the line adds cpu_us_per_request: the process's CPU time,
                                  server and clients, per round trip)
      http --connections N        uring-http's server and keep-alive clients in this process; N
                                  connections (default 64); --mode hello (default: the fused
                                  "Hello, World!"), handler (the same through the handler API),
                                  files (a 4 KiB file, the static server's FileHandler) or
                                  handler-files (a handler handing the request to a FileHandler);
                                  --tls: HTTPS (TLS 1.3, a self-signed P-256 certificate made at
                                  start)
      handoff                     a task hopping between two idle rings: the cost of one
                                  cross-ring hand-off (SWIFT_URING_MSG_RING=0: eventfd wake-ups);
                                  --spin-us N: the rings spin N µs before sleeping (default 0)
      idle --connections N        memory per idle server connection (default 5,000; needs
                                  2N+100 descriptors)
      soak --seconds S --connections N
                                  the echo server under churn for S seconds (default 30): N
                                  client loops (default 1,000) connect, exchange random data,
                                  check every byte and close; reports errors, descriptors and
                                  memory before and after (needs 2N+100 descriptors)
    common options:
      --seconds S                 measured seconds per run (default 3)
      --warmup S                  unmeasured seconds before each run (default 0.5)
      --no-baseline               skip the blocking pread baseline
      --no-floor                  nop: skip the floor measurement
      --baseline-threads T        threads for the pread baseline (default 1: the per-core comparison)
      --system pread|preadv2-nowait|swift-uring
                                  read: measure this one alone (the comparison runs each system in
                                  a process of its own); preadv2-nowait is the blocking loop with
                                  preadv2(RWF_NOWAIT), the cheapest read that never waits for the
                                  disk: the kernel's own ceiling for a read that may not block
      --executor global|preference
                                  global (default): worker tasks are plain tasks on the ring that
                                  Uring.run installs; preference: Task(executorPreference:) on a
                                  separate RingExecutor
      --rings N                   nop/read: a RingGroup of N rings with --concurrency tasks on
                                  each (the multi-core scaling run)
      --stats                     print each ring's counters (to standard error) after its run
    environment:
      SWIFT_URING_BACKEND=auto|io_uring|epoll
                                  the driver (default auto: io_uring, or epoll where io_uring is
                                  denied); every result line ends with backend=io_uring|epoll
    """

struct Options {
    var scenario: String?
    var concurrency: Int?
    var seconds = 3.0
    var secondsGiven = false
    /// handoff: the rings' spin before sleeping; echo/http --target: the load generator's ring's
    /// (nil: 50 µs when this process may use two CPUs or more, else 0).
    var spinMicroseconds: Int?
    var warmup = 0.5
    var path: String?
    var pattern = "random"
    var block: Int?
    var baseline = true
    /// nop: also measure the floor at the same concurrency (`--no-floor`: skip it).
    var floor = true
    var baselineThreads = 1
    var executor = ExecutorMode.global
    var zeroCopy = TCPConnection.ZeroCopy.automatic
    /// list: the directory's size, and whether each entry's status is fetched.
    var entries = 100_000
    var listStatus = false
    /// copy: the file's size in MiB.
    var copyMiB = 1024
    /// list, copy, map: alternated rounds (nil: the scenario's default).
    var rounds: Int?
    /// list: also run the peers (Foundation, NIOFileSystem) in processes of their own.
    var peers = false
    /// http, echo: over TLS 1.3.
    var tls = false
    /// http: what answers (hello, handler, files, handler-files).
    var httpMode = HTTPBenchMode.hello
    /// echo, http: an external server to load (`--target`).
    var target: String?
    /// echo, http with a target: requests in flight per connection.
    var pipeline = 1
    /// echo, http with a target: the server's process, whose CPU time is measured too.
    var serverPID: pid_t?
    /// read: only one side (swift-uring or pread).
    var system: String?
    /// serve: echo or http, and where.
    var serveKind = "echo"
    var host = "127.0.0.1"
    var port = 0
    /// The comparison suite's settings.
    var comparison = ComparisonSettings()
    /// echo --target: what drives the connections (nil: uring, or epoll where io_uring is denied
    /// or SWIFT_URING_BACKEND=epoll).
    var loadEngine: LoadEngine?
}

/// What drives the echo load generator's connections.
enum LoadEngine: String {
    /// One plain thread on an io_uring of its own: a multishot receive per connection, sends
    /// submitted together, no system call per request (the default where io_uring is allowed).
    case uring
    /// One plain thread, epoll and non-blocking send/recv (the default where io_uring is denied).
    case epoll
    /// Tasks on a swift-uring ring of its own, one per connection.
    case ring
}

func fail(_ message: String) -> Never {
    var stderr = StandardError()
    print("uring-bench: \(message)\n\(usage)", to: &stderr)
    exit(64)
}

/// Ends the run for a reason that is not the command line's (a server that does not answer, a
/// failed peer): the message alone, exit status 1.
func abortRun(_ message: String) -> Never {
    var stderr = StandardError()
    print("uring-bench: \(message)", to: &stderr)
    exit(1)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        _ = string.utf8CString.withUnsafeBufferPointer { Glibc.write(2, $0.baseAddress, $0.count - 1) }
    }
}

func parse(_ arguments: [String]) -> Options {
    var options = Options()
    var rest = arguments[...]
    if let first = rest.first, !first.hasPrefix("-") {
        guard
            [
                "nop", "floor", "read", "list", "copy", "map", "echo", "idle", "http", "handoff", "soak", "soak-server",
                "serve", "core",
            ].contains(first)
        else {
            fail("unknown scenario '\(first)'")
        }
        options.scenario = first
        rest = rest.dropFirst()
        if first == "serve" {
            guard let kind = rest.popFirst(), kind == "echo" || kind == "http" else {
                fail("serve wants echo or http: uring-bench serve echo|http --port P")
            }
            options.serveKind = kind
        }
    }
    func list(_ flag: String, allowed: [String]) -> Set<String> {
        let names = Set(value(flag).split(separator: ",").map(String.init))
        for name in names where !allowed.contains(name) {
            fail("\(flag): unknown '\(name)' (\(allowed.joined(separator: ", ")))")
        }
        return names
    }
    func value(_ flag: String) -> String {
        guard let v = rest.popFirst() else { fail("\(flag) needs a value") }
        return v
    }
    func positiveInt(_ flag: String) -> Int {
        let text = value(flag)
        guard let v = Int(text), v > 0 else { fail("\(flag) wants a positive integer, not '\(text)'") }
        return v
    }
    func positiveDouble(_ flag: String, allowZero: Bool = false) -> Double {
        let text = value(flag)
        guard let v = Double(text), v.isFinite, allowZero ? v >= 0 : v > 0 else {
            fail("\(flag) wants a positive number, not '\(text)'")
        }
        return v
    }
    while let flag = rest.popFirst() {
        switch flag {
        case "--concurrency": options.concurrency = positiveInt(flag)
        case "--seconds":
            options.seconds = positiveDouble(flag)
            options.secondsGiven = true
            options.comparison.seconds = options.seconds
        case "--warmup":
            options.warmup = positiveDouble(flag, allowZero: true)
            options.comparison.warmup = options.warmup
        case "--target": options.target = value(flag)
        case "--pipeline":
            options.pipeline = positiveInt(flag)
            if options.pipeline > 1024 { fail("--pipeline is at most 1024") }
        case "--server-pid":
            let text = value(flag)
            guard let pid = Int32(text), pid > 0 else { fail("--server-pid wants a process id, not '\(text)'") }
            options.serverPID = pid
        case "--system":
            let v = value(flag)
            guard v == "swift-uring" || v == "pread" || v == "preadv2-nowait" else {
                fail("--system is swift-uring, pread or preadv2-nowait, not '\(v)'")
            }
            options.system = v
        case "--host": options.host = value(flag)
        case "--port":
            let text = value(flag)
            guard let port = Int(text), (0...65535).contains(port) else {
                fail("--port wants 0 to 65535, not '\(text)'")
            }
            options.port = port
        case "--report": options.comparison.reportDirectory = value(flag)
        case "--engine":
            let v = value(flag)
            guard let engine = LoadEngine(rawValue: v) else { fail("--engine is uring, epoll or ring, not '\(v)'") }
            options.loadEngine = engine
        case "--systems":
            options.comparison.systems = list(
                flag, allowed: Workload.Group.allSystems)
        case "--workloads": options.comparison.workloads = list(flag, allowed: Workload.all.map(\.id))
        case "--no-peers": options.comparison.systems = ["swift-uring", "pread"]
        case "--path": options.path = value(flag)
        case "--pattern":
            let p = value(flag)
            guard p == "random" || p == "sequential" else { fail("--pattern is random or sequential, not '\(p)'") }
            options.pattern = p
        case "--block": options.block = positiveInt(flag)
        case "--connections": options.concurrency = positiveInt(flag)
        case "--entries": options.entries = positiveInt(flag)
        case "--status": options.listStatus = true
        case "--size-mib": options.copyMiB = positiveInt(flag)
        case "--rounds":
            options.rounds = positiveInt(flag)
            options.comparison.rounds = options.rounds!
        case "--peers": options.peers = true
        case "--tls": options.tls = true
        case "--mode":
            let v = value(flag)
            guard let mode = HTTPBenchMode(rawValue: v) else {
                fail("--mode is hello, handler, files or handler-files, not '\(v)'")
            }
            options.httpMode = mode
        case "--size": options.block = positiveInt(flag)
        case "--no-baseline": options.baseline = false
        case "--no-floor": options.floor = false
        case "--executor":
            let v = value(flag)
            guard let mode = ExecutorMode(rawValue: v) else { fail("--executor is global or preference, not '\(v)'") }
            options.executor = mode
        case "--stats": printStatistics = true
        case "--rings":
            groupRings = positiveInt(flag)
            options.executor = .group
        case "--zero-copy":
            switch value(flag) {
            case "automatic": options.zeroCopy = .automatic
            case "always": options.zeroCopy = .always
            case "never": options.zeroCopy = .never
            case let other: fail("--zero-copy wants automatic, always or never, not '\(other)'")
            }
        case "--baseline-threads": options.baselineThreads = positiveInt(flag)
        case "--spin-us":
            let text = value(flag)
            guard let v = Int(text), (0...10_000).contains(v) else { fail("--spin-us wants 0 to 10000, not '\(text)'") }
            options.spinMicroseconds = v
        case "-h", "--help":
            print(usage)
            exit(0)
        default: fail("unknown option '\(flag)'")
        }
    }
    if let c = options.concurrency, c > 100_000 { fail("--concurrency is at most 100000") }
    if options.target != nil, options.scenario != "echo", options.scenario != "http" {
        fail("--target goes with echo or http")
    }
    if options.scenario == nil, !options.secondsGiven { options.comparison.seconds = 2 }
    if let b = options.block, b > 64 << 20 { fail("--block is at most 64 MiB") }
    return options
}
