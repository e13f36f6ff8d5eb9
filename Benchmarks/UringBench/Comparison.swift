import Glibc

// The comparison suite (`uring-bench` with no scenario): swift-uring and the systems a user has
// today, side by side in one run, each in a process of its own with the same pinning and the same
// load generator; interleaved rounds, medians, the noise checked. Figures go to a terminal table,
// `key=value` lines and, with `--report DIR`, an HTML page with charts and the JSON of every figure.

/// A workload of the suite.
struct Workload: Sendable {
    enum Group: String, Sendable { case files, echo, http }
    let id: String
    let title: String
    let group: Group
    /// The unit of the rate: "reads/s" or "requests/s".
    let unit: String
    var pattern = "random"
    var block = 0
    /// files: reads in flight; echo, http: connections.
    var concurrency = 1
    /// echo: bytes per message.
    var size = 0

    static let all: [Workload] = [
        Workload(
            id: "read-4k-random-1", title: "4 KiB random reads, 1 in flight", group: .files, unit: "reads/s",
            block: 4096, concurrency: 1),
        Workload(
            id: "read-4k-random-32", title: "4 KiB random reads, 32 in flight", group: .files, unit: "reads/s",
            block: 4096, concurrency: 32),
        Workload(
            id: "read-128k-sequential", title: "128 KiB sequential reads, 1 in flight", group: .files,
            unit: "reads/s", pattern: "sequential", block: 128 * 1024, concurrency: 1),
        Workload(
            id: "echo-1x64", title: "echo, 1 connection × 64 B", group: .echo, unit: "requests/s", concurrency: 1,
            size: 64),
        Workload(
            id: "echo-64x64", title: "echo, 64 connections × 64 B", group: .echo, unit: "requests/s",
            concurrency: 64, size: 64),
        Workload(
            id: "echo-64x4k", title: "echo, 64 connections × 4 KiB", group: .echo, unit: "requests/s",
            concurrency: 64, size: 4096),
        Workload(
            id: "http-hello-64", title: "HTTP GET /plaintext, 64 connections", group: .http, unit: "requests/s",
            concurrency: 64),
    ]

    /// The systems compared on a group's workloads; swift-uring first (the ratios' reference).
    static func systems(_ group: Group) -> [String] {
        switch group {
        case .files: ["swift-uring", "pread", "foundation", "niofs"]
        case .echo: ["swift-uring", "nio-handler", "nio-async"]
        case .http: ["swift-uring", "hummingbird"]
        }
    }

    /// What each system is, for the report.
    static let systemDescriptions: [String: String] = [
        "swift-uring": "this package (io_uring driver, or epoll where io_uring is denied)",
        "pread": "blocking pread(2), one plain thread per read in flight",
        "foundation": "Foundation FileHandle (seek, read(upToCount:)) in tasks, one handle per task",
        "niofs": "SwiftNIO's NIOFileSystem (readChunk on one handle, its thread pool)",
        "nio-handler": "SwiftNIO ChannelInboundHandler echo, 1 event loop",
        "nio-async": "SwiftNIO NIOAsyncChannel echo, a task per connection, 1 event loop",
        "hummingbird": "Hummingbird 2 router, GET /plaintext",
    ]
}

/// The suite's settings, from the command line.
struct ComparisonSettings {
    var rounds = 3
    var seconds = 2.0
    var warmup = 0.5
    /// nil: every workload / system.
    var workloads: Set<String>?
    var systems: Set<String>?
    var reportDirectory: String?
}

/// One system's figures on one workload in one round.
struct Figure {
    var workload: String
    var system: String
    var round: Int
    var perSecond: Double
    var p50: Double
    var p99: Double
    /// CPU µs per read (files: the reading process) or per request (the server's).
    var cpuPerOp: Double?
    var errors: Int
    /// Everything else's CPU during the run, % of one CPU, and steal time, %.
    var otherCPUPercent: Double
    var stealPercent: Double
    var command: String
}

/// Where the processes run: the system under test on one CPU, the load generator on another.
struct Pinning {
    var server: Int?
    var client: Int?
    static let taskset: String? = ["/usr/bin/taskset", "/bin/taskset"].first { access($0, X_OK) == 0 }

    init(allowed: [Int]) {
        guard allowed.count >= 2, Pinning.taskset != nil else { return }
        server = allowed[0]
        client = allowed[1]
    }

    /// `argv` run on `cpu` (through taskset), or as it is.
    static func command(_ argv: [String], on cpu: Int?) -> [String] {
        guard let cpu, let taskset else { return argv }
        return [taskset, "-c", "\(cpu)"] + argv
    }
}

