import Foundation
import NIOFileSystem
import SystemPackage

// `uring-peers`: the systems `uring-bench` compares swift-uring with, one scenario per run, in a
// process of their own. Each prints one line of `key=value` pairs, as uring-bench does:
//
//   uring-peers list --system foundation|foundation-urls|niofs|niofs-batched --path DIR [--seconds S] [--warmup S]
//     peer=foundation scenario=list entries=N seconds=… entries_per_sec=…

struct Options {
    var scenario = ""
    var system = ""
    var path = ""
    var seconds = 2.0
    var warmup = 0.5
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(
        Data(
            """
            uring-peers: \(message)
            usage: uring-peers list --system foundation|foundation-urls|niofs|niofs-batched --path DIR [--seconds S] [--warmup S]

            """.utf8))
    exit(64)
}

func parse(_ arguments: ArraySlice<String>) -> Options {
    var options = Options()
    var rest = arguments
    guard let scenario = rest.popFirst(), scenario == "list" else { fail("the scenario is 'list'") }
    options.scenario = scenario
    while let flag = rest.popFirst() {
        guard let value = rest.popFirst() else { fail("\(flag) needs a value") }
        switch flag {
        case "--system": options.system = value
        case "--path": options.path = value
        case "--seconds", "--warmup":
            guard let number = Double(value), number.isFinite, number >= 0 else {
                fail("\(flag) wants a number of seconds, not '\(value)'")
            }
            if flag == "--seconds" { options.seconds = max(number, 0.01) } else { options.warmup = number }
        default: fail("unknown flag '\(flag)'")
        }
    }
    if options.path.isEmpty { fail("--path is required") }
    return options
}

func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Lists again and again for `warmup`, then for `seconds`, counting entries.
func measure(_ options: Options, _ list: () async throws -> Int) async throws -> (entries: Int, seconds: Double) {
    let warmupEnd = now() + options.warmup
    while now() < warmupEnd { _ = try await list() }
    let start = now()
    var entries = 0
    repeat { entries += try await list() } while now() < start + options.seconds
    return (entries, now() - start)
}

/// One listing with each system, the way its documentation shows it; every entry's name is
/// touched, as swift-uring's side does.
func lister(_ system: String, path: String) -> () async throws -> Int {
    switch system {
    case "foundation":
        return {
            var count = 0
            for name in try FileManager.default.contentsOfDirectory(atPath: path) where !name.isEmpty { count += 1 }
            return count
        }
    case "foundation-urls":
        return {
            var count = 0
            let url = URL(fileURLWithPath: path, isDirectory: true)
            for entry in try FileManager.default.contentsOfDirectory(at: url, includingPropertiesForKeys: nil)
            where !entry.lastPathComponent.isEmpty {
                count += 1
            }
            return count
        }
    case "niofs":
        return {
            try await FileSystem.shared.withDirectoryHandle(atPath: FilePath(path)) { directory in
                var count = 0
                for try await entry in directory.listContents() where !entry.name.string.isEmpty { count += 1 }
                return count
            }
        }
    case "niofs-batched":
        return {
            try await FileSystem.shared.withDirectoryHandle(atPath: FilePath(path)) { directory in
                var count = 0
                for try await batch in directory.listContents().batched() {
                    for entry in batch where !entry.name.string.isEmpty { count += 1 }
                }
                return count
            }
        }
    default:
        fail("unknown system '\(system)' (foundation, foundation-urls, niofs or niofs-batched)")
    }
}

let options = parse(CommandLine.arguments.dropFirst())
do {
    let result = try await measure(options, lister(options.system, path: options.path))
    let rate = Double(result.entries) / result.seconds
    print(
        "peer=\(options.system) scenario=list seconds=\(String(format: "%.3f", result.seconds))"
            + " entries_per_sec=\(Int(rate.rounded()))")
} catch {
    fail("\(options.system) failed: \(error)")
}
