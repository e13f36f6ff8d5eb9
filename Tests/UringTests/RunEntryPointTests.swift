import Glibc
import Testing

extension IntegrationTests {
    /// `Uring.run` makes a ring the process's main and default executor. It must run before any
    /// task exists, so the check runs in a child process (the `uring-run-check` executable).
    @Suite("Uring.run entry point")
    struct RunEntryPoint {
        @Test func installsTheRingAsMainAndDefaultExecutor() throws {
            let (status, output) = try runChild(executableNextToTests("uring-run-check"))
            #expect(status == 0, "output:\n\(output)")
            #expect(!output.contains("FAILED"), "output:\n\(output)")
            #expect(output.contains("ok Uring.run returns the body's result"), "output:\n\(output)")
        }

        /// With io_uring denied by a seccomp filter (as container runtimes do), `RingExecutor()`
        /// and `Uring.run` throw `ringUnavailable` with the reason, and the process exits with an
        /// error instead of crashing. There is no fallback: io_uring is the runtime.
        @Test(
            .enabled(if: seccompTestPossible, "needs python3 and x86_64 (the filter names syscall 425)"),
            arguments: [(1, "Operation not permitted"), (38, "Function not implemented")])
        func reportsIoUringDeniedBySeccomp(_ errno: Int, _ text: String) throws {
            let script = """
                import ctypes, os, struct, sys
                libc = ctypes.CDLL(None, use_errno=True)
                LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
                ALLOW, ERRNO = 0x7fff0000, 0x00050000
                program = [
                    (LD_W_ABS, 0, 0, 4), (JEQ_K, 1, 0, 0xc000003e), (RET_K, 0, 0, ALLOW),  # x86_64 only
                    (LD_W_ABS, 0, 0, 0), (JEQ_K, 0, 1, 425),                              # io_uring_setup
                    (RET_K, 0, 0, ERRNO | int(sys.argv[1])), (RET_K, 0, 0, ALLOW),
                ]
                code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
                class Program(ctypes.Structure):
                    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
                p = Program(len(program), ctypes.cast(code, ctypes.c_void_p))
                assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
                assert libc.prctl(22, 2, ctypes.byref(p), 0, 0) == 0        # PR_SET_SECCOMP, FILTER
                os.execv(sys.argv[2], sys.argv[2:])
                """
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            try HTTPServerProcess.write(dir.path + "/deny.py", Array(script.utf8))
            let (status, output) = try runChild(
                "/bin/sh",
                [
                    "-c",
                    "exec python3 \(dir.path)/deny.py \(errno) \(executableNextToTests("uring-run-check")) --unavailable",
                ])
            #expect(status == 3, "exit status \(status), output:\n\(output)")
            #expect(!output.contains("FAILED"), "output:\n\(output)")
            #expect(output.contains("io_uring unavailable"), "output:\n\(output)")
            #expect(output.contains(text), "output:\n\(output)")
            #expect(output.contains("seccomp"), "the reason names the likely cause; output:\n\(output)")
        }

        /// `Uring.run(threads: 2)`: plain tasks spread over two rings, each task stays on its
        /// ring, file and no-op I/O from all of them succeeds, and every ring did work.
        @Test func spreadsPlainTasksOverSeveralRings() throws {
            let (status, output) = try runChild(executableNextToTests("uring-run-check"), ["--threads"])
            #expect(status == 0, "output:\n\(output)")
            #expect(!output.contains("FAILED"), "output:\n\(output)")
            #expect(output.contains("ok Uring.run(threads:) returns the body's result"), "output:\n\(output)")
        }
    }
}

/// The path of an executable built into the same directory as the test bundle.
func executableNextToTests(_ name: String) -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, 4095)
    let exe = String(decoding: buffer.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let dir = exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)]
    return dir + "/" + name
}

struct ChildFailed: Error, CustomStringConvertible {
    var description: String
}

/// Runs `path` with `arguments` to the end, capturing standard output and error; returns the
/// exit status and the output.
func runChild(_ path: String, _ arguments: [String] = []) throws -> (Int32, String) {
    let child = try SpawnedChild(path, arguments, includeStandardError: true)
    let output = child.readAll()
    return (child.wait(), output)
}

let seccompTestPossible: Bool = {
    var name = utsname()
    uname(&name)
    let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    return machine == "x86_64" && pythonAvailable
}()
