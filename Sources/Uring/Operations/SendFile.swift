// The executor's side of sending page-cached file bytes with `sendfile(2)`: the attempt is a
// synchronous call on the ring's own thread (RingDriver+SendFile.swift), like a read without
// waiting; only waiting for the socket to drain suspends.

extension RingExecutor {
    /// ``RingDriver/sendFileWithoutWaiting(socket:file:offset:count:)`` on the current ring, or
    /// `.declined` when the caller is not nonisolated code on a ring's thread.
    static func sendFileWithoutWaiting(
        socket: Int32, file: Int32, offset: Int64, count: Int, isolation: isolated (any Actor)? = #isolation
    ) -> SendFileAttempt {
        guard isolation == nil, let unretained = unsafe RingExecutor.currentUnretained else { return .declined }
        // SAFETY: this is the ring's own thread, and a ring outlives its thread's loop, so the reference is valid for
        // this synchronous call without a retain; the driver is only touched on this thread.
        return unsafe unretained._withUnsafeGuaranteedRef {
            unsafe $0.driver.pointee.sendFileWithoutWaiting(socket: socket, file: file, offset: offset, count: count)
        }
    }

    /// ``RingDriver/sendWithoutWaiting(socket:_:more:)`` on the current ring, or 0 when the
    /// caller is not nonisolated code on a ring's thread.
    static func sendWithoutWaiting(
        socket: Int32, _ bytes: UnsafeRawBufferPointer, more: Bool, isolation: isolated (any Actor)? = #isolation
    ) -> Int {
        guard isolation == nil, let unretained = unsafe RingExecutor.currentUnretained else { return 0 }
        // SAFETY: as in `sendFileWithoutWaiting`; `bytes` is only read during the call.
        return unsafe unretained._withUnsafeGuaranteedRef {
            unsafe $0.driver.pointee.sendWithoutWaiting(socket: socket, bytes, more: more)
        }
    }
}
