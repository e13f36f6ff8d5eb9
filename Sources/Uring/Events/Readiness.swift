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

extension Readiness {
    /// Readiness reports for `descriptor` as an `AsyncSequence`, driven by one multishot poll:
    /// each element is what the descriptor is ready for at a wake-up.
    ///
    /// ```swift
    /// // inotify: one element per burst of file-system events.
    /// for try await _ in Readiness.events(.readable, on: inotify) {
    ///     drainInotifyEvents(inotify)
    /// }
    /// ```
    ///
    /// - What an element means: the descriptor was woken and is ready; read (or write) until it
    ///   says `EAGAIN`. On io_uring a report comes with each wake-up (new data), so data left
    ///   unread does not report again until more comes; on the epoll driver the report is
    ///   level-triggered (it repeats while the descriptor stays ready). Code that drains the
    ///   descriptor on each element behaves the same on both.
    /// - Back-pressure, as for received chunks: at most 16 reports wait for the consumer; then the
    ///   poll is cancelled, and armed again when the consumer catches up (a new poll reports at
    ///   once if the descriptor is still ready, so nothing is lost).
    /// - The sequence ends (returns nil) when the descriptor is closed through the runtime
    ///   (``File/close()``, a socket's `close()`); it throws ``IOError/Code/cancelled`` when the
    ///   consuming task is cancelled, and the errno if the poll fails (`EBADF`).
    public static func events(_ events: Events, on descriptor: FileDescriptor) -> ReadinessEvents {
        ReadinessEvents(events: events, descriptor: descriptor.rawValue)
    }
}

/// Readiness reports of one descriptor (see ``Readiness/events(_:on:)``).
public struct ReadinessEvents: AsyncSequence, Sendable {
    public typealias Element = Readiness.Events
    public typealias Failure = IOError

    let events: Readiness.Events
    let descriptor: Int32

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(
            consumer: StreamConsumer(kind: .readiness(events: events.rawValue), fd: descriptor, limit: 16),
            valid: !events.isEmpty && descriptor >= 0)
    }

    /// Takes one report per `next()`; dropping it cancels the poll.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: StreamConsumer
        let valid: Bool

        public mutating func next() async throws(IOError) -> Readiness.Events? {
            try await nextReport()
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(IOError) -> Readiness.Events? {
            try await nextReport()
        }

        private func nextReport() async throws(IOError) -> Readiness.Events? {
            guard valid else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .poll) }
            switch try await consumer.next() {
            case .item(let result, _): return Readiness.Events(rawValue: UInt32(bitPattern: result))
            case .end: return nil
            case .failure(let errno): throw IOError.system(errno, .poll)
            case .cancelled: throw IOError(.cancelled, operation: .poll)
            case .shutdown: throw IOError(.executorShutdown, operation: .poll)
            }
        }
    }
}
