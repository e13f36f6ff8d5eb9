import Glibc
import Testing

@testable import Uring
@testable import UringTLS

extension IntegrationTests {
    /// What a connection's last flights hold: a TLS 1.3 server's session tickets wait for its first
    /// response, and a last response carries the close_notify, so a connection per request costs
    /// two sends instead of four (and no TCP shutdown before the close).
    @Suite("TLS flights")
    struct TLSFlightTests {
        let certificates = TestCertificates.shared

        /// Moves what `from` has to send into what `to` receives, as a socket pair would.
        static func pump(_ from: TLSSession, to: TLSSession) {
            while let pending = from.pendingOutput(), let space = to.inputSpace() {
                let count = min(pending.count, space.count)
                space.baseAddress!.copyMemory(from: pending.baseAddress!, byteCount: count)
                to.commitInput(count)
                from.consumeOutput(count)
            }
        }

        /// A client and a server session shaken hands in memory (no kernel): the server's last
        /// step's output is left where it is.
        static func handshake(client: TLSSession, server: TLSSession) throws {
            var clientDone = false
            var serverDone = false
            for _ in 0..<10 where !(clientDone && serverDone) {
                if !clientDone {
                    switch client.handshake() {
                    case .done: clientDone = true
                    case .failed(let error): throw error
                    default: break
                    }
                    pump(client, to: server)
                }
                if !serverDone {
                    switch server.handshake() {
                    case .done: serverDone = true
                    case .failed(let error): throw error
                    default: break
                    }
                    // (A TLS 1.2 client completes only with the server's last flight.)
                    if !serverDone || !clientDone { pump(server, to: client) }
                }
            }
            #expect(clientDone && serverDone, "the handshake completed")
        }

        func sessions(version: TLSVersion) throws -> (client: TLSSession, server: TLSSession) {
            var clientConfiguration = certificates.client
            clientConfiguration.maximumVersion = version
            let client = try TLSSession(context: TLSContext(clientConfiguration), serverName: "localhost")
            let server = try TLSSession(context: TLSContext(certificates.server), serverName: nil)
            return (client, server)
        }

        /// TLS 1.3: the server's tickets wait after its handshake; its response and close_notify
        /// join them, so one contiguous region (one send) holds all three, and the client reads
        /// the response, then the end of the stream.
        @Test func ticketsResponseAndCloseNotifyLeaveInOneFlight() throws {
            let (client, server) = try sessions(version: .tlsv13)
            try Self.handshake(client: client, server: server)
            #expect(server.completedFlightCanWait, "a TLS 1.3 server's last flight is its tickets")
            let tickets = try #require(server.pendingOutput()?.count, "the tickets wait")
            let response = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".utf8)
            let step = response.withUnsafeBytes { server.write($0) }
            guard case .done(let written) = step else {
                Issue.record("write: \(step)")
                return
            }
            #expect(written == response.count)
            #expect(server.queueCloseNotifyIfRoom(), "room for the alert after a small response")
            let flight = try #require(server.pendingOutput()?.count)
            #expect(flight > tickets + response.count, "tickets, the response's record and the alert, in one region")
            Self.pump(server, to: client)
            #expect(server.pendingOutput() == nil, "all of it taken in one go")
            var buffer = [UInt8](repeating: 0, count: 256)
            let read = buffer.withUnsafeMutableBytes { client.read(into: $0) }
            guard case .done(let count) = read else {
                Issue.record("read: \(read)")
                return
            }
            #expect(Array(buffer[..<count]) == response)
            let end = buffer.withUnsafeMutableBytes { client.read(into: $0) }
            guard case .closed = end else {
                Issue.record("after the response: \(end), not the close_notify")
                return
            }
        }

        /// TLS 1.2: the server's last flight (its Finished) completes the client's handshake, so
        /// it is not held back; and a full output buffer takes no alert (it would be cut).
        @Test func aTLS12ServersLastFlightGoesAtOnceAndAFullBufferTakesNoAlert() throws {
            let (client, server) = try sessions(version: .tlsv12)
            try Self.handshake(client: client, server: server)
            #expect(!server.completedFlightCanWait)
            #expect(!client.completedFlightCanWait, "a client's Finished never waits")
            let large = [UInt8](repeating: 7, count: 1 << 20)
            var written = 0
            var step = large.withUnsafeBytes { server.write($0) }
            while case .done(let count) = step, count > 0 {
                written += count
                step = large.withUnsafeBytes { server.write(UnsafeRawBufferPointer(rebasing: $0[written...])) }
            }
            guard case .wantWrite = step else {
                Issue.record("records went in until the buffer was full, then \(step)")
                return
            }
            // The buffer is full to its last byte (a record cut at the end waits in OpenSSL).
            #expect(server.pendingOutput()?.count == TLSTransport.outputCapacity)
            #expect(!server.queueCloseNotifyIfRoom(), "no alert into a full buffer")
        }

        /// Over sockets: a last write of more than the output buffer holds arrives whole and then
        /// ends with a close_notify (an end, not a truncation), and the writer can write no more.
        @Test func aLastWriteArrivesWholeAndEndsTheStream() async throws {
            let listener = try TLSListener.bind(to: SocketAddress("127.0.0.1:0"), configuration: certificates.server)
            let address = try listener.localAddress
            for size in [0, 100, 1 << 20] {
                async let accepted = IntegrationTests.TLS.acceptAndShakeHands(listener)
                let client = try await TLSConnection.connect(
                    to: address, serverName: "localhost", configuration: certificates.client)
                let server = try await accepted
                let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
                let writer = Task {
                    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 16)
                    defer { copy.deallocate() }
                    copy.copyBytes(from: bytes)
                    try await server.writeLast(UnsafeRawBufferPointer(rebasing: copy[..<size]))
                }
                var received: [UInt8] = []
                while true {
                    let chunk = try await client.receive(upTo: 64 * 1024)
                    if chunk.isEmpty { break }
                    received += chunk
                }
                try await writer.value
                #expect(received.count == size && received == bytes, "\(size) bytes, then the close_notify")
                await #expect {
                    try await server.write(contentsOf: [1])
                } throws: { error in
                    (error as? TLSError)?.code == .closed
                }
                try await server.close()
                try await client.close()
            }
            try await listener.close()
        }
    }
}
