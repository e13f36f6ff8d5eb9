import Logging
import ServiceLifecycle
import Testing
import UringHTTP
import UringServiceLifecycle

@testable import Uring

extension IntegrationTests {
    @Suite("swift-service-lifecycle")
    struct ServiceLifecycleAdapters {
        /// An HTTP server on a ring group, both run by a ServiceGroup: it serves, and a graceful
        /// shutdown stops the server, then the rings.
        @Test func aServiceGroupRunsAndStopsAServerAndItsRings() async throws {
            try await Uring.runBlocking {}  // the pool's thread stays: start it before counting
            let threadsBefore = threadCount()
            let rings = try RingGroup(count: 2, name: "service")
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            let server = HTTPServer(configuration: .init(hello: true))
            let http = RingService(
                run: { try await Task(executorPreference: rings[0]) { try await server.run(on: listener) }.value },
                onGracefulShutdown: { server.beginShutdown() })
            let serviceGroup = ServiceGroup(
                services: [RingGroupService(rings), http], gracefulShutdownSignals: [], cancellationSignals: [],
                logger: Logger(label: "test"))
            let running = Task { try await serviceGroup.run() }

            let connection = try await TCPConnection.connect(to: address)
            try await connection.write(contentsOf: Array("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
            var response: [UInt8] = []
            while true {
                let part = try await connection.receive(upTo: 4096, timeout: .seconds(10))
                if part.isEmpty { break }
                response += part
            }
            #expect(String(decoding: response, as: UTF8.self).hasSuffix("Hello, World!"))
            try await connection.close()

            await serviceGroup.triggerGracefulShutdown()
            try await running.value
            #expect(
                await eventually { threadCount() == threadsBefore }, "\(threadCount()) threads, \(threadsBefore) before"
            )
        }
    }
}