/// Runs the suite and reports it.
func runComparison(_ settings: ComparisonSettings, options: Options) async throws {
    let began = nowNanoseconds()
    var stderr = StandardError()
    let allowed = readAllowedCPUs()
    let pinning = Pinning(allowed: allowed)
    var warnings: [String] = []
    if pinning.server == nil {
        warnings.append(
            allowed.count < 2
                ? "one CPU: every process shares it, unpinned; the ratios mean less"
                : "taskset is missing: processes are not pinned")
    }
    stopServersOnInterrupt()
    let workloads = Workload.all.filter { settings.workloads?.contains($0.id) ?? true }
    if workloads.isEmpty { fail("no workload selected (see --workloads)") }
    func systems(_ group: Workload.Group) -> [String] {
        Workload.systems(group).filter { $0 == "swift-uring" || (settings.systems?.contains($0) ?? true) }
    }
    let groups = [Workload.Group.files, .echo, .http].filter { group in workloads.contains { $0.group == group } }
    // Build what the run needs before it starts (not part of the run's time).
    let selfPath = executablePath()
    let needsPeers = groups.contains { systems($0).contains { !["swift-uring", "pread", "hummingbird"].contains($0) } }
    let needsHTTPPeer = groups.contains(.http) && systems(.http).contains("hummingbird")
    let peerBinary = needsPeers || needsHTTPPeer ? Peers.executable() : ""
    let httpPeerBinary = needsHTTPPeer ? Peers.executable("uring-peers-http") : ""
    var testFile = ""
    if groups.contains(.files) {
        let file = try await TestFile.prepare(path: options.path, size: 1 << 30)
        close(file.fd)
        testFile = options.path ?? "/tmp/uring-bench/testfile"
    }
    let machine = await MachineInfo.current()  // after the build: the peers' versions are known
    let runStarted = nowNanoseconds()
    print(
        "swift-uring comparison: \(settings.rounds) interleaved round(s), \(format(settings.warmup, decimals: 1)) s"
            + " warm-up + \(format(settings.seconds, decimals: 1)) s per run; "
            + (pinning.server.map { "systems on CPU \($0), load generator on CPU \(pinning.client!)" } ?? "unpinned"))
    print("machine: \(machine.cpuModel), \(machine.onlineCPUs) CPUs, kernel \(machine.kernel), \(machine.backend)")
    var figures: [Figure] = []
    let common = ["--seconds", "\(settings.seconds)", "--warmup", "\(settings.warmup)"]
    for round in 0..<settings.rounds {
        for group in groups {
            let groupSystems = systems(group)
            let order = Array(
                groupSystems[(round % groupSystems.count)...] + groupSystems[..<(round % groupSystems.count)])
            let groupWorkloads = workloads.filter { $0.group == group }
            print(
                "round \(round + 1)/\(settings.rounds): \(group.rawValue): \(order.joined(separator: ", "))",
                to: &stderr)
            if group == .files {
                for workload in groupWorkloads {
                    for system in order {
                        let shape = [
                            "--pattern", workload.pattern, "--block", "\(workload.block)", "--concurrency",
                            "\(workload.concurrency)", "--path", testFile,
                        ]
                        let argv: [String]
                        switch system {
                        case "swift-uring":
                            argv = [selfPath, "read", "--system", "swift-uring", "--no-baseline"] + shape + common
                        case "pread":
                            argv =
                                [
                                    selfPath, "read", "--system", "pread", "--baseline-threads",
                                    "\(workload.concurrency)",
                                ]
                                + shape + common
                        default: argv = [peerBinary, "read", "--system", system] + shape + common
                        }
                        figures.append(
                            measureProcess(
                                Pinning.command(argv, on: pinning.server), workload: workload, system: system,
                                round: round))
                    }
                }
                continue
            }
            for system in order {
                let port = freePort()
                let serverArgv: [String]
                switch system {
                case "swift-uring": serverArgv = [selfPath, "serve", group.rawValue, "--port", "\(port)"]
                case "hummingbird": serverArgv = [httpPeerBinary, "--port", "\(port)"]
                default: serverArgv = [peerBinary, "echo-server", "--system", system, "--port", "\(port)"]
                }
                let server = try ServerProcess(Pinning.command(serverArgv, on: pinning.server), port: port)
                for workload in groupWorkloads {
                    var load =
                        group == .echo
                        ? [
                            selfPath, "echo", "--target", "127.0.0.1:\(port)", "--connections",
                            "\(workload.concurrency)", "--size", "\(workload.size)",
                        ]
                        : [
                            selfPath, "http", "--target", "http://127.0.0.1:\(port)/plaintext", "--connections",
                            "\(workload.concurrency)",
                        ]
                    load += common + ["--server-pid", "\(server.pid)"]
                    // Unpinned on one CPU, the load generator must not spin on the server's core.
                    if pinning.client == nil { load += ["--spin-us", "0"] }
                    figures.append(
                        measureLoad(
                            Pinning.command(load, on: pinning.client), server: server,
                            serverCommand: Pinning.command(serverArgv, on: pinning.server), workload: workload,
                            system: system, round: round))
                }
                server.stop()
            }
        }
    }
    let runSeconds = Double(nowNanoseconds() - runStarted) / 1e9
    let summaries = summarize(figures, workloads: workloads, systems: systems)
    warnings += noiseWarnings(figures, summaries: summaries, rounds: settings.rounds)
    printComparisonTable(summaries, workloads: workloads, systems: systems)
    for summary in summaries { emit(summary.line) }
    for warning in warnings { print("uring-bench: warning: \(warning)", to: &stderr) }
    print(
        "uring-bench: the run took \(format(runSeconds, decimals: 0)) s"
            + " (\(format(Double(runStarted - began) / 1e9, decimals: 0)) s of builds and set-up before it)",
        to: &stderr)
    if let directory = settings.reportDirectory {
        let report = ComparisonReport(
            command: CommandLine.arguments.joined(separator: " "), machine: machine, pinning: pinning,
            settings: settings, workloads: workloads, systems: systems, figures: figures, summaries: summaries,
            warnings: warnings, runSeconds: runSeconds)
        let path = try report.write(to: directory)
        print("uring-bench: report written to \(path)", to: &stderr)
    }
}

