import ServiceLifecycle
import Uring

/// A ``Uring/RingGroup`` as a swift-service-lifecycle `Service`: it runs until the service group
/// shuts down gracefully (or is cancelled), then stops every ring (in-flight operations are
/// cancelled, the rings closed, their threads joined).
///
/// Put it first in the service group: a service group shuts its services down in reverse order,
/// one after the other, so the services that use the rings (servers started with
/// `Task(executorPreference: group.next())`, for example) finish before the rings stop:
///
/// ```swift
/// let rings = try RingGroup()
/// let serviceGroup = ServiceGroup(
///     services: [RingGroupService(rings), myServer],   // myServer stops first, then the rings
///     gracefulShutdownSignals: [.sigterm, .sigint],
///     logger: logger)
/// try await serviceGroup.run()
/// ```
public struct RingGroupService: Service {
    public let rings: RingGroup

    public init(_ rings: RingGroup) {
        self.rings = rings
    }

    public func run() async throws {
        // Wait for the graceful shutdown (gracefulShutdown() throws if the task is cancelled:
        // either way, the rings stop now).
        try? await gracefulShutdown()
        let rings = self.rings
        // Joining threads blocks: do it on a pool thread, not on whatever runs this task.
        try await Uring.runBlocking { rings.shutdown() }
    }
}

/// Runs `body` as a swift-service-lifecycle `Service`: the usual adapter for a server whose main
/// loop is an async function, such as `HTTPServer.run(on:)`; `onGracefulShutdown` is called when
/// the service group begins its graceful shutdown (`server.beginShutdown()`).
///
/// ```swift
/// let server = HTTPServer(configuration: .init(root: "/srv/www"))
/// let service = RingService(
///     run: { try await server.run(on: listener) },
///     onGracefulShutdown: { server.beginShutdown() })
/// ```
public struct RingService: Service {
    private let body: @Sendable () async throws -> Void
    private let onGracefulShutdown: @Sendable () -> Void

    public init(
        run body: @escaping @Sendable () async throws -> Void, onGracefulShutdown: @escaping @Sendable () -> Void
    ) {
        self.body = body
        self.onGracefulShutdown = onGracefulShutdown
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await body()
        } onGracefulShutdown: {
            onGracefulShutdown()
        }
    }
}
