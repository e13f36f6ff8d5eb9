import Glibc
import Synchronization

/// A group of rings, one executor and thread each: the thread-per-core runtime.
///
/// Place work on a ring of your choice, or on the next one in turn:
///
/// ```swift
/// let group = try RingGroup()                     // one ring per available core
/// defer { group.shutdown() }
/// for connection in connections {
///     Task(executorPreference: group.next()) { try await serve(connection) }
/// }
/// ```
///
/// Each ring is independent: its own submission and completion queues, operation table, buffer
/// pool and thread. A task stays on the ring it was started on (every operation it awaits is
/// submitted there), and moves only when asked (`withTaskExecutorPreference(otherRing)`).
/// Rings wake each other with `IORING_OP_MSG_RING` where the kernel has it, and through their
/// eventfd otherwise. For servers, bind one listener per ring with `reusePort: true`, or accept on
/// one ring and hand each connection to the next (see `uring-echo --threads`).
public final class RingGroup: Sendable {
    /// The rings, in order.
    public let rings: [RingExecutor]
    private let cursor = Atomic<Int>(0)

    /// The number of CPUs this process may run on (its affinity mask), at least 1: the default
    /// ring count.
    public static var availableCores: Int {
        // glibc's sched_getaffinity wrapper is hidden without _GNU_SOURCE: read the same mask
        // from /proc ("Cpus_allowed: ff,ffffffff"), falling back to the online CPU count.
        let online = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        guard let file = unsafe fopen("/proc/self/status", "r") else { return online }
        defer { unsafe fclose(file) }
        var line = [CChar](repeating: 0, count: 4096)
        while unsafe fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard text.hasPrefix("Cpus_allowed:") else { continue }
            var count = 0
            for character in text.dropFirst("Cpus_allowed:".count) {
                if let digit = character.hexDigitValue { count += digit.nonzeroBitCount }
            }
            return count > 0 ? min(count, online) : online
        }
        return online
    }

    /// Starts `count` rings (default: one per available core), each on its own thread named
    /// `name-0`, `name-1`, … The other parameters are each ring's (see
    /// ``RingExecutor/init(entries:jobBudget:name:receiveBufferCount:receiveBufferSize:spinBeforeSleep:)``).
    ///
    /// ```swift
    /// // Rings that spin 50 µs before sleeping: hand-offs between them skip the thread wake-up.
    /// let rings = try RingGroup(spinBeforeSleep: .microseconds(50))
    /// ```
    ///
    /// `backend` chooses the driver of every ring (`nil`: `SWIFT_URING_BACKEND`, automatic by
    /// default; see ``RingBackendPreference``).
    ///
    /// - Throws: ``IOError`` if a ring cannot be set up (the rings already started are shut
    ///   down first), or ``IOError/Code/invalidArgument`` for a count below 1.
    public init(
        count: Int? = nil, entries: Int = 256, name: String = "uring", receiveBufferCount: Int = 1024,
        receiveBufferSize: Int = 4096, spinBeforeSleep: Duration = .zero, backend: RingBackendPreference? = nil
    ) throws(IOError) {
        let count = count ?? Self.availableCores
        guard count >= 1, count <= 1024 else {
            throw IOError(.invalidArgument, errno: .invalidArgument, operation: .setup)
        }
        var rings: [RingExecutor] = []
        do throws(IOError) {
            for i in 0..<count {
                rings.append(
                    try RingExecutor(
                        entries: entries, name: "\(name)-\(i)", receiveBufferCount: receiveBufferCount,
                        receiveBufferSize: receiveBufferSize, spinBeforeSleep: spinBeforeSleep, backend: backend))
            }
        } catch {
            for ring in rings { ring.shutdown() }
            throw error
        }
        self.rings = rings
    }

    /// Wraps rings that already run (for example the ones `Uring.run(threads:)` made).
    init(rings: [RingExecutor]) {
        self.rings = rings
    }

    /// The number of rings.
    public var count: Int { rings.count }

    /// The ring at `index` (0 ..< count).
    public subscript(index: Int) -> RingExecutor { rings[index] }

    /// The next ring in round-robin order: spreads tasks or connections evenly.
    ///
    /// ```swift
    /// Task(executorPreference: group.next()) { try await work() }
    /// ```
    public func next() -> RingExecutor {
        let i = cursor.add(1, ordering: .relaxed).oldValue
        return rings[i % rings.count]
    }

    /// The index of `ring` in the group, if it belongs to it.
    public func index(of ring: RingExecutor) -> Int? {
        rings.firstIndex { $0 === ring }
    }

    /// Stops every ring: each cancels what is still in flight, waits for those completions,
    /// closes its ring and joins its thread (see ``RingExecutor/shutdown()``). All rings are asked
    /// first, then joined, so they wind down in parallel. Idempotent. Call it from outside the
    /// group's threads.
    public func shutdown() {
        for ring in rings { ring.requestShutdown() }
        for ring in rings { ring.shutdown() }
    }

    /// A snapshot of every ring's counters, in ring order.
    public func statistics() async -> [RingStatistics] {
        var result: [RingStatistics] = []
        for ring in rings { result.append(await ring.statistics()) }
        return result
    }
}
