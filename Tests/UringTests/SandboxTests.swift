import Glibc
import Testing

@testable import Uring

/// Runs a program under a seccomp filter that makes `io_uring_setup`, `io_uring_enter` and
/// `io_uring_register` fail with one errno: `EPERM` is what Docker's and containerd's default
/// profiles answer, `ENOSYS` what a kernel without io_uring does. The filter is installed by a
/// small python3 script (prctl `PR_SET_NO_NEW_PRIVS`, then `SECCOMP_MODE_FILTER`) that then
/// execs the program; x86_64 only (the filter names syscalls 425 to 427).
struct IoUringDeniedSandbox {
    let script: String
    let errno: Int

    init(in directory: String, errno: Int = Int(EPERM)) throws {
        self.errno = errno
        script = directory + "/deny-io-uring.py"
        let source = """
            import ctypes, os, struct, sys
            libc = ctypes.CDLL(None, use_errno=True)
            LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
            ALLOW, ERRNO = 0x7fff0000, 0x00050000
            program = [
                (LD_W_ABS, 0, 0, 4), (JEQ_K, 1, 0, 0xc000003e), (RET_K, 0, 0, ALLOW),  # x86_64 only
                (LD_W_ABS, 0, 0, 0),
                (JEQ_K, 3, 0, 425), (JEQ_K, 2, 0, 426), (JEQ_K, 1, 0, 427),          # io_uring_*
                (RET_K, 0, 0, ALLOW), (RET_K, 0, 0, ERRNO | int(sys.argv[1])),
            ]
            code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
            class Program(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
            p = Program(len(program), ctypes.cast(code, ctypes.c_void_p))
            assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
            assert libc.prctl(22, 2, ctypes.byref(p), 0, 0) == 0        # PR_SET_SECCOMP, FILTER
            os.execv(sys.argv[2], sys.argv[2:])
            """
        try HTTPServerProcess.write(script, Array(source.utf8))
    }

    /// The executable and arguments that run `program arguments` in the sandbox, with
    /// `environment` set and `SWIFT_URING_BACKEND` otherwise unset, so that the driver is chosen
    /// automatically (a `/bin/sh -c` line; arguments must not need quoting).
    func command(_ program: String, _ arguments: [String], environment: [String: String] = [:]) -> (String, [String]) {
        let variables = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let line =
            (["exec env -u SWIFT_URING_BACKEND"] + variables + ["python3", script, "\(errno)", program]
            + arguments).joined(separator: " ")
        return ("/bin/sh", ["-c", line])
    }
}

/// Run on both drivers only where the filter can be installed.
let sandboxModes: [Bool] = seccompTestPossible ? [false, true] : [false]

/// io_uring is allowed in this process (a test that exercises io_uring itself needs it).
let ioUringAvailable: Bool = {
    guard let ring = try? RingExecutor(entries: 8, name: "probe-io_uring", backend: .ioUring) else { return false }
    ring.shutdown()
    return true
}()

extension IntegrationTests {
    /// Where io_uring is denied (a container's seccomp profile, `kernel.io_uring_disabled`, no
    /// kernel support), everything runs on the epoll driver, chosen automatically.
    @Suite("Where io_uring is denied")
    struct IoUringDenied {
        /// `Uring.run` under the filter: the ring falls back, says so, and files, sockets,
        /// timers, cancellation and a deadline all work.
        @Test(
            .enabled(if: seccompTestPossible, "needs python3 and x86_64 (the filter names syscalls 425-427)"),
            arguments: [Int(EPERM), Int(ENOSYS)])
        func uringRunFallsBackToEpoll(_ errno: Int) throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let sandbox = try IoUringDeniedSandbox(in: dir.path, errno: errno)
            let (path, arguments) = sandbox.command(executableNextToTests("uring-run-check"), ["--fallback"])
            let (status, output) = try runChild(path, arguments)
            #expect(status == 0, "exit status \(status), output:\n\(output)")
            #expect(!output.contains("FAILED"), "output:\n\(output)")
            #expect(output.contains("backend=epoll"), "output:\n\(output)")
            #expect(output.contains("ok 1 MiB echoed over TCP"), "output:\n\(output)")
            // Logged once, with the reason and how to allow io_uring.
            #expect(output.components(separatedBy: "running on the epoll driver").count == 2, "output:\n\(output)")
            #expect(output.contains("seccomp"), "output:\n\(output)")
        }

