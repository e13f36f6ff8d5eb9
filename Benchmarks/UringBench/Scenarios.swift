import CLiburing
import Glibc
import SystemPackage
import Uring

nonisolated(unsafe) var printStatistics = false

/// Where the benchmark's worker tasks run.
enum ExecutorMode: String {
    /// Plain tasks on the ring that `Uring.run` installed as the process's default executor.
    case global
    /// Tasks started with `Task(executorPreference:)` on a separate `RingExecutor`.
    case preference
    /// `--rings N`: a `RingGroup` of N rings, `--concurrency` tasks placed on each.
    case group
}

/// `--rings N`: the ring count of the group mode.
nonisolated(unsafe) var groupRings = 1

/// What a measured worker does once per iteration: one awaited operation.
///
/// A value of a concrete type, not a closure: `measureOnRing` is specialised for each, so the
/// worker's loop calls the operation directly, as a user's loop would, instead of through an
/// async closure whose context and thunk each cost a task-allocator frame per call (together
/// about as much as the runtime's own read path adds to a page-cache `preadv2`).
protocol MeasuredOperation: Sendable {
    func run(_ offsets: inout OffsetGenerator, _ buffer: UnsafeMutableRawBufferPointer) async throws(IOError)
}

/// Runs `concurrency` worker tasks, each calling `operation` in a loop: warm-up, a measured window
/// with allocations counted, then stop. The window is timed by a plain thread, so no ring is ever
/// blocked and the controller allocates nothing while it is open.
func measureOnRing<Operation: MeasuredOperation>(
    scenario: String, mode: ExecutorMode, fields: [(String, String)], concurrency: Int, block: Int?, seconds: Double,
    warmup: Double, sampleEvery: Int, offsets: @escaping @Sendable (Int) -> OffsetGenerator, operation: Operation
) async throws -> Measurement {
    let ring: RingExecutor
    var group: RingGroup?
    switch mode {
    case .global:
        guard let main = RingExecutor.current else { fatalError("the global mode runs under Uring.run") }
        ring = main
    case .preference:
        ring = try RingExecutor(entries: max(64, min(4096, concurrency * 2)), name: "bench-\(scenario)")
    case .group:
        let made = try RingGroup(
            count: groupRings, entries: max(64, min(4096, concurrency * 2)), name: "bench-\(scenario)")
        group = made
        ring = made[0]
    }
    defer {
        if mode == .preference { ring.shutdown() }
        group?.shutdown()
    }
    let before = await ring.statistics()
    let phase = Phase()
    let sampleMask = sampleEvery - 1
    let worker: @Sendable (Int) async throws -> (Int, Histogram) = { worker in
        var histogram = Histogram()
        var generator = offsets(worker)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(block ?? 0, 1), alignment: 4096)
        defer { buffer.deallocate() }
        var ops = 0
        var iteration = 0
        while true {
            let current = phase.current
            if current == Phase.stop { break }
            let sampled = iteration & sampleMask == 0
            let started = sampled ? nowNanoseconds() : 0
            try await operation.run(&generator, buffer)
            if current == Phase.measure {
                ops += 1
                if sampled { histogram.record(nowNanoseconds() - started) }
            }
            iteration += 1
        }
        return (ops, histogram)
    }
    let controller = Controller(phase: phase, warmup: warmup, seconds: seconds)
    let rings = group
    let (ops, histogram) = try await withThrowingTaskGroup(of: (Int, Histogram).self) { tasks in
        let workers = mode == .group ? concurrency * groupRings : concurrency
        for index in 0..<workers {
            switch mode {
            case .global: tasks.addTask { try await worker(index) }
            case .preference: tasks.addTask(executorPreference: ring) { try await worker(index) }
            case .group:
                tasks.addTask(executorPreference: rings.unsafelyUnwrapped[index % groupRings]) {
                    try await worker(index)
                }
            }
        }
        controller.start()
        var ops = 0
        var histogram = Histogram()
        for try await (n, h) in tasks {
            ops += n
            histogram.merge(h)
        }
        return (ops, histogram)
    }
    let (elapsed, mallocs) = controller.join()
    if printStatistics {
        let stats = await ring.statistics()
        var stderr = StandardError()
        print("ring statistics (\(scenario), \(mode), cumulative): \(stats)", to: &stderr)
    }
    _ = before
    var measurement = Measurement(
        scenario: scenario,
        engine: mode == .global ? "swift-uring" : mode == .group ? "swift-uring/group" : "swift-uring/pref",
        fields: fields,
        concurrency: concurrency, block: block, seconds: elapsed, ops: ops, histogram: histogram, mallocs: mallocs)
    measurement.cpuSeconds = controller.cpuSeconds
    return measurement
}

