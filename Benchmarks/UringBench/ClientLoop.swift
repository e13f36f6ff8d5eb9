import Uring

/// One client connection's request loop, shared by the echo and HTTP scenarios: send `request`,
/// read exactly `responseSize` bytes into `response`, repeat until the phase says stop; requests
/// in the measured phase are counted and timed. `check` (if any) looks at each response. A failed
/// exchange counts as an error and ends the loop.
func requestLoop(
    phase: Phase, connection: TCPConnection, request: UnsafeRawBufferPointer, response: UnsafeMutableRawBufferPointer,
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
        do throws(IOError) {
            try await connection.write(request, zeroCopy: zeroCopy)
            var got = 0
            while got < responseSize {
                let n = try await connection.read(
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
