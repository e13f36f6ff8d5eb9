// Deadlines that span several operations: a look-up then a connect, or a read repeated until a
// buffer is full. (A single operation's deadline is a linked timeout in the ring: see perform.)

/// Fills `buffer` by calling `readOnce` (one read or receive, given the time left) until the
/// buffer is full, the stream ends (a read of 0), or `deadline` passes. Returns the bytes read.
///
/// - Throws: ``IOError/Code/timedOut`` for `operation` only when the deadline passed before any
///   byte came: bytes that came before it are returned, never dropped. Other errors of
///   `readOnce` as they are.
func fillUntilDeadline(
    _ buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?, operation: IOError.Operation,
    readOnce: (_ into: UnsafeMutableRawBufferPointer, _ filled: Int, _ timeout: Duration?) async throws(IOError) -> Int
) async throws(IOError) -> Int {
    var filled = 0
    while filled < buffer.count {
        var left: Duration? = nil
        if let deadline {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero {
                if filled > 0 { break }
                throw IOError(.timedOut, operation: operation)
            }
            left = remaining
        }
        let n: Int
        do throws(IOError) {
            n = try unsafe await readOnce(UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]), filled, left)
        } catch  where error.code == .timedOut && filled > 0 {
            break  // what arrived before the deadline is returned
        }
        if n == 0 { break }
        filled += n
    }
    return filled
}

/// Runs `work` with a deadline: it is cancelled when the deadline passes, and the call then
/// throws ``IOError/Code/timedOut`` for `operation`.
func withDeadline<T: Sendable>(
    _ deadline: ContinuousClock.Instant, operation: IOError.Operation,
    _ work: @escaping @Sendable () async throws(IOError) -> T
) async throws(IOError) -> T {
    let result: Result<T, IOError>? = await withTaskGroup(of: Result<T, IOError>?.self) { group in
        group.addTask {
            do throws(IOError) { return .success(try await work()) } catch { return .failure(error) }
        }
        group.addTask {
            try? await Task.sleep(until: deadline, clock: .continuous)
            return nil
        }
        let first = await group.next()!
        group.cancelAll()
        return first
    }
    guard let result else { throw IOError(.timedOut, operation: operation) }
    return try result.get()
}