/// Times the measured window on a plain thread: warm-up, start counting allocations, open the
/// window, sleep, close it.
final class Controller: @unchecked Sendable {
    let phase: Phase
    let warmup: Double
    let seconds: Double
    var elapsed = 0.0
    var mallocs: Int?
    /// The process's CPU time (user and system, all threads) in the measured window, seconds.
    var cpuSeconds = 0.0
    /// Another process (a server under load) whose CPU time in the window is measured too.
    var watchedPID: pid_t?
    /// `watchedPID`'s CPU time in the window, seconds (nil without one, or when it cannot be read).
    var watchedCPUSeconds: Double?
    private var thread = pthread_t()

    init(phase: Phase, warmup: Double, seconds: Double) {
        self.phase = phase
        self.warmup = warmup
        self.seconds = seconds
    }

    func start() {
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(
            &thread, nil,
            { raw in
                let controller = Unmanaged<Controller>.fromOpaque(raw!).takeRetainedValue()
                controller.run()
                return nil
            }, context)
    }

    private func run() {
        sleepBlocking(warmup)
        let watchedStarted = watchedPID.flatMap(processCPUSeconds(of:))
        Allocations.start()
        let cpuStarted = processCPUSeconds()
        let started = nowNanoseconds()
        phase.set(Phase.measure)
        sleepBlocking(seconds)
        phase.set(Phase.stop)
        elapsed = Double(nowNanoseconds() - started) / 1e9
        cpuSeconds = processCPUSeconds() - cpuStarted
        if let watchedStarted, let watchedEnded = watchedPID.flatMap(processCPUSeconds(of:)) {
            watchedCPUSeconds = watchedEnded - watchedStarted
        }
        mallocs = Allocations.stop()
    }

    /// Waits for the controller thread (it has finished once every worker saw the stop).
    func join() -> (Double, Int?) {
        pthread_join(thread, nil)
        return (elapsed, mallocs)
    }
}

/// CLOCK_PROCESS_CPUTIME_ID: the CPU time of every thread of this process, in seconds.
func processCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Another process's CPU time (user and system, all its threads), from `/proc/PID/stat`; nil when
/// it cannot be read. Clock-tick resolution (10 ms here).
func processCPUSeconds(of pid: pid_t) -> Double? {
    guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 1024)
    guard fgets(&line, 1024, file) != nil else { return nil }
    let text = line.withUnsafeBufferPointer {
        String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self)
    }
    // The fields after the command's closing parenthesis: state is field 3; utime, stime 14, 15.
    guard let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// The same-run baseline: blocking `pread` loops on `threads` plain threads (`withoutWaiting`:
