import Glibc
import SystemPackage

/// SIGINT and SIGTERM (or other signals), received on the ring: a server's shutdown trigger.
///
/// The installed handler only writes the signal's number to a pipe (async-signal-safe; the write
/// end is non-blocking, so the handler never blocks), and ``next()`` awaits a read of that pipe
/// like any other I/O. No thread blocks in `sigwait`, and no task is woken from a signal handler.
///
/// ```swift
/// try ProcessSignals.install()                 // SIGINT and SIGTERM
/// let server = Task { try await serve(listener) }
/// let signal = try await ProcessSignals.next()  // suspends until one arrives
/// print("signal \(signal): shutting down")
/// server.cancel()
/// ```
public enum ProcessSignals {
    /// The pipe's ends; written once, by `install`, before the handler exists.
    nonisolated(unsafe) private static var readFD: Int32 = -1
    nonisolated(unsafe) private static var writeFD: Int32 = -1
    private static let installed = Lock(false)

    /// Installs the handler for `signals` (default SIGINT and SIGTERM) and unblocks them (a parent
    /// may have started the process with them blocked; a signal mask is inherited across exec).
    /// Call it once, early; later calls do nothing.
    ///
    /// - Throws: ``IOError`` for ``IOError/Operation/setup`` if the pipe cannot be created.
    public static func install(_ signals: [Int32] = [SIGINT, SIGTERM]) throws(IOError) {
        let result = installed.withLock { done -> Result<[Int32], IOError>? in
            if done { return nil }
            var fds: [Int32] = [0, 0]
            guard unsafe pipe(&fds) == 0 else { return .failure(IOError.system(errno, .setup)) }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
            done = true
            return .success(fds)
        }
        guard let result else { return }
        let fds = try result.get()
        unsafe readFD = fds[0]
        unsafe writeFD = fds[1]
        var action = sigaction()
        unsafe action.__sigaction_handler.sa_handler = { signal in
            var byte = UInt8(truncatingIfNeeded: signal)
            _ = unsafe write(ProcessSignals.writeFD, &byte, 1)
        }
        unsafe sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        var unblock = sigset_t()
        unsafe sigemptyset(&unblock)
        for signal in signals {
            unsafe sigaction(signal, &action, nil)
            unsafe sigaddset(&unblock, signal)
        }
        unsafe sigprocmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// Waits, on the ring, for the next of the installed signals and returns its number.
    ///
    /// - Throws: ``IOError/Code/cancelled`` when the waiting task is cancelled;
    ///   ``IOError/Code/invalidArgument`` if ``install(_:)`` was not called.
    public static func next() async throws(IOError) -> Int32 {
        guard unsafe readFD >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .read) }
        let file = unsafe File(descriptor: FileDescriptor(rawValue: readFD))
        let byte = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
        defer { unsafe byte.deallocate() }
        _ = try unsafe await file.read(into: byte)  // a pipe: read at its current position
        return unsafe Int32(byte[0])
    }
}
