import Glibc

// The peers: other systems doing the same work, each in a process of its own. They live in the
// package Benchmarks/Peers (SwiftNIO and Foundation), so that `import Uring` users never fetch
// SwiftNIO; `uring-bench` builds it on first use.

enum Peers {
    /// The peer package's directory: `SWIFT_URING_PEERS_PACKAGE`, or Benchmarks/Peers next to this
    /// source file (a build from a clone of the repository).
    static var packageDirectory: String {
        if let override = getenv("SWIFT_URING_PEERS_PACKAGE") { return String(cString: override) }
        let source = #filePath  // …/Benchmarks/UringBench/Peers.swift
        var parts = source.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(2)
        return parts.joined(separator: "/") + "/Peers"
    }

    /// A peer executable (`uring-peers`, or `uring-peers-http` for Hummingbird), built (release) by
    /// `swift build` the first time one is asked for: the whole package, so that one build serves
    /// every later run. Exits with a clear message when it cannot be built.
    static func executable(_ product: String = "uring-peers") -> String {
        let directory = packageDirectory
        let binary = directory + "/.build/\(configuration)/" + product
        if access(binary, X_OK) == 0, modificationTime(binary) >= newestSource(directory) { return binary }
        guard access(directory + "/Package.swift", R_OK) == 0 else {
            abortRun("the peers' package is not at \(directory) (set SWIFT_URING_PEERS_PACKAGE)")
        }
        var stderr = StandardError()
        print(
            "uring-bench: building the peers in \(directory) (first use, or their sources changed: SwiftNIO"
                + " and Hummingbird take about 5 minutes here the first time; not counted in the run's time)…",
            to: &stderr)
        let swift = swiftCommand()
        let status = spawnAndWait(
            swift, [swift, "build", "-c", configuration, "--package-path", directory],
            captureOutput: false
        ).status
        guard status == 0, access(binary, X_OK) == 0 else {
            abortRun("building the peers failed (swift build exited with \(status)); see the output above")
        }
        // An up-to-date build may leave the binary as it was: mark it current, or every run rebuilds.
        _ = utime(binary, nil)
        print("uring-bench: the peers are built", to: &stderr)
        return binary
    }

    /// How the peers are built: release, or `SWIFT_URING_PEERS_CONFIGURATION=debug` (CI, which
    /// checks the report's structure and not the figures, and builds debug a minute faster).
    static var configuration: String {
        getenv("SWIFT_URING_PEERS_CONFIGURATION").map { String(cString: $0) } == "debug" ? "debug" : "release"
    }

    /// The newest modification time of the package's manifest and sources (0 when unreadable).
    private static func newestSource(_ directory: String) -> Double {
        var newest = modificationTime(directory + "/Package.swift")
        func walk(_ path: String) {
            guard let handle = opendir(path) else { return }
            defer { closedir(handle) }
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name.hasPrefix(".") { continue }
                let child = path + "/" + name
                if Int32(entry.pointee.d_type) == DT_DIR {
                    walk(child)
                } else {
                    newest = max(newest, modificationTime(child))
                }
            }
        }
        walk(directory + "/Sources")
        return newest
    }

    /// `swift` from PATH, or the toolchain's under /opt/swift.
    private static func swiftCommand() -> String {
        let path = getenv("PATH").map { String(cString: $0) } ?? ""
        for directory in path.split(separator: ":") where access("\(directory)/swift", X_OK) == 0 {
            return "\(directory)/swift"
        }
        return "/opt/swift/usr/bin/swift"
    }

    /// Runs the peer with `arguments` and parses its one result line into its `key=value` pairs.
    static func run(_ arguments: [String]) -> [String: String] {
        let binary = executable()
        let (status, output) = spawnAndWait(binary, ["uring-peers"] + arguments, captureOutput: true)
        guard status == 0, let pairs = resultPairs(output) else {
            abortRun("the peer '\(arguments.joined(separator: " "))' failed (status \(status)): \(output)")
        }
        return pairs
    }
}

/// The `key=value` pairs of the last result line in `output` (nil when there is none).
func resultPairs(_ output: String) -> [String: String]? {
    guard let line = output.split(separator: "\n").last(where: { $0.contains("=") }) else { return nil }
    var pairs: [String: String] = [:]
    for pair in line.split(separator: " ") {
        guard let equals = pair.firstIndex(of: "=") else { continue }
        pairs[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    return pairs
}

/// Starts `path` with `argv` and waits for it; its standard output is returned when captured
/// (otherwise it goes to this process's standard error, as build output should).
func spawnAndWait(_ path: String, _ argv: [String], captureOutput: Bool) -> (status: Int32, output: String) {
    let result = spawnMeasured(path, argv, captureOutput: captureOutput)
    return (result.status, result.output)
}

/// `spawnAndWait`, and the CPU time (user and system, all threads) the child used, from `wait4`.
func spawnMeasured(_ path: String, _ argv: [String], captureOutput: Bool)
    -> (status: Int32, output: String, cpuSeconds: Double)
{
    var pipeEnds: [Int32] = [-1, -1]
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if captureOutput {
        guard pipe(&pipeEnds) == 0 else { abortRun("pipe: errno \(errno)") }
        for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }  // only the dup2'd copy reaches the child
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
    } else {
        posix_spawn_file_actions_adddup2(&actions, 2, 1)
    }
    var arguments = argv.map { strdup($0) } + [nil]
    defer { for pointer in arguments { free(pointer) } }
    var pid = pid_t()
    var attributes = cleanSpawnAttributes()
    defer { posix_spawnattr_destroy(&attributes) }
    let rc = posix_spawn(&pid, path, &actions, &attributes, &arguments, environ)
    if captureOutput { close(pipeEnds[1]) }
    guard rc == 0 else {
        if captureOutput { close(pipeEnds[0]) }
        abortRun("cannot start \(path): \(String(cString: strerror(rc)))")
    }
    var output: [UInt8] = []
    if captureOutput {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(pipeEnds[0], &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            output += chunk[..<count]
        }
        close(pipeEnds[0])
    }
    let (status, cpu) = reap(pid)
    return (status, String(decoding: output, as: UTF8.self), cpu)
}

/// Spawn attributes for a child that starts clean: no blocked signals and default dispositions
/// (ring threads block some signals, and a server must stop on SIGTERM). Destroy after use.
func cleanSpawnAttributes() -> posix_spawnattr_t {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    return attributes
}

/// A file's modification time in seconds since the epoch (0 when it cannot be read).
func modificationTime(_ path: String) -> Double {
    var status = stat()
    guard stat(path, &status) == 0 else { return 0 }
    return Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9
}

/// Waits for child `pid`: its exit status (128 + the signal if a signal ended it) and its CPU time.
func reap(_ pid: pid_t) -> (status: Int32, cpuSeconds: Double) {
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    let cpu =
        Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
        + Double(usage.ru_stime.tv_usec) / 1e6
    return (exitStatus, cpu)
}
