import Glibc
import Testing

@testable import Uring

extension IntegrationTests {
    /// The `uring-echo` executable, run as a user would: start it, echo through it, stop it with a
    /// signal, and check that it exits 0.
    @Suite("uring-echo")
    struct EchoServerProcess {
        @Test(arguments: [SIGTERM, SIGINT])
        func echoesAndExitsCleanlyOnSignal(_ signal: Int32) async throws {
            let child = try SpawnedChild(executableNextToTests("uring-echo"), ["--host", "127.0.0.1", "--port", "0"])
            let banner = child.readLine()
            let port = banner.split(separator: ":").last.flatMap { Int($0.trimmingSpaces()) }
            #expect(banner.hasPrefix("uring-echo listening on 127.0.0.1:"), "banner: \(banner)")
            guard let port else {
                kill(child.pid, SIGKILL)
                _ = child.wait()
                return
            }

            let connection = try await TCPConnection.connect(to: SocketAddress(host: "127.0.0.1", port: port))
            let message = Array((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            #expect(try await exchange(connection, message, seed: 9) == message)

            kill(child.pid, signal)
            #expect(child.wait() == 0)
            // The server closed our connection on the way out.
            let rest = try? await connection.receive(upTo: 16, timeout: .seconds(5))
            #expect(rest == nil || rest == [])
            try? await connection.close()
        }

        /// An idle server does not wake up: its stall watcher parks once every ring has slept
        /// for 20 samples (100 ms), and parks again after a burst of work. (It woke 200 times a
        /// second, about 1 % of a CPU on a VM, for as long as the process lived.)
        @Test func anIdleServerMakesNoWakeUps() async throws {
            let child = try SpawnedChild(executableNextToTests("uring-echo"), ["--host", "127.0.0.1", "--port", "0"])
            defer {
                kill(child.pid, SIGTERM)
                _ = child.wait()
            }
            let banner = child.readLine()
            let port = try #require(banner.split(separator: ":").last.flatMap { Int($0.trimmingSpaces()) }, "\(banner)")
            /// The watcher thread's voluntary context switches (each sleep is one), after `settle`.
            func switchesOverOneSecond(after settle: Duration) async throws -> Int {
                try await Task.sleep(for: settle)
                let before = try #require(watcherSwitches(child.pid), "no uring-stalls thread in \(child.pid)")
                try await Task.sleep(for: .seconds(1))
                return try #require(watcherSwitches(child.pid)) - before
            }
            let idle = try await switchesOverOneSecond(after: .milliseconds(500))
            #expect(idle <= 10, "\(idle) wake-ups in an idle second")
            let connection = try await TCPConnection.connect(to: SocketAddress(host: "127.0.0.1", port: port))
            let message = Array((0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            #expect(try await exchange(connection, message, seed: 3) == message)
            try await connection.close()
            let idleAgain = try await switchesOverOneSecond(after: .milliseconds(500))
            #expect(idleAgain <= 10, "\(idleAgain) wake-ups in an idle second after work")
        }

        /// Out of descriptors for real (the server runs under `ulimit -n 48`): the accept loop
        /// meets EMFILE, keeps the waiting connections in the backlog, and serves them as soon as
        /// closed connections free descriptors.
        @Test func acceptLoopSurvivesRunningOutOfDescriptors() async throws {
            let command = "ulimit -n 48 && exec \(executableNextToTests("uring-echo")) --host 127.0.0.1 --port 0"
            let child = try SpawnedChild("/bin/sh", ["-c", command])
            let banner = child.readLine()
            guard let port = banner.split(separator: ":").last.flatMap({ Int($0.trimmingSpaces()) }) else {
                Issue.record("banner: \(banner)")
                kill(child.pid, SIGKILL)
                _ = child.wait()
                return
            }
            let address = try SocketAddress(host: "127.0.0.1", port: port)
            var clients: [TCPConnection] = []
            for i in 0..<60 {
                let client = try await TCPConnection.connect(to: address, timeout: .seconds(10))
                try await client.write(contentsOf: Array("ping \(i)".utf8))
                clients.append(client)
            }
            func echo(_ i: Int, within timeout: Duration) async -> Bool {
                let expected = Array("ping \(i)".utf8)
                var got: [UInt8] = []
                while got.count < expected.count {
                    guard let chunk = try? await clients[i].receive(upTo: expected.count - got.count, timeout: timeout),
                        !chunk.isEmpty
                    else { return false }
                    got += chunk
                }
                return got == expected
            }
            // The first connections fit in 48 descriptors and are served...
            for i in 0..<10 { #expect(await echo(i, within: .seconds(10)), "client \(i)") }
            // ...the last ones cannot be accepted yet (EMFILE)...
            #expect(await echo(59, within: .milliseconds(500)) == false, "the server had descriptors to spare")
            // ...until connections close: each waiting one is then accepted and served. (Closing
            // as we go: how many descriptors the server has besides its connections varies.)
            for i in 0..<10 { try await clients[i].close() }
            for i in 10..<60 {
                #expect(await echo(i, within: .seconds(10)), "client \(i)")
                try await clients[i].close()
            }
            kill(child.pid, SIGTERM)
            #expect(child.wait() == 0)
        }
    }
}

/// A child process with its standard output (and optionally standard error) on a pipe.
final class SpawnedChild {
    let pid: pid_t
    private let output: Int32

    init(_ path: String, _ arguments: [String], includeStandardError: Bool = false) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ChildFailed(description: "pipe failed") }
        // The child gets the write end as its standard output (dup2 clears the flag there);
        // other children spawned meanwhile get neither end.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        if includeStandardError { posix_spawn_file_actions_adddup2(&actions, fds[1], 2) }
        posix_spawn_file_actions_addclose(&actions, fds[0])
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        // The test runs on a pool thread that blocks most signals; the child must not inherit that.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var pid = pid_t()
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw ChildFailed(description: "cannot start \(path): \(rc)")
        }
        self.pid = pid
        output = fds[0]
    }

    deinit { close(output) }

    /// One line of the child's standard output (blocking; a test helper).
    func readLine() -> String {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(output, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }

    /// One line of the child's standard output, or nil if none is complete within `seconds`.
    func readLine(within seconds: Double) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while true {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return nil }
            var waiter = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(
                left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
            guard poll(&waiter, 1, max(milliseconds, 1)) > 0 else { continue }
            guard read(output, &byte, 1) == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
    }

    /// Everything the child writes until it closes its output (blocking; a test helper).
    func readAll() -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(output, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Waits for the child; returns its exit status (128 + signal if it was killed).
    func wait() -> Int32 {
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        String(String(drop { $0 == " " }.reversed().drop { $0 == " " || $0 == "\n" }).reversed())
    }
}

/// The voluntary context switches of process `pid`'s `uring-stalls` thread, if it has one.
private func watcherSwitches(_ pid: pid_t) -> Int? {
    guard let directory = opendir("/proc/\(pid)/task") else { return nil }
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard tid.first?.isNumber == true, let comm = readText("/proc/\(pid)/task/\(tid)/comm"),
            comm.hasPrefix("uring-stalls"), let status = readText("/proc/\(pid)/task/\(tid)/status")
        else { continue }
        for line in status.split(separator: "\n") where line.hasPrefix("voluntary_ctxt_switches:") {
            return Int(String(line.filter(\.isNumber)))
        }
    }
    return nil
}

/// A small text file's contents (a /proc file), or nil.
private func readText(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = fread(&buffer, 1, 4095, file)
    return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
