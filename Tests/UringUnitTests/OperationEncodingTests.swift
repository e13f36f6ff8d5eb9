import CLiburing
import Glibc
import Testing

@testable import Uring

/// Each operation value, encoded into a zeroed submission entry, checked field by field: no
/// kernel involved. Adding an operation adds one test here (see Docs/DESIGN.md).
@Suite("Operation encoding")
struct OperationEncodingTests {
    /// Encodes `operation` into a zeroed SQE (and a zeroed timespec) and returns both.
    private func encoded(_ operation: some IOOperation) -> (io_uring_sqe, __kernel_timespec) {
        var sqe = io_uring_sqe()
        var timespec = __kernel_timespec()
        operation.encode(into: &sqe, timespec: &timespec)
        return (sqe, timespec)
    }

    private func address(_ pointer: UnsafeRawPointer?) -> UInt64 {
        UInt64(UInt(bitPattern: pointer))
    }

    private let buffer = UnsafeMutableRawPointer(bitPattern: 0x1000)!
    private let path = UnsafePointer<CChar>(bitPattern: 0x2000)!
    private let other = UnsafePointer<CChar>(bitPattern: 0x3000)!

    @Test func read() {
        let (sqe, _) = encoded(ReadOperation(fd: 7, buffer: buffer, count: 4096, offset: 8192))
        #expect(sqe.opcode == UInt8(IORING_OP_READ.rawValue))
        #expect(sqe.fd == 7 && sqe.addr == address(buffer) && sqe.len == 4096 && sqe.off == 8192)
        #expect(sqe.flags == 0 && sqe.user_data == 0)
        #expect(ReadOperation.retry == .readable)
        #expect(ReadOperation(fd: 7, buffer: nil, count: 0, offset: 0).name == .read)
    }

    @Test func readAtTheCurrentPosition() {
        let (sqe, _) = encoded(ReadOperation(fd: 7, buffer: buffer, count: 1, offset: .max))
        #expect(sqe.off == UInt64.max)
    }

    @Test func writeAndAppend() {
        let (plain, _) = encoded(WriteOperation(fd: 3, buffer: buffer, count: 10, offset: 5))
        #expect(plain.opcode == UInt8(IORING_OP_WRITE.rawValue))
        #expect(plain.fd == 3 && plain.addr == address(buffer) && plain.len == 10 && plain.off == 5)
        #expect(plain.rw_flags == 0)
        let (append, _) = encoded(WriteOperation(fd: 3, buffer: buffer, count: 10, offset: .max, append: true))
        #expect(append.rw_flags == UInt32(bitPattern: RWF_APPEND))
        #expect(WriteOperation.retry == .writable)
    }

    @Test func openAndOpenBeneath() {
        let (sqe, _) = encoded(OpenOperation(path: path, flags: O_RDONLY | O_CLOEXEC, mode: 0o644))
        #expect(sqe.opcode == UInt8(IORING_OP_OPENAT.rawValue))
        #expect(sqe.fd == AT_FDCWD && sqe.addr == address(path) && sqe.len == 0o644)
        #expect(sqe.open_flags == UInt32(bitPattern: O_RDONLY | O_CLOEXEC))
        #expect(OpenOperation(path: path, flags: 0, mode: 0).descriptor == AT_FDCWD)

        let how = OpenBeneathOperation.ResolveStorage(options: 0, sameMount: false)
        defer { how.free() }
        let sameMount = OpenBeneathOperation.ResolveStorage(options: 0, sameMount: true)
        defer { sameMount.free() }
        let (confined, _) = encoded(OpenBeneathOperation(directory: 9, path: path, how: sameMount))
        let confinedHow = UnsafeRawPointer(bitPattern: UInt(confined.off))!.assumingMemoryBound(to: open_how.self)
        #expect(confinedHow.pointee.resolve == UInt64(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV))
        let (beneath, _) = encoded(OpenBeneathOperation(directory: 9, path: path, how: how))
        #expect(beneath.opcode == UInt8(IORING_OP_OPENAT2.rawValue))
        #expect(beneath.fd == 9 && beneath.addr == address(path))
        #expect(beneath.len == UInt32(MemoryLayout<open_how>.size))
        let howAddress = UnsafeRawPointer(bitPattern: UInt(beneath.off))!.assumingMemoryBound(to: open_how.self)
        #expect(howAddress.pointee.resolve == UInt64(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS))
        #expect(howAddress.pointee.flags & UInt64(O_CLOEXEC) != 0)
    }

