import Glibc
import Testing

@testable import Uring

extension IntegrationTests {
    /// `uring-tail` (Sources/Examples/TailFile): inotify and a readiness sequence, public API only.
    @Suite("uring-tail example")
    struct TailExample {
        @Test func followsAppendsAndStopsOnSIGTERM() async throws {
            let dir = TemporaryDirectory()
            defer { dir.cleanup() }
            let path = dir.path + "/log"
            let log = open(path, O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC, 0o644)
            try #require(log >= 0)
            defer { close(log) }
            func append(_ text: String) { _ = text.withCString { write(log, $0, strlen($0)) } }
            append("first\n")
            let child = try SpawnedChild(executableNextToTests("uring-tail"), [path, "--from-start"])
            #expect(child.readLine(within: 20) == "first")
            for index in 0..<20 {
                append("line \(index)\n")
                #expect(child.readLine(within: 10) == "line \(index)")
            }
            kill(child.pid, SIGTERM)
            var status: Int32 = 0
            waitpid(child.pid, &status, 0)
            #expect(status == 0, "exit status \(status)")
        }
    }
}
