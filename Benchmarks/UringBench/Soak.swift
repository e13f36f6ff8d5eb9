import Glibc
import Synchronization
import SystemPackage
import Uring

/// `uring-bench soak`: the echo server (multishot accept, buffer-ring receives, one task per
/// connection) under churn, checked end to end. `connections` client loops run at once on the
/// main ring; each connects, exchanges 1 to 8 messages of 1 B to 32 KiB of random bytes, checks
/// every echoed byte, closes (half the time after a half-close and a clean end of stream from the
/// server), and connects again, until `seconds` have passed.
///
/// The server runs in a child process (see `serveSoak`); descriptors and resident memory are the
/// sums over both processes. Warm-up: every client loop does one full connection first (so the
/// tables, pools and task allocations have reached their working size); once the server has
/// closed all of them (it is back to the descriptors it had before the first client), the start
/// figures are taken. The end is taken the same way after the run. One line: `scenario=soak
/// seconds=… connections=… exchanges=… bytes=… errors=… fds_start=… fds_end=… rss_start_kib=…
/// rss_end_kib=…` then `connections_opened=… mismatched_bytes=…`.
func runSoak(connections: Int, seconds: Double) async throws -> String {
    // The server is this binary again (`uring-bench soak-server`), in its own process: each
    // connection costs a descriptor on both sides, and one process's limit (often 20,000 hard)
    // would not hold 10,000 connections twice over.
    let server = try SoakServer.start()
    let address = try SocketAddress(host: "127.0.0.1", port: server.port)

    // The messages are slices of one random pool: nothing to allocate per message, and the echo
    // of a slice is checked against the pool as it arrives.
    let pool = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    defer { pool.deallocate() }
    var generator = SoakRandom(seed: 0x5eed)
    for i in 0..<pool.count { pool[i] = UInt8(truncatingIfNeeded: generator.next()) }
    let messages = UnsafeRawBufferPointer(pool)
    let stop = Gauge()
    // The server's descriptors before any client: what it must come back to.
    let serverBaseline = server.descriptorCount()

    // Warm-up, then the start figures once the server has closed every connection.
    let warmup = await runSoakClients(count: connections, address: address, messages: messages, stop: nil)
    let warmedUp = await server.waitForDescriptors(serverBaseline)
    let fdsStart = openDescriptorCount() + server.descriptorCount()
    let rssStart = residentKiB() + server.residentKiB()

    let timer = Task {
        try? await Task.sleep(for: .seconds(seconds))
        stop.value.store(1, ordering: .relaxed)
    }
    let totals = await runSoakClients(count: connections, address: address, messages: messages, stop: stop)
    await timer.value
    let drained = await server.waitForDescriptors(serverBaseline)
    let fdsEnd = openDescriptorCount() + server.descriptorCount()
    let rssEnd = residentKiB() + server.residentKiB()
    let serverStatus = server.stop()

    let errors = totals.errors + warmup.errors + (warmedUp ? 0 : 1) + (drained ? 0 : 1) + (serverStatus == 0 ? 0 : 1)
    if errors > 0 {
        var stderr = StandardError()
        var why = ""
        if !warmedUp { why += " (server connections still open 10 s after the warm-up)" }
        if !drained { why += " (server connections still open 10 s after the end)" }
        if serverStatus != 0 { why += " (the server exited with status \(serverStatus))" }
        print("uring-bench: soak: \(errors) error(s), \(warmup.errors) in the warm-up\(why)", to: &stderr)
    }
    return [
        "scenario=soak", "seconds=\(format(seconds, decimals: 0))", "connections=\(connections)",
        "exchanges=\(totals.exchanges)", "bytes=\(totals.bytes)", "errors=\(errors)",
        "fds_start=\(fdsStart)", "fds_end=\(fdsEnd)", "rss_start_kib=\(rssStart)", "rss_end_kib=\(rssEnd)",
        "connections_opened=\(totals.opened)", "mismatched_bytes=\(totals.mismatched + warmup.mismatched)",
    ].joined(separator: " ")
}

/// `uring-bench soak-server` (internal): the soak's echo server. Prints `port=P`, serves until its
/// standard input closes (the parent closed it, or died), exits 0.
func serveSoak() async throws {
    let ring = try RingExecutor(entries: 4096, name: "soak-server")
    defer { ring.shutdown() }
    let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"), backlog: 4096)
    print("port=\(try listener.localAddress.port!)")
    fflush(nil)
    let server = startEchoServer(listener, on: ring)
    let input = File(descriptor: FileDescriptor(rawValue: 0))
    let byte = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
    defer { byte.deallocate() }
    while (try? await input.read(into: byte)) == 1 {}
    server.cancel()
    await server.value
    try await listener.close()
}

/// The soak's server process, seen from the client side.
struct SoakServer {
    let pid: pid_t
    /// The write end of the server's standard input: closing it stops the server.
    let control: Int32
    let port: Int

