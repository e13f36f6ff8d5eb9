import Glibc
import Testing

@testable import Uring

extension IntegrationTests {
    @Suite("UDP")
    struct UDP {
        @Test(arguments: ["127.0.0.1:0", "[::1]:0"])
        func roundTripWithSenderAddresses(_ bindTo: String) async throws {
            let server = try UDPSocket.bind(to: SocketAddress(bindTo))
            let client = try UDPSocket.bind(to: SocketAddress(bindTo))
            let serverAddress = try server.localAddress
            let clientAddress = try client.localAddress

            let sent = try await client.send(contentsOf: Array("ping".utf8), to: serverAddress)
            #expect(sent == 4)
            let (datagram, sender) = try await server.receive(upTo: 1500, timeout: .seconds(5))
            #expect(datagram == Array("ping".utf8))
            #expect(sender == clientAddress, "the receive reports who sent it")

            try await server.send(contentsOf: datagram + Array("-pong".utf8), to: sender)
            let (reply, from) = try await client.receive(upTo: 1500, timeout: .seconds(5))
            #expect(reply == Array("ping-pong".utf8))
            #expect(from == serverAddress)
            try await server.close()
            try await client.close()
        }

        @Test func connectedModeAndTruncation() async throws {
            let server = try UDPSocket.bind(to: SocketAddress("127.0.0.1:0"))
            let client = try UDPSocket.bind(to: SocketAddress("127.0.0.1:0"))
            try client.connect(to: server.localAddress)
            try await client.send(contentsOf: Array(0..<200))  // no address: the connected peer
            let (head, _) = try await server.receive(upTo: 50, timeout: .seconds(5))
            #expect(head == Array(0..<50), "a datagram longer than the buffer is truncated")
            try await server.close()
            try await client.close()
        }

        @Test func unconnectedSendWithoutAddressFails() async throws {
            let socket = try UDPSocket.bind(to: SocketAddress("127.0.0.1:0"))
            await #expect(throws: IOError.system(EDESTADDRREQ, .send)) { try await socket.send(contentsOf: [1]) }
            try await socket.close()
        }

        @Test func aPendingReceiveIsCancellableAndTimesOut() async throws {
            let socket = try UDPSocket.bind(to: SocketAddress("127.0.0.1:0"))
            await #expect(throws: IOError(.timedOut, operation: .receive)) {
                _ = try await socket.receive(upTo: 16, timeout: .milliseconds(30))
            }
            let task = Task { try await socket.receive(upTo: 16) }
            try await Task.sleep(for: .milliseconds(20))
            task.cancel()
            await #expect(throws: IOError(.cancelled, operation: .receive)) { _ = try await task.value }
            try await socket.close()
        }
    }
}
