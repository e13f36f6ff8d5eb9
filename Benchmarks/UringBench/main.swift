import Glibc
import SystemPackage
import Uring

// uring-bench: swift-uring's benchmark target. See Docs/Benchmarks.md for the method.
//
//   uring-bench [--report DIR]       the comparison with the peers, as a table (and a report)
//   uring-bench core                 swift-uring alone against pread, as a table (under two minutes)
//   uring-bench echo|http --target … the load generator against any server
//   uring-bench serve echo|http --port P
//   uring-bench nop  [--concurrency N] [--seconds S]
//   uring-bench floor [--concurrency N] [--seconds S]
//   uring-bench read [--path P] [--pattern random|sequential] [--block B] [--concurrency N] [--seconds S]
//   uring-bench list [--entries N] [--status] [--path DIR] [--seconds S]
//   uring-bench copy [--size-mib N] [--rounds R] [--path P]
//   uring-bench map [--entries N] [--concurrency L] [--rounds R]
//   uring-bench echo [--connections N] [--size B] [--seconds S]
//   uring-bench idle [--connections N]
//   uring-bench soak [--connections N] [--seconds S]
//
// A scenario run alone prints exactly one line of key=value pairs starting with scenario=NAME.

/// The malloc counter must see every allocation: if the interposer library was not bound ahead of
/// libc's malloc, run again with it preloaded.
func ensureAllocationCounting() {
    if Allocations.working || getenv("URING_BENCH_REEXEC") != nil { return }
    let executable = CommandLine.arguments[0]
    var path = [CChar](repeating: 0, count: 4096)
    guard readlink("/proc/self/exe", &path, 4095) > 0 else { return }
    let exe = String(decoding: path.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let library = String(exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)]) + "/libMallocInterposerSwift.so"
    guard access(library, R_OK) == 0 else { return }
    setenv("LD_PRELOAD", library, 1)
    setenv("URING_BENCH_REEXEC", "1", 1)
    var argv = CommandLine.arguments.map { strdup($0) } + [nil]
    argv[0] = strdup(exe)
    execv(exe, &argv)
    _ = executable
}

/// Lets the idle and soak scenarios hold thousands of connections (the soft default is often 1,024).
func raiseDescriptorLimit() {
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

ensureAllocationCounting()
// The harness itself blocks the main ring on purpose at times (preparing the test file, joining
// ring threads): keep the stall detector's reports out of the measurements' output.
StallDetector.threshold = nil
let options = parse(Array(CommandLine.arguments.dropFirst()))
if !Allocations.working {
    var stderr = StandardError()
    print("uring-bench: warning: allocation counting is unavailable (mallocs_per_op=unknown)", to: &stderr)
}

/// The whole benchmark runs as the main task of `Uring.run`: the process's default executor is a
/// ring, so `--executor global` workers are plain tasks on it.
func benchmarkMain(_ options: Options) async throws {
    switch options.scenario {
    case "nop":
        let results = try await runNop(concurrency: options.concurrency ?? 64, options: options)
        emit(machineLine(results[0], baseline: results.count > 1 ? results[1] : nil))
    case "floor":
        emit(floorLine(try await runFloor(concurrency: options.concurrency ?? 64, options: options)))
    case "read":
        let block = options.block ?? (options.pattern == "random" ? 4096 : 128 * 1024)
        let results = try await runRead(
            pattern: options.pattern, block: block, concurrency: options.concurrency ?? 32, options: options)
        if let system = options.system {
            emit(machineLine(results[0], baseline: nil) + " system=\(system)")
        } else {
            emit(machineLine(results[0], baseline: results.count > 1 ? results[1] : nil))
        }
    case "list":
        for line in try await runList(entries: options.entries, options: options) { emit(line) }
    case "copy":
        emit(try await runCopy(options: options))
    case "map":
        emit(try await runMap(options: options))
    case "echo" where options.target != nil:
        guard let target = Target.parseEndpoint(options.target!) else {
            fail("--target wants HOST:PORT, not '\(options.target!)'")
        }
        let result = try await runEchoTarget(
            target, connections: options.concurrency ?? 64, size: options.block ?? 64, pipeline: options.pipeline,
            options: options)
        emit(targetLine(result))
        if result.verifyErrors + result.connectionErrors > 0 { exitStatus = 1 }
    case "http" where options.target != nil:
        if options.target!.hasPrefix("https://") {
            fail("https:// targets are not supported: the load generator speaks HTTP/1.1 over TCP")
        }
        guard let target = Target.parseURL(options.target!) else {
            fail("--target wants http://HOST[:PORT][/PATH], not '\(options.target!)'")
        }
        let result = try await runHTTPTarget(
            target, connections: options.concurrency ?? 64, pipeline: options.pipeline, options: options)
        emit(targetLine(result))
        if result.verifyErrors + result.connectionErrors > 0 { exitStatus = 1 }
    case "serve":
        try await runServe(kind: options.serveKind, host: options.host, port: options.port)
    case "echo":
        let size = options.block ?? 64
        let result = try await runEcho(connections: options.concurrency ?? 64, size: size, options: options)
        emit(echoLine(result, size: size))
    case "http":
        emit(httpLine(try await runHTTP(connections: options.concurrency ?? 64, options: options)))
    case "handoff":
        emit(try await runHandoff(options: options))
    case "idle":
        raiseDescriptorLimit()
        emit(try await runIdle(connections: options.concurrency ?? 5000))
    case "soak":
        raiseDescriptorLimit()
        emit(
            try await runSoak(
                connections: options.concurrency ?? 1000, seconds: options.secondsGiven ? options.seconds : 30))
    case "soak-server":
        raiseDescriptorLimit()
        try await serveSoak()
    case "core":
        try await runCore(options)
    default:
        try await runComparison(options.comparison, options: options)
    }
}

/// 1 when a load generator run saw errors.
nonisolated(unsafe) var exitStatus: Int32 = 0

do {
    try Uring.run { try await benchmarkMain(options) }
} catch {
    var stderr = StandardError()
    print("uring-bench: \(error)", to: &stderr)
    exit(1)
}
exit(exitStatus)
