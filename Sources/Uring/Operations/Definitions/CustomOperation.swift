internal import CLiburing
import Glibc

// The escape hatch: an entry the caller describes field by field (`Uring.submit`), checked for
// what would break the ring's bookkeeping, then awaited like any other operation.

/// `entry`, copied into a submission entry as it is. Refused before submission (see
/// ``problem``): entries that would post more than one completion, link to other entries, use
/// the ring's own buffer group or registered files, or act on the ring's other requests.
struct CustomOperation: IOOperation, @unchecked Sendable {
    // @unchecked Sendable: the addresses in `entry` are lent by the awaiting caller until the final
    // completion, as the `@unsafe` API that builds this value requires.
    var entry: SubmissionEntry

    var name: IOError.Operation { .custom }
    static var retry: RetryPolicy { .never }
    var descriptor: Int32 { entry.descriptor }

    /// Why the entry may not be submitted, or nil.
    var problem: String? {
        let flags = UInt32(entry.flags)
        let refusedFlags: UInt32 = 0x01 | 0x04 | 0x08 | 0x20 | 0x40  // FIXED_FILE, IO_LINK, IO_HARDLINK,
        // BUFFER_SELECT, CQE_SKIP_SUCCESS
        if flags & refusedFlags != 0 {
            return
                "flags 0x\(String(flags & refusedFlags, radix: 16)) (links, fixed files, buffer select, skipped completions)"
        }
        switch UInt32(entry.opcode) {
        case IORING_OP_SEND_ZC.rawValue, IORING_OP_SENDMSG_ZC.rawValue, 49:  // 49: READ_MULTISHOT
            return "opcode \(entry.opcode) posts more than one completion"
        case IORING_OP_POLL_ADD.rawValue where entry.length & IORING_POLL_ADD_MULTI != 0:
            return "multishot poll"
        case IORING_OP_ACCEPT.rawValue where entry.ioPriority & UInt16(IORING_ACCEPT_MULTISHOT) != 0,
            IORING_OP_RECV.rawValue where entry.ioPriority & UInt16(IORING_RECV_MULTISHOT) != 0,
            IORING_OP_RECVMSG.rawValue where entry.ioPriority & UInt16(IORING_RECV_MULTISHOT) != 0:
            return "multishot accept or receive"
        case IORING_OP_TIMEOUT.rawValue where entry.operationFlags & (1 << 6) != 0:  // IORING_TIMEOUT_MULTISHOT
            return "multishot timeout"
        case IORING_OP_LINK_TIMEOUT.rawValue, IORING_OP_ASYNC_CANCEL.rawValue, IORING_OP_POLL_REMOVE.rawValue,
            IORING_OP_TIMEOUT_REMOVE.rawValue, IORING_OP_MSG_RING.rawValue, IORING_OP_PROVIDE_BUFFERS.rawValue,
            IORING_OP_REMOVE_BUFFERS.rawValue, IORING_OP_FILES_UPDATE.rawValue:
            return "opcode \(entry.opcode) acts on the ring's own requests, buffers or files"
        default:
            return nil
        }
    }

    func encode(into sqe: UnsafeMutablePointer<io_uring_sqe>, timespec: UnsafeMutablePointer<__kernel_timespec>) {
        // SAFETY: `sqe` is a free entry the driver lends for this call; the fields are copied as
        // values (the addresses in them are the caller's promise, see `Uring.submit`).
        unsafe io_uring_prep_rw(Int32(entry.opcode), sqe, entry.descriptor, nil, entry.length, entry.offset)
        unsafe sqe.pointee.addr = entry.address
        unsafe sqe.pointee.flags = entry.flags
        unsafe sqe.pointee.ioprio = entry.ioPriority
        unsafe sqe.pointee.rw_flags = entry.operationFlags
        unsafe sqe.pointee.buf_index = entry.bufferIndex
        unsafe sqe.pointee.personality = entry.personality
        unsafe sqe.pointee.file_index = entry.fileIndex
        unsafe sqe.pointee.addr3 = entry.address3
    }
}
