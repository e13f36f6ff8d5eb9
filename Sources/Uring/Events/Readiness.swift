import Glibc
import SystemPackage

/// Waits for a descriptor to become readable or writable: the `poll`/`epoll` model, for C
/// libraries that hand you a descriptor and expect to be told when to call them again (libpq,
/// c-ares, ZeroMQ's `ZMQ_FD`, inotify, pidfds, UIO device files).
///
/// ```swift
/// let inotify = FileDescriptor(rawValue: inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
/// let ready = try await Readiness.wait(for: .readable, on: inotify, timeout: .seconds(5))
/// if ready.contains(.readable) { /* read the events */ }
/// ```
///
/// The wait is one `IORING_OP_POLL_ADD` on io_uring, and a readiness wait in `epoll` on the epoll
/// driver. It is cancellable and takes a deadline like any operation; it reads nothing, so the
/// descriptor's data stays for its owner.
public enum Readiness {
    /// Readiness conditions, as `poll(2)` names them.
    public struct Events: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// Data to read, a connection to accept, end of stream (`POLLIN`).
        public static let readable = Events(rawValue: UInt32(POLLIN))
        /// Room to write (`POLLOUT`).
        public static let writable = Events(rawValue: UInt32(POLLOUT))
        /// Urgent or exceptional data: TCP out-of-band data, a `sysfs` attribute that changed,
        /// a cgroup event (`POLLPRI`).
        public static let priority = Events(rawValue: UInt32(POLLPRI))
        /// The peer closed its writing half (`POLLRDHUP`; sockets).
        public static let readHangUp = Events(rawValue: 0x2000)
        /// An error is pending (`POLLERR`; always reported, never needs asking for).
        public static let error = Events(rawValue: UInt32(POLLERR))
        /// Hang-up: the other end is gone (`POLLHUP`; always reported).
        public static let hangUp = Events(rawValue: UInt32(POLLHUP))

        public var description: String {
            let names: [(Events, String)] = [
                (.readable, "readable"), (.writable, "writable"), (.priority, "priority"),
                (.readHangUp, "readHangUp"), (.error, "error"), (.hangUp, "hangUp"),
            ]
            return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ", ") + "]"
        }
    }

    /// Suspends until `descriptor` is ready for one of `events`, and returns what it is ready for
    /// (which may include ``Events/error`` and ``Events/hangUp``, reported whether asked for or not).
    ///
    /// ```swift
    /// // A C client library's socket: call into it when it can make progress.
    /// while !connection.isDone {
    ///     let wanted: Readiness.Events = connection.wantsWrite ? .writable : .readable
    ///     _ = try await Readiness.wait(for: wanted, on: connection.socket, timeout: .seconds(30))
    ///     connection.makeProgress()
    /// }
    /// ```
    ///
    /// A descriptor that is ready already returns at once. A regular file is always ready.
    ///
    /// - Parameters:
    ///   - events: What to wait for; must not be empty.
    ///   - descriptor: Any pollable descriptor (socket, pipe, eventfd, timerfd, signalfd, inotify,
    ///     pidfd, character device). It is not read, written or closed.
    ///   - timeout: A deadline for the wait.
    /// - Throws: ``IOError`` for ``IOError/Operation/poll``: ``IOError/Code/timedOut`` when
    ///   `timeout` passes first, ``IOError/Code/cancelled``, ``IOError/Code/closed`` when the
    ///   descriptor is closed by ``File/close()`` (or a socket's) meanwhile, `EBADF` for a descriptor
    ///   that is not open, `.invalidArgument` for empty `events`.
    public static func wait(
        for events: Events, on descriptor: FileDescriptor, timeout: Duration? = nil
    ) async throws(IOError) -> Events {
        guard !events.isEmpty, descriptor.rawValue >= 0 else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .poll)
        }
        let poll = PollOperation(fd: descriptor.rawValue, events: events.rawValue)
        return Events(rawValue: UInt32(bitPattern: try await poll.run(timeout: timeout)))
    }
}
