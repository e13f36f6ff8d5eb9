import Uring

// The session's I/O on its TCP connection: ciphertext received straight into the transport's
// input buffer and sent straight from its output buffer.

extension TLSSession {
    /// Sends every byte of ciphertext waiting in the output buffer. The caller holds the output gate.
    /// `handshaking`: a timeout is ``TLSError/Code/handshakeTimedOut`` (else a transport error).
    func flush(on connection: TCPConnection, deadline: ContinuousClock.Instant?, handshaking: Bool = false)
        async throws(TLSError)
    {
        var next = unsafe pendingOutput()
        while let pending = unsafe next {
            // What the socket takes now goes at once, on this thread, while the ciphertext is still
            // warm in the core's cache and the output buffer can go back to be reused by the next
            // session; only a rest (the socket's buffer full) is sent the awaited way, through the
            // ring. A cancelled task sends nothing more.
            if pending.count >= Self.sentAtOnce, !Task.isCancelled {
                let went = unsafe connection.writeWithoutWaiting(pending, more: false)
                if went > 0 {
                    unsafe next = consumeOutput(went)
                    continue
                }
            }
            do {
                // SAFETY: the region stays valid and unchanged until consumeOutput: only the output gate's holder
                // (this task) consumes it, and OpenSSL appends only to the free part of the buffer.
                try await unsafe connection.write(pending, timeout: Self.remaining(until: deadline))
            } catch {
                throw Self.transportError(error, handshaking: handshaking)
            }
            unsafe next = consumeOutput(pending.count)
        }
    }

    /// The smallest flight offered to the socket without waiting: a smaller one gains little from
    /// its warmth and goes out with the turn's other sends, through the ring.
    static let sentAtOnce = 16 * 1024

    /// Receives once into the input buffer. False at the end of the stream. The caller holds the
    /// input gate.
    func fill(from connection: TCPConnection, deadline: ContinuousClock.Instant?, handshaking: Bool = false)
        async throws(TLSError) -> Bool
    {
        guard let space = unsafe inputSpace() else { return true }  // full: OpenSSL has enough to go on
        let count: Int
        do {
            // SAFETY: only the input gate's holder (this task) writes into or commits this free region, and the read
            // returns only once the kernel is done with it (even when cancelled).
            count = try await unsafe connection.read(into: space, timeout: Self.remaining(until: deadline))
        } catch {
            throw Self.transportError(error, handshaking: handshaking)
        }
        if count == 0 { return false }
        commitInput(count)
        return true
    }

    /// The time left until `deadline` (nil: none); at least a nanosecond, so a passed deadline
    /// times out at once.
    static func remaining(until deadline: ContinuousClock.Instant?) -> Duration? {
        guard let deadline else { return nil }
        return max(deadline - .now, .nanoseconds(1))
    }

    static func transportError(_ error: IOError, handshaking: Bool) -> TLSError {
        if handshaking && error.code == .timedOut {
            return TLSError(.handshakeTimedOut, reason: "the handshake took too long", transport: error)
        }
        return TLSError(.transport, reason: "the connection failed", transport: error)
    }
}
