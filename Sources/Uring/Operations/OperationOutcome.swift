import Glibc

/// How an operation ended, as seen by the awaiting task.
enum OperationOutcome: Equatable, Sendable {
    case success(Int32)
    case failure(Int32)  // positive errno
    case cancelled
    case timedOut
    /// The ring was shutting down; nothing was submitted.
    case shutdown
    /// The descriptor was closed (by `close()` in another task) while the operation waited.
    case closed
    /// Not submitted: a close of the descriptor's number is in progress. `perform` waits for it
    /// to end and tries again (never seen outside `perform`).
    case closing
}

extension OperationOutcome {
    /// The result, or the typed error for `operation`.
    @inline(__always)
    func get(_ operation: IOError.Operation, fileID: StaticString = #fileID, line: UInt = #line) throws(IOError)
        -> Int32
    {
        switch self {
        case .success(let value): return value
        case .failure(let errno): throw IOError.system(errno, operation, fileID: fileID, line: line)
        case .cancelled: throw IOError(.cancelled, operation: operation, fileID: fileID, line: line)
        case .timedOut: throw IOError(.timedOut, operation: operation, fileID: fileID, line: line)
        case .shutdown: throw IOError(.executorShutdown, operation: operation, fileID: fileID, line: line)
        case .closed, .closing:
            throw IOError(.closed, errno: .badFileDescriptor, operation: operation, fileID: fileID, line: line)
        }
    }
}
