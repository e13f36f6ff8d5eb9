import Uring
import UringTLS

/// What a client loop needs of a connection: plain TCP or TLS.
protocol BenchConnection: Sendable {
    func benchWrite(_ bytes: UnsafeRawBufferPointer, zeroCopy: TCPConnection.ZeroCopy) async throws
    func benchRead(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int
}

extension TCPConnection: BenchConnection {
    func benchWrite(_ bytes: UnsafeRawBufferPointer, zeroCopy: TCPConnection.ZeroCopy) async throws {
        try await write(bytes, zeroCopy: zeroCopy)
    }
    func benchRead(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int { try await read(into: buffer) }
}

extension TLSConnection: BenchConnection {
    func benchWrite(_ bytes: UnsafeRawBufferPointer, zeroCopy: TCPConnection.ZeroCopy) async throws {
        try await write(bytes)
    }
    func benchRead(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int { try await read(into: buffer) }
}

/// One client connection's request loop, shared by the echo and HTTP scenarios: send `request`,
/// read exactly `responseSize` bytes into `response`, repeat until the phase says stop; requests
/// in the measured phase are counted and timed. `check` (if any) looks at each response. A failed
/// exchange counts as an error and ends the loop.
func requestLoop<Connection: BenchConnection>(
    phase: Phase, connection: Connection, request: UnsafeRawBufferPointer, response: UnsafeMutableRawBufferPointer,
    responseSize: Int, zeroCopy: TCPConnection.ZeroCopy = .automatic,
    check: ((UnsafeMutableRawBufferPointer) -> Bool)? = nil
) async -> (requests: Int, histogram: Histogram, errors: Int) {
    var histogram = Histogram()
    var requests = 0
    var errors = 0
    while true {
        let current = phase.current
        if current == Phase.stop { break }
        let started = nowNanoseconds()
        do {
            try await connection.benchWrite(request, zeroCopy: zeroCopy)
            var got = 0
            while got < responseSize {
                let n = try await connection.benchRead(
                    into: UnsafeMutableRawBufferPointer(rebasing: response[got..<responseSize]))
                if n == 0 { throw IOError(.systemCall, errno: .connectionReset, operation: .receive) }
                got += n
            }
        } catch {
            errors += 1
            break
        }
        if let check, !check(response) { errors += 1 }
        if current == Phase.measure {
            requests += 1
            histogram.record(nowNanoseconds() - started)
        }
    }
    return (requests, histogram, errors)
}
