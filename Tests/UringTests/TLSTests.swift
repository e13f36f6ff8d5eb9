import Glibc
import SystemPackage
import Testing

@testable import Uring
@testable import UringTLS

/// Certificates made at test time with the `openssl` command (no private key is committed): a
/// test CA, a server certificate it signed for `localhost` and 127.0.0.1, and a self-signed one.
struct TestCertificates: Sendable {
    let directory: String
    var ca: String { directory + "/ca.pem" }
    var serverChain: String { directory + "/server.pem" }
    var serverKey: String { directory + "/server.key" }
    var selfSigned: String { directory + "/self.pem" }
    var selfSignedKey: String { directory + "/self.key" }

    static let shared: TestCertificates = {
        var template = Array("/tmp/uring-tls-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let script = """
            set -e
            cd '\(directory)'
            ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'
            openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=uring-test-ca 2>/dev/null
            openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
                -extfile ext.cnf 2>/dev/null
            openssl req -x509 $ec -keyout self.key -out self.pem -days 2 -subj /CN=localhost \
                -addext subjectAltName=DNS:localhost 2>/dev/null
            """
        let (status, output) = (try? runChild("/bin/sh", ["-c", script])) ?? (-1, "")
        precondition(status == 0, "openssl could not make the test certificates: \(output)")
        return TestCertificates(directory: directory)
    }()

    var server: TLSConfiguration {
        .server(certificateChain: .file(FilePath(serverChain)), privateKey: .file(FilePath(serverKey)))
    }

    var client: TLSConfiguration { .client(trustRoots: .certificates(.file(FilePath(ca)))) }
}

/// A TLS echo server on its own ring: each connection shakes hands in its own task and echoes
/// until the peer's close_notify; it counts handshake failures by code.
final class TestTLSServer: Sendable {
    let ring: RingExecutor
    let listener: TLSListener
    let address: SocketAddress
    let task: Task<Void, Never>
    let failures = Lock<[TLSError.Code]>([])

    init(configuration: TLSConfiguration) throws {
        ring = try RingExecutor(name: "tls-test")
        listener = try TLSListener.bind(to: SocketAddress("127.0.0.1:0"), configuration: configuration)
        address = try listener.localAddress
        let listener = self.listener
        let failures = self.failures
        task = Task(executorPreference: ring) {
            await withDiscardingTaskGroup { group in
                do {
                    for try await connection in listener.connections {
                        group.addTask {
                            do throws(TLSError) {
                                try await TestTLSServer.echo(connection)
                            } catch {
                                failures.withLock { $0.append(error.code) }
                            }
                            try? await connection.close()
                        }
                    }
                } catch {}
                group.cancelAll()
            }
        }
    }

    static func echo(_ connection: TLSConnection) async throws(TLSError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = try await connection.read(into: buffer)
            if count == 0 { return }
            try await connection.write(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
    }

    func stop() async {
        task.cancel()
        try? await listener.close()
        await task.value
        ring.shutdown()
    }
}

extension IntegrationTests {
    @Suite("TLS")
    struct TLS {
        let certificates = TestCertificates.shared

        @Test func echoRoundTripsOfAHundredConnectionsOfAMebibyteEach() async throws {
            let server = try TestTLSServer(configuration: certificates.server)
            let client = certificates.client
            let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        var random = SeededRandom(seed: UInt64(index) + 7)
                        let data = random.bytes(1 << 20)
                        let connection = try await TLSConnection.connect(
                            to: server.address, serverName: "localhost", configuration: client)
                        async let sent: Void = {
                            var offset = 0
                            while offset < data.count {
                                let size = min(Int(random.next() % 50_000) + 1, data.count - offset)
                                try await connection.write(contentsOf: Array(data[offset..<offset + size]))
                                offset += size
                            }
                        }()
                        var received: [UInt8] = []
                        while received.count < data.count {
                            let chunk = try await connection.receive(upTo: 65_536)
                            if chunk.isEmpty { break }
                            received += chunk
                        }
                        try await sent
                        try await connection.close()
                        return received == data ? 0 : 1
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(mismatches == 0)
            await server.stop()
            #expect(server.failures.withLock { $0 }.isEmpty)
        }

        @Test func tls12AndTls13BothNegotiate() async throws {
            let server = try TestTLSServer(configuration: certificates.server)
            for version in [TLSVersion.tlsv12, .tlsv13] {
                var client = certificates.client
                client.maximumVersion = version
                let connection = try await TLSConnection.connect(
                    to: server.address, serverName: "localhost", configuration: client)
                #expect(connection.version == version)
                try await connection.write(contentsOf: Array("ping".utf8))
                #expect(try await connection.receive(upTo: 16) == Array("ping".utf8))
                try await connection.close()
            }
            await server.stop()
        }

        @Test func alpnIsNegotiatedInTheServersOrder() async throws {
            var configuration = certificates.server
            configuration.applicationProtocols = ["h2", "http/1.1"]
            let server = try TestTLSServer(configuration: configuration)
            var client = certificates.client
            client.applicationProtocols = ["http/1.1", "h2"]
            let connection = try await TLSConnection.connect(
                to: server.address, serverName: "127.0.0.1", configuration: client)
            #expect(connection.applicationProtocol == "h2")
            #expect(connection.peerCertificate?.isEmpty == false)
            try await connection.close()
            client.applicationProtocols = ["spdy/1"]
            let other = try await TLSConnection.connect(
                to: server.address, serverName: "localhost", configuration: client)
            #expect(other.applicationProtocol == nil)
            try await other.close()
            await server.stop()
        }

        @Test func aWrongServerNameIsRejected() async throws {
            let server = try TestTLSServer(configuration: certificates.server)
            await #expect {
                _ = try await TLSConnection.connect(
                    to: server.address, serverName: "example.com", configuration: certificates.client)
            } throws: { error in
                guard let error = error as? TLSError else { return false }
                return error.code == .certificateVerificationFailed && error.verification?.contains("hostname") == true
            }
            await server.stop()
        }

        @Test func anUntrustedSelfSignedServerIsRejected() async throws {
            let configuration = TLSConfiguration.server(
                certificateChain: .file(FilePath(certificates.selfSigned)),
                privateKey: .file(FilePath(certificates.selfSignedKey)))
            let server = try TestTLSServer(configuration: configuration)
            await #expect {
                _ = try await TLSConnection.connect(to: server.address, serverName: "localhost")
            } throws: { error in
                (error as? TLSError)?.code == .certificateVerificationFailed
            }
            // Trusting it explicitly works.
            let trusting = TLSConfiguration.client(trustRoots: .certificates(.file(FilePath(certificates.selfSigned))))
            let connection = try await TLSConnection.connect(
                to: server.address, serverName: "localhost", configuration: trusting)
            try await connection.close()
            await server.stop()
        }

        @Test func garbageAStalledHelloAndAResetAreDroppedWhileOthersAreServed() async throws {
            var configuration = certificates.server
            configuration.handshakeTimeout = .milliseconds(300)
            let server = try TestTLSServer(configuration: configuration)
            try await badClientsAndAGoodOne(server, round: 1)
            await server.stop()
        }

        /// The same bad clients, round after round, leave no OpenSSL memory behind: once the
        /// first round has made what OpenSSL keeps per thread and per context, the blocks
        /// OpenSSL holds (`TLSMemory.liveBlocks`, counted in debug builds) come back to where
        /// they were after each later round. (Descriptors: the suite's resource accounting.)
        ///
        /// The clients run on a ring of their own, as the server does: OpenSSL keeps state per
        /// thread (about 20 blocks, made on a thread's first use), and clients left on the
        /// cooperative pool could first reach one of its threads in a later round.
        @Test(.enabled(if: TLSMemory.installed)) func badClientsLeaveNoOpenSSLMemoryBehind() async throws {
            #if DEBUG
            var configuration = certificates.server
            configuration.handshakeTimeout = .milliseconds(300)
            let server = try TestTLSServer(configuration: configuration)
            let clients = try RingExecutor(name: "tls-clients")
            defer { clients.shutdown() }
            let (baseline, after) = try await Task(executorPreference: clients) {
                try await badClientsAndAGoodOne(server, round: 1)
                let baseline = await settledLiveBlocks()
                for round in 2...4 { try await badClientsAndAGoodOne(server, round: round) }
                return (baseline, await settledLiveBlocks())
            }.value
            #expect(after <= baseline, "OpenSSL holds \(after) blocks after rounds 2-4, \(baseline) after round 1")
            await server.stop()
            #endif
        }

        /// `TLSMemory.liveBlocks` once it has not changed for 200 ms (sessions are freed when the
        /// server's connection tasks end, a moment after the failures are counted).
        private func settledLiveBlocks() async -> Int {
            #if DEBUG
            var last = TLSMemory.liveBlocks
            var steady = 0
            for _ in 0..<200 where steady < 4 {
                try? await Task.sleep(for: .milliseconds(50))
                let now = TLSMemory.liveBlocks
                steady = now == last ? steady + 1 : 0
                last = now
            }
            return last
            #else
            return 0
            #endif
        }

        /// Random bytes instead of a ClientHello, a client that says nothing (a stalled handshake),
        /// and one that resets mid-stream, while a good client is served; returns when the server
        /// has counted the three failures of this round (`round` 1, 2, …).
        private func badClientsAndAGoodOne(_ server: TestTLSServer, round: Int) async throws {
            let garbage = try await TCPConnection.connect(to: server.address)
            var random = SeededRandom(seed: 99)
            try await garbage.write(contentsOf: random.bytes(4096))
            let silent = try await TCPConnection.connect(to: server.address)
            let victim = try await TLSConnection.connect(
                to: server.address, serverName: "localhost", configuration: certificates.client)
            try await victim.write(contentsOf: [1, 2, 3])
            _ = try await victim.receive(upTo: 3)
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(
                victim.tcp.descriptor.rawValue, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            try await victim.tcp.close()
            // The server still serves a good client.
            let good = try await TLSConnection.connect(
                to: server.address, serverName: "localhost", configuration: certificates.client)
            try await good.write(contentsOf: Array("still here".utf8))
            #expect(try await good.receive(upTo: 64) == Array("still here".utf8))
            try await good.close()
            let sawAll = await eventually(seconds: 10) {
                let codes = server.failures.withLock { $0 }
                return codes.filter { $0 == .handshakeFailed }.count >= round
                    && codes.filter { $0 == .handshakeTimedOut }.count >= round && codes.count >= 3 * round
            }
            #expect(sawAll, "round \(round): failures seen: \(server.failures.withLock { $0 })")
            try await garbage.close()
            try await silent.close()
        }

        @Test func truncationIsReportedAndACloseNotifyIsAnEnd() async throws {
            let listener = try TLSListener.bind(
                to: SocketAddress("127.0.0.1:0"), configuration: certificates.server)
            let address = try listener.localAddress
            // A client that closes the TCP connection without a close_notify.
            // The server's side shakes hands while the client connects.
            async let accepted = Self.acceptAndShakeHands(listener)
            let client = try await TLSConnection.connect(
                to: address, serverName: "localhost", configuration: certificates.client)
            let serverSide = try await accepted
            try await client.write(contentsOf: Array("partial".utf8))
            #expect(try await serverSide.receive(upTo: 64) == Array("partial".utf8))
            // A FIN with no close_notify before it (a close could reset instead: the client left
            // the server's session tickets unread).
            try await client.tcp.shutdown(.write)
            await #expect {
                _ = try await serverSide.receive(upTo: 64)
            } throws: { error in
                (error as? TLSError)?.code == .truncated
            }
            try await serverSide.close()
            try await client.tcp.close()
            // A client that closes properly: the server reads the end (0 bytes), not an error.
            async let acceptedAgain = Self.acceptAndShakeHands(listener)
            let polite = try await TLSConnection.connect(
                to: address, serverName: "localhost", configuration: certificates.client)
            let serverAgain = try await acceptedAgain
            try await polite.write(contentsOf: Array("bye".utf8))
            try await polite.close()
            #expect(try await serverAgain.receive(upTo: 64) == Array("bye".utf8))
            #expect(try await serverAgain.receive(upTo: 64).isEmpty)
            try await serverAgain.close()
            try await listener.close()
        }

        /// A read with a time limit on a connection that stays silent: a transport error with the
        /// time-out inside, and the connection still works after it.
        @Test func aTimedReadTimesOutAsATransportError() async throws {
            let server = try TestTLSServer(configuration: certificates.server)
            let connection = try await TLSConnection.connect(
                to: server.address, serverName: "localhost", configuration: certificates.client)
            do throws(TLSError) {
                _ = try await connection.receive(upTo: 16, timeout: .milliseconds(100))
                Issue.record("a silent connection returned data")
            } catch {
                #expect(error.code == .transport && error.transport?.code == .timedOut, "\(error)")
            }
            try await connection.write(contentsOf: Array("after".utf8))
            #expect(try await connection.receive(upTo: 16, timeout: .seconds(10)) == Array("after".utf8))
            try await connection.close()
            await server.stop()
        }

        /// `chunks()`: an echo written with it returns every byte, and the sequence ends at the
        /// peer's close_notify.
        @Test func chunksEchoEveryByteAndEndAtCloseNotify() async throws {
            let listener = try TLSListener.bind(to: SocketAddress("127.0.0.1:0"), configuration: certificates.server)
            let address = try listener.localAddress
            let server = Task {
                let connection = try await listener.accept()
                var total = 0
                for try await chunk in connection.chunks(maximumChunkSize: 1000) {
                    #expect(chunk.count <= 1000 && !chunk.isEmpty)
                    total += chunk.count
                    try await connection.write(contentsOf: chunk)
                }
                try await connection.close()
                return total
            }
            let client = try await TLSConnection.connect(
                to: address, serverName: "localhost", configuration: certificates.client)
            var random = SeededRandom(seed: 5)
            let data = random.bytes(300_000)
            async let sent: Void = {
                try await client.write(contentsOf: data)
                try await client.shutdownWriting()
            }()
            var received: [UInt8] = []
            for try await chunk in client.chunks() { received += chunk }
            try await sent
            #expect(received == data)
            #expect(try await server.value == data.count)
            try await client.close()
            try await listener.close()
        }

        /// A close from another task while a read waits on a silent peer: the close returns, and
        /// the read ends with an error, not a hang.
        @Test func closeEndsAReadInProgress() async throws {
            // A server that shakes hands and then neither reads nor writes.
            let listener = try TLSListener.bind(to: SocketAddress("127.0.0.1:0"), configuration: certificates.server)
            async let accepted = Self.acceptAndShakeHands(listener)
            let connection = try await TLSConnection.connect(
                to: try listener.localAddress, serverName: "localhost", configuration: certificates.client)
            let serverSide = try await accepted
            let reader = Task { () async -> TLSError? in
                do throws(TLSError) {
                    _ = try await connection.receive(upTo: 64)
                    return nil
                } catch {
                    return error
                }
            }
            try await Task.sleep(for: .milliseconds(50))
            try await connection.close()
            let error = await reader.value
            #expect(error?.code == .transport, "\(String(describing: error))")
            try await serverSide.close()
            try await listener.close()
        }

        static func acceptAndShakeHands(_ listener: TLSListener) async throws -> TLSConnection {
            let connection = try await listener.accept()
            try await connection.handshake()
            return connection
        }

        /// A throwaway identity made in memory: chain, key and trust roots all given as bytes.
        @Test func aSelfSignedIdentityFromMemoryServesAndIsTrustedByBytes() async throws {
            let identity = try TLSConfiguration.selfSignedIdentity(names: ["localhost", "127.0.0.1"])
            let server = try TestTLSServer(
                configuration: .server(certificateChain: identity.certificate, privateKey: identity.privateKey))
            for name in ["localhost", "127.0.0.1"] {
                let connection = try await TLSConnection.connect(
                    to: server.address, serverName: name,
                    configuration: .client(trustRoots: .certificates(identity.certificate)))
                try await connection.write(contentsOf: Array(name.utf8))
                #expect(try await connection.receive(upTo: 64) == Array(name.utf8))
                try await connection.close()
            }
            // Another identity is not trusted by this one's root.
            let other = try TLSConfiguration.selfSignedIdentity(names: ["localhost"])
            await #expect {
                _ = try await TLSConnection.connect(
                    to: server.address, serverName: "localhost",
                    configuration: .client(trustRoots: .certificates(other.certificate)))
            } throws: { error in
                (error as? TLSError)?.code == .certificateVerificationFailed
            }
            await server.stop()
            #expect(throws: TLSError.self) { _ = try TLSConfiguration.selfSignedIdentity(names: []) }
        }

        @Test func badConfigurationsAreTypedErrors() async throws {
            let missing = TLSConfiguration.server(
                certificateChain: .file("/nonexistent/chain.pem"), privateKey: .file("/nonexistent/key.pem"))
            #expect(throws: TLSError.self) {
                _ = try TLSListener.bind(to: SocketAddress("127.0.0.1:0"), configuration: missing)
            }
            // A key that does not belong to the chain.
            let mismatched = TLSConfiguration.server(
                certificateChain: .file(FilePath(certificates.serverChain)),
                privateKey: .file(FilePath(certificates.selfSignedKey)))
            let any = try SocketAddress("127.0.0.1:0")
            do throws(TLSError) {
                _ = try TLSListener.bind(to: any, configuration: mismatched)
                Issue.record("a mismatched key was accepted")
            } catch {
                #expect(error.code == .invalidConfiguration)
            }
            // A client that verifies needs a name to verify.
            await #expect(throws: TLSError.self) {
                _ = try await TLSConnection.connect(to: SocketAddress("127.0.0.1:9"), serverName: nil)
            }
        }

        /// uring-http serves HTTPS: curl fetches files and a range over one kept-alive connection,
        /// `openssl s_client` negotiates ALPN http/1.1 and verifies the chain, and SIGTERM is a
        /// clean exit. Also on the epoll driver, under a seccomp filter that denies io_uring.
        @Test(.enabled(if: curlAvailable, "curl is not installed"), arguments: sandboxModes)
        func uringHTTPServesHTTPSToCurlAndOpenSSL(sandboxed: Bool) throws {
            let server = try HTTPServerProcess(
                extra: ["--tls-certificate", certificates.serverChain, "--tls-key", certificates.serverKey],
                sandboxed: sandboxed)
            defer { #expect(server.stop() == 0) }
            let base = "https://localhost:\(server.port)"
            let curl = "curl -s --cacert \(certificates.ca)"
            let (rc, verbose) = try shell("\(curl) -v -o /dev/null -o /dev/null \(base)/ \(base)/4k.bin 2>&1")
            #expect(rc == 0, "\(verbose)")
            #expect(verbose.contains("ALPN: server accepted http/1.1"), "\(verbose)")
            #expect(verbose.contains("Re-using existing connection"), "\(verbose)")
            #expect(try shell("\(curl) \(base)/sub/").1 == "sub home\n")
            let range = try shell("\(curl) -r 100-199 -D - -o /dev/null \(base)/4k.bin").1
            #expect(range.hasPrefix("HTTP/1.1 206"), "\(range)")
            #expect(try shell("\(curl) -r 100-199 \(base)/4k.bin | wc -c").1.trimmingCharacters() == "100")
            // 64 MiB, every byte.
            #expect(try shell("\(curl) \(base)/big.bin | cmp - \(server.root.path)/big.bin && echo same").1 == "same\n")
            // An untrusting client is refused by its own verification.
            #expect(try shell("curl -s -o /dev/null \(base)/").0 != 0)
            let sClient = try shell(
                "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(server.port) -alpn http/1.1 "
                    + "-CAfile \(certificates.ca) -servername localhost 2>&1")
            #expect(sClient.1.contains("ALPN protocol: http/1.1"), "\(sClient.1)")
            #expect(sClient.1.contains("Verify return code: 0 (ok)"), "\(sClient.1)")
        }

        @Test func pythonsSslModuleTalksToTheServer() async throws {
            let server = try TestTLSServer(configuration: certificates.server)
            let script = """
                import socket, ssl, sys
                context = ssl.create_default_context(cafile=sys.argv[1])
                with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost") as tls:
                        tls.sendall(b"hello from python")
                        data = b""
                        while len(data) < 17:
                            data += tls.recv(64)
                        session = tls.session
                        print(tls.version(), data.decode(), session is not None and session.has_ticket)
                """
            let port = server.address.port ?? 0
            let (status, output) = try await BlockingPool.shared.run {
                try runChild("/usr/bin/env", ["python3", "-c", script, certificates.ca, "\(port)"])
            }
            #expect(status == 0, "\(output)")
            // The server's session tickets, held back to go with its first response, arrived.
            #expect(output.contains("TLSv1.3 hello from python True"), "\(output)")
            await server.stop()
        }
    }
}
