import Glibc

/// `--report DIR`: the comparison as a self-contained HTML page (`report.html`: SVG bar charts of
/// throughput and p50/p99 latency per workload and system, the machine, the exact commands, the
/// warnings) and the JSON of every figure (`report.json`, also embedded in the page).
struct ComparisonReport {
    var command: String
    var machine: MachineInfo
    var pinning: Pinning
    var settings: ComparisonSettings
    var workloads: [Workload]
    var systems: (Workload.Group) -> [String]
    var figures: [Figure]
    var summaries: [Summary]
    var warnings: [String]
    var runSeconds: Double

    /// Writes `report.html` and `report.json` into `directory` (created if needed); returns the
    /// page's path.
    func write(to directory: String) throws -> String {
        makeDirectories(directory)
        let json = self.json.rendered()
        try writeFile(directory + "/report.json", json + "\n")
        let page = directory + "/report.html"
        try writeFile(page, html(json: json))
        return page
    }

    var json: JSONValue {
        .object([
            ("generator", .string("uring-bench")),
            ("command", .string(command)),
            ("date", .string(utcTimestamp())),
            ("run_seconds", .number(runSeconds)),
            ("rounds", .integer(settings.rounds)),
            ("seconds_per_run", .number(settings.seconds)),
            ("warmup_seconds", .number(settings.warmup)),
            ("machine", .object(machine.pairs.map { ($0.0, .string($0.1)) })),
            (
                "pinning",
                .object([
                    ("system_cpu", pinning.server.map { .integer($0) } ?? .null),
                    ("load_generator_cpu", pinning.client.map { .integer($0) } ?? .null),
                ])
            ),
            ("warnings", .array(warnings.map { .string($0) })),
            (
                "systems",
                .object(
                    Workload.systemDescriptions.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
            ),
            (
                "workloads",
                .array(
                    workloads.map { workload in
                        .object([
                            ("id", .string(workload.id)), ("title", .string(workload.title)),
                            ("group", .string(workload.group.rawValue)), ("unit", .string(workload.unit)),
                            (
                                "systems",
                                .array(summaries.filter { $0.workload.id == workload.id }.map(summaryJSON))
                            ),
                        ])
                    })
            ),
        ])
    }

    private func summaryJSON(_ summary: Summary) -> JSONValue {
        .object([
            ("system", .string(summary.system)),
            ("per_sec_median", .number(summary.median)),
            ("per_sec_min", .number(summary.minimum)),
            ("per_sec_max", .number(summary.maximum)),
            ("ratio_to_swift_uring", .number(summary.ratio)),
            ("ratio_min", .number(summary.ratioMinimum)),
            ("ratio_max", .number(summary.ratioMaximum)),
            ("p50_us_median", .number(summary.p50)),
            ("p99_us_median", .number(summary.p99)),
            ("cpu_us_per_op_median", .number(summary.cpuPerOp)),
            ("errors", .integer(summary.errors)),
            (
                "rounds",
                .array(
                    summary.rounds.map { figure in
                        .object([
                            ("round", .integer(figure.round + 1)), ("per_sec", .number(figure.perSecond)),
                            ("p50_us", .number(figure.p50)), ("p99_us", .number(figure.p99)),
                            ("cpu_us_per_op", .number(figure.cpuPerOp)), ("errors", .integer(figure.errors)),
                            ("other_cpu_percent", .number(figure.otherCPUPercent)),
                            ("steal_percent", .number(figure.stealPercent)), ("command", .string(figure.command)),
                        ])
                    })
            ),
        ])
    }

    // MARK: The page

    private func html(json: String) -> String {
        var page = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>swift-uring comparison</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
            h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
            table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .9em; }
            td, th { padding: .25em .7em; border-bottom: 1px solid #eee; text-align: right; }
            td:first-child, th:first-child { text-align: left; }
            .warn { background: #fff4e5; border-left: 4px solid #f0a030; padding: .5em 1em; }
            figure { margin: 1.5em 0; } figcaption { font-weight: 600; margin-bottom: .3em; }
            code { font-size: .85em; word-break: break-all; }
            svg text { font-family: system-ui, sans-serif; font-size: 12px; fill: #222; }
            </style>
            </head>
            <body>
            <h1>swift-uring, side by side</h1>

            """
        page += "<p>\(escape(utcTimestamp())): \(settings.rounds) interleaved round(s) of "
        page += "\(format(settings.warmup, decimals: 1)) s warm-up and \(format(settings.seconds, decimals: 1)) s "
        page += "measured per run; medians, with the min–max of the rounds. "
        page +=
            pinning.server.map {
                "Each system ran on CPU \($0), the load generator (uring-bench's, the same for every system) on CPU \(pinning.client!)."
            } ?? "The processes were not pinned."
        page += " The run took \(format(runSeconds, decimals: 0)) s.</p>\n"
        page += "<p>swift-uring ran on its <strong>\(escape(machine.backend))</strong> driver"
        page +=
            machine.backend == "epoll"
            ? " (epoll and a worker pool: io_uring is denied here, or SWIFT_URING_BACKEND chose it).</p>\n"
            : " (ring set up with \(escape(machine.ringSetup))).</p>\n"
        page += "<p>Command: <code>\(escape(command))</code></p>\n"
        if !warnings.isEmpty {
            page += "<div class=\"warn\"><strong>Warnings</strong><ul>\n"
            for warning in warnings { page += "<li>\(escape(warning))</li>\n" }
            page += "</ul></div>\n"
        }
        page += "<h2>Machine</h2>\n<table>\n"
        for (key, value) in machine.pairs { page += "<tr><td>\(escape(key))</td><td>\(escape(value))</td></tr>\n" }
        page += "</table>\n"
        for group in [Workload.Group.files, .echo, .http] {
            let rows = workloads.filter { $0.group == group }
            guard !rows.isEmpty else { continue }
            page += "<h2>\(group == .files ? "Files" : group == .echo ? "Echo (TCP)" : "HTTP")</h2>\n"
            page +=
                "<p>"
                + systems(group).map { "<b>\(escape($0))</b>: \(escape(Workload.systemDescriptions[$0] ?? ""))" }
                .joined(separator: "; ") + ".</p>\n"
            for workload in rows {
                let results = summaries.filter { $0.workload.id == workload.id }
                page += "<figure id=\"\(workload.id)\">\n<figcaption>\(escape(workload.title))</figcaption>\n"
                page += chart(workload, results)
                page += table(workload, results)
                page += "</figure>\n"
            }
        }
        page +=
            "<h2>Commands</h2>\n<p>Every run, in the order it ran (server &amp; load generator for echo and HTTP).</p>\n<ol>\n"
        for figure in figures.sorted(by: { ($0.round, $0.workload) < ($1.round, $1.workload) }) {
            page += "<li><code>\(escape(figure.command))</code></li>\n"
        }
        page += "</ol>\n<h2>Data</h2>\n<p>Every figure, as JSON (also in report.json beside this page).</p>\n"
        page += "<script type=\"application/json\" id=\"report-data\">\n\(json)\n</script>\n"
        page += "<pre style=\"max-height: 20em; overflow: auto; font-size: .8em\">\(escape(json))</pre>\n"
        page += "</body>\n</html>\n"
        return page
    }

    /// One SVG per workload: throughput bars (with the rounds' min–max) on the left, p50 and p99
    /// latency bars on the right, a row per system.
    private func chart(_ workload: Workload, _ results: [Summary]) -> String {
        let rowHeight = 30.0
        let top = 34.0
        let height = top + rowHeight * Double(results.count) + 12
        let labelWidth = 110.0
        let rateLeft = labelWidth + 10
        // Each panel keeps room on its right for its labels.
        let rateWidth = 280.0
        let latencyLeft = rateLeft + rateWidth + 120
        let latencyWidth = 200.0
        let width = latencyLeft + latencyWidth + 120
        let rateScale = rateWidth / max(results.map(\.maximum).max() ?? 1, 1e-9)
        let latencyScale = latencyWidth / max(results.map(\.p99).max() ?? 1, 1e-9)
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" data-workload=\"\(workload.id)\""
        svg += " width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\""
        svg += " role=\"img\" aria-label=\"\(escape(workload.title))\">\n"
        svg +=
            "<text x=\"\(rateLeft)\" y=\"16\" font-weight=\"600\">\(escape(workload.unit)) (median, min–max)</text>\n"
        svg += "<text x=\"\(latencyLeft)\" y=\"16\" font-weight=\"600\">latency µs: p50 (dark), p99 (light)</text>\n"
        for (index, result) in results.enumerated() {
            let y = top + rowHeight * Double(index)
            let colour = result.system == "swift-uring" ? "#e8590c" : "#4c6ef5"
            let pale = result.system == "swift-uring" ? "#ffc9a3" : "#bac8ff"
            svg += "<g class=\"system\" data-system=\"\(escape(result.system))\">\n"
            svg += "<text x=\"\(labelWidth)\" y=\"\(y + 15)\" text-anchor=\"end\">\(escape(result.system))</text>\n"
            let bar = max(result.median * rateScale, 1)
            svg += "<rect class=\"rate\" x=\"\(rateLeft)\" y=\"\(y + 3)\" width=\"\(fixed(bar))\" height=\"18\""
            svg +=
                " fill=\"\(colour)\"><title>\(format(result.median, decimals: 0)) \(escape(workload.unit))</title></rect>\n"
            let low = rateLeft + result.minimum * rateScale
            let high = rateLeft + result.maximum * rateScale
            svg += "<line class=\"range\" x1=\"\(fixed(low))\" x2=\"\(fixed(high))\" y1=\"\(y + 12)\" y2=\"\(y + 12)\""
            svg += " stroke=\"#222\" stroke-width=\"1.5\"/>\n"
            var label = shortRate(result.median)
            if let ratio = result.ratio, result.system != "swift-uring" { label += " (\(format(ratio))x)" }
            svg += "<text x=\"\(fixed(rateLeft + max(bar, high - rateLeft) + 4))\" y=\"\(y + 16)\">\(label)</text>\n"
            let p99 = max(result.p99 * latencyScale, 1)
            let p50 = max(result.p50 * latencyScale, 1)
            svg += "<rect class=\"p99\" x=\"\(latencyLeft)\" y=\"\(y + 3)\" width=\"\(fixed(p99))\" height=\"18\""
            svg += " fill=\"\(pale)\"><title>p99 \(format(result.p99, decimals: 1)) µs</title></rect>\n"
            svg += "<rect class=\"p50\" x=\"\(latencyLeft)\" y=\"\(y + 7)\" width=\"\(fixed(p50))\" height=\"10\""
            svg += " fill=\"\(colour)\"><title>p50 \(format(result.p50, decimals: 1)) µs</title></rect>\n"
            svg += "<text x=\"\(fixed(latencyLeft + p99 + 4))\" y=\"\(y + 16)\">"
            svg += "\(format(result.p50, decimals: 1)) / \(format(result.p99, decimals: 1))</text>\n"
            svg += "</g>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    private func table(_ workload: Workload, _ results: [Summary]) -> String {
        var html = "<table>\n<tr><th>system</th><th>\(escape(workload.unit)) (median)</th><th>min–max</th>"
        html += "<th>ratio to swift-uring (min–max)</th><th>p50 µs</th><th>p99 µs</th>"
        html +=
            "<th>\(workload.group == .files ? "CPU µs per read" : "server CPU µs per request")</th><th>errors</th></tr>\n"
        for result in results {
            let ratio = result.ratio.map {
                "\(format($0, decimals: 3))x (\(format(result.ratioMinimum ?? $0, decimals: 3))–\(format(result.ratioMaximum ?? $0, decimals: 3)))"
            }
            html += "<tr><td>\(escape(result.system))</td><td>\(format(result.median, decimals: 0))</td>"
            html += "<td>\(format(result.minimum, decimals: 0))–\(format(result.maximum, decimals: 0))</td>"
            html += "<td>\(ratio ?? "")</td><td>\(format(result.p50, decimals: 2))</td>"
            html += "<td>\(format(result.p99, decimals: 2))</td>"
            html += "<td>\(result.cpuPerOp.map { format($0, decimals: 2) } ?? "")</td><td>\(result.errors)</td></tr>\n"
        }
        return html + "</table>\n"
    }
}

private func fixed(_ value: Double) -> String { format(value, decimals: 1) }

/// Text for HTML and SVG: &, <, >, " escaped.
func escape(_ text: String) -> String {
    var out = ""
    for character in text {
        switch character {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.append(character)
        }
    }
    return out
}

/// Now, as `2026-12-03T07:12:00Z`.
func utcTimestamp() -> String {
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    let count = strftime(&buffer, 32, "%Y-%m-%dT%H:%M:%SZ", &parts)
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// `mkdir -p`.
func makeDirectories(_ path: String) {
    var prefix = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        prefix += "/" + component
        mkdir(prefix, 0o755)
    }
}

struct ReportWriteError: Error, CustomStringConvertible {
    var path: String
    var errno: Int32
    var description: String { "cannot write \(path): \(String(cString: strerror(errno)))" }
}

func writeFile(_ path: String, _ text: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw ReportWriteError(path: path, errno: errno) }
    defer { close(fd) }
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if written < 0 {
            if errno == EINTR { continue }
            throw ReportWriteError(path: path, errno: errno)
        }
        bytes = bytes.dropFirst(written)
    }
}
