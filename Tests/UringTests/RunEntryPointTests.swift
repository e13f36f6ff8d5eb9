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

/// Runs `path` with `arguments`, capturing standard output and error; returns the exit status.
func runChild(_ path: String, _ arguments: [String] = []) throws -> (Int32, String) {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { throw ChildFailed(description: "pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    var pid = pid_t()
    let rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
    close(pipeFDs[1])
    guard rc == 0 else {
        close(pipeFDs[0])
        throw ChildFailed(description: "cannot start \(path): \(rc)")
    }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(pipeFDs[0], &chunk, chunk.count)
        if n <= 0 { break }
        output += chunk[..<n]
    }
    close(pipeFDs[0])
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let exited = (status & 0x7f) == 0
    return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), String(decoding: output, as: UTF8.self))
}
