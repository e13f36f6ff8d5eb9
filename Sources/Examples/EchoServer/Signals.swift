import Glibc
import SystemPackage
import Uring

/// SIGINT and SIGTERM, received on the ring: the handler only writes the signal's number to a
/// pipe (async-signal-safe, never blocks: the write end is non-blocking), and `next()` awaits a
/// read of that pipe like any other I/O.
enum ShutdownSignals {
    /// The pipe: [read end, write end]. Created before the handler is installed.
    nonisolated(unsafe) static var pipeFDs: [Int32] = [-1, -1]
    nonisolated(unsafe) static var writeFD: Int32 = -1

    static func install() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Errno(rawValue: errno) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        pipeFDs = fds
        writeFD = fds[1]
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            var byte = UInt8(truncatingIfNeeded: signal)
            _ = write(ShutdownSignals.writeFD, &byte, 1)
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for signal in [SIGINT, SIGTERM] {
            sigaction(signal, &action, nil)
            sigaddset(&unblock, signal)
        }
        // A parent may have started us with these blocked (a mask is inherited across exec).
        sigprocmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// Waits (on the ring) for SIGINT or SIGTERM; returns its number.
    static func next() async throws(IOError) -> Int32 {
        let file = File(descriptor: FileDescriptor(rawValue: pipeFDs[0]))
        let byte = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
        defer { byte.deallocate() }
        _ = try await file.read(into: byte)  // a pipe: read at its current position
        return Int32(byte[0])
    }
}
