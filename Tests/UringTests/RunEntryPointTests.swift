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
