internal import CLiburing
import Glibc
import Synchronization

#if DEBUG
/// Test-only fault injection, compiled into debug builds only: makes chosen operations on one
/// ring fail with a chosen errno, or move fewer bytes than asked, and makes ring set-up fail.
///
/// A failure is injected before the kernel sees the operation: its SQE becomes a no-op that
/// keeps the operation's `user_data`, and the no-op's completion carries the injected result. So
/// nothing the operation would have done happens (no byte is consumed from a socket, no
/// descriptor is accepted), exactly as when the kernel fails it. A byte limit shortens the real
/// operation (`len` of a read, write, send or receive), so a short transfer really happens.
///
/// One injector per ring, used on the ring's thread only (see `RingExecutor.injectFault`).
final class FaultInjector {
    enum Fault: Equatable {
        /// The operation completes with `-errno` and has no effect.
        case fail(Int32)
        /// The operation transfers at most this many bytes.
        case limit(UInt32)
    }

    /// The operations a rule applies to: an operation's name (``IOOperation/name``), so every
    /// operation is a target by being defined. The requests that feed streams count as
    /// `.accept` and `.receive`.
    typealias Target = IOError.Operation

    struct Rule {
        var target: Target
        var fault: Fault
        /// Matching operations to let through first.
        var skip: Int
        /// Matching operations still to fault.
        var remaining: Int
    }

    private var rules: [Rule] = []
    /// Injected results by `user_data`, for operations turned into no-ops.
    private var pending: [UInt64: Int32] = [:]
    /// Faults injected so far.
    private(set) var injected = 0

    func add(_ fault: Fault, on target: Target, times: Int, after skip: Int) {
        precondition(times >= 1 && skip >= 0)
        if case .limit(let bytes) = fault { precondition(bytes >= 1, "a limit of 0 bytes would read as end of file") }
        rules.append(Rule(target: target, fault: fault, skip: skip, remaining: times))
    }

    /// Applies the first rule for `operation` to its `sqe`, whose `user_data` is already set and
    /// which is not yet linked to anything.
    func apply(to sqe: UnsafeMutablePointer<io_uring_sqe>, operation: Target) {
        guard !rules.isEmpty, let index = rules.firstIndex(where: { $0.target == operation }) else { return }
        if rules[index].skip > 0 {
            rules[index].skip -= 1
            return
        }
        let fault = rules[index].fault
        rules[index].remaining -= 1
        if rules[index].remaining == 0 { rules.remove(at: index) }
        switch fault {
        case .fail(let errno):
            let userData = unsafe sqe.pointee.user_data
            unsafe ControlEntry.nop(sqe)
            unsafe sqe.pointee.user_data = userData
            pending[userData] = -errno
        case .limit(let bytes):
            if unsafe sqe.pointee.len > bytes { unsafe sqe.pointee.len = bytes }
        }
        injected += 1
    }

    /// The injected result for a completion, if its operation was turned into a no-op.
    func result(for completion: Completion) -> Int32? {
        pending.isEmpty ? nil : pending.removeValue(forKey: completion.userData)
    }

    // MARK: Ring set-up

    /// Set-up failures to inject, by ring name: each `io_uring_setup` attempt of a ring with that
    /// name takes the next errno, until none is left.
    private static let setupFailures = Mutex<[String: [Int32]]>([:])

    static func failSetUp(ofRingNamed name: String, with errors: [Int32]) {
        setupFailures.withLock { $0[name] = errors }
    }

    static func takeSetupFailures(ofRingNamed name: String) -> [Int32] {
        setupFailures.withLock { $0.removeValue(forKey: name) ?? [] }
    }

    private static let missingFeatures = Mutex<[String: String]>([:])

    /// The next ring named `name` finds its kernel ring lacking `feature` (as if
    /// `io_uring_get_probe_ring` did not list it).
    static func pretendMissing(_ feature: String, inRingNamed name: String) {
        missingFeatures.withLock { $0[name] = feature }
    }

    static func takeMissingFeature(ofRingNamed name: String) -> String? {
        missingFeatures.withLock { $0.removeValue(forKey: name) }
    }

    private static let lackingOpcodes = Mutex<[String: UInt64]>([:])

    /// The next ring named `name` runs as if its kernel lacked these opcodes (bits by opcode
    /// number): operations that use them take the blocking pool (`performOnWorker`).
    static func pretendLacking(opcodes: [UInt8], inRingNamed name: String) {
        lackingOpcodes.withLock { $0[name] = opcodes.reduce(0) { $0 | 1 << UInt64($1) } }
    }

    static func takeLackingOpcodes(ofRingNamed name: String) -> UInt64 {
        lackingOpcodes.withLock { $0.removeValue(forKey: name) ?? 0 }
    }
}

extension RingExecutor {
    /// Test support (debug builds): makes the next `times` operations of `target` on this ring
    /// (after letting `skip` through) fail or move fewer bytes. Must run on this ring's thread.
    func injectFault(_ fault: FaultInjector.Fault, on target: FaultInjector.Target, times: Int = 1, after skip: Int = 0)
    {
        precondition(isCurrentRing, "faults are injected on the ring's own thread")
        if unsafe driver.pointee.faults == nil { unsafe driver.pointee.faults = FaultInjector() }
        unsafe driver.pointee.faults!.add(fault, on: target, times: times, after: skip)
    }

    /// Faults injected on this ring so far. Must run on this ring's thread.
    var faultsInjected: Int {
        precondition(isCurrentRing)
        return unsafe driver.pointee.faults?.injected ?? 0
    }
}
#endif
