import Glibc
// Run by the test suite as a child process: Uring.run must install the process's executors before
// any task exists, which a test runner's own process cannot offer.
import SystemPackage
import Uring

func check(_ condition: Bool, _ what: String) {
    print((condition ? "ok " : "FAILED ") + what)
    if !condition { failures += 1 }
}
nonisolated(unsafe) var failures = 0

if CommandLine.arguments.dropFirst().first == "--unavailable" {
    // Run under a seccomp filter that denies io_uring_setup: the runtime must say why, and the
    // process must end with an error, not a crash.
    do {
        _ = try RingExecutor(name: "denied")
        print("FAILED RingExecutor() succeeded although io_uring_setup is denied")
    } catch {
        print("RingExecutor: \(error)")
        check(error.code == .ringUnavailable, "RingExecutor() throws ringUnavailable")
    }
    do {
        try Uring.run { print("FAILED the body ran") }
    } catch let error as IOError {
        print("Uring.run: \(error)")
        check(error.code == .ringUnavailable, "Uring.run throws ringUnavailable")
        exit(3)
    } catch {
        print("FAILED Uring.run threw \(error)")
    }
    exit(1)
}

if CommandLine.arguments.dropFirst().first == "--list", CommandLine.arguments.count == 3 {
    // Lists a directory and prints what happened: run as an unprivileged user by the tests, where
    // root would read any directory.
    let path = FilePath(CommandLine.arguments[2])
    let outcome = try Uring.run {
        do throws(IOError) {
            var count = 0
            for try await _ in FileSystem.contents(of: path) { count += 1 }
            return "entries=\(count)"
        } catch {
            return "error operation=\(error.operation) errno=\(error.errno?.rawValue ?? 0) code=\(error.code)"
        }
    }
    print(outcome)
    exit(0)
}

if CommandLine.arguments.dropFirst().first == "--fallback" {
    // Run under a seccomp filter that denies io_uring (as Docker's default profile does): the
    // runtime falls back to the epoll driver, says so, and everything works.
    let result = try Uring.run {
        guard let ring = RingExecutor.current else {
            check(false, "the main task runs on a ring")
            return 0
        }
        print("backend=\(ring.backend)")
        check(ring.backend == .epoll, "the ring fell back to the epoll driver")
        check(await ring.statistics().backend == .epoll, "its statistics say epoll")

        // Files: write, read back, stat, remove.
        let path = FilePath("/tmp/uring-fallback-\(getpid())")
        let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let file = try await File.open(path, .readWrite, options: [.create, .truncate])
        try await file.write(contentsOf: payload, at: 0)
        try await file.sync()
        check(try await file.read(upTo: payload.count, at: 0) == payload, "a file written and read back")
        try await file.close()
        check(try await FileSystem.status(of: path).size == Int64(payload.count), "stat of the file")
        try await FileSystem.remove(path)

        // Sockets: a listener and a client on the same ring, 1 MiB echoed.
        let listener = try TCPListener.bind(to: try SocketAddress(host: "127.0.0.1", port: 0))
        let server = Task {
            let connection = try await listener.accept()
            for try await chunk in connection.chunks { try await connection.write(chunk) }
            try await connection.close()
        }
        let client = try await TCPConnection.connect(to: listener.localAddress, timeout: .seconds(5))
        let message = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        async let sent: Void = client.write(contentsOf: message)
        var echoed: [UInt8] = []
        while echoed.count < message.count { echoed += try await client.read(upTo: message.count - echoed.count) }
        try await sent
        check(echoed == message, "1 MiB echoed over TCP")
        try await client.shutdown(.write)
        try await server.value
        try await client.close()
        try await listener.close()

        // Timers, cancellation and a deadline.
        let started = ContinuousClock.now
        try await Uring.sleep(for: .milliseconds(20))
        check(ContinuousClock.now - started >= .milliseconds(19), "a ring timer sleeps")
        let sleeper = Task { try await Uring.sleep(for: .seconds(30)) }
        sleeper.cancel()
        var cancelled = false
        do { try await sleeper.value } catch let error as IOError { cancelled = error.code == .cancelled }
        check(cancelled, "a sleep is cancellable")
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        let reader = File(descriptor: FileDescriptor(rawValue: fds[0]))
        var timedOut = false
        do { _ = try await reader.read(upTo: 16, timeout: .milliseconds(30)) } catch let error as IOError {
            timedOut = error.code == .timedOut
        }
        check(timedOut, "a read that never becomes ready times out")
        try await reader.close()
        close(fds[1])
        return 42
    }
    check(result == 42, "Uring.run returns the body's result")
    exit(failures == 0 ? 0 : 1)
}

