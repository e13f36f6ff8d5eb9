import Testing
import Uring

@testable import UringDocSnippets

// The snippets themselves are compiled from the docs into this target (see
// Tests/DocSnippets/Generator/main.swift); these tests run the ones GettingStarted tells a
// newcomer to copy: the TCP client and the graceful shutdown.

/// A one-line-per-connection server for the client example: answers "WELCOME" to a greeting.
func serveGreetings(on listener: TCPListener) async {
    try? await withThrowingDiscardingTaskGroup { group in
        for try await connection in listener.connections {
            group.addTask {
                for try await line in connection.lines() where line == "HELLO" {
                    try await connection.write(contentsOf: Array("WELCOME\r\n".utf8))
                }
                try await connection.close()
            }
        }
    }
}

extension IntegrationTests {
    @Suite("Documentation examples")
    struct DocExamples {
        @Test func theClientExampleGetsTheFirstLine() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let port = try listener.localAddress.port!
            let server = Task { await serveGreetings(on: listener) }
            #expect(try await fetchGreeting(host: "localhost", port: port) == "WELCOME")
            try await listener.close()  // ends the server's accept loop
            await server.value
        }

        @Test func theShutdownExampleStopsAcceptingThenClosesWhatIsLeft() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            let (stop, stopNow) = AsyncStream.makeStream(of: Void.self)
            let serving = Task {
                try await serveEcho(on: listener, until: { for await _ in stop { return } }, grace: .milliseconds(50))
            }
            // An idle client that never closes, and one that echoes.
            let idle = try await TCPConnection.connect(to: address, timeout: .seconds(5))
            let client = try await TCPConnection.connect(to: address, timeout: .seconds(5))
            try await client.write(contentsOf: [1, 2, 3])
            #expect(try await client.read(upTo: 3, timeout: .seconds(5)) == [1, 2, 3])
            stopNow.yield()
            try await serving.value  // returns: accepting stopped, the idle connections were closed
            #expect(
                try await idle.receive(upTo: 1, timeout: .seconds(5)) == [], "the server closed the idle connection")
            do {
                let refused = try await TCPConnection.connect(to: address, timeout: .seconds(5))
                try await refused.close()
                Issue.record("the closed listener accepted a connection")
            } catch {
                #expect(error.errno == .connectionRefused)
            }
            try await idle.close()
            try await client.close()
        }
    }
}
