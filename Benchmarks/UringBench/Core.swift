import Uring

/// `uring-bench core`: swift-uring alone in this process, no-op, read and echo rates against
/// blocking pread, as one table.
func runCore(_ options: Options) async throws {
    print("swift-uring benchmark suite: \(machineDescription()); backend=\(runningBackend)")
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
