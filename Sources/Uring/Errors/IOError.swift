import Glibc
import SystemPackage

/// The error every swift-uring operation throws.
///
/// An `IOError` says *what* failed (``operation``), *why* (``code``), and, when the kernel said so,
/// the ``errno`` it returned. Cancellation and time-outs have codes of their own, so callers can
/// tell "the task was cancelled" apart from "the kernel refused":
///
/// ```swift
/// do {
///     let n = try await file.read(into: buffer, at: 0)
/// } catch let error where error.code == .timedOut {
///     // the operation's deadline passed
/// } catch let error where error.code == .systemCall && error.errno == .noSuchFileOrDirectory {
///     // ENOENT
/// }
/// ```
///
/// The error is built without allocating: its fields are plain values and the source location is
/// a static string, so throwing on a hot path costs no more than returning.
public struct IOError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Why an operation failed.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        @usableFromInline enum Base: UInt8, Sendable {
            case systemCall, cancelled, timedOut, invalidArgument, ringUnavailable, unexpectedEndOfFile,
                executorShutdown, closed, nameResolution, frameTooLong, unsupported
        }
        @usableFromInline let base: Base
        @usableFromInline init(_ base: Base) { self.base = base }

        /// The kernel returned an error; ``IOError/errno`` says which.
        public static let systemCall = Code(.systemCall)
        /// The awaiting task was cancelled. The kernel's operation was cancelled too, and had
        /// finished with it before the error was thrown.
        public static let cancelled = Code(.cancelled)
        /// The operation's deadline passed before it completed; it was cancelled in the kernel.
        public static let timedOut = Code(.timedOut)
        /// The arguments were rejected before anything was submitted (a negative offset, a
        /// negative length, a path with a NUL byte). ``IOError/errno`` is `EINVAL`.
        public static let invalidArgument = Code(.invalidArgument)
        /// io_uring could not be set up. ``IOError/errno`` tells why; ``IOError/description``
        /// names the likely cause (disabled by sysctl, blocked by seccomp, memlock limit).
        public static let ringUnavailable = Code(.ringUnavailable)
        /// The file ended before the requested number of bytes could be read.
        public static let unexpectedEndOfFile = Code(.unexpectedEndOfFile)
        /// The ring was shut down before the operation could be submitted.
        public static let executorShutdown = Code(.executorShutdown)
        /// The descriptor was closed while the operation was pending: another task called
        /// `close()` on the same listener, connection, socket or file. The operation was ended in
        /// the kernel before the error was thrown; nothing can still write into its buffer.
        public static let closed = Code(.closed)
        /// A host name could not be resolved. ``IOError/resolverStatus`` holds `getaddrinfo`'s
        /// status (`EAI_NONAME`, `EAI_AGAIN`, …) and ``IOError/description`` its text.
        public static let nameResolution = Code(.nameResolution)
        /// A delimited frame (a line) grew past its maximum length before its delimiter came.
        public static let frameTooLong = Code(.frameTooLong)
        /// The kernel lacks an io_uring operation or feature the runtime needs (a ring that
        /// asked for io_uring only, on an old kernel). ``IOError/subject`` names it
        /// (``IOError/Subject/feature(_:)``); ``IOError/errno`` is `EOPNOTSUPP`.
        public static let unsupported = Code(.unsupported)

        public var description: String {
            switch base {
            case .systemCall: "system call failed"
            case .cancelled: "cancelled"
            case .timedOut: "timed out"
            case .invalidArgument: "invalid argument"
            case .ringUnavailable: "io_uring unavailable"
            case .unexpectedEndOfFile: "unexpected end of file"
            case .executorShutdown: "ring shut down"
            case .closed: "descriptor closed"
            case .nameResolution: "name resolution failed"
            case .frameTooLong: "frame too long"
            case .unsupported: "not supported by this kernel"
            }
        }
    }

    /// The operation that failed.
    public enum Operation: UInt8, Sendable, Hashable, CustomStringConvertible {
        case setup, nop, read, write, open, close, sync, stat, remove, rename, makeDirectory, removeDirectory,
            sleep, cancel, poll
        case truncate, allocate, link, symbolicLink, readLink, readDirectory, copy
        /// An entry submitted with ``Uring/submit(_:timeout:)``.
        case custom
        case socket, bind, listen, accept, connect, send, receive, shutdown, setOption, getOption, address
        case resolve

        public var description: String {
            switch self {
            case .setup: "io_uring_setup"
            case .nop: "nop"
            case .read: "read"
            case .write: "write"
            case .open: "open"
            case .close: "close"
            case .sync: "sync"
            case .stat: "stat"
            case .remove: "remove"
            case .rename: "rename"
            case .makeDirectory: "mkdir"
            case .removeDirectory: "rmdir"
            case .sleep: "sleep"
            case .cancel: "cancel"
            case .poll: "poll"
            case .truncate: "ftruncate"
            case .allocate: "fallocate"
            case .link: "link"
            case .symbolicLink: "symlink"
            case .readLink: "readlink"
            case .readDirectory: "getdents64"
            case .copy: "copy_file_range"
            case .custom: "custom operation"
            case .socket: "socket"
            case .bind: "bind"
            case .listen: "listen"
            case .accept: "accept"
            case .connect: "connect"
            case .send: "send"
            case .receive: "receive"
            case .shutdown: "shutdown"
            case .setOption: "setsockopt"
            case .getOption: "getsockopt"
            case .address: "getsockname"
            case .resolve: "getaddrinfo"
            }
        }
    }

    /// Why the operation failed.
    public var code: Code
    /// The error number the kernel returned, if any. `nil` for ``Code/cancelled``,
    /// ``Code/timedOut`` and ``Code/unexpectedEndOfFile``.
    public var errno: Errno?
    /// The operation that failed.
    public var operation: Operation
    /// Where in swift-uring the error was raised (for diagnostics; not part of equality).
    public var fileID: StaticString
    /// The line of ``fileID``.
    public var line: UInt
    /// What the operation was about, when there is something to say: the path of a file
    /// operation, the address of a connect or bind, the host of a name look-up. Set only on the
    /// failure path (no allocation when nothing fails); not part of equality.
    public var subject: Subject?
    /// `getaddrinfo`'s status (an `EAI_*` value) for ``Code/nameResolution``; `nil` otherwise.
    public var resolverStatus: Int32?

    /// What a failed operation was about (see ``IOError/subject``).
    public enum Subject: Sendable, Hashable, CustomStringConvertible {
        /// A file-system path.
        case path(FilePath)
        /// A socket address (the peer of a connect, the address of a bind).
        case address(SocketAddress)
        /// A host name and port being resolved or connected to.
        case host(String, port: Int)
        /// A kernel feature (an io_uring opcode) that is missing.
        case feature(String)

        public var description: String {
            switch self {
            case .path(let path): "'\(path)'"
            case .address(let address): "\(address)"
            case .host(let host, let port): "\(host):\(port)"
            case .feature(let name): name
            }
        }
    }

    /// Creates an error.
    public init(
        _ code: Code, errno: Errno? = nil, operation: Operation, fileID: StaticString = #fileID, line: UInt = #line
    ) {
        self.code = code
        self.errno = errno
        self.operation = operation
        self.fileID = fileID
        self.line = line
    }

    /// An error for a failed system call: `errno` is the positive error number.
    @inlinable
    static func system(
        _ errno: Int32, _ operation: Operation, fileID: StaticString = #fileID, line: UInt = #line
    ) -> IOError {
        IOError(.systemCall, errno: Errno(rawValue: errno), operation: operation, fileID: fileID, line: line)
    }

    public static func == (lhs: IOError, rhs: IOError) -> Bool {
        lhs.code == rhs.code && lhs.errno == rhs.errno && lhs.operation == rhs.operation
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(errno?.rawValue)
        hasher.combine(operation)
    }

    /// The same error, naming what the operation was about (see ``subject``).
    func about(_ subject: Subject) -> IOError {
        var copy = self
        copy.subject = subject
        return copy
    }

    public var description: String {
        var text = "\(operation)"
        if let subject { text += " \(subject)" }
        text += ": \(code)"
        if let errno {
            text += " (\(errno.rawValue): \(errno.description))"
        }
        if code == .nameResolution, let resolverStatus, let reason = unsafe gai_strerror(resolverStatus) {
            unsafe text += ": " + String(cString: reason)
        }
        if code == .ringUnavailable, let errno {
            text += ": " + IOError.ringUnavailableReason(errno)
        }
        return text
    }

    /// A human explanation of why `io_uring_setup` failed, by errno.
    static func ringUnavailableReason(_ errno: Errno) -> String {
        switch errno {
        case .notPermitted:
            "io_uring is disabled or restricted (sysctl kernel.io_uring_disabled, kernel.io_uring_group,"
                + " or a seccomp filter such as a container runtime's default profile)"
        case .noFunction:
            "the kernel has no io_uring (built without CONFIG_IO_URING) or a seccomp filter hides it"
        case .noMemory:
            "the kernel could not allocate the ring (on kernels before 5.12 the locked-memory limit"
                + " RLIMIT_MEMLOCK applies: raise `ulimit -l`)"
        case .invalidArgument:
            "the kernel rejected every set-up flag tried (a kernel older than 5.6?)"
        case .tooManyOpenFiles, .tooManyOpenFilesInSystem:
            "no file descriptor is free for the ring"
        default:
            "io_uring_setup failed"
        }
    }
}
