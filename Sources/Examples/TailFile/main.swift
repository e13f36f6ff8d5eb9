// uring-tail: follows a file as it grows, like `tail -f`, with inotify and swift-uring's public
// API only: a readiness sequence on the inotify descriptor wakes the loop, and each wake-up reads
// what was appended since the last one, on the ring. Ends on SIGINT/SIGTERM.
//
//   uring-tail FILE [--from-start]
import Glibc
import SystemPackage
import Uring

let arguments = Array(CommandLine.arguments.dropFirst())
guard let pathArgument = arguments.first(where: { !$0.hasPrefix("--") }) else {
    let usage = "usage: uring-tail FILE [--from-start]\n"
    _ = usage.withCString { write(2, $0, strlen($0)) }
    exit(64)
}
let fromStart = arguments.contains("--from-start")
let path = FilePath(pathArgument)

enum Tail {
    /// Prints what `file` holds from `offset` on; returns the new end.
    static func printAppended(_ file: File, from offset: Int64) async throws -> Int64 {
        var offset = offset
        while true {
            let bytes = try await file.read(upTo: 64 * 1024, at: offset)
            if bytes.isEmpty { return offset }
            _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            offset += Int64(bytes.count)
        }
    }
}

do {
    let signals = Signals.stream([.interrupt, .terminate])
    try Uring.run {
        let file = try await File.open(path)
        let size = try await file.status().size

        // inotify: told when the file is written, or truncated, or moved away.
        let inotify = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard inotify >= 0 else { throw IOError(.systemCall, errno: Errno(rawValue: errno), operation: .open) }
        let watching = pathArgument.withCString {
            inotify_add_watch(inotify, $0, UInt32(IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF))
        }
        guard watching >= 0 else { throw IOError(.systemCall, errno: Errno(rawValue: errno), operation: .open) }
        let notifications = File(descriptor: FileDescriptor(rawValue: inotify))
        // Watched first, printed second: nothing appended in between is missed.
        let start = try await Tail.printAppended(file, from: fromStart ? 0 : size)

        let follower = Task {
            var offset = start
            var events = [UInt8](repeating: 0, count: 4096)
            for try await _ in Readiness.events(.readable, on: notifications.descriptor) {
                // Drain the notifications (their content is not needed: the file says what changed).
                while events.withUnsafeMutableBytes({ read(inotify, $0.baseAddress, $0.count) }) > 0 {}
                let now = try await file.status().size
                if now < offset { offset = 0 }  // truncated: start over
                offset = try await Tail.printAppended(file, from: offset)
            }
        }
        for await _ in signals { break }
        follower.cancel()
        _ = try? await follower.value
        try await notifications.close()
        try await file.close()
    }
} catch {
    let text = "uring-tail: \(error)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
