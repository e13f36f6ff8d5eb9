import Foundation

// `uring-peers`: the systems `uring-bench` compares swift-uring with, one scenario per run, in a
// process of their own. Each measuring scenario prints one line of `key=value` pairs, as
// uring-bench does; the echo servers serve until they are sent SIGTERM.
//
//   uring-peers list --system foundation|foundation-urls|niofs|niofs-batched --path DIR [--seconds S] [--warmup S]
//     peer=foundation scenario=list seconds=… entries_per_sec=…
//   uring-peers read --system foundation|niofs --path FILE [--pattern random|sequential] [--block B]
//                    [--concurrency N] [--seconds S] [--warmup S]
//     peer=niofs scenario=read pattern=random block=4096 concurrency=32 seconds=… ops=… ops_per_sec=…
//       p50_us=… p99_us=… cpu_us_per_op=…
//   uring-peers echo-server --system nio-handler|nio-async --port P [--host H]

let usage = """
    usage: uring-peers list --system foundation|foundation-urls|niofs|niofs-batched --path DIR [--seconds S] [--warmup S]
           uring-peers read --system foundation|niofs --path FILE [--pattern random|sequential] [--block B]
                            [--concurrency N] [--seconds S] [--warmup S]
           uring-peers echo-server --system nio-handler|nio-async --port P [--host H]
    """

struct Options {
    var scenario = ""
    var system = ""
    var path = ""
    var seconds = 2.0
    var warmup = 0.5
    var pattern = "random"
    var block = 4096
    var concurrency = 1
    var host = "127.0.0.1"
    var port = -1
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("uring-peers: \(message)\n\(usage)\n".utf8))
    exit(64)
}

func parse(_ arguments: ArraySlice<String>) -> Options {
    var options = Options()
    var rest = arguments
    guard let scenario = rest.popFirst(), ["list", "read", "echo-server"].contains(scenario) else {
        fail("the scenario is list, read or echo-server")
    }
    options.scenario = scenario
    func positive(_ flag: String, _ value: String) -> Int {
        guard let number = Int(value), number > 0 else { fail("\(flag) wants a positive integer, not '\(value)'") }
        return number
    }
    while let flag = rest.popFirst() {
        guard let value = rest.popFirst() else { fail("\(flag) needs a value") }
        switch flag {
        case "--system": options.system = value
        case "--path": options.path = value
        case "--pattern":
            guard value == "random" || value == "sequential" else { fail("--pattern is random or sequential") }
            options.pattern = value
        case "--block": options.block = positive(flag, value)
        case "--concurrency": options.concurrency = positive(flag, value)
        case "--host": options.host = value
        case "--port":
            guard let port = Int(value), (0...65535).contains(port) else { fail("--port wants 0 to 65535") }
            options.port = port
        case "--seconds", "--warmup":
            guard let number = Double(value), number.isFinite, number >= 0 else {
                fail("\(flag) wants a number of seconds, not '\(value)'")
            }
            if flag == "--seconds" { options.seconds = max(number, 0.01) } else { options.warmup = number }
        default: fail("unknown flag '\(flag)'")
        }
    }
    if options.scenario == "echo-server" {
        if options.port < 0 { fail("--port is required") }
    } else if options.path.isEmpty {
        fail("--path is required")
    }
    return options
}

let options = parse(CommandLine.arguments.dropFirst())
do {
    switch options.scenario {
    case "list":
        let result = try await measureListing(options, lister(options.system, path: options.path))
        let rate = Double(result.entries) / result.seconds
        print(
            "peer=\(options.system) scenario=list seconds=\(String(format: "%.3f", result.seconds))"
                + " entries_per_sec=\(Int(rate.rounded()))")
    case "read":
        print(try await runRead(options))
    default:
        try await runEchoServer(options)
    }
} catch {
    fail("\(options.system) failed: \(error)")
}
