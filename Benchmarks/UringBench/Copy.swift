import Glibc
import SystemPackage
import Uring

// `uring-bench copy`: FileSystem.copyItem of a page-cached file against coreutils `cp`.

/// Runs `/bin/cp source destination` and waits for it; false if it failed.
func runCp(_ source: String, _ destination: String) -> Bool {
    spawnAndWait("/bin/cp", ["cp", source, destination], captureOutput: false).status == 0
}

func runCopy(options: Options) async throws -> String {
    let size = Int64(options.copyMiB) << 20
    let file = try await TestFile.prepare(path: options.path, size: size)
    close(file.fd)
    let source = options.path ?? "/tmp/uring-bench/testfile"
    let destination = "/tmp/uring-bench/copy-destination"
    var ours: [Double] = []
    var cp: [Double] = []
    // Alternated, each after the destination is gone and dirty pages are written back, so that
    // neither pays for the other's writeback.
    for _ in 0..<(options.rounds ?? 5) {
        unlink(destination)
        sync()
        var started = nowNanoseconds()
        try await FileSystem.copyItem(at: FilePath(source), to: FilePath(destination))
        ours.append(Double(nowNanoseconds() - started) / 1e9)
        unlink(destination)
        sync()
        if options.baseline {
            started = nowNanoseconds()
            guard runCp(source, destination) else { fail("/bin/cp failed") }
            cp.append(Double(nowNanoseconds() - started) / 1e9)
            unlink(destination)
        }
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    let bytes = Double(file.size)
    let rate = bytes / median(ours) / 1_048_576
    var parts = [
        "scenario=copy", "bytes=\(file.size)", "rounds=\(options.rounds ?? 5)",
        "seconds=\(format(median(ours), decimals: 4))", "mib_per_sec=\(format(rate, decimals: 0))",
    ]
    if !cp.isEmpty {
        // Paired: each round's copy against the cp run right after it (page-cache and writeback
        // state drift over a run; a pair shares it).
        let cpRate = bytes / median(cp) / 1_048_576
        let ratios = zip(ours, cp).map { $0.1 / $0.0 }
        parts += [
            "baseline=cp", "baseline_mib_per_sec=\(format(cpRate, decimals: 0))",
            "ratio_to_baseline=\(format(median(ratios), decimals: 3))",
            "round_ratios=\(ratios.map { format($0, decimals: 2) }.joined(separator: ","))",
        ]
    }
    return parts.joined(separator: " ")
}