    @Test func closeIsNeverRetriedAndNotCounted() {
        let (sqe, _) = encoded(CloseOperation(fd: 11))
        #expect(sqe.opcode == UInt8(IORING_OP_CLOSE.rawValue) && sqe.fd == 11)
        #expect(CloseOperation.retry == .never)
        #expect(CloseOperation(fd: 11).descriptor == -1)
    }

    @Test func syncAndDataSync() {
        let (full, _) = encoded(SyncOperation(fd: 4, dataOnly: false))
        #expect(full.opcode == UInt8(IORING_OP_FSYNC.rawValue) && full.fd == 4 && full.fsync_flags == 0)
        let (data, _) = encoded(SyncOperation(fd: 4, dataOnly: true))
        #expect(data.fsync_flags == IORING_FSYNC_DATASYNC)
    }

    @Test func stat() {
        let buffer = UnsafeMutablePointer<statx>(bitPattern: 0x4000)!
        let (sqe, _) = encoded(
            StatOperation(directory: AT_FDCWD, path: path, flags: AT_SYMLINK_NOFOLLOW, mask: 0x7ff, buffer: buffer))
        #expect(sqe.opcode == UInt8(IORING_OP_STATX.rawValue))
        #expect(sqe.fd == AT_FDCWD && sqe.addr == address(path) && sqe.len == 0x7ff)
        #expect(sqe.off == address(buffer))
        #expect(sqe.statx_flags == UInt32(AT_SYMLINK_NOFOLLOW))
    }

    @Test func pathOperations() {
        let (remove, _) = encoded(RemoveOperation(path: path, directory: false))
        #expect(remove.opcode == UInt8(IORING_OP_UNLINKAT.rawValue) && remove.fd == AT_FDCWD)
        #expect(remove.addr == address(path) && remove.unlink_flags == 0)
        let (rmdir, _) = encoded(RemoveOperation(path: path, directory: true))
        #expect(rmdir.unlink_flags == UInt32(AT_REMOVEDIR))
        #expect(RemoveOperation(path: path, directory: true).name == .removeDirectory)

        let (rename, _) = encoded(RenameOperation(source: path, destination: other))
        #expect(rename.opcode == UInt8(IORING_OP_RENAMEAT.rawValue))
        #expect(rename.fd == AT_FDCWD && rename.addr == address(path) && rename.addr2 == address(other))
        #expect(rename.len == UInt32(bitPattern: AT_FDCWD))

        let (mkdir, _) = encoded(MakeDirectoryOperation(path: path, mode: 0o755))
        #expect(mkdir.opcode == UInt8(IORING_OP_MKDIRAT.rawValue))
        #expect(mkdir.fd == AT_FDCWD && mkdir.addr == address(path) && mkdir.len == 0o755)
    }

