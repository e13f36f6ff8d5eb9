import Glibc
import SystemPackage
import Uring

// uring-bench: swift-uring's benchmark target. See Docs/Benchmarks.md for the method.
//
//   uring-bench                      the whole suite, as a table (under two minutes)
//   uring-bench nop  [--concurrency N] [--seconds S]
//   uring-bench read [--path P] [--pattern random|sequential] [--block B] [--concurrency N] [--seconds S]
//   uring-bench echo [--connections N] [--size B] [--seconds S]
//   uring-bench idle [--connections N]
//   uring-bench soak [--connections N] [--seconds S]
//
// A scenario run alone prints exactly one line of key=value pairs starting with scenario=NAME.

let usage = """
    usage: uring-bench [nop|read|echo|idle|http|handoff|soak] [options]
      (no scenario)               run the whole suite and print a table
      nop  --concurrency N        awaited no-ops from N tasks on one ring (default 64)
      read --pattern random|sequential --block B --concurrency N --path P
                                  reads of a file (default: a 1 GiB file in /tmp/uring-bench, created once)
      echo --connections N --size B
                                  loopback TCP echo: a server ring and a client ring in this
                                  process; N connections (default 64) each send B bytes (default
                                  64) and wait for the echo; --zero-copy automatic|always|never
                                  for the clients' sends (default automatic)
      http --connections N        uring-http's server (hello mode) and keep-alive clients in this
                                  process; N connections (default 64)
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
      --baseline-threads T        threads for the pread baseline (default 1: the per-core comparison)
      --executor global|preference
                                  global (default): worker tasks are plain tasks on the ring that
                                  Uring.run installs; preference: Task(executorPreference:) on a
                                  separate RingExecutor
      --rings N                   nop/read: a RingGroup of N rings with --concurrency tasks on
                                  each (the multi-core scaling run)
      --stats                     print each ring's counters (to standard error) after its run
    """

struct Options {
    var scenario: String?
    var concurrency: Int?
    var seconds = 3.0
    var secondsGiven = false
    var spinMicroseconds = 0
    var warmup = 0.5
    var path: String?
    var pattern = "random"
    var block: Int?
    var baseline = true
    var baselineThreads = 1
    var executor = ExecutorMode.global
    var zeroCopy = TCPConnection.ZeroCopy.automatic
}

