import Glibc
import Synchronization

/// A server under test, in a process of its own: started, waited for until its port accepts,
/// stopped with SIGTERM (SIGKILL after 5 s). Its output goes to a log file, shown when it fails.
final class ServerProcess {
    let pid: pid_t
    let port: Int
    private let log: String
    private var stopped = false

    init(_ argv: [String], port: Int) throws {
        self.port = port
        var template = Array("/tmp/uring-bench-server-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { abortRun("cannot create a log file in /tmp: \(String(cString: strerror(errno)))") }
        log = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fd, 1)
        posix_spawn_file_actions_adddup2(&actions, fd, 2)
        var arguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in arguments { free(pointer) } }
        var child = pid_t()
        var attributes = cleanSpawnAttributes()
        defer { posix_spawnattr_destroy(&attributes) }
        let rc = posix_spawn(&child, argv[0], &actions, &attributes, &arguments, environ)
        close(fd)
        guard rc == 0 else { abortRun("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        pid = child
        // Ready when the port accepts a connection (20 s at most; a first start can be slow).
        let deadline = nowNanoseconds() + 20_000_000_000
        while !accepts(port) {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                stopped = true
                abortRun("the server '\(argv.joined(separator: " "))' exited before listening\n\(logTail())")
            }
            if nowNanoseconds() > deadline {
                stop()
                abortRun("the server '\(argv.joined(separator: " "))' did not listen on \(port) in 20 s\n\(logTail())")
            }
            sleepBlocking(0.02)
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after 5 s; removes the log.
    func stop() {
        defer { unlink(log) }
        guard !stopped else { return }
        stopped = true
        liveServer.store(0, ordering: .releasing)
        kill(pid, SIGTERM)
        let deadline = nowNanoseconds() + 5_000_000_000
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if nowNanoseconds() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return
            }
            sleepBlocking(0.01)
        }
    }

    deinit { stop() }

    /// The last lines the server printed.
    func logTail() -> String {
        guard let file = fopen(log, "r") else { return "" }
        defer { fclose(file) }
        var lines: [String] = []
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, 4096, file) != nil {
            lines.append(
                line.withUnsafeBufferPointer {
                    String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self)
                })
            if lines.count > 20 { lines.removeFirst() }
        }
        return "server output:\n" + lines.joined()
    }
}

/// The server process running now (0: none), for the interrupt handler.
private let liveServer = Atomic<pid_t>(0)

/// On SIGINT or SIGTERM, the comparison kills the server it started before it exits, so that
/// no server outlives an interrupted run.
func stopServersOnInterrupt() {
    let handler: @convention(c) (Int32) -> Void = { signal in
        let pid = liveServer.load(ordering: .acquiring)
        if pid > 0 { kill(pid, SIGKILL) }
        _exit(128 + signal)
    }
    signal(SIGINT, handler)
    signal(SIGTERM, handler)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
private func accepts(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}