if CommandLine.arguments.dropFirst().first == "--threads" {
    // Uring.run(threads: 2): plain tasks spread over both rings and each stays on its own.
    let result = try Uring.run(threads: 2) {
        let group = Uring.group
        check(group?.count == 2, "Uring.group has the two rings")
        guard let group else { return 0 }
        let names = await withTaskGroup(of: (String, Bool, Bool).self) { tasks in
            for i in 0..<64 {
                tasks.addTask {
                    let home = RingExecutor.current
                    var stayed = true
                    var correct = true
                    for _ in 0..<20 {
                        do {
                            try await Uring.nop()
                            let bytes = try await File.readAll(at: "/proc/self/stat")
                            correct = correct && !bytes.isEmpty
                            try await Task.sleep(for: .microseconds(100 * (i % 3)))
                        } catch {
                            correct = false
                        }
                        stayed = stayed && RingExecutor.current === home
                    }
                    return (home?.name ?? "none", stayed, correct)
                }
            }
            var result: [(String, Bool, Bool)] = []
            for await entry in tasks { result.append(entry) }
            return result
        }
        check(names.allSatisfy { $0.1 }, "every task stays on its ring across awaits")
        check(names.allSatisfy { $0.2 }, "every task's I/O succeeds")
        let used = Set(names.map { $0.0 })
        check(used.count == 2, "tasks ran on both rings: \(used.sorted())")
        let stats = await group.statistics()
        check(stats.allSatisfy { $0.submitted > 0 }, "every ring submitted operations")
        // A map started on ring 1 keeps its transforms there (a preference: plain tasks spread).
        let mapStayed = await Task(executorPreference: group[1]) {
            var stayed = true
            for try await here in (0..<1000).mapConcurrently(limit: 16, { _ in RingExecutor.current === group[1] }) {
                stayed = stayed && here
            }
            return stayed
        }.result
        check((try? mapStayed.get()) == true, "mapConcurrently on ring 1 runs its transforms there")
        // Explicit placement on each ring.
        for index in 0..<group.count {
            let here = await Task(executorPreference: group[index]) { RingExecutor.current === group[index] }.value
            check(here, "a task placed on ring \(index) runs there")
        }
        return 7
    }
    check(result == 7, "Uring.run(threads:) returns the body's result")
    exit(failures == 0 ? 0 : 1)
}

let result = try Uring.run {
    let ring = RingExecutor.current
    check(ring != nil, "the main task runs on a ring")

    let started = ContinuousClock.now
    try await Task.sleep(for: .milliseconds(20))
    check(ContinuousClock.now - started >= .milliseconds(19), "Task.sleep sleeps (a ring timer)")
    check(RingExecutor.current === ring, "and comes back to the ring")

    let plain = await Task { RingExecutor.current === ring }.value
    check(plain, "a plain Task {} runs on the ring")

    let onMain = await MainActor.run { RingExecutor.current === ring }
    check(onMain, "the main actor runs on the ring")

    let bytes = try await File.readAll(at: "/proc/self/stat")
    check(!bytes.isEmpty, "a file read from the main task")

    let fromMainActor = try await Task { @MainActor in try await File.readAll(at: "/proc/self/stat").count }.value
    check(fromMainActor > 0, "a file read from the main actor")

    let cancelled = Task { try await Uring.sleep(for: .seconds(30)) }
    cancelled.cancel()
    var sawCancel = false
    do { try await cancelled.value } catch let error as IOError { sawCancel = error.code == .cancelled }
    check(sawCancel, "a ring sleep is cancellable")

    // The map's transforms stay on the only ring without an executor preference of their own.
    var onRing = true
    var total = 0
    for try await (value, here) in (0..<1000).mapConcurrently(limit: 16, { ($0, RingExecutor.current === ring) }) {
        total += value
        onRing = onRing && here
    }
    check(onRing && total == 999 * 1000 / 2, "mapConcurrently's transforms run on the ring")
    return 42
}
check(result == 42, "Uring.run returns the body's result")
exit(failures == 0 ? 0 : 1)
