import Glibc

// The process-wide part of `Signals`: the handler and the self-pipe it writes to.
//
// The handler only writes the signal's number to a pipe (async-signal-safe; the write end is
// non-blocking, so the handler never blocks, and a full pipe drops the number rather than
// stalling a thread). The read end is read on a ring by whichever stream consumer reads for
// everyone (`Signals.swift`). signalfd was not chosen: it sees a signal only when every thread
// blocks it, and a library cannot block signals in threads it does not own (the Swift runtime's,
// the application's).

enum SignalHandlers {
    // SAFETY: every pointer here is to a local (`fds`, `action`, `previous`, the sets, `bytes`,
    // the read buffer) that outlives the call it is passed to; the handler touches only
    // `pipeWrite`, which is written once before any handler exists and never again.

    /// The pipe's write end: set once, before the first handler is installed, never changed.
    nonisolated(unsafe) static var pipeWrite: Int32 = -1

    /// A pipe for the handler: the read end non-blocking too (read with ring reads that wait for
    /// readiness, and drained without blocking when the last stream ends). Both close on exec.
    static func makePipe() -> (read: Int32, write: Int32)? {
        var fds: [Int32] = [0, 0]
        guard unsafe pipe(&fds) == 0 else { return nil }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        return (fds[0], fds[1])
    }

    /// Installs the pipe-writing handler for `signal`, unblocks it in the calling thread, and
    /// returns the disposition it replaced (nil if `sigaction` failed).
    static func install(_ signal: Int32) -> sigaction? {
        var action = sigaction()
        unsafe action.__sigaction_handler.sa_handler = { signal in
            let saved = errno
            var byte = UInt8(truncatingIfNeeded: signal)
            _ = unsafe write(SignalHandlers.pipeWrite, &byte, 1)
            errno = saved
        }
        unsafe sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        var previous = sigaction()
        guard unsafe sigaction(signal, &action, &previous) == 0 else { return nil }
        var unblock = sigset_t()
        unsafe sigemptyset(&unblock)
        unsafe sigaddset(&unblock, signal)
        unsafe pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        return previous
    }

    /// Puts back the disposition `install` replaced.
    static func restore(_ signal: Int32, _ previous: sigaction) {
        var previous = previous
        unsafe sigaction(signal, &previous, nil)
    }

    /// Reads and drops whatever the pipe holds (the last stream ended: nobody wants those).
    static func drain(_ fd: Int32) {
        var bytes = [UInt8](repeating: 0, count: 256)
        while unsafe read(fd, &bytes, bytes.count) > 0 {}
    }

    /// Whether `signal` can have a handler (not SIGKILL or SIGSTOP, and in range).
    static func isCatchable(_ signal: Int32) -> Bool {
        signal >= 1 && signal < 65 && signal != SIGKILL && signal != SIGSTOP
    }
}

extension SignalHandlers {
    /// Waits (on the ring) for the pipe to hold signal numbers, and returns them.
    static func readPipe(_ fd: Int32) async throws(IOError) -> [UInt8] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
        defer { unsafe buffer.deallocate() }
        // The buffer is lent for this call only: it returns after the final completion.
        let read = unsafe ReadOperation(fd: fd, buffer: buffer.baseAddress, count: 64, offset: .max)
        let count = Int(try await read.run())
        return unsafe Array(buffer[..<count])
    }
}
