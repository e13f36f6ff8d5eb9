// Run by the test suite as a child process: Uring.run must install the process's executors before
// any task exists, which a test runner's own process cannot offer.
import Uring
import Glibc

func check(_ condition: Bool, _ what: String) {
    print((condition ? "ok " : "FAILED ") + what)
    if !condition { failures += 1 }
}
nonisolated(unsafe) var failures = 0

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
    return 42
}
check(result == 42, "Uring.run returns the body's result")
exit(failures == 0 ? 0 : 1)
