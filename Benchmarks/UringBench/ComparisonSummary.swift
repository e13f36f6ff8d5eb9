import Glibc

// The comparison suite's medians, ratios, noise warnings and terminal table.

/// One system on one workload over every round.
struct Summary {
    var workload: Workload
    var system: String
    var rounds: [Figure]
    var median: Double
    var minimum: Double
    var maximum: Double
    /// The per-round ratio to swift-uring's rate in the same round: median, min, max (1 for
    /// swift-uring itself; nil when swift-uring has no figure).
    var ratio: Double?
    var ratioMinimum: Double?
    var ratioMaximum: Double?
    var p50: Double
    var p99: Double
    var cpuPerOp: Double?
    var errors: Int

    /// `scenario=compare workload=… system=… …`: the line scripts read.
    var line: String {
        var parts = [
            "scenario=compare", "workload=\(workload.id)", "system=\(system)", "rounds=\(rounds.count)",
            "per_sec=\(format(median, decimals: 0))", "min_per_sec=\(format(minimum, decimals: 0))",
            "max_per_sec=\(format(maximum, decimals: 0))",
        ]
        if let ratio { parts.append("ratio_to_swift_uring=\(format(ratio, decimals: 3))") }
        parts.append("p50_us=\(format(p50, decimals: 3))")
        parts.append("p99_us=\(format(p99, decimals: 3))")
        parts.append("cpu_us_per_op=" + (cpuPerOp.map { format($0, decimals: 3) } ?? "unknown"))
        parts.append("errors=\(errors)")
        return parts.joined(separator: " ")
    }
}

func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

func summarize(_ figures: [Figure], workloads: [Workload], systems: (Workload.Group) -> [String]) -> [Summary] {
    var summaries: [Summary] = []
    for workload in workloads {
        let reference = Dictionary(
            figures.filter { $0.workload == workload.id && $0.system == "swift-uring" }.map {
                ($0.round, $0.perSecond)
            },
            uniquingKeysWith: { first, _ in first })
        for system in systems(workload.group) {
            let rounds = figures.filter { $0.workload == workload.id && $0.system == system }
            guard !rounds.isEmpty else { continue }
            let rates = rounds.map(\.perSecond)
            let ratios = rounds.compactMap { figure in reference[figure.round].map { figure.perSecond / max($0, 1e-9) }
            }
            let cpu = rounds.compactMap(\.cpuPerOp)
            summaries.append(
                Summary(
                    workload: workload, system: system, rounds: rounds, median: median(rates),
                    minimum: rates.min() ?? 0, maximum: rates.max() ?? 0,
                    ratio: ratios.isEmpty ? nil : median(ratios), ratioMinimum: ratios.min(),
                    ratioMaximum: ratios.max(), p50: median(rounds.map(\.p50)), p99: median(rounds.map(\.p99)),
                    cpuPerOp: cpu.isEmpty ? nil : median(cpu), errors: rounds.reduce(0) { $0 + $1.errors }))
        }
    }
    return summaries
}

/// The warnings a reader of the figures needs: other processes' CPU, steal time, rounds that
/// disagree, errors.
func noiseWarnings(_ figures: [Figure], summaries: [Summary], rounds: Int) -> [String] {
    var warnings: [String] = []
    let busy = figures.filter { $0.otherCPUPercent > 10 }
    if !busy.isEmpty {
        let worst = busy.map(\.otherCPUPercent).max() ?? 0
        warnings.append(
            "other processes used more than 10 % of a CPU in \(busy.count) of \(figures.count) runs"
                + " (up to \(format(worst, decimals: 0)) %): the machine is not quiet")
    }
    let stolen = figures.filter { $0.stealPercent > 2 }
    if !stolen.isEmpty {
        warnings.append(
            "steal time above 2 % in \(stolen.count) runs (up to"
                + " \(format(stolen.map(\.stealPercent).max() ?? 0, decimals: 1)) %): a shared virtual machine")
    }
    if rounds >= 2 {
        let spread = summaries.filter { $0.median > 0 && ($0.maximum - $0.minimum) / $0.median > 0.2 }
        if !spread.isEmpty {
            let named = spread.prefix(3).map { "\($0.system) on \($0.workload.id)" }.joined(separator: ", ")
            warnings.append(
                "rounds differ by more than 20 % in \(spread.count) of \(summaries.count) figures (\(named)"
                    + (spread.count > 3 ? ", …" : "") + "): the machine's speed drifted; the paired ratios"
                    + " (each round's figures against swift-uring's in the same round) drift less. More rounds"
                    + " (--rounds) on a quieter machine narrow it")
        }
    } else {
        warnings.append("one round: no spread to judge the noise by (--rounds 3 or more)")
    }
    for summary in summaries where summary.errors > 0 {
        warnings.append("\(summary.system) on \(summary.workload.id): \(summary.errors) error(s)")
    }
    return warnings
}

/// A rate in a short form: 1234567 → "1.23M".
func shortRate(_ value: Double) -> String {
    if value >= 1e6 { return format(value / 1e6, decimals: 2) + "M" }
    if value >= 1e4 { return format(value / 1e3, decimals: 1) + "k" }
    return format(value, decimals: 0)
}

/// The terminal table: a block per group; a row per workload; a column per system, swift-uring's
/// absolute rate (min–max) and the others' ratios to it (min–max of the paired ratios), each with
/// its CPU time per read or request (for echo and HTTP, the server's).
func printComparisonTable(_ summaries: [Summary], workloads: [Workload], systems: (Workload.Group) -> [String]) {
    for group in [Workload.Group.files, .echo, .http] {
        let rows = workloads.filter { $0.group == group }
        guard !rows.isEmpty else { continue }
        let columns = systems(group)
        let width = 30
        print("")
        print(
            group == .files
                ? "files (reads/s; ratio to swift-uring (min–max); CPU µs per read)"
                : "\(group.rawValue) (requests/s; ratio to swift-uring (min–max); server CPU µs per request)")
        let header = pad("workload", 40, left: true) + columns.map { pad($0, width, left: true) }.joined()
        print(header)
        print(String(repeating: "-", count: header.count))
        for workload in rows {
            var line = pad(workload.title, 40, left: true)
            for system in columns {
                guard let summary = summaries.first(where: { $0.workload.id == workload.id && $0.system == system })
                else {
                    line += pad("-", width, left: true)
                    continue
                }
                let cpu = summary.cpuPerOp.map { " " + format($0, decimals: 2) + "µs" } ?? ""
                var cell: String
                if system == "swift-uring" {
                    cell = "\(shortRate(summary.median)) (\(shortRate(summary.minimum))–\(shortRate(summary.maximum)))"
                } else if let ratio = summary.ratio {
                    cell =
                        "\(format(ratio))x (\(format(summary.ratioMinimum ?? ratio))–\(format(summary.ratioMaximum ?? ratio)))"
                } else {
                    cell = shortRate(summary.median)
                }
                cell += cpu + (summary.errors > 0 ? " ERR" : "")
                line += pad(cell, width, left: true)
            }
            print(line)
        }
    }
    print("")
}