        /// Asking for io_uring where it is denied is the clear error it always was.
        @Test(
            .enabled(if: seccompTestPossible, "needs python3 and x86_64 (the filter names syscalls 425-427)"),
            arguments: [(Int(EPERM), "Operation not permitted"), (Int(ENOSYS), "Function not implemented")])
        func forcedIoUringReportsTheDenial(_ errno: Int, _ text: String) throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let sandbox = try IoUringDeniedSandbox(in: dir.path, errno: errno)
            let (path, arguments) = sandbox.command(
                executableNextToTests("uring-run-check"), ["--unavailable"],
                environment: ["SWIFT_URING_BACKEND": "io_uring"])
            let (status, output) = try runChild(path, arguments)
            #expect(status == 3, "exit status \(status), output:\n\(output)")
            #expect(!output.contains("FAILED"), "output:\n\(output)")
            #expect(output.contains("io_uring unavailable"), "output:\n\(output)")
            #expect(output.contains(text), "output:\n\(output)")
            #expect(output.contains("seccomp"), "the reason names the likely cause; output:\n\(output)")
        }

        /// A value of `SWIFT_URING_BACKEND` that names no driver is an error, not a guess.
        @Test func anUnknownBackendNameIsAnError() throws {
            let (status, output) = try runChild(
                "/bin/sh", ["-c", "SWIFT_URING_BACKEND=kqueue exec \(executableNextToTests("uring-run-check")) 2>&1"])
            #expect(status != 0, "output:\n\(output)")
            #expect(output.contains("SWIFT_URING_BACKEND"), "output:\n\(output)")
        }

        /// `uring-echo` under the filter: it says it runs on epoll, and echoes 1,000 messages of
        /// 1 MiB of random bytes (over 4 connections) intact.
        @Test(.enabled(if: seccompTestPossible, "needs python3 and x86_64 (the filter names syscalls 425-427)"))
        func echoServerServesOnEpoll() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let sandbox = try IoUringDeniedSandbox(in: dir.path)
            let (path, arguments) = sandbox.command(
                executableNextToTests("uring-echo"), ["--host", "127.0.0.1", "--port", "0"])
            let child = try SpawnedChild(path, arguments, includeStandardError: true)
            var log: [String] = []
            var banner = child.readLine()
            while !banner.hasPrefix("uring-echo listening") && !banner.isEmpty {
                log.append(banner)
                banner = child.readLine()
            }
            #expect(log.contains { $0.contains("backend=epoll") }, "\(log)")
            guard let port = banner.split(separator: ":").last.flatMap({ Int($0.trimmingSpaces()) }) else {
                kill(child.pid, SIGKILL)
                _ = child.wait()
                Issue.record("no banner: \(log) \(banner)")
                return
            }
            var random = SeededRandom(seed: 1_000)
            let blocks = (0..<8).map { _ in random.bytes(1 << 20) }
            let address = try SocketAddress(host: "127.0.0.1", port: port)
            let intact = try await withThrowingTaskGroup(of: Int.self) { group in
                for lane in 0..<4 {
                    group.addTask {
                        let connection = try await TCPConnection.connect(to: address)
                        var good = 0
                        for message in stride(from: lane, to: 1_000, by: 4) {
                            let block = blocks[message % blocks.count]
                            if try await exchange(connection, block, seed: UInt64(message)) == block { good += 1 }
                        }
                        try await connection.close()
                        return good
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(intact == 1_000)
            kill(child.pid, SIGTERM)
            #expect(child.wait() == 0)
        }
    }
}