    @Test func nopSleepAndPoll() {
        let (nop, _) = encoded(NopOperation())
        #expect(nop.opcode == UInt8(IORING_OP_NOP.rawValue))

        var sqe = io_uring_sqe()
        var timespec = __kernel_timespec()
        SleepOperation(duration: .milliseconds(1500)).encode(into: &sqe, timespec: &timespec)
        #expect(sqe.opcode == UInt8(IORING_OP_TIMEOUT.rawValue) && sqe.len == 1 && sqe.off == 0)
        #expect(timespec.tv_sec == 1 && timespec.tv_nsec == 500_000_000)
        withUnsafePointer(to: &timespec) { #expect(sqe.addr == address($0)) }

        let (poll, _) = encoded(PollOperation(fd: 5, events: UInt32(POLLIN)))
        #expect(poll.opcode == UInt8(IORING_OP_POLL_ADD.rawValue) && poll.fd == 5)
        #expect(poll.poll32_events == UInt32(POLLIN))
    }

    @Test func negativeDurationsAreZero() {
        let (seconds, nanoseconds) = Duration.milliseconds(-5).timespecComponents
        #expect(seconds == 0 && nanoseconds == 0)
    }

    @Test func acceptAndConnect() {
        let (accept, _) = encoded(AcceptOperation(fd: 6))
        #expect(accept.opcode == UInt8(IORING_OP_ACCEPT.rawValue) && accept.fd == 6)
        #expect(accept.accept_flags == UInt32(SOCK_CLOEXEC.rawValue) && accept.addr == 0)
        #expect(AcceptOperation.retry == .readable)

        let socketAddress = UnsafePointer<sockaddr>(bitPattern: 0x5000)!
        let (connect, _) = encoded(ConnectOperation(fd: 6, address: socketAddress, length: 16))
        #expect(connect.opcode == UInt8(IORING_OP_CONNECT.rawValue) && connect.fd == 6)
        #expect(connect.addr == address(socketAddress) && connect.off == 16)
        #expect(ConnectOperation.retry == .writable)
    }

    @Test func receiveAndSend() {
        let (receive, _) = encoded(ReceiveOperation(fd: 8, buffer: buffer, count: 512))
        #expect(receive.opcode == UInt8(IORING_OP_RECV.rawValue))
        #expect(receive.fd == 8 && receive.addr == address(buffer) && receive.len == 512 && receive.msg_flags == 0)

        let (send, _) = encoded(SendOperation(fd: 8, buffer: buffer, count: 100))
        #expect(send.opcode == UInt8(IORING_OP_SEND.rawValue))
        #expect(send.fd == 8 && send.addr == address(buffer) && send.len == 100)
        #expect(send.msg_flags == UInt32(MSG_NOSIGNAL) | UInt32(MSG_WAITALL), "io_uring finishes a partial stream send")

        let (zeroCopy, _) = encoded(SendOperation(fd: 8, buffer: buffer, count: 100, zeroCopy: true))
        #expect(zeroCopy.opcode == UInt8(IORING_OP_SEND_ZC.rawValue))
        #expect(zeroCopy.msg_flags == UInt32(MSG_NOSIGNAL) && zeroCopy.len == 100)
    }

    @Test func messagesAndShutdown() {
        let message = MessageStorage(buffer: UnsafeMutableRawBufferPointer(start: buffer, count: 64), address: nil)
        defer { message.free() }
        let (send, _) = encoded(SendMessageOperation(fd: 9, message: message))
        #expect(send.opcode == UInt8(IORING_OP_SENDMSG.rawValue) && send.fd == 9)
        #expect(send.addr == address(message.header) && send.msg_flags == UInt32(MSG_NOSIGNAL))
        let (receive, _) = encoded(ReceiveMessageOperation(fd: 9, message: message))
        #expect(receive.opcode == UInt8(IORING_OP_RECVMSG.rawValue) && receive.addr == address(message.header))
        #expect(ReceiveMessageOperation.retry == .readable && SendMessageOperation.retry == .writable)

        let (shutdown, _) = encoded(ShutdownOperation(fd: 9, how: Int32(SHUT_WR)))
        #expect(shutdown.opcode == UInt8(IORING_OP_SHUTDOWN.rawValue) && shutdown.fd == 9)
        #expect(shutdown.len == UInt32(SHUT_WR))
    }

    @Test func deadlineLinksATimeout() {
        var sqe = io_uring_sqe()
        var timeoutSQE = io_uring_sqe()
        var timespec = __kernel_timespec(.milliseconds(250))
        ReadOperation(fd: 7, buffer: buffer, count: 1, offset: 0).encode(into: &sqe, timespec: &timespec)
        let id = OperationID(index: 3, generation: 9)
        ControlEntry.deadline(after: &sqe, &timeoutSQE, timespec: &timespec, userData: id.userData(.linkedTimeout))
        #expect(sqe.flags == cliburing_sqe_flag_io_link())
        #expect(timeoutSQE.opcode == UInt8(IORING_OP_LINK_TIMEOUT.rawValue))
        #expect(timeoutSQE.len == 1 && timeoutSQE.fd == -1)
        withUnsafePointer(to: &timespec) { #expect(timeoutSQE.addr == address($0)) }
        #expect(timespec.tv_sec == 0 && timespec.tv_nsec == 250_000_000)
        let decoded = OperationID.decode(timeoutSQE.user_data)
        #expect(decoded.tag == .linkedTimeout && decoded.id == id)
    }

    @Test func bufferedReceiveSelectsFromTheGroup() {
        var sqe = io_uring_sqe()
        ControlEntry.bufferedReceive(&sqe, fd: 12, group: 0, multishot: true)
        #expect(sqe.opcode == UInt8(IORING_OP_RECV.rawValue) && sqe.fd == 12)
        #expect(sqe.flags == cliburing_sqe_flag_buffer_select() && sqe.buf_group == 0)
        #expect(UInt32(sqe.ioprio) & UInt32(IORING_RECV_MULTISHOT) != 0)
        var single = io_uring_sqe()
        ControlEntry.bufferedReceive(&single, fd: 12, group: 0, multishot: false)
        #expect(UInt32(single.ioprio) & UInt32(IORING_RECV_MULTISHOT) == 0)
    }

    @Test func truncateAndAllocate() {
        let (truncate, _) = encoded(TruncateOperation(fd: 5, length: 1 << 33))
        #expect(truncate.opcode == TruncateOperation.opcode && truncate.opcode == 55)  // IORING_OP_FTRUNCATE
        #expect(truncate.fd == 5 && truncate.off == 1 << 33 && truncate.len == 0 && truncate.addr == 0)
        #expect(TruncateOperation.optionalOpcode && TruncateOperation(fd: 5, length: 0).name == .truncate)

        let (allocate, _) = encoded(AllocateOperation(fd: 6, mode: 0x03, offset: 4096, length: 8192))
        #expect(allocate.opcode == UInt8(IORING_OP_FALLOCATE.rawValue))
        #expect(allocate.fd == 6 && allocate.len == 0x03 && allocate.off == 4096 && allocate.addr == 8192)
        #expect(AllocateOperation.optionalOpcode && AllocateOperation.retry == .resubmit)
        #expect(AllocateOperation(fd: 6, mode: 0, offset: 0, length: 1).descriptor == 6)
    }

    @Test func linkAndSymbolicLink() {
        let (link, _) = encoded(LinkOperation(existing: path, newPath: other))
        #expect(link.opcode == UInt8(IORING_OP_LINKAT.rawValue))
        #expect(link.fd == AT_FDCWD && link.addr == address(path) && link.off == address(other))
        #expect(link.len == UInt32(bitPattern: AT_FDCWD) && link.hardlink_flags == 0)
        #expect(LinkOperation(existing: path, newPath: other).descriptor == -1 && LinkOperation.optionalOpcode)

        let (symlink, _) = encoded(SymbolicLinkOperation(target: path, linkPath: other))
        #expect(symlink.opcode == UInt8(IORING_OP_SYMLINKAT.rawValue))
        #expect(symlink.fd == AT_FDCWD && symlink.addr == address(path) && symlink.off == address(other))
        #expect(SymbolicLinkOperation(target: path, linkPath: other).name == .symbolicLink)
    }

    @Test func customEntriesAreCopiedFieldByField() {
        var entry = SubmissionEntry(opcode: 24)  // IORING_OP_FADVISE
        entry.descriptor = 9
        entry.offset = 100
        entry.address = 200
        entry.length = 300
        entry.operationFlags = 2
        entry.flags = 0x10  // IOSQE_ASYNC
        entry.ioPriority = 1
        entry.bufferIndex = 3
        entry.personality = 4
        entry.fileIndex = 5
        entry.address3 = 6
        let (sqe, _) = encoded(CustomOperation(entry: entry))
        #expect(sqe.opcode == 24 && sqe.fd == 9 && sqe.off == 100 && sqe.addr == 200 && sqe.len == 300)
        #expect(sqe.rw_flags == 2 && sqe.flags == 0x10 && sqe.ioprio == 1 && sqe.buf_index == 3)
        #expect(sqe.personality == 4 && sqe.file_index == 5 && sqe.addr3 == 6 && sqe.user_data == 0)
        #expect(CustomOperation(entry: entry).problem == nil && CustomOperation.retry == .never)
        var linked = entry
        linked.flags = 0x04
        #expect(CustomOperation(entry: linked).problem != nil)
    }
}