func fail(_ message: String) -> Never {
    var stderr = StandardError()
    print("uring-bench: \(message)\n\(usage)", to: &stderr)
    exit(64)
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
        guard ["nop", "read", "echo", "idle", "http", "handoff", "soak", "soak-server"].contains(first) else { fail("unknown scenario '\(first)'") }
        options.scenario = first
        rest = rest.dropFirst()
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
        guard let v = Double(text), v.isFinite, allowZero ? v >= 0 : v > 0 else { fail("\(flag) wants a positive number, not '\(text)'") }
        return v
    }
    while let flag = rest.popFirst() {
        switch flag {
        case "--concurrency": options.concurrency = positiveInt(flag)
        case "--seconds":
            options.seconds = positiveDouble(flag)
            options.secondsGiven = true
        case "--warmup": options.warmup = positiveDouble(flag, allowZero: true)
        case "--path": options.path = value(flag)
        case "--pattern":
            let p = value(flag)
            guard p == "random" || p == "sequential" else { fail("--pattern is random or sequential, not '\(p)'") }
            options.pattern = p
        case "--block": options.block = positiveInt(flag)
        case "--connections": options.concurrency = positiveInt(flag)
        case "--size": options.block = positiveInt(flag)
        case "--no-baseline": options.baseline = false
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
    if let b = options.block, b > 64 << 20 { fail("--block is at most 64 MiB") }
    return options
}

// MARK: - Scenarios

func runNop(concurrency: Int, options: Options) async throws -> [Measurement] {
    let fields = [("concurrency", "\(concurrency)"), ("executor", options.executor.rawValue)]
    // One in 8 operations is timed: the clock reads would otherwise be a visible part of a no-op.
    var results = [
        try await measureOnRing(
            scenario: "nop", mode: options.executor, fields: fields, concurrency: concurrency, block: nil, seconds: options.seconds,
            warmup: options.warmup, sampleEvery: 8,
            offsets: { OffsetGenerator(worker: $0, workers: 1, block: 1, fileSize: 1, sequential: true) },
            operation: { _, _ throws(IOError) in try await Uring.nop() })
    ]
    if options.baseline {
        // The cheapest blocking file syscall: a 1-byte pread from the page cache.
        let file = try await TestFile.prepare(path: "/tmp/uring-bench/nop-1mib", size: 1 << 20)
        defer { close(file.fd) }
        results.append(
            measurePread(
                scenario: "nop", fields: fields, threads: options.baselineThreads, fd: file.fd, block: 1,
                fileSize: 1, sequential: true, seconds: options.seconds, warmup: options.warmup, sampleEvery: 8))
    }
    return results
}

func runRead(pattern: String, block: Int, concurrency: Int, options: Options) async throws -> [Measurement] {
    let file = try await TestFile.prepare(path: options.path, size: 1 << 30)
    defer { close(file.fd) }
    guard file.size >= Int64(block) else { fail("the file is smaller than one block") }
    let sequential = pattern == "sequential"
    let fields = [
        ("pattern", pattern), ("block", "\(block)"), ("concurrency", "\(concurrency)"),
        ("executor", options.executor.rawValue),
    ] + (options.executor == .group ? [("rings", "\(groupRings)")] : [])
    let uringFile = File(descriptor: FileDescriptor(rawValue: file.fd))
    let size = file.size
    var results = [
        try await measureOnRing(
            scenario: "read", mode: options.executor, fields: fields, concurrency: concurrency, block: block, seconds: options.seconds,
            warmup: options.warmup, sampleEvery: 8,
            offsets: { OffsetGenerator(worker: $0, workers: concurrency, block: block, fileSize: size, sequential: sequential) },
            operation: { offsets, buffer throws(IOError) in
                _ = try await uringFile.read(into: buffer, at: offsets.next())
            })
    ]
    if options.baseline {
        results.append(
            measurePread(
                scenario: "read", fields: fields, threads: options.baselineThreads, fd: file.fd, block: block,
                fileSize: file.size, sequential: sequential, seconds: options.seconds, warmup: options.warmup,
                sampleEvery: 8))
    }
    return results
}

/// The benchmark file: created once (random bytes), reused, and read once into the page cache.
struct TestFile {
    let fd: Int32
    let size: Int64

    static func prepare(path: String?, size wanted: Int64) async throws -> TestFile {
        let path = path ?? "/tmp/uring-bench/testfile"
        if path.hasPrefix("/tmp/uring-bench/") {
            mkdir("/tmp/uring-bench", 0o755)
            var st = stat()
            if stat(path, &st) != 0 || Int64(st.st_size) < wanted {
                try await create(path, size: wanted)
            }
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { fail("cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        fstat(fd, &st)
        // Warm the page cache: read it all once.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: off_t = 0
        while pread(fd, buffer, 1 << 20, offset) > 0 { offset += 1 << 20 }
        return TestFile(fd: fd, size: Int64(st.st_size))
    }

    static func create(_ path: String, size: Int64) async throws {
        var stderr = StandardError()
        print("uring-bench: creating \(size >> 20) MiB test file \(path) (once)", to: &stderr)
        let temporary = FilePath(path + ".partial")
        let file = try await File.open(temporary, .writeOnly, options: [.create, .truncate])
        var state: UInt64 = 0x1234_5678
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { chunk.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            for i in stride(from: 0, to: chunk.count, by: 8) {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                chunk.storeBytes(of: z ^ (z >> 31), toByteOffset: i, as: UInt64.self)
            }
            try await file.write(UnsafeRawBufferPointer(chunk), at: offset)
            offset += Int64(chunk.count)
        }
        try await file.sync()
        try await file.close()
        try await FileSystem.rename(temporary, to: FilePath(path))
    }
}

// MARK: - Output

func machineLine(_ m: Measurement, baseline: Measurement?) -> String {
    var parts = ["scenario=\(m.scenario)"]
    for (key, value) in m.fields where key != "executor" && key != "rings" { parts.append("\(key)=\(value)") }
    parts.append("seconds=\(format(m.seconds, decimals: 3))")
    parts.append("ops=\(m.ops)")
    parts.append("ops_per_sec=\(format(m.opsPerSecond, decimals: 0))")
    if m.scenario == "read", let mib = m.mebibytesPerSecond { parts.append("mib_per_sec=\(format(mib, decimals: 1))") }
    parts.append("p50_us=\(format(m.histogram.quantile(0.50) / 1000, decimals: 3))")
    parts.append("p99_us=\(format(m.histogram.quantile(0.99) / 1000, decimals: 3))")
    parts.append("mallocs_per_op=" + (m.mallocsPerOp.map { format($0, decimals: 4) } ?? "unknown"))
    // Extra keys, after the contracted ones.
    if let executor = m.fields.first(where: { $0.0 == "executor" }) { parts.append("executor=\(executor.1)") }
    if let rings = m.fields.first(where: { $0.0 == "rings" }) { parts.append("rings=\(rings.1)") }
    if let baseline {
        parts.append("baseline=pread_x\(baseline.concurrency)")
        parts.append("baseline_ops_per_sec=\(format(baseline.opsPerSecond, decimals: 0))")
        parts.append("ratio_to_baseline=\(format(m.opsPerSecond / max(baseline.opsPerSecond, 1), decimals: 3))")
    }
    return parts.joined(separator: " ")
}

func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
    let padding = String(repeating: " ", count: max(0, width - text.count))
    return left ? text + padding : padding + text
}

func printTable(_ rows: [(Measurement, Measurement?)]) {
    let header = [
        pad("scenario", 26, left: true), pad("engine", 16, left: true), pad("ops/s", 12), pad("MiB/s", 9),
        pad("p50 us", 8), pad("p99 us", 9), pad("mallocs/op", 11), pad("vs pread", 9),
    ].joined(separator: " ")
    print(header)
    print(String(repeating: "-", count: header.count))
    for (m, baseline) in rows {
        let name =
            m.scenario == "echo"
            ? "echo \(m.concurrency) conns x \(m.fields.first { $0.0 == "size" }?.1 ?? "?") B"
            : ([m.scenario] + m.fields.filter { $0.0 != "executor" }.map { $0.0 == "concurrency" ? "N=\($0.1)" : $0.1 })
                .joined(separator: " ")
        let ratio = m.engine.hasPrefix("swift-uring") ? baseline.map { format(m.opsPerSecond / max($0.opsPerSecond, 1)) + "x" } ?? "" : ""
        print([
            pad(name, 26, left: true), pad(m.engine, 16, left: true), pad(format(m.opsPerSecond, decimals: 0), 12),
            pad(m.scenario == "read" ? format(m.mebibytesPerSecond ?? 0, decimals: 0) : "-", 9),
            pad(format(m.histogram.quantile(0.5) / 1000, decimals: 2), 8),
            pad(format(m.histogram.quantile(0.99) / 1000, decimals: 2), 9),
            pad(m.mallocsPerOp.map { format($0, decimals: 3) } ?? "?", 11), pad(ratio, 9),
        ].joined(separator: " "))
    }
}

func machineDescription() -> String {
    var uts = utsname()
    uname(&uts)
    let kernel = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    var cpu = "unknown CPU"
    if let f = fopen("/proc/cpuinfo", "r") {
        defer { fclose(f) }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        while getline(&line, &capacity, f) > 0 {
            let text = String(cString: line!)
            if text.hasPrefix("model name") {
                cpu = text.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters() } ?? cpu
                break
            }
        }
        free(line)
    }
    let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    #if compiler(>=6.3)
    let swift = "Swift 6.3+"
    #else
    let swift = "Swift < 6.3"
    #endif
    return "kernel \(kernel), \(cores) CPUs (\(cpu)), liburing 2.3 headers, \(swift)"
}

extension Substring {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\n" || $0 == "\t" }.reversed())
    }
}

// MARK: - Main

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
        print(machineLine(results[0], baseline: results.count > 1 ? results[1] : nil))
    case "read":
        let block = options.block ?? (options.pattern == "random" ? 4096 : 128 * 1024)
        let results = try await runRead(
            pattern: options.pattern, block: block, concurrency: options.concurrency ?? 32, options: options)
        print(machineLine(results[0], baseline: results.count > 1 ? results[1] : nil))
    case "echo":
        let size = options.block ?? 64
        let result = try await runEcho(connections: options.concurrency ?? 64, size: size, options: options)
        print(echoLine(result, size: size))
    case "http":
        print(httpLine(try await runHTTP(connections: options.concurrency ?? 64, options: options)))
    case "handoff":
        print(try await runHandoff(options: options))
    case "idle":
        raiseDescriptorLimit()
        print(try await runIdle(connections: options.concurrency ?? 5000))
    case "soak":
        raiseDescriptorLimit()
        print(try await runSoak(connections: options.concurrency ?? 1000, seconds: options.secondsGiven ? options.seconds : 30))
    case "soak-server":
        raiseDescriptorLimit()
        try await serveSoak()
    default:
        print("swift-uring benchmark suite: \(machineDescription())")
        print(
            "each run: \(format(options.warmup, decimals: 1)) s warm-up, \(format(options.seconds, decimals: 1)) s measured;"
                + " swift-uring = plain tasks under Uring.run, swift-uring/pref = Task(executorPreference:);"
                + " baseline: blocking pread on \(options.baselineThreads) plain thread(s)")
        print("")
        var rows: [(Measurement, Measurement?)] = []
        var nopBaseline: Measurement?
        for (n, mode) in [(1, ExecutorMode.global), (64, .global), (64, .preference)] {
            var o = options
            o.executor = mode
            o.baseline = options.baseline && nopBaseline == nil
            let r = try await runNop(concurrency: n, options: o)
            if r.count > 1 { nopBaseline = r[1] }
            rows.append((r[0], nopBaseline))
        }
        if let nopBaseline { rows.append((nopBaseline, nil)) }
        for (pattern, block) in [("random", 4096), ("sequential", 128 * 1024)] {
            var baseline: Measurement?
            for (n, mode) in [(1, ExecutorMode.global), (32, .global), (32, .preference)] {
                if pattern == "sequential" && mode == .preference { continue }
                var o = options
                o.executor = mode
                o.baseline = options.baseline && baseline == nil
                let r = try await runRead(pattern: pattern, block: block, concurrency: n, options: o)
                if r.count > 1 { baseline = r[1] }
                rows.append((r[0], baseline))
            }
            if let baseline { rows.append((baseline, nil)) }
        }
        rows.append((try await runEcho(connections: 64, size: 64, options: options), nil))
        printTable(rows)
    }
}

do {
    try Uring.run { try await benchmarkMain(options) }
} catch {
    var stderr = StandardError()
    print("uring-bench: \(error)", to: &stderr)
    exit(1)
}