    static func start() throws -> SoakServer {
        var input: [Int32] = [0, 0]
        var output: [Int32] = [0, 0]
        guard pipe(&input) == 0, pipe(&output) == 0 else { throw SoakFailure("pipe: \(errno)") }
        // Only the dup2'd ends reach the server (dup2 clears close-on-exec on the copies).
        for fd in input + output { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("uring-bench"), strdup("soak-server"), nil]
        defer { for p in argv { free(p) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, "/proc/self/exe", &actions, nil, argv, environ)
        close(input[0])
        close(output[1])
        guard rc == 0 else {
            close(input[1])
            close(output[0])
            throw SoakFailure("cannot start the soak server: \(rc)")
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(output[0], &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        close(output[0])
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("port="), let port = Int(text.dropFirst(5)) else {
            close(input[1])
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            throw SoakFailure("the soak server did not start (it printed '\(text)')")
        }
        return SoakServer(pid: pid, control: input[1], port: port)
    }

    func descriptorCount() -> Int { countDescriptors("/proc/\(pid)/fd") }
    func residentKiB() -> Int { residentKiBOf("/proc/\(pid)/statm") }

    /// Waits (up to 10 s) until the server is back to `count` descriptors (every connection closed).
    func waitForDescriptors(_ count: Int) async -> Bool {
        for _ in 0..<1000 {
            if descriptorCount() <= count { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// Stops the server; returns its exit status.
    func stop() -> Int32 {
        close(control)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }
}

struct SoakFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `count` client loops at once: each runs one connection, or connections one after another
/// until `stop` is set.
private func runSoakClients(count: Int, address: SocketAddress, messages: UnsafeRawBufferPointer, stop: Gauge?) async
    -> SoakTotals
{
    nonisolated(unsafe) let messages = messages  // read-only for the whole run
    return await withTaskGroup(of: SoakTotals.self) { group in
        for index in 0..<count {
            group.addTask {
                var totals = SoakTotals()
                var random = SoakRandom(seed: UInt64(index) &* 0x9E37_79B9_7F4A_7C15 &+ (stop == nil ? 0 : 1))
                let receive = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
                defer { receive.deallocate() }
                repeat {
                    await soakConnection(
                        to: address, messages: messages, receive: receive, random: &random, totals: &totals)
                } while stop.map { $0.value.load(ordering: .relaxed) == 0 } ?? false
                return totals
            }
        }
        var sum = SoakTotals()
        for await totals in group { sum.add(totals) }
        return sum
    }
}

/// One client connection's life: connect, exchange, check, close.
private func soakConnection(
    to address: SocketAddress, messages: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
    random: inout SoakRandom, totals: inout SoakTotals
) async {
    // A stuck exchange is an error, not a hang: every wait has a generous deadline.
    let patience = Duration.seconds(30)
    let connection: TCPConnection
    do {
        connection = try await TCPConnection.connect(to: address, timeout: patience)
    } catch {
        totals.failed("connect", error)
        return
    }
    totals.opened += 1
    do throws(IOError) {
        for _ in 0..<(1 + random.below(8)) {
            let size = 1 + random.below(32 * 1024)
            let start = random.below(messages.count - size + 1)
            let message = UnsafeRawBufferPointer(rebasing: messages[start..<(start + size)])
            try await connection.write(message, timeout: patience)
            var got = 0
            while got < size {
                let want = min(receive.count, size - got)
                let n = try await connection.read(
                    into: UnsafeMutableRawBufferPointer(rebasing: receive[..<want]), timeout: patience)
                if n == 0 { throw IOError(.unexpectedEndOfFile, operation: .receive) }
                for i in 0..<n where receive[i] != message[got + i] { totals.mismatched += 1 }
                got += n
            }
            totals.exchanges += 1
            totals.bytes += size
        }
        if random.below(2) == 0 {
            // Half-close: the server must see the end of stream, close, and send nothing more.
            try await connection.shutdown(.write)
            let n = try await connection.read(into: receive, timeout: patience)
            if n != 0 { totals.mismatched += n }
        }
    } catch {
        totals.failed("exchange", error)
    }
    do {
        try await connection.close()
    } catch {
        totals.failed("close", error)
    }
}

struct SoakTotals: Sendable {
    var exchanges = 0
    var bytes = 0
    var errors = 0
    var mismatched = 0
    var opened = 0
    /// The first few errors are printed (to standard error), the rest only counted.
    static let reported = Atomic<Int>(0)

    mutating func failed(_ what: String, _ error: IOError) {
        errors += 1
        if SoakTotals.reported.add(1, ordering: .relaxed).newValue <= 10 {
            var stderr = StandardError()
            print("uring-bench: soak: \(what): \(error)", to: &stderr)
        }
    }

    mutating func add(_ other: SoakTotals) {
        exchanges += other.exchanges
        bytes += other.bytes
        errors += other.errors + (other.mismatched > 0 ? 1 : 0)
        mismatched += other.mismatched
        opened += other.opened
    }
}

/// xorshift64*: a fast, deterministic generator for sizes, offsets and the message pool.
struct SoakRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }

    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }

    /// Uniform enough in 0..<bound for a soak (bound > 0).
    mutating func below(_ bound: Int) -> Int { Int((next() >> 1) % UInt64(bound)) }
}

/// A counter shared between rings and tasks (the echo server's live connections, a stop flag).
final class Gauge: Sendable {
    let value = Atomic<Int>(0)
}

/// Descriptors this process has open (entries of /proc/self/fd, minus the one reading it).
func openDescriptorCount() -> Int { countDescriptors("/proc/self/fd") - 1 }

private func countDescriptors(_ directory: String) -> Int {
    guard let handle = opendir(directory) else { return -1 }
    defer { closedir(handle) }
    var count = 0
    while let entry = readdir(handle) {
        if entry.pointee.d_name.0 != 46 { count += 1 }  // skip "." and ".."
    }
    return count
}