/// This executable's path (for running its own scenarios in processes of their own).
func executablePath() -> String {
    var path = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &path, 4095)
    guard count > 0 else { return CommandLine.arguments[0] }
    return String(decoding: path[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A loopback port nobody listens on now.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 ? getsockname(fd, pointer, &length) : -1
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Runs one measuring process (a file workload) and reads its line.
private func measureProcess(_ argv: [String], workload: Workload, system: String, round: Int) -> Figure {
    let before = CPUSample.now()
    let (status, output, cpu) = spawnMeasured(argv[0], argv, captureOutput: true)
    let after = CPUSample.now()
    guard status == 0, let pairs = resultPairs(output), let rate = pairs["ops_per_sec"].flatMap(Double.init) else {
        abortRun("\(system) on \(workload.id) failed (status \(status)): \(argv.joined(separator: " "))\n\(output)")
    }
    return Figure(
        workload: workload.id, system: system, round: round, perSecond: rate,
        p50: pairs["p50_us"].flatMap(Double.init) ?? 0, p99: pairs["p99_us"].flatMap(Double.init) ?? 0,
        cpuPerOp: pairs["cpu_us_per_op"].flatMap(Double.init), errors: 0,
        otherCPUPercent: otherPercent(before, after, ours: cpu), stealPercent: stealPercent(before, after),
        command: argv.joined(separator: " "))
}

/// Runs the load generator against a server and reads its line.
private func measureLoad(
    _ argv: [String], server: ServerProcess, serverCommand: [String], workload: Workload, system: String, round: Int
) -> Figure {
    let before = CPUSample.now()
    let serverBefore = processCPUSeconds(of: server.pid) ?? 0
    let (status, output, cpu) = spawnMeasured(argv[0], argv, captureOutput: true)
    let serverAfter = processCPUSeconds(of: server.pid) ?? serverBefore
    let after = CPUSample.now()
    guard let pairs = resultPairs(output), let rate = pairs["requests_per_sec"].flatMap(Double.init) else {
        let log = server.logTail()
        server.stop()
        abortRun(
            "the load generator failed against \(system) on \(workload.id) (status \(status)):"
                + " \(argv.joined(separator: " "))\n\(output)\n\(log)")
    }
    let errors = Int(pairs["errors"] ?? "0") ?? 0
    if status != 0 || errors > 0 {
        var stderr = StandardError()
        print("uring-bench: \(system) on \(workload.id): \(errors) error(s) (status \(status))", to: &stderr)
    }
    return Figure(
        workload: workload.id, system: system, round: round, perSecond: rate,
        p50: pairs["p50_us"].flatMap(Double.init) ?? 0, p99: pairs["p99_us"].flatMap(Double.init) ?? 0,
        cpuPerOp: pairs["server_cpu_us_per_request"].flatMap(Double.init), errors: errors,
        otherCPUPercent: otherPercent(before, after, ours: cpu + serverAfter - serverBefore),
        stealPercent: stealPercent(before, after),
        command: serverCommand.joined(separator: " ") + " & " + argv.joined(separator: " "))
}

private func otherPercent(_ before: CPUSample, _ after: CPUSample, ours: Double) -> Double {
    let wall = after.taken - before.taken
    guard wall > 0 else { return 0 }
    return max(0, (after.busy - before.busy - ours) / wall * 100)
}

private func stealPercent(_ before: CPUSample, _ after: CPUSample) -> Double {
    let wall = after.taken - before.taken
    return wall > 0 ? (after.steal - before.steal) / wall * 100 : 0
}

extension Workload.Group {
    /// Every system of every group.
    static var allSystems: [String] {
        [Workload.Group.files, .echo, .http].flatMap { Workload.systems($0) }
    }
}
