/// What a completion queue entry belongs to: the top byte of its `user_data`.
enum CompletionTag: UInt8 {
    /// The operation itself.
    case operation = 1
    /// The linked timeout that carries an operation's deadline.
    case linkedTimeout = 2
    /// An `IORING_OP_ASYNC_CANCEL` we submitted; its result is not needed.
    case cancel = 3
    /// The executor's wake-up read on its eventfd.
    case wake = 4
    /// A timer that enqueues a job when it fires (the scheduling-executor path).
    case timer = 5
    /// One completion of a multishot operation (accept, receive) that feeds a `MultishotStream`.
    case stream = 6
    /// Posted into this ring by another ring's `IORING_OP_MSG_RING`: a wake-up, nothing to do.
    case message = 7
    /// The sending side's completion of a `IORING_OP_MSG_RING`; the index field names the target
    /// ring (its `ringID`), to wake it through its eventfd if the message failed.
    case messageSent = 8
    /// The cancel-by-descriptor a `close()` submits (`IORING_ASYNC_CANCEL_FD`); the index field
    /// holds the descriptor (see `Operations/Close.swift`).
    case closeCancel = 9
}

/// The identity of one operation: its slot in the table and the slot's generation, so a late
/// completion or cancel request for an earlier user of the same slot is recognised and ignored.
struct OperationID: Hashable, Sendable {
    var index: UInt32
    var generation: UInt32

    /// Packs tag, generation (24 bits) and index (32 bits) into a CQE `user_data`.
    @inline(__always)
    func userData(_ tag: CompletionTag) -> UInt64 {
        UInt64(tag.rawValue) << 56 | UInt64(generation & 0xFF_FFFF) << 32 | UInt64(index)
    }

    @inline(__always)
    init(index: UInt32, generation: UInt32) {
        self.index = index
        self.generation = generation & 0xFF_FFFF
    }

    /// Unpacks a `user_data`; `nil` tag for values we never submitted.
    @inline(__always)
    static func decode(_ userData: UInt64) -> (tag: CompletionTag?, id: OperationID) {
        (
            CompletionTag(rawValue: UInt8(truncatingIfNeeded: userData >> 56)),
            OperationID(
                index: UInt32(truncatingIfNeeded: userData), generation: UInt32(truncatingIfNeeded: userData >> 32))
        )
    }
}
