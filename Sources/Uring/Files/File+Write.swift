import Glibc
import SystemPackage

extension File {
    /// Writes all of `bytes` at `offset`, looping over short writes; the file position is not
    /// moved.
    ///
    /// ```swift
    /// let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    /// defer { block.deallocate() }
    /// block.initializeMemory(as: UInt8.self, repeating: 0)
    /// try await file.write(UnsafeRawBufferPointer(block), at: 4096 * 7)
    /// ```
    ///
    /// - Parameters:
    ///   - bytes: Lent to the kernel until the call returns, whatever the outcome.
    ///   - offset: Byte offset in the file; must not be negative.
    ///   - timeout: A deadline for each underlying write.
    /// - Throws: ``IOError`` for ``IOError/Operation/write``: `.invalidArgument` for a negative
    ///   offset; `.systemCall` with `ENOSPC`, `EBADF`, `EFBIG`, …; `EIO` if the kernel accepts no
    ///   byte at all; `.cancelled` / `.timedOut`. After an error some prefix of `bytes` may have
    ///   been written.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64, timeout: Duration? = nil) async throws(IOError)
    {
        guard offset >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .write) }
        try unsafe await writeAll(bytes, offset: offset, append: false, timeout: timeout)
    }

    /// Writes all of `bytes` at `offset` (copies them first, so the array may be shared).
    ///
    /// ```swift
    /// try await file.write(contentsOf: Array("hello\n".utf8), at: 0)
    /// ```
    ///
    /// Throws as ``write(_:at:timeout:)``.
    public func write(contentsOf bytes: [UInt8], at offset: Int64, timeout: Duration? = nil) async throws(IOError) {
        guard offset >= 0 else { throw IOError(.invalidArgument, errno: .invalidArgument, operation: .write) }
        let copy = unsafe File.copy(bytes)
        defer { unsafe copy.deallocate() }
        try unsafe await writeAll(UnsafeRawBufferPointer(copy), offset: offset, append: false, timeout: timeout)
    }

    /// Appends all of `bytes` at the end of the file, atomically with respect to other appends
    /// (each underlying write is an `RWF_APPEND` write), whatever options the file was opened with.
    ///
    /// ```swift
    /// let line = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    /// defer { line.deallocate() }
    /// // ... fill `line` ...
    /// try await log.append(UnsafeRawBufferPointer(line))
    /// ```
    ///
    /// `bytes` is lent to the kernel until the call returns. Throws as
    /// ``write(_:at:timeout:)``.
    public func append(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(IOError) {
        try unsafe await writeAll(bytes, offset: -1, append: true, timeout: timeout)
    }

    /// Appends all of `bytes` at the end of the file (copies them first).
    ///
    /// ```swift
    /// try await log.append(contentsOf: Array("request done\n".utf8))
    /// ```
    public func append(contentsOf bytes: [UInt8], timeout: Duration? = nil) async throws(IOError) {
        let copy = unsafe File.copy(bytes)
        defer { unsafe copy.deallocate() }
        try unsafe await writeAll(UnsafeRawBufferPointer(copy), offset: -1, append: true, timeout: timeout)
    }

    /// Writes all of `bytes` at the descriptor's current position (advancing it): the write for
    /// pipes and other streams.
    ///
    /// ```swift
    /// try await pipe.write(UnsafeRawBufferPointer(message), timeout: .seconds(1))
    /// ```
    ///
    /// `bytes` is lent to the kernel until the call returns. Throws as ``write(_:at:timeout:)``.
    public func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(IOError) {
        try unsafe await writeAll(bytes, offset: -1, append: false, timeout: timeout)
    }

    /// Writes all of `bytes` at the descriptor's current position (copied first, so the array may
    /// be shared): the owned-bytes write for pipes and other streams.
    ///
    /// ```swift
    /// try await File(descriptor: .standardOutput).write(contentsOf: Array("done\n".utf8))
    /// ```
    public func write(contentsOf bytes: [UInt8], timeout: Duration? = nil) async throws(IOError) {
        let copy = unsafe File.copy(bytes)
        defer { unsafe copy.deallocate() }
        try unsafe await writeAll(UnsafeRawBufferPointer(copy), offset: -1, append: false, timeout: timeout)
    }

    static func copy(_ bytes: [UInt8]) -> UnsafeMutableRawBufferPointer {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
        unsafe bytes.withUnsafeBytes { unsafe copy.copyMemory(from: $0) }
        return unsafe copy
    }

    /// `offset` -1 means the current position (or the end, with `append`).
    func writeAll(_ bytes: UnsafeRawBufferPointer, offset: Int64, append: Bool, timeout: Duration?)
        async throws(IOError)
    {
        let fd = descriptor.rawValue
        var written = 0
        repeat {
            // The bytes are lent to the ring for this call only: it returns after the final completion.
            let rest = unsafe UnsafeRawBufferPointer(rebasing: bytes[written...])
            let count = UInt32(min(rest.count, File.maximumTransfer))
            let position = offset < 0 ? UInt64.max : UInt64(offset) + UInt64(written)
            let write = unsafe WriteOperation(
                fd: fd, buffer: rest.baseAddress, count: count, offset: position, append: append)
            let n = Int(try await write.run(timeout: timeout))
            if n == 0 && count > 0 { throw IOError.system(EIO, .write) }
            written += n
        } while written < bytes.count
    }
}
