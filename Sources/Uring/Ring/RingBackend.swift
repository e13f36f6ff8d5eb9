import Glibc
import Synchronization

/// The driver a ring runs on.
///
/// Every operation has the same API and the same semantics on both: the same errors, the same
/// cancellation guarantee (a call never returns while anything can still write into its buffer),
/// the same back-pressure. What differs is how the work reaches the kernel.
///
/// ```swift
/// let ring = try RingExecutor()
/// print(ring.backend)  // "io_uring", or "epoll" inside a container that denies io_uring
/// ```
public enum RingBackend: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The kernel's io_uring: operations are submission entries, batched into one system call
    /// per loop iteration.
    case ioUring = "io_uring"
    /// For where io_uring is denied (container seccomp profiles, `kernel.io_uring_disabled`,
    /// gVisor): the same submission entries run by the ring's own thread. Sockets, pipes and
    /// other pollable descriptors are tried without blocking and wait for readiness in epoll;
    /// regular files and path operations run on a small worker pool (``FileWorkerPool``).
    case epoll

    public var description: String { rawValue }
}

/// Which driver a new ring runs on: ``automatic`` (io_uring, and epoll where io_uring is denied),
/// or one of them forced.
///
/// The default comes from the environment variable `SWIFT_URING_BACKEND` (`auto`, `io_uring` or
/// `epoll`); a ring created with an explicit preference ignores the variable.
///
/// ```swift
/// // Always the epoll driver, e.g. to test a service the way it will run in a container:
/// let ring = try RingExecutor(backend: .epoll)
/// ```
public enum RingBackendPreference: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// io_uring when the kernel allows it; the epoll driver when setting io_uring up fails with
    /// `EPERM`, `EACCES` or `ENOSYS`, or the kernel lacks an operation the runtime uses (logged
    /// once, with how to allow io_uring).
    case automatic = "auto"
    /// io_uring or nothing: where it is denied, creating a ring throws
    /// ``IOError/Code/ringUnavailable``.
    case ioUring = "io_uring"
    /// The epoll driver, even where io_uring works.
    case epoll

    public var description: String { rawValue }

    /// The preference that `SWIFT_URING_BACKEND` names, ``automatic`` when it is unset or empty.
    ///
    /// - Throws: ``IOError/Code/invalidArgument`` (operation ``IOError/Operation/setup``) when
    ///   the variable holds anything else, so that a typo never silently picks a driver.
    public static func fromEnvironment() throws(IOError) -> RingBackendPreference {
        guard let raw = unsafe getenv("SWIFT_URING_BACKEND") else { return .automatic }
        let value = unsafe String(cString: raw).lowercased()
        switch value {
        case "", "auto", "automatic": return .automatic
        case "io_uring", "iouring", "io-uring", "uring": return .ioUring
        case "epoll": return .epoll
        default:
            StallDetector.current.logger.error(
                "SWIFT_URING_BACKEND='\(value)' is not one of auto, io_uring, epoll")
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)
        }
    }
}

extension RingBackend {
    /// Set once a ring has fallen back, so the explanation is logged once per process.
    static let fallbackAnnounced = Atomic<Bool>(false)

    /// Logs (once per process, through swift-log) that io_uring was denied and the epoll driver
    /// runs instead, and how to allow io_uring.
    static func announceFallback(reason: String) {
        guard !fallbackAnnounced.exchange(true, ordering: .relaxed) else { return }
        StallDetector.current.logger.notice(
            """
            swift-uring: io_uring is not available (\(reason)); running on the epoll driver. \
            Everything works, at lower throughput. To allow io_uring in Docker, run with a seccomp profile \
            that permits io_uring_setup, io_uring_enter and io_uring_register (or --security-opt \
            seccomp=unconfined); in Kubernetes, a Localhost seccomp profile that does; on the host, \
            sysctl kernel.io_uring_disabled=0. Set SWIFT_URING_BACKEND=epoll to choose this driver \
            explicitly and silence this message.
            """)
    }
}
