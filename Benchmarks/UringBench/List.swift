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

func runList(entries: Int, options: Options) async throws -> String {
    let directory = try prepareListDirectory(entries: entries, path: options.path)
    let path = FilePath(directory)
    let ours = try await measureListings(seconds: options.seconds, warmup: options.warmup) {
        var count = 0
        for try await entry in FileSystem.contents(of: path, includingStatus: options.listStatus) {
            if !entry.name.isEmpty { count += 1 }
        }
        return count
    }
    let rate = Double(ours.entries) / ours.seconds
    var parts = [
        "scenario=list", "entries=\(entries)", "status=\(options.listStatus)",
        "seconds=\(format(ours.seconds, decimals: 3))", "entries_per_sec=\(format(rate, decimals: 0))",
    ]
    if options.baseline {
        // The baseline runs on a plain thread, so that the ring is not what it measures.
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
        let baselineRate = Double(baseline.0) / max(baseline.1, 1e-9)
        parts += [
            "baseline=readdir", "baseline_entries_per_sec=\(format(baselineRate, decimals: 0))",
            "ratio_to_baseline=\(format(rate / max(baselineRate, 1), decimals: 3))",
        ]
    }
    return parts.joined(separator: " ")
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