/// `preadv2(RWF_NOWAIT)` loops instead, the call a read without waiting makes).
func measurePread(
    scenario: String, fields: [(String, String)], threads: Int, fd: Int32, block: Int, fileSize: Int64,
    sequential: Bool, seconds: Double, warmup: Double, sampleEvery: Int, withoutWaiting: Bool = false
) -> Measurement {
    final class Worker: @unchecked Sendable {
        let index: Int, fd: Int32, block: Int, fileSize: Int64, sequential: Bool, threads: Int
        let withoutWaiting: Bool
        let phase: Phase
        let sampleMask: Int
        var ops = 0
        var histogram = Histogram()
        init(
            index: Int, fd: Int32, block: Int, fileSize: Int64, sequential: Bool, threads: Int, phase: Phase,
            sampleEvery: Int, withoutWaiting: Bool
        ) {
            self.index = index
            self.withoutWaiting = withoutWaiting
            self.fd = fd
            self.block = block
            self.fileSize = fileSize
            self.sequential = sequential
            self.threads = threads
            self.phase = phase
            self.sampleMask = sampleEvery - 1
        }
        func run() {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(block, 1), alignment: 4096)
            defer { buffer.deallocate() }
            var offsets = OffsetGenerator(
                worker: index, workers: threads, block: block, fileSize: fileSize, sequential: sequential)
            var iteration = 0
            while true {
                let current = phase.current
                if current == Phase.stop { break }
                let sampled = iteration & sampleMask == 0
                let started = sampled ? nowNanoseconds() : 0
                if withoutWaiting {
                    // The call the runtime makes for a read without waiting (the same shim).
                    _ = cliburing_read_nowait(fd, buffer, UInt(block), offsets.next())
                } else {
                    _ = pread(fd, buffer, block, off_t(offsets.next()))
                }
                if current == Phase.measure {
                    ops += 1
                    if sampled { histogram.record(nowNanoseconds() - started) }
                }
                iteration += 1
            }
        }
    }
    let phase = Phase()
    let workers = (0..<threads).map {
        Worker(
            index: $0, fd: fd, block: block, fileSize: fileSize, sequential: sequential, threads: threads, phase: phase,
            sampleEvery: sampleEvery, withoutWaiting: withoutWaiting)
    }
    var tids: [pthread_t] = []
    for worker in workers {
        var tid = pthread_t()
        let context = Unmanaged.passRetained(worker).toOpaque()
        pthread_create(
            &tid, nil,
            { raw in
                let worker = Unmanaged<Worker>.fromOpaque(raw!).takeRetainedValue()
                worker.run()
                return nil
            }, context)
        tids.append(tid)
    }
    sleepBlocking(warmup)
    Allocations.start()
    let cpuStarted = processCPUSeconds()
    let started = nowNanoseconds()
    phase.set(Phase.measure)
    sleepBlocking(seconds)
    phase.set(Phase.stop)
    let elapsed = Double(nowNanoseconds() - started) / 1e9
    let cpuSeconds = processCPUSeconds() - cpuStarted
    let mallocs = Allocations.stop()
    for tid in tids { pthread_join(tid, nil) }
    var histogram = Histogram()
    for worker in workers { histogram.merge(worker.histogram) }
    var measurement = Measurement(
        scenario: scenario,
        engine: (withoutWaiting ? "preadv2(RWF_NOWAIT)" : "pread") + " x\(threads) thread" + (threads == 1 ? "" : "s"),
        fields: fields,
        concurrency: threads, block: block, seconds: elapsed, ops: workers.reduce(0) { $0 + $1.ops },
        histogram: histogram, mallocs: mallocs)
    measurement.cpuSeconds = cpuSeconds
    return measurement
}

/// Offsets for one worker: uniformly random block-aligned offsets, or a sequential walk through
/// the worker's share of the file (wrapping around).
struct OffsetGenerator {
    var state: UInt64
    let block: Int64
    let blocks: UInt64
    let sequential: Bool
    var position: Int64

    init(worker: Int, workers: Int, block: Int, fileSize: Int64, sequential: Bool) {
        self.block = Int64(max(block, 1))
        blocks = UInt64(max(fileSize / Int64(max(block, 1)), 1))
        self.sequential = sequential
        state = 0x9E37_79B9_7F4A_7C15 &* UInt64(worker + 1)
        position = Int64(UInt64(worker) * blocks / UInt64(max(workers, 1))) * Int64(max(block, 1))
    }

    @inline(__always)
    mutating func next() -> Int64 {
        if sequential {
            let offset = position
            position += block
            if position + block > Int64(blocks) * block { position = 0 }
            return offset
        }
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Int64(z % blocks) * block
    }
}
