import Glibc
import SystemPackage

// The calls io_uring has no operation for (liburing issue 111: no getdents opcode is planned),
// made on the blocking pool on both drivers, so that no ring ever blocks on them.

enum WorkerCalls {
    /// `readlink(2)` of `path` on ``BlockingPool/shared``, growing the buffer until the content
    /// fits. The work is not interruptible; the awaiting task gets its result.
    static func readLink(_ path: FilePath) async throws(IOError) -> FilePath {
        let result: Result<FilePath, IOError>
        do {
            result = try await BlockingPool.shared.run { readLinkNow(path) }
        } catch {
            throw IOError(.cancelled, operation: .readLink)  // unreachable: the work does not throw
        }
        return try result.get()
    }

    static func readLinkNow(_ path: FilePath) -> Result<FilePath, IOError> {
        var capacity = 256
        while true {
            let outcome: Result<FilePath, IOError>? = unsafe path.withPlatformString { cPath in
                var buffer = [CChar](repeating: 0, count: capacity)
                let count = unsafe buffer.withUnsafeMutableBufferPointer {
                    // SAFETY: `readlink` writes at most `capacity` bytes into the array's storage.
                    unsafe readlink(cPath, $0.baseAddress!, capacity)
                }
                if count < 0 { return .failure(IOError.system(errno, .readLink)) }
                if count == capacity { return nil }  // may have been cut: again with more room
                return .success(
                    FilePath(String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)))
            }
            if let outcome { return outcome }
            capacity *= 4
        }
    }
}
