import Glibc
import Synchronization
import Testing

@testable import Uring

/// Happy Eyeballs without a network: fake attempts that succeed, fail or hang.
@Suite("Happy Eyeballs")
struct HappyEyeballsTests {
    let addresses = [try! SocketAddress("[::1]:1"), try! SocketAddress("127.0.0.1:1"), try! SocketAddress("[::2]:1")]

    @Test func aHangingFirstAttemptIsOvertakenAfterTheDelayAndCancelled() async throws {
        let started = Mutex<[SocketAddress]>([])
        let firstCancelled = Mutex(false)
        let addresses = self.addresses
        let winner = try await HappyEyeballs.race(addresses, delay: .milliseconds(20)) {
            address throws(IOError) -> SocketAddress in
            started.withLock { $0.append(address) }
            if address == addresses[0] {
                // Never answers (a black-holed IPv6 route): only cancellation ends it.
                try? await Task.sleep(for: .seconds(60))
                firstCancelled.withLock { $0 = Task.isCancelled }
                throw IOError(.cancelled, operation: .connect)
            }
            return address
        } discard: { _ in
        }
        #expect(winner == addresses[1], "the second address, started after the delay, wins")
        #expect(started.withLock { $0 } == [addresses[0], addresses[1]], "the third was never needed")
        #expect(firstCancelled.withLock { $0 }, "the losing attempt was cancelled")
    }

    @Test func aFailureStartsTheNextAttemptAtOnce() async throws {
        let addresses = self.addresses
        // With an hour of delay, only "start the next one when this one fails" can finish the race.
        let winner = try await HappyEyeballs.race(addresses, delay: .seconds(3600)) {
            address throws(IOError) -> SocketAddress in
            if address != addresses[2] { throw IOError.system(ECONNREFUSED, .connect) }
            return address
        } discard: { _ in
        }
        #expect(winner == addresses[2])
    }

    @Test func everyAttemptFailingThrowsTheLastError() async {
        await #expect(throws: IOError.system(ENETUNREACH, .connect)) {
            _ = try await HappyEyeballs.race(addresses, delay: .seconds(3600)) { address throws(IOError) -> Int in
                throw IOError.system(address.family == .ipv6 ? ENETUNREACH : ECONNREFUSED, .connect)
            } discard: { _ in
            }
        }
    }

    @Test func aLateSecondWinnerIsDiscarded() async throws {
        let discarded = Mutex(0)
        let addresses = self.addresses
        let winner = try await HappyEyeballs.race(addresses, delay: .milliseconds(1)) {
            address throws(IOError) -> Int in
            if address == addresses[0] {
                // Connects only as it is being cancelled (it lost): must be closed, not leaked.
                while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(1)) }
                return 0
            }
            if address == addresses[1] { return 1 }
            try? await Task.sleep(for: .seconds(60))
            throw IOError(.cancelled, operation: .connect)
        } discard: { _ in
            discarded.withLock { $0 += 1 }
        }
        #expect(winner == 1)
        #expect(discarded.withLock { $0 } == 1)
    }
}

extension IntegrationTests {
    @Suite("Names")
    struct Names {
        @Test func localhostResolvesAndConnects() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let port = try listener.localAddress.port!
            let addresses = try await SocketAddress.resolve(host: "localhost", port: port)
            #expect(addresses.contains(try SocketAddress("127.0.0.1:\(port)")))
            async let accepted = listener.accept()
            let connection = try await TCPConnection.connect(host: "localhost", port: port, timeout: .seconds(5))
            let server = try await accepted
            try await connection.write(contentsOf: [42])
            #expect(try await server.receive(upTo: 1, timeout: .seconds(5)) == [42])
            try await connection.close()
            try await server.close()
            try await listener.close()
        }

        @Test func aNameThatDoesNotExistGivesTheResolveError() async throws {
            do {
                _ = try await TCPConnection.connect(host: "no-such-host.invalid", port: 80, timeout: .seconds(5))
                Issue.record("connected to a .invalid name")
            } catch {
                #expect(error.code == .nameResolution && error.operation == .resolve)
                #expect(error.resolverStatus == EAI_NONAME)
                #expect(error.subject == .host("no-such-host.invalid", port: 80))
                #expect("\(error)".contains("no-such-host.invalid:80"), "\(error)")
            }
        }

        /// A listener on one family only, and both families offered: the race ends on the one
        /// that listens (the other is refused), whichever comes first.
        @Test(arguments: [true, false])
        func happyEyeballsWithAListenerOnOneFamilyOnly(_ ipv6First: Bool) async throws {
            let listener = try TCPListener.bind(to: SocketAddress("[::1]:0"))
            let port = try listener.localAddress.port!
            let v6 = try SocketAddress("[::1]:\(port)")
            let v4 = try SocketAddress("127.0.0.1:\(port)")
            async let accepted = listener.accept()
            let connection = try await HappyEyeballs.race(ipv6First ? [v6, v4] : [v4, v6]) { address throws(IOError) in
                try await TCPConnection.connect(to: address, timeout: .seconds(5))
            } discard: {
                try? await $0.close()
            }
            #expect(try connection.peerAddress == v6)
            try await connection.close()
            try await accepted.close()
            try await listener.close()
        }
    }
}

extension IntegrationTests {
    @Suite("Errors name what failed")
    struct ErrorSubjects {
        @Test func aMissingFileIsNamed() async throws {
            do {
                _ = try await File.open("/nonexistent/swift-uring/config.json")
                Issue.record("opened a file that does not exist")
            } catch {
                #expect(error.subject == .path("/nonexistent/swift-uring/config.json"))
                #expect(
                    "\(error)"
                        == "open '/nonexistent/swift-uring/config.json': system call failed (2: No such file or directory)"
                )
            }
            await #expect(throws: IOError.self) { try await FileSystem.remove("/nonexistent/x") }
            do { try await FileSystem.remove("/nonexistent/x") } catch {
                #expect("\(error)".contains("/nonexistent/x"))
            }
        }

        @Test func aRefusedConnectionNamesThePeer() async throws {
            let listener = try TCPListener.bind(to: SocketAddress("127.0.0.1:0"))
            let address = try listener.localAddress
            try await listener.close()
            do {
                _ = try await TCPConnection.connect(to: address, timeout: .seconds(5))
                Issue.record("connected to a closed port")
            } catch {
                #expect(error.errno == .connectionRefused)
                #expect("\(error)".contains("\(address)"), "\(error)")
            }
        }
    }
}
