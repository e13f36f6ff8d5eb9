import Glibc
import SystemPackage
import Uring

// `uring-bench list`: directory listing against a synchronous readdir loop.

/// The directory of `entries` empty files the list scenario reads: created once, reused.
func prepareListDirectory(entries: Int, path: String?) throws -> String {
    let directory = path ?? "/tmp/uring-bench/list-\(entries)"
    let marker = directory + "/.complete"
    if access(marker, F_OK) == 0 { return directory }
    _ = mkdir("/tmp/uring-bench", 0o755)
    if mkdir(directory, 0o755) != 0 && errno != EEXIST { fail("cannot create \(directory)") }
    var stderr = StandardError()
    print("uring-bench: creating \(entries) files in \(directory) (once)", to: &stderr)
    for index in 0..<entries {
        let fd = open(directory + "/entry-\(index)", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        if fd < 0 { fail("cannot create files in \(directory): errno \(errno)") }
        close(fd)
    }
    let fd = open(marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
    close(fd)
    return directory
}

/// Lists `directory` again and again for `seconds` (after `warmup`), with `list` returning the
/// entries of one listing; entries per second.
func measureListings(seconds: Double, warmup: Double, _ list: () async throws -> Int) async rethrows -> (
    entries: Int, seconds: Double
) {
    let warmupEnd = nowNanoseconds() + UInt64(warmup * 1e9)
    while nowNanoseconds() < warmupEnd { _ = try await list() }
    let started = nowNanoseconds()
    let end = started + UInt64(seconds * 1e9)
    var entries = 0
    repeat { entries += try await list() } while nowNanoseconds() < end
    return (entries, Double(nowNanoseconds() - started) / 1e9)
}

/// One listing with `opendir`/`readdir` on the calling thread, counting entries ("." and ".."
/// skipped, as swift-uring does).
func readdirListing(_ directory: String) -> Int {
    guard let stream = opendir(directory) else { fail("opendir \(directory): errno \(errno)") }
    defer { closedir(stream) }
    var count = 0
    while let entry = readdir(stream) {
        let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
            name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
        }
        if !isDot { count += 1 }
    }
    return count
}

func runList(entries: Int, options: Options) async throws -> [String] {
    let directory = try prepareListDirectory(entries: entries, path: options.path)
    let path = FilePath(directory)
    let rounds = options.rounds ?? 1
    let peerSystems = options.peers ? ["foundation", "foundation-urls", "niofs", "niofs-batched"] : []
    if options.peers { _ = Peers.executable() }  // built before the first round, not inside it
    var ours: [Double] = []
    var baselines: [Double] = []
    var peerRates: [String: [Double]] = [:]
    var seconds: [Double] = []
    // Round by round: swift-uring, then readdir, then each peer, so that all of them share the
    // machine's state of the moment; medians over the rounds.
    for _ in 0..<rounds {
        let run = try await measureListings(seconds: options.seconds, warmup: options.warmup) {
            var count = 0
            for try await entry in FileSystem.contents(of: path, includingStatus: options.listStatus) {
                if !entry.name.isEmpty { count += 1 }
            }
            return count
        }
        ours.append(Double(run.entries) / run.seconds)
        seconds.append(run.seconds)
        if options.baseline { baselines.append(await readdirRate(directory, options: options)) }
        for system in peerSystems {
            let pairs = await BaselineThread.run {
                Peers.run([
                    "list", "--system", system, "--path", directory, "--seconds", "\(options.seconds)",
                    "--warmup", "\(options.warmup)",
                ])
            }
            guard let rate = pairs["entries_per_sec"].flatMap(Double.init) else {
                fail("the peer \(system) printed no entries_per_sec")
            }
            peerRates[system, default: []].append(rate)
        }
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    let rate = median(ours)
    var parts = [
        "scenario=list", "entries=\(entries)", "status=\(options.listStatus)", "rounds=\(rounds)",
        "seconds=\(format(median(seconds), decimals: 3))", "entries_per_sec=\(format(rate, decimals: 0))",
    ]
    if !baselines.isEmpty {
        // Each round's ratio against the readdir run right after it; the median of those.
        let ratios = zip(ours, baselines).map { $0.0 / max($0.1, 1) }
        parts += [
            "baseline=readdir", "baseline_entries_per_sec=\(format(median(baselines), decimals: 0))",
            "ratio_to_baseline=\(format(median(ratios), decimals: 3))",
        ]
    }
    var lines = [parts.joined(separator: " ")]
    for system in peerSystems {
        let rates = peerRates[system] ?? []
        let ratios = zip(ours, rates).map { $0.0 / max($0.1, 1) }
        lines.append(
            [
                "scenario=list", "entries=\(entries)", "rounds=\(rounds)", "peer=\(system)",
                "peer_entries_per_sec=\(format(median(rates), decimals: 0))",
                "entries_per_sec=\(format(rate, decimals: 0))",
                "ratio_to_peer=\(format(median(ratios), decimals: 3))",
                "round_ratios=\(ratios.map { format($0, decimals: 2) }.joined(separator: ","))",
            ].joined(separator: " "))
    }
    return lines
}

/// Entries per second of a synchronous `opendir`/`readdir` loop on a plain thread (so that the
/// ring is not what it measures), over `options.seconds` after `options.warmup`.
func readdirRate(_ directory: String, options: Options) async -> Double {
    let baseline = await BaselineThread.run {
        let start = nowNanoseconds()
        let end = start + UInt64((options.warmup + options.seconds) * 1e9)
        let measureFrom = start + UInt64(options.warmup * 1e9)
        var counted = 0
        var measuredStart: UInt64 = 0
        while true {
            let now = nowNanoseconds()
            if now >= end { return (counted, Double(now - measuredStart) / 1e9) }
            if now >= measureFrom && measuredStart == 0 { measuredStart = now }
            let n = readdirListing(directory)
            if measuredStart != 0 { counted += n }
        }
    }
    return Double(baseline.0) / max(baseline.1, 1e-9)
}

private final class Box: @unchecked Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Runs `body` on a new plain thread and awaits its result without blocking the ring.
enum BaselineThread {
    static func run<Result: Sendable>(_ body: @escaping @Sendable () -> Result) async -> Result {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result, Never>) in
            let box = Box { continuation.resume(returning: body()) }
            var thread = pthread_t()
            let context = Unmanaged.passRetained(box).toOpaque()
            let rc = pthread_create(
                &thread, nil,
                { raw in
                    Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
                    return nil
                }, context)
            if rc != 0 { fail("pthread_create: \(rc)") }
            pthread_detach(thread)
        }
    }
}
