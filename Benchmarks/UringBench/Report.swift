import Glibc
import Uring

// What the benchmark prints: the key=value line of one run, the suite table, the machine.

/// The driver the benchmark's rings run on (io_uring, or epoll where io_uring is denied or
/// `SWIFT_URING_BACKEND=epoll` asks for it).
var runningBackend: RingBackend { RingExecutor.current?.backend ?? .ioUring }

/// Prints one result line; every one ends with the driver that produced it.
func emit(_ line: String) {
    print(line + " backend=\(runningBackend)")
}

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
    if let cpu = m.cpuSeconds {
        parts.append("cpu_us_per_op=\(format(cpu * 1e6 / Double(max(m.ops, 1)), decimals: 3))")
    }
    if let floor = m.floorOpsPerSecond {
        parts.append("floor_ops_per_sec=\(format(floor, decimals: 0))")
        parts.append("ratio_to_floor=\(format(m.opsPerSecond / max(floor, 1), decimals: 3))")
    }
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
        let ratio =
            m.engine.hasPrefix("swift-uring")
            ? baseline.map { format(m.opsPerSecond / max($0.opsPerSecond, 1)) + "x" } ?? "" : ""
        print(
            [
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
    let cpu = cpuModelName()
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

/// `scenario=floor concurrency=N ops_per_sec=… seconds=… ops=… p50_us=… p99_us=… mallocs_per_op=…`
func floorLine(_ m: Measurement) -> String {
    [
        "scenario=floor", "concurrency=\(m.concurrency)", "ops_per_sec=\(format(m.opsPerSecond, decimals: 0))",
        "seconds=\(format(m.seconds, decimals: 3))", "ops=\(m.ops)",
        "p50_us=\(format(m.histogram.quantile(0.50) / 1000, decimals: 3))",
        "p99_us=\(format(m.histogram.quantile(0.99) / 1000, decimals: 3))",
        "mallocs_per_op=" + (m.mallocsPerOp.map { format($0, decimals: 4) } ?? "unknown"),
        "executor=\(m.fields.first { $0.0 == "executor" }?.1 ?? "global")",
    ].joined(separator: " ")
}
